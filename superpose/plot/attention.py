"""Attention figures: every head of a layer, one head up close, cross-attention, and a per-head
score map.

The patterns come from a cache, as `model.run_with_cache(...)` returns it, from a plain dict with
the same keys, or from the tensor itself ([batch head query_pos key_pos] or [head query_pos
key_pos]). The keys are TransformerLens's: a GPT (HookedTransformer) or an encoder-only model
(HookedEncoder) stores self-attention under `blocks.{layer}.attn.hook_pattern`; a seq2seq model
(HookedEncoderDecoder) under `encoder.{layer}.attn.hook_pattern` [batch head src src],
`decoder.{layer}.attn.hook_pattern` [batch head tgt tgt] and
`decoder.{layer}.cross_attn.hook_pattern` [batch head tgt src] (`hook=` picks the stack;
cross-attention is drawn by `cross_attention`).

Queries run down the y axis and keys along the x axis, so row q is what position q reads. Cells
a query can never attend to are drawn grey, to tell "masked" from "allowed but ignored" (white):
the strictly-upper triangle of a causal pattern (detected when it is exactly zero, or
`causal=True`), and padding (`attention_mask`: 1 for real tokens, 0 for padding, both axes).
The colour scale is the attention probability, fixed from 0 to 1 so panels and figures compare.

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
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _validate as v
from superpose.plot._common import (
    figure_and_axes,
    finite_inputs,
    grid_shape,
    root_figure,
    select_indices,
    string_tokens,
)

PATTERN_KEY = "blocks.{layer}.attn.hook_pattern"
CROSS_PATTERN_KEY = "decoder.{layer}.cross_attn.hook_pattern"
HOOKS = {"blocks": PATTERN_KEY, "encoder": "encoder.{layer}.attn.hook_pattern",
         "decoder": "decoder.{layer}.attn.hook_pattern"}
_PATTERN_RE = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")
ATTENTION_CMAP = "Blues"
MASKED_COLOR = "0.88"       # never attendable: a causal model's upper triangle, padding
ALIGNMENT_COLOR = "#f76707"  # outlines of the cells a known alignment says should be attended
LABELS_PER_INCH = 9         # tick labels per inch of panel before thinning (7 pt text)
MAX_HEAD_LABELS = 64        # tick labels per axis in the single-head view
ZERO_TOL = 1e-6             # probability still counted as "exactly zero" (masked)


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
CrossPatternSource = Union[
    CacheLike,
    Mapping[str, Tensor],
    Float[Tensor, "batch head tgt src"],
    Float[Tensor, "head tgt src"],
    Float[Tensor, "tgt src"],
    Float[np.ndarray, "batch head tgt src"],
    Float[np.ndarray, "head tgt src"],
    Float[np.ndarray, "tgt src"],
]
# 1 / True for a real token, 0 / False for padding: [batch pos] or [pos] (checked in the body,
# so a wrong shape or an additive -inf mask gets our message, not the type checker's).
MaskArg = Union[Tensor, np.ndarray, Sequence[Any], None]
AlignmentArg = Union[Tensor, np.ndarray, Sequence[Any], None]
HeadScores = Union[Float[Tensor, "layer head"], Float[np.ndarray, "layer head"]]
AxesArg = Union[Axes, Sequence[Axes], np.ndarray, None]


# ---------------------------------------------------------------- inputs


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _template_re(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(re.escape("{layer}"), r"(\d+)") + "$")


def _pattern_families(store: Mapping[str, Any]) -> dict[str, list[int]]:
    """{'encoder.{layer}.attn.hook_pattern': [0, 1], ...}: the attention patterns a cache
    holds, by key template."""
    out: dict[str, list[int]] = {}
    for k in store:
        m = re.match(r"^(.*?)(\d+)(\..*hook_pattern)$", str(k))
        if m:
            out.setdefault(f"{m.group(1)}{{layer}}{m.group(3)}", []).append(int(m.group(2)))
    return {t: sorted(v) for t, v in sorted(out.items())}


def _resolve_hook(hook: Any, layer: Any) -> tuple[str, Any]:
    """(key template with '{layer}', layer) from `hook`: None or 'blocks' (GPT / encoder-only),
    'encoder', 'decoder', a template such as 'decoder.{layer}.attn.hook_pattern', or a full key
    such as 'encoder.1.attn.hook_pattern' (its layer wins; a different `layer` is an error)."""
    if hook is None:
        return PATTERN_KEY, layer
    if not isinstance(hook, str):
        raise ValueError(f"hook must be a string ('encoder', 'decoder', 'blocks' or a key "
                         f"such as 'encoder.0.attn.hook_pattern'), got {hook!r}")
    if "cross_attn" in hook:
        raise ValueError(f"hook={hook!r} is a cross-attention pattern [batch head tgt src]: "
                         "draw it with plot.cross_attention(cache, layer=...)")
    if hook in HOOKS:
        return HOOKS[hook], layer
    if "{layer}" in hook:
        return hook, layer
    m = re.match(r"^(.*?)(\d+)(\..*)$", hook)
    if not m or not hook.endswith("hook_pattern"):
        raise ValueError(f"hook must be 'blocks', 'encoder', 'decoder', a key template with "
                         f"'{{layer}}' or a full key such as 'encoder.0.attn.hook_pattern'; "
                         f"got {hook!r}")
    in_key = int(m.group(2))
    if layer is not None and _int("layer", layer) != in_key:
        raise ValueError(f"layer={layer} disagrees with hook={hook!r} (layer {in_key}); give "
                         f"one of them")
    return f"{m.group(1)}{{layer}}{m.group(3)}", in_key


def _stack(template: str) -> str:
    """'encoder' / 'decoder' for a seq2seq key, '' for blocks.*."""
    head = template.split(".", 1)[0]
    return head if head in ("encoder", "decoder") else ""


def _layer_pattern(source: Any, layer: Any, *, template: str = PATTERN_KEY,
                   where: str = "plot.attention_heads", name: str = "cache_or_patterns",
                   ) -> tuple[Tensor, int | None]:
    """(patterns as float CPU, the resolved layer or None when the source is a tensor that
    carries no layer)."""
    if isinstance(source, (Tensor, np.ndarray)):
        return torch.as_tensor(source).detach().to("cpu").float(), None
    store = getattr(source, "cache_dict", source)
    if not isinstance(store, Mapping):
        raise ValueError(f"{name} must be an ActivationCache, a dict of hook name -> "
                         f"tensor, or a pattern tensor [batch head query_pos key_pos], got "
                         f"{type(source).__name__}")
    layer = 0 if layer is None else _int("layer", layer)
    rx = _template_re(template)
    layers = sorted(int(m.group(1)) for k in store if (m := rx.match(str(k))))
    wanted = template.replace("{layer}", "{L}")
    if not layers:
        families = _pattern_families(store)
        others = "; ".join(f"'{t.replace('{layer}', '{L}')}' for layers {ls}"
                           for t, ls in families.items())
        hint = ""
        if others:
            hint = (f" It holds {others}: pass hook='encoder' or hook='decoder' for a seq2seq "
                    f"model's self-attention, or plot.cross_attention for cross_attn")
            if template == CROSS_PATTERN_KEY:
                hint = (f" It holds {others}; cross-attention comes from a seq2seq model "
                        "(decoder.{L}.cross_attn.hook_pattern)")
        raise ValueError(
            f"the cache holds no attention patterns under '{wanted}' (it has {len(store)} "
            f"other keys).{hint} Cache them with model.run_with_cache(...) or "
            "names_filter=lambda name: name.endswith('hook_pattern')")
    resolved = layer + layers[-1] + 1 if layer < 0 else layer
    if resolved not in layers:
        raise ValueError(f"layer {layer} is not in the cache; it holds attention patterns for "
                         f"layers {layers} ('{wanted}')")
    key = template.format(layer=resolved)
    pattern = torch.as_tensor(store[key]).detach().to("cpu")
    # An ActivationCache is not walked by @finite_inputs: check the one pattern drawn.
    v.check_finite(where, f"{name}[{key!r}]", pattern,
                   fix="a figure of them would be empty or wrong. Drop or fix those values "
                       "first")
    return pattern.float(), resolved


def _select_batch(pattern: Tensor, batch: Any, *, self_attention: bool = True) -> Tensor:
    """[head q k] from [batch head q k] (row `batch`) or [head q k] (batch must be 0)."""
    batch = _int("batch", batch)
    dims = "query_pos key_pos" if self_attention else "tgt src"
    if pattern.ndim == 4:
        n = pattern.shape[0]
        if not -n <= batch < n:
            raise ValueError(f"batch {batch} is out of range: the patterns hold {n} "
                             f"sequence(s) (valid: 0..{n - 1})")
        pattern = pattern[batch]
    elif pattern.ndim == 3:
        if batch not in (0, -1):
            raise ValueError(f"batch={batch} was given, but the patterns have no batch "
                             f"dimension (shape [head {dims}] = {list(pattern.shape)})")
    else:
        extra = "" if self_attention else f" or [{dims}]"
        raise ValueError(f"attention patterns must have shape [batch head {dims}] or "
                         f"[head {dims}]{extra}, got {list(pattern.shape)}")
    if 0 in pattern.shape:
        raise ValueError(f"attention patterns need at least one head and position, got shape "
                         f"[head {dims}] = {list(pattern.shape)}")
    if self_attention and pattern.shape[-2] > pattern.shape[-1]:
        raise ValueError(f"attention patterns need 1 <= query_pos <= key_pos, got shape "
                         f"[head query_pos key_pos] = {list(pattern.shape)}")
    return pattern


def _heads(heads: Any, n_heads: int) -> list[int]:
    return select_indices(
        heads, n_heads, empty="heads must select at least one head, got an empty list",
        bad=lambda h: f"head {h!r} is out of range: this layer has {n_heads} heads "
                      f"(valid: 0..{n_heads - 1})")


def _padding(mask: Any, name: str, n: int, *, what: str, batch: int,
             n_seqs: int | None) -> np.ndarray | None:
    """Which of n positions are padding (bool [n]), from `mask`: 1 / True for a real token and
    0 / False for padding (TransformerLens's one_zero_attention_mask, Hugging Face's
    attention_mask), [batch pos] (row `batch`) or [pos]. None when there is no mask."""
    if mask is None:
        return None
    if isinstance(mask, str):
        raise ValueError(f"{name} must be a tensor / array / list of 1 (real token) and 0 "
                         f"(padding), got a str")
    try:
        m = torch.as_tensor(np.asarray(mask.detach().cpu() if isinstance(mask, Tensor)
                                       else mask))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a tensor / array / list of 1 (real token) and 0 "
                         f"(padding): {e}") from None
    if m.dtype == torch.bool:
        m = m.to(torch.uint8)
    if not (m.is_floating_point() or m.dtype in (torch.uint8, torch.int8, torch.int16,
                                                 torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold 1 (real token) and 0 (padding), got dtype "
                         f"{m.dtype}")
    vals = torch.unique(m.double()) if m.numel() else torch.zeros(0)
    if not all(float(x) in (0.0, 1.0) for x in vals):
        shown = ", ".join(f"{float(x):g}" for x in vals[:5])
        raise ValueError(f"{name} must hold 1 / True for real tokens and 0 / False for padding, "
                         f"got values {{{shown}}}; an additive mask (0 keep, -inf pad) is "
                         f"(mask == 0), a padding mask (True = pad) is ~mask")
    if m.ndim == 2:
        if m.shape[0] == 1:
            m = m[0]
        elif n_seqs is not None and m.shape[0] == n_seqs:
            m = m[batch]
        else:
            have = (f"the patterns hold {n_seqs} sequences" if n_seqs is not None
                    else "the patterns have no batch dimension")
            raise ValueError(f"{name} has shape {list(m.shape)} ([batch pos]) but {have}; "
                             f"pass one row per sequence, or the row of this sequence [pos]")
    elif m.ndim != 1:
        raise ValueError(f"{name} must have shape [batch pos] or [pos], got {list(m.shape)}")
    if m.shape[0] != n:
        raise ValueError(f"{name} covers {m.shape[0]} positions but the patterns have {n} "
                         f"{what}; give one entry per position")
    pad = (m == 0).numpy()
    if pad.all():
        raise ValueError(f"{name} marks every position as padding; it is 1 / True for real "
                         f"tokens and 0 / False for padding (pass ~mask for a padding mask)")
    return pad


def _check_pads_unread(P: np.ndarray, pad_q: np.ndarray | None, pad_k: np.ndarray | None,
                       name: str) -> None:
    """Real queries give padded keys probability 0 (the model masked them); otherwise the mask
    is not the one the model used (often inverted) and grey would hide attention."""
    if pad_k is None or not pad_k.any():
        return
    rows = np.ones(P.shape[1], dtype=bool) if pad_q is None else ~pad_q
    sub = P[:, rows][:, :, pad_k]
    if sub.size and sub.max() > ZERO_TOL:
        h, q, k = np.unravel_index(int(sub.argmax()), sub.shape)
        q_pos = int(np.flatnonzero(rows)[q])
        k_pos = int(np.flatnonzero(pad_k)[k])
        raise ValueError(
            f"{name} marks key position {k_pos} as padding, but head {h}, query {q_pos} gives "
            f"it probability {sub.max():.3g}: the model did not mask it. {name} is 1 / True for "
            f"real tokens and 0 / False for padding (pass ~mask for a padding mask); give the "
            f"mask the model ran with, or none")


def _causal(P: np.ndarray, causal: Any, pad_q: np.ndarray | None,
            pad_k: np.ndarray | None) -> bool:
    """Whether to grey the strictly-upper triangle (aligned so the last query is the last key).
    None detects it: every head puts exactly zero there (among real tokens)."""
    if causal is not None and not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"causal must be True, False or None (detect), got {causal!r}")
    _, n_q, n_k = P.shape
    upper = np.triu(np.ones((n_q, n_k), dtype=bool), k=1 + n_k - n_q)
    if pad_q is not None:
        upper &= ~pad_q[:, None]
    if pad_k is not None:
        upper &= ~pad_k[None, :]
    above = P[:, upper]
    if causal is None:
        return bool(upper.any()) and not above.any()
    if causal and above.size and above.max() > ZERO_TOL:
        h, i = np.unravel_index(int(above.argmax()), above.shape)
        q, k = (int(x[i]) for x in np.nonzero(upper))
        raise ValueError(f"causal=True, but head {h}, query {q} attends to the later key {k} "
                         f"(probability {above.max():.3g}): this pattern is bidirectional; "
                         f"pass causal=False, or causal=None to detect it")
    return bool(causal)


def _grey_cells(n_q: int, n_k: int, causal: bool, pad_q: np.ndarray | None,
                pad_k: np.ndarray | None) -> np.ndarray:
    """bool [q k]: cells drawn grey (never attendable)."""
    grey = np.zeros((n_q, n_k), dtype=bool)
    if causal:
        grey |= np.triu(np.ones((n_q, n_k), dtype=bool), k=1 + n_k - n_q)
    if pad_q is not None:
        grey |= pad_q[:, None]
    if pad_k is not None:
        grey |= pad_k[None, :]
    return grey


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


def _token_labels(tokens: Any, n_keys: int, *, name: str = "tokens",
                  what: str = "positions (key_pos)") -> list[str] | None:
    if tokens is None:
        return None
    tokens = string_tokens(tokens, name)
    if len(tokens) != n_keys:
        raise ValueError(f"{name} has {len(tokens)} labels but the patterns cover {n_keys} "
                         f"{what}; give one label per position")
    return [visible_token(t) for t in tokens]


def _alignment(alignment: Any, n_t: int, n_s: int) -> np.ndarray | None:
    """bool [tgt src] from `alignment` (bool or 0/1)."""
    if alignment is None:
        return None
    try:
        a = np.asarray(alignment.detach().cpu() if isinstance(alignment, Tensor) else alignment)
    except (TypeError, ValueError) as e:
        raise ValueError(f"alignment must be a bool array [tgt src]: {e}") from None
    if a.ndim != 2 or a.shape != (n_t, n_s):
        raise ValueError(f"alignment must be a bool array [tgt src] = [{n_t}, {n_s}] (one row "
                         f"per target token, one column per source token), got shape "
                         f"{list(a.shape)}")
    if a.dtype != bool:
        if a.dtype.kind not in "iuf" or not np.isin(a, (0, 1)).all():
            raise ValueError(f"alignment must hold True / 1 where a target token should attend "
                             f"a source token and False / 0 elsewhere, got dtype {a.dtype}"
                             + ("" if a.dtype.kind not in "iuf" else
                                f" with values {np.unique(a)[:5].tolist()}"))
        a = a.astype(bool)
    return a


def _cmap(cmap: str | Colormap) -> Colormap:
    cm = colormaps[cmap] if isinstance(cmap, str) else cmap
    return cm.with_extremes(bad=MASKED_COLOR)


def _axis_ticks(a: Axes, axis: Any, labels: list[str] | None, n: int, offset: int, *,
                max_labels: int, show: bool, fontsize: float) -> None:
    step = max(1, math.ceil(n / max(1, max_labels)))
    pos = np.arange(0, n, step)
    axis.set_ticks(pos)
    if not show:
        axis.set_ticklabels([])
    elif labels is None:
        axis.set_ticklabels([str(i + offset) for i in pos])
    else:
        axis.set_ticklabels([labels[i + offset] for i in pos], fontfamily="monospace")
    a.tick_params(axis="x" if axis is a.xaxis else "y", labelsize=fontsize, length=2, pad=1.5)


def _ticks(a: Axes, labels: list[str] | None, n_q: int, n_k: int, *, max_labels: int,
           x: bool, y: bool, fontsize: float, y_labels: list[str] | None = None,
           y_offset: int | None = None, max_y_labels: int | None = None) -> None:
    """Token (or position) tick labels, every k-th when there are more than max_labels. Self-
    attention: the queries are the last n_q keys (y labels = the key labels from n_k - n_q);
    cross-attention passes its own `y_labels` (offset 0)."""
    if y_offset is None:
        y_offset = n_k - n_q
    _axis_ticks(a, a.xaxis, labels, n_k, 0, max_labels=max_labels, show=x, fontsize=fontsize)
    _axis_ticks(a, a.yaxis, labels if y_labels is None else y_labels, n_q, y_offset,
                max_labels=max_labels if max_y_labels is None else max_y_labels, show=y,
                fontsize=fontsize)
    # Single characters (and '\\n') read best upright; longer tokens would collide.
    if x and labels is not None and max(map(len, labels)) > 2:
        a.tick_params(axis="x", labelrotation=90)


def _draw(a: Axes, p: np.ndarray, cm: Colormap, grey: np.ndarray | None = None) -> Any:
    data = np.ma.masked_where(grey, p) if grey is not None and grey.any() else p
    return a.imshow(data, cmap=cm, vmin=0.0, vmax=1.0, interpolation="nearest",
                    aspect="equal")


def _colorbar(fig: Figure, im: Any, axs: Any) -> None:
    cb = fig.colorbar(im, ax=axs, shrink=0.8, aspect=30, pad=0.02)
    cb.set_label("attention probability", fontsize=8)
    cb.ax.tick_params(labelsize=7)


def _panels(ax: AxesArg, head_ids: list[int], nrows: int, ncols: int,
            figsize: tuple[float, float]) -> tuple[Figure, list[Axes], bool]:
    """(figure, one Axes per head, whether the figure is ours)."""
    n = len(head_ids)
    if ax is None:
        fig, grid = figure_and_axes(nrows=nrows, ncols=ncols, squeeze=False, figsize=figsize)
        axs = list(grid.ravel())
        for extra in axs[n:]:
            extra.remove()
        return fig, axs[:n], True
    axs = [ax] if isinstance(ax, Axes) else list(np.asarray(ax, dtype=object).ravel())
    if len(axs) != n or not all(isinstance(a, Axes) for a in axs):
        raise ValueError(f"ax= must be one Axes per drawn head ({n}: heads {head_ids}), got "
                         f"{len(axs)}; pass heads=<one head> with a single Axes, or ax=None")
    return root_figure(axs[0]), axs, False


def _self_attention(where: str, cache_or_patterns: Any, layer: Any, hook: Any, batch: Any,
                    causal: Any, attention_mask: Any
                    ) -> tuple[np.ndarray, int | None, int, str, bool, np.ndarray]:
    """(P [head q k], layer, n_seqs, stack name, causal, grey cells [q k]) for the two
    self-attention figures."""
    template, layer = _resolve_hook(hook, layer)
    pattern, resolved = _layer_pattern(cache_or_patterns, layer, template=template,
                                       where=where)
    n_seqs = pattern.shape[0] if pattern.ndim == 4 else None
    pattern = _select_batch(pattern, batch)
    P = pattern.numpy()
    _, n_q, n_k = P.shape
    pad_k = _padding(attention_mask, "attention_mask", n_k, what="positions (key_pos)",
                     batch=_int("batch", batch), n_seqs=n_seqs)
    pad_q = None if pad_k is None else pad_k[n_k - n_q:]
    _check_pads_unread(P, pad_q, pad_k, "attention_mask")
    is_causal = _causal(P, causal, pad_q, pad_k)
    grey = _grey_cells(n_q, n_k, is_causal, pad_q, pad_k)
    return P, resolved, n_seqs or 1, _stack(template), is_causal, grey


# ---------------------------------------------------------------- figures


@finite_inputs(skip=("attention_mask",))
def attention_heads(cache_or_patterns: PatternSource, *, layer: int | None = None,
                    tokens: Sequence[str] | None = None,
                    heads: int | Sequence[int] | None = None, batch: int = 0,
                    max_cols: int = 4, ax: AxesArg = None,
                    cmap: str | Colormap = ATTENTION_CMAP, colorbar: bool = True,
                    panel_size: float | int | None = None, causal: bool | None = None,
                    attention_mask: MaskArg = None, hook: str | None = None) -> Figure:
    """Every head of one layer (or the `heads` chosen), one panel per head, query on y and key
    on x, sharing one 0..1 colour bar.

    `cache_or_patterns`: an ActivationCache or dict with `blocks.{layer}.attn.hook_pattern`
    (a GPT or an encoder-only model; `layer` may be negative, counting from the last cached
    layer, default 0), or the patterns themselves, [batch head query_pos key_pos] or [head
    query_pos key_pos]. `hook` picks another stack of a seq2seq cache: 'encoder'
    (`encoder.{layer}.attn.hook_pattern`), 'decoder' (its causal self-attention), a key
    template with '{layer}', or a full key such as 'encoder.1.attn.hook_pattern'.
    `batch` picks the sequence. `causal`: grey the upper triangle (None: when every head
    puts exactly zero there; False for an encoder's bidirectional pattern; True checks that
    it is zero). `attention_mask`: 1 / True for real tokens, 0 / False for padding ([batch
    pos] or [pos], as passed to the model); padded rows and columns are grey, and a real
    query that attends a "padded" key is an error (the wrong or an inverted mask).
    `tokens`: one label per position of that sequence (`tokenizer.to_str_tokens(text)`); without
    it the axes show positions. Query labels sit on the left column and key labels on the
    bottom panel of each column. `ax`: one Axes (with one head) or one Axes per head.

    >>> logits, cache = model.run_with_cache(tokens)
    >>> plot.attention_heads(cache, layer=1, tokens=tok.to_str_tokens(tokens[0]))
    >>> plot.attention_heads(s2s_cache, hook="encoder", layer=0, attention_mask=src_mask)
    """
    P, resolved, n_seqs, stack, is_causal, grey = _self_attention(
        "plot.attention_heads", cache_or_patterns, layer, hook, batch, causal, attention_mask)
    n_heads, n_q, n_k = P.shape
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
    fig, axs, ours = _panels(ax, head_ids, nrows, ncols,
                             (size * ncols + (0.9 if colorbar else 0.3), size * nrows + 0.6))
    if not ours:
        nrows, ncols = 1, 1            # each given Axes gets both its labels
        size = float(min(axs[0].get_position().size * fig.get_size_inches()))
    cm = _cmap(cmap)
    max_labels = max(4, int(size * LABELS_PER_INCH))
    name = f"L{resolved}" if resolved is not None else ""
    im = None
    for j, (a, h) in enumerate(zip(axs, head_ids)):
        im = _draw(a, P[h], cm, grey)
        left = not ours or j % ncols == 0
        bottom = not ours or j + ncols >= n
        _ticks(a, labels, n_q, n_k, max_labels=max_labels, x=bottom, y=left, fontsize=7.0)
        a.set_title(f"{name}H{h}" if name else f"head {h}", fontsize=9)
        if left:
            a.set_ylabel("query", fontsize=8)
        if bottom:
            a.set_xlabel("key", fontsize=8)
    if colorbar and im is not None:
        _colorbar(fig, im, axs)
    if ours:
        where = f"{stack} " if stack else ""
        where += f"layer {resolved} " if resolved is not None else ""
        seq = f" (batch row {batch} of {n_seqs})" if n_seqs > 1 else ""
        two_way = not is_causal and bool(np.triu(~grey, k=1 + n_k - n_q).any())
        kind = ", bidirectional" if two_way else ""
        padded = bool(grey[np.tril(np.ones(grey.shape, dtype=bool), k=n_k - n_q)].any())
        note = ("\ngrey: causal mask and padding" if is_causal else "\ngrey: padding"
                ) if padded else ""
        fig.suptitle(f"{where}attention patterns{kind}{seq}{note}", fontsize=10)
    return fig


@finite_inputs(skip=("attention_mask",))
def attention_head(cache_or_patterns: PatternSource, *, layer: int | None = None, head: int,
                   tokens: Sequence[str] | None = None, batch: int = 0, ax: Axes | None = None,
                   cmap: str | Colormap = ATTENTION_CMAP, colorbar: bool = True,
                   annotate: bool | None = None, causal: bool | None = None,
                   attention_mask: MaskArg = None, hook: str | None = None) -> Figure:
    """One head up close: the pattern of `head` in `layer`, with token labels on both axes
    (every k-th beyond 64 tokens). `annotate` writes each probability in its cell (default:
    when there are at most 16 tokens). Inputs, `hook`, `causal` and `attention_mask` as for
    `attention_heads`; with a pattern tensor, `layer` only names the figure."""
    P, resolved, _, stack, is_causal, grey = _self_attention(
        "plot.attention_head", cache_or_patterns, layer, hook, batch, causal, attention_mask)
    n_heads, n_q, n_k = P.shape
    (h,) = _heads(_int("head", head), n_heads)
    labels = _token_labels(tokens, n_k)
    size = min(10.0, max(4.5, 0.14 * n_k + 1.5))
    fig, a = figure_and_axes(ax, figsize=(size + (0.9 if colorbar else 0.3), size))
    p = P[h]
    im = _draw(a, p, _cmap(cmap), grey)
    _ticks(a, labels, n_q, n_k, max_labels=MAX_HEAD_LABELS, x=True, y=True,
           fontsize=8.0 if min(n_k, MAX_HEAD_LABELS) <= 40 else 7.0)
    if annotate is None:
        annotate = n_k <= 16
    if annotate:
        for q, k in zip(*np.nonzero(~grey)):
            val = p[q, k]
            a.text(k, q, f"{val:.2f}"[1:] if 0 <= val < 1 else f"{val:.1f}", ha="center",
                   va="center", fontsize=6, color="white" if val > 0.6 else "0.2")
    layer_name = resolved if resolved is not None else layer
    where = f"{stack} " if stack else ""
    title = (f"{where}layer {layer_name}, head {h}" if layer_name is not None
             else f"{where}head {h}".strip())
    two_way = not is_causal and bool(np.triu(~grey, k=1 + n_k - n_q).any())
    a.set_title(title + (" (bidirectional)" if two_way else ""), fontsize=10)
    a.set_xlabel("key (attended to)", fontsize=9)
    a.set_ylabel("query (attending)", fontsize=9)
    if colorbar:
        _colorbar(fig, im, a)
    return fig


@finite_inputs(skip=("cache_or_pattern", "src_mask", "tgt_mask", "alignment"))
def cross_attention(cache_or_pattern: CrossPatternSource, *, layer: int = 0,
                    heads: int | Sequence[int] | None = None,
                    src_tokens: Sequence[str] | None = None,
                    tgt_tokens: Sequence[str] | None = None,
                    alignment: AlignmentArg = None, src_mask: MaskArg = None,
                    tgt_mask: MaskArg = None, batch: int = 0, ax: AxesArg = None,
                    max_cols: int = 4, cmap: str | Colormap = ATTENTION_CMAP,
                    colorbar: bool = True, panel_size: float | int | None = None) -> Figure:
    """A seq2seq decoder's cross-attention: one panel per head (or the `heads` chosen), target
    tokens (the queries) down the y axis and source tokens (the keys) along x, colour the
    attention probability on a fixed 0..1 scale. Row t is where target token t reads the
    source.

    `cache_or_pattern`: an ActivationCache or dict with `decoder.{layer}.cross_attn.hook_pattern`
    (`layer` may be negative), or the pattern itself, [batch head tgt src], [head tgt src] or
    [tgt src] (one head; with a tensor `layer` only names the figure). `batch` picks the
    sequence pair. `src_tokens` / `tgt_tokens`: one label per source / target position.
    `alignment`: a known alignment, bool [tgt src], True where target t should attend source s;
    those cells are outlined, and each panel's title says how much of the attention of the
    aligned target rows lands in the boxes. `src_mask` / `tgt_mask`: 1 / True for real tokens,
    0 / False for padding ([batch pos] or [pos]); padded columns / rows are grey. A real target
    token that attends a "padded" source token is an error (the wrong or an inverted mask).
    `ax`: one Axes (with one head) or one Axes per head.

    >>> logits, cache = s2s.run_with_cache(src, tgt)
    >>> plot.cross_attention(cache, layer=0, src_tokens=src_strs, tgt_tokens=tgt_strs,
    ...                      alignment=torch.eye(len(tgt_strs), len(src_strs), dtype=bool))
    """
    where = "plot.cross_attention"
    if isinstance(cache_or_pattern, (Tensor, np.ndarray)):
        raw = torch.as_tensor(cache_or_pattern).detach().to("cpu")
        v.check_finite(where, "cache_or_pattern", raw,
                       fix="a figure of them would be empty or wrong. Drop or fix those "
                           "values first")
        pattern, resolved = raw.float(), None
        if pattern.ndim == 2:
            pattern = pattern[None]
    else:
        pattern, resolved = _layer_pattern(cache_or_pattern, layer, template=CROSS_PATTERN_KEY,
                                           where=where, name="cache_or_pattern")
    n_seqs = pattern.shape[0] if pattern.ndim == 4 else None
    pattern = _select_batch(pattern, batch, self_attention=False)
    P = pattern.numpy()
    n_heads, n_t, n_s = P.shape
    head_ids = _heads(heads, n_heads)
    src_labels = _token_labels(src_tokens, n_s, name="src_tokens",
                               what="source positions (src, the last axis)")
    tgt_labels = _token_labels(tgt_tokens, n_t, name="tgt_tokens",
                               what="target positions (tgt, the rows)")
    b = _int("batch", batch)
    pad_s = _padding(src_mask, "src_mask", n_s, what="source positions (src)", batch=b,
                     n_seqs=n_seqs)
    pad_t = _padding(tgt_mask, "tgt_mask", n_t, what="target positions (tgt)", batch=b,
                     n_seqs=n_seqs)
    _check_pads_unread(P, pad_t, pad_s, "src_mask")
    align = _alignment(alignment, n_t, n_s)
    grey = _grey_cells(n_t, n_s, False, pad_t, pad_s)
    if align is not None and (align & grey).any():
        t, s = (int(x[0]) for x in np.nonzero(align & grey))
        raise ValueError(f"alignment marks target {t} -> source {s}, but that cell is padding "
                         f"(tgt_mask / src_mask); align real tokens only")
    max_cols = _int("max_cols", max_cols)
    if max_cols < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    if panel_size is not None and not panel_size > 0:
        raise ValueError(f"panel_size must be a positive number of inches, got {panel_size!r}")

    n = len(head_ids)
    nrows, ncols = grid_shape(n, max_cols)
    longest = max(n_s, n_t)
    size = panel_size or (2.6 if longest <= 24 else 3.2 if longest <= 64 else 4.0)
    w, h_in = size * n_s / longest, size * n_t / longest
    # Room for the token labels: the y labels left of the first column, x labels under the
    # last row (monospace 7 pt, about 0.06 in per character).
    chars = lambda labels: max(map(len, labels)) if labels else 2  # noqa: E731
    y_room = 0.35 + 0.06 * chars(tgt_labels)
    x_room = 0.35 + (0.06 * chars(src_labels) if chars(src_labels) > 2 else 0.1)
    figsize = (max(w, 1.3) * ncols + y_room + (0.9 if colorbar else 0.3),
               max(h_in, 1.0) * nrows + x_room + (0.6 if align is not None else 0.4)
               + 0.35 * nrows)
    fig, axs, ours = _panels(ax, head_ids, nrows, ncols, figsize)
    if not ours:
        nrows, ncols = 1, 1
        w_in, h_ax = axs[0].get_position().size * fig.get_size_inches()
        w, h_in = float(w_in), float(h_ax)
    cm = _cmap(cmap)
    name = f"L{resolved}" if resolved is not None else ""
    box_lw = 1.6 if min(w / n_s, h_in / n_t) >= 0.12 else 0.8
    rows_aligned = None
    if align is not None:
        rows_aligned = align.any(1) & (True if pad_t is None else ~pad_t)
    im = None
    for j, (a, hd) in enumerate(zip(axs, head_ids)):
        im = _draw(a, P[hd], cm, grey)
        left = not ours or j % ncols == 0
        bottom = not ours or j + ncols >= n
        _ticks(a, src_labels, n_t, n_s, max_labels=max(4, int(w * LABELS_PER_INCH)),
               x=bottom, y=left, fontsize=7.0, y_labels=tgt_labels, y_offset=0,
               max_y_labels=max(4, int(h_in * LABELS_PER_INCH)))
        title = f"{name}H{hd}" if name else f"head {hd}"
        if align is not None:
            for t, s in zip(*np.nonzero(align)):
                a.add_patch(Rectangle((s - 0.5, t - 0.5), 1, 1, fill=False,
                                      edgecolor=ALIGNMENT_COLOR, linewidth=box_lw, zorder=3))
            if rows_aligned is not None and rows_aligned.any():
                mass = float((P[hd] * align)[rows_aligned].sum() / rows_aligned.sum())
                title += f"\n{mass:.0%} in boxes"
        a.set_title(title, fontsize=9 if "\n" not in title else 8)
        if left:
            a.set_ylabel("target (queries)", fontsize=8)
        if bottom:
            a.set_xlabel("source (keys)", fontsize=8)
    if colorbar and im is not None:
        _colorbar(fig, im, axs)
    if ours:
        where_l = f"decoder layer {resolved} " if resolved is not None else ""
        seq = f" (batch row {batch} of {n_seqs})" if n_seqs and n_seqs > 1 else ""
        fig.suptitle(f"{where_l}cross-attention: target reads source{seq}", fontsize=10)
        handles = []
        if align is not None:
            handles.append(Patch(facecolor="none", edgecolor=ALIGNMENT_COLOR,
                                 linewidth=1.6, label="expected alignment"))
        if grey.any():
            handles.append(Patch(facecolor=MASKED_COLOR, edgecolor="0.6", label="padding"))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                       fontsize=7, frameon=False)
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
