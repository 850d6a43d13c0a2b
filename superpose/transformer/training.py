"""Training the encoder (masked language modelling) and the encoder–decoder (teacher forcing)
on the training core every trainer shares (`superpose.train`: the schedule, AdamW, the
history shape, the diverged-loss rule).

    result = transformer.train_mlm(enc, texts, tokenizer, TrainConfig(steps=400))
    result = transformer.train_seq2seq(s2s, task, TrainConfig(steps=600))

Each step draws a fresh batch from a seeded generator, so a run is reproducible and its
batches never repeat. The history records the loss (and, for seq2seq, token accuracy of
the teacher-forced predictions).
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from superpose import _progress, lora
from superpose import _validate as v
from superpose.train import optim, schedule
from superpose.train.result import History, TrainResult, check_loss_finite
from superpose.train.schedule import SCHEDULE_RULES


@typing.no_type_check
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train an Encoder or a Seq2Seq. The schedule fields are every trainer's
    (`superpose.train.schedule`)."""

    _constraints: ClassVar[dict[str, v.Rule]] = {
        "steps": v.Int(1), "batch_size": v.Int(1), **SCHEDULE_RULES,
        "weight_decay": v.Float(ge=0), "betas": v.Pair(v.Float(ge=0, lt=1)),
        "grad_clip": v.Float(gt=0) | v.Const(None), "log_every": v.Int(1), "seed": v.Int(0),
    }

    steps: int = 1_000
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int | float = 0.05     # post-LN models need warm-up (Xiong et al. 2020)
    decay_steps: int | float | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)   # Vaswani et al. 2017
    grad_clip: float | None = 1.0
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        schedule.check_schedule_fits(self)


@dataclass
class Seq2SeqHistory(History):
    """History + token_accuracy: the fraction of real target tokens whose teacher-forced
    argmax is right, on the training batch."""

    token_accuracy: list[float] = field(default_factory=list)


def _fit(model: nn.Module, cfg: TrainConfig, step_loss: Callable[[int], tuple[Tensor, dict]],
         history: History, progress: bool, desc: str) -> TrainResult:
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a transformer.TrainConfig, got {type(cfg).__name__}")
    lora.check_trainable(model)          # merged adapters would get no gradient
    trainable = [p for p in model.parameters() if p.requires_grad]   # LoRA: the adapters only
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = optim.adam([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)
    model.train()
    start = time.perf_counter()
    bar = _progress.bar(range(cfg.steps), progress=progress, desc=desc)
    for i in bar:
        lr = schedule.lr_at(i, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, extra = step_loss(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if schedule.should_log(i + 1, cfg.steps, cfg.log_every):
            value = float(loss.detach())
            check_loss_finite(value, i + 1, lr)
            history.record(step=i + 1, loss=value, lr=lr,
                           seconds=time.perf_counter() - start, **extra)
            if progress:
                bar.set_postfix(loss=f"{value:.3f}")
    model.eval()
    return TrainResult(history=history, config=cfg, step=cfg.steps,
                       seconds=time.perf_counter() - start)


def mlm_batches(texts: Sequence[str] | str | Tensor, tokenizer: Any, *, batch_size: int,
                seq_len: int, generator: torch.Generator, min_len: int | None = None
                ) -> tuple[Tensor, Tensor]:
    """One MLM batch: `batch_size` random windows of the text(s), of random lengths in
    [min_len, seq_len - 2] characters/tokens, each as [CLS] window [SEP], right-padded.
    Returns (tokens, attention_mask)."""
    from superpose.transformer.data import pad_sequences
    ids = texts if isinstance(texts, Tensor) else tokenizer.encode(
        texts if isinstance(texts, str) else "\n".join(texts))
    body = seq_len - 2
    lo = body if min_len is None else min_len
    if not 1 <= lo <= body:
        raise ValueError(f"min_len must lie in [1, seq_len - 2 = {body}], got {min_len}")
    if len(ids) <= body:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of "
                         f"{body}; give a longer text or a smaller seq_len")
    starts = torch.randint(0, len(ids) - body, (batch_size,), generator=generator)
    lengths = torch.randint(lo, body + 1, (batch_size,), generator=generator)
    cls = torch.tensor([tokenizer.cls_id])
    sep = torch.tensor([tokenizer.sep_id])
    seqs = [torch.cat([cls, ids[s: s + n], sep]) for s, n in zip(starts.tolist(),
                                                                 lengths.tolist())]
    return pad_sequences(seqs, tokenizer.pad_id, padding_side="right")


def train_mlm(model: nn.Module, text: str | Tensor, tokenizer: Any,
              config: TrainConfig | None = None, *, seq_len: int | None = None,
              min_len: int | None = None, mask_prob: float = 0.15, progress: bool = True
              ) -> TrainResult:
    """Masked language modelling (BERT's recipe, `data.mlm_mask`) on random windows of `text`
    (a string, or its token ids), with padding from random window lengths. `tokenizer` is a
    `data.SpecialTokenizer` (it gives [PAD] [MASK] [CLS] [SEP])."""
    from superpose.transformer.data import mlm_mask
    cfg = config or TrainConfig()
    seq_len = seq_len or model.cfg.n_ctx
    if seq_len > model.cfg.n_ctx:
        raise ValueError(f"seq_len={seq_len} exceeds the encoder's context n_ctx="
                         f"{model.cfg.n_ctx}")
    if tokenizer.vocab_size != model.cfg.d_vocab:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the encoder's "
                         f"d_vocab is {model.cfg.d_vocab}; build it with "
                         f"d_vocab=tokenizer.vocab_size")
    ids = text if isinstance(text, Tensor) else tokenizer.encode(text)
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = model.device

    def step(i: int) -> tuple[Tensor, dict]:
        tokens, mask = mlm_batches(ids, tokenizer, batch_size=cfg.batch_size, seq_len=seq_len,
                                   generator=gen, min_len=min_len)
        inputs, labels = mlm_mask(tokens, mask_id=tokenizer.mask_id,
                                  vocab_size=tokenizer.vocab_size, attention_mask=mask,
                                  special_ids=tokenizer.special_ids, p=mask_prob, generator=gen)
        return model(inputs.to(dev), "loss", attention_mask=mask.to(dev),
                     labels=labels.to(dev)), {}

    return _fit(model, cfg, step, History(), progress, "MLM")


def seq2seq_loss(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
    """Teacher-forced loss of a `tasks.Seq2SeqBatch` and the token accuracy (argmax right at
    real target positions)."""
    dev = model.device
    logits, loss = model(batch.src.to(dev), batch.tgt_in.to(dev), "both",
                         src_attention_mask=batch.src_mask.to(dev),
                         tgt_attention_mask=batch.tgt_mask.to(dev),
                         labels=batch.tgt_out.to(dev))
    real = batch.tgt_out.to(dev) != -100
    acc = (logits.argmax(-1) == batch.tgt_out.to(dev))[real].float().mean()
    return loss, acc


def train_seq2seq(model: nn.Module, task: Any, config: TrainConfig | None = None, *,
                  progress: bool = True) -> TrainResult:
    """Teacher forcing on fresh batches of `task` (a `tasks.Seq2SeqTask`): the decoder reads
    the target shifted right behind BOS and predicts it followed by EOS."""
    cfg = config or TrainConfig()
    check_task_fits(model, task)
    gen = torch.Generator().manual_seed(cfg.seed)

    def step(i: int) -> tuple[Tensor, dict]:
        loss, acc = seq2seq_loss(model, task.batch(cfg.batch_size, gen))
        return loss, {"token_accuracy": float(acc)}

    return _fit(model, cfg, step, Seq2SeqHistory(), progress, "seq2seq")


def check_task_fits(model: nn.Module, task: Any) -> None:
    """A task whose vocabularies or lengths do not fit the model is a ValueError naming both."""
    mc = model.cfg
    pairs = (("source vocabulary", task.src_vocab_size, mc.d_vocab, "d_vocab"),
             ("target vocabulary", task.tgt_vocab_size, mc.vocab_tgt, "d_vocab_tgt"))
    for what, theirs, ours, fieldname in pairs:
        if theirs != ours:
            raise ValueError(f"the task's {what} has {theirs} ids but the model's {fieldname} "
                             f"gives {ours}; build the model from the task's tokenizers "
                             f"(d_vocab=task.src_vocab_size, d_vocab_tgt=task.tgt_vocab_size)")
    if task.max_src_len > mc.n_ctx:
        raise ValueError(f"the task's sources reach {task.max_src_len} tokens but the model's "
                         f"n_ctx is {mc.n_ctx}")
    if task.max_tgt_len > mc.n_ctx_tgt:
        raise ValueError(f"the task's decoder inputs reach {task.max_tgt_len} tokens (BOS "
                         f"included) but the model's n_ctx_tgt is {mc.n_ctx_tgt}")


def iterate(fn: Callable[[], Any]) -> Iterator[Any]:
    while True:
        yield fn()
