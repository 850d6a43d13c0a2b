"""The architectures, keyed by the name saved in every config. Registration is this dict
literal, nothing else: importing a module never adds or changes an entry."""

from __future__ import annotations

import torch

from superpose import _validate as v
from superpose.sae.base import SAE
from superpose.sae.batchtopk import BatchTopKSAE
from superpose.sae.config import SAEConfig
from superpose.sae.gated import GatedSAE
from superpose.sae.jumprelu import JumpReLUSAE
from superpose.sae.relu import ReLUSAE
from superpose.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "gated": GatedSAE,
}

# SAELens 6.x's cfg.json "architecture" -> ours (SAELens registers its classes in
# sae_lens/__init__.py: register_sae_class for inference, register_sae_training_class).
#   "batchtopk", "matryoshka_batchtopk": written only by `save_model` of a BatchTopKTrainingSAE /
#     MatryoshkaBatchTopKTrainingSAE (TrainingSAE.load_from_disk reads them; SAE.load_from_disk
#     cannot). Both encode alike (batch top-k of the ReLU'd pre-activations; Matryoshka only adds
#     nested losses in training), so both load as our BatchTopK: that batch top-k in training
#     mode, and in eval mode the JumpReLU with θ = topk_threshold that their
#     `save_inference_model` writes. Our BatchTopK is saved that way too, as "jumprelu" (the
#     folder's own "superpose" config says batchtopk, so it loads back as BatchTopK).
FROM_SAELENS: dict[str, str] = {
    "standard": "relu",
    "topk": "topk",
    "batchtopk": "batchtopk",
    "matryoshka_batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
    "gated": "gated",
}

# SAELens architectures with no counterpart here: loading refuses them, saying why.
REFUSED_SAELENS: dict[str, str] = {
    "abstopk": "it keeps the k pre-activations of largest magnitude with their sign (no ReLU)",
    "transcoder": "a transcoder reconstructs another hook's activation (d_out), not its input",
    "skip_transcoder": "a transcoder reconstructs another hook's activation (d_out, W_skip)",
    "jumprelu_transcoder": "a transcoder reconstructs another hook's activation (d_out)",
    "jumprelu_skip_transcoder": "a transcoder reconstructs another hook's activation (d_out, "
                                "W_skip)",
    "temporal": "it attends over earlier positions (TemporalSAE), so it is not a per-position "
                "function",
    "matching_pursuit": "it encodes by iterative matching pursuit, not by one linear map and "
                        "an activation",
}


def get(name: str) -> type[SAE]:
    """The class of architecture `name`; an unknown name fails with the valid list."""
    v.choice("architecture", name, list(ARCHITECTURES))
    return ARCHITECTURES[name]


def create(cfg: SAEConfig, *, device: str | torch.device | None = None) -> SAE:
    """A freshly initialised SAE of `cfg.architecture` (seeded by `cfg.seed`)."""
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"create takes an SAEConfig, got {type(cfg).__name__}")
    return get(cfg.architecture)(cfg, device=device)
