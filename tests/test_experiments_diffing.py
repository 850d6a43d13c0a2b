"""experiments/finetune_diffing.py in quick mode: the planted rule is learned by LoRA and the
base behaviour is kept elsewhere; the saved adapter reproduces the fine-tune; every method's
row is scored; and each method's material (the LoRA readouts, the crosscoder's and the
diff-SAE's latents) holds a direction that fires on the trigger. The science tier.

The pick rule under test is behavioural (KL) attribution (`diffing.kl_attribution`, then the
top 3 verified by real ablation): the candidate whose removal from the fine-tune lowers
KL(p_ft || p_base) on the unlabeled fine-tuning text the most. Quick mode, AUROC of the pick
at the trigger, KL rule (legacy rule), seeds 0 / 1 / 2 (2 held out, nothing tuned on it):
crosscoder 0.99 / 0.98 / 0.90 (0.94 / 0.49 / 0.50); diff-SAE 1.00 / 0.98 / 0.97 (0.31 / 0.28 /
0.34); LoRA 0.62 / 0.98 / 0.98 (0.62 / 0.18 / 0.27). Asserted (seed 0): the crosscoder's and the
diff-SAE's KL picks fire on the trigger (AUROC >= 0.9), steer the rule on at other word starts
(+0.3 over unsteered) and ablating them takes it off at the trigger (-0.3). NOT asserted: the
LoRA pick. On seed 0 blocks.1.mlp.W_out σ1 (general drift, AUROC 0.62) explains more of the
KL than σ2, the trigger direction (verified KL drops 0.019 vs 0.013), so the KL rule keeps
σ1 there; it finds σ2 on seed 1. Nor that the first-order attribution alone ranks the trigger
latent first: its argmax is the legacy pick (a dense drift latent) on seeds 0 and 1 for the
diff-SAE; the verification by real ablation is what finds it."""

from __future__ import annotations

import copy
import json

import finetune_diffing
import pytest
import torch

from superpose import diffing, gpt, lora


@pytest.mark.science
def test_finetune_diffing_quick(tmp_path):
    # catches: a rule the LoRA cannot learn or a trigger that leaks into every word (rates),
    # a fine-tune that forgets the base (clean loss), adapters saved apart from what was
    # measured, a readout or dictionary pipeline that loses the trigger altogether.
    m = finetune_diffing.run(out=tmp_path, quick=True, progress=False)
    (d,) = list((tmp_path / "finetune_diffing").iterdir())
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "metrics.json", "tokenizer.json", "base", "adapter", "crosscoder",
            "diff_sae"} <= names
    assert json.loads((d / "metrics.json").read_text())["summary"]

    b = m["behaviour"]
    assert b["n_trigger"] >= 50 and b["n_word_start"] >= 500
    assert b["ft_trigger"] >= 0.7 and b["base_trigger"] <= 0.4          # learned
    assert abs(b["ft_word_start"] - b["base_word_start"]) <= 0.05       # not everywhere
    assert b["off_trigger_loss_delta"] <= b["loss_margin"] and b["kept_off_trigger"]

    # the adapter on disk is the measured fine-tune
    base = gpt.GPT.load(d / "base")
    ft = copy.deepcopy(base)
    lora.load(ft, d / "adapter")
    tok = gpt.load_tokenizer(d / "tokenizer.json")
    corpus = gpt.load_corpus("stdlib", max_chars=200_000)
    rule = diffing.PlantedRule(m["trigger"])
    batch = rule.batch(tok, corpus.val, base.cfg.n_ctx, seed=1, max_windows=256)
    assert diffing.behaviour_rate(ft.eval(), batch) == pytest.approx(b["ft_trigger"], abs=1e-6)

    rows = {r["method"]: r for r in m["methods"]}
    assert set(rows) == {"crosscoder", "diff-sae", "lora"}
    for r in rows.values():
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["precision_at_k"] <= 1.0
        assert r["rate_ft_trigger"] == pytest.approx(b["ft_trigger"], abs=1e-6)
        assert r["direction_norm"] > 0
    # the KL-attribution picks (no labels): the crosscoder's and the diff-SAE's find the
    # trigger, steer the rule on elsewhere and off at the trigger; the pick is the verified one
    legacy = {r["method"]: r for r in m["methods_legacy"]}
    assert set(legacy) == set(rows)
    for meth in ("crosscoder", "diff-sae"):
        r = rows[meth]
        assert r["info"]["rule"] == "kl"
        verified = r["info"]["kl_verified"]
        assert len(verified) == 3
        assert int(max(verified, key=verified.get)) == r["info"]["latent"]
        assert r["auroc"] >= 0.9 and r["precision_at_k"] >= 0.5
        assert r["rate_ft_steered_x1"] >= r["rate_ft_word"] + 0.3
        assert r["rate_base_steered_x1"] >= r["rate_base_word"] + 0.3
        assert r["rate_ft_ablated"] <= r["rate_ft_trigger"] - 0.3
        assert r["auroc"] >= legacy[meth]["auroc"] - 0.02
    # the LoRA pick is a residual writer's component chosen by the KL rule (not asserted to be
    # the trigger direction: see the module docstring)
    assert rows["lora"]["info"]["rule"] == "kl" and len(rows["lora"]["info"]["kl_verified"]) == 3
    # each method's material holds a trigger detector (found with the labels)
    assert max(x["auroc"] for x in m["lora_readouts"]) >= 0.9
    assert m["best_by_label"]["crosscoder"]["auroc"] >= 0.9
    assert m["best_by_label"]["diff_sae"]["auroc"] >= 0.9
    # the LoRA spectra: every adapter trained (σ₁ > 0), the writers' directions named
    spectra = rows["lora"]["info"]["spectra"]
    assert all(s[0] > 0 for s in spectra.values())
    assert torch.isfinite(torch.tensor([r["auroc_span"] for r in rows.values()])).all()
