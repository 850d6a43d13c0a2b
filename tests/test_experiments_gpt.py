"""The GPT experiment scripts in quick mode: they write their files, and the science that is
robust at quick-mode sizes holds (a char model beats the bigram, the induction circuit forms,
the fixed-length shortcut does not generalise)."""

from __future__ import annotations

import json
import math

import gpt_claims
import gpt_corpus
import gpt_induction
import pytest
import torch

from superpose import gpt, plot, toy


def run_dir(root, experiment):
    (path,) = list((root / experiment).iterdir())
    return path


def files(path) -> set[str]:
    return {p.name for p in path.iterdir()}


@pytest.mark.slow
def test_gpt_corpus_quick(tmp_path):
    m = gpt_corpus.run(out=tmp_path, quick=True, progress=False)
    d = run_dir(tmp_path, "gpt_corpus")
    assert {"config.json", "metrics.json", "tokenizer.json", "model", "loss_curves.png",
            "attention_layer0.png", "attention_layer1.png", "prev_token_scores.png",
            "induction_scores.png"} <= files(d)
    saved = json.loads((d / "metrics.json").read_text())
    assert saved["summary"] and saved["history"]["val_loss"]
    base = m["baselines"]
    assert base["uniform"] == pytest.approx(math.log(m["vocab_size"]))
    assert base["bigram"] < base["unigram"] < base["uniform"]
    # Well below guessing, below the unigram, and (using context) below the bigram.
    assert m["final_val_loss"] < base["uniform"] - 2.0
    assert m["final_val_loss"] < base["bigram"] - 0.1
    # Samples: every setting, each the prompt plus max_new_tokens characters.
    assert len(m["samples"]) == len(gpt_corpus.SAMPLING)
    n_new = json.loads((d / "config.json").read_text())["sampling"]["max_new_tokens"]
    for s in m["samples"]:
        assert s["text"].startswith(gpt_corpus.PROMPT)
        assert len(s["text"]) == len(gpt_corpus.PROMPT) + n_new
    assert "sample, temperature 0 (greedy)" in m["summary"]
    # The saved model and tokenizer are the trained ones: they reproduce the validation loss.
    model = gpt.GPT.load(d / "model")
    tok = gpt.load_tokenizer(d / "tokenizer.json")
    cfg = gpt_corpus.configs(quick=True, seed=0, vocab_size=tok.vocab_size)
    corpus = gpt.load_corpus("stdlib", max_chars=cfg["corpus"]["max_chars"])
    val = gpt.TokenDataset(tok.encode(corpus.val), model.cfg.n_ctx)
    again = gpt.evaluate(model, val, batches=cfg["train"].val_batches,
                         batch_size=cfg["train"].batch_size)
    assert again == pytest.approx(m["final_val_loss"], abs=1e-4)
    assert m["prev_token_scores"].shape == (2, 4)


@pytest.mark.slow
def test_gpt_induction_quick(tmp_path):
    m = gpt_induction.run(out=tmp_path, quick=True, progress=False)
    d = run_dir(tmp_path, "gpt_induction")
    assert {"config.json", "metrics.json", "model", "shortcut_model", "loss_curves.png",
            "induction_scores.png", "prev_token_scores.png", "attention_layer0.png",
            "attention_layer1.png", "shortcut_attention_layer0.png",
            "loss_by_position_eval.png", "loss_by_position_other_len.png"} <= files(d)
    ev = m["induction_model"]["eval"]
    ind, prev = ev["induction_scores"], ev["prev_token_scores"]
    # The circuit: induction heads in layer 1, a previous-token head in layer 0.
    assert ev["best_induction_head"].startswith("L1")
    assert ev["best_induction_score"] > 0.5
    assert float(ind[0].max()) < 0.1                      # layer 0 cannot do induction alone
    assert ev["layer0_best_prev_token_score"] > 0.5
    # In-context learning: the first copy is noise, the second is predicted.
    uniform = math.log(gpt_induction.D_VOCAB)
    assert ev["first_half_loss"] == pytest.approx(uniform, abs=0.1)
    assert ev["second_half_loss"] < ev["first_half_loss"] - 2.0
    # Zeroing every layer-1 head (or every layer-0 head) destroys it.
    abl = m["induction_model"]["ablation_copy_loss"]
    assert abl["all layer-1 heads"] > uniform - 0.5
    assert abl["all layer-0 heads"] > uniform - 0.5
    # The same circuit works at another repeat length (after noise, as in training).
    assert m["induction_model"]["other_len"]["second_half_loss"] < 1.5
    # The fixed-length shortcut: "induction" in layer 0 by position, useless at another length.
    short = m["shortcut_model"]
    assert short["eval"]["best_induction_head"].startswith("L0")
    assert short["eval"]["best_induction_score"] > 0.8
    assert short["eval"]["second_half_loss"] < 0.2
    assert short["other_len"]["second_half_loss"] > uniform
    assert prev.shape == (2, 4)


def test_shifted_repeats_rows():
    t = gpt_induction.shifted_repeats(64, 16, 64, torch.Generator().manual_seed(0))
    assert t.shape == (64, 33) and (t[:, 0] == gpt_induction.BOS).all()
    assert (t[:, 1:] != gpt_induction.BOS).all()
    # Every row ends with a block repeated twice, of length between MIN_REPEAT and 16.
    for row in t[:, 1:]:
        assert any(torch.equal(row[-2 * n:-n], row[-n:])
                   for n in range(gpt_induction.MIN_REPEAT, 17))


@pytest.mark.slow
def test_gpt_claims_quick(tmp_path):
    m = gpt_claims.run(out=tmp_path, quick=True, progress=False)
    d = run_dir(tmp_path, "gpt_claims")
    assert {"config.json", "metrics.json", "warmup_final_loss.png", "warmup_loss_curves.png",
            "loss_by_position.png"} <= files(d)
    cfg = gpt_claims.configs(quick=True, seed=0)
    w = m["warmup"]
    n_runs = len(cfg["warmup_claim"]["lrs"]) * cfg["warmup_claim"]["n_seeds"] * 4
    assert len(w["runs"]) == n_runs
    assert {(t["norm"], t["lr"]) for t in w["table"]} == {
        (norm, lr) for norm in ("pre", "post") for lr in cfg["warmup_claim"]["lrs"]}
    for r in w["runs"]:                               # every run learned something
        assert math.isfinite(r["val_loss"]) and r["val_loss"] < m["uniform_loss"] - 1.0
    assert w["verdict"]["status"].split(" (")[0] in (
        "supported", "partly supported", "not supported")
    p = m["positions"]
    assert [row["positional"] for row in p["table"]] == cfg["positions_claim"]["positionals"]
    for curve in p["per_position"].values():
        assert curve.shape == (2 * cfg["positions_claim"]["train_len"],)
    for row in p["table"]:
        assert row["within (positions 1..L)"] < m["uniform_loss"] - 1.0
    assert p["verdict"]["status"].split(" (")[0] in ("supported", "not supported",
                                                     "contradicted")
    assert "(a) post-LN needs warm-up, pre-LN does not" in m["summary"]


def _gpt_result(steps: int, val_every: int) -> gpt.GPTTrainResult:
    h = gpt.TrainHistory(steps=list(range(1, steps + 1)),
                         train_loss=[4.0 - 0.01 * i for i in range(steps)],
                         lr=[1e-3] * steps, grad_norm=[1.0] * steps,
                         tokens=[64 * i for i in range(1, steps + 1)],
                         seconds=[0.01 * i for i in range(1, steps + 1)],
                         val_steps=list(range(val_every, steps + 1, val_every)),
                         val_loss=[3.5 - 0.01 * i for i in range(val_every, steps + 1,
                                                                   val_every)])
    return gpt.GPTTrainResult(history=h, config=gpt.GPTTrainConfig(steps=steps), step=steps,
                              seconds=1.0, tokens_per_second=1.0, world_size=1)


def test_loss_curves_of_gpt_results():
    res = _gpt_result(100, 25)
    fig = plot.loss_curves(res, smooth=5)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "cross-entropy (nats/token)"
    assert ax.get_yscale() == "linear"                 # GPT default; toy results stay log
    train, val = ax.lines
    assert len(train.get_xdata()) == 100
    assert list(val.get_xdata()) == [25, 50, 75, 100]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train (per batch, mean of 5)", "validation"]
    assert len(plot.loss_curves(res, val=False).axes[0].lines) == 1
    fig = plot.loss_curves({"a": res, "b": _gpt_result(50, 10)}, log=True)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "a", "b", "train (per batch)", "validation"]
    toy_res = toy.TrainResult(torch.arange(3), torch.rand(3, 2), torch.ones(3), 1.0,
                              toy.TrainConfig())
    assert plot.loss_curves(toy_res).axes[0].get_ylabel() == "loss (importance-weighted MSE)"
    with pytest.raises(ValueError, match="mixes toy TrainResults and GPT"):
        plot.loss_curves({"toy": toy_res, "gpt": res})
