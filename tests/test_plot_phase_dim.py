"""Phase-diagram and feature-dimensionality figures: what they draw and how they refuse bad
input (with the test-only shape checker off, so the tests see the user's ValueError)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection, QuadMesh
from matplotlib.figure import Figure

from superpose import plot
from superpose.plot.dimensionality import PAPER_FRACTIONS

NAMES = ["not represented", "dedicated", "superposition"]


def _grid(n_y: int = 4, n_x: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = torch.arange(n_y * n_x).view(n_y, n_x) % 3
    return labels, torch.logspace(0, -2, n_x), torch.logspace(-1, 1, n_y)


def test_phase_diagram_draws_one_cell_per_label_in_the_given_order() -> None:
    labels, x, y = _grid()
    fig = plot.phase_diagram(labels, x, y, class_names=NAMES, xlabel="density",
                             ylabel="importance", title="t")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(mesh) == 1
    assert np.array_equal(np.asarray(mesh[0].get_array()).reshape(4, 5), labels.numpy())
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlabel() == "density" and ax.get_ylabel() == "importance"
    assert ax.get_title() == "t"
    # Density given from 1 down to 0.01 stays left-to-right on screen: the x axis is reversed.
    lo, hi = ax.get_xlim()
    assert lo > hi and lo > 1 > 0.01 > hi
    assert [t.get_text() for t in ax.get_legend().get_texts()] == NAMES


def test_phase_diagram_reference_draws_its_boundaries() -> None:
    labels, x, y = _grid()
    ref = torch.zeros_like(labels)
    ref[:, 3:] = 2                                   # one vertical boundary, 4 cells tall
    fig = plot.phase_diagram(labels.numpy(), x.numpy(), y.numpy(), class_names=NAMES,
                             xlabel="x", ylabel="y", reference=ref, reference_name="theory")
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)
             and not isinstance(c, QuadMesh)]
    assert len(lines) == 1 and len(lines[0].get_segments()) == 4
    assert ax.get_legend().get_texts()[-1].get_text() == "theory boundary"


def test_phase_diagram_draws_into_a_given_axes() -> None:
    labels, x, y = _grid()
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    out = plot.phase_diagram(labels, x, y, class_names=NAMES, xlabel="x", ylabel="y", ax=ax,
                             log=False)
    assert out is fig and ax.get_xscale() == "linear"


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels=torch.zeros(3, 5, dtype=torch.long)), "y_values must be 1-d with 3"),
    (dict(labels=torch.full((4, 5), 3)), r"labels must be class indices in \[0, 3\)"),
    (dict(labels=torch.full((4, 5), -1)), r"labels must be class indices"),
    (dict(labels=torch.zeros(4, 5)), "labels must hold integer class indices"),
    (dict(x_values=torch.tensor([1.0, 0.5, 0.7, 0.1, 0.01])), "x_values must be strictly"),
    (dict(x_values=torch.tensor([1.0, 0.0, -1.0, -2.0, -3.0])), "x_values must be > 0"),
    (dict(class_names=[]), "class_names must be a non-empty list"),
    (dict(colors=["red"]), "colors must give at least one colour per class"),
    (dict(reference=torch.zeros(2, 2, dtype=torch.long)), "reference must have the shape"),
])
def test_phase_diagram_rejects_bad_input(kwargs: dict, match: str, user_errors) -> None:
    labels, x, y = _grid()
    args = dict(labels=labels, x_values=x, y_values=y, class_names=NAMES)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plot.phase_diagram(args.pop("labels"), args.pop("x_values"), args.pop("y_values"),
                           xlabel="x", ylabel="y", **args)


def test_dimensions_per_feature_curve() -> None:
    inv = torch.logspace(0, 2, 7)
    dpf = torch.linspace(1, 0.1, 7)
    fig = plot.dimensions_per_feature_curve(inv, dpf)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    curve = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 7]
    assert len(curve) == 1 and np.allclose(curve[0].get_ydata(), dpf.numpy())
    flat = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if ln not in curve)
    assert flat == [0.5, 1.0]                        # the reference lines
    assert {t.get_text() for t in ax.texts} == {"1", "1/2"}


def test_dimensionality_scatter_one_dot_per_feature_and_the_paper_lines() -> None:
    inv = np.logspace(0, 1.5, 6)
    D = np.random.default_rng(0).choice([0, 3 / 8, 0.4, 0.5, 1.0], size=(6, 30))
    dpf = np.linspace(1, 0.2, 6)
    fig = plot.dimensionality_scatter(inv, D, dims_per_feature=dpf)
    ax = fig.axes[0]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1
    xy = dots[0].get_offsets()
    assert xy.shape == (180, 2)
    assert np.allclose(np.sort(np.unique(xy[:, 0])), inv)        # each feature at its instance
    assert {t.get_text() for t in ax.texts} == {"1", "3/4", "2/3", "1/2", "2/5", "3/8"}
    ys = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if len(ln.get_xdata()) == 2
                and ln.get_ydata()[0] == ln.get_ydata()[1])
    assert np.allclose(ys, sorted(PAPER_FRACTIONS))
    # Into a given axes, without the curve.
    fig2 = Figure()
    ax2 = fig2.add_subplot()
    assert plot.dimensionality_scatter(torch.tensor(inv), torch.tensor(D), ax=ax2,
                                       lines=()) is fig2


@pytest.mark.parametrize("call, match", [
    (lambda: plot.dimensions_per_feature_curve(np.array([1.0, 2.0]), np.array([1.0])),
     r"dims_per_feature must have shape \[2\]"),
    (lambda: plot.dimensions_per_feature_curve(np.array([0.0, 2.0]), np.array([1.0, 0.5])),
     "inv_sparsity .* must be > 0"),
    (lambda: plot.dimensions_per_feature_curve(np.array([1.0, 2.0]), np.array([1.0, np.nan])),
     r"dims_per_feature holds 1 NaN/inf value\(s\)"),
    (lambda: plot.dimensionality_scatter(np.array([1.0, 2.0]), np.ones((3, 4))),
     r"feature_dims must have shape \[2, n\]"),
    (lambda: plot.dimensionality_scatter(np.array([1.0, 2.0]), np.ones((2, 4)),
                                         lines=("half",)),
     "lines must be a sequence of numbers"),
    (lambda: plot.dimensionality_scatter(np.array([1.0, 2.0]), np.ones((2, 4)),
                                         dims_per_feature=np.ones(3)),
     r"dims_per_feature must have shape \[2\]"),
])
def test_dimensionality_plots_reject_bad_input(call, match: str, user_errors) -> None:
    with pytest.raises(ValueError, match=match):
        call()
