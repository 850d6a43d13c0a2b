"""Two claims about transformers that the field repeats, tested with small runs.

(a) "Post-LN needs learning-rate warm-up, pre-LN does not." (Xiong et al. 2020, "On Layer
    Normalization in the Transformer Architecture": with LayerNorm after the residual add, the
    gradients of the last layers are large at initialisation, so Adam without warm-up is
    unstable; moving LN inside the residual branch removes the need.)
    Test: char-level GPTs on the stdlib corpus, pre-LN and post-LN, each with and without a
    linear warm-up (10% of the steps), at several peak learning rates and seeds; the final
    validation loss of each. Gradient clipping (max norm 1, the trainer's default) is on; full
    mode repeats the highest learning rate with clipping off, since clipping is itself a remedy
    for early instability. A run that ends near the unigram loss has collapsed to predicting
    character frequencies.

(b) "Sinusoidal positions generalise to longer sequences than learned ones." (Vaswani et al.
    2017, §3.5: "we chose the sinusoidal version because it may allow the model to extrapolate
    to sequence lengths longer than the ones encountered during training".)
    Test: the same model with learned, sinusoidal, rotary and no positional encoding, n_ctx = 2L,
    trained only on windows of L tokens (a learned W_pos row beyond L never gets a gradient),
    then evaluated on validation windows of 2L: the loss at every position up to 2L.

Each verdict is computed from the numbers and saved with them; quick mode runs a smoke-sized
version (tiny models, one learning rate, few seeds) whose verdicts are noisy: read the full
run's (about 10 minutes on one CPU thread).

What the full run found (4-layer, d_model 64 char models, 400 steps, seeds 0-2):
  (a) partly supported. At lr 1e-3 and 3e-3 neither needs warm-up (|cost| <= 0.06 nats). At
      1e-2 post-LN without warm-up collapsed to the unigram loss in 3/3 seeds, pre-LN in none;
      but a 40-step warm-up rescued post-LN in only 1/3 seeds, and pre-LN also gained 0.26
      nats from it (3/3 seeds). Turning clipping off changed little.
  (b) not supported. Trained on 64 characters, learned and sinusoidal positions both lose
      about 1 nat/char beyond position 64 (+0.98 and +0.96); rotary (+0.13) and no positional
      encoding at all (+0.11) degrade least.

    python experiments/gpt_claims.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from superpose import gpt, plot, runs

log = logging.getLogger(__name__)

POSITIONALS = ("learned", "sinusoidal", "rotary", "none")
COLORS = {"learned": "tab:blue", "sinusoidal": "tab:orange", "rotary": "tab:green",
          "none": "tab:gray"}
NOISE = 0.1     # a difference smaller than this (nats) is called "no difference"
COLLAPSE = 0.05  # a run ending within this of the unigram loss (or above) has collapsed


def configs(quick: bool, seed: int) -> dict[str, Any]:
    if quick:
        warm = dict(n_layers=4, d_model=32, n_ctx=32, steps=100, warmup=10, lrs=[1e-2],
                    n_seeds=2, no_clip_lr=None)
        pos = dict(n_layers=2, d_model=32, train_len=32, steps=150, warmup=15, lr=3e-3,
                   n_seeds=1, positionals=["learned", "sinusoidal", "rotary"])
        chars = 300_000
    else:
        warm = dict(n_layers=4, d_model=64, n_ctx=64, steps=400, warmup=40,
                    lrs=[1e-3, 3e-3, 1e-2], n_seeds=3, no_clip_lr=1e-2)
        pos = dict(n_layers=2, d_model=64, train_len=64, steps=600, warmup=30, lr=3e-3,
                   n_seeds=3, positionals=list(POSITIONALS))
        chars = None
    return {"quick": quick, "seed": seed, "max_chars": chars, "batch_size": 16,
            "val_batches": 8, "warmup_claim": warm, "positions_claim": pos}


# ---------------------------------------------------------------- (a) warm-up


def warmup_claim(cfg: dict[str, Any], tok: gpt.Tokenizer, train_ids: Tensor, val_ids: Tensor,
                 seed: int, progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train every (norm, warm-up, lr, clip, seed); return one row per run and seed 0's
    results at the highest learning rate (for the loss-curve figure)."""
    c = cfg["warmup_claim"]
    data = gpt.TokenDataset(train_ids, c["n_ctx"])
    val = gpt.TokenDataset(val_ids, c["n_ctx"])
    grid = [(lr, 1.0) for lr in c["lrs"]]
    if c["no_clip_lr"] is not None:
        grid.append((c["no_clip_lr"], None))
    rows, curves = [], {}
    for lr, clip in grid:
        for s in range(seed, seed + c["n_seeds"]):
            for norm in ("pre", "post"):
                for warmup in (0, c["warmup"]):
                    model = gpt.GPT(gpt.GPTConfig(d_vocab=tok.vocab_size, n_layers=c["n_layers"],
                                                  d_model=c["d_model"], n_ctx=c["n_ctx"],
                                                  norm=norm, seed=s), device="cpu")
                    res = gpt.train(model, data, steps=c["steps"],
                                    batch_size=cfg["batch_size"], lr=lr, warmup_steps=warmup,
                                    grad_clip=clip, val_data=val, val_every=0,
                                    val_batches=cfg["val_batches"], log_every=5, seed=s,
                                    device="cpu", progress=progress)
                    rows.append({"norm": norm, "warmup_steps": warmup, "lr": lr,
                                 "grad_clip": clip, "seed": s, "val_loss": res.final_val_loss,
                                 "max_grad_norm": max(res.history.grad_norm)})
                    if s == seed and lr == max(c["lrs"]) and clip is not None:
                        curves[f"{norm}-LN, {'warm-up' if warmup else 'no warm-up'}"] = res
    return rows, curves


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def warmup_table(rows: list[dict[str, Any]], unigram: float) -> list[dict[str, Any]]:
    """One row per (lr, clip, norm): mean ± sd of the final validation loss over seeds without
    and with warm-up, the cost of skipping warm-up (no warm-up minus warm-up), and how many
    seeds collapsed (ended within COLLAPSE nats of the unigram loss, or above it)."""
    keys = sorted({(r["lr"], r["grad_clip"] is None, r["norm"]) for r in rows},
                  key=lambda k: (k[1], k[0], k[2] == "post"))
    table = []
    for lr, no_clip, norm in keys:
        sel = [r for r in rows if r["lr"] == lr and (r["grad_clip"] is None) == no_clip
               and r["norm"] == norm]
        without = [r["val_loss"] for r in sel if r["warmup_steps"] == 0]
        with_ = [r["val_loss"] for r in sel if r["warmup_steps"] > 0]
        (m0, s0), (m1, s1) = _mean_sd(without), _mean_sd(with_)
        table.append({"lr": lr, "grad_clip": None if no_clip else 1.0, "norm": norm,
                      "no_warmup": m0, "no_warmup_sd": s0, "warmup": m1, "warmup_sd": s1,
                      "cost_of_no_warmup": m0 - m1,
                      "seeds_worse_without": sum(a > b for a, b in zip(without, with_)),
                      "collapsed_no_warmup": sum(x > unigram - COLLAPSE for x in without),
                      "collapsed_warmup": sum(x > unigram - COLLAPSE for x in with_),
                      "n_seeds": len(without)})
    return table


def _hurt(t: dict[str, Any]) -> bool:
    """Skipping warm-up hurts: a clear loss cost, or more collapsed seeds."""
    return t["cost_of_no_warmup"] > NOISE or t["collapsed_no_warmup"] > t["collapsed_warmup"]


def warmup_verdict(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Per learning rate: does skipping warm-up hurt post-LN, and pre-LN? The claim is
    supported where it hurts post-LN and not pre-LN; partly where both are hurt but post-LN
    clearly more (a larger cost by NOISE, or more collapses); the strongest finding wins."""
    by = {(t["lr"], t["grad_clip"], t["norm"]): t for t in table}
    rank = ["not supported (no learning rate where skipping warm-up hurts post-LN)",
            "not supported (both need warm-up about equally)",
            "partly supported (pre-LN also needs warm-up, post-LN more)",
            "supported"]
    level, findings = 0, []
    for lr, clip in sorted({(t["lr"], t["grad_clip"]) for t in table},
                           key=lambda k: (k[1] is None, k[0])):
        post, pre = by[(lr, clip, "post")], by[(lr, clip, "pre")]
        n = post["n_seeds"]
        findings.append(
            f"lr {lr:g} ({'clip 1' if clip else 'no clipping'}): skipping warm-up costs "
            f"post-LN {post['cost_of_no_warmup']:+.3f} nats (collapsed "
            f"{post['collapsed_no_warmup']}/{n} seeds without, {post['collapsed_warmup']}/{n} "
            f"with warm-up), pre-LN {pre['cost_of_no_warmup']:+.3f} "
            f"({pre['collapsed_no_warmup']}/{n}, {pre['collapsed_warmup']}/{n})")
        if _hurt(post):
            worse = (post["cost_of_no_warmup"] > pre["cost_of_no_warmup"] + NOISE
                     or post["collapsed_no_warmup"] > pre["collapsed_no_warmup"])
            level = max(level, 3 if not _hurt(pre) else 2 if worse else 1)
    return {"status": rank[level], "findings": findings}


def warmup_figure(rows: list[dict[str, Any]], table: list[dict[str, Any]],
                  unigram: float) -> Figure:
    """Final validation loss against peak lr: every seed as a dot, the seed mean as a line;
    runs without gradient clipping as triangles to the right of their learning rate."""
    fig = Figure(figsize=(7.8, 3.9), layout="constrained")
    a = fig.subplots()
    series = {("pre", 0): ("tab:blue", "o", "--", 0.94), ("pre", 1): ("tab:blue", "o", "-", 0.98),
              ("post", 0): ("tab:red", "s", "--", 1.02), ("post", 1): ("tab:red", "s", "-", 1.06)}
    for (norm, warm), (color, marker, ls, dx) in series.items():
        key = "warmup" if warm else "no_warmup"
        means = [t for t in table if t["norm"] == norm and t["grad_clip"] is not None]
        a.plot([t["lr"] * dx for t in means], [t[key] for t in means], color=color, ls=ls,
               lw=1.3, marker=marker, ms=6, mfc=color if warm else "white",
               label=f"{norm}-LN, {'with' if warm else 'without'} warm-up (seed mean)")
        seeds = [r for r in rows if r["norm"] == norm and bool(r["warmup_steps"]) == bool(warm)]
        for r in seeds:
            clipped = r["grad_clip"] is not None
            a.plot([r["lr"] * dx * (1 if clipped else 1.3)], [r["val_loss"]],
                   marker=marker if clipped else "^", ms=3.5 if clipped else 5, ls="none",
                   color=color, mfc=color if warm else "white", alpha=0.7)
    if any(r["grad_clip"] is None for r in rows):
        a.plot([], [], marker="^", ls="none", color="0.3", mfc="white", ms=5,
               label="no gradient clipping (each seed, offset right)")
    a.plot([], [], marker="o", ls="none", color="0.3", ms=3.5, alpha=0.7, label="each seed")
    a.axhline(unigram, color="0.5", lw=0.8, ls=":")
    a.text(1.0, unigram, " unigram\n loss", fontsize=7, color="0.35", va="center",
           transform=a.get_yaxis_transform())
    a.set_xscale("log")
    a.set_xlabel("peak learning rate")
    a.set_ylabel("final validation loss (nats/char)")
    a.set_title("does skipping warm-up hurt? at the unigram loss a run has collapsed",
                fontsize=10)
    a.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.13, 1.0))
    for side in ("top", "right"):
        a.spines[side].set_visible(False)
    return fig


# ---------------------------------------------------------------- (b) positions


def loss_by_position(model: gpt.GPT, val: gpt.TokenDataset, batches: int) -> Tensor:
    """[n_ctx]: mean cross-entropy of the prediction made at each position of val windows."""
    total, n = torch.zeros(val.n_ctx, dtype=torch.float64), 0
    model.eval()
    with torch.no_grad():
        for x, y in val.sequential(32, max_batches=batches):
            logp = model(x).float().log_softmax(-1)
            total += -logp.gather(-1, y[..., None])[..., 0].sum(0).double()
            n += len(x)
    return (total / n).float()


def positions_claim(cfg: dict[str, Any], tok: gpt.Tokenizer, train_ids: Tensor,
                    val_ids: Tensor, seed: int, progress: bool) -> dict[str, Any]:
    c = cfg["positions_claim"]
    L = c["train_len"]
    data = gpt.TokenDataset(train_ids, L)
    val = gpt.TokenDataset(val_ids, 2 * L)
    curves: dict[str, list[Tensor]] = {}
    for positional in c["positionals"]:
        for s in range(seed, seed + c["n_seeds"]):
            model = gpt.GPT(gpt.GPTConfig(d_vocab=tok.vocab_size, n_layers=c["n_layers"],
                                          d_model=c["d_model"], n_ctx=2 * L,
                                          positional=positional, seed=s), device="cpu")
            gpt.train(model, data, steps=c["steps"], batch_size=cfg["batch_size"], lr=c["lr"],
                      warmup_steps=c["warmup"], log_every=10, seed=s, device="cpu",
                      progress=progress)
            curves.setdefault(positional, []).append(
                loss_by_position(model, val, cfg["val_batches"]))
    out: dict[str, Any] = {"train_len": L, "eval_len": 2 * L, "per_position": {}, "table": []}
    for positional, cs in curves.items():
        mean = torch.stack(cs).mean(0)
        segs = {"within (positions 1..L)": mean[:L],
                "just beyond (L..1.25L)": mean[L:L + L // 4],
                "far beyond (1.75L..2L)": mean[2 * L - L // 4:]}
        per_seed_far = [float(cv[L:].mean() - cv[:L].mean()) for cv in cs]
        out["per_position"][positional] = mean
        out["table"].append({"positional": positional,
                             **{k: float(v.mean()) for k, v in segs.items()},
                             "beyond_minus_within": float(mean[L:].mean() - mean[:L].mean()),
                             "beyond_minus_within_per_seed": per_seed_far})
    return out


def positions_verdict(res: dict[str, Any]) -> dict[str, Any]:
    """Supported if sinusoidal loses clearly less than learned beyond L (by NOISE or more)."""
    t = {row["positional"]: row for row in res["table"]}
    learned, sin = t["learned"]["beyond_minus_within"], t["sinusoidal"]["beyond_minus_within"]
    if learned - sin > NOISE:
        status = "supported"
    elif sin - learned > NOISE:
        status = "contradicted (sinusoidal degrades more than learned)"
    else:
        status = "not supported (both degrade about equally)"
    findings = [f"{row['positional']}: loss within L {row['within (positions 1..L)']:.3f}, "
                f"beyond L {row['within (positions 1..L)'] + row['beyond_minus_within']:.3f} "
                f"({row['beyond_minus_within']:+.3f})" for row in res["table"]]
    best = min(res["table"], key=lambda row: row["beyond_minus_within"])
    return {"status": status, "findings": findings,
            "degrades_least": best["positional"]}


def positions_figure(res: dict[str, Any]) -> Figure:
    L = res["train_len"]
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    a = fig.subplots()
    for positional, y in res["per_position"].items():
        k = 4                                     # a moving average over 4 positions
        ys = torch.nn.functional.avg_pool1d(y[None, None], k, 1, padding=0)[0, 0]
        x = torch.arange(len(ys)) + (k + 1) / 2
        a.plot(x, ys, lw=1.4, color=COLORS[positional], label=positional)
    a.axvline(L + 0.5, color="0.4", lw=0.8, ls="--")
    a.text(L + 1.5, 0.97, f"trained on L = {L}\nbeyond: never seen", fontsize=7, color="0.3",
           va="top", transform=a.get_xaxis_transform())
    a.set_xlabel("position in the window (prediction of the next character)")
    a.set_ylabel("validation loss (nats/char)")
    a.set_title("length generalisation: loss per position (4-position mean, seeds averaged)",
                fontsize=9)
    a.legend(fontsize=8, frameon=False, loc="upper left")
    for side in ("top", "right"):
        a.spines[side].set_visible(False)
    return fig


# ---------------------------------------------------------------- the run


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("gpt_claims", out=out)
    r.save_config(cfg)
    corpus = gpt.load_corpus("stdlib", max_chars=cfg["max_chars"])
    tok = gpt.CharTokenizer.fit(corpus)
    train_ids, val_ids = tok.encode(corpus.train), tok.encode(corpus.val)
    counts = torch.bincount(train_ids, minlength=tok.vocab_size).double() + 1
    unigram = float(-(counts / counts.sum()).log()[val_ids].mean())

    t0 = time.perf_counter()
    rows, curves = warmup_claim(cfg, tok, train_ids, val_ids, seed, progress)
    table = warmup_table(rows, unigram)
    wv = warmup_verdict(table)
    t1 = time.perf_counter()
    pos = positions_claim(cfg, tok, train_ids, val_ids, seed, progress)
    pv = positions_verdict(pos)
    t2 = time.perf_counter()

    metrics: dict[str, Any] = {
        "unigram_loss": unigram, "uniform_loss": math.log(tok.vocab_size),
        "warmup": {"runs": rows, "table": table, "verdict": wv, "seconds": t1 - t0},
        "positions": {**pos, "verdict": pv, "seconds": t2 - t1},
    }
    summary: dict[str, Any] = {}
    if quick:
        summary["note"] = ("quick mode: tiny models, one learning rate, 1-2 seeds; these "
                           "verdicts are noise-level, the full run gives the real ones")
    summary["(a) post-LN needs warm-up, pre-LN does not"] = wv["status"]
    for i, f in enumerate(wv["findings"]):
        summary[f"(a) {i + 1}"] = f
    summary["(b) sinusoidal extrapolates better than learned"] = pv["status"]
    for i, f in enumerate(pv["findings"]):
        summary[f"(b) {i + 1}"] = f
    summary["(b) degrades least beyond L"] = pv["degrades_least"]
    summary["time"] = f"warm-up grid {t1 - t0:.0f}s ({len(rows)} runs), positions {t2 - t1:.0f}s"
    metrics["summary"] = summary

    r.save_figure(warmup_figure(rows, table, unigram), "warmup_final_loss")
    fig = plot.loss_curves(curves, smooth=3, val=False,
                           title=f"lr {max(cfg['warmup_claim']['lrs']):g}, seed {seed}: "
                                 "training loss")
    fig.axes[0].axhline(unigram, color="0.5", lw=0.8, ls=":")
    r.save_figure(fig, "warmup_loss_curves")
    r.save_figure(positions_figure(pos), "loss_by_position")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
