"""How toy models are trained (`TrainConfig`) and what a run returns (`TrainResult`); the
trainer is `superpose.toy.training`. The schedule fields are every trainer's
(`superpose.train.schedule`)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import Tensor

from superpose import _validate as v
from superpose.train.result import History
from superpose.train.result import TrainResult as _TrainResult
from superpose.train.schedule import SCHEDULE_RULES, check_schedule_fits

Schedule = Literal["constant", "cosine", "linear", "inverse_sqrt"]


@typing.no_type_check
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train every instance of a toy model; the rule of each field is in
    `_constraints`."""

    _constraints: ClassVar[dict[str, v.Rule]] = {
        "steps": v.Int(1), "batch_size": v.Int(1),
        **SCHEDULE_RULES,
        "optimizer": v.Choice("adamw", "adam"), "weight_decay": v.Float(ge=0),
        "betas": v.Pair(v.Float(ge=0, lt=1)), "eps": v.Float(gt=0),
        "log_every": v.Int(1), "checkpoint_every": v.Int(0) | v.Const(None),
        "keep_checkpoints": v.Int(1), "seed": v.Int(0), "analytic_grad": v.Bool(),
    }

    steps: int = 10_000
    batch_size: int = 1024
    lr: float = 1e-3
    schedule: Schedule = "constant"
    warmup_steps: int | float = 0      # linear warm-up from 0
    decay_steps: int | float | None = None   # "linear": decay over the last N steps
    min_lr_ratio: float = 0.0          # decays end at lr * min_lr_ratio
    optimizer: Literal["adamw", "adam"] = "adamw"
    # torch's AdamW default, as in Anthropic's reference notebook.
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    log_every: int = 10          # record the per-instance loss every N steps
    checkpoint_every: int | None = 0   # with out=...: every N steps and at the end; 0: at the
    keep_checkpoints: int = 1          # end only; None: none. Keep the newest N.
    seed: int = 0                # seeds the data stream (the init is seeded by the model)
    analytic_grad: bool = True   # closed-form gradient where it exists (superpose.toy.analytic)

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        check_schedule_fits(self)


@dataclass
class ToyHistory(History):
    """`loss[i]` holds one importance-weighted MSE per instance."""

    LOSS_LABEL: ClassVar[str] = "loss (importance-weighted MSE)"


@dataclass
class TrainResult(_TrainResult):
    """`superpose.train.TrainResult` of a toy run: `final_loss` is a tensor [instances];
    `extra` says which path computed the gradient."""

    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        """The logged losses as one tensor [n_logged, n_instances]."""
        return self.history.series("loss")
