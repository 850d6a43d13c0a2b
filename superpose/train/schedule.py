"""The learning-rate schedule every trainer shares, and the step rules of its history.

Every training config (toy, GPT, SAE) names its schedule with the same fields:

    lr            peak learning rate
    schedule      "constant" | "cosine" | "linear" | "inverse_sqrt"
    warmup_steps  linear warm-up from lr/warmup to lr; an int counts steps, a float in [0, 1] is
                  a fraction of the run (as scikit-learn's `train_test_split(test_size=...)`
                  reads ints and floats), for trainers whose length is known only at run time
    decay_steps   "linear" only: decay over the last N steps (int or fraction); None decays over
                  everything after the warm-up
    min_lr_ratio  the decays end at lr * min_lr_ratio ("inverse_sqrt" is floored there)

Step numbering: `lr_at(i, ...)` is the rate of the update with 0-based index i; a history entry
recorded after that update carries `i + 1`, the number of updates done (`should_log`).
"""

from __future__ import annotations

import math
from typing import Any

from superpose import _validate as v

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "inverse_sqrt")

# The rules of the shared fields, for each config's constraint table.
STEPS_OR_FRACTION = (v.Int(0) | v.Float(ge=0, le=1)).described(
    "a number of steps (an int >= 0) or a fraction of the run (a float in [0, 1])")
SCHEDULE_RULES: dict[str, v.Rule] = {
    "lr": v.Float(gt=0),
    "schedule": v.Choice(*SCHEDULES),
    "warmup_steps": STEPS_OR_FRACTION,
    "decay_steps": (v.Int(0) | v.Float(ge=0, le=1) | v.Const(None)).described(
        "a number of steps (an int >= 0), a fraction of the run (a float in [0, 1]) or None"),
    "min_lr_ratio": v.Float(ge=0, le=1),
}


def resolve_steps(value: int | float | None, steps: int) -> int:
    """An int is a number of steps; a float in [0, 1] is that fraction of `steps`, rounded up."""
    if value is None:
        return 0
    if isinstance(value, float):
        return math.ceil(value * steps)
    return int(value)


def check_schedule_fits(cfg: Any, steps: int | None = None) -> None:
    """Cross-field rules of the shared fields, once `steps` is known (the config's own, or the
    run's): a warm-up or decay given in steps fits inside the run. Fractions always fit (a
    one-step run with a 1% warm-up and a 20% decay simply takes the peak rate)."""
    steps = cfg.steps if steps is None else steps
    if steps is None:
        return
    warm, decay = cfg.warmup_steps, getattr(cfg, "decay_steps", None)
    if isinstance(warm, int) and warm > steps:
        raise ValueError(f"warmup_steps ({warm}) must not exceed steps ({steps})")
    if isinstance(warm, int) and isinstance(decay, int) and warm + decay > steps:
        raise ValueError(f"warmup_steps ({warm}) and decay_steps ({decay}) together exceed "
                         f"steps ({steps}); shorten them")


def lr_at(step: int, cfg: Any, *, steps: int | None = None, lr: float | None = None) -> float:
    """The learning rate of the update with 0-based index `step` under `cfg`'s schedule fields.
    `steps` and `lr` override the config's when the run resolves them (an SAE run's length
    comes from its data; its lr from its width)."""
    steps = cfg.steps if steps is None else steps
    lr = cfg.lr if lr is None else lr
    v.non_negative_int("step", step)
    warm = resolve_steps(cfg.warmup_steps, steps)
    if step < warm:
        return lr * (step + 1) / warm
    floor = lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return lr
    if cfg.schedule == "cosine":
        t = min(1.0, (step - warm) / max(1, steps - warm))
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "linear":
        decay_steps = getattr(cfg, "decay_steps", None)
        decay = resolve_steps(decay_steps, steps) if decay_steps is not None else steps - warm
        start = steps - decay
        if step < start:
            return lr
        return floor + (lr - floor) * max(0, steps - step) / max(1, decay)
    # inverse_sqrt (Vaswani et al. 2017): lr at the end of warm-up, then ∝ 1/sqrt(step)
    return max(floor, lr * math.sqrt(max(1, warm) / (step + 1)))


def should_log(done: int, steps: int, every: int) -> bool:
    """Whether the history records the state after `done` updates: the first, every
    `every`-th and the last."""
    return done == 1 or done % every == 0 or done == steps
