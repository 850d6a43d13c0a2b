"""Data for encoder (masked language modelling) and encoder–decoder transformers.

Special tokens. `SpecialTokenizer(base)` wraps any tokenizer of `superpose.gpt.tokenizers` and
appends four ids after the base vocabulary, always in this order:

    [PAD] = base.vocab_size + 0      padding (attention_mask False there)
    [MASK] = base.vocab_size + 1     the MLM mask token
    [CLS] = base.vocab_size + 2      start of sequence; also the decoder's BOS (`bos_id`)
    [SEP] = base.vocab_size + 3      end of sequence; also the decoder's EOS (`eos_id`)

so `vocab_size == base.vocab_size + 4` and every base id keeps its meaning. The literal strings
"[PAD]", "[MASK]", "[CLS]", "[SEP]" inside a text encode to those ids; everything else goes
through the base tokenizer. `WordTokenizer(words)` is a closed, whitespace-split word
vocabulary (no `<unk>`: an unknown word is an error), for word-level targets.

Batches. `encode_batch(texts, tok)` gives `tokens [batch pos]` and `attention_mask [batch pos]`
(True = a real token, False = padding), with [CLS] first and [SEP] last by default;
`pad_sequences` does the padding of ready-made id tensors.

Masking. `mlm_mask` is BERT's recipe (Devlin et al. 2019): in each row choose
round(p * n) of the n maskable positions (real, non-special tokens; at least one when n > 0);
of the chosen, 80% become [MASK], 10% a random non-special token, 10% stay as they are. The
labels hold the original id at chosen positions and -100 (torch's `ignore_index`) elsewhere,
so `F.cross_entropy(logits.transpose(1, 2), labels)` is the MLM loss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from superpose import _validate as v
from superpose.gpt.tokenizers import FORMAT_VERSION, Tokenizer, tokenizer_class
from superpose.toy.data import make_generator

__all__ = [
    "IGNORE_INDEX", "SPECIALS", "SpecialTokenizer", "WordTokenizer", "encode_batch",
    "mlm_mask", "pad_sequences",
]

SPECIALS = ("[PAD]", "[MASK]", "[CLS]", "[SEP]")   # ids base.vocab_size + 0, 1, 2, 3
IGNORE_INDEX = -100                                 # label of positions with no loss
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def draw_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """The generator to draw with: a `torch.Generator` as is, an int seeds a new CPU
    generator (so a seed gives the same draw on every machine), None is torch's global one."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return make_generator(generator, "cpu")


def _draw_device(g: torch.Generator | None) -> torch.device:
    return g.device if g is not None else torch.device("cpu")


class WordTokenizer(Tokenizer):
    """A closed word vocabulary: text is split on whitespace, each word is one token (its
    index in `words`); decoding joins words with single spaces. No `<unk>`: a word outside the
    vocabulary is a ValueError naming it."""

    type = "word"

    def __init__(self, words: Sequence[str]) -> None:
        if isinstance(words, str):
            raise ValueError("words must be a list of words, got one string; pass "
                             "text.split() or a list")
        words = list(words)
        if not words:
            raise ValueError("words must hold at least one word, got none")
        bad = [w for w in words if not isinstance(w, str) or not w or w.split() != [w]]
        if bad:
            raise ValueError(f"words must be non-empty strings without whitespace, got "
                             f"{bad[0]!r}")
        if len(set(words)) < len(words):
            dup = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"words must be distinct, got {dup[:5]} more than once")
        clash = [w for w in words if w in SPECIALS]
        if clash:
            raise ValueError(f"words must not include the special token names {SPECIALS}, "
                             f"got {clash}")
        self.words: tuple[str, ...] = tuple(words)
        self._stoi = {w: i for i, w in enumerate(words)}

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> Int[Tensor, " pos"]:
        parts = text.split()
        unknown = [w for w in parts if w not in self._stoi]
        if unknown:
            raise ValueError(f"words {sorted(set(unknown))[:10]} are not in this "
                             f"WordTokenizer's vocabulary of {len(self.words)} words (e.g. "
                             f"{list(self.words[:8])}); build it with every word the text uses")
        return torch.tensor([self._stoi[w] for w in parts], dtype=torch.long)

    def _decode_list(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def _token_str(self, i: int) -> str:
        return self.words[i]

    def _to_json(self) -> dict[str, Any]:
        return {"words": list(self.words)}

    @classmethod
    def _from_json(cls, data: dict[str, Any], path: Path) -> WordTokenizer:
        words = data.get("words")
        if not isinstance(words, list):
            raise ValueError(f"{path}: key 'words' must hold a list, got "
                             f"{type(words).__name__}; the file is corrupt or not a superpose "
                             "tokenizer")
        try:
            return cls(words)
        except ValueError as e:
            raise ValueError(f"{path}: {e}; the file is corrupt or was edited") from None


class SpecialTokenizer(Tokenizer):
    """`base` plus [PAD] [MASK] [CLS] [SEP] with ids base.vocab_size + 0..3 (see the module
    docstring). [CLS] doubles as the decoder's BOS and [SEP] as its EOS (`bos_id`, `eos_id`)."""

    type = "special"

    def __init__(self, base: Tokenizer) -> None:
        if not isinstance(base, Tokenizer):
            raise ValueError(f"base must be a superpose tokenizer (CharTokenizer, ByteTokenizer, "
                             f"BPETokenizer, WordTokenizer), got {type(base).__name__}")
        if isinstance(base, SpecialTokenizer):
            raise ValueError("base is already a SpecialTokenizer; wrap its .base instead "
                             "(specials are added once)")
        self.base = base
        n = base.vocab_size
        self.specials: dict[str, int] = {name: n + i for i, name in enumerate(SPECIALS)}
        self.pad_id, self.mask_id, self.cls_id, self.sep_id = (n, n + 1, n + 2, n + 3)
        self._names = {i: name for name, i in self.specials.items()}
        self._joiner = " " if isinstance(base, WordTokenizer) else ""

    @property
    def bos_id(self) -> int:
        """The decoder's begin-of-sequence id: [CLS]."""
        return self.cls_id

    @property
    def eos_id(self) -> int:
        """The decoder's end-of-sequence id: [SEP]."""
        return self.sep_id

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The four special ids (pad, mask, cls, sep), e.g. for `mlm_mask(special_ids=...)`."""
        return tuple(self.specials.values())

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(SPECIALS)

    def encode(self, text: str) -> Int[Tensor, " pos"]:
        """Ids of `text`; the literal strings "[PAD]", "[MASK]", "[CLS]", "[SEP]" become the
        special ids, the text between them is encoded by the base tokenizer."""
        pieces: list[Tensor] = []
        for part in _SPECIAL_RE.split(text):
            if part in self.specials:
                pieces.append(torch.tensor([self.specials[part]], dtype=torch.long))
            elif part:
                pieces.append(self.base.encode(part).long())
        return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)

    def _decode_list(self, ids: list[int]) -> str:
        out: list[str] = []
        run: list[int] = []
        for i in [*ids, -1]:
            if 0 <= i < self.base.vocab_size:
                run.append(i)
                continue
            if run:
                out.append(self.base.decode(run))
                run = []
            if i >= 0:
                out.append(self._names[i])
        return self._joiner.join(out)

    def _token_str(self, i: int) -> str:
        return self._names[i] if i in self._names else self.base._token_str(i)

    def _to_json(self) -> dict[str, Any]:
        return {"specials": list(SPECIALS),
                "base": {"type": self.base.type, "format_version": FORMAT_VERSION,
                         **self.base._to_json()}}

    @classmethod
    def _from_json(cls, data: dict[str, Any], path: Path) -> SpecialTokenizer:
        if data.get("specials") != list(SPECIALS):
            raise ValueError(f"{path}: 'specials' must be {list(SPECIALS)}, got "
                             f"{data.get('specials')!r}; the file is corrupt or from another "
                             "version")
        base = data.get("base")
        if not isinstance(base, dict) or "type" not in base:
            raise ValueError(f"{path}: 'base' must hold the wrapped tokenizer as a JSON object "
                             "with a 'type' key; the file is corrupt")
        if base["type"] == cls.type:
            raise ValueError(f"{path}: the base tokenizer is itself a SpecialTokenizer; the "
                             "file is corrupt (specials are added once)")
        kind = tokenizer_class(base["type"], f"{path}: base tokenizer type")
        if base.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: the base tokenizer has format_version "
                             f"{base.get('format_version')!r}; this superpose reads version "
                             f"{FORMAT_VERSION}")
        return cls(kind._from_json(base, path))

    def __repr__(self) -> str:
        return f"SpecialTokenizer(base={self.base!r}, vocab_size={self.vocab_size})"



def pad_sequences(sequences: Sequence[Tensor], pad_id: int,
                  padding_side: Literal["right", "left"] = "right", *, length: int | None = None
                  ) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Stack 1-D id tensors into `tokens [batch, pos]` filled with `pad_id` where a row is
    shorter, and `attention_mask [batch, pos]` (True = a real token). `pos` is `length` when
    given (a row longer than it is an error), else the longest row. `padding_side="left"` puts
    the padding before the tokens (as generation wants), "right" after."""
    v.choice("padding_side", padding_side, ("right", "left"))
    if isinstance(sequences, Tensor) or not isinstance(sequences, Sequence):
        raise ValueError("sequences must be a list of 1-D id tensors (one per row), got a "
                         f"{type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("sequences is empty; pad_sequences needs at least one row")
    v.non_negative_int("pad_id", pad_id)
    rows = []
    for i, s in enumerate(sequences):
        if (not isinstance(s, Tensor) or s.dim() != 1 or s.dtype.is_floating_point
                or s.dtype == torch.bool or s.is_complex()):
            what = (f"a tensor of shape {list(s.shape)} and dtype {s.dtype}"
                    if isinstance(s, Tensor) else f"a {type(s).__name__}")
            raise ValueError(f"sequences[{i}] must be a 1-D integer tensor of ids, got {what}")
        rows.append(s.long())
    device = rows[0].device
    if any(r.device != device for r in rows):
        raise ValueError("sequences must all be on one device; move them with .to(device)")
    longest = max(len(r) for r in rows)
    if length is None:
        length = longest
    else:
        v.non_negative_int("length", length)
        if longest > length:
            i = max(range(len(rows)), key=lambda j: len(rows[j]))
            raise ValueError(f"sequences[{i}] has {longest} tokens, more than length={length}; "
                             "raise length or shorten the row")
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), length), dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        n = len(r)
        sl = slice(0, n) if padding_side == "right" else slice(length - n, length)
        tokens[i, sl] = r
        mask[i, sl] = True
    return tokens, mask


def encode_batch(texts: Sequence[str], tokenizer: SpecialTokenizer, *, add_cls: bool = True,
                 add_sep: bool = True, max_len: int | None = None,
                 padding_side: Literal["right", "left"] = "right", truncate: bool = False
                 ) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Encode each text as `[CLS] text [SEP]` (by default) and pad to one tensor.

    Returns `(tokens [batch, pos], attention_mask [batch, pos])`, True = a real token. `pos` is
    `max_len` when given (counting [CLS] and [SEP]), else the longest row. A row longer than
    `max_len` is a ValueError, unless `truncate=True`: then the text's tokens are cut so that
    the row, [CLS] and [SEP] included, fits.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got one string; pass [text]")
    if not isinstance(tokenizer, SpecialTokenizer):
        raise ValueError(f"tokenizer must be a SpecialTokenizer (it supplies [PAD], [CLS], "
                         f"[SEP]), got {type(tokenizer).__name__}; wrap it: "
                         "SpecialTokenizer(tokenizer)")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty; encode_batch needs at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts[{bad[0]}] must be a str, got {type(texts[bad[0]]).__name__}")
    n_extra = int(add_cls) + int(add_sep)
    if max_len is not None:
        v.positive_int("max_len", max_len)
        if max_len < n_extra:
            raise ValueError(f"max_len={max_len} leaves no room for [CLS]/[SEP] ({n_extra} "
                             "token(s)); raise max_len")
    rows = []
    for i, text in enumerate(texts):
        body = tokenizer.encode(text)
        if max_len is not None and len(body) + n_extra > max_len:
            if not truncate:
                raise ValueError(f"texts[{i}] is {len(body)} tokens (+{n_extra} for [CLS]/"
                                 f"[SEP]), longer than max_len={max_len}; raise max_len, "
                                 "shorten the text, or pass truncate=True to cut it")
            body = body[:max_len - n_extra]
        parts = ([torch.tensor([tokenizer.cls_id])] if add_cls else []) + [body] + \
            ([torch.tensor([tokenizer.sep_id])] if add_sep else [])
        rows.append(torch.cat(parts).long())
    return pad_sequences(rows, tokenizer.pad_id, padding_side, length=max_len)


def mlm_mask(tokens: Int[Tensor, "batch pos"], *, mask_id: int, vocab_size: int,
             attention_mask: Bool[Tensor, "batch pos"] | None = None,
             special_ids: Sequence[int] = (), p: float = 0.15,
             generator: torch.Generator | int | None = None
             ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """BERT's masking: returns `(inputs, labels)`, both [batch, pos].

    Maskable positions are real (`attention_mask` True; all when None) and hold no special id
    (`special_ids`, and `mask_id` itself). In each row round(p * n) of its n maskable positions
    are chosen uniformly without replacement, at least one when n > 0 (so short rows get a
    larger share than p). Each chosen position independently becomes `mask_id` with
    probability 0.8, a uniform random id from [0, vocab_size) minus the special ids with
    probability 0.1, and keeps its token with probability 0.1. `labels` is the original token at
    chosen positions and -100 elsewhere. `generator`: a `torch.Generator`, an int seed or None
    (torch's global generator); the draw is made on the generator's device (CPU for a seed or
    None) and moved to `tokens.device`.

    With a `SpecialTokenizer` `tok`: `mlm_mask(tokens, mask_id=tok.mask_id,
    vocab_size=tok.vocab_size, attention_mask=mask, special_ids=tok.special_ids)`.
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point \
            or tokens.dtype == torch.bool or tokens.is_complex():
        what = (f"shape {list(tokens.shape)} and dtype {tokens.dtype}"
                if isinstance(tokens, Tensor) else type(tokens).__name__)
        raise ValueError(f"tokens must be a 2-D integer tensor [batch, pos], got {what}")
    v.positive_int("vocab_size", vocab_size)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
        raise ValueError(f"p (the fraction of positions to mask) must be in (0, 1), got {p!r}; "
                         "BERT uses 0.15")
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be a token id in [0, vocab_size={vocab_size}), got "
                         f"{mask_id!r}; pass tokenizer.mask_id and tokenizer.vocab_size")
    if isinstance(special_ids, (str, Tensor)) or not isinstance(special_ids, Sequence):
        raise ValueError(f"special_ids must be a sequence of ints, got "
                         f"{type(special_ids).__name__}")
    for s in special_ids:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < vocab_size:
            raise ValueError(f"special_ids must be token ids in [0, vocab_size={vocab_size}), "
                             f"got {s!r}")
    if attention_mask is None:
        real = torch.ones_like(tokens, dtype=torch.bool)
    else:
        if not isinstance(attention_mask, Tensor) or attention_mask.dtype != torch.bool:
            raise ValueError("attention_mask must be a bool tensor (True = real token), got "
                             f"{getattr(attention_mask, 'dtype', type(attention_mask).__name__)}"
                             "; convert with mask.bool()")
        if attention_mask.shape != tokens.shape:
            raise ValueError(f"attention_mask has shape {list(attention_mask.shape)} but tokens "
                             f"has {list(tokens.shape)}; they must match")
        real = attention_mask.to(tokens.device)
    tokens = tokens.long()
    out_of_range = real & ((tokens < 0) | (tokens >= vocab_size))
    if bool(out_of_range.any()):
        b, t = out_of_range.nonzero()[0].tolist()
        raise ValueError(f"tokens[{b}, {t}] = {int(tokens[b, t])} is outside [0, vocab_size="
                         f"{vocab_size}); pass the vocab_size of the tokenizer that made them")
    special = sorted({*special_ids, mask_id})
    allowed = torch.tensor([i for i in range(vocab_size) if i not in set(special)],
                           dtype=torch.long)
    if len(allowed) == 0:
        raise ValueError(f"every id in [0, vocab_size={vocab_size}) is special, so there is no "
                         "token to mask or to draw as a random replacement")
    special_t = torch.tensor(special, dtype=torch.long, device=tokens.device)
    maskable = real & ~torch.isin(tokens, special_t)

    g = draw_generator(generator)
    on = _draw_device(g)
    dev = tokens.device
    keys = torch.rand(tokens.shape, generator=g, device=on).to(dev)
    kind = torch.rand(tokens.shape, generator=g, device=on).to(dev)
    random_ids = allowed.to(on)[torch.randint(0, len(allowed), tokens.shape, generator=g,
                                              device=on)].to(dev)

    # Exactly k_row = max(1, round(p * n_row)) positions per row: the k smallest random keys
    # among the maskable positions (non-maskable ones get key 2 and rank last).
    n = maskable.sum(dim=1)
    k = torch.where(n > 0, torch.clamp(torch.round(p * n.double()).long(), min=1), 0)
    keys = torch.where(maskable, keys, torch.full_like(keys, 2.0))
    rank = keys.argsort(dim=1).argsort(dim=1)
    chosen = maskable & (rank < k[:, None])

    inputs = tokens.clone()
    inputs[chosen & (kind < 0.8)] = mask_id
    swap = chosen & (kind >= 0.8) & (kind < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, labels
