"""SAELens's folder format, so either library reads the other's files: plain functions between
a folder and (SAEConfig, tensors). They need no SAE class: `SAE.save` and `registry.load` put
the two halves together, so this module sits below the architectures, not above them.

A folder holds
  cfg.json                  SAELens keys: architecture ("standard" | "topk" | "jumprelu" |
                            "gated"), d_in, d_sae, dtype, device, apply_b_dec_to_input,
                            normalize_activations ("none": scales are folded in before saving),
                            reshape_activations ("none" | "hook_z"), hook_name, model_name, k and
                            rescale_acts_by_decoder_norm=false (TopK), a few training
                            hyper-parameters SAELens's training configs share with ours, and
                            "metadata" {hook_name, model_name, sae_lens_version}; plus
                            "superpose": our own full SAEConfig with its format_version
                            (SAELens keeps only the keys its config classes know; see
                            FORMAT_VERSION for what each version holds).
  sae_weights.safetensors   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
                            threshold [d_sae] (JumpReLU; BatchTopK as JumpReLU), and b_gate,
                            r_mag, b_mag instead of b_enc for Gated.
Integrity, in places SAELens ignores: cfg.json's top-level "superpose_sha256" holds the
SHA-256 of sae_weights.safetensors, and that file's safetensors metadata holds
"superpose_architecture" (ours). Loading verifies both where present (a folder SAELens wrote
has neither): weights changed after they were written, or weights of another architecture
than cfg.json says (ReLU and TopK tensors have the same names and shapes), are refused. Every
failure reading a folder is one ValueError naming the file and what is wrong: unreadable or
binary JSON, keys of the wrong type, SAELens keys that disagree with our "superpose" block,
truncated or garbled tensors, non-float or NaN/inf weights.
The layout follows SAELens 6.x `SAE.save_model` / `TrainingSAE.save_inference_model` /
`load_from_disk` (sae_lens/saes/sae.py, sae_lens/loading/pretrained_sae_loaders.py). Loading
never unpickles anything.

What a folder SAELens wrote computes, and how it loads here (the rule: the loaded SAE computes
the function SAELens loads from that folder, encode, decode and forward alike, or loading
refuses with a ValueError naming the field and its value; never a different function):
  standard   ReLU(x̃ W_enc + b_enc) -> ReLUSAE.
  jumprelu   ReLU(z)·1[z > θ] (SAE) or z·1[z > θ] (JumpReLUTrainingSAE): equal for θ >= 0, the
             only thresholds accepted (JumpReLUSAE keeps log θ). Older training checkpoints'
             log_threshold is read as θ = exp(log_threshold), as SAELens's training loader does.
  gated      -> GatedSAE, same tensors.
  topk       TopK(z) with z = x̃ W_enc + b_enc, decoded by acts @ W_dec + b_dec. With
             rescale_acts_by_decoder_norm=true (TopKTrainingSAEConfig's default, so `save_model`
             of a TopKTrainingSAE writes it with unnormalised decoder rows) SAELens computes
             acts = TopK(z·n), n = ‖W_dec row‖, and decodes (acts / n) @ W_dec + b_dec. Loading
             folds n into the weights: W_enc columns · n, b_enc · n, W_dec rows / n. The folded
             SAE's pre-activations are z·n, so encode returns exactly SAELens's acts (the top k
             of z·n, which is what its encode returns too) and decode/forward match; only
             hook_sae_acts_pre differs (SAELens fires it on z before the rescale, ours on z·n).
             This is SAELens's own `save_inference_model` fold (topk_sae.py `_fold_norm_topk`).
             A folder without the key reads false, as SAE.load_from_disk does.
  batchtopk, matryoshka_batchtopk (training checkpoints; TrainingSAE.load_from_disk only):
             batch top-k of ReLU(z·n or z) over all the batch's entries, k·batch of them, with
             rescale_acts_by_decoder_norm folded as for topk; the scalar topk_threshold (float64,
             in units of the rescaled z) becomes our BatchTopK's θ, used in eval mode exactly as
             the JumpReLU their `save_inference_model` writes. k must be a whole number.
  hook_z     reshape_activations="hook_z" is kept (see `SAE.flatten_heads`).
Refused: the architectures in `REFUSED_SAELENS`; normalize_activations other than
"none"; reshape_activations other than "none"/"hook_z"; a non-integer k; a negative JumpReLU
threshold; a decoder row of norm 0 under rescale_acts_by_decoder_norm; a finetuning
scaling_factor other than 1; pre-6.0 configs whose activation_fn is neither relu nor topk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from superpose import _validate as v
from superpose import runs
from superpose.sae.config import SAEConfig, own_options

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# cfg.json's top-level key {file name: SHA-256}, and the weights' safetensors metadata key
# naming our architecture; SAELens reads neither (unknown keys are dropped, metadata unread).
HASH_KEY = "superpose_sha256"
ARCH_KEY = "superpose_architecture"
# Version of our "superpose" block. 1: every SAEConfig field, the options of other
# architectures included (unused, so reading drops them); 2: those options are null.
FORMAT_VERSION = 2
# SAELens reads a cfg.json without metadata.sae_lens_version as a pre-6.0 file and rewrites it
# (handle_pre_6_0_config, which fails on hook_name None); ours has the 6.x layout, so say so.
SAELENS_FORMAT = "6.0.0"


# Our architecture -> the name SAELens saves in cfg.json. BatchTopK is saved as the JumpReLU
# that SAELens's own `save_inference_model` writes for it (θ in every latent).
TO_SAELENS: dict[str, str] = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "gated": "gated",
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


def to_saelens_config(cfg: SAEConfig, *, device: str = "cpu") -> dict[str, Any]:
    """The cfg.json dict of an SAE with config `cfg` (its activation scale already folded in,
    so `cfg.activation_scale` is 1) whose weights live on `device`.

    Besides the keys every SAELens config has, it writes the keys whose default in SAELens's
    *training* configs would change the function: TopKTrainingSAEConfig reads a missing
    rescale_acts_by_decoder_norm as true, so TopK writes false. Training hyper-parameters that
    mean the same thing in both libraries are written too (for TrainingSAE.load_from_disk)."""
    if cfg.activation_scale != 1.0:
        raise ValueError(f"activation_scale is {cfg.activation_scale}, but a folder holds "
                         "scale 1.0: fold the scale into the weights first "
                         "(SAE.fold_activation_scale, which SAE.save does for you)")
    out: dict[str, Any] = {
        "architecture": TO_SAELENS[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": device,
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": cfg.reshape_activations,
        "hook_name": cfg.hook_name,
        "model_name": cfg.model_name,
        "decoder_init_norm": cfg.decoder_init_norm,
        "metadata": {"hook_name": cfg.hook_name, "model_name": cfg.model_name,
                     "sae_lens_version": SAELENS_FORMAT},
    }
    if cfg.architecture == "topk":
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    elif cfg.architecture in ("relu", "gated"):
        out["l1_coefficient"] = cfg.sparsity_coefficient
    elif cfg.architecture == "jumprelu":
        out.update(jumprelu_init_threshold=cfg.jumprelu_threshold_init,
                   jumprelu_bandwidth=cfg.jumprelu_bandwidth,
                   jumprelu_sparsity_loss_mode="step", l0_coefficient=cfg.sparsity_coefficient)
    out["superpose"] = {"format_version": FORMAT_VERSION, **runs.to_jsonable(cfg)}
    return out


def write_folder(path: str | Path, cfg_json: dict[str, Any], tensors: dict[str, Tensor]
                 ) -> Path:
    """Write cfg.json and sae_weights.safetensors into the folder `path` (made if missing).

    Both files are written in full to temporary names (`runs.atomic_write`) before either is
    renamed into place, the weights' rename last: a failed write (a full disk, a tensor
    safetensors refuses) leaves a previously saved SAE there intact, where renaming each file
    as soon as it is written could pair new weights with an old cfg.json."""
    from safetensors.torch import save_file

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; an SAE is saved as a folder")
    tensors = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
    ours = cfg_json.get("superpose") if isinstance(cfg_json.get("superpose"), dict) else {}
    metadata = {ARCH_KEY: str(ours["architecture"])} if "architecture" in ours else None

    def weights_then_config(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        text = json.dumps({**cfg_json, HASH_KEY: {WEIGHTS_FILE: sha256(tmp)}}, indent=2) + "\n"
        runs.atomic_write(folder / CFG_FILE, lambda p: p.write_text(text))

    runs.atomic_write(folder / WEIGHTS_FILE, weights_then_config)
    return folder


sha256 = runs.sha256_file


@dataclass(frozen=True)
class SAELensFolder:
    """A SAELens cfg.json read: our config, and what loading must do to its tensors."""

    cfg: SAEConfig
    architecture: str                        # SAELens's name
    rescale_acts_by_decoder_norm: bool = False


def _refuse(source: str, field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{source}: {field}={value!r} is not supported: {why}")


_NORMALIZE_WHY = {
    "expected_average_only_in": "the SAE expects inputs multiplied by a scale that is not in "
    "this folder (SAELens's trainer keeps it in its activation scaler and folds it into the "
    "weights only at the end of training); fold it in SAELens "
    "(sae.fold_activation_norm_scaling_factor(scale)) and save again, or load the final "
    "checkpoint",
    "covariance_whitening": "the SAE expects whitened inputs, and the whitening is not in this "
    "folder (SAELens folds it in only at the end of training); fold it in SAELens "
    "(sae.fold_activation_whitening(...)) and save again, or load the final checkpoint",
    "constant_norm_rescale": "SAELens rescales every input to norm sqrt(d_in) and the output "
    "back; these SAEs do not implement that per-input normalisation",
    "layer_norm": "SAELens layer-normalises every input and un-normalises the output; these "
    "SAEs do not implement that per-input normalisation",
}


def _is_pre_6(data: dict[str, Any], meta: dict[str, Any]) -> bool:
    """SAELens's test (loading/pretrained_sae_loaders.py `handle_config_defaulting`): no
    sae_lens_version, or one below 6.0, means the pre-6.0 layout."""
    version = data.get("sae_lens_version") or meta.get("sae_lens_version")
    if not version:
        return True
    try:
        return int(str(version).split(".")[0]) < 6
    except ValueError:
        return False


def _pre_6_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    """SAELens's `handle_pre_6_0_config`, where it changes the function: renamed keys, the
    TopK activation_fn, boolean normalize_activations and the hook_z default."""
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
               "activation_fn_str": "activation_fn"}
    out = {renames.get(k, k): x for k, x in data.items()}
    out.setdefault("architecture", "standard")
    act = out.get("activation_fn")
    k = (out.get("activation_fn_kwargs") or {}).get("k")
    if act == "topk" and k is not None:
        out["architecture"], out["k"] = "topk", k
    elif act not in (None, "relu") and out["architecture"] == "standard":
        raise _refuse(source, "activation_fn", act, "SAELens 6 drops that key and would load a "
                      "ReLU SAE; only 'relu' and 'topk' (with activation_fn_kwargs.k) load here")
    if isinstance(out.get("normalize_activations"), bool):
        out["normalize_activations"] = ("expected_average_only_in"
                                        if out["normalize_activations"] else "none")
    if out.get("reshape_activations") is None:
        out["reshape_activations"] = "hook_z" if "hook_z" in str(out.get("hook_name") or "") \
            else "none"
    return out


def _whole(source: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or value < 1:
        raise _refuse(source, field, value, "these SAEs keep a whole number of latents "
                      "(TopK: k per input; BatchTopK: k·batch per batch), k >= 1")
    return int(value)


# cfg.json keys whose value must have a type (a list or dict where a name belongs would
# otherwise reach a dict lookup as a raw TypeError): key, types, what the message says.
_KEY_TYPES: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("superpose", dict, "an object (superpose's own SAEConfig)"),
    ("architecture", str, "a string such as 'standard' or 'topk'"),
    ("normalize_activations", (str, bool), "a string such as 'none'"),
    ("reshape_activations", str, "'none' or 'hook_z'"),
    ("activation_fn", str, "a string such as 'relu' or 'topk'"),
    ("activation_fn_str", str, "a string such as 'relu' or 'topk'"),
    ("activation_fn_kwargs", dict, "an object such as {\"k\": 32}"),
    (HASH_KEY, dict, f"an object {{\"{WEIGHTS_FILE}\": \"<SHA-256>\"}}"),
)
# The SAELens keys that decide the function SAELens loads: they must say what our block says.
_AGREE = ("architecture", "d_in", "d_sae", "k", "apply_b_dec_to_input", "dtype",
          "normalize_activations", "reshape_activations", "rescale_acts_by_decoder_norm")


def _check_agrees(data: dict[str, Any], cfg: SAEConfig, source: str) -> None:
    """A folder with our "superpose" block loads from that block; SAELens loads the same
    folder from its own keys. Where those say another function (a hand-edited architecture,
    d_sae or k), the folder is refused: the two libraries would load different SAEs."""
    want = to_saelens_config(cfg)
    diff = [f"{key}: {data[key]!r} (SAELens reads this), superpose block says {want.get(key)!r}"
            for key in _AGREE if key in data and data[key] != want.get(key)]
    if diff:
        raise ValueError(f"{source}: its SAELens keys and its \"superpose\" block describe "
                         f"different SAEs ({'; '.join(diff)}); it was edited after it was "
                         "written. Restore the file or save the SAE again")


def _our_config(block: dict[str, Any], source: str) -> SAEConfig:
    """Our SAEConfig from a folder's "superpose" block. Version 1 blocks hold the options of
    every architecture (those of the others were ignored when the SAE was made), so they are
    dropped; from version 2 on, an option its architecture does not use is refused."""
    version = block.get("format_version", 1)
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"{source}: superpose.format_version={version!r}; this superpose "
                         f"reads versions 1 and {FORMAT_VERSION} (a newer superpose wrote it?)")
    ours = {k: x for k, x in block.items() if k != "format_version"}
    if version == 1:
        ours = own_options(ours)
    missing = [k for k in ("d_in", "d_sae") if k not in ours]
    if missing:      # (SAEConfig(**ours) would raise a bare TypeError)
        raise ValueError(f"{source}: its \"superpose\" block has no {missing[0]!r}; the file "
                         "was edited or damaged after it was written")
    try:
        return v.config_from_dict(SAEConfig, ours)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def read_saelens_config(data: dict[str, Any], *, source: str = CFG_FILE) -> SAELensFolder:
    """What a cfg.json describes (see the module docstring): ours if it carries our config,
    else SAELens's keys, checked so that nothing that changes the function is ignored."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(data).__name__}")
    for key, kinds, what in _KEY_TYPES:
        if data.get(key) is not None and not isinstance(data[key], kinds):
            raise ValueError(f"{source}: {key} must be {what}, got {data[key]!r} "
                             f"({type(data[key]).__name__}); the file is corrupt or was "
                             "edited by hand")
    if "superpose" in data:
        cfg = _our_config(data["superpose"], source)
        _check_agrees(data, cfg, source)
        return SAELensFolder(cfg=cfg, architecture=data.get("architecture",
                                                            TO_SAELENS[cfg.architecture]))
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    if _is_pre_6(data, meta):
        data = _pre_6_keys(data, source)
    arch = data.get("architecture", "standard")
    if arch in REFUSED_SAELENS:
        raise _refuse(source, "architecture", arch, REFUSED_SAELENS[arch])
    if arch not in FROM_SAELENS:
        hint = v.close_matches(str(arch), list(FROM_SAELENS), 1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"{source}: unknown SAE architecture {arch!r}; this loader knows "
                         f"{list(FROM_SAELENS)}{extra}")
    for key in ("d_in", "d_sae"):
        if key not in data:
            raise ValueError(f"{source} has no {key!r}; it is not an SAE config")
    norm = data.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise _refuse(source, "normalize_activations", norm, _NORMALIZE_WHY.get(
            norm, "SAELens knows none, expected_average_only_in, constant_norm_rescale, "
            "layer_norm and covariance_whitening"))
    reshape = data.get("reshape_activations", "none")
    if reshape not in ("none", "hook_z"):
        raise _refuse(source, "reshape_activations", reshape, "only 'none' and 'hook_z' "
                      "(attention z [..., n_heads, d_head] flattened) are known")
    head = meta.get("hook_head_index", data.get("hook_head_index"))
    if head is not None:
        raise _refuse(source, "hook_head_index", head, "the SAE reads one head's slice of its "
                      "hook, while superpose's activation store and splice apply an SAE to the "
                      "whole hook; slice the head out yourself and load the weights with "
                      "sae.create + load_saelens_state_dict")
    if data.get("finetuning_scaling_factor"):
        raise _refuse(source, "finetuning_scaling_factor", data["finetuning_scaling_factor"],
                      "a learned output scale (pre-6.0 SAELens) is not implemented here, and "
                      "SAELens 6 cannot load it either")
    dtype = str(data.get("dtype", "float32")).removeprefix("torch.")
    ours = FROM_SAELENS[arch]
    kw: dict[str, Any] = {
        "architecture": ours, "d_in": data["d_in"], "d_sae": data["d_sae"],
        "apply_b_dec_to_input": data.get("apply_b_dec_to_input", True),
        "dtype": dtype, "reshape_activations": reshape,
        "hook_name": meta.get("hook_name", data.get("hook_name")),
        "model_name": meta.get("model_name", data.get("model_name")),
    }
    rescale = False
    if ours in ("topk", "batchtopk"):
        k = data.get("k", (data.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise ValueError(f"{source}: a {arch!r} config needs 'k' (its active latents)")
        kw["k"] = _whole(source, "k", k)
        # SAE.load_from_disk reads a topk folder with TopKSAEConfig (default false); batchtopk
        # folders load only as training SAEs, whose config defaults to true.
        rescale = data.get("rescale_acts_by_decoder_norm", ours == "batchtopk")
        if not isinstance(rescale, bool):
            raise _refuse(source, "rescale_acts_by_decoder_norm", rescale, "it must be true "
                          "or false")
        if ours == "batchtopk" and isinstance(data.get("topk_threshold_lr"), (int, float)) \
                and 0 < data["topk_threshold_lr"] <= 1:
            kw["batchtopk_threshold_lr"] = float(data["topk_threshold_lr"])
    try:
        cfg = SAEConfig(**kw)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return SAELensFolder(cfg=cfg, architecture=arch, rescale_acts_by_decoder_norm=rescale)


def config_from_saelens(data: dict[str, Any], *, source: str = CFG_FILE) -> SAEConfig:
    """Our SAEConfig from a cfg.json dict (`read_saelens_config(...).cfg`)."""
    return read_saelens_config(data, source=source).cfg


@torch.no_grad()
def saelens_tensors(folder: SAELensFolder, state: dict[str, Tensor], *,
                    source: str = WEIGHTS_FILE) -> dict[str, Tensor]:
    """SAELens's tensors as our SAE's `load_saelens_state_dict` takes them, the function kept:
    the all-ones legacy scaling_factor dropped (as SAELens's `read_sae_components_from_disk`
    does), log_threshold -> threshold (JumpReLUTrainingSAE.process_state_dict_for_loading),
    rescale_acts_by_decoder_norm folded (topk_sae.py `_fold_norm_topk`, in float64), and a
    BatchTopK training checkpoint's scalar topk_threshold spread over the latents."""
    state = dict(state)
    if "scaling_factor" in state:
        sf = state.pop("scaling_factor")
        if not torch.all(sf == 1):
            raise _refuse(source, "scaling_factor", "not all 1", "a finetuning scale of the "
                          "latents (pre-6.0 SAELens) is not implemented here")
    if folder.cfg.architecture == "jumprelu" and "log_threshold" in state \
            and "threshold" not in state:
        state["threshold"] = state.pop("log_threshold").exp()
    if folder.rescale_acts_by_decoder_norm and {"W_enc", "b_enc", "W_dec"} <= set(state):
        dtype = state["W_dec"].dtype
        w_dec = state["W_dec"].double()
        norms = w_dec.norm(dim=-1)
        if (norms == 0).any():
            bad = norms.eq(0).nonzero().flatten()[:5].tolist()
            raise _refuse(source, "rescale_acts_by_decoder_norm", True, f"decoder rows {bad} "
                          "have norm 0, and SAELens divides the latents by that norm (its "
                          "outputs are NaN)")
        state["W_enc"] = (state["W_enc"].double() * norms).to(dtype)
        state["b_enc"] = (state["b_enc"].double() * norms).to(dtype)
        state["W_dec"] = (w_dec / norms[:, None]).to(dtype)
    if "topk_threshold" in state and folder.cfg.architecture == "batchtopk":
        theta = state.pop("topk_threshold")
        if theta.numel() != 1:
            raise ValueError(f"{source}: topk_threshold must be one number, got shape "
                             f"{list(theta.shape)}")
        state["threshold"] = theta.reshape(()).expand(folder.cfg.d_sae).clone()
    return state


def read_folder(path: str | Path) -> tuple[SAELensFolder, dict[str, Tensor]]:
    """The config and the tensors (converted by `saelens_tensors`) of an SAE folder written here
    or by SAELens (`save_model` or `save_inference_model`; see the module docstring). A folder
    that is not an SAE, an unknown or unsupported architecture or option, or a corrupt file
    fail clearly; whether the tensors fit the config is for the SAE that takes them to check."""
    folder = runs.saved_folder(path, (CFG_FILE, WEIGHTS_FILE), "an SAE folder")
    cfg_path, weights = folder / CFG_FILE, folder / WEIGHTS_FILE
    data = runs.read_json(cfg_path)
    info = read_saelens_config(data, source=str(cfg_path))
    recorded = data.get(HASH_KEY, {}).get(WEIGHTS_FILE)
    if recorded is not None and recorded != sha256(weights):
        raise ValueError(f"{weights} was changed after it was written: its SHA-256 is not the "
                         f"one {CFG_FILE} records ({HASH_KEY}). It is truncated, damaged or "
                         "replaced; restore it or save the SAE again")
    state, metadata = _read_tensors(weights)
    arch = (metadata or {}).get(ARCH_KEY)
    if arch is not None and arch != info.cfg.architecture:
        raise ValueError(f"{weights} holds the weights of a {arch!r} SAE, but {CFG_FILE} says "
                         f"{info.cfg.architecture!r} (architecture "
                         f"{TO_SAELENS.get(info.cfg.architecture)!r}); loading them as that "
                         "would compute another function. Restore the matching cfg.json")
    for name, t in state.items():
        if not t.is_floating_point():
            raise ValueError(f"{weights}: tensor {name!r} has dtype {t.dtype}; SAE weights are "
                             "floating point (the file is corrupt or not an SAE's)")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{weights}: tensor {name!r} holds NaN or inf; the file is "
                             "corrupt or was saved from a diverged run")
    return info, saelens_tensors(info, state, source=f"{folder}: {WEIGHTS_FILE}")


def _read_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str] | None]:
    """The tensors and the safetensors metadata of `path`; any failure is a ValueError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"{path} is corrupt and cannot be read ({e})") from None
