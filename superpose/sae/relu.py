"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates — April
2024"): sparsity = λ · Σ_i acts_i · ‖W_dec,i‖, with no unit-norm constraint on the decoder,
so the penalty cannot be dodged by shrinking acts and growing decoder rows. SAELens calls this
architecture "standard".

Training fast path: once the penalty acts, few latents are positive, so after the dense
encoder product the step works on the positive entries only (as TopK's does): their encoder
gradients by gathers (`superpose.sae.sparse.pre_at`), the decoder by embedding_bag, the L1
term as Σ over those entries of acts·‖W_dec row‖. Above `SPARSE_MAX_DENSITY` positive
entries (early in training) the same step runs dense, reusing the pre-activations; a hook on
hook_sae_acts_pre / hook_sae_acts_post, an input that needs a gradient, or no autograd switch
to the plain path. All routes give the same numbers (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from superpose.sae.base import SAE, Encoded, TrainStepOutput, hooked
from superpose.sae.sparse import col_order, decode_rows, encoder_pre, entries, pre_at

# Fraction of [batch, d_sae] entries up to which a step runs sparse. Measured on 1 CPU thread
# (batch 4096, d_in 128, d_sae 1024): sparse 99 ms vs dense 241 ms per step at 3% density,
# break-even near 15% with an idle machine and lower under load, so the margin is wide.
SPARSE_MAX_DENSITY = 0.06


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
        n, d_sae = sae_in.shape[0], self.cfg.d_sae
        with torch.no_grad():
            kept = entries(pre, pre > 0, SPARSE_MAX_DENSITY)
        if kept is None:                                       # dense, reusing `pre`
            acts = torch.relu(pre)
            l1 = (acts * self.W_dec_norms).sum(-1).mean()
            return self._fast_step_output(x, acts @ self.W_dec + self.b_dec, pre,
                                          lambda r, t: {"sparsity": coeff * l1}, acts=acts)
        rows, cols, pre_kept = kept
        order = col_order(rows, cols, d_sae)
        acts = pre_at(sae_in, self.W_enc, self.b_enc, rows, cols, pre_kept, order=order)
        recon = decode_rows(acts, rows, cols, self.W_dec, n, order=order) + self.b_dec
        l1 = (acts * self.W_dec_norms.index_select(0, cols)).sum() / n
        return self._fast_step_output(x, recon, pre.detach(),
                                      lambda r, t: {"sparsity": coeff * l1},
                                      sparse=(rows, cols, acts))
