"""Save and load SAEs in SAELens's folder format, so either library reads the other's files.

A folder holds
  cfg.json                  SAELens keys: architecture ("standard" | "topk" | "jumprelu" |
                            "gated"), d_in, d_sae, dtype, device, apply_b_dec_to_input,
                            normalize_activations ("none": scales are folded in before saving),
                            reshape_activations, hook_name, model_name, k (TopK), and
                            "metadata" {hook_name, model_name, sae_lens_version}; plus
                            "superpose": our own full SAEConfig (SAELens keeps only the keys
                            its config classes know).
  sae_weights.safetensors   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
                            threshold [d_sae] (JumpReLU; BatchTopK as JumpReLU), and b_gate,
                            r_mag, b_mag instead of b_enc for Gated.
The layout follows SAELens 6.x `SAE.save_model` / `load_from_disk` (sae_lens/saes/sae.py,
sae_lens/loading/pretrained_sae_loaders.py). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from superpose import _validate as v
from superpose import runs
from superpose.sae.base import SAE
from superpose.sae.config import SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = 1
# SAELens reads a cfg.json without metadata.sae_lens_version as a pre-6.0 file and rewrites it
# (handle_pre_6_0_config, which fails on hook_name None); ours has the 6.x layout, so say so.
SAELENS_FORMAT = "6.0.0"


def to_saelens_config(sae: SAE) -> dict[str, Any]:
    """The cfg.json dict of `sae` (whose activation scale must already be folded in)."""
    cfg = sae.cfg
    out: dict[str, Any] = {
        "architecture": sae.saelens_architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": str(sae.device),
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "hook_name": cfg.hook_name,
        "model_name": cfg.model_name,
        "metadata": {"hook_name": cfg.hook_name, "model_name": cfg.model_name,
                     "sae_lens_version": SAELENS_FORMAT},
    }
    if sae.saelens_architecture == "topk":
        out["k"] = cfg.k
    out["superpose"] = {"format_version": FORMAT_VERSION, **runs.to_jsonable(cfg)}
    return out


def save(sae: SAE, path: str | Path) -> Path:
    """Write `sae` into the folder `path` (made if missing).

    Both files are first written to temporary names in that folder and only then renamed over
    the old ones, so a failed save leaves a previously saved SAE there intact. A non-unit
    `cfg.activation_scale` is folded into the saved weights (the SAE itself is not changed).
    """
    from safetensors.torch import save_file

    if not isinstance(sae, SAE):
        raise TypeError(f"save takes an SAE, got {type(sae).__name__}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; an SAE is saved as a folder")
    if sae.cfg.activation_scale != 1.0:
        sae = sae.copy()
        sae.fold_activation_scale()
    tensors = {k: t.detach().cpu().contiguous() for k, t in sae.saelens_state_dict().items()}
    text = json.dumps(to_saelens_config(sae), indent=2) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    tmps: list[Path] = []
    try:
        for suffix in (WEIGHTS_FILE, CFG_FILE):
            fd, name = tempfile.mkstemp(dir=folder, prefix=f".{suffix}.", suffix=".tmp")
            os.close(fd)
            tmps.append(Path(name))
        save_file(tensors, str(tmps[0]))
        tmps[1].write_text(text)
        os.replace(tmps[0], folder / WEIGHTS_FILE)
        os.replace(tmps[1], folder / CFG_FILE)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    return folder


def config_from_saelens(data: dict[str, Any], *, source: str = CFG_FILE) -> SAEConfig:
    """Our SAEConfig from a cfg.json dict: ours if it carries one, else SAELens's keys."""
    from superpose.sae.registry import FROM_SAELENS

    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(data).__name__}")
    if isinstance(data.get("superpose"), dict):
        ours = {k: x for k, x in data["superpose"].items() if k != "format_version"}
        return v.config_from_dict(SAEConfig, ours)
    arch = data.get("architecture", "standard")
    if arch not in FROM_SAELENS:
        hint = v.close_matches(str(arch), list(FROM_SAELENS), 1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"{source}: unknown SAE architecture {arch!r}; this loader knows "
                         f"{list(FROM_SAELENS)}{extra}")
    for key in ("d_in", "d_sae"):
        if key not in data:
            raise ValueError(f"{source} has no {key!r}; it is not an SAE config")
    norm = data.get("normalize_activations", "none")
    if norm not in ("none", None, False):
        raise ValueError(f"{source}: normalize_activations={norm!r} is not supported; fold the "
                         "normalisation into the weights first (SAELens: "
                         "fold_activation_norm_scaling_factor)")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    kw: dict[str, Any] = {
        "architecture": FROM_SAELENS[arch], "d_in": data["d_in"], "d_sae": data["d_sae"],
        "apply_b_dec_to_input": data.get("apply_b_dec_to_input", True),
        "dtype": data.get("dtype", "float32"),
        "hook_name": data.get("hook_name", meta.get("hook_name")),
        "model_name": data.get("model_name", meta.get("model_name")),
    }
    k = data.get("k", (data.get("activation_fn_kwargs") or {}).get("k"))
    if k is not None:
        kw["k"] = int(k)
    return SAEConfig(**kw)


def load(path: str | Path, *, device: torch.device | str | None = None) -> SAE:
    """Load an SAE folder written here or by SAELens; a folder that is not an SAE, a cfg.json
    that does not match its weights, an unknown architecture or a corrupt file fail clearly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from superpose.sae.registry import create

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; an SAE folder holds {CFG_FILE} and "
                                f"{WEIGHTS_FILE}")
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}; it is not an SAE folder "
                                    f"(expected {CFG_FILE} and {WEIGHTS_FILE})")
    cfg = config_from_saelens(runs.read_json(folder / CFG_FILE), source=str(folder / CFG_FILE))
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{folder / WEIGHTS_FILE} is corrupt and cannot be read ({e})") from None
    sae = create(cfg, device="cpu")
    sae.load_saelens_state_dict(state, source=f"{folder}: {WEIGHTS_FILE}")
    return sae.to(v.resolve_device(device))
