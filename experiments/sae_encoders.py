"""SAEs on the encoder's residual stream and on the encoder–decoder's cross-attention output.

(a) The char-level MLM encoder of encoder_mlm.py (post-LN, d_model 64, 2 layers; BERT
masking on windows of random length, so every batch is padded) is trained, and a TopK SAE is
trained on `blocks.{last}.hook_normalized_resid_post` (the post-LN block output that the MLM
head reads; `hook_resid_post` for a pre-LN encoder), rows taken by ActivationStore at real
positions only (padding never enters the SAE's data), on MLM-masked training windows: the
distribution the model is trained and scored on. Measured on held-out masked windows
(encoder_mlm's fixed evaluation draw): L0, fraction of variance explained, dead and dense
latents, and the masked-character loss with the SAE spliced in (`sae.spliced_losses` on dict
batches, labels from `mlm_mask`) against zero and mean ablation. Feature views
(`features_encoder_<latent>.png`: top contexts shaded per character, activation histogram,
density) for latents picked as in sae_gpt.py, on unpadded masked held-out windows, and per
latent the character it fires on most and how often (`token_precision`), and the share of its
firings at [MASK] positions (`mask_share`).

(b) The NumberWords encoder–decoder of seq2seq_alignment.py ("4072" -> "four thousand seventy
two") is trained, and a TopK SAE on `decoder.0.hook_cross_attn_out`, target-side rows only
(`tgt_attention_mask`). The same metrics, and the teacher-forced loss with the SAE spliced in.
Then, on a fresh batch of pairs, every alive latent's firing (a binary variable over target
rows) is compared with what each row is about: the predicted word, the previous word, the
target position, the digit at each place of the source (units, tens, hundreds, thousands; "-"
when the number is shorter), the digits the row aligns to, and their place. Per latent and
variable: the best single value's precision P(value | fires) and recall P(fires | value), and
the mutual information I(fire; variable) over the latent's entropy H(fire) (1: the variable
decides the firing). A *digit feature* ("the tens digit is 7") would be a latent whose best
source digit's precision is high (>= 0.8) while its firings spread over several predicted
words (best word precision < 0.8), i.e. information about the source that the current word
does not carry: I(fire; digit | word) is reported too. Feature views
(`features_seq2seq_<latent>.png`) draw each pair as "digits → words", the predicted word of
the firing row boxed, shading = the latent's activation at each target row; `seq2seq_mi.png`
is the latent x variable map of I/H.

Quick mode (one thread, 20-25 s; ~75 s under pytest's runtime type checks): encoder 300 MLM
steps, Seq2Seq 200 steps; SAEs 4x wide (256 latents), k 8, on 60k / 40k rows. Full mode:
3,000 and 600 steps, SAEs 8x wide, k 16 / 8, 1M / 300k rows (not yet run).

Quick-mode results, seed 0:
  - encoder (masked accuracy 0.363 vs unigram 0.319 after 300 steps): FVE 0.977, L0 8.0,
    19% dead, 7% dense; masked-char CE clean 2.798, SAE 2.799, zero-ablated 3.319, mean 3.180:
    0.998 recovered (0.997 vs mean), KL 0.004. The denominator is small (0.52 nats): this
    briefly trained encoder is not far above the unigram. 55 of 198 alive latents fire >= 90%
    on one character (median top-character share 0.67); e.g. latent 165 is an "i" inside
    words ("se_t[i]on", "perm[i]s", "conf[i]gu"), latent 127 fires at [MASK] positions (79%).
  - seq2seq (exact match 0.961 greedy after 200 steps): FVE 0.969, L0 8.0, 60% dead (the
    cross-attention output of 64 dims over a 33-word task), 12% dense; CE clean 0.042, SAE
    0.043, zero-ablated 1.823, mean 1.210: 0.999 recovered, KL 0.0006. Of 106 alive latents,
    70 are best explained by the predicted word, 15 by the previous word, 8 by the position,
    13 by a source digit's place; 41 fire >= 80% on one predicted word. Digit features by the
    rule above: latents 38, 15, 234 and 50. 38 fires when the digit being spelled is 7
    (precision 0.88) across "seven" (64% of its firings), "seventy" (21%) and "hundred" after
    "seven" (6%); 15 the same for 5 (0.81: "five" 56%, "fifty" 23%, "hundred" 8%); 234 for 8
    (0.86, mostly "eight"). So the cross-attention output carries "the attended digit's value",
    shared across the words that spell it. A place-specific one ("the tens digit is 0", latent
    50, precision 0.82) fired only 27 times (recall 0.04): weak evidence. No "tens digit is
    7"-style latent that ignores the word was found; the source-digit variables explain
    little of most latents (median I/H 0.09-0.12, against 0.32 for the predicted word).

    python experiments/sae_encoders.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import encoder_mlm
import sae_gpt
import seq2seq_alignment
import torch
from matplotlib import colormaps
from torch import Tensor

from superpose import gpt, plot, runs, sae, transformer
from superpose.activations import ActivationStore
from superpose.plot._common import LabFigure
from superpose.sae.evaluation import DENSE
from superpose.transformer import data, tasks
from superpose.transformer.training import mlm_batches

ENC_MODEL = "superpose-char-encoder"
S2S_MODEL = "superpose-number-words"
PLACES = ("units", "tens", "hundreds", "thousands")
DIGIT_FEATURE = 0.8     # best source-digit precision >= this, best word precision < this
VARIABLES = ("word", "prev_word", "position", *PLACES, "aligned_digits", "aligned_place")


def configs(quick: bool, seed: int) -> dict[str, Any]:
    return {
        "quick": quick, "seed": seed,
        "encoder": {"steps": 300 if quick else 3_000, "expansion": 4 if quick else 8,
                    "k": 8 if quick else 16, "n_samples": 60_000 if quick else 1_000_000,
                    "batch_size": 1024 if quick else 4096, "source_batch": 64,
                    "n_feature_seqs": 256 if quick else 1024, "n_feature_views": 3 if quick
                    else 6, "top_k": 8 if quick else 12, "context": (16, 4)},
        "seq2seq": {"steps": 200 if quick else 600, "expansion": 4 if quick else 8,
                    "k": 8, "n_samples": 40_000 if quick else 300_000,
                    "batch_size": 1024 if quick else 4096, "source_batch": 256,
                    "hook": "decoder.0.hook_cross_attn_out",
                    "n_eval_pairs": 512, "n_analysis_pairs": 2048 if quick else 8192,
                    "n_feature_views": 3 if quick else 6, "top_k": 8 if quick else 12},
    }


def _pad_to(x: Tensor, n: int, value: int | bool) -> Tensor:
    return torch.cat([x, x.new_full((x.shape[0], n - x.shape[1]), value)], 1)


def train_topk(model: Any, hook: str, source: Any, spec: dict[str, Any], model_name: str,
               seed: int, progress: bool) -> tuple[sae.SAE, dict[str, Any]]:
    """A TopK SAE on mean-norm-scaled rows at `hook` (dict batches: real positions only); the
    scale is folded in at the end, so the SAE takes raw activations."""
    bs = spec["batch_size"]
    store = ActivationStore(model, hook, source, batch_size=bs, buffer_size=8 * bs, seed=seed,
                            device="cpu", normalize="mean_norm")
    d_in = store.d_in
    s = sae.create(sae.SAEConfig(d_in=d_in, d_sae=spec["expansion"] * d_in,
                                 architecture="topk", k=spec["k"], hook_name=hook,
                                 model_name=model_name, seed=seed), device="cpu")
    steps = spec["n_samples"] // bs
    r = sae.train(s, store, steps=steps, progress=progress, seed=seed)
    s.fold_activation_scale(store.scaling_factor)
    return s, {"steps": steps, "samples": r.samples, "seconds": r.seconds,
               "scale": store.scaling_factor, "train_frac_dead": r.frac_dead}


def evaluate(model: Any, s: sae.SAE, hook: str, batches: list[dict[str, Tensor]],
             full: dict[str, Tensor]) -> dict[str, Any]:
    """FVE, L0, dead/dense over the real rows of `batches`; spliced-in losses on `full`."""
    store = ActivationStore(model, hook, batches, batch_size=4096, device="cpu")
    ev = sae.evaluate(s, store, n_batches=None,
                      model_fn=sae.splice_fn(model, hook, full, batch_size=128, progress=False))
    return {"l0": ev.l0, "fve": ev.fve, "mse": ev.mse, "cosine": ev.cosine,
            "frac_dead": ev.frac_dead, "frac_dense": ev.frac_dense, "spliced": ev.extra,
            "density": ev.density}


# ---------------------------------------------------------------- (a) the MLM encoder


def encoder_part(r: runs.Run, cfg: dict[str, Any], quick: bool, seed: int,
                 progress: bool) -> dict[str, Any]:
    ecfg = encoder_mlm.configs(quick, seed)
    corpus = gpt.load_corpus(ecfg["corpus"]["name"], max_chars=ecfg["corpus"]["max_chars"])
    tok = data.SpecialTokenizer(gpt.CharTokenizer.fit(corpus))
    ecfg = encoder_mlm.configs(quick, seed, tok.vocab_size)
    n_ctx, min_len = ecfg["model"].n_ctx, ecfg["min_len"]
    enc = transformer.Encoder(ecfg["model"], device="cpu", tokenizer=tok)
    train_ids, val_ids = tok.encode(corpus.train), tok.encode(corpus.val)
    t0 = time.perf_counter()
    transformer.train_mlm(enc, train_ids, tok,
                          dataclasses.replace(ecfg["train"], steps=cfg["steps"]),
                          min_len=min_len, mask_prob=ecfg["mask_prob"], progress=progress)
    train_seconds = time.perf_counter() - t0
    enc.eval()
    tok.save(r.path / "encoder_tokenizer.json")
    r.save_model(enc, "encoder")
    ev_batches = encoder_mlm.eval_batches(val_ids, tok, n_ctx, min_len, 10_000 + seed)
    scores = encoder_mlm.masked_scores(enc, ev_batches)
    unigram = encoder_mlm.unigram_scores(train_ids, ev_batches, tok.vocab_size)

    last = ecfg["model"].n_layers - 1
    hook = (f"blocks.{last}.hook_normalized_resid_post" if ecfg["model"].norm == "post"
            else f"blocks.{last}.hook_resid_post")
    g = torch.Generator().manual_seed(seed + 1)

    def masked(ids: Tensor, n: int, lo: int) -> dict[str, Tensor]:
        t, m = mlm_batches(ids, tok, batch_size=n, seq_len=n_ctx, generator=g, min_len=lo)
        x, y = data.mlm_mask(t, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                             attention_mask=m, special_ids=tok.special_ids, generator=g)
        return {"tokens": x, "attention_mask": m, "labels": y}

    s, info = train_topk(enc, hook, lambda: masked(train_ids, cfg["source_batch"], min_len),
                         cfg, ENC_MODEL, seed, progress)
    s.save(r.path / "sae_encoder")
    dicts = [{"tokens": x, "attention_mask": m, "labels": y} for x, m, y in ev_batches]
    full = {"tokens": torch.cat([_pad_to(d["tokens"], n_ctx, tok.pad_id) for d in dicts]),
            "attention_mask": torch.cat([_pad_to(d["attention_mask"], n_ctx, False)
                                         for d in dicts]),
            "labels": torch.cat([_pad_to(d["labels"], n_ctx, -100) for d in dicts])}
    ev = evaluate(enc, s, hook, dicts, full)

    # ---- feature views, on unpadded masked held-out windows
    fw = masked(val_ids, cfg["n_feature_seqs"], n_ctx - 2)["tokens"]
    st = sae.latent_stats(enc, s, hook, fw, range(s.cfg.d_sae), k=cfg["top_k"],
                          context=cfg["context"], progress=False)
    with torch.no_grad():
        z = s.encode(sae.splice.capture(enc, hook, fw).flatten(0, 1))
    fires = (z > 0).double()                                           # [rows, d_sae]
    onehot = torch.nn.functional.one_hot(fw.flatten(), tok.vocab_size).double()
    per_token = fires.T @ onehot                                       # [d_sae, vocab]
    n_fire = fires.sum(0)
    picks = sae_gpt.pick_latents(st, fw, cfg["n_feature_views"])
    views = {}
    for i in picks:
        nf = float(n_fire[i])
        best = int(per_token[i].argmax())
        views[i] = {
            "density": float(st.density[i]), "max_activation": float(st.top[i].values[0]),
            "top_token": tok.decode([best]) if best not in tok.special_ids
            else tok.to_str_tokens([best])[0],
            "token_precision": float(per_token[i, best]) / nf,
            "mask_share": float(per_token[i, tok.mask_id]) / nf,
            "top_contexts": ["".join((b, f"[{t}]", a)) for b, t, a in
                             st.top[i].strings(tok)[:5]]}
        fig = plot.feature_view(st, i, tokenizer=tok, n_contexts=cfg["top_k"],
                                title=f"encoder SAE latent {i} ({hook})")
        r.save_figure(fig, f"features_encoder_{i}")
    alive = n_fire > 0
    prec = (per_token.max(1).values / n_fire.clamp(min=1))[alive]
    return {
        "hook": hook, "d_in": s.cfg.d_in, "d_sae": s.cfg.d_sae, "k": s.cfg.k, **info,
        "model_steps": cfg["steps"], "model_train_seconds": train_seconds,
        "masked_accuracy": scores["accuracy"], "masked_loss": scores["loss"],
        "unigram_accuracy": unigram["accuracy"], "unigram_loss": unigram["loss"],
        **{k: x for k, x in ev.items() if k != "density"},
        "single_token_latents": int((prec >= 0.9).sum()), "alive_latents": int(alive.sum()),
        "median_token_precision": float(prec.median()) if len(prec) else float("nan"),
        "feature_views": views}


# ---------------------------------------------------------------- (b) the encoder–decoder


def two_sided(b: tasks.Seq2SeqBatch) -> dict[str, Tensor]:
    return {"src": b.src, "tgt": b.tgt_in, "src_attention_mask": b.src_mask,
            "tgt_attention_mask": b.tgt_mask, "labels": b.tgt_out}


def row_variables(b: tasks.Seq2SeqBatch, task: tasks.NumberWordsTask) -> dict[str, list[str]]:
    """What each real target row (batch-major, position order, as `act[tgt_mask]`) is about."""
    tt = task.tgt_tokenizer
    words = tt.to_str_tokens(list(range(tt.vocab_size)))
    out: dict[str, list[str]] = {k: [] for k in VARIABLES}
    for i, t in b.tgt_mask.nonzero().tolist():
        digits = b.examples[i].src
        out["word"].append(words[int(b.tgt_out[i, t])])
        out["prev_word"].append(words[int(b.tgt_in[i, t])])
        out["position"].append(str(t))
        for p, name in enumerate(PLACES):
            out[name].append(digits[-1 - p] if len(digits) > p else "-")
        al = b.alignment[i, t].nonzero().flatten().tolist()
        out["aligned_digits"].append("".join(digits[s] for s in al) or "none")
        out["aligned_place"].append("+".join(PLACES[len(digits) - 1 - s] for s in al)
                                    or "none")
    return out


def _entropy(p: Tensor) -> Tensor:
    return -(p * p.clamp(min=1e-300).log2()).sum(-1)


def association(fires: Tensor, labels: list[str], skip: str | None = None
                ) -> dict[str, Tensor | list[str]]:
    """Per latent, against one categorical variable over rows: the best value by precision
    P(value | fires) (never `skip`, e.g. "-" for a place the number does not have), its
    precision and recall P(fires | value), and I(fire; variable) in bits (over every value).
    `fires` [rows, d_sae] bool."""
    values = sorted(set(labels))
    code = torch.tensor([values.index(x) for x in labels])
    onehot = torch.nn.functional.one_hot(code, len(values)).double()  # [rows, V]
    f = fires.double()
    n = f.shape[0]
    n11 = f.T @ onehot                                                 # [d_sae, V]
    nv = onehot.sum(0)                                                 # [V]
    nf = f.sum(0)                                                      # [d_sae]
    joint = torch.stack([n11, nv - n11], -1) / n                       # [d_sae, V, 2]
    pf = torch.stack([nf, n - nf], -1) / n                             # [d_sae, 2]
    pv = nv / n
    ratio = joint / (pf[:, None, :] * pv[None, :, None]).clamp(min=1e-300)
    mi = (joint * ratio.clamp(min=1e-300).log2()).where(joint > 0, 0.0).sum((1, 2))
    prec = n11 / nf[:, None].clamp(min=1)
    # best value: highest precision, ties to the higher recall
    score = prec + 1e-9 * (n11 / nv.clamp(min=1))
    if skip in values:
        score[:, values.index(skip)] = -1.0
    best = score.argmax(1)
    return {"values": values, "best": best, "precision": prec.gather(1, best[:, None])[:, 0],
            "recall": (n11 / nv.clamp(min=1)).gather(1, best[:, None])[:, 0], "mi": mi}


class PairTokenizer:
    """Labels for the feature views' "digits → words" rows: ids below the target vocabulary
    are target words (with a trailing space), then the source vocabulary, then the arrow."""

    def __init__(self, task: tasks.NumberWordsTask) -> None:
        tt, st = task.tgt_tokenizer, task.src_tokenizer
        self.offset = tt.vocab_size
        self.arrow = tt.vocab_size + st.vocab_size
        self.strs = ([w + " " for w in tt.to_str_tokens(list(range(tt.vocab_size)))]
                     + st.to_str_tokens(list(range(st.vocab_size))) + [" → "])

    def to_str_tokens(self, ids: list[int]) -> list[str]:
        return [self.strs[i] for i in ids]


def pair_stats(z: Tensor, b: tasks.Seq2SeqBatch, task: tasks.NumberWordsTask, hook: str,
               latents: list[int], k: int, density: Tensor) -> sae.LatentStats:
    """A `sae.LatentStats` for `latents` whose contexts are whole pairs: the source digits,
    an arrow, the predicted words; column `left` is the word predicted at the firing row."""
    rows = b.tgt_mask.nonzero()                                        # [n, 2]
    S, T = task.max_src_len, task.max_tgt_len
    left, right = S + T, T
    pt = PairTokenizer(task)
    dense = torch.zeros(b.tgt_mask.shape + (z.shape[1],))
    dense[b.tgt_mask] = z
    top, values = {}, {}
    for i in latents:
        col = z[:, i]
        values[i] = col[col > 0]
        order = col.argsort(descending=True, stable=True)[:k]
        order = order[col[order] > 0]
        ids = torch.full((len(order), left + 1 + right), sae.features.PAD)
        acts = torch.zeros(len(order), left + 1 + right)
        for j, rr in enumerate(order.tolist()):
            p, t = rows[rr].tolist()
            src = [int(x) + pt.offset for x in b.src[p][b.src_mask[p]][:-1]]   # no [SEP]
            n_t = int(b.tgt_mask[p].sum())
            tgt = b.tgt_out[p, :n_t].tolist()
            seq = src + [pt.arrow] + tgt
            start = left - (len(src) + 1 + t)
            ids[j, start:start + len(seq)] = torch.tensor(seq)
            acts[j, start + len(src) + 1:start + len(seq)] = dense[p, :n_t, i]
        top[i] = sae.TopActivations(latent=i, values=col[order], seq=rows[order, 0],
                                    pos=rows[order, 1], tokens=ids, acts=acts, left=left)
    return sae.LatentStats(hook_name=hook, top=top, values=values, density=density,
                           n_tokens=int(z.shape[0]))


def mi_figure(assoc: dict[str, dict[str, Any]], latents: list[int], h: Tensor,
              title: str) -> Any:
    """Latents x variables: I(fire; variable) / H(fire), the best value written in."""
    m = torch.stack([assoc[v]["mi"][latents] / h[latents].clamp(min=1e-12)
                     for v in VARIABLES], 1).numpy()
    fig = LabFigure(figsize=(1.05 * len(VARIABLES) + 2.2, 0.34 * len(latents) + 1.8),
                    layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, vmin=0, vmax=1, cmap=colormaps["viridis"], aspect="auto")
    for r_, i in enumerate(latents):
        for c, v in enumerate(VARIABLES):
            a = assoc[v]
            val = a["values"][int(a["best"][i])]
            txt = ax.text(c, r_, f"{val[:8]}\n{float(a['precision'][i]):.2f}", ha="center",
                          va="center", fontsize=6, color="white" if m[r_, c] < 0.6 else "black")
            txt.set_parse_math(False)
    ax.set_xticks(range(len(VARIABLES)), labels=[v.replace("_", " ") for v in VARIABLES],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(latents)), labels=[f"latent {i}" for i in latents], fontsize=7)
    fig.colorbar(im, ax=ax, label="I(fire; variable) / H(fire)", shrink=0.8)
    ax.set_title(title + "\ncell text: the value with the highest P(value | fires), and "
                 "that precision", fontsize=9)
    return fig


def seq2seq_part(r: runs.Run, cfg: dict[str, Any], quick: bool, seed: int,
                 progress: bool) -> dict[str, Any]:
    task = seq2seq_alignment.make_task("number_words")
    assert isinstance(task, tasks.NumberWordsTask)
    tc = seq2seq_alignment.configs(quick, seed)["tasks"]["number_words"]
    model = transformer.Seq2Seq(tc["model"], device="cpu")
    t0 = time.perf_counter()
    transformer.train_seq2seq(model, task, dataclasses.replace(tc["train"], steps=cfg["steps"]),
                              progress=progress)
    train_seconds = time.perf_counter() - t0
    model.eval()
    r.save_model(model, "seq2seq")
    hook = cfg["hook"]
    eval_b = task.batch(cfg["n_eval_pairs"], 10_000 + seed)
    exact = task.exact_match(model.generate(eval_b.src, eval_b.src_mask), eval_b)
    g = torch.Generator().manual_seed(seed + 2)
    s, info = train_topk(model, hook, lambda: two_sided(task.batch(cfg["source_batch"], g)),
                         cfg, S2S_MODEL, seed, progress)
    s.save(r.path / "sae_seq2seq")
    full = two_sided(eval_b)
    ev = evaluate(model, s, hook, [full], full)

    # ---- what the latents fire on
    b = task.batch(cfg["n_analysis_pairs"], 20_000 + seed)
    d = two_sided(b)
    with torch.no_grad():
        _, cache = model.run_with_cache(d["src"], d["tgt"], src_attention_mask=d[
            "src_attention_mask"], tgt_attention_mask=d["tgt_attention_mask"],
            names_filter=[hook])
        z = s.encode(cache[hook][b.tgt_mask])                          # [rows, d_sae]
    fires = z > 0
    density = fires.double().mean(0)
    pf = density.clamp(1e-12, 1 - 1e-12)
    h = _entropy(torch.stack([pf, 1 - pf], -1))                        # H(fire), bits
    labels = row_variables(b, task)
    assoc = {v: association(fires, labels[v], "-" if v in PLACES else "none")
             for v in VARIABLES}
    # I(fire; digit | word) = I(fire; (digit, word)) - I(fire; word)
    cond = {p: association(fires, [f"{x}|{w}" for x, w in zip(labels[p], labels["word"])])["mi"]
            - assoc["word"]["mi"] for p in PLACES}
    alive = [i for i in range(s.cfg.d_sae) if 0 < float(density[i]) < 1]
    word_onehot = torch.nn.functional.one_hot(torch.tensor(
        [assoc["word"]["values"].index(w) for w in labels["word"]]),
        len(assoc["word"]["values"])).double()
    per_latent = {}
    for i in alive:
        row = {"density": float(density[i]), "entropy_bits": float(h[i])}
        for v in VARIABLES:
            a = assoc[v]
            row[v] = {"best": a["values"][int(a["best"][i])],
                      "precision": round(float(a["precision"][i]), 3),
                      "recall": round(float(a["recall"][i]), 3),
                      "mi_over_h": round(float(a["mi"][i] / h[i]), 3)}
        best_place = max(PLACES, key=lambda p: float(assoc[p]["precision"][i]))
        row["best_digit"] = {"place": best_place, **row[best_place],
                             "cond_mi_given_word_over_h": round(float(cond[best_place][i]
                                                                      / h[i]), 3)}
        row["explained_best_by"] = max(VARIABLES, key=lambda v: row[v]["mi_over_h"])
        # a digit feature: a source digit (at one place, or the one being spelled) decides
        # the firing better than the word does; not dense, and seen at least 20 times
        dig = max(row["best_digit"]["precision"], row["aligned_digits"]["precision"])
        row["n_fire"] = int(fires[:, i].sum())
        a = assoc["word"]
        share = (fires[:, i].double() @ word_onehot) / max(row["n_fire"], 1)
        row["top_words"] = {a["values"][int(j)]: round(float(share[j]), 3)
                            for j in share.argsort(descending=True)[:4] if share[j] > 0}
        row["digit_feature"] = (dig >= DIGIT_FEATURE and row["word"]["precision"]
                                < DIGIT_FEATURE and row["density"] < DENSE
                                and row["n_fire"] >= 20)
        per_latent[i] = row
    not_dense = [i for i in alive if float(density[i]) < DENSE]
    digit_feats = sorted((i for i in alive if per_latent[i]["digit_feature"]),
                         key=lambda i: -per_latent[i]["n_fire"])
    word_feats = [i for i in alive if per_latent[i]["word"]["precision"] >= DIGIT_FEATURE]
    by_var = {v: sum(per_latent[i]["explained_best_by"] == v for i in alive) for v in VARIABLES}

    # picks: the digit features first, then the most word-specific, then the most frequent
    n = cfg["n_feature_views"]
    picks = digit_feats[: (n + 1) // 2]
    for i in sorted(not_dense, key=lambda i: -per_latent[i]["word"]["mi_over_h"]) + \
            sorted(not_dense, key=lambda i: -float(density[i])):
        if len(picks) >= min(n, len(not_dense)):
            break
        if i not in picks:
            picks.append(i)
    st = pair_stats(z, b, task, hook, picks, cfg["top_k"], density.float())
    pt = PairTokenizer(task)
    views = {}
    for i in picks:
        x = per_latent[i]
        dg = x["best_digit"]
        label = (f"aligned digit {x['aligned_digits']['best']} prec "
                 f"{x['aligned_digits']['precision']:.2f}; word '{x['word']['best']}' prec "
                 f"{x['word']['precision']:.2f};\n"
                 f"{dg['place']} digit {dg['best']} prec {dg['precision']:.2f} "
                 f"rec {dg['recall']:.2f}")
        fig = plot.feature_view(st, i, tokenizer=pt, n_contexts=cfg["top_k"],
                                title=f"seq2seq SAE latent {i} ({hook})", label=label)
        r.save_figure(fig, f"features_seq2seq_{i}")
        views[i] = x | {"top_contexts": ["".join(p) for p in
                                         (st.top[i].strings(pt)[:5])]}
    shown = (digit_feats[:4] + [i for i in sorted(not_dense, key=lambda i: -float(density[i]))
                                if i not in digit_feats[:4]])[:16]
    r.save_figure(mi_figure(assoc, shown, h, f"seq2seq SAE at {hook}: what each latent's "
                            f"firing is about ({len(labels['word']):,} target rows)"),
                  "seq2seq_mi")
    return {
        "hook": hook, "d_in": s.cfg.d_in, "d_sae": s.cfg.d_sae, "k": s.cfg.k, **info,
        "model_steps": cfg["steps"], "model_train_seconds": train_seconds,
        "exact_match_greedy": exact, **{k: x for k, x in ev.items() if k != "density"},
        "n_analysis_rows": len(labels["word"]), "alive_latents": len(alive),
        "explained_best_by": by_var, "word_latents": len(word_feats),
        "digit_feature_latents": digit_feats,
        "median_mi_over_h": {v: round(float(torch.tensor(
            [per_latent[i][v]["mi_over_h"] for i in alive]).median()), 3) for v in VARIABLES}
        if alive else {},
        "feature_views": views, "per_latent": per_latent}


# ---------------------------------------------------------------- the run


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    cfg = configs(quick, seed)
    r = runs.Run.create("sae_encoders", out=out)
    r.save_config(cfg)
    metrics: dict[str, Any] = {"encoder": encoder_part(r, cfg["encoder"], quick, seed, progress),
                               "seq2seq": seq2seq_part(r, cfg["seq2seq"], quick, seed,
                                                       progress)}
    fig = plot.loss_recovered_bars(
        {f"{k} ({v['hook']})": v["spliced"] for k, v in metrics.items()},
        title="TopK SAEs spliced in: MLM encoder (masked chars), Seq2Seq (teacher-forced)")
    fig.axes[0].set_title("loss on the labels (masked chars / next target word)", fontsize=9)
    r.save_figure(fig, "loss_recovered")
    metrics["seconds"] = time.perf_counter() - t_start
    e, q = metrics["encoder"], metrics["seq2seq"]
    summary = {}
    for name, m in (("encoder", e), ("seq2seq", q)):
        x = m["spliced"]
        summary[f"{name} SAE ({m['hook']}, {m['d_sae']} latents, k={m['k']})"] = (
            f"FVE {m['fve']:.3f}, L0 {m['l0']:.2f}, dead {m['frac_dead']:.1%}, dense "
            f"{m['frac_dense']:.1%}; CE clean {x['clean_loss']:.3f}, SAE {x['spliced_loss']:.3f}"
            f", zero-abl {x['zero_ablation_loss']:.3f}, mean-abl {x['mean_ablation_loss']:.3f};"
            f" recovered {x['loss_recovered']:.3f} (vs mean {x['loss_recovered_mean']:.3f}), "
            f"KL {x['kl_div']:.4f}")
    summary["encoder model"] = (f"masked accuracy {e['masked_accuracy']:.3f} vs unigram "
                                f"{e['unigram_accuracy']:.3f} ({e['model_steps']} steps)")
    summary["encoder latents"] = (f"{e['single_token_latents']} of {e['alive_latents']} alive "
                                  f"fire >= 90% on one character; median top-character "
                                  f"precision {e['median_token_precision']:.2f}")
    for i, x in e["feature_views"].items():
        summary[f"  encoder latent {i} (density {x['density']:.2%})"] = (
            f"top char {x['top_token']!r} ({x['token_precision']:.0%} of firings), at [MASK] "
            f"{x['mask_share']:.0%}: " + " | ".join(repr(c) for c in x["top_contexts"][:3]))
    summary["seq2seq model"] = (f"exact match {q['exact_match_greedy']:.3f} greedy "
                                f"({q['model_steps']} steps)")
    summary["seq2seq latents"] = (
        f"{q['alive_latents']} alive; best explained by "
        + ", ".join(f"{v} {n}" for v, n in q["explained_best_by"].items() if n)
        + f"; {q['word_latents']} word latents (one predicted word >= {DIGIT_FEATURE:.0%} "
        f"of firings); digit features (a source digit, at one place or the one being spelled, "
        f">= {DIGIT_FEATURE:.0%} of firings, no word >= {DIGIT_FEATURE:.0%}): "
        f"{q['digit_feature_latents'] or 'none'}")
    for i, x in q["feature_views"].items():
        dg = x["best_digit"]
        summary[f"  seq2seq latent {i} (density {x['density']:.2%})"] = (
            f"aligned digit {x['aligned_digits']['best']} prec "
            f"{x['aligned_digits']['precision']:.2f}; words "
            + ", ".join(f"{w} {p:.0%}" for w, p in x["top_words"].items())
            + f"; word {x['word']['best']!r} prec {x['word']['precision']:.2f} rec "
            f"{x['word']['recall']:.2f} (I/H {x['word']['mi_over_h']:.2f}); {dg['place']} "
            f"digit {dg['best']} prec {dg['precision']:.2f} rec {dg['recall']:.2f} (I/H "
            f"{dg['mi_over_h']:.2f}, given the word {dg['cond_mi_given_word_over_h']:.2f})")
    summary["time"] = f"{metrics['seconds']:.1f}s"
    metrics["summary"] = summary
    r.save_metrics(metrics)
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
