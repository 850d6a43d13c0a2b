"""Training for toy models: importance-weighted MSE, Adam/AdamW, constant/warm-up/cosine.

`train(model, cfg)` returns a `TrainResult` with the per-instance loss history; the model is
trained in place and never trains itself.

Speed. The paper's models are tiny (5 features, 2 hidden), so a step is dominated by per-op
overhead, not arithmetic. For the tied-weight variants ("relu_out", "linear") with no hooks
attached, the step uses the closed-form gradient (checked against autograd in the tests):

    pre = x Wᵀ W + b,  x' = ReLU(pre),  L = Σ_inst mean_{b,f} I_f (x'_bf − x_bf)²
    g   = ∂L/∂pre = 2 I (x' − x) / (B·F) · [pre > 0]
    ∂L/∂b = Σ_b g,   ∂L/∂(WᵀW) = xᵀ g,   ∂L/∂W = W (xᵀg + gᵀx)

Small sweeps (n_instances·n_features ≤ 256) run all instances as one GEMM against a
block-diagonal WᵀW; larger ones use batched matmuls through h. Everything else (the other
variants, or any hook attached) goes through `model.forward` and autograd.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from superpose import _validate as v
from superpose import hooks
from superpose.toy.config import TrainConfig, TrainResult
from superpose.toy.data import generate_batch, make_generator
from superpose.toy.model import ToyModel

log = logging.getLogger(__name__)

BLOCK_DIAGONAL_MAX = 256   # n_instances * n_features up to which one block-diagonal GEMM wins


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate at `step` (0-based) under `cfg.schedule`."""
    if cfg.schedule == "constant":
        return cfg.lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "warmup":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = (step - cfg.warmup_steps) / span
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def target(model: ToyModel, x: Tensor) -> Tensor:
    """What the model should output: x itself, or |x| for the "abs" computation model."""
    return x.abs() if model.cfg.variant == "abs" else x


def loss_per_instance(out: Float[Tensor, "batch inst n_features"],
                      tgt: Float[Tensor, "batch inst n_features"],
                      importance: Float[Tensor, "inst n_features"]) -> Float[Tensor, " inst"]:
    """Importance-weighted MSE: mean over batch and features, one value per instance."""
    return (importance * (out - tgt) ** 2).mean(dim=(0, 2))


def _make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kw = dict(lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    # The fused kernel does the whole update in one pass (CPU and CUDA, float32); older torch
    # builds without it fall back to the multi-tensor implementation.
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kw)


def _has_hooks(model: ToyModel) -> bool:
    return hooks.any_hooked(model.hook_dict.values())


class _AnalyticStep:
    """Closed-form forward + backward for the tied variants: writes `.grad`, returns the
    per-instance loss when asked (it costs a pass over the batch, so only on logging steps)."""

    def __init__(self, model: ToyModel, importance: Tensor) -> None:
        self.model = model
        inst, f = model.cfg.n_instances, model.cfg.n_features
        self.relu = model.cfg.variant == "relu_out"
        self.importance = importance
        self._scale: dict[int, Tensor] = {}
        self.block = inst * f <= BLOCK_DIAGONAL_MAX
        if self.block:
            self.M = torch.zeros(inst, f, inst, f, device=model.device)

    def scale(self, bsz: int) -> Tensor:
        """2 I / (B f): the derivative of the importance-weighted mean square."""
        if bsz not in self._scale:
            self._scale[bsz] = self.importance * (2.0 / (bsz * self.model.cfg.n_features))
        return self._scale[bsz]

    def __call__(self, x: Tensor, want_loss: bool) -> Tensor | None:
        W, b = self.model.W, self.model.b_final
        bsz, inst, f = x.shape
        scale = self.scale(bsz)
        if self.block:
            # All instances at once: x [B, inst*f] @ blockdiag(WᵀW) [inst*f, inst*f].
            x2 = x.reshape(bsz, inst * f)
            torch.diagonal(self.M, dim1=0, dim2=2).copy_((W.transpose(1, 2) @ W).permute(1, 2, 0))
            out = torch.addmm(b.reshape(-1), x2, self.M.view(inst * f, inst * f))
            if self.relu:
                out.relu_()
            diff = out - x2
            loss = self._loss(diff.view(bsz, inst, f), scale) if want_loss else None
            g = diff.mul_(scale.reshape(-1))
            if self.relu:   # no gradient where the output ReLU is off
                g = torch.ops.aten.threshold_backward(g, out, 0.0)
            b.grad = g.sum(0).view(inst, f)
            dM = torch.diagonal((x2.T @ g).view(inst, f, inst, f), dim1=0, dim2=2)  # [f, f, inst]
            dM = dM.permute(2, 0, 1)
            W.grad = W @ (dM + dM.transpose(1, 2))
            return loss
        xt = x.transpose(0, 1)                                               # [inst, B, f]
        h = torch.bmm(xt, W.transpose(1, 2))                                 # [inst, B, h]
        out = torch.baddbmm(b[:, None, :], h, W)                             # [inst, B, f]
        if self.relu:
            out.relu_()
        diff = out - xt
        loss = self._loss(diff.transpose(0, 1), scale) if want_loss else None
        g = diff.mul_(scale[:, None, :])
        if self.relu:
            g = torch.ops.aten.threshold_backward(g, out, 0.0)
        b.grad = g.sum(1)
        W.grad = torch.bmm(h.transpose(1, 2), g)                             # decoder side
        W.grad.baddbmm_(torch.bmm(g, W.transpose(1, 2)).transpose(1, 2), xt)  # encoder side
        return loss

    @staticmethod
    def _loss(diff: Tensor, scale: Tensor) -> Tensor:
        # Σ_{b,f} scale·diff² / 2 is the importance-weighted mean, one value per instance.
        return (diff.square() * scale).sum(dim=(0, 2)) / 2


def train(model: ToyModel, cfg: TrainConfig | None = None, *,
          data: Iterable[Tensor] | None = None, progress: bool = True,
          **overrides: Any) -> TrainResult:
    """Train every instance of `model` in place; return the per-instance loss history.

    `cfg` fields can be overridden by keyword (`train(m, steps=2000, lr=3e-3)`). `data` is an
    optional iterable of [batch, n_instances, n_features] tensors used instead of fresh samples
    from the model's feature distribution (seeded by `cfg.seed`).
    """
    if not isinstance(model, ToyModel):
        raise TypeError(f"train takes a ToyModel, got {type(model).__name__}")
    cfg = v.replace_config(cfg or TrainConfig(), overrides)
    dev = model.device
    importance = model.cfg.importance_tensor().to(dev)
    probability = model.cfg.probability_tensor().to(dev)
    gen = make_generator(cfg.seed, dev)
    batches: Iterator[Tensor] | None = iter(data) if data is not None else None
    analytic = (cfg.analytic_grad and model.cfg.variant in ("relu_out", "linear")
                and not _has_hooks(model))
    step_fn = _AnalyticStep(model, importance) if analytic else None
    opt = _make_optimizer(list(model.parameters()), cfg)
    want_shape = (model.cfg.n_instances, model.cfg.n_features)

    logged_steps: list[int] = []
    losses: list[Tensor] = []
    lrs: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), disable=not progress, desc="toy", leave=False)
    for step in bar:
        lr = lr_at(step, cfg)
        if cfg.schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = lr
        if batches is None:
            x = generate_batch(model.cfg, cfg.batch_size, generator=gen, probability=probability)
        else:
            x = _next_batch(batches, step, want_shape, dev)
        log_now = step % cfg.log_every == 0 or step == cfg.steps - 1
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
            logged_steps.append(step)
            losses.append(loss.detach().float().cpu())
            lrs.append(lr)
            if progress:
                bar.set_postfix(loss=f"{losses[-1].mean():.4g}", refresh=False)
    seconds = time.perf_counter() - t0
    result = TrainResult(torch.tensor(logged_steps), torch.stack(losses), torch.tensor(lrs),
                         seconds, cfg, {"analytic_grad": analytic})
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
    v.finite_tensor(f"batch {step}", x)
    return x.to(dev)
