"""Every SAE architecture on ground truth: many sparse features in superposition.

Data (`superpose.sae.GroundTruthFeatures`): x = Σ_i m_i f_i d_i + ε with n random unit
directions d_i in R^d (full: 1024 features in 128 dimensions), power-law frequencies
p_i ∝ (i+1)^-0.5 with mean 8/n, magnitudes U(0.5, 1.5), noise 0.02, and 10% of the features
in correlated pairs (the second of a pair fires exactly when the first does). Every
architecture is trained at several sparsity settings (k for TopK/BatchTopK, the penalty for
ReLU/JumpReLU/Gated) with the library defaults otherwise (lr = default_lr(d_sae,
architecture), no search),
then evaluated on held-out batches: L0, FVE (about the mean), MMCS both ways, the fraction of
true features recovered at cos ≥ 0.9 and the Hungarian MCC.

Figures: the L0-vs-FVE frontier and the L0-vs-recovery frontier across architectures, the
sorted best cosines of the best run of each architecture, and their latent densities.

    python experiments/sae_ground_truth.py [--quick] [--out DIR] [--seed N]

Quick mode: 128 features in 32-d, d_sae 256, 150 steps of 256 (seconds).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from superpose import plot, runs, sae

log = logging.getLogger(__name__)

# JumpReLU's paper values (θ₀ = ε = 0.001) suit activations of norm ~sqrt(d_model); here the
# inputs have norm ~3 and Adam moves log θ by ~lr per step, so θ₀ = 0.001 never reaches the
# scale of the pre-activations in a short run (L0 stayed at ~100 of 128 in quick mode).
JUMPRELU = {"jumprelu_threshold_init": 0.1, "jumprelu_bandwidth": 0.05}
# (architecture, SAEConfig override) per sparsity setting
FULL_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    *[("topk", {"k": k}) for k in (8, 16, 32)],
    *[("batchtopk", {"k": k}) for k in (8, 16, 32)],
    *[("relu", {"sparsity_coefficient": c}) for c in (0.03, 0.1, 0.3)],
    *[("jumprelu", {"sparsity_coefficient": c, **JUMPRELU}) for c in (0.01, 0.03, 0.1)],
    *[("gated", {"sparsity_coefficient": c}) for c in (0.3, 1.0, 3.0)],
]
QUICK_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    *[("topk", {"k": k}) for k in (4, 8)],
    *[("batchtopk", {"k": k}) for k in (4, 8)],
    *[("relu", {"sparsity_coefficient": c}) for c in (0.1, 0.3)],
    *[("jumprelu", {"sparsity_coefficient": c, **JUMPRELU}) for c in (0.03, 0.1)],
    *[("gated", {"sparsity_coefficient": c}) for c in (1.0, 3.0)],
]


def configs(quick: bool, seed: int) -> dict[str, Any]:
    if quick:
        data = {"n_features": 128, "d": 32, "p": 4 / 128}
        train = {"steps": 150, "batch": 256, "d_sae": 256}
    else:
        data = {"n_features": 1024, "d": 128, "p": 8 / 1024}
        train = {"steps": 500, "batch": 4096, "d_sae": 1024}
    data.update(magnitude=(0.5, 1.5), noise=0.02, power_law=0.5, correlated_fraction=0.1,
                seed=seed)
    return {"data": data, "train": train, "eval_batches": 2 if quick else 4,
            "settings": QUICK_SETTINGS if quick else FULL_SETTINGS, "quick": quick}


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("sae_ground_truth", out=out)
    r.save_config(cfg)
    gt = sae.GroundTruthFeatures(**cfg["data"])
    tr = cfg["train"]
    t0 = time.perf_counter()
    points: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    evals: dict[str, Any] = {}
    for arch, override in cfg["settings"]:
        name = f"{arch} " + " ".join(f"{k}={v}" for k, v in override.items()
                                     if not k.startswith("jumprelu_"))
        s = sae.create(sae.SAEConfig(d_in=gt.d, d_sae=tr["d_sae"], architecture=arch,
                                     seed=seed, **override), device="cpu")
        t = time.perf_counter()
        res = sae.train(s, gt.batches(tr["batch"], seed=seed + 1), steps=tr["steps"],
                        progress=progress, seed=seed)
        seconds = time.perf_counter() - t
        ev = sae.evaluate(s, gt.batches(tr["batch"], seed=seed + 10_000),
                          n_batches=cfg["eval_batches"], ground_truth=gt.directions)
        point = {"name": name, "architecture": arch, **override, "l0": ev.l0, "fve": ev.fve,
                 "mse": ev.mse, "mmcs_true": ev.mmcs_true, "mmcs_latents": ev.mmcs_latents,
                 "recovered": ev.recovered, "mcc": ev.mcc, "frac_dead": ev.frac_dead,
                 "train_seconds": seconds, "samples": res.samples}
        points.append(point)
        models[name], evals[name] = s, ev
        log.info("%-28s L0 %6.2f  FVE %.3f  recovered %.3f  MCC %.3f", name, ev.l0, ev.fve,
                 ev.recovered, ev.mcc)
    seconds = time.perf_counter() - t0

    best: dict[str, dict[str, Any]] = {}
    for p in points:
        if p["architecture"] not in best or p["recovered"] > best[p["architecture"]]["recovered"]:
            best[p["architecture"]] = p
    metrics: dict[str, Any] = {
        "runs": points,
        "best_per_architecture": best,
        "data": {"n_features": gt.n_features, "d": gt.d, "pairs": gt.n_pairs,
                 "mean_p": float(gt.probabilities.mean())},
        "train_seconds": seconds,
    }
    metrics["summary"] = {
        f"{a} best ({b['name'].split(' ', 1)[1]})":
            f"L0 {b['l0']:.1f}, FVE {b['fve']:.3f}, recovered {b['recovered']:.1%}, "
            f"MCC {b['mcc']:.3f}" for a, b in best.items()}
    metrics["summary"]["training time"] = f"{seconds:.1f}s for {len(points)} SAEs"

    label = f"{gt.n_features} features in {gt.d}-d, d_sae {tr['d_sae']}"
    r.save_figure(plot.frontier(points, y="fve", title=f"L0 vs FVE ({label})"),
                  "frontier_fve")
    r.save_figure(plot.frontier(points, y="recovered", title=f"L0 vs recovery ({label})"),
                  "frontier_recovery")
    r.save_figure(plot.max_cos_histogram({a: models[b["name"]] for a, b in best.items()},
                                         gt.directions,
                                         title="best run per architecture"), "max_cos")
    r.save_figure(plot.latent_density({a: evals[b["name"]] for a, b in best.items()},
                                      title="latent firing frequency (best runs)"),
                  "latent_density")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
