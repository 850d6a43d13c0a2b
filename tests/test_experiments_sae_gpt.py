"""experiments/sae_gpt.py in quick mode: it writes its files, the SAEs it saves are the ones
it measured (reloaded, they give the same spliced-in loss), and the numbers make sense. The
science tier."""

from __future__ import annotations

import json

import pytest
import sae_gpt

from superpose import gpt, sae


@pytest.mark.science
def test_sae_gpt_quick(tmp_path):
    # catches: a TopK SAE whose ReLU after top-k is lost or whose top-k keeps too many (L0 > k),
    # a splice that does not replace the activation (loss recovered outside (0.5, 1]), a saved
    # SAE whose activation scale was not folded in (reloaded loss differs), dead or dense
    # latents drawn as features.
    m = sae_gpt.run(out=tmp_path, quick=True, progress=False)
    (d,) = list((tmp_path / "sae_gpt").iterdir())
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "metrics.json", "tokenizer.json", "model", "sae_resid", "sae_mlp",
            "loss_recovered.png"} <= names
    assert json.loads((d / "metrics.json").read_text())["summary"]
    model = gpt.GPT.load(d / "model")
    n_ctx = model.cfg.n_ctx
    tok = gpt.load_tokenizer(d / "tokenizer.json")
    corpus = gpt.load_corpus("stdlib", max_chars=200_000)
    val = tok.encode(corpus.val)
    tokens = val[: m["n_eval_tokens"]].view(-1, n_ctx)
    for short in ("resid", "mlp"):
        r = m["saes"][short]
        x = r["spliced"]
        # A useful SAE: most of the variance and of the loss recovered, cheap in KL. A TopK
        # SAE keeps k latents and then ReLUs them, so L0 <= k (a few of the k can be <= 0).
        assert r["fve"] > 0.7 and 0.8 * r["k"] <= r["l0"] <= r["k"] + 1e-6
        assert x["clean_loss"] < x["spliced_loss"] < x["zero_ablation_loss"]
        assert 0.5 < x["loss_recovered"] <= 1.0
        assert 0 < x["kl_div"] < 0.5
        # The saved SAE (SAELens format, scale folded in) reproduces the spliced-in loss.
        s = sae.load(d / f"sae_{short}")
        assert s.cfg.hook_name == r["hook"] and s.cfg.activation_scale == 1.0
        again = sae.spliced_losses(model, s, r["hook"], tokens)
        assert again.spliced_loss == pytest.approx(x["spliced_loss"], abs=1e-4)
        assert again.loss_recovered == pytest.approx(x["loss_recovered"], abs=1e-3)
        cfg_json = json.loads((d / f"sae_{short}" / "cfg.json").read_text())
        assert cfg_json["architecture"] == "topk" and cfg_json["normalize_activations"] == "none"
        # The drawn latents are alive and not dense, and each has its figure.
        assert r["feature_views"]
        for i, view in r["feature_views"].items():
            assert 0 < view["density"] < 0.1
            assert f"features_{short}_{i}.png" in names
            assert len(view["top_contexts"]) >= 1 and len(view["promotes"]) == 5
