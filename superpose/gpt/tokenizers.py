"""Tokenizers for the small GPT: characters, raw bytes, and a byte-level BPE trained locally.

All three share one interface (`Tokenizer`): `encode(text) -> LongTensor [pos]`,
`decode(ids) -> str`, `vocab_size`, `to_str_tokens(text_or_ids) -> list[str]` (one string per
token, as in TransformerLens, for plot labels) and `save(path)` / `load(path)` as one JSON file
whose "type" key lets `load_tokenizer(path)` rebuild the right class. Nothing is downloaded.

- `CharTokenizer.fit(text)`: one token per distinct character of `text`, in sorted
  (code point) order, then one unknown token `<unk>` with the last id. Characters never seen in
  `fit` encode to `<unk>` by default (like `bytes.decode(errors="replace")`, so encoding a new
  text never fails half way through a run); `encode(text, errors="strict")` raises instead and
  names the unseen characters. `<unk>` decodes to U+FFFD, the Unicode replacement character.
- `ByteTokenizer()`: the 256 byte values of the UTF-8 encoding; exact round trip of any text.
- `BPETokenizer.train(texts, vocab_size)`: byte-level BPE (GPT-2's scheme) trained with the
  HuggingFace `tokenizers` library from an iterator of strings. Its base alphabet is all 256
  bytes, so it has no unknowns and round-trips any text exactly.

Decoding an id outside `[0, vocab_size)` raises a ValueError naming the id.
"""

from __future__ import annotations

import importlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from superpose import _validate as v
from superpose.runs import read_json, write_json

if TYPE_CHECKING:
    from superpose.gpt.corpus import Corpus

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
UNK = "<unk>"
REPLACEMENT = "\ufffd"           # what `<unk>` decodes to
Ids = Int[Tensor, " pos"] | Sequence[int]


class Tokenizer(ABC):
    """The interface every tokenizer here has; see the module docstring."""

    type: ClassVar[str]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids; valid ids are 0 .. vocab_size - 1."""

    @abstractmethod
    def encode(self, text: str) -> Int[Tensor, " pos"]:
        """Token ids of `text` as a 1-D LongTensor (empty text gives shape [0])."""

    @abstractmethod
    def _decode_list(self, ids: list[int]) -> str: ...

    @abstractmethod
    def _token_str(self, i: int) -> str: ...

    @abstractmethod
    def _to_json(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def _from_json(cls, data: dict[str, Any], path: Path) -> Tokenizer: ...

    def decode(self, ids: Ids) -> str:
        """The text of a 1-D sequence of ids (a tensor or a list of ints)."""
        return self._decode_list(self._check_ids(ids))

    def to_str_tokens(self, text_or_ids: str | Ids) -> list[str]:
        """One string per token, for labels (like TransformerLens's `to_str_tokens`).

        A text is encoded first. A byte that is only part of a multi-byte character shows as
        an escape such as '\\xe2' rather than a replacement character.
        """
        if isinstance(text_or_ids, str):
            ids = self.encode(text_or_ids).tolist()
        else:
            ids = self._check_ids(text_or_ids)
        return [self._token_str(i) for i in ids]

    def save(self, path: str | Path) -> Path:
        """Write this tokenizer as one JSON file (atomically: a failed write keeps the old one)."""
        return write_json(path, {"type": self.type, "format_version": FORMAT_VERSION,
                                 **self._to_json()})

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by `save`; the file's "type" must match this class."""
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise ValueError(f"{path} holds a {type(tok).__name__} (type {tok.type!r}), not a "
                             f"{cls.__name__}; use superpose.gpt.tokenizers.load_tokenizer to "
                             "load whichever type the file holds")
        return tok

    def _check_ids(self, ids: Ids) -> list[int]:
        if isinstance(ids, Tensor):
            if ids.dim() != 1 or ids.dtype.is_floating_point or ids.is_complex():
                raise ValueError(f"ids must be a 1-D integer tensor, got shape "
                                 f"{list(ids.shape)} and dtype {ids.dtype}; decode a batch "
                                 "one row at a time")
            ids = ids.tolist()
        else:
            ids = list(ids)
            bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
            if bad:
                raise ValueError(f"ids must be integers, got {bad[0]!r}")
            ids = [int(i) for i in ids]
        n = self.vocab_size
        for pos, i in enumerate(ids):
            if not 0 <= i < n:
                raise ValueError(f"token id {i} at position {pos} is outside the vocabulary of "
                                 f"{type(self).__name__} (valid ids are 0..{n - 1})")
        return ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _text_of(text: str | Corpus, what: str) -> str:
    """`text` itself, or the corpus's full text (train + val)."""
    if not isinstance(text, str):
        if not isinstance(getattr(text, "text", None), str):
            raise ValueError(f"{what} takes a str or a Corpus, got {type(text).__name__}")
        text = text.text
    return text


def _escape_bytes(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


class CharTokenizer(Tokenizer):
    """One token per character seen in `fit`, in sorted order, plus `<unk>` (the last id)."""

    type = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars must be single characters, got {bad[0]!r}")
        if not chars:
            raise ValueError("chars must hold at least one character, got none")
        if chars != sorted(set(chars)):
            raise ValueError("chars must be sorted and distinct (as CharTokenizer.fit makes "
                             "them); pass sorted(set(chars))")
        self.chars: tuple[str, ...] = tuple(chars)
        self.unk_id = len(chars)
        self._stoi = {c: i for i, c in enumerate(chars)}
        # Code points in sorted order make encoding a vectorised binary search.
        self._codes = np.array([ord(c) for c in chars], dtype=np.int64)

    @classmethod
    def fit(cls, text: str | Corpus) -> CharTokenizer:
        """The tokenizer of every distinct character in `text` (a Corpus: its train + val text,
        so validation text has no unknowns)."""
        text = _text_of(text, "CharTokenizer.fit")
        if not text:
            raise ValueError("CharTokenizer.fit needs a non-empty text, got an empty string")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str, *, errors: Literal["replace", "strict"] = "replace"
               ) -> Int[Tensor, " pos"]:
        """Ids of `text`. Unseen characters become `<unk>` (errors="replace", the default) or
        raise a ValueError that lists them (errors="strict")."""
        v.choice("errors", errors, ("replace", "strict"))
        if not text:
            return torch.zeros(0, dtype=torch.long)
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"),
                              dtype=np.uint32).astype(np.int64)
        idx = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(idx, len(self._codes) - 1)] == codes
        if not known.all():
            unseen = sorted({text[i] for i in np.flatnonzero(~known)[:1000]})
            if errors == "strict":
                raise ValueError(f"characters {unseen[:20]} never appeared in the text this "
                                 f"CharTokenizer was fit on (first at position "
                                 f"{int(np.argmin(known))}); refit on a text that has them, or "
                                 "use errors='replace' to map them to <unk>")
            idx = np.where(known, idx, self.unk_id)
        return torch.from_numpy(idx.astype(np.int64))

    def _decode_list(self, ids: list[int]) -> str:
        return "".join(self._token_str(i) for i in ids)

    def _token_str(self, i: int) -> str:
        return REPLACEMENT if i == self.unk_id else self.chars[i]

    def _to_json(self) -> dict[str, Any]:
        return {"chars": list(self.chars), "unk": UNK}

    @classmethod
    def _from_json(cls, data: dict[str, Any], path: Path) -> CharTokenizer:
        chars = _require(data, "chars", list, path)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:          # checked here too: a runtime type checker may see them first
            raise ValueError(f"{path}: chars must be single characters, got {bad[0]!r}; the "
                             "file is corrupt or was edited")
        try:
            return cls(chars)
        except ValueError as e:
            raise ValueError(f"{path}: {e}; the file is corrupt or was edited") from None


class ByteTokenizer(Tokenizer):
    """The 256 byte values of UTF-8: no fitting, no unknowns, exact round trip of any text.

    Decoding ids that are not valid UTF-8 (half a character) gives U+FFFD for the broken bytes.
    """

    type = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> Int[Tensor, " pos"]:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text cannot be encoded as UTF-8 ({e.reason} at position "
                             f"{e.start}: {text[e.start:e.end]!r}); lone surrogates usually "
                             "come from reading a file with errors='surrogateescape'") from None
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else \
            torch.zeros(0, dtype=torch.long)

    def _decode_list(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def _token_str(self, i: int) -> str:
        return _escape_bytes(bytes([i]))

    def _to_json(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_json(cls, data: dict[str, Any], path: Path) -> ByteTokenizer:
        return cls()


def _hf() -> Any:
    """The HuggingFace `tokenizers` package, imported on first use."""
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError("BPETokenizer needs the HuggingFace `tokenizers` package (a "
                          "dependency of transformer-lens); install it with "
                          "`pip install tokenizers`, or use CharTokenizer / ByteTokenizer"
                          ) from e
    return tokenizers


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (the ByteLevel
    alphabet): printable Latin-1 bytes map to themselves, the rest to code points from 256."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BPETokenizer(Tokenizer):
    """Byte-level BPE (as in GPT-2) trained locally with HuggingFace `tokenizers`.

    Special tokens (if any were given to `train`) are matched in encoded text as whole tokens.
    """

    type = "bpe"

    def __init__(self, hf_tokenizer: Any) -> None:
        self._tok = hf_tokenizer
        self._n = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        self._unbyte = {c: b for b, c in _byte_to_unicode().items()}
        self._special = {t.content for t in hf_tokenizer.get_added_tokens_decoder().values()}

    @classmethod
    def train(cls, texts: str | Corpus | Iterable[str], vocab_size: int, *,
              min_frequency: int = 2, special_tokens: Sequence[str] = ()) -> BPETokenizer:
        """Learn merges from `texts` until the vocabulary has `vocab_size` tokens (fewer if the
        text runs out of pairs seen `min_frequency` times).

        `texts` is a string, an iterable of strings (streamed, e.g. a generator over files), or
        a Corpus, of which only the training split is used so the validation loss stays honest.
        `vocab_size` counts the 256 byte tokens and the special tokens.
        """
        hf = _hf()
        v.positive_int("vocab_size", vocab_size)
        v.positive_int("min_frequency", min_frequency)
        special = list(special_tokens)
        if any(not isinstance(s, str) or not s for s in special) or len(set(special)) < len(
                special):
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {special}")
        if vocab_size < 256 + len(special):
            raise ValueError(f"vocab_size must be at least 256 (one token per byte) + "
                             f"{len(special)} special token(s) = {256 + len(special)}, "
                             f"got {vocab_size}")
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(getattr(texts, "train", None), str):     # a Corpus
            texts = [texts.train]
        elif not isinstance(texts, Iterable):
            raise ValueError(f"texts must be a str, a Corpus or an iterable of str, got "
                             f"{type(texts).__name__}")
        seen = {"chars": 0}

        def lines() -> Iterable[str]:
            for t in texts:
                if not isinstance(t, str):
                    raise ValueError(f"texts must yield strings, got {type(t).__name__}")
                seen["chars"] += len(t)
                yield from t.splitlines(keepends=True)

        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(lines(), trainer)
        if seen["chars"] == 0:
            raise ValueError("BPETokenizer.train needs some text, got none (an empty string or "
                             "an empty iterable)")
        out = cls(tok)
        if out.vocab_size < vocab_size:
            logger.info("BPE stopped at %d tokens (asked for %d): no pair left that occurs "
                        "min_frequency=%d times", out.vocab_size, vocab_size, min_frequency)
        return out

    @property
    def vocab_size(self) -> int:
        return self._n

    def encode(self, text: str) -> Int[Tensor, " pos"]:
        return torch.tensor(self._tok.encode(text).ids, dtype=torch.long)

    def _decode_list(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def _token_str(self, i: int) -> str:
        piece = self._tok.id_to_token(i)
        if piece in self._special:
            return piece
        return _escape_bytes(bytes(self._unbyte[c] for c in piece))

    def _to_json(self) -> dict[str, Any]:
        return {"tokenizer": json.loads(self._tok.to_str())}

    def _problem(self) -> str | None:
        """What is wrong with the vocabulary (for a file that was edited), or None: its ids
        must be exactly 0 .. vocab_size - 1, each once; every one of the 256 bytes must be a
        token (else text holding it would be dropped silently when encoded); every other
        token that is not special must be made of byte characters."""
        vocab = self._tok.get_vocab(with_added_tokens=True)
        ids = sorted(vocab.values())
        if ids != list(range(self._n)):
            seen: dict[int, list[str]] = {}
            for token, i in vocab.items():
                seen.setdefault(i, []).append(token)
            dup = {i: ts for i, ts in seen.items() if len(ts) > 1}
            missing = sorted(set(range(self._n)) - set(ids))
            beyond = sorted({i for i in ids if i >= self._n})
            parts = [f"ids held by more than one token: {dict(list(dup.items())[:5])}"] if dup \
                else []
            parts += [f"ids missing: {missing[:10]}"] if missing else []
            parts += [f"ids beyond {self._n - 1}: {beyond[:10]}"] if beyond else []
            return (f"its vocabulary's ids are not 0..{self._n - 1}, each once "
                    f"({'; '.join(parts)})")
        byte_chars = set(self._unbyte)
        absent = sorted(byte_chars - set(vocab))
        if absent:
            return (f"its vocabulary lacks {len(absent)} of the 256 byte tokens (first "
                    f"{absent[0]!r}); text holding those bytes would be dropped when encoded")
        for token in vocab:
            if token not in self._special and not set(token) <= byte_chars:
                return (f"token {token!r} is neither a special token nor made of byte "
                        "characters")
        return None

    @classmethod
    def _from_json(cls, data: dict[str, Any], path: Path) -> BPETokenizer:
        hf = _hf()
        spec = _require(data, "tokenizer", dict, path)
        model = spec.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            got = model.get("type") if isinstance(model, dict) else model
            raise ValueError(f"{path}: the 'tokenizer' entry is not a valid HuggingFace "
                             f"tokenizer: it must hold a BPE model "
                             f"(\"model\": {{\"type\": \"BPE\", ...}}), got {got!r}; the "
                             "file is corrupt or not a superpose BPE tokenizer")
        try:
            tok = cls(hf.Tokenizer.from_str(json.dumps(spec)))
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:   # the Rust side raises its own types (a panic included)
            raise ValueError(f"{path}: the 'tokenizer' entry is not a valid HuggingFace "
                             f"tokenizer ({e})") from None
        problem = tok._problem()
        if problem is not None:
            raise ValueError(f"{path}: the BPE tokenizer is corrupt: {problem}; the file was "
                             "edited or damaged, train or save the tokenizer again")
        return tok


TOKENIZERS: dict[str, type[Tokenizer]] = {
    c.type: c for c in (CharTokenizer, ByteTokenizer, BPETokenizer)}
# Types defined in other modules (type -> module, class), imported the first time a file names
# one; TOKENIZERS keeps the three of this module.
LAZY_TOKENIZERS: dict[str, tuple[str, str]] = {
    "special": ("superpose.transformer.data", "SpecialTokenizer"),
    "word": ("superpose.transformer.data", "WordTokenizer")}


def tokenizer_class(kind: Any, where: str) -> type[Tokenizer]:
    """The class of a saved tokenizer's "type" value `kind` (`where` starts the error)."""
    if isinstance(kind, str) and kind in LAZY_TOKENIZERS:
        module, name = LAZY_TOKENIZERS[kind]
        return getattr(importlib.import_module(module), name)
    try:
        v.choice(where, kind, TOKENIZERS)
    except ValueError as e:
        raise ValueError(f"{e}; superpose.transformer.data adds {sorted(LAZY_TOKENIZERS)}"
                         ) from None
    return TOKENIZERS[kind]


def _require(data: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if not isinstance(data.get(key), kind):
        raise ValueError(f"{path}: key {key!r} must hold a {kind.__name__}, got "
                         f"{type(data.get(key)).__name__}; the file is corrupt or not a "
                         "superpose tokenizer")
    return data[key]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Rebuild whichever tokenizer `Tokenizer.save` wrote to `path` (its "type" key decides)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"{path} is not a saved tokenizer (expected a JSON object with a "
                         f"'type' key, one of {sorted({*TOKENIZERS, *LAZY_TOKENIZERS})})")
    cls = tokenizer_class(data["type"], f"{path}: tokenizer type")
    version = data.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}; this superpose reads "
                         f"version {FORMAT_VERSION}")
    return cls._from_json(data, path)
