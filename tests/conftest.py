"""Shared test set-up: one torch thread per worker (the machine has 2 cores and the suite runs
on 2 xdist workers), a headless matplotlib, and the repo's experiments/ on the path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jaxtyping  # noqa: E402

# Every annotation in the package (jaxtyping shapes and plain types) is checked at run time, under
# pytest only: every module file of the package, found on disk (nothing imported yet, so the
# import hooks see them all). Modules that validate their own input (a dataclass with a
# `__post_init__`, and the constraint tables in `_validate`) are checked after the function body
# rather than before it (tests/shape_checks.py): their ValueErrors must be what a user sees (a
# beartype error on `n_instances=1.5` would hide the message that names the rule).


def _package_modules() -> tuple[list[str], list[str]]:
    import importlib.util
    (root,) = importlib.util.find_spec("superpose").submodule_search_locations
    before, after = [], []
    for path in sorted(Path(root).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        validates = parts[-1] == "_validate" or "def __post_init__" in path.read_text()
        (after if validates else before).append(".".join(("superpose", *parts)))
    return before, after


TYPECHECKED, CHECKED_AFTER_THE_BODY = _package_modules()
jaxtyping.install_import_hook(TYPECHECKED, "beartype.beartype")
jaxtyping.install_import_hook(CHECKED_AFTER_THE_BODY, "shape_checks.after_the_body")

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
