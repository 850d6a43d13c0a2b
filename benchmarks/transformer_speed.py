"""Training speed of superpose's Encoder and Seq2Seq against the same shapes built on torch's
`nn.TransformerEncoder` and `nn.Transformer`.

Workloads (`--only` picks some; each runs on its own, its two contenders alternating):

  enc-small  Encoder, d_model 128, 2 layers, 4 heads, seq 64, batch 32       (the tuned size)
  s2s-small  Seq2Seq, d_model 128, 2+2 layers, 4 heads, src/tgt 64, batch 32
  enc-large  Encoder, d_model 256, 4 layers, 8 heads, seq 128, batch 16      (not tuned on)
  s2s-large  Seq2Seq, d_model 256, 4+4 layers, 8 heads, src/tgt 128, batch 16

d_vocab 512 everywhere, GELU MLP (4x), dropout 0, learned positions, each model's default
norm (Encoder: BERT's post-LN with a LayerNorm on the embedding and BERT's MLM head;
Seq2Seq: pre-LN with final LayerNorms on both stacks). AdamW(lr 1e-3, betas (0.9, 0.98),
weight decay 0.01 on every parameter), clipping at 1.0.

Data (drawn once, before timing; both contenders get the same batches):
  Encoder  random tokens (Zipf-like unigram over ids 4..511, so the loss has somewhere to go),
           half the rows right-padded to a random length in [seq/2, seq); BERT's MLM recipe:
           15% of the real positions get a label, of those 80% become [MASK], 10% a random
           token, 10% stay; labels -100 elsewhere. Loss: mean cross-entropy over the labels.
  Seq2Seq  the copy task: the target is the source (seq - 1 tokens at most); half the rows
           right-padded on both sides. Teacher forcing: the decoder reads BOS + target and
           predicts target + EOS (seq positions).

Contenders (same initial weights: the torch model's are copied from ours, the layouts map one
to one, so the two loss curves should agree to float rounding):
  superpose  `transformer.Encoder` / `transformer.Seq2Seq`, nothing hooked (hooks present,
             unused), trained through the model's own loss (`return_type="loss"`, which
             validates tokens, masks and labels on every call).
  torch      `nn.TransformerEncoder(nn.TransformerEncoderLayer(batch_first=True,
             norm_first=False, activation="gelu", dropout=0))` / `nn.Transformer(batch_first=
             True, norm_first=True, ...)` with the same embeddings, embedding LayerNorm, MLM
             head and unembedding written plainly (`nn.Embedding`, `nn.LayerNorm`,
             `nn.Linear`), `key_padding_mask` from the same padding, a causal `tgt_mask`, and
             `F.cross_entropy(ignore_index=-100)`. torch's inference fast path
             (`torch._transformer_encoder_layer_fwd`, nested tensors) only runs without grad
             in eval mode, so it plays no part in training.

Methodology (the machine is shared and noisy; see README.md): one torch thread,
OMP_WAIT_POLICY=PASSIVE; each contender first runs untimed warm-up steps on a fresh copy;
then the two alternate in short bursts (A B, B A, ...), each keeping its model and
optimizer, so each trains exactly its steps once on the same batch sequence. Reported per
contender: median ms/step over bursts (min, max); tokens/s at the median (positions
processed, padding included: batch x seq, and batch x (2 seq - 1) source + target positions
for Seq2Seq); the training loss at a few steps and at the end (mean of the last 5); the loss
on 4 held-out batches; the bytes autograd saves for backward in one step (parameters
excluded; exact); and the peak-RSS growth (VmHWM reset through /proc/self/clear_refs) of
MEMORY_STEPS training steps of that contender alone in a fresh child process, both models
built there and the other one dropped. The RSS figure includes the optimizer state created on
the first step, gradients and allocator slack: what training costs the machine; compare
contenders, not absolute values. `RATIO` lines are the paired statistic, the median over
rounds of torch_ms / superpose_ms (>= 1.0: superpose at least as fast).

Run:  python benchmarks/transformer_speed.py             (~5 min quiet; 10 min at load 3-7)
      python benchmarks/transformer_speed.py --quick     (~2.5 min: a smoke run)
      python benchmarks/transformer_speed.py --only enc-small --profile
"""

from __future__ import annotations

import os

# Idle OpenMP workers should sleep, not spin (must be set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import bursts  # noqa: E402  (benchmarks/bursts.py: a script's folder is on the path)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from superpose.hooks import any_hooked  # noqa: E402
from superpose.transformer.config import EncoderConfig, Seq2SeqConfig  # noqa: E402
from superpose.transformer.encoder import Encoder  # noqa: E402
from superpose.transformer.seq2seq import Seq2Seq  # noqa: E402

D_VOCAB = 512
PAD, BOS, EOS, MASK = 0, 1, 2, 3          # special ids; real tokens are 4..D_VOCAB-1
IGNORE = -100
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.98), 0.01, 1.0
WARMUP = 2             # untimed steps on a throwaway copy of each contender
EVAL_BATCHES = 4
MEMORY_STEPS = 3       # steps a CPU memory child process runs


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str             # "encoder" | "seq2seq"
    d_model: int
    n_layers: int
    n_heads: int
    seq: int
    batch: int
    steps: int            # full run
    burst: int            # steps per burst (full run)
    quick_steps: int
    quick_burst: int

    def positions(self) -> int:
        return self.batch * (2 * self.seq - 1 if self.kind == "seq2seq" else self.seq)


WORKLOADS = {w.name: w for w in (
    Workload("enc-small", "encoder", 128, 2, 4, 64, 32, 150, 10, 20, 4),
    Workload("s2s-small", "seq2seq", 128, 2, 4, 64, 32, 80, 5, 12, 2),
    Workload("enc-large", "encoder", 256, 4, 8, 128, 16, 40, 2, 6, 1),
    Workload("s2s-large", "seq2seq", 256, 4, 8, 128, 16, 24, 2, 4, 1),
)}


# ---------------------------------------------------------------- data

def _lengths(w: Workload, g: torch.Generator, max_len: int) -> Tensor:
    """Half the rows full (max_len), half a random length in [seq/2, max_len)."""
    short = torch.randint(w.seq // 2, max_len, (w.batch,), generator=g)
    padded = torch.rand(w.batch, generator=g) < 0.5
    return torch.where(padded, short, torch.full_like(short, max_len))


def _zipf(n: int, g: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    probs = 1.0 / (torch.arange(n, dtype=torch.float64) + 10.0)
    return torch.multinomial(probs / probs.sum(), math.prod(shape), replacement=True,
                             generator=g).view(shape) + 4


def encoder_batch(w: Workload, g: torch.Generator) -> dict[str, Tensor]:
    tokens = _zipf(D_VOCAB - 4, g, (w.batch, w.seq))
    mask = torch.arange(w.seq)[None, :] < _lengths(w, g, w.seq)[:, None]
    tokens = tokens.masked_fill(~mask, PAD)
    chosen = (torch.rand(w.batch, w.seq, generator=g) < 0.15) & mask
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    r = torch.rand(w.batch, w.seq, generator=g)
    inp = torch.where(chosen & (r < 0.8), torch.full_like(tokens, MASK), tokens)
    rand_tok = torch.randint(4, D_VOCAB, tokens.shape, generator=g)
    inp = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_tok, inp)
    return {"tokens": inp, "mask": mask, "labels": labels}


def seq2seq_batch(w: Workload, g: torch.Generator) -> dict[str, Tensor]:
    n = w.seq - 1                                          # BOS + n tokens fit in seq
    lengths = _lengths(w, g, n)
    src = torch.randint(4, D_VOCAB, (w.batch, n), generator=g)
    smask = torch.arange(n)[None, :] < lengths[:, None]
    src = src.masked_fill(~smask, PAD)
    tgt_in = torch.cat([torch.full((w.batch, 1), BOS), src], dim=1)          # [batch seq]
    tmask = torch.cat([torch.ones(w.batch, 1, dtype=torch.bool), smask], dim=1)
    labels = torch.cat([src, torch.full((w.batch, 1), PAD)], dim=1)
    labels[torch.arange(w.batch), lengths] = EOS                              # target + EOS
    labels = labels.masked_fill(~tmask, IGNORE)
    return {"src": src, "smask": smask, "tgt": tgt_in, "tmask": tmask, "labels": labels}


def make_batches(w: Workload, n: int, seed: int) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    draw = encoder_batch if w.kind == "encoder" else seq2seq_batch
    return [draw(w, g) for _ in range(n)]


# ---------------------------------------------------------------- the torch models

class TorchEncoder(nn.Module):
    """BERT's shape on nn.TransformerEncoder: embeddings + LayerNorm, post-LN layers, MLM head
    (dense, GELU, LayerNorm), unembedding."""

    def __init__(self, w: Workload) -> None:
        super().__init__()
        d = w.d_model
        self.tok = nn.Embedding(D_VOCAB, d)
        self.pos = nn.Embedding(w.seq, d)
        self.ln_embed = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, w.n_heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, w.n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, d)
        self.ln_head = nn.LayerNorm(d)
        self.unembed = nn.Linear(d, D_VOCAB)

    def forward(self, tokens: Tensor, pad: Tensor) -> Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.ln_embed(self.tok(tokens) + self.pos(pos))
        x = self.encoder(x, src_key_padding_mask=pad)
        return self.unembed(self.ln_head(F.gelu(self.head(x))))


class TorchSeq2Seq(nn.Module):
    """The original Transformer's shape on nn.Transformer (pre-LN, final LayerNorms on both
    stacks), one embedding shared by source and target, learned positions per side."""

    def __init__(self, w: Workload) -> None:
        super().__init__()
        d = w.d_model
        self.tok = nn.Embedding(D_VOCAB, d)
        self.pos_src = nn.Embedding(w.seq, d)
        self.pos_tgt = nn.Embedding(w.seq, d)
        with warnings.catch_warnings():    # "enable_nested_tensor ... norm_first was True":
            warnings.filterwarnings("ignore", "enable_nested_tensor")  # an eval-only path
            self.transformer = nn.Transformer(d, w.n_heads, w.n_layers, w.n_layers, 4 * d,
                                              dropout=0.0, activation="gelu", batch_first=True,
                                              norm_first=True)
        self.unembed = nn.Linear(d, D_VOCAB)
        # bool like the padding masks (True: may not attend), so torch merges them without
        # its mixed-type deprecation path
        self.register_buffer("causal", torch.ones(w.seq, w.seq, dtype=torch.bool).triu(1),
                             persistent=False)

    def forward(self, src: Tensor, tgt: Tensor, src_pad: Tensor, tgt_pad: Tensor) -> Tensor:
        ps = torch.arange(src.shape[1], device=src.device)
        pt = torch.arange(tgt.shape[1], device=tgt.device)
        t = tgt.shape[1]
        x = self.transformer(self.tok(src) + self.pos_src(ps), self.tok(tgt) + self.pos_tgt(pt),
                             tgt_mask=self.causal[:t, :t], src_key_padding_mask=src_pad,
                             tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
                             tgt_is_causal=True)
        return self.unembed(x)


def _copy_ln(dst: nn.LayerNorm, src: Any) -> None:
    dst.weight.copy_(src.w)
    dst.bias.copy_(src.b)


def _copy_attn(dst: nn.MultiheadAttention, src: Any, d: int) -> None:
    dst.in_proj_weight.copy_(src.W_QKV.reshape(3 * d, d))      # q|k|v, heads inside
    dst.in_proj_bias.copy_(src.b_QKV.reshape(3 * d))
    dst.out_proj.weight.copy_(src.W_O.reshape(-1, d).T)
    dst.out_proj.bias.copy_(src.b_O)


def _copy_mlp(l1: nn.Linear, l2: nn.Linear, src: Any) -> None:
    l1.weight.copy_(src.W_in.T)
    l1.bias.copy_(src.b_in)
    l2.weight.copy_(src.W_out.T)
    l2.bias.copy_(src.b_out)


@torch.no_grad()
def port_encoder(src: Encoder, dst: TorchEncoder, d: int) -> None:
    dst.tok.weight.copy_(src.W_E)
    dst.pos.weight.copy_(src.W_pos)
    _copy_ln(dst.ln_embed, src.embed.ln)
    for blk, layer in zip(src.blocks, dst.encoder.layers):
        _copy_attn(layer.self_attn, blk.attn, d)
        _copy_ln(layer.norm1, blk.ln1)
        _copy_mlp(layer.linear1, layer.linear2, blk.mlp)
        _copy_ln(layer.norm2, blk.ln2)
    dst.head.weight.copy_(src.mlm_head.W.T)
    dst.head.bias.copy_(src.mlm_head.b)
    _copy_ln(dst.ln_head, src.mlm_head.ln)
    dst.unembed.weight.copy_(src.W_U.T)
    dst.unembed.bias.copy_(src.b_U)


@torch.no_grad()
def port_seq2seq(src: Seq2Seq, dst: TorchSeq2Seq, d: int) -> None:
    dst.tok.weight.copy_(src.W_E)
    dst.pos_src.weight.copy_(src.W_pos)
    dst.pos_tgt.weight.copy_(src.W_pos_tgt)
    for blk, layer in zip(src.encoder, dst.transformer.encoder.layers):
        _copy_ln(layer.norm1, blk.ln1)
        _copy_attn(layer.self_attn, blk.attn, d)
        _copy_ln(layer.norm2, blk.ln2)
        _copy_mlp(layer.linear1, layer.linear2, blk.mlp)
    _copy_ln(dst.transformer.encoder.norm, src.encoder_final_ln)
    for blk, layer in zip(src.decoder, dst.transformer.decoder.layers):
        _copy_ln(layer.norm1, blk.ln1)
        _copy_attn(layer.self_attn, blk.attn, d)
        _copy_ln(layer.norm2, blk.ln2)
        _copy_attn(layer.multihead_attn, blk.cross_attn, d)
        _copy_ln(layer.norm3, blk.ln3)
        _copy_mlp(layer.linear1, layer.linear2, blk.mlp)
    _copy_ln(dst.transformer.decoder.norm, src.decoder_final_ln)
    dst.unembed.weight.copy_(src.W_U.T)
    dst.unembed.bias.copy_(src.b_U)


# ---------------------------------------------------------------- contenders

def ours_model(w: Workload) -> nn.Module:
    if w.kind == "encoder":
        return Encoder(EncoderConfig(d_vocab=D_VOCAB, n_layers=w.n_layers, d_model=w.d_model,
                                     n_heads=w.n_heads, n_ctx=w.seq, dropout=0.0, act="gelu",
                                     seed=0), device="cpu")
    return Seq2Seq(Seq2SeqConfig(d_vocab=D_VOCAB, n_layers=w.n_layers, d_model=w.d_model,
                                 n_heads=w.n_heads, n_ctx=w.seq, dropout=0.0, act="gelu",
                                 bos_id=BOS, eos_id=EOS, pad_id=PAD, seed=0), device="cpu")


def torch_model(w: Workload, ours: nn.Module) -> nn.Module:
    if w.kind == "encoder":
        m = TorchEncoder(w)
        port_encoder(ours, m, w.d_model)     # type: ignore[arg-type]
    else:
        m = TorchSeq2Seq(w)
        port_seq2seq(ours, m, w.d_model)     # type: ignore[arg-type]
    return m


def loss_of(name: str, w: Workload, model: nn.Module, b: dict[str, Tensor]) -> Tensor:
    if name == "superpose":
        if w.kind == "encoder":
            return model(b["tokens"], "loss", attention_mask=b["mask"], labels=b["labels"])
        return model(b["src"], b["tgt"], "loss", src_attention_mask=b["smask"],
                     tgt_attention_mask=b["tmask"], labels=b["labels"])
    if w.kind == "encoder":
        logits = model(b["tokens"], ~b["mask"])
    else:
        logits = model(b["src"], b["tgt"], ~b["smask"], ~b["tmask"])
    return F.cross_entropy(logits.reshape(-1, D_VOCAB), b["labels"].reshape(-1),
                           ignore_index=IGNORE)


class Contender:
    def __init__(self, name: str, w: Workload, model: nn.Module) -> None:
        self.name, self.w, self.model = name, w, model
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS,
                                     weight_decay=WEIGHT_DECAY)
        self.ms: list[float] = []          # ms/step per burst
        self.losses: list[float] = []      # training loss per step
        self.count = 0

    def step(self, b: dict[str, Tensor]) -> Tensor:
        loss = loss_of(self.name, self.w, self.model, b)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        return loss

    def burst(self, batches: list[dict[str, Tensor]], n: int) -> None:
        out = []
        t0 = time.perf_counter()
        for b in batches[self.count:self.count + n]:
            out.append(self.step(b).detach())
        self.ms.append((time.perf_counter() - t0) * 1e3 / n)
        self.losses.extend(float(x) for x in out)
        self.count += n


def build(w: Workload) -> tuple[Contender, Contender]:
    ours = ours_model(w)
    ref = torch_model(w, ours)
    assert not any_hooked(ours)
    return Contender("superpose", w, ours), Contender("torch", w, ref)


def fresh_copy(c: Contender) -> Contender:
    """A new model with c's weights (not deepcopy: TL hook handles would point at c's model)."""
    if c.name == "superpose":
        m = ours_model(c.w)
    else:
        m = TorchEncoder(c.w) if c.w.kind == "encoder" else TorchSeq2Seq(c.w)
    m.load_state_dict(c.model.state_dict())
    return Contender(c.name, c.w, m)


@torch.no_grad()
def eval_loss(c: Contender, batches: list[dict[str, Tensor]]) -> float:
    # Train mode (dropout is 0): keeps torch's eval-only fast path out of the comparison.
    return statistics.fmean(float(loss_of(c.name, c.w, c.model, b)) for b in batches)


def n_trainable(c: Contender, b: dict[str, Tensor]) -> int:
    """Parameters that get a gradient from the loss (our Encoder's pooler gets none)."""
    loss_of(c.name, c.w, c.model, b).backward()
    n = sum(p.numel() for p in c.model.parameters() if p.grad is not None)
    c.model.zero_grad(set_to_none=True)
    return n


# ---------------------------------------------------------------- CPU memory (child process)

def memory_child(workload: str, name: str) -> None:
    """MEMORY_STEPS steps of one contender in this fresh process; print its peak RSS growth as
    JSON. Both models are built (the torch one is ported from ours), the other is dropped, so
    both children start from the same state."""
    import gc
    w = WORKLOADS[workload]
    batches = make_batches(w, MEMORY_STEPS, seed=1)
    pair = build(w)
    (c,) = [c for c in pair if c.name == name]
    del pair
    gc.collect()
    delta, method = bursts.peak_rss_growth(lambda: c.burst(batches, MEMORY_STEPS))
    print(json.dumps({"name": name, "delta": delta, "method": method}))


def cpu_memory(workload: str, threads: int) -> dict[str, int]:
    out = {}
    for name in ("superpose", "torch"):
        res = subprocess.run([sys.executable, __file__, "--memory-child", workload, name,
                              "--threads", str(threads)],
                             capture_output=True, text=True, check=True)
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])["delta"]
    return out


# ---------------------------------------------------------------- profile

def profile(w: Workload, steps: int) -> None:
    """torch.profiler over `steps` training steps of each contender (after warm-up): the ops
    that take the time, by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile
    batches = make_batches(w, steps + WARMUP, seed=0)
    for c in build(w):
        for b in batches[:WARMUP]:
            c.step(b)
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for b in batches[WARMUP:]:
                c.step(b)
            ms = (time.perf_counter() - t0) * 1e3 / steps
        print(f"\n=== {w.name} / {c.name}: {ms:.1f} ms/step under the profiler "
              f"({steps} steps) ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22,
                                        max_name_column_width=48))


# ---------------------------------------------------------------- main

def run_workload(w: Workload, steps: int, burst: int, threads: int, memory: bool) -> float:
    ours, ref = build(w)
    batches = make_batches(w, steps + WARMUP, seed=0)
    held_out = make_batches(w, EVAL_BATCHES, seed=12345)
    b0 = batches[0]
    with torch.no_grad():
        l_ours, l_ref = (float(loss_of(c.name, w, c.model, b0)) for c in (ours, ref))
    n_ours, n_ref = n_trainable(ours, b0), n_trainable(ref, b0)
    n_all = sum(p.numel() for p in ours.model.parameters())
    sizes = bursts.fixed_bursts(steps, burst)
    rounds = len(sizes)
    layers = f"{w.n_layers}+{w.n_layers}" if w.kind == "seq2seq" else f"{w.n_layers}"
    print(f"\n## {w.name}: {w.kind}, d_model {w.d_model}, {layers} layers, {w.n_heads} heads, "
          f"seq {w.seq}, batch {w.batch}, d_vocab {D_VOCAB}; {steps} steps in {rounds} rounds "
          f"of {burst}", flush=True)
    unused = f" (of {n_all:,}; the rest is the unused pooler)" if n_all != n_ours else ""
    print(f"trained parameters: superpose {n_ours:,}{unused}, torch {n_ref:,}"
          + ("" if n_ours == n_ref else "  (MISMATCH)"))
    print(f"initial loss (ported weights): superpose {l_ours:.6f}, torch {l_ref:.6f}, "
          f"|diff| {abs(l_ours - l_ref):.1e}  (ln d_vocab = {math.log(D_VOCAB):.3f})")

    for c in (ours, ref):
        tmp = fresh_copy(c)
        for b in batches[:WARMUP]:
            tmp.step(b)
    batches = batches[WARMUP:]
    t_start = time.perf_counter()
    bursts.run_rounds([ours, ref], rounds, rotate=True,
                      run=lambda c, r: c.burst(batches, sizes[r]))
    wall = time.perf_counter() - t_start
    assert ours.count == ref.count == steps

    saved = {c.name: bursts.saved_activation_bytes(
        c.model, lambda c=c: loss_of(c.name, c.w, c.model, batches[0])) for c in (ours, ref)}
    evals = {c.name: eval_loss(c, held_out) for c in (ours, ref)}
    mem = cpu_memory(w.name, threads) if memory else {}
    mib = 2.0 ** 20
    toks = w.positions()
    print(f"{'contender':10s} {'ms/step':>8s} {'min':>7s} {'max':>7s} {'tokens/s':>9s} "
          f"{'final loss':>10s} {'held-out':>9s} {'saved acts':>11s} {'peak RSS':>9s}")
    for c in (ours, ref):
        med = statistics.median(c.ms)
        final = statistics.fmean(c.losses[-5:])
        rss = f"{mem[c.name] / mib:5.1f} MiB" if mem else "    -"
        print(f"{c.name:10s} {med:8.2f} {min(c.ms):7.2f} {max(c.ms):7.2f} "
              f"{toks / med * 1e3:9.0f} {final:10.4f} {evals[c.name]:9.4f} "
              f"{saved[c.name] / mib:7.2f} MiB {rss}")
    marks = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
    print("loss curve (step: superpose / torch): " + ", ".join(
        f"{i + 1}: {ours.losses[i]:.4f}/{ref.losses[i]:.4f}" for i in marks))
    dmax = max(abs(a - b) for a, b in zip(ours.losses, ref.losses))
    print(f"largest |loss diff| over the {steps} steps: {dmax:.1e}; final loss = mean of the "
          f"last 5 steps; held-out = {EVAL_BATCHES} unseen batches; {wall:.0f} s of bursts")
    med, q1, q3 = bursts.paired(ref.ms, ours.ms)
    print(f"RATIO {w.name} torch_ms/superpose_ms: {med:.3f}x (median of per-round ratios, "
          f"quartiles {q1:.3f}-{q3:.3f}; ratio of medians "
          f"{statistics.median(ref.ms) / statistics.median(ours.ms):.3f}x)", flush=True)
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(WORKLOADS), help="workloads to run")
    ap.add_argument("--steps", type=int, help="steps per contender (default: per workload)")
    ap.add_argument("--burst", type=int, help="steps per burst (default: per workload)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="a smoke run (~1/5 of the steps)")
    ap.add_argument("--no-memory", action="store_true", help="skip the RSS child processes")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: torch.profiler tables of both contenders")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    names = args.only or list(WORKLOADS)
    if args.profile:
        for n in names:
            profile(WORKLOADS[n], args.steps or 5)
        return
    load0 = os.getloadavg()[0]
    print(f"transformer speed: torch {torch.__version__}, {args.threads} thread(s), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {load0:.2f}")
    ratios = {}
    for n in names:
        w = WORKLOADS[n]
        steps = args.steps or (w.quick_steps if args.quick else w.steps)
        burst = args.burst or (w.quick_burst if args.quick else w.burst)
        ratios[n] = run_workload(w, steps, burst, args.threads, not args.no_memory)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (start {load0:.2f})")
    print("RATIO torch_ms/superpose_ms (paired medians; >= 1.0: superpose at least as fast): "
          + ", ".join(f"{n} {r:.3f}x" for n, r in ratios.items()))


if __name__ == "__main__":
    main()
