"""Train a small character-level GPT on the embedded corpus and sample from it, on one process
or on many under torchrun (DistributedDataParallel, one shard of every batch per process).

    python experiments/gpt_train.py [--quick] [--out DIR] [--name RUN] [--resume] [--seed N]
    torchrun --standalone --nproc_per_node=2 experiments/gpt_train.py --quick --device cpu

The same command line gives the same run whatever the number of processes: every process draws
the same global batch and keeps its rows, so 2 processes train exactly the model 1 process
does (tests/test_gpt_training.py checks it on the gloo backend).

Model and data: the "stdlib" corpus (Python's own source files, nothing downloaded; quick mode
takes its first 300,000 characters), a CharTokenizer fit on it, a pre-LN GPT (quick: 2 layers,
d_model 64, n_ctx 64, 300 steps of 16 sequences, 30 warm-up steps; full: 4 layers, d_model 128,
n_ctx 128, 3,000 steps of 32, 100 warm-up), AdamW with cosine decay. Flags override these;
`--resume --steps N` extends a finished run.

Writes `<out>/gpt_train/<name>/` (name: a timestamp unless --name is given; --resume needs
it): config.json (model, training and data settings), tokenizer.json, checkpoints/
(`train`'s checkpoints, what --resume continues from), model/ (the final weights:
`GPT.load`), metrics.json (history, final losses, a sample of text), loss_curves.png. Only
rank 0 writes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from superpose import gpt, runs
from superpose.gpt import distributed
from superpose.gpt.corpus import TokenDataset, load_corpus
from superpose.gpt.tokenizers import CharTokenizer
from superpose.gpt.training import GPTTrainConfig, train

log = logging.getLogger("gpt_train")

EXPERIMENT = "gpt_train"
QUICK = dict(n_layers=2, d_model=64, n_ctx=64, steps=300, batch_size=16, warmup_steps=30,
             max_chars=300_000)
FULL = dict(n_layers=4, d_model=128, n_ctx=128, steps=3_000, batch_size=32, warmup_steps=100,
            max_chars=None)
PROMPT = "def "


def run(out: str | Path = "results", quick: bool = False, seed: int = 0,
        progress: bool = True, *, name: str | None = None, resume: bool = False,
        device: str | None = None, sample_tokens: int = 200, **settings: Any) -> dict[str, Any]:
    """Train and sample; return the metrics (rank 0 also writes them). `settings` override
    the QUICK/FULL defaults and GPTTrainConfig fields (steps, batch_size, grad_accum, lr, ...)."""
    world = distributed.current()
    if Path(out).exists() and not Path(out).is_dir():    # before any work, on every rank
        raise ValueError(f"out {str(out)!r} is a file; pass a folder for the results")
    if name is not None:
        runs.plain_name("name", name)                   # never a path outside `out`
    s = {**(QUICK if quick else FULL), **{k: x for k, x in settings.items() if x is not None}}
    corpus = load_corpus("stdlib", max_chars=s.pop("max_chars"))
    tok = CharTokenizer.fit(corpus)
    n_ctx = s.pop("n_ctx")
    dropout = s.pop("dropout", 0.0)
    s["warmup_steps"] = min(s["warmup_steps"], s["steps"])
    model_cfg = gpt.GPTConfig(d_vocab=tok.vocab_size, n_layers=s.pop("n_layers"),
                              d_model=s.pop("d_model"), n_ctx=n_ctx, dropout=dropout, seed=seed)
    train_cfg = GPTTrainConfig(**{
        "seed": seed, "val_every": max(1, s["steps"] // 10), "log_every": 1 if quick else 10,
        "checkpoint_every": max(1, s["steps"] // 3), **s})
    data = TokenDataset(tok.encode(corpus.train), n_ctx)
    val = TokenDataset(tok.encode(corpus.val), n_ctx)

    # One folder for every process: rank 0 names it and tells the others.
    if name is None:
        if resume:
            raise ValueError("--resume needs --name, the run to continue")
        folder = runs.Run.create(EXPERIMENT, out=out).path if world.is_main else None
        folder = Path(distributed.broadcast_object(folder))
    else:
        folder = Path(out) / EXPERIMENT / name
    if world.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        # A named folder may hold an earlier run: it is not complete until this one finishes,
        # and what a killed write left there goes now (no other process writes yet).
        (folder / runs.COMPLETE_FILE).unlink(missing_ok=True)
        runs.remove_leftovers(folder)
        runs.write_json(folder / "config.json", {
            "model": model_cfg, "train": train_cfg, "quick": quick, "world_size":
            world.world_size, "corpus": {"name": corpus.name, "train_chars": len(corpus.train),
                                         "val_chars": len(corpus.val)}})
        tok.save(folder / "tokenizer.json")

    model = gpt.GPT(model_cfg, device="cpu")
    t0 = time.perf_counter()
    result = train(model, data, train_cfg, val_data=val, out=folder / "checkpoints",
                   resume=resume, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    prompt = tok.encode(PROMPT)[None].to(model.device)
    sample = tok.decode(model.generate(prompt, sample_tokens, temperature=0.8, top_k=20,
                                       generator=seed)[0].tolist())
    h = result.history
    metrics = {
        "summary": {"final_train_loss": round(result.final_loss, 4),
                    "final_val_loss": round(result.final_val_loss, 4),
                    "uniform_loss": round(float(torch.log(torch.tensor(tok.vocab_size))), 4),
                    "steps": result.step, "processes": world.world_size,
                    "seconds": round(seconds, 1),
                    "tokens_per_second": round(result.tokens_per_second)},
        "history": h.to_dict(), "sample": sample, "n_params": model.n_params(),
        "resumed_from": result.resumed_from, "folder": str(folder),
    }
    if world.is_main:
        model.save(folder / "model")
        from superpose import plot

        fig = plot.loss_curves(result, log=False, title=f"{EXPERIMENT}: {world.world_size} "
                               f"process(es), {model.n_params():,} parameters")
        fig.axes[0].set_ylabel("cross-entropy (nats / token)")   # loss_curves draws val too
        run = runs.Run(folder)
        run.save_figure(fig, "loss_curves")
        run.save_metrics(metrics)                  # last, then the completion marker
        run.finish()
        log.info("sample after %d steps:\n%s", result.step, sample)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small, fast version (seconds)")
    p.add_argument("--out", default="results", help="results root (default: ./results)")
    p.add_argument("--name", help="run folder name (default: a timestamp)")
    p.add_argument("--resume", action="store_true", help="continue the run --name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available)")
    p.add_argument("--sample-tokens", type=int, default=200)
    for flag, kind in [("steps", int), ("batch-size", int), ("grad-accum", int), ("lr", float),
                       ("dropout", float), ("precision", str), ("n-layers", int),
                       ("d-model", int), ("n-ctx", int), ("max-chars", int),
                       ("checkpoint-every", int), ("val-every", int), ("val-batches", int),
                       ("log-every", int), ("warmup-steps", int), ("schedule", str)]:
        p.add_argument(f"--{flag}", type=kind, help="override the default (see the docstring)")
    args = p.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():     # before any work
        p.error(f"--out {args.out} is a file; pass a folder for the results")
    if args.name is not None:
        try:
            runs.plain_name("--name", args.name)
        except ValueError as e:
            p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = vars(parse_args(argv))
    with distributed.process_group(device=args["device"]) as world:
        logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING,
                            format="%(message)s")
        metrics = run(out=args.pop("out"), quick=args.pop("quick"), seed=args.pop("seed"),
                      progress=not args.pop("no_progress"), **args)
        if world.is_main:
            for key, value in metrics["summary"].items():
                sys.stdout.write(f"  {key}: {value}\n")
    return metrics


if __name__ == "__main__":
    main()
