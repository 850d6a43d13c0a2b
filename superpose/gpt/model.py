"""A small decoder-only GPT as a TransformerLens `HookedRootModule`, interchangeable with a
`HookedTransformer` of the same weights (`superpose.gpt.convert`; tested in tests/interop).

Hook points carry TransformerLens's canonical names, layouts and meanings, so `run_with_cache`,
`run_with_hooks`, `ActivationCache` (`cache["pattern", 0]`, `decompose_resid`, `logit_attrs`,
...), `transformer_lens.patching` and `SVDInterpreter` work unchanged. For layer i (see
`GPT.hook_names()` for a given config; the order is a HookedTransformer's):

    hook_embed, hook_pos_embed                 [batch pos d_model]  (pos_embed: learned/sinusoidal)
    blocks.i.hook_resid_pre                    [batch pos d_model]
    blocks.i.hook_attn_in                      [batch pos head d_model]  (set_use_attn_in)
    blocks.i.hook_q_input / k_input / v_input  [batch pos head d_model]  (set_use_split_qkv_input)
    blocks.i.ln1.hook_scale                    [batch pos 1]        (norm != "none")
    blocks.i.ln1.hook_normalized               [batch pos d_model]  (x - mean) / scale, before w, b
    blocks.i.attn.hook_q / hook_k / hook_v     [batch pos head d_head]
    blocks.i.attn.hook_rot_q / hook_rot_k      [batch pos head d_head]  (positional="rotary")
    blocks.i.attn.hook_attn_scores             [batch head query_pos key_pos]  masked (-inf), scaled
    blocks.i.attn.hook_pattern                 [batch head query_pos key_pos]  softmax of the above
    blocks.i.attn.hook_z                       [batch pos head d_head]
    blocks.i.attn.hook_result                  [batch pos head d_model]  (set_use_attn_result)
    blocks.i.hook_attn_out                     [batch pos d_model]
    blocks.i.hook_resid_mid                    [batch pos d_model]  (not attn_only)
    blocks.i.hook_mlp_in                       [batch pos d_model]  (set_use_hook_mlp_in)
    blocks.i.ln2.hook_scale / hook_normalized  (not attn_only, norm != "none")
    blocks.i.mlp.hook_pre / hook_post          [batch pos d_mlp]    (not attn_only)
    blocks.i.hook_mlp_out                      [batch pos d_model]  (fires when not attn_only)
    blocks.i.hook_resid_post                   [batch pos d_model]
    ln_final.hook_scale / hook_normalized      (norm="pre" only)
    unembed.hook_in / hook_out                 [batch pos d_model] / [batch pos d_vocab]

The switched hooks exist always (as on a HookedTransformer) and fire once their `set_use_*`
switch is on; a hook added to one that is off is a `HookSwitchError`. Switches are per model.

Pre-LN (GPT-2): resid_mid = resid_pre + attn(ln1(resid_pre)), resid_post = resid_mid +
mlp(ln2(resid_mid)), then ln_final. Post-LN (Vaswani et al. 2017): resid_mid =
ln1(resid_pre + attn(resid_pre)), resid_post = ln2(resid_mid + mlp(resid_mid)), and there is
no ln_final (the stream is already normalized); HookedTransformer has no such architecture.
hook_attn_out and hook_mlp_out are exactly what is added to the stream (after dropout).

Speed. Every matmul is one `F.linear` on the stored weights (no per-head einsums): q, k and v
come from one fused weight `attn.W_QKV` [3, head, d_head, d_model]; `attn.W_Q/W_K/W_V` and
`b_Q/b_K/b_V` are TransformerLens-layout *views* of it ([head, d_model, d_head]), so reading or
editing them in place edits the model. Every other weight is stored in TL's layout and name
(W_E, W_pos, W_O, W_in, W_out, W_U, ...); `tl_parameters()` lists them under a
HookedTransformer's state-dict names. LayerNorm is `F.layer_norm`. Attention runs through
`F.scaled_dot_product_attention` (flash / memory-efficient kernels) unless a hook of any
direction (`superpose.hooks.is_hooked`) is attached to hook_attn_scores or hook_pattern (as
`run_with_cache` does when it caches them); then the scores and pattern are computed
explicitly so hooks can read and replace them. The two paths agree to float precision
(tested). Likewise LayerNorm: with a hook on hook_scale or hook_normalized it is computed by
hand (TL's formula), so a hooked scale (e.g. frozen for attribution) is the one used. Per-head
results and inputs are computed only when switched on; the unused hooks cost nothing
measurable (benchmarks/gpt_speed.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _memory
from superpose import _validate as v
from superpose.gpt.config import GPTConfig
from superpose.hooks import FastHookPoint, is_hooked
from superpose.transformer.base import HookedModel, HookSwitchError, check_mask, check_tokens
from superpose.transformer.parts import (
    MLP,
    Attention,
    Block,
    Circuits,
    LayerNorm,
    dropout,
    init_weights,
    positions_from_mask,
    rotary_tables,
    sinusoidal_table,
)

# The parts' old private names here (superpose.gpt.bridge and user code import them).
_sinusoidal_table, _rotary_tables, _Circuits = sinusoidal_table, rotary_tables, Circuits
__all__ = ["GPT", "GPTConfig", "Attention", "Block", "LayerNorm", "MLP", "HookSwitchError",
           "memory_estimate", "next_token_loss", "per_token_loss"]


def memory_estimate(cfg: GPTConfig) -> dict[str, int]:
    """Bytes that building `GPT(cfg)` needs at its peak, by part (weights are drawn on the CPU,
    float32): "weights", "attention masks" (one [n_ctx, n_ctx] bool per layer), and the
    "positional table" / "rotary tables" built in float64 before the float32 copy."""
    d, h, dh, layers = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_layers
    per_block = 4 * h * dh * d + 3 * h * dh + d + 2 * d
    if not cfg.attn_only:
        per_block += 2 * d * cfg.d_mlp + cfg.d_mlp + d + 2 * d
    params = cfg.d_vocab * d + layers * per_block + cfg.d_vocab
    if cfg.norm == "pre":
        params += 2 * d                                  # ln_final
    if not cfg.tied_embeddings:
        params += d * cfg.d_vocab
    parts = {"weights": 4 * params}
    if cfg.positional == "learned":
        parts["weights"] += 4 * cfg.n_ctx * d
    elif cfg.positional == "sinusoidal":
        parts["positional table"] = (8 * 2 + 4) * cfg.n_ctx * d
    elif cfg.positional == "rotary":
        parts["rotary tables"] = layers * (8 * 3 + 4 * 2) * cfg.n_ctx * dh
    parts["attention masks"] = layers * cfg.n_ctx * cfg.n_ctx + cfg.n_ctx * cfg.n_ctx
    return parts


def check_memory(cfg: GPTConfig, device: torch.device) -> None:
    """`_memory.check_allocation` for `GPT(cfg)`: the whole peak on the CPU, where the weights
    are drawn, and what stays resident on `device` when that is another one."""
    parts = memory_estimate(cfg)
    fields = (f"d_vocab={cfg.d_vocab}, d_model={cfg.d_model}, n_layers={cfg.n_layers}, "
              f"n_ctx={cfg.n_ctx}, positional={cfg.positional!r}")
    detail = ", ".join(f"{k} {_memory.format_bytes(b)}" for k, b in parts.items())
    what = f"GPT({fields}) ({detail})"
    _memory.check_allocation(what, sum(parts.values()), "cpu")
    if device.type != "cpu":
        _memory.check_allocation(what, sum(parts.values()), device)


def _block(cfg: GPTConfig) -> Block:
    return Block(cfg, causal=True, attn_only=cfg.attn_only)


class Unembed(nn.Module):
    """TL's `unembed`: hook_in (the final residual, after ln_final) and hook_out (the logits)
    around `x @ W_U + b_U`. The weights stay the model's own `W_U` / `b_U` (read through a
    back-reference, so this module has no parameters and the state dict is unchanged)."""

    LORA_WEIGHTS = ("W_U",)      # untied only (a tied W_U is W_E's)
    _lora: dict[str, Any] = {}   # an unmerged LoRA adapter on W_U (superpose.lora)

    def __init__(self, model: GPT) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)   # not a submodule: no cycle in modules()
        self.hook_in = FastHookPoint()    # [batch pos d_model]
        self.hook_out = FastHookPoint()   # [batch pos d_vocab]

    @property
    def W_U(self) -> Tensor:
        return self._model.W_U

    @property
    def b_U(self) -> Tensor:
        return self._model.b_U

    def forward(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_vocab"]:
        x = self.hook_in(x)
        return self.hook_out(self.logits(x))

    def logits(self, x: Tensor) -> Tensor:
        out = F.linear(x, self._model.W_U.T, self._model.b_U)
        lo = self._lora.get("W_U") if self._lora else None
        return out if lo is None else lo.add_to(out, x)


class GPT(Circuits, HookedModel):
    """Decoder-only transformer; `forward(tokens) -> logits`. See the module docstring for the
    hook points, layouts and the fast/explicit attention paths.

    Weights: W_E [d_vocab, d_model], W_pos [n_ctx, d_model] (learned), W_U [d_model, d_vocab]
    (a view of W_E when tied), b_U; per block attn.W_QKV (fused; W_Q/W_K/W_V views), attn.W_O
    [head, d_head, d_model], mlp.W_in [d_model, d_mlp], mlp.W_out [d_mlp, d_model], ln.w / ln.b.
    """

    CONFIG = GPTConfig
    _lora: dict[str, Any] = {}   # unmerged LoRA adapters on W_E / W_pos (superpose.lora)

    def __init__(self, cfg: GPTConfig, *, device: torch.device | str | None = None,
                 tokenizer: Any = None) -> None:
        super().__init__()
        cfg = self._own_config(cfg)
        self.tokenizer = tokenizer
        dev = v.resolve_device(device)
        check_memory(cfg, dev)
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.hook_embed = FastHookPoint()          # [batch pos d_model]
        if cfg.positional == "learned":
            self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        elif cfg.positional == "sinusoidal":
            self.register_buffer("W_pos", sinusoidal_table(cfg.n_ctx, cfg.d_model),
                                 persistent=False)
        if cfg.positional in ("learned", "sinusoidal"):
            self.hook_pos_embed = FastHookPoint()  # [batch pos d_model]
        self.blocks = nn.ModuleList(_block(cfg) for _ in range(cfg.n_layers))
        if cfg.norm == "pre":
            self.ln_final = LayerNorm(cfg)
        if not cfg.tied_embeddings:
            self.register_parameter("W_U", nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab)))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        self.unembed = Unembed(self)
        self._init_weights()
        self.to(dev)
        self.setup()

    def _init_weights(self) -> None:
        """N(0, init_std) everywhere, residual-writing projections scaled by 1/sqrt(writes)
        (GPT-2, Radford et al. 2019 §2.3); biases 0, LN gains 1. Seeded by cfg.seed."""
        cfg = self.cfg
        init_weights(self, cfg.init_std, cfg.n_layers * (1 if cfg.attn_only else 2), cfg.seed)

    @property
    def W_U(self) -> Tensor:
        """Unembedding [d_model, d_vocab]: its own weight, or W_Eᵀ (shared storage) when tied."""
        if self.cfg.tied_embeddings:
            return self.W_E.T
        w = self._parameters.get("W_U")
        if w is None:   # not registered yet (inside __init__): lets register_parameter proceed
            raise AttributeError("W_U")
        return w

    def check_tokens(self, tokens: Any) -> None:
        """Raise a ValueError naming the problem if `tokens` is not a valid [batch pos] input."""
        check_tokens("tokens", tokens, self.cfg.d_vocab, self.cfg.n_ctx)

    def forward(self, input: Any, return_type: str | None = "logits", *,
                loss_per_token: bool = False, start_at_layer: int | None = None,
                stop_at_layer: int | None = None, tokens: Tensor | None = None,
                prepend_bos: bool | None = None, attention_mask: Tensor | None = None,
                **tl_kwargs: Any) -> Any:
        """Logits [batch pos d_vocab] of `input`: token ids [batch pos] (or text, when the model
        has a tokenizer). The keyword arguments are HookedTransformer.forward's:

        return_type: "logits" (default), "loss" (mean next-token loss), "both" (logits, loss)
          or None (run for the hooks only).
        loss_per_token: the loss as [batch pos-1] instead of its mean.
        stop_at_layer: return the residual stream entering that block (blocks.{i}.hook_resid_pre;
          negative counts from the end), no ln_final or unembed.
        start_at_layer: `input` is the residual stream [batch pos d_model] entering that block;
          pass `tokens` too for a loss.
        attention_mask: [batch pos], True (or 1) at real tokens, False (or 0) at padding, left or
          right (TransformerLens's and HuggingFace's convention). Padded keys get probability 0,
          positions count real tokens (a left-padded row gives the outputs of the unpadded one
          at its real tokens), and the loss counts a prediction only when the token it reads
          and the one it predicts are real (loss_per_token: 0 elsewhere).
        """
        cfg = self.cfg
        for name, value in tl_kwargs.items():
            if name not in ("padding_side", "shortformer_pos_embed", "past_kv_cache"):
                raise TypeError(f"GPT.forward() got an unexpected keyword argument {name!r}")
            if name == "padding_side":       # the attention_mask says where padding is
                if value not in (None, "left", "right"):
                    raise ValueError(f"padding_side must be 'left', 'right' or None, got "
                                     f"{value!r}")
            elif value is not None:
                raise ValueError(f"GPT.forward: {name} is not supported (this GPT has no KV "
                                 f"cache or shortformer positions); pass {name}=None")
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be one of 'logits', 'loss', 'both' or None, got "
                             f"{return_type!r}")
        if start_at_layer is None:
            if isinstance(input, str) or (isinstance(input, list) and input
                                          and all(isinstance(t, str) for t in input)):
                input = self.to_tokens(input, prepend_bos=prepend_bos)
            tokens = input
            self.check_tokens(tokens)
            mask = check_mask("attention_mask", attention_mask, tokens)
            b, p = tokens.shape
            x = F.embedding(tokens, self.W_E)
            lo = self._lora
            if lo and "W_E" in lo:
                x = x + lo["W_E"](tokens)
            x = self.hook_embed(x)
            if cfg.positional in ("learned", "sinusoidal"):
                if mask is None:
                    pos = self.W_pos[:p].expand(b, p, cfg.d_model)
                    if is_hooked(self.hook_pos_embed):   # a cached copy must not alias W_pos
                        pos = pos.clone()
                else:                                     # positions count real tokens
                    pos = self.W_pos[positions_from_mask(mask, p)]
                if lo and "W_pos" in lo:
                    ids = (positions_from_mask(mask, p, device=tokens.device) if mask is not None
                           else torch.arange(p, device=tokens.device)[None])
                    pos = pos + lo["W_pos"](ids)
                x = x + self.hook_pos_embed(pos)
            x = dropout(x, cfg.dropout, self.training)
        else:
            x = input
            if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != cfg.d_model:
                raise ValueError(f"with start_at_layer, input must be the residual stream "
                                 f"[batch, pos, d_model={cfg.d_model}], got "
                                 f"{list(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
            if tokens is not None:
                self.check_tokens(tokens)
            mask = check_mask("attention_mask", attention_mask, x[..., 0])
        rot = (positions_from_mask(mask, x.shape[1])
               if mask is not None and cfg.positional == "rotary" else None)
        blocks = self.blocks
        if start_at_layer is not None or stop_at_layer is not None:
            # A list slice: slicing the ModuleList itself would build a new Module each call.
            blocks = list(blocks)[start_at_layer:stop_at_layer]
        for block in blocks:
            x = block(x) if mask is None else block(x, key_mask=mask, positions=rot)
        if stop_at_layer is not None:
            return x
        if cfg.norm == "pre":
            x = self.ln_final(x)
        un = self.unembed
        if is_hooked(un.hook_in) or is_hooked(un.hook_out):
            logits = un(x)
        elif un._lora:
            logits = un.logits(x)
        else:                  # no module call on the training path
            logits = F.linear(x, self.W_U.T, self.b_U)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        if tokens is None:
            raise ValueError("a loss needs the tokens: pass tokens=... with start_at_layer")
        if mask is None:
            loss = (next_token_loss(logits, tokens) if not loss_per_token
                    else per_token_loss(logits, tokens))
        else:      # a prediction counts when the token it reads and the one it predicts are real
            counted = (mask[:, :-1] & mask[:, 1:]).to(logits.dtype)
            loss = per_token_loss(logits, tokens) * counted
            if not loss_per_token:
                loss = loss.sum() / counted.sum().clamp(min=1)
        return loss if return_type == "loss" else (logits, loss)

    def loss(self, tokens: Int[Tensor, "batch pos"], *,
             label_smoothing: float = 0.0) -> Float[Tensor, ""]:
        """Mean next-token cross-entropy of `tokens` (positions 1.. predicted from 0..)."""
        return next_token_loss(self(tokens), tokens, label_smoothing=label_smoothing)

    @torch.no_grad()
    def generate(self, tokens: Int[Tensor, "batch pos"], max_new_tokens: int, *,
                 temperature: float | int = 1.0, top_k: int | None = None,
                 generator: torch.Generator | int | None = None
                 ) -> Int[Tensor, "batch new_pos"]:
        """Append `max_new_tokens` sampled tokens (the prompt included in the result).

        temperature 0 is greedy (argmax); top_k keeps the k most likely tokens before sampling.
        The context is cropped to the last n_ctx tokens. Runs in eval mode (no dropout), then
        restores the previous mode. `generator`: a torch.Generator on the model's device or
        an int seed, for reproducible samples.
        """
        v.non_negative_int("max_new_tokens", max_new_tokens)
        v.non_negative_float("temperature", temperature)
        if top_k is not None:
            v.positive_int("top_k", top_k)
        self.check_tokens(tokens)
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator(device=self.device).manual_seed(generator)
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                logits = self(tokens[:, -self.cfg.n_ctx:])[:, -1, :].float()
                if temperature == 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.shape[-1]:
                        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = logits.softmax(dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=generator)
                tokens = torch.cat([tokens, nxt.to(tokens.dtype)], dim=1)
        finally:
            self.train(was_training)
        return tokens

    # ---- hook names: an unknown name is an error that lists close matches (hooks.CheckedHookNames)

    def _hook_name_context(self) -> str:
        cfg = self.cfg
        return (f". Hook points depend on the config (n_layers={cfg.n_layers}, "
                f"positional={cfg.positional!r}, norm={cfg.norm!r}, attn_only={cfg.attn_only})")

    @classmethod
    def from_hooked_transformer(cls, ht: Any, *, device: torch.device | str | None = None
                                ) -> GPT:
        """Our GPT with a TransformerLens HookedTransformer's weights: the same logits and
        hooks (`superpose.gpt.convert`); an architecture we cannot express is refused."""
        from superpose.gpt.convert import from_hooked_transformer
        return from_hooked_transformer(ht, device=device)

    # ---- TransformerLens's HookedTransformer surface -----------------------------------------
    # What TL's ActivationCache (decompose_resid, apply_ln_to_stack, logit_attrs,
    # get_full_resid_decomposition, ...), transformer_lens.patching and SVDInterpreter read.

    # -- tokens (needs a tokenizer: GPT(cfg, tokenizer=tok) or model.tokenizer = tok) --

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this GPT has no tokenizer; pass token ids, or attach one: "
                             "GPT(cfg, tokenizer=tok) or model.tokenizer = tok")
        return self.tokenizer

    def to_tokens(self, input: str | list[str], prepend_bos: bool | None = None,
                  *args: Any, **kwargs: Any) -> Int[Tensor, "batch pos"]:
        """Text (or a list of equally long texts) as token ids [batch pos] on the model's
        device. Our tokenizers have no BOS token, so prepend_bos=True is refused."""
        if prepend_bos:
            raise ValueError("this GPT's tokenizers have no BOS token; use prepend_bos=False")
        tok = self._tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        ids = [tok.encode(t) for t in texts]
        if len({len(i) for i in ids}) > 1:
            raise ValueError(f"texts encode to different lengths {[len(i) for i in ids]}; "
                             "tokenize them one at a time, or pad them and pass attention_mask "
                             "(transformer.data.pad_sequences)")
        return torch.stack(ids).to(self.device)

    def to_string(self, tokens: Any) -> str | list[str]:
        tok = self._tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim <= 1:
            return tok.decode(tokens.reshape(-1))
        return [tok.decode(row) for row in tokens]

    def to_str_tokens(self, input: Any, *args: Any, **kwargs: Any) -> list[str]:
        tok = self._tokenizer()
        if isinstance(input, Tensor):
            if input.ndim == 2 and input.shape[0] != 1:
                raise ValueError(f"to_str_tokens takes one sequence, got a batch of "
                                 f"{input.shape[0]}")
            input = input.reshape(-1)
        return tok.to_str_tokens(input)

    def to_single_token(self, string: str) -> int:
        ids = self.to_tokens(string).reshape(-1)
        if ids.numel() != 1:
            raise ValueError(f"{string!r} is {ids.numel()} tokens, not one: "
                             f"{self.to_str_tokens(ids)}")
        return int(ids.item())

    def tokens_to_residual_directions(self, tokens: Any) -> Tensor:
        """The unembedding direction(s) of token(s) in the residual stream: [d_model] for one
        token (an int, a one-token string or a 0-d tensor), [..., d_model] for a tensor."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        if isinstance(tokens, int) or (isinstance(tokens, Tensor) and tokens.ndim == 0):
            return self.W_U[:, int(tokens)]
        return self.W_U[:, torch.as_tensor(tokens, device=self.device)].movedim(0, -1)

    def accumulated_bias(self, layer: int, mlp_input: bool = False,
                         include_mlp_biases: bool = True) -> Float[Tensor, " d_model"]:
        """Sum of the output biases (attn b_O, mlp b_out) written before block `layer`; with
        mlp_input, also that block's b_O (TL's definition)."""
        if not 0 <= layer <= self.cfg.n_layers:
            raise ValueError(f"layer must lie in [0, n_layers={self.cfg.n_layers}], got {layer}")
        total = torch.zeros(self.cfg.d_model, device=self.device, dtype=self.W_E.dtype)
        for block in list(self.blocks)[:layer]:
            total = total + block.attn.b_O
            if include_mlp_biases and not self.cfg.attn_only:
                total = total + block.mlp.b_out
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError("mlp_input needs layer < n_layers (there is no MLP after the "
                                 "last block)")
            total = total + self.blocks[layer].attn.b_O
        return total

    # -- stacked weights, as HookedTransformer's properties --

    def _stack(self, get: Any) -> Tensor:
        return torch.stack([get(b) for b in self.blocks])

    W_Q = property(lambda self: self._stack(lambda b: b.attn.W_Q))   # [layer head d_model d_head]
    W_K = property(lambda self: self._stack(lambda b: b.attn.W_K))
    W_V = property(lambda self: self._stack(lambda b: b.attn.W_V))
    W_O = property(lambda self: self._stack(lambda b: b.attn.W_O))   # [layer head d_head d_model]
    b_Q = property(lambda self: self._stack(lambda b: b.attn.b_Q))   # [layer head d_head]
    b_K = property(lambda self: self._stack(lambda b: b.attn.b_K))
    b_V = property(lambda self: self._stack(lambda b: b.attn.b_V))
    b_O = property(lambda self: self._stack(lambda b: b.attn.b_O))   # [layer d_model]
    W_in = property(lambda self: self._stack(lambda b: b.mlp.W_in))  # [layer d_model d_mlp]
    W_out = property(lambda self: self._stack(lambda b: b.mlp.W_out))
    b_in = property(lambda self: self._stack(lambda b: b.mlp.b_in))
    b_out = property(lambda self: self._stack(lambda b: b.mlp.b_out))

    def tl_parameters(self) -> dict[str, Tensor]:
        """Every weight under HookedTransformer's state-dict name and layout (embed.W_E,
        pos_embed.W_pos, blocks.{i}.attn.W_Q [head d_model d_head], ..., unembed.W_U). Views
        where the layout allows: editing them edits the model. SVDInterpreter reads this."""
        cfg = self.cfg
        out: dict[str, Tensor] = {"embed.W_E": self.W_E}
        if cfg.positional in ("learned", "sinusoidal"):
            out["pos_embed.W_pos"] = self.W_pos
        for i, b in enumerate(self.blocks):
            if cfg.norm != "none":
                out[f"blocks.{i}.ln1.w"], out[f"blocks.{i}.ln1.b"] = b.ln1.w, b.ln1.b
                if not cfg.attn_only:
                    out[f"blocks.{i}.ln2.w"], out[f"blocks.{i}.ln2.b"] = b.ln2.w, b.ln2.b
            for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
                out[f"blocks.{i}.attn.{name}"] = getattr(b.attn, name)
            if not cfg.attn_only:
                for name in ("W_in", "b_in", "W_out", "b_out"):
                    out[f"blocks.{i}.mlp.{name}"] = getattr(b.mlp, name)
        if cfg.norm == "pre":
            out["ln_final.w"], out["ln_final.b"] = self.ln_final.w, self.ln_final.b
        out["unembed.W_U"], out["unembed.b_U"] = self.W_U, self.b_U
        return out


def _check_next_token(what: str, logits: Tensor, tokens: Tensor) -> None:
    if logits.shape[:2] != tokens.shape or tokens.shape[1] < 2:
        raise ValueError(f"{what} needs logits [batch, pos, d_vocab] and tokens [batch, pos] "
                         f"with pos >= 2, got {list(logits.shape)} and {list(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"{what}: tokens must hold integer token ids, got dtype {tokens.dtype}")
    lo, hi = int(tokens[:, 1:].min()), int(tokens[:, 1:].max())
    if lo < 0 or hi >= logits.shape[-1]:
        raise ValueError(f"{what}: target token ids (tokens[:, 1:]) must lie in [0, d_vocab="
                         f"{logits.shape[-1]}) of the logits, got values in [{lo}, {hi}]; the "
                         "tokens come from another tokenizer or the logits from another model")


def per_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
                   ) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting tokens[:, t+1] from logits[:, t], per token [batch pos-1]
    (TransformerLens's `lm_cross_entropy_loss(..., per_token=True)`)."""
    _check_next_token("per_token_loss", logits, tokens)
    log_probs = logits[:, :-1].float().log_softmax(dim=-1)
    return -log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def next_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"],
                    *, label_smoothing: float = 0.0) -> Float[Tensor, ""]:
    """Mean cross-entropy of predicting tokens[:, t+1] from logits[:, t]."""
    _check_next_token("next_token_loss", logits, tokens)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                           tokens[:, 1:].reshape(-1), label_smoothing=label_smoothing)
