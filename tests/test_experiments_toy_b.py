"""The phase-diagram and feature-dimensionality experiments, in quick mode: they write their
results folder and reproduce the parts of the paper's findings that are robust at that size
(science tier); the closed-form theory and classifier behind them are unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def _files(run_dir: str) -> set[str]:
    return {p.name for p in Path(run_dir).iterdir()}


@pytest.mark.science
def test_toy_phase_diagram_quick(tmp_path: Path) -> None:
    # catches: per-instance importance or density not reaching the loss (the dense column would
    # not flip at r = 1, sparse cells would not superpose), or a learned grid that drifts from
    # the closed-form theory.
    import toy_phase_diagram as exp

    m = exp.run(out=str(tmp_path), quick=True, seed=0, progress=False)
    run_dir = Path(m["run_dir"])
    assert run_dir.parent == tmp_path / "toy_phase_diagram"
    assert {"config.json", "metrics.json", "phase_diagram.png", "phase_diagram_theory.png",
            "model"} <= _files(m["run_dir"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["summary"]) and saved["class_names"] == list(exp.CLASS_NAMES)
    assert (run_dir / "model" / "model.safetensors").is_file()

    labels = torch.tensor(saved["labels"])
    cfg = json.loads((run_dir / "config.json").read_text())
    r = torch.tensor(cfg["rel_importance"])
    n = cfg["grid"]
    assert labels.shape == (n, n)
    # Dense features (first column, density 1): never superposition; the extra feature gets
    # the one dimension iff it is more important than feature 0.
    dense = labels[:, 0]
    assert torch.equal(dense, torch.where(r > 1, exp.DEDICATED, exp.NOT_REPRESENTED))
    # Sparse features: superposition takes over, around r = 1 at the sparsest density.
    assert saved["superposition_at_r1_sparsest"]
    assert saved["superposition_fraction_density_le_0.1"] > 0.7
    assert saved["class_fractions"][exp.CLASS_NAMES[exp.SUPERPOSITION]] > 0.4
    # The theory shows the same picture and the learned grid mostly agrees with it.
    theory = torch.tensor(saved["theory_labels"])
    assert torch.equal(theory[:, 0], dense)
    assert saved["agreement_with_theory"] > 0.8
    assert abs(sum(saved["class_fractions"].values()) - 1) < 1e-6


def test_phase_theory_matches_the_closed_form() -> None:
    import toy_phase_diagram as exp

    # W = [1, -1], b = 0 at density p: only the both-on case errs, each feature by min(x0, x1)²
    # (E = 1/6), so the loss is p² (1 + r) / 6 / 2 (the mean over the 2 features).
    p = torch.tensor([1.0, 0.3, 0.01], dtype=torch.float64)
    r = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    w = torch.tensor([[1.0, -1.0]] * 3, dtype=torch.float64)
    got = exp.expected_loss(w, torch.zeros_like(w), p, r, n_points=400)
    assert torch.allclose(got, p**2 * (1 + r) / 12, rtol=1e-3)
    # Dense features: keep the more important one; the other costs its variance (1/12).
    out = exp.theoretical_phase(torch.tensor([1.0]), torch.tensor([0.5, 2.0]), steps=50,
                                n_points=32)
    assert out["labels"][:, 0].tolist() == [exp.NOT_REPRESENTED, exp.DEDICATED]
    assert torch.allclose(out["loss_not_represented"][:, 0].float(),
                          torch.tensor([0.5, 2.0]) / 24, rtol=1e-2)


def test_classify() -> None:
    import toy_phase_diagram as exp

    W = torch.tensor([[1.0, 0.01], [0.02, -1.0], [0.9, -1.1], [-1.0, 1.0], [0.9, 0.9]])
    assert exp.classify(W).tolist() == [exp.NOT_REPRESENTED, exp.DEDICATED, exp.SUPERPOSITION,
                                        exp.SUPERPOSITION, exp.DEDICATED]


@pytest.mark.science
def test_toy_dimensionality_quick(tmp_path: Path) -> None:
    # catches: a wrong dimensions-per-feature or feature-dimensionality formula (no 1 when
    # dense, no 1/2 plateau of antipodal pairs, fractions off the paper's lines).
    import toy_dimensionality as exp

    m = exp.run(out=str(tmp_path), quick=True, seed=0, progress=False)
    run_dir = Path(m["run_dir"])
    assert {"config.json", "metrics.json", "dimensions_per_feature.png",
            "feature_dimensionality.png", "model"} <= _files(m["run_dir"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["summary"])
    dpf = torch.tensor(saved["dims_per_feature"])
    inv = torch.tensor(saved["inv_sparsity"])
    # Dense: the m dimensions hold m features' worth of weight, m/||W||² = 1.
    assert abs(float(dpf[0]) - 1) < 0.05
    # Sparser features share dimensions: the curve falls well below 1/2 at the sparse end ...
    assert float(dpf[-1]) < 0.3 and bool((dpf[1:] <= dpf[:-1] + 0.03).all())
    # ... and sticks near 1/2 (antipodal pairs) on the way, the flattest stretch of the curve.
    assert abs(saved["plateau"]["value"] - 0.5) < 0.05
    assert 1.5 < saved["plateau"]["inv_sparsity_from"] < saved["plateau"]["inv_sparsity_to"] < 6
    assert bool((dpf - 0.5).abs().min() < 0.03)
    # Where features form small polytopes, most of them sit on the paper's fractions.
    assert saved["fraction_on_lines_polytope_regime"] > 0.5
    D = torch.tensor(saved["feature_dims"])
    assert D.shape == (len(inv), json.loads((run_dir / "config.json").read_text())
                       ["toy"]["n_features"])
    counts = saved["feature_dims_histogram"]["counts"]
    assert len(counts) == len(saved["feature_dims_histogram"]["bin_edges"]) - 1
