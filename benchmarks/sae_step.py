"""Per-step time of the penalised SAEs' sparse training path against their dense one, at
controlled latent densities: where the sparse path pays off, and so where
`relu.SPARSE_MAX_DENSITY` / `jumprelu.SPARSE_MAX_DENSITY` belong.

One fixed batch of ground-truth activations (1024 features in 128-d, p = 8/1024, as
`sae_speed.py`); an SAE of each architecture whose b_enc is set so that a chosen fraction of
the [batch, d_sae] entries is kept (ReLU: positive; JumpReLU: within the kernel band of θ);
one full training step (forward, backward, Adam) timed with the path forced sparse (cutoff 1)
and forced dense (cutoff 0), alternating A B A B in short bursts. Prints the median ms of each
and the median of the paired ratios dense/sparse (> 1: the sparse path is faster).

    python benchmarks/sae_step.py                     # both architectures, 7 densities
    python benchmarks/sae_step.py --archs relu --densities 0.05 0.2 --rounds 5
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import bursts  # noqa: E402  (benchmarks/bursts.py: a script's folder is on the path)
import torch  # noqa: E402

from superpose import sae  # noqa: E402
from superpose.sae import jumprelu, relu  # noqa: E402

MODULES = {"relu": relu, "jumprelu": jumprelu}


def build(arch: str, x: torch.Tensor, density: float, d_sae: int) -> sae.SAE:
    cfg = sae.SAEConfig(architecture=arch, d_in=x.shape[1], d_sae=d_sae,
                        sparsity_coefficient=0.3)
    s = sae.create(cfg)
    with torch.no_grad():
        pre = (x - s.b_dec) @ s.W_enc
        if arch == "jumprelu":       # kept: pre + b_enc > θ − ε/2
            cut = s.threshold - cfg.jumprelu_bandwidth / 2
        else:
            cut = torch.zeros(d_sae)
        s.b_enc.copy_(cut - torch.quantile(pre[:2048], 1 - density, dim=0))
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="*", default=list(MODULES), choices=list(MODULES))
    p.add_argument("--densities", nargs="*", type=float,
                   default=[0.01, 0.03, 0.1, 0.15, 0.2, 0.25, 0.3])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--burst", type=int, default=3, help="steps per burst")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gt = sae.GroundTruthFeatures(1024, 128, p=8 / 1024, noise=0.02, seed=0)
    x = gt.sample(args.batch, generator=torch.Generator().manual_seed(1))
    print(f"batch {args.batch}, d_in 128, d_sae {args.d_sae}, {args.threads} thread(s), "
          f"{args.rounds} rounds of {args.burst} steps; load {os.getloadavg()[0]:.2f}")
    print(f"{'arch':9s} {'density':>8s} {'kept':>6s} {'sparse ms':>10s} {'dense ms':>9s} "
          f"{'dense/sparse':>13s}")
    for arch in args.archs:
        mod = MODULES[arch]
        saved = mod.SPARSE_MAX_DENSITY
        for density in args.densities:
            s = build(arch, x, density, args.d_sae)
            opt = torch.optim.Adam(s.parameters(), lr=1e-7)   # tiny: the density stays put

            def burst(cutoff: float, mod=mod, s=s, opt=opt) -> float:
                mod.SPARSE_MAX_DENSITY = cutoff
                t0 = time.perf_counter()
                for _ in range(args.burst):
                    out = s.training_forward(x)
                    opt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    opt.step()
                return (time.perf_counter() - t0) / args.burst * 1e3

            burst(0.0), burst(1.0)                               # warm-up
            kept = s.training_forward(x).sparse                  # (cutoff 1: sparse)
            frac = kept[1].numel() / (args.batch * args.d_sae) if kept is not None else 1.0
            ms: dict[float, list[float]] = {1.0: [], 0.0: []}      # sparse, dense
            bursts.run_rounds([1.0, 0.0], args.rounds, rotate=True,
                              run=lambda cutoff, r, ms=ms, burst=burst:
                              ms[cutoff].append(burst(cutoff)))
            sp, de = ms[1.0], ms[0.0]
            ratio = bursts.paired(de, sp)[0]
            print(f"{arch:9s} {density:8.2f} {frac:6.3f} {statistics.median(sp):10.1f} "
                  f"{statistics.median(de):9.1f} {ratio:12.2f}x", flush=True)
        mod.SPARSE_MAX_DENSITY = saved


if __name__ == "__main__":
    main()
