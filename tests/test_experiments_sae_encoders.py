"""experiments/sae_encoders.py in quick mode: SAEs on the MLM encoder's residual stream and on
the Seq2Seq's cross-attention output write their files, and the numbers make sense. The
science tier."""

from __future__ import annotations

import json

import pytest
import sae_encoders

from superpose import sae


@pytest.mark.science
def test_sae_encoders_quick(tmp_path):
    # catches: padding rows in the SAE's data or a splice that misses the masked positions
    # (loss recovered outside (0, 1.05]), a TopK that keeps more than k latents (L0 > k), an
    # SAE saved without its activation scale folded in, feature views that are not drawn.
    # Measured (seed 0, one thread): FVE 0.977 (encoder) / 0.969 (seq2seq), loss recovered
    # 0.998 / 0.999; the floors below leave a wide margin.
    m = sae_encoders.run(out=tmp_path, quick=True, progress=False)
    (d,) = list((tmp_path / "sae_encoders").iterdir())
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "metrics.json", "encoder", "seq2seq", "sae_encoder", "sae_seq2seq",
            "loss_recovered.png", "seq2seq_mi.png"} <= names
    assert json.loads((d / "metrics.json").read_text())["summary"]
    for part in ("encoder", "seq2seq"):
        r = m[part]
        x = r["spliced"]
        assert r["fve"] > 0.8, (part, r["fve"])
        assert 0.5 * r["k"] <= r["l0"] <= r["k"] + 1e-6
        assert 0 < x["loss_recovered"] <= 1.05, (part, x)
        assert x["spliced_loss"] < x["zero_ablation_loss"]
        s = sae.load(d / f"sae_{part}")
        assert s.cfg.hook_name == r["hook"] and s.cfg.activation_scale == 1.0
        assert r["feature_views"]
        for i in r["feature_views"]:
            assert f"features_{part}_{i}.png" in names
    assert m["encoder"]["hook"].endswith("hook_normalized_resid_post")     # post-LN encoder
    assert m["seq2seq"]["hook"] == "decoder.0.hook_cross_attn_out"
    # every alive seq2seq latent is scored against every variable, with sane numbers
    q = m["seq2seq"]
    assert q["alive_latents"] > 0 and len(q["per_latent"]) == q["alive_latents"]
    for row in q["per_latent"].values():
        for v in sae_encoders.VARIABLES:
            assert 0 <= row[v]["precision"] <= 1 and -1e-6 <= row[v]["mi_over_h"] <= 1 + 1e-6
