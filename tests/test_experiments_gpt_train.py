"""experiments/gpt_train.py under torchrun with DistributedDataParallel: the science tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from superpose import gpt


@pytest.mark.science
def test_torchrun_two_processes_match_one(tmp_path, root):
    """torchrun starts experiments/gpt_train.py on 2 gloo processes, each with half of every
    batch (in 2 micro-batches); the same script in this process, with the whole batch in one
    pass, must give the same losses, gradient norms and weights."""
    import gpt_train

    args = ["--quick", "--steps", "4", "--batch-size", "8", "--n-layers", "1", "--d-model",
            "16", "--n-ctx", "16", "--max-chars", "20000", "--val-batches", "2",
            "--sample-tokens", "5", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(root / "experiments" / "gpt_train.py"), *args, "--out", str(tmp_path),
         "--name", "ddp", "--grad-accum", "2"],
        capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "gpt_train" / "ddp" / "metrics.json").read_text())
    one = gpt_train.main([*args, "--out", str(tmp_path), "--name", "one"])
    assert two["summary"]["processes"] == 2 and one["summary"]["processes"] == 1
    for key in ("loss", "grad_norm", "val_loss", "lr", "tokens"):
        assert two["history"][key] == pytest.approx(one["history"][key], abs=1e-5), key
    w1 = gpt.GPT.load(tmp_path / "gpt_train" / "one" / "model")
    w2 = gpt.GPT.load(tmp_path / "gpt_train" / "ddp" / "model")
    for (k, a), b in zip(w1.state_dict().items(), w2.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=k)
    # Rank 0 alone wrote: one run folder, one checkpoint, no temporary folders.
    run_dir = tmp_path / "gpt_train" / "ddp"
    assert {p.name for p in run_dir.iterdir()} == {
        "config.json", "tokenizer.json", "checkpoints", "model", "metrics.json", "complete.json",
        "loss_curves.png"}
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-00000004"]
    assert json.loads((tmp_path / "gpt_train" / "ddp" / "checkpoints" / "checkpoint-00000004"
                       / "checkpoint.json").read_text())["world_size"] == 2
