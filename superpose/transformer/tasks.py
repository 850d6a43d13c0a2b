"""Sequence-to-sequence tasks whose cross-attention alignment is known exactly.

Each task samples (source, target) pairs and, with them, which source token every target token
corresponds to. A trained encoder–decoder's cross-attention pattern
(`decoder.{i}.cross_attn.hook_pattern`, [batch, head, tgt, src]) can then be scored against
that alignment with `alignment_score`: a head that attends where the alignment says scores
mass 1 and argmax accuracy 1, a uniform head scores `chance`.

Layout of a `Seq2SeqBatch` (b rows; S source and T target positions):

    src      [b, S]  source tokens, then [SEP]; [PAD] after (right) or before (left padding)
    tgt_in   [b, T]  [CLS] (the BOS), then the target tokens: the decoder's teacher-forced input
    tgt_out  [b, T]  the target tokens, then [SEP] (the EOS): what position t must predict;
                     -100 at padding (torch's ignore_index)
    src_mask, tgt_mask   True at real positions (tgt_mask covers BOS..last token = the EOS row)
    alignment [b, T, S]  alignment[b, t, s] is True iff the output at t (predicting
                     tgt_out[b, t]) corresponds to source position s

So tgt_in[:, 1:] == tgt_out[:, :-1] on real positions. The EOS row, and the source [SEP], align
to nothing: those rows are left out of `alignment_score` (only rows with at least one aligned
source position count). Special ids follow `SpecialTokenizer`: [PAD], [MASK], [CLS], [SEP] are
base.vocab_size + 0, 1, 2, 3 in each of the source and target vocabularies; BOS is [CLS], EOS
is [SEP].

Tasks:
- `ReverseTask`: source is a random string over the first `alphabet_size` characters of
  a–z A–Z 0–9, target its reversal; target t aligns to source L - 1 - t (the anti-diagonal).
- `NumberWordsTask`: source is a number in digits, one token per digit ("4072"); target is
  its American English name, one token per word ("four thousand seventy two"). Each word
  aligns to the digit(s) it spells, recorded while the words are generated
  (`number_words`): a ones or tens word to its digit, a teen ("thirteen") to both digits,
  "hundred" to the hundreds digit, a scale word ("thousand", "million", "billion") to the
  last digit of its group (the thousands digit for "thousand"). Zeros spelled by nothing
  ("4072"'s '0') align to nothing.
"""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from superpose import _validate as v
from superpose.gpt.tokenizers import CharTokenizer
from superpose.transformer.data import (
    IGNORE_INDEX,
    SpecialTokenizer,
    WordTokenizer,
    draw_generator,
    pad_sequences,
)

__all__ = [
    "NUMBER_WORDS", "NumberWordsTask", "ReverseTask", "Seq2SeqBatch", "Seq2SeqExample",
    "Seq2SeqTask", "alignment_score", "number_words",
]

Generator = torch.Generator | int | None
PaddingSide = Literal["right", "left"]


class Seq2SeqExample(NamedTuple):
    """One pair, before specials and padding: `src_ids` / `tgt_ids` are base-tokenizer ids,
    `alignment[t]` the source token indices (into `src_ids`) that target token t aligns to.
    (A NamedTuple, not a dataclass: tasks make one per example, and the test suite's runtime
    type checker re-compiles a dataclass's checked `__init__` on every construction.)"""

    src: str
    tgt: str
    src_ids: tuple[int, ...]
    tgt_ids: tuple[int, ...]
    alignment: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Seq2SeqBatch:
    """Padded tensors of a batch of examples; see the module docstring for the layout."""

    src: Int[Tensor, "batch src"]
    src_mask: Bool[Tensor, "batch src"]
    tgt_in: Int[Tensor, "batch tgt"]
    tgt_out: Int[Tensor, "batch tgt"]
    tgt_mask: Bool[Tensor, "batch tgt"]
    alignment: Bool[Tensor, "batch tgt src"]
    padding_side: str
    examples: tuple[Seq2SeqExample, ...]

    def __len__(self) -> int:
        return self.src.shape[0]

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        """The same batch with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: x.to(device) if isinstance(x, Tensor) else x for k, x in moved.items()}
        return Seq2SeqBatch(**moved)


class Seq2SeqTask(ABC):
    """What every task has: tokenizers (`SpecialTokenizer`s; BOS = [CLS], EOS = [SEP]), vocab
    sizes, the longest `src` row (`max_src_len`, [SEP] included) and the longest `tgt_in` /
    `tgt_out` row (`max_tgt_len`, BOS or EOS included) any sample can have, so a model's
    context must cover them; `sample`, `collate`, `batch`, `decode_target`, `exact_match`."""

    src_tokenizer: SpecialTokenizer
    tgt_tokenizer: SpecialTokenizer
    max_src_len: int
    max_tgt_len: int

    @property
    def src_vocab_size(self) -> int:
        return self.src_tokenizer.vocab_size

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt_tokenizer.vocab_size

    @abstractmethod
    def _sample(self, n: int, g: torch.Generator | None) -> list[Seq2SeqExample]: ...

    def sample(self, n: int, generator: Generator = None) -> list[Seq2SeqExample]:
        """`n` random examples. `generator`: a `torch.Generator`, an int seed, or None
        (torch's global generator)."""
        v.positive_int("n", n)
        return self._sample(n, draw_generator(generator))

    def collate(self, examples: Sequence[Seq2SeqExample], padding_side: PaddingSide = "right",
                *, pad_to_max: bool = False) -> Seq2SeqBatch:
        """Pad examples into a `Seq2SeqBatch`: to the longest row, or to `max_src_len` /
        `max_tgt_len` with `pad_to_max=True` (one shape for every batch)."""
        v.choice("padding_side", padding_side, ("right", "left"))
        examples = tuple(examples)
        if not examples:
            raise ValueError("examples is empty; collate needs at least one example")
        bad = [i for i, e in enumerate(examples) if not isinstance(e, Seq2SeqExample)]
        if bad:
            raise ValueError(f"examples[{bad[0]}] must be a Seq2SeqExample (from task.sample), "
                             f"got {type(examples[bad[0]]).__name__}")
        st, tt = self.src_tokenizer, self.tgt_tokenizer
        srcs = [torch.tensor([*e.src_ids, st.sep_id], dtype=torch.long) for e in examples]
        tins = [torch.tensor([tt.bos_id, *e.tgt_ids], dtype=torch.long) for e in examples]
        touts = [torch.tensor([*e.tgt_ids, tt.eos_id], dtype=torch.long) for e in examples]
        s_len = self.max_src_len if pad_to_max else None
        t_len = self.max_tgt_len if pad_to_max else None
        src, src_mask = pad_sequences(srcs, st.pad_id, padding_side, length=s_len)
        tgt_in, tgt_mask = pad_sequences(tins, tt.pad_id, padding_side, length=t_len)
        tgt_out, _ = pad_sequences(touts, 0, padding_side, length=t_len)
        tgt_out = tgt_out.masked_fill(~tgt_mask, IGNORE_INDEX)
        b, S, T = len(examples), src.shape[1], tgt_in.shape[1]
        alignment = torch.zeros((b, T, S), dtype=torch.bool)
        for i, e in enumerate(examples):
            s0 = 0 if padding_side == "right" else S - len(srcs[i])
            t0 = 0 if padding_side == "right" else T - len(tins[i])
            for t, sources in enumerate(e.alignment):
                for s in sources:
                    alignment[i, t0 + t, s0 + s] = True
        return Seq2SeqBatch(src, src_mask, tgt_in, tgt_out, tgt_mask, alignment,
                            padding_side, examples)

    def batch(self, n: int, generator: Generator = None, padding_side: PaddingSide = "right",
              *, pad_to_max: bool = False) -> Seq2SeqBatch:
        """`collate(sample(n, generator), padding_side, pad_to_max=pad_to_max)`."""
        v.choice("padding_side", padding_side, ("right", "left"))
        return self.collate(self.sample(n, generator), padding_side, pad_to_max=pad_to_max)

    def _target_ids(self, ids: Sequence[int]) -> list[int]:
        """Target body of one row of ids: PAD and -100 dropped, a leading BOS skipped, cut at
        the first EOS."""
        tt = self.tgt_tokenizer
        ids = [i for i in ids if i != tt.pad_id and i != IGNORE_INDEX]
        if ids and ids[0] == tt.bos_id:
            ids = ids[1:]
        if tt.eos_id in ids:
            ids = ids[:ids.index(tt.eos_id)]
        return ids

    def decode_target(self, ids: Int[Tensor, " pos"] | Sequence[int]) -> str:
        """The target text of one row of target ids (a `tgt_in`, `tgt_out` or generated row):
        padding and -100 are dropped, a leading BOS skipped, and the text ends at the first
        EOS. Other special ids show by name."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be one row (1-D), got shape {list(ids.shape)}; "
                                 "decode a batch one row at a time")
            ids = ids.tolist()
        return self.tgt_tokenizer.decode(self._target_ids(list(ids)))

    def exact_match(self, pred_ids: Int[Tensor, "batch pred"], batch: Seq2SeqBatch) -> float:
        """Fraction of rows whose prediction equals the target exactly.

        `pred_ids [batch, T']`: greedy predictions aligned with `tgt_out` (e.g.
        `logits.argmax(-1)` under teacher forcing) or generated rows (a leading BOS is
        skipped). [PAD] ids are dropped; when T' equals the batch's T, the positions
        `batch.tgt_mask` marks as padding are dropped too (whatever was predicted there);
        the row is then cut at its first EOS and compared with the target tokens.
        """
        if not isinstance(batch, Seq2SeqBatch):
            raise ValueError(f"batch must be a Seq2SeqBatch, got {type(batch).__name__}")
        if (not isinstance(pred_ids, Tensor) or pred_ids.dim() != 2
                or pred_ids.dtype.is_floating_point or pred_ids.dtype == torch.bool):
            raise ValueError("pred_ids must be a 2-D integer tensor [batch, pos] of predicted "
                             "target ids (take logits.argmax(-1))")
        if pred_ids.shape[0] != len(batch):
            raise ValueError(f"pred_ids has {pred_ids.shape[0]} rows but the batch has "
                             f"{len(batch)}; they must match")
        pred = pred_ids.detach().cpu().long()
        if pred.shape[1] == batch.tgt_in.shape[1]:
            pred = pred.masked_fill(~batch.tgt_mask.cpu(), self.tgt_tokenizer.pad_id)
        hits = sum(self._target_ids(row) == list(e.tgt_ids)
                   for row, e in zip(pred.tolist(), batch.examples))
        return hits / len(batch)


# ---- reversal -----------------------------------------------------------------------------

ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits


class ReverseTask(Seq2SeqTask):
    """Source: `min_len`..`max_len` characters drawn uniformly from the first `alphabet_size`
    of a–z A–Z 0–9 (lengths uniform too); target: the same string reversed. Target token t of
    a length-L source aligns to source token L - 1 - t.

    Both tokenizers are `SpecialTokenizer(CharTokenizer(letters))`: the letters in sorted
    order get ids 0..alphabet_size-1, CharTokenizer's `<unk>` is alphabet_size (never
    sampled), the specials follow.
    """

    def __init__(self, alphabet_size: int = 10, min_len: int = 1, max_len: int = 8) -> None:
        v.positive_int("alphabet_size", alphabet_size)
        if alphabet_size > len(ALPHABET):
            raise ValueError(f"alphabet_size must be at most {len(ALPHABET)} (a-z, A-Z, 0-9), "
                             f"got {alphabet_size}")
        v.positive_int("min_len", min_len)
        v.positive_int("max_len", max_len)
        if max_len < min_len:
            raise ValueError(f"max_len ({max_len}) must be at least min_len ({min_len})")
        self.alphabet_size, self.min_len, self.max_len = alphabet_size, min_len, max_len
        self.letters = "".join(sorted(ALPHABET[:alphabet_size]))
        self.src_tokenizer = SpecialTokenizer(CharTokenizer(self.letters))
        self.tgt_tokenizer = SpecialTokenizer(CharTokenizer(self.letters))
        self.max_src_len = max_len + 1
        self.max_tgt_len = max_len + 1

    def _sample(self, n: int, g: torch.Generator | None) -> list[Seq2SeqExample]:
        on = g.device if g is not None else torch.device("cpu")
        lengths = torch.randint(self.min_len, self.max_len + 1, (n,), generator=g, device=on)
        ids = torch.randint(0, self.alphabet_size, (n, self.max_len), generator=g, device=on)
        out = []
        for row, L in zip(ids.tolist(), lengths.tolist()):
            src = tuple(row[:L])
            text = "".join(self.letters[i] for i in src)
            out.append(Seq2SeqExample(text, text[::-1], src, src[::-1],
                                      tuple((L - 1 - t,) for t in range(L))))
        return out

    def __repr__(self) -> str:
        return (f"ReverseTask(alphabet_size={self.alphabet_size}, min_len={self.min_len}, "
                f"max_len={self.max_len})")


# ---- numbers in words ---------------------------------------------------------------------

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ("", "thousand", "million", "billion")
NUMBER_WORDS = (*ONES, *TEENS, *TENS[2:], "hundred", *SCALES[1:])
MAX_NUMBER = 10 ** 12 - 1


def number_words(value: int) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The American English words of `value` (0 .. 10**12 - 1, no "and") and, for each word,
    the indices of the digits of `str(value)` it spells. The alignment is written down as each
    word is emitted:

    >>> number_words(4072)
    (('four', 'thousand', 'seventy', 'two'), ((0,), (0,), (2,), (3,)))
    >>> number_words(513)
    (('five', 'hundred', 'thirteen'), ((0,), (0,), (1, 2)))
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NUMBER:
        raise ValueError(f"value must be an integer in [0, {MAX_NUMBER}], got {value!r}")
    digits = str(value)
    if value == 0:
        return ("zero",), ((0,),)
    # (word, digit positions) in order. No nested helper function: the test suite's runtime
    # type checker would re-compile a checked copy of it on every call (tasks call this once
    # per example).
    said: list[tuple[str, tuple[int, ...]]] = []

    n_groups = (len(digits) + 2) // 3
    for scale in range(n_groups - 1, -1, -1):           # most significant group first
        end = len(digits) - 3 * scale                     # one past the group's last digit
        pos = [p if p >= 0 else None for p in range(end - 3, end)]
        h, t, o = (int(digits[p]) if p is not None else 0 for p in pos)
        ph, pt, po = pos
        if h:
            said += [(ONES[h], (ph,)), ("hundred", (ph,))]
        if t == 1:
            said.append((TEENS[o], (pt, po)))
        else:
            if t:
                said.append((TENS[t], (pt,)))
            if o:
                said.append((ONES[o], (po,)))
        if scale and (h or t or o):
            said.append((SCALES[scale], (po,)))
    return tuple(w for w, _ in said), tuple(a for _, a in said)


def _longest_name(max_value: int) -> int:
    """The most words any value in [0, max_value] takes. A value below max_value shares a
    prefix with it, then has a smaller digit, then free digits; setting every free digit to 7
    never removes a word, so those candidates hold the maximum."""
    d = str(max_value)
    candidates = [max_value, 0]
    for i, c in enumerate(d):
        for smaller in range(int(c)):
            candidates.append(int(d[:i] + str(smaller) + "7" * (len(d) - i - 1)))
    return max(len(number_words(c)[0]) for c in candidates)


class NumberWordsTask(Seq2SeqTask):
    """Source: a number in [min_value, max_value] in digits, one token per digit; target: its
    English name, one token per word; alignment from `number_words` (module docstring).

    `distribution="digits"` (the default) draws the digit count uniformly among those the
    range holds, then the value uniformly among numbers with that many digits, so short
    numbers are as common as long ones; "uniform" draws the value uniformly from the range.

    Source tokenizer: `SpecialTokenizer(CharTokenizer("0123456789"))` (digits 0..9, `<unk>` 10,
    specials 11..14). Target tokenizer: `SpecialTokenizer(WordTokenizer(NUMBER_WORDS))` (the
    33 words, specials 33..36). `max_tgt_len` is exact for min_value = 0 (an upper bound
    otherwise).
    """

    def __init__(self, max_value: int = 9999, min_value: int = 0,
                 distribution: Literal["digits", "uniform"] = "digits") -> None:
        v.non_negative_int("min_value", min_value)
        v.non_negative_int("max_value", max_value)
        if max_value > MAX_NUMBER:
            raise ValueError(f"max_value must be at most {MAX_NUMBER} (the words go up to "
                             f"billions), got {max_value}")
        if max_value < min_value:
            raise ValueError(f"max_value ({max_value}) must be at least min_value "
                             f"({min_value})")
        v.choice("distribution", distribution, ("digits", "uniform"))
        self.min_value, self.max_value, self.distribution = min_value, max_value, distribution
        self.src_tokenizer = SpecialTokenizer(CharTokenizer("0123456789"))
        self.tgt_tokenizer = SpecialTokenizer(WordTokenizer(NUMBER_WORDS))
        self.max_src_len = len(str(max_value)) + 1
        self.max_tgt_len = _longest_name(max_value) + 1
        # value ranges [lo, hi] of each digit count the range holds
        self._ranges = []
        for n_digits in range(len(str(min_value)), len(str(max_value)) + 1):
            lo = max(min_value, 0 if n_digits == 1 else 10 ** (n_digits - 1))
            hi = min(max_value, 10 ** n_digits - 1)
            self._ranges.append((lo, hi))

    def example(self, value: int) -> Seq2SeqExample:
        """The example of one value."""
        words, align = number_words(value)
        digits = str(value)
        return Seq2SeqExample(digits, " ".join(words),
                              tuple(self.src_tokenizer.base.encode(digits).tolist()),
                              tuple(self.tgt_tokenizer.base.encode(" ".join(words)).tolist()),
                              align)

    def _sample(self, n: int, g: torch.Generator | None) -> list[Seq2SeqExample]:
        on = g.device if g is not None else torch.device("cpu")
        if self.distribution == "uniform":
            lo = torch.full((n,), self.min_value, dtype=torch.float64)
            hi = torch.full((n,), self.max_value, dtype=torch.float64)
        else:
            which = torch.randint(0, len(self._ranges), (n,), generator=g, device=on).cpu()
            table = torch.tensor(self._ranges, dtype=torch.float64)
            lo, hi = table[which, 0], table[which, 1]
        u = torch.rand((n,), generator=g, device=on, dtype=torch.float64).cpu()
        values = torch.minimum(lo + torch.floor(u * (hi - lo + 1)), hi).long()
        return [self.example(x) for x in values.tolist()]

    def __repr__(self) -> str:
        return (f"NumberWordsTask(max_value={self.max_value}, min_value={self.min_value}, "
                f"distribution={self.distribution!r})")


# ---- scoring cross-attention --------------------------------------------------------------

def alignment_score(pattern: Float[Tensor, "batch head tgt src"] | Float[Tensor, "batch tgt src"],
                    alignment: Bool[Tensor, "batch tgt src"], *,
                    tgt_mask: Bool[Tensor, "batch tgt"] | None = None,
                    src_mask: Bool[Tensor, "batch src"] | None = None
                    ) -> dict[str, Tensor | int]:
    """How well cross-attention follows a known alignment, per head.

    `pattern`: attention probabilities [batch, head, tgt, src] (or [batch, tgt, src], one
    head), e.g. `cache["decoder.0.cross_attn.hook_pattern"]` for a `Seq2SeqBatch` `b`;
    `alignment`, `tgt_mask`, `src_mask`: `b.alignment`, `b.tgt_mask`, `b.src_mask` (masks
    default to all real). Scored rows: real target rows with at least one aligned source
    position (so EOS rows are left out). Returns

        "mass" [head]             mean over scored rows of the attention on aligned positions
        "argmax_accuracy" [head]  fraction of scored rows whose most-attended real source
                                  position is aligned
        "chance" (0-dim)          the mass (and expected argmax accuracy) of uniform attention
                                  over the real source positions: mean of n_aligned / n_real
        "n_rows" (int)            how many rows were scored
    """
    if not isinstance(pattern, Tensor) or pattern.dim() not in (3, 4) \
            or not pattern.dtype.is_floating_point:
        raise ValueError("pattern must be a float tensor [batch, head, tgt, src] or [batch, "
                         f"tgt, src], got {getattr(pattern, 'shape', type(pattern).__name__)}")
    if pattern.dim() == 3:
        pattern = pattern[:, None]
    if not isinstance(alignment, Tensor) or alignment.dtype != torch.bool:
        raise ValueError("alignment must be a bool tensor [batch, tgt, src] (Seq2SeqBatch."
                         "alignment)")
    b, _, T, S = pattern.shape
    if tuple(alignment.shape) != (b, T, S):
        raise ValueError(f"alignment has shape {list(alignment.shape)} but pattern's [batch, "
                         f"tgt, src] is {[b, T, S]}; pass the batch the pattern was computed on")
    v.check_finite("alignment_score", "pattern", pattern)
    dev = pattern.device
    alignment = alignment.to(dev)
    masks = {}
    for name, m, shape in (("tgt_mask", tgt_mask, (b, T)), ("src_mask", src_mask, (b, S))):
        if m is None:
            m = torch.ones(shape, dtype=torch.bool, device=dev)
        elif not isinstance(m, Tensor) or m.dtype != torch.bool or tuple(m.shape) != shape:
            raise ValueError(f"{name} must be a bool tensor of shape {list(shape)}, got "
                             f"{getattr(m, 'dtype', type(m).__name__)} "
                             f"{list(getattr(m, 'shape', []))}")
        masks[name] = m.to(dev)
    tgt_mask, src_mask = masks["tgt_mask"], masks["src_mask"]
    if bool((alignment & ~src_mask[:, None, :]).any()):
        i = (alignment & ~src_mask[:, None, :]).nonzero()[0].tolist()
        raise ValueError(f"alignment{i} is True at a source position src_mask marks as padding; "
                         "pass the masks of the same batch as the alignment")
    rows = tgt_mask & alignment.any(dim=-1)                                  # [b, T]
    n_rows = int(rows.sum())
    if n_rows == 0:
        raise ValueError("no target row is both real and aligned to a source position, so "
                         "there is nothing to score; check tgt_mask and alignment")
    al = alignment[:, None].to(pattern.dtype)                               # [b, 1, T, S]
    mass_rows = (pattern * al).sum(dim=-1)                                  # [b, h, T]
    masked = pattern.masked_fill(~src_mask[:, None, None, :], float("-inf"))
    top = masked.argmax(dim=-1)                                             # [b, h, T]
    hit = torch.gather(alignment[:, None].expand(-1, pattern.shape[1], -1, -1), -1,
                       top[..., None])[..., 0]                               # [b, h, T]
    w = rows[:, None].to(pattern.dtype)
    mass = (mass_rows * w).sum(dim=(0, 2)) / n_rows
    acc = (hit.to(pattern.dtype) * w).sum(dim=(0, 2)) / n_rows
    share = alignment.sum(-1).to(pattern.dtype) / src_mask.sum(-1, keepdim=True).clamp(min=1)
    chance = (share * rows).sum() / n_rows
    return {"mass": mass, "argmax_accuracy": acc, "chance": chance, "n_rows": n_rows}
