"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"): acts = z·H(z − θ) with a learned
per-latent threshold θ = exp(log_threshold), trained with an L0 penalty λ·Σ_i H(z_i − θ_i).
H has no useful gradient, so θ gets a straight-through estimate with the rectangle kernel
K(u) = 1[|u| < 1/2] of bandwidth ε (paper eqs. 11-12):
    ∂/∂θ [z·H(z − θ)] ≈ −(θ/ε)·K((z − θ)/ε),      ∂/∂θ H(z − θ) ≈ −(1/ε)·K((z − θ)/ε).
Saved as SAELens's "jumprelu" with the tensor `threshold` (= exp(log_threshold)).

Training fast path (as ReLU's, `superpose.sae.relu`): every gradient of a step lives on the
entries with z > θ − ε/2, i.e. (z − θ)/ε > −1/2: the active ones (z > θ) and the band below
the threshold where K ≠ 0, whose ∂L/∂acts (from the decoder) feeds θ's estimate. After the
dense encoder product the step keeps those entries as CSR matrices and runs the same autograd
functions on them with a per-entry θ; above `SPARSE_MAX_DENSITY` of them it runs dense. Same
numbers as the plain path (tested).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from superpose.sae.base import Encoded
from superpose.sae.relu import PenalisedSAE

# Kept-entry fraction up to which a step runs sparse (CPU; see `relu.sparse_max_density`):
# higher than ReLU's, as the dense route also pays for the kernel terms on every entry
# (the crossover from benchmarks/sae_step.py is in benchmarks/README.md).
SPARSE_MAX_DENSITY = 0.25


def _rectangle(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


def _sum_to_latents(g: Tensor, d_sae: int) -> Tensor:
    return g.reshape(-1, d_sae).sum(0)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > theta).to(grad.dtype)      # the true gradient away from the jump
        grad_theta = -(theta / eps) * _rectangle((z - theta) / eps) * grad
        return grad_z, _sum_to_latents(grad_theta, theta.shape[-1]), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((z - theta) / eps) * grad
        return None, _sum_to_latents(grad_theta, theta.shape[-1]), None


class JumpReLUSAE(PenalisedSAE):
    architecture = "jumprelu"

    def _init_encoder(self, device: torch.device, dtype: torch.dtype) -> None:
        super()._init_encoder(device, dtype)
        init = torch.full((self.cfg.d_sae,), self.cfg.jumprelu_threshold_init, dtype=dtype)
        self.log_threshold = torch.nn.Parameter(init.log().to(device))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def _encode(self, x: Tensor) -> Encoded:
        pre, sae_in = self._linear(x, self.b_enc)
        pre = self.hook_sae_acts_pre(pre)
        acts = _JumpReLU.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)
        return Encoded(acts=self.hook_sae_acts_post(acts), pre_acts=pre, sae_in=sae_in)

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *, dead_mask: Tensor | None,
                    sparsity_coefficient: float | None) -> dict[str, Tensor]:
        l0 = _Step.apply(enc.pre_acts, self.threshold, self.cfg.jumprelu_bandwidth)
        return {"sparsity": sparsity_coefficient * l0.sum(-1).mean()}

    def _sparse_cutoff(self) -> float:
        return SPARSE_MAX_DENSITY

    def _kept_mask(self, pre: Tensor) -> Tensor:
        # (z − θ)/ε as the kernel computes it, so K ≠ 0 ⇒ kept
        return (pre - self.threshold).div_(self.cfg.jumprelu_bandwidth) > -0.5

    def _dense_latents(self, pre: Tensor, n: int) -> tuple[Tensor, Tensor]:
        theta, eps = self.threshold, self.cfg.jumprelu_bandwidth
        return _JumpReLU.apply(pre, theta, eps), _Step.apply(pre, theta, eps).sum(-1).mean()

    def _kept_latents(self, z: Tensor, cols: Tensor, n: int) -> tuple[Tensor, Tensor]:
        theta_at, eps = self.threshold.index_select(0, cols), self.cfg.jumprelu_bandwidth
        return _JumpReLU.apply(z, theta_at, eps), _Step.apply(z, theta_at, eps).sum() / n

    def _scale_latents(self, norms: Tensor) -> None:
        super()._scale_latents(norms)
        self.log_threshold.add_(norms.log())     # θ scales with its pre-activation

    def saelens_state_dict(self) -> dict[str, Tensor]:
        state = super().saelens_state_dict()
        state["threshold"] = state.pop("log_threshold").exp()
        return state

    def _from_saelens_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        state = dict(state)
        theta = state.pop("threshold")
        if (theta < 0).any():
            raise ValueError("a JumpReLU threshold is negative; this implementation needs "
                             "thresholds >= 0 (it stores log θ)")
        state["log_threshold"] = theta.log()
        return state
