"""Model diffing: plant a behaviour with a known cause in a fine-tune, then find it again.

    rule = diffing.PlantedRule(trigger=diffing.rare_character(corpus.train, tok))
    ft = copy.deepcopy(base); lora.add(ft, ["blocks.*.attn.W_O", "blocks.*.mlp.W_out"], rank=4)
    gpt.train(ft, rule.dataset(tok, corpus.train, n_ctx=64), steps=300)
    batch = rule.batch(tok, corpus.val, n_ctx=64)
    diffing.behaviour_rate(ft, batch), diffing.behaviour_rate(base, batch)    # ~1 vs ~0
    diffing.off_trigger_loss(base, ft, clean_tokens).delta                    # small
    cands = [diffing.lora_candidate(ft, batch), diffing.latent_candidate(...), ...]
    diffing.compare([diffing.score(c, base, ft, batch) for c in cands])

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

Three ways to find the behaviour, each giving a `Candidate`: a direction in the residual stream
(for steering) plus its activation at every position of an evaluation batch (for "does it fire
on the trigger"):
  1. a crosscoder on paired activations of base and fine-tune (`superpose.sae.crosscoder`):
     the fine-tuned-only latents (decoder norms, checked by Latent Scaling; when there are
     none, every latent), the one with the highest relative decoder norm; direction
     W_dec[j, ft] − W_dec[j, base];
  2. a diff-SAE, an ordinary SAE on ft − base activations (`diff_activations`): the latent with
     the largest total activation; direction its decoder row;
  3. the LoRA weights themselves (`lora_directions`): the SVD of each ΔW = U S Vᵀ; among the
     adapters that write into the residual stream (W_O, W_out), the one with the largest σ₁.
     Its direction is σ₁u₁ (what the adapter writes per unit of input along v₁) and its
     activation the rank-1 readout x·v₁ of the weight's input x (read from the adapter's own
     hook, x Aᵀ, as v₁ lies in the row space of A).
Each pick uses only what the method itself sees (no trigger labels); `score` then checks it
against the known trigger and rule:
  - fires: AUROC and precision@k (k = number of trigger positions) of the activation at the
    trigger positions against all others, and the mean activation on and off the trigger;
  - steering on: add the direction (times its typical activation, the mean of its top 1% of
    values, times `scale`) at the non-trigger word starts, in the fine-tune and in the base,
    and measure the behaviour rate there;
  - steering off: project the direction out of the fine-tune's activation at the trigger
    positions and measure the behaviour rate there.
A direction's sign is free in the SVD; `orient` fixes it without labels (the heavier tail of
its activations is positive).

Models are TransformerLens-style HookedRootModules mapping tokens [batch pos] to logits (the
GPT, or anything with hook points); the planted text needs a character-level tokenizer (one
token per character), as the trigger and the rule are characters.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose import hooks, lora
from superpose.gpt.corpus import TokenDataset
from superpose.gpt.tokenizers import CharTokenizer

__all__ = ["Candidate", "Firing", "LoRADirections", "OffTriggerLoss", "Planted", "PlantedRule",
           "TriggerBatch", "auroc", "behaviour_rate", "compare", "contribution_hooks",
           "crosscoder_candidate", "diff_activations", "diff_sae_candidate", "firing",
           "kl_ablation", "kl_attribution", "kl_divergence", "kl_gradient", "kl_sign",
           "lora_candidate", "lora_directions", "lora_readout", "off_trigger_loss", "orient",
           "rare_character", "score", "steering_hooks", "writer_hook"]

# A word: lowercase ASCII letters touching no other letter, digit or underscore.
WORD = re.compile(r"(?<![A-Za-z0-9_])[a-z]+(?![A-Za-z0-9_])")
TOP_FRACTION = 0.01       # a direction's typical activation: the mean of its top 1% of values


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


# ---- LoRA directions -----------------------------------------------------------------------

@dataclass
class LoRADirections:
    """The SVD of one adapter's ΔW = U diag(S) Vᵀ ([d_out, d_in], F.linear layout), top
    `rank` components: U [d_out, rank] (where it writes), V [d_in, rank] (what it reads),
    and `coords` [adapter rank, rank] with Aᵀ coords = V, so x·V = (x Aᵀ) coords: the readout
    from the adapter's hook_act."""

    weight: str
    S: Tensor
    U: Tensor
    V: Tensor
    coords: Tensor


@torch.no_grad()
def lora_directions(model: nn.Module, weights: Sequence[str] | None = None
                    ) -> dict[str, LoRADirections]:
    """`LoRADirections` of each adapted weight of `model` (all of them, or `weights`)."""
    ads = lora.adapters(model)
    if not ads:
        raise ValueError("the model has no LoRA adapters; add them with lora.add(model, ...)")
    names = list(ads) if weights is None else list(weights)
    for w in names:
        if w not in ads:
            raise ValueError(f"{w!r} has no adapter; adapted weights: {list(ads)}"
                             + (f"; close matches: {v.close_matches(w, list(ads))}"
                                if v.close_matches(w, list(ads)) else ""))
    out = {}
    for w in names:
        ad = ads[w]
        dw = lora.delta_matrix(model, w).detach().double().cpu()
        u, s, vh = torch.linalg.svd(dw, full_matrices=False)
        r = min(ad.rank, s.numel())
        u, s, vt = u[:, :r], s[:r], vh[:r].T
        a = ad.A.detach().double().cpu()                       # [rank, d_in]
        coords = torch.linalg.lstsq(a.T, vt).solution          # Aᵀ coords = V
        out[w] = LoRADirections(weight=w, S=s.float(), U=u.float(), V=vt.float(),
                                coords=coords.float())
    return out


_WRITERS = {"attn.W_O": "hook_attn_out", "mlp.W_out": "hook_mlp_out"}


def writer_hook(weight: str) -> str | None:
    """The residual-stream hook a weight writes into (`blocks.{i}.attn.W_O` ->
    `blocks.{i}.hook_attn_out`, `blocks.{i}.mlp.W_out` -> `blocks.{i}.hook_mlp_out`), or None
    for a weight whose output is not the residual stream (W_Q, W_K, W_V, W_in)."""
    m = re.fullmatch(r"(blocks\.\d+)\.(attn\.W_O|mlp\.W_out)", weight)
    return f"{m.group(1)}.{_WRITERS[m.group(2)]}" if m else None


@torch.no_grad()
def lora_readout(model: nn.Module, weight: str, tokens: Int[Tensor, "batch pos"], *,
                 component: int = 0, directions: LoRADirections | None = None,
                 batch_size: int = 64) -> Float[Tensor, "batch pos"]:
    """The rank-1 readout x·v of the adapted weight's input x on the `component`-th right
    singular vector of its ΔW, at every position of `tokens` (read from the adapter's hook
    point, x Aᵀ, summed over heads for per-head inputs)."""
    _check_tokens(tokens)
    d = directions if directions is not None else lora_directions(model, [weight])[weight]
    if not 0 <= component < d.S.numel():
        raise ValueError(f"component must be in [0, {d.S.numel() - 1}] for {weight!r}, got "
                         f"{component!r}")
    name = lora.hook_name(weight)
    hooks.check_hook_name(model, name)
    dev = next(model.parameters()).device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        act = hooks.capture(model, [name], tokens[start:start + batch_size].to(dev))[name]
        if act.ndim == 4:                          # per-head inputs: [batch pos head rank]
            act = act.sum(2)
        out.append(act.float().cpu() @ d.coords[:, component])
    return torch.cat(out)


# ---- scoring -------------------------------------------------------------------------------

def auroc(scores: Float[Tensor, "..."], labels: Bool[Tensor, "..."]) -> float:
    """Area under the ROC curve of `scores` separating `labels` True from False (the
    Mann–Whitney statistic, ties counted half): 1 = every positive above every negative,
    0.5 = chance."""
    s = scores.detach().flatten().double().cpu()
    y = labels.detach().flatten().bool().cpu()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same shape, got {list(scores.shape)}"
                         f" and {list(labels.shape)}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs positives and negatives, got {n_pos} and {n_neg}")
    _, inv, counts = torch.unique(s, return_inverse=True, return_counts=True)
    upto = counts.cumsum(0).double()
    ranks = (upto - (counts.double() - 1) / 2)[inv]           # average rank, 1-based
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class Firing:
    """How well an activation picks out the trigger: `auroc`, `precision_at_k` (the share of
    trigger positions among the k highest activations, k = number of trigger positions) and
    the mean activation on and off the trigger."""

    auroc: float
    precision_at_k: float
    mean_on: float
    mean_off: float


def firing(scores: Float[Tensor, "batch pos"], labels: Bool[Tensor, "batch pos"]) -> Firing:
    """`Firing` of `scores` against `labels` (the trigger positions)."""
    a = auroc(scores, labels)
    s, y = scores.flatten().double(), labels.flatten().bool()
    k = int(y.sum())
    top = s.topk(k).indices
    return Firing(auroc=a, precision_at_k=float(y[top].double().mean()),
                  mean_on=float(s[y].mean()), mean_off=float(s[~y].mean()))


def orient(scores: Tensor, fraction: float = TOP_FRACTION) -> int:
    """+1 or -1: the sign that puts the extreme tail of `scores` on the positive side (the sign
    of the summed deviations from the median of the `fraction` of values farthest from it),
    to orient a direction whose sign is free without looking at labels."""
    s = scores.detach().flatten().double()
    dev = s - s.median()
    k = max(1, math.ceil(fraction * s.numel()))
    far = dev.abs().topk(k).indices
    return 1 if float(dev[far].sum()) >= 0 else -1


def typical_activation(scores: Tensor, fraction: float = TOP_FRACTION) -> float:
    """The mean of the top `fraction` of `scores`: how strongly a direction is present where
    it is present (the steering magnitude; no labels used)."""
    s = scores.detach().flatten().double()
    k = max(1, math.ceil(fraction * s.numel()))
    return float(s.topk(k).values.mean())


def steering_hooks(hook_name: str, direction: Float[Tensor, " d"],
                   mask: Bool[Tensor, "batch pos"], mode: Literal["add", "ablate"] = "add",
                   *, scale: float = 1.0) -> list[tuple[str, Any]]:
    """Forward-hook factories for `behaviour_rate(..., fwd_hooks=...)` (and `_logits`) that
    change the activation at `hook_name` [batch pos d] at the `mask`ed positions only:
    "add" adds `scale`·direction; "ablate" projects the direction out (x − (x·d̂)d̂).
    A factory takes (first row, rows) of the forward's chunk of the batch."""
    v.choice("mode", mode, ("add", "ablate"))
    if direction.ndim != 1 or not bool(direction.norm() > 0):
        raise ValueError(f"direction must be a non-zero vector [d], got shape "
                         f"{list(direction.shape)}")
    d = direction.detach().float()
    unit = d / d.norm()

    def factory(start: int, rows: int) -> Any:
        m = mask[start:start + rows]

        def hook(act: Tensor, hook: Any = None) -> Tensor:
            if act.shape[:2] != m.shape or act.shape[-1] != d.numel():
                raise ValueError(f"steering at {hook_name}: activation {list(act.shape)} does "
                                 f"not match mask {list(m.shape)} and direction [{d.numel()}]")
            mm = m.to(act.device)[..., None]
            if mode == "add":
                return act + mm * (scale * d.to(act))
            u = unit.to(act)
            return act - mm * (act @ u)[..., None] * u
        return hook

    return [(hook_name, factory)]


@dataclass
class Candidate:
    """One method's best guess at the planted behaviour: a `direction` [d] at `hook_name`
    (with its natural magnitude: typical activation × what one unit of activation writes) and
    its `activation` at every position of the evaluation batch [batch pos]; `info` holds what
    the method saw when it picked it."""

    method: str
    name: str
    hook_name: str
    direction: Tensor
    activation: Tensor
    info: dict[str, Any] = field(default_factory=dict)


def score(candidate: Candidate, base: nn.Module, finetuned: nn.Module, batch: TriggerBatch,
          *, scales: Sequence[float] = (1.0, 2.0)) -> dict[str, Any]:
    """Check `candidate` against the known trigger and rule: firing on the trigger, steering
    the behaviour on at non-trigger word starts (fine-tune and base, each `scale` × the
    direction), and off at the trigger (ablating the direction from the fine-tune)."""
    _check_pair(base, finetuned)
    c = candidate
    hooks.check_hook_name(finetuned, c.hook_name)
    if tuple(c.activation.shape) != tuple(batch.tokens.shape):
        raise ValueError(f"candidate {c.name!r}: activation {list(c.activation.shape)} must be "
                         f"[batch, pos] of the evaluation batch {list(batch.tokens.shape)}")
    f = firing(c.activation, batch.trigger)
    row: dict[str, Any] = {"method": c.method, "candidate": c.name, "hook": c.hook_name,
                           "auroc": f.auroc, "precision_at_k": f.precision_at_k,
                           "mean_on": f.mean_on, "mean_off": f.mean_off,
                           "auroc_span": auroc(c.activation, batch.span),
                           "direction_norm": float(c.direction.norm())}
    row["rate_ft_trigger"] = behaviour_rate(finetuned, batch, "trigger")
    row["rate_ft_ablated"] = behaviour_rate(
        finetuned, batch, "trigger",
        fwd_hooks=steering_hooks(c.hook_name, c.direction, batch.trigger, "ablate"))
    row["rate_ft_word"] = behaviour_rate(finetuned, batch, "word_start")
    row["rate_base_word"] = behaviour_rate(base, batch, "word_start")
    for s in scales:
        hs = steering_hooks(c.hook_name, c.direction, batch.word_start, "add", scale=s)
        row[f"rate_ft_steered_x{s:g}"] = behaviour_rate(finetuned, batch, "word_start",
                                                        fwd_hooks=hs)
        row[f"rate_base_steered_x{s:g}"] = behaviour_rate(base, batch, "word_start",
                                                          fwd_hooks=hs)
    row["info"] = c.info
    return row


def compare(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of `score` rows: method, candidate, AUROC, precision@k, behaviour
    rate at word starts steered on (fine-tune, scale 1), at the trigger ablated."""
    head = (f"{'method':<11} {'candidate':<28} {'AUROC':>6} {'P@k':>5} {'on(ft)':>7} "
            f"{'on(base)':>8} {'trig':>5} {'off':>5}")
    lines = [head]
    for r in rows:
        on_ft = next((r[k] for k in r if k.startswith("rate_ft_steered_x")), float("nan"))
        on_b = next((r[k] for k in r if k.startswith("rate_base_steered_x")), float("nan"))
        lines.append(f"{r['method']:<11} {r['candidate'][:28]:<28} {r['auroc']:6.3f} "
                     f"{r['precision_at_k']:5.2f} {on_ft:7.2f} {on_b:8.2f} "
                     f"{r['rate_ft_trigger']:5.2f} {r['rate_ft_ablated']:5.2f}")
    return "\n".join(lines)


# ---- behavioural (KL) attribution -----------------------------------------------------------

def _chunk_hooks(fwd_hooks: Sequence[tuple[str, Any]], start: int, rows: int
                 ) -> list[tuple[str, Any]]:
    return [(name, fn(start, rows)) for name, fn in fwd_hooks]


def kl_divergence(base: nn.Module, finetuned: nn.Module, tokens: Int[Tensor, "batch pos"], *,
                  fwd_hooks: Sequence[tuple[str, Any]] = (), batch_size: int = 64
                  ) -> Float[Tensor, "batch pos"]:
    """KL(p_ft || p_base) of the two models' next-token distributions at every position of
    `tokens` (nats). `fwd_hooks`: (hook name, factory) pairs (as `steering_hooks` makes)
    applied to the fine-tune's forward only."""
    _check_pair(base, finetuned)
    _check_tokens(tokens)
    lb = _logits(base, tokens, batch_size=batch_size).log_softmax(-1)
    lf = _logits(finetuned, tokens, fwd_hooks, batch_size=batch_size).log_softmax(-1)
    return (lf.exp() * (lf - lb)).sum(-1)


def kl_gradient(base: nn.Module, finetuned: nn.Module, hook_names: str | Sequence[str],
                tokens: Int[Tensor, "batch pos"], *, batch_size: int = 32
                ) -> dict[str, Tensor]:
    """∇ of the mean KL(p_ft || p_base) over all positions of `tokens` with respect to the
    fine-tune's activation at each of `hook_names`: {name: [batch pos d]} (one forward of the
    base, one forward and backward of the fine-tune per chunk of `batch_size` sequences, all
    hooks at once). The gradient at a position includes the KL at later positions that it
    reaches through attention, which is what ablating there at every position changes."""
    _check_pair(base, finetuned)
    _check_tokens(tokens)
    names = [hook_names] if isinstance(hook_names, str) else list(dict.fromkeys(hook_names))
    if not names:
        raise ValueError("kl_gradient needs at least one hook name, got none")
    for h in names:
        hooks.check_hook_name(finetuned, h)
    v.positive_int("batch_size", batch_size)
    dev = next(finetuned.parameters()).device
    n = tokens.numel()
    out: dict[str, list[Tensor]] = {h: [] for h in names}
    for start in range(0, tokens.shape[0], batch_size):
        x = tokens[start:start + batch_size].to(dev)
        with torch.no_grad():
            lb = base(x).float().log_softmax(-1)
        leaves: dict[str, Tensor] = {}

        def make(h: str, leaves: dict[str, Tensor] = leaves) -> Any:
            def hook(act: Tensor, hook: Any = None) -> Tensor:
                # a zero leaf added to the activation: its gradient is the activation's, and
                # no path through the hook is cut (later hooks' gradients stay complete)
                z = torch.zeros_like(act, requires_grad=True)
                leaves[h] = z
                return act + z
            return hook

        with torch.enable_grad():
            lf = finetuned.run_with_hooks(x, fwd_hooks=[(h, make(h)) for h in names])
            lf = lf.float().log_softmax(-1)
            kl = (lf.exp() * (lf - lb)).sum() / n
            grads = torch.autograd.grad(kl, [leaves[h] for h in names])
        for h, g in zip(names, grads):
            out[h].append(g.detach().float().cpu())
    return {h: torch.cat(gs) for h, gs in out.items()}


def kl_attribution(base: nn.Module, finetuned: nn.Module, hook_name: str,
                   tokens: Int[Tensor, "batch pos"], directions: Float[Tensor, "n d"],
                   activations: Float[Tensor, "batch pos n"], *, grad: Tensor | None = None,
                   chunk: int = 8192) -> Float[Tensor, " n"]:
    """Behavioural attribution of `n` candidate contributions to the fine-tune's residual
    stream at `hook_name`: candidate c writes activations[..., c] · directions[c] at every
    position of `tokens`; its score is the first-order estimate of how much removing that
    contribution from the fine-tune lowers the mean KL(p_ft || p_base) over the positions,
    Σ_pos a_c(pos) · (d_c · ∇_{x(pos)} mean KL) (attribution patching: Nanda 2023, Syed et
    al. 2023). Positive: the candidate carries part of the fine-tune's output difference from
    the base; it is invariant under (a, d) -> (−a, −d). `grad`: a precomputed
    `kl_gradient(...)[hook_name]` on the same tokens (else computed here).

    Which tokens: unlabeled text the fine-tune differs on, e.g. the fine-tuning data (a
    researcher diffing a fine-tune has it, not the labels of what it planted)."""
    _check_tokens(tokens)
    if directions.ndim != 2:
        raise ValueError(f"directions must be [n_candidates, d], got {list(directions.shape)}")
    n_cand, d = directions.shape
    if tuple(activations.shape) != (*tokens.shape, n_cand):
        raise ValueError(f"activations must be [batch, pos, n_candidates] = "
                         f"{[*tokens.shape, n_cand]}, got {list(activations.shape)}")
    g = grad if grad is not None else kl_gradient(base, finetuned, hook_name, tokens)[hook_name]
    if tuple(g.shape) != (*tokens.shape, d):
        raise ValueError(f"the gradient at {hook_name!r} is {list(g.shape)}; it must be "
                         f"[batch, pos, d] = {[*tokens.shape, d]} (directions have d={d})")
    g = g.reshape(-1, d).double().cpu()
    a = activations.reshape(-1, n_cand).cpu()
    dirs = directions.detach().double().cpu()
    total = torch.zeros(n_cand, dtype=torch.float64)
    for i in range(0, g.shape[0], chunk):
        total += (a[i:i + chunk].double() * (g[i:i + chunk] @ dirs.T)).sum(0)
    return total.float()


def contribution_hooks(hook_name: str, direction: Float[Tensor, " d"],
                       activation: Float[Tensor, "batch pos"], *, scale: float | int = -1.0
                       ) -> list[tuple[str, Any]]:
    """Forward-hook factories (as `steering_hooks`) that add `scale` · activation(pos) ·
    direction at every position at `hook_name`: scale −1 removes a candidate's contribution
    (what `kl_attribution` estimates to first order)."""
    d = direction.detach().float()
    act = activation.detach().float()

    def factory(start: int, rows: int) -> Any:
        a = act[start:start + rows]

        def hook(x: Tensor, hook: Any = None) -> Tensor:
            return x + scale * a.to(x)[..., None] * d.to(x)
        return hook

    return [(hook_name, factory)]


def kl_ablation(base: nn.Module, finetuned: nn.Module, hook_name: str,
                tokens: Int[Tensor, "batch pos"], direction: Float[Tensor, " d"],
                activation: Float[Tensor, "batch pos"], *, scale: float | int = 1.0) -> float:
    """The measured drop of the mean KL(p_ft || p_base) over `tokens` when `scale` ×
    (activation · direction) is removed from the fine-tune at `hook_name` (a real ablation,
    to check `kl_attribution`, whose estimate is scale × the attribution for small scales)."""
    hooks.check_hook_name(finetuned, hook_name)
    if tuple(activation.shape) != tuple(tokens.shape):
        raise ValueError(f"activation must be [batch, pos] like tokens {list(tokens.shape)}, "
                         f"got {list(activation.shape)}")
    before = kl_divergence(base, finetuned, tokens).mean()
    after = kl_divergence(base, finetuned, tokens, fwd_hooks=contribution_hooks(
        hook_name, direction, activation, scale=-scale)).mean()
    return float(before - after)


def kl_sign(activation: Float[Tensor, "batch pos"], direction: Float[Tensor, " d"],
            grad: Float[Tensor, "batch pos d"]) -> int:
    """+1 or −1: the orientation of a candidate whose sign is free, fixed by the behaviour
    (no labels): its activation is made positive where removing its contribution lowers the
    KL (the sign of Σ_pos a(pos) · max(0, a(pos) d·∇KL(pos)))."""
    a = activation.detach().double().flatten()
    attr = a * (grad.detach().double().reshape(-1, direction.numel())
                @ direction.detach().double())
    return 1 if float((a * attr.clamp(min=0)).sum()) >= 0 else -1


def _verify(base: nn.Module, finetuned: nn.Module, tokens: Tensor,
            entries: list[tuple[str, Tensor, Tensor]]) -> list[float]:
    return [kl_ablation(base, finetuned, h, tokens, d, a) for h, d, a in entries]


# ---- the three methods' candidates ---------------------------------------------------------
#
# The pick rule (rule="kl", the default): every candidate contribution to the fine-tune's
# residual stream is ranked by `kl_attribution` on unlabeled `tokens` (pass the fine-tuning
# text: the researcher has it, not the trigger labels; default: the evaluation batch's tokens,
# without its labels); the top `verify` are then ablated for real (`kl_ablation`) and the one
# whose removal lowers the KL most is the pick (verify=0: the attribution's argmax). The sign
# of a candidate whose sign is free comes from `kl_sign`. rule="legacy" keeps each method's
# own measure (LoRA: largest σ₁; diff-SAE: largest total activation; crosscoder: relative
# decoder norm); with rule="kl" the legacy pick is still reported in `info["legacy"]`.

RULES = ("kl", "legacy")


def _oriented(method: str, name: str, hook_name: str, direction: Tensor, act: Tensor,
              info: dict[str, Any], sign: int | None = None,
              pick_act: Tensor | None = None) -> Candidate:
    """Orient (`sign`, else `orient`) and scale the direction by the typical activation, on
    `pick_act` (the activation on the data the pick was made on) when given, else on `act`;
    1 when that is 0 (a candidate that never fires there keeps its unit-activation write)."""
    sign = orient(act) if sign is None else sign
    act = act * sign
    mag = typical_activation(act if pick_act is None else pick_act * sign)
    info = {**info, "sign": sign, "typical_activation": mag}
    if not mag > 0:
        info["never_fires"] = True
        mag = 1.0
    return Candidate(method=method, name=name, hook_name=hook_name,
                     direction=direction * sign * mag, activation=act, info=info)


def _pick(base: nn.Module, finetuned: nn.Module, tokens: Tensor, attr: Tensor,
          entry: Any, verify: int) -> tuple[int, dict[str, Any]]:
    """The candidate index chosen from attributions `attr` [n]: among the top `verify`, the
    largest measured KL drop (`entry(i)` -> (hook, direction, activation) on `tokens`)."""
    v.non_negative_int("verify", verify)
    order = attr.argsort(descending=True).tolist()
    info: dict[str, Any] = {"kl_top": order[:5],
                            "kl_top_attribution": [round(float(attr[i]), 5) for i in order[:5]]}
    if verify == 0:
        return order[0], info
    top = order[:verify]
    drops = _verify(base, finetuned, tokens, [entry(i) for i in top])
    info["kl_verified"] = {int(i): round(dr, 5) for i, dr in zip(top, drops)}
    return top[max(range(len(top)), key=lambda k: drops[k])], info


def _readouts(model: nn.Module, weight: str, tokens: Tensor, d: LoRADirections,
              batch_size: int = 64) -> Tensor:
    """Every component's readout x·V [batch pos rank] (as `lora_readout`, all at once)."""
    name = lora.hook_name(weight)
    dev = next(model.parameters()).device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        act = hooks.capture(model, [name], tokens[start:start + batch_size].to(dev))[name]
        if act.ndim == 4:
            act = act.sum(2)
        out.append(act.float().cpu() @ d.coords)
    return torch.cat(out)


def lora_candidate(finetuned: nn.Module, batch: TriggerBatch, *,
                   base: nn.Module | None = None, tokens: Tensor | None = None,
                   rule: Literal["kl", "legacy"] = "kl", verify: int = 3) -> Candidate:
    """The LoRA method's pick among the rank-1 components of the adapters that write into the
    residual stream (W_O, W_out): component i of ΔW = U S Vᵀ writes σ_i u_i (v_iᵀ x) at the
    writer hook. rule "kl" (needs the `base`; see the section comment): every component of
    every writer ranked by `kl_attribution` on `tokens`; rule "legacy" (and the fallback when
    no `base` is given): the writer with the largest σ₁, its first component. Direction
    σ_i u_i, activation its readout x·v_i on `batch` (oriented, scaled to its typical
    activation). `info` holds every adapter's spectrum and the other rule's pick."""
    v.choice("rule", rule, RULES)
    dirs = lora_directions(finetuned)
    writers = {w: d for w, d in dirs.items() if writer_hook(w) is not None}
    if not writers:
        raise ValueError(f"no adapter writes into the residual stream (adapted: {list(dirs)}); "
                         "adapt an attn.W_O or mlp.W_out weight to steer with its direction")
    legacy = max(writers, key=lambda w: float(writers[w].S[0]))
    info: dict[str, Any] = {"spectra": {w: x.S.tolist() for w, x in dirs.items()},
                            "legacy": {"weight": legacy, "component": 0}}
    if rule == "legacy" or base is None:
        d = writers[legacy]
        act = lora_readout(finetuned, legacy, batch.tokens, directions=d)
        info.update(weight=legacy, component=0,
                    rule="legacy" if rule == "legacy" else "legacy (no base given)")
        return _oriented("lora", f"{legacy} σ1", writer_hook(legacy), d.S[0] * d.U[:, 0],
                         act, info)
    _check_pair(base, finetuned)
    toks = batch.tokens if tokens is None else tokens
    _check_tokens(toks)
    grads = kl_gradient(base, finetuned, [writer_hook(w) for w in writers], toks)
    entries: list[tuple[str, int, Tensor, Tensor]] = []    # (weight, i, direction, readout)
    attrs = []
    for w, d in writers.items():
        h = writer_hook(w)
        reads = _readouts(finetuned, w, toks, d)                  # [batch pos rank]
        comp = (d.U * d.S).T                                      # [rank, d_model]
        attrs.append(kl_attribution(base, finetuned, h, toks, comp, reads, grad=grads[h]))
        entries += [(w, i, comp[i], reads[..., i]) for i in range(d.S.numel())]
    attr = torch.cat(attrs)
    k, pinfo = _pick(base, finetuned, toks, attr,
                     lambda i: (writer_hook(entries[i][0]), entries[i][2], entries[i][3]),
                     verify)
    w, i, direction, read = entries[k]
    h = writer_hook(w)
    names = [f"{e[0]} σ{e[1] + 1}" for e in entries]
    info.update(weight=w, component=i, rule="kl", kl_attribution=float(attr[k]),
                kl_ranking=[names[j] for j in attr.argsort(descending=True).tolist()],
                **{key: ([names[j] for j in val] if key == "kl_top" else
                         {names[j]: x for j, x in val.items()} if key == "kl_verified" else val)
                   for key, val in pinfo.items()})
    info["legacy"]["kl_rank"] = info["kl_ranking"].index(f"{legacy} σ1")
    sign = kl_sign(read, direction, grads[h])
    act = lora_readout(finetuned, w, batch.tokens, component=i, directions=writers[w])
    return _oriented("lora", f"{w} σ{i + 1}", h, direction, act, info, sign=sign,
                     pick_act=read)


@torch.no_grad()
def _encode_rows(s: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    was = s.training
    s.eval()
    try:
        return torch.cat([s.encode(c.to(s.W_dec.device, s.W_dec.dtype)).cpu()
                          for c in x.split(batch_size)])
    finally:
        s.train(was)


def _rows_for(tokens: Tensor, rows: Tensor | None, what: str) -> None:
    if rows is not None and rows.shape[0] != tokens.numel():
        raise ValueError(f"{what} has {rows.shape[0]} rows but tokens {list(tokens.shape)} has "
                         f"{tokens.numel()} positions; pass the activations of these tokens")


def diff_sae_candidate(s: nn.Module, base: nn.Module, finetuned: nn.Module, hook_name: str,
                       batch: TriggerBatch, *, train_diffs: Tensor | None = None,
                       tokens: Tensor | None = None, rule: Literal["kl", "legacy"] = "kl",
                       verify: int = 3) -> Candidate:
    """The diff-SAE's pick. rule "kl" (see the section comment): latent j contributes
    f_j · W_dec[j] to the ft − base difference; the latents are ranked by `kl_attribution` of
    removing that from the fine-tune on `tokens` (with `train_diffs` their ft − base
    activations, else computed). rule "legacy": the latent with the largest total activation
    on `train_diffs` (default: the batch's). Direction its decoder row, activation its value
    on `batch`'s diffs."""
    v.choice("rule", rule, RULES)
    diffs = diff_activations(base, finetuned, hook_name, batch.tokens)
    f = _encode_rows(s, diffs)
    f_pick = f if train_diffs is None else _encode_rows(s, train_diffs)
    mass = f_pick.sum(0)
    top = mass.topk(min(5, mass.numel()))
    legacy = int(mass.argmax())
    info: dict[str, Any] = {"legacy": {"latent": legacy, "top_latents": top.indices.tolist(),
                                       "top_mass": [round(float(m), 3) for m in top.values]}}
    dec = s.W_dec.detach().float().cpu()
    if rule == "legacy":
        info.update(latent=legacy, rule="legacy")
        return _oriented("diff-sae", f"latent {legacy}", hook_name, dec[legacy],
                         f[:, legacy].view(batch.tokens.shape), info)
    toks = batch.tokens if tokens is None else tokens
    _check_tokens(toks)
    _rows_for(toks, train_diffs, "train_diffs")
    if tokens is None or train_diffs is None:
        f_tok = f if tokens is None else _encode_rows(
            s, diff_activations(base, finetuned, hook_name, toks))
    else:
        f_tok = f_pick
    g = kl_gradient(base, finetuned, hook_name, toks)[hook_name]
    acts = f_tok.view(*toks.shape, -1)
    attr = kl_attribution(base, finetuned, hook_name, toks, dec, acts, grad=g)
    j, pinfo = _pick(base, finetuned, toks, attr,
                     lambda i: (hook_name, dec[i], acts[..., i]), verify)
    ranking = attr.argsort(descending=True).tolist()
    info.update(latent=j, rule="kl", kl_attribution=float(attr[j]), **pinfo)
    info["legacy"]["kl_rank"] = ranking.index(legacy)
    sign = kl_sign(acts[..., j], dec[j], g)
    return _oriented("diff-sae", f"latent {j}", hook_name, dec[j],
                     f[:, j].view(batch.tokens.shape), info, sign=sign,
                     pick_act=acts[..., j])


def crosscoder_candidate(cc: nn.Module, base: nn.Module, finetuned: nn.Module,
                         hook_name: str, batch: TriggerBatch, *,
                         train_pairs: Tensor | None = None, tokens: Tensor | None = None,
                         rule: Literal["kl", "legacy"] = "kl", verify: int = 3,
                         kl_decoder: Literal["finetuned", "difference"] = "finetuned"
                         ) -> Candidate:
    """The crosscoder's pick. rule "kl" (see the section comment): every latent that fires on
    `tokens` (with `train_pairs` their paired activations, else computed) is ranked by
    `kl_attribution` of removing its contribution f_j · W_dec[j, ft] from the fine-tune
    (`kl_decoder="difference"`: f_j · (W_dec[j, ft] − W_dec[j, base]), i.e. moving the
    fine-tune toward the base along the latent). rule "legacy": the latents `classify` calls
    fine-tuned-only and Latent Scaling confirms (ν^ε, ν^r small; if none passes, all
    fine-tuned-only ones; if none, every latent that fires on `train_pairs`), ranked by the
    relative decoder norm, ties by the difference explained on `train_pairs`
    (Σ f_j · ‖W_dec[j, ft] − W_dec[j, base]‖; default data: the batch's paired activations).
    Direction (for steering) W_dec[j, ft] − W_dec[j, base], activation f_j on `batch`."""
    from superpose.sae import crosscoder as xc

    v.choice("rule", rule, RULES)
    v.choice("kl_decoder", kl_decoder, ("finetuned", "difference"))
    _check_pair(base, finetuned)
    pairs = xc.paired_activations([base, finetuned], hook_name, batch.tokens)
    data = pairs if train_pairs is None else train_pairs
    labels = xc.classify(cc)
    names = cc.crosscoder_cfg.names
    ft_only = [i for i, lab in enumerate(labels) if lab == f"{names[1]}-only"]
    exclusive: list[int] = []
    if ft_only:
        ls = xc.latent_scaling(cc, data, ft_only)
        ok = ls.exclusive() & (ls.count > 0)
        exclusive = [i for i, keep in zip(ft_only, ok.tolist()) if keep]
    dec = cc.W_dec_models.detach().float().cpu()
    diff_dec = dec[:, 1] - dec[:, 0]
    f_data = _encode_rows(cc, data)
    mass = f_data.sum(0) * diff_dec.norm(dim=-1)
    alive = [i for i in range(cc.cfg.d_sae) if float(mass[i]) > 0]
    pool = exclusive or ft_only or alive or list(range(cc.cfg.d_sae))
    rel = xc.relative_norms(cc).cpu()
    ranked = sorted(pool, key=lambda i: (-float(rel[i]), -float(mass[i])))
    info: dict[str, Any] = {
        "n_finetuned_only": len(ft_only), "n_exclusive": len(exclusive),
        "pool": "exclusive" if exclusive else ("finetuned-only" if ft_only else "all"),
        "label_counts": dict(Counter(labels)),
        "legacy": {"latent": ranked[0], "top_latents": ranked[:5],
                   "relative_norm": float(rel[ranked[0]])}}
    f_eval = _encode_rows(cc, pairs)
    if rule == "legacy":
        j = ranked[0]
        info.update(latent=j, rule="legacy", relative_norm=float(rel[j]))
        return _oriented("crosscoder", f"latent {j}", hook_name, diff_dec[j],
                         f_eval[:, j].view(batch.tokens.shape), info)
    toks = batch.tokens if tokens is None else tokens
    _check_tokens(toks)
    _rows_for(toks, train_pairs, "train_pairs")
    if tokens is None or train_pairs is None:
        f_tok = f_eval if tokens is None else _encode_rows(
            cc, xc.paired_activations([base, finetuned], hook_name, toks))
    else:
        f_tok = f_data
    fired = (f_tok > 0).any(0)
    g = kl_gradient(base, finetuned, hook_name, toks)[hook_name]
    acts = f_tok.view(*toks.shape, -1)
    writes = dec[:, 1] if kl_decoder == "finetuned" else diff_dec
    attr = kl_attribution(base, finetuned, hook_name, toks, writes, acts, grad=g)
    attr_other = kl_attribution(base, finetuned, hook_name, toks,
                                diff_dec if kl_decoder == "finetuned" else dec[:, 1], acts,
                                grad=g)
    attr = torch.where(fired, attr, torch.full_like(attr, -math.inf))
    j, pinfo = _pick(base, finetuned, toks, attr,
                     lambda i: (hook_name, writes[i], acts[..., i]), verify)
    ranking = attr.argsort(descending=True).tolist()
    other = int(torch.where(fired, attr_other, torch.full_like(attr, -math.inf)).argmax())
    info.update(latent=j, rule="kl", kl_decoder=kl_decoder, kl_attribution=float(attr[j]),
                relative_norm=float(rel[j]), kl_top_other_decoder=other, **pinfo)
    info["legacy"]["kl_rank"] = ranking.index(ranked[0])
    sign = kl_sign(acts[..., j], writes[j], g)
    return _oriented("crosscoder", f"latent {j}", hook_name, diff_dec[j],
                     f_eval[:, j].view(batch.tokens.shape), info, sign=sign,
                     pick_act=acts[..., j])
