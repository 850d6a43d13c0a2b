"""BatchTopK SAE (Bussmann, Leask & Nanda 2024): in training keep the k·batch largest
(ReLU'd) pre-activations over the whole batch, so inputs can use more or fewer than k latents;
in eval mode each latent fires when its pre-activation exceeds one threshold θ, estimated in
training as an exponential moving average of the smallest kept activation (as in SAELens).

A saved BatchTopK SAE is a JumpReLU SAE with θ in every latent, which is how SAELens saves it.

Training takes the same sparse fast path as TopK (see topk.py): gradients by gathers over the
k·batch kept entries, the decoder reading only their rows; a hook on the latents switches to
the dense path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from superpose.hooks import is_hooked
from superpose.sae.base import SAE, Encoded, TrainStepOutput
from superpose.sae.sparse import batch_topk
from superpose.sae.topk import auxk_loss, latents_unhooked, sparse_step


class BatchTopKSAE(SAE):
    architecture = "batchtopk"

    def _init_encoder(self, device: torch.device, dtype: torch.dtype) -> None:
        super()._init_encoder(device, dtype)
        # the inference threshold θ, a buffer: learned by the EMA, not by gradient descent
        self.register_buffer("threshold", torch.zeros((), device=device, dtype=dtype))

    def _encode(self, x: Tensor) -> Encoded:
        pre, sae_in = self._linear(x, self.b_enc)
        pre = self.hook_sae_acts_pre(pre)
        if not self.training:
            acts = torch.relu(pre) * (pre > self.threshold)
            return Encoded(acts=self.hook_sae_acts_post(acts), pre_acts=pre, sae_in=sae_in)
        flat = torch.relu(pre).reshape(-1)
        n_rows = flat.numel() // self.cfg.d_sae
        top = flat.topk(min(self.cfg.k * n_rows, flat.numel()), sorted=False)
        acts = flat.new_zeros(flat.shape).scatter(0, top.indices, top.values)
        acts = self.hook_sae_acts_post(acts.reshape(pre.shape))
        return Encoded(acts=acts, pre_acts=pre, sae_in=sae_in,
                       extra={"values": top.values, "flat_indices": top.indices})

    def _decode_train(self, enc: Encoded) -> Tensor:
        if not self.training or is_hooked(self.hook_sae_acts_post):
            return self._decode(enc.acts)
        # gather only the kept decoder rows: sort the kept entries by row, one bag per row
        d_sae = self.cfg.d_sae
        order = enc.extra["flat_indices"].argsort()
        flat_idx = enc.extra["flat_indices"][order]
        rows = flat_idx // d_sae
        n_rows = enc.acts.numel() // d_sae
        offsets = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
        out = F.embedding_bag(flat_idx % d_sae, self.W_dec, offsets, mode="sum",
                              per_sample_weights=enc.extra["values"][order])
        return self._finish_decode(out.reshape(*enc.acts.shape[:-1], self.cfg.d_in) + self.b_dec)

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *, dead_mask: Tensor | None,
                    sparsity_coefficient: float | None) -> dict[str, Tensor]:
        return {"aux": auxk_loss(self, enc.pre_acts, enc.sae_in, recon, x, dead_mask,
                                 self.cfg.aux_coefficient)}

    def training_forward(self, x: Tensor, *, dead_mask: Tensor | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        x = self.flatten_heads(x)
        if not (self.training and latents_unhooked(self)):
            out = super().training_forward(x, dead_mask=dead_mask,
                                           sparsity_coefficient=sparsity_coefficient)
            if self.training:
                self.update_threshold(out.acts)
            return out
        d_sae, k = self.cfg.d_sae, self.cfg.k

        def select(pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            top_values, top_indices = batch_topk(torch.relu(pre), k * pre.shape[0])
            flat = top_indices.sort()
            return flat.values // d_sae, flat.values % d_sae, top_values[flat.indices]

        out = sparse_step(self, x, dead_mask, select)
        self.update_threshold(out.sparse[2].detach())
        return out

    @torch.no_grad()
    def update_threshold(self, acts: Tensor) -> None:
        """θ ← (1 − lr)·θ + lr·(smallest positive activation kept in this batch); the first
        update (θ still 0) takes the batch's value outright, so a short run does not leave θ
        far below its estimate (an EMA from 0 needs ~1/lr steps to get there)."""
        positive = acts[acts > 0]
        if positive.numel():
            lr = 1.0 if bool(self.threshold == 0) else self.cfg.batchtopk_threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * positive.min().to(self.threshold.dtype))

    def fold_decoder_norms(self) -> None:
        raise ValueError("fold_decoder_norms would change which latents are in the batch top "
                         "k of a BatchTopK SAE; use normalize_decoder() during training instead")

    def fold_activation_scale(self, factor: float | None = None) -> None:
        super().fold_activation_scale(factor)   # pre-activations keep their scale: θ stays

    def saelens_state_dict(self) -> dict[str, Tensor]:
        state = super().saelens_state_dict()
        state["threshold"] = state["threshold"].expand(self.cfg.d_sae).clone()
        return state

    def _from_saelens_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        state = dict(state)
        theta = state["threshold"]
        if not torch.all(theta == theta[0]):
            raise ValueError("this folder's per-latent thresholds differ, so it is a JumpReLU "
                             "SAE, not a BatchTopK one; load it with architecture 'jumprelu'")
        state["threshold"] = theta[0].clone()
        return state
