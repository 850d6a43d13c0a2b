"""Geometry figures, the random-angle density, and the geometry experiments in quick mode."""

from __future__ import annotations

import math

import pytest
import torch

from superpose import packing, plot
from superpose.plot._common import figure_and_axes


def _unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True)


# ---- the density the baseline draws ----------------------------------------------------------

@pytest.mark.parametrize("d", [2, 3, 20, 1000, 10**6])
def test_random_angle_density_integrates_to_one(d):
    x = torch.linspace(0, 180, 200_001, dtype=torch.float64)
    total = float(torch.trapezoid(packing.random_angle_density(x, d), x))
    assert total == pytest.approx(1, abs=1e-6)
    y = torch.linspace(0, 90, 100_001, dtype=torch.float64)
    lines = packing.random_angle_density(y, d, lines=True)
    assert float(torch.trapezoid(lines, y)) == pytest.approx(1, abs=1e-6)


def test_random_angle_density_matches_sampled_angles():
    d = 12
    V = _unit(3000, d)
    c = (V[:1500] * V[1500:]).sum(-1).clamp(-1, 1)
    a = torch.rad2deg(torch.arccos(c))
    frac = float(((a > 80) & (a < 100)).double().mean())
    x = torch.linspace(80, 100, 2001, dtype=torch.float64)
    exact = float(torch.trapezoid(packing.random_angle_density(x, d), x))
    assert frac == pytest.approx(exact, abs=0.03)      # 1500 pairs: ±3 sigma
    assert float(packing.random_angle_density(torch.tensor([90.0]), 2)) == pytest.approx(1 / 180)


def test_random_angle_density_errors(user_errors):
    with pytest.raises(ValueError, match="d >= 2"):
        packing.random_angle_density(torch.tensor([90.0]), 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        packing.random_angle_density([90.0], 5)


def test_capacity_does_not_overflow_in_high_dimension():
    c = packing.capacity(16384, 30.0)                  # the cap bound overflows a float
    assert c.upper_by["cap"] == math.inf and c.upper > 1e100
    assert packing.capacity(1000, 1.0).upper == 1437


# ---- figures ---------------------------------------------------------------------------------

def test_angle_histogram_draws_sets_baseline_and_bound():
    R, P = _unit(200, 10, 1), packing.pack(200, 10, steps=60, progress=False)
    fig = plot.angle_histograms({"random": R, "pack()": P.vectors})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("random:") for lab in labels)
    assert any("random unit vectors in R^10" in lab for lab in labels)
    b = packing.bounds(200, 10)
    assert any(f"±{b.best_deg:.2f}°" in lab for lab in labels)
    xs = [ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == "--"]
    assert any(abs(x - math.degrees(math.acos(b.best))) < 1e-9 for x in xs)
    lo, hi = ax.get_xlim()
    assert lo < math.degrees(math.acos(b.best)) and hi > 180 - math.degrees(math.acos(b.best))
    fig = plot.angle_histograms(R, lines=True)
    assert fig.axes[0].get_xlim()[1] == 90


def test_angle_histogram_errors(user_errors):
    with pytest.raises(ValueError, match="same dimension"):
        plot.angle_histograms({"a": _unit(5, 3), "b": _unit(5, 4)})
    with pytest.raises(TypeError, match="mapping"):
        plot.angle_histograms([[1.0, 0.0]])
    with pytest.raises(ValueError, match="zero vector"):
        plot.angle_histograms(torch.zeros(3, 2))


def test_capacity_curves_and_history_and_comparison():
    caps = [packing.capacity(d, a) for a in (10.0, 30.0) for d in (2, 4, 8, 64, 1024, 10**5)]
    fig = plot.capacity_curves(caps, measured={"pack": ([4], [8])})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert sum("upper (bounds)" in t.get_text() for t in ax.get_legend().get_texts()) == 2
    with pytest.raises(TypeError, match="Capacity"):
        plot.capacity_curves([1, 2])

    runs_ = {"a": packing.pack(12, 4, steps=40, progress=False),
             "b": packing.pack(30, 6, steps=40, progress=False)}
    fig = plot.optimizer_history(runs_, ratio=True, known={"a": 0.3})
    curve = fig.axes[0].lines[0]
    assert list(curve.get_xdata()) == runs_["a"].history_steps
    assert curve.get_ydata()[-1] == pytest.approx(runs_["a"].history[-1] / runs_["a"].bounds.best)
    with pytest.raises(TypeError, match="PackResult"):
        plot.optimizer_history([1])

    fig = plot.angle_comparison({"set": {"learned": _unit(20, 5, 2), "random": _unit(20, 5, 3)}})
    bar_ax = fig.axes[-1]
    assert len(bar_ax.patches) == 2                    # one bar per set
    _, ax = figure_and_axes()
    assert plot.angle_histograms(_unit(20, 5), ax=ax) is ax.figure


# ---- experiments (quick) ---------------------------------------------------------------------


def test_old_name_angle_histogram_warns_and_is_angle_histograms():
    with pytest.warns(DeprecationWarning, match=r"plot.angle_histogram is now "
                                                r"plot.angle_histograms"):
        assert plot.angle_histogram is plot.angle_histograms
    with pytest.warns(DeprecationWarning):
        from superpose.plot import angle_histogram
    assert angle_histogram is plot.angle_histograms
