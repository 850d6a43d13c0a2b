"""Training checkpoints, one format for every trainer: complete or absent, verified, never
unpickled.

A checkpoint is one folder `<out>/checkpoint-<step, 8 digits>/` holding

    config.json          the model's config (when it has a dataclass `cfg`), so that the
    model.safetensors    model class's `load(folder)` opens a checkpoint like a saved model
    train_config.json    the trainer's config
    optimizer.safetensors + optimizer.json
                         every optimizer-state tensor under "state.<param index>.<key>"; param
                         groups, scalars and the parameter names in JSON
    rng.safetensors      generator states (data order, dropout, resampling: the trainer's)
    state.safetensors    other tensors the trainer keeps between steps (optional)
    history.json         the history so far
    checkpoint.json      written last: the trainer's format name, step, seconds, the model
                         class, the trainer's own counters and the SHA-256 of every other file

Writing: the folder is built under a temporary name in `<out>`, every file fsynced, and renamed
into place in one `os.replace`, so a crash leaves the whole checkpoint or none of it (plus a
`.tmp-*` folder that is ignored). Rewriting a step that exists moves the old folder aside to
`.swap-checkpoint-<step>` first and deletes it only after the new one is in place; readers
take a swap folder whose checkpoint is missing as that checkpoint, so at no moment is there
no valid checkpoint on disk. Older checkpoints are deleted only after the new one is in place.

Reading verifies the marker and every hash before anything is used: a corrupt, truncated or
missing file is a ValueError that names it, and nothing on disk is changed.

Resuming (`resume_point`), the one rule of all trainers: `out` holding checkpoints without
`resume=True` is an error (it would be overwritten); `resume=True` continues from the newest;
`resume=True` with none there starts from step 0 and says so in the log, so the same command
both starts a run and continues it after an interruption.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superpose import runs

log = logging.getLogger(__name__)

MARKER = "checkpoint.json"
PREFIX = "checkpoint-"
SWAP_PREFIX = ".swap-"
_NAME = re.compile(r"^(?:\.swap-)?checkpoint-(\d{8})$")
TRAIN_CONFIG_FILE = "train_config.json"
OPTIMIZER_FILES = ("optimizer.safetensors", "optimizer.json")
RNG_FILE = "rng.safetensors"
STATE_FILE = "state.safetensors"
HISTORY_FILE = "history.json"
# Config fields every trainer lets a resumed run change: they do not alter the trajectory
# (`steps` moves a decaying schedule's end, but extending a finished run is what it is for).
RESUMABLE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints")
LEGACY_MARKERS = ("state.json",)   # earlier SAE checkpoints: pruned like the others
REQUIRED = (runs.WEIGHTS_FILE, TRAIN_CONFIG_FILE, *OPTIMIZER_FILES, RNG_FILE, HISTORY_FILE)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(out: str | Path, markers: tuple[str, ...] = (MARKER,)) -> list[Path]:
    """Complete checkpoint folders in `out` (those with a marker: `markers` lists the files
    that mark one, a trainer's earlier formats included), oldest first. A folder set aside by
    an interrupted rewrite counts when its step has no other folder."""
    out = Path(out)
    if not out.is_dir():
        return []
    found: dict[int, Path] = {}
    for p in out.iterdir():
        m = _NAME.match(p.name)
        if not m or not p.is_dir():
            continue
        if not any((p / m).is_file() for m in markers):
            if not p.name.startswith(SWAP_PREFIX):
                log.warning("ignoring %s: it has no %s (not written by a superpose trainer, or "
                            "edited by hand)", p, MARKER)
            continue
        step = int(m.group(1))
        if step not in found or not p.name.startswith(SWAP_PREFIX):
            found[step] = p
    return [found[s] for s in sorted(found)]


def latest_checkpoint(out: str | Path, markers: tuple[str, ...] = (MARKER,)) -> Path | None:
    """The newest complete checkpoint folder in `out`, or None."""
    found = list_checkpoints(out, markers)
    return found[-1] if found else None


def resume_point(out: Path | None, resume: bool,
                 markers: tuple[str, ...] = (MARKER,)) -> Path | None:
    """The checkpoint a run continues from under the one resume rule (module docstring).

    Before the first step, so that no training is lost to a bad `out`: `out` must be a folder
    (it is created), what interrupted writes left there is removed, and checkpoint folders
    without their marker (edited or deleted by hand) are refused instead of being skipped and
    later overwritten."""
    if not isinstance(resume, bool):
        raise ValueError(f"resume must be True or False, got {resume!r}")
    if out is None:
        if resume:
            raise ValueError("resume=True needs out=..., the folder holding the checkpoints")
        return None
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file, not a folder; checkpoints need a folder "
                         "of their own: choose another out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out={str(out)!r} cannot be created ({e}); choose a writable "
                         "folder") from None
    for p in runs.remove_leftovers(out):
        log.info("removed %s, left by an interrupted checkpoint write", p)
    broken = sorted(p.name for p in out.iterdir()
                    if p.is_dir() and _NAME.match(p.name) and not p.name.startswith(SWAP_PREFIX)
                    and not any((p / m).is_file() for m in markers))
    if broken:
        raise ValueError(f"{out} holds checkpoint folders without their {MARKER} ({broken}): "
                         "edited or damaged after they were written. Nothing was changed; move "
                         "or delete them, then run again")
    latest = latest_checkpoint(out, markers)
    if latest is not None and not resume:
        raise ValueError(f"{out} already holds checkpoints (newest: {latest.name}); pass "
                         "resume=True to continue that run, or choose a new out folder")
    if latest is None and resume:
        log.info("no checkpoint in %s yet: starting from step 0", out)
    return latest


def check_resume_config(saved: dict[str, Any], cfg: Any, where: Path,
                        resumable: Iterable[str]) -> None:
    """The config a run resumes with must be the checkpoint's, except the fields in
    `resumable`, which do not change the trajectory (how often to log, checkpoint, ...)."""
    resumable = tuple(resumable)
    now = runs.to_jsonable(cfg)
    diff = {k: (saved.get(k), now[k]) for k in now
            if k not in resumable and saved.get(k) != now[k]}
    if diff:
        pretty = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"checkpoint {where} was trained with a different config ({pretty}); "
                         f"resume with the same settings (only {list(resumable)} may change) "
                         "or train into a new out folder")


# ---- writing ---------------------------------------------------------------------------------

_sha256 = runs.sha256_file


def _write(path: Path, write: Callable[[Path], None]) -> None:
    write(path)
    with open(path, "rb") as f:        # on disk before the rename makes the folder visible
        os.fsync(f.fileno())


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(runs.to_jsonable(obj), indent=2) + "\n"
    _write(path, lambda p: p.write_text(text))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share storage (tied weights, views).
    flat = {k: t.detach().cpu().contiguous().clone() for k, t in tensors.items()}
    _write(path, lambda p: save_file(flat, str(p)))


def model_config(model: nn.Module) -> dict[str, Any] | None:
    """The model's `cfg` as JSON values, when it has a dataclass config."""
    cfg = getattr(model, "cfg", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return runs.to_jsonable(cfg)
    return None


def flatten_optimizer(state: dict[str, Any], names: list[str]
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer `state_dict()` as (tensors for safetensors, the rest as JSON values)."""
    tensors: dict[str, torch.Tensor] = {}
    meta_state: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        meta_entry: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                name = f"state.{idx}.{key}"
                tensors[name] = value
                meta_entry[key] = {"tensor": name}
            elif value is None or isinstance(value, (bool, int, float, str)):
                meta_entry[key] = value
            else:
                raise TypeError(f"optimizer state {idx}.{key} is a {type(value).__name__}; "
                                "only tensors and plain numbers can be checkpointed")
        meta_state[str(idx)] = meta_entry
    return tensors, {"param_names": names, "param_groups": state["param_groups"],
                     "state": meta_state}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]
                        ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {k: tensors[val["tensor"]] if isinstance(val, dict) else val
                           for k, val in entry.items()}
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def check_weights_finite(model: nn.Module, step: int, out: Path) -> None:
    """A run whose weights went NaN or infinite has diverged: stop it (FloatingPointError)
    rather than write a checkpoint that would push the last good one out of `keep`."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            good = latest_checkpoint(out) if out.is_dir() else None
            kept = f"; the last good checkpoint, {good}, is kept" if good is not None else ""
            raise FloatingPointError(
                f"the training diverged: {name} holds NaN or inf at step {step}, so no "
                f"checkpoint is written; lower the learning rate, add warm-up or clip "
                f"gradients{kept}")


def save_checkpoint(out: str | Path, step: int, *, format: str, model: nn.Module,
                    optimizer: torch.optim.Optimizer, param_names: list[str],
                    train_config: Any, history: Any, rng: dict[str, torch.Tensor],
                    seconds: float, state: dict[str, torch.Tensor] | None = None,
                    meta: dict[str, Any] | None = None, keep: int = 1) -> Path:
    """Write the checkpoint of `step` into `out` atomically; keep the newest `keep`.
    `format` names the trainer ("superpose.gpt.checkpoint/1"); `meta` holds its counters."""
    out = Path(out)
    check_weights_finite(model, step, out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".tmp-{checkpoint_name(step)}-"))
    final = out / checkpoint_name(step)
    try:
        cfg = model_config(model)
        if cfg is not None:
            _write_json(tmp / runs.CONFIG_FILE, cfg)
        _save_tensors(tmp / runs.WEIGHTS_FILE, model.state_dict())
        _write_json(tmp / TRAIN_CONFIG_FILE, train_config)
        opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict(), param_names)
        _save_tensors(tmp / OPTIMIZER_FILES[0], opt_tensors)
        _write_json(tmp / OPTIMIZER_FILES[1], opt_meta)
        _save_tensors(tmp / RNG_FILE, rng)
        if state:
            _save_tensors(tmp / STATE_FILE, state)
        _write_json(tmp / HISTORY_FILE, history)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        _write_json(tmp / MARKER, {
            "format": format, "step": step, "seconds": seconds, **(meta or {}),
            "model_class": type(model).__name__, "torch": torch.__version__, "files": files})
        os.chmod(tmp, 0o755)             # mkdtemp makes it private
        if final.exists():               # the same step again: set the old one aside first
            aside = out / f"{SWAP_PREFIX}{final.name}"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out, (MARKER, *LEGACY_MARKERS))[:-keep]:
        # Renamed out of the checkpoint names first (atomic): a kill inside rmtree then leaves a
        # `.tmp-` folder, which the next run removes, never a checkpoint folder missing files.
        doomed = Path(tempfile.mkdtemp(dir=out, prefix=f".tmp-{old.name}-"))
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


# ---- reading ---------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A checkpoint read back and verified (see the module docstring for what each holds).
    `meta` is the marker: format, step, seconds, model class and the trainer's counters."""

    path: Path
    step: int
    seconds: float
    model_class: str
    meta: dict[str, Any]
    model_config: dict[str, Any] | None
    weights: dict[str, torch.Tensor]
    train_config: dict[str, Any]
    optimizer: dict[str, Any]
    optimizer_param_names: list[str]
    rng: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    history: dict[str, Any]


def corrupt(path: Path, why: str) -> ValueError:
    return ValueError(f"checkpoint {path} is corrupt or incomplete: {why}. Nothing was changed; "
                      "delete that folder to resume from an older checkpoint, or train into a "
                      "new out folder")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise corrupt(path.parent, f"{path.name} cannot be read ({e})") from None


def _load_json(folder: Path, name: str) -> Any:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(folder, f"{name} cannot be read ({e})") from None


def read_checkpoint(path: str | Path, format: str | Iterable[str]) -> Checkpoint:
    """Read a checkpoint folder written in `format` (a name or several accepted ones),
    verifying its marker and every file's hash first."""
    formats = (format,) if isinstance(format, str) else tuple(format)
    folder = Path(path)
    if not (folder / MARKER).is_file():
        raise corrupt(folder, f"it has no {MARKER}")
    marker = _load_json(folder, MARKER)
    if not isinstance(marker, dict) or marker.get("format") not in formats:
        got = marker.get("format") if isinstance(marker, dict) else type(marker).__name__
        raise corrupt(folder, f"{MARKER} has format {got!r}, expected "
                              f"{formats[0] if len(formats) == 1 else list(formats)!r}")
    try:
        step, seconds = int(marker["step"]), float(marker["seconds"])
        model_class = str(marker["model_class"])
        files = dict(marker["files"])
    except (KeyError, TypeError, ValueError) as e:
        raise corrupt(folder, f"{MARKER} lacks or garbles {e}") from None
    missing = sorted(set(REQUIRED) - set(files))
    if missing:
        raise corrupt(folder, f"{MARKER} does not list {missing}")
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            raise corrupt(folder, f"{name} is missing")
        if _sha256(f) != digest:
            raise corrupt(folder, f"{name} does not match the SHA-256 recorded in {MARKER} "
                                  "(changed or truncated after it was written)")
    opt_meta = _load_json(folder, OPTIMIZER_FILES[1])
    opt_tensors = _load_tensors(folder / OPTIMIZER_FILES[0])
    try:
        optimizer = unflatten_optimizer(opt_tensors, opt_meta)
        param_names = list(opt_meta["param_names"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise corrupt(folder, f"{OPTIMIZER_FILES[1]} does not describe "
                              f"{OPTIMIZER_FILES[0]} ({e!r})") from None
    return Checkpoint(
        path=folder, step=step, seconds=seconds, model_class=model_class, meta=marker,
        model_config=(_load_json(folder, runs.CONFIG_FILE)
                      if runs.CONFIG_FILE in files else None),
        weights=_load_tensors(folder / runs.WEIGHTS_FILE),
        train_config=_load_json(folder, TRAIN_CONFIG_FILE),
        optimizer=optimizer, optimizer_param_names=param_names,
        rng=_load_tensors(folder / RNG_FILE),
        state=_load_tensors(folder / STATE_FILE) if STATE_FILE in files else {},
        history=_load_json(folder, HISTORY_FILE))


def check_matches_model(ckpt: Checkpoint, model: nn.Module, param_names: list[str]) -> None:
    """Raise a ValueError saying what differs when `ckpt` was not written for `model`."""
    where = f"checkpoint {ckpt.path}"
    if ckpt.model_class != type(model).__name__:
        raise ValueError(f"{where} holds a {ckpt.model_class}, but the model is a "
                         f"{type(model).__name__}")
    cfg = model_config(model)
    if cfg is not None and ckpt.model_config is not None and cfg != ckpt.model_config:
        diff = {k: (ckpt.model_config.get(k), cfg.get(k))
                for k in sorted(set(cfg) | set(ckpt.model_config))
                if ckpt.model_config.get(k) != cfg.get(k)}
        pretty = "; ".join(f"{k}: checkpoint {a!r}, model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{where} was written for a different model config ({pretty}); "
                         "build the model with the checkpoint's config.json, or train into a "
                         "new out folder")
    runs.check_state_shapes(where, model.state_dict(), ckpt.weights)
    if ckpt.optimizer_param_names != param_names:
        raise ValueError(f"{where}: its optimizer state is for parameters "
                         f"{ckpt.optimizer_param_names}, the model has {param_names}")
