"""Synthetic token data whose structure is known exactly, for interpretability work.

`repeated_tokens`: a random sequence followed by the same sequence again (Olsson et al. 2022,
"In-context learning and induction heads"). The first half is noise, so no model beats
ln(d_vocab) nats there; in the second half every token is predictable by an induction head
("find the previous occurrence of the current token, copy the token after it"), and a
two-layer attention-only model learns exactly that: its loss on the second half falls towards 0
while the first half stays at ln(d_vocab).

`Dyck`: balanced brackets of `n_types` kinds, e.g. `( [ ] ( ) )`, sampled by a random walk on
the nesting depth. What a model can learn, and what `Dyck.score` measures:
  - which next tokens are grammatical (`valid_next`): any opener while the depth is below
    `max_depth` and there is room to close again, or the closer of the innermost open bracket;
  - the closer's type, which the prefix fixes completely: to get it the model must find the
    most recent unmatched opener (a stack, which attention can implement by counting depth);
  - forced positions (`forced`): at depth `max_depth`, or when the remaining positions are just
    enough to close every open bracket, the next token is determined;
  - the optimal loss: the entropy of the sampler's own next-token distribution, the floor for
    any model's cross-entropy on this data (`optimal_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _validate as v
from superpose.toy.data import make_generator


def _stream(generator: torch.Generator | int | None, device: torch.device | str | None
            ) -> tuple[torch.Generator | None, torch.device, torch.device]:
    """(generator, device to draw on, device to return on) for a synthetic-data function.

    An int seeds a CPU generator and None draws from torch's global CPU generator, so one seed
    gives the same tokens on every machine; they are then moved to `device` (None: CUDA when
    available, else CPU). A `torch.Generator` draws on its own device, which is also where the
    tokens stay when `device` is None; an explicit `device` elsewhere is an error.
    """
    if isinstance(generator, torch.Generator):
        g = make_generator(generator, device)          # refuses a device mismatch
        return g, g.device, g.device
    out = v.resolve_device(device)
    if generator is None:
        return None, torch.device("cpu"), out
    return make_generator(generator, "cpu"), torch.device("cpu"), out


def repeated_tokens(batch_size: int | None = None, seq_len: int | None = None,
                    d_vocab: int | None = None, *args: torch.Generator | int,
                    generator: torch.Generator | int | None = None, bos: int | None = None,
                    device: torch.device | str | None = None,
                    batch: int | None = None) -> Int[Tensor, "batch pos"]:
    """[batch_size, 2 * seq_len] tokens (one more with `bos`): uniform random tokens, then the
    same tokens again. With `bos`, every row starts with that id and the random tokens avoid it.

    `batch_size`, `seq_len` and `d_vocab` are required. `generator`: a `torch.Generator`, an
    int seed, or None for torch's global generator (see `_stream` for where tokens are drawn
    and returned; `device=None` means CUDA when available, else CPU, or the generator's device
    when a generator is given). Deprecated: `batch=` (now `batch_size=`) and the generator as
    the fourth positional argument (now `generator=`).
    """
    batch_size = deprecation.renamed_argument("repeated_tokens", "batch", "batch_size",
                                              batch if batch is not None else deprecation.UNSET,
                                              batch_size)
    generator = deprecation.positional_option("repeated_tokens", "generator", args, generator)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("d_vocab", d_vocab)):
        if value is None:
            raise TypeError(f"repeated_tokens() missing required argument {name!r}: call "
                            "repeated_tokens(batch_size, seq_len, d_vocab, generator=...)")
        v.positive_int(name, value)
    if bos is not None:
        v.non_negative_int("bos", bos)
        if bos >= d_vocab:
            raise ValueError(f"bos must be a token id below d_vocab={d_vocab}, got {bos}")
        if d_vocab < 2:
            raise ValueError("with a bos token, d_vocab must be at least 2 (bos + one other)")
    g, draw_on, out_on = _stream(generator, device)
    n = d_vocab - (bos is not None)
    half = torch.randint(0, n, (batch_size, seq_len), generator=g, device=draw_on)
    if bos is not None:
        half = half + (half >= bos).long()              # skip the bos id
    out = torch.cat([half, half], dim=1)
    if bos is not None:
        out = torch.cat([torch.full((batch_size, 1), bos, device=out.device), out], dim=1)
    return out.to(out_on)


BRACKETS = ("()", "[]", "{}", "<>")


@dataclass(frozen=True)
class DyckScore:
    """How well next-token logits follow the grammar (averages over scored positions)."""

    loss: float              # cross-entropy on the real next tokens (nats)
    optimal_loss: float      # the sampler's entropy at the same positions: the best possible
    valid_mass: float        # probability the model puts on grammatical next tokens
    valid_argmax: float      # fraction of positions whose top prediction is grammatical
    closer_accuracy: float   # where a closer comes next: the top closer is the right one
    forced_accuracy: float   # where the next token is forced: the top prediction is it


@dataclass(frozen=True)
class Dyck:
    """Dyck-k: balanced strings of `n_types` bracket kinds, all exactly `length` brackets long.

    Token ids: openers 0..n_types-1, closers n_types..2*n_types-1 (closer of opener i is
    i + n_types), then a BOS token (id 2 * n_types) that starts every row when `bos=True`.
    Sampling: at depth 0 open; at depth `max_depth`, or when the brackets left only just suffice
    to close, close; otherwise open with probability `p_open`. Openers are uniform over kinds.
    """

    n_types: int = 2
    length: int = 32         # brackets per sequence (even); rows are length + bos long
    p_open: float = 0.5
    max_depth: int = 8
    bos: bool = True

    def __post_init__(self) -> None:
        v.positive_int("n_types", self.n_types)
        v.positive_int("length", self.length)
        v.positive_int("max_depth", self.max_depth)
        if self.length % 2:
            raise ValueError(f"length must be even (every opener needs its closer), got "
                             f"{self.length}")
        if isinstance(self.p_open, bool) or not isinstance(self.p_open, (int, float)) or not (
                0 < self.p_open < 1):
            raise ValueError(f"p_open must lie in (0, 1), got {self.p_open!r}")
        if not isinstance(self.bos, bool):
            raise ValueError(f"bos must be True or False, got {self.bos!r}")

    @property
    def d_vocab(self) -> int:
        return 2 * self.n_types + self.bos

    @property
    def bos_id(self) -> int | None:
        return 2 * self.n_types if self.bos else None

    @property
    def vocab(self) -> list[str]:
        """The string of every token id, for plot labels: "(" ")" "[" "]"... or "(3" ")3"."""
        if self.n_types <= len(BRACKETS):
            opens = [b[0] for b in BRACKETS[:self.n_types]]
            closes = [b[1] for b in BRACKETS[:self.n_types]]
        else:
            opens = [f"({i}" for i in range(self.n_types)]
            closes = [f"){i}" for i in range(self.n_types)]
        return opens + closes + (["<bos>"] if self.bos else [])

    def to_str_tokens(self, tokens: Int[Tensor, " pos"]) -> list[str]:
        vocab = self.vocab
        return [vocab[i] for i in tokens.tolist()]

    def sample(self, batch_size: int | None = None, *args: torch.Generator | int,
               generator: torch.Generator | int | None = None,
               device: torch.device | str | None = None,
               batch: int | None = None) -> Int[Tensor, "batch pos"]:
        """[batch_size, length (+1 with bos)] valid sequences, a pure function of the generator
        (a `torch.Generator`, an int seed, or None for torch's global generator; where they are
        drawn and returned as in `repeated_tokens`). Deprecated: `batch=` (now `batch_size=`)
        and the generator as the second positional argument (now `generator=`)."""
        batch_size = deprecation.renamed_argument(
            "Dyck.sample", "batch", "batch_size",
            batch if batch is not None else deprecation.UNSET, batch_size)
        generator = deprecation.positional_option("Dyck.sample", "generator", args, generator)
        if batch_size is None:
            raise TypeError("Dyck.sample() missing required argument 'batch_size'")
        v.positive_int("batch_size", batch_size)
        batch = batch_size
        g, dev, out_on = _stream(generator, device)
        k, depth_cap = self.n_types, self.max_depth
        stack = torch.zeros(batch, depth_cap, dtype=torch.long, device=dev)
        depth = torch.zeros(batch, dtype=torch.long, device=dev)
        rows = torch.arange(batch, device=dev)
        out = torch.empty(batch, self.length, dtype=torch.long, device=dev)
        for t in range(self.length):
            u = torch.rand(batch, generator=g, device=dev)
            kind = torch.randint(0, k, (batch,), generator=g, device=dev)
            remaining = self.length - t
            can_open = (depth < depth_cap) & (depth < remaining)
            must_open = depth == 0
            opens = must_open | (can_open & (u < self.p_open))
            top = stack[rows, (depth - 1).clamp(min=0)]
            out[:, t] = torch.where(opens, kind, top + k)
            stack[rows[opens], depth[opens]] = kind[opens]
            depth = depth + torch.where(opens, 1, -1)
        if self.bos:
            out = torch.cat([torch.full((batch, 1), 2 * k, device=dev), out], dim=1)
        return out.to(out_on)

    def _scan(self, tokens: Int[Tensor, "batch pos"]) -> tuple[
            Bool[Tensor, " batch"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """(valid, depth after each token, type of the innermost open bracket after each token,
        -1 when none). Rows stop being tracked meaningfully once they turn invalid."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {list(tokens.shape)}")
        b, n = tokens.shape
        k, cap = self.n_types, self.max_depth
        off = int(self.bos)
        if n != self.length + off:
            raise ValueError(f"rows must be length + bos = {self.length + off} tokens long, "
                             f"got {n}")
        dev = tokens.device
        valid = torch.ones(b, dtype=torch.bool, device=dev)
        if self.bos:
            valid &= tokens[:, 0] == 2 * k
        stack = torch.zeros(b, cap + 1, dtype=torch.long, device=dev)
        depth = torch.zeros(b, dtype=torch.long, device=dev)
        rows = torch.arange(b, device=dev)
        depths = torch.zeros(b, n, dtype=torch.long, device=dev)
        tops = torch.full((b, n), -1, dtype=torch.long, device=dev)
        for t in range(off, n):
            tok = tokens[:, t]
            is_open = (tok >= 0) & (tok < k)
            is_close = (tok >= k) & (tok < 2 * k)
            top = stack[rows, (depth - 1).clamp(min=0)]
            valid &= is_open | is_close
            valid &= ~is_open | (depth < cap)
            valid &= ~is_close | ((depth > 0) & (top == tok - k))
            push = is_open & (depth < cap)
            stack[rows[push], depth[push]] = tok[push]
            depth = (depth + push.long() - is_close.long()).clamp(min=0)
            depths[:, t] = depth
            tops[:, t] = torch.where(depth > 0, stack[rows, (depth - 1).clamp(min=0)], -1)
        valid &= depth == 0
        return valid, depths, tops

    def is_valid(self, tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, " batch"]:
        """Whether each row is in the language: BOS first (if `bos`), then a balanced string of
        `length` brackets with matching kinds, never nested deeper than `max_depth`."""
        return self._scan(tokens)[0]

    def depth(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
        """Nesting depth after each token (0 at BOS): a natural target for linear probes."""
        valid, depths, _ = self._scan(tokens)
        self._require_valid(valid)
        return depths

    def _require_valid(self, valid: Bool[Tensor, " batch"]) -> None:
        if not valid.all():
            bad = int((~valid).nonzero()[0, 0])
            raise ValueError(f"row {bad} is not a valid {self.n_types}-Dyck sequence; pass "
                             "rows from Dyck.sample (check with Dyck.is_valid)")

    def next_token_probs(self, tokens: Int[Tensor, "batch pos"]
                         ) -> Float[Tensor, "batch pred d_vocab"]:
        """The sampler's own next-token distribution after each prefix tokens[:, :t+1], for the
        positions that have a next token (pred = pos - 1), aligned with tokens[:, 1:]: what a
        perfect model predicts."""
        valid, depths, tops = self._scan(tokens)
        self._require_valid(valid)
        k, off = self.n_types, int(self.bos)
        n = tokens.shape[1]
        depth, top = depths[:, :-1], tops[:, :-1]
        # Brackets still to come after the prefix ending at position t.
        remaining = (self.length - (torch.arange(n - 1, device=tokens.device) + 1 - off))
        can_open = (depth < self.max_depth) & (depth < remaining)
        p_open = torch.where(depth == 0, 1.0, torch.where(can_open, self.p_open, 0.0))
        dist = torch.zeros(*depth.shape, self.d_vocab, device=tokens.device)
        dist[..., :k] = (p_open / k)[..., None]
        close = F.one_hot(top.clamp(min=0) + k, self.d_vocab).float()
        dist += (1 - p_open)[..., None] * close * (depth > 0)[..., None]
        return dist

    def valid_next(self, tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pred d_vocab"]:
        """Grammatical next tokens after each prefix, aligned with targets tokens[:, 1:]."""
        return self.next_token_probs(tokens) > 0

    def forced(self, tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pred"]:
        """Positions whose next token is determined (exactly one grammatical choice)."""
        return self.valid_next(tokens).sum(-1) == 1

    def optimal_loss(self, tokens: Int[Tensor, "batch pos"]) -> float:
        """Mean entropy (nats) of the true next-token distribution over positions that have a
        next token: the cross-entropy of a perfect model."""
        p = self.next_token_probs(tokens)
        return float(-(p * p.clamp(min=1e-30).log()).sum(-1).mean())

    def score(self, logits: Float[Tensor, "batch pos d_vocab"],
              tokens: Int[Tensor, "batch pos"]) -> DyckScore:
        """Score a model's next-token `logits` (as from `model(tokens)`) on valid `tokens`.

        The prediction at position t is for token t + 1; the last position is not scored.
        """
        if logits.shape[:2] != tokens.shape or logits.shape[-1] != self.d_vocab:
            raise ValueError(f"logits must be [batch, pos, d_vocab={self.d_vocab}] matching "
                             f"tokens {list(tokens.shape)}, got {list(logits.shape)}")
        dist = self.next_token_probs(tokens)
        ok = dist > 0
        logp = logits[:, :-1].float().log_softmax(-1)
        target = tokens[:, 1:]
        k = self.n_types
        top = logp.argmax(-1)
        is_close = (target >= k) & (target < 2 * k)
        top_close = logp[..., k:2 * k].argmax(-1) + k
        forced = ok.sum(-1) == 1

        def frac(hit: Tensor, where: Tensor) -> float:
            return float(hit[where].float().mean()) if where.any() else math.nan

        return DyckScore(
            loss=float(-logp.gather(-1, target[..., None]).mean()),
            optimal_loss=float(-(dist * dist.clamp(min=1e-30).log()).sum(-1).mean()),
            valid_mass=float((logp.exp() * ok).sum(-1).mean()),
            valid_argmax=float(ok.gather(-1, top[..., None]).float().mean()),
            closer_accuracy=frac(top_close == target, is_close),
            forced_accuracy=frac(top == target, forced),
        )
