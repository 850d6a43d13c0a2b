"""The architectures, keyed by the name saved in every config, and the two ways to get an SAE of
one: `create` (freshly initialised) and `load` (from a folder). A `CrosscoderConfig` makes a
`Crosscoder` (a BatchTopK SAE over paired models; `superpose.sae.crosscoder`), and `load` reads
its folder too. Registration is the dict literal below, nothing else: importing a module never
adds or changes an entry. Which options each architecture takes is the config's table
(`config.ARCHITECTURE_OPTIONS`), so a config is checked without importing any SAE class."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from superpose import _validate as v
from superpose.sae import crosscoder, io
from superpose.sae.base import SAE
from superpose.sae.batchtopk import BatchTopKSAE
from superpose.sae.config import SAEConfig
from superpose.sae.crosscoder import Crosscoder, CrosscoderConfig, is_crosscoder_folder
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


def get(name: str) -> type[SAE]:
    """The class of architecture `name`; an unknown name fails with the valid list."""
    v.choice("architecture", name, list(ARCHITECTURES))
    return ARCHITECTURES[name]


def create(cfg: SAEConfig | CrosscoderConfig, *, device: str | torch.device | None = None
           ) -> SAE:
    """A freshly initialised SAE of `cfg.architecture`, or a `Crosscoder` for a
    `CrosscoderConfig` (seeded by `cfg.seed`)."""
    if isinstance(cfg, CrosscoderConfig):
        return Crosscoder(cfg, device=device)
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"create takes an SAEConfig or a CrosscoderConfig, got "
                        f"{type(cfg).__name__}")
    return get(cfg.architecture)(cfg, device=device)


def load(path: str | Path, *, device: torch.device | str | None = None) -> SAE:
    """Load an SAE folder written here or by SAELens (see `superpose.sae.io`); a cfg.json that
    does not match its weights fails with both lists of tensors. The SAE comes back in
    training mode (for BatchTopK that is the batch top-k; `.eval()` switches it to its
    threshold). A crosscoder's folder gives a `Crosscoder`."""
    cfg_path = Path(path) / io.CFG_FILE
    if cfg_path.is_file():
        try:
            data = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            data = None                  # io.read_folder says what is wrong with it
        if is_crosscoder_folder(data):
            return crosscoder.load(path, device=device)
    info, state = io.read_folder(path)
    sae = create(info.cfg, device="cpu")
    sae.load_saelens_state_dict(state, source=f"{Path(path)}: {io.WEIGHTS_FILE}")
    return sae.to(v.resolve_device(device))


def save(sae: SAE, path: str | Path) -> Path:
    """`sae.save(path)`: an SAELens-format folder, written atomically."""
    if not isinstance(sae, SAE):
        raise TypeError(f"save takes an SAE, got {type(sae).__name__}")
    return sae.save(path)
