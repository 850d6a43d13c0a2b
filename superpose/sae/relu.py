"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates — April
2024"): sparsity = λ · Σ_i acts_i · ‖W_dec,i‖, with no unit-norm constraint on the decoder,
so the penalty cannot be dodged by shrinking acts and growing decoder rows. SAELens calls this
architecture "standard".

Training fast path: once the penalty acts, few latents are positive, so after the dense
encoder product the step works on the positive entries only, as CSR matrices
(`superpose.sae.sparse.KeptEntries`): the decoder and the three gradient products are sparse
matrix products, the L1 term Σ over those entries of acts·‖W_dec row‖. Above
`SPARSE_MAX_DENSITY` positive entries (early in training) the same step runs dense, reusing
the pre-activations; a hook on hook_sae_acts_pre / hook_sae_acts_post, an input that needs a
gradient, or no autograd switch to the plain path. All routes give the same numbers (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from superpose.sae.base import SAE, Encoded, TrainStepOutput, hooked
from superpose.sae.sparse import csr_decode, csr_pre, encoder_pre, kept_entries

# Fraction of [batch, d_sae] entries up to which a step runs sparse (CPU). Measured with
# benchmarks/sae_step.py on 1 thread (batch 4096, d_in 128, d_sae 1024): sparse vs dense step
# 76 vs 211 ms at 1%, 138 vs 209 ms at 10%, 172 vs 202 ms at 15%, 211 vs 197 ms at 20%.
SPARSE_MAX_DENSITY = 0.15


def sparse_max_density(device: torch.device, cpu: float) -> float:
    """The sparse path's density cutoff: `cpu` on CPU. On CUDA dense GEMMs are so cheap that
    the sparse route (whose `nonzero` also waits for the GPU) is not used: never measured on
    a GPU here, so the dense path, which is known to be fast there, is the default."""
    return cpu if device.type == "cpu" else 0.0


def sparse_step_ok(sae: SAE, x: Tensor) -> bool:
    """Whether `training_forward` may take the fast path (no latent hooks, autograd on, an
    input without a gradient of its own)."""
    return (torch.is_grad_enabled() and not x.requires_grad
            and not hooked(sae.hook_sae_acts_pre) and not hooked(sae.hook_sae_acts_post))


def fast_inputs(sae: SAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sae_in [n, d_in] with autograd to b_dec, pre [n, d_sae]) for the fast path; `pre`
    back-propagates densely if the caller uses it (the fallback) and costs nothing if not."""
    sae_in = sae.process_input(x).reshape(-1, sae.cfg.d_in)
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    return sae_in, encoder_pre(sae_in.detach(), sae.W_enc, sae.b_enc, b_dec)


class ReLUSAE(SAE):
    architecture = "relu"
    saelens_architecture = "standard"

    def _encode(self, x: Tensor) -> Encoded:
        pre, sae_in = self._linear(x, self.b_enc)
        pre = self.hook_sae_acts_pre(pre)
        return Encoded(acts=self.hook_sae_acts_post(torch.relu(pre)), pre_acts=pre,
                       sae_in=sae_in)

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *,
                    dead_mask: Tensor | None, sparsity_coefficient: float) -> dict[str, Tensor]:
        l1 = (enc.acts * self.W_dec_norms).sum(-1).mean()
        return {"sparsity": sparsity_coefficient * l1}

    def training_forward(self, x: Tensor, *, dead_mask: Tensor | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        if not sparse_step_ok(self, x):
            return super().training_forward(x, dead_mask=dead_mask,
                                            sparsity_coefficient=sparsity_coefficient)
        coeff = self.cfg.sparsity_coefficient if sparsity_coefficient is None \
            else sparsity_coefficient
        sae_in, pre = fast_inputs(self, x)
        n = sae_in.shape[0]
        with torch.no_grad():
            kept = kept_entries(pre, pre > 0,
                                sparse_max_density(pre.device, SPARSE_MAX_DENSITY))
        if kept is None:                                       # dense, reusing `pre`
            acts = torch.relu(pre)
            l1 = acts.sum(0) @ self.W_dec_norms / n
            return self._fast_step_output(x, acts @ self.W_dec + self.b_dec, pre,
                                          lambda r, t: {"sparsity": coeff * l1}, acts=acts)
        entries, pre_kept = kept
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        acts = csr_pre(sae_in, self.W_enc, self.b_enc, b_dec, entries, pre_kept)
        recon = csr_decode(acts, self.W_dec, entries) + self.b_dec
        l1 = acts @ self.W_dec_norms.index_select(0, entries.cols) / n
        return self._fast_step_output(x, recon, pre.detach(),
                                      lambda r, t: {"sparsity": coeff * l1},
                                      sparse=(entries.rows, entries.cols, acts))
