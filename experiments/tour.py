"""The lab's tour: every experiment in quick mode, one results folder, a short summary.

    python experiments/tour.py --quick          # `make demo`
    python experiments/tour.py                  # the full versions (tens of minutes)

Writes results/tour/<run>/ with one sub-folder per stage (each holding its config.json,
metrics.json, PNG figures and weights) and a metrics.json with every stage's headline numbers.
Each part of the lab adds its stages to STAGES.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from superpose import runs  # noqa: E402

# (module in experiments/, one line on what it shows)
STAGES: list[tuple[str, str]] = [
    ("toy_intro", "5 features in 2 dimensions: dense → orthogonal pair, sparse → pentagon"),
    ("toy_sweep", "20 features in 5 dimensions: linear keeps 5, ReLU superposes more"),
    ("toy_phase_diagram", "2 → 1 phase diagram: not represented / dedicated / superposition"),
    ("toy_dimensionality", "feature dimensionality: the 1/2 plateau and the polytope fractions"),
    ("toy_correlated", "correlated features go orthogonal, anticorrelated ones antipodal"),
    ("gpt_corpus", "a char-level GPT on Python's stdlib: loss vs n-gram baselines, samples"),
    ("gpt_induction", "induction heads: a previous-token head + an induction head, 2 layers"),
    ("gpt_claims", "tested: post-LN needs warm-up; sinusoidal positions extrapolate"),
    ("sae_toy", "SAEs on a toy model's hidden layer find its own feature directions"),
    ("sae_ground_truth", "every SAE architecture on sparse features in superposition: L0 vs FVE"),
    ("sae_gpt", "TopK SAEs on the char GPT: spliced-in loss recovered, feature dashboards"),
    ("geometry_claims", "tested: 'millions of vectors within 89°–91° in 1000-D' and other "
                        "near-orthogonality claims, against the packing bounds"),
    ("jl_digits", "Johnson–Lindenstrauss on the digits: measured k vs the bound"),
    ("encoder_mlm", "encoders: a BERT-shaped char MLM beats the unigram; padding never attended"),
    ("seq2seq_alignment", "encoders: seq2seq spells numbers; cross-attention follows the "
                          "digit-word alignment"),
    ("sae_encoders", "encoders: SAEs on the MLM encoder's residual stream and on the seq2seq "
                     "decoder's cross-attention output"),
    ("encoder_vs_decoder", "tested: 'an encoder understands, a decoder generates' at equal size "
                           "and data"),
    ("finetune_diffing", "LoRA plants a trigger rule; crosscoder, diff-SAE and ΔW find it"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the fast version of every stage")
    parser.add_argument("--out", default="results", help="results root (default ./results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only these stages")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    stages = [s for s in STAGES if not args.only or s[0] in args.only]
    unknown = set(args.only or []) - {name for name, _ in STAGES}
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; stages are {[n for n, _ in STAGES]}")

    if Path(args.out).exists() and not Path(args.out).is_dir():     # before any stage runs
        parser.error(f"--out {args.out} is a file; pass a folder for the results")
    tour = runs.Run.create("tour", out=args.out)
    tour.save_config({"quick": args.quick, "seed": args.seed, "stages": [n for n, _ in stages]})
    out = sys.stdout
    out.write(f"superpose tour ({'quick' if args.quick else 'full'}) -> {tour.path}\n")
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    for name, blurb in stages:
        out.write(f"\n[{name}] {blurb}\n")
        out.flush()
        t0 = time.perf_counter()
        module = importlib.import_module(name)
        with runs.finishing():                       # the stage's folder gets its marker
            metrics = module.run(out=tour.path, quick=args.quick, seed=args.seed,
                                 progress=args.progress)
        seconds = time.perf_counter() - t0
        summary = metrics.get("summary", {})
        for key, value in summary.items():
            out.write(f"    {key}: {value}\n")
        out.write(f"    ({seconds:.1f} s)\n")
        results[name] = {"summary": summary, "seconds": round(seconds, 2)}
        tour.save_metrics(results)                   # after every stage: nothing lost if cut
    total = time.perf_counter() - t_all
    tour.finish()
    out.write(f"\nDone in {total:.0f} s. Figures, metrics and weights under {tour.path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
