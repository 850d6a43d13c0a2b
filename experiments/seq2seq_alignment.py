"""Does a trained encoder–decoder's cross-attention follow the known alignment?

Two tasks whose alignment is known exactly (`superpose.transformer.tasks`): number words
("4072" -> "four thousand seventy two"; each word aligns to the digit(s) it spells, a teen to
both of its digits, "hundred" to the hundreds digit, "thousand" to the thousands digit) and
string reversal (target t aligns to source L - 1 - t), the second a task nothing here was
tuned on. The model is one shape for both: `transformer.Seq2Seq`, d_model 64, 2 encoder + 2
decoder layers, 4 heads, pre-LN, learned positions; teacher forcing with
`transformer.train_seq2seq` (AdamW, lr 3e-3, batch 64, warm-up then cosine).

Measured, on 512 held-out pairs: exact match of greedy and beam-4 decoding, and for every
cross-attention head (`decoder.{i}.cross_attn.hook_pattern`, [batch head tgt src]) the
`tasks.alignment_score`: the attention mass on the aligned source positions, the fraction of
target rows whose most-attended source position is aligned, and chance (uniform attention
over the real source positions).

The claim, "the learned cross-attention follows the known alignment", is scored per task and
seed as: the best head's mass >= CLAIM_RATIO (2) x chance. Per-seed numbers (one CPU thread;
number words 400 steps, reversal 300 steps, the quick settings):

    task          seed  exact (greedy/beam)  best head  mass  argmax  chance  mass/chance
    number words  0     1.000 / 1.000        L0H1       0.80  0.83    0.27    3.0
    number words  1     0.998 / 0.998        L1H0       0.76  0.77    0.28    2.7
    number words  2     1.000 / 1.000        L1H1       0.76  0.77    0.27    2.8
    reversal      0     1.000 / 1.000        L1H1       0.91  1.00    0.17    5.3
    reversal      1     1.000 / 1.000        L1H1       0.85  0.98    0.17    5.0

Full mode (600 + 600 steps, 512 held-out pairs), seeds 0 / 1 / 2: exact match 1.000 greedy
and beam-4 on both tasks and every seed; number words best head L0H1 / L1H0 / L1H3, mass
0.76 / 0.77 / 0.79 vs chance 0.26-0.27 (2.9x each); reversal best L1H1 / L1H1 / L1H2, mass
0.92 each vs 0.17 (5.3x-5.5x). So the claim holds with room (2.7x-5.5x chance against the
threshold 2x, chosen below every measured ratio: 3x would already fail number words seed 1
at 400 steps, 2.7x), with two limits the metrics record:
  - *which* layer aligns is not fixed: on number words seed 0 it was layer 0, on seeds 1-2
    layer 1; on reversal always layer 1, and layer 0 sits at chance (mean 0.18-0.20 vs
    0.17): its cross-attention does something else.
  - number words' best head plateaus near 0.8, not 1. `mass_by_word` splits its mass by
    target word: digit, teen and tens words put 0.93-0.99 on their digits; "hundred" and
    "thousand", aligned by the task to the digit that names them, put 0.09-0.23 there and
    0.45-0.78 on the source's closing [SEP], whose position is the number's length: what
    decides that "thousand" comes next is how many digits there are. The alignment written
    down is one defensible choice; for the scale words the model found another.

Quick mode: one seed, number words 400 steps + reversal 300 steps (about 30 s of CPU on one
thread). Full mode: three seeds (seed, seed + 1, seed + 2), 600 + 600 steps (about 2 minutes).

    python experiments/seq2seq_alignment.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from superpose import plot, runs, transformer
from superpose.transformer import tasks

CLAIM_RATIO = 2.0       # best head's mass >= CLAIM_RATIO x chance: "follows the alignment"
EVAL_BATCH = 512
BEAM = 4
EXAMPLE = {"number_words": 7316, "reverse": "cafebdhg"}   # the pairs drawn in the figures
TASKS = ("number_words", "reverse")
TITLES = {"number_words": "number words", "reverse": "reversal"}


def make_task(name: str) -> tasks.Seq2SeqTask:
    if name == "number_words":
        return tasks.NumberWordsTask(max_value=9999)
    return tasks.ReverseTask(alphabet_size=10, min_len=1, max_len=8)


def configs(quick: bool, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"quick": quick, "seed": seed,
                           "seeds": [seed] if quick else [seed, seed + 1, seed + 2],
                           "claim_ratio": CLAIM_RATIO, "eval_batch": EVAL_BATCH, "beam": BEAM,
                           "tasks": {}}
    steps = {"number_words": 400 if quick else 600, "reverse": 300 if quick else 600}
    for name in TASKS:
        task = make_task(name)
        tt = task.tgt_tokenizer
        out["tasks"][name] = {
            "task": repr(task),
            "model": transformer.Seq2SeqConfig(
                d_vocab=task.src_vocab_size, d_vocab_tgt=task.tgt_vocab_size, d_model=64,
                n_heads=4, n_layers=2, n_ctx=task.max_src_len, n_ctx_tgt=task.max_tgt_len + 1,
                norm="pre", bos_id=tt.bos_id, eos_id=tt.eos_id, pad_id=tt.pad_id, seed=seed),
            "train": transformer.TrainConfig(steps=steps[name], batch_size=64, lr=3e-3,
                                             seed=seed),
        }
    return out


# ---------------------------------------------------------------- measurement


def cross_patterns(model: transformer.Seq2Seq, b: tasks.Seq2SeqBatch) -> list[Tensor]:
    """One [batch head tgt src] cross-attention pattern per decoder layer, teacher-forced."""
    n = model.cfg.n_decoder_layers
    names = [f"decoder.{i}.cross_attn.hook_pattern" for i in range(n)]
    with torch.no_grad():
        _, cache = model.run_with_cache(b.src, b.tgt_in, src_attention_mask=b.src_mask,
                                        tgt_attention_mask=b.tgt_mask, names_filter=names)
    return [cache[name] for name in names]


def mass_by_word(pattern: Tensor, b: tasks.Seq2SeqBatch, task: tasks.Seq2SeqTask
                 ) -> dict[str, dict[str, float]]:
    """One head's attention ([batch tgt src] pattern) per target token (the word or character
    predicted at that row): the mean mass on the aligned source positions, the mean mass on
    the source's closing [SEP] (whose position is the source's length), and the row count."""
    mass = (pattern * b.alignment.to(pattern.dtype)).sum(-1)            # [batch tgt]
    sep_pos = b.src_mask.sum(-1) - 1                                    # right padding
    sep = pattern.gather(-1, sep_pos[:, None, None].expand(-1, pattern.shape[1], 1))[..., 0]
    rows = b.tgt_mask & b.alignment.any(-1)
    out: dict[str, list[tuple[float, float]]] = {}
    for i, t in rows.nonzero().tolist():
        word = task.tgt_tokenizer.decode([int(b.tgt_out[i, t])])
        out.setdefault(word, []).append((float(mass[i, t]), float(sep[i, t])))
    return {w: {"mass": round(sum(x for x, _ in xs) / len(xs), 4),
                "sep_mass": round(sum(y for _, y in xs) / len(xs), 4), "rows": len(xs)}
            for w, xs in sorted(out.items(), key=lambda kv: -len(kv[1]))}


SCALE_WORDS = ("hundred", "thousand")


def word_groups(by_word: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """`mass_by_word` pooled into scale words (hundred, thousand) and the rest."""
    out = {}
    for group, keep in (("scale_words", lambda w: w in SCALE_WORDS),
                        ("other_words", lambda w: w not in SCALE_WORDS)):
        items = [x for w, x in by_word.items() if keep(w)]
        n = sum(x["rows"] for x in items)
        if n:
            out[group] = {k: round(sum(x[k] * x["rows"] for x in items) / n, 4)
                          for k in ("mass", "sep_mass")} | {"rows": n}
    return out


def evaluate(model: transformer.Seq2Seq, task: tasks.Seq2SeqTask, seed: int) -> dict[str, Any]:
    """Exact match (greedy and beam) and every head's alignment score on held-out pairs."""
    b = task.batch(EVAL_BATCH, 10_000 + seed)
    greedy = model.generate(b.src, b.src_mask)
    beam = model.generate(b.src, b.src_mask, beam=BEAM)
    pats = cross_patterns(model, b)
    scores = [tasks.alignment_score(p, b.alignment, tgt_mask=b.tgt_mask, src_mask=b.src_mask)
              for p in pats]
    mass = torch.stack([s["mass"] for s in scores])                      # [layer head]
    acc = torch.stack([s["argmax_accuracy"] for s in scores])
    chance = float(scores[0]["chance"])
    layer, head = divmod(int(mass.argmax()), mass.shape[1])
    best_mass = float(mass[layer, head])
    return {
        "exact_match_greedy": task.exact_match(greedy, b),
        "exact_match_beam": task.exact_match(beam, b),
        "alignment_mass": mass, "argmax_accuracy": acc, "chance": chance,
        "n_rows": int(scores[0]["n_rows"]),
        "best_head": f"L{layer}H{head}", "best_layer": layer, "best_mass": best_mass,
        "best_argmax_accuracy": float(acc[layer, head]),
        "best_mass_over_chance": best_mass / chance,
        "heads_above_claim": int((mass >= CLAIM_RATIO * chance).sum()),
        "layer_mean_mass": mass.mean(1),
        "follows_alignment": best_mass >= CLAIM_RATIO * chance,
        "mass_by_word": mass_by_word(pats[layer][:, head], b, task),
    } | ({"word_groups": word_groups(mass_by_word(pats[layer][:, head], b, task))}
         if isinstance(task, tasks.NumberWordsTask) else {})


def example_figure(model: transformer.Seq2Seq, task: tasks.Seq2SeqTask, name: str,
                   layer: int, scores: dict[str, Any]) -> Any:
    """Every head of `layer` on one pair, the known alignment boxed."""
    ex = (task.example(EXAMPLE[name]) if name == "number_words"
          else _reverse_example(task, EXAMPLE[name]))
    b = task.collate([ex])
    pat = cross_patterns(model, b)[layer]
    st, tt = task.src_tokenizer, task.tgt_tokenizer
    src = st.to_str_tokens(b.src[0])
    tgt = [f"→{t}" for t in tt.to_str_tokens(b.tgt_out[0])]        # the token each row predicts
    fig = plot.cross_attention(pat, layer=layer, src_tokens=src, tgt_tokens=tgt,
                               alignment=b.alignment[0], max_cols=4)
    m = scores["alignment_mass"][layer]
    fig.suptitle(f"{TITLES[name]}: decoder layer {layer} cross-attention on {ex.src!r} "
                 f"(row = the token it predicts)\nheld-out mass on the boxes per head "
                 f"{', '.join(f'{x:.2f}' for x in m.tolist())}; chance {scores['chance']:.2f}",
                 fontsize=9)
    return fig


def _reverse_example(task: tasks.ReverseTask, text: str) -> tasks.Seq2SeqExample:
    ids = tuple(task.src_tokenizer.base.encode(text).tolist())
    n = len(ids)
    return tasks.Seq2SeqExample(text, text[::-1], ids, ids[::-1],
                                tuple((n - 1 - t,) for t in range(n)))


# ---------------------------------------------------------------- the run


def _r(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, Tensor):
        return [[round(v, 3) for v in row] for row in x.tolist()] if x.dim() == 2 \
            else [round(v, 3) for v in x.tolist()]
    return x


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    cfg = configs(quick, seed)
    r = runs.Run.create("seq2seq_alignment", out=out)
    r.save_config(cfg)
    per_task: dict[str, Any] = {}
    results: dict[str, Any] = {}
    first_models: dict[str, transformer.Seq2Seq] = {}
    for name in TASKS:
        task = make_task(name)
        tc = cfg["tasks"][name]
        seeds = []
        for s in cfg["seeds"]:
            model = transformer.Seq2Seq(dataclasses.replace(tc["model"], seed=s), device="cpu")
            t0 = time.perf_counter()
            res = transformer.train_seq2seq(model, task, dataclasses.replace(tc["train"], seed=s),
                                            progress=progress)
            seconds = time.perf_counter() - t0
            ev = evaluate(model, task, s)
            seeds.append({"seed": s, "train_seconds": round(seconds, 2),
                          "final_loss": float(res.history.loss[-1]),
                          **{k: _r(x) for k, x in ev.items()},
                          "history": res.history.to_dict()})
            if s == cfg["seeds"][0]:
                first_models[name], results[name] = model, res
                per_task.setdefault("_eval0", {})[name] = ev
        per_task[name] = {
            "seeds": seeds,
            "follows_alignment_every_seed": all(x["follows_alignment"] for x in seeds),
            "min_best_mass_over_chance": min(x["best_mass_over_chance"] for x in seeds),
            "min_exact_match_greedy": min(x["exact_match_greedy"] for x in seeds),
        }
    eval0 = per_task.pop("_eval0")

    for name, model in first_models.items():
        r.save_model(model, f"model_{name}")
    holds = all(per_task[n]["follows_alignment_every_seed"] for n in TASKS)
    verdict = {
        "claim": "the learned cross-attention follows the known alignment",
        "rule": f"best head's mass on the aligned source positions >= {CLAIM_RATIO:g} x "
                "chance, on every task and seed",
        "status": "supported" if holds else "not supported",
        "min_ratio": {n: round(per_task[n]["min_best_mass_over_chance"], 2) for n in TASKS},
    }

    # ---- figures
    fig = plot.loss_curves({TITLES[n]: results[n] for n in TASKS}, smooth=3,
                           title=f"teacher-forced cross-entropy (seed {cfg['seeds'][0]})")
    r.save_figure(fig, "loss_curves")
    for name in TASKS:
        ev = eval0[name]
        r.save_figure(example_figure(first_models[name], make_task(name), name,
                                     ev["best_layer"], ev),
                      f"cross_attention_{name}")
        r.save_figure(plot.head_scores_heatmap(
            ev["alignment_mass"], vmin=0, vmax=1, label="aligned mass",
            title=f"{TITLES[name]}: cross-attention mass on the aligned\nsource "
                  f"positions, per head (chance {ev['chance']:.2f})"), f"alignment_mass_{name}")

    summary: dict[str, str] = {}
    for name in TASKS:
        for x in per_task[name]["seeds"]:
            summary[f"{TITLES[name]}, seed {x['seed']}"] = (
                f"exact match {x['exact_match_greedy']:.3f} greedy / "
                f"{x['exact_match_beam']:.3f} beam-{BEAM}; best head {x['best_head']} mass "
                f"{x['best_mass']:.2f} (argmax {x['best_argmax_accuracy']:.2f}) vs chance "
                f"{x['chance']:.2f} = {x['best_mass_over_chance']:.1f}x; layer means "
                f"{x['layer_mean_mass']}; {x['train_seconds']:.0f}s")
    for x in per_task["number_words"]["seeds"]:
        g = x["word_groups"]
        summary[f"number words, seed {x['seed']}, best head by word"] = (
            f"digit/teen/tens words {g['other_words']['mass']:.2f} on their digits; "
            f"'hundred'/'thousand' {g['scale_words']['mass']:.2f} on their digit, "
            f"{g['scale_words']['sep_mass']:.2f} on the source's [SEP]")
    summary["claim: cross-attention follows the alignment"] = (
        f"{verdict['status']} (best/chance >= {CLAIM_RATIO:g}: min "
        + ", ".join(f"{TITLES[n]} {v:.1f}x" for n, v in verdict["min_ratio"].items()) + ")")
    metrics = {"tasks": per_task, "verdict": verdict, "summary": summary}
    r.save_metrics(metrics)            # last: figures and weights are on disk
    metrics["run_dir"] = str(r.path)
    metrics["eval"] = eval0
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
