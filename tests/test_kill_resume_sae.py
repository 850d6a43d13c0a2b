"""SAE training killed with SIGKILL at chosen moments — while a checkpoint is being written, at a
random moment after one — and resumed each time, ends bit-identical to an uninterrupted run:
weights, dead-latent counters and the whole history, the resampled counts included (issue 13).
A ReLU SAE with resampling, so the resampling generator and the count logged between entries
must survive too. The children run with one torch thread (see tests/killing.py). Unit tier."""

from __future__ import annotations

import json
import random

import killing
import torch
from safetensors.torch import load_file

CHILD = r"""
import sys
import torch
from safetensors.torch import save_file
from superpose import sae

out, resume, final = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
s = sae.create(sae.SAEConfig(d_in=16, d_sae=64, architecture="relu", sparsity_coefficient=3.0),
               device="cpu")
gt = sae.GroundTruthFeatures(n_features=48, d=16, p=0.05, seed=3)
result = sae.train(s, gt.batches(64, 150), steps=150, lr=3e-3, resample_every=7,
                   dead_window=256, log_every=4, checkpoint_every=5, keep_checkpoints=2,
                   progress=False, out=out, resume=resume)
save_file({"samples_since_fired": result.samples_since_fired,
           **{k: t.contiguous() for k, t in s.state_dict().items()}}, final)
print(result.resumed_from)
"""


def _history(out):
    return json.loads(max(out.glob("checkpoint-*")).joinpath("history.json").read_text())


def test_sae_training_killed_anywhere_resumes_bit_identically(tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    killing.run(CHILD, ref_out, 0, tmp_path / "ref.safetensors")
    reference = load_file(str(tmp_path / "ref.safetensors"))
    ref_hist = _history(ref_out)
    assert sum(ref_hist["resampled"]) > 0          # resampling happened: the case is not vacuous

    kills = killing.kill_at_checkpoint_moments(CHILD, out, 1, tmp_path / "run.safetensors",
                                               rng=random.Random(13), max_delay=0.2)
    assert len(kills) >= 2, f"killed only {kills}: make the child train longer"
    resumed_from = killing.run(CHILD, out, 1, tmp_path / "run.safetensors").strip()
    assert resumed_from != "None"                 # it really continued from a checkpoint
    assert not list(out.glob(".tmp-*"))           # what the kills left was cleaned up
    got = load_file(str(tmp_path / "run.safetensors"))
    assert got.keys() == reference.keys()
    for name, want in reference.items():
        assert torch.equal(got[name], want), name
    run_hist = _history(out)
    for key in ("step", "samples", "loss", "mse", "l0", "frac_dead", "resampled"):
        assert run_hist[key] == ref_hist[key], key
