"""Training for toy models: importance-weighted MSE under Adam/AdamW and the shared schedule.

`train(model, cfg)` returns a `TrainResult` (the shape of every trainer's,
`superpose.train.result`) with the per-instance loss history; the model is trained in place
and never trains itself. The tied variants ("relu_out", "linear") with no hooks attached take
the closed-form step of `superpose.toy.analytic` (a fast path, checked against this module's
autograd path in the tests); everything else goes through `model.forward` and autograd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _memory, _progress, hooks
from superpose import _validate as v
from superpose.toy.analytic import VARIANTS as ANALYTIC_VARIANTS
from superpose.toy.analytic import AnalyticStep
from superpose.toy.data import generate_batch, make_generator
from superpose.toy.model import ToyModel
from superpose.toy.train_config import ToyHistory, TrainConfig, TrainResult
from superpose.train import checkpoint as ckpt_io
from superpose.train.optim import adam
from superpose.train.result import check_loss_finite
from superpose.train.schedule import lr_at, should_log

__all__ = ["TrainConfig", "TrainResult", "ToyHistory", "loss_per_instance", "lr_at", "target",
           "train"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "superpose.toy.checkpoint/1"


def target(model: ToyModel, x: Tensor) -> Tensor:
    """What the model should output: x itself, or |x| for the "abs" computation model."""
    return x.abs() if model.cfg.variant == "abs" else x


def loss_per_instance(out: Float[Tensor, "batch inst n_features"],
                      tgt: Float[Tensor, "batch inst n_features"],
                      importance: Float[Tensor, "inst n_features"]) -> Float[Tensor, " inst"]:
    """Importance-weighted MSE: mean over batch and features, one value per instance."""
    return (importance * (out - tgt) ** 2).mean(dim=(0, 2))


def train(model: ToyModel, cfg: TrainConfig | None = None, *,
          data: Iterable[Tensor] | None = None, progress: bool = True,
          out: str | Path | None = None, resume: bool = False,
          **overrides: Any) -> TrainResult:
    """Train every instance of `model` in place; return the per-instance loss history.

    `cfg` fields can be overridden by keyword (`train(m, steps=2000, lr=3e-3)`). `data` is an
    optional iterable of [batch, n_instances, n_features] tensors used instead of fresh samples
    from the model's feature distribution (seeded by `cfg.seed`). `out`: folder for
    checkpoints (`superpose.train.checkpoint`: format and resume rule of every trainer);
    `resume=True` continues from the newest there, repeating the uninterrupted run exactly.
    """
    if not isinstance(model, ToyModel):
        raise TypeError(f"train takes a ToyModel, got {type(model).__name__}")
    cfg = v.replace_config(cfg or TrainConfig(), overrides)
    out_path = Path(out) if out is not None else None
    latest = ckpt_io.resume_point(out_path, resume)
    saved = None
    if latest is not None:
        saved = ckpt_io.read_checkpoint(latest, CHECKPOINT_FORMAT)
        ckpt_io.check_resume_config(saved.train_config, cfg, saved.path, ckpt_io.RESUMABLE)
    dev = model.device
    # A step holds a few [batch, n_instances, n_features] tensors: the batch, its
    # reconstruction, the error and their gradients (about six; float32).
    _memory.check_allocation(
        f"toy training batches (batch_size={cfg.batch_size} x n_instances="
        f"{model.cfg.n_instances} x n_features={model.cfg.n_features}, about 6 such tensors "
        "per step)", 6 * 4 * cfg.batch_size * model.cfg.n_instances * model.cfg.n_features, dev)
    importance = model.cfg.importance_tensor().to(dev)
    probability = model.cfg.probability_tensor().to(dev)
    gen = make_generator(cfg.seed, dev)
    batches: Iterator[Tensor] | None = iter(data) if data is not None else None
    analytic = (cfg.analytic_grad and model.cfg.variant in ANALYTIC_VARIANTS
                and not hooks.any_hooked(model.hook_dict.values()))
    step_fn = AnalyticStep(model, importance) if analytic else None
    opt = adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
               weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw")
    want_shape = (model.cfg.n_instances, model.cfg.n_features)
    constant = cfg.schedule == "constant" and cfg.warmup_steps == 0
    names = [n for n, _ in model.named_parameters()]
    history, start, seconds_before = ToyHistory(), 0, 0.0
    if saved is not None:
        ckpt_io.check_matches_model(saved, model, names)
        with torch.no_grad():
            model.load_state_dict(saved.weights)
        opt.load_state_dict(saved.optimizer)
        gen.set_state(saved.rng["data"])
        history = ToyHistory.from_dict(saved.history)
        start, seconds_before = saved.step, saved.seconds
        for i in range(start if batches is not None else 0):   # an iterable is replayed
            _next_batch(batches, i, want_shape, dev)
    last_ckpt = latest

    t0 = time.perf_counter()
    bar = _progress.bar(range(start, cfg.steps), progress=progress, desc="toy", leave=False,
                        initial=start, total=cfg.steps)
    for step in bar:
        lr = lr_at(step, cfg)
        if not constant:
            for group in opt.param_groups:
                group["lr"] = lr
        if batches is None:
            x = generate_batch(model.cfg, cfg.batch_size, generator=gen, probability=probability)
        else:
            x = _next_batch(batches, step, want_shape, dev)
        log_now = should_log(step + 1, cfg.steps, cfg.log_every)
        if step_fn is not None:
            with torch.no_grad():
                loss = step_fn(x, log_now)
        else:
            per_inst = loss_per_instance(model(x), target(model, x), importance)
            opt.zero_grad(set_to_none=True)
            per_inst.sum().backward()
            loss = per_inst.detach()
        opt.step()
        if log_now:
            assert loss is not None
            values = loss.detach().float().cpu().tolist()
            check_loss_finite(values, step + 1, lr, last_ckpt)
            history.record(step=step + 1, loss=values, lr=lr,
                           seconds=seconds_before + time.perf_counter() - t0)
            if progress:
                bar.set_postfix(loss=f"{sum(values) / len(values):.4g}", refresh=False)
        done = step + 1
        if out_path is not None and cfg.checkpoint_every is not None and (
                done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            last_ckpt = ckpt_io.save_checkpoint(
                out_path, done, format=CHECKPOINT_FORMAT, model=model, optimizer=opt,
                param_names=names, train_config=cfg, history=history.to_dict(),
                rng={"data": gen.get_state()}, seconds=seconds_before + time.perf_counter() - t0,
                keep=cfg.keep_checkpoints)
    seconds = time.perf_counter() - t0
    result = TrainResult(history=history, config=cfg, step=max(start, cfg.steps),
                         seconds=seconds, resumed_from=start if saved is not None else None,
                         checkpoint=last_ckpt, extra={"analytic_grad": analytic})
    log.info("trained %d instances for %d steps in %.1fs (%.0f steps/s)",
             model.cfg.n_instances, cfg.steps, seconds, result.steps_per_second)
    return result


def _next_batch(batches: Iterator[Tensor], step: int, want: tuple[int, int],
                dev: torch.device) -> Tensor:
    try:
        x = next(batches)
    except StopIteration:
        raise ValueError(f"data ran out after {step} batches; give at least `steps` batches "
                         "or lower steps") from None
    if not isinstance(x, Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != want:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"batch {step} has shape {shape}; expected [batch, n_instances="
                         f"{want[0]}, n_features={want[1]}]")
    if len(x) == 0:
        raise ValueError(f"batch {step} is empty (shape {list(x.shape)}); every batch needs at "
                         "least one row")
    if not x.dtype.is_floating_point:
        raise ValueError(f"batch {step} has dtype {x.dtype}; feature values must be floating "
                         "point (e.g. x.float())")
    v.finite_tensor(f"batch {step}", x)
    return x.to(dev)
