"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders"). Which latents fire and how strongly are two paths sharing W_enc:
    gate:      π_gate = x̃ W_enc + b_gate,                 f_gate = 1[π_gate > 0]
    magnitude: π_mag  = x̃ (W_enc ⊙ exp(r_mag)) + b_mag,  f_mag  = ReLU(π_mag)
    acts = f_gate ⊙ f_mag
The step gives the gate no gradient, so training adds λ·Σ_i ReLU(π_gate)_i·‖W_dec,i‖ and an
auxiliary loss: ReLU(π_gate) must reconstruct x through a *frozen* copy of the decoder (paper
eq. 8; SAELens lets that gradient reach the decoder). SAELens name: "gated", no b_enc.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from superpose.sae.base import SAE, Encoded


class GatedSAE(SAE):
    architecture = "gated"

    def _init_encoder(self, device: torch.device, dtype: torch.dtype) -> None:
        def zeros() -> nn.Parameter:
            return nn.Parameter(torch.zeros(self.cfg.d_sae, device=device, dtype=dtype))

        self.b_gate, self.r_mag, self.b_mag = zeros(), zeros(), zeros()

    def _encode(self, x: Tensor) -> Encoded:
        proj, sae_in = self._linear(x, torch.zeros_like(self.b_gate))
        gate_pre = proj + self.b_gate
        pre = self.hook_sae_acts_pre(proj * self.r_mag.exp() + self.b_mag)
        acts = (gate_pre > 0).to(pre.dtype) * torch.relu(pre)
        return Encoded(acts=self.hook_sae_acts_post(acts), pre_acts=pre, sae_in=sae_in,
                       extra={"gate_pre": gate_pre})

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *, dead_mask: Tensor | None,
                    sparsity_coefficient: float | None) -> dict[str, Tensor]:
        gate = torch.relu(enc.extra["gate_pre"])
        sparsity = (gate * self.W_dec_norms).sum(-1).mean()
        via_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
        if self.cfg.activation_scale != 1.0:
            via_gate = via_gate / self.cfg.activation_scale
        aux = (via_gate - x).pow(2).sum(-1).mean()
        return {"sparsity": sparsity_coefficient * sparsity, "aux": aux}

    def _scale_latents(self, norms: Tensor) -> None:
        # W_enc is shared, so scaling it scales both paths; r_mag stays as it is
        self.W_enc.mul_(norms)
        self.b_gate.mul_(norms)
        self.b_mag.mul_(norms)
