"""Feature dimensionality: how many dimensions each feature gets as features get sparser.

Elhage et al. 2022, section "Feature Dimensionality". Many features of equal importance are
squeezed into few hidden dimensions (the paper: 400 features into 30; here 200 into 20, quick
mode 100 into 10), one instance per density p, with 1/(1−S) = 1/p log-spaced from 1 (dense)
to 30. Two measures:

  m / ||W||_F²                      dimensions per feature: 1 when each represented feature has
                                    a dimension of its own, 1/2 for antipodal pairs, → 0 as
                                    ever more features share the m dimensions;
  D_i = ||W_i||² / Σ_j (Ŵ_i·W_j)²    feature i's own share of a dimension.

What the paper found: dimensions per feature does not fall smoothly with sparsity but "sticks"
at 1/2 over a range of sparsities (features pair up antipodally), and the individual D_i cluster
at a few fractions — 1, 3/4 (tetrahedra), 2/3 (triangles), 1/2 (antipodal pairs), 2/5
(pentagons), 3/8 (square antiprisms) — because the features organize into a tegum product of
small regular polytopes, with sharp jumps between the configurations.

Here: the same sticky plateau at 1/2 (found as the flattest stretch of the curve below 0.9,
not assumed), and D_i on the paper's fractions between the dense and the very sparse ends.
Two things worth knowing when reading the figures. At density 1 every rank-m projection is an
optimum when all features matter equally (x ↦ Px, P = WᵀW, loses the same variance whichever m
directions it keeps), so the model may spread its m dimensions over all n features: m/||W||_F²
is still 1, but each D_i ≈ m/n and no feature has norm near 1 (that instance also converges
slowly: features whose ReLU output is stuck at 0 get no gradient, so its loss is recorded next
to the optimum (n − m) / 12n). And at high sparsity (1/(1−S) beyond ~6 here) all features
share one large uniform arrangement, so the D_i form one tight cluster that slides down
smoothly instead of sitting on a fraction.

Result (full mode): m/||W||_F² = 0.49 from 1/(1−S) ≈ 2.4 to 3.8 (flat, elasticity 0.01); where
m/||W||_F² ≥ 0.35 (1/(1−S) ≤ 5), 86% of represented features have D_i within 0.03 of a paper
fraction (mostly 1/2, then 3/8, 3/4, 2/3, 2/5). Quick mode (100 → 10, 12 densities) takes
~10 s; full mode about 6 minutes on one CPU thread.

    python experiments/toy_dimensionality.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import math
import time
from fractions import Fraction
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import geometry, runs, toy
from superpose.plot.dimensionality import (
    PAPER_FRACTIONS,
    dimensionality_scatter,
    dimensions_per_feature_curve,
)

log = logging.getLogger(__name__)

THRESHOLD = 0.5            # ||W_i|| above this: feature i is represented
LINE_TOLERANCE = 0.03      # D_i within this of a fraction counts as "on the line"
POLYTOPE_MIN_DPF = 0.35    # instances with m/||W||² below this are past the paper's fractions

SETTINGS = {
    "quick": dict(n_features=100, n_hidden=10, n_instances=12, max_inv_sparsity=30.0,
                  steps=2_500, batch_size=256, lr=1e-2, schedule="cosine", warmup_steps=100),
    "full": dict(n_features=200, n_hidden=20, n_instances=24, max_inv_sparsity=30.0,
                 steps=10_000, batch_size=512, lr=1e-2, schedule="cosine", warmup_steps=200),
}


def on_fraction(D: Float[Tensor, "*batch"], fractions: tuple[float, ...] = PAPER_FRACTIONS,
                tol: float = LINE_TOLERANCE) -> Tensor:
    """True where D lies within `tol` of one of `fractions`."""
    f = torch.tensor(fractions, dtype=D.dtype)
    return ((D[..., None] - f).abs() <= tol).any(-1)


def find_plateau(inv_sparsity: Float[Tensor, " inst"], dims_per_feature: Float[Tensor, " inst"],
                 *, window: int = 2, below: float = 0.9, tol: float = LINE_TOLERANCE
                 ) -> dict[str, float]:
    """Where the dims-per-feature curve is flat, ignoring the dense end (values ≥ `below`).

    The flattest `window` consecutive instances (smallest elasticity |Δ log(m/||W||²) /
    Δ log(1/(1−S))|: 0 on a plateau, ~1 where the curve falls like 1/x) seed the plateau; it
    then grows to its neighbours while they stay within `tol` of its median. Returns the range
    of 1/(1−S), the median dims-per-feature over it, the seed's elasticity and the count.
    """
    order = torch.argsort(inv_sparsity)
    x, y = inv_sparsity[order].double(), dims_per_feature[order].double()
    lx = x.log()
    best, start = float("inf"), -1
    for s in range(len(x) - window + 1):
        ys = y[s:s + window]
        if ys.max() >= below or ys.min() <= 0:
            continue
        el = float((ys.max().log() - ys.min().log()) / (lx[s + window - 1] - lx[s]))
        if el < best:
            best, start = el, s
    if start < 0:
        return {}
    lo, hi = start, start + window - 1
    value = float(y[lo:hi + 1].median())
    while lo > 0 and abs(float(y[lo - 1]) - value) <= tol:
        lo -= 1
    while hi < len(y) - 1 and abs(float(y[hi + 1]) - value) <= tol:
        hi += 1
    return {"inv_sparsity_from": float(x[lo]), "inv_sparsity_to": float(x[hi]),
            "value": float(y[lo:hi + 1].median()), "elasticity": best,
            "n_instances": hi - lo + 1}


def run(out: str = "results", quick: bool = False, seed: int = 0, progress: bool = True
        ) -> dict[str, Any]:
    """Train the sparsity sweep, measure dimensionality, save figures and metrics."""
    t_start = time.perf_counter()
    s = SETTINGS["quick" if quick else "full"]
    run_ = runs.Run.create("toy_dimensionality", out=out)
    n_inst = s["n_instances"]
    inv = torch.logspace(0, math.log10(s["max_inv_sparsity"]), n_inst, dtype=torch.float64)
    density = (1 / inv).tolist()
    toy_cfg = toy.ToyConfig(n_features=s["n_features"], n_hidden=s["n_hidden"],
                            n_instances=n_inst, importance=1.0, feature_probability=density,
                            seed=seed)
    train_cfg = toy.TrainConfig(steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"],
                                schedule=s["schedule"], warmup_steps=s["warmup_steps"],
                                log_every=25, seed=seed)
    run_.save_config({"quick": quick, "seed": seed, "toy": toy_cfg, "train": train_cfg,
                      "inv_sparsity": inv, "represented_threshold": THRESHOLD,
                      "line_tolerance": LINE_TOLERANCE, "fractions": PAPER_FRACTIONS})

    model = toy.ToyModel(toy_cfg, device="cpu")
    result = toy.train(model, train_cfg, progress=progress)
    V = model.feature_directions().cpu()                       # [inst, n_features, n_hidden]
    dpf = geometry.dimensions_per_feature(V)
    D = geometry.feature_dimensionality(V)
    represented = geometry.norms(V) > THRESHOLD
    on_line = on_fraction(D) & represented
    n_rep = represented.sum(-1)
    frac_on = float(on_line.sum() / represented.sum().clamp_min(1))
    per_inst_on = (on_line.sum(-1) / n_rep.clamp_min(1)).tolist()
    # Each fraction's share among represented features (a feature near both 2/5 and 3/8 counts
    # for the nearer one).
    f = torch.tensor(PAPER_FRACTIONS, dtype=D.dtype)
    nearest = (D[..., None] - f).abs().argmin(-1)
    by_fraction = {str(_frac(x)): int((on_line & (nearest == k)).sum())
                   for k, x in enumerate(PAPER_FRACTIONS)}
    superposed = represented & (D < 1 - LINE_TOLERANCE)
    frac_on_superposed = float((on_line & superposed).sum() / superposed.sum().clamp_min(1))
    # The paper's fractions are all >= 3/8: where the average share m/||W||² has fallen below
    # that, features can only sit lower, so count the lines where they can be reached too.
    polytope = (dpf >= POLYTOPE_MIN_DPF)[:, None] & represented
    frac_on_polytope = float((on_line & polytope).sum() / polytope.sum().clamp_min(1))
    edges = torch.linspace(0, 1.05, 43)
    hist = torch.histogram(D[represented].float(), bins=edges.float()).hist
    plateau = find_plateau(inv, dpf)

    fig = dimensions_per_feature_curve(inv, dpf, lines=(1, 1 / 2, 2 / 5, 1 / 3))
    fig.axes[0].set_title(f"{s['n_features']} features in {s['n_hidden']} dimensions: "
                          "dimensions per feature", fontsize=10)
    run_.save_figure(fig, "dimensions_per_feature")
    fig = dimensionality_scatter(inv, D, dims_per_feature=dpf)
    fig.axes[0].set_title(f"feature dimensionality $D_i$ of all {s['n_features']} features "
                          "per instance", fontsize=10)
    run_.save_figure(fig, "feature_dimensionality")
    run_.save_model(model, "model")

    dense_loss = (s["n_features"] - s["n_hidden"]) / (12 * s["n_features"])
    seconds = time.perf_counter() - t_start
    metrics: dict[str, Any] = {
        "inv_sparsity": inv, "density": density,
        "dims_per_feature": dpf, "n_represented": n_rep,
        "fraction_on_lines": frac_on,
        "fraction_on_lines_superposed": frac_on_superposed,
        "fraction_on_lines_polytope_regime": frac_on_polytope,
        "polytope_regime_inv_sparsity": inv[dpf >= POLYTOPE_MIN_DPF],
        "fraction_on_lines_per_instance": per_inst_on,
        "on_lines_by_fraction": by_fraction,
        "feature_dims": D,
        "feature_dims_histogram": {"bin_edges": edges, "counts": hist.long()},
        "plateau": plateau,
        "final_loss": result.final_loss,
        # At density 1 any rank-m projection keeps m of the n unit-variance-1/12 directions.
        "dense_optimal_loss": dense_loss,
        "seconds": seconds, "steps_per_second": result.steps_per_second,
    }
    metrics["summary"] = {
        "model": f"{s['n_features']} features -> {s['n_hidden']} dims, {n_inst} densities, "
                 f"1/(1-S) in [1, {s['max_inv_sparsity']:g}], {s['steps']} steps",
        "dims per feature at density 1": round(float(dpf[0]), 3),
        "plateau (flattest stretch of the curve)": (
            f"{plateau.get('value', float('nan')):.3f} for 1/(1-S) in "
            f"[{plateau.get('inv_sparsity_from', 0):.2f}, {plateau.get('inv_sparsity_to', 0):.2f}]"
            f" ({plateau.get('n_instances', 0)} instances)"),
        "represented D_i within 0.03 of 1,3/4,2/3,1/2,2/5,3/8": f"{frac_on:.2f}",
        "superposed (D_i<1) features on those lines": f"{frac_on_superposed:.2f}",
        f"... where m/||W||^2 >= {POLYTOPE_MIN_DPF}": f"{frac_on_polytope:.2f}",
        "loss at density 1 vs optimum": f"{float(result.final_loss[0]):.4f} vs {dense_loss:.4f}",
        "seconds": round(seconds, 1),
    }
    run_.save_metrics(metrics)
    log.info("dimensionality: %s", metrics["summary"])
    metrics["run_dir"] = str(run_.path)
    return metrics


def _frac(x: float) -> str:
    return str(Fraction(x).limit_denominator(16))


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
