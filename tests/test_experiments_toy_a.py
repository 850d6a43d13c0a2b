"""The toy experiment scripts in quick mode: they write their files and the science holds
where it is robust at a few thousand steps (science tier); and the shape classifier they use."""

from __future__ import annotations

import json

import pytest
import toy_correlated
import toy_intro
import toy_sweep


def files(run_dir) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


@pytest.mark.science
def test_toy_intro_quick(tmp_path):
    # catches: a toy trainer or model that no longer finds superposition (no pentagon, fewer
    # than 4 features in 2 dimensions when sparse), a wrong dense-limit loss, a results folder
    # missing a file, or a pentagon count that disagrees with the shapes it counts.
    m = toy_intro.run(out=tmp_path, quick=True, progress=False)
    run_dir = tmp_path / "toy_intro"
    (run_dir,) = [p for p in run_dir.iterdir()]
    assert {"config.json", "metrics.json", "feature_directions.png", "feature_bars.png",
            "loss_curves.png", "model_seed0", "model_seed1"} <= files(run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["summary"] and saved["sparsest"]["n_seeds"] == 2
    # Dense: the two most important features get orthogonal dimensions, loss ≈ closed form.
    assert m["dense"]["shape_per_seed"] == ["2 orthogonal"] * 2
    assert all(sorted(r) == [0, 1] for r in m["dense"]["represented_per_seed"])
    for loss in m["dense"]["final_loss_per_seed"]:
        assert loss == pytest.approx(toy_intro.DENSE_LOSS, rel=0.05)
    # Sparse: more features than dimensions. At the sparsest density every seed packs at least
    # 4 features into 2 dimensions, and the pentagon appears in the sparse half of the sweep
    # (at the sparsest density itself some seeds stop at the square: a local minimum).
    for s in m["seeds"].values():
        assert s["n_represented"][-1] >= 4
        assert "pentagon" in s["shape"][5:]
    assert m["sparsest"]["pentagon_count"] == sum(
        s["shape"][-1] == "pentagon" for s in m["seeds"].values())


@pytest.mark.science
def test_toy_sweep_quick(tmp_path):
    # catches: a linear toy model that superposes (it must keep exactly the top 5 features), a
    # ReLU model that stops superposing when sparse, or a broken superposition/dims measure.
    m = toy_sweep.run(out=tmp_path, quick=True, progress=False)
    (run_dir,) = list((tmp_path / "toy_sweep").iterdir())
    assert {"config.json", "metrics.json", "paper_figure.png", "gram_relu_out.png",
            "gram_linear.png", "feature_bars_relu_out.png", "feature_bars_linear.png",
            "loss_curves.png", "model_relu_out", "model_linear"} <= files(run_dir)
    # The linear model keeps exactly the 5 most important features at every density.
    assert m["linear_keeps_exactly_top5_all"]
    assert m["linear"]["n_represented"] == [5] * len(toy_sweep.DENSITIES)
    relu = m["relu_out"]
    assert relu["n_represented"][0] == 5                       # dense: like the linear model
    assert relu["dims_per_feature"][0] == pytest.approx(1.0, abs=0.05)
    assert relu["n_represented"][-1] >= 10                     # sparse: superposition
    assert relu["dims_per_feature"][-1] < 0.6
    assert relu["mean_superposition_represented"][0] < 0.05
    assert relu["mean_superposition_represented"][-1] > 0.5


@pytest.mark.science
def test_toy_correlated_quick(tmp_path):
    # catches: correlated/anticorrelated feature sampling that ignores its correlation (the
    # geometry would not switch between orthogonal and antipodal), or a verdict that
    # contradicts the cosines it is computed from.
    m = toy_correlated.run(out=tmp_path, quick=True, progress=False)
    (run_dir,) = list((tmp_path / "toy_correlated").iterdir())
    assert {"config.json", "metrics.json", "feature_directions_correlated.png",
            "feature_directions_anticorrelated.png", "model_correlated",
            "model_anticorrelated"} <= files(run_dir)
    v = m["verdict"]
    # Sparse correlated features: orthogonal within a set, the two sets antipodal.
    assert abs(v["correlated_sparse_mean_within_set_cos"]) < 0.1
    assert v["correlated_sparse_mean_min_cross_set_cos"] < -0.9
    # Anticorrelated features: antipodal within a set at the densest setting, and wherever
    # replicas disagree the antipodal arrangement has the lower loss.
    assert v["anticorrelated_densest_median_within_set_cos"] < -0.9
    assert all(v["anticorrelated_antipodal_has_lowest_loss"])
    assert v["correlated_prefers_orthogonal"] and v["anticorrelated_prefers_antipodal"]


def test_classify_2d_names_the_paper_shapes(user_errors):
    import math

    import torch

    from superpose.toy.analysis import classify_2d

    def at(*deg, norm=1.0):
        return torch.tensor([[norm * math.cos(math.radians(d)), norm * math.sin(math.radians(d))]
                             for d in deg])

    pent = classify_2d(at(0, 144, 288, 72, 216))
    assert pent.label == "pentagon" and pent.n_represented == 5
    assert pent.represented == [0, 3, 1, 4, 2]                 # angular order
    both = torch.cat([at(10, 100), at(30, 200, 300, norm=0.1)])
    assert classify_2d(both).label == "2 orthogonal"
    assert classify_2d(at(5, 185)).label == "antipodal pair"
    assert classify_2d(at(0, 90, 180, 270)).label == "square"
    assert classify_2d(at(0, 60, 180, 240)).label == "2 antipodal pairs"
    assert classify_2d(at(0, 180, 80)).label == "antipodal pair + 1"
    assert classify_2d(at(0, 40, 90, 200, 300)).label.startswith("5 irregular")
    assert classify_2d(torch.zeros(5, 2)).label == "none"
    with pytest.raises(ValueError, match=r"shape \[n_features, 2\]"):
        classify_2d(torch.zeros(5, 3))
