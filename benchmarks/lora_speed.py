"""LoRA fine-tuning against full fine-tuning of the same GPT on the same batches.

Model: the char-level GPT `experiments/gpt_train.py` trains in full mode — 4 layers, d_model
128, 4 heads, n_ctx 128, learned positions, pre-LN, GELU MLP (4x), untied unembedding — on the
embedded stdlib corpus, batch 16. Every contender starts from the same base weights and takes
the same optimizer steps as `gpt.train` does (`gpt.training.make_optimizer`: AdamW, weight decay
on matrices; gradient clipping at 1.0; cross-entropy on next characters).

Contenders:
  full       every base parameter trainable (full fine-tuning);
  lora-qv    rank-8 adapters (alpha 16) on W_Q and W_V of every layer, the LoRA paper's
             choice (Hu et al. 2021 §7.1), base frozen — the goal case;
  lora-all   rank-8 adapters on all six attention and MLP weights of every layer — reported,
             not a goal (more adapter parameters, more low-rank matmuls).

Reported: ms/step (median over bursts, and the paired median of per-round ratios
full_ms / contender_ms: >= 1.0 means the contender is at least as fast), trainable parameters,
optimizer-state bytes (every tensor in the AdamW state after a step), saved-activation bytes per
step, and the peak RSS growth of 20 steps in a fresh process (CPU) / peak allocated (CUDA).
Goals (issue 15): optimizer state <= 2% of full fine-tuning's for lora-qv, and its step time <=
full fine-tuning's.

Methodology: untimed warm-up steps on throwaway copies, then bursts alternating A B C, B C A, ...
(benchmarks/bursts.py), each contender keeping its own model and optimizer on the same batch
sequence; torch threads 1 by default and OMP_WAIT_POLICY=PASSIVE.

Run:  python benchmarks/lora_speed.py            (300 steps in 30 rounds)
      python benchmarks/lora_speed.py --quick    (60 steps in 6 rounds; a smoke run)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import bursts  # noqa: E402  (benchmarks/bursts.py)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from superpose import gpt, lora  # noqa: E402
from superpose.gpt.training import GPTTrainConfig, make_optimizer  # noqa: E402

N_LAYERS, D_MODEL, N_HEADS, N_CTX, BATCH = 4, 128, 4, 128, 16
RANK, ALPHA, CLIP = 8, 16, 1.0
WARMUP, MEMORY_STEPS = 3, 20
SETUPS = {"full": None,
          "lora-qv": ["blocks.*.attn.W_Q", "blocks.*.attn.W_V"],
          "lora-all": ["blocks.*.attn.*", "blocks.*.mlp.*"]}


def make_model(name: str, d_vocab: int, device: torch.device) -> gpt.GPT:
    """The base (seeded: identical for every contender), adapted as `name` says."""
    model = gpt.GPT(gpt.GPTConfig(d_vocab=d_vocab, n_layers=N_LAYERS, d_model=D_MODEL,
                                  n_heads=N_HEADS, n_ctx=N_CTX, seed=0), device=device)
    if SETUPS[name] is not None:
        lora.add(model, SETUPS[name], rank=RANK, alpha=ALPHA)
    return model


class Contender(bursts.StepContender):
    def __init__(self, name: str, d_vocab: int, device: torch.device) -> None:
        super().__init__()
        self.name, self.device = name, device
        self.model = make_model(name, d_vocab, device)
        self.opt, _ = make_optimizer(self.model, GPTTrainConfig())

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())

    def step(self, x: Tensor, y: Tensor) -> None:
        loss = self.loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], CLIP)
        self.opt.step()

    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def optimizer_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.opt.state.values()
                   for t in s.values() if isinstance(t, Tensor))


def batches_for(steps: int, device: torch.device, d_vocab: int | None = None
                ) -> tuple[int, list[tuple[Tensor, Tensor]]]:
    g = torch.Generator().manual_seed(0)
    if d_vocab is None:
        corpus = gpt.load_corpus()
        tok = gpt.CharTokenizer.fit(corpus)
        data = gpt.TokenDataset(tok.encode(corpus.train), N_CTX)
        out = [data.sample(BATCH, generator=g) for _ in range(steps)]
        d_vocab = tok.vocab_size
    else:
        out = [(torch.randint(0, d_vocab, (BATCH, N_CTX), generator=g),) * 2
               for _ in range(steps)]
    return d_vocab, [(x.to(device), y.to(device)) for x, y in out]


def memory_child(name: str, d_vocab: int) -> None:
    device = torch.device("cpu")
    _, batches = batches_for(MEMORY_STEPS, device, d_vocab)
    c = Contender(name, d_vocab, device)
    delta, method = bursts.peak_rss_growth(lambda: c.burst(batches, MEMORY_STEPS))
    print(json.dumps({"delta": delta, "method": method}))


def cpu_memory(name: str, d_vocab: int, threads: int) -> tuple[int, str]:
    res = subprocess.run([sys.executable, __file__, "--memory-child", name, "--d-vocab",
                          str(d_vocab), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    data = json.loads(res.stdout.strip().splitlines()[-1])
    return data["delta"], f"peak RSS growth, {MEMORY_STEPS} steps in a fresh process " \
                          f"({data['method']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=None, help="default: steps/10")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="60 steps in 6 rounds")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--d-vocab", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.d_vocab)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available; run with --device cpu")
    device = torch.device(args.device)
    steps = 60 if args.quick else args.steps
    rounds = min(steps, args.rounds or max(2, steps // 10))
    d_vocab, batches = batches_for(steps + WARMUP, device)
    contenders = [Contender(name, d_vocab, device) for name in SETUPS]
    full = contenders[0]
    with torch.no_grad():
        x0 = batches[0][0]
        same = all(torch.equal(c.model(x0), full.model(x0)) for c in contenders)
    print(f"lora speed: char GPT, {N_LAYERS} layers, d_model {D_MODEL}, {N_HEADS} heads, n_ctx "
          f"{N_CTX}, batch {BATCH}, d_vocab {d_vocab}, {full.trainable():,} parameters; rank "
          f"{RANK}, alpha {ALPHA}; {steps} steps in {rounds} rounds; {device}, torch "
          f"{torch.__version__}, {args.threads} thread(s)")
    print(f"every contender starts from the same logits (B = 0): {same}")

    for c in contenders:                       # warm-up on throwaway copies
        tmp = Contender(c.name, d_vocab, device)
        for x, y in batches[:WARMUP]:
            tmp.step(x, y)
    batches = batches[WARMUP:]
    sizes = bursts.even_bursts(steps, rounds)
    bursts.run_rounds(contenders, rounds, run=lambda c, r: c.burst(batches, sizes[r]),
                      after_round=lambda r: print(f"  round {r + 1:2d}/{rounds}: " + "  ".join(
                          f"{c.name} {c.ms[-1]:6.1f}" for c in contenders) + " ms/step",
                          flush=True))
    x, y = batches[0]
    saved = {c.name: bursts.saved_activation_bytes(c.model, lambda c=c: c.loss(x, y))
             for c in contenders}
    if device.type == "cuda":
        mem = {c.name: (max(c.peak), "CUDA peak allocated above resident") for c in contenders}
    else:
        mem = {c.name: cpu_memory(c.name, d_vocab, args.threads) for c in contenders}
    with torch.no_grad():
        final = {c.name: c.loss(*batches[-1]).item() for c in contenders}

    mib = 2.0 ** 20
    print(f"\n{'contender':10s} {'ms/step':>8s} {'trainable':>10s} {'% full':>7s} "
          f"{'opt state':>10s} {'% full':>7s} {'saved acts':>11s} {'peak mem':>9s} "
          f"{'last loss':>9s}")
    opt_full, n_full = full.optimizer_bytes(), full.trainable()
    for c in contenders:
        print(f"{c.name:10s} {statistics.median(c.ms):8.1f} {c.trainable():10,d} "
              f"{100 * c.trainable() / n_full:6.2f}% {c.optimizer_bytes() / mib:7.2f} MiB "
              f"{100 * c.optimizer_bytes() / opt_full:6.2f}% {saved[c.name] / mib:7.2f} MiB "
              f"{mem[c.name][0] / mib:5.1f} MiB {final[c.name]:9.4f}")
    print(f"(peak mem: {mem[full.name][1]}; last loss: the last training batch, after "
          f"{steps} steps from the same base)")
    for c in contenders[1:]:
        med, q1, q3 = bursts.paired(full.ms, c.ms)
        print(f"full_ms/{c.name}_ms: median of per-round ratios {med:.3f}x (quartiles "
              f"{q1:.3f}-{q3:.3f})")
    qv = contenders[1]
    print(f"\nRATIO optimizer state lora-qv/full: {qv.optimizer_bytes() / opt_full:.4f} "
          f"(goal <= 0.02)")
    print(f"RATIO step time full/lora-qv: {bursts.paired(full.ms, qv.ms)[0]:.3f}x (median of "
          f"per-round ratios; goal >= 1.0)")


if __name__ == "__main__":
    main()
