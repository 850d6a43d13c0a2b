"""Scoring a candidate against the known trigger and rule: does its activation fire on the
trigger (`auroc`, `firing`), does steering along its direction switch the behaviour on and off
(`steering_hooks`, `score`), and a table of the results (`compare`). `orient` and
`typical_activation` fix a free sign and a steering magnitude without labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from superpose import _validate as v
from superpose import hooks
from superpose.diffing.planted import TriggerBatch, _check_pair, behaviour_rate

TOP_FRACTION = 0.01       # a direction's typical activation: the mean of its top 1% of values


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
