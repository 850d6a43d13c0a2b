"""Correlated and anticorrelated features: orthogonal when they fire together, antipodal when
they never do.

Elhage et al., "Toy Models of Superposition" (2022), section "Correlated and Anticorrelated
Features"; the set-up follows ARENA 3.0's superposition exercises. A ReLU-output toy model
puts 4 equally important features into 2 hidden dimensions. The features come in 2 sets of 2:
  - correlated: the two features of a set are on together or off together;
  - anticorrelated: at most one feature of a set is on at a time.
Each kind is trained at several feature densities p, with several independently initialised
replicas (instances) per density.

What the paper found: superposition costs interference only when features are on at the
same time, so
  - anticorrelated features prefer to sit antipodal to each other (within-set cos ≈ -1): they
    never co-occur, so sharing a line costs nothing;
  - correlated features prefer orthogonality (within-set cos ≈ 0: each set gets a "local
    orthogonal basis") and the two sets are placed antipodal to each other instead; when the
    correlated features are dense enough the model gives up telling them apart and stores each
    set as one direction (within-set cos ≈ +1, norms ≈ 1/√2: a PCA-like sum).
Gradient descent does not always find the preferred arrangement: some anticorrelated replicas
settle with the two sets antipodal to each other instead (a local minimum, more common when the
features are sparse, since the cost of the wrong arrangement grows like p²). The metrics record
per density the fraction of replicas in each arrangement and their losses.

Quick mode: 4 replicas per density, 3,000 steps at lr 3e-3. Full: 8 replicas, 10,000 steps at
lr 1e-3, batch 1024.

    python experiments/toy_correlated.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from typing import Any

from superpose import geometry, plot, runs, toy

log = logging.getLogger(__name__)

N_FEATURES, N_HIDDEN, SET_SIZE = 4, 2, 2
DENSITIES = [0.05, 0.1, 0.2, 0.3, 0.45]      # p per feature (anticorrelated needs p * 2 <= 1)
KINDS = ("correlated", "anticorrelated")
SPARSE = 0.1          # the correlated verdict is taken on densities <= this
SET_COLORS = ["#1f4e9c", "#6fa8dc", "#c0392b", "#f39c6b"]   # set {0, 1} blue, {2, 3} red


def configs(quick: bool, seed: int) -> dict[str, Any]:
    replicas = 4 if quick else 8
    probs = [p for p in DENSITIES for _ in range(replicas)]
    cfgs: dict[str, Any] = {
        kind: toy.ToyConfig(n_features=N_FEATURES, n_hidden=N_HIDDEN, n_instances=len(probs),
                            variant="relu_out", importance=1.0, feature_probability=probs,
                            correlation=kind, set_size=SET_SIZE, seed=seed)
        for kind in KINDS
    }
    cfgs["train"] = (toy.TrainConfig(steps=3_000, lr=3e-3, log_every=20, seed=seed) if quick
                     else toy.TrainConfig(steps=10_000, log_every=20, seed=seed))
    cfgs.update(replicas=replicas, densities=DENSITIES, seed=seed, quick=quick)
    return cfgs


def arrangement(within: list[float]) -> str:
    """Name what the sets look like from their within-set cosines."""
    if all(c < -0.9 for c in within):
        return "within-set antipodal"
    if all(abs(c) < 0.2 for c in within):
        return "within-set orthogonal"
    if all(c > 0.9 for c in within):
        return "sets merged"
    return "mixed"


def analyse(model: toy.ToyModel, result: toy.TrainResult) -> list[dict[str, Any]]:
    V = model.feature_directions()
    C = geometry.cosine_matrix(V)
    norms = geometry.norms(V)
    n_sets = N_FEATURES // SET_SIZE
    out = []
    for i in range(V.shape[0]):
        within = [float(C[i, 2 * s, 2 * s + 1]) for s in range(n_sets)]
        # Most negative cosine between a feature and the other set (sets antipodal: ≈ -1).
        cross = float(C[i, :SET_SIZE, SET_SIZE:].min())
        out.append({"within_set_cos": within, "min_cross_set_cos": cross,
                    "norms": norms[i].tolist(), "arrangement": arrangement(within),
                    "final_loss": float(result.final_loss[i])})
    return out


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("toy_correlated", out=out)
    r.save_config(cfg)
    R = cfg["replicas"]
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {"densities": DENSITIES, "replicas": R}
    models = {}
    for kind in KINDS:
        model = toy.ToyModel(cfg[kind], device="cpu")
        res = toy.train(model, cfg["train"], progress=progress)
        models[kind] = model
        inst = analyse(model, res)
        per_density = []
        for d, p in enumerate(DENSITIES):
            rows = inst[d * R:(d + 1) * R]
            cos = [c for row in rows for c in row["within_set_cos"]]
            losses: dict[str, list[float]] = {}
            for row in rows:
                losses.setdefault(row["arrangement"], []).append(row["final_loss"])
            per_density.append({
                "density": p,
                "mean_within_set_cos": statistics.fmean(cos),
                "median_within_set_cos": statistics.median(cos),
                "arrangements": dict(Counter(row["arrangement"] for row in rows)),
                "mean_loss_by_arrangement": {k: statistics.fmean(v) for k, v in losses.items()},
                "mean_min_cross_set_cos": statistics.fmean(row["min_cross_set_cos"]
                                                           for row in rows),
            })
        metrics[kind] = {"per_density": per_density, "instances": inst}
        r.save_model(model, f"model_{kind}")
        log.info("%s: mean within-set cos per density %s", kind,
                 [round(x["mean_within_set_cos"], 2) for x in per_density])
    seconds = time.perf_counter() - t0

    corr, anti = metrics["correlated"]["per_density"], metrics["anticorrelated"]["per_density"]
    corr_sparse_cos = statistics.fmean(x["mean_within_set_cos"] for x in corr
                                       if x["density"] <= SPARSE)
    corr_sparse_cross = statistics.fmean(x["mean_min_cross_set_cos"] for x in corr
                                         if x["density"] <= SPARSE)
    anti_all = [c for row in metrics["anticorrelated"]["instances"] for c in row["within_set_cos"]]
    anti_frac = [x["arrangements"].get("within-set antipodal", 0) / R for x in anti]
    anti_dense_cos = anti[-1]["mean_within_set_cos"]
    anti_dense_median = anti[-1]["median_within_set_cos"]
    # Where replicas disagree, is the antipodal arrangement the better (lower-loss) one?
    antipodal_wins = []
    for x in anti:
        by = x["mean_loss_by_arrangement"]
        others = [v for k, v in by.items() if k != "within-set antipodal"]
        if "within-set antipodal" in by and others:
            antipodal_wins.append(by["within-set antipodal"] < min(others))
    corr_ok = abs(corr_sparse_cos) < 0.1 and corr_sparse_cross < -0.9
    # The preference: most replicas at the densest setting are antipodal, and wherever the
    # replicas disagree the antipodal ones have the lower loss (the rest are local minima).
    anti_ok = anti_dense_median < -0.9 and all(antipodal_wins)
    metrics["verdict"] = {
        "correlated_sparse_mean_within_set_cos": corr_sparse_cos,
        "correlated_sparse_mean_min_cross_set_cos": corr_sparse_cross,
        "correlated_prefers_orthogonal": corr_ok,
        "anticorrelated_densest_mean_within_set_cos": anti_dense_cos,
        "anticorrelated_densest_median_within_set_cos": anti_dense_median,
        "anticorrelated_mean_within_set_cos_all": statistics.fmean(anti_all),
        "anticorrelated_fraction_antipodal_per_density": anti_frac,
        "anticorrelated_antipodal_has_lowest_loss": antipodal_wins,
        "anticorrelated_prefers_antipodal": anti_ok,
    }
    metrics["train_seconds"] = seconds
    metrics["summary"] = {
        f"correlated, p <= {SPARSE}: mean within-set cos (0 = orthogonal)":
            f"{corr_sparse_cos:+.3f}; sets antipodal to each other (min cross cos "
            f"{corr_sparse_cross:+.2f}) -> {'as the paper' if corr_ok else 'NOT as the paper'}",
        "correlated, within-set cos per density":
            ", ".join(f"p={x['density']:g}: {x['mean_within_set_cos']:+.2f}" for x in corr),
        f"anticorrelated, p = {DENSITIES[-1]:g}: median / mean within-set cos (-1 = antipodal)":
            f"{anti_dense_median:+.3f} / {anti_dense_cos:+.3f} -> "
            f"{'as the paper' if anti_ok else 'NOT as the paper'}",
        "anticorrelated: fraction of replicas antipodal per density":
            ", ".join(f"p={p:g}: {f:.2f}" for p, f in zip(DENSITIES, anti_frac)),
        "anticorrelated: antipodal replicas have the lowest loss (others: local minima)":
            f"{sum(antipodal_wins)}/{len(antipodal_wins)} densities where both occur",
        "training time": f"{seconds:.1f}s",
    }

    # Figure: one replica per density and kind; then every replica at one density.
    for kind in KINDS:
        first = [d * R for d in range(len(DENSITIES))]
        rows = metrics[kind]["instances"]
        titles = [f"p = {DENSITIES[d]:g}\ncos within {_fmt(rows[i]['within_set_cos'])}"
                  for d, i in enumerate(first)]
        fig = plot.feature_directions(models[kind], instances=first, titles=titles,
                                      panel_size=2.2, colors=SET_COLORS)
        fig.suptitle(f"{kind} features (sets {{0, 1}} and {{2, 3}}), first replica per density",
                     fontsize=10)
        r.save_figure(fig, f"feature_directions_{kind}")
        fig = plot.feature_directions(models[kind], max_cols=R,
                                      titles=[f"{row['arrangement']}\n"
                                              f"{_fmt(row['within_set_cos'])}" for row in rows],
                                      panel_size=1.9, colors=SET_COLORS)
        for d, p in enumerate(DENSITIES):
            fig.axes[d * R].set_ylabel(f"p = {p:g}", fontsize=9)
        fig.suptitle(f"{kind} features: every replica (rows: density)", fontsize=10)
        r.save_figure(fig, f"feature_directions_{kind}_all")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


def _fmt(cos: list[float]) -> str:
    return " / ".join(f"{c:+.2f}" for c in cos)


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
