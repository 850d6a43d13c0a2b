"""Training a small GPT, or any module mapping tokens [batch pos] to logits [batch pos d_vocab].

    data = gpt.TokenDataset(tok.encode(corpus.train), n_ctx=128)
    val = gpt.TokenDataset(tok.encode(corpus.val), n_ctx=128)
    result = gpt.train(model, data, steps=2_000, val_data=val, out="results/run1")
    # after a crash, or to look at a checkpoint and go on: the same call with resume=True
    result = gpt.train(model, data, steps=2_000, val_data=val, out="results/run1", resume=True)

`data` is a `TokenDataset` (random windows drawn with a generator seeded by `seed`) or any
iterable of `(x, y)` pairs of [batch_size, pos] token tensors, y the next-token targets of x.
The trainer calls nothing but `model(x)`; it reads `model.cfg` only to store it with the
checkpoints.

Batches. `batch_size` is the global batch of one optimizer step, in sequences. Under torchrun
each of the W processes keeps rows [rank·B/W, (rank+1)·B/W) of it and splits them into
`grad_accum` micro-batches. Every process draws the same global batch from the same seeded
generator, so a run on W processes sees exactly the batches of a run on one (the DDP test
checks that the weights agree).

Loss. Each micro-batch's mean cross-entropy is divided by `grad_accum` before `backward`; the
micro-batches hold equal numbers of tokens, so the accumulated gradient is the gradient of the
whole batch's mean loss (tested), and DDP's average over processes makes it the global mean.
`label_smoothing` (Szegedy et al. 2016) enters the training loss only; validation reports the
plain cross-entropy, so runs with and without it compare.

Optimizer. AdamW (Loshchilov & Hutter 2019). Weight decay applies to parameters with 2 or
more dimensions (attention, MLP, unembedding and embedding matrices) and never to 1-D ones
(LayerNorm gains: pulling a gain towards 0 does not regularise, it rescales) nor to biases,
whatever their shape (named `bias` or `b_*`, like GPT's fused [3, head, d_head] `b_QKV`).
Embeddings are decayed too by default, as in nanoGPT; `decay_embeddings=False` exempts
`nn.Embedding` weights and TransformerLens-named `W_E`/`W_pos` (then a tied unembedding is not
decayed either).

Schedule. Linear warm-up over `warmup_steps`, then "cosine" decay to `lr · min_lr_ratio` at
`steps`, "inverse_sqrt" decay `lr · sqrt(warmup / step)` (Vaswani et al. 2017) floored at the
same minimum, or "constant".

Precision. "bf16" runs forward passes under `torch.autocast(dtype=bfloat16)` (weights,
gradients and optimizer state stay float32; the loss is computed in float32). "auto" means
bf16 on CUDA devices that support it and float32 on CPU, where bf16 is slow.

Randomness. Dropout draws from torch's global RNG. `train` works inside
`torch.random.fork_rng`, seeds it from (seed, rank), and restores the caller's RNG state when
it returns. The data generator's and each process's dropout RNG state go into every
checkpoint, which is why a resumed run repeats an uninterrupted one exactly.

Checkpoints (`out=`): see `superpose.train.checkpoint` (the format and the resume rule of
every trainer). Every `checkpoint_every` steps and at the
end; only rank 0 writes; `out` already holding checkpoints is an error unless `resume=True`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _deprecation as deprecation
from superpose import _progress, lora
from superpose import _validate as v
from superpose.gpt import distributed as dist_
from superpose.gpt.corpus import TokenDataset
from superpose.gpt.train_config import (
    PRECISIONS,
    RESUMABLE_CHANGES,
    GPTTrainConfig,
    GPTTrainResult,
    Precision,
    Schedule,
    TrainHistory,
)
from superpose.train import checkpoint as ckpt_io
from superpose.train.optim import adam
from superpose.train.result import check_loss_finite
from superpose.train.schedule import SCHEDULES, lr_at, should_log

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "superpose.gpt.checkpoint/1"

__all__ = ["PRECISIONS", "SCHEDULES", "GPTTrainConfig", "GPTTrainResult", "Precision",
           "Schedule", "TrainHistory", "evaluate", "forward_backward", "lr_at",
           "make_optimizer", "param_groups", "train"]


def param_groups(model: nn.Module, cfg: GPTTrainConfig) -> tuple[list[dict], list[str]]:
    """AdamW groups: [decayed (≥ 2-D), not decayed], and the parameter names in group order
    (the order the optimizer numbers them, recorded in checkpoints)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        is_bias = leaf == "bias" or leaf.startswith("b_")     # torch's and TL's names
        is_embedding = id(p) in embeddings or leaf in ("W_E", "W_pos")
        if p.ndim >= 2 and not is_bias and (cfg.decay_embeddings or not is_embedding):
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    keep = [g for g in groups if g["params"]]
    if not keep:
        raise ValueError("the model has no trainable parameters")
    return keep, decay_names + no_decay_names


def make_optimizer(model: nn.Module, cfg: GPTTrainConfig) -> tuple[torch.optim.AdamW, list[str]]:
    groups, names = param_groups(model, cfg)
    return adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps), names


def _use_bf16(cfg: GPTTrainConfig, dev: torch.device) -> bool:
    if cfg.precision == "auto":
        return dev.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.precision == "bf16"


def _autocast(dev: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _logits(model: nn.Module, x: Int[Tensor, "batch pos"], y: Int[Tensor, "batch pos"],
            bf16: bool) -> Float[Tensor, "batch pos d_vocab"]:
    with _autocast(x.device, bf16):
        logits = model(x)
    if not isinstance(logits, Tensor) or logits.ndim != y.ndim + 1 \
            or logits.shape[:-1] != y.shape:
        shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the model must map tokens [batch, pos] to logits [batch, pos, "
                         f"d_vocab]; for tokens {list(x.shape)} it returned {shape}")
    return logits.float()


def forward_backward(model: nn.Module, x: Int[Tensor, "batch pos"], y: Int[Tensor, "batch pos"],
                     grad_accum: int, *, label_smoothing: float = 0.0,
                     bf16: bool = False) -> Float[Tensor, ""]:
    """Accumulate into `.grad` the gradient of the mean cross-entropy of the whole batch,
    `grad_accum` micro-batches at a time; return that loss (detached). Under DDP the gradient
    all-reduce runs once, on the last micro-batch."""
    total = torch.zeros((), device=x.device)
    xs, ys = x.chunk(grad_accum), y.chunk(grad_accum)
    no_sync = getattr(model, "no_sync", None)
    for i, (xm, ym) in enumerate(zip(xs, ys)):
        ctx = no_sync() if no_sync is not None and i < len(xs) - 1 else contextlib.nullcontext()
        with ctx:
            logits = _logits(model, xm, ym, bf16)
            loss = F.cross_entropy(logits.flatten(0, -2), ym.flatten(),
                                   label_smoothing=label_smoothing)
            (loss / grad_accum).backward()
        total += loss.detach()
    return total / grad_accum


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenDataset | Iterable[tuple[Tensor, Tensor]], *,
             n_batches: int = 10, batch_size: int = 32, micro_batch_size: int | None = None,
             bf16: bool = False, batches: int | None = None,
             chunk_size: int | None = None) -> float:
    """Mean next-token cross-entropy per token over the first `n_batches` batches of `data`
    (a TokenDataset's non-overlapping windows in order, `batch_size` rows each, or a
    re-iterable of (x, y)). Runs in eval mode (no dropout) on the model's device; under DDP
    each process takes its share of every batch and the sums are added up.
    `micro_batch_size` bounds the rows per forward pass (None: a whole batch at once); the
    loss does not depend on it beyond float rounding.

    Deprecated: `batches=` (now `n_batches=`, as in `sae.evaluate`) and `chunk_size=` (now
    `micro_batch_size=`: a row count per forward pass, not a block of pairs)."""
    if batches is not None:
        n_batches = deprecation.renamed_argument("evaluate", "batches", "n_batches", batches,
                                                 n_batches, default=10)
    if chunk_size is not None:
        micro_batch_size = deprecation.renamed_argument(
            "evaluate", "chunk_size", "micro_batch_size", chunk_size, micro_batch_size)
    v.positive_int("n_batches", n_batches)
    v.positive_int("batch_size", batch_size)
    if micro_batch_size is not None:
        v.positive_int("micro_batch_size", micro_batch_size)
    batches = n_batches
    world = dist_.current()
    dev = next(model.parameters()).device
    if isinstance(data, TokenDataset):
        source: Iterable = data.sequential(batch_size, max_batches=batches)
    else:
        source = itertools.islice(_check_reiterable(data, "data"), batches)
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=dev)
    try:
        for i, pair in enumerate(source):
            x, y = _check_pair(pair, i, "val_data")
            check_token_ids(x, y, _vocab_size(model), f"val_data batch {i}")
            x, y = (t.tensor_split(world.world_size)[world.rank] for t in (x, y))
            if len(x) == 0:
                continue
            step = micro_batch_size or len(x)
            for xc, yc in zip(x.split(step), y.split(step)):
                xc, yc = xc.to(dev, non_blocking=True), yc.to(dev, non_blocking=True)
                logits = _logits(model, xc, yc, bf16)
                sums[0] += F.cross_entropy(logits.flatten(0, -2), yc.flatten(), reduction="sum")
                sums[1] += yc.numel()
    finally:
        model.train(was_training)
    dist_.all_reduce_sum_(sums)
    if sums[1] == 0:
        raise ValueError("val_data gave no batches to evaluate on")
    return float(sums[0] / sums[1])


def _check_reiterable(data: Any, name: str) -> Iterator:
    try:
        it = iter(data)
    except TypeError:
        raise ValueError(f"{name} must be a TokenDataset or an iterable of (x, y) token "
                         f"batches, got {type(data).__name__}") from None
    if it is data:
        raise ValueError(f"{name} must be re-iterable (a TokenDataset or a list of (x, y) "
                         "batches): the same batches are evaluated every time, and a one-shot "
                         f"iterator ({type(data).__name__}) is used up after the first")
    return it


IGNORE_INDEX = -100        # cross_entropy's: a target that counts in no loss


def _vocab_size(model: nn.Module) -> int | None:
    """The model's vocabulary size when its config says it (ours and TL's do)."""
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    return d_vocab if isinstance(d_vocab, int) and d_vocab > 0 else None


def check_token_ids(x: Tensor, y: Tensor | None, d_vocab: int | None, where: str) -> None:
    """Token ids in [0, d_vocab) and targets there too or IGNORE_INDEX, with at least one target
    that counts: a batch of ignored targets has a NaN mean loss, an id out of range an
    IndexError deep inside the embedding or the loss."""
    tensors = [("tokens", x)] + ([("targets", y)] if y is not None else [])
    for what, t in tensors:
        if t.numel() == 0:
            continue
        real = t[t != IGNORE_INDEX] if what == "targets" else t
        lo = int(real.min()) if real.numel() else 0
        hi = int(real.max()) if real.numel() else 0
        top = d_vocab - 1 if d_vocab is not None else None
        if lo < 0 or (top is not None and hi > top):
            bad = lo if lo < 0 else hi
            allowed = f"0..{top}" if top is not None else "non-negative"
            extra = f" or {IGNORE_INDEX} (ignored)" if what == "targets" else ""
            raise ValueError(f"{where}: {what} hold the id {bad}, but ids must be {allowed}"
                             f"{extra}; encode the text with the model's tokenizer")
        if what == "targets" and real.numel() == 0:
            raise ValueError(f"{where}: every target is {IGNORE_INDEX} (ignored), so the batch "
                             "has no loss to average; give at least one real target per batch")


def _check_pair(pair: Any, i: int, name: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(t, Tensor) for t in pair)):
        raise ValueError(f"{name} batch {i} must be a pair (x, y) of token tensors, got "
                         f"{type(pair).__name__}")
    x, y = pair
    if x.ndim != 2 or x.shape != y.shape or x.dtype.is_floating_point \
            or y.dtype.is_floating_point:
        raise ValueError(f"{name} batch {i}: x and y must be integer token tensors of one shape "
                         f"[batch, pos], got {list(x.shape)} {x.dtype} and {list(y.shape)} "
                         f"{y.dtype}")
    return x.long(), y.long()


class _Batches:
    """The global batch of every step, from a TokenDataset (seeded generator) or an iterable."""

    def __init__(self, data: Any, cfg: GPTTrainConfig, d_vocab: int | None = None) -> None:
        self.cfg, self.d_vocab = cfg, d_vocab
        self.dataset = data if isinstance(data, TokenDataset) else None
        if self.dataset is not None:
            check_token_ids(self.dataset.tokens, None, d_vocab, "data")   # once, whole set
            self.gen = torch.Generator(device=self.dataset.tokens.device).manual_seed(cfg.seed)
        else:
            try:
                self.it = iter(data)
            except TypeError:
                raise ValueError(f"data must be a TokenDataset or an iterable of (x, y) token "
                                 f"batches, got {type(data).__name__}") from None
        self.served = 0

    def state(self) -> Tensor | None:
        return self.gen.get_state() if self.dataset is not None else None

    def restore(self, state: Tensor | None, step: int) -> None:
        if self.dataset is not None:
            if state is None:
                raise ValueError("the checkpoint has no data generator state, so it was "
                                 "trained on an iterable, not a TokenDataset; resume with the "
                                 "same kind of data")
            self.gen.set_state(state)
            self.served = step
        else:   # an iterable cannot be restored: replay it up to where the run stopped
            for _ in range(step):
                self.next()

    def next(self) -> tuple[Tensor, Tensor]:
        step = self.served
        if self.dataset is not None:
            x, y = self.dataset.sample(self.cfg.batch_size, generator=self.gen)
        else:
            try:
                pair = next(self.it)
            except StopIteration:
                raise ValueError(f"data ran out after {step} batches; give at least `steps` "
                                 f"({self.cfg.steps}) batches or lower steps") from None
            x, y = _check_pair(pair, step, "data")
            check_token_ids(x, y, self.d_vocab, f"data batch {step}")
            if len(x) != self.cfg.batch_size:
                raise ValueError(f"data batch {step} has {len(x)} sequences but batch_size is "
                                 f"{self.cfg.batch_size}; set batch_size={len(x)} (the global "
                                 "batch of one step) or change the data")
        self.served += 1
        return x, y


def _rng_state(dev: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(dev) if dev.type == "cuda"
                                   else None)


def _seed_rng(seed: int, dev: torch.device) -> None:
    torch.default_generator.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.default_generators[dev.index].manual_seed(seed)


def _dropout_seed(seed: int, rank: int) -> int:
    """Distinct from the data generator's seed and from every other process's."""
    return (seed * 1_000_003 + 7_919 * (rank + 1)) % (2**63)


def _check_resume_config(saved: dict[str, Any], cfg: GPTTrainConfig, where: Path) -> None:
    ckpt_io.check_resume_config(saved, cfg, where, RESUMABLE_CHANGES)
    if saved.get("steps") != cfg.steps and cfg.schedule != "constant":
        log.warning("resuming with steps=%d instead of %s: the %s schedule is stretched "
                    "from here on", cfg.steps, saved.get("steps"), cfg.schedule)


def train(model: nn.Module, data: TokenDataset | Iterable[tuple[Tensor, Tensor]],
          cfg: GPTTrainConfig | None = None, *,
          val_data: TokenDataset | Iterable[tuple[Tensor, Tensor]] | None = None,
          out: str | Path | None = None, resume: bool = False,
          device: str | torch.device | None = None, progress: bool = True,
          **overrides: Any) -> GPTTrainResult:
    """Train `model` in place for `cfg.steps` optimizer steps (see the module docstring).

    `cfg` fields can be overridden by keyword (`train(model, data, steps=500, lr=3e-4)`).
    `out`: folder for checkpoints; `resume=True` continues from the newest one there (or
    starts afresh, with a log line, when there is none). `device=None`: CUDA when available
    (`cuda:LOCAL_RANK` under torchrun), else CPU; the model is moved there.
    """
    cfg = v.replace_config(cfg if cfg is not None else GPTTrainConfig(), overrides)
    if not isinstance(model, nn.Module):
        raise TypeError(f"train takes an nn.Module, got {type(model).__name__}")
    lora.check_trainable(model)          # merged adapters would get no gradient
    world = dist_.current()
    if cfg.batch_size % (cfg.grad_accum * world.world_size):
        raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by grad_accum "
                         f"({cfg.grad_accum}) x number of processes ({world.world_size})")
    if val_data is not None and not isinstance(val_data, TokenDataset):
        _check_reiterable(val_data, "val_data")
    dev = dist_.device_for_rank(device)
    if world.distributed and dev.type == "cuda":
        torch.cuda.set_device(dev)       # nccl collectives run on the current device
    out = Path(out) if out is not None else None

    # Read and check the checkpoint before anything is changed (model, files).
    saved = None
    latest = ckpt_io.resume_point(out, resume)         # every process: the same checks
    latest = dist_.broadcast_object(latest if world.is_main else None)
    if latest is not None:
        saved = ckpt_io.read_checkpoint(latest, CHECKPOINT_FORMAT)
        _check_resume_config(saved.train_config, cfg, saved.path)
    if saved is not None:
        ckpt_io.check_matches_model(saved, model, param_groups(model, cfg)[1])
    model.to(dev)
    opt, names = make_optimizer(model, cfg)
    if saved is not None:
        model.load_state_dict(saved.weights)
        opt.load_state_dict(saved.optimizer)
    batches = _Batches(data, cfg, _vocab_size(model))
    history = TrainHistory.from_dict(saved.history) if saved is not None else TrainHistory()
    start = saved.step if saved is not None else 0
    tokens = int(saved.meta["tokens"]) if saved is not None else 0
    seconds_before = saved.seconds if saved is not None else 0.0
    if saved is not None:
        batches.restore(saved.rng.get("data"), start)
    net: nn.Module = model
    if world.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    bf16 = _use_bf16(cfg, dev)
    rows = cfg.batch_size // world.world_size
    val_chunk = cfg.batch_size // (cfg.grad_accum * world.world_size)
    last_ckpt: Path | None = None
    was_training = model.training

    bar = _progress.bar(total=cfg.steps, initial=min(start, cfg.steps), desc="gpt",
                        leave=False, progress=progress and world.is_main)
    t0 = time.perf_counter()
    tokens_before = tokens
    with torch.random.fork_rng(devices=[dev.index] if dev.type == "cuda" else []):
        cpu_key, cuda_key = f"cpu.{world.rank}", f"cuda.{world.rank}"
        if saved is not None and cpu_key in saved.rng:
            torch.set_rng_state(saved.rng[cpu_key])
            if dev.type == "cuda" and cuda_key in saved.rng:
                torch.cuda.set_rng_state(saved.rng[cuda_key], dev)
        else:
            if saved is not None:
                log.warning("checkpoint %s has no RNG state for rank %d (it ran on %s "
                            "processes): dropout masks of this process are seeded afresh",
                            saved.path, world.rank, saved.meta.get("world_size"))
            _seed_rng(_dropout_seed(cfg.seed, world.rank), dev)
        model.train()
        try:
            for step in range(start, cfg.steps):
                s = step + 1
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = batches.next()
                tokens += x.numel()
                lo = world.rank * rows
                x = x[lo:lo + rows].to(dev, non_blocking=True)
                y = y[lo:lo + rows].to(dev, non_blocking=True)
                loss = forward_backward(net, x, y, cfg.grad_accum,
                                        label_smoothing=cfg.label_smoothing, bf16=bf16)
                norm = nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.grad_clip if cfg.grad_clip is not None else math.inf)
                opt.step()
                opt.zero_grad(set_to_none=True)
                if should_log(s, cfg.steps, cfg.log_every):
                    loss_value = float(dist_.all_reduce_mean_(loss))
                    check_loss_finite(loss_value, s, lr, last_ckpt)
                    history.record(step=s, loss=loss_value, lr=lr, grad_norm=float(norm),
                                   tokens=tokens,
                                   seconds=seconds_before + time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
                if val_data is not None and (s == cfg.steps or (
                        cfg.val_every and s % cfg.val_every == 0)):
                    val = evaluate(model, val_data, n_batches=cfg.val_batches,
                                   batch_size=cfg.val_batch_size or cfg.batch_size,
                                   micro_batch_size=val_chunk, bf16=bf16)
                    history.val_step.append(s)
                    history.val_loss.append(val)
                    bar.set_postfix(loss=f"{history.loss[-1]:.4g}", val=f"{val:.4g}",
                                    refresh=False)
                if out is not None and (s == cfg.steps or (
                        cfg.checkpoint_every and s % cfg.checkpoint_every == 0)):
                    last_ckpt = _save(out, s, model, opt, names, cfg, history, batches,
                                      dev, tokens, seconds_before + time.perf_counter() - t0,
                                      world)
                bar.update(1)
        finally:
            bar.close()
            model.train(was_training)
    seconds = time.perf_counter() - t0
    done = cfg.steps - min(start, cfg.steps)
    tok_s = (tokens - tokens_before) / seconds if seconds > 0 else 0.0
    result = GPTTrainResult(history=history, config=cfg, step=max(start, cfg.steps),
                            seconds=seconds, tokens_per_second=tok_s,
                            world_size=world.world_size,
                            resumed_from=start if saved is not None else None,
                            checkpoint=last_ckpt if last_ckpt is not None else (
                                saved.path if saved is not None else None))
    if world.is_main:
        log.info("trained %d steps in %.1fs (%.0f tokens/s); loss %.4g%s", done, seconds,
                 tok_s, result.final_loss,
                 f", val {result.final_val_loss:.4g}" if history.val_loss else "")
    return result


def _save(out: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, names: list[str],
          cfg: GPTTrainConfig, history: TrainHistory, batches: _Batches, dev: torch.device,
          tokens: int, seconds: float, world: dist_.World) -> Path:
    """Gather every process's RNG state, let rank 0 write, and wait for it."""
    cpu, cuda = _rng_state(dev)
    cpu_all = dist_.gather_tensors(cpu)
    cuda_all = dist_.gather_tensors(cuda) if cuda is not None else [None] * world.world_size
    path = out / ckpt_io.checkpoint_name(step)
    if world.is_main:
        rng = {f"cpu.{r}": s for r, s in enumerate(cpu_all)}
        rng.update({f"cuda.{r}": s for r, s in enumerate(cuda_all) if s is not None})
        if batches.state() is not None:
            rng["data"] = batches.state()
        path = ckpt_io.save_checkpoint(
            out, step, format=CHECKPOINT_FORMAT, model=model, optimizer=opt,
            param_names=names, train_config=cfg, history=history.to_dict(), rng=rng,
            seconds=seconds, meta={"tokens": tokens, "world_size": world.world_size},
            keep=cfg.keep_checkpoints)
    dist_.barrier()
    return path
