"""The SAE experiments in quick mode: results folders, metrics and the science they claim. The
science tier."""

from __future__ import annotations

import json

import jaxtyping
import pytest


@pytest.fixture
def no_shape_checks():
    """These runs test the science; the run-time shape checks (covered by the unit tests)
    would double their time."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


@pytest.mark.science
@pytest.mark.xdist_group("sae_experiments")
def test_sae_toy_recovers_the_toy_models_directions(tmp_path, no_shape_checks):
    # catches: an SAE (or the activation capture from a ToyModel instance) that learns
    # directions other than the toy model's own features: recovery at cos >= 0.9 would fail.
    import sae_toy

    m = sae_toy.run(out=str(tmp_path), quick=True, seed=0, progress=False)
    run_dir = tmp_path / "sae_toy"
    folder = next(run_dir.iterdir())
    for name in ("pentagon_topk", "pentagon_relu", "40_in_10_topk", "training_curves"):
        assert (folder / f"{name}.png").stat().st_size > 1000
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["pentagon"]["n_represented"] == 5
    assert m["pentagon"]["topk"]["recovered"] >= 0.8     # 5/5 at seed 0; 4/5 at some seeds
    assert m["40_in_10"]["n_represented"] >= 30
    assert m["40_in_10"]["topk"]["recovered"] >= 0.8


@pytest.mark.science
@pytest.mark.xdist_group("sae_experiments")
def test_sae_ground_truth_frontier(tmp_path, no_shape_checks):
    # catches: an architecture dropped from the sweep, a TopK whose k does not set its sparsity
    # (L0 and FVE would not rise with k), or ground-truth matching (MCC) that is broken.
    import sae_ground_truth

    m = sae_ground_truth.run(out=str(tmp_path), quick=True, seed=0, progress=False)
    folder = next((tmp_path / "sae_ground_truth").iterdir())
    for name in ("frontier_fve", "frontier_recovery", "max_cos", "latent_density"):
        assert (folder / f"{name}.png").stat().st_size > 1000
    archs = {p["architecture"] for p in m["runs"]}
    assert archs == {"relu", "topk", "batchtopk", "jumprelu", "gated"}
    topk = sorted((p for p in m["runs"] if p["architecture"] == "topk"), key=lambda p: p["k"])
    assert topk[0]["l0"] < topk[1]["l0"] and topk[0]["fve"] < topk[1]["fve"]   # the trade-off
    assert m["best_per_architecture"]["topk"]["mcc"] > 0.6
