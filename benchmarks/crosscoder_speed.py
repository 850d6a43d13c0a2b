"""Crosscoder training speed: `superpose.sae.train` on a `Crosscoder` against a plain PyTorch
crosscoder loop of the same shape, in the same run.

Data: paired activations [n, n_models, d_in] from unit features (a third shared, a third
exclusive to each of the first two models; p = 16/n_features on, magnitudes U(0.5, 1.5)),
`--vectors` fixed vectors reshuffled every epoch; both contenders see the same batches.

Contenders:
  ours  `sae.train(cc, ...)` with its defaults (lr = default_lr(d_sae, "batchtopk"), unit
        concatenated decoder rows, AuxK, dead-latent counters, gradient clip 1.0);
  ref   a plain loop written below: W_enc [n_models, d_in, d_sae], W_dec [d_sae, n_models,
        d_in]; dense encode (einsum), BatchTopK on f·Σ_m‖W_dec[j, m]‖ (Minder et al. 2025),
        dense decode (einsum), dense AuxK on dead latents, autograd, Adam, clip 1.0, unit
        decoder rows; the same lr.
Each trains once for `--steps` steps in its own thread; a parking data iterator alternates them
in bursts of `--burst` steps (A B, B A, ...), so load drifting between rounds hits both alike.
Reported per shape: median tokens/s over bursts of each and the paired median (quartiles) of
the per-round ratio ours/ref, and both final MSEs on held-out batches (same work, same result).

    python benchmarks/crosscoder_speed.py                 # the two shapes below
    python benchmarks/crosscoder_speed.py --quick         # a smoke run
    python benchmarks/crosscoder_speed.py --shapes 128x2x2048x32 --steps 200
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import bursts  # noqa: E402  (benchmarks/bursts.py: a script's folder is on the path)
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from superpose import sae  # noqa: E402
from superpose.sae.training import default_lr  # noqa: E402

# d_in x n_models x d_sae x k: the shape, and one the code was never tuned on
SHAPES = ["128x2x2048x32", "96x3x1536x24"]
DEAD_STEPS = 25          # ref: a latent unused this many steps is dead (ours: dead_window)


def parse(shape: str) -> tuple[int, int, int, int]:
    d_in, n_models, d_sae, k = (int(s) for s in shape.split("x"))
    return d_in, n_models, d_sae, k


def make_data(d_in: int, n_models: int, n_vectors: int, seed: int) -> Tensor:
    """`n_vectors` paired activations of one fixed feature set (drawn with seed 0); `seed`
    draws which features are on."""
    gen = torch.Generator().manual_seed(0)
    n_feat = 4 * d_in
    dirs = torch.nn.functional.normalize(torch.randn(n_feat, n_models, d_in, generator=gen),
                                         dim=-1)
    third = n_feat // 3
    dirs[third:2 * third, 1:] = 0            # exclusive to model 0
    dirs[2 * third:, :1] = 0                 # absent from model 0
    gen.manual_seed(seed + 1)
    codes = (torch.rand(n_vectors, n_feat, generator=gen) + 0.5) \
        * (torch.rand(n_vectors, n_feat, generator=gen) < 16 / n_feat)
    return torch.einsum("nf,fmd->nmd", codes, dirs)


def batches(x: Tensor, batch: int, seed: int) -> Iterator[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            yield x[perm[i:i + batch]]


class RefCrosscoder(nn.Module):
    """The plain loop's crosscoder: every latent dense, autograd for everything."""

    def __init__(self, d_in: int, n_models: int, d_sae: int, k: int) -> None:
        super().__init__()
        self.k = k
        w = torch.randn(d_sae, n_models * d_in, generator=torch.Generator().manual_seed(0))
        w = (0.1 * w / w.norm(dim=-1, keepdim=True)).view(d_sae, n_models, d_in)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.permute(1, 2, 0).clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(n_models, d_in))

    def loss(self, x: Tensor, dead: Tensor) -> tuple[Tensor, Tensor]:
        pre = torch.einsum("bmd,mdf->bf", x, self.W_enc) + self.b_enc
        f = pre.relu()
        scores = f * self.W_dec.norm(dim=-1).sum(-1).detach()
        top = scores.flatten().topk(self.k * len(x), sorted=False)
        acts = torch.zeros_like(scores).flatten().scatter(
            0, top.indices, f.flatten()[top.indices]).view_as(f)
        recon = torch.einsum("bf,fmd->bmd", acts, self.W_dec) + self.b_dec
        loss = (recon - x).pow(2).sum((-2, -1)).mean()
        if dead.any():
            k_aux = min(x[0].numel() // 2, int(dead.sum()))
            masked = torch.where(dead[None], pre, torch.full_like(pre, -torch.inf))
            t = masked.topk(k_aux, dim=-1)
            aux = torch.zeros_like(pre).scatter(-1, t.indices, t.values.relu())
            e_hat = torch.einsum("bf,fmd->bmd", aux, self.W_dec)
            loss = loss + (e_hat - (x - recon).detach()).pow(2).sum((-2, -1)).mean() / 32
        return loss, acts

    @torch.no_grad()
    def normalize(self) -> None:
        self.W_dec.div_(self.W_dec.flatten(1).norm(dim=-1)[:, None, None])


def ref_body(model: RefCrosscoder, lr: float) -> Any:
    def body(p: bursts.Parked, it: Iterator[Tensor]) -> RefCrosscoder:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        since = torch.zeros(model.W_dec.shape[0])
        model.normalize()
        for x in p.wrap(it):
            loss, acts = model.loss(x, since >= DEAD_STEPS)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            model.normalize()
            with torch.no_grad():
                since.add_(1).masked_fill_((acts > 0).any(0), 0)
        return model
    return body


@torch.no_grad()
def held_out_mse(model: Any, x: Tensor) -> float:
    if isinstance(model, RefCrosscoder):
        _, acts = model.loss(x, torch.zeros(model.W_dec.shape[0], dtype=torch.bool))
        recon = torch.einsum("bf,fmd->bmd", acts, model.W_dec) + model.b_dec
    else:
        model.train()                # batch top-k, as the ref: the same selection rule
        recon = model(x)
    return float((recon - x).pow(2).sum((-2, -1)).mean())


def run_shape(shape: str, args: argparse.Namespace) -> None:
    d_in, n_models, d_sae, k = parse(shape)
    x = make_data(d_in, n_models, args.vectors, seed=1)
    held = make_data(d_in, n_models, args.batch, seed=99)
    lr = default_lr(d_sae, "batchtopk")
    cc = sae.create(sae.CrosscoderConfig(d_in=d_in, n_models=n_models, d_sae=d_sae, k=k),
                    device="cpu")
    ref = RefCrosscoder(d_in, n_models, d_sae, k)
    sizes = bursts.fixed_bursts(args.steps, args.burst)
    dead_window = DEAD_STEPS * args.batch

    def ours(p: bursts.Parked) -> Any:
        return sae.train(cc, p.wrap(batches(x, args.batch, 1)), steps=args.steps, lr=lr,
                         progress=False, dead_window=dead_window,
                         log_every=max(1, args.steps // 10))

    contenders = [bursts.Parked("ours", ours, sizes, threads=args.threads),
                  bursts.Parked("ref", lambda p: ref_body(ref, lr)(p, batches(x, args.batch, 1)),
                                sizes, threads=args.threads)]
    for c in contenders:
        c.start()
    bursts.run_rounds(contenders, len(sizes), rotate=True)
    for c in contenders:
        c.join()
    ours_rates = [r * args.batch for r in contenders[0].rates()]
    ref_rates = [r * args.batch for r in contenders[1].rates()]
    med, q1, q3 = bursts.paired(ours_rates, ref_rates)
    print(f"{shape:>15s}  ours {statistics.median(ours_rates):9.0f} tok/s  ref "
          f"{statistics.median(ref_rates):9.0f} tok/s  ours/ref {med:5.2f}x "
          f"[{q1:.2f}, {q3:.2f}]  held-out MSE ours {held_out_mse(cc, held):.4f} ref "
          f"{held_out_mse(ref, held):.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", default=SHAPES,
                   help="d_in x n_models x d_sae x k, e.g. 128x2x2048x32")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--vectors", type=int, default=2**16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="40 steps, bursts of 5")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.burst = 40, 5
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.steps} steps in bursts of {args.burst}, "
          f"{args.threads} thread(s); load {os.getloadavg()[0]:.2f}")
    for shape in args.shapes:
        run_shape(shape, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
