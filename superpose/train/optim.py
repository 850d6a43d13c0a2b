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
    check_memory(params)
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kw)


def check_memory(params: list[Any]) -> None:
    """Gradients and Adam's two moments take three more copies of the trainable weights: check
    that they fit (`superpose.memory_limit` to override) before the first step allocates them."""
    from superpose import _memory

    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    by_device: dict[torch.device, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            by_device[t.device] = by_device.get(t.device, 0) + t.numel() * t.element_size()
    for device, n in by_device.items():
        count = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor)
                    and t.device == device)
        _memory.check_allocation(f"training {count:,} parameters with Adam (gradients and two "
                                 "moment buffers, 3x the weights)", 3 * n, device)
