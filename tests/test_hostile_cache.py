"""The activation cache under hostile conditions (issue 13): a writer that stops early leaves a
cache that is refused (or read with a warning when asked), never one that loads as complete;
`resume=True` continues it and ends with the files an uninterrupted writer leaves, bit for bit;
edited, truncated or escaping manifests and shards are one clear error naming the file."""

from __future__ import annotations

import hashlib
import json
import math
import warnings

import pytest
import torch

import superpose
from superpose import toy
from superpose.activations import ActivationStore, _manifest_hash, first_nonfinite_row

HOOK = "hook_hidden"
N_BATCHES = 12


@pytest.fixture(scope="module")
def model():
    return toy.ToyModel(toy.ToyConfig(n_features=12, n_hidden=5, seed=3), device="cpu")


def inputs(n=N_BATCHES, rows=10):
    return [torch.rand(rows, 1, 12, generator=torch.Generator().manual_seed(i))
            for i in range(n)]


class Stop(Exception):
    pass


def stopping(xs, after):
    """The batches of `xs`, then an exception after `after` of them: a writer cut off."""
    for i, x in enumerate(xs):
        if i == after:
            raise Stop(f"cut off after {after} batches")
        yield x


def kw(**extra):
    return {"batch_size": 8, "buffer_size": 32, "device": "cpu", "seed": 1, **extra}


def drain(store):
    return torch.cat(list(store))


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def write_partial(model, folder, after, **extra):
    store = ActivationStore(model, HOOK, stopping(inputs(), after),
                            **kw(cache_dir=folder, **extra))
    with pytest.raises(Stop):
        drain(store)
    return store


def rewrite_manifest(folder, edit, *, rehash=True):
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    if rehash:
        m["manifest_sha256"] = _manifest_hash(m)
    path.write_text(json.dumps(m))


# ---- partial caches are refused, or read with a warning -------------------------------------

def test_a_cut_off_cache_is_refused_naming_rows_and_batches(model, tmp_path):
    folder = tmp_path / "acts"
    write_partial(model, folder, after=7, shard_size=15)
    m = json.loads((folder / "manifest.json").read_text())
    assert m["complete"] is False and m["count"] == 60 and m["batches"] == 6 and m["carry"] == 0
    with pytest.raises(ValueError, match=r"acts is incomplete: its writer stopped after 60 rows "
                                         r"\(6 source batches, the source's length unknown\)\. "
                                         r"Continue it with .*resume=True.*allow_partial=True"):
        ActivationStore.from_cache(folder, **kw())
    with pytest.warns(UserWarning, match=r"is incomplete.*reading those rows"):
        store = ActivationStore.from_cache(folder, allow_partial=True, **kw())
    assert len(drain(store)) == 60


def test_a_sized_source_states_the_expected_batches(model, tmp_path):
    folder = tmp_path / "acts"
    xs = inputs()
    store = ActivationStore(model, HOOK, xs, **kw(cache_dir=folder, shard_size=20))
    it = iter(store)
    next(it)                                    # one buffer captured, then abandoned
    with pytest.raises(ValueError, match=rf"after \d+ rows \(\d+ of {N_BATCHES} source batches"):
        ActivationStore.from_cache(folder)


def test_scaling_is_never_skipped_on_a_cut_off_cache(model, tmp_path):
    """Cut off before the mean-norm factor was estimated (the shards are written while the
    first buffer fills): the partial cache is rescaled on reading, never served raw."""
    folder = tmp_path / "acts"
    write_partial(model, folder, after=3, shard_size=10, normalize="mean_norm",
                  buffer_size=64)
    m = json.loads((folder / "manifest.json").read_text())
    assert m["scaling_factors"] is None and m["normalize"] == "mean_norm" and m["count"] == 30
    with pytest.warns(UserWarning, match="its scaling factor was never estimated"):
        store = ActivationStore.from_cache(folder, allow_partial=True, **kw(buffer_size=64))
    rows = drain(store)
    assert store.scaling_factor is not None
    assert rows.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(5), rel=1e-4)


def test_an_exception_inside_with_leaves_the_cache_resumable(model, tmp_path):
    folder = tmp_path / "acts"
    with pytest.raises(Stop):
        with ActivationStore(model, HOOK, stopping(inputs(), 5),
                             **kw(cache_dir=folder, shard_size=10)) as store:
            drain(store)
    assert json.loads((folder / "manifest.json").read_text())["complete"] is False
    with ActivationStore(model, HOOK, inputs(), **kw(cache_dir=tmp_path / "b",
                                                      shard_size=10)) as store:
        next(iter(store))                       # closed early on purpose: complete as it is
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["complete"] is True and m["count"] < 10 * N_BATCHES
    assert len(drain(ActivationStore.from_cache(tmp_path / "b"))) == m["count"]


# ---- resume ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shard_size,after,normalize", [
    (15, 5, None),                # 50 rows captured, 45 on disk: batch 4 half written (carry)
    (15, 7, None),                # 70 rows captured, 60 on disk: batches 0-5 (no carry)
    (20, 6, "mean_norm"),         # 60 rows on disk, batch boundary (no carry)
    (7, 2, "mean_norm"),          # cut off before the scaling factor was estimated
    (1000, 5, None),              # cut off before the first shard: nothing to resume
])
def test_resume_ends_bit_identical_to_an_uninterrupted_writer(model, tmp_path, shard_size,
                                                              after, normalize):
    ref = tmp_path / "ref"
    whole = drain(ActivationStore(model, HOOK, inputs(),
                                  **kw(cache_dir=ref, shard_size=shard_size, normalize=normalize)))
    folder = tmp_path / "acts"
    write_partial(model, folder, after=after, shard_size=shard_size, normalize=normalize)
    resumed = ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, resume=True,
                                                         shard_size=shard_size,
                                                         normalize=normalize))
    assert torch.equal(drain(resumed), whole)
    assert files(folder) == files(ref)
    assert not list(folder.glob(".*"))
    # a complete cache resumed replays what is there and writes nothing
    before = files(folder)
    again = ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, resume=True,
                                                       shard_size=shard_size,
                                                       normalize=normalize))
    assert torch.equal(drain(again), whole) and files(folder) == before


def test_resume_refuses_other_settings_model_or_source(model, tmp_path):
    folder = tmp_path / "acts"
    write_partial(model, folder, after=7, shard_size=15)
    with pytest.raises(ValueError, match=r"written with other settings \(shard_size=15, now 16\)"):
        ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, resume=True,
                                                   shard_size=16))
    with pytest.raises(ValueError, match=r"normalize=None, now 'mean_norm'"):
        ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, resume=True,
                                                   shard_size=15, normalize="mean_norm"))
    other = toy.ToyModel(toy.ToyConfig(n_features=12, n_hidden=5, seed=4), device="cpu")
    with pytest.raises(ValueError, match=r"source batch 5 gives other activations than the "
                                         r"cache holds \(max difference .*\); the model, the "
                                         r"source or the settings differ"):
        drain(ActivationStore(other, HOOK, inputs(), **kw(cache_dir=folder, resume=True,
                                                         shard_size=15)))
    with pytest.raises(ValueError, match=r"the source ended after 4 batches, but the cache "
                                         r"holds 6"):
        drain(ActivationStore(model, HOOK, inputs()[:4], **kw(cache_dir=folder, resume=True,
                                                              shard_size=15)))
    with pytest.raises(FileExistsError, match=r"already holds an activation cache.*resume=True"):
        ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, shard_size=15))


def test_resume_and_partial_arguments_are_checked(model, tmp_path, user_errors):
    with pytest.raises(ValueError, match=r"resume=True continues an activation cache; pass "
                                         r"cache_dir"):
        ActivationStore(model, HOOK, inputs(), resume=True)
    with pytest.raises(ValueError, match=r"resume must be True or False, got 'yes'"):
        ActivationStore(model, HOOK, inputs(), cache_dir=tmp_path / "a", resume="yes")
    with pytest.raises(ValueError, match=r"allow_partial=True applies to reading a cache"):
        ActivationStore(model, HOOK, inputs(), allow_partial=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cache_dir .*file is a file; pass a folder"):
        ActivationStore(model, HOOK, inputs(), cache_dir=tmp_path / "file")


def test_leftover_temporary_files_are_removed_when_writing_starts(model, tmp_path):
    folder = tmp_path / "acts"
    folder.mkdir()
    (folder / ".shard_00000.safetensors.abc.tmp").write_bytes(b"half a shard")
    drain(ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, shard_size=40)))
    assert not list(folder.glob(".*"))


# ---- damaged files -------------------------------------------------------------------------

@pytest.fixture
def cache(model, tmp_path):
    folder = tmp_path / "acts"
    drain(ActivationStore(model, HOOK, inputs(), **kw(cache_dir=folder, shard_size=25)))
    return folder


def test_a_garbled_shard_of_the_same_size_fails_its_hash(cache):
    shard = cache / "shard_00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF                           # one float's bits, the header intact
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shard_00002.safetensors is corrupt: its SHA-256 "
                                         r"differs .*changed after it was written"):
        drain(ActivationStore.from_cache(cache, **kw()))


def test_a_truncated_shard_is_named_before_reading(cache):
    shard = cache / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"shard_00001.safetensors is corrupt: it holds \d+ "
                                         r"bytes, manifest.json says \d+ \(truncated"):
        ActivationStore.from_cache(cache, **kw())


MANIFEST_EDITS = {
    "a shard escaping the folder": (
        lambda m: m["shards"][0].update(file="../shard_00000.safetensors"),
        r"shard name '../shard_00000.safetensors' is not of the form"),
    "an absolute shard path": (
        lambda m: m["shards"][0].update(file="/etc/passwd"),
        r"shard name '/etc/passwd' is not of the form"),
    "a wrong format": (lambda m: m.update(format="other/9"), r"format 'other/9', expected"),
    "missing keys": (lambda m: m.pop("shards", None), r"missing keys \['shards'\]"),
    "a bad row shape": (lambda m: m.update(row_shape=[0]), r"row_shape must be \[d_in\]"),
    "an unknown dtype": (lambda m: m.update(dtype="int8"), r"dtype 'int8' is not one of"),
    "a negative scale": (lambda m: m.update(scaling_factors=[-1.0]),
                         r"scaling_factors must be null or positive finite"),
    "counts that do not add up": (lambda m: m.update(count=999),
                                  r"shard counts sum to 120 but count says 999"),
    "a zero-row shard": (lambda m: m["shards"][1].update(count=0),
                         r"shard shard_00001.safetensors has row count 0"),
    "no shards": (lambda m: m.update(shards=[]), r"no shards listed"),
    "a shard without its hash": (lambda m: m["shards"][0].pop("sha256", None),
                                 r"shard shard_00000.safetensors lacks its size or SHA-256"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_an_edited_manifest_is_one_clear_error(cache, case):
    edit, message = MANIFEST_EDITS[case]
    rewrite_manifest(cache, edit, rehash=False)   # a field the checksum's check needs: named
    with pytest.raises(ValueError, match=r"manifest.json is not a valid activation-cache "
                                         rf"manifest: (its checksum does not match|{message})"):
        ActivationStore.from_cache(cache)
    rewrite_manifest(cache, edit)             # edited with the checksum made to fit
    with pytest.raises(ValueError, match=r"manifest.json is not a valid activation-cache "
                                         r"manifest: " + message):
        ActivationStore.from_cache(cache)


def test_a_manifest_of_the_wrong_kind_is_refused(cache):
    (cache / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"holds a JSON list, not an object"):
        ActivationStore.from_cache(cache)


def test_a_shard_holding_other_rows_than_listed_is_refused(model, tmp_path, cache):
    """A shard replaced by another valid shard (size and hash rewritten to fit): the shape
    check still catches it."""
    other = tmp_path / "other"
    drain(ActivationStore(model, HOOK, inputs(), **kw(cache_dir=other, shard_size=30)))
    src = (other / "shard_00000.safetensors").read_bytes()
    (cache / "shard_00000.safetensors").write_bytes(src)
    rewrite_manifest(cache, lambda m: m["shards"][0].update(
        bytes=len(src), sha256=hashlib.sha256(src).hexdigest()))
    with pytest.raises(ValueError, match=r"holds torch.float32 \[30, 5\], but the manifest "
                                         r"says torch.float32 \[25, 5\]"):
        drain(ActivationStore.from_cache(cache, **kw()))


def test_an_old_format_cache_still_loads(cache):
    def old(m):
        for key in ("complete", "batches", "carry", "batch_rows", "manifest_sha256",
                    "normalize", "shard_size", "expected_batches"):
            m.pop(key, None)
        for sh in m["shards"]:
            sh.pop("bytes"), sh.pop("sha256")
        m["format"] = "superpose.activations/1"
    rewrite_manifest(cache, old, rehash=False)
    assert len(drain(ActivationStore.from_cache(cache, **kw()))) == 10 * N_BATCHES


# ---- memory and NaN checks ------------------------------------------------------------------

def test_a_buffer_that_cannot_fit_is_refused_before_filling(model):
    with superpose.memory_limit("1MB"):
        store = ActivationStore(model, HOOK, inputs(), batch_size=8, buffer_size=10**6,
                                device="cpu")
        with pytest.raises(superpose.MemoryEstimateError,
                           match=r"the shuffling buffer \(buffer_size=1000000 rows of \[5\]\)"):
            next(iter(store))


@pytest.mark.parametrize("chunk_bytes", [4, 40, 400, 1 << 25])
def test_the_chunked_nan_check_finds_the_first_bad_row(chunk_bytes):
    x = torch.randn(50, 3, 4)
    assert first_nonfinite_row(x, chunk_bytes) is None
    x[37, 2, 1] = float("inf")
    x[41, 0, 0] = float("nan")
    assert first_nonfinite_row(x, chunk_bytes) == 37
    with pytest.raises(ValueError, match=r"NaN/inf activations \(first in row 37\)"):
        ActivationStore.from_tensor(x.reshape(50, 12))


def test_warnings_are_not_raised_for_a_complete_cache(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drain(ActivationStore.from_cache(cache, **kw()))
