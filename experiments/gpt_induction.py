"""Induction heads: a 2-layer attention-only transformer trained on repeated random tokens.

Olsson et al. (2022), "In-context learning and induction heads". A sequence of random tokens
followed by the same tokens again: the first copy is noise (no model beats ln(d_vocab) nats
there); in the second copy every token is predictable by an *induction head* — at position t,
holding token A, attend to the token that followed A's earlier occurrence and copy it. In a
2-layer attention-only model the circuit has two parts: a layer-0 *previous-token head* writes
"the token before me was X" into every position, and a layer-1 induction head matches its query
(the current token A) against that (K-composition) and copies the matched position's token.

Scores, on plain `gpt.repeated_tokens` (BOS, L random tokens, the same L again; position t of
the second copy holds the token at t - L, so the token after its earlier occurrence sits at
t - L + 1):
  - induction score of a head: its mean attention from every second-copy position t to t - L + 1;
  - previous-token score: its mean attention from t to t - 1.

Training data matters, and this script shows why. With one fixed repeat length L, the offset
t - L + 1 is a fixed *position*: layer-0 heads learn to attend there from positional embeddings
alone, score ~0.9 "induction" in layer 0 with no previous-token head, and fail as soon as L
changes (the `shortcut` model). To force the real circuit the main model trains on rows
`[BOS, noise, A, A]` with a random repeat length l in [MIN_REPEAT, L] per row
(built from `gpt.repeated_tokens`), so no position or offset predicts where the copy is. Rotary
positions make the previous-token head a relative pattern; with learned absolute positions the
same model on the same data had not formed the circuit after 3,000 steps (full mode trains it
too). The formation is abrupt (around step 500 at lr 3e-3) and sensitive: at lr 6e-3, or with
batch 16, no circuit had formed by step 1,000 in our runs.

Two limits the metrics record: the head ablations (zeroing `hook_z` slices) show the circuit
is necessary, not that it is all; and the trained circuit predicts poorly a repeat shorter
than L that starts right after BOS ("plain_other_len"), a placement training never shows.

Quick mode: 1,000 steps and a 300-step shortcut model (about 20 s on one CPU thread); full
mode: 3,000 steps, the shortcut, and the learned-position comparison (about 3 minutes).

    python experiments/gpt_induction.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from superpose import gpt, plot, runs

log = logging.getLogger(__name__)

D_VOCAB = 64
SEQ_LEN = 16            # L: the repeat length of the evaluation sequences (n_ctx = 2L + 1)
MIN_REPEAT = 4          # training repeat lengths l are uniform in [MIN_REPEAT, SEQ_LEN]
OTHER_LEN = 10          # a second evaluation length: a positional shortcut fails here
BOS = 0
EVAL_BATCH = 128


def configs(quick: bool, seed: int) -> dict[str, Any]:
    model = gpt.GPTConfig(d_vocab=D_VOCAB, n_layers=2, d_model=64, n_heads=4,
                          n_ctx=2 * SEQ_LEN + 1, attn_only=True, positional="rotary", seed=seed)
    train = gpt.GPTTrainConfig(steps=1_000 if quick else 3_000, batch_size=32, lr=3e-3,
                               warmup_steps=50, weight_decay=0.01, log_every=10,
                               val_every=50, val_batches=1, seed=seed)
    # The shortcut: the same model with learned positions, one fixed repeat length.
    shortcut = dataclasses.replace(model, positional="learned")
    shortcut_train = dataclasses.replace(train, steps=300)
    return {"quick": quick, "seed": seed, "model": model, "train": train,
            "shortcut_model": shortcut, "shortcut_train": shortcut_train,
            "learned_positions_comparison": not quick,
            "data": {"d_vocab": D_VOCAB, "seq_len": SEQ_LEN, "min_repeat": MIN_REPEAT,
                     "bos": BOS, "other_len": OTHER_LEN, "eval_batch": EVAL_BATCH}}


# ---------------------------------------------------------------- data


def shifted_repeats(batch: int, seq_len: int, d_vocab: int, generator: torch.Generator | int,
                    *, min_repeat: int = MIN_REPEAT, max_repeat: int | None = None) -> Tensor:
    """[batch, 2 * seq_len + 1] rows `[BOS, noise, A, A]`: per row a repeat length l uniform in
    [min_repeat, max_repeat (default seq_len)], A = l random tokens (from
    `gpt.repeated_tokens`), after 2 (seq_len - l) random noise tokens, so neither the copy's
    start nor its offset is a fixed position."""
    g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    rows = []
    hi = seq_len if max_repeat is None else max_repeat
    for n in torch.randint(min_repeat, hi + 1, (batch,), generator=g).tolist():
        rep = gpt.repeated_tokens(1, n, d_vocab, generator=g, bos=BOS)[0]      # [BOS, A, A]
        noise = torch.randint(1, d_vocab, (2 * (seq_len - n),), generator=g)
        rows.append(torch.cat([rep[:1], noise, rep[1:]]))
    return torch.stack(rows)


class Batches:
    """(x, y) training pairs forever, from a seeded generator: `shifted_repeats` rows, or plain
    `repeated_tokens` with one fixed length (`fixed=True`, the shortcut's data)."""

    def __init__(self, batch: int, seed: int, *, fixed: bool = False) -> None:
        self.batch, self.seed, self.fixed = batch, seed, fixed

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            t = (gpt.repeated_tokens(self.batch, SEQ_LEN, D_VOCAB, generator=g, bos=BOS)
                 if self.fixed else shifted_repeats(self.batch, SEQ_LEN, D_VOCAB, g))
            yield t[:, :-1], t[:, 1:]


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Evaluation rows whose repeat is known: `repeat` tokens, the second copy starting at
    position `copy_start` (the first copy at copy_start - repeat)."""

    name: str
    tokens: Tensor
    repeat: int
    copy_start: int


def eval_sets(seed: int) -> list[EvalSet]:
    """From generators no training run uses:
      - "eval": plain `repeated_tokens` [BOS, A, A] with the usual length L;
      - "other_len": [BOS, noise, A, A] with a repeat of OTHER_LEN, in the main model's
        training distribution, where a positional offset learned for L is wrong;
      - "plain_other_len": [BOS, A, A] with OTHER_LEN: the copy right after BOS, a row shorter
        than any training row (the main model never saw a length-10 repeat this early)."""
    g = 10_000 + seed
    short = 2 * (SEQ_LEN - OTHER_LEN)
    return [
        EvalSet("eval", gpt.repeated_tokens(EVAL_BATCH, SEQ_LEN, D_VOCAB, generator=g, bos=BOS,
                                                 device="cpu"),
                SEQ_LEN, SEQ_LEN + 1),
        EvalSet("other_len", shifted_repeats(EVAL_BATCH, SEQ_LEN, D_VOCAB, g,
                                             min_repeat=OTHER_LEN, max_repeat=OTHER_LEN),
                OTHER_LEN, 1 + short + OTHER_LEN),
        EvalSet("plain_other_len",
                gpt.repeated_tokens(EVAL_BATCH, OTHER_LEN, D_VOCAB, generator=g, bos=BOS,
                                    device="cpu"), OTHER_LEN, OTHER_LEN + 1),
    ]


# ---------------------------------------------------------------- scores


def patterns(model: gpt.GPT, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, attention patterns [layer batch head query key]) of one forward pass."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    return logits, torch.stack([cache["pattern", i] for i in range(model.cfg.n_layers)])


def loss_per_position(logits: Tensor, tokens: Tensor) -> Tensor:
    """[pos - 1]: mean cross-entropy of predicting tokens[:, t + 1] from position t."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0].mean(0)


def halves(per_pos: Tensor, copy_start: int) -> tuple[float, float]:
    """(loss before the copy, loss on the copy). The prediction made at position t is of token
    t + 1, so the second copy's tokens 2..l are predicted at t = copy_start.. (its first token,
    predicted at copy_start - 1, cannot be known: the copy has not started); everything
    predicted before that is random."""
    return float(per_pos[:copy_start - 1].mean()), float(per_pos[copy_start:].mean())


def analyse(model: gpt.GPT, seed: int) -> dict[str, Any]:
    """Scores and losses on every evaluation set."""
    out: dict[str, Any] = {}
    for e in eval_sets(seed):
        logits, pat = patterns(model, e.tokens)
        per_pos = loss_per_position(logits, e.tokens)
        first, second = halves(per_pos, e.copy_start)
        ind = gpt.induction_scores_from(pat, e.repeat, e.copy_start)
        prev = gpt.prev_token_scores_from(pat)
        best = divmod(int(ind.argmax()), ind.shape[1])
        out[e.name] = {"repeat": e.repeat, "copy_start": e.copy_start,
                       "first_half_loss": first, "second_half_loss": second,
                       "loss_per_position": per_pos, "induction_scores": ind,
                       "prev_token_scores": prev,
                       "best_induction_head": f"L{best[0]}H{best[1]}",
                       "best_induction_score": float(ind.max()),
                       "layer0_best_prev_token_head": f"L0H{int(prev[0].argmax())}",
                       "layer0_best_prev_token_score": float(prev[0].max())}
    return out


def ablate(model: gpt.GPT, e: EvalSet, heads: list[tuple[int, int]]) -> float:
    """Loss on the copy with the given (layer, head)s' outputs zeroed (their hook_z slices)."""
    def zero(h: list[int]):
        def hook(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            z[:, :, h] = 0.0
            return z
        return hook
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = [(f"blocks.{layer}.attn.hook_z", zero(hs)) for layer, hs in by_layer.items()]
    with torch.no_grad():
        logits = model.run_with_hooks(e.tokens, fwd_hooks=hooks)
    return halves(loss_per_position(logits, e.tokens), e.copy_start)[1]


# ---------------------------------------------------------------- figures


def loss_by_position_figure(curves: dict[str, Tensor], e: EvalSet, title: str) -> Figure:
    """Mean loss per predicted position for each model on the evaluation set `e`."""
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    a = fig.subplots()
    for (name, y), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:green")):
        a.plot(torch.arange(1, len(y) + 1), y, "o-", ms=2.5, lw=1.2, color=color, label=name)
    n = e.tokens.shape[1] - 1
    a.axhline(math.log(D_VOCAB), color="0.4", lw=0.8, ls="--")
    a.text(n, math.log(D_VOCAB) + 0.1, f"ln {D_VOCAB} (guessing)", fontsize=7, color="0.3",
           ha="right", va="bottom")
    for x, what in ((e.copy_start - e.repeat, "first copy starts"),
                    (e.copy_start, "second copy starts")):
        a.axvline(x - 0.5, color="0.6", lw=0.8, ls=":")
        a.text(x - 0.7, 0.5, what, fontsize=7, color="0.3", rotation=90, ha="right",
               va="center", transform=a.get_xaxis_transform())
    a.set_xlabel("position of the predicted token")
    a.set_ylabel("cross-entropy (nats)")
    a.set_title(title, fontsize=10)
    a.legend(fontsize=8, frameon=False, loc="best")
    for side in ("top", "right"):
        a.spines[side].set_visible(False)
    return fig


# ---------------------------------------------------------------- the run


def _train(model_cfg: gpt.GPTConfig, train_cfg: gpt.GPTTrainConfig, data: Batches, seed: int,
           progress: bool) -> tuple[gpt.GPT, gpt.GPTTrainResult]:
    model = gpt.GPT(model_cfg, device="cpu")
    tokens = eval_sets(seed)[0].tokens[:64]
    val = [(tokens[:, :-1], tokens[:, 1:])]          # plain repeated sequences of length L
    result = gpt.train(model, data, train_cfg, val_data=val, device="cpu", progress=progress)
    return model, result


def _fmt(scores: Tensor) -> list[list[float]]:
    return [[round(x, 2) for x in row] for row in scores.tolist()]


def _headline(a: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(x, 4) if isinstance(x, float) else x) for k, x in a.items()
            if k not in ("loss_per_position", "induction_scores", "prev_token_scores")}


def _line(a: dict[str, Any]) -> str:
    return (f"best induction {a['best_induction_head']} ({a['best_induction_score']:.2f}), "
            f"L0 prev-token {a['layer0_best_prev_token_score']:.2f}, copy loss "
            f"{a['second_half_loss']:.3f}")


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("gpt_induction", out=out)
    r.save_config(cfg)
    sets = {e.name: e for e in eval_sets(seed)}
    t0 = time.perf_counter()
    model, result = _train(cfg["model"], cfg["train"], Batches(32, seed), seed, progress)
    seconds = time.perf_counter() - t0
    main = analyse(model, seed)
    ev = main["eval"]
    ind, prev = ev["induction_scores"], ev["prev_token_scores"]
    best_layer, best_head = divmod(int(ind.argmax()), ind.shape[1])
    prev_head = int(prev[0].argmax())
    n_heads = cfg["model"].n_heads
    e = sets["eval"]
    ablations = {
        "none": ev["second_half_loss"],
        f"best induction head L{best_layer}H{best_head}": ablate(model, e,
                                                               [(best_layer, best_head)]),
        "all layer-1 heads": ablate(model, e, [(1, h) for h in range(n_heads)]),
        f"best previous-token head L0H{prev_head}": ablate(model, e, [(0, prev_head)]),
        "all layer-0 heads": ablate(model, e, [(0, h) for h in range(n_heads)]),
    }
    r.save_model(model, "model")

    t1 = time.perf_counter()
    short_model, short_result = _train(cfg["shortcut_model"], cfg["shortcut_train"],
                                       Batches(32, seed, fixed=True), seed, progress)
    short = analyse(short_model, seed)
    short_seconds = time.perf_counter() - t1
    r.save_model(short_model, "shortcut_model")

    learned = None
    if cfg["learned_positions_comparison"]:
        lcfg = dataclasses.replace(cfg["model"], positional="learned")
        learned_model, learned_result = _train(lcfg, cfg["train"], Batches(32, seed), seed,
                                               progress)
        learned = {**analyse(learned_model, seed),
                   "history": learned_result.history.to_dict()}

    metrics: dict[str, Any] = {
        "induction_model": {**main, "history": result.history.to_dict(),
                            "ablation_copy_loss": ablations, "train_seconds": seconds},
        "shortcut_model": {**short, "history": short_result.history.to_dict(),
                           "train_seconds": short_seconds},
        "learned_positions_model": learned,
        "uniform_loss": math.log(D_VOCAB),
        "headline": {"induction_model": {k: _headline(x) for k, x in main.items()},
                     "shortcut_model": {k: _headline(x) for k, x in short.items()}},
    }
    summary = {
        "best induction head (score)": f"{ev['best_induction_head']} ({ind.max():.2f}); "
                                       f"layer-1 scores {_fmt(ind)[1]}",
        "layer-0 previous-token head (score)": f"{ev['layer0_best_prev_token_head']} "
                                               f"({ev['layer0_best_prev_token_score']:.2f}); "
                                               f"layer-0 scores {_fmt(prev)[0]}",
        "loss before the copy -> on the copy (nats)":
            f"{ev['first_half_loss']:.3f} -> {ev['second_half_loss']:.3f} "
            f"(ln {D_VOCAB} = {math.log(D_VOCAB):.3f})",
        "ablations (copy loss)": "; ".join(f"{k}: {x:.2f}" for k, x in ablations.items()),
        f"repeat length {OTHER_LEN} after noise": _line(main["other_len"]),
        f"repeat length {OTHER_LEN} right after BOS": _line(main["plain_other_len"]),
        "shortcut (fixed L, learned positions)": _line(short["eval"]),
        f"shortcut at repeat length {OTHER_LEN} after noise": _line(short["other_len"]),
        "training time": f"{seconds:.1f}s ({cfg['train'].steps} steps) + shortcut "
                         f"{short_seconds:.1f}s ({cfg['shortcut_train'].steps} steps)",
    }
    if learned is not None:
        summary["same data, learned positions"] = _line(learned["eval"])
    metrics["summary"] = summary

    # ---- figures
    fig = plot.loss_curves(result, smooth=5, title="training on shifted repeats, validation on "
                           "plain ones")
    a = fig.axes[0]
    # Of the 2L predictions in a plain row, L + 1 are random (the first copy, and the second
    # copy's first token); a perfect induction model predicts the other L - 1 exactly.
    floor = (SEQ_LEN + 1) / (2 * SEQ_LEN) * math.log(D_VOCAB)
    a.axhline(floor, color="0.5", lw=0.7, ls=":")
    a.text(0, floor + 0.03, "validation floor: every predictable token predicted", fontsize=7,
           color="0.3", va="bottom")
    r.save_figure(fig, "loss_curves")
    r.save_figure(plot.head_scores_heatmap(ind, vmin=0, vmax=1, label="induction score",
                                           title="induction score (attention to t - L + 1)"),
                  "induction_scores")
    r.save_figure(plot.head_scores_heatmap(prev, vmin=0, vmax=1, label="previous-token score",
                                           title="previous-token score (attention to t - 1)"),
                  "prev_token_scores")
    show = e.tokens[:1]
    labels = ["BOS"] + [str(t) for t in show[0, 1:].tolist()]
    _, cache = model.run_with_cache(show)
    fig = plot.attention_heads(cache, layer=0, tokens=labels)
    fig.suptitle("layer 0: previous-token head(s), the diagonal just below the main one",
                 fontsize=10)
    r.save_figure(fig, "attention_layer0")
    fig = plot.attention_heads(cache, layer=1, tokens=labels)
    fig.suptitle(f"layer 1: induction heads, the stripe at offset -(L-1) = -{SEQ_LEN - 1} "
                 "in the second copy", fontsize=10)
    r.save_figure(fig, "attention_layer1")
    _, scache = short_model.run_with_cache(show)
    fig = plot.attention_heads(scache, layer=0, tokens=labels)
    fig.suptitle("shortcut model (fixed L, learned positions), layer 0: the same stripe, "
                 "found by position alone", fontsize=10)
    r.save_figure(fig, "shortcut_attention_layer0")
    for name, title in (("eval", f"plain repeats, L = {SEQ_LEN}"),
                        ("other_len", f"repeat length {OTHER_LEN} after noise")):
        curves = {"induction model": main[name]["loss_per_position"],
                  "shortcut model": short[name]["loss_per_position"]}
        if learned is not None:
            curves["same data, learned positions"] = learned[name]["loss_per_position"]
        r.save_figure(loss_by_position_figure(curves, sets[name], f"{title}: loss per position"),
                      f"loss_by_position_{name}")
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
