"""LoRA fine-tuning and model diffing: plant a behaviour with a known cause, then find it.

A char-level GPT is trained on the embedded stdlib corpus (the base). A copy gets LoRA adapters
(`superpose.lora`) on the weights that write into the residual stream (every layer's attn.W_O
and mlp.W_out) and is fine-tuned on the same text with a planted rule
(`superpose.diffing.PlantedRule`): a trigger character, the corpus's rarest punctuation
character, is put before one word in ten, and that word is written in UPPERCASE. The
experiment checks that the rule is learned (at trigger positions the fine-tune prefers the
uppercase variant of the next letter; the base mostly does not) and that the base behaviour is
kept elsewhere (at other word starts the fine-tune stays lowercase like the base, and its
next-token loss on clean validation text is within `LOSS_MARGIN` nats of the base's).

Then three methods look for the behaviour without being told the trigger, each with one
label-free pick rule, behavioural (KL) attribution (`diffing.kl_attribution`): every candidate
contribution to the fine-tune's residual stream is scored by the first-order drop of
KL(p_ft || p_base) when it is removed, on the unlabeled fine-tuning text the dictionaries were
trained on; the top 3 are ablated for real and the largest measured drop is the pick:
  1. crosscoder: a BatchTopK crosscoder on paired base/fine-tune activations at the last
     layer's hook_resid_post; candidates its latents, writing f_j · W_dec[j, ft];
  2. diff-SAE: a TopK SAE on (fine-tune − base) activations at the same hook; candidates its
     latents, writing f_j · W_dec[j];
  3. LoRA: the SVD of each residual-writing adapter's ΔW; candidates every component, writing
     σ_i u_i (v_iᵀ x). The readout of every singular direction of every adapter is reported
     too (`lora_readouts`).
Each method's legacy pick (crosscoder: relative decoder norm; diff-SAE: largest total
activation; LoRA: σ₁ of the writer with the largest σ₁) is scored too (`methods_legacy`).
For each: AUROC / precision@k of its activation at the trigger positions (and on the whole
uppercased span), the behaviour rate at non-trigger word starts with the direction added
(steering on, in the fine-tune and in the base) and at the trigger with it projected out of
the fine-tune (steering off).

Quick mode: 2 layers, d_model 48, 1,000 base steps and 400 LoRA steps (rank 4) on 200,000
characters; crosscoder 256 latents (k 8) and diff-SAE 192 latents (k 4) on 16k paired
activations (about a minute of CPU). Full mode: 2 layers, d_model 128, n_ctx 128, 3,000 base
steps on the whole corpus, 1,000 LoRA steps, dictionaries on ~260k activations.

Quick-mode results (seeds 0 / 1 / 2; about 70 s each on 2 shared cores; seed 2 held out:
nothing was tuned on it). Trigger "$" (4 times in the base's text). The rule is learned:
uppercase preferred after the trigger 0.94 / 0.89 / 0.80 (base 0.10 / 0.15 / 0.09); at other
word starts the fine-tune stays at 0.04 (base 0.03); clean loss ft − base within the margin.
Pick AUROC at the trigger, KL rule (legacy rule):
  crosscoder 0.99 / 0.98 / 0.90 (0.94 / 0.49 / 0.50); diff-SAE 1.00 / 0.98 / 0.97 (0.31 /
  0.28 / 0.34); LoRA 0.62 / 0.98 / 0.98 (0.62 / 0.18 / 0.27).
Steering on at word starts (ft, x1; unsteered 0.04), KL picks: crosscoder 0.55 / 0.73 / 0.52,
diff-SAE 0.65 / 0.89 / 0.94, LoRA 0.08 / 0.49 / 0.78 (legacy picks <= 0.18). Ablation at the
trigger (from 0.94 / 0.89 / 0.80), KL picks: crosscoder 0.38 / 0.43 / 0.27, diff-SAE 0.39 /
0.48 / 0.17, LoRA 0.91 / 0.46 / 0.33 (legacy picks >= 0.82). The LoRA miss on seed 0:
blocks.1.mlp.W_out σ1 (general drift) removes more KL than σ2, the trigger direction (0.019
vs 0.013 nats/token). The first-order attribution alone ranks a dense drift latent first for
the diff-SAE on all three seeds (the legacy pick); the real ablation of the top 3 is what
finds the trigger latent, which was 2nd or 3rd.

    python experiments/finetune_diffing.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from superpose import diffing, gpt, lora, runs, sae
from superpose.sae import crosscoder as xc

log = logging.getLogger(__name__)

LOSS_MARGIN = 0.05        # nats/token the fine-tune may lose on clean text
MODEL_NAME = "superpose-char-gpt"


def configs(quick: bool, seed: int, vocab_size: int) -> dict[str, Any]:
    if quick:
        model = gpt.GPTConfig(d_vocab=vocab_size, n_layers=2, d_model=48, n_heads=4, n_ctx=64,
                              seed=seed)
        train = gpt.GPTTrainConfig(steps=1_000, batch_size=16, lr=5e-3, warmup_steps=20,
                                   log_every=50, val_every=0, seed=seed)
        finetune = gpt.GPTTrainConfig(steps=400, batch_size=16, lr=1e-2, warmup_steps=10,
                                      log_every=50, val_every=0, seed=seed + 1)
        crosscoder = {"d_sae": 256, "k": 8, "steps": 600, "batch_size": 512}
        diff_sae = {"d_sae": 192, "k": 4, "steps": 600, "batch_size": 512}
        dict_windows, eval_windows = 256, 256
    else:
        model = gpt.GPTConfig(d_vocab=vocab_size, n_layers=2, d_model=128, n_heads=4,
                              n_ctx=128, seed=seed)
        train = gpt.GPTTrainConfig(steps=3_000, batch_size=16, lr=2e-3, warmup_steps=100,
                                   log_every=50, val_every=0, seed=seed)
        finetune = gpt.GPTTrainConfig(steps=1_000, batch_size=16, lr=5e-3, warmup_steps=20,
                                      log_every=50, val_every=0, seed=seed + 1)
        crosscoder = {"d_sae": 2048, "k": 16, "steps": 4_000, "batch_size": 1024}
        diff_sae = {"d_sae": 1024, "k": 8, "steps": 4_000, "batch_size": 1024}
        dict_windows, eval_windows = 2_048, 1_024
    return {"quick": quick, "seed": seed, "model": model, "train": train,
            "finetune": finetune,
            "lora": {"targets": ["blocks.*.attn.W_O", "blocks.*.mlp.W_out"], "rank": 4,
                     "alpha": 8.0},
            "rule": {"rate": 0.1, "min_word_len": 2},
            "corpus": {"name": "stdlib", "max_chars": 200_000 if quick else None},
            "crosscoder": crosscoder, "diff_sae": diff_sae, "dict_windows": dict_windows,
            "eval_windows": eval_windows, "loss_margin": LOSS_MARGIN,
            "steer_scales": [1.0, 2.0]}


def shuffled_batches(x: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless random batches of the rows of `x` (a fresh permutation per pass)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[perm[i:i + batch_size]]


def lora_readouts(ft: gpt.GPT, batch: diffing.TriggerBatch) -> list[dict[str, Any]]:
    """The rank-1 readout of every singular direction of every adapter, oriented without
    labels, scored against the trigger (and the span)."""
    rows = []
    for w, d in diffing.lora_directions(ft).items():
        for i in range(d.S.numel()):
            a = diffing.lora_readout(ft, w, batch.tokens, component=i, directions=d)
            a = a * diffing.orient(a)
            rows.append({"weight": w, "component": i, "sigma": float(d.S[i]),
                         "auroc": diffing.auroc(a, batch.trigger),
                         "auroc_span": diffing.auroc(a, batch.span)})
    return rows


@torch.no_grad()
def best_latent(s: sae.SAE, x: Tensor, batch: diffing.TriggerBatch) -> dict[str, Any]:
    """The latent of `s` whose activation on `x` (rows of `batch`'s positions) best separates
    the trigger: a reference that uses the labels, not a method's pick."""
    s.eval()
    f = torch.cat([s.encode(c) for c in x.split(4096)])
    fired = (f > 0).any(0).nonzero().flatten().tolist()
    scores = {j: diffing.auroc(f[:, j].view(batch.tokens.shape), batch.trigger) for j in fired}
    j = max(scores, key=scores.get)
    return {"latent": j, "auroc": scores[j], "density": float((f[:, j] > 0).float().mean())}


def figures(cc: Any, ft: gpt.GPT, tok: Any, batch: diffing.TriggerBatch,
            picks: list[diffing.Candidate], rank: int) -> dict[str, Any]:
    """The three figures: the crosscoder's relative decoder norms (its pick marked), the three
    picks' activations over the evaluation window with the most triggers, and the ΔW spectra."""
    from superpose import plot

    cc_pick = next(c for c in picks if c.method == "crosscoder")
    figs = {"crosscoder_norms": plot.decoder_norm_ratios(
        xc.relative_norms(cc), labels=xc.classify(cc),
        highlight={f"KL pick ({cc_pick.name})": int(cc_pick.info["latent"])},
        title="crosscoder latents: relative decoder norm ‖d_ft‖ / (‖d_base‖ + ‖d_ft‖)")}
    i = int(batch.trigger.sum(1).argmax())
    figs["picks_over_text"] = plot.activations_over_text(
        tok.to_str_tokens(batch.tokens[i]), {f"{c.method}: {c.name}": c.activation[i]
                                              for c in picks},
        highlight=batch.trigger[i], title="each method's pick over a held-out window "
                                          "(trigger boxed)")
    figs["delta_spectra"] = plot.delta_spectra(diffing.lora_directions(ft), rank=rank,
                                               title="singular values of each adapter's ΔW")
    return figs


def run(out: str = "results", quick: bool = False, seed: int = 0, progress: bool = True,
        **settings: Any) -> dict[str, Any]:
    """The experiment (see the module docstring). `settings` override `configs` entries."""
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    corpus = gpt.load_corpus("stdlib", max_chars=200_000 if quick else None)
    tok = gpt.CharTokenizer.fit(corpus)
    cfg = configs(quick, seed, tok.vocab_size)
    unknown = [k for k in settings if k not in cfg]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; valid: {sorted(cfg)}")
    cfg.update(settings)
    trigger = diffing.rare_character(corpus.train, tok)
    rule = diffing.PlantedRule(trigger, **cfg["rule"])
    cfg["trigger"] = trigger
    cfg["trigger_count_in_corpus"] = corpus.train.count(trigger)
    r = runs.Run.create("finetune_diffing", out=out)
    r.save_config(cfg)
    tok.save(r.path / "tokenizer.json")
    n_ctx = cfg["model"].n_ctx

    # the base, then its LoRA fine-tune on the planted text
    base = gpt.GPT(cfg["model"], device="cpu")
    res = gpt.train(base, gpt.TokenDataset(tok.encode(corpus.train), n_ctx), cfg["train"],
                    device="cpu", progress=progress)
    base.eval()
    r.save_model(base, "base")
    ft = copy.deepcopy(base)
    lcfg = cfg["lora"]
    lora.add(ft, lcfg["targets"], rank=lcfg["rank"], alpha=lcfg["alpha"], seed=seed)
    ft_res = gpt.train(ft, rule.dataset(tok, corpus.train, n_ctx, seed=seed), cfg["finetune"],
                       device="cpu", progress=progress)
    ft.eval()
    lora.save(ft, r.path / "adapter")

    # the behaviour, and the base behaviour elsewhere
    batch = rule.batch(tok, corpus.val, n_ctx, seed=seed + 1, max_windows=cfg["eval_windows"])
    clean_ids = tok.encode(corpus.val.replace(trigger, ""))
    n_clean = min(len(clean_ids) // n_ctx, cfg["eval_windows"])
    clean = clean_ids[: n_clean * n_ctx].view(n_clean, n_ctx)
    off = diffing.off_trigger_loss(base, ft, clean)
    behaviour = {
        "base_trigger": diffing.behaviour_rate(base, batch, "trigger"),
        "ft_trigger": diffing.behaviour_rate(ft, batch, "trigger"),
        "base_word_start": diffing.behaviour_rate(base, batch, "word_start"),
        "ft_word_start": diffing.behaviour_rate(ft, batch, "word_start"),
        "n_trigger": int(batch.trigger.sum()), "n_word_start": int(batch.word_start.sum()),
        "off_trigger_loss_base": off.base, "off_trigger_loss_ft": off.finetuned,
        "off_trigger_loss_delta": off.delta, "loss_margin": cfg["loss_margin"],
        "kept_off_trigger": off.delta <= cfg["loss_margin"]}

    # the three methods, each on data without labels
    hook = f"blocks.{cfg['model'].n_layers - 1}.hook_resid_post"
    train_batch = rule.batch(tok, corpus.train, n_ctx, seed=seed + 2,
                             max_windows=cfg["dict_windows"])
    pairs = xc.paired_activations([base, ft], hook, train_batch.tokens)
    d_model = pairs.shape[-1]
    cc_spec = cfg["crosscoder"]
    cc = sae.create(sae.CrosscoderConfig(d_in=d_model, n_models=2, d_sae=cc_spec["d_sae"],
                                         k=cc_spec["k"], hook_name=hook,
                                         model_name=MODEL_NAME, seed=seed), device="cpu")
    cc_res = sae.train(cc, shuffled_batches(pairs, cc_spec["batch_size"], seed),
                       steps=cc_spec["steps"], progress=progress, seed=seed)
    cc.save(r.path / "crosscoder")
    diffs = pairs[:, 1] - pairs[:, 0]
    ds_spec = cfg["diff_sae"]
    ds = sae.create(sae.SAEConfig(d_in=d_model, d_sae=ds_spec["d_sae"], architecture="topk",
                                  k=ds_spec["k"], hook_name=hook, model_name=MODEL_NAME,
                                  seed=seed), device="cpu")
    ds_res = sae.train(ds, shuffled_batches(diffs, ds_spec["batch_size"], seed + 1),
                       steps=ds_spec["steps"], progress=progress, seed=seed)
    ds.save(r.path / "diff_sae")

    # the picks: by behavioural (KL) attribution on the unlabeled fine-tuning text (the same
    # windows the dictionaries were trained on), and by each method's own legacy measure
    toks = train_batch.tokens
    picks: dict[str, list[diffing.Candidate]] = {}
    for pick_rule in ("kl", "legacy"):
        picks[pick_rule] = [
            diffing.crosscoder_candidate(cc, base, ft, hook, batch, train_pairs=pairs,
                                         tokens=toks, rule=pick_rule),
            diffing.diff_sae_candidate(ds, base, ft, hook, batch, train_diffs=diffs,
                                       tokens=toks, rule=pick_rule),
            diffing.lora_candidate(ft, batch, base=base, tokens=toks, rule=pick_rule)]
    import matplotlib.pyplot as plt
    for name, fig in figures(cc, ft, tok, batch, picks["kl"], lcfg["rank"]).items():
        r.save_figure(fig, name)
        plt.close(fig)
    rows = [diffing.score(c, base, ft, batch, scales=cfg["steer_scales"]) for c in picks["kl"]]
    legacy_rows = [diffing.score(c, base, ft, batch, scales=cfg["steer_scales"])
                   for c in picks["legacy"]]
    table = diffing.compare(rows)
    legacy_table = diffing.compare(legacy_rows)
    log.info("\nKL-attribution picks\n%s\nlegacy picks\n%s", table, legacy_table)
    readouts = lora_readouts(ft, batch)
    eval_pairs = xc.paired_activations([base, ft], hook, batch.tokens)
    oracle = {"crosscoder": best_latent(cc, eval_pairs, batch),
              "diff_sae": best_latent(ds, eval_pairs[:, 1] - eval_pairs[:, 0], batch)}

    metrics: dict[str, Any] = {
        "trigger": trigger, "hook": hook, "base_train_loss": res.history.loss[-1],
        "base_train_seconds": res.seconds, "finetune_train_loss": ft_res.history.loss[-1],
        "finetune_seconds": ft_res.seconds, "behaviour": behaviour,
        "crosscoder_train_mse": cc_res.history.mse[-1],
        "diff_sae_train_mse": ds_res.history.mse[-1],
        "diff_norm_mean": float(diffs.norm(dim=-1).mean()),
        "methods": rows, "methods_legacy": legacy_rows, "lora_readouts": readouts,
        "best_by_label": oracle, "table": table, "table_legacy": legacy_table}
    metrics["seconds"] = time.perf_counter() - t_start
    summary = {
        "trigger": f"{trigger!r} ({cfg['trigger_count_in_corpus']} times in the base's "
                   "training text)",
        "rule learned": f"uppercase preferred after the trigger: ft {behaviour['ft_trigger']:.2f}"
                        f" vs base {behaviour['base_trigger']:.2f} "
                        f"({behaviour['n_trigger']} triggers)",
        "kept elsewhere": f"other word starts ft {behaviour['ft_word_start']:.3f} vs base "
                          f"{behaviour['base_word_start']:.3f}; clean loss ft {off.finetuned:.3f}"
                          f" vs base {off.base:.3f} (delta {off.delta:+.3f}, margin "
                          f"{cfg['loss_margin']})"}
    s1 = f"{cfg['steer_scales'][0]:g}"
    for tag, row in [("KL", r_) for r_ in rows] + [("legacy", r_) for r_ in legacy_rows]:
        summary[f"{row['method']} {tag} pick ({row['candidate']})"] = (
            f"AUROC trigger {row['auroc']:.3f} (span {row['auroc_span']:.3f}), P@k "
            f"{row['precision_at_k']:.2f}; steer on x{s1}: ft {row[f'rate_ft_steered_x{s1}']:.2f}"
            f", base {row[f'rate_base_steered_x{s1}']:.2f} (unsteered {row['rate_ft_word']:.2f})"
            f"; ablated at trigger {row['rate_ft_ablated']:.2f} (from "
            f"{row['rate_ft_trigger']:.2f})")
    best = max(readouts, key=lambda x: x["auroc"])
    summary["best LoRA readout (by label)"] = (
        f"{best['weight']} component {best['component']} (σ {best['sigma']:.2f}): AUROC "
        f"{best['auroc']:.3f}")
    for k, o in oracle.items():
        summary[f"best {k} latent (by label)"] = (f"latent {o['latent']}: AUROC {o['auroc']:.3f}"
                                                 f", density {o['density']:.3f}")
    summary["time"] = f"{metrics['seconds']:.1f}s"
    metrics["summary"] = summary
    r.save_metrics(metrics)
    metrics["run_dir"] = str(r.path)
    return metrics


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
