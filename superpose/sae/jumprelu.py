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

from superpose.sae.base import SAE, Encoded, TrainStepOutput
from superpose.sae.relu import fast_inputs, sparse_max_density, sparse_step_ok
from superpose.sae.sparse import csr_decode, csr_pre, kept_entries

# Kept-entry fraction up to which a step runs sparse (CPU; see `relu.sparse_max_density`):
# higher than ReLU's, as the dense route's kernel terms cost more (benchmarks/sae_step.py:
# sparse vs dense 158 vs 328 ms at 10%, 286 vs 329 ms at 25%, 323 vs 300 ms at 30%).
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


class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    saelens_architecture = "jumprelu"

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

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *,
                    dead_mask: Tensor | None, sparsity_coefficient: float) -> dict[str, Tensor]:
        l0 = _Step.apply(enc.pre_acts, self.threshold, self.cfg.jumprelu_bandwidth)
        return {"sparsity": sparsity_coefficient * l0.sum(-1).mean()}

    def training_forward(self, x: Tensor, *, dead_mask: Tensor | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        if not sparse_step_ok(self, x):
            return super().training_forward(x, dead_mask=dead_mask,
                                            sparsity_coefficient=sparsity_coefficient)
        coeff = self.cfg.sparsity_coefficient if sparsity_coefficient is None \
            else sparsity_coefficient
        eps = self.cfg.jumprelu_bandwidth
        sae_in, pre = fast_inputs(self, x)
        n = sae_in.shape[0]
        theta = self.threshold
        with torch.no_grad():         # (z − θ)/ε as the kernel computes it, so K ≠ 0 ⇒ kept
            kept = kept_entries(pre, (pre - theta).div_(eps) > -0.5,
                                sparse_max_density(pre.device, SPARSE_MAX_DENSITY))
        if kept is None:                                       # dense, reusing `pre`
            acts = _JumpReLU.apply(pre, theta, eps)
            l0 = _Step.apply(pre, theta, eps).sum(-1).mean()
            return self._fast_step_output(x, acts @ self.W_dec + self.b_dec, pre,
                                          lambda r, t: {"sparsity": coeff * l0}, acts=acts)
        entries, pre_kept = kept
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        z = csr_pre(sae_in, self.W_enc, self.b_enc, b_dec, entries, pre_kept)
        theta_at = theta.index_select(0, entries.cols)
        values = _JumpReLU.apply(z, theta_at, eps)
        recon = csr_decode(values, self.W_dec, entries) + self.b_dec
        l0 = _Step.apply(z, theta_at, eps).sum() / n
        return self._fast_step_output(x, recon, pre.detach(),
                                      lambda r, t: {"sparsity": coeff * l0},
                                      sparse=(entries.rows, entries.cols, values))

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
