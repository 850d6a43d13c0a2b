"""The toy-models-of-superposition figures (Elhage et al. 2022), for any set of vectors.

Each function takes a `ToyModel` (its `feature_directions()`, [inst, n_features, n_hidden]) or
vectors as rows, [inst, n, d] or [n, d]: a toy model's W columns, an SAE's decoder rows, a
packing. One panel per instance.

- `feature_directions`: the 2-D pictures (antipodal pairs, the pentagon), one line per feature.
- `gram_heatmaps`:      WᵀW, red for positive, blue for negative interference.
- `feature_bars`:       ||W_i|| per feature, coloured by how superposed it is
                        (Σ_{j≠i} (Ŵ_i·W_j)²: black = own dimension, yellow = shared).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from torch import Tensor

from superpose import geometry
from superpose.plot._common import (
    as_vector_sets,
    axes_list,
    finite_inputs,
    grid_shape,
    resolve_titles,
)

# A model with feature_directions() (a ToyModel, an SAE), or vectors as rows.
VectorSource = Union[
    torch.nn.Module,
    Float[Tensor, "inst n_features n_hidden"],
    Float[Tensor, "n_features n_hidden"],
    Float[np.ndarray, "inst n_features n_hidden"],
    Float[np.ndarray, "n_features n_hidden"],
]
AxesArg = Union[Axes, Sequence[Axes], np.ndarray, None]

# The paper's bar colour: black for a feature with a dimension to itself, yellow once it shares.
SUPERPOSITION_CMAP = LinearSegmentedColormap.from_list(
    "superposition", ["#000000", "#3b2f00", "#9c7c00", "#f2c500", "#ffe94d"])
FEATURE_CMAP = "viridis"
LIMIT = 1.5            # feature_directions axes run from -LIMIT to LIMIT


def feature_colors(n: int, cmap: str = FEATURE_CMAP) -> np.ndarray:
    """One colour per feature index (feature 0, the most important, dark purple; the last
    one yellow-green): the same feature gets the same colour in every panel."""
    from matplotlib import colormaps

    return colormaps[cmap](np.linspace(0.0, 0.9, n) if n > 1 else np.array([0.0]))


@finite_inputs
def feature_directions(model_or_vectors: VectorSource, *,
                       instances: int | Sequence[int] | None = None,
                       titles: Sequence[str] | None = None, ax: AxesArg = None,
                       max_cols: int = 10, panel_size: float = 2.0, legend: bool | None = None,
                       circle: bool = True, cmap: str = FEATURE_CMAP,
                       colors: Sequence[Any] | None = None) -> Figure:
    """Each feature as a line from the origin to its vector in the 2-D hidden space, with a dot
    at the tip; the colour follows the feature index (importance falls with the index).

    Panels are square (equal aspect, axes from -1.5 to 1.5) so a pentagon looks like one.
    `ax` may be one Axes (with one instance) or a sequence of one Axes per instance.
    `legend` (default: when there are at most 10 features) names the feature colours;
    `colors` (one matplotlib colour per feature) replaces the colormap, e.g. to colour sets.
    """
    V, idx, default = as_vector_sets(model_or_vectors, instances)
    if V.shape[-1] != 2:
        raise ValueError(
            f"feature_directions draws 2-D hidden spaces only, got vectors of dimension "
            f"{V.shape[-1]} (shape {list(V.shape)}); use gram_heatmaps or feature_bars for "
            f"n_hidden != 2"
        )
    if max_cols < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    labels = resolve_titles(titles, default, idx)
    k, n = V.shape[0], V.shape[1]
    nrows, ncols = grid_shape(k, max_cols)
    fig, axs = axes_list(ax, k, nrows=nrows, ncols=ncols,
                         figsize=(panel_size * ncols + (0.9 if n <= 10 else 0),
                                  panel_size * nrows + 0.3))
    if colors is None:
        colors = feature_colors(n, cmap)
    elif len(colors) != n:
        raise ValueError(f"colors must give one colour per feature ({n}), got {len(colors)}")
    pts = V.numpy()
    for a, P, title in zip(axs, pts, labels):
        if circle:
            t = np.linspace(0, 2 * np.pi, 200)
            a.plot(np.cos(t), np.sin(t), color="0.85", lw=0.6, zorder=0)
        a.axhline(0, color="0.9", lw=0.5, zorder=0)
        a.axvline(0, color="0.9", lw=0.5, zorder=0)
        # Least important first, so the important features are drawn on top.
        for i in reversed(range(n)):
            a.plot([0, P[i, 0]], [0, P[i, 1]], color=colors[i], lw=1.8, zorder=2,
                   solid_capstyle="round", label=f"feature {i}")
            a.scatter([P[i, 0]], [P[i, 1]], color=[colors[i]], s=18, zorder=3,
                      edgecolors="none")
        a.set_xlim(-LIMIT, LIMIT)
        a.set_ylim(-LIMIT, LIMIT)
        a.set_aspect("equal", adjustable="box")
        a.set_xticks([])
        a.set_yticks([])
        for side in a.spines.values():
            side.set_color("0.7")
        if title:
            a.set_title(title, fontsize=9)
    if legend is None:
        legend = n <= 10
    if legend:
        handles, names = axs[-1].get_legend_handles_labels()
        # handles were added last-feature-first; list feature 0 first.
        fig.legend(handles[::-1], names[::-1], loc="outside right center", fontsize=7,
                   frameon=False, handlelength=1.2)
    return fig


@finite_inputs
def gram_heatmaps(model_or_vectors: VectorSource, *,
                  instances: int | Sequence[int] | None = None,
                  titles: Sequence[str] | None = None, ax: AxesArg = None,
                  max_cols: int = 10, panel_size: float = 1.8, cmap: str = "RdBu_r",
                  colorbar: bool = True) -> Figure:
    """The paper's WᵀW: all dot products between features, one heatmap per instance.

    A diverging colormap centred at 0 (vmin=-1, vmax=1): an identity block is features with
    their own dimension, off-diagonal colour is interference (negative for antipodal pairs).
    """
    V, idx, default = as_vector_sets(model_or_vectors, instances)
    labels = resolve_titles(titles, default, idx)
    k = V.shape[0]
    nrows, ncols = grid_shape(k, max_cols)
    fig, axs = axes_list(ax, k, nrows=nrows, ncols=ncols,
                         figsize=(panel_size * ncols + (0.7 if colorbar else 0),
                                  panel_size * nrows + 0.3))
    G = geometry.gram(V).numpy()
    im = None
    for a, g, title in zip(axs, G, labels):
        im = a.imshow(g, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        if title:
            a.set_title(title, fontsize=9)
    if colorbar and im is not None:
        cb = fig.colorbar(im, ax=axs, shrink=0.8, aspect=25, pad=0.02)
        cb.set_label(r"$W^\top W$", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    return fig


@finite_inputs
def feature_bars(model_or_vectors: VectorSource, *,
                 instances: int | Sequence[int] | None = None,
                 titles: Sequence[str] | None = None, ax: AxesArg = None,
                 max_cols: int = 10, panel_width: float = 1.6, colorbar: bool = True,
                 cmap: Any = SUPERPOSITION_CMAP) -> Figure:
    """The paper's per-feature bars: one horizontal bar of length ||W_i|| per feature
    (feature 0 at the top), coloured by its superposition Σ_{j≠i} (Ŵ_i·W_j)², from black (0:
    a dimension to itself) to yellow (>= 1: fully shares its direction).
    """
    V, idx, default = as_vector_sets(model_or_vectors, instances)
    labels = resolve_titles(titles, default, idx)
    k, n = V.shape[0], V.shape[1]
    nrows, ncols = grid_shape(k, max_cols)
    height = max(1.5, 0.14 * n + 0.6)
    fig, axs = axes_list(ax, k, nrows=nrows, ncols=ncols, sharex=True,
                         figsize=(panel_width * ncols + (0.8 if colorbar else 0),
                                  height * nrows + 0.3))
    norm_v = geometry.norms(V).numpy()
    sup = geometry.superposition(V).numpy()
    norm = Normalize(vmin=0.0, vmax=1.0, clip=True)
    cm = ScalarMappable(norm=norm, cmap=cmap)
    xmax = max(1.1, float(norm_v.max()) * 1.05)
    y = np.arange(n)
    for j, (a, nv, s, title) in enumerate(zip(axs, norm_v, sup, labels)):
        a.barh(y, nv, color=cm.to_rgba(s), height=0.8)
        a.set_ylim(n - 0.5, -0.5)                     # feature 0 on top
        a.set_xlim(0, xmax)
        a.axvline(1.0, color="0.75", lw=0.6, ls=":", zorder=0)
        a.tick_params(labelsize=7)
        if (j == 0) if ax is not None else (j % ncols == 0):
            a.set_yticks(y if n <= 20 else y[:: max(1, n // 10)])
            a.set_ylabel("feature", fontsize=8)
        else:
            a.set_yticks([])
        a.set_xlabel(r"$\|W_i\|$", fontsize=8)
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
        if title:
            a.set_title(title, fontsize=9)
    if colorbar:
        cb = fig.colorbar(cm, ax=axs, shrink=0.8, aspect=25, pad=0.02)
        cb.set_label(r"superposition $\sum_{j\neq i}(\hat W_i\cdot W_j)^2$", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    return fig
