"""Hostile input to the sparse autoencoders (issue 13): damaged or mismatched SAE folders and
training checkpoints, NaN/inf inputs, absurd sizes, unknown hook names. Each one is a clear
ValueError naming the file (and key) or the method and what is wrong — never a silent load, a NaN
result or a raw SafetensorError/KeyError/AttributeError/RuntimeError/UnicodeDecodeError — and
nothing on disk is changed. (out= that is a file, leftovers of interrupted writes and the
resampled count across a resume are in tests/test_hostile.py.) Unit tier."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from superpose import sae
from superpose.sae import io
from superpose.sae.base import memory_estimate
from superpose.train import checkpoint as ckpt_io

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated"]
CFG, WEIGHTS = io.CFG_FILE, io.WEIGHTS_FILE


def _make(arch, d_in=8, d_sae=16, **kw):
    extra = {"k": 2} if arch in ("topk", "batchtopk") else {}
    return sae.create(sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, **extra, **kw),
                      device="cpu")


def _saved(tmp_path, arch="topk", name="sae"):
    s = _make(arch)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return s, s.save(tmp_path / name)


def _cfg(folder):
    return json.loads((folder / CFG).read_text())


def _write_cfg(folder, cfg):
    (folder / CFG).write_text(json.dumps(cfg))


def _as_saelens_wrote_it(folder, *, keep_superpose=False):
    """The folder as SAELens's save_model writes it: no hash, no metadata, no superpose block."""
    cfg = _cfg(folder)
    cfg.pop(io.HASH_KEY)
    if not keep_superpose:
        cfg.pop("superpose")
    _write_cfg(folder, cfg)
    save_file(load_file(str(folder / WEIGHTS)), str(folder / WEIGHTS))   # drops the metadata


def _edit_tensors(folder, edit):
    t = load_file(str(folder / WEIGHTS))
    edit(t)
    save_file(t, str(folder / WEIGHTS))


# ---- SAE folders: what we write, and that it still loads ----------------------------------

def test_a_saved_folder_records_its_architecture_and_weights_hash(tmp_path):
    from safetensors import safe_open

    s, folder = _saved(tmp_path, "jumprelu")
    cfg = _cfg(folder)
    assert cfg[io.HASH_KEY] == {WEIGHTS: io.sha256(folder / WEIGHTS)}
    with safe_open(str(folder / WEIGHTS), framework="pt") as f:
        assert f.metadata()[io.ARCH_KEY] == "jumprelu"
    x = torch.randn(5, 8)
    assert torch.equal(sae.load(folder)(x), s(x))
    _as_saelens_wrote_it(folder)                   # a SAELens folder without either loads too
    assert torch.equal(sae.load(folder)(x), s(x))


# ---- SAE folders: an architecture that does not match the weights ------------------------

def test_relu_cfg_over_topk_weights_is_refused(tmp_path, user_errors):
    """ReLU and TopK tensors have the same names and shapes: only the recorded architecture
    tells them apart (issue 13: this loaded a TopK SAE as a ReLU one)."""
    _, folder = _saved(tmp_path, "topk")
    relu = _make("relu").save(tmp_path / "relu")
    cfg = _cfg(relu)
    cfg[io.HASH_KEY] = _cfg(folder)[io.HASH_KEY]      # even a matching hash does not help
    _write_cfg(folder, cfg)
    with pytest.raises(ValueError, match=rf"{folder / WEIGHTS} holds the weights of a 'topk' "
                                         r"SAE, but cfg\.json says 'relu' \(architecture "
                                         r"'standard'\)"):
        sae.load(folder)
    cfg.pop("superpose")                              # SAELens keys alone say it too
    _write_cfg(folder, cfg)
    with pytest.raises(ValueError, match=r"holds the weights of a 'topk' SAE, but cfg\.json "
                                         r"says 'relu'"):
        sae.load(folder)


def test_saelens_keys_that_disagree_with_the_superpose_block_are_refused(tmp_path, user_errors):
    _, folder = _saved(tmp_path, "topk")
    for key, value, message in [
        ("architecture", "standard", r"architecture: 'standard' \(SAELens reads this\), "
                                     r"superpose block says 'topk'"),
        ("k", 3, r"k: 3 \(SAELens reads this\), superpose block says 2"),
        ("d_sae", 32, r"d_sae: 32 \(SAELens reads this\), superpose block says 16"),
    ]:
        cfg = _cfg(folder)
        original = cfg[key]
        cfg[key] = value
        _write_cfg(folder, cfg)
        with pytest.raises(ValueError, match=rf"{folder / CFG}: its SAELens keys and its "
                                             rf"\"superpose\" block describe different SAEs "
                                             rf"\({message}\); it was edited"):
            sae.load(folder)
        cfg[key] = original
        _write_cfg(folder, cfg)
    sae.load(folder)


@pytest.mark.parametrize("cfg_arch, weights_arch, message", [
    ("jumprelu", "topk", r"missing \['threshold'\], unexpected \[\]"),
    ("relu", "jumprelu", r"missing \[\], unexpected \['threshold'\]"),
    ("gated", "relu", r"missing \['b_gate', 'b_mag', 'r_mag'\], unexpected \['b_enc'\]"),
])
def test_saelens_folder_with_another_architectures_tensors_is_refused(
        tmp_path, cfg_arch, weights_arch, message, user_errors):
    _, folder = _saved(tmp_path, weights_arch)
    other = _make(cfg_arch).save(tmp_path / "other")
    shutil.copy(other / CFG, folder / CFG)
    _as_saelens_wrote_it(folder)
    with pytest.raises(ValueError, match=rf"{folder}: {WEIGHTS} \(for {cfg_arch}, d_in=8, "
                                         rf"d_sae=16\): its weights do not fit the model "
                                         rf"\({message}"):
        sae.load(folder)


# ---- SAE folders: damaged weights ---------------------------------------------------------

def _truncate(folder):
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])


def _garble_data(folder):                       # the last bytes: tensor data, not the header
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-40:-8] = bytes(range(32))
    (folder / WEIGHTS).write_bytes(bytes(data))


def _garble_header(folder):
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[12:40] = b"\xff" * 28
    (folder / WEIGHTS).write_bytes(bytes(data))


def _empty(folder):
    (folder / WEIGHTS).write_bytes(b"")


def _swap_in_other_weights(folder):
    other = _make("topk", seed=5).save(folder.parent / "other")
    shutil.copy(other / WEIGHTS, folder / WEIGHTS)


def _shape(folder):
    _edit_tensors(folder, lambda t: t.update(W_enc=torch.zeros(8, 17)))


def _missing(folder):
    _edit_tensors(folder, lambda t: t.pop("b_enc"))


@pytest.mark.parametrize("damage", [_truncate, _garble_data, _garble_header, _empty,
                                    _swap_in_other_weights, _shape, _missing])
def test_weights_changed_after_saving_fail_the_hash(tmp_path, damage, user_errors):
    _, folder = _saved(tmp_path)
    damage(folder)
    with pytest.raises(ValueError, match=rf"{folder / WEIGHTS} was changed after it was "
                                         r"written: its SHA-256 is not the one cfg\.json "
                                         r"records \(superpose_sha256\)"):
        sae.load(folder)


@pytest.mark.parametrize("damage, message", [
    (_truncate, r" is corrupt and cannot be read \(.*incomplete metadata"),
    (_garble_header, r" is corrupt and cannot be read \(.*header"),
    (_empty, r" is corrupt and cannot be read \(.*header too small"),
    (lambda f: _edit_tensors(f, lambda t: t.update(W_enc=t["W_enc"].long())),
     r": tensor 'W_enc' has dtype torch\.int64; SAE weights are floating point"),
    (lambda f: _edit_tensors(f, lambda t: t["b_dec"].__setitem__(3, float("nan"))),
     r": tensor 'b_dec' holds NaN or inf; the file is corrupt"),
    (lambda f: _edit_tensors(f, lambda t: t["W_dec"].__setitem__((0, 0), float("-inf"))),
     r": tensor 'W_dec' holds NaN or inf"),
])
def test_damaged_weights_without_a_hash_name_the_file(tmp_path, damage, message, user_errors):
    """A folder SAELens wrote has no hash: damage is still one ValueError naming the file."""
    _, folder = _saved(tmp_path)
    _as_saelens_wrote_it(folder)
    damage(folder)
    with pytest.raises(ValueError, match=rf"{folder / WEIGHTS}{message}"):
        sae.load(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(W_enc=torch.zeros(8, 17)), r"shape file/model \{'W_enc': \(\(8, 17\), "
                                                   r"\(8, 16\)\)\}"),
    (lambda t: t.pop("b_enc"), r"missing \['b_enc'\]"),
    (lambda t: t.update(extra=torch.zeros(3)), r"unexpected \['extra'\]"),
])
def test_wrong_tensors_without_a_hash_are_named(tmp_path, edit, message, user_errors):
    _, folder = _saved(tmp_path)
    _as_saelens_wrote_it(folder)
    _edit_tensors(folder, edit)
    with pytest.raises(ValueError, match=rf"{folder}: {WEIGHTS} \(for topk, d_in=8, d_sae=16\): "
                                         rf"its weights do not fit the model .*{message}"):
        sae.load(folder)


# ---- SAE folders: damaged cfg.json --------------------------------------------------------

def _cfg_edit(**changes):
    def edit(cfg):
        for key, value in changes.items():
            if value is KeyError:
                cfg.pop(key)
            else:
                cfg[key] = value
    return edit


@pytest.mark.parametrize("text, message", [
    (b"\xff\xfe\x00\x81 binary garbage", r"is not valid JSON: it is not UTF-8 text"),
    (b"", r"is not valid JSON"),
    (b'{"d_in": 8, ', r"is not valid JSON"),
    (b"[1, 2]", r"must hold a JSON object, got list"),
])
def test_unreadable_cfg_json_names_the_file(tmp_path, text, message, user_errors):
    _, folder = _saved(tmp_path)
    (folder / CFG).write_bytes(text)
    with pytest.raises(ValueError, match=rf"{folder / CFG}:? {message}"):
        sae.load(folder)


@pytest.mark.parametrize("edit, message", [
    (_cfg_edit(d_sae=KeyError), r" has no 'd_sae'; it is not an SAE config"),
    (_cfg_edit(d_in=KeyError), r" has no 'd_in'; it is not an SAE config"),
    (_cfg_edit(k=KeyError), r": a 'topk' config needs 'k'"),
    (_cfg_edit(d_in="eight"), r": d_in must be a positive integer, got 'eight'"),
    (_cfg_edit(k="two"), r": k='two' is not supported: these SAEs keep a whole number"),
    (_cfg_edit(k=2.5), r": k=2\.5 is not supported"),
    (_cfg_edit(architecture=["topk"]), r": architecture must be a string such as 'standard' "
                                       r"or 'topk', got \['topk'\] \(list\)"),
    (_cfg_edit(architecture="standrad"), r": unknown SAE architecture 'standrad'"),
    (_cfg_edit(normalize_activations={"a": 1}), r": normalize_activations must be a string"),
    (_cfg_edit(activation_fn_kwargs=5), r": activation_fn_kwargs must be an object"),
    (_cfg_edit(apply_b_dec_to_input="yes"), r": apply_b_dec_to_input must be"),
    (_cfg_edit(dtype="float8"), r": dtype must be one of"),
])
def test_saelens_cfg_with_missing_keys_or_wrong_types_names_the_key(tmp_path, edit, message,
                                                                      user_errors):
    _, folder = _saved(tmp_path)
    _as_saelens_wrote_it(folder)
    cfg = _cfg(folder)
    edit(cfg)
    _write_cfg(folder, cfg)
    with pytest.raises(ValueError, match=rf"{folder / CFG}{message}"):
        sae.load(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(superpose=[1]), r": superpose must be an object"),
    (lambda c: c["superpose"].pop("d_in"), r": its \"superpose\" block has no 'd_in'"),
    (lambda c: c["superpose"].update(d_sae="16"), r": d_sae must be a positive integer"),
    (lambda c: c["superpose"].update(format_version=99), r": superpose\.format_version=99"),
    (lambda c: c["superpose"].update(k=None, k_aux=None, aux_coefficient=None,
                                     sparsity_coefficient=1.0, architecture="relu"),
     r": its SAELens keys and its \"superpose\" block describe different SAEs \(architecture"),
    (lambda c: c.update({io.HASH_KEY: "abc"}), r": superpose_sha256 must be an object"),
])
def test_our_cfg_block_with_missing_keys_or_wrong_types_names_the_key(tmp_path, edit, message,
                                                                       user_errors):
    _, folder = _saved(tmp_path)
    cfg = _cfg(folder)
    edit(cfg)
    _write_cfg(folder, cfg)
    with pytest.raises(ValueError, match=rf"{folder / CFG}{message}"):
        sae.load(folder)


# ---- SAE training checkpoints -------------------------------------------------------------

def _checkpointed(out):
    s = _make("topk")
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 8, generator=g) for _ in range(4)]
    r = sae.train(s, batches, steps=4, out=out, checkpoint_every=2, progress=False,
                  keep_checkpoints=2)
    return r.checkpoint, batches


def _truncate_file(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_file(path):
    data = bytearray(path.read_bytes())
    data[-20:-4] = b"\x00\xff" * 8
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage", [
    ("model.safetensors", _truncate_file),
    ("model.safetensors", _garble_file),
    ("optimizer.safetensors", _garble_file),
    ("optimizer.json", lambda p: p.write_text(p.read_text().replace("0.9", "0.5"))),
    ("rng.safetensors", _truncate_file),
    ("state.safetensors", _garble_file),
    ("history.json", lambda p: p.write_text(p.read_text().replace("[", "[0.0, ", 1))),
    ("train_config.json", lambda p: p.write_bytes(b"\xff\xfe garbage")),
    ("config.json", lambda p: p.write_text(p.read_text().replace('"k": 2', '"k": 3'))),
    ("rng.safetensors", lambda p: p.unlink()),
])
def test_a_damaged_sae_checkpoint_is_refused_naming_the_file(tmp_path, name, damage,
                                                              user_errors):
    ckpt, batches = _checkpointed(tmp_path)
    damage(ckpt / name)
    on_disk = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    what = "is missing" if not (ckpt / name).exists() else \
        r"does not match the SHA-256 recorded in checkpoint\.json \(changed or truncated"
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} is corrupt or incomplete: "
                                         rf"{name} {what}.*Nothing was changed"):
        sae.train(_make("topk"), batches, steps=4, out=tmp_path, checkpoint_every=2,
                  progress=False, keep_checkpoints=2, resume=True)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == on_disk


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"\xff\xfe\x00"), r"checkpoint\.json cannot be read \('utf-8'"),
    (lambda p: p.write_text("{"), r"checkpoint\.json cannot be read \(Expecting"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format": "x"})),
     r"checkpoint\.json has format 'x', expected 'superpose\.sae\.checkpoint/2'"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "files": 3})),
     r"checkpoint\.json lacks or garbles"),
])
def test_a_damaged_sae_checkpoint_marker_is_refused(tmp_path, damage, message, user_errors):
    ckpt, batches = _checkpointed(tmp_path)
    damage(ckpt / ckpt_io.MARKER)
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} is corrupt or incomplete: "
                                         rf"{message}"):
        sae.train(_make("topk"), batches, steps=4, out=tmp_path, checkpoint_every=2,
                  progress=False, keep_checkpoints=2, resume=True)


def test_a_checkpoint_of_another_sae_is_refused(tmp_path, user_errors):
    _, batches = _checkpointed(tmp_path)
    other = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3), device="cpu")
    with pytest.raises(ValueError, match=r"was written for a different model config \(k: "
                                         r"checkpoint 2, model 3"):
        sae.train(other, batches, steps=4, out=tmp_path, checkpoint_every=2, progress=False,
                  keep_checkpoints=2, resume=True)


def test_a_diverged_sae_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    s = _make("relu")
    calls = []

    def blow_up_from_the_third_step(pre, hook):
        calls.append(1)
        return pre * float("nan") if len(calls) >= 3 else pre

    s.add_hook("hook_sae_acts_pre", blow_up_from_the_third_step)
    batches = [torch.randn(16, 8) for _ in range(6)]
    with pytest.raises(FloatingPointError, match=r"the training loss became nan at step 3 "
                                                 r"\(lr=.*\); lower the learning rate.*the "
                                                 r"checkpoint .*checkpoint-00000002 \(before it "
                                                 r"diverged\) is kept"):
        sae.train(s, batches, steps=6, out=tmp_path, checkpoint_every=1, progress=False)
    assert ckpt_io.latest_checkpoint(tmp_path).name == "checkpoint-00000002"
    assert not (tmp_path / "sae").exists()


# ---- NaN / inf inputs -----------------------------------------------------------------------

def _with_bad(shape, at, value=float("nan")):
    x = torch.randn(*shape)
    x[at] = value
    return x


@pytest.mark.parametrize("arch", ARCHS)
def test_nan_or_inf_input_is_an_error_naming_the_method_and_row(arch, user_errors):
    s = _make(arch).eval()
    name = type(s).__name__
    x = _with_bad((6, 8), (4, 2))
    for method in ("encode", "forward"):
        with pytest.raises(ValueError, match=rf"the input to {name}\.{method} holds NaN or inf "
                                             r"\(first at row 4, value nan, shape \[6, 8\]\)"):
            getattr(s, method)(x)
    with pytest.raises(ValueError, match=rf"the input to {name}\.forward holds NaN or inf "
                                         r"\(first at row \(1, 2\), value -inf"):
        s(_with_bad((2, 3, 8), (1, 2, 5), float("-inf")))
    with pytest.raises(ValueError, match=rf"the input to {name}\.decode holds NaN or inf "
                                         r"\(first at row 0, value inf"):
        s.decode(_with_bad((3, 16), (0, 7), float("inf")))
    with pytest.raises(ValueError, match=rf"{name}\.decode_sparse holds NaN or inf \(first at "
                                         r"row 1,"):
        s.decode_sparse(_with_bad((2, 3), (1, 0)), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"holds NaN or inf \(first at row 4"):
        s.run_with_cache(x)
    ok = torch.full((2, 8), 1e38)          # huge but finite: the sum overflows, still accepted
    assert s.encode(ok).shape == (2, 16)


def test_nan_in_a_hook_z_input_names_the_head_row(user_errors):
    s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, reshape_activations="hook_z"), device="cpu")
    with pytest.raises(ValueError, match=r"ReLUSAE\.forward holds NaN or inf \(first at row "
                                         r"\(3, 1\), value nan, shape \[5, 2, 4\]"):
        s(_with_bad((5, 2, 4), (3, 1, 0)))


def test_nan_in_a_training_batch_is_refused_before_that_step(user_errors):
    s = _make("topk")
    batches = [torch.randn(16, 8), _with_bad((16, 8), (9, 1))]
    with pytest.raises(ValueError, match=r"batch 1 contains NaN or inf \(first in row 9\); it "
                                         r"was not trained on"):
        sae.train(s, batches, steps=2, progress=False)


# ---- sizes checked before allocating --------------------------------------------------------

def test_an_absurd_sae_fails_before_allocating_with_the_estimate(monkeypatch):
    import superpose

    monkeypatch.setenv("SUPERPOSE_MEMORY_LIMIT", "16GB")
    cfg = sae.SAEConfig(d_in=10**5, d_sae=10**6)
    with pytest.raises(superpose.MemoryEstimateError,
                       match=r"SAE\(architecture='relu', d_in=100000, d_sae=1000000, "
                             r"dtype='float32'\) \(weights 800\.0 GB, initialisation draw "
                             r"400\.0 GB\) needs about 1\.2 TB, more than the memory limit "
                             r"\(16\.0 GB on cpu\).*superpose\.memory_limit"):
        sae.create(cfg)
    with pytest.raises(ValueError, match=r"needs about 1\.2 TB"):        # a ValueError too
        sae.create(cfg)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_sae_estimate_counts_every_parameter(arch, dtype):
    s = _make(arch, d_in=6, d_sae=10, dtype=dtype)
    state = s.state_dict()
    n = sum(t.numel() for t in state.values())
    size = torch.float32.itemsize if dtype == "float32" else torch.float64.itemsize
    assert memory_estimate(s.cfg)["weights"] == size * n
    assert sum(t.numel() * t.element_size() for t in state.values()) == size * n


def test_ground_truth_sizes_are_checked_before_allocating(monkeypatch):
    import superpose

    monkeypatch.setenv("SUPERPOSE_MEMORY_LIMIT", "1GB")
    with pytest.raises(superpose.MemoryEstimateError,
                       match=r"GroundTruthFeatures\(n_features=1000000, d=1000\) .*needs about "
                             r"8\.0 GB, more than the memory limit \(1\.0 GB on cpu\)"):
        sae.GroundTruthFeatures(10**6, 1000)
    gt = sae.GroundTruthFeatures(10**5, 16)
    with pytest.raises(superpose.MemoryEstimateError,
                       match=r"GroundTruthFeatures\.sample\(batch_size=100000\) with "
                             r"n_features=100000, d=16 .*needs about 130\.\d GB"):
        gt.sample(10**5)
    with pytest.raises(superpose.MemoryEstimateError, match=r"sample\(batch_size=100000\)"):
        next(gt.batches(10**5))
    assert gt.sample(4).shape == (4, 16)
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got 0"):
        gt.sample(0)


# ---- hook names -----------------------------------------------------------------------------

def test_unknown_sae_hook_names_get_close_matches():
    s = _make("relu")
    x = torch.randn(3, 8)
    near = r"has no hook point named 'hook_sae_nope'; close matches: \['hook_sae_"
    with pytest.raises(ValueError, match=r"this ReLUSAE " + near):
        s.run_with_hooks(x, fwd_hooks=[("hook_sae_nope", lambda a, hook: a)])
    with pytest.raises(ValueError, match=r"has no hook point named 'hook_sae_act_post'; close "
                                         r"matches: \['hook_sae_acts_post'"):
        s.run_with_cache(x, names_filter=["hook_sae_act_post"])
    with pytest.raises(ValueError, match=near):
        s.add_hook("hook_sae_nope", lambda a, hook: a)
    assert s.hook_names()[0] == "hook_sae_input"
    _, cache = s.run_with_cache(x, names_filter="hook_sae_acts_post")
    assert list(cache.keys()) == ["hook_sae_acts_post"]
