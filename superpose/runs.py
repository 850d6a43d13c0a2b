"""Results folders and atomic file writes.

A run lives in `results/<experiment>/<run>/` with `config.json`, `metrics.json`, PNG figures and
weights as safetensors. Every write goes to a temporary file in the same folder and is then
renamed over the target, so an interrupted run never leaves a half-written file that looks
complete, and a failed write never destroys the previous version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from superpose import _validate as v

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SAVED_FILE = "saved.json"            # a saved model's files and their SHA-256
_SAVED_FILES = (CONFIG_FILE, WEIGHTS_FILE, SAVED_FILE)
COMPLETE_FILE = "complete.json"      # a run's completion marker: every file and its SHA-256
_CREATED: list[Run] = []             # runs made by Run.create, for experiment_main to finish


def plain_name(what: str, name: str) -> str:
    """`name` as one file or folder name inside a folder: no separators, no "..", not empty,
    so that nothing a caller passes can read or write outside the folder it names."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name):
        raise ValueError(f"{what} must be a plain file or folder name (no '/', '\\' or '..'), "
                         f"got {name!r}")
    return name


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file onto `path`.

    If `write` raises, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the path of a file to write")
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _make_parent(path: Path) -> None:
    """Create `path`'s parent folders, or name the file that stands where one should be."""
    blocking = next((a for a in path.parents if a.exists() and not a.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"cannot write {path}: {blocking} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete what interrupted writes left in `folder` (not below it): `atomic_write`'s
    `.<name>.*.tmp` files and checkpoint writers' `.tmp-*` folders. Call it only where no
    other process is writing (at the start of a run). Returns what was removed."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
        elif p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def to_jsonable(obj: Any) -> Any:
    """Config dataclasses, tensors, numpy values and paths as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(x) for k, x in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):   # numpy
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)                                  # JSON has no NaN/inf
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` (through `to_jsonable`) as indented JSON, atomically. Something JSON cannot
    hold (an arbitrary object, a cycle) is a ValueError naming the file, before it is touched."""
    try:
        text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    except (TypeError, ValueError, RecursionError) as e:
        what = "it refers to itself" if isinstance(e, RecursionError) else str(e)
        raise ValueError(f"cannot write {path}: the value is not JSON ({what}); pass dicts, "
                         "lists, numbers, strings, tensors or config dataclasses") from None
    return atomic_write(path, lambda p: p.write_text(text))


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "a number",
               float: "a number", bool: "true/false", type(None): "null"}


class _NonFiniteToken(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteToken(name)


def read_json(path: str | Path, *, kind: type | None = None, what: str = "") -> Any:
    """The JSON value in `path`. Anything that is not the JSON superpose wrote is one ValueError
    naming the file and what is wrong: binary or non-UTF-8 bytes, an empty or truncated file,
    a folder, the non-JSON tokens NaN/Infinity (`write_json` stores non-finite floats as the
    strings "nan"/"inf"/"-inf"), nesting too deep to read, and, with `kind` (e.g. `dict`), a
    value of another JSON kind. `what` names what the file should be, for the message
    (e.g. "a saved model's config"). A missing file is a FileNotFoundError naming it."""
    path = Path(path)
    should_be = f"; it should be {what}" if what else ""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist{should_be}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a JSON file{should_be}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: it is not UTF-8 text (byte {e.start} is "
                         f"{e.object[e.start:e.start + 1]!r}); the file is corrupt or binary, "
                         f"not what superpose wrote{should_be}") from None
    except json.JSONDecodeError as e:
        what_is_wrong = "it is empty" if not e.doc.strip() else str(e)
        raise ValueError(f"{path} is not valid JSON ({what_is_wrong}); the file is corrupt or "
                         f"was written by something else{should_be}") from None
    except _NonFiniteToken as e:
        raise ValueError(f"{path} is not valid JSON: it holds {e.args[0]}, which JSON does not "
                         "have (superpose writes non-finite numbers as the strings \"nan\", "
                         "\"inf\", \"-inf\"); the file was edited or written by something "
                         f"else{should_be}") from None
    except RecursionError:
        raise ValueError(f"{path} is not readable JSON: it is nested too deeply; the file is "
                         f"corrupt or was written by something else{should_be}") from None
    except ValueError as e:                 # e.g. an integer of more than 4300 digits
        raise ValueError(f"{path} is not readable JSON ({e}); the file is corrupt or was "
                         f"written by something else{should_be}") from None
    if kind is not None and not isinstance(data, kind):
        got = _JSON_KINDS.get(type(data), type(data).__name__)
        want = _JSON_KINDS.get(kind, kind.__name__)
        raise ValueError(f"{path} is corrupt: it holds {got} where {want} is "
                         f"expected{should_be}; the file was edited or is not the one superpose "
                         "wrote there")
    return data


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read 1 MiB at a time: the one hash every verified
    file in superpose records (checkpoints, saved models, SAE folders, run markers)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _leftover_saves(folder: Path) -> list[Path]:
    """Temporary folders that saves into `folder` killed before their rename left beside it."""
    import re

    if not folder.parent.is_dir():
        return []
    pattern = re.compile(rf"\.tmp-{re.escape(folder.name)}-[A-Za-z0-9_]{{8}}")
    return [p for p in folder.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir()]


def save_module(path: str | Path, module: torch.nn.Module, cfg: Any) -> Path:
    """Save `cfg` as `config.json` and the module's weights as `model.safetensors`, with
    `saved.json` holding the weights' SHA-256 (checked by `load_module`).

    The files are written into a temporary sibling folder that then replaces `path`, so an
    interrupted or failed save leaves the previous save whole (and a killed one leaves only a
    `.tmp-<name>-*` folder, removed by the next save to the same place). A folder that also
    holds other files is never replaced: the new weights go to a temporary file, then
    `saved.json` records their hash, then `config.json` and the weights are renamed into
    place, so an interrupted save there fails `load_module`'s hash check instead of loading
    mixed files. `config.json` is not hashed: it stays editable by hand and is checked field
    by field and against the weights' shapes."""
    import shutil

    from safetensors.torch import save_file

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; a model is saved into a folder (it is created "
                         "if missing); pass a folder path")
    tensors = {k: t.detach().cpu().contiguous() for k, t in module.state_dict().items()}

    if folder.is_dir() and any(p.name not in _SAVED_FILES for p in folder.iterdir()):
        def weights_then_rest(tmp: Path) -> None:
            save_file(tensors, str(tmp))
            write_json(folder / SAVED_FILE, {"files": {WEIGHTS_FILE: sha256_file(tmp)}})
            write_json(folder / CONFIG_FILE, cfg)

        atomic_write(folder / WEIGHTS_FILE, weights_then_rest)
        return folder

    _make_parent(folder)
    for p in _leftover_saves(folder):
        shutil.rmtree(p, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        write_json(tmp / CONFIG_FILE, cfg)
        write_json(tmp / SAVED_FILE, {"files": {WEIGHTS_FILE: sha256_file(tmp / WEIGHTS_FILE)}})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.parent / f".{folder.name}.previous"
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)         # killed here: load_module points at `old`
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def saved_folder(path: str | Path, files: Sequence[str], what: str) -> Path:
    """`path` as a Path, after checking that it is a folder holding every one of `files`; the
    FileNotFoundError says which is missing and what such a folder holds (`what`, e.g.
    "a saved ToyModel", "an SAE folder")."""
    folder = Path(path)
    listed = " and ".join(files) if len(files) <= 2 else ", ".join(files)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected {what} holding {listed}")
    for name in files:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}; it is not {what} "
                                    f"(expected {listed})")
    return folder


def load_module(path: str | Path, cls: type, cfg_cls: type, *,
                device: torch.device | str | None = None) -> Any:
    """Rebuild `cls(cfg)` from a folder written by `save_module`. Every broken folder is one
    error naming the file: weights that differ from the SHA-256 in `saved.json` (checked when
    that file exists; saves from before it load as they are), weights that cannot be read, hold
    NaN/inf or integers, or do not fit `config.json`, and a config that is not a valid
    `cfg_cls`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    previous = folder.parent / f".{folder.name}.previous"
    if not folder.exists() and previous.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: a save into it was interrupted; the "
                                f"previous save is whole at {previous} (rename it back)")
    folder = saved_folder(path, (CONFIG_FILE, WEIGHTS_FILE), f"a saved {cls.__name__}")
    weights = folder / WEIGHTS_FILE
    if (folder / SAVED_FILE).is_file():         # saves before this marker existed load as is
        listed = read_json(folder / SAVED_FILE, kind=dict,
                           what=f"the SHA-256 of {WEIGHTS_FILE}")
        files = listed.get("files")
        if (not isinstance(files, dict) or set(files) != {WEIGHTS_FILE}
                or not isinstance(files[WEIGHTS_FILE], str)):
            raise ValueError(f"{folder / SAVED_FILE} is corrupt: expected {{\"files\": "
                             f"{{\"{WEIGHTS_FILE}\": \"<SHA-256>\"}}}}; save the model again, "
                             f"or delete {SAVED_FILE} to load the folder unchecked")
        if sha256_file(weights) != files[WEIGHTS_FILE]:
            raise ValueError(f"{weights} is corrupt: it does not match its SHA-256 in "
                             f"{SAVED_FILE}: it changed after the model was saved (edited, "
                             "truncated, copied over, or a save into this folder was "
                             "interrupted); save the model again or restore the file")
    data = read_json(folder / CONFIG_FILE, kind=dict, what=f"a {cfg_cls.__name__}")
    try:
        cfg = v.config_from_dict(cfg_cls, data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{folder / CONFIG_FILE}: {e}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is corrupt and cannot be read ({e})") from None
    model = cls(cfg, device="cpu")
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    got = {k: tuple(t.shape) for k, t in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = {k: (got[k], expected[k]) for k in set(got) & set(expected)
                 if got[k] != expected[k]}
        raise ValueError(
            f"{folder}: weights do not match {CONFIG_FILE} (missing {missing}, unexpected "
            f"{extra}, shape got/expected {wrong})"
        )
    for k, t in model.state_dict().items():
        if t.is_floating_point() and not state[k].is_floating_point():
            raise ValueError(f"{weights}: tensor {k!r} holds {state[k].dtype} values where the "
                             f"model has {t.dtype}; the file is corrupt or not a saved "
                             f"{cls.__name__}")
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            raise ValueError(f"{weights}: tensor {k!r} holds NaN or inf; the model diverged "
                             "before it was saved or the file is corrupt")
    model.load_state_dict(state)
    return model.to(v.resolve_device(device))


@dataclasses.dataclass
class Run:
    """A results folder. `run = Run.create("toy_intro", out="results")`, then `run.save_*`."""

    path: Path

    @classmethod
    def create(cls, experiment: str, *, out: str | Path | None = None,
               name: str | None = None) -> Run:
        """Make `<out>/<experiment>/<name>/` (`out` defaults to ./results, `name` to a
        timestamp); an existing folder of the same name gets a numeric suffix, never reused."""
        root = Path(out if out is not None else "results")
        if root.exists() and not root.is_dir():
            raise ValueError(f"out {str(root)!r} is a file; pass a folder for the results (it "
                             "is created if missing)")
        base = root / plain_name("experiment", experiment)
        stem = plain_name("name", name) if name is not None else time.strftime("%Y%m%d-%H%M%S")
        path, i = base / stem, 1
        while path.exists():
            path, i = base / f"{stem}-{i}", i + 1
        path.mkdir(parents=True)
        run = cls(path)
        _CREATED.append(run)
        return run

    def save_config(self, cfg: Any) -> Path:
        return write_json(self.path / CONFIG_FILE, cfg)

    def save_metrics(self, metrics: dict[str, Any]) -> Path:
        return write_json(self.path / "metrics.json", metrics)

    def save_figure(self, fig: Any, name: str, *, dpi: int = 120) -> Path:
        """Save a matplotlib figure as `<name>.png` atomically (a failed save leaves no
        temporary file and the previous PNG of that name as it was)."""
        plain_name("name", name)
        if isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= 1200:
            raise ValueError(f"dpi must be an integer in [1, 1200], got {dpi!r}")
        if not callable(getattr(fig, "savefig", None)):
            raise ValueError(f"fig must be a matplotlib Figure (something with .savefig), got "
                             f"{type(fig).__name__}")
        target = self.path / (name if name.endswith(".png") else f"{name}.png")
        atomic_write(target, lambda p: fig.savefig(p, dpi=dpi, format="png",
                                                   bbox_inches="tight"))
        return target

    def save_model(self, module: Any, name: str) -> Path:
        target = self.path / plain_name("name", name)
        return module.save(target)

    def finish(self) -> Path:
        """Mark the run complete: write `complete.json` listing every file in the folder (and
        below) with its SHA-256, after removing what interrupted writes left behind. Write it
        last: figures, weights, then metrics.json, then this. `run_status` reads it back."""
        for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
            remove_leftovers(folder)
        files = {rel: sha256_file(self.path / rel) for rel in _files_below(self.path)}
        return write_json(self.path / COMPLETE_FILE, {"files": files})

    @property
    def status(self) -> str:
        return run_status(self.path)


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """Every `Run` created inside the block gets its completion marker when the block ends
    without an exception (an experiment's `run(...)` call, as `experiment_main` and the tour
    make it)."""
    first = len(_CREATED)
    try:
        yield
        for run in _CREATED[first:]:
            if run.path.is_dir() and not (run.path / COMPLETE_FILE).exists():
                run.finish()
    finally:
        del _CREATED[first:]


def _files_below(folder: Path) -> list[str]:
    """Every file in `folder` and below, as sorted relative POSIX paths, but the marker."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != COMPLETE_FILE)


def run_status(path: str | Path) -> str:
    """"complete" (finished, every file as it was written), "interrupted" (no completion
    marker: the run stopped before its end, whatever metrics.json it holds), or "changed"
    (finished, but a listed file is missing or differs now, or a file was added). A folder
    that does not exist is a FileNotFoundError; a marker that cannot be read, or that names a
    file outside the folder, is a ValueError naming it."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a run folder")
    marker = folder / COMPLETE_FILE
    if not marker.is_file():
        return "interrupted"
    data = read_json(marker, kind=dict, what="a completion marker")
    files = data.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{marker} is not a completion marker (expected {{\"files\": "
                         "{name: sha256}}); it is corrupt")
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
            raise ValueError(f"{marker} names {name!r}, which is outside the run folder; the "
                             "marker is corrupt or was edited")
    if sorted(files) != _files_below(folder):
        return "changed"
    for name, digest in files.items():
        if sha256_file(folder / name) != digest:
            return "changed"
    return "complete"


def experiment_main(run_fn: Callable[..., dict[str, Any]], description: str,
                    argv: list[str] | None = None) -> dict[str, Any]:
    """The command line every experiment script shares:
    `python experiments/NAME.py [--quick] [--out DIR] [--seed N] [--no-progress]`.

    When `run_fn` returns, every run folder it created gets its completion marker
    (`Run.finish`); a run that raised or was killed has none, so `run_status` says so.

    `run_fn(out=..., quick=..., seed=..., progress=...)` does the work and returns its metrics
    (which it has also saved); this prints the run folder and a one-line-per-metric summary.
    """
    import argparse
    import logging
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small, fast version (seconds)")
    parser.add_argument("--out", default="results", help="results root (default: ./results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; pass a folder for the results")
    with finishing():
        metrics = run_fn(out=args.out, quick=args.quick, seed=args.seed,
                         progress=not args.no_progress)
    summary = metrics.get("summary", {})
    for key, value in summary.items():
        sys.stdout.write(f"  {key}: {value}\n")
    return metrics


def check_state_shapes(where: str, expected: dict[str, Any], got: dict[str, Any]) -> None:
    """Raise a ValueError naming what is missing, unexpected or of the wrong shape when the
    tensors `got` (read from a file) do not fit the state dict `expected` (of the model)."""
    want = {k: tuple(t.shape) for k, t in expected.items()}
    have = {k: tuple(t.shape) for k, t in got.items()}
    if want != have:
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        wrong = {k: (have[k], want[k]) for k in set(have) & set(want) if have[k] != want[k]}
        raise ValueError(f"{where}: its weights do not fit the model (missing {missing}, "
                         f"unexpected {extra}, shape file/model {wrong})")
