"""An SAE on a toy model's hidden layer recovers the toy model's own feature directions.

Elhage et al. (2022) show a ReLU-output toy model x' = ReLU(WᵀW x + b) storing more sparse
features than it has dimensions, each feature i along the column W_i. Those columns are the
ground truth an SAE on the hidden layer h = W x should find: h is a sparse sum of them.

  1. the pentagon: 5 features in 2 dimensions at density p = 0.05;
  2. a bigger case: 40 features in 10 dimensions at density p = 0.02.

For each, the toy model is trained (`superpose.toy.train`), its `hook_hidden` activations are
captured with `ActivationStore` (the toy data pushed through the model), and a TopK and a ReLU
SAE are trained on them. Recovery is measured against the *represented* columns of W
(‖W_i‖ > 0.5, the features the model actually stores): the fraction with a decoder row at
cosine ≥ 0.9, MMCS and the Hungarian MCC. Figures: decoder rows drawn over the pentagon's
arrows, the sorted best cosines for 40 → 10, and the SAE training curves.

    python experiments/sae_toy.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from superpose import plot, runs, sae, toy
from superpose.activations import ActivationStore

log = logging.getLogger(__name__)

THRESHOLD = 0.5          # ‖W_i‖ above this: the toy model represents feature i

CASES = {
    # name: toy shape, density, SAE width, TopK k, ReLU L1 coefficient
    "pentagon": {"n_features": 5, "n_hidden": 2, "p": 0.05, "d_sae": 8, "k": 1, "l1": 0.1},
    "40_in_10": {"n_features": 40, "n_hidden": 10, "p": 0.02, "d_sae": 48, "k": 2,
                 "l1": 0.3},
}


def configs(quick: bool, seed: int) -> dict[str, Any]:
    return {"cases": CASES,
            "toy_train": {"steps": 2_000 if quick else 10_000, "lr": 5e-3 if quick else 1e-3,
                          "batch_size": 1024},
            "sae_train": {"steps": 250 if quick else 2_000, "batch_size": 1024},
            "represented_threshold": THRESHOLD, "seed": seed, "quick": quick}


def hidden_store(model: toy.ToyModel, batch: int, seed: int) -> ActivationStore:
    """`hook_hidden` rows of fresh toy data, shuffled: what the SAE trains on."""
    gen = torch.Generator().manual_seed(seed)
    return ActivationStore(model, "hook_hidden",
                           lambda: toy.generate_batch(model.cfg, 8 * batch, generator=gen),
                           batch_size=batch, buffer_size=8 * batch, seed=seed, instance=0,
                           device="cpu")


def run_case(name: str, c: dict[str, Any], cfg: dict[str, Any], seed: int, progress: bool
             ) -> dict[str, Any]:
    toy_cfg = toy.ToyConfig(n_features=c["n_features"], n_hidden=c["n_hidden"], n_instances=1,
                            variant="relu_out", importance=1.0, feature_probability=c["p"],
                            seed=seed)
    model = toy.ToyModel(toy_cfg, device="cpu")
    toy_res = toy.train(model, toy.TrainConfig(seed=seed, **cfg["toy_train"]),
                        progress=progress)
    W = model.feature_directions()[0]                        # [n_features, n_hidden]
    represented = W.norm(dim=-1) > THRESHOLD
    true = W[represented]
    out: dict[str, Any] = {"toy_final_loss": float(toy_res.final_loss[0]),
                           "n_represented": int(represented.sum()),
                           "n_features": c["n_features"], "n_hidden": c["n_hidden"],
                           "true_directions": true, "saes": {}, "histories": {}}
    st = cfg["sae_train"]
    own = {"topk": {"k": c["k"]}, "relu": {"sparsity_coefficient": c["l1"]}}
    for arch in ("topk", "relu"):
        s = sae.create(sae.SAEConfig(d_in=c["n_hidden"], d_sae=c["d_sae"], architecture=arch,
                                     seed=seed, hook_name="hook_hidden", **own[arch]),
                       device="cpu")
        store = hidden_store(model, st["batch_size"], seed + 1)
        res = sae.train(s, store, steps=st["steps"], progress=progress, seed=seed)
        ev = sae.evaluate(s, hidden_store(model, st["batch_size"], seed + 2), n_batches=4,
                          ground_truth=true)
        out["saes"][arch] = {"l0": ev.l0, "fve": ev.fve, "recovered": ev.recovered,
                             "mmcs_true": ev.mmcs_true, "mcc": ev.mcc,
                             "frac_dead": ev.frac_dead, "sae": s}
        out["histories"][arch] = res
        log.info("%s %s: recovered %.2f of %d represented, MCC %.3f, L0 %.2f, FVE %.3f",
                 name, arch, ev.recovered, int(represented.sum()), ev.mcc, ev.l0, ev.fve)
    return out


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("sae_toy", out=out)
    r.save_config(cfg)
    t0 = time.perf_counter()
    results = {name: run_case(name, c, cfg, seed, progress) for name, c in CASES.items()}
    seconds = time.perf_counter() - t0

    metrics: dict[str, Any] = {
        name: {"toy_final_loss": res["toy_final_loss"], "n_represented": res["n_represented"],
               "n_features": res["n_features"], "n_hidden": res["n_hidden"],
               **{arch: {k: val for k, val in m.items() if k != "sae"}
                  for arch, m in res["saes"].items()}}
        for name, res in results.items()}
    metrics["train_seconds"] = seconds
    metrics["summary"] = {
        f"{name} ({res['n_represented']}/{res['n_features']} features represented in "
        f"{res['n_hidden']}-d)": ", ".join(
            f"{arch} recovers {m['recovered']:.0%} (MCC {m['mcc']:.2f}, L0 {m['l0']:.2f})"
            for arch, m in res["saes"].items())
        for name, res in results.items()}
    metrics["summary"]["time"] = f"{seconds:.1f}s"

    pent = results["pentagon"]
    for arch, m in pent["saes"].items():
        fig = plot.decoder_vs_true(m["sae"], pent["true_directions"],
                                   title=f"pentagon: {arch} SAE decoder rows over W columns\n"
                                         f"recovered {m['recovered']:.0%}, MCC {m['mcc']:.2f}")
        r.save_figure(fig, f"pentagon_{arch}")
    big = results["40_in_10"]
    for arch, m in big["saes"].items():
        fig = plot.decoder_vs_true(m["sae"], big["true_directions"],
                                   title=f"40 → 10: {arch} SAE, {big['n_represented']} "
                                         "represented features")
        r.save_figure(fig, f"40_in_10_{arch}")
    fig = plot.sae_training_curves({f"{n} {a}": h for n, res in results.items()
                                    for a, h in res["histories"].items()},
                                   title="SAE training on toy hidden activations")
    r.save_figure(fig, "training_curves")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
