"""The README's ```python blocks run as written, top to bottom, in one namespace: what a newcomer
pasting them one after another into one session would do. Only the lengths of training shrink
(SIZES below: each replacement must match exactly once, so a README edit that moves a size
fails here instead of silently running the full length). The TransformerLens block runs here on
4.x; tests/test_readme_tl.py also runs it on 3.x, in the interop environment. The science
tier: the blocks train a toy model, a GPT and an SAE (briefly)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# (as written, what the test runs): training lengths only; every shape and option as written.
SIZES = [
    ("toy.train(model, steps=10_000)", "toy.train(model, steps=300)"),
    ("steps=2_000, batch_size=32, warmup_steps=100", "steps=12, batch_size=32, warmup_steps=4"),
    ("n_samples=2_000_000", "n_samples=40_000"),
    ("packing.pack(1000, 50, steps=1000)", "packing.pack(1000, 50, steps=20)"),
    ("TrainConfig(steps=600, lr=3e-3)", "TrainConfig(steps=20, lr=3e-3)"),
    ("steps=500, batch_size=16", "steps=10, batch_size=16"),
    ("cycle(pairs.split(512)), steps=1_000", "cycle(pairs.split(512)), steps=10"),
]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def shrunk(blocks: list[str]) -> list[str]:
    joined = "\n# ---- block ----\n".join(blocks)
    for written, small in SIZES:
        assert joined.count(written) == 1, f"README no longer has {written!r} exactly once"
        joined = joined.replace(written, small)
    return joined.split("\n# ---- block ----\n")


def test_readme_has_the_blocks_this_test_runs():
    blocks = python_blocks(README.read_text())
    # toy, small GPT, TransformerLens, encoder-decoder, SAE, LoRA + diffing, geometry
    assert len(blocks) == 7, [b.splitlines()[0] for b in blocks]


@pytest.mark.science
def test_readme_python_blocks_run_top_to_bottom(tmp_path, monkeypatch):
    # catches: a README block that uses a name no earlier block defines (the SAE block's
    # `tokens`, the geometry block's `V`), or an API the README names that the package renamed.
    monkeypatch.chdir(tmp_path)                 # the blocks write results/... where they run
    monkeypatch.setenv("TQDM_DISABLE", "1")
    scope: dict = {"__name__": "__readme__"}
    try:
        for i, code in enumerate(shrunk(python_blocks(README.read_text()))):
            exec(compile(code, f"{README}:block{i + 1}", "exec"), scope)
    finally:
        plt.close("all")
    # What the blocks promise, at the test's sizes.
    assert scope["result"] is not None and scope["ev"] is not None
    assert scope["pattern"].shape[:2] == (64, 4)          # the encoder-decoder block ran
    assert (tmp_path / "results" / "my_sae" / "cfg.json").is_file()
    # the LoRA + diffing block: paired activations of two models, two scored candidates, and
    # the adapter saved in its folder format
    assert scope["pairs"].shape[1] == 2 and len(scope["cands"]) == 2
    assert (tmp_path / "results" / "adapter" / "adapter_config.json").is_file()

