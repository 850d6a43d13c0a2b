"""experiments/finetune_diffing.py in quick mode: the planted rule is learned by LoRA and the
base behaviour is kept elsewhere; the saved adapter reproduces the fine-tune; every method's
row is scored; and each method's material (the LoRA readouts, the crosscoder's and the
diff-SAE's latents) holds a direction that fires on the trigger. The science tier.

What is NOT asserted, because it does not hold reliably (seeds 0 and 1 measured): that each
method's *label-free* pick is the trigger direction. On seed 0 the crosscoder's pick (highest
relative decoder norm) fires on the trigger (AUROC 0.94) while the diff-SAE's (largest total
activation) and the LoRA σ₁ readout do not (0.31, 0.62); on seed 1 none of the three does,
although each method's material has a direction with AUROC >= 0.97 (`best_by_label`)."""

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
    # each method's material holds a trigger detector (found with the labels)
    assert max(x["auroc"] for x in m["lora_readouts"]) >= 0.9
    assert m["best_by_label"]["crosscoder"]["auroc"] >= 0.9
    assert m["best_by_label"]["diff_sae"]["auroc"] >= 0.9
    # the LoRA spectra: every adapter trained (σ₁ > 0), the writers' directions named
    spectra = rows["lora"]["info"]["spectra"]
    assert all(s[0] > 0 for s in spectra.values())
    assert torch.isfinite(torch.tensor([r["auroc_span"] for r in rows.values()])).all()
