"""How many nearly perpendicular lines fit in R^d, and how close `packing.pack` gets.

Three measurements:
  1. Achieved vs best known: `pack(n, d)` on every small case of `packing.known_packings()`
     (the literature's best coherence for n lines in R^d, d ≤ 10; optimal ones proved), as the
     ratio of coherences and the gap in degrees. Quick mode: the d ≤ 5 cases, fewer steps.
  2. Capacity at a fixed tolerance: the largest n for which `pack` keeps every angle within
     90° ± 25° (max|cos| ≤ sin 25° = 0.423), found by doubling n and then bisecting, for small
     d — against `packing.capacity`'s upper limit (the bounds inverted) and its random-vector
     lower estimate. A measured n is a construction, so it is a true lower bound.
  3. Optimizer history: coherence vs step for a few (n, d), against the bound and the random
     baseline.

    python experiments/packing_capacity.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from superpose import _validate as v
from superpose import packing, plot, runs
from superpose.plot._common import figure_and_axes

log = logging.getLogger(__name__)

TOLERANCE_DEG = 25.0


def configs(quick: bool, seed: int) -> dict[str, Any]:
    return {"quick": quick, "seed": seed,
            "known": {"max_d": 5 if quick else 10, "steps": 400 if quick else 3000},
            "capacity": {"tolerance_deg": TOLERANCE_DEG,
                         "dims": [3, 4] if quick else [3, 4, 5, 6, 8, 10, 12],
                         "steps": 300 if quick else 2000, "max_n": 400},
            "history": {"cases": [[40, 8], [100, 10]] if quick
                        else [[40, 8], [100, 10], [400, 20], [2000, 50]],
                        "steps": 300 if quick else 3000}}


def known_table(cfg: dict[str, Any], seed: int, device: torch.device, progress: bool
                ) -> list[dict[str, Any]]:
    rows = []
    for k in packing.known_packings():
        if k.d > cfg["max_d"]:
            continue
        r = packing.pack(k.n, k.d, steps=cfg["steps"], seed=seed, device=device,
                         progress=progress)
        achieved = math.degrees(math.acos(min(r.coherence, 1.0)))
        rows.append({"n": k.n, "d": k.d, "known_coherence": k.coherence,
                     "known_min_angle_deg": k.angle_deg, "proved_optimal": k.optimal,
                     "achieved_coherence": r.coherence, "achieved_min_angle_deg": achieved,
                     "ratio": r.coherence / k.coherence if k.coherence > 0 else math.inf,
                     "gap_deg": k.angle_deg - achieved, "bound": r.bounds.best,
                     "seconds": r.seconds})
    return rows


def largest_n(d: int, t: float, steps: int, max_n: int, seed: int, device: torch.device,
              progress: bool) -> tuple[int, int]:
    """The largest n ≤ max_n for which pack(n, d) reaches coherence ≤ t (n grows by doubling,
    then bisection; assumes more lines never get easier), and how many pack runs it took."""
    tries = 0

    def fits(n: int) -> bool:
        nonlocal tries
        tries += 1
        return packing.pack(n, d, steps=steps, seed=seed, device=device,
                            progress=progress).coherence <= t + 1e-9

    good, n = d, d + 1                         # an orthonormal basis always fits
    while n <= max_n and fits(n):
        good, n = n, min(2 * n, max_n + 1) if n < max_n else max_n + 1
    bad = min(n, max_n + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good, tries


def run(out: str = "results", quick: bool = False, seed: int = 0, progress: bool = True,
        device: str | torch.device | None = None) -> dict[str, Any]:
    cfg = configs(quick, seed)
    dev = v.resolve_device(device)
    r = runs.Run.create("packing_capacity", out=out)
    r.save_config({**cfg, "device": str(dev)})
    t0 = time.perf_counter()

    table = known_table(cfg["known"], seed, dev, progress)

    cc = cfg["capacity"]
    t = math.sin(math.radians(cc["tolerance_deg"]))
    measured: dict[str, Any] = {}
    for d in cc["dims"]:
        n, tries = largest_n(d, t, cc["steps"], cc["max_n"], seed, dev, progress)
        cap = packing.capacity(d, cc["tolerance_deg"])
        measured[str(d)] = {"pack_n": n, "pack_runs": tries, "upper": cap.upper,
                            "upper_by": min(cap.upper_by, key=cap.upper_by.get),
                            "random_lower": cap.random_lower, "fraction_of_upper": n / cap.upper}

    hist = {}
    for n, d in cfg["history"]["cases"]:
        hist[f"n={n}, d={d}"] = packing.pack(n, d, steps=cfg["history"]["steps"], seed=seed,
                                             device=dev, progress=progress)
    seconds = time.perf_counter() - t0

    ratios = [row["ratio"] for row in table]
    optimal_hit = [row for row in table if row["ratio"] <= 1.001]
    metrics: dict[str, Any] = {
        "known_packings": table,
        "capacity_measured": measured, "tolerance_deg": cc["tolerance_deg"],
        "history": {k: {"coherence": h.coherence, "bound": h.bounds.best, "ratio": h.ratio,
                        "random": h.bounds.random, "seconds": h.seconds,
                        "steps": h.history_steps, "curve": h.history} for k, h in hist.items()},
        "seconds": seconds,
    }
    metrics["summary"] = {
        "known packings matched within 0.1%": f"{len(optimal_hit)}/{len(table)} "
                                              f"(d ≤ {cfg['known']['max_d']})",
        "achieved / best known coherence": f"median {sorted(ratios)[len(ratios) // 2]:.4f}, "
                                           f"worst {max(ratios):.4f}",
        f"largest n within ±{cc['tolerance_deg']:g}° (pack / upper bound)": ", ".join(
            f"d={d}: {m['pack_n']}/{m['upper']:.0f}" for d, m in measured.items()),
        "history (coherence / bound)": ", ".join(f"{k}: {h.ratio:.3f}" for k, h in hist.items()),
        "time": f"{seconds:.1f}s",
    }

    fig, axes = figure_and_axes(ncols=3, figsize=(17.0, 4.4))
    caps = [packing.capacity(d, cc["tolerance_deg"]) for d in range(2, 65)]
    plot.capacity_curves(caps, jl=True, n_max=1e5, ax=axes[0],
                         measured={"pack(): largest n that fits": (
                             [int(d) for d in measured], [m["pack_n"] for m in measured.values()])},
                         title=f"max n in R^d with every angle in 90° ± {cc['tolerance_deg']:g}°")
    plot.optimizer_history(hist, ratio=True, ax=axes[1],
                           title="pack(): coherence / best lower bound (1 = optimal)")
    ax = axes[2]
    xs = range(len(table))
    ax.bar(xs, [row["gap_deg"] for row in table],
           color=["#2ca02c" if row["proved_optimal"] else "#1f77b4" for row in table])
    ax.set_xticks(list(xs), [f"{row['n']},{row['d']}" for row in table], rotation=60,
                  fontsize=7)
    ax.set_xlabel("(n, d)")
    ax.set_ylabel("best known − achieved min angle (°)")
    ax.set_title("pack() vs the best known packings (green: proved optimal)", fontsize=10)
    ax.axhline(0, color="k", lw=0.6)
    ax.grid(True, axis="y", alpha=0.3)
    r.save_figure(fig, "packing_capacity")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
