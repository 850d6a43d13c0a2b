"""Phase diagrams: a grid of cells over two swept parameters, each cell coloured by the class
(the "phase") its trained model fell into.

Generic on purpose: the toy model's "feature density × relative importance" diagram (Elhage et
al. 2022, "Phase change") is one use; any classification over a 2-d sweep is another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from superpose.plot._common import figure_and_axes, finite_inputs

# Light grey, blue, red first (the paper's "not represented / dedicated / superposition"), then
# the rest of a qualitative palette for diagrams with more classes.
DEFAULT_COLORS: tuple[str, ...] = (
    "#d9d9d9", "#4c72b0", "#c44e52", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#937860",
    "#da8bc3", "#8c8c8c",
)

Labels = Int[Tensor, "n_y n_x"] | Int[np.ndarray, "n_y n_x"]
XValues = Float[Tensor, " n_x"] | Float[np.ndarray, " n_x"]
YValues = Float[Tensor, " n_y"] | Float[np.ndarray, " n_y"]


@finite_inputs
def phase_diagram(labels: Labels, x_values: XValues, y_values: YValues, *,
                  class_names: Sequence[str], xlabel: str, ylabel: str,
                  title: str | None = None, ax: Axes | None = None, log: bool = True,
                  colors: Sequence[str] | None = None, reference: Labels | None = None,
                  reference_name: str = "theory") -> Figure:
    """Draw `labels[i, j]` (a class index) as the cell at (`x_values[j]`, `y_values[i]`).

    Cells appear in the order given: `labels[0, 0]` sits at the bottom left, so a decreasing
    `x_values` (a density from 1 down to 0.01, say) runs the axis right-to-left in value, as
    the paper's phase diagrams do. Cell edges lie half-way between neighbouring values (in log
    space when `log`). `class_names[k]` names class k in the legend; `colors` overrides the
    palette. `reference`, a second label grid of the same shape (a theoretical prediction),
    is drawn as black lines along its own class boundaries over the cells.
    """
    lab = _labels("labels", labels)
    n_y, n_x = lab.shape
    x = _coords("x_values", x_values, n_x, log)
    y = _coords("y_values", y_values, n_y, log)
    names = list(class_names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    k = len(names)
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must be class indices in [0, {k}) (one per class name), got "
                         f"values from {lab.min()} to {lab.max()}")
    palette = list(colors) if colors is not None else list(DEFAULT_COLORS)
    if len(palette) < k:
        raise ValueError(f"colors must give at least one colour per class ({k}), "
                         f"got {len(palette)}")
    try:
        rgba = [to_rgba(c) for c in palette[:k]]
    except ValueError as e:
        raise ValueError(f"colors must be matplotlib colours, got {palette[:k]!r} ({e})") from None
    ref = None
    if reference is not None:
        ref = _labels("reference", reference)
        if ref.shape != lab.shape:
            raise ValueError(f"reference must have the shape of labels {list(lab.shape)}, "
                             f"got {list(ref.shape)}")

    fig, ax = figure_and_axes(ax, figsize=(6.4, 4.2))
    x_edges, y_edges = _edges(x, log), _edges(y, log)
    cmap = ListedColormap(rgba)
    norm = BoundaryNorm(np.arange(k + 1) - 0.5, k)
    ax.pcolormesh(x_edges, y_edges, lab, cmap=cmap, norm=norm, shading="flat",
                  edgecolors="white", linewidth=0.3)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    # Keep the given order on screen: decreasing values run left-to-right / bottom-to-top.
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    handles: list = [Patch(facecolor=c, edgecolor="0.5", label=n) for c, n in zip(rgba, names)]
    if ref is not None:
        _draw_boundaries(ax, ref, x_edges, y_edges)
        handles.append(Line2D([], [], color="black", lw=2, label=f"{reference_name} boundary"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              fontsize="small")
    return fig


def _labels(name: str, labels: Labels) -> np.ndarray:
    a = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{name} must be a non-empty 2-d grid [n_y, n_x] of class indices, "
                         f"got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def _coords(name: str, values: XValues | YValues, n: int, log: bool) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    a = a.astype(np.float64)
    if a.ndim != 1 or a.size != n:
        raise ValueError(f"{name} must be 1-d with {n} entries (one per cell along its axis of "
                         f"labels), got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got {a.tolist()}")
    if log and (a <= 0).any():
        raise ValueError(f"{name} must be > 0 on a log axis (log=True), got min {a.min():g}; "
                         "pass log=False for linear axes")
    if n > 1:
        d = np.diff(a)
        if not ((d > 0).all() or (d < 0).all()):
            raise ValueError(f"{name} must be strictly increasing or strictly decreasing, "
                             f"got {a.tolist()}")
    return a


def _edges(c: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges half-way between centres (geometric means on a log axis)."""
    t = np.log(c) if log else c
    if t.size == 1:
        half = 0.25 if log else 0.5
        e = np.array([t[0] - half, t[0] + half])
    else:
        mid = (t[1:] + t[:-1]) / 2
        e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return np.exp(e) if log else e


def _draw_boundaries(ax: Axes, ref: np.ndarray, xe: np.ndarray, ye: np.ndarray) -> None:
    """Black segments along every cell edge where `ref` changes class."""
    segs = []
    for i, j in zip(*np.nonzero(ref[:, 1:] != ref[:, :-1])):       # vertical edges
        segs.append(((xe[j + 1], ye[i]), (xe[j + 1], ye[i + 1])))
    for i, j in zip(*np.nonzero(ref[1:, :] != ref[:-1, :])):       # horizontal edges
        segs.append(((xe[j], ye[i + 1]), (xe[j + 1], ye[i + 1])))
    ax.add_collection(LineCollection(segs, colors="black", linewidths=2, capstyle="round"))
