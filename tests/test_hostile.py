"""Hostile input (issue 13): each case gets a clear ValueError naming the argument, the value and
what is allowed — or a correct result — and nothing on disk is lost. Unit tier."""

from __future__ import annotations

import json

import pytest
import torch

from superpose import gpt, jl, runs, sae, toy
from superpose.train import checkpoint as ckpt_io


def _gpt():
    return gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8),
                   device="cpu")


def _pairs(y_fill=None, x_hi=10, n=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randint(0, x_hi + 1, (4, 8), generator=g)
        y = torch.randint(0, 11, (4, 8), generator=g) if y_fill is None else \
            torch.full((4, 8), y_fill)
        out.append((x, y))
    return out


# ---- GPT token ids ------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (_pairs(y_fill=-100), r"data batch 0: every target is -100 \(ignored\)"),
    (_pairs(y_fill=11), r"data batch 0: targets hold the id 11, but ids must be 0\.\.10 or -100"),
    (_pairs(y_fill=-3), r"targets hold the id -3, but ids must be 0\.\.10"),
    (_pairs(x_hi=40), r"data batch 0: tokens hold the id \d+, but ids must be 0\.\.10"),
])
def test_gpt_refuses_bad_token_ids_before_a_step(data, message, user_errors):
    model = _gpt()
    before = {k: t.clone() for k, t in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        gpt.train(model, data, steps=3, batch_size=4, progress=False, device="cpu")
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())


def test_gpt_refuses_a_token_dataset_from_another_tokenizer(user_errors):
    data = gpt.TokenDataset(torch.arange(200) % 50, 8)
    with pytest.raises(ValueError, match=r"^data: tokens hold the id 49, but ids must be 0\.\.10"):
        gpt.train(_gpt(), data, steps=2, batch_size=4, progress=False, device="cpu")
    with pytest.raises(ValueError, match=r"val_data batch 0: tokens hold the id"):
        gpt.evaluate(_gpt(), data, n_batches=1, batch_size=4)


# ---- out= before the first step -----------------------------------------------------------

def _train_into(kind, out, **kw):
    if kind == "toy":
        m = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2), device="cpu")
        return toy.train(m, steps=4, out=out, progress=False, **kw)
    if kind == "gpt":
        return gpt.train(_gpt(), _pairs(n=4), steps=4, batch_size=4, out=out, progress=False,
                         device="cpu", checkpoint_every=2, **kw)
    s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2), device="cpu")
    return sae.train(s, [torch.randn(16, 8) for _ in range(4)], steps=4, out=out,
                     checkpoint_every=2, progress=False, **kw)


@pytest.mark.parametrize("kind", ["toy", "gpt", "sae"])
def test_out_that_is_a_file_fails_before_training(tmp_path, kind, user_errors, monkeypatch):
    target = tmp_path / "results.txt"
    target.write_text("my notes")
    steps = []
    monkeypatch.setattr(ckpt_io, "save_checkpoint", lambda *a, **k: steps.append(1))
    with pytest.raises(ValueError, match=r"out='.*results\.txt' is a file, not a folder"):
        _train_into(kind, target)
    assert target.read_text() == "my notes" and not steps


@pytest.mark.parametrize("kind", ["toy", "gpt", "sae"])
def test_leftovers_of_an_interrupted_write_are_removed_at_the_start(tmp_path, kind):
    (tmp_path / ".tmp-checkpoint-00000002-abc").mkdir()
    (tmp_path / ".tmp-checkpoint-00000002-abc" / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / ".config.json.123.tmp").write_text("{")
    (tmp_path / "notes.txt").write_text("kept")
    r = _train_into(kind, tmp_path)
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / "notes.txt").read_text() == "kept" and r.checkpoint.is_dir()


def test_a_checkpoint_whose_marker_was_deleted_is_refused_not_overwritten(tmp_path, user_errors):
    r = _train_into("gpt", tmp_path)
    (r.checkpoint / "checkpoint.json").unlink()
    weights = (r.checkpoint / "model.safetensors").read_bytes()
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"checkpoint folders without their checkpoint"
                                             r"\.json \(\['checkpoint-00000004'\]\)"):
            _train_into("gpt", tmp_path, resume=resume)
    assert (r.checkpoint / "model.safetensors").read_bytes() == weights


def test_sae_resume_keeps_the_resampled_count_between_log_entries(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(32, 8, generator=g) for _ in range(12)]
    kw = dict(steps=12, log_every=6, resample_every=2, dead_window=32, progress=False)

    def make():
        return sae.create(sae.SAEConfig(d_in=8, d_sae=32, architecture="relu",
                                        sparsity_coefficient=30.0), device="cpu")

    ref = sae.train(make(), batches, **kw)
    assert sum(ref.history.resampled) > 0                  # the case is not vacuous

    class Stop(Exception):
        pass

    def interrupted():
        for i, x in enumerate(batches):
            if i == 9:
                raise Stop
            yield x

    with pytest.raises(Stop):
        sae.train(make(), interrupted(), out=tmp_path, checkpoint_every=4, **kw)
    r = sae.train(make(), batches, out=tmp_path, resume=True, checkpoint_every=4, **kw)
    assert r.resumed_from == 8
    assert r.history.resampled == ref.history.resampled


# ---- names that escape their folder, infinities ---------------------------------------------

@pytest.mark.parametrize("call", [
    lambda tmp: runs.Run.create("../../x", out=tmp),
    lambda tmp: runs.Run.create("exp", out=tmp, name="../x"),
    lambda tmp: runs.Run.create("exp", out=tmp, name="a/b"),
    lambda tmp: runs.Run.create("exp", out=tmp).save_figure(None, "../../escape"),
    lambda tmp: runs.Run.create("exp", out=tmp).save_model(None, ".."),
])
def test_names_that_escape_the_results_folder_are_refused(tmp_path, call):
    with pytest.raises(ValueError, match="must be a plain file or folder name"):
        call(tmp_path / "results")
    assert not list(tmp_path.glob("x")) and not list(tmp_path.glob("escape*"))


def test_min_dim_of_infinity_is_an_error_not_a_negative_number():
    with pytest.raises(ValueError, match=r"n \(the number of points\) must be a finite number "
                                         r">= 1, got inf"):
        jl.min_dim(float("inf"))
    assert json.dumps(int(jl.min_dim(1e6, eps=0.5))) == "663"


@pytest.mark.parametrize("call, message", [
    (lambda: toy.train(toy.ToyModel(toy.ToyConfig(), device="cpu"), lr=float("inf")),
     "lr must be a positive finite number, got inf"),
    (lambda: gpt.GPTTrainConfig(weight_decay=float("inf")),
     "weight_decay must be a non-negative finite number, got inf"),
    (lambda: gpt.GPTTrainConfig(eps=float("inf")), "eps must be a positive finite number"),
    (lambda: sae.SAEConfig(d_in=4, d_sae=8, activation_scale=float("inf")),
     "activation_scale must be a positive finite number, got inf"),
    (lambda: gpt.GPTConfig(d_vocab=11, init_std=float("inf")),
     "init_std must be a positive finite number, got inf"),
    (lambda: __import__("superpose.activations", fromlist=["x"]).ActivationStore.from_tensor(
        torch.randn(10, 4), normalize=float("inf")), "normalize must be a positive finite"),
    (lambda: __import__("superpose.activations", fromlist=["x"]).ActivationStore.from_tensor(
        torch.randn(10, 4), normalize=1e39), r"normalize=1e\+39 overflows torch.float32"),
    (lambda: gpt.GPT(gpt.GPTConfig(d_vocab=11), device="cpu").generate(
        torch.zeros(1, 2, dtype=torch.long), 2, temperature=float("inf")),
     "temperature must be a non-negative finite number, got inf"),
])
def test_infinity_never_passes_a_number_check(call, message, user_errors):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("batch, message", [
    (torch.zeros(0, 1, 5), r"batch 0 is empty \(shape \[0, 1, 5\]\)"),
    (torch.ones(4, 1, 5, dtype=torch.long), r"batch 0 has dtype torch.int64; feature values must "
                                            r"be floating point"),
])
def test_toy_training_refuses_empty_and_integer_batches(batch, message, user_errors):
    m = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2), device="cpu")
    with pytest.raises(ValueError, match=message):
        toy.train(m, steps=1, data=[batch], progress=False)


# ---- sizes checked against a memory estimate before allocating ----------------------------

@pytest.mark.parametrize("build, message", [
    (lambda: gpt.GPT(gpt.GPTConfig(d_vocab=10, n_layers=1, d_model=8, n_heads=2, n_ctx=10**9,
                                   positional="sinusoidal")),
     r"GPT\(.*n_ctx=1000000000, positional='sinusoidal'\) \(.*positional table 160\.0 GB"),
    (lambda: gpt.GPT(gpt.GPTConfig(d_vocab=10**6, n_layers=1, d_model=4096, n_heads=2,
                                   n_ctx=8)),
     r"GPT\(d_vocab=1000000, d_model=4096.*\(weights 33\.6 GB"),
    (lambda: toy.ToyModel(toy.ToyConfig(n_instances=10**4, n_features=10**4, n_hidden=100)),
     r"ToyModel\(n_instances=10000, n_features=10000, n_hidden=100.*10,101,000,000 weights"),
])
def test_absurd_sizes_fail_before_allocating_with_the_estimate(build, message, monkeypatch):
    monkeypatch.setenv("SUPERPOSE_MEMORY_LIMIT", "16GB")   # the same answer on any machine
    import superpose

    with pytest.raises(superpose.MemoryEstimateError,
                       match=message + r".*more than the memory limit \(16\.0 GB on cpu\).*"
                                       r"superpose\.memory_limit"):
        build()


def test_the_memory_limit_can_be_raised_or_turned_off_explicitly(monkeypatch):
    import superpose
    from superpose import _memory

    monkeypatch.setenv("SUPERPOSE_MEMORY_LIMIT", "1MB")
    cfg = gpt.GPTConfig(d_vocab=5000, n_layers=1, d_model=64, n_heads=2, n_ctx=16)
    with pytest.raises(MemoryError, match=r"weights 2\.\d MB.*more than the memory limit "
                                          r"\(1\.0 MB on cpu\)"):
        gpt.GPT(cfg)
    with superpose.memory_limit("1GB"):
        gpt.GPT(cfg)
    with superpose.memory_limit(None):
        gpt.GPT(cfg)
    monkeypatch.setenv("SUPERPOSE_MEMORY_LIMIT", "off")
    gpt.GPT(cfg)
    assert _memory.parse_bytes("1.5GiB") == int(1.5 * 2**30)
    for bad in ("lots", -1, float("inf"), float("nan"), 0):
        with pytest.raises(ValueError, match=r"memory limit must be"):
            superpose.memory_limit(bad).__enter__()


def test_training_state_is_checked_before_the_first_step(monkeypatch):
    """The model fits, but gradients and Adam's moments (3x the weights) do not."""
    model = toy.ToyModel(toy.ToyConfig(n_instances=4, n_features=500, n_hidden=100))
    n = sum(p.numel() for p in model.parameters())
    monkeypatch.setenv("SUPERPOSE_MEMORY_LIMIT", str(2 * 4 * n))
    before = {k: t.clone() for k, t in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"training {n:,} parameters with Adam"):
        toy.train(model, steps=2, batch_size=1, progress=False)
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())
    with pytest.raises(ValueError, match=r"toy training batches \(batch_size=100000 x "
                                         r"n_instances=4 x n_features=500"):
        toy.train(model, steps=2, batch_size=100_000, progress=False)


def test_the_gpt_estimate_counts_every_parameter():
    from superpose.gpt.model import memory_estimate

    for kw in ({}, {"attn_only": True, "tied_embeddings": True, "positional": "rotary"},
               {"norm": "post", "positional": "none", "d_mlp": 40}):
        model = gpt.GPT(gpt.GPTConfig(d_vocab=50, n_layers=2, d_model=16, n_heads=2, n_ctx=8,
                                      **kw))
        n_learned = sum(p.numel() for p in model.parameters())
        assert memory_estimate(model.cfg)["weights"] == 4 * n_learned, kw


def test_losses_refuse_targets_outside_the_logits_vocabulary(user_errors):
    tokens = torch.arange(16).reshape(2, 8) % 11          # targets reach 10, the last id
    logits = _gpt()(tokens)
    for fn in (gpt.next_token_loss, gpt.per_token_loss):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: target token ids .* must lie in "
                                             r"\[0, d_vocab=11\).*got values in \[5\d, 60\]"):
            fn(logits, tokens + 50)
        with pytest.raises(ValueError, match=r"tokens must hold integer token ids"):
            fn(logits, tokens.float())
        assert torch.isfinite(fn(logits, tokens)).all()


def test_token_dataset_refuses_negative_ids():
    with pytest.raises(ValueError, match=r"tokens must be token ids >= 0, got -3 at position 4"):
        gpt.TokenDataset(torch.tensor([0, 1, 2, 3, -3, 5, 6, 7, 8, 9]), 4)


# ---- a diverged run stops with a clear error and keeps its last good checkpoint -----------

def test_a_diverged_toy_run_stops_naming_the_instances():
    model = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3))
    with pytest.raises(FloatingPointError, match=r"training loss of instance\(s\) \[0, 1, 2\] "
                                                 r"became nan at step \d+ \(lr=1e\+30\); lower"):
        toy.train(model, steps=50, lr=1e30, progress=False)


def test_a_diverged_gpt_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model = _gpt()
    data = gpt.TokenDataset(torch.arange(400) % 11, 8)
    calls = []

    def blow_up_from_the_third_step(resid, hook):          # as if an update blew up
        calls.append(1)
        return resid * float("nan") if len(calls) >= 3 else resid

    model.add_hook("blocks.0.hook_resid_pre", blow_up_from_the_third_step)
    with pytest.raises(FloatingPointError, match=r"(loss became nan|holds NaN or inf) at step "
                                                 r"3.*checkpoint.*checkpoint-00000002.* is kept"):
        gpt.train(model, data, steps=6, batch_size=4, progress=False, device="cpu",
                  out=tmp_path, checkpoint_every=1, keep_checkpoints=1, log_every=100)
    assert ckpt_io.latest_checkpoint(tmp_path).name == "checkpoint-00000002"


# ---- toy models: hook names, dtypes, schedule steps ----------------------------------------

def test_toy_model_names_unknown_hook_points_with_close_matches():
    from superpose import hooks

    model = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2))
    x = torch.rand(4, 1, 5)
    near = r"has no hook point named 'hook_hiden'; close matches: \['hook_hidden', 'hook_out'\]"
    with pytest.raises(ValueError, match=r"this ToyModel " + near):
        model.run_with_hooks(x, fwd_hooks=[("hook_hiden", lambda a, hook: a)])
    with pytest.raises(ValueError, match=near + r"; model\.hook_names\(\) lists all 2"):
        model.run_with_cache(x, names_filter=["hook_out", "hook_hiden"])
    with pytest.raises(ValueError, match=near):
        model.add_hook("hook_hiden", lambda a, hook: a)
    with pytest.raises(ValueError, match=near):
        hooks.capture(model, ["hook_hiden"], x)
    with pytest.raises(ValueError, match=r"capture needs at least one hook name"):
        hooks.capture(model, [], x)
    _, cache = model.run_with_cache(x, names_filter="hook_hidden")
    assert list(cache.keys()) == ["hook_hidden"]


@pytest.mark.parametrize("dtype", [torch.long, torch.float64, torch.bool])
def test_toy_model_refuses_inputs_of_another_dtype(dtype, user_errors):
    model = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2))
    with pytest.raises(ValueError, match=rf"input must have the weights' dtype torch\.float32, "
                                         rf"got {dtype}; convert it with x\.to"):
        model(torch.ones(4, 1, 5, dtype=dtype))


def test_lr_at_refuses_a_negative_step():
    with pytest.raises(ValueError, match=r"step must be a non-negative integer, got -1"):
        toy.lr_at(-1, toy.TrainConfig())


@pytest.mark.parametrize("content,message", [
    (b"\x80\x81\xff{}", r"is not valid JSON: it is not UTF-8 text \(byte 0 is b'\\x80'\)"),
    (b"", r"is not valid JSON \(it is empty\)"),
    (b"  \n", r"is not valid JSON \(it is empty\)"),
    (b'{"a": 1,', r"is not valid JSON \(Expecting property name"),
])
def test_read_json_turns_every_broken_file_into_one_value_error(tmp_path, content, message):
    from superpose import runs

    path = tmp_path / "cfg.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cfg.json " + message):
        runs.read_json(path)
    with pytest.raises(ValueError, match=r"is a folder, not a JSON file"):
        runs.read_json(tmp_path)


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe garbage", r"is not valid JSON: it is not UTF-8 text"),
    (b'{"type": "char", "format_version": 1', r"is not valid JSON"),
    (b"[1, 2]", r"is not a saved tokenizer \(expected a JSON object with a 'type' key"),
    (b'{"type": "wordpiece", "format_version": 1}', r"tokenizer type must be one of"),
    (b'{"type": "char", "format_version": 99, "chars": ["a"]}', r"has format_version 99"),
    (b'{"type": "char", "format_version": 1}', r"key 'chars' must hold a list"),
    (b'{"type": "char", "format_version": 1, "chars": ["b", "a", "a"]}',
     r"tok.json: chars must be sorted and distinct.*the file is corrupt or was edited"),
    (b'{"type": "char", "format_version": 1, "chars": ["ab"]}',
     r"tok.json: chars must be single characters, got 'ab'"),
    (b'{"type": "bpe", "format_version": 1, "tokenizer": {"model": 3}}',
     r"the 'tokenizer' entry is not a valid HuggingFace tokenizer"),
])
def test_a_broken_tokenizer_file_is_one_value_error_naming_it(tmp_path, content, message):
    from superpose.gpt import tokenizers

    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        tokenizers.load_tokenizer(path)


def test_a_run_is_complete_only_after_finish_and_notices_changes(tmp_path):
    import matplotlib.pyplot as plt

    from superpose import runs

    def run_fn(out, quick, seed, progress, fail=False):
        r = runs.Run.create("exp", out=out, name="a")
        fig = plt.figure()
        r.save_figure(fig, "fig")
        plt.close(fig)
        if fail:
            raise RuntimeError("killed half-way")
        r.save_metrics({"x": 1})
        return {"summary": {}}

    with pytest.raises(RuntimeError):
        runs.experiment_main(lambda **kw: run_fn(**kw, fail=True), "t",
                             ["--out", str(tmp_path), "--no-progress"])
    assert runs.run_status(tmp_path / "exp" / "a") == "interrupted"
    runs.experiment_main(run_fn, "t", ["--out", str(tmp_path), "--no-progress"])
    done = tmp_path / "exp" / "a-1"
    marker = json.loads((done / "complete.json").read_text())
    assert sorted(marker["files"]) == ["fig.png", "metrics.json"]
    assert runs.run_status(done) == "complete"
    (done / "metrics.json").write_text('{"x": 2}')
    assert runs.run_status(done) == "changed"
    (done / "complete.json").write_bytes(b"\xff")
    with pytest.raises(ValueError, match=r"complete.json is not valid JSON"):
        runs.run_status(done)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        runs.experiment_main(run_fn, "t", ["--out", str(tmp_path / "file")])
    with pytest.raises(ValueError, match=r"experiment must be a plain file or folder name"):
        runs.Run.create("../../x", out=tmp_path)
    with pytest.raises(ValueError, match=r"name must be a plain file or folder name"):
        runs.Run.create("exp", out=tmp_path).save_figure(plt.figure(), "../../x")
    plt.close("all")


def test_a_saved_model_is_replaced_whole_and_checked_by_its_hashes(tmp_path):
    from superpose import runs

    model = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, seed=1), device="cpu")
    folder = model.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                        "saved.json"]
    other = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, seed=2), device="cpu")

    def fail(path):
        raise OSError("disk full")
    import safetensors.torch as st
    real = st.save_file
    st.save_file = lambda tensors, path: fail(path)
    try:
        with pytest.raises(OSError, match="disk full"):
            other.save(folder)                  # a failed save leaves the old one whole
    finally:
        st.save_file = real
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert torch.equal(toy.ToyModel.load(folder).W, model.W)
    other.save(folder)                          # a save replaces the folder whole
    assert torch.equal(toy.ToyModel.load(folder).W, other.W)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors is corrupt: it does not match its "
                                         r"SHA-256 in saved.json: it changed after the model"):
        toy.ToyModel.load(folder)
    (folder / "saved.json").write_text("[]")
    with pytest.raises(ValueError, match=r"saved.json is corrupt"):
        toy.ToyModel.load(folder)
    (folder / "saved.json").unlink()            # a save from before the marker still loads
    toy.ToyModel.load(folder)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"f is a file; a model is saved into a folder"):
        model.save(tmp_path / "f")
    folder.rename(tmp_path / ".m.previous")     # killed between the two renames
    with pytest.raises(FileNotFoundError, match=r"a save into it was interrupted; the previous "
                                                r"save is whole at"):
        runs.load_module(tmp_path / "m", toy.ToyModel, toy.ToyConfig)


def test_a_config_file_missing_a_required_key_or_not_an_object_is_a_value_error():
    from superpose._validate import config_from_dict

    with pytest.raises(ValueError, match=r"GPTConfig needs key\(s\) \['d_vocab'\], which are "
                                         r"missing"):
        config_from_dict(gpt.GPTConfig, {"n_layers": 1})
    with pytest.raises(ValueError, match=r"a ToyConfig is read from a JSON object, got a list"):
        config_from_dict(toy.ToyConfig, [1, 2])
