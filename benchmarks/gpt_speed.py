"""Training speed of superpose's hooked GPT against a plain nanoGPT-style PyTorch model.

Workload (issue 3's setting): a character-level model on the embedded stdlib corpus, 4 layers,
d_model 128, 4 heads, n_ctx 64, batch 12, learned positions, pre-LN, GELU MLP (4x), tied
embeddings, no dropout. AdamW(lr=1e-3, betas=(0.9, 0.99), weight decay 0.1 on weight
matrices and embeddings only), gradient clipping at 1.0, cross-entropy on next characters.

Contenders, trained on the same batches from the same initial weights:
  superpose     `superpose.gpt.GPT`, nothing hooked: attention through SDPA.
  reference     written below the way nanoGPT's model.py does it: a fused qkv `nn.Linear`,
                `F.scaled_dot_product_attention(is_causal=True)`, `nn.LayerNorm`, `nn.GELU`,
                learned positions, lm_head tied to the token embedding (plus the output bias
                superpose's `b_U` has, so the parameter counts match exactly). Its weights
                are copied from the superpose model (the layouts map one to one), so both
                start identical and should follow the same loss curve to float rounding.
  superpose+hook the superpose model with a no-op forward hook on every
                `blocks.{i}.attn.hook_pattern`: the explicit-attention path every hook on the
                pattern or the scores takes (scores, mask, softmax, matmul), to show its cost.

Methodology (the machine is shared and noisy; see README.md): each contender first runs a few
untimed warm-up steps on a throwaway copy. Then the contenders alternate in short bursts
(rounds of `steps/rounds` steps each, the order rotated every round), each keeping its own
model and optimizer, so each trains exactly `--steps` steps on the same batch sequence. Per
round we time each burst (synchronizing CUDA at its ends); reported are the median ms/step,
tokens/s and the paired statistic, the median over rounds of reference_ms / superpose_ms
(>= 1.0: superpose at least as fast). Memory: on CUDA, the peak allocated during a
contender's bursts above what was allocated when they started; on CPU, the peak RSS growth
(VmHWM reset through /proc/self/clear_refs) of 20 training steps of that contender alone in a
fresh process. Also printed: the bytes of activations saved for backward per step, exact on
any device. Validation loss: every contender is evaluated on the same validation windows.

Run:  python benchmarks/gpt_speed.py             (1,000 steps in 50 rounds of 20)
      python benchmarks/gpt_speed.py --quick     (100 steps in 10 rounds; a smoke run)
      python benchmarks/gpt_speed.py --device cuda
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

import bursts  # noqa: E402  (benchmarks/bursts.py: a script's folder is on the path)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from superpose import gpt  # noqa: E402

N_LAYERS, D_MODEL, N_HEADS, N_CTX, BATCH = 4, 128, 4, 64, 12
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0
WARMUP = 5            # untimed steps on a throwaway copy of each contender
VAL_BATCH, VAL_BATCHES = 64, 20     # validation: the first 20 x 64 windows of the val split
MEMORY_STEPS = 20     # steps a CPU memory child process runs


def config(d_vocab: int) -> gpt.GPTConfig:
    return gpt.GPTConfig(d_vocab=d_vocab, n_layers=N_LAYERS, d_model=D_MODEL, n_heads=N_HEADS,
                         n_ctx=N_CTX, positional="learned", norm="pre", act="gelu",
                         tied_embeddings=True, dropout=0.0, seed=0)


# ---------------------------------------------------------------- the nanoGPT-style reference

class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_heads)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = MLP(d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ReferenceGPT(nn.Module):
    def __init__(self, d_vocab: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(d_vocab, D_MODEL)
        self.wpe = nn.Embedding(N_CTX, D_MODEL)
        self.h = nn.ModuleList(Block(D_MODEL, N_HEADS) for _ in range(N_LAYERS))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.lm_head = nn.Linear(D_MODEL, d_vocab)
        self.lm_head.weight = self.wte.weight          # weight tying (Press & Wolf 2017)

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@torch.no_grad()
def port_weights(src: gpt.GPT, ref: ReferenceGPT) -> None:
    """Copy superpose's weights into the reference (TL layout -> nn.Linear's [out, in])."""
    d = D_MODEL
    ref.wte.weight.copy_(src.W_E)
    ref.wpe.weight.copy_(src.W_pos)
    for blk, rb in zip(src.blocks, ref.h):
        rb.ln_1.weight.copy_(blk.ln1.w)
        rb.ln_1.bias.copy_(blk.ln1.b)
        rb.attn.c_attn.weight.copy_(blk.attn.W_QKV.reshape(3 * d, d))   # q|k|v, heads inside
        rb.attn.c_attn.bias.copy_(blk.attn.b_QKV.reshape(3 * d))
        rb.attn.c_proj.weight.copy_(blk.attn.W_O.reshape(d, d).T)
        rb.attn.c_proj.bias.copy_(blk.attn.b_O)
        rb.ln_2.weight.copy_(blk.ln2.w)
        rb.ln_2.bias.copy_(blk.ln2.b)
        rb.mlp.c_fc.weight.copy_(blk.mlp.W_in.T)
        rb.mlp.c_fc.bias.copy_(blk.mlp.b_in)
        rb.mlp.c_proj.weight.copy_(blk.mlp.W_out.T)
        rb.mlp.c_proj.bias.copy_(blk.mlp.b_out)
    ref.ln_f.weight.copy_(src.ln_final.w)
    ref.ln_f.bias.copy_(src.ln_final.b)
    ref.lm_head.bias.copy_(src.b_U)


# ---------------------------------------------------------------- contenders

def optimizer(model: nn.Module) -> torch.optim.AdamW:
    """nanoGPT's grouping: decay weight matrices and embeddings, not biases or LN gains."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_matrix = leaf.startswith("W_") if isinstance(model, gpt.GPT) else (
            leaf == "weight" and p.ndim == 2)
        (decay if is_matrix else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS)


def add_pattern_hooks(model: gpt.GPT) -> None:
    """A no-op hook on every hook_pattern: the model takes its explicit attention path."""
    for i in range(model.cfg.n_layers):
        model.add_hook(f"blocks.{i}.attn.hook_pattern", lambda pattern, hook: None)


class Contender(bursts.StepContender):
    def __init__(self, name: str, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.name, self.model, self.device = name, model, device
        self.opt = optimizer(model)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self.model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        return loss


def warm_up(c: Contender, batches: list[tuple[Tensor, Tensor]]) -> None:
    """Untimed steps on a throwaway copy (first-call kernels, allocator, thread pools)."""
    # A fresh model, not copy.deepcopy: a deep-copied TL hook handle still points at the
    # original model's hook dict.
    if isinstance(c.model, gpt.GPT):
        model = gpt.GPT(c.model.cfg, device=c.device)
        if c.model.blocks[0].attn.hook_pattern._forward_hooks:
            add_pattern_hooks(model)
    else:
        model = ReferenceGPT(c.model.wte.num_embeddings).to(c.device)
    model.load_state_dict(c.model.state_dict())
    tmp = Contender(c.name, model, c.device)
    for x, y in batches[:WARMUP]:
        tmp.step(x, y)
    if c.device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def val_loss(model: nn.Module, val: gpt.TokenDataset, device: torch.device) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, y in val.sequential(VAL_BATCH, max_batches=VAL_BATCHES):
        logits = model(x.to(device))
        total += F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(),
                                 reduction="sum").item()
        n += y.numel()
    model.train()
    return total / n


# ---------------------------------------------------------------- data and models

def build(device: torch.device, steps: int, d_vocab: int | None = None
          ) -> tuple[list[Contender], list[tuple[Tensor, Tensor]], gpt.TokenDataset | None]:
    """The three contenders (identical initial weights) and `steps + WARMUP` batches. With
    `d_vocab` (memory children), random tokens instead of the corpus."""
    if d_vocab is None:
        corpus = gpt.load_corpus()
        tok = gpt.CharTokenizer.fit(corpus)
        d_vocab = tok.vocab_size
        train = gpt.TokenDataset(tok.encode(corpus.train), N_CTX)
        val = gpt.TokenDataset(tok.encode(corpus.val), N_CTX)
        g = torch.Generator().manual_seed(0)
        batches = [train.sample(BATCH, generator=g) for _ in range(steps + WARMUP)]
    else:
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randint(0, d_vocab, (BATCH, N_CTX), generator=g),) * 2
                   for _ in range(steps + WARMUP)]
        val = None
    batches = [(x.to(device).contiguous(), y.to(device).contiguous()) for x, y in batches]
    cfg = config(d_vocab)
    ours = gpt.GPT(cfg, device=device)
    ref = ReferenceGPT(d_vocab)
    port_weights(ours, ref)
    ref.to(device)
    hooked = gpt.GPT(cfg, device=device)           # same seed: the same initial weights
    add_pattern_hooks(hooked)
    return ([Contender("superpose", ours, device), Contender("reference", ref, device),
             Contender("superpose+hook", hooked, device)], batches, val)


# ---------------------------------------------------------------- CPU memory (child process)

def memory_child(name: str, d_vocab: int) -> None:
    """Run MEMORY_STEPS steps of one contender in this fresh process; print its peak RSS
    growth as JSON (VmHWM reset just before training; ru_maxrss where /proc is missing)."""
    device = torch.device("cpu")
    contenders, batches, _ = build(device, MEMORY_STEPS, d_vocab)
    (c,) = [c for c in contenders if c.name == name]
    del contenders
    delta, method = bursts.peak_rss_growth(lambda: c.burst(batches, MEMORY_STEPS))
    print(json.dumps({"name": name, "delta": delta, "method": method}))


def cpu_memory(names: list[str], d_vocab: int, threads: int) -> dict[str, tuple[int, str]]:
    out = {}
    for name in names:
        res = subprocess.run([sys.executable, __file__, "--memory-child", name,
                              "--d-vocab", str(d_vocab), "--threads", str(threads)],
                             capture_output=True, text=True, check=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
        out[name] = (data["delta"], data["method"])
    return out


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per contender")
    ap.add_argument("--rounds", type=int, default=None,
                    help="bursts per contender (default: steps/20, so bursts of 20 steps)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="100 steps in 10 rounds: a smoke run")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--d-vocab", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.d_vocab)
        return
    steps = 100 if args.quick else args.steps
    rounds = min(steps, args.rounds or (10 if args.quick else max(2, steps // 20)))
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available (torch "
                 f"{torch.__version__}); run with --device cpu")
    device = torch.device(args.device)
    contenders, batches, val = build(device, steps)
    ours, ref, hooked = contenders
    d_vocab = ours.model.cfg.d_vocab
    sizes = bursts.even_bursts(steps, rounds)

    n_ours, n_ref = ours.model.n_params(), sum(p.numel() for p in ref.model.parameters())
    x0 = batches[0][0]
    with torch.no_grad():
        init_diff = (ours.model(x0) - ref.model(x0)).abs().max().item()
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"gpt speed: char model, {N_LAYERS} layers, d_model {D_MODEL}, {N_HEADS} heads, "
          f"n_ctx {N_CTX}, batch {BATCH}, d_vocab {d_vocab}; {steps} steps in {rounds} rounds "
          f"of ~{steps // rounds}; {dev_name}, torch {torch.__version__}, {args.threads} "
          f"thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"parameters: superpose {n_ours:,}, reference {n_ref:,}"
          + ("" if n_ours == n_ref else "  (MISMATCH)"))
    print(f"initial logits, superpose vs reference (ported weights): max |diff| {init_diff:.2e}")

    for c in contenders:
        warm_up(c, batches)
    batches = batches[WARMUP:]
    bursts.run_rounds(
        contenders, rounds, rotate=True, run=lambda c, r: c.burst(batches, sizes[r]),
        after_round=lambda r: print(f"  round {r + 1:2d}/{rounds}: " + "  ".join(
            f"{c.name} {c.ms[-1]:6.1f}" for c in contenders) + "  ms/step", flush=True))
    assert all(c.count == steps for c in contenders)

    losses = {c.name: val_loss(c.model, val, device) for c in contenders}
    x, y = batches[0]
    saved = {c.name: bursts.saved_activation_bytes(
        c.model, lambda c=c: F.cross_entropy(c.model(x).flatten(0, 1), y.flatten()))
        for c in contenders}
    if device.type == "cuda":
        mem = {c.name: (max(c.peak), "CUDA peak allocated above resident") for c in contenders}
    else:
        mem = {k: (v, f"peak RSS growth, {MEMORY_STEPS} steps in a fresh process ({m})")
               for k, (v, m) in cpu_memory([c.name for c in contenders], d_vocab,
                                           args.threads).items()}

    tokens = BATCH * N_CTX
    mib = 2.0 ** 20
    print(f"\n{'contender':16s} {'ms/step':>8s} {'min':>7s} {'max':>7s} {'tokens/s':>9s} "
          f"{'val loss':>9s} {'saved acts':>11s} {'peak mem':>9s}")
    for c in contenders:
        med = statistics.median(c.ms)
        print(f"{c.name:16s} {med:8.2f} {min(c.ms):7.2f} {max(c.ms):7.2f} "
              f"{tokens / med * 1e3:9.0f} {losses[c.name]:9.4f} "
              f"{saved[c.name] / mib:8.2f} MiB {mem[c.name][0] / mib:5.1f} MiB")
    print(f"(val loss: {VAL_BATCHES * VAL_BATCH} windows of {N_CTX} from the val split, nats/char;"
          f" saved acts: tensors saved for backward per step, parameters excluded; peak mem: "
          f"{mem[ours.name][1]})")
    print(f"val loss |superpose - reference| = {abs(losses['superpose'] - losses['reference']):.2e}"
          f" (same init, same batches; ln(d_vocab) = {math.log(d_vocab):.3f})")
    for c in (hooked, ours):
        med, q1, q3 = bursts.paired(ref.ms, c.ms)
        print(f"reference_ms/{c.name}_ms: median of per-round ratios {med:.3f}x (quartiles "
              f"{q1:.3f}-{q3:.3f}; ratio of medians, unpaired: "
              f"{statistics.median(ref.ms) / statistics.median(c.ms):.3f}x)")
    print(f"\nRATIO reference_ms/superpose_ms: {bursts.paired(ref.ms, ours.ms)[0]:.3f}x (median of "
          f"per-round ratios; goal >= 1.0)")


if __name__ == "__main__":
    main()
