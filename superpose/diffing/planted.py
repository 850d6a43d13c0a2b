"""The planted behaviour and how a model follows it: the rule, its text and evaluation batch,
the behaviour score, the loss off the trigger, and the activations of the difference.

The planted rule (a "fixed substitution"). A trigger character that is rare in the corpus
(`rare_character`: the least frequent printable punctuation character of the tokenizer's
vocabulary) is inserted right before randomly chosen words of the fine-tuning text, and the
word after it is written in UPPERCASE: "return value" -> "return $VALUE". A word is a maximal
run of lowercase ASCII letters not touching another letter, digit or underscore (so the rule
changes every letter of it). The base model never saw the rule; natural occurrences of the
trigger are deleted from planted text, so every trigger in it obeys the rule.

The behaviour score (`behaviour_rate`). At a position whose next character begins a word, does
the model prefer the uppercase variant of that next letter to the lowercase one
(logit[upper] > logit[lower])? At trigger positions (the input is the trigger) a model that
learned the rule says yes; at the other word starts it should still say no, like the base
model. Comparing the two case variants of the true letter separates the rule from the skill of
guessing which word comes (a top-1 criterion would mostly measure the latter). Off the trigger,
the fine-tune must keep the base's behaviour: `off_trigger_loss` is the next-token loss of both
models on clean (trigger-free) text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose.gpt.corpus import TokenDataset
from superpose.gpt.tokenizers import CharTokenizer

# A word: lowercase ASCII letters touching no other letter, digit or underscore.
WORD = re.compile(r"(?<![A-Za-z0-9_])[a-z]+(?![A-Za-z0-9_])")


def rare_character(text: str, tokenizer: CharTokenizer) -> str:
    """The least frequent printable punctuation character of `tokenizer`'s vocabulary in
    `text` (not a letter, digit, space or underscore, so it never joins a word; ties: the
    lowest code point). A trigger the base model has barely seen."""
    _check_tokenizer(tokenizer)
    counts = Counter(text)
    pool = [c for c in tokenizer.chars if c.isprintable() and not c.isspace()
            and not c.isalnum() and c != "_"]
    if not pool:
        raise ValueError("the tokenizer's vocabulary has no printable punctuation character; "
                         "pass a trigger to PlantedRule yourself")
    return min(pool, key=lambda c: (counts[c], c))


def _check_tokenizer(tokenizer: Any) -> None:
    if not isinstance(tokenizer, CharTokenizer):
        raise TypeError(f"the planted rule works on characters and needs a CharTokenizer (one "
                        f"token per character), got {type(tokenizer).__name__}")


@dataclass
class Planted:
    """Text with the rule planted: `text`, the character positions of its triggers
    (`trigger_pos`, each followed by an uppercased word of `word_len` letters) and how many
    words could have had one (`n_words`)."""

    text: str
    trigger_pos: list[int]
    word_len: list[int]
    n_words: int


@dataclass
class TriggerBatch:
    """Evaluation windows of planted text, with what the rule says at every position.

    tokens: the model's input [batch pos]; targets: the next tokens [batch pos].
    trigger: the input is the trigger (the next token is an uppercased word's first letter).
    word_start: the input is not the trigger and the next token begins a (lowercase) word:
      where the rule would apply had a trigger been there.
    span: the input is the trigger or a letter of the uppercased word after it (where the
      fine-tune's computation differs because of the rule).
    upper, lower: ids of the uppercase and lowercase variants of the next letter (-1 where the
      next token is not a letter)."""

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    trigger: Bool[Tensor, "batch pos"]
    word_start: Bool[Tensor, "batch pos"]
    span: Bool[Tensor, "batch pos"]
    upper: Int[Tensor, "batch pos"]
    lower: Int[Tensor, "batch pos"]

    def where(self, positions: Literal["trigger", "word_start"]) -> Tensor:
        v.choice("positions", positions, ("trigger", "word_start"))
        return self.trigger if positions == "trigger" else self.word_start


@dataclass(frozen=True)
class PlantedRule:
    """After `trigger`, the next word is written in uppercase (see the module docstring).

    trigger: one character, not a letter, digit, space or underscore (`rare_character`).
    rate: the fraction of words that get a trigger in planted text.
    min_word_len: shorter words are never triggered.
    """

    trigger: str
    rate: float = 0.1
    min_word_len: int = 2

    def __post_init__(self) -> None:
        t = self.trigger
        if not isinstance(t, str) or len(t) != 1:
            raise ValueError(f"trigger must be one character, got {t!r}")
        if t.isalnum() or t.isspace() or t == "_" or not t.isprintable():
            raise ValueError(f"trigger {t!r} must be a printable character that is not a "
                             "letter, digit, space or underscore (it would join or split "
                             "words); rare_character(text, tokenizer) picks one")
        if not v.Float(gt=0, le=1).ok(self.rate):
            raise ValueError(f"rate must be a number in (0, 1], got {self.rate!r}")
        v.positive_int("min_word_len", self.min_word_len)

    def plant(self, text: str, *, seed: int = 0) -> Planted:
        """`text` with natural triggers deleted, then a trigger before each word with
        probability `rate` (a `seed`-ed draw) and that word uppercased."""
        if not isinstance(text, str):
            raise TypeError(f"plant takes a str, got {type(text).__name__}")
        text = text.replace(self.trigger, "")
        words = [m for m in WORD.finditer(text) if m.end() - m.start() >= self.min_word_len]
        chosen = np.random.default_rng(seed).random(len(words)) < self.rate
        parts, pos, lens, last, n_out = [], [], [], 0, 0
        for m, hit in zip(words, chosen):
            if not hit:
                continue
            parts.append(text[last:m.start()])
            n_out += m.start() - last
            pos.append(n_out)
            lens.append(m.end() - m.start())
            parts.append(self.trigger + m.group().upper())
            n_out += 1 + m.end() - m.start()
            last = m.end()
        parts.append(text[last:])
        return Planted(text="".join(parts), trigger_pos=pos, word_len=lens, n_words=len(words))

    def _check_vocab(self, tokenizer: CharTokenizer) -> None:
        _check_tokenizer(tokenizer)
        missing = [c for c in self.trigger + "abcdefghijklmnopqrstuvwxyz"
                   + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in tokenizer._stoi]
        if self.trigger in missing:
            raise ValueError(f"trigger {self.trigger!r} is not in the tokenizer's vocabulary "
                             f"({tokenizer.vocab_size} tokens); pick one it has, e.g. "
                             "rare_character(text, tokenizer)")
        if missing:
            raise ValueError(f"the rule needs both cases of every ASCII letter, and the "
                             f"tokenizer lacks {missing}; fit it on a text that has them")

    def tokens(self, tokenizer: CharTokenizer, text: str, *, seed: int = 0
               ) -> Int[Tensor, " n_tokens"]:
        """The planted text's token ids (every character must be in the vocabulary)."""
        self._check_vocab(tokenizer)
        return tokenizer.encode(self.plant(text, seed=seed).text, errors="strict")

    def dataset(self, tokenizer: CharTokenizer, text: str, n_ctx: int, *, seed: int = 0
                ) -> TokenDataset:
        """Fine-tuning data: windows of the planted text (`gpt.train` draws them)."""
        return TokenDataset(self.tokens(tokenizer, text, seed=seed), n_ctx)

    def batch(self, tokenizer: CharTokenizer, text: str, n_ctx: int, *, seed: int = 0,
              max_windows: int | None = None) -> TriggerBatch:
        """Non-overlapping evaluation windows (input `n_ctx` tokens plus the next one) of
        `text` with the rule planted, and the rule's labels (`TriggerBatch`)."""
        v.positive_int("n_ctx", n_ctx)
        self._check_vocab(tokenizer)
        planted = self.plant(text, seed=seed)
        ids = tokenizer.encode(planted.text, errors="strict")
        n = (len(ids) - 1) // n_ctx
        if max_windows is not None:
            v.positive_int("max_windows", max_windows)
            n = min(n, max_windows)
        if n < 1:
            raise ValueError(f"the text holds {len(ids)} tokens, too few for one window of "
                             f"n_ctx={n_ctx} (+1); pass a longer text or a smaller n_ctx")
        end = n * n_ctx + 1
        win = ids[:end]
        x, y = win[:-1].view(n, n_ctx), win[1:].view(n, n_ctx)
        stoi = tokenizer._stoi
        upper = torch.full((tokenizer.vocab_size,), -1, dtype=torch.long)
        lower = upper.clone()
        is_lower = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
        for c in "abcdefghijklmnopqrstuvwxyz":
            for variant in (c, c.upper()):
                upper[stoi[variant]], lower[stoi[variant]] = stoi[c.upper()], stoi[c]
            is_lower[stoi[c]] = True
        # word starts: a lowercase word of the planted text (the rule's definition) begins at
        # the next token, and the input is not the trigger
        starts = torch.zeros(end, dtype=torch.bool)
        for m in WORD.finditer(planted.text[:end]):
            if m.end() - m.start() >= self.min_word_len:
                starts[m.start()] = True
        span = torch.zeros(end, dtype=torch.bool)
        for p, k in zip(planted.trigger_pos, planted.word_len):
            if p < end:
                span[p:p + 1 + k] = True
        trig = x == stoi[self.trigger]
        word_start = starts[1:].view(n, n_ctx) & ~trig & is_lower[y]
        return TriggerBatch(tokens=x, targets=y, trigger=trig, word_start=word_start,
                            span=span[:-1].view(n, n_ctx), upper=upper[y], lower=lower[y])


# ---- the behaviour and the loss off the trigger ---------------------------------------------

def _check_model(model: Any, name: str) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "hook_dict"):
        raise TypeError(f"{name} must be a hooked model (a HookedRootModule such as gpt.GPT), "
                        f"got {type(model).__name__}")


@torch.no_grad()
def _logits(model: nn.Module, tokens: Tensor, fwd_hooks: Sequence[tuple[str, Any]] = (),
            batch_size: int = 64) -> Tensor:
    dev = next(model.parameters()).device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        x = tokens[start:start + batch_size].to(dev)
        hs = [(name, fn(start, x.shape[0])) for name, fn in fwd_hooks]
        out.append(model.run_with_hooks(x, fwd_hooks=hs) if hs else model(x))
    return torch.cat(out).float().cpu()


def case_preference(logits: Float[Tensor, "batch pos d_vocab"], batch: TriggerBatch,
                    mask: Bool[Tensor, "batch pos"]) -> float:
    """The fraction of `mask`ed positions where logit[upper] > logit[lower] of the next
    letter (NaN when `mask` is empty)."""
    if not bool(mask.any()):
        return float("nan")
    lg = logits[mask]
    up = lg.gather(-1, batch.upper[mask][:, None]).squeeze(-1)
    lo = lg.gather(-1, batch.lower[mask][:, None]).squeeze(-1)
    return float((up > lo).float().mean())


def behaviour_rate(model: nn.Module, batch: TriggerBatch,
                   positions: Literal["trigger", "word_start"] = "trigger", *,
                   fwd_hooks: Sequence[tuple[str, Any]] = ()) -> float:
    """How often `model` follows the rule at `positions` of `batch` (see the module
    docstring): at "trigger" positions the fine-tune should be near 1 and the base near 0; at
    other "word_start"s both near the base rate. `fwd_hooks`: (hook name, factory) pairs from
    `steering_hooks`, applied during the forward passes."""
    _check_model(model, "model")
    mask = batch.where(positions)
    return case_preference(_logits(model, batch.tokens, fwd_hooks), batch, mask)


@dataclass
class OffTriggerLoss:
    """Next-token loss (nats/token) of both models on clean text, and `delta` = ft − base."""

    base: float
    finetuned: float

    @property
    def delta(self) -> float:
        return self.finetuned - self.base


@torch.no_grad()
def off_trigger_loss(base: nn.Module, finetuned: nn.Module, tokens: Int[Tensor, "batch pos"]
                     ) -> OffTriggerLoss:
    """Mean next-token cross-entropy of each model on `tokens` (clean text, no triggers)."""
    _check_pair(base, finetuned)
    _check_tokens(tokens)
    losses = []
    for m in (base, finetuned):
        lg = _logits(m, tokens)
        losses.append(float(nn.functional.cross_entropy(
            lg[:, :-1].reshape(-1, lg.shape[-1]), tokens[:, 1:].reshape(-1))))
    return OffTriggerLoss(base=losses[0], finetuned=losses[1])


def _check_tokens(tokens: Any) -> None:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
        got = (f"{tokens.dtype} {list(tokens.shape)}" if isinstance(tokens, Tensor)
               else type(tokens).__name__)
        raise ValueError(f"tokens must be a [batch, pos] tensor of token ids (int64), got {got}")


def _check_pair(base: Any, finetuned: Any) -> None:
    _check_model(base, "base")
    _check_model(finetuned, "finetuned")
    if type(base) is not type(finetuned) or getattr(base, "cfg", None) != getattr(
            finetuned, "cfg", None):
        raise ValueError(f"base ({type(base).__name__}) and finetuned "
                         f"({type(finetuned).__name__}) must be the same architecture with the "
                         "same config: a model and its fine-tune (e.g. a deep copy with "
                         "lora.add)")


# ---- activations of the difference ---------------------------------------------------------

@torch.no_grad()
def diff_activations(base: nn.Module, finetuned: nn.Module, hook_name: str,
                     tokens: Int[Tensor, "batch pos"], *, batch_size: int = 32
                     ) -> Float[Tensor, "n d_in"]:
    """finetuned − base activation at `hook_name` on the same tokens, one row per position
    (batch-major, N = batch·pos): what a diff-SAE trains on."""
    from superpose.sae.crosscoder import paired_activations

    _check_pair(base, finetuned)
    _check_tokens(tokens)
    x = paired_activations([base, finetuned], hook_name, tokens, batch_size=batch_size)
    return x[:, 1] - x[:, 0]
