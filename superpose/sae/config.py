"""Configuration of one sparse autoencoder (SAE): its shape, architecture and loss coefficients.

One config serves every architecture, so the options only some architectures use are declared
in one table, `ARCHITECTURE_OPTIONS`: each architecture lists its own options with their
defaults. Such an option left at None takes its architecture's default; given to an
architecture that does not use it, it is refused (a TopK `k` on a ReLU SAE would otherwise be
saved, shown and silently ignored). The architecture name is saved with the weights, so a
folder always knows which class rebuilds it (`superpose.sae.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from superpose import _validate as v

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64,
                                  "bfloat16": torch.bfloat16, "float16": torch.float16}
RESHAPES = ("none", "hook_z")


def _half_d_in(cfg: SAEConfig) -> int:
    return max(1, cfg.d_in // 2)


_AUXK: dict[str, Any] = {"k": 32, "k_aux": _half_d_in, "aux_coefficient": 1 / 32}

# architecture -> {its own option: default}; a callable default is computed from the config.
ARCHITECTURE_OPTIONS: dict[str, dict[str, Any | Callable[[SAEConfig], Any]]] = {
    "relu": {"sparsity_coefficient": 1.0},
    "topk": {**_AUXK},
    "batchtopk": {**_AUXK, "batchtopk_threshold_lr": 0.01},
    "jumprelu": {"sparsity_coefficient": 1.0, "jumprelu_threshold_init": 0.001,
                 "jumprelu_bandwidth": 0.001},
    "gated": {"sparsity_coefficient": 1.0},
}
ARCHITECTURE_NAMES = tuple(ARCHITECTURE_OPTIONS)


def users_of(option: str) -> list[str]:
    """The architectures that use `option` (e.g. "k" -> ["topk", "batchtopk"])."""
    return [a for a, opts in ARCHITECTURE_OPTIONS.items() if option in opts]


def _or_none(rule: v.Rule) -> v.Rule:
    return rule | v.Const(None)


@dataclass(frozen=True, kw_only=True)
class SAEConfig:
    """One SAE: x ∈ R^d_in → acts ∈ R^d_sae (sparse) → recon ∈ R^d_in.

    architecture: "relu" | "topk" | "batchtopk" | "jumprelu" | "gated" (see the registry).

    Options of some architectures only (None: the architecture's default; refused elsewhere):
    k (topk, batchtopk; 32): active latents per input for "topk"; the batch average for
      "batchtopk" (Bussmann et al. 2024).
    k_aux (topk, batchtopk; d_in // 2, the paper's heuristic): dead latents that the AuxK loss
      (Gao et al. 2024, App. B.1) lets reconstruct the residual; aux_coefficient (1/32, the
      paper's α) is its weight. Gated's auxiliary reconstruction has weight 1, as in its paper.
    sparsity_coefficient (relu, jumprelu, gated; 1.0): the L1 weight for "relu" (on
      acts·‖W_dec row‖, Anthropic's April 2024 update) and "gated" (on the gate path), the L0
      weight for "jumprelu".
    jumprelu_threshold_init, jumprelu_bandwidth (jumprelu; 0.001 each, as in Rajamanoharan et
      al. 2024): the initial threshold θ and the width ε of the rectangle kernel of the
      straight-through estimator.
    batchtopk_threshold_lr (batchtopk; 0.01): the EMA rate of the inference threshold (the
      running minimum positive activation kept in training, used in eval mode).

    Options of every architecture:
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
    k: int | None = None
    k_aux: int | None = None
    aux_coefficient: float | None = None
    sparsity_coefficient: float | None = None
    jumprelu_threshold_init: float | None = None
    jumprelu_bandwidth: float | None = None
    batchtopk_threshold_lr: float | None = None
    decoder_init_norm: float = 0.1
    apply_b_dec_to_input: bool = True
    activation_scale: float = 1.0
    dtype: str = "float32"
    reshape_activations: str = "none"
    hook_name: str | None = None
    model_name: str | None = None
    seed: int = 0

    # Every field's rule, once (checked by `_validate.check_fields`, first thing in
    # `__post_init__`); which options apply to which architecture, k against d_sae and hook_z
    # against hook_name follow it there.
    _constraints: ClassVar[dict[str, v.Rule]] = {
        "d_in": v.Int(1),
        "d_sae": v.Int(1),
        "architecture": v.Choice(*ARCHITECTURE_NAMES),
        "k": _or_none(v.Int(1)),
        "k_aux": _or_none(v.Int(1)),
        "aux_coefficient": _or_none(v.Float(ge=0)),
        "sparsity_coefficient": _or_none(v.Float(ge=0)),
        "jumprelu_threshold_init": _or_none(v.Float(gt=0)),
        "jumprelu_bandwidth": _or_none(v.Float(gt=0)),
        "batchtopk_threshold_lr": _or_none(v.Float(gt=0, le=1)),
        "decoder_init_norm": v.Float(gt=0),
        "apply_b_dec_to_input": v.Bool(),
        "activation_scale": v.Float(gt=0),
        "dtype": v.Choice(*DTYPES),
        "reshape_activations": v.Choice(*RESHAPES),
        "hook_name": v.Str() | v.Const(None),
        "model_name": v.Str() | v.Const(None),
        "seed": v.Int(0),
    }

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        own = ARCHITECTURE_OPTIONS[self.architecture]
        for name in OWNED_OPTIONS:
            value = getattr(self, name)
            if name in own:
                if value is None:
                    default = own[name]
                    object.__setattr__(self, name, default(self) if callable(default)
                                       else default)
            elif value is not None:
                raise ValueError(
                    f"{name}={value!r} does not apply to architecture {self.architecture!r} "
                    f"(only {users_of(name)} use {name}); leave {name} out (None) or choose "
                    f"one of those architectures")
        if self.k is not None and self.k > self.d_sae:
            raise ValueError(f"k ({self.k}) must not exceed d_sae ({self.d_sae}); choose "
                             f"k <= {self.d_sae} or a wider SAE")
        if self.reshape_activations == "hook_z" and self.hook_name is not None \
                and not self.hook_name.endswith("_z"):
            raise ValueError(f"reshape_activations='hook_z' is for attention z hooks (names "
                             f"ending in '_z', e.g. 'blocks.0.attn.hook_z'), but hook_name is "
                             f"{self.hook_name!r}; use reshape_activations='none' there")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def replace(self, **overrides: Any) -> SAEConfig:
        """A copy with some fields changed; unknown field names are rejected. Changing the
        architecture keeps the other options, so the old architecture's must be set to None
        (e.g. `.replace(architecture="relu", k=None, k_aux=None, aux_coefficient=None)`)."""
        return v.replace_config(self, overrides)


# the options some architectures own (refused by the others), in field order
OWNED_OPTIONS = tuple(f.name for f in fields(SAEConfig) if users_of(f.name))


def own_options(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (SAEConfig fields) without the options its architecture does not use: configs
    saved before the refusal existed hold every option, those of other architectures unused."""
    own = ARCHITECTURE_OPTIONS.get(data.get("architecture", "relu"), {})
    return {k: x for k, x in data.items() if k not in OWNED_OPTIONS or k in own}

