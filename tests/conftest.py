"""Shared test set-up: one torch thread per worker (the machine has 2 cores and the suite runs
on 2 xdist workers), a headless matplotlib, and the repo's experiments/ on the path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jaxtyping  # noqa: E402

# Every jaxtyping shape annotation in these modules is checked at run time, under pytest only.
# Config modules are left out on purpose: their own validators must be what a user sees (a
# beartype error on `n_instances=1.5` would hide the ValueError that names the rule).
TYPECHECKED = ["superpose.geometry", "superpose.toy.data", "superpose.toy.model",
               "superpose.toy.training", "superpose.plot", "superpose.runs",
               "superpose.gpt.model", "superpose.gpt.tokenizers", "superpose.gpt.corpus",
               "superpose.gpt.synthetic", "superpose.gpt.training", "superpose.gpt.checkpoint",
               "superpose.gpt.distributed", "superpose.jl", "superpose.activations",
               "superpose.sae.base", "superpose.sae.relu", "superpose.sae.topk",
               "superpose.sae.batchtopk", "superpose.sae.jumprelu", "superpose.sae.gated",
               "superpose.sae.io", "superpose.sae.training", "superpose.sae.evaluation",
               "superpose.sae.synthetic", "superpose.sae.splice", "superpose.sae.features",
               "superpose.packing"]
jaxtyping.install_import_hook(TYPECHECKED, "beartype.beartype")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
torch.set_num_threads(1)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def user_errors():
    """Turn the test-only shape checker off, so a test sees exactly the error a user gets
    (the library's own ValueError naming the field, the value and the fix)."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


# tests/interop/ runs against the real sae-lens and transformer-lens 3.9, in their own
# environment (.venv-saelens; `make test` runs it as its second tier). Elsewhere it is not
# collected; inside that environment its conftest fails loudly if sae-lens is missing.
try:
    import sae_lens  # noqa: F401
except ImportError:
    collect_ignore = ["interop"]
