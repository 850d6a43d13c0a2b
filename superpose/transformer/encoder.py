"""A BERT-style encoder as a TransformerLens `HookedRootModule`, with TransformerLens's
`HookedEncoder` hook names, weight names and (post-LN) block layout: weights copied into a
`HookedEncoder` give the same logits and activations (tests/interop).

    embed.hook_embed / hook_pos_embed / hook_token_type_embed     [batch pos d_model]
    embed.ln.hook_scale / hook_normalized                          (embed_ln)
    hook_full_embed                                                [batch pos d_model]
    blocks.i.hook_resid_pre, .attn.hook_q/k/v/z, .attn.hook_attn_scores / hook_pattern
        [batch head query_pos key_pos] (bidirectional; a padded key gets probability 0),
    blocks.i.hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post, ln1/ln2 hooks,
    blocks.i.hook_normalized_resid_post  (norm="post": the block's output; see parts.Block)
    ln_final.hook_scale / hook_normalized                          (norm="pre")
    mlm_head.ln.hook_scale / hook_normalized                       (mlm_head="bert")
    unembed.hook_in / hook_out                                     [batch pos d_vocab]
    pooler.hook_pooler_out                                         [batch d_model]
    classifier.hook_out                                            [batch n_classes]

Padding: `attention_mask` [batch pos] is True (or 1) at real tokens, as in TransformerLens and
HuggingFace. Positions count real tokens only, so a left-padded sequence gets the same
outputs at its real tokens as the same sequence right-padded or alone (tested), and the
pooled output reads the first real token ([CLS]), wherever padding puts it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose.hooks import FastHookPoint, is_hooked
from superpose.transformer.base import HookedModel, check_mask, check_tokens
from superpose.transformer.config import EncoderConfig
from superpose.transformer.parts import (
    Block,
    Circuits,
    LayerNorm,
    dropout,
    embedding,
    init_weights,
    linear,
    positions_from_mask,
    sinusoidal_table,
)

IGNORE_INDEX = -100          # labels at positions that are not predicted (torch's default)


class _Table(nn.Module):
    """A module holding one named table (TL's `embed.embed.W_E`-style nesting)."""

    _lora: dict[str, Any] = {}   # a LoRA adapter on the table (superpose.lora)

    def __init__(self, name: str, rows: int, d_model: int) -> None:
        super().__init__()
        self.register_parameter(name, nn.Parameter(torch.empty(rows, d_model)))
        self.LORA_EMBEDDINGS = (name,)


class Embed(nn.Module):
    """Token + position (+ token type) embeddings, then (embed_ln) LayerNorm: TL's BertEmbed."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _Table("W_E", cfg.d_vocab, cfg.d_model)
        self.hook_embed = FastHookPoint()
        if cfg.positional == "learned":
            self.pos_embed = _Table("W_pos", cfg.n_ctx, cfg.d_model)
        elif cfg.positional == "sinusoidal":
            self.register_buffer("W_pos", sinusoidal_table(cfg.n_ctx, cfg.d_model),
                                 persistent=False)
        if cfg.positional in ("learned", "sinusoidal"):
            self.hook_pos_embed = FastHookPoint()
        if cfg.n_token_types:
            self.token_type_embed = _Table("W_token_type", cfg.n_token_types, cfg.d_model)
            self.hook_token_type_embed = FastHookPoint()
        if cfg.embed_ln:
            self.ln = LayerNorm(cfg)

    def forward(self, tokens: Tensor, positions: Tensor, token_type_ids: Tensor | None
                ) -> Tensor:
        cfg = self.cfg
        x = self.hook_embed(embedding(self.embed, "W_E", tokens, self.embed.W_E))
        if cfg.positional == "learned":
            pos = embedding(self.pos_embed, "W_pos", positions, self.pos_embed.W_pos)
            x = x + self.hook_pos_embed(pos.expand_as(x))
        elif cfg.positional == "sinusoidal":
            x = x + self.hook_pos_embed(self.W_pos[positions].expand_as(x))
        if cfg.n_token_types:
            types = torch.zeros_like(tokens) if token_type_ids is None else token_type_ids
            t = self.token_type_embed
            x = x + self.hook_token_type_embed(embedding(t, "W_token_type", types,
                                                         t.W_token_type))
        return self.ln(x) if cfg.embed_ln else x


class MLMHead(nn.Module):
    """TL's BertMLMHead: dense d_model -> d_model, the activation, LayerNorm."""

    LORA_WEIGHTS = ("W",)
    _lora: dict[str, Any] = {}

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(cfg.d_model, cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.act = F.gelu if cfg.act == "gelu" else F.relu
        self.ln = LayerNorm(cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(self.act(linear(self, "W", x, self.W, self.b)))


class Pooler(nn.Module):
    """BERT's pooler: tanh(W x_[CLS] + b) [batch d_model]."""

    LORA_WEIGHTS = ("W",)
    _lora: dict[str, Any] = {}

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(cfg.d_model, cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pooler_out = FastHookPoint()

    def forward(self, cls_resid: Tensor) -> Tensor:
        return self.hook_pooler_out(torch.tanh(linear(self, "W", cls_resid, self.W, self.b)))


class Classifier(nn.Module):
    LORA_WEIGHTS = ("W",)
    _lora: dict[str, Any] = {}

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(cfg.d_model, cfg.n_classes))
        self.b = nn.Parameter(torch.zeros(cfg.n_classes))
        self.hook_out = FastHookPoint()

    def forward(self, pooled: Tensor) -> Tensor:
        return self.hook_out(linear(self, "W", pooled, self.W, self.b))


class Unembed(nn.Module):
    """TL's `unembed` (W_U [d_model d_vocab], b_U; W_U is W_Eᵀ when tied)."""

    LORA_WEIGHTS = ("W_U",)    # untied only: a tied W_U is W_E's
    _lora: dict[str, Any] = {}

    def __init__(self, cfg: EncoderConfig, model: Encoder) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)   # not a submodule: no cycle
        if not cfg.tied_embeddings:
            self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        self.hook_in = FastHookPoint()
        self.hook_out = FastHookPoint()

    def weight(self) -> Tensor:
        return self._model.W_E.T if self._model.cfg.tied_embeddings else self.W_U

    def forward(self, x: Tensor) -> Tensor:
        if is_hooked(self.hook_in) or is_hooked(self.hook_out):
            return self.hook_out(linear(self, "W_U", self.hook_in(x), self.weight(), self.b_U))
        return linear(self, "W_U", x, self.weight(), self.b_U)


class Encoder(Circuits, HookedModel):
    """Bidirectional transformer encoder; `forward(tokens, attention_mask=None) -> MLM logits`.
    See the module docstring for hooks and padding."""

    CONFIG = EncoderConfig

    def __init__(self, cfg: EncoderConfig, *, device: torch.device | str | None = None,
                 tokenizer: Any = None) -> None:
        super().__init__()
        cfg = self._own_config(cfg)
        self.tokenizer = tokenizer
        dev = v.resolve_device(device)
        self.embed = Embed(cfg)
        self.hook_full_embed = FastHookPoint()
        self.blocks = nn.ModuleList(Block(cfg, causal=False, post_hooks="sum")
                                    for _ in range(cfg.n_layers))
        if cfg.norm == "pre":
            self.ln_final = LayerNorm(cfg)
        if cfg.mlm_head == "bert":
            self.mlm_head = MLMHead(cfg)
        self.unembed = Unembed(cfg, self)
        self.pooler = Pooler(cfg)
        if cfg.n_classes:
            self.classifier = Classifier(cfg)
        init_weights(self, cfg.init_std, 2 * cfg.n_layers, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        with torch.no_grad():       # TL-named dense weights "W" (init_weights draws W_*)
            for m in (getattr(self, "mlm_head", None), self.pooler,
                      getattr(self, "classifier", None)):
                if m is not None:
                    m.W.copy_(torch.randn(m.W.shape, generator=gen) * cfg.init_std)
        self.to(dev)
        self.setup()

    # ---- weights, as HookedEncoder's properties
    @property
    def W_E(self) -> Tensor:
        return self.embed.embed.W_E

    @property
    def W_pos(self) -> Tensor:
        return self.embed.pos_embed.W_pos

    @property
    def W_U(self) -> Tensor:
        return self.unembed.weight()

    @property
    def b_U(self) -> Tensor:
        return self.unembed.b_U

    def _stack(self, get: Any) -> Tensor:
        return torch.stack([get(b) for b in self.blocks])

    W_Q = property(lambda self: self._stack(lambda b: b.attn.W_Q))   # [layer head d_model d_head]
    W_K = property(lambda self: self._stack(lambda b: b.attn.W_K))
    W_V = property(lambda self: self._stack(lambda b: b.attn.W_V))
    W_O = property(lambda self: self._stack(lambda b: b.attn.W_O))   # [layer head d_head d_model]

    def _hook_name_context(self) -> str:
        cfg = self.cfg
        return (f". Hook points depend on the config (n_layers={cfg.n_layers}, "
                f"positional={cfg.positional!r}, norm={cfg.norm!r}, "
                f"n_token_types={cfg.n_token_types}, mlm_head={cfg.mlm_head!r})")

    # ---- forward

    def encoder_output(self, tokens: Int[Tensor, "batch pos"],
                       attention_mask: Tensor | None = None, *,
                       token_type_ids: Tensor | None = None
                       ) -> Float[Tensor, "batch pos d_model"]:
        """The final residual stream [batch pos d_model] (after ln_final for pre-LN)."""
        cfg = self.cfg
        check_tokens("tokens", tokens, cfg.d_vocab, cfg.n_ctx)
        mask = check_mask("attention_mask", attention_mask, tokens)
        if token_type_ids is not None:
            if not cfg.n_token_types:
                raise ValueError("token_type_ids given, but this encoder has no token types "
                                 "(n_token_types=0); drop them or build it with "
                                 "n_token_types=2")
            if token_type_ids.shape != tokens.shape:
                raise ValueError(f"token_type_ids must have the tokens' shape "
                                 f"{list(tokens.shape)}, got {list(token_type_ids.shape)}")
            check_tokens("token_type_ids", token_type_ids, cfg.n_token_types, cfg.n_ctx,
                         vocab_name="n_token_types")
        positions = positions_from_mask(mask, tokens.shape[1], device=tokens.device)
        x = self.hook_full_embed(self.embed(tokens, positions, token_type_ids))
        x = dropout(x, cfg.dropout, self.training)
        rot = positions if (cfg.positional == "rotary" and mask is not None) else None
        for block in self.blocks:
            x = block(x, key_mask=mask, positions=rot)
        if cfg.norm == "pre":
            x = self.ln_final(x)
        return x

    def forward(self, input: Any, return_type: str | None = "logits", *,
                attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None) -> Any:
        """MLM logits [batch pos d_vocab] of token ids [batch pos] (or text, with a tokenizer).

        return_type: "logits", "loss" (mean cross-entropy over `labels` != -100: the masked
          positions), "both" (logits, loss), "pooled" (the pooler's output [batch d_model]),
          "class_logits" ([batch n_classes], needs n_classes) or None (run for the hooks).
        """
        if return_type not in ("logits", "loss", "both", "pooled", "class_logits", None):
            raise ValueError(f"return_type must be one of 'logits', 'loss', 'both', 'pooled', "
                             f"'class_logits' or None, got {return_type!r}")
        if isinstance(input, str) or (isinstance(input, list) and input
                                      and all(isinstance(t, str) for t in input)):
            input, attention_mask = self.to_tokens(input)
        x = self.encoder_output(input, attention_mask, token_type_ids=token_type_ids)
        if return_type in ("pooled", "class_logits"):
            return self.pool(x, attention_mask, classify=return_type == "class_logits")
        if return_type in ("loss", "both") and labels is None:
            raise ValueError("an MLM loss needs labels=... ([batch pos], the original ids at "
                             "masked positions and -100 elsewhere; transformer.data.mlm_mask "
                             "makes them)")
        if self.cfg.mlm_head == "bert":
            x = self.mlm_head(x)
        logits = self.unembed(x)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = mlm_loss(logits, labels)
        return loss if return_type == "loss" else (logits, loss)

    def pool(self, resid: Float[Tensor, "batch pos d_model"], attention_mask: Tensor | None = None,
             *, classify: bool = False) -> Tensor:
        """The pooled [CLS] output [batch d_model] from the final residual stream (the first
        real token of each row), or the classifier's logits [batch n_classes]."""
        if attention_mask is None:
            first = resid[:, 0]
        else:
            idx = attention_mask.long().argmax(-1)
            first = resid[torch.arange(resid.shape[0], device=resid.device), idx]
        pooled = self.pooler(first)
        if not classify:
            return pooled
        if not self.cfg.n_classes:
            raise ValueError("this encoder has no classifier (n_classes=0); build it with "
                             "n_classes=... or train a probe on return_type='pooled'")
        return self.classifier(pooled)

    def loss(self, tokens: Tensor, labels: Tensor, attention_mask: Tensor | None = None
             ) -> Tensor:
        """Mean MLM cross-entropy at the positions where labels != -100."""
        return self(tokens, "loss", attention_mask=attention_mask, labels=labels)

    # ---- tokens (with a tokenizer)

    def to_tokens(self, input: str | list[str]) -> tuple[Tensor, Tensor]:
        """Texts as (tokens [batch pos], attention_mask) on the model's device, right-padded,
        with [CLS] ... [SEP] when the tokenizer has them (transformer.data.encode_batch)."""
        if self.tokenizer is None:
            raise ValueError("this Encoder has no tokenizer; pass token ids, or attach one: "
                             "Encoder(cfg, tokenizer=tok)")
        from superpose.transformer.data import encode_batch
        texts = [input] if isinstance(input, str) else list(input)
        has_specials = hasattr(self.tokenizer, "cls_id")
        tokens, mask = encode_batch(texts, self.tokenizer, add_cls=has_specials,
                                    add_sep=has_specials)
        return tokens.to(self.device), mask.to(self.device)

    def to_str_tokens(self, input: Any, *args: Any, **kwargs: Any) -> list[str]:
        if self.tokenizer is None:
            raise ValueError("this Encoder has no tokenizer; attach one: "
                             "Encoder(cfg, tokenizer=tok)")
        if isinstance(input, Tensor):
            input = input.reshape(-1)
        return self.tokenizer.to_str_tokens(input)


def mlm_loss(logits: Float[Tensor, "batch pos d_vocab"], labels: Int[Tensor, "batch pos"]
             ) -> Float[Tensor, ""]:
    """Mean cross-entropy over positions whose label is not -100 (the masked ones)."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape [batch, pos] = {list(logits.shape[:2])}, got "
                         f"{list(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer token ids (-100 where not predicted), got "
                         f"dtype {labels.dtype}")
    real = labels != IGNORE_INDEX
    if not bool(real.any()):
        raise ValueError("labels are -100 everywhere: no position to predict; mask some tokens "
                         "(transformer.data.mlm_mask)")
    lo, hi = int(labels[real].min()), int(labels[real].max())
    if lo < 0 or hi >= logits.shape[-1]:
        raise ValueError(f"labels must be -100 or ids in [0, {logits.shape[-1]}), got values in "
                         f"[{lo}, {hi}]")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)
