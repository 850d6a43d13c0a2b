"""Feature dimensionality figures (Elhage et al. 2022, "Feature Dimensionality").

Both plots put 1/(1−S) (one over the feature density) on a log x axis, so dense features sit
at 1 and very sparse ones far right:

- `dimensions_per_feature_curve`: m / ||W||_F², the average number of hidden dimensions a
  represented feature gets; the paper finds it "sticks" at 1/2 (antipodal pairs).
- `dimensionality_scatter`: each feature's own D_i = ||W_i||² / Σ_j (Ŵ_i·W_j)² as a dot at its
  instance's 1/(1−S); the dots cluster on fractions such as 3/4, 2/3, 1/2, 2/5 and 3/8
  (tetrahedra, triangles, antipodal pairs, pentagons, square antiprisms).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory
from torch import Tensor

from superpose.plot._common import figure_and_axes, finite_inputs

DPF_LABEL = r"$m\,/\,\|W\|_F^2$"
PAPER_FRACTIONS: tuple[float, ...] = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8)

InvSparsity = Float[Tensor, " inst"] | Float[np.ndarray, " inst"]
PerInstance = Float[Tensor, " inst"] | Float[np.ndarray, " inst"]
PerFeature = Float[Tensor, "inst n_features"] | Float[np.ndarray, "inst n_features"]


@finite_inputs
def dimensions_per_feature_curve(inv_sparsity: InvSparsity, dims_per_feature: PerInstance, *,
                                 ax: Axes | None = None,
                                 lines: Sequence[float | int] = (1, 1 / 2),
                                 label: str | None = DPF_LABEL) -> Figure:
    """m / ||W||_F² against 1/(1−S), one point per instance, with dashed reference lines at
    `lines` (1 = every represented feature has a dimension, 1/2 = antipodal pairs)."""
    x = _inv_sparsity(inv_sparsity)
    y = _values("dims_per_feature", dims_per_feature, (x.size,))
    ref = _lines(lines)
    fig, ax = figure_and_axes(ax, figsize=(5.6, 3.6))
    order = np.argsort(x)
    _reference_lines(ax, ref, color="0.55")
    ax.plot(x[order], y[order], "-o", color="black", ms=3.5, lw=1.5, label=label, zorder=3)
    _style(ax, x, y, ylabel=f"dimensions per feature  {DPF_LABEL}")
    if label:
        _legend(ax)
    return fig


@finite_inputs
def dimensionality_scatter(inv_sparsity: InvSparsity, feature_dims: PerFeature, *,
                           ax: Axes | None = None,
                           lines: Sequence[float | int] = PAPER_FRACTIONS,
                           dims_per_feature: PerInstance | None = None) -> Figure:
    """Every feature's dimensionality D_i as a dot at its instance's 1/(1−S), with dashed
    lines at the fractions in `lines` and, when `dims_per_feature` (m/||W||_F² per instance)
    is given, that curve on top, as in the paper's figure."""
    x = _inv_sparsity(inv_sparsity)
    d = _values("feature_dims", feature_dims, (x.size, None))
    curve = (None if dims_per_feature is None
             else _values("dims_per_feature", dims_per_feature, (x.size,)))
    ref = _lines(lines)
    fig, ax = figure_and_axes(ax, figsize=(6.4, 4.0))
    _reference_lines(ax, ref, color="0.6")
    xs = np.repeat(x, d.shape[1])
    ax.scatter(xs, d.reshape(-1), s=7, alpha=0.35, color="#4c72b0", linewidths=0,
               label="feature $D_i$", zorder=2, rasterized=d.size > 5000)
    if curve is not None:
        order = np.argsort(x)
        ax.plot(x[order], curve[order], "-", color="black", lw=1.5, label=DPF_LABEL, zorder=3)
    _style(ax, x, np.concatenate([d.reshape(-1), curve if curve is not None else []]),
           ylabel="feature dimensionality  $D_i$")
    _legend(ax, markerscale=2)
    return fig


def _inv_sparsity(v: InvSparsity) -> np.ndarray:
    a = _values("inv_sparsity", v, (None,))
    if a.size == 0:
        raise ValueError("inv_sparsity must have at least one entry, got none")
    if (a <= 0).any():
        raise ValueError(f"inv_sparsity (1/(1-S), plotted on a log axis) must be > 0, got min "
                         f"{a.min():g}")
    return a


def _values(name: str, v: Tensor | np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    a = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
    a = a.astype(np.float64)
    ok = a.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, a.shape))
    if not ok:
        want = "[" + ", ".join("n" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want} (one row per inv_sparsity entry), "
                         f"got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return a


def _lines(lines: Sequence[float | int]) -> list[float]:
    try:
        out = [float(f) for f in lines]
    except (TypeError, ValueError):
        raise ValueError(f"lines must be a sequence of numbers, got {lines!r}") from None
    if not all(np.isfinite(out)):
        raise ValueError(f"lines must be finite numbers, got {out}")
    return out


def _reference_lines(ax: Axes, ref: list[float], color: str) -> None:
    """Dashed horizontal lines, each labelled with its fraction at the right edge."""
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    label_y = -np.inf
    for f in sorted(ref):
        ax.axhline(f, color=color, lw=0.9, ls="--", zorder=1)
        # Nudge a label up when its line is too close to the one below (2/5 over 3/8).
        label_y = max(f, label_y + 0.045)
        ax.text(1.01, label_y, str(Fraction(f).limit_denominator(16)), transform=trans,
                va="center", ha="left", fontsize="small", color="0.3")


def _legend(ax: Axes, **kw: Any) -> None:
    """Top right, where a falling curve leaves room; a white box keeps lines from showing
    through."""
    ax.legend(loc="upper right", frameon=True, framealpha=0.9, edgecolor="none",
              fontsize="small", **kw)


def _style(ax: Axes, x: np.ndarray, y: np.ndarray, *, ylabel: str) -> None:
    ax.set_xscale("log")
    lo, hi = x.min(), x.max()
    ax.set_xlim(lo / 1.3, hi * 1.3)
    top = max(1.1, float(np.max(y)) * 1.05) if y.size else 1.1
    ax.set_ylim(-0.03, top)
    ax.set_xlabel("1 / (1 − S)   (1 / feature density)")
    ax.set_ylabel(ylabel)
