"""An activation-cache writer killed with SIGKILL — while a shard or the manifest is being
written, and at a random moment — leaves a cache that is refused as incomplete, and
`resume=True` then ends with the files and the batches of an uninterrupted writer, bit for bit
(issue 13). Every write is slowed down in the child so that a kill lands inside one."""

from __future__ import annotations

import random

import killing
import pytest
import torch

from superpose.activations import ActivationStore

CHILD = r"""
import sys, time
import torch
from superpose import runs, toy
from superpose.activations import ActivationStore

out, resume, batches_file, slow = sys.argv[1], sys.argv[2] == "1", sys.argv[3], float(sys.argv[4])
write = runs.atomic_write
def slow_write(path, fn):                     # the temporary file stays a while before renaming
    def slowly(p):
        fn(p)
        time.sleep(slow)
    return write(path, slowly)
runs.atomic_write = slow_write
model = toy.ToyModel(toy.ToyConfig(n_features=40, n_hidden=12, seed=5), device="cpu")
xs = [torch.rand(24, 1, 40, generator=torch.Generator().manual_seed(i)) for i in range(40)]
store = ActivationStore(model, "hook_hidden", xs, batch_size=16, buffer_size=64, device="cpu",
                        seed=2, cache_dir=out, shard_size=50, normalize="mean_norm",
                        resume=resume)
torch.save(torch.cat(list(store)), batches_file)
"""


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cache_writer_killed_anywhere_resumes_bit_identically(tmp_path):
    ref = tmp_path / "ref"
    killing.run(CHILD, ref, 0, tmp_path / "ref.pt", 0)
    reference, ref_batches = _files(ref), torch.load(tmp_path / "ref.pt")
    assert len(reference) == 1 + 20                 # 960 rows in shards of 50, and manifest

    rng = random.Random(13)

    moments = {
        "writing a shard": lambda out: lambda: any(out.glob(".shard_0000[3-9]*.tmp")),
        "writing the manifest": lambda out: lambda: len(list(out.glob("shard_*"))) >= 6
        and any(out.glob(".manifest.json.*.tmp")),
        "at a random moment": lambda out: killing.some_time_after(
            lambda: any(out.glob("shard_00001.*")), rng, 0.4),
    }
    for name, moment in moments.items():
        out = tmp_path / name.replace(" ", "_")
        proc = killing.start(CHILD, out, 0, tmp_path / "unused.pt", 0.03)
        assert killing.kill_when(proc, moment(out)), f"the writer ended before {name}"
        with pytest.raises(ValueError, match="is incomplete: its writer stopped after"):
            ActivationStore.from_cache(out)
        killing.run(CHILD, out, 1, tmp_path / "resumed.pt", 0)
        assert _files(out) == reference, name
        assert torch.equal(torch.load(tmp_path / "resumed.pt"), ref_batches), name
