"""Run with the superpose of commit 9d4ab6c on the path: writes checkpoints in the formats of
that version, and the weights its uninterrupted runs end with."""
import shutil, sys, logging
from pathlib import Path
import torch
from safetensors.torch import save_file
import superpose
print(superpose.__file__, file=sys.stderr)
from superpose import sae, gpt

dest = Path(sys.argv[1]); shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
tmp = Path("/tmp/legacy/runs"); shutil.rmtree(tmp, ignore_errors=True)

# SAE (checkpoint format 1): 8 steps, checkpoint after 4
g = torch.Generator().manual_seed(0)
batches = [torch.randn(16, 8, generator=g) for _ in range(8)]
s = sae.create(sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=0), device="cpu")
sae.train(s, batches, steps=8, checkpoint_every=4, out=tmp / "sae", progress=False, log_every=2)
shutil.copytree(tmp / "sae" / "checkpoint-00000004", dest / "sae" / "checkpoint-00000004")
save_file({"batches": torch.stack(batches)}, str(dest / "sae" / "batches.safetensors"))
save_file({k: t.contiguous() for k, t in s.state_dict().items()}, str(dest / "sae" / "final.safetensors"))

# GPT (checkpoint format 1, history keys of that version): 6 steps, checkpoints at 3 and 6
tokens = torch.randint(0, 11, (2000,), generator=torch.Generator().manual_seed(1))
data = gpt.TokenDataset(tokens, 8)
m = gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8, seed=0), device="cpu")
gpt.train(m, data, steps=6, batch_size=4, checkpoint_every=3, keep_checkpoints=2, log_every=1,
          out=tmp / "gpt", progress=False, device="cpu")
shutil.copytree(tmp / "gpt" / "checkpoint-00000003", dest / "gpt" / "checkpoint-00000003")
save_file({"tokens": tokens}, str(dest / "gpt" / "tokens.safetensors"))
save_file({k: t.contiguous().clone() for k, t in m.state_dict().items()}, str(dest / "gpt" / "final.safetensors"))
print("ok")
