"""Demonstrating superposition: 5 features squeezed into 2 hidden dimensions.

Elhage et al., "Toy Models of Superposition" (2022), section "Demonstrating Superposition".
A ReLU-output toy model x' = ReLU(WᵀW x + b) with W ∈ R^{2×5} reconstructs 5 features of
importance 0.9**i. Ten instances see the same features at decreasing density
p = 20**-linspace(0, 1, 10) (1 = every feature always on, 0.05 = each on 5% of the time).

What the paper found, and what this script checks and records for every instance and seed:
  - dense features: the model behaves like PCA. The two most important features get orthogonal
    dimensions and the other three are dropped, so the loss is the variance of the dropped
    features, Σ_{i=2..4} 0.9**i · Var(U[0,1]) / 5 = (0.9²+0.9³+0.9⁴)/60 ≈ 0.0366;
  - as features get sparser, more features are represented than there are dimensions: first
    antipodal pairs (two features on one line, opposite directions), then 4 features as a
    square of two antipodal pairs, and at high sparsity all 5 as a regular pentagon.
Training is not guaranteed to find the best arrangement: some seeds settle in a local minimum
(typically the square, with the least important feature dropped, at about 1.7× the pentagon's
loss). The metrics count how many seeds reached the pentagon at the sparsest density.

Reference recipe (Anthropic's notebook): AdamW lr 1e-3, batch 1024, 10,000 steps. Quick mode
trains 2 seeds for 4,000 steps at lr 3e-3 (in seconds); full mode 5 seeds with the recipe.

    python experiments/toy_intro.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from typing import Any

import torch

from superpose import plot, runs, toy
from superpose.toy.analysis import classify_instances

log = logging.getLogger(__name__)

N_FEATURES, N_HIDDEN, N_DENSITIES = 5, 2, 10
IMPORTANCE = 0.9
THRESHOLD = 0.5                                  # ||W_i|| above this: feature represented
DENSE_LOSS = sum(IMPORTANCE ** i for i in range(2, N_FEATURES)) / (12 * N_FEATURES)


def densities() -> list[float]:
    return (20.0 ** -torch.linspace(0, 1, N_DENSITIES, dtype=torch.float64)).tolist()


def configs(quick: bool, seed: int) -> dict[str, Any]:
    toy_cfg = toy.ToyConfig(n_features=N_FEATURES, n_hidden=N_HIDDEN, n_instances=N_DENSITIES,
                            variant="relu_out", importance=IMPORTANCE,
                            feature_probability=densities())
    train_cfg = (toy.TrainConfig(steps=4_000, lr=3e-3, log_every=20) if quick
                 else toy.TrainConfig(steps=10_000, log_every=20))
    n_seeds = 2 if quick else 5
    return {"toy": toy_cfg, "train": train_cfg, "seeds": [seed + k for k in range(n_seeds)],
            "represented_threshold": THRESHOLD, "quick": quick}


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("toy_intro", out=out)
    r.save_config(cfg)
    p = densities()
    t0 = time.perf_counter()
    per_seed: dict[str, Any] = {}
    models, results, shapes_by_seed = [], [], []
    for s in cfg["seeds"]:
        model = toy.ToyModel(dataclasses.replace(cfg["toy"], seed=s), device="cpu")
        res = toy.train(model, cfg["train"], seed=s, progress=progress)
        shapes = classify_instances(model.feature_directions(), threshold=THRESHOLD)
        models.append(model)
        results.append(res)
        shapes_by_seed.append(shapes)
        per_seed[str(s)] = {
            "shape": [sh.label for sh in shapes],
            "n_represented": [sh.n_represented for sh in shapes],
            "final_loss": res.final_loss.tolist(),
            "details": [sh.to_dict() for sh in shapes],
        }
        r.save_model(model, f"model_seed{s}")
        log.info("seed %d: %s", s, ", ".join(sh.label for sh in shapes))
    seconds = time.perf_counter() - t0

    dense_losses = [float(res.final_loss[0]) for res in results]
    sparsest = [sh[-1].label for sh in shapes_by_seed]
    n_pent_sparsest = sum(lab == "pentagon" for lab in sparsest)
    pent_per_density = [sum(sh[i].label == "pentagon" for sh in shapes_by_seed)
                        for i in range(N_DENSITIES)]
    loss_by_shape_sparsest: dict[str, list[float]] = {}
    for sh, res in zip(shapes_by_seed, results):
        loss_by_shape_sparsest.setdefault(sh[-1].label, []).append(float(res.final_loss[-1]))
    metrics: dict[str, Any] = {
        "densities": p,
        "seeds": per_seed,
        "dense": {
            "density": p[0],
            "closed_form_loss": DENSE_LOSS,
            "final_loss_per_seed": dense_losses,
            "shape_per_seed": [sh[0].label for sh in shapes_by_seed],
            "represented_per_seed": [sh[0].represented for sh in shapes_by_seed],
        },
        "sparsest": {
            "density": p[-1],
            "pentagon_count": n_pent_sparsest,
            "n_seeds": len(cfg["seeds"]),
            "shape_per_seed": sparsest,
            "mean_loss_by_shape": {k: sum(v) / len(v) for k, v in loss_by_shape_sparsest.items()},
        },
        "pentagon_count_per_density": pent_per_density,
        "shape_counts_per_density": [dict(Counter(sh[i].label for sh in shapes_by_seed))
                                     for i in range(N_DENSITIES)],
        "train_seconds": seconds,
    }
    metrics["summary"] = {
        "dense loss (mean over seeds) vs closed form (0.9²+0.9³+0.9⁴)/60":
            f"{sum(dense_losses) / len(dense_losses):.4f} vs {DENSE_LOSS:.4f}",
        "dense instance shape": ", ".join(sorted(set(metrics["dense"]["shape_per_seed"]))),
        f"pentagon at sparsest density p={p[-1]:.3g}":
            f"{n_pent_sparsest}/{len(cfg['seeds'])} seeds (others: "
            f"{', '.join(lab for lab in sparsest if lab != 'pentagon') or 'none'})",
        "seeds with a pentagon at some density":
            f"{sum(any(x.label == 'pentagon' for x in sh) for sh in shapes_by_seed)}"
            f"/{len(cfg['seeds'])}",
        "training time": f"{seconds:.1f}s for {len(cfg['seeds'])} seeds",
    }

    # Figures: every seed's feature directions (a row per seed), seed 0's bars and losses.
    vectors = torch.cat([m.feature_directions() for m in models])
    titles = [f"p = {p[i]:.2g}\n{sh[i].label}" if row == 0 else sh[i].label
              for row, sh in enumerate(shapes_by_seed) for i in range(N_DENSITIES)]
    fig = plot.feature_directions(vectors, titles=titles, max_cols=N_DENSITIES, panel_size=1.7)
    for row, s in enumerate(cfg["seeds"]):
        fig.axes[row * N_DENSITIES].set_ylabel(f"seed {s}", fontsize=9)
    fig.suptitle("5 features in 2 dimensions: feature directions (columns of W) as features "
                 "get sparser", fontsize=10)
    r.save_figure(fig, "feature_directions")
    fig = plot.feature_bars(models[0], titles=[f"p = {x:.2g}" for x in p])
    fig.suptitle(f"seed {cfg['seeds'][0]}: ‖W_i‖ per feature, coloured by superposition",
                 fontsize=10)
    r.save_figure(fig, "feature_bars")
    fig = plot.loss_curves(results[0], labels=[f"p = {x:.2g}" for x in p], smooth=10,
                           title=f"seed {cfg['seeds'][0]}: loss per instance")
    fig.axes[0].axhline(DENSE_LOSS, color="k", lw=0.6, ls="--")
    r.save_figure(fig, "loss_curves")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
