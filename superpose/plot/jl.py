"""Johnson–Lindenstrauss figures: distortion vs target dimension, and the pair distribution.

- `distortion_vs_k`:       worst and median |ratio - 1| vs k for each projection kind, the eps
                           line and the JL bound min_dim(n, eps) as a vertical line.
- `distortion_histogram`:  the distribution of ratios ||f(x)-f(y)||² / ||x-y||² over pairs,
                           with the (1 - eps, 1 + eps) band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from superpose import _validate as v
from superpose.jl import SmallestK, Sweep
from superpose.plot._common import (
    drop_nonfinite,
    figure_and_axes,
    finite_inputs,
    omitted_note,
)

KIND_COLORS = {"gaussian": "#1f77b4", "sparse": "#2ca02c", "very_sparse": "#d62728"}
Ratios = Union[Float[Tensor, " pairs"], Float[np.ndarray, " pairs"]]


def _as_list(result: object) -> list[SmallestK | Sweep]:
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    if not items or not all(isinstance(r, (SmallestK, Sweep)) for r in items):
        raise ValueError("result must be a jl.SmallestK or jl.Sweep, or a list of them (one "
                         f"per projection kind), got {type(result).__name__}")
    return items  # type: ignore[return-value]


@finite_inputs
def distortion_vs_k(result: SmallestK | Sweep | Sequence[SmallestK | Sweep], *,
                    eps: float | None = None, bound: int | None = None,
                    ax: Axes | None = None, title: str | None = None) -> Figure:
    """Worst (solid) and median (dashed) |ratio - 1| over pairs vs k, the mean over trials,
    one colour per projection kind; the eps line and the JL bound (vertical) from the first
    `SmallestK` unless `eps`/`bound` are given; a dot at each found smallest k."""
    items = _as_list(result)
    fig, ax = figure_and_axes(ax, figsize=(5.6, 3.8))
    first = next((r for r in items if isinstance(r, SmallestK)), None)
    eps = eps if eps is not None else (first.eps if first else None)
    bound = bound if bound is not None else (first.bound if first else None)
    for r in items:
        sw = r.sweep if isinstance(r, SmallestK) else r
        c = KIND_COLORS.get(sw.kind, None)
        ks = np.asarray(sw.ks)
        ax.plot(ks, sw.worst.mean(1), color=c, lw=1.6, label=f"{sw.kind}: worst pair")
        ax.plot(ks, sw.median.mean(1), color=c, lw=1.2, ls="--", label=f"{sw.kind}: median")
        if isinstance(r, SmallestK) and r.k is not None:
            ax.plot([r.k], [r.eps], "o", color=c, ms=5, zorder=5)
    if eps is not None:
        ax.axhline(eps, color="k", lw=0.8, ls=":", label=f"eps = {eps:g}")
    if bound is not None:
        ax.axvline(bound, color="0.4", lw=1.0, ls="-.", label=f"JL bound k = {bound}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("target dimension k")
    ax.set_ylabel("|ratio − 1| (squared distances)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


@finite_inputs(omit=("ratios",))
def distortion_histogram(ratios: Ratios | Mapping[str, Ratios], *, eps: float | None = None,
                         ax: Axes | None = None, bins: int = 100,
                         title: str | None = None, nan_policy: str = "raise") -> Figure:
    """Histogram (density) of distortion ratios; a dict {label: ratios} overlays several
    (e.g. one per projection kind at the same k). With `eps`, shades (1 - eps, 1 + eps) and
    puts the fraction of pairs inside it in the legend.

    `nan_policy`: a NaN/inf ratio (a pair of identical points gives 0/0) is a ValueError
    ("raise"), or "omit" leaves those pairs out and says how many in the title (so the saved
    figure itself tells a reader that the fractions are of the finite pairs only)."""
    v.check_nan_policy("plot.distortion_histogram", nan_policy)
    series = dict(ratios) if isinstance(ratios, Mapping) else {"": ratios}
    if not series:
        raise ValueError("ratios must hold at least one series, got an empty mapping")
    arrays = {}
    n_omitted = 0
    for label, r in series.items():
        a, dropped = drop_nonfinite(r)
        n_omitted += dropped
        if a.size == 0:
            raise ValueError(f"plot.distortion_histogram: ratios {label!r} is empty"
                             + (f" once its {dropped} NaN/inf value(s) are omitted"
                                if dropped else ""))
        arrays[label] = a
    title = omitted_note(title, n_omitted, "NaN/inf ratio(s)")
    fig, ax = figure_and_axes(ax, figsize=(5.0, 3.4))
    lo = min(a.min() for a in arrays.values())
    hi = max(a.max() for a in arrays.values())
    if eps is not None:
        lo, hi = min(lo, 1 - eps), max(hi, 1 + eps)
        ax.axvspan(1 - eps, 1 + eps, color="0.85", zorder=0, label=f"1 ± {eps:g}")
    edges = np.linspace(lo, hi, bins + 1)
    for label, a in arrays.items():
        text = label or "pairs"
        if eps is not None:
            text += f" ({np.mean(np.abs(a - 1) <= eps):.1%} within)"
        ax.hist(a, bins=edges, density=True, histtype="step", lw=1.3,
                color=KIND_COLORS.get(label), label=text)
    ax.axvline(1.0, color="k", lw=0.6)
    ax.set_xlabel("‖f(x) − f(y)‖² / ‖x − y‖²")
    ax.set_ylabel("density of pairs")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
