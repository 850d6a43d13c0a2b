"""SAE figures: learned decoder directions against the true ones, the sparsity/fidelity
frontier across architectures, latent densities and training curves.

- `decoder_vs_true`:   2-D: true directions as thick grey arrows, decoder rows as thin coloured
                       arrows on top (the toy model's pentagon and what the SAE found);
                       any d: the sorted best |cos| of every true feature with a decoder row.
- `max_cos_histogram`: histogram of each true feature's best cosine with a decoder row.
- `frontier`:          L0 against FVE (or against recovery) per architecture, one line each.
- `latent_density`:    histogram of log10 firing frequency per latent, dead ones counted apart.
- `sae_training_curves`: MSE, L0 and dead fraction against samples from `SAETrainHistory`s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from torch import Tensor

from superpose import _validate as validate
from superpose import geometry
from superpose.plot._common import figure_and_axes, finite_inputs, omitted_note

RECOVERED_COS = 0.9


def _rows(v: Any, name: str) -> Tensor:
    if hasattr(v, "W_dec"):
        v = v.W_dec
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(v)
    if not isinstance(v, Tensor) or v.ndim != 2 or not v.is_floating_point():
        raise ValueError(f"{name} must be vectors as rows, a float [n, d] tensor/array (or an "
                         f"SAE), got {type(v).__name__} {list(getattr(v, 'shape', []))}")
    if v.shape[0] == 0:
        raise ValueError(f"{name} holds no vectors")
    return v.detach().cpu().double()


def best_cosines(decoder: Any, true: Any) -> np.ndarray:
    """For every true direction, its largest cosine with a decoder row: [n_true], float64.
    The cosines are `sae.evaluation.feature_cosines` (the numbers `sae.evaluate` reports);
    this only checks the inputs and hands them to it."""
    from superpose.sae.evaluation import feature_cosines

    d, t = _rows(decoder, "decoder"), _rows(true, "true")
    if d.shape[1] != t.shape[1]:
        raise ValueError(f"decoder rows have dimension {d.shape[1]} but the true directions "
                         f"{t.shape[1]}; they must live in the same space")
    return feature_cosines(d, t).max(dim=1).values.numpy()


@finite_inputs
def decoder_vs_true(decoder: Any, true: Any, *, ax: Axes | None = None, title: str | None = None,
                    normalize: bool = True) -> Figure:
    """Decoder rows over the true feature directions.

    2-D: one panel of arrows; true directions thick and grey, decoder rows thin and coloured
    (unit length when `normalize`). Higher dimensions: the best cosine of each true feature
    with any decoder row, sorted, with the 0.9 "recovered" line and the fraction above it.
    """
    dec, tru = _rows(decoder, "decoder"), _rows(true, "true")
    fig, a = figure_and_axes(ax, figsize=(3.6, 3.4) if dec.shape[1] == 2 else (4.6, 3.2))
    if dec.shape[1] != tru.shape[1]:
        raise ValueError(f"decoder rows have dimension {dec.shape[1]} but the true directions "
                         f"{tru.shape[1]}; they must live in the same space")
    d, t = dec.numpy(), tru.numpy()
    if d.shape[1] == 2:
        if normalize:
            d = geometry.normalize(dec).numpy()
        lim = 1.25 * max(1.0, float(np.abs(t).max()), float(np.abs(d).max()))
        circle = np.linspace(0, 2 * np.pi, 200)
        a.plot(np.cos(circle), np.sin(circle), color="0.88", lw=0.6, zorder=0)
        for v in t:
            a.annotate("", xy=v, xytext=(0, 0), zorder=1,
                       arrowprops={"arrowstyle": "-|>", "color": "0.6", "lw": 4.0,
                                   "alpha": 0.6, "shrinkA": 0, "shrinkB": 0})
        colors = colormaps["tab10"](np.arange(len(d)) % 10)
        for v, c in zip(d, colors):
            a.annotate("", xy=v, xytext=(0, 0), zorder=2,
                       arrowprops={"arrowstyle": "-|>", "color": c, "lw": 1.4,
                                   "shrinkA": 0, "shrinkB": 0})
        a.plot([], [], color="0.6", lw=4, alpha=0.6, label="true features")
        a.plot([], [], color="tab:blue", lw=1.4, label="SAE decoder rows")
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_aspect("equal", adjustable="box")
        a.set_xticks([])
        a.set_yticks([])
        a.legend(fontsize=7, loc="lower left", frameon=False)
    else:
        best = np.sort(best_cosines(dec, tru))[::-1]
        frac = float((best >= RECOVERED_COS).mean())
        a.plot(np.arange(1, len(best) + 1), best, color="tab:blue", lw=1.5)
        a.axhline(RECOVERED_COS, color="0.5", ls="--", lw=0.8)
        a.text(0.03, 0.06, f"{frac:.1%} of {len(best)} true features at cos ≥ {RECOVERED_COS}",
               transform=a.transAxes, fontsize=8)
        a.set_xlabel("true feature (sorted)")
        a.set_ylabel("best cosine with a decoder row")
        a.set_ylim(min(0.0, float(best.min()) - 0.05), 1.02)
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
    if title:
        a.set_title(title, fontsize=9)
    return fig


@finite_inputs
def max_cos_histogram(results: Mapping[str, Any], true: Any, *, ax: Axes | None = None,
                      bins: int = 40, title: str | None = None) -> Figure:
    """Histogram of each true feature's best cosine with a decoder row, one step line per
    entry of `results` (name -> SAE or decoder rows)."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict name -> SAE or decoder rows")
    fig, a = figure_and_axes(ax, figsize=(4.6, 3.2))
    edges = np.linspace(-0.05, 1.0, bins + 1)
    for i, (name, dec) in enumerate(results.items()):
        best = best_cosines(dec, true)
        a.hist(best, bins=edges, histtype="step", lw=1.4, color=colormaps["tab10"](i % 10),
               label=f"{name} ({(best >= RECOVERED_COS).mean():.0%})")
    a.axvline(RECOVERED_COS, color="0.5", ls="--", lw=0.8)
    a.set_yscale("log")
    a.set_xlabel("best cosine of a true feature with a decoder row")
    a.set_ylabel("true features")
    a.legend(fontsize=7, frameon=False, loc="upper left")
    if title:
        a.set_title(title, fontsize=9)
    return fig


@finite_inputs(omit=("points",))
def frontier(points: Sequence[Mapping[str, Any]], *, y: str = "fve", ax: Axes | None = None,
             title: str | None = None, log_x: bool = True, nan_policy: str = "raise"
             ) -> Figure:
    """The sparsity/fidelity frontier: one line per architecture through its runs.

    `points`: dicts with "architecture", "l0" and the `y` key ("fve", "recovered", "mmcs_true",
    "mcc", ...). Points of one architecture are joined in order of L0.
    `nan_policy`: a point with a NaN/inf L0 or `y` (a run that diverged) is a ValueError
    ("raise"), or "omit" leaves it out and says how many in the title.
    """
    validate.check_nan_policy("plot.frontier", nan_policy)
    if not points:
        raise ValueError("points is empty; give one dict per trained SAE")
    for i, p in enumerate(points):
        missing = {"architecture", "l0", y} - set(p)
        if missing:
            raise ValueError(f"points[{i}] lacks {sorted(missing)}; each point needs "
                             f"'architecture', 'l0' and {y!r}")
    kept = [p for p in points if math.isfinite(float(p["l0"])) and math.isfinite(float(p[y]))]
    if not kept:
        raise ValueError(f"plot.frontier: none of the {len(points)} point(s) has a finite "
                         f"'l0' and {y!r}; nothing to draw")
    title = omitted_note(title, len(points) - len(kept), "point(s) with NaN/inf")
    points = kept
    fig, a = figure_and_axes(ax, figsize=(4.8, 3.4))
    archs = list(dict.fromkeys(str(p["architecture"]) for p in points))
    markers = "osD^v<>"
    for i, arch in enumerate(archs):
        pts = sorted((float(p["l0"]), float(p[y])) for p in points
                     if str(p["architecture"]) == arch)
        xs, ys = zip(*pts)
        a.plot(xs, ys, marker=markers[i % len(markers)], ms=4, lw=1.2,
               color=colormaps["tab10"](i % 10), label=arch)
    if log_x:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        a.set_xscale("log")
        a.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.xaxis.set_major_formatter(ScalarFormatter())
        a.xaxis.set_minor_formatter(NullFormatter())
    a.set_xlabel("L0 (active latents per input)")
    a.set_ylabel({"fve": "fraction of variance explained", "recovered":
                  f"true features recovered (cos ≥ {RECOVERED_COS})",
                  "mmcs_true": "MMCS (true → decoder)", "mcc": "MCC (Hungarian)"}.get(y, y))
    a.grid(alpha=0.25, lw=0.5)
    a.legend(fontsize=7, frameon=False)
    for side in ("top", "right"):
        a.spines[side].set_visible(False)
    if title:
        a.set_title(title, fontsize=9)
    return fig


@finite_inputs
def latent_density(densities: Mapping[str, Any] | Any, *, ax: Axes | None = None,
                   bins: int = 40, title: str | None = None) -> Figure:
    """Histogram of log10 firing frequency per latent; `densities` is one [d_sae] vector (or an
    `EvalResult`) or a dict name -> such. Dead latents (never fired) are counted in the legend."""
    items = dict(densities) if isinstance(densities, Mapping) else {"": densities}
    if not items:
        raise ValueError("densities is empty")
    vecs = {}
    for name, dens in items.items():
        dens = getattr(dens, "density", dens)
        arr = torch.as_tensor(dens).detach().cpu().double().numpy().ravel()
        if arr.size == 0 or (arr < 0).any() or (arr > 1).any():
            raise ValueError(f"densities[{name!r}] must be firing frequencies in [0, 1]")
        vecs[name] = arr
    fired = np.concatenate([v[v > 0] for v in vecs.values()])
    lo = float(np.log10(fired.min())) if fired.size else -6.0
    edges = np.linspace(min(lo, -1.0) - 0.1, 0.05, bins + 1)
    fig, a = figure_and_axes(ax, figsize=(4.6, 3.2))
    for i, (name, v) in enumerate(vecs.items()):
        dead = int((v == 0).sum())
        label = f"{name} " if name else ""
        a.hist(np.log10(v[v > 0]), bins=edges, histtype="step", lw=1.4,
               color=colormaps["tab10"](i % 10), label=f"{label}({dead} dead)")
    a.set_xlabel("log10 firing frequency")
    a.set_ylabel("latents")
    a.legend(fontsize=7, frameon=False, loc="upper left")
    for side in ("top", "right"):
        a.spines[side].set_visible(False)
    if title:
        a.set_title(title, fontsize=9)
    return fig


@finite_inputs(omit=("histories",))
def sae_training_curves(histories: Mapping[str, Any] | Any, *, title: str | None = None,
                        nan_policy: str = "raise") -> Figure:
    """MSE (log), L0 (log) and dead fraction against samples seen, one line per run; takes
    `SAETrainResult`s or `SAETrainHistory`s (one, or a dict name -> one).

    `nan_policy`: a NaN/inf in a history (a run that diverged) is a ValueError ("raise"), or
    "omit" draws each run's finite logged steps, marks the first non-finite one (where the run
    diverged) with a dashed line in the run's colour and says how many steps were left out in
    the title."""
    validate.check_nan_policy("plot.sae_training_curves", nan_policy)
    items = dict(histories) if isinstance(histories, Mapping) else {"": histories}
    if not items:
        raise ValueError("histories is empty")
    fig, axs = figure_and_axes(ncols=3, figsize=(10.5, 3.0))
    n_omitted, diverged = 0, False
    for i, (name, h) in enumerate(items.items()):
        h = getattr(h, "history", h)
        if not hasattr(h, "samples") or not hasattr(h, "mse"):
            raise ValueError(f"histories[{name!r}] must be an SAETrainResult or SAETrainHistory,"
                             f" got {type(h).__name__}")
        if not h.samples:
            raise ValueError(f"histories[{name!r}] is empty")
        c = colormaps["tab10"](i % 10)
        s = np.asarray(h.samples, dtype=float)
        mse, l0, dead = (np.asarray(x, dtype=float) for x in (h.mse, h.l0, h.frac_dead))
        ok = np.isfinite(s) & np.isfinite(mse) & np.isfinite(l0) & np.isfinite(dead)
        if not ok.all():                                  # only with nan_policy="omit"
            n_omitted += int((~ok).sum())
            first = int(np.flatnonzero(~ok)[0])
            if np.isfinite(s[first]):                    # where the run diverged
                for k, panel in enumerate(axs):
                    panel.axvline(s[first], color=c, ls="--", lw=0.9,
                                  label=("diverged" if not diverged and k == 0 else None))
                diverged = True
            if not ok.any():
                raise ValueError(f"plot.sae_training_curves: histories[{name!r}] has no "
                                 "finite logged step; nothing to draw")
            s, mse, l0, dead = s[ok], mse[ok], l0[ok], dead[ok]
        axs[0].plot(s, mse, color=c, lw=1.0, label=name or None)
        axs[1].plot(s, np.maximum(l0, 1e-3), color=c, lw=1.0)
        axs[2].plot(s, dead, color=c, lw=1.0)
    for a, lab in zip(axs, ["MSE (sum over d_in)", "L0", "fraction dead"]):
        a.set_xlabel("samples")
        a.xaxis.set_major_formatter(EngFormatter(sep=""))     # 50k, 1M: no crowded digits
        a.set_ylabel(lab)
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
    axs[0].set_yscale("log")
    axs[1].set_yscale("log")
    axs[2].set_ylim(-0.02, 1.02)
    if any(items) or diverged:
        axs[0].legend(fontsize=7, frameon=False)
    title = omitted_note(title, n_omitted, "non-finite logged step(s)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
