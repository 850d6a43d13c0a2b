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
    path.parent.mkdir(parents=True, exist_ok=True)
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
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a JSON file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: it is not UTF-8 text (byte {e.start} is "
                         f"{e.object[e.start:e.start + 1]!r}); the file is corrupt or binary, "
                         "not what superpose wrote") from None
    except json.JSONDecodeError as e:
        what = "it is empty" if not e.doc.strip() else str(e)
        raise ValueError(f"{path} is not valid JSON ({what}); the file is corrupt or was "
                         "written by something else") from None


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_module(path: str | Path, module: torch.nn.Module, cfg: Any) -> Path:
    """Save `cfg` as `config.json` and the module's weights as `model.safetensors`, with
    `saved.json` holding the weights' SHA-256 (checked by `load_module`).

    The files are written into a temporary sibling folder that then replaces `path`, so an
    interrupted save leaves the previous save whole. (A folder that also holds other files is
    written into file by file instead, the hashes last.)"""
    import shutil

    from safetensors.torch import save_file

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; a model is saved into a folder (it is created "
                         "if missing)")
    tensors = {k: t.detach().cpu().contiguous() for k, t in module.state_dict().items()}

    def write_into(d: Path) -> None:
        atomic_write(d / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
        write_json(d / CONFIG_FILE, cfg)
        # config.json stays editable by hand (it is checked field by field and against the
        # weights' shapes); the weights are binary and checked by their hash
        write_json(d / SAVED_FILE, {"files": {WEIGHTS_FILE: _sha256(d / WEIGHTS_FILE)}})

    if folder.is_dir() and any(p.name not in _SAVED_FILES for p in folder.iterdir()):
        write_into(folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        write_into(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        old = folder.parent / f".{folder.name}.previous"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
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
    """Rebuild `cls(cfg)` from a folder written by `save_module`, with clear errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    previous = folder.parent / f".{folder.name}.previous"
    if not folder.exists() and previous.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: a save into it was interrupted; the "
                                f"previous save is whole at {previous} (rename it back)")
    folder = saved_folder(path, (CONFIG_FILE, WEIGHTS_FILE), f"a saved {cls.__name__}")
    if (folder / SAVED_FILE).is_file():         # saves before this marker existed load as is
        listed = read_json(folder / SAVED_FILE)
        files = listed.get("files") if isinstance(listed, dict) else None
        if not isinstance(files, dict) or set(files) != {WEIGHTS_FILE}:
            raise ValueError(f"{folder / SAVED_FILE} is corrupt: expected the SHA-256 of "
                             f"{WEIGHTS_FILE}")
        for name, digest in files.items():
            if _sha256(folder / name) != digest:
                raise ValueError(f"{folder / name} is corrupt: it does not match its SHA-256 "
                                 f"in {SAVED_FILE}: "
                                 "it changed after the model was saved (edited, truncated or "
                                 "copied over); save the model again or restore the file")
    cfg = v.config_from_dict(cfg_cls, read_json(folder / CONFIG_FILE))
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{folder / WEIGHTS_FILE} is corrupt and cannot be read ({e})") from None
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
        base = Path(out if out is not None else "results") / plain_name("experiment", experiment)
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
        """Save a matplotlib figure as `<name>.png` atomically."""
        plain_name("name", name)
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
        import hashlib

        for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
            remove_leftovers(folder)
        files = {}
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_file() and rel != COMPLETE_FILE:
                files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
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


def run_status(path: str | Path) -> str:
    """"complete" (finished, every file as it was written), "interrupted" (no completion
    marker: the run stopped before its end, whatever metrics.json it holds), or "changed"
    (finished, but a listed file is missing or differs now). A folder that does not exist is a
    FileNotFoundError; a marker that cannot be read is a ValueError naming it."""
    import hashlib

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a run folder")
    marker = folder / COMPLETE_FILE
    if not marker.is_file():
        return "interrupted"
    data = read_json(marker)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"{marker} is not a completion marker (expected {{\"files\": "
                         "{name: sha256}}); it is corrupt")
    for name, digest in files.items():
        p = folder / name
        if (not isinstance(name, str) or ".." in Path(name).parts or not p.is_file()
                or hashlib.sha256(p.read_bytes()).hexdigest() != digest):
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
