"""The parts every transformer here is built from: LayerNorm, attention (causal, padding and
cross-attention masks, a KV cache), MLP, positional tables, and one residual block that covers
the three families (decoder-only GPT, BERT-style encoder, encoder–decoder).

A part reads its sizes from a config by name (`d_model`, `n_heads`, `d_head`, `d_mlp`, `n_ctx`,
`dropout`, `positional`, `norm`, `act`, `ln_eps`, `rotary_base`, and TransformerLens's runtime
switches `use_attn_result`, `use_split_qkv_input`, `use_attn_in`, `use_hook_mlp_in`):
`GPTConfig`, `EncoderConfig` and `Seq2SeqConfig` all have them.

Hook points carry TransformerLens's names and meanings (see `Block`). Every matmul is one
`F.linear` on the stored weights; q, k and v come from one fused weight `W_QKV`
[3, head, d_head, d_model] whose TransformerLens-layout views are `W_Q/W_K/W_V`
[head, d_model, d_head]. Attention runs through `F.scaled_dot_product_attention` unless a hook
is attached to hook_attn_scores or hook_pattern; then scores and pattern are computed
explicitly so hooks can read and replace them (the paths agree to float precision, tested).

Masks. `key_mask` [batch, key_pos] is True at real tokens and False at padding (the
HuggingFace / TransformerLens `attention_mask` convention, the opposite of torch's
`key_padding_mask`). A padded key gets probability 0 at every query. In a causal
self-attention every query may also attend to itself, so a padded query (left padding) never
has an empty row — its output is never used at a real position, and without it softmax would
give NaN, which 0-probability weights would still spread (0 · NaN = NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import FactoredMatrix

from superpose.hooks import FastHookPoint, is_hooked


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    return F.dropout(x, p, True) if p > 0 and training else x


def linear(module: nn.Module, leaf: str, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """x @ w + b for a weight w [d_in d_out] in TransformerLens's layout, plus the LoRA term of
    `module`'s adapter on `leaf` when it has one (superpose.lora). A module using it lists the
    weights in `LORA_WEIGHTS` and has a `_lora` dict."""
    out = F.linear(x, w.T, b)
    lo = module._lora.get(leaf) if module._lora else None
    return out if lo is None else lo.add_to(out, x)


def embedding(module: nn.Module, leaf: str, ids: Tensor, table: Tensor) -> Tensor:
    """Rows `ids` of an embedding table [rows d_model], plus the LoRA term of `module`'s adapter
    on `leaf` when it has one (the adapter's x Aᵀ is then a row lookup of Aᵀ)."""
    out = F.embedding(ids, table)
    lo = module._lora.get(leaf) if module._lora else None
    return out if lo is None else out + lo(ids)


class LayerNorm(nn.Module):
    """LayerNorm with TL's hooks and TL's meaning: hook_scale [batch pos 1] is
    sqrt(var + eps) and hook_normalized is (x - mean) / scale, *before* the learned w and b.
    Works on [batch pos d_model] and on per-head inputs [batch pos head d_model]."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.eps = cfg.ln_eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = FastHookPoint()       # [batch pos 1]
        self.hook_normalized = FastHookPoint()  # [batch pos d_model]

    def forward(self, x: Float[Tensor, "batch pos *head d_model"]
                ) -> Float[Tensor, "batch pos *head d_model"]:
        if is_hooked(self.hook_scale) or is_hooked(self.hook_normalized):
            x = x - x.mean(-1, keepdim=True)
            scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
            return self.hook_normalized(x / scale) * self.w + self.b
        return F.layer_norm(x, self.w.shape, self.w, self.b, self.eps)


def rotary_tables(cfg: Any) -> tuple[Tensor, Tensor]:
    """cos and sin [n_ctx, d_head] for RoPE in the GPT-NeoX "rotate half" layout."""
    half = cfg.d_head // 2
    inv_freq = cfg.rotary_base ** (-torch.arange(half, dtype=torch.float64) / half)
    n_ctx = getattr(cfg, "n_ctx_max", cfg.n_ctx)   # a Seq2SeqConfig: the longer side
    angles = torch.arange(n_ctx, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def sinusoidal_table(n_ctx: int, d_model: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...) (Vaswani et al. 2017, §3.5)."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    i2 = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = pos / 10_000 ** (i2 / d_model)
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()[:, : d_model // 2]
    return table.float()


def positions_from_mask(mask: Tensor | None, length: int, offset: int = 0,
                        device: torch.device | None = None) -> Tensor:
    """Position ids [batch|1, pos]: 0, 1, 2, ... over the real tokens (so a left-padded
    sequence has the same positions as the unpadded one), from `offset` on; padding gets 0."""
    if mask is None:
        return torch.arange(offset, offset + length, device=device)[None]
    return ((mask.long().cumsum(-1) - 1).clamp(min=0) + offset) * mask


class Circuits:
    """TransformerLens's QK and OV circuits as FactoredMatrix, from W_Q, W_K, W_V, W_O with any
    leading dimensions: [head ...] on one attention layer, [layer head ...] on a model."""

    W_Q: Tensor
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor

    @property
    def QK(self) -> FactoredMatrix:
        """W_Q W_Kᵀ of every head: FactoredMatrix [... head d_model d_model]."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """W_V W_O of every head: FactoredMatrix [... head d_model d_model]."""
        return FactoredMatrix(self.W_V, self.W_O)


@dataclass
class KVCacheEntry:
    """One attention layer's cached keys and values [batch head pos d_head] (self-attention:
    grows by one position per generated token; cross-attention: the encoder's, fixed)."""

    k: Tensor | None = None
    v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def reorder(self, index: Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k[index], self.v[index]


@dataclass
class KVCache:
    """Keys and values of every decoder layer while generating: `self_attn[i]` and
    `cross_attn[i]`, plus the key mask of everything cached so far. `reorder(index)` follows
    the beams of a beam search."""

    self_attn: list[KVCacheEntry] = field(default_factory=list)
    cross_attn: list[KVCacheEntry] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> KVCache:
        return cls([KVCacheEntry() for _ in range(n_layers)],
                   [KVCacheEntry() for _ in range(n_layers)])

    @property
    def length(self) -> int:
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index: Tensor) -> None:
        for e in (*self.self_attn, *self.cross_attn):
            e.reorder(index)


class Attention(Circuits, nn.Module):
    """Multi-head attention. `causal`: a query sees keys at or before its position.
    `cross`: queries from the stream, keys and values from another sequence (the encoder's
    output), no rotary positions. LoRA adapters (`superpose.lora`) on W_Q/W_K/W_V/W_O add
    their low-rank term after each projection."""

    _lora: dict[str, Any] = {}   # unmerged adapters by weight name (superpose.lora sets it)

    def __init__(self, cfg: Any, *, causal: bool, cross: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal, self.cross = causal, cross
        self.rotary = cfg.positional == "rotary" and not cross
        h, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
        self.W_QKV = nn.Parameter(torch.empty(3, h, dh, d))   # F.linear layout, fused q|k|v
        self.b_QKV = nn.Parameter(torch.zeros(3, h, dh))
        self.W_O = nn.Parameter(torch.empty(h, dh, d))        # TL layout
        self.b_O = nn.Parameter(torch.zeros(d))
        if causal:
            n = getattr(cfg, "n_ctx_max", cfg.n_ctx)
            mask = torch.ones(n, n, dtype=torch.bool).triu(1)
            self.register_buffer("mask", mask, persistent=False)  # True above the diagonal
        if self.rotary:
            cos, sin = rotary_tables(cfg)
            self.register_buffer("rot_cos", cos, persistent=False)
            self.register_buffer("rot_sin", sin, persistent=False)
        self.hook_k = FastHookPoint()            # [batch pos head d_head]
        self.hook_q = FastHookPoint()
        self.hook_v = FastHookPoint()
        self.hook_z = FastHookPoint()            # [batch pos head d_head]
        self.hook_attn_scores = FastHookPoint()  # [batch head query_pos key_pos]
        self.hook_pattern = FastHookPoint()
        self.hook_result = FastHookPoint()       # [batch pos head d_model] (use_attn_result)
        if self.rotary:
            self.hook_rot_k = FastHookPoint()
            self.hook_rot_q = FastHookPoint()

    # TransformerLens-layout views of the fused weight: [head, d_model, d_head] and [head, d_head].
    W_Q = property(lambda self: self.W_QKV[0].transpose(-1, -2))
    W_K = property(lambda self: self.W_QKV[1].transpose(-1, -2))
    W_V = property(lambda self: self.W_QKV[2].transpose(-1, -2))
    b_Q = property(lambda self: self.b_QKV[0])
    b_K = property(lambda self: self.b_QKV[1])
    b_V = property(lambda self: self.b_QKV[2])

    def _rotate(self, x: Tensor, positions: Tensor | None) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        if positions is None:
            p = x.shape[1]
            cos, sin = self.rot_cos[:p, None, :], self.rot_sin[:p, None, :]
        else:      # [batch|1, pos] -> [batch|1, pos, 1, d_head]
            cos, sin = self.rot_cos[positions][:, :, None], self.rot_sin[positions][:, :, None]
        return x * cos + rotated * sin

    def _project(self, x: Tensor, i: int) -> Tensor:
        """Per-head input [batch pos head d_model] through head i of q|k|v (TL's split path)."""
        out = torch.einsum("bphd,hed->bphe", x, self.W_QKV[i]) + self.b_QKV[i]
        lo = self._lora.get(("W_Q", "W_K", "W_V")[i])
        return out if lo is None else out + lo.heads_in(x)

    def _adapt(self, t: Tensor, name: str, x: Tensor) -> Tensor:
        """t [batch pos head d_head] plus the LoRA term of weight `name` on input x, if any."""
        lo = self._lora.get(name)
        return t if lo is None else t + lo(x).view(t.shape)

    def _qkv(self, query_input: Tensor, key_input: Tensor | None, value_input: Tensor | None,
             context: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        cfg = self.cfg
        b, p = query_input.shape[:2]
        if self.cross:
            q = F.linear(query_input, self.W_QKV[0].reshape(-1, cfg.d_model),
                         self.b_QKV[0].reshape(-1)).view(b, p, cfg.n_heads, cfg.d_head)
            if self._lora:
                q = self._adapt(q, "W_Q", query_input)
            if context is None:
                return q, None, None
            s = context.shape[1]
            kv = F.linear(context, self.W_QKV[1:].reshape(-1, cfg.d_model),
                          self.b_QKV[1:].reshape(-1))
            k, val = kv.view(b, s, 2, cfg.n_heads, cfg.d_head).unbind(2)
            if self._lora:
                k, val = self._adapt(k, "W_K", context), self._adapt(val, "W_V", context)
            return q, k, val
        if key_input is None:
            qkv = F.linear(query_input, self.W_QKV.view(-1, cfg.d_model), self.b_QKV.view(-1))
            q, k, val = qkv.view(b, p, 3, cfg.n_heads, cfg.d_head).unbind(2)
            if self._lora:
                q, k, val = (self._adapt(t, name, query_input)
                             for t, name in ((q, "W_Q"), (k, "W_K"), (val, "W_V")))
            return q, k, val
        q, k, val = (self._project(x, i) for i, x in
                     enumerate((query_input, key_input, value_input)))
        return q, k, val

    def forward(self, query_input: Float[Tensor, "batch pos *head d_model"],
                key_input: Float[Tensor, "batch pos *head d_model"] | None = None,
                value_input: Float[Tensor, "batch pos *head d_model"] | None = None, *,
                key_mask: Tensor | None = None, positions: Tensor | None = None,
                context: Tensor | None = None, past: KVCacheEntry | None = None,
                ) -> Float[Tensor, "batch pos d_model"]:
        """Self-attention: one input [batch pos d_model] (the fused path), or TL's three per-head
        inputs [batch pos head d_model] (use_split_qkv_input / use_attn_in).
        Cross-attention: `context` [batch key_pos d_model] gives keys and values (or `past`
        holds them already). `key_mask` [batch key_pos] bool, True at real keys (for a causal
        layer with a cache: the mask of cached plus new positions). `positions` [batch|1, pos]
        for rotary (None: 0..pos-1). `past`: a KV cache entry, extended in place (self) or
        filled once and reused (cross)."""
        cfg = self.cfg
        b, p = query_input.shape[:2]
        q, k, val = self._qkv(query_input, key_input, value_input, context)
        q = self.hook_q(q)
        if k is not None:
            k, val = self.hook_k(k), self.hook_v(val)
        if self.rotary:
            q = self.hook_rot_q(self._rotate(q, positions))
            k = self.hook_rot_k(self._rotate(k, positions))
        # [batch head pos d_head] for the matmuls; views, no copies.
        q = q.transpose(1, 2)
        if k is not None:
            k, val = k.transpose(1, 2), val.transpose(1, 2)
        n_past = 0
        if past is not None:
            if self.cross:
                if k is None:
                    k, val = past.k, past.v
                else:
                    past.k, past.v = k, val
            else:
                n_past = past.length
                if n_past:
                    k, val = torch.cat([past.k, k], dim=2), torch.cat([past.v, val], dim=2)
                past.k, past.v = k, val
        if k is None:
            raise ValueError("cross-attention needs the encoder output (context=...) or a "
                             "filled KV cache")
        n_k = k.shape[2]
        allowed = self._allowed(p, n_k, n_past, key_mask, q.device)
        p_drop = cfg.dropout if self.training else 0.0
        if is_hooked(self.hook_attn_scores) or is_hooked(self.hook_pattern):
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.d_head)
            if allowed is True:
                scores = scores.masked_fill(self.mask[:p, :p], float("-inf"))
            elif allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(scores.softmax(dim=-1))
            z = dropout(pattern, p_drop, self.training) @ val
        elif allowed is True:
            z = F.scaled_dot_product_attention(q, k, val, dropout_p=p_drop, is_causal=True)
        else:
            z = F.scaled_dot_product_attention(q, k, val, attn_mask=allowed, dropout_p=p_drop)
        z = self.hook_z(z.transpose(1, 2))
        lo = self._lora.get("W_O") if self._lora else None
        if cfg.use_attn_result:
            result = torch.einsum("bphe,hed->bphd", z, self.W_O)
            if lo is not None:
                result = result + lo.heads_out(z)
            return self.hook_result(result).sum(-2) + self.b_O
        z = z.reshape(b, p, -1)
        out = F.linear(z, self.W_O.view(-1, cfg.d_model).T, self.b_O)
        return out if lo is None else lo.add_to(out, z)

    def _allowed(self, n_q: int, n_k: int, n_past: int, key_mask: Tensor | None,
                 device: torch.device) -> Tensor | bool | None:
        """Which keys each query may attend to: None (all), True (plain causal, queries and
        keys aligned), or a bool tensor [batch|1, 1, query, key]."""
        if not self.causal:
            return None if key_mask is None else key_mask[:, None, None, :]
        if key_mask is None and n_past == 0:
            return True
        q_pos = torch.arange(n_past, n_past + n_q, device=device)[:, None]
        k_pos = torch.arange(n_k, device=device)[None, :]
        allowed = (k_pos <= q_pos)[None, None]
        if key_mask is not None:
            allowed = (allowed & key_mask[:, None, None, :]) | (k_pos == q_pos)[None, None]
        return allowed


class MLP(nn.Module):
    _lora: dict[str, Any] = {}   # unmerged LoRA adapters on W_in / W_out (superpose.lora)

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))   # TL layout
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.act = F.gelu if cfg.act == "gelu" else F.relu
        self.hook_pre = FastHookPoint()   # [batch pos d_mlp]
        self.hook_post = FastHookPoint()  # [batch pos d_mlp]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        lo = self._lora
        pre = F.linear(x, self.W_in.T, self.b_in)
        if lo and "W_in" in lo:
            pre = lo["W_in"].add_to(pre, x)
        post = self.hook_post(self.act(self.hook_pre(pre)))
        out = F.linear(post, self.W_out.T, self.b_out)
        return lo["W_out"].add_to(out, post) if lo and "W_out" in lo else out


class Block(nn.Module):
    """One residual block: self-attention, then (`cross=True`) cross-attention to a context,
    then (unless attn_only) an MLP. LayerNorm k belongs to sublayer k (ln1: self-attention,
    ln2: cross-attention or MLP, ln3: the MLP after a cross-attention), as in TransformerLens.

    norm="pre": x + f(ln_k(x)) (GPT-2, T5). norm="none": x + f(x). norm="post": the original
    Transformer's ln_k(x + f(x)), with two hook conventions:
      - post_hooks="stream" (the GPT's): hook_resid_mid / hook_resid_post hold the normalized
        stream, what the next sublayer reads.
      - post_hooks="sum" (TransformerLens's HookedEncoder, BERT): they hold the sums before
        LayerNorm, and hook_normalized_resid_post holds the block's output ln_last(resid_post).

    Hooks, TransformerLens names: hook_resid_pre, hook_attn_out, hook_resid_mid,
    hook_cross_attn_out, hook_resid_mid_cross, hook_mlp_out, hook_resid_post
    (+ hook_normalized_resid_post with post_hooks="sum"); switched: hook_attn_in, hook_q_input,
    hook_k_input, hook_v_input, hook_cross_attn_in, hook_mlp_in. hook_*_out is exactly what is
    added to the stream (after dropout).
    """

    def __init__(self, cfg: Any, *, causal: bool, cross: bool = False, attn_only: bool = False,
                 post_hooks: str = "stream") -> None:
        super().__init__()
        self.cfg = cfg
        self.cross, self.attn_only = cross, attn_only
        self.norm = cfg.norm
        self.post_sum = cfg.norm == "post" and post_hooks == "sum"
        n_sub = 1 + cross + (not attn_only)
        if cfg.norm != "none":
            self.ln1 = LayerNorm(cfg)
            if n_sub >= 2:
                self.ln2 = LayerNorm(cfg)
            if n_sub == 3:
                self.ln3 = LayerNorm(cfg)
        self.attn = Attention(cfg, causal=causal)
        if cross:
            self.cross_attn = Attention(cfg, causal=False, cross=True)
        if not attn_only:
            self.mlp = MLP(cfg)
        self.hook_attn_in = FastHookPoint()   # [batch pos head d_model]
        self.hook_q_input = FastHookPoint()   # [batch pos head d_model]
        self.hook_k_input = FastHookPoint()
        self.hook_v_input = FastHookPoint()
        self.hook_mlp_in = FastHookPoint()    # [batch pos d_model]
        self.hook_attn_out = FastHookPoint()
        self.hook_mlp_out = FastHookPoint()   # (attn_only: present, as in TL, never fires)
        self.hook_resid_pre = FastHookPoint()
        if n_sub >= 2:
            self.hook_resid_mid = FastHookPoint()
        if cross:
            self.hook_cross_attn_in = FastHookPoint()
            self.hook_cross_attn_out = FastHookPoint()
            self.hook_resid_mid_cross = FastHookPoint()
        self.hook_resid_post = FastHookPoint()
        if self.post_sum:
            self.hook_normalized_resid_post = FastHookPoint()
        lns = [getattr(self, f"ln{i}", None) for i in (1, 2, 3)]
        hooks_after = [self.hook_resid_mid if n_sub >= 2 else self.hook_resid_post]
        if cross:
            hooks_after.append(self.hook_resid_mid_cross)
        if not attn_only:
            hooks_after.append(self.hook_resid_post)
        self._lns, self._after = lns, hooks_after

    def _self_attention(self, x: Tensor, ln: Any, **kw: Any) -> Tensor:
        cfg = self.cfg
        if not (cfg.use_attn_in or cfg.use_split_qkv_input):
            return self.attn(ln(x), **kw)
        heads = x[:, :, None, :].expand(-1, -1, cfg.n_heads, -1)
        if cfg.use_split_qkv_input:    # as TL: split inputs come from resid_pre, not attn_in
            qkv = (self.hook_q_input(heads.clone()), self.hook_k_input(heads.clone()),
                   self.hook_v_input(heads.clone()))
        else:
            attn_in = self.hook_attn_in(heads.clone())
            qkv = (attn_in, attn_in, attn_in)
        return self.attn(*(ln(t) for t in qkv), **kw)

    def _sublayer(self, x: Tensor, k: int, f: Any, out_hook: FastHookPoint,
                  in_hook: FastHookPoint | None = None, *, last: bool,
                  next_in_hook: FastHookPoint | None = None) -> Tensor:
        """Sublayer k (0-based) of this block: x -> the stream after it. `in_hook` (e.g.
        hook_mlp_in) fires on a copy of what the sublayer reads, before its pre-LN; with
        post_hooks="sum" (TL's BertBlock) the next sublayer's input hook instead fires on the
        sum before this sublayer's LayerNorm, which then feeds both the stream and the next
        sublayer (`next_in_hook`)."""
        ln, after, drop = self._lns[k], self._after[k], self.cfg.dropout
        norm = self.norm
        if norm == "pre":
            h = in_hook(x.clone()) if in_hook is not None else x
            x = x + out_hook(dropout(f(h, ln), drop, self.training))
            return after(x)
        h = in_hook(x.clone()) if in_hook is not None and not self.post_sum else x
        s = x + out_hook(dropout(f(h, _identity), drop, self.training))
        if norm == "none":
            return after(s)
        if self.post_sum:
            s = after(s)
            if next_in_hook is not None:
                s = next_in_hook(s.clone())
            out = ln(s)
            return self.hook_normalized_resid_post(out) if last else out
        return after(ln(s))

    def forward(self, x: Float[Tensor, "batch pos d_model"], *, key_mask: Tensor | None = None,
                positions: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, past: KVCacheEntry | None = None,
                cross_past: KVCacheEntry | None = None) -> Float[Tensor, "batch pos d_model"]:
        """`key_mask` [batch key_pos]: True at real tokens of this stream (with a cache: cached
        plus new). `context`, `context_mask`: the encoder's output and its mask (cross=True)."""
        cfg = self.cfg
        x = self.hook_resid_pre(x)
        n = 1 + self.cross + (not self.attn_only)
        cross_in = self.hook_cross_attn_in if self.cross and cfg.use_attn_in else None
        mlp_in = self.hook_mlp_in if cfg.use_hook_mlp_in and not self.attn_only else None
        x = self._sublayer(
            x, 0, lambda h, ln: self._self_attention(h, ln, key_mask=key_mask,
                                                     positions=positions, past=past),
            self.hook_attn_out, last=n == 1, next_in_hook=cross_in if self.cross else mlp_in)
        if self.cross:
            x = self._sublayer(
                x, 1, lambda h, ln: self.cross_attn(ln(h), key_mask=context_mask,
                                                    context=context, past=cross_past),
                self.hook_cross_attn_out, cross_in, last=n == 2, next_in_hook=mlp_in)
        if not self.attn_only:
            x = self._sublayer(x, n - 1, lambda h, ln: self.mlp(ln(h)), self.hook_mlp_out,
                               mlp_in, last=True)
        return x


def _identity(x: Tensor) -> Tensor:
    return x


def init_weights(model: nn.Module, init_std: float, residual_writes: int, seed: int) -> None:
    """N(0, init_std) for every weight named W_*, residual-writing projections (W_O, W_out)
    scaled by 1/sqrt(writes) (GPT-2, Radford et al. 2019 §2.3); biases 0, LN gains 1. Seeded,
    drawn on the CPU in `named_parameters` order, so the model is the same on every device."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                std = init_std / (math.sqrt(residual_writes) if leaf in ("W_O", "W_out") else 1)
                p.copy_(torch.randn(p.shape, generator=gen) * std)
