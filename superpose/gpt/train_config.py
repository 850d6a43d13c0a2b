"""Configuration and results of GPT training: `GPTTrainConfig`, `TrainHistory`,
`GPTTrainResult`; the learning-rate schedule `lr_at` is every trainer's
(`superpose.train.schedule`). The trainer is `superpose.gpt.training`;
its module docstring explains what each setting does.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from superpose import _validate as v
from superpose.train.checkpoint import RESUMABLE
from superpose.train.result import History, TrainResult
from superpose.train.schedule import SCHEDULE_RULES, check_schedule_fits

Schedule = Literal["cosine", "linear", "inverse_sqrt", "constant"]
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
# Fields a resumed run may change: every trainer's, and how validation is sampled.
RESUMABLE_CHANGES: tuple[str, ...] = (*RESUMABLE, "val_every", "val_batches", "val_batch_size")


# `no_type_check`: the config raises its own ValueErrors (field, value, what is allowed), never
# a run-time type checker's, should this module be type checked under pytest.
@typing.no_type_check
@dataclass(frozen=True, kw_only=True)
class GPTTrainConfig:
    """How to train. Every field is keyword-only and has a default; the rule of each is in
    `_constraints`. The schedule fields are every trainer's (`superpose.train.schedule`)."""

    _constraints: ClassVar[dict[str, v.Rule]] = {
        "steps": v.Int(1), "batch_size": v.Int(1), "grad_accum": v.Int(1),
        **SCHEDULE_RULES,
        "weight_decay": v.Float(ge=0), "decay_embeddings": v.Bool(),
        "betas": v.Pair(v.Float(ge=0, lt=1)), "eps": v.Float(gt=0),
        "grad_clip": (v.Float(gt=0) | v.Const(None)).described(
            "a positive finite max norm, or None to turn clipping off"),
        "label_smoothing": v.Float(ge=0, lt=1),
        "precision": v.Choice(*PRECISIONS),
        "log_every": v.Int(1), "val_every": v.Int(0), "val_batches": v.Int(1),
        "val_batch_size": v.Int(1) | v.Const(None),
        "checkpoint_every": v.Int(0), "keep_checkpoints": v.Int(1), "seed": v.Int(0),
    }

    steps: int = 1_000
    batch_size: int = 32               # sequences per optimizer step, over all processes
    grad_accum: int = 1                # micro-batches per step and process (memory, not maths)
    lr: float = 1e-3                   # peak learning rate; small models take more than GPT-3's
    schedule: Schedule = "cosine"
    warmup_steps: int | float = 0      # linear warm-up; post-LN models need some (Xiong 2020)
    decay_steps: int | float | None = None   # "linear": decay over the last N steps
    min_lr_ratio: float = 0.1          # decays end at lr * this (Chinchilla: cosine to 10%)
    weight_decay: float = 0.1          # GPT-3's and nanoGPT's value
    decay_embeddings: bool = True      # nanoGPT decays the embeddings too
    betas: tuple[float, float] = (0.9, 0.95)   # GPT-3: β2 = 0.95 is steadier than 0.999
    eps: float = 1e-8
    grad_clip: float | None = 1.0      # max global gradient norm (GPT-3); None: no clipping
    label_smoothing: float = 0.0
    precision: Precision = "auto"      # "auto": bf16 autocast on CUDA, float32 on CPU
    log_every: int = 10                # history entry every N steps (and at steps 1 and last)
    val_every: int = 100               # validate every N steps and at the end; 0: at the end
    val_batches: int = 10              # a fixed set: the first N batches of val_data
    val_batch_size: int | None = None  # None: batch_size
    checkpoint_every: int = 500        # with out=...: every N steps and at the end; 0: at the end
    keep_checkpoints: int = 1          # newest N checkpoint folders kept
    seed: int = 0                      # data order and dropout (the init is the model's)

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        if self.batch_size % self.grad_accum:
            divisors = [k for k in range(1, self.batch_size + 1) if self.batch_size % k == 0]
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum "
                             f"({self.grad_accum}) so that every micro-batch has the same size; "
                             f"grad_accum could be one of {divisors[:10]}")
        check_schedule_fits(self)


@dataclass
class TrainHistory(History):
    """Every `log_every` steps (and at steps 1 and last), besides `step`, `loss` (the batch's
    cross-entropy, averaged over processes), `lr` and `seconds`: `grad_norm` (before
    clipping) and `tokens` seen so far. Validation: `val_loss[j]` after `val_step[j]`
    updates."""

    grad_norm: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    RENAMED: ClassVar[dict[str, str]] = {"steps": "step", "train_loss": "loss",
                                         "val_steps": "val_step"}
    SEPARATE: ClassVar[tuple[str, ...]] = ("val_step", "val_loss")
    LOSS_LABEL: ClassVar[str] = "cross-entropy (nats/token)"


@dataclass
class GPTTrainResult(TrainResult):
    """`TrainResult` plus throughput and the number of processes."""

    tokens_per_second: float = 0.0     # over this call's steps
    world_size: int = 1

    @property
    def final_val_loss(self) -> float | None:
        return self.history.val_loss[-1] if self.history.val_loss else None
