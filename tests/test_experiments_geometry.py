"""The geometry experiments in quick mode: the science tier."""

from __future__ import annotations

import json
import math

import pytest


@pytest.mark.science
def test_geometry_claims_quick(tmp_path, monkeypatch):
    # catches: a bound computed wrongly (a packing below it, or claim (a)'s 1437), random-pair
    # statistics that disagree with the closed-form probability, a Gold code that is not the
    # 9/31 one, a fitted capacity constant off the theory, or a "where" verdict (worse than
    # random / between / as good as optimised) that does not follow from its coherences.
    import geometry_claims

    quick = geometry_claims.configs

    def smaller(q: bool, seed: int) -> dict:         # quick mode, cut further for the suite
        cfg = quick(q, seed)
        cfg["a"]["n_random"] = 600
        cfg["b"]["pack_steps"] = 100
        cfg["b"]["gold_pack_steps"] = 60
        cfg["d"]["measured_dims"] = {"30": [4, 16], "10": [16]}
        cfg["e"]["toy"]["steps"] = 200
        cfg["e"]["sae"]["steps"] = 100
        cfg["e"]["gpt"].update(steps=30, max_chars=30_000, min_count=20)
        cfg["e"]["pack_steps"] = 100
        return cfg

    monkeypatch.setattr(geometry_claims, "configs", smaller)
    m = geometry_claims.run(out=str(tmp_path), quick=True, progress=False)
    c = m["claims"]
    assert c["a"]["verdict"] == "false" and c["a"]["max_n_by_bounds"] == 1437
    assert c["a"]["measured_random"]["fraction_pairs_within"] == pytest.approx(
        c["a"]["p_random_pair_within_tolerance"], abs=0.01)
    b = c["b"]
    assert b["optimised"]["coherence"] >= b["bounds"]["best"] - 1e-9     # the bound holds
    assert b["optimised"]["coherence"] < b["random"]["coherence"]
    g = b["structured"]
    assert (g["n"], g["d"]) == (1024, 31)
    assert g["gold"]["coherence"] == pytest.approx(9 / 31, rel=1e-6)
    assert 1.0 < g["gold"]["ratio_to_bound"] < g["pack"]["ratio_to_bound"]
    assert c["c"]["verdict"] == "false"
    row = next(r for r in c["c"]["table"] if r["d"] == 1000 and r["min_angle_deg"] == 90.0)
    assert row["log10_formula_log2"] == pytest.approx(500 * math.log10(2))
    per = c["d"]["per_tolerance_deg"]["1"]
    assert per["constant_fitted_per_dim"] == pytest.approx(per["constant_theory_per_dim"],
                                                           rel=0.02)
    for key in ("toy", "sae", "gpt"):
        r = c["e"][key]
        assert r["pack()"]["coherence"] >= r["bound_coherence"] - 1e-9
        mu = {k: r[k]["coherence"] for k in ("learned", "random", "pack()")}
        assert r["where"] == ("worse than random" if mu["learned"] > mu["random"] else
                              "as good as optimised" if mu["learned"] <= 1.05 * mu["pack()"]
                              else "between random and optimised")
    run_dir = tmp_path / "geometry_claims"
    files = {p.name for p in next(run_dir.iterdir()).iterdir()}
    assert {"claim_a_b.png", "claim_b_history.png", "claim_c_d.png", "claim_e.png",
            "metrics.json", "config.json"} <= files
    saved = json.loads(next(run_dir.glob("*/metrics.json")).read_text())
    assert set(saved["claims"]) == set("abcde")


@pytest.mark.science
def test_packing_capacity_quick(tmp_path):
    # catches: pack() that no longer reaches the known optimal packings, or a capacity search
    # that reports more vectors than the bound allows (or a wrong bound).
    import packing_capacity

    m = packing_capacity.run(out=str(tmp_path), quick=True, progress=False)
    for row in m["known_packings"]:
        assert row["achieved_coherence"] >= row["bound"] - 1e-9
        assert row["ratio"] < 1.01, row                # pack() finds the known packing
    for d, cap in m["capacity_measured"].items():
        assert int(d) < cap["pack_n"] <= cap["upper"]   # a construction never beats the bound
    assert m["capacity_measured"]["3"]["pack_n"] == 4   # 5 lines in R^3 need |cos| ≥ 0.447
    assert (next((tmp_path / "packing_capacity").iterdir()) / "packing_capacity.png").is_file()
