"""SAE figures: what each draws, checked on the axes, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superpose import plot, sae
from superpose.plot.sae import best_cosines


def pentagon() -> torch.Tensor:
    t = torch.arange(5) * 2 * torch.pi / 5
    return torch.stack([t.cos(), t.sin()], -1)


def test_decoder_vs_true_2d_draws_one_arrow_per_vector():
    true = pentagon()
    dec = torch.cat([true * 0.5, torch.tensor([[0.0, 0.2]])])     # 6 rows, unnormalised
    fig = plot.decoder_vs_true(dec, true, title="t")
    ax = fig.axes[0]
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == 5 + 6
    tips = np.array([a.xy for a in arrows[5:]])
    np.testing.assert_allclose(np.linalg.norm(tips, axis=1), 1.0, atol=1e-6)  # normalised
    assert ax.get_aspect() == 1.0 and ax.get_title() == "t"


def test_decoder_vs_true_high_d_is_the_sorted_best_cosine_curve():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(20, 16, generator=g)
    dec = torch.cat([true[:15] + 0.01 * torch.randn(15, 16, generator=g),
                     torch.randn(5, 16, generator=g)])
    s = sae.create(sae.SAEConfig(d_in=16, d_sae=20))
    with torch.no_grad():
        s.W_dec.copy_(dec)
    fig = plot.decoder_vs_true(s, true)
    y = fig.axes[0].lines[0].get_ydata()
    assert np.all(np.diff(y) <= 0) and len(y) == 20
    best = best_cosines(dec, true)
    np.testing.assert_allclose(np.sort(best)[::-1], y)
    assert "75.0% of 20" in fig.axes[0].texts[0].get_text()


def test_best_cosines_are_the_evaluation_modules_numbers(monkeypatch):
    g = torch.Generator().manual_seed(1)
    true, dec = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    want = sae.evaluation.feature_cosines(dec, true).max(dim=1).values.numpy()
    np.testing.assert_array_equal(best_cosines(dec, true), want)
    # The plot computes nothing itself: it calls sae.evaluation.feature_cosines.
    calls = []
    real = sae.evaluation.feature_cosines
    monkeypatch.setattr(sae.evaluation, "feature_cosines",
                        lambda d, t: calls.append(1) or real(d, t))
    best_cosines(dec.numpy(), true)
    assert calls == [1]


def test_frontier_one_line_per_architecture_sorted_by_l0():
    pts = [{"architecture": "topk", "l0": 16, "fve": 0.9, "recovered": 0.8},
           {"architecture": "topk", "l0": 4, "fve": 0.7, "recovered": 0.6},
           {"architecture": "relu", "l0": 30, "fve": 0.95, "recovered": 0.1}]
    fig = plot.frontier(pts)
    lines = fig.axes[0].lines
    assert [ln.get_label() for ln in lines] == ["topk", "relu"]
    np.testing.assert_allclose(lines[0].get_xdata(), [4, 16])
    np.testing.assert_allclose(lines[0].get_ydata(), [0.7, 0.9])
    fig = plot.frontier(pts, y="recovered", log_x=False)
    assert "recovered" in fig.axes[0].get_ylabel()


def test_histograms_and_training_curves(tmp_path):
    true = pentagon()
    fig = plot.max_cos_histogram({"a": true, "b": true[:3]}, true)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["a (100%)", "b (60%)"]
    fig = plot.latent_density({"x": torch.tensor([0.0, 0.1, 0.01, 0.5])})
    assert "(1 dead)" in fig.axes[0].get_legend().get_texts()[0].get_text()
    h = sae.SAETrainHistory(step=[0, 10], samples=[64, 704], loss=[1.0, 0.5], mse=[1.0, 0.5],
                            sparsity=[0.0, 0.0], aux=[0.0, 0.0], l0=[16.0, 4.0],
                            frac_dead=[0.0, 0.1], lr=[1e-3, 1e-3], resampled=[0, 0])
    fig = plot.sae_training_curves({"run": h})
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 1
    fig.savefig(tmp_path / "curves.png")


def test_errors(user_errors):
    with pytest.raises(ValueError, match="same space"):
        plot.decoder_vs_true(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="vectors as rows"):
        plot.decoder_vs_true(torch.randn(4), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"points\[0\] lacks \['fve'\]"):
        plot.frontier([{"architecture": "topk", "l0": 3}])
    with pytest.raises(ValueError, match="firing frequencies"):
        plot.latent_density(torch.tensor([2.0]))
    with pytest.raises(ValueError, match="SAETrainResult or SAETrainHistory"):
        plot.sae_training_curves({"x": 3})
