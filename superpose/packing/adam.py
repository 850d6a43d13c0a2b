"""Adam on one tensor, updated in place: the packing optimizer's fast path.

`pack` takes thousands of steps on an [n, d] tensor that can hold 10^8 numbers, so a step may not
allocate: the moments live in two preallocated buffers and the gradient's own buffer holds the
denominator. The arithmetic is Adam's (Kingma & Ba 2015) with bias correction, no weight decay,
and eps added after the square root, exactly as `torch.optim.Adam` does it; that class is the
reference the tests compare this one to, step by step.
"""

from __future__ import annotations

import torch
from torch import Tensor


class InPlaceAdam:
    """Adam for one tensor `param` that the caller updates step by step with its own gradient.

    `step(grad, lr)` moves `param` in place and uses `grad` as scratch space (it is overwritten
    with Adam's denominator), so one step allocates nothing. The learning rate is passed per step
    (the caller owns the schedule). eps defaults to 1e-12 rather than torch's 1e-8, the value `pack`
    is tuned with.
    """

    def __init__(self, param: Tensor, *, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-12) -> None:
        self.param = param
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m1 = param.new_zeros(param.shape)      # first moment
        self.m2 = param.new_zeros(param.shape)      # second moment
        self.t = 0

    def step(self, grad: Tensor, lr: float) -> None:
        """param -= lr · m̂ / (sqrt(v̂) + eps); `grad` is overwritten."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m1.mul_(b1).add_(grad, alpha=1 - b1)
        self.m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = grad                                                       # reuse its memory
        torch.div(self.m2, 1 - b2 ** self.t, out=denom).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m1, denom, value=-lr / (1 - b1 ** self.t))
