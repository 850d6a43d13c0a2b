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

from superpose.hooks import is_hooked
from superpose.sae.base import SAE, Encoded, TrainStepOutput
from superpose.sae.sparse import csr_decode, csr_pre, encoder_pre, kept_entries

# Fraction of [batch, d_sae] entries up to which a step runs sparse (CPU): the sparse products
# cost in proportion to the kept entries, the dense ones do not, and this is where the two cross
# (benchmarks/sae_step.py; the figures are in benchmarks/README.md).
SPARSE_MAX_DENSITY = 0.15


def sparse_max_density(device: torch.device, cpu: float) -> float:
    """The sparse path's density cutoff: `cpu` on CPU, 0 (always dense) on CUDA, where dense
    GEMMs are cheap and the sparse route's `nonzero` would wait for the GPU every step; the
    CPU crossover says nothing about where a GPU's would be."""
    return cpu if device.type == "cpu" else 0.0


def sparse_step_ok(sae: SAE, x: Tensor) -> bool:
    """Whether `training_forward` may take the fast path (no latent hooks, autograd on, an
    input without a gradient of its own)."""
    return (torch.is_grad_enabled() and not x.requires_grad
            and not is_hooked(sae.hook_sae_acts_pre) and not is_hooked(sae.hook_sae_acts_post))


class PenalisedSAE(SAE):
    """The fast training step the penalised architectures (ReLU, JumpReLU) share: the
    pre-activations once, without a per-row product for b_dec's gradient (`encoder_pre`);
    then, when few enough entries are kept (`_kept_mask`, at most `_sparse_cutoff()` of
    them), CSR products over those entries, else dense, reusing the pre-activations. A
    subclass says which entries it keeps and how its latents and sparsity term follow from
    pre-activations, densely (`_dense_latents`) or at the kept entries (`_kept_latents`)."""

    def _sparse_cutoff(self) -> float:
        raise NotImplementedError

    def _kept_mask(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def _dense_latents(self, pre: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """(latents [n, d_sae], sparsity term before its coefficient)."""
        raise NotImplementedError

    def _kept_latents(self, z: Tensor, cols: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """(latents at the kept entries [m], sparsity term) from their pre-activations `z`
        and latent ids `cols`."""
        raise NotImplementedError

    def training_forward(self, x: Tensor, *, dead_mask: Tensor | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        x = self.flatten_heads(x)
        if not sparse_step_ok(self, x):
            return super().training_forward(x, dead_mask=dead_mask,
                                            sparsity_coefficient=sparsity_coefficient)
        coeff = self.cfg.sparsity_coefficient if sparsity_coefficient is None \
            else sparsity_coefficient
        sae_in = self.process_input(x).reshape(-1, self.cfg.d_in).detach()
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        pre = encoder_pre(sae_in, self.W_enc, self.b_enc, b_dec)   # b_dec's gradient via pre
        n = pre.shape[0]
        with torch.no_grad():
            kept = kept_entries(pre, self._kept_mask(pre),
                                sparse_max_density(pre.device, self._sparse_cutoff()))
        if kept is None:                                       # dense, reusing `pre`
            acts, sparsity = self._dense_latents(pre, n)
            return self._fast_step_output(x, acts @ self.W_dec + self.b_dec, pre,
                                          lambda r, t: {"sparsity": coeff * sparsity},
                                          acts=acts)
        entries, pre_kept = kept
        z = csr_pre(sae_in, self.W_enc, self.b_enc, b_dec, entries, pre_kept)
        values, sparsity = self._kept_latents(z, entries.cols, n)
        recon = csr_decode(values, self.W_dec, entries) + self.b_dec
        return self._fast_step_output(x, recon, pre.detach(),
                                      lambda r, t: {"sparsity": coeff * sparsity},
                                      sparse=(entries.rows, entries.cols, values))


class ReLUSAE(PenalisedSAE):
    architecture = "relu"

    def _encode(self, x: Tensor) -> Encoded:
        pre, sae_in = self._linear(x, self.b_enc)
        pre = self.hook_sae_acts_pre(pre)
        return Encoded(acts=self.hook_sae_acts_post(torch.relu(pre)), pre_acts=pre,
                       sae_in=sae_in)

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *, dead_mask: Tensor | None,
                    sparsity_coefficient: float | None) -> dict[str, Tensor]:
        l1 = (enc.acts * self.W_dec_norms).sum(-1).mean()
        return {"sparsity": sparsity_coefficient * l1}

    def _sparse_cutoff(self) -> float:
        return SPARSE_MAX_DENSITY

    def _kept_mask(self, pre: Tensor) -> Tensor:
        return pre > 0

    def _dense_latents(self, pre: Tensor, n: int) -> tuple[Tensor, Tensor]:
        acts = torch.relu(pre)
        return acts, acts.sum(0) @ self.W_dec_norms / n

    def _kept_latents(self, z: Tensor, cols: Tensor, n: int) -> tuple[Tensor, Tensor]:
        return z, z @ self.W_dec_norms.index_select(0, cols) / n
