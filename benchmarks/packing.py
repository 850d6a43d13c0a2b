"""Quality, time and memory of `superpose.packing.pack`.

1. The small table (`packing.known_packings()`, d <= 10): achieved coherence / best known.
   Goal: <= 1.01 on every entry.
2. Large cases (n, d) = (1000, 50), (10000, 100) [and (100000, 1000) with --large]: achieved
   coherence / best lower bound (`packing.bounds(n, d).best`), against random unit vectors
   (the run's own random starting point: Gaussian rows, normalised), the wall and CPU time,
   seconds per step, the peak memory and the time curve (coherence at logged steps). Goal for
   (10000, 100): <= 1.25 x the Levenshtein bound 0.1400 (random vectors sit near 0.52).
3. A yardstick (--gold, default m = 5): the Gold code's 4^m lines in R^(2^m - 1)
   (`packing.gold_lines`, an algebraic packing near Levenshtein's bound) against pack() at
   the same size. m = 7 is 16384 x 127, the n ~ d^2 regime of the 10000 x 100 case.

Each large case runs in its own subprocess so its peak RSS (ru_maxrss) is its own; we also
print the RSS just before `pack`, so the difference is what `pack` itself used (on CUDA:
torch.cuda.max_memory_allocated).

Run:  python benchmarks/packing.py                    (small table + 1000x50 + 10000x100)
      python benchmarks/packing.py --cases 1000x50    (a quicker run)
      python benchmarks/packing.py --skip-small --cases 10000x100 --steps 300
      python benchmarks/packing.py --skip-small --cases 100000x1000 --steps 0
      python benchmarks/packing.py --skip-small --cases "" --gold 5,7 --steps 200
          (on one CPU core a step at 100000x1000 costs ~20 min: steps=0 measures the random
          start and the exact statistics, ~12 min; the optimisation itself is a GPU case)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from superpose import geometry, packing  # noqa: E402

DEFAULT_STEPS = {1000: 1000, 10_000: 200, 100_000: 0}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024        # Linux: KiB


def small_table(steps: int) -> bool:
    print(f"small table: pack(n, d, steps={steps}) vs best known (goal <= 1.01)")
    print(f"{'n':>4} {'d':>3} {'best known':>11} {'achieved':>11} {'ratio':>7} {'time':>6}")
    ok = True
    for k in packing.known_packings():
        t = time.perf_counter()
        r = packing.pack(k.n, k.d, steps=steps, progress=False)
        ratio = r.coherence / k.coherence
        ok &= ratio <= 1.01
        print(f"{k.n:>4} {k.d:>3} {k.coherence:>11.6f} {r.coherence:>11.6f} {ratio:>7.4f} "
              f"{time.perf_counter() - t:>5.1f}s" + ("" if ratio <= 1.01 else "  MISS"))
    print(f"all within 1.01: {ok}\n")
    return ok


def one_case(n: int, d: int, steps: int, device: str | None) -> dict:
    """Runs in the subprocess: one pack(); history[0] is the random baseline."""
    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    r = packing.pack(n, d, steps=steps, device=device, progress=False,
                     log_every=max(1, steps // 10))
    sec, cpu = time.perf_counter() - t, time.process_time() - c
    peak_cuda = (torch.cuda.max_memory_allocated() / 2**20
                 if r.vectors.device.type == "cuda" else None)
    b = r.bounds
    return dict(n=n, d=d, steps=steps, coherence=r.coherence, bound=b.best,
                bound_name=b.best_name, ratio=r.ratio, random_measured=r.history[0],
                random_predicted=b.random, max_dev_deg=r.max_deviation_deg, seconds=sec,
                cpu_seconds=cpu, rss_base_mb=base, rss_peak_mb=rss_mb(), cuda_peak_mb=peak_cuda,
                history=r.history, history_steps=r.history_steps,
                history_seconds=r.history_seconds)


def gold_yardstick(ms: list[int], steps: int | None, device: str) -> None:
    print("yardstick: the Gold code (gold_lines(m)) vs pack() of the same size, over the best "
          "lower bound")
    print(f"{'m':>2} {'n':>6} {'d':>4} {'bound':>18} {'Gold':>7} {'ratio':>6} {'pack':>7} "
          f"{'ratio':>6} {'steps':>5} {'pack wall':>9}")
    for m in ms:
        G = packing.gold_lines(m, device=device)
        n, d = G.shape
        b = packing.bounds(n, d)
        mu = float(geometry.coherence(G))
        k = steps if steps is not None else (1000 if n <= 2048 else 200)
        r = packing.pack(n, d, steps=k, device=device, progress=False)
        print(f"{m:>2} {n:>6} {d:>4} {b.best:>7.4f} {b.best_name:>10} {mu:>7.4f} "
              f"{mu / b.best:>6.3f} {r.coherence:>7.4f} {r.ratio:>6.3f} {k:>5} "
              f"{r.seconds:>8.1f}s", flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="1000x50,10000x100", help="comma-separated NxD")
    ap.add_argument("--large", action="store_true", help="also run 100000x1000")
    ap.add_argument("--steps", type=int, default=None, help="steps for every large case")
    ap.add_argument("--small-steps", type=int, default=1500)
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gold", default="5", help="comma-separated odd m for the Gold yardstick "
                    "(3, 5, 7, 9; '' to skip); pack() gets --steps or 1000 / 200 steps")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)   # subprocess entry point
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.one:
        n, d, steps = map(int, args.one.split(","))
        print(json.dumps(one_case(n, d, steps, args.device)))
        return

    if not args.skip_small:
        small_table(args.small_steps)
    if args.gold:
        gold_yardstick([int(m) for m in args.gold.split(",")], args.steps, args.device)
    cases = [tuple(map(int, c.split("x"))) for c in args.cases.split(",") if c]
    if args.large:
        cases.append((100_000, 1000))
    if not cases:
        return
    print(f"{'n':>6} {'d':>5} {'steps':>5} {'achieved':>9} {'bound':>18} {'ratio':>6} "
          f"{'random':>7} {'rand/bd':>7} {'dev°':>6} {'wall':>8} {'cpu':>8} {'cpu/step':>8} "
          f"{'peak RSS (pack)':>16}")
    for n, d in cases:
        steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(n, 100)
        out = subprocess.run([sys.executable, __file__, "--one", f"{n},{d},{steps}",
                              "--threads", str(args.threads), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mem = f"{r['rss_peak_mb']:.0f} MB ({r['rss_peak_mb'] - r['rss_base_mb']:+.0f})"
        if r["cuda_peak_mb"] is not None:
            mem += f", CUDA {r['cuda_peak_mb']:.0f} MB"
        per = r["cpu_seconds"] / max(steps, 1)
        print(f"{n:>6} {d:>5} {steps:>5} {r['coherence']:>9.4f} "
              f"{r['bound']:>7.4f} {r['bound_name']:>10} {r['ratio']:>6.3f} "
              f"{r['random_measured']:>7.4f} {r['random_measured'] / r['bound']:>7.3f} "
              f"{r['max_dev_deg']:>6.2f} {r['seconds']:>7.1f}s {r['cpu_seconds']:>7.1f}s "
              f"{per:>7.3f}s {mem:>16}", flush=True)
        curve = zip(r["history_steps"], r["history"], r["history_seconds"], strict=True)
        print("       time curve (step: coherence @ s):",
              ", ".join(f"{k}: {h:.4f} @ {s:.0f}" for k, h, s in curve), flush=True)


if __name__ == "__main__":
    main()
