"""The one training core (superpose.train) under the toy, GPT and SAE trainers: one schedule,
one history/result shape, one checkpoint format and resume rule; checkpoints written by the
version before the core (tests/data/legacy_checkpoints, made by its make_fixtures.py from
commit 9d4ab6c) still resume to what that version's uninterrupted run ended with."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from superpose import gpt, plot, sae, toy
from superpose.train import checkpoint as ckpt_io
from superpose.train.schedule import lr_at, should_log

LEGACY = Path(__file__).parent / "data" / "legacy_checkpoints"


# ---- the schedule: the three old lr_at's are special cases of the one ----------------------

def _cfg(**kw):
    base = dict(steps=100, lr=1.0, schedule="constant", warmup_steps=0, decay_steps=None,
                min_lr_ratio=0.0)
    return type("Cfg", (), {**base, **kw})()


def test_schedule_reproduces_the_old_toy_gpt_and_sae_schedules():
    # toy "cosine" (0-based step, warm-up then cosine to lr * min_lr_ratio)
    c = _cfg(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    for s in range(100):
        old = (1.0 * (s + 1) / 10 if s < 10 else
               0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90)))
        assert lr_at(s, c) == pytest.approx(old)
    # SAE defaults: 1% warm-up, constant, linear decay to 0 over the last 20%
    c = _cfg(schedule="linear", warmup_steps=0.01, decay_steps=0.2)
    for s in range(1000):
        old = ((s + 1) / 10 if s < 10 else 1.0 if s < 800 else (1000 - s) / 200)
        assert lr_at(s, c, steps=1000) == pytest.approx(old)
    # GPT inverse_sqrt, floored
    c = _cfg(schedule="inverse_sqrt", warmup_steps=4, min_lr_ratio=0.2)
    assert [lr_at(s, c) for s in (0, 3, 15, 99)] == pytest.approx(
        [0.25, 1.0, 0.5, 0.2])
    # a linear decay with no decay_steps decays over everything after the warm-up
    c = _cfg(schedule="linear", warmup_steps=20, min_lr_ratio=0.5)
    assert lr_at(19, c) == 1.0 and lr_at(60, c) == pytest.approx(0.75)
    assert lr_at(99, c) == pytest.approx(0.5 + 0.5 / 80)


def test_fraction_and_step_counts_and_their_checks(user_errors):
    assert toy.TrainConfig(steps=50, warmup_steps=0.1).warmup_steps == 0.1
    with pytest.raises(ValueError, match=r"warmup_steps \(60\) must not exceed steps \(50\)"):
        toy.TrainConfig(steps=50, warmup_steps=60)
    with pytest.raises(ValueError, match="together exceed steps"):
        gpt.GPTTrainConfig(steps=50, schedule="linear", warmup_steps=30, decay_steps=30)
    with pytest.raises(ValueError, match=r"warmup_steps must be a number of steps \(an int >= "
                                         r"0\) or a fraction of the run \(a float in \[0, 1\]\), "
                                         r"got 1.5"):
        sae.SAETrainConfig(warmup_steps=1.5)
    with pytest.raises(ValueError, match="lr must be a positive finite number, got inf"):
        toy.TrainConfig(lr=float("inf"))
    assert [d for d in range(1, 31) if should_log(d, 30, 10)] == [1, 10, 20, 30]


def test_every_config_spells_the_schedule_the_same_way():
    fields = ("lr", "schedule", "warmup_steps", "decay_steps", "min_lr_ratio", "steps",
              "log_every", "seed", "betas")
    for cfg in (toy.TrainConfig(), gpt.GPTTrainConfig(), sae.SAETrainConfig()):
        assert all(hasattr(cfg, f) for f in fields), type(cfg).__name__
    for cls in (toy.TrainConfig, gpt.GPTTrainConfig, sae.SAETrainConfig):
        with pytest.raises(TypeError):
            cls(100)                                    # keyword-only, all of them


# ---- results: one shape, one plot ---------------------------------------------------------

def _three_results(tmp_path):
    m = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3), device="cpu")
    r_toy = toy.train(m, steps=30, log_every=10, progress=False)
    tokens = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(0))
    model = gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8),
                    device="cpu")
    r_gpt = gpt.train(model, gpt.TokenDataset(tokens, 8), steps=30, batch_size=4, log_every=10,
                      val_data=gpt.TokenDataset(tokens, 8), val_every=10, val_batches=1,
                      progress=False, device="cpu")
    s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2), device="cpu")
    r_sae = sae.train(s, [torch.randn(16, 8) for _ in range(30)], log_every=10,
                      progress=False)
    return r_toy, r_gpt, r_sae


def test_every_trainer_returns_the_same_result_shape_and_plots(tmp_path):
    import matplotlib.pyplot as plt

    results = _three_results(tmp_path)
    for r in results:
        h = r.history
        assert h.step == [1, 10, 20, 30] and r.step == 30, type(r).__name__
        assert len(h.loss) == len(h.lr) == len(h.seconds) == 4
        assert h.seconds == sorted(h.seconds) and r.seconds > 0
        assert r.resumed_from is None and r.config.steps in (30, None)
        fig = plot.loss_curves(r)
        ax = fig.axes[0]
        assert ax.get_ylabel() == type(h).LOSS_LABEL
        assert list(ax.lines[0].get_xdata()) == [1, 10, 20, 30]
        plt.close(fig)
    r_toy, r_gpt, r_sae = results
    assert r_toy.final_loss.shape == (3,) and isinstance(r_gpt.final_loss, float)
    assert isinstance(r_sae.final_loss, float)
    with pytest.raises(ValueError, match="mixes results of different trainers"):
        plot.loss_curves({"a": r_gpt, "b": r_sae})


# ---- checkpoints: atomic swap, hashes, one resume rule ----------------------------------

def _tiny_gpt_run(out, steps=4, **kw):
    tokens = torch.randint(0, 11, (400,), generator=torch.Generator().manual_seed(0))
    model = gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8),
                    device="cpu")
    return model, gpt.train(model, gpt.TokenDataset(tokens, 8), steps=steps, batch_size=4,
                            out=out, progress=False, device="cpu", **kw)


def test_a_rewrite_interrupted_between_its_two_renames_leaves_a_valid_checkpoint(tmp_path):
    _, r = _tiny_gpt_run(tmp_path, checkpoint_every=2)
    final = r.checkpoint
    # the moment inside save_checkpoint after the old folder was set aside, before the new one
    # took its place: the checkpoint must still be found and read
    os.replace(final, tmp_path / f".swap-{final.name}")
    assert ckpt_io.latest_checkpoint(tmp_path) == tmp_path / f".swap-{final.name}"
    ckpt_io.read_checkpoint(ckpt_io.latest_checkpoint(tmp_path), "superpose.gpt.checkpoint/1")
    model, r2 = _tiny_gpt_run(tmp_path, checkpoint_every=2, resume=True)
    assert r2.resumed_from == 4


def test_a_prune_killed_inside_rmtree_leaves_no_damaged_checkpoint(tmp_path, monkeypatch):
    """Keeping the newest checkpoint deletes the older ones; a kill in the middle of deleting
    one (here: rmtree removes the marker, then the process dies) must leave nothing that the
    next run takes for a damaged checkpoint (it once refused to resume: a kill-test flake)."""
    import shutil

    real = shutil.rmtree

    def dies_midway(path, *a, **kw):
        for marker in Path(path).glob("checkpoint.json"):
            marker.unlink()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(shutil, "rmtree", dies_midway)
        _tiny_gpt_run(tmp_path, checkpoint_every=2)   # step 4's save prunes step 2
    monkeypatch.setattr(shutil, "rmtree", real)
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-00000004"]
    _, r = _tiny_gpt_run(tmp_path, steps=6, checkpoint_every=2, resume=True)
    assert r.resumed_from == 4 and not list(tmp_path.glob(".tmp-*"))


def test_rewriting_a_step_never_removes_it_first(tmp_path, monkeypatch):
    """Watch every rename of the same-step rewrite: after each, a valid checkpoint exists."""
    _, r = _tiny_gpt_run(tmp_path, checkpoint_every=2)
    ck = ckpt_io.read_checkpoint(r.checkpoint, "superpose.gpt.checkpoint/1")
    seen, real = [], os.replace

    def watching(src, dst):
        real(src, dst)
        found = ckpt_io.latest_checkpoint(tmp_path)
        seen.append(found is not None and ckpt_io.read_checkpoint(
            found, "superpose.gpt.checkpoint/1").step == 4)

    model, _ = _tiny_gpt_run(tmp_path / "other", checkpoint_every=2)
    opt = gpt.training.make_optimizer(model, gpt.GPTTrainConfig())[0]
    monkeypatch.setattr(os, "replace", watching)
    ckpt_io.save_checkpoint(tmp_path, 4, format="superpose.gpt.checkpoint/1", model=model,
                            optimizer=opt, param_names=ck.optimizer_param_names,
                            train_config=ck.train_config, history=ck.history, rng=ck.rng,
                            seconds=1.0, meta=ck.meta)
    assert len(seen) >= 2 and all(seen)
    assert not list(tmp_path.glob(".swap-*")) and not list(tmp_path.glob(".tmp-*"))


def test_sae_checkpoints_carry_hashes_and_refuse_a_garbled_byte(tmp_path):
    batches = [torch.randn(16, 8, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="relu"), device="cpu")
    sae.train(s, batches, steps=4, out=tmp_path, checkpoint_every=2, progress=False)
    folder = ckpt_io.latest_checkpoint(tmp_path)
    target = folder / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    s2 = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="relu"), device="cpu")
    with pytest.raises(ValueError, match="model.safetensors does not match the SHA-256"):
        sae.train(s2, batches, steps=6, out=tmp_path, resume=True, checkpoint_every=2,
                  progress=False)


@pytest.mark.parametrize("trainer", ["gpt", "sae"])
def test_one_resume_rule(tmp_path, trainer, user_errors):
    batches = [torch.randn(16, 8) for _ in range(4)]

    def run(**kw):
        if trainer == "gpt":
            return _tiny_gpt_run(tmp_path, checkpoint_every=2, **kw)[1]
        s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2),
                       device="cpu")
        return sae.train(s, batches, steps=4, out=tmp_path, checkpoint_every=2,
                         progress=False, **kw)

    r = run(resume=True)                     # nothing to resume: starts at step 0
    assert r.resumed_from is None and r.checkpoint.name == "checkpoint-00000004"
    with pytest.raises(ValueError, match="already holds checkpoints .* pass resume=True"):
        run()
    assert run(resume=True).resumed_from == 4
    with pytest.raises(ValueError, match="resume must be True or False"):
        run(resume="yes")


# ---- checkpoints written before the core still resume ---------------------------------------

def test_a_legacy_sae_checkpoint_resumes_to_the_old_runs_end(tmp_path):
    shutil.copytree(LEGACY / "sae" / "checkpoint-00000004", tmp_path / "checkpoint-00000004")
    batches = list(load_file(str(LEGACY / "sae" / "batches.safetensors"))["batches"])
    s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=1),
                   device="cpu")
    r = sae.train(s, batches, steps=8, checkpoint_every=4, log_every=2, out=tmp_path,
                  resume=True, progress=False)
    assert r.resumed_from == 4 and r.history.step == [1, 3, 6, 8]   # old entries: 0, 2
    want = load_file(str(LEGACY / "sae" / "final.safetensors"))
    for k, t in want.items():
        torch.testing.assert_close(s.state_dict()[k], t, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "checkpoint-00000008" / "checkpoint.json").is_file()
    assert not (tmp_path / "checkpoint-00000004").exists()       # pruned like any other


def test_a_legacy_gpt_checkpoint_resumes_to_the_old_runs_end(tmp_path):
    shutil.copytree(LEGACY / "gpt" / "checkpoint-00000003", tmp_path / "checkpoint-00000003")
    tokens = load_file(str(LEGACY / "gpt" / "tokens.safetensors"))["tokens"]
    model = gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8),
                    device="cpu")
    torch.nn.init.normal_(model.W_E)                 # the checkpoint's weights replace these
    r = gpt.train(model, gpt.TokenDataset(tokens, 8), steps=6, batch_size=4,
                  checkpoint_every=3, keep_checkpoints=2, log_every=1, out=tmp_path,
                  resume=True, progress=False, device="cpu")
    assert r.resumed_from == 3 and r.history.step == [1, 2, 3, 4, 5, 6]
    want = load_file(str(LEGACY / "gpt" / "final.safetensors"))
    for k, t in want.items():
        torch.testing.assert_close(model.state_dict()[k], t, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["relu_out", "relu_hidden"])    # closed-form and autograd
def test_toy_training_resumes_exactly(tmp_path, variant):
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3, variant=variant,
                        feature_probability=[0.1, 0.3, 1.0])
    kw = dict(lr=1e-2, batch_size=64, log_every=5, progress=False)
    ref = toy.ToyModel(cfg, device="cpu")
    r_ref = toy.train(ref, steps=40, **kw)
    m = toy.ToyModel(cfg, device="cpu")
    first = toy.train(m, steps=20, out=tmp_path, checkpoint_every=10, **kw)
    assert first.checkpoint.name == "checkpoint-00000020"
    m2 = toy.ToyModel(cfg, device="cpu")
    torch.nn.init.normal_(m2.W)                        # the checkpoint's weights replace these
    r = toy.train(m2, steps=40, out=tmp_path, resume=True, checkpoint_every=10, **kw)
    assert r.resumed_from == 20 and r.history.step == r_ref.history.step
    for k, t in ref.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], t, rtol=0, atol=0)
    assert r.history.loss == r_ref.history.loss
    with pytest.raises(ValueError, match="trained with a different config .*lr"):
        toy.train(toy.ToyModel(cfg, device="cpu"), steps=40, out=tmp_path, resume=True,
                  **{**kw, "lr": 0.5})
