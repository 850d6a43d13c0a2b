"""Phase diagram of the smallest toy model with superposition: 2 features → 1 hidden dimension.

Elhage et al. 2022, section "Phase change". Feature 0 has importance 1; feature 1, the "extra"
feature, has relative importance r (0.1 … 10, log grid). Both have the same density p
(probability of being non-zero; 1 … 0.01, log grid). With one hidden dimension the model can
(a) ignore the extra feature (W = [±1, 0]), (b) give the extra feature the dimension and drop
feature 0 (W = [0, ±1]), or (c) store both in superposition as an antipodal pair
(W = [a, −c], a, c ≈ 1), letting the output ReLU and a negative bias filter the interference.

What the paper found: for dense features (p = 1) the model never uses superposition and simply
keeps the more important feature, so the extra feature is represented iff r > 1. As features
get sparser, a superposition phase opens up around r ≈ 1 and widens until it covers most of the
diagram; the transitions between phases are sharp (a phase change), and the empirical diagram
matches a theoretical one obtained by comparing the losses of the candidate solutions.

Here every cell of the grid is one instance of a single `ToyModel` (per-instance importance and
feature_probability), times `n_seeds` random seeds as further instances; each cell keeps the
seed with the lowest exact expected loss, because a model this tiny can get stuck in a worse
solution (the paper notes the same). The usual trap is W ≈ [1.1, 0.3]: both weights of one
sign, so the pair can never become antipodal. Half the seeds therefore start with opposite
signs (a random init otherwise gives every seed of a cell an equal-sign start with
probability 2^-n_seeds, and such cells come out wrong).

The theoretical diagram is computed from the exact expected loss (the data distribution
integrated by quadrature, not sampled): the closed-form solutions (a) and (b) with their best
biases, against the antipodal solution (c) with its weights and biases optimized; each cell
gets the class of whichever has the lowest loss.

Result (full mode, 20×20 cells × 4 seeds): the learned diagram matches the theoretical one in
every cell, and each cell's learned solution is within a few percent of the theoretical loss.
Quick mode (8×8 × 2 seeds, 2,000 steps) takes ~20 s; full mode a few minutes.

    python experiments/toy_phase_diagram.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from superpose import runs, toy
from superpose.plot.phase import phase_diagram

log = logging.getLogger(__name__)

CLASS_NAMES = ("extra feature not represented", "extra feature gets the dimension",
               "superposition (antipodal pair)")
NOT_REPRESENTED, DEDICATED, SUPERPOSITION = 0, 1, 2
THRESHOLD = 0.5        # |W_i| above this counts as "represented" (trained values are ≈0 or ≈1)

SETTINGS = {
    # grid: cells per axis; quadrature: points per axis for the exact expected loss.
    "quick": dict(grid=8, n_seeds=2, steps=2_000, lr=1e-2, batch_size=1024, theory_steps=200,
                  quadrature=40),
    "full": dict(grid=20, n_seeds=4, steps=6_000, lr=1e-2, batch_size=512, theory_steps=300,
                 quadrature=48),
}


def classify(W: Float[Tensor, "*cells 2"], threshold: float = THRESHOLD) -> Int[Tensor, "*cells"]:
    """The phase of each 2-feature/1-dimension solution W = [w_0, w_extra]: superposition
    when both weights exceed `threshold` with opposite signs, else "dedicated" when the extra
    feature's does (both large with one sign, never an optimum, also lands here), else "not
    represented"."""
    w0, w1 = W[..., 0], W[..., 1]
    both = (w0.abs() > threshold) & (w1.abs() > threshold) & (w0 * w1 < 0)
    labels = torch.where(w1.abs() > threshold, DEDICATED, NOT_REPRESENTED)
    return torch.where(both, SUPERPOSITION, labels)


def expected_loss(w: Float[Tensor, "cells 2"], b: Float[Tensor, "cells 2"],
                  density: Float[Tensor, " cells"], rel_importance: Float[Tensor, " cells"], *,
                  n_points: int = 64) -> Float[Tensor, " cells"]:
    """The training loss E[mean_f I_f (ReLU(w_f (w·x) + b_f) − x_f)²] exactly in expectation.

    Each feature is on with probability p and then uniform on [0, 1]; the four on/off cases
    are summed with their probabilities, and the uniform values are integrated with the
    midpoint rule on `n_points` (per axis) nodes.
    """
    u = (torch.arange(n_points, dtype=w.dtype, device=w.device) + 0.5) / n_points
    p, q = density, 1 - density
    imp = torch.stack([torch.ones_like(rel_importance), rel_importance], -1)     # [cells, 2]

    def err(x0: Tensor, x1: Tensor) -> Tensor:
        h = w[:, 0, None] * x0 + w[:, 1, None] * x1                            # [cells, pts]
        e0 = (torch.relu(w[:, 0, None] * h + b[:, 0, None]) - x0) ** 2
        e1 = (torch.relu(w[:, 1, None] * h + b[:, 1, None]) - x1) ** 2
        return (imp[:, 0, None] * e0 + imp[:, 1, None] * e1).mean(-1)

    zero = torch.zeros_like(u)
    g0, g1 = torch.meshgrid(u, u, indexing="ij")
    none = (imp * torch.relu(b) ** 2).sum(-1)
    only = err(u, zero) + err(zero, u)
    both = err(g0.reshape(-1), g1.reshape(-1))
    return (q * q * none + p * q * only + p * p * both) / 2       # mean over the 2 features


def theoretical_phase(density: Float[Tensor, " n_x"], rel_importance: Float[Tensor, " n_y"], *,
                      steps: int = 400, n_points: int = 64) -> dict[str, Tensor]:
    """The lowest-loss candidate solution in every cell of the (importance × density) grid.

    Returns `labels` [n_y, n_x] and the expected loss of each candidate (`loss_not_represented`,
    `loss_dedicated`, `loss_superposition`) plus the optimized antipodal weights `W_superposition`.
    """
    n_x, n_y = len(density), len(rel_importance)
    p = density.double()[None, :].expand(n_y, n_x).reshape(-1)
    r = rel_importance.double()[:, None].expand(n_y, n_x).reshape(-1)
    ones = torch.ones_like(p)
    # (a)/(b): one feature reconstructed exactly, the other read out as its mean p/2 (its
    # best constant, through the bias); evaluated with the same quadrature as (c).
    w_a, b_a = torch.stack([ones, 0 * ones], -1), torch.stack([0 * ones, p / 2], -1)
    w_b, b_b = torch.stack([0 * ones, ones], -1), torch.stack([p / 2, 0 * ones], -1)
    loss_a = expected_loss(w_a, b_a, p, r, n_points=n_points)
    loss_b = expected_loss(w_b, b_b, p, r, n_points=n_points)
    # (c): W = [e^α, −e^γ] and free biases, optimized from the symmetric antipodal start.
    log_w = torch.zeros(len(p), 2, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(p), 2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_w, bias], lr=0.03)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def antipodal() -> Tensor:
        return torch.stack([log_w[:, 0].exp(), -log_w[:, 1].exp()], -1)

    for _ in range(steps):
        # Cells are independent, so the summed loss optimizes each one (Adam scales each
        # parameter on its own); dividing by p² keeps sparse cells' gradients (losses ~p²)
        # far above Adam's epsilon.
        loss_c = expected_loss(antipodal(), bias, p, r, n_points=n_points)
        opt.zero_grad()
        (loss_c / p**2).sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        w_c = antipodal()
        loss_c = expected_loss(w_c, bias, p, r, n_points=n_points)
    losses = torch.stack([loss_a, loss_b, loss_c], -1)
    best = losses.argmin(-1)
    # Label the winning solution by its weights, with the same rule as the trained models
    # (an "antipodal" optimum that shrank one weight to ~0 is not superposition).
    W = torch.stack([w_a, w_b, w_c], 1)[torch.arange(len(p)), best]
    shape = (n_y, n_x)
    return {"labels": classify(W).view(shape), "loss_not_represented": loss_a.view(shape),
            "loss_dedicated": loss_b.view(shape), "loss_superposition": loss_c.view(shape),
            "W_superposition": w_c.view(*shape, 2)}


def train_grid(density: Float[Tensor, " n_x"], rel_importance: Float[Tensor, " n_y"], *,
               n_seeds: int, seed: int = 0, progress: bool = True, n_points: int = 64,
               **train_kw: Any) -> tuple[toy.ToyModel, toy.TrainResult, Tensor, Tensor]:
    """Train every (importance, density) cell × `n_seeds` as instances of one model.

    Instance `s * n_y * n_x + i * n_x + j` is seed s of cell (importance i, density j).
    Returns the model, its training result, every instance's exact expected loss and the
    per-cell best instance [n_y, n_x]. Seeds are compared by the exact expected loss of their
    final weights: the training loss of a sparse cell is too noisy to rank them (at p = 0.01
    both features are on together in ~0.01% of samples).
    """
    n_x, n_y = len(density), len(rel_importance)
    imp = [[1.0, float(r)] for r in rel_importance for _ in range(n_x)] * n_seeds
    prob = [[float(p), float(p)] for _ in range(n_y) for p in density] * n_seeds
    cfg = toy.ToyConfig(n_features=2, n_hidden=1, n_instances=len(imp), importance=imp,
                        feature_probability=prob, seed=seed)
    model = toy.ToyModel(cfg, device="cpu")
    with torch.no_grad():
        # Seed s starts with the two weights of opposite sign when s is even, of equal sign
        # when odd. From an equal-sign start the model often settles in a local minimum
        # (W ≈ [1.1, 0.3]) and never reaches the antipodal pair; left to chance, all seeds of
        # a cell start that way with probability 2^-n_seeds.
        W = model.W.view(n_seeds, n_y * n_x, 2)
        want = torch.tensor([-1.0 if k % 2 == 0 else 1.0 for k in range(n_seeds)])[:, None]
        W[..., 1] = W[..., 1].abs() * W[..., 0].sign() * want
    result = toy.train(model, seed=seed, progress=progress, **train_kw)
    with torch.no_grad():
        exact = expected_loss(model.W[:, 0, :].double().cpu(), model.b_final.double().cpu(),
                              cfg.probability_tensor()[:, 0].double(),
                              cfg.importance_tensor()[:, 1].double(), n_points=n_points)
    best_seed = exact.view(n_seeds, n_y, n_x).argmin(0)
    cell = torch.arange(n_y * n_x).view(n_y, n_x)
    return model, result, exact, best_seed * n_y * n_x + cell


def run(out: str = "results", quick: bool = False, seed: int = 0, progress: bool = True
        ) -> dict[str, Any]:
    """Train the grid, classify each cell, compare with theory, save figures and metrics."""
    t_start = time.perf_counter()
    s = SETTINGS["quick" if quick else "full"]
    run_ = runs.Run.create("toy_phase_diagram", out=out)
    n = s["grid"]
    density = torch.logspace(0, -2, n)            # x: 1 (dense, left) … 0.01 (sparse, right)
    rel_importance = torch.logspace(-1, 1, n)     # y: 0.1 (bottom) … 10 (top)
    config = {"quick": quick, "seed": seed, "n_features": 2, "n_hidden": 1,
              "density": density, "rel_importance": rel_importance, **s,
              "represented_threshold": THRESHOLD}
    run_.save_config(config)

    model, result, exact, best = train_grid(
        density, rel_importance, n_seeds=s["n_seeds"], seed=seed, progress=progress,
        n_points=s["quadrature"], steps=s["steps"], lr=s["lr"], batch_size=s["batch_size"])
    t_train = time.perf_counter() - t_start
    W = model.W.detach()[:, 0, :]                             # [instances, 2]
    W_best = W[best]                                          # [n_y, n_x, 2]
    loss_best = exact[best]
    labels = classify(W_best)
    seeds_loss = exact.view(s["n_seeds"], n, n)

    t0 = time.perf_counter()
    theory = theoretical_phase(density, rel_importance, steps=s["theory_steps"],
                               n_points=s["quadrature"])
    t_theory = time.perf_counter() - t0
    theory_labels = theory["labels"]
    theory_loss = torch.stack([theory["loss_not_represented"], theory["loss_dedicated"],
                               theory["loss_superposition"]], -1).min(-1).values
    loss_ratio = loss_best / theory_loss

    fractions = {name: float((labels == k).float().mean()) for k, name in enumerate(CLASS_NAMES)}
    theory_fractions = {name: float((theory_labels == k).float().mean())
                        for k, name in enumerate(CLASS_NAMES)}
    agreement = float((labels == theory_labels).float().mean())
    # Sanity checks the paper's picture makes: dense features never superpose, and the extra
    # feature wins the single dimension iff it is the more important one.
    dense = labels[:, 0]
    expect_dense = torch.where(rel_importance > 1, DEDICATED, NOT_REPRESENTED)
    off_one = (rel_importance.log().abs() > 1e-6)
    dense_ok = float((dense == expect_dense)[off_one].float().mean())
    sparse = density <= 0.1
    sup_sparse = float((labels[:, sparse] == SUPERPOSITION).float().mean())
    near_one = int((rel_importance.log().abs()).argmin())
    sup_at_r1_sparsest = bool(labels[near_one, -1] == SUPERPOSITION)

    axes = dict(class_names=list(CLASS_NAMES), xlabel="feature density  1 − S",
                ylabel="relative importance of the extra feature")
    fig = phase_diagram(labels, density, rel_importance, reference=theory_labels,
                        reference_name="theory", **axes,
                        title=f"2 features → 1 dimension: learned (best of {s['n_seeds']} seeds)")
    run_.save_figure(fig, "phase_diagram")
    fig = phase_diagram(theory_labels, density, rel_importance, **axes,
                        title="2 features → 1 dimension: theory (lowest expected loss)")
    run_.save_figure(fig, "phase_diagram_theory")
    run_.save_model(model.select(best.reshape(-1).tolist()), "model")

    seconds = time.perf_counter() - t_start
    metrics: dict[str, Any] = {
        "labels": labels, "theory_labels": theory_labels, "class_names": list(CLASS_NAMES),
        "class_fractions": fractions, "theory_class_fractions": theory_fractions,
        "agreement_with_theory": agreement,
        "W_best": W_best, "b_best": model.b_final.detach()[best],
        # Exact expected losses (quadrature), of the best seed and of the theoretical optimum.
        "expected_loss_best": loss_best, "theory_loss": theory_loss,
        "loss_ratio_to_theory": loss_ratio,
        "loss_ratio_to_theory_median": loss_ratio.median(),
        "loss_ratio_to_theory_max": loss_ratio.max(),
        "cells_within_5pct_of_theory_loss": float((loss_ratio < 1.05).float().mean()),
        "seed_loss_spread_median": (seeds_loss.max(0).values
                                    / seeds_loss.min(0).values.clamp_min(1e-12)).median(),
        "density_1_labels": dense, "density_1_expected": expect_dense,
        "density_1_accuracy": dense_ok,
        "superposition_fraction_density_le_0.1": sup_sparse,
        "superposition_at_r1_sparsest": sup_at_r1_sparsest,
        "seconds": {"train": t_train, "theory": t_theory, "total": seconds},
        "steps_per_second": result.steps_per_second,
    }
    metrics["summary"] = {
        "cells": f"{n}x{n} x {s['n_seeds']} seeds, {s['steps']} steps",
        "fraction not represented / dedicated / superposition":
            " / ".join(f"{v:.2f}" for v in fractions.values()),
        "theory fractions": " / ".join(f"{v:.2f}" for v in theory_fractions.values()),
        "agreement with theory": f"{agreement:.2f}",
        "learned / theoretical loss (median, max)":
            f"{float(loss_ratio.median()):.3f}, {float(loss_ratio.max()):.3f}",
        "density-1 row as predicted (dedicated iff r>1)": f"{dense_ok:.2f}",
        "superposition share at density <= 0.1": f"{sup_sparse:.2f}",
        "seconds": round(seconds, 1),
    }
    run_.save_metrics(metrics)
    log.info("phase diagram: %s", metrics["summary"])
    metrics["run_dir"] = str(run_.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
