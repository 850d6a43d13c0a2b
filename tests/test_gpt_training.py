"""The GPT trainer: config checks, schedules, gradient accumulation, checkpoints that are
complete or absent, resume that repeats an uninterrupted run exactly, and DDP on 2 CPU
processes matching 1 process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superpose import gpt
from superpose.gpt.corpus import TokenDataset
from superpose.gpt.training import (
    GPTTrainConfig,
    evaluate,
    forward_backward,
    lr_at,
    param_groups,
    train,
)
from superpose.train import checkpoint as ckpt_io

V = 11


class Tiny(nn.Module):
    """Embedding, dropout, LayerNorm, linear: tokens -> logits, and not a GPT (the trainer is
    model-agnostic). Counts its training forwards and can crash at a chosen one."""

    def __init__(self, d: int = 8, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, d)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, V)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.calls, self.crash_at = 0, None

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.crash_at is not None and self.calls >= self.crash_at:
                raise KeyboardInterrupt("simulated crash")
        return self.out(self.norm(self.drop(self.embed(x))))


def successor_tokens(n: int = 3000, seed: int = 0) -> torch.Tensor:
    """A stream where every token fixes the next one (t -> 3t + 1 mod V) except that one step
    in 8 jumps at random: a bigram a model can learn almost perfectly."""
    g = torch.Generator().manual_seed(seed)
    out = [0]
    for jump in torch.rand(n - 1, generator=g).tolist():
        out.append(int(torch.randint(0, V, (1,), generator=g)) if jump < 0.125
                   else (3 * out[-1] + 1) % V)
    return torch.tensor(out)


@pytest.fixture(scope="module")
def data():
    return TokenDataset(successor_tokens(), n_ctx=8)


@pytest.fixture(scope="module")
def val_data():
    return TokenDataset(successor_tokens(800, seed=1), n_ctx=8)


def small_gpt(**kw):
    base = dict(d_vocab=V, n_layers=1, d_model=16, n_heads=2, n_ctx=8, seed=0)
    return gpt.GPT(gpt.GPTConfig(**{**base, **kw}), device="cpu")


def quiet(**kw):
    return dict(progress=False, device="cpu", **kw)


def weights(model):
    return {k: t.detach().clone() for k, t in model.state_dict().items()}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its SHA-256: to show that nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_run(a, b, wa, wb, atol=0.0):
    for f in dataclasses.fields(a.history):
        if f.name == "seconds":
            continue
        x, y = getattr(a.history, f.name), getattr(b.history, f.name)
        assert len(x) == len(y), f.name
        assert torch.allclose(torch.tensor(x, dtype=torch.float64),
                              torch.tensor(y, dtype=torch.float64), rtol=0, atol=atol), f.name
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


# ---- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(steps=0), r"steps must be a positive integer, got 0"),
    (dict(schedule="linaer"),
     r"schedule must be one of \['constant', 'cosine', 'linear', 'inverse_sqrt'\], got "
     r"'linaer' \(did you mean 'linear'\?\)"),
    (dict(precision="fp16"), r"precision must be one of \['auto', 'fp32', 'bf16'\], got 'fp16'"),
    (dict(batch_size=10, grad_accum=4),
     r"batch_size \(10\) must be divisible by grad_accum \(4\).*one of \[1, 2, 5, 10\]"),
    (dict(steps=10, warmup_steps=20), r"warmup_steps \(20\) must not exceed steps \(10\)"),
    (dict(grad_clip=0), r"grad_clip must be a positive finite max norm, or None to turn clipping "
         r"off, got 0"),
    (dict(label_smoothing=1.0), r"label_smoothing must be a finite number in \[0, 1\), got 1.0"),
    (dict(betas=(0.9, 1.0)),
     r"betas must be two values, each a finite number in \[0, 1\), got \(0.9, 1.0\)"),
    (dict(min_lr_ratio=2), r"min_lr_ratio must be a finite number in \[0, 1\], got 2"),
    (dict(lr=-1), r"lr must be a positive finite number, got -1"),
    (dict(decay_embeddings="no"), r"decay_embeddings must be True or False, got 'no'"),
])
def test_config_rejects_bad_values(user_errors, kw, message):
    with pytest.raises(ValueError, match=message):
        GPTTrainConfig(**kw)


def test_config_defaults_and_overrides(user_errors, data):
    cfg = GPTTrainConfig()
    assert (cfg.schedule, cfg.grad_clip, cfg.betas, cfg.precision) == (
        "cosine", 1.0, (0.9, 0.95), "auto")
    with pytest.raises(TypeError):
        GPTTrainConfig(100)                                   # keyword-only
    with pytest.raises(ValueError, match=r"unknown GPTTrainConfig field\(s\) \['step'\].*"
                                         r"did you mean 'steps'"):
        train(Tiny(), data, step=3, **quiet())


def test_lr_schedules():
    cos = GPTTrainConfig(steps=110, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert [lr_at(s, cos) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(10, cos) == pytest.approx(1.0)                     # top of the cosine
    assert lr_at(60, cos) == pytest.approx(0.55)                    # halfway: (1 + 0.1) / 2
    assert lr_at(110, cos) == pytest.approx(0.1)                    # the floor
    inv = dataclasses.replace(cos, schedule="inverse_sqrt", min_lr_ratio=0.0)
    assert lr_at(9, inv) == pytest.approx(1.0)
    assert lr_at(39, inv) == pytest.approx(0.5)                     # sqrt(10 / 40)
    assert lr_at(999, inv) == pytest.approx(0.1)
    const = dataclasses.replace(cos, schedule="constant")
    assert lr_at(5, const) == pytest.approx(0.6) and lr_at(100, const) == 1.0
    no_warm = GPTTrainConfig(steps=10, lr=2.0)
    assert lr_at(0, no_warm) == 2.0


def test_weight_decay_groups():
    model = small_gpt(positional="learned")
    (decay, no_decay), names = param_groups(model, GPTTrainConfig())
    decayed = names[:len(decay["params"])]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {"W_E", "W_pos", "W_U", "blocks.0.attn.W_QKV", "blocks.0.attn.W_O",
            "blocks.0.mlp.W_in", "blocks.0.mlp.W_out"} == set(decayed)
    assert set(names[len(decayed):]) == {                           # biases and LN gains
        "b_U", "blocks.0.attn.b_QKV", "blocks.0.attn.b_O", "blocks.0.mlp.b_in",
        "blocks.0.mlp.b_out", "blocks.0.ln1.w", "blocks.0.ln1.b", "blocks.0.ln2.w",
        "blocks.0.ln2.b", "ln_final.w", "ln_final.b"}
    (decay, _), names = param_groups(model, GPTTrainConfig(decay_embeddings=False))
    assert {"W_E", "W_pos"}.isdisjoint(names[:len(decay["params"])])
    (decay, _), names = param_groups(Tiny(), GPTTrainConfig(decay_embeddings=False))
    assert names[:len(decay["params"])] == ["out.weight"]          # nn.Embedding exempt


# ---- the step --------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_accumulated_gradient_equals_big_batch_gradient(data, smoothing):
    x, y = data.sample(12, generator=torch.Generator().manual_seed(3))
    big, acc = small_gpt(), small_gpt()
    logits = big(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), label_smoothing=smoothing).backward()
    loss = forward_backward(acc, x, y, 4, label_smoothing=smoothing)
    assert float(loss) == pytest.approx(float(F.cross_entropy(
        logits.detach().flatten(0, 1), y.flatten(), label_smoothing=smoothing)), abs=1e-6)
    for (name, p), q in zip(big.named_parameters(), acc.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_grad_accum_runs_match_one_big_batch(data):
    runs, ws = [], []
    for accum in (1, 4):
        m = small_gpt()
        runs.append(train(m, data, steps=6, batch_size=8, grad_accum=accum, log_every=1,
                          **quiet()))
        ws.append(weights(m))
    assert_same_run(*runs, *ws, atol=1e-5)
    assert runs[0].history.tokens == [8 * 8 * s for s in range(1, 7)]


def test_training_learns_the_bigram_and_validates(data, val_data):
    model = Tiny()
    r = train(model, data, steps=150, batch_size=16, lr=3e-2, warmup_steps=10,
              val_data=val_data, val_every=50, val_batches=4, log_every=10, **quiet())
    h = r.history
    assert h.step == [1, *range(10, 151, 10)]
    assert h.val_step == [50, 100, 150]
    assert h.loss[0] > 2.0                   # about ln(11) = 2.4 and worse at init
    # The floor: 7/8 of next tokens are fixed, 1/8 uniform over 11 -> entropy ~0.6 nats.
    assert r.final_loss < 0.8 and h.val_loss[-1] < 0.8
    assert h.val_loss[-1] == pytest.approx(
        evaluate(model, val_data, n_batches=4, batch_size=16), abs=1e-6)
    assert len(h.lr) == len(h.grad_norm) == len(h.seconds) == len(h.step)
    assert r.history.series("loss").shape == (len(h.step),)


def test_train_leaves_the_global_rng_alone(data):
    model = Tiny(dropout=0.3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(model, data, steps=3, batch_size=4, **quiet())
    assert torch.equal(torch.get_rng_state(), before)


def test_bf16_autocast_on_cpu(data):
    r32 = train(small_gpt(), data, steps=3, batch_size=8, log_every=1, **quiet())
    r16 = train(small_gpt(), data, steps=3, batch_size=8, log_every=1, precision="bf16",
                **quiet())
    assert all(math.isfinite(x) for x in r16.history.loss)
    assert r16.history.loss == pytest.approx(r32.history.loss, abs=0.05)
    assert r16.history.loss != r32.history.loss        # it did run in bf16


def test_label_smoothing_enters_the_training_loss_only(data):
    model = small_gpt()
    x, y = data.sample(8, generator=torch.Generator().manual_seed(0))          # the first batch
    with torch.no_grad():
        logits = model(x).flatten(0, 1)
    r = train(model, data, steps=1, batch_size=8, label_smoothing=0.2, val_data=data,
              val_batches=1, **quiet())
    assert r.history.loss[0] == pytest.approx(
        float(F.cross_entropy(logits, y.flatten(), label_smoothing=0.2)), abs=1e-5)
    assert r.history.val_loss[0] == pytest.approx(
        evaluate(model, data, n_batches=1, batch_size=8), abs=1e-6)  # plain cross-entropy


def test_evaluate_names_and_micro_batches(data):
    model = small_gpt()
    whole = evaluate(model, data, n_batches=3, batch_size=8)
    assert evaluate(model, data, n_batches=3, batch_size=8, micro_batch_size=3) == \
        pytest.approx(whole, rel=1e-6)                  # row splits change rounding only
    assert evaluate(model, data, n_batches=1, batch_size=8) != pytest.approx(whole, rel=1e-9)
    with pytest.warns(DeprecationWarning, match=r"evaluate\(batches=\.\.\.\) is now "
                                                r"evaluate\(n_batches=\.\.\.\)"):
        assert evaluate(model, data, batches=3, batch_size=8) == whole
    with pytest.warns(DeprecationWarning, match=r"evaluate\(chunk_size=\.\.\.\) is now "
                                                r"evaluate\(micro_batch_size=\.\.\.\)"):
        assert evaluate(model, data, n_batches=3, batch_size=8, chunk_size=3) == \
            pytest.approx(whole, rel=1e-6)
    with pytest.raises(TypeError, match="both n_batches= and its old name batches="):
        evaluate(model, data, n_batches=2, batches=3)


def test_bad_data_and_models_fail_clearly(user_errors, data):
    batch = data.sample(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"data batch 0 has 4 sequences but batch_size is 8"):
        train(Tiny(), [batch], steps=1, batch_size=8, **quiet())
    with pytest.raises(ValueError, match=r"data ran out after 1 batches"):
        train(Tiny(), [batch], steps=2, batch_size=4, **quiet())
    with pytest.raises(ValueError, match=r"must be a pair \(x, y\) of token tensors"):
        train(Tiny(), [batch[0]], steps=1, batch_size=4, **quiet())
    with pytest.raises(ValueError, match=r"val_data must be re-iterable"):
        train(Tiny(), data, steps=1, batch_size=4, val_data=iter([batch]), **quiet())
    with pytest.raises(ValueError, match=r"must map tokens \[batch, pos\] to logits"):
        train(_Flat(), data, steps=1, batch_size=4, **quiet())
    with pytest.raises(ValueError, match=r"resume=True needs out="):
        train(Tiny(), data, steps=1, resume=True, **quiet())


class _Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(V))

    def forward(self, x):
        return self.w.expand(x.shape[0], V)                         # forgot the pos axis


# ---- checkpoints and resume ---------------------------------------------------------------

def crash_then_resume(make, data, out, *, crash_at_forward, **kw):
    """Train until a simulated crash, then a fresh model resumes from `out`."""
    first = make()
    first.crash_at = crash_at_forward
    with pytest.raises(KeyboardInterrupt):
        train(first, data, out=out, **kw)
    second = make()
    return second, train(second, data, out=out, resume=True, **kw)


def test_resume_repeats_an_uninterrupted_run_exactly(tmp_path, data, val_data):
    """Dropout, gradient accumulation, warm-up + cosine and validation: a run that crashes
    after step 7 (last checkpoint: step 6) and resumes gives the same losses, learning rates,
    gradient norms and final weights as one that never stopped, bit for bit."""
    kw = dict(steps=12, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=3, log_every=1,
              val_data=val_data, val_every=4, val_batches=2, checkpoint_every=3, **quiet())
    whole = Tiny(dropout=0.3)
    a = train(whole, data, **kw)
    # two forwards per step (grad_accum=2): forward 17 is the first of step 9
    resumed, b = crash_then_resume(lambda: Tiny(dropout=0.3), data, tmp_path,
                                   crash_at_forward=17, **kw)
    assert b.resumed_from == 6 and b.step == 12
    assert_same_run(a, b, weights(whole), weights(resumed))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000012"]   # keep 1, no temp


def test_n_steps_then_resume_to_2n_equals_2n_steps(tmp_path, data, val_data):
    """The literal form: train N steps, then call again with steps=2N and resume=True (a
    constant schedule, so the horizon does not matter)."""
    kw = dict(batch_size=8, grad_accum=2, schedule="constant", warmup_steps=2, log_every=1,
              val_data=val_data, val_every=3, val_batches=2, **quiet())
    whole = Tiny(dropout=0.3)
    a = train(whole, data, steps=12, **kw)
    split = Tiny(dropout=0.3)
    train(split, data, steps=6, out=tmp_path, **kw)
    again = Tiny(dropout=0.3)
    b = train(again, data, steps=12, out=tmp_path, resume=True, **kw)
    assert b.resumed_from == 6
    assert_same_run(a, b, weights(whole), weights(again))


def test_resume_real_gpt_with_dropout(tmp_path, data):
    kw = dict(steps=8, batch_size=8, grad_accum=2, log_every=1, warmup_steps=2,
              checkpoint_every=4, **quiet())
    make = lambda: small_gpt(dropout=0.2)                            # noqa: E731
    whole = make()
    a = train(whole, data, **kw)
    first = make()
    calls = []

    def crash(x, hook):
        calls.append(1)
        if len(calls) == 11:                                         # step 6
            raise KeyboardInterrupt("simulated crash")
    first.add_hook("hook_embed", crash)
    with pytest.raises(KeyboardInterrupt):
        train(first, data, out=tmp_path, **kw)
    second = make()
    b = train(second, data, out=tmp_path, resume=True, **kw)
    assert b.resumed_from == 4
    assert_same_run(a, b, weights(whole), weights(second))
    # The checkpoint is a saved GPT as well: GPT.load opens it.
    loaded = gpt.GPT.load(ckpt_io.latest_checkpoint(tmp_path))
    assert loaded.cfg == second.cfg
    assert all(torch.equal(t, weights(second)[k]) for k, t in loaded.state_dict().items())


def test_resume_with_an_iterable_replays_it(tmp_path, data):
    g = torch.Generator().manual_seed(5)
    batches = [data.sample(4, generator=g) for _ in range(6)]
    kw = dict(steps=6, batch_size=4, log_every=1, checkpoint_every=2, **quiet())
    whole = Tiny()
    a = train(whole, batches, **kw)
    resumed, b = crash_then_resume(Tiny, batches, tmp_path, crash_at_forward=4, **kw)
    assert b.resumed_from == 2
    assert_same_run(a, b, weights(whole), weights(resumed))


def test_checkpoint_files_hold_no_pickle(tmp_path, data):
    train(Tiny(), data, steps=2, batch_size=4, out=tmp_path, **quiet())
    folder = ckpt_io.latest_checkpoint(tmp_path)
    assert folder.name == "checkpoint-00000002"
    names = {p.name for p in folder.iterdir()}
    assert names == {"model.safetensors", "train_config.json", "optimizer.safetensors",
                     "optimizer.json", "rng.safetensors", "history.json", "checkpoint.json"}
    marker = json.loads((folder / "checkpoint.json").read_text())
    assert marker["step"] == 2 and marker["tokens"] == 2 * 4 * 8
    assert set(marker["files"]) == names - {"checkpoint.json"}
    ck = ckpt_io.read_checkpoint(folder, gpt.training.CHECKPOINT_FORMAT)
    assert set(ck.rng) == {"data", "cpu.0"}
    assert {k.rsplit(".", 1)[-1] for k in _keys(folder / "optimizer.safetensors")} == {
        "step", "exp_avg", "exp_avg_sq"}


def _keys(path):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_existing_checkpoints_need_resume(tmp_path, data, user_errors):
    train(Tiny(), data, steps=2, batch_size=4, out=tmp_path, **quiet())
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"already holds checkpoints \(newest: "
                                         r"checkpoint-00000002\); pass resume=True"):
        train(Tiny(), data, steps=2, batch_size=4, out=tmp_path, **quiet())
    with pytest.raises(ValueError, match=r"different config \(lr: checkpoint 0.001, now 0.01\)"):
        train(Tiny(), data, steps=4, batch_size=4, lr=1e-2, out=tmp_path, resume=True,
              **quiet())
    assert snapshot(tmp_path) == before


def test_mismatched_model_fails_and_leaves_files(tmp_path, data, user_errors):
    train(small_gpt(), data, steps=2, batch_size=4, out=tmp_path, **quiet())
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"different model config \(d_head: .*; d_model: "
                                         r"checkpoint 16, model 8\)"):
        train(small_gpt(d_model=8), data, steps=4, batch_size=4, out=tmp_path, resume=True,
              **quiet())
    with pytest.raises(ValueError, match=r"holds a GPT, but the model is a Tiny"):
        train(Tiny(), data, steps=4, batch_size=4, out=tmp_path, resume=True, **quiet())
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "marker"])
def test_corrupt_checkpoint_fails_and_leaves_files(tmp_path, data, user_errors, damage):
    train(Tiny(), data, steps=2, batch_size=4, out=tmp_path, **quiet())
    folder = ckpt_io.latest_checkpoint(tmp_path)
    target = folder / ("checkpoint.json" if damage == "marker" else "optimizer.safetensors")
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "delete":
        target.unlink()
    else:
        target.write_text("{not json")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint-00000002 is corrupt or "
                                         r"incomplete: .*Nothing was changed"):
        train(Tiny(), data, steps=4, batch_size=4, out=tmp_path, resume=True, **quiet())
    assert snapshot(tmp_path) == before


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, data, monkeypatch):
    original, calls = ckpt_io._save_tensors, []

    def failing(path, tensors):
        calls.append(path.name)
        if len(calls) == 5:                       # second checkpoint, optimizer file
            raise OSError("disk full")
        original(path, tensors)

    monkeypatch.setattr(ckpt_io, "_save_tensors", failing)
    with pytest.raises(OSError, match="disk full"):
        train(Tiny(), data, steps=4, batch_size=4, checkpoint_every=2, out=tmp_path,
              **quiet())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000002"]
    ckpt_io.read_checkpoint(tmp_path / "checkpoint-00000002",
                            gpt.training.CHECKPOINT_FORMAT)       # intact


def test_keep_checkpoints(tmp_path, data):
    train(Tiny(), data, steps=6, batch_size=4, checkpoint_every=2, keep_checkpoints=2,
          out=tmp_path, **quiet())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000004",
                                                          "checkpoint-00000006"]
