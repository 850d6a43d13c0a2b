"""Training sparse autoencoders on any iterator of activation tensors (never model code).

    result = train(s, batches, n_samples=4_000_000)        # or steps=..., lr=..., out=...
    result.history.l0, result.history.frac_dead; evaluate(s, ...)

One step: x → `sae.training_forward(x, dead_mask=, sparsity_coefficient=)` → backward → clip
the gradient norm (1.0) → for unit-norm decoders remove each decoder row's gradient component
parallel to the row → Adam(0.9, 0.999) → renormalise the rows → count which latents fired.

How the defaults were chosen (the measurements behind them: benchmarks/README.md, "SAE
training defaults"):
- lr=None means the lr ∝ 1/sqrt(width) scaling of Gao et al. (2024, Sec. 2.3), with a constant
  per architecture (`default_lr`): unit-norm decoders with gradient clipping stay stable at a
  higher rate than the penalised architectures, whose decoder norms are free.
- LR schedule: a short linear warm-up (1% of the steps), constant, then linear decay to 0 over
  the last 20% (Anthropic, "Circuits Updates — April 2024"); any schedule of
  `superpose.train.schedule` can be chosen instead, with the same field names as every trainer.
- Sparsity coefficient (relu, jumprelu, gated): linear warm-up from 0 over the first 5% of the
  steps (Anthropic's recipe), so latents find directions before they are pushed to zero.
- b_dec starts at the geometric median of the first batch (Weiszfeld iterations; Bricken et al.
  2023), which is robust to the heavy tails of sparse data; `b_dec_init="mean"` is cheaper.
- A latent is dead once it has not fired on the last `dead_window` samples (Gao et al. use
  10M tokens; our default 100k suits small runs); the mask feeds AuxK (topk, batchtopk).
  `resample_every` re-initialises dead latents toward badly reconstructed inputs (Bricken et
  al. 2023, "Towards Monosemanticity", neuron resampling) and zeroes their Adam moments.

Checkpoints (`out=`, `checkpoint_every=`): the format and resume rule of every trainer
(`superpose.train.checkpoint`); the trainer's own state is the dead-latent counters
(state.safetensors) and the resampling generator (rng.safetensors). `resume=True` loads the
newest and skips the batches it already consumed, so a deterministic data source repeats the
uninterrupted run exactly. Checkpoints written by earlier versions (state.json +
state.safetensors, no hashes) still resume. The final SAE goes to `<out>/sae` (SAELens format)
only when the run succeeds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _progress, runs
from superpose import _validate as v
from superpose.sae.base import SAE
from superpose.train import checkpoint as ckpt_io
from superpose.train.optim import adam
from superpose.train.result import History, TrainResult, check_loss_finite
from superpose.train.schedule import (
    SCHEDULE_RULES,
    STEPS_OR_FRACTION,
    check_schedule_fits,
    lr_at,
    resolve_steps,
    should_log,
)

log = logging.getLogger(__name__)

UNIT_NORM = ("topk", "batchtopk")          # decoder rows kept on the unit sphere
SPARSITY_PENALTY = ("relu", "jumprelu", "gated")
CHECKPOINT_FORMAT = "superpose.sae.checkpoint/2"
LEGACY_FORMAT = "superpose.sae.checkpoint/1"     # state.json + state.safetensors, no hashes


# lr at d_sae = 1024 and its cap, per architecture (how they were chosen: module docstring)
_LR_AT_1024 = {"topk": 2e-2, "batchtopk": 4e-3, "relu": 8e-3, "jumprelu": 8e-3}
_LR_CAP = {"topk": 2e-2, "batchtopk": 2e-2}


def default_lr(d_sae: int, architecture: str | None = None) -> float:
    """Gao et al.'s lr ∝ 1/sqrt(width), lr = c·sqrt(1024 / d_sae): c = 2e-2 for topk, 4e-3 for
    batchtopk (both capped at 2e-2), 8e-3 for relu and jumprelu, 4e-3 for the others (capped
    at 1e-2)."""
    c = _LR_AT_1024.get(architecture or "", 4e-3)
    return min(_LR_CAP.get(architecture or "", 1e-2), c * math.sqrt(1024 / d_sae))


# SAETrainConfig keys of earlier versions (checkpoints written before still resume).
_RENAMED = {"lr_warmup_fraction": "warmup_steps", "lr_decay": "schedule",
            "lr_decay_fraction": "decay_steps", "sparsity_warmup_fraction": "sparsity_warmup_steps"}


@dataclass(frozen=True, kw_only=True)
class SAETrainConfig:
    """How to train one SAE (the module docstring says where the defaults come from; the rule
    of each field is in `_constraints`).

    steps: optimizer steps; None takes `n_samples / batch size` or `len(data)`.
    lr: None means `default_lr(d_sae, architecture)`. schedule, warmup_steps, decay_steps,
      min_lr_ratio: every trainer's schedule fields (`superpose.train.schedule`); a float in
      [0, 1] is a fraction of the run, since its length may be known only from the data.
    sparsity_coefficient: overrides the SAE config's (None keeps it);
      sparsity_warmup_steps: its linear warm-up (relu, jumprelu, gated).
    grad_clip: max global gradient norm (None turns clipping off).
    decoder_norm: "auto" (unit rows with the parallel gradient removed for topk/batchtopk,
      free rows elsewhere: their penalties weight by the row norm), "unit" or "free".
    b_dec_init: "geometric_median" | "mean" | "zeros" of the first batch.
    dead_window: samples without firing after which a latent counts as dead.
    resample_every: steps between Anthropic-style resamplings of dead latents (None: never).
    checkpoint_every: with `out`, a checkpoint every N steps and at the end (0: at the end
      only; None: none); keep the newest `keep_checkpoints`.
    """

    _constraints: ClassVar[dict[str, v.Rule]] = {
        "steps": v.Int(1) | v.Const(None),
        **SCHEDULE_RULES,
        "lr": v.Float(gt=0) | v.Const(None),
        "betas": v.Pair(v.Float(ge=0, lt=1)),
        "sparsity_coefficient": v.Float(ge=0) | v.Const(None),
        "sparsity_warmup_steps": STEPS_OR_FRACTION,
        "grad_clip": (v.Float(gt=0) | v.Const(None)).described(
            "a positive finite max norm, or None to turn clipping off"),
        "decoder_norm": v.Choice("auto", "unit", "free"),
        "b_dec_init": v.Choice("geometric_median", "mean", "zeros"),
        "dead_window": v.Int(1),
        "resample_every": v.Int(1) | v.Const(None),
        "resample_encoder_scale": v.Float(gt=0),
        "checkpoint_every": v.Int(0) | v.Const(None),
        "keep_checkpoints": v.Int(1),
        "log_every": v.Int(1),
        "seed": v.Int(0),
    }

    steps: int | None = None
    lr: float | None = None
    schedule: str = "linear"
    warmup_steps: int | float = 0.01
    decay_steps: int | float | None = 0.2
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    sparsity_coefficient: float | None = None
    sparsity_warmup_steps: int | float = 0.05
    grad_clip: float | None = 1.0
    decoder_norm: str = "auto"
    b_dec_init: str = "geometric_median"
    dead_window: int = 100_000
    resample_every: int | None = None
    resample_encoder_scale: float = 0.2
    checkpoint_every: int | None = None
    keep_checkpoints: int = 1
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        check_schedule_fits(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAETrainConfig:
        """From JSON, including the keys of earlier versions (lr_warmup_fraction, lr_decay,
        lr_decay_fraction, sparsity_warmup_fraction; grad_clip 0 meant no clipping)."""
        data = {_RENAMED.get(k, k): val for k, val in data.items()}
        if data.get("schedule") == "none":
            data["schedule"] = "constant"
        if data.get("grad_clip") == 0:
            data["grad_clip"] = None
        if "betas" in data and isinstance(data["betas"], list):
            data["betas"] = tuple(data["betas"])
        return v.config_from_dict(cls, data)


@dataclass
class SAETrainHistory(History):
    """Besides `step`, `loss`, `lr` and `seconds`: the samples seen, the loss's parts (mse,
    sparsity penalty, auxiliary), the batch's mean L0, the fraction of dead latents and how
    many latents were resampled since the previous entry."""

    samples: list[int] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    aux: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    frac_dead: list[float] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)

    LOSS_LABEL: ClassVar[str] = "loss (MSE + the architecture's penalties)"


@dataclass(kw_only=True)
class SAETrainResult(TrainResult):
    """`superpose.train.TrainResult` plus the trained SAE, the samples seen, the dead-latent
    counters at the end and where the SAE was saved."""

    sae: SAE
    samples: int
    samples_since_fired: Tensor   # [d_sae], the dead-latent counters at the end
    dead_mask: Tensor             # [d_sae] bool
    saved_to: Path | None = None

    @property
    def frac_dead(self) -> float:
        return float(self.dead_mask.float().mean())


# ---- schedules and initialisation ----------------------------------------------------------

def sparsity_at(step: int, total: int, coefficient: float, cfg: SAETrainConfig) -> float:
    warm = resolve_steps(cfg.sparsity_warmup_steps, total)
    return coefficient if step >= warm else coefficient * (step + 1) / warm


def geometric_median(x: Float[Tensor, "batch d_in"], iters: int = 50, tol: float = 1e-6
                     ) -> Float[Tensor, " d_in"]:
    """Weiszfeld's algorithm: the point minimising the summed distance to the rows of x."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=-1).clamp_min(1e-12)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        done = (y_new - y).norm() <= tol * y.norm().clamp_min(1e-12)
        y = y_new
        if done:
            break
    return y.float()


def _unit_norm(sae: SAE, cfg: SAETrainConfig) -> bool:
    return cfg.decoder_norm == "unit" or (cfg.decoder_norm == "auto"
                                          and sae.cfg.architecture in UNIT_NORM)


@torch.no_grad()
def remove_parallel_grad(sae: SAE) -> None:
    """Drop the part of each decoder row's gradient along the row (Bricken et al. 2023): with
    unit rows, Adam then moves along the sphere instead of fighting the renormalisation."""
    g, w = sae.W_dec.grad, sae.W_dec
    if g is None:
        return
    unit = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    g.sub_((g * unit).sum(-1, keepdim=True) * unit)


# ---- data --------------------------------------------------------------------------------

def _check_batch(x: Any, index: int, sae: SAE) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"batch {index} is a {type(x).__name__}; the data must yield tensors "
                         f"of shape [batch, d_in={sae.cfg.d_in}]")
    if x.ndim >= 2 and x.shape[-1] != sae.cfg.d_in and sae._is_heads(x):
        x = x.flatten(-2)    # a crosscoder's [batch, n_models, d_in], a hook_z SAE's heads
    if x.ndim < 1 or x.shape[-1] != sae.cfg.d_in:
        raise ValueError(f"batch {index} has shape {list(x.shape)}, but the SAE's d_in is "
                         f"{sae.cfg.d_in}: activations must have width d_in={sae.cfg.d_in}")
    if x.numel() == 0:
        raise ValueError(f"batch {index} is empty (shape {list(x.shape)})")
    x = x.reshape(-1, sae.cfg.d_in)
    if not torch.isfinite(x).all():
        row = int((~torch.isfinite(x)).any(-1).nonzero()[0])
        raise ValueError(f"batch {index} contains NaN or inf (first in row {row}); it was not "
                         "trained on. Clean the activations before training")
    return x.to(sae.device, sae.W_dec.dtype)


# ---- resampling --------------------------------------------------------------------------

def _latent_slices(sae: SAE) -> list[tuple[str, torch.nn.Parameter, int]]:
    """(name, parameter, latent dim) for every parameter indexed by latent."""
    out = []
    for name, p in sae.named_parameters():
        if name == "W_enc":
            out.append((name, p, 1))
        elif name == "W_dec":
            out.append((name, p, 0))
        elif name != "b_dec" and p.ndim == 1 and p.shape[0] == sae.cfg.d_sae:
            out.append((name, p, 0))
    return out


@torch.no_grad()
def resample_dead(sae: SAE, x: Tensor, dead: Tensor, opt: torch.optim.Optimizer,
                  gen: torch.Generator, encoder_scale: float) -> int:
    """Re-initialise the `dead` latents toward inputs of `x` drawn with probability ∝ loss²
    (Bricken et al. 2023): decoder row = the input's direction (minus b_dec) at the mean alive
    row norm, encoder column = that direction · encoder_scale · mean alive encoder norm, biases
    0; their Adam moments are zeroed. Returns how many were resampled."""
    idx = dead.nonzero().flatten()
    n = idx.numel()
    if n == 0:
        return 0
    alive = ~dead
    err = (sae(x) - x).pow(2).sum(-1)
    weights = err.pow(2).double().cpu()
    if not torch.isfinite(weights).all() or weights.sum() <= 0:
        weights = torch.ones_like(weights)
    pick = torch.multinomial(weights, n, replacement=n > len(weights), generator=gen)
    dirs = x[pick.to(x.device)] - sae.b_dec
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dec_norm = sae.W_dec.norm(dim=-1)[alive].mean() if alive.any() else torch.tensor(1.0)
    enc_norm = sae.W_enc.norm(dim=0)[alive].mean() if alive.any() else torch.tensor(1.0)
    for name, p, dim in _latent_slices(sae):
        if name == "W_dec":
            p[idx] = dirs * dec_norm
        elif name == "W_enc":
            p[:, idx] = (dirs * enc_norm * encoder_scale).T
        elif name in ("b_enc", "b_gate", "b_mag", "r_mag"):
            p[idx] = 0.0
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, idx, 0.0)
    return n


# ---- the loop ----------------------------------------------------------------------------

def _total_steps(cfg: SAETrainConfig, n_samples: int | None, data: Any, batch: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    if n_samples is not None:
        v.positive_int("n_samples", n_samples)
        return max(1, math.ceil(n_samples / batch))
    if hasattr(data, "__len__"):
        return len(data)
    raise ValueError("give steps=... or n_samples=..., or data with a length: the schedule "
                     "needs to know how long the run is")


def train(sae: SAE, data: Iterable[Tensor], cfg: SAETrainConfig | None = None, *,
          n_samples: int | None = None, progress: bool = True, out: str | Path | None = None,
          resume: bool = False, **overrides: Any) -> SAETrainResult:
    """Train `sae` in place on the [batch, d_in] tensors of `data`; return the history.

    `cfg` fields may be overridden by keyword (`train(s, data, steps=500, lr=3e-3)`). `out`:
    folder for checkpoints and, at the end, the trained SAE (`<out>/sae`); `resume=True`
    continues from the newest checkpoint there (or starts afresh, with a log line, when there
    is none), given the same data from its start.
    """
    if not isinstance(sae, SAE):
        raise TypeError(f"train takes an SAE, got {type(sae).__name__}")
    cfg = v.replace_config(cfg or SAETrainConfig(), overrides)
    out_path = Path(out) if out is not None else None
    latest = ckpt_io.resume_point(out_path, resume, _MARKERS)
    if out_path is not None:
        runs.remove_leftovers(out_path / "sae")
    saved = _read_checkpoint(latest, sae, cfg) if latest is not None else None

    it: Iterator[Tensor] = iter(data)
    d_sae, arch = sae.cfg.d_sae, sae.cfg.architecture
    first_raw = next(it, None)
    if first_raw is None:
        raise ValueError("data yielded no batches")
    first = _check_batch(first_raw, 0, sae)
    batch_size = first.shape[0]
    total = _total_steps(cfg, n_samples, data, batch_size)
    check_schedule_fits(cfg, total)
    if cfg.sparsity_coefficient is not None and arch not in SPARSITY_PENALTY:
        raise ValueError(f"sparsity_coefficient={cfg.sparsity_coefficient!r} does not apply to "
                         f"a {arch!r} SAE (only {list(SPARSITY_PENALTY)} have a sparsity "
                         "penalty; its sparsity is k); leave it out (None)")
    base_lr = cfg.lr if cfg.lr is not None else default_lr(d_sae, arch)
    coeff = (cfg.sparsity_coefficient if cfg.sparsity_coefficient is not None
             else sae.cfg.sparsity_coefficient)
    unit = _unit_norm(sae, cfg)
    params = list(sae.parameters())
    names = [n for n, _ in sae.named_parameters()]
    opt = adam(params, lr=base_lr, betas=cfg.betas, decoupled=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=sae.device)
    history = SAETrainHistory()
    start, samples, seconds_before, resampled_before = 0, 0, 0.0, 0

    if saved is not None:
        ckpt_io.check_matches_model(saved, sae, names)
        sae.load_state_dict(saved.weights)
        opt.load_state_dict(saved.optimizer)
        since_fired.copy_(saved.state["samples_since_fired"])
        gen.set_state(saved.rng["resample"])
        history = SAETrainHistory.from_dict(saved.history)
        start, samples, seconds_before = saved.step, int(saved.meta["samples"]), saved.seconds
        resampled_before = int(saved.state.get("resampled_since_log", torch.zeros(())))
        for i in range(1, start):     # batch 0 is `first`; skip what was already trained on
            if next(it, None) is None:
                raise ValueError(f"data ran out after {i} batches while skipping the {start} "
                                 "the checkpoint had already trained on")
        first = None
    else:
        with torch.no_grad():
            if cfg.b_dec_init != "zeros":
                x0 = first * sae.cfg.activation_scale
                init = geometric_median(x0) if cfg.b_dec_init == "geometric_median" \
                    else x0.mean(0)
                sae.b_dec.copy_(init.to(sae.b_dec))
            if unit:
                sae.normalize_decoder()
    sae.train()

    t0 = time.perf_counter()
    bar = _progress.bar(range(start, total), progress=progress, desc=f"sae {arch}",
                        leave=False, initial=start, total=total)
    resampled, last_ckpt = resampled_before, saved.path if saved is not None else None
    for step in bar:
        if first is not None:
            x, first = first, None
        else:
            nxt = next(it, None)
            if nxt is None:
                raise ValueError(f"data ran out after {step} batches; the run needs {total} "
                                 "(lower steps/n_samples or give more data)")
            x = _check_batch(nxt, step, sae)
        lr = lr_at(step, cfg, steps=total, lr=base_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        dead = since_fired >= cfg.dead_window
        out_step = sae.training_forward(x, dead_mask=dead,
                                        sparsity_coefficient=sparsity_at(step, total, coeff, cfg)
                                        if arch in SPARSITY_PENALTY else None)
        if not torch.isfinite(out_step.loss):
            check_loss_finite(out_step.loss.item(), step + 1, lr, last_ckpt)
        opt.zero_grad(set_to_none=True)
        out_step.loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if unit:
            remove_parallel_grad(sae)
        opt.step()
        done = step + 1
        with torch.no_grad():
            if unit:
                sae.normalize_decoder()
            since_fired.add_(x.shape[0]).masked_fill_(out_step.fired(), 0)
            samples += x.shape[0]
            if cfg.resample_every and done % cfg.resample_every == 0 and done < total:
                dead_now = since_fired >= cfg.dead_window
                n = resample_dead(sae, x, dead_now, opt, gen, cfg.resample_encoder_scale)
                since_fired.masked_fill_(dead_now, 0)
                resampled += n
        if should_log(done, total, cfg.log_every):
            ls = out_step.losses
            history.record(
                step=done, loss=float(out_step.loss.detach()), lr=lr,
                seconds=seconds_before + time.perf_counter() - t0, samples=samples,
                mse=float(ls["mse"].detach()),
                sparsity=float(ls["sparsity"].detach()) if "sparsity" in ls else 0.0,
                aux=float(ls["aux"].detach()) if "aux" in ls else 0.0, l0=out_step.l0(),
                frac_dead=float((since_fired >= cfg.dead_window).float().mean()),
                resampled=resampled)
            resampled = 0
            if progress:
                bar.set_postfix(mse=f"{history.mse[-1]:.4g}", l0=f"{history.l0[-1]:.1f}",
                                dead=f"{history.frac_dead[-1]:.2f}", refresh=False)
        if out_path is not None and cfg.checkpoint_every is not None and (
                done == total or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            last_ckpt = ckpt_io.save_checkpoint(
                out_path, done, format=CHECKPOINT_FORMAT, model=sae, optimizer=opt,
                param_names=names, train_config=cfg, history=history.to_dict(),
                rng={"resample": gen.get_state()},
                state={"samples_since_fired": since_fired,
                       "resampled_since_log": torch.tensor(resampled)},
                seconds=seconds_before + time.perf_counter() - t0, meta={"samples": samples},
                keep=cfg.keep_checkpoints)
    bar.close()
    sae.eval()
    seconds = time.perf_counter() - t0
    saved_to = sae.save(out_path / "sae") if out_path is not None else None
    log.info("trained %s SAE for %d steps (%d samples) in %.1fs", arch, total, samples,
             seconds_before + seconds)
    return SAETrainResult(history=history, config=cfg, step=max(start, total), seconds=seconds,
                          resumed_from=start if saved is not None else None,
                          checkpoint=last_ckpt, sae=sae, samples=samples,
                          samples_since_fired=since_fired.cpu(),
                          dead_mask=(since_fired >= cfg.dead_window).cpu(), saved_to=saved_to)


# ---- checkpoints: the shared format, and the one this trainer wrote before it --------------

_MARKERS = (ckpt_io.MARKER, "state.json")


def _read_checkpoint(folder: Path, sae: SAE, cfg: SAETrainConfig) -> ckpt_io.Checkpoint:
    """Read and verify a checkpoint of this trainer, and check `cfg` may resume it."""
    if (folder / ckpt_io.MARKER).is_file():
        saved = ckpt_io.read_checkpoint(folder, CHECKPOINT_FORMAT)
        saved.train_config = runs.to_jsonable(SAETrainConfig.from_dict(saved.train_config))
    else:
        saved = _read_legacy(folder, sae)
    ckpt_io.check_resume_config(saved.train_config, cfg, folder, ckpt_io.RESUMABLE)
    return saved


def _read_legacy(folder: Path, sae: SAE) -> ckpt_io.Checkpoint:
    """A checkpoint of format 1 (state.json + state.safetensors, no hashes) in today's shape:
    its history's steps counted from 0 and had no times; its config keys had other names."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError) as e:
        raise ckpt_io.corrupt(folder, f"it cannot be read ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != LEGACY_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ckpt_io.corrupt(folder, f"state.json has format {got!r}, expected "
                                      f"{LEGACY_FORMAT!r}")
    try:
        history = dict(meta["history"])
        history["step"] = [s + 1 for s in history["step"]]
        history["seconds"] = [math.nan] * len(history["step"])
        return ckpt_io.Checkpoint(
            path=folder, step=int(meta["step"]), seconds=float(meta["seconds"]),
            model_class=type(sae).__name__, meta={"samples": int(meta["samples"])},
            model_config=None, weights={k[4:]: t for k, t in tensors.items()
                                        if k.startswith("sae.")},
            train_config=runs.to_jsonable(SAETrainConfig.from_dict(meta["train_config"])),
            optimizer=ckpt_io.unflatten_optimizer(tensors, meta["optimizer"]),
            optimizer_param_names=[n for n, _ in sae.named_parameters()],
            rng={"resample": tensors["rng.resample"]},
            state={"samples_since_fired": tensors["dead.samples_since_fired"]},
            history=history)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ckpt_io.corrupt(folder, f"state.json lacks or garbles {e!r}") from None
