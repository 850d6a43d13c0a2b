"""What an SAE latent means: where it fires, what it writes, which latents it resembles.

    st = latent_stats(model, s, "blocks.1.hook_resid_post", tokens, latents=[3, 17], k=10)
    st.top[3].values, st.top[3].seq, st.top[3].pos, st.top[3].strings(tok)   # top contexts
    st.histogram(3), st.density                                               # how often
    le = logit_effect(s, model, 3, "blocks.1.hook_resid_post"); le.top_tokens(tok)
    nb = decoder_neighbours(s, 3, k=5)                                        # nearest rows

`latent_stats` streams `tokens` through the model in batches (the forward pass cut short at
the hook), encodes each batch and keeps only, per requested latent, the running top-k
(activation, sequence, position, context ids and the latent's activation on each context
token), its positive activations (for histograms) and every latent's firing count: never the
[n_tokens, d_sae] activations. Ties go to the earlier (sequence, position), so the result is
that of one stable sort over all activations.

`logit_effect` is the decoder direction's *direct* path to the logits (later layers skipped):
for a residual-stream hook W_dec[i] @ W_U, for `blocks.L.mlp.hook_post` W_dec[i] @ W_out[L]
@ W_U, for `blocks.L.attn.hook_z` through W_O[L]. With `ln=True` the direction first passes
the final LayerNorm's linear part (centred, times its gain `w`; the per-token 1/σ is a positive
factor common to all logits and is left out), as the logit lens does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose import geometry
from superpose._progress import bar
from superpose.sae.base import SAE
from superpose.sae.splice import (
    as_rows,
    capture,
    check_model,
    check_sae,
    check_tokens,
    input_scale,
    model_device,
)

PAD = -1          # context id outside the sequence

_RESID = re.compile(r"^(hook_embed|hook_pos_embed|blocks\.\d+\.hook_(resid_pre|resid_mid|"
                    r"resid_post|attn_out|mlp_out))$")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")
_ATTN_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")
_LN_FINAL = "ln_final.hook_normalized"


@dataclass
class TopActivations:
    """The strongest activations of one latent, strongest first (only positive ones, so fewer
    than k when it fired less often). `tokens` / `acts` [n, left + 1 + right] are the context
    around each: token ids (PAD = -1 outside the sequence) and the latent's activation there;
    column `left` is the activating token."""

    latent: int
    values: Tensor     # [n]
    seq: Tensor        # [n] row of `tokens`
    pos: Tensor        # [n] position in that row
    tokens: Tensor     # [n, width]
    acts: Tensor       # [n, width]
    left: int

    def __len__(self) -> int:
        return len(self.values)

    def strings(self, tokenizer: Any) -> list[tuple[str, str, str]]:
        """(text before, the activating token, text after) per example, via the tokenizer's
        `to_str_tokens` (or `decode`) of the ids inside the sequence."""
        out = []
        for row in self.tokens.tolist():
            parts = [_token_strs(tokenizer, [t for t in part if t != PAD])
                     for part in (row[:self.left], row[self.left:self.left + 1],
                                  row[self.left + 1:])]
            out.append(tuple("".join(p) for p in parts))
        return out


def _token_strs(tokenizer: Any, ids: list[int]) -> list[str]:
    if not ids:
        return []
    if hasattr(tokenizer, "to_str_tokens"):
        return list(tokenizer.to_str_tokens(ids))
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode([i]) for i in ids]
    raise TypeError(f"tokenizer must have to_str_tokens or decode, got {type(tokenizer).__name__}")


@dataclass
class ActivationHistogram:
    """Counts of a latent's positive activations in `bins` equal bins; `n_active` of
    `n_total` positions fired."""

    counts: Tensor     # [bins]
    edges: Tensor      # [bins + 1]
    n_active: int
    n_total: int

    @property
    def density(self) -> float:
        return self.n_active / self.n_total if self.n_total else 0.0


def activation_histogram(values: Float[Tensor, " n"], *, n_total: int | None = None,
                         bins: int = 30) -> ActivationHistogram:
    """Histogram of the positive entries of `values` (a latent's activations; zeros and
    negatives count as not firing). `n_total`: positions they came from (default len(values);
    give it when `values` holds only the positive ones)."""
    if not isinstance(values, Tensor) or values.ndim != 1 or not values.is_floating_point():
        raise ValueError(f"values must be a 1-D float tensor of activations, got "
                         f"{getattr(values, 'shape', type(values).__name__)}")
    v.positive_int("bins", bins)
    pos = values.detach().float().cpu()
    pos = pos[pos > 0]
    total = len(values) if n_total is None else n_total
    v.non_negative_int("n_total", total)
    if total < len(pos):
        raise ValueError(f"n_total ({total}) is smaller than the number of positive "
                         f"activations ({len(pos)})")
    if len(pos) == 0:
        return ActivationHistogram(torch.zeros(bins), torch.linspace(0, 1, bins + 1), 0, total)
    hi = float(pos.max())
    return ActivationHistogram(torch.histc(pos, bins, 0.0, hi),
                               torch.linspace(0.0, hi, bins + 1), len(pos), total)


@dataclass
class LatentStats:
    """One streaming pass: per requested latent its top activations and all its positive
    activation values; `density` [d_sae] of every latent (fraction of the `n_tokens`
    positions where it fired)."""

    hook_name: str
    top: dict[int, TopActivations]
    values: dict[int, Tensor]
    density: Tensor
    n_tokens: int

    def histogram(self, latent: int, bins: int = 30) -> ActivationHistogram:
        if latent not in self.values:
            raise ValueError(f"latent {latent} was not among the requested latents "
                             f"{sorted(self.values)}")
        return activation_histogram(self.values[latent], n_total=self.n_tokens, bins=bins)


def _latent_list(latents: int | Sequence[int], d_sae: int) -> list[int]:
    raw = [latents] if isinstance(latents, int) and not isinstance(latents, bool) \
        else list(latents) if isinstance(latents, (list, tuple, range, Tensor)) else None
    if raw is None:
        raise ValueError(f"latents must be an int or a sequence of ints, got {latents!r}")
    out = []
    for i in raw:
        i = int(i) if isinstance(i, Tensor) and i.ndim == 0 else i
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < d_sae:
            raise ValueError(f"latents must be integers in [0, d_sae={d_sae}), got {i!r}")
        out.append(i)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"latents must be a non-empty list without repeats, got {raw}")
    return out


def _context(context: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(context, int) and not isinstance(context, bool):
        v.non_negative_int("context", context)
        return context, context
    if isinstance(context, tuple) and len(context) == 2:
        v.non_negative_int("context[0] (tokens before)", context[0])
        v.non_negative_int("context[1] (tokens after)", context[1])
        return context
    raise ValueError(f"context must be an int (tokens each side) or a pair (before, after), "
                     f"got {context!r}")


@torch.no_grad()
def latent_stats(model: nn.Module, sae: SAE, hook_name: str, tokens: Int[Tensor, "batch pos"],
                 latents: int | Sequence[int], *, k: int = 10,
                 context: int | tuple[int, int] = 8, batch_size: int = 32,
                 scale: float | None = None, progress: bool = True) -> LatentStats:
    """Top-k activations with `context` tokens around them (an int: that many each side, or
    (before, after)), every positive activation and all latents' densities, from one pass
    over `tokens` [batch, pos] in `batch_size` sequences at a time. `scale`: as in
    `spliced_losses` (the factor the SAE's training activations were multiplied by).
    `progress=True` shows a progress bar over the batches (off under TQDM_DISABLE=1)."""
    check_model(model, hook_name)
    check_sae(sae)
    check_tokens(tokens)
    lat = _latent_list(latents, sae.cfg.d_sae)
    v.positive_int("k", k)
    v.positive_int("batch_size", batch_size)
    left, right = _context(context)
    s = input_scale(sae, scale)
    dev = model_device(model)
    n_lat, width = len(lat), left + 1 + right
    cols = torch.tensor(lat, device=sae.device)
    offsets = torch.arange(-left, right + 1, device=sae.device)
    run_vals = torch.empty(0, n_lat, device=sae.device)
    run_seq = torch.empty(0, n_lat, dtype=torch.long, device=sae.device)
    run_pos = torch.empty_like(run_seq)
    run_ids = torch.empty(0, n_lat, width, dtype=torch.long, device=sae.device)
    run_acts = torch.empty(0, n_lat, width, device=sae.device)
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=sae.device)
    values: list[list[Tensor]] = [[] for _ in lat]
    was_model, was_sae = model.training, sae.training
    model.eval()
    sae.eval()
    try:
        start = 0
        for chunk in bar(tokens.split(batch_size), progress=progress, desc="latent stats",
                         leave=False):
            chunk = chunk.to(dev)
            x = as_rows(capture(model, hook_name, chunk), sae.cfg.d_in, hook_name)
            x = x.to(sae.device, sae.W_dec.dtype)
            acts = sae.encode(x * s if s != 1.0 else x).float()      # [b, p, d_sae]
            b, p = acts.shape[:2]
            fires += (acts > 0).flatten(0, 1).sum(0).double()
            sel = acts[..., cols]                                     # [b, p, n_lat]
            flat = sel.flatten(0, 1)                                  # [b * p, n_lat]
            for j in range(n_lat):
                col = flat[:, j]
                values[j].append(col[col > 0].cpu())
            top_v, top_i = flat.sort(dim=0, descending=True, stable=True)
            top_v, top_i = top_v[:k], top_i[:k]                       # [k', n_lat]
            seq_l, pos = top_i // p, top_i % p
            wpos = pos[..., None] + offsets                           # [k', n_lat, width]
            inside = (wpos >= 0) & (wpos < p)
            wc = wpos.clamp(0, p - 1)
            ids = chunk.to(sae.device)[seq_l[..., None], wc].masked_fill(~inside, PAD)
            lat_idx = torch.arange(n_lat, device=sae.device)[None, :, None]
            ctx = sel[seq_l[..., None], wc, lat_idx].masked_fill(~inside, 0.0)
            # Merge: earlier entries first, so a stable sort keeps them ahead on ties.
            all_v = torch.cat([run_vals, top_v])
            order = all_v.sort(dim=0, descending=True, stable=True).indices[:k]
            run_vals = all_v.gather(0, order)
            run_seq = torch.cat([run_seq, seq_l + start]).gather(0, order)
            run_pos = torch.cat([run_pos, pos]).gather(0, order)
            o3 = order[..., None].expand(-1, -1, width)
            run_ids = torch.cat([run_ids, ids]).gather(0, o3)
            run_acts = torch.cat([run_acts, ctx]).gather(0, o3)
            start += b
    finally:
        model.train(was_model)
        sae.train(was_sae)
    top = {}
    for j, i in enumerate(lat):
        keep = run_vals[:, j] > 0
        top[i] = TopActivations(latent=i, values=run_vals[keep, j].cpu(),
                                seq=run_seq[keep, j].cpu(), pos=run_pos[keep, j].cpu(),
                                tokens=run_ids[keep, j].cpu(), acts=run_acts[keep, j].cpu(),
                                left=left)
    n_tok = tokens.numel()
    return LatentStats(hook_name=hook_name, top=top,
                       values={i: torch.cat(values[j]) for j, i in enumerate(lat)},
                       density=(fires / n_tok).float().cpu(), n_tokens=n_tok)


def top_activations(model: nn.Module, sae: SAE, hook_name: str,
                    tokens: Int[Tensor, "batch pos"], latents: int | Sequence[int], *,
                    k: int = 10, context: int | tuple[int, int] = 8, batch_size: int = 32,
                    scale: float | None = None,
                    progress: bool = True) -> dict[int, TopActivations]:
    """The top-k activations of each latent in `latents`, keyed by latent (see
    `latent_stats`, which also returns densities and histograms from the same pass)."""
    return latent_stats(model, sae, hook_name, tokens, latents, k=k, context=context,
                        batch_size=batch_size, scale=scale, progress=progress).top


# ---- what a latent writes ----------------------------------------------------------------------

@dataclass
class LogitEffect:
    """Direct effect on every logit of one unit of the latent (`values` [d_vocab]) and the k
    most promoted (`top_*`, largest first) and suppressed (`bottom_*`, most negative first)."""

    latent: int
    hook_name: str
    values: Tensor
    top_ids: Tensor
    top_values: Tensor
    bottom_ids: Tensor
    bottom_values: Tensor

    def top_tokens(self, tokenizer: Any) -> list[str]:
        return _token_strs(tokenizer, self.top_ids.tolist())

    def bottom_tokens(self, tokenizer: Any) -> list[str]:
        return _token_strs(tokenizer, self.bottom_ids.tolist())


def decoder_direction(sae: SAE, latent: int, *, scale: float | None = None
                      ) -> Float[Tensor, " d_in"]:
    """What one unit of `latent` adds to the *raw* activation: W_dec[latent] divided by the
    SAE's input scale (cfg.activation_scale, or `scale`)."""
    check_sae(sae)
    (i,) = _latent_list(latent, sae.cfg.d_sae)
    s = input_scale(sae, scale) * sae.cfg.activation_scale
    return sae.W_dec[i].detach() / s


def _final_ln(model: nn.Module, d: Tensor) -> Tensor:
    ln = getattr(model, "ln_final", None)
    if ln is None:
        return d
    if "rms" not in type(ln).__name__.lower():
        d = d - d.mean()
    w = getattr(ln, "w", None)
    return d * w.detach().to(d) if isinstance(w, Tensor) else d


@torch.no_grad()
def logit_effect(sae: SAE, model: nn.Module, latent: int, hook_name: str | None = None, *,
                 k: int = 10, ln: bool = True, scale: float | None = None) -> LogitEffect:
    """The latent's decoder direction pushed through the unembedding (see the module
    docstring). `hook_name` defaults to the SAE's `cfg.hook_name`."""
    check_sae(sae)
    name = hook_name if hook_name is not None else sae.cfg.hook_name
    if name is None:
        raise ValueError("this SAE's config names no hook_name; pass hook_name= (where it was "
                         "trained, e.g. 'blocks.0.hook_resid_post')")
    check_model(model, name)
    v.positive_int("k", k)
    if not isinstance(ln, bool):
        raise ValueError(f"ln must be True or False, got {ln!r}")
    W_U = getattr(model, "W_U", None)
    if not isinstance(W_U, Tensor) or W_U.ndim != 2:
        raise ValueError(f"{type(model).__name__} has no unembedding W_U [d_model, d_vocab]")
    d = decoder_direction(sae, latent, scale=scale).to(W_U.device, torch.float32)
    if (m := _MLP_POST.match(name)) is not None:
        W_out = model.blocks[int(m.group(1))].mlp.W_out
        _expect_width(d, W_out.shape[0], name, "d_mlp")
        d = d @ W_out.float()
    elif (m := _ATTN_Z.match(name)) is not None:
        W_O = model.blocks[int(m.group(1))].attn.W_O.float()     # [head, d_head, d_model]
        _expect_width(d, W_O.shape[0] * W_O.shape[1], name, "n_heads * d_head")
        d = torch.einsum("hk,hkm->m", d.view(W_O.shape[0], W_O.shape[1]), W_O)
    elif name != _LN_FINAL and _RESID.match(name) is None:
        raise ValueError(f"logit_effect follows residual-stream hooks (hook_embed, "
                         f"blocks.L.hook_resid_pre/mid/post, hook_attn_out, hook_mlp_out), "
                         f"{_LN_FINAL!r}, blocks.L.mlp.hook_post and blocks.L.attn.hook_z; "
                         f"{name!r} has no direct linear path to the logits")
    _expect_width(d, W_U.shape[0], name, "d_model")
    if name == _LN_FINAL:     # TL's meaning: before ln_final's weight, which still applies
        w = getattr(getattr(model, "ln_final", None), "w", None)
        d = d * w.detach().to(d) if isinstance(w, Tensor) else d
    elif ln:
        d = _final_ln(model, d)
    values = (d @ W_U.float()).cpu()
    kk = min(k, len(values))
    top, bottom = values.topk(kk), (-values).topk(kk)
    return LogitEffect(latent=int(latent), hook_name=name, values=values, top_ids=top.indices,
                       top_values=top.values, bottom_ids=bottom.indices,
                       bottom_values=-bottom.values)


def _expect_width(d: Tensor, width: int, name: str, what: str) -> None:
    if d.shape[-1] != width:
        raise ValueError(f"the SAE's d_in is {d.shape[-1]} but {name!r} has {what} = {width}; "
                         "is this SAE trained on another hook?")


# ---- decoder geometry --------------------------------------------------------------------------

@dataclass
class Neighbours:
    """The k decoder rows closest in direction to latent `latent` (highest cosine first)."""

    latent: int
    indices: Tensor    # [k]
    cosines: Tensor    # [k]


@torch.no_grad()
def decoder_neighbours(sae: SAE, latent: int, *, k: int = 5) -> Neighbours:
    """Nearest decoder directions by cosine (`geometry.unit_rows`), the latent itself left
    out."""
    check_sae(sae)
    (i,) = _latent_list(latent, sae.cfg.d_sae)
    v.positive_int("k", k)
    U = geometry.unit_rows(sae.W_dec.detach().float().cpu(), "sae.W_dec")
    cos = U @ U[i]
    cos[i] = -float("inf")
    kk = min(k, len(cos) - 1)
    top = cos.topk(kk)
    return Neighbours(latent=i, indices=top.indices, cosines=top.values)
