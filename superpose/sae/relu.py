"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates — April
2024"): sparsity = λ · Σ_i acts_i · ‖W_dec,i‖, with no unit-norm constraint on the decoder,
so the penalty cannot be dodged by shrinking acts and growing decoder rows. SAELens calls this
architecture "standard"."""

from __future__ import annotations

import torch
from torch import Tensor

from superpose.sae.base import SAE, Encoded


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
