"""Speed of `superpose.toy.train` against a plain ARENA-style training loop.

The workload is the paper's first sweep: 5 features -> 2 hidden, "relu_out", 10 instances with
importance 0.9**i and feature density 20**-linspace(0, 1, 10), batch 1024, AdamW(lr=1e-3).

Contenders (all start from the same initial weights):
  A  superpose `toy.train` (closed-form gradient, the default)
  A' superpose `toy.train(analytic_grad=False)` (autograd through `model.forward`)
  B  a reference loop written below the way ARENA 3.0's superposition notebook does it:
     two `torch.rand` calls per batch, einsum forward, importance-weighted MSE, autograd,
     `torch.optim.AdamW(lr=1e-3)` with its default settings, zero_grad / step.

Methodology. The machine is shared and noisy, so the contenders are interleaved in short bursts
(A A' B, A A' B, ...). Each contender keeps its model, optimizer and data stream across bursts,
so in total each one trains the full `--steps` steps exactly once. Each `toy.train` call runs
in its own thread and parks at burst boundaries; only one contender runs at any time, and only
the time inside a burst is counted. The parking hook wraps `generate_batch` as the training
module sees it, which adds one Python call and a counter per step (well under 1 us) to the
superpose contenders only. We report per-contender medians over rounds, the ratio of
medians, and the median of per-round ratios (the paired statistic, robust to drifting load).

Run:  python benchmarks/toy_speed.py            (10,000 steps, 20 rounds; a few minutes)
      python benchmarks/toy_speed.py --quick    (1,000 steps, 5 rounds; a smoke run)
"""

from __future__ import annotations

import os

# Idle OpenMP workers should sleep, not spin (must be set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402

import bursts  # noqa: E402  (benchmarks/bursts.py: a script's folder is on the path)
import einops  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import superpose.toy.training as training_mod  # noqa: E402
from superpose import toy  # noqa: E402

N_FEATURES, N_HIDDEN, N_INST, BATCH, LR = 5, 2, 10, 1024, 1e-3
WARMUP = 100        # untimed steps each contender runs on a throwaway copy first
TAIL = 500          # final loss = mean per-instance loss over the last TAIL steps
LOG_EVERY = 10      # both contenders record the per-instance loss every 10 steps
DENSE_CLOSED_FORM = (0.9**2 + 0.9**3 + 0.9**4) / 60   # dense instance: keep the top 2 features


def sweep_config() -> toy.ToyConfig:
    density = (20.0 ** -torch.linspace(0, 1, N_INST)).tolist()
    return toy.ToyConfig(n_features=N_FEATURES, n_hidden=N_HIDDEN, n_instances=N_INST,
                         variant="relu_out", importance=0.9, feature_probability=density)


# ---------------------------------------------------------------- parking inside toy.train

_by_thread: dict[int, bursts.Parked | bursts.Unparked] = {}
_original_generate_batch = training_mod.generate_batch


def _ticking_generate_batch(*args, **kwargs):
    c = _by_thread.get(threading.get_ident())
    if c is not None:
        c.tick()
    return _original_generate_batch(*args, **kwargs)


# ---------------------------------------------------------------- contenders

def superpose_body(cfg: toy.ToyConfig, init: dict[str, torch.Tensor],
                   analytic: bool) -> Callable[[bursts.Parked | bursts.Unparked], None]:
    def body(c: bursts.Parked | bursts.Unparked) -> None:
        steps = c.steps
        _by_thread[threading.get_ident()] = c
        model = toy.ToyModel(cfg)
        model.load_state_dict(init)
        res = toy.train(model, steps=steps, batch_size=BATCH, lr=LR, log_every=LOG_EVERY,
                        analytic_grad=analytic, progress=False, seed=0)
        assert res.extra["analytic_grad"] == analytic
        c.final_loss = res.loss[res.history.series("step") > steps - TAIL].mean(0)
    return body


def reference_body(cfg: toy.ToyConfig, init: dict[str, torch.Tensor]
                   ) -> Callable[[bursts.Parked | bursts.Unparked], None]:
    """ARENA 3.0 (chapter 1.3.1) style: parameters, batches, forward, loss, autograd, AdamW."""
    def body(c: bursts.Parked | bursts.Unparked) -> None:
        steps = c.steps
        W = torch.nn.Parameter(init["W"].clone())               # [inst, hidden, feats]
        b_final = torch.nn.Parameter(init["b_final"].clone())   # [inst, feats]
        importance = cfg.importance_tensor()                     # [inst, feats]
        feature_probability = cfg.probability_tensor()           # [inst, feats]
        gen = torch.Generator().manual_seed(1)
        optimizer = torch.optim.AdamW([W, b_final], lr=LR)

        def generate_batch(batch_size: int) -> torch.Tensor:
            shape = (batch_size, N_INST, N_FEATURES)
            feat_mag = torch.rand(shape, generator=gen)
            feat_seeds = torch.rand(shape, generator=gen)
            return torch.where(feat_seeds <= feature_probability, feat_mag, 0.0)

        def forward(features: torch.Tensor) -> torch.Tensor:
            hidden = einops.einsum(features, W,
                                   "... inst feats, inst hidden feats -> ... inst hidden")
            out = einops.einsum(hidden, W,
                                "... inst hidden, inst hidden feats -> ... inst feats")
            return F.relu(out + b_final)

        logged: list[torch.Tensor] = []
        for step in range(steps):
            c.tick()
            batch = generate_batch(BATCH)
            out = forward(batch)
            per_inst = (importance * (out - batch) ** 2).mean((0, 2))
            loss = per_inst.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % LOG_EVERY == 0 and step >= steps - TAIL:
                logged.append(per_inst.detach())
        c.final_loss = torch.stack(logged).mean(0)
    return body


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=None,
                    help="bursts per contender (default: steps/500; 5 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="1,000 steps: a smoke run")
    args = ap.parse_args()
    steps = 1000 if args.quick else args.steps
    rounds = args.rounds or (5 if args.quick else max(2, round(steps / 500)))
    rounds = min(rounds, steps)
    torch.set_num_threads(args.threads)
    sizes = bursts.even_bursts(steps, rounds)

    cfg = sweep_config()
    init = {k: v.detach().clone() for k, v in toy.ToyModel(cfg).state_dict().items()}
    training_mod.generate_batch = _ticking_generate_batch
    def contender(name: str, body: Callable[..., None]) -> bursts.Parked:
        # Untimed warm-up on a throwaway copy (first-call kernel and allocator set-up).
        return bursts.Parked(name, body, sizes, threads=args.threads,
                             warmup=lambda: body(bursts.Unparked(WARMUP)))

    contenders = [
        contender("superpose toy.train", superpose_body(cfg, init, True)),
        contender("superpose analytic_grad=False", superpose_body(cfg, init, False)),
        contender("reference (ARENA-style)", reference_body(cfg, init)),
    ]
    print(f"toy speed: {N_FEATURES} features -> {N_HIDDEN} hidden, {N_INST} instances, "
          f"batch {BATCH}, {steps} steps in {rounds} rounds of ~{steps // rounds}; "
          f"torch {torch.__version__}, {args.threads} thread(s), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    try:
        for c in contenders:
            c.start()
        bursts.run_rounds(contenders, rounds, rotate=False, after_round=lambda r: print(
            f"  round {r + 1:2d}/{rounds}: " + "  ".join(
                f"{c.rates()[-1]:7.0f}" for c in contenders) + "  steps/s", flush=True))
    finally:
        training_mod.generate_batch = _original_generate_batch
    for c in contenders:
        c.join()
        assert c.count == steps and len(c.times) == rounds, (c.name, c.count, len(c.times))

    A, A2, B = contenders
    med = {c.name: statistics.median(c.rates()) for c in contenders}
    print(f"\n{'contender':32s} {'median':>9s} {'min':>8s} {'max':>8s} {'total s':>8s}"
          f" {'overall':>9s}   (steps/s)")
    for c in contenders:
        rates = c.rates()
        print(f"{c.name:32s} {med[c.name]:9.0f} {min(rates):8.0f} {max(rates):8.0f} "
              f"{sum(c.times):8.2f} {steps / sum(c.times):9.0f}")

    def paired(x: bursts.Parked, y: bursts.Parked) -> tuple[float, float]:
        return med[x.name] / med[y.name], bursts.paired(x.rates(), y.rates())[0]

    for x, y in [(A, B), (A2, B), (A, A2)]:
        rm, mr = paired(x, y)
        print(f"{x.name} / {y.name}: ratio of medians {rm:.2f}x, "
              f"median of per-round ratios {mr:.2f}x")

    print(f"\nfinal per-instance loss (mean over the last {TAIL} steps; dense instance 0 "
          f"closed form {DENSE_CLOSED_FORM:.4f}):")
    torch.set_printoptions(precision=5, linewidth=120)
    for c in contenders:
        print(f"  {c.name:32s} {c.final_loss}")
    for x in (A, A2):
        rel = ((x.final_loss - B.final_loss).abs() / B.final_loss).max().item()
        print(f"  max relative difference {x.name} vs reference: {rel:.3f}")
    print(f"\nRATIO superpose/reference: {paired(A, B)[1]:.1f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
