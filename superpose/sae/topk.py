"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): keep the k largest
pre-activations per input (ReLU'd, as in SAELens), so sparsity needs no penalty. Dead latents
are revived by the AuxK loss: the top k_aux *dead* latents reconstruct the residual x − x̂
(ê = W_dec z without b_dec), weighted by α = aux_coefficient (App. B.1).

Only k of d_sae latents per input carry a gradient, so training never builds a dense
[batch, d_sae] tensor beyond the encoder's forward product and the top-k selection: the kept
values get their encoder gradients by gathers (`superpose.sae.sparse.pre_at`), the decoder
reads only the k chosen rows (embedding_bag), AuxK selects among the dead columns only, and
the dense latents are built only if someone asks for `TrainStepOutput.acts`. A hook on
hook_sae_acts_pre or hook_sae_acts_post switches to the plain dense path (the hook sees and
may change the dense tensor). Both paths give the same numbers (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from superpose.hooks import is_hooked
from superpose.sae.base import SAE, Encoded, TrainStepOutput, dense_from_sparse
from superpose.sae.sparse import decode_rows, pre_at


def check_dead_mask(sae: SAE, dead_mask: Tensor | None) -> None:
    if dead_mask is not None and (dead_mask.shape != (sae.cfg.d_sae,)
                                  or dead_mask.dtype != torch.bool):
        raise ValueError(f"dead_mask must be a bool tensor of shape [d_sae={sae.cfg.d_sae}], "
                         f"got {dead_mask.dtype} {list(dead_mask.shape)}")


def auxk_loss(sae: SAE, pre: Tensor, sae_in: Tensor, recon: Tensor, x: Tensor,
              dead_mask: Tensor | None, coefficient: float) -> Tensor:
    """α·‖e − ê‖² (summed over d_in, mean over the batch) with ê from the top-k_aux dead latents.

    `pre` are the pre-activations. If they carry autograd history (the dense path) the kept
    values are gathered from them; else (the fast path) `pre_at` supplies sparse gradients."""
    check_dead_mask(sae, dead_mask)
    zero = recon.new_zeros(())
    if dead_mask is None or coefficient == 0:
        return zero
    dead_idx = dead_mask.to(pre.device).nonzero().flatten()
    if dead_idx.numel() == 0:
        return zero
    d_sae, d_in = sae.cfg.d_sae, sae.cfg.d_in
    k_aux = min(sae.cfg.k_aux, dead_idx.numel())
    flat = pre.reshape(-1, d_sae)
    n = flat.shape[0]
    with torch.no_grad():
        top = flat.detach().index_select(1, dead_idx).topk(k_aux, dim=-1, sorted=False)
    cols = dead_idx[top.indices]                                   # [n, k_aux]
    if flat.requires_grad:
        values = torch.relu(flat.gather(1, cols))
    else:
        rows = torch.arange(n, device=cols.device).repeat_interleave(k_aux)
        values = torch.relu(pre_at(sae_in.reshape(n, d_in), sae.W_enc, sae.b_enc, rows,
                                   cols.reshape(-1), top.values.reshape(-1))).reshape(n, k_aux)
    residual = (x - recon).detach().reshape(n, d_in)
    e_hat = F.embedding_bag(cols, sae.W_dec, mode="sum", per_sample_weights=values)
    if sae.cfg.activation_scale != 1.0:
        e_hat = e_hat / sae.cfg.activation_scale
    return coefficient * (e_hat - residual).pow(2).sum(-1).mean()


def latents_unhooked(sae: SAE) -> bool:
    """Whether a training step may skip the dense latents: autograd is on and no hook on
    hook_sae_acts_pre / hook_sae_acts_post wants to see (or change) them."""
    return (torch.is_grad_enabled() and not is_hooked(sae.hook_sae_acts_pre)
            and not is_hooked(sae.hook_sae_acts_post))


def sparse_step(sae: SAE, x: Tensor, dead_mask: Tensor | None,
                select: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]) -> TrainStepOutput:
    """The training step TopK and BatchTopK share, their kept entries chosen by
    `select(pre) -> (rows, cols, values)` on the detached pre-activations [n, d_sae]: only
    those entries get encoder gradients (by gathers), only their decoder rows are read, and
    the AuxK loss comes from the dead latents."""
    check_dead_mask(sae, dead_mask)
    sae_in = sae.process_input(x).reshape(-1, sae.cfg.d_in)
    n = sae_in.shape[0]
    with torch.no_grad():
        pre = torch.addmm(sae.b_enc, sae_in, sae.W_enc)
        rows, cols, kept = select(pre)
    values = torch.relu(pre_at(sae_in, sae.W_enc, sae.b_enc, rows, cols, kept))
    recon = decode_rows(values, rows, cols, sae.W_dec, n) + sae.b_dec
    return sae._fast_step_output(
        x, recon, pre, lambda r, t: {"aux": auxk_loss(sae, pre, sae_in, r, t, dead_mask,
                                                      sae.cfg.aux_coefficient)},
        sparse=(rows, cols, values))


class TopKSAE(SAE):
    architecture = "topk"

    def _select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        top = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.relu(top.values), top.indices

    def _encode(self, x: Tensor) -> Encoded:
        pre, sae_in = self._linear(x, self.b_enc)
        pre = self.hook_sae_acts_pre(pre)
        values, indices = self._select(pre)
        acts = self.hook_sae_acts_post(dense_from_sparse(values, indices, self.cfg.d_sae))
        return Encoded(acts=acts, pre_acts=pre, sae_in=sae_in,
                       extra={"values": values, "indices": indices})

    def _decode_train(self, enc: Encoded) -> Tensor:
        if is_hooked(self.hook_sae_acts_post):       # a hook may have changed the dense latents
            return self._decode(enc.acts)
        return self._decode_sparse(enc.extra["values"], enc.extra["indices"])

    def forward(self, x: Tensor) -> Tensor:
        if is_hooked(self.hook_sae_acts_post):
            return super().forward(x)
        self._check_input(x, "forward")
        pre, _ = self._linear(x, self.b_enc)
        values, indices = self._select(self.hook_sae_acts_pre(pre))
        return self.hook_sae_output(self._like_input(self._decode_sparse(values, indices), x))

    def _fast_path(self) -> bool:
        return latents_unhooked(self)

    def training_forward(self, x: Tensor, *, dead_mask: Tensor | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        x = self.flatten_heads(x)
        if not self._fast_path():
            return super().training_forward(x, dead_mask=dead_mask,
                                            sparsity_coefficient=sparsity_coefficient)
        k = self.cfg.k

        def select(pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            top = pre.topk(k, dim=-1, sorted=False)
            rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(k)
            return rows, top.indices.reshape(-1), top.values.reshape(-1)

        return sparse_step(self, x, dead_mask, select)

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *, dead_mask: Tensor | None,
                    sparsity_coefficient: float | None) -> dict[str, Tensor]:
        return {"aux": auxk_loss(self, enc.pre_acts, enc.sae_in, recon, x, dead_mask,
                                 self.cfg.aux_coefficient)}

    def fold_decoder_norms(self) -> None:
        raise ValueError("fold_decoder_norms would change which latents are in the top k of a "
                         "TopK SAE; use normalize_decoder() during training instead")
