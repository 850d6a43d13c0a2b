"""Adam and AdamW as every trainer builds them: the fused kernel (one pass over all parameters,
CPU and CUDA, float32) where this torch has it, else the multi-tensor ("foreach") one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adam(params: Iterable[Any], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, weight_decay: float = 0.0,
         decoupled: bool = True) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) or, with `decoupled=False`,
    Adam (L2 added to the gradient). `params` is a list of parameters or of param groups.
    With weight_decay 0 the two are the same update."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    params = list(params)
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kw)
