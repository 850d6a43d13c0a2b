"""superpose: a lab toolkit for interpretability and superposition research.

    from superpose import toy, gpt, transformer, lora, sae, diffing, packing, jl, geometry, plot
    from superpose.activations import ActivationStore
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# `plot` pulls in matplotlib; load it (and any other heavy part) on first use.
_LAZY = {"activations", "diffing", "geometry", "gpt", "jl", "lora", "packing", "plot", "runs",
         "sae", "toy", "transformer"}

__all__ = sorted(_LAZY | {"memory_limit", "MemoryEstimateError"})

# Sizes checked before allocating (superpose._memory; importing it does not import torch).
from superpose._memory import MemoryEstimateError as MemoryEstimateError  # noqa: E402
from superpose._memory import memory_limit as memory_limit  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"superpose.{name}")
    raise AttributeError(f"module 'superpose' has no attribute {name!r}")
