"""Text to train a small GPT on, with nothing to download, and windows of tokens to feed it.

`load_corpus()` builds the embedded default corpus from files every Python installation
carries: the source of a fixed, sorted list of standard-library modules (`STDLIB_MODULES`, about
1.8 MB on CPython 3.11: argparse, dataclasses, inspect, typing, ...). That is code, comments and
docstrings in English: enough regular structure (indentation, keywords, matched brackets) for a
two-layer model to learn visibly, and enough prose for it to babble words. `name="stdlib-docs"`
keeps only the docstrings (read with `ast`), a smaller corpus of English prose.

The text is the same on every machine with the same Python version (the files are read as
UTF-8, in list order, each under a one-line header `# file: json/decoder.py`). A module whose
source file is missing (some distributions strip or move files) is replaced by the docstrings
of the imported module, or skipped with a warning if it cannot be imported either.

The split is by characters: the last `val_fraction` (10% by default) is validation, cut at the
start of a line. `load_text_files(paths)` builds the same `Corpus` from the user's own files.

`TokenDataset(tokens, n_ctx)` turns a 1-D token tensor into training pairs: random windows
drawn with a seeded `torch.Generator` (`sample`, `batches`) and, for validation, every
non-overlapping window in order (`sequential`). Targets are the inputs shifted by one token.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import sys
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _validate as v
from superpose.toy.data import make_generator

logger = logging.getLogger(__name__)

# Pure-Python modules present in every CPython since 3.8, sorted. Chosen for readable source with
# plenty of docstrings and almost no non-ASCII text (shlex, with its line of 62 accented
# letters, is left out so a character vocabulary stays near the 95 printable ASCII characters).
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib", "enum", "fractions",
    "functools", "heapq", "inspect", "json", "json.decoder", "json.encoder", "logging",
    "numbers", "operator", "os", "pathlib", "pprint", "queue", "random", "sched", "shutil",
    "statistics", "string", "subprocess", "tempfile", "textwrap", "threading", "tokenize",
    "types", "typing", "warnings", "weakref", "zipfile",
)
CORPORA: tuple[str, ...] = ("stdlib", "stdlib-docs")


@dataclass(frozen=True)
class Corpus:
    """A text split into `train` and `val` (`text` is both, in order).

    `sources` names what the text came from (stdlib paths relative to the library folder, or
    the user's file paths), in order.
    """

    name: str
    train: str
    val: str
    sources: tuple[str, ...]

    @property
    def text(self) -> str:
        return self.train + self.val

    def __len__(self) -> int:
        return len(self.train) + len(self.val)

    def __repr__(self) -> str:
        return (f"Corpus(name={self.name!r}, train={len(self.train):,} chars, "
                f"val={len(self.val):,} chars, {len(self.sources)} sources)")


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): val is the last `val_fraction` of the characters, moved forward to the next
    line start (so it does not begin mid-line) when there is one. train + val == text."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
            0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    cut = len(text) - round(len(text) * val_fraction)
    if cut < len(text):
        nl = text.find("\n", cut, min(len(text), cut + 1000))
        if 0 <= nl < len(text) - 1:
            cut = nl + 1
    return text[:cut], text[cut:]


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_file(lib: Path, module: str) -> Path | None:
    base = lib.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _docstrings_from_source(source: str) -> list[str]:
    """Docstrings of the module and of every class and function, in source order."""
    tree = ast.parse(source)
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(
        n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
    nodes[1:] = sorted(nodes[1:], key=lambda n: (n.lineno, n.col_offset))
    return [d for n in nodes if (d := ast.get_docstring(n, clean=True))]


def _docstrings_from_import(module: str) -> list[str]:
    """Fallback for a module whose source file is missing: docstrings of the live objects."""
    with warnings.catch_warnings():          # e.g. typing.io's deprecation, on reading __doc__
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = importlib.import_module(module)
        docs = [inspect.getdoc(mod)]
        for name in sorted(vars(mod)):
            obj = vars(mod)[name]
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(
                    obj, "__module__", None) == module:
                docs.append(inspect.getdoc(obj))
    return [d for d in docs if d]


def _stdlib_text(docs_only: bool) -> tuple[str, tuple[str, ...]]:
    lib = _stdlib_dir()
    parts: list[str] = []
    sources: list[str] = []
    for module in STDLIB_MODULES:
        f = _module_file(lib, module)
        rel = f.relative_to(lib).as_posix() if f else module
        body: str | None = None
        if f is not None:
            try:
                source = f.read_text(encoding="utf-8")
                body = "\n\n".join(_docstrings_from_source(source)) if docs_only else source
            except (OSError, UnicodeDecodeError, SyntaxError) as e:
                logger.warning("stdlib corpus: cannot read %s (%s); using its docstrings", f, e)
        if body is None:
            try:
                body = "\n\n".join(_docstrings_from_import(module))
            except Exception as e:   # an import can fail in many ways; we only skip it
                logger.warning("stdlib corpus: skipping %s (no source, import failed: %s)",
                               module, e)
                continue
            rel = f"{module} (docstrings)"
        if body.strip():
            parts.append(f"# file: {rel}\n{body.rstrip()}\n\n")
            sources.append(rel)
    if not parts:
        raise RuntimeError(
            f"found no standard-library text under {lib} (Python {sys.version.split()[0]}); "
            "this installation ships neither source files nor docstrings. Train on your own "
            "text with superpose.gpt.corpus.load_text_files([...])")
    return "".join(parts), tuple(sources)


def load_corpus(name: str = "stdlib", max_chars: int | None = None, *,
                val_fraction: float = 0.1) -> Corpus:
    """The embedded default corpus (see the module docstring): "stdlib" (source, ~1.8 MB) or
    "stdlib-docs" (docstrings only). `max_chars` keeps the first that many characters before
    splitting."""
    v.choice("name", name, CORPORA)
    if max_chars is not None:
        v.positive_int("max_chars", max_chars)
    text, sources = _stdlib_text(docs_only=name == "stdlib-docs")
    if max_chars is not None:
        text = text[:max_chars]
    train, val = split_text(text, val_fraction)
    return Corpus(name=name, train=train, val=val, sources=sources)


def load_text_files(paths: str | Path | Sequence[str | Path], *, val_fraction: float = 0.1,
                    name: str = "files") -> Corpus:
    """A Corpus of the user's UTF-8 text files, joined in the given order (a newline is added
    between files when one does not already end with one), split like `load_corpus`."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_text_files needs at least one path, got none")
    parts: list[str] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"text file {p} does not exist")
        if not p.is_file():
            raise ValueError(f"{p} is not a file (a folder?); pass the text files inside it, "
                             f"e.g. sorted(Path({str(p)!r}).glob('*.txt'))")
        data = p.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{p} is not UTF-8 text (byte {data[e.start]:#04x} at offset "
                             f"{e.start}); convert it, e.g. `iconv -f latin1 -t utf-8`") from None
        text = text.removeprefix("\ufeff")                 # a byte-order mark is not text
        if not text.strip():
            raise ValueError(f"{p} is empty (or only whitespace); remove it from the list")
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(text)
    train, val = split_text("".join(parts), val_fraction)
    return Corpus(name=name, train=train, val=val, sources=tuple(str(p) for p in paths))


class TokenDataset:
    """Windows of `n_ctx` tokens from one long 1-D token tensor, with next-token targets.

    Window i of the dataset (`ds[i]`, `len(ds)`) is the i-th non-overlapping window, which is
    what `sequential` walks for validation; `sample` draws windows at any offset.
    """

    def __init__(self, tokens: Int[Tensor, " n_tokens"], n_ctx: int) -> None:
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype.is_floating_point \
                or tokens.dtype == torch.bool:
            raise ValueError("tokens must be a 1-D integer tensor (e.g. tokenizer.encode(text))"
                             f", got {getattr(tokens, 'shape', type(tokens).__name__)}")
        v.positive_int("n_ctx", n_ctx)
        if len(tokens) and int(tokens.min()) < 0:
            raise ValueError(f"tokens must be token ids >= 0, got {int(tokens.min())} at position "
                             f"{int(tokens.argmin())}")
        if len(tokens) < n_ctx + 1:
            raise ValueError(f"need at least n_ctx + 1 = {n_ctx + 1} tokens for one window and "
                             f"its targets, got {len(tokens)}; use a shorter n_ctx or more text")
        self.tokens = tokens
        self.n_ctx = n_ctx
        self._offsets = torch.arange(n_ctx + 1, device=tokens.device)

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.n_ctx

    def __getitem__(self, i: int) -> tuple[Int[Tensor, " pos"], Int[Tensor, " pos"]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        w = self._windows(torch.tensor([i % len(self) * self.n_ctx], device=self.tokens.device))
        return w[0, :-1], w[0, 1:]

    def _windows(self, starts: Int[Tensor, " batch"]) -> Int[Tensor, "batch n"]:
        return self.tokens[starts[:, None] + self._offsets].long()

    def sample(self, batch_size: int, *args: torch.Generator | int,
               generator: torch.Generator | int | None = None
               ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """(inputs, targets), each [batch_size, n_ctx], from windows starting anywhere (uniform
        over the len(tokens) - n_ctx possible starts); targets[:, t] = the token after
        inputs[:, t]. `generator`: a `torch.Generator` (draws on its device), an int seed (a
        CPU generator) or None (torch's global generator). The windows are on the tokens'
        device. Deprecated: the generator as the second positional argument."""
        generator = deprecation.positional_option("TokenDataset.sample", "generator", args,
                                                  generator)
        v.positive_int("batch_size", batch_size)
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = make_generator(generator, "cpu")
        dev = generator.device if isinstance(generator, torch.Generator) else "cpu"
        starts = torch.randint(0, len(self.tokens) - self.n_ctx, (batch_size,),
                               generator=generator, device=dev)
        w = self._windows(starts.to(self.tokens.device))
        return w[:, :-1], w[:, 1:]

    def batches(self, batch_size: int, *args: torch.Generator | int,
                generator: torch.Generator | int | None = None
                ) -> Iterator[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]:
        """`sample(batch_size, generator=generator)` forever (an int seeds one generator that
        the batches share). Deprecated: the generator as the second positional argument."""
        generator = deprecation.positional_option("TokenDataset.batches", "generator", args,
                                                  generator)
        v.positive_int("batch_size", batch_size)
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = make_generator(generator, "cpu")
        return self._batches(batch_size, generator)

    def _batches(self, batch_size: int, generator: torch.Generator | None
                 ) -> Iterator[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]:
        while True:
            yield self.sample(batch_size, generator=generator)

    def sequential(self, batch_size: int, *, max_batches: int | None = None
                   ) -> Iterator[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]:
        """Every non-overlapping window in order, `batch_size` at a time (the last batch may
        be smaller), at most `max_batches` batches: the same batches on every call."""
        v.positive_int("batch_size", batch_size)
        if max_batches is not None:
            v.positive_int("max_batches", max_batches)
        starts = torch.arange(len(self), device=self.tokens.device) * self.n_ctx
        for k, chunk in enumerate(starts.split(batch_size)):
            if max_batches is not None and k >= max_batches:
                return
            w = self._windows(chunk)
            yield w[:, :-1], w[:, 1:]
