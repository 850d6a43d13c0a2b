"""The shape every trainer's history and result share.

A history is a dataclass of equal-length lists, one entry per logged update. Every history has

    step     the number of updates done when the entry was recorded (1-based; see
             `schedule.should_log`)
    loss     the training loss of that update's batch (a list per entry for the toy models,
             one value per instance)
    lr       the learning rate of that update
    seconds  training time so far, summed over resumed calls

and adds what its trainer measures (GPT: grad_norm, tokens, val_step/val_loss; SAE: samples,
mse, l0, frac_dead, ...). A result holds `history`, `config`, `step` (updates done in total),
`seconds` (this call), `resumed_from` and `checkpoint`, so `plot.loss_curves` and a
researcher's own code read every trainer's result the same way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    loss: list[Any] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    # Keys of histories written by earlier versions, and their names now.
    RENAMED: ClassVar[dict[str, str]] = {}
    # The y label of `plot.loss_curves`.
    LOSS_LABEL: ClassVar[str] = "training loss"
    # Lists recorded on their own schedule (validation), not by `record`.
    SEPARATE: ClassVar[tuple[str, ...]] = ()

    def record(self, **values: Any) -> None:
        """Append one entry: a value for every list of this history (but the SEPARATE ones),
        no more, no less."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in self.SEPARATE]
        if sorted(values) != sorted(names):
            raise TypeError(f"{type(self).__name__}.record takes {sorted(names)}, got "
                            f"{sorted(values)}")
        for name, value in values.items():
            getattr(self, name).append(value)

    def __len__(self) -> int:
        return len(self.step)

    def to_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Read a history back (from a checkpoint), with earlier versions' key names."""
        if not isinstance(data, dict):
            raise ValueError(f"not a {cls.__name__}: expected a dict of lists, got "
                             f"{type(data).__name__}")
        data = {cls.RENAMED.get(k, k): val for k, val in data.items()}
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        bad = [n for n in names if n in data and not isinstance(data[n], list)]
        if missing or bad:
            raise ValueError(f"not a {cls.__name__}: missing {missing}, not lists {bad} "
                             f"(expected lists under {names})")
        return cls(**{n: list(data[n]) for n in names})

    def series(self, name: str = "loss") -> Tensor:
        """One list as a float tensor ([n] or, for per-instance values, [n, instances])."""
        return torch.tensor(getattr(self, name), dtype=torch.float32)


@dataclass
class TrainResult:
    """What a `train` call did; the model itself was trained in place."""

    history: History
    config: Any
    step: int                          # updates done in total
    seconds: float                     # wall time of this call
    resumed_from: int | None = None    # step of the checkpoint this call started from
    checkpoint: Path | None = None     # the newest checkpoint written or resumed, if any

    FINAL_FRACTION: ClassVar[float] = 0.1

    @property
    def final_loss(self) -> Any:
        """The training loss averaged over the last 10% of the logged entries (one batch's
        loss is noisy): a float, or a tensor [instances] for per-instance losses."""
        losses = self.history.series("loss")
        if len(losses) == 0:
            return math.nan
        k = max(1, math.ceil(len(losses) * self.FINAL_FRACTION))
        mean = losses[-k:].mean(0)
        return float(mean) if mean.ndim == 0 else mean

    @property
    def steps_per_second(self) -> float:
        done = self.step - (self.resumed_from or 0)
        return done / self.seconds if self.seconds > 0 else math.inf


def check_loss_finite(loss: float | list[float], step: int, lr: float,
                      checkpoint: Path | None = None) -> None:
    """The one rule of every trainer for a diverged run: a NaN or infinite training loss stops
    it with a FloatingPointError (weights that are NaN are not a result), naming the step, the
    learning rate and the newest checkpoint that is still good. A toy model's loss is a list,
    one per instance: the message names the instances that diverged."""
    values = loss if isinstance(loss, list) else [loss]
    bad = [i for i, x in enumerate(values) if not math.isfinite(x)]
    if not bad:
        return
    what = (f"the training loss became {values[bad[0]]}" if not isinstance(loss, list) else
            f"the training loss of instance(s) {bad[:10]}{' ...' if len(bad) > 10 else ''} "
            f"became {values[bad[0]]}")
    kept = (f"; the checkpoint {checkpoint} (before it diverged) is kept"
            if checkpoint is not None else "")
    raise FloatingPointError(f"{what} at step {step} (lr={lr:.3g}); lower the learning rate, "
                             f"add warm-up or clip gradients{kept}")
