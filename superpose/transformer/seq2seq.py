"""An encoder–decoder transformer (Vaswani et al. 2017; T5 and BART are this shape) as a
TransformerLens `HookedRootModule`, with `HookedEncoderDecoder`'s hook names:

    hook_embed, hook_pos_embed              [batch src_pos d_model]  the source's embeddings
    hook_tgt_embed, hook_tgt_pos_embed      [batch tgt_pos d_model]  the decoder input's
    encoder.i.hook_resid_pre ... hook_resid_post, encoder.i.attn.hook_pattern
        [batch head src_pos src_pos] (bidirectional; a padded source key gets probability 0)
    encoder_final_ln.hook_scale / hook_normalized                     (norm="pre")
    decoder.i.attn.hook_pattern             [batch head tgt_pos tgt_pos]  causal
    decoder.i.hook_resid_mid                after the self-attention
    decoder.i.cross_attn.hook_q/k/v/z, .hook_attn_scores, .hook_pattern
        [batch head tgt_pos src_pos]: what each target position reads from the source
    decoder.i.hook_cross_attn_out           [batch tgt_pos d_model]  added to the stream
    decoder.i.hook_resid_mid_cross          after the cross-attention
    decoder.i.hook_mlp_out, hook_resid_post (+ hook_normalized_resid_post for norm="post")
    decoder_final_ln.hook_scale / hook_normalized                     (norm="pre")
    unembed.hook_in / hook_out              [batch tgt_pos d_vocab_tgt]

LayerNorms follow T5's numbering: ln1 before the self-attention, ln2 before the
cross-attention, ln3 before the MLP (norm="pre"; after them for "post"). Unlike TL's T5,
which calls its one `hook_embed` for both sides (so a cache keeps only the decoder's),
the source and target embeddings have a hook each.

Teacher forcing: the decoder reads the target shifted right behind `bos_id` and predicts
the target followed by `eos_id` (transformer.tasks builds such batches). Padding masks
(`src_attention_mask`, `tgt_attention_mask`: True or 1 at real tokens) hide padded keys
from every attention, and positions count real tokens only, so padding on either side
changes no output at a real position (tested). `generate` is greedy (beam=1) or beam search,
with a KV cache (keys and values of earlier target positions, and the cross-attention's
keys and values of the source, computed once) that gives the same tokens and logits as
recomputing the whole prefix at every step (tested).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose.hooks import FastHookPoint, is_hooked
from superpose.transformer.base import HookedModel, check_mask, check_tokens
from superpose.transformer.config import Seq2SeqConfig
from superpose.transformer.encoder import IGNORE_INDEX, mlm_loss
from superpose.transformer.parts import (
    Block,
    KVCache,
    LayerNorm,
    dropout,
    embedding,
    init_weights,
    linear,
    positions_from_mask,
    sinusoidal_table,
)


class Seq2Seq(HookedModel):
    """Encoder–decoder; `forward(src, tgt_in) -> logits [batch tgt_pos d_vocab_tgt]`. See the
    module docstring for hooks, padding and generation."""

    CONFIG = Seq2SeqConfig
    LORA_EMBEDDINGS = ("W_E", "W_E_tgt", "W_pos", "W_pos_tgt")   # the ones it has (lora)
    _lora: dict[str, Any] = {}

    def __init__(self, cfg: Seq2SeqConfig, *, device: torch.device | str | None = None
                 ) -> None:
        super().__init__()
        cfg = self._own_config(cfg)
        dev = v.resolve_device(device)
        d = cfg.d_model
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, d))
        if cfg.d_vocab_tgt is not None:
            self.W_E_tgt = nn.Parameter(torch.empty(cfg.d_vocab_tgt, d))
        if cfg.positional == "learned":
            self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, d))
            self.W_pos_tgt = nn.Parameter(torch.empty(cfg.n_ctx_tgt, d))
        elif cfg.positional == "sinusoidal":
            self.register_buffer("W_pos", sinusoidal_table(cfg.n_ctx_max, d), persistent=False)
        self.hook_embed = FastHookPoint()
        self.hook_tgt_embed = FastHookPoint()
        if cfg.positional in ("learned", "sinusoidal"):
            self.hook_pos_embed = FastHookPoint()
            self.hook_tgt_pos_embed = FastHookPoint()
        self.encoder = nn.ModuleList(Block(cfg, causal=False, post_hooks="sum")
                                     for _ in range(cfg.n_layers))
        if cfg.norm == "pre":
            self.encoder_final_ln = LayerNorm(cfg)
        self.decoder = nn.ModuleList(Block(cfg, causal=True, cross=True, post_hooks="sum")
                                     for _ in range(cfg.n_decoder_layers))
        if cfg.norm == "pre":
            self.decoder_final_ln = LayerNorm(cfg)
        if not cfg.tied_embeddings:
            self.register_parameter("W_U", nn.Parameter(torch.empty(d, cfg.vocab_tgt)))
        self.b_U = nn.Parameter(torch.zeros(cfg.vocab_tgt))
        self.unembed = _Unembed(self)
        init_weights(self, cfg.init_std, 2 * cfg.n_layers + 3 * cfg.n_decoder_layers, cfg.seed)
        self.to(dev)
        self.setup()

    @property
    def W_E_target(self) -> Tensor:
        """The target embedding [vocab_tgt d_model] (W_E when the vocabulary is shared)."""
        return self.W_E if self.cfg.d_vocab_tgt is None else self.W_E_tgt

    @property
    def W_U(self) -> Tensor:
        """Unembedding [d_model vocab_tgt]: its own weight, or the target embedding's
        transpose when tied."""
        if self.cfg.tied_embeddings:
            return self.W_E_target.T
        w = self._parameters.get("W_U")
        if w is None:
            raise AttributeError("W_U")
        return w

    def _hook_name_context(self) -> str:
        cfg = self.cfg
        return (f". Hook points depend on the config (n_layers={cfg.n_layers}, "
                f"n_decoder_layers={cfg.n_decoder_layers}, positional={cfg.positional!r}, "
                f"norm={cfg.norm!r}); the encoder's are encoder.{{i}}.*, the decoder's "
                "decoder.{i}.* (cross-attention: decoder.{i}.cross_attn.*)")

    # ---- the two halves

    def _embed(self, tokens: Tensor, positions: Tensor, target: bool) -> Tensor:
        cfg = self.cfg
        hook_e, hook_p = ((self.hook_tgt_embed, getattr(self, "hook_tgt_pos_embed", None))
                          if target else (self.hook_embed, getattr(self, "hook_pos_embed", None)))
        e_name = "W_E_tgt" if target and "W_E_tgt" in self._parameters else "W_E"
        x = hook_e(embedding(self, e_name, tokens, self.W_E_target if target else self.W_E))
        if cfg.positional == "learned":
            p_name = "W_pos_tgt" if target else "W_pos"
            x = x + hook_p(embedding(self, p_name, positions, getattr(self, p_name)
                                     ).expand_as(x))
        elif cfg.positional == "sinusoidal":
            x = x + hook_p(self.W_pos[positions].expand_as(x))
        return dropout(x, cfg.dropout, self.training)

    def encode(self, src: Int[Tensor, "batch src_pos"], src_attention_mask: Tensor | None = None
               ) -> Float[Tensor, "batch src_pos d_model"]:
        """The encoder's output [batch src_pos d_model] (after encoder_final_ln for pre-LN)."""
        cfg = self.cfg
        check_tokens("src", src, cfg.d_vocab, cfg.n_ctx)
        mask = check_mask("src_attention_mask", src_attention_mask, src)
        positions = positions_from_mask(mask, src.shape[1], device=src.device)
        x = self._embed(src, positions, target=False)
        rot = positions if (cfg.positional == "rotary" and mask is not None) else None
        for block in self.encoder:
            x = block(x, key_mask=mask, positions=rot)
        return self.encoder_final_ln(x) if cfg.norm == "pre" else x

    def decode(self, memory: Float[Tensor, "batch src_pos d_model"],
               tgt: Int[Tensor, "batch tgt_pos"], *, src_attention_mask: Tensor | None = None,
               tgt_attention_mask: Tensor | None = None, cache: KVCache | None = None,
               ) -> Float[Tensor, "batch tgt_pos d_vocab_tgt"]:
        """Logits of the decoder reading `tgt` (the target shifted right) and attending to the
        encoder output `memory`. With `cache`, `tgt` holds only the new positions, which
        follow the cache's (no target padding then)."""
        cfg = self.cfg
        offset = 0 if cache is None else cache.length
        check_tokens("tgt", tgt, cfg.vocab_tgt, cfg.n_ctx_tgt - offset, vocab_name="vocab_tgt",
                     ctx_name="n_ctx_tgt" if not offset else "n_ctx_tgt - cached")
        tmask = check_mask("tgt_attention_mask", tgt_attention_mask, tgt)
        if cache is not None and tmask is not None:
            raise ValueError("decode with a KV cache takes no tgt_attention_mask (generation "
                             "writes unpadded targets)")
        if memory.ndim != 3 or memory.shape[0] != tgt.shape[0] or memory.shape[2] != cfg.d_model:
            raise ValueError(f"memory must be the encoder output [batch={tgt.shape[0]}, "
                             f"src_pos, d_model={cfg.d_model}], got {list(memory.shape)}")
        smask = src_attention_mask
        if isinstance(smask, Tensor) and smask.shape != memory.shape[:2]:
            raise ValueError(f"src_attention_mask must have shape {list(memory.shape[:2])} (the "
                             f"source's), got {list(smask.shape)}")
        # Checked and made bool here too: decode is public, and a 0/1 integer mask would reach
        # the attention as an integer attn_mask (a RuntimeError) or a bitwise ~ (all masked).
        smask = check_mask("src_attention_mask", smask, memory[:, :, 0])
        positions = positions_from_mask(tmask, tgt.shape[1], offset, device=tgt.device)
        x = self._embed(tgt, positions, target=True)
        rot = positions if (cfg.positional == "rotary" and (tmask is not None or offset)) \
            else None
        first = cache is None or cache.cross_attn[0].k is None
        for i, block in enumerate(self.decoder):
            x = block(x, key_mask=tmask, positions=rot, context=memory if first else None,
                      context_mask=smask,
                      past=None if cache is None else cache.self_attn[i],
                      cross_past=None if cache is None else cache.cross_attn[i])
        if cfg.norm == "pre":
            x = self.decoder_final_ln(x)
        return self.unembed(x)

    def forward(self, src: Int[Tensor, "batch src_pos"], tgt: Int[Tensor, "batch tgt_pos"],
                return_type: str | None = "logits", *, src_attention_mask: Tensor | None = None,
                tgt_attention_mask: Tensor | None = None, labels: Tensor | None = None) -> Any:
        """Teacher-forced logits [batch tgt_pos vocab_tgt] of the decoder reading `tgt` (the
        target shifted right behind BOS).

        return_type: "logits", "loss" (mean cross-entropy against `labels` [batch tgt_pos],
          the target followed by EOS, -100 where not predicted), "both" (logits, loss), or
          None (run for the hooks).
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be one of 'logits', 'loss', 'both' or None, got "
                             f"{return_type!r}")
        if return_type in ("loss", "both") and labels is None:
            raise ValueError("a loss needs labels=... [batch, tgt_pos]: the target followed by "
                             "EOS, -100 at padding (transformer.tasks batches have tgt_out)")
        smask = check_mask("src_attention_mask", src_attention_mask, src) \
            if isinstance(src, Tensor) else src_attention_mask
        memory = self.encode(src, smask)
        logits = self.decode(memory, tgt, src_attention_mask=smask,
                             tgt_attention_mask=tgt_attention_mask)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = mlm_loss(logits, labels)
        return loss if return_type == "loss" else (logits, loss)

    # ---- generation

    @torch.no_grad()
    def generate(self, src: Int[Tensor, "batch src_pos"], src_attention_mask: Tensor | None = None,
                 *, max_new_tokens: int | None = None, beam: int = 1,
                 bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None, use_cache: bool = True,
                 length_penalty: float = 1.0, return_scores: bool = False) -> Any:
        """Decode each source: greedy (beam=1) or beam search with `beam` hypotheses. Returns
        [batch 1 + new] target ids starting with BOS; after a sequence's EOS come `pad_id`s.
        `use_cache=False` recomputes the whole prefix every step (same result, slower: kept
        to test the cache). Beam hypotheses are ranked by log-probability / length **
        length_penalty (HuggingFace's convention; 0 ranks by the sum). `return_scores`: also
        the chosen hypotheses' summed log-probabilities [batch]."""
        cfg = self.cfg
        bos = cfg.bos_id if bos_id is None else bos_id
        eos = cfg.eos_id if eos_id is None else eos_id
        pad = cfg.pad_id if pad_id is None else pad_id
        if bos is None:
            raise ValueError("generate needs the decoder's start token: pass bos_id=... or set "
                             "Seq2SeqConfig(bos_id=...)")
        for name, value in (("bos_id", bos), ("eos_id", eos), ("pad_id", pad)):
            if value is not None and not (isinstance(value, int) and 0 <= value < cfg.vocab_tgt):
                raise ValueError(f"{name} must be a target token id in [0, {cfg.vocab_tgt}), "
                                 f"got {value!r}")
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be an int >= 1 (1 is greedy decoding), got {beam!r}")
        if beam > cfg.vocab_tgt:
            raise ValueError(f"beam={beam} exceeds the target vocabulary ({cfg.vocab_tgt} ids)")
        # Token k is predicted from BOS + k - 1 tokens: n_ctx_tgt new tokens at most.
        limit = cfg.n_ctx_tgt
        if max_new_tokens is None:
            max_new_tokens = limit
        v.positive_int("max_new_tokens", max_new_tokens)
        if max_new_tokens > limit:
            raise ValueError(f"max_new_tokens={max_new_tokens} would make the decoder input "
                             f"longer than its context n_ctx_tgt={cfg.n_ctx_tgt} (the last "
                             f"token is predicted from BOS + {limit - 1} tokens)")
        v.non_negative_float("length_penalty", length_penalty)
        fill = pad if pad is not None else (eos if eos is not None else bos)
        was_training = self.training
        self.eval()
        try:
            smask = check_mask("src_attention_mask", src_attention_mask, src) \
                if isinstance(src, Tensor) else src_attention_mask
            memory = self.encode(src, smask)
            b = src.shape[0]
            if beam > 1:
                memory = memory.repeat_interleave(beam, 0)
                smask = None if smask is None else smask.repeat_interleave(beam, 0)
            seqs, scores = self._search(memory, smask, b, beam, bos, eos, fill,
                                        max_new_tokens, use_cache, length_penalty)
        finally:
            self.train(was_training)
        return (seqs, scores) if return_scores else seqs

    def _search(self, memory: Tensor, smask: Tensor | None, b: int, beam: int, bos: int,
                eos: int | None, fill: int, max_new: int, use_cache: bool,
                length_penalty: float) -> tuple[Tensor, Tensor]:
        n = memory.shape[0]                                 # b * beam rows
        dev = memory.device
        seqs = torch.full((n, 1), bos, dtype=torch.long, device=dev)
        cache = KVCache.empty(self.cfg.n_decoder_layers) if use_cache else None
        score = torch.zeros(b, beam, device=dev)
        score[:, 1:] = float("-inf")                        # one live hypothesis at the start
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        length = torch.zeros(n, device=dev)
        vocab = self.cfg.vocab_tgt
        for _ in range(max_new):
            inp = seqs[:, -1:] if use_cache else seqs
            logits = self.decode(memory, inp, src_attention_mask=smask, cache=cache)[:, -1]
            logp = logits.float().log_softmax(-1)
            # A finished hypothesis only continues with `fill`, at no cost.
            frozen = torch.full_like(logp, float("-inf"))
            frozen[:, fill] = 0.0
            logp = torch.where(done[:, None], frozen, logp)
            total = (score.reshape(n, 1) + logp).view(b, beam * vocab)
            score, idx = total.topk(beam, dim=-1)           # [b, beam]
            src_beam = idx // vocab
            tok = (idx % vocab).reshape(n)
            rows = (torch.arange(b, device=dev)[:, None] * beam + src_beam).reshape(n)
            seqs = torch.cat([seqs[rows], tok[:, None]], dim=1)
            done, length = done[rows], length[rows]
            length = length + (~done).float()
            if eos is not None:
                done = done | (tok == eos)
            if cache is not None and beam > 1:
                cache.reorder(rows)
            if bool(done.all()):
                break
        final = score.reshape(n) / length.clamp(min=1) ** length_penalty
        best = final.view(b, beam).argmax(-1)
        pick = torch.arange(b, device=dev) * beam + best
        return seqs[pick], score.reshape(n)[pick]


class _Unembed(nn.Module):
    """TL's `unembed`: hook_in / hook_out around `x @ W_U + b_U` (the model's own weights)."""

    LORA_WEIGHTS = ("W_U",)      # untied only (a tied W_U is the target embedding's)
    _lora: dict[str, Any] = {}

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)
        self.hook_in = FastHookPoint()
        self.hook_out = FastHookPoint()

    def forward(self, x: Tensor) -> Tensor:
        m = self._model
        if is_hooked(self.hook_in) or is_hooked(self.hook_out):
            return self.hook_out(linear(self, "W_U", self.hook_in(x), m.W_U, m.b_U))
        return linear(self, "W_U", x, m.W_U, m.b_U)


__all__ = ["Seq2Seq", "IGNORE_INDEX"]
