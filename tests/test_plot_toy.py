"""The toy-model figures: right number of panels, any vector set, clear errors."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from superpose import plot, toy
from superpose.plot._common import as_vector_sets, figure_and_axes
from superpose.toy.training import ToyHistory


@pytest.fixture(scope="module")
def model() -> toy.ToyModel:
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3, importance=0.9,
                        feature_probability=[1.0, 0.3, 0.05])
    return toy.ToyModel(cfg, device="cpu")


def visible_axes(fig: Figure) -> list:
    return [a for a in fig.axes if a.get_visible() and a.get_label() != "<colorbar>"]


def test_feature_directions_one_square_panel_per_instance(model):
    fig = plot.feature_directions(model)
    assert isinstance(fig, Figure)
    axes = visible_axes(fig)
    assert len(axes) == 3
    for a in axes:
        assert a.get_xlim() == (-1.5, 1.5) and a.get_ylim() == (-1.5, 1.5)
        assert a.get_aspect() == 1.0
    assert axes[2].get_title() == "p = 0.05"           # density titles from the config


def test_feature_directions_takes_tensors_subsets_and_ax(model):
    V = model.feature_directions()
    assert len(visible_axes(plot.feature_directions(V[0]))) == 1          # [n, 2]
    fig = plot.feature_directions(V, instances=[0, 2], titles=["a", "b"])
    assert [a.get_title() for a in visible_axes(fig)] == ["a", "b"]
    fig, ax = figure_and_axes()
    assert plot.feature_directions(model, instances=1, ax=ax) is fig
    fig = plot.feature_directions(torch.randn(12, 5, 2), max_cols=5)
    assert len(visible_axes(fig)) == 12


def test_feature_directions_rejects_non_2d_hidden_space():
    with pytest.raises(ValueError, match="2-D hidden spaces only.*dimension 3"):
        plot.feature_directions(torch.randn(2, 5, 3))


BAD_VECTORS = [
    (torch.randn(5), r"shape \[inst, n, d\] or \[n, d\].*got shape \[5\]"),
    ("W", "must be a tensor of vectors .* got str"),
    (torch.ones(2, 5, 2, dtype=torch.long), "floating point"),
]


@pytest.mark.parametrize("bad, match", BAD_VECTORS)
def test_bad_vector_input_message(bad, match):
    # The coercion every plot shares says what is wrong; under pytest the jaxtyping annotation
    # on the public function may reject the value first (a TypeError), so check both layers.
    with pytest.raises(ValueError, match=match):
        as_vector_sets(bad)
    with pytest.raises((ValueError, TypeError)):
        plot.gram_heatmaps(bad)


def test_bad_instances_titles_and_ax(model):
    with pytest.raises(ValueError, match=r"instances must be integers in \[0, 3\)"):
        plot.feature_bars(model, instances=[5])
    with pytest.raises(ValueError, match="titles must have one entry per drawn instance"):
        plot.gram_heatmaps(model, titles=["only one"])
    _, ax = figure_and_axes()
    with pytest.raises(ValueError, match="single Axes but 3 instances"):
        plot.feature_directions(model, ax=ax)
    with pytest.raises(ValueError, match="colors must give one colour per feature"):
        plot.feature_directions(model, colors=["r"])


def test_gram_heatmaps_shared_diverging_colorbar(model):
    fig = plot.gram_heatmaps(model)
    assert len(visible_axes(fig)) == 3
    assert len(fig.axes) == 4                          # + one shared colorbar
    im = visible_axes(fig)[0].images[0]
    assert im.get_clim() == (-1, 1)
    G = model.feature_directions()[0] @ model.feature_directions()[0].T
    assert torch.allclose(torch.as_tensor(im.get_array().data), G, atol=1e-6)


def test_feature_bars_lengths_and_colours():
    # Feature 0 and 1 orthogonal (black), 2 and 3 an antipodal pair (yellow), 4 absent.
    V = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -0.8],
                      [0.0, 0.0, 0.0]])
    fig = plot.feature_bars(V, titles=["t"])
    ax = visible_axes(fig)[0]
    bars = ax.patches
    assert [round(b.get_width(), 3) for b in bars] == [1.0, 1.0, 1.0, 0.8, 0.0]
    assert bars[0].get_facecolor()[:3] == pytest.approx((0, 0, 0))
    r, g, b = bars[3].get_facecolor()[:3]              # superposition 1: yellow
    assert r > 0.9 and g > 0.8 and b < 0.5
    assert ax.get_ylim()[0] > ax.get_ylim()[1]         # feature 0 at the top
    assert len(plot.feature_bars(torch.randn(4, 20, 5)).axes) == 4 + 1


def test_loss_curves_single_and_dict():
    loss = torch.rand(10, 3) + 0.1
    history = ToyHistory()
    for i in range(10):
        history.record(step=10 * i, loss=loss[i].tolist(), lr=1e-3, seconds=0.1 * i)
    res = toy.TrainResult(history=history, config=toy.TrainConfig(), step=100, seconds=1.0)
    fig = plot.loss_curves(res, labels=["a", "b", "c"], smooth=3)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.lines) == 3 and ax.get_yscale() == "log"
    fig = plot.loss_curves({"one": res, "two": res}, log=False)
    assert len(fig.axes[0].lines) == 6 and fig.axes[0].get_yscale() == "linear"
    _, given = figure_and_axes()
    assert plot.loss_curves(res, ax=given).axes[0] is given
    with pytest.raises(ValueError, match="labels must have one entry per instance"):
        plot.loss_curves(res, labels=["a"])
    with pytest.raises(ValueError, match="must be a training result"):
        plot.loss_curves(loss)
