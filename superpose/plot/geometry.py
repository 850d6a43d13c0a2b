"""Geometry figures: angles of a vector set against random vectors and the packing bounds.

- `angle_histograms`:  the pairwise angles of one or more vector sets (density per degree),
                       the exact density for random unit vectors in the same dimension, the
                       best lower bound on the coherence (as the angles it forbids) and each
                       set's own coherence.
- `capacity_curves`:   how many vectors fit in R^d with every angle within 90° ± a: the
                       bounds' upper limit, the random-construction lower estimate, the JL
                       closed form, and measured points.
- `optimizer_history`: coherence vs step of `packing.pack` runs, with the bound and the random
                       baseline.
- `angle_comparison`:  learned vector sets against random and optimised ones of the same size,
                       one histogram panel per set and a bar panel of the worst deviations.

Distortion vs target dimension for Johnson–Lindenstrauss is `plot.distortion_vs_k`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import geometry, packing
from superpose.plot._common import axes_list, figure_and_axes, finite_inputs, grid_shape

Vectors = Float[Tensor, "n d"]
VectorSets = Union[Float[Tensor, "n d"], Mapping[str, Float[Tensor, "n d"]]]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
BOUND_COLOR = "#d62728"


def _as_sets(vectors: object, name: str = "vectors",
             where: str = "plot.angle_histograms") -> dict[str, Tensor]:
    """A tensor or a {label: tensor} mapping as {label: float CPU [n, d] tensor}, one d."""
    if isinstance(vectors, Tensor):
        sets = {"": vectors}
    elif isinstance(vectors, Mapping):
        sets = dict(vectors)
        if not sets:
            raise ValueError(f"{name} must hold at least one vector set, got an empty mapping")
    else:
        raise TypeError(f"{name} must be a tensor [n, d] or a mapping {{label: tensor [n, d]}}, "
                        f"got {type(vectors).__name__}")
    out = {}
    for label, V in sets.items():
        if not isinstance(V, Tensor):
            raise TypeError(f"{name}[{label!r}] must be a torch.Tensor [n, d], "
                            f"got {type(V).__name__}")
        out[str(label)] = geometry.unit_rows(V.detach().to("cpu").double(),
                                             name=f"{name}[{label!r}]" if label else name,
                                             where=where)
    dims = {V.shape[1] for V in out.values()}
    if len(dims) > 1:
        raise ValueError(f"every vector set in {name} must have the same dimension d (they share "
                         f"one random baseline), got d = {sorted(dims)}")
    return out


@finite_inputs
def angle_histograms(vectors: VectorSets, *, lines: bool = False, bins: int | None = None,
                    range_deg: tuple[float, float] | None = None, baseline: bool = True,
                    bound: bool = True, ax: Axes | None = None,
                    title: str | None = None) -> Figure:
    """Density of the pairwise angles of `vectors` (a tensor [n, d], or {label: tensor} to
    overlay sets of the same d), against:

    - the exact density of the angle between random unit vectors in R^d (black dotted),
    - the best lower bound on the coherence of n vectors in R^d (`packing.bounds` of the first
      set): no n vectors can keep every angle inside the red dashed lines,
    - each set's own coherence (the angle of its worst pair), dotted in its colour.

    lines=True uses the angles between the lines the vectors span (from |cos|, in [0°, 90°]),
    the quantity coherence is about. The x range defaults to what the data, the baseline and
    the lines need.
    """
    sets = _as_sets(vectors)
    first = next(iter(sets.values()))
    n, d = first.shape
    if bins is None:
        bins = 90 if lines else 120
    stats = {label: geometry.cosine_stats(V) for label, V in sets.items()}
    b = packing.bounds(n, d) if bound else None
    hi_max = 90.0 if lines else 180.0
    if range_deg is None:
        lo = min((90.0 - s.max_deviation_deg) if lines else s.min_angle_deg
                 for s in stats.values())
        hi = hi_max if lines else max(s.max_angle_deg for s in stats.values())
        if baseline and d > 2:                # where the random density is not negligible
            spread = min(90.0, 5.0 * math.degrees(1 / math.sqrt(d - 1)))
            lo, hi = min(lo, 90 - spread), max(hi, min(hi_max, 90 + spread))
        if b is not None and b.best > 0:
            lo = min(lo, math.degrees(math.acos(b.best)))
            if not lines:
                hi = max(hi, 180 - math.degrees(math.acos(b.best)))
        pad = 0.04 * (hi - lo) + 0.5
        range_deg = (max(0.0, lo - pad), min(hi_max, hi + pad))
    fig, ax = figure_and_axes(ax, figsize=(5.6, 3.6))
    for i, (label, V) in enumerate(sets.items()):
        counts, edges = geometry.angle_histogram(V, bins=bins, range_deg=range_deg, lines=lines)
        dens = counts.double() / (stats[label].n_pairs * (edges[1] - edges[0]))
        c = COLORS[i % len(COLORS)]
        name = label or f"n={V.shape[0]}"
        ax.stairs(dens.numpy(), edges.numpy(), color=c, lw=1.4,
                  label=f"{name}: max dev. {stats[label].max_deviation_deg:.2f}°")
        mu = stats[label].max_abs
        worst = math.degrees(math.acos(min(mu, 1.0)))
        for x in ([worst] if lines else [worst, 180 - worst]):
            ax.axvline(x, color=c, lw=0.9, ls=":")
    if baseline:
        xs = torch.linspace(range_deg[0], range_deg[1], 600, dtype=torch.float64)
        ax.plot(xs.numpy(), packing.random_angle_density(xs, d, lines=lines).numpy(),
                color="k", lw=1.0, ls=(0, (2, 1.5)), label=f"random unit vectors in R^{d}")
    if b is not None and b.best > 0:
        a = math.degrees(math.acos(b.best))
        for j, x in enumerate([a] if lines else [a, 180 - a]):
            ax.axvline(x, color=BOUND_COLOR, lw=1.2, ls="--",
                       label=(f"{b.best_name} bound: ≥ ±{b.best_deg:.2f}° for n={n}"
                              if j == 0 else None))
    ax.set_xlim(*range_deg)
    ax.set_xlabel("angle between lines (°)" if lines else "angle between vectors (°)")
    ax.set_ylabel("density (per degree)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


@finite_inputs(skip=("caps",))
def capacity_curves(caps: Sequence[packing.Capacity], *,
                    measured: Mapping[str, tuple[Sequence[float | int], Sequence[float | int]]]
                    | None = None,
                    jl: bool = True, n_max: float = 1e12, ax: Axes | None = None,
                    title: str | None = None) -> Figure:
    """Max n vs d at a fixed angular tolerance, from `packing.capacity(d, a)` results (several
    tolerances are drawn in separate colours): the bounds' upper limit (solid; no set of more
    vectors exists), the random-construction lower estimate (dashed; random vectors work), the
    JL closed form exp(d sin²a / 4) (dotted) and n = d (grey: an orthonormal basis).
    `measured`: {label: (ds, ns)} points, e.g. the largest n `packing.pack` reached. The y
    axis stops at `n_max` (the volume bound grows like 2^(d/2) and leaves any axis at once)."""
    caps = list(caps)
    if not caps or not all(isinstance(c, packing.Capacity) for c in caps):
        raise TypeError("caps must be a non-empty sequence of packing.Capacity "
                        "(from packing.capacity(d, angle_deg))")
    groups: dict[float, list[packing.Capacity]] = {}
    for c in caps:
        groups.setdefault(c.angle_deg, []).append(c)
    fig, ax = figure_and_axes(ax, figsize=(7.4, 4.2))
    ymax = 1e200                                  # beyond: off any axis anyway
    for i, (angle, group) in enumerate(sorted(groups.items())):
        group = sorted(group, key=lambda c: c.d)
        col = COLORS[i % len(COLORS)]
        ds = np.array([c.d for c in group], dtype=float)
        clip = lambda xs: np.array([x if x < ymax else np.nan for x in xs])  # noqa: E731
        ax.plot(ds, clip(c.upper for c in group), color=col, lw=1.8,
                label=f"±{angle:g}°: upper (bounds)")
        ax.plot(ds, clip(c.random_lower for c in group), color=col, lw=1.4, ls="--",
                label=f"±{angle:g}°: random vectors work")
        if jl:
            ax.plot(ds, clip(c.jl_estimate for c in group), color=col, lw=1.0, ls=":",
                    label=f"±{angle:g}°: JL exp(d sin²a/4)")
    all_d = np.array(sorted({c.d for c in caps}), dtype=float)
    ax.plot(all_d, all_d, color="0.6", lw=1.0, label="n = d (orthonormal)")
    for j, (label, (ds, ns)) in enumerate((measured or {}).items()):
        ax.plot(list(ds), list(ns), ["o", "s", "^", "D"][j % 4], ms=5, mfc="none", mew=1.3,
                color="k", label=label, zorder=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("max number of vectors n")
    ax.xaxis.set_minor_formatter(NullFormatter())      # no crowded 2×10^0, 3×10^0 labels
    ax.set_ylim(0.8, n_max)
    ax.set_xlim(all_d.min() * 0.9, all_d.max() * 1.1)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _as_results(results: object) -> dict[str, packing.PackResult]:
    if isinstance(results, packing.PackResult):
        items = {"": results}
    elif isinstance(results, Mapping):
        items = dict(results)
    elif isinstance(results, (list, tuple)):
        items = {f"n={r.vectors.shape[0]}, d={r.vectors.shape[1]}"
                 if isinstance(r, packing.PackResult) else str(i): r
                 for i, r in enumerate(results)}
    else:
        raise TypeError("results must be a packing.PackResult, a list of them or a mapping "
                        f"{{label: PackResult}}, got {type(results).__name__}")
    if not items or not all(isinstance(r, packing.PackResult) for r in items.values()):
        raise TypeError("results must hold at least one packing.PackResult (from packing.pack)")
    return items


@finite_inputs
def optimizer_history(results: packing.PackResult | Sequence[packing.PackResult]
                      | Mapping[str, packing.PackResult], *,
                      known: Mapping[str, float] | None = None, ratio: bool = False,
                      ax: Axes | None = None, title: str | None = None) -> Figure:
    """Coherence (max |cos|) of the iterate vs step for `pack` runs, each with its best lower
    bound (dashed) and the random baseline (dotted) in its colour; `known`: {label: coherence}
    of the best packing in the literature for a run's label (dash-dot). ratio=True divides
    everything by the run's bound, so runs of different sizes share one axis (1 = optimal)."""
    items = _as_results(results)
    fig, ax = figure_and_axes(ax, figsize=(5.6, 3.8))
    for i, (label, r) in enumerate(items.items()):
        col = COLORS[i % len(COLORS)]
        n, d = r.vectors.shape
        name = label or f"n={n}, d={d}"
        scale = r.bounds.best if ratio and r.bounds.best > 0 else 1.0
        ax.plot(r.history_steps, np.asarray(r.history) / scale, color=col, lw=1.4,
                label=f"{name}: best {r.coherence:.4f}")
        if r.bounds.best > 0:
            ax.axhline(r.bounds.best / scale, color=col, lw=1.0, ls="--")
        ax.axhline(r.bounds.random / scale, color=col, lw=0.8, ls=":")
        if known and label in known:
            ax.axhline(known[label] / scale, color=col, lw=1.0, ls="-.")
    handles = [((0, ()), "coherence of the iterate"), ((0, (4, 2)), "best lower bound"),
               ((0, (1, 1.5)), "random vectors (median)")]
    if known:
        handles.append(((0, (4, 1.5, 1, 1.5)), "best known packing"))
    for ls, text in handles:
        ax.plot([], [], color="0.3", ls=ls, label=text)
    ax.set_xlabel("step")
    ax.set_ylabel("coherence / bound" if ratio else "coherence max |cos|")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


@finite_inputs
def angle_comparison(groups: Mapping[str, Mapping[str, Vectors]], *, lines: bool = True,
                     max_cols: int = 4, ax: object = None,
                     title: str | None = None) -> Figure:
    """Learned vector sets against references of the same (n, d): `groups` is
    {panel title: {label: vectors}}, e.g. {"toy W (40→10)": {"learned": W, "random": R,
    "pack()": P}}. One `angle_histograms` panel per group (lines=True by default: the angle
    between lines, which coherence is about), then a bar panel of every set's worst deviation
    from 90° (90° − arccos max|cos|) with the bound as a red tick. Each histogram's y axis is
    cut at 2.2× the peak of the first set (or of the random density): a spike above it (an
    optimised set's worst pairs, all at one angle) runs off the top."""
    if not isinstance(groups, Mapping) or not groups:
        raise TypeError("groups must be a non-empty mapping {title: {label: vectors [n, d]}}")
    n_panels = len(groups) + 1
    nrows, ncols = grid_shape(n_panels, max_cols)
    fig, axes = axes_list(ax, n_panels, nrows=nrows, ncols=ncols,
                          figsize=(4.6 * ncols, 3.5 * nrows))
    bars: dict[str, dict[str, float]] = {}
    bound_deg: dict[str, float] = {}
    for a, (name, sets) in zip(axes, groups.items()):
        unit = _as_sets(sets, name=f"groups[{name!r}]", where="plot.angle_comparison")
        angle_histograms(unit, lines=lines, ax=a, title=name)
        a.legend(fontsize=6, loc="upper left")
        # an optimised set piles its worst pairs into one spike at the bound: clip the axis
        # to what the first set and the random density need, so the rest stays readable
        first, d = next(iter(unit.values())), next(iter(unit.values())).shape[1]
        counts, edges = geometry.angle_histogram(first, bins=90 if lines else 120,
                                                 range_deg=a.get_xlim(), lines=lines)
        peak = float(counts.max()) / (counts.sum().clamp_min(1) * (edges[1] - edges[0]))
        xs = torch.linspace(*a.get_xlim(), 400, dtype=torch.float64)
        peak = max(float(peak), float(packing.random_angle_density(xs, d, lines=lines).max()))
        if a.get_ylim()[1] > 2.2 * peak:
            a.set_ylim(0, 2.2 * peak)
        bars[name] = {label: geometry.cosine_stats(V).max_deviation_deg
                      for label, V in unit.items()}
        n, d = next(iter(unit.values())).shape
        bound_deg[name] = packing.bounds(n, d).best_deg
    a = axes[-1]
    labels = list(dict.fromkeys(lab for b in bars.values() for lab in b))
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(bars))
    for j, lab in enumerate(labels):
        ys = [bars[g].get(lab, np.nan) for g in bars]
        a.bar(x + (j - (len(labels) - 1) / 2) * width, ys, width, label=lab,
              color=COLORS[j % len(COLORS)])
    for i, g in enumerate(bars):
        a.plot([i - 0.45, i + 0.45], [bound_deg[g]] * 2, color=BOUND_COLOR, lw=2,
               label="best bound" if i == 0 else None)
    a.set_xticks(x, [g.split(" (")[0] for g in bars], fontsize=7, rotation=15)
    a.set_ylabel("worst deviation from 90° (°)")
    a.set_title("worst pair of each set", fontsize=10)
    a.legend(fontsize=7)
    a.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def __getattr__(name: str) -> Any:
    if name == "angle_histogram":
        deprecation.warn("plot.angle_histogram is now plot.angle_histograms (it overlays "
                         "several sets; geometry.angle_histogram is the counts it draws)",
                         stacklevel=3)
        return angle_histograms
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
