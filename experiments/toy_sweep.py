"""Superposition as a phase change in sparsity: 20 features in 5 dimensions, linear vs ReLU.

Elhage et al., "Toy Models of Superposition" (2022), section "Superposition as a Phase Change"
/ the figure comparing the "Linear model" with the "ReLU output model" at increasing sparsity.
20 features of importance 0.7**i are reconstructed through 5 hidden dimensions, at feature
densities p from 1 (dense) down to 0.001 (each feature on 0.1% of the time).

What the paper found, and what this script measures per instance:
  - the linear model x' = WᵀW x + b cannot use sparsity: at every density it represents exactly
    the 5 most important features, each in its own orthogonal dimension (WᵀW is an identity
    block on features 0-4, zero elsewhere; no superposition);
  - the ReLU output model x' = ReLU(WᵀW x + b) does the same when features are dense, but as
    they get sparser it packs more and more features into the 5 dimensions (off-diagonal
    structure in WᵀW, yellow bars), with less important features entering first in
    superposition and dimensions per feature falling well below 1.
Per instance the metrics record n_represented (features with ||W_i|| > 0.5), dimensions per
feature (n_hidden / ||W||_F²), the mean superposition Σ_{j≠i}(Ŵ_i·W_j)² of the represented
features, and the loss; and whether the linear model kept exactly the top 5 features.

Full mode: 10,000 steps of AdamW lr 1e-3, batch 1024 (the reference recipe). Quick mode:
3,000 steps at lr 3e-3 and lands on nearly the same solutions. At p <= 0.003 the least
important features are still growing after 10,000 steps (a feature on 0.1% of the time is seen
in only ~1 sample per batch), so the sparsest columns show partial norms rather than the
paper's fully packed, converged picture.

    python experiments/toy_sweep.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from matplotlib.figure import Figure

from superpose import geometry, plot, runs, toy

log = logging.getLogger(__name__)

N_FEATURES, N_HIDDEN = 20, 5
IMPORTANCE = 0.7
DENSITIES = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
THRESHOLD = 0.5


def configs(quick: bool, seed: int) -> dict[str, Any]:
    def model_cfg(variant: str) -> toy.ToyConfig:
        return toy.ToyConfig(n_features=N_FEATURES, n_hidden=N_HIDDEN,
                             n_instances=len(DENSITIES), variant=variant,
                             importance=IMPORTANCE, feature_probability=DENSITIES,
                             seed=seed)

    train_cfg = (toy.TrainConfig(steps=3_000, lr=3e-3, log_every=20, seed=seed) if quick
                 else toy.TrainConfig(steps=10_000, log_every=20, seed=seed))
    return {"relu_out": model_cfg("relu_out"), "linear": model_cfg("linear"),
            "train": train_cfg, "seed": seed, "represented_threshold": THRESHOLD,
            "quick": quick}


def instance_metrics(model: toy.ToyModel, result: toy.TrainResult) -> dict[str, Any]:
    V = model.feature_directions()
    norm = geometry.norms(V)
    rep = norm > THRESHOLD
    sup = geometry.superposition(V)
    mean_sup = [float(s[r].mean()) if r.any() else 0.0 for s, r in zip(sup, rep)]
    top = torch.argsort(norm, dim=-1, descending=True)[:, :N_HIDDEN]
    return {
        "density": DENSITIES,
        "n_represented": rep.sum(-1).tolist(),
        "represented": [torch.nonzero(r).flatten().tolist() for r in rep],
        "dims_per_feature": geometry.dimensions_per_feature(V).tolist(),
        "mean_superposition_represented": mean_sup,
        "top5_by_norm": [sorted(t.tolist()) for t in top],
        "final_loss": result.final_loss.tolist(),
    }


def paper_figure(relu: toy.ToyModel, linear: toy.ToyModel, relu_titles: list[str]) -> Figure:
    """The paper's layout: WᵀW on top, ||W_i|| bars below; linear model left (at the sparsest
    density: even there it keeps only the top 5), ReLU output model at increasing sparsity."""
    n = len(DENSITIES)
    fig = Figure(figsize=(1.75 * (n + 1) + 1.2, 5.6), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.15, n + 0.4], wspace=0.03)
    axl = left.subplots(2, 1, height_ratios=[1, 1.6])
    axr = right.subplots(2, n, height_ratios=[1, 1.6])
    plot.gram_heatmaps(linear, instances=n - 1, titles=[f"p = {DENSITIES[-1]:g}"], ax=axl[0],
                       colorbar=False)
    plot.feature_bars(linear, instances=n - 1, titles=[""], ax=axl[1], colorbar=False)
    plot.gram_heatmaps(relu, titles=relu_titles, ax=axr[0])
    plot.feature_bars(relu, titles=[""] * n, ax=axr[1])
    left.suptitle("Linear model", fontsize=11)
    right.suptitle("ReLU output model: increasing sparsity →", fontsize=11)
    return fig


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("toy_sweep", out=out)
    r.save_config(cfg)
    t0 = time.perf_counter()
    models, results, metrics = {}, {}, {}
    for variant in ("relu_out", "linear"):
        model = toy.ToyModel(cfg[variant], device="cpu")
        results[variant] = toy.train(model, cfg["train"], progress=progress)
        models[variant] = model
        metrics[variant] = instance_metrics(model, results[variant])
        r.save_model(model, f"model_{variant}")
        log.info("%s: n_represented %s", variant, metrics[variant]["n_represented"])
    seconds = time.perf_counter() - t0

    lin = metrics["linear"]
    keeps_top5 = [rep == list(range(N_HIDDEN)) for rep in lin["represented"]]
    metrics["linear_keeps_exactly_top5"] = keeps_top5
    metrics["linear_keeps_exactly_top5_all"] = all(keeps_top5)
    metrics["train_seconds"] = seconds
    relu = metrics["relu_out"]
    metrics["summary"] = {
        "densities": ", ".join(f"{p:g}" for p in DENSITIES),
        "ReLU n_represented": str(relu["n_represented"]),
        "ReLU dims per feature": ", ".join(f"{x:.2f}" for x in relu["dims_per_feature"]),
        "linear n_represented": str(lin["n_represented"]),
        "linear keeps exactly features 0-4 at every density": all(keeps_top5),
        "training time": f"{seconds:.1f}s",
    }

    titles = [f"p = {p:g}" for p in DENSITIES]
    r.save_figure(paper_figure(models["relu_out"], models["linear"], titles), "paper_figure")
    for variant, name in (("relu_out", "ReLU output model"), ("linear", "linear model")):
        fig = plot.gram_heatmaps(models[variant], titles=titles)
        fig.suptitle(f"{name}: WᵀW at increasing sparsity", fontsize=10)
        r.save_figure(fig, f"gram_{variant}")
        fig = plot.feature_bars(models[variant], titles=titles)
        fig.suptitle(f"{name}: ‖W_i‖ per feature, coloured by superposition", fontsize=10)
        r.save_figure(fig, f"feature_bars_{variant}")
    fig = plot.loss_curves(results, labels=titles, smooth=10, title="loss per instance")
    r.save_figure(fig, "loss_curves")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
