"""Attention figures: every head of a layer, one head up close, and a per-head score map.

The patterns come from a cache, as `model.run_with_cache(tokens)` returns it (superpose's GPT or
a TransformerLens HookedTransformer: both store them under `blocks.{layer}.attn.hook_pattern`,
[batch head query_pos key_pos]), from a plain dict with those keys, or from the tensor itself
([batch head query_pos key_pos] or [head query_pos key_pos]).

Queries run down the y axis and keys along the x axis, so row q is what position q reads, and a
causal model's pattern is lower-triangular; the strictly-upper triangle it can never attend to is
drawn grey, to tell "masked" from "allowed but ignored" (white). The colour scale is the
attention probability, fixed from 0 to 1 so panels and figures compare.

Token labels (`tokens=tokenizer.to_str_tokens(text)`) go on both axes; whitespace is made
visible (' ' -> '␣', '\\n' -> '\\\\n', other control characters as escapes), and with many
tokens only every k-th label is drawn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose.plot._common import (
    figure_and_axes,
    finite_inputs,
    grid_shape,
    root_figure,
    select_indices,
)

PATTERN_KEY = "blocks.{layer}.attn.hook_pattern"
_PATTERN_RE = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")
ATTENTION_CMAP = "Blues"
MASKED_COLOR = "0.88"       # the causally masked (never attendable) upper triangle
LABELS_PER_INCH = 9         # tick labels per inch of panel before thinning (7 pt text)
MAX_HEAD_LABELS = 64        # tick labels per axis in the single-head view


@runtime_checkable
class CacheLike(Protocol):
    """A TransformerLens `ActivationCache` (or anything holding a `cache_dict`). Duck-typed, so
    importing the plots does not import transformer_lens."""

    cache_dict: Mapping[str, Any]


PatternSource = Union[
    CacheLike,
    Mapping[str, Tensor],
    Float[Tensor, "batch head query_pos key_pos"],
    Float[Tensor, "head query_pos key_pos"],
    Float[np.ndarray, "batch head query_pos key_pos"],
    Float[np.ndarray, "head query_pos key_pos"],
]
HeadScores = Union[Float[Tensor, "layer head"], Float[np.ndarray, "layer head"]]
AxesArg = Union[Axes, Sequence[Axes], np.ndarray, None]


# ---------------------------------------------------------------- inputs


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _layer_pattern(source: Any, layer: Any) -> tuple[Tensor, int | None]:
    """(patterns [batch head q k] or [head q k] as float CPU, the resolved layer or None when
    the source is a tensor that carries no layer)."""
    if isinstance(source, (Tensor, np.ndarray)):
        return torch.as_tensor(source).detach().to("cpu").float(), None
    store = getattr(source, "cache_dict", source)
    if not isinstance(store, Mapping):
        raise ValueError(f"cache_or_patterns must be an ActivationCache, a dict of hook name -> "
                         f"tensor, or a pattern tensor [batch head query_pos key_pos], got "
                         f"{type(source).__name__}")
    layer = _int("layer", layer)
    layers = sorted(int(m.group(1)) for k in store if (m := _PATTERN_RE.match(str(k))))
    if not layers:
        raise ValueError(
            "the cache holds no attention patterns (no 'blocks.{L}.attn.hook_pattern' keys; it "
            f"has {len(store)} other keys); cache them with model.run_with_cache(tokens) or "
            "names_filter=lambda name: name.endswith('hook_pattern')")
    resolved = layer + layers[-1] + 1 if layer < 0 else layer
    if resolved not in layers:
        raise ValueError(f"layer {layer} is not in the cache; it holds attention patterns for "
                         f"layers {layers}")
    return store[PATTERN_KEY.format(layer=resolved)].detach().to("cpu").float(), resolved


def _select_batch(pattern: Tensor, batch: Any) -> Tensor:
    """[head q k] from [batch head q k] (row `batch`) or [head q k] (batch must be 0)."""
    batch = _int("batch", batch)
    if pattern.ndim == 4:
        n = pattern.shape[0]
        if not -n <= batch < n:
            raise ValueError(f"batch {batch} is out of range: the patterns hold {n} "
                             f"sequence(s) (valid: 0..{n - 1})")
        pattern = pattern[batch]
    elif pattern.ndim == 3:
        if batch not in (0, -1):
            raise ValueError(f"batch={batch} was given, but the patterns have no batch "
                             f"dimension (shape [head query_pos key_pos] = "
                             f"{list(pattern.shape)})")
    else:
        raise ValueError(f"attention patterns must have shape [batch head query_pos key_pos] or "
                         f"[head query_pos key_pos], got {list(pattern.shape)}")
    if pattern.shape[-2] > pattern.shape[-1] or 0 in pattern.shape:
        raise ValueError(f"attention patterns need 1 <= query_pos <= key_pos, got shape "
                         f"[head query_pos key_pos] = {list(pattern.shape)}")
    return pattern


def _heads(heads: Any, n_heads: int) -> list[int]:
    return select_indices(
        heads, n_heads, empty="heads must select at least one head, got an empty list",
        bad=lambda h: f"head {h!r} is out of range: this layer has {n_heads} heads "
                      f"(valid: 0..{n_heads - 1})")


def visible_token(tok: str) -> str:
    """A token as a readable label: ' ' -> '␣', '\\n' -> '\\\\n', '\\t' -> '\\\\t', other
    control characters as escapes ('\\\\x07'), the empty string as '∅'."""
    if tok == "":
        return "∅"
    out = []
    for ch in tok:
        if ch == " ":
            out.append("␣")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            out.append(repr(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def _token_labels(tokens: Any, n_keys: int) -> list[str] | None:
    if tokens is None:
        return None
    if isinstance(tokens, str):
        raise ValueError("tokens must be a list of strings, one per token; got a single str. "
                         "Pass tokenizer.to_str_tokens(text)")
    if isinstance(tokens, Tensor):
        raise ValueError("tokens must be a list of strings, one per token, got a tensor of "
                         "ids; pass tokenizer.to_str_tokens(ids)")
    tokens = list(tokens)
    if tokens and isinstance(tokens[0], (list, tuple)):
        raise ValueError(f"tokens must be the labels of one sequence (a list of str), got a "
                         f"list of {len(tokens)} sequences; pass tokens[batch]")
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise ValueError(f"tokens must be strings (tokenizer.to_str_tokens(text)), got "
                         f"{type(bad[0]).__name__} {bad[0]!r}")
    if len(tokens) != n_keys:
        raise ValueError(f"tokens has {len(tokens)} labels but the patterns cover {n_keys} "
                         f"positions (key_pos); give one label per position")
    return [visible_token(t) for t in tokens]


def _cmap(cmap: str | Colormap) -> Colormap:
    cm = colormaps[cmap] if isinstance(cmap, str) else cmap
    return cm.with_extremes(bad=MASKED_COLOR)


def _masked(p: np.ndarray) -> np.ndarray:
    """Mask the strictly-upper (causal) triangle when it is exactly zero, aligned so the last
    query is the last key (queries may be a suffix of the keys)."""
    n_q, n_k = p.shape
    upper = np.triu(np.ones((n_q, n_k), dtype=bool), k=1 + n_k - n_q)
    if upper.any() and not p[upper].any():
        return np.ma.masked_where(upper, p)
    return p


def _ticks(a: Axes, labels: list[str] | None, n_q: int, n_k: int, *, max_labels: int,
           x: bool, y: bool, fontsize: float) -> None:
    """Token (or position) tick labels, every k-th when there are more than max_labels."""
    for axis, n, offset, show in ((a.xaxis, n_k, 0, x), (a.yaxis, n_q, n_k - n_q, y)):
        step = max(1, math.ceil(n / max(1, max_labels)))
        pos = np.arange(0, n, step)
        axis.set_ticks(pos)
        if not show:
            axis.set_ticklabels([])
        elif labels is None:
            axis.set_ticklabels([str(i + offset) for i in pos])
        else:
            axis.set_ticklabels([labels[i + offset] for i in pos], fontfamily="monospace")
        a.tick_params(axis="x" if axis is a.xaxis else "y", labelsize=fontsize, length=2,
                      pad=1.5)
    # Single characters (and '\\n') read best upright; longer tokens would collide.
    if x and labels is not None and max(map(len, labels)) > 2:
        a.tick_params(axis="x", labelrotation=90)


def _draw(a: Axes, p: np.ndarray, cm: Colormap) -> Any:
    return a.imshow(_masked(p), cmap=cm, vmin=0.0, vmax=1.0, interpolation="nearest",
                    aspect="equal")


def _colorbar(fig: Figure, im: Any, axs: Any) -> None:
    cb = fig.colorbar(im, ax=axs, shrink=0.8, aspect=30, pad=0.02)
    cb.set_label("attention probability", fontsize=8)
    cb.ax.tick_params(labelsize=7)


# ---------------------------------------------------------------- figures


@finite_inputs
def attention_heads(cache_or_patterns: PatternSource, *, layer: int = 0,
                       tokens: Sequence[str] | None = None,
                       heads: int | Sequence[int] | None = None, batch: int = 0,
                       max_cols: int = 4, ax: AxesArg = None,
                       cmap: str | Colormap = ATTENTION_CMAP, colorbar: bool = True,
                       panel_size: float | int | None = None) -> Figure:
    """Every head of one layer (or the `heads` chosen), one panel per head, query on y and key
    on x, sharing one 0..1 colour bar.

    `cache_or_patterns`: an ActivationCache or dict with `blocks.{layer}.attn.hook_pattern`
    (`layer` may be negative, counting from the last cached layer), or the patterns themselves,
    [batch head query_pos key_pos] or [head query_pos key_pos]. `batch` picks the sequence.
    `tokens`: one label per position of that sequence (`tokenizer.to_str_tokens(text)`); without
    it the axes show positions. Query labels sit on the left column and key labels on the
    bottom panel of each column. `ax`: one Axes (with one head) or one Axes per head.

    >>> logits, cache = model.run_with_cache(tokens)
    >>> plot.attention_heads(cache, layer=1, tokens=tok.to_str_tokens(tokens[0]))
    """
    pattern, resolved = _layer_pattern(cache_or_patterns, layer)
    n_seqs = pattern.shape[0] if pattern.ndim == 4 else 1
    pattern = _select_batch(pattern, batch)
    n_heads, n_q, n_k = pattern.shape
    head_ids = _heads(heads, n_heads)
    labels = _token_labels(tokens, n_k)
    max_cols = _int("max_cols", max_cols)
    if max_cols < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    if panel_size is not None and not panel_size > 0:
        raise ValueError(f"panel_size must be a positive number of inches, got {panel_size!r}")
    n = len(head_ids)
    nrows, ncols = grid_shape(n, max_cols)
    size = panel_size or (2.6 if n_k <= 24 else 3.2 if n_k <= 64 else 4.0)
    if ax is None:
        fig, grid = figure_and_axes(nrows=nrows, ncols=ncols, squeeze=False,
                                    figsize=(size * ncols + (0.9 if colorbar else 0.3),
                                             size * nrows + 0.6))
        axs = list(grid.ravel())
        for extra in axs[n:]:
            extra.remove()
        axs = axs[:n]
    else:
        axs = [ax] if isinstance(ax, Axes) else list(np.asarray(ax, dtype=object).ravel())
        if len(axs) != n or not all(isinstance(a, Axes) for a in axs):
            raise ValueError(f"ax= must be one Axes per drawn head ({n}: heads {head_ids}), got "
                             f"{len(axs)}; pass heads=<one head> with a single Axes, or ax=None")
        fig = root_figure(axs[0])
        nrows, ncols = 1, 1            # each given Axes gets both its labels
        size = float(min(axs[0].get_position().size * fig.get_size_inches()))
    cm = _cmap(cmap)
    max_labels = max(4, int(size * LABELS_PER_INCH))
    name = f"L{resolved}" if resolved is not None else ""
    im = None
    P = pattern.numpy()
    for j, (a, h) in enumerate(zip(axs, head_ids)):
        im = _draw(a, P[h], cm)
        left = ax is not None or j % ncols == 0
        bottom = ax is not None or j + ncols >= n
        _ticks(a, labels, n_q, n_k, max_labels=max_labels, x=bottom, y=left, fontsize=7.0)
        a.set_title(f"{name}H{h}" if name else f"head {h}", fontsize=9)
        if left:
            a.set_ylabel("query", fontsize=8)
        if bottom:
            a.set_xlabel("key", fontsize=8)
    if colorbar and im is not None:
        _colorbar(fig, im, axs)
    if ax is None:
        where = f"layer {resolved} " if resolved is not None else ""
        seq = f" (batch row {batch} of {n_seqs})" if n_seqs > 1 else ""
        fig.suptitle(f"{where}attention patterns{seq}", fontsize=10)
    return fig


@finite_inputs
def attention_head(cache_or_patterns: PatternSource, *, layer: int, head: int,
                   tokens: Sequence[str] | None = None, batch: int = 0, ax: Axes | None = None,
                   cmap: str | Colormap = ATTENTION_CMAP, colorbar: bool = True,
                   annotate: bool | None = None) -> Figure:
    """One head up close: the pattern of `head` in `layer`, with token labels on both axes
    (every k-th beyond 64 tokens). `annotate` writes each probability in its cell (default:
    when there are at most 16 tokens). Inputs as for `attention_heads`; with a pattern
    tensor, `layer` only names the figure."""
    pattern, resolved = _layer_pattern(cache_or_patterns, layer)
    pattern = _select_batch(pattern, batch)
    n_heads, n_q, n_k = pattern.shape
    (h,) = _heads(_int("head", head), n_heads)
    labels = _token_labels(tokens, n_k)
    size = min(10.0, max(4.5, 0.14 * n_k + 1.5))
    fig, a = figure_and_axes(ax, figsize=(size + (0.9 if colorbar else 0.3), size))
    p = pattern[h].numpy()
    im = _draw(a, p, _cmap(cmap))
    _ticks(a, labels, n_q, n_k, max_labels=MAX_HEAD_LABELS, x=True, y=True,
           fontsize=8.0 if min(n_k, MAX_HEAD_LABELS) <= 40 else 7.0)
    if annotate is None:
        annotate = n_k <= 16
    if annotate:
        for q in range(n_q):
            for k in range(q + 1 + n_k - n_q):
                val = p[q, k]
                a.text(k, q, f"{val:.2f}"[1:] if 0 <= val < 1 else f"{val:.1f}", ha="center",
                       va="center", fontsize=6, color="white" if val > 0.6 else "0.2")
    layer_name = resolved if resolved is not None else layer
    a.set_title(f"layer {layer_name}, head {h}", fontsize=10)
    a.set_xlabel("key (attended to)", fontsize=9)
    a.set_ylabel("query (attending)", fontsize=9)
    if colorbar:
        _colorbar(fig, im, a)
    return fig


@finite_inputs(missing_ok=("scores",))
def head_scores_heatmap(scores: HeadScores, *, ax: Axes | None = None,
                        cmap: str | Colormap = "viridis", vmin: float | int | None = None,
                        vmax: float | int | None = None,
                        label: str = "score", title: str | None = None,
                        annotate: bool | None = None) -> Figure:
    """A layers x heads heatmap of one number per head (an induction score, a prefix-matching
    score, an ablation effect). Layer 0 is the top row. `vmin`/`vmax` default to the data's
    range; `annotate` writes the values in the cells (default: at most 12 heads per layer and
    160 cells). NaN cells (a head not scored) are grey; inf, or no finite score at all, is a
    ValueError."""
    S = torch.as_tensor(scores).detach().to("cpu").double().numpy()
    if S.ndim != 2 or 0 in S.shape:
        raise ValueError(f"scores must have shape [layer head] with at least one of each, got "
                         f"{list(S.shape)}")
    n_layers, n_heads = S.shape
    fig, a = figure_and_axes(ax, figsize=(min(12.0, 0.6 * n_heads + 2.0),
                                          min(10.0, 0.45 * n_layers + 1.2)))
    cm = _cmap(cmap)
    finite = S[np.isfinite(S)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1e-9
    im = a.imshow(np.ma.masked_invalid(S), cmap=cm, vmin=lo, vmax=hi, aspect="auto",
                  interpolation="nearest")
    a.set_xticks(np.arange(n_heads) if n_heads <= 32 else np.arange(0, n_heads, 4))
    a.set_yticks(np.arange(n_layers) if n_layers <= 32 else np.arange(0, n_layers, 4))
    a.tick_params(labelsize=7)
    a.set_xlabel("head", fontsize=8)
    a.set_ylabel("layer", fontsize=8)
    if annotate is None:
        annotate = n_heads <= 12 and S.size <= 160
    if annotate:
        for i in range(n_layers):
            for j in range(n_heads):
                if np.isfinite(S[i, j]):
                    bright = (S[i, j] - lo) / (hi - lo) > 0.6
                    a.text(j, i, f"{S[i, j]:.2f}", ha="center", va="center", fontsize=7,
                           color="black" if bright else "white")
    if title:
        a.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=a, shrink=0.9, aspect=20, pad=0.02)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return fig


def __getattr__(name: str) -> Any:
    if name == "attention_patterns":
        deprecation.warn("plot.attention_patterns is now plot.attention_heads (a grid of "
                         "heads; gpt.attention_patterns is the tensor it draws)", stacklevel=3)
        return attention_heads
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
