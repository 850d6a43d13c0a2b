"""experiments/jl_digits.py in quick mode: the science tier."""

from __future__ import annotations

import json

import pytest


@pytest.mark.science
def test_jl_digits_quick(tmp_path):
    # catches: a projection scaled wrongly (pairs would not stay within eps near the bound),
    # a JL bound computed wrongly (not within ~2x of what all pairs need), or a smallest-k
    # search that stops at the wrong k (the median pair would not need far fewer dimensions).
    import jl_digits

    m = jl_digits.run(out=tmp_path, quick=True, progress=False)
    (run_dir,) = list((tmp_path / "jl_digits").iterdir())
    assert {"config.json", "metrics.json", "distortion_vs_k.png",
            "pair_distortion.png"} <= {p.name for p in run_dir.iterdir()}
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["summary"] and saved["n_samples"] == 300 and saved["n_features"] == 64
    assert set(m["table"]) == {"0.2", "0.3"}
    for row in m["table"].values():
        # all pairs: the bound is within a factor ~2 of what is needed (nearly tight) ...
        assert 0.3 < row["gaussian all pairs / bound"] < 1.5
        # ... while the median pair needs an order of magnitude fewer dimensions
        assert row["bound / gaussian median pair"] > 20
