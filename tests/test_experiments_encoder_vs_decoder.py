"""experiments/encoder_vs_decoder.py: the quick run writes its files, keeps the comparison fair
(same parameter count but the pooler and special rows, same positions seen), both models learn
(beat their untrained selves on the tasks that training must help), and every verdict follows
from the numbers it reports: the science tier. The verdict rules and the identifier labels are
unit tests."""

from __future__ import annotations

import json
import statistics

import encoder_vs_decoder as evd
import pytest


def run_dir(root):
    (path,) = list((root / "encoder_vs_decoder").iterdir())
    return path


# The verdict rule as the module docstring states it, written again here.
def expected_winner(key: str, pairs: list[tuple[float, float]]) -> str:
    better = [(e > g) if key != "G1" else (e < g) for e, g in pairs]
    worse = [(e < g) if key != "G1" else (e > g) for e, g in pairs]
    margin = evd.LOSS_MARGIN if key == "G1" else evd.ACC_MARGIN
    gap = statistics.fmean((e - g) if key != "G1" else (g - e) for e, g in pairs)
    if gap > margin and all(better):
        return "encoder"
    if gap < -margin and all(worse):
        return "gpt"
    return "neither"


@pytest.mark.parametrize(("key", "pairs", "winner"), [
    ("U1", [(0.8, 0.7), (0.75, 0.7)], "encoder"),
    ("U1", [(0.8, 0.7), (0.69, 0.7)], "neither"),        # one seed disagrees
    ("U2", [(0.51, 0.50), (0.515, 0.50)], "neither"),    # within the margin
    ("U3", [(0.3, 0.4), (0.2, 0.4)], "gpt"),
    ("G1", [(2.5, 2.0), (2.6, 2.1)], "gpt"),             # a loss: lower wins
    ("G1", [(1.9, 2.0), (1.8, 2.0)], "encoder"),
])
def test_task_verdict_follows_the_numbers(key, pairs, winner):
    v = evd.task_verdict(key, pairs)
    assert v["winner"] == winner == expected_winner(key, pairs)


def test_overall_verdict():
    enc_wins = {"U1": (0.9, 0.5), "U2": (0.9, 0.5), "U3": (0.9, 0.5), "G1": (3.0, 2.0)}
    v = evd.verdicts([enc_wins, enc_wins])
    assert v["understanding"] == "supported" and v["generating"] == "supported"
    assert v["overall"] == "supported"
    mixed = {**enc_wins, "U1": (0.5, 0.9), "G1": (2.0, 3.0)}
    v = evd.verdicts([mixed])
    assert v["understanding"].startswith("partly supported (encoder better on U2, U3; GPT "
                                         "better on U1)")
    assert v["generating"].startswith("contradicted")
    assert v["overall"] == "partly supported"
    gpt_all = {"U1": (0.5, 0.9), "U2": (0.5, 0.9), "U3": (0.5, 0.9), "G1": (2.0, 2.01)}
    v = evd.verdicts([gpt_all])
    assert v["understanding"].startswith("contradicted") and v["generating"].startswith("not")
    assert v["overall"] == "not supported"


def test_identifier_labels():
    text = " foo = bar(foo) + baz.qux(bar) if x else self.foo "
    ex = {(e["start"], e["name"]): e for e in evd.identifier_examples(text)}
    # keywords/builtins/"self" and names under 3 characters are not examples
    assert {name for _, name in ex} == {"foo", "bar", "baz", "qux"}
    first_foo, second_foo = sorted(k for k in ex if k[1] == "foo")[:2]
    assert ex[first_foo]["elsewhere"] == 1 and ex[first_foo]["earlier"] == 0
    assert ex[second_foo]["earlier"] == 1
    assert ex[(text.index("baz"), "baz")]["elsewhere"] == 0
    # an identifier cut by the window's edge is not an example (its name is not known)
    assert all(e["start"] > 0 and e["end"] < len("foo bar foo")
               for e in evd.identifier_examples("foo bar foo"))


@pytest.mark.science
def test_encoder_vs_decoder_quick(tmp_path):
    # catches: an unfair comparison (parameter counts or positions seen that differ), a model
    # that does not learn (the trained GPT and encoder must beat their untrained selves at
    # predicting characters), an encoder generation loop that reads the wrong position, a
    # probe on unbalanced classes, or a verdict that does not follow from its own numbers.
    m = evd.run(out=tmp_path, quick=True, progress=False)
    d = run_dir(tmp_path)
    assert {"config.json", "metrics.json", "encoder_vs_decoder.png"} <= {
        p.name for p in d.iterdir()}
    saved = json.loads((d / "metrics.json").read_text())
    cfg = evd.configs(quick=True, seed=0)

    # Fair: same parameters but BERT's pooler and the four special-token rows; same budget.
    p = m["params"]
    assert p["gpt"] == p["encoder_without_pooler_and_specials"]
    assert p["encoder"] - p["gpt"] == p["encoder_pooler"] + p["encoder_special_rows"]
    for t in m["training"]:
        assert t["gpt"]["positions_seen"] == t["encoder"]["positions_seen"]
        assert t["encoder"]["positions_scored"] < t["gpt"]["positions_scored"]

    # Both learn: characters predicted far better than by the untrained models.
    un = m["untrained_headline"]
    assert un["G1"][0] > m["uniform_loss"] - 0.5 and un["G1"][1] > m["uniform_loss"] - 0.5
    for ev in m["per_seed"]:
        h = evd.headline(ev)
        assert h["G1"][1] < un["G1"][1] - 1.0              # GPT, natively
        assert h["G1"][0] < un["G1"][0] - 0.5              # encoder, [MASK] at the end
        assert h["U3"][0] > un["U3"][0] + 0.1              # encoder fills the middle
        assert h["U3"][1] > un["U3"][1] + 0.1
        for task in ("U1 module",):
            assert all(0.0 <= a <= 1.0 for a in ev[task].values())
        for label, least in (("elsewhere", 50), ("earlier", 20)):
            u2 = ev["U2 identifier"][label]
            assert u2["n_train"] % 2 == 0 and u2["n_test"] >= least   # balanced, not tiny
        g2 = ev["G2 samples"]
        for model in ("gpt", "encoder"):
            assert len(g2[model]["greedy"]) == cfg["data"]["n_new"]
            assert 0.0 <= g2[model]["real_identifier_fraction"] <= 1.0

    # Every claim has a verdict, and it follows from the numbers reported with it.
    v = saved["verdict"]
    heads = [evd.headline(ev) for ev in m["per_seed"]]
    for key in evd.TASKS:
        t = v["tasks"][key]
        pairs = [h[key] for h in heads]
        assert t["encoder"] == pytest.approx([e for e, _ in pairs])
        assert t["gpt"] == pytest.approx([g for _, g in pairs])
        assert t["winner"] == expected_winner(key, pairs)
        assert evd.TASKS[key] in m["summary"]
    assert v["overall"] in ("supported", "partly supported", "not supported")
    assert v["understanding"].split(" (")[0] in ("supported", "partly supported",
                                                 "contradicted", "not supported")
    assert v["generating"].split(" (")[0] in ("supported", "contradicted", "not supported")
    assert (v["generating"] == "supported") == (v["tasks"]["G1"]["winner"] == "gpt")
    assert m["summary"]["claim: encoder better at understanding, decoder at generating"] == \
        v["overall"]
