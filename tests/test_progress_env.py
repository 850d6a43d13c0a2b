"""`TQDM_DISABLE=1`, tqdm's own switch, silences every progress bar the package draws: the three
trainers, the packing optimizer and an experiment script, each asked for its bar
(`progress=True`, the default). Run in a subprocess so the variable is read as a user's shell
sets it; the same script without the variable must draw bars, so the check can fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys

SCRIPT = r"""
import sys
import torch
from superpose import gpt, packing, sae, toy

sys.path.insert(0, sys.argv[1] + "/experiments")
import gpt_train

toy.train(toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, n_instances=2)), steps=20,
          progress=True)
data = gpt.TokenDataset(torch.randint(0, 20, (2_000,)), 16)
model = gpt.GPT(gpt.GPTConfig(d_vocab=20, n_layers=1, d_model=16, n_ctx=16), device="cpu")
gpt.train(model, data, steps=3, batch_size=4, device="cpu", progress=True)
s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2), device="cpu")
sae.train(s, iter(torch.randn(8, 64, 8)), n_samples=8 * 64, progress=True)
packing.pack(20, 5, steps=5, device="cpu", progress=True)
gpt_train.main(["--quick", "--steps", "3", "--batch-size", "4", "--n-layers", "1",
                "--d-model", "16", "--n-ctx", "16", "--max-chars", "20000", "--val-batches", "1",
                "--sample-tokens", "5", "--device", "cpu", "--out", sys.argv[2]])
"""

# tqdm's bar: "| 3/3 [00:00<00:00, 12.3it/s]" (also s/it while it warms up).
BAR = re.compile(r"\d+/\d+ \[[\d:<?]+")


def run(root, tmp_path, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(root), **env_changes)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_tqdm_disable_silences_every_bar(root, tmp_path):
    quiet = run(root, tmp_path / "quiet", TQDM_DISABLE="1")
    bars = sorted({line.strip()[:60] for line in re.split(r"[\r\n]", quiet.stderr)
                   if BAR.search(line)})
    assert not bars, "progress bars drawn with TQDM_DISABLE=1:\n" + "\n".join(bars)
    # The control: without the switch the same calls draw bars (else the check above proves
    # nothing), one for each kind of caller at least.
    loud = run(root, tmp_path / "loud")
    drawn = [line for line in re.split(r"[\r\n]", loud.stderr) if BAR.search(line)]
    assert any(line.lstrip().startswith("toy") for line in drawn), drawn[:5]
    assert len(drawn) >= 5
