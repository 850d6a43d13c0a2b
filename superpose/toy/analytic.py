"""The closed-form training step of the tied toy variants ("relu_out", "linear"): a fast path.

The paper's models are tiny (5 features, 2 hidden), so an autograd step is dominated by
per-op overhead, not arithmetic. For the tied variants with no hooks attached the gradient has
a closed form:

    pre = x Wᵀ W + b,  x' = ReLU(pre),  L = Σ_inst mean_{b,f} I_f (x'_bf − x_bf)²
    g   = ∂L/∂pre = 2 I (x' − x) / (B·F) · [pre > 0]
    ∂L/∂b = Σ_b g,   ∂L/∂(WᵀW) = xᵀ g,   ∂L/∂W = W (xᵀg + gᵀx)

Small sweeps (n_instances·n_features ≤ BLOCK_DIAGONAL_MAX) run all instances as one GEMM
against a block-diagonal WᵀW; larger ones use batched matmuls through h. The reference is the
plain path in `superpose.toy.training` (`model.forward`, `loss_per_instance`, autograd): the
tests compare the two gradients and losses, and `benchmarks/toy_speed.py` measures the gain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from superpose.toy.model import ToyModel

BLOCK_DIAGONAL_MAX = 256   # n_instances * n_features up to which one block-diagonal GEMM wins
VARIANTS = ("relu_out", "linear")


class AnalyticStep:
    """Closed-form forward + backward for the tied variants: writes `.grad`, returns the
    per-instance loss when asked (it costs a pass over the batch, so only on logging steps)."""

    def __init__(self, model: ToyModel, importance: Tensor) -> None:
        self.model = model
        inst, f = model.cfg.n_instances, model.cfg.n_features
        self.relu = model.cfg.variant == "relu_out"
        self.importance = importance
        self._scale: dict[int, Tensor] = {}
        self.block = inst * f <= BLOCK_DIAGONAL_MAX
        if self.block:
            self.M = torch.zeros(inst, f, inst, f, device=model.device)

    def scale(self, bsz: int) -> Tensor:
        """2 I / (B f): the derivative of the importance-weighted mean square."""
        if bsz not in self._scale:
            self._scale[bsz] = self.importance * (2.0 / (bsz * self.model.cfg.n_features))
        return self._scale[bsz]

    def __call__(self, x: Tensor, want_loss: bool) -> Tensor | None:
        W, b = self.model.W, self.model.b_final
        bsz, inst, f = x.shape
        scale = self.scale(bsz)
        if self.block:
            # All instances at once: x [B, inst*f] @ blockdiag(WᵀW) [inst*f, inst*f].
            x2 = x.reshape(bsz, inst * f)
            torch.diagonal(self.M, dim1=0, dim2=2).copy_((W.transpose(1, 2) @ W).permute(1, 2, 0))
            out = torch.addmm(b.reshape(-1), x2, self.M.view(inst * f, inst * f))
            if self.relu:
                out.relu_()
            diff = out - x2
            loss = self._loss(diff.view(bsz, inst, f), scale) if want_loss else None
            g = diff.mul_(scale.reshape(-1))
            if self.relu:   # no gradient where the output ReLU is off
                g = torch.ops.aten.threshold_backward(g, out, 0.0)
            b.grad = g.sum(0).view(inst, f)
            dM = torch.diagonal((x2.T @ g).view(inst, f, inst, f), dim1=0, dim2=2)  # [f, f, inst]
            dM = dM.permute(2, 0, 1)
            W.grad = W @ (dM + dM.transpose(1, 2))
            return loss
        xt = x.transpose(0, 1)                                               # [inst, B, f]
        h = torch.bmm(xt, W.transpose(1, 2))                                 # [inst, B, h]
        out = torch.baddbmm(b[:, None, :], h, W)                             # [inst, B, f]
        if self.relu:
            out.relu_()
        diff = out - xt
        loss = self._loss(diff.transpose(0, 1), scale) if want_loss else None
        g = diff.mul_(scale[:, None, :])
        if self.relu:
            g = torch.ops.aten.threshold_backward(g, out, 0.0)
        b.grad = g.sum(1)
        W.grad = torch.bmm(h.transpose(1, 2), g)                             # decoder side
        W.grad.baddbmm_(torch.bmm(g, W.transpose(1, 2)).transpose(1, 2), xt)  # encoder side
        return loss

    @staticmethod
    def _loss(diff: Tensor, scale: Tensor) -> Tensor:
        # Σ_{b,f} scale·diff² / 2 is the importance-weighted mean, one value per instance.
        return (diff.square() * scale).sum(dim=(0, 2)) / 2
