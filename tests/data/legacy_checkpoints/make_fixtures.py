"""How these fixtures were made: run with the superpose of commit 9d4ab6c (the version before
the shared training core) first on the path, e.g.

    git worktree add /tmp/old 9d4ab6c
    PYTHONPATH=/tmp/old .venv/bin/python tests/data/legacy_checkpoints/make_fixtures.py \
        tests/data/legacy_checkpoints

It writes checkpoints in that version's formats and the weights its uninterrupted runs end
with; tests/test_train_core.py resumes them with today's trainers and compares.
"""

import logging
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from superpose import gpt, sae


def main(dest: Path) -> None:
    shutil.rmtree(dest / "sae", ignore_errors=True)
    shutil.rmtree(dest / "gpt", ignore_errors=True)
    tmp = Path("/tmp/legacy_fixture_runs")
    shutil.rmtree(tmp, ignore_errors=True)

    # SAE (checkpoint format 1): 8 steps, a checkpoint after 4
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 8, generator=g) for _ in range(8)]
    s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=0),
                   device="cpu")
    sae.train(s, batches, steps=8, checkpoint_every=4, out=tmp / "sae", progress=False,
              log_every=2)
    shutil.copytree(tmp / "sae" / "checkpoint-00000004", dest / "sae" / "checkpoint-00000004")
    save_file({"batches": torch.stack(batches)}, str(dest / "sae" / "batches.safetensors"))
    save_file({k: t.contiguous() for k, t in s.state_dict().items()},
              str(dest / "sae" / "final.safetensors"))

    # GPT (that version's history keys): 6 steps, checkpoints at 3 and 6
    tokens = torch.randint(0, 11, (2000,), generator=torch.Generator().manual_seed(1))
    m = gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8, seed=0),
                device="cpu")
    gpt.train(m, gpt.TokenDataset(tokens, 8), steps=6, batch_size=4, checkpoint_every=3,
              keep_checkpoints=2, log_every=1, out=tmp / "gpt", progress=False, device="cpu")
    shutil.copytree(tmp / "gpt" / "checkpoint-00000003", dest / "gpt" / "checkpoint-00000003")
    save_file({"tokens": tokens}, str(dest / "gpt" / "tokens.safetensors"))
    save_file({k: t.contiguous().clone() for k, t in m.state_dict().items()},
              str(dest / "gpt" / "final.safetensors"))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(Path(sys.argv[1]))
