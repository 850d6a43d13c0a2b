"""Configuration of one sparse autoencoder (SAE): its shape, architecture and loss coefficients.

The architecture name is the key into `superpose.sae.registry.ARCHITECTURES`; it is saved with
the weights, so a folder always knows which class rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from superpose import _validate as v

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64,
                                  "bfloat16": torch.bfloat16, "float16": torch.float16}
RESHAPES = ("none", "hook_z")


@dataclass(frozen=True)
class SAEConfig:
    """One SAE: x ∈ R^d_in → acts ∈ R^d_sae (sparse) → recon ∈ R^d_in.

    architecture: "relu" | "topk" | "batchtopk" | "jumprelu" | "gated" (see the registry).
    k: active latents per input for "topk"; the batch average for "batchtopk" (Bussmann et al.
      2024). Ignored by the other architectures, so its default only has to suit TopK.
    k_aux: dead latents that the AuxK loss (Gao et al. 2024, App. B.1) lets reconstruct the
      residual; None means d_in // 2, the paper's heuristic. aux_coefficient is its weight
      (the paper's α = 1/32). Gated's auxiliary reconstruction has weight 1, as in its paper.
    sparsity_coefficient: the L1 weight for "relu" (on acts·‖W_dec row‖, Anthropic's April 2024
      update) and "gated" (on the gate path), the L0 weight for "jumprelu"; unused by TopK.
    jumprelu_threshold_init, jumprelu_bandwidth: the initial threshold θ and the width ε of the
      rectangle kernel of the straight-through estimator (Rajamanoharan et al. 2024: 0.001 each).
    batchtopk_threshold_lr: the EMA rate of the inference threshold of "batchtopk" (the running
      minimum positive activation kept in training, used in eval mode).
    decoder_init_norm: decoder rows start as random directions of this norm and W_enc = W_decᵀ
      (Anthropic's April 2024 initialisation; Gao et al. use the same tied start).
    apply_b_dec_to_input: subtract b_dec from the input before encoding (SAELens's default).
    activation_scale: inputs are multiplied by this before encoding and the reconstruction is
      divided by it, so an SAE trained on normalised activations takes raw ones. `save` folds it
      into the weights (SAELens's "fold_activation_norm_scaling_factor"), so files hold 1.0.
    reshape_activations: "none" | "hook_z" (SAELens's key). "hook_z": the SAE also takes an
      attention layer's z as [..., n_heads, d_head] (n_heads·d_head = d_in) and flattens it, and
      `forward` returns that shape (SAELens 6.x sae.py `turn_on_forward_pass_hook_z_reshaping`);
      see `SAE.flatten_heads`. SAELens allows it only at hooks whose name ends in "_z".
    hook_name, model_name: where the activations came from (metadata, saved with the SAE).
    seed: the seed of the weight initialisation.
    """

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int = 32
    k_aux: int | None = None
    aux_coefficient: float = 1 / 32
    sparsity_coefficient: float = 1.0
    jumprelu_threshold_init: float = 0.001
    jumprelu_bandwidth: float = 0.001
    batchtopk_threshold_lr: float = 0.01
    decoder_init_norm: float = 0.1
    apply_b_dec_to_input: bool = True
    activation_scale: float = 1.0
    dtype: str = "float32"
    reshape_activations: str = "none"
    hook_name: str | None = None
    model_name: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from superpose.sae.registry import ARCHITECTURES  # the registry imports this module

        v.choice("architecture", self.architecture, list(ARCHITECTURES))
        v.positive_int("d_in", self.d_in)
        v.positive_int("d_sae", self.d_sae)
        v.positive_int("k", self.k)
        if self.architecture in ("topk", "batchtopk") and self.k > self.d_sae:
            raise ValueError(f"k ({self.k}) must not exceed d_sae ({self.d_sae}); choose "
                             f"k <= {self.d_sae} or a wider SAE")
        if self.k_aux is not None:
            v.positive_int("k_aux", self.k_aux)
        v.non_negative_float("aux_coefficient", self.aux_coefficient)
        v.non_negative_float("sparsity_coefficient", self.sparsity_coefficient)
        v.positive_float("jumprelu_threshold_init", self.jumprelu_threshold_init)
        v.positive_float("jumprelu_bandwidth", self.jumprelu_bandwidth)
        v.positive_float("batchtopk_threshold_lr", self.batchtopk_threshold_lr)
        if not self.batchtopk_threshold_lr <= 1:
            raise ValueError("batchtopk_threshold_lr must be in (0, 1], got "
                             f"{self.batchtopk_threshold_lr!r}")
        v.positive_float("decoder_init_norm", self.decoder_init_norm)
        v.positive_float("activation_scale", self.activation_scale)
        if not isinstance(self.apply_b_dec_to_input, bool):
            raise ValueError("apply_b_dec_to_input must be True or False, got "
                             f"{self.apply_b_dec_to_input!r}")
        v.choice("dtype", self.dtype, list(DTYPES))
        v.choice("reshape_activations", self.reshape_activations, list(RESHAPES))
        for name in ("hook_name", "model_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, got {value!r}")
        if self.reshape_activations == "hook_z" and self.hook_name is not None \
                and not self.hook_name.endswith("_z"):
            raise ValueError(f"reshape_activations='hook_z' is for attention z hooks (names "
                             f"ending in '_z', e.g. 'blocks.0.attn.hook_z'), but hook_name is "
                             f"{self.hook_name!r}; use reshape_activations='none' there")
        v.non_negative_int("seed", self.seed)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def effective_k_aux(self) -> int:
        return self.k_aux if self.k_aux is not None else max(1, self.d_in // 2)

    def replace(self, **overrides: Any) -> SAEConfig:
        """A copy with some fields changed; unknown field names are rejected."""
        return v.replace_config(self, overrides)
