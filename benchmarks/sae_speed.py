"""SAE training speed and quality on one fixed ground-truth activation set, against a plain
PyTorch loop and (when `import sae_lens` works) SAELens's own `SAETrainer`, in the same run.

Data (issue 4's setting): 1024 unit features in 128-d, each on with p = 8/1024, magnitudes
U(0.5, 1.5), noise 0.02; 2^18 fixed training vectors (`--vectors`), reshuffled every epoch;
batch 4096, d_sae 1024, TopK/BatchTopK k = 16. Every contender sees the same batches.

Contenders per architecture:
  ours      `superpose.sae.train` with its defaults (lr = default_lr(d_sae, architecture):
            2e-2 for TopK, 4e-3 for BatchTopK, 8e-3 for ReLU/JumpReLU, 4e-3 for Gated at d_sae 1024;
            no search);
  ref       a plain PyTorch loop written below: dense encoder/decoder, autograd, Adam, clip 1.0
            (TopK/BatchTopK: dense AuxK, unit-norm decoder rows), lr `--ref-lr`;
  saelens   sae_lens `SAETrainer` with the matching `*TrainingSAE` (standard = our relu),
            constant lr `--saelens-lr` (3e-3: the rate at which the issue's SAELens TopK run
            recovered 99.8%; at 1e-3 it got 89%).
Each contender trains once for `--samples` samples in its own thread; a parking data iterator
interleaves them in bursts of `--burst` steps (A B C, B C A, ...), so load drifting between
rounds hits all of them alike. Reported: median tokens/s over bursts, the paired median of
per-round ratios (ours/saelens, ours/ref), peak RSS growth over 5 steps in a forked child (CPU)
or max_memory_allocated (CUDA), and quality on 8 held-out batches: L0, FVE (about the mean),
MMCS, recovered (true features with a decoder row at cos >= 0.9), and the samples after which
recovery first reached 99% (checked at every burst boundary, outside the timing).

    python benchmarks/sae_speed.py                      # full: 2^18 vectors, 4.2M samples
    python benchmarks/sae_speed.py --quick              # smoke run (a minute or two)
    python benchmarks/sae_speed.py --archs topk --contenders ours saelens --samples 1048576
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")        # SAETrainer.fit always shows a bar

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import bursts  # noqa: E402  (benchmarks/bursts.py: a script's folder is on the path)
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from superpose import sae  # noqa: E402
from superpose.sae.evaluation import RECOVERED_COS, ground_truth_metrics  # noqa: E402
from superpose.sae.jumprelu import _JumpReLU, _Step  # noqa: E402

ARCHS = ["topk", "batchtopk", "relu", "jumprelu", "gated"]
SAELENS_NAME = {"relu": "standard", "topk": "topk", "batchtopk": "batchtopk",
                "jumprelu": "jumprelu", "gated": "gated"}
# sparsity coefficients, one per penalised architecture (same meaning in all three contenders:
# L1 on acts·‖W_dec row‖ for relu/gated, L0 weight for jumprelu)
COEFF = {"relu": 0.3, "jumprelu": 0.1, "gated": 3.0}
JUMPRELU = {"threshold": 0.1, "bandwidth": 0.05}
MEM_STEPS = 5


# ------------------------------------------------------------------------------ data

class FixedData:
    def __init__(self, gt: sae.GroundTruthFeatures, n_vectors: int, batch: int, seed: int):
        self.x = gt.sample(n_vectors, generator=torch.Generator().manual_seed(seed))
        self.batch, self.seed = batch, seed

    def batches(self, device: torch.device) -> Iterator[Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        x = self.x.to(device)
        while True:
            perm = torch.randperm(len(x), generator=gen).to(device)
            for i in range(0, len(x) - self.batch + 1, self.batch):
                yield x[perm[i:i + self.batch]]


# ------------------------------------------------------------------------------ contenders

class RefSAE(nn.Module):
    """The plain loop's SAE: every latent dense, autograd for everything."""

    def __init__(self, arch: str, d_in: int, d_sae: int, k: int, device: torch.device):
        super().__init__()
        self.arch, self.k = arch, k
        w = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(0))
        w = 0.1 * w / w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone().to(device))
        self.W_enc = nn.Parameter(w.T.clone().to(device))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, device=device))
        if arch == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((d_sae,), JUMPRELU["threshold"],
                                                         device=device).log())
        if arch == "gated":
            self.r_mag = nn.Parameter(torch.zeros(d_sae, device=device))
            self.b_mag = nn.Parameter(torch.zeros(d_sae, device=device))

    def loss(self, x: Tensor, dead: Tensor) -> tuple[Tensor, Tensor]:
        sae_in = x - self.b_dec
        pre = sae_in @ self.W_enc + self.b_enc
        extra = x.new_zeros(())
        if self.arch == "topk":
            top = pre.topk(self.k, dim=-1)
            acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        elif self.arch == "batchtopk":
            flat = pre.relu().flatten()
            top = flat.topk(self.k * len(x))
            acts = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
        elif self.arch == "relu":
            acts = pre.relu()
            extra = COEFF["relu"] * (acts * self.W_dec.norm(dim=-1)).sum(-1).mean()
        elif self.arch == "jumprelu":
            theta = self.log_threshold.exp()
            acts = _JumpReLU.apply(pre, theta, JUMPRELU["bandwidth"])
            l0 = _Step.apply(pre, theta, JUMPRELU["bandwidth"]).sum(-1).mean()
            extra = COEFF["jumprelu"] * l0
        else:   # gated: b_enc is the gate bias
            mag = sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
            acts = (pre > 0).float() * mag.relu()
            gate = pre.relu()
            extra = COEFF["gated"] * (gate * self.W_dec.norm(dim=-1)).sum(-1).mean()
            extra = extra + ((gate @ self.W_dec.detach() + self.b_dec.detach()) - x
                             ).pow(2).sum(-1).mean()
        recon = acts @ self.W_dec + self.b_dec
        loss = (recon - x).pow(2).sum(-1).mean() + extra
        if self.arch in ("topk", "batchtopk") and dead.any():
            k_aux = min(x.shape[-1] // 2, int(dead.sum()))
            masked = torch.where(dead[None], pre, torch.full_like(pre, -math.inf))
            t = masked.topk(k_aux, dim=-1)
            aux = torch.zeros_like(pre).scatter(-1, t.indices, t.values.relu())
            loss = loss + ((aux @ self.W_dec) - (x - recon).detach()).pow(2).sum(-1).mean() / 32
        return loss, acts


def ref_body(arch: str, d_in: int, d_sae: int, k: int, lr: float, device: torch.device,
             holder: dict[str, Any]) -> Callable[[Iterator[Tensor], int], Any]:
    m = RefSAE(arch, d_in, d_sae, k, device)
    holder["model"] = m

    def body(it: Iterator[Tensor], steps: int) -> Any:
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        since = torch.zeros(d_sae, device=device)
        for x in it:
            loss, acts = m.loss(x, since >= 25)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                if arch in ("topk", "batchtopk"):
                    m.W_dec.div_(m.W_dec.norm(dim=-1, keepdim=True))
                since.add_(1).masked_fill_((acts > 0).any(0), 0)
        return m
    return body


def ours_body(arch: str, d_in: int, d_sae: int, k: int, device: torch.device,
              holder: dict[str, Any], overrides: dict[str, Any]
              ) -> Callable[[Iterator[Tensor], int], Any]:
    kw: dict[str, Any] = {"k": k} if arch in ("topk", "batchtopk") else {}
    if arch in COEFF:
        kw["sparsity_coefficient"] = COEFF[arch]
    if arch == "jumprelu":
        kw.update(jumprelu_threshold_init=JUMPRELU["threshold"],
                  jumprelu_bandwidth=JUMPRELU["bandwidth"])
    s = sae.create(sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, **kw),
                   device=str(device))
    holder["model"] = s

    def body(it: Iterator[Tensor], steps: int) -> Any:
        return sae.train(s, it, steps=steps, progress=False, log_every=max(1, steps // 20),
                         **overrides)
    return body


def saelens_body(arch: str, d_in: int, d_sae: int, k: int, lr: float, batch: int,
                 device: torch.device, holder: dict[str, Any]
                 ) -> Callable[[Iterator[Tensor], int], Any]:
    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    common = {"d_in": d_in, "d_sae": d_sae, "device": str(device)}
    if arch == "relu":
        s = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
            l1_coefficient=COEFF["relu"], **common))
    elif arch == "topk":
        s = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=k, **common))
    elif arch == "batchtopk":
        s = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(k=k, **common))
    elif arch == "jumprelu":
        s = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(
            l0_coefficient=COEFF["jumprelu"], jumprelu_init_threshold=JUMPRELU["threshold"],
            jumprelu_bandwidth=JUMPRELU["bandwidth"], **common))
    else:
        s = sae_lens.GatedTrainingSAE(sae_lens.GatedTrainingSAEConfig(
            l1_coefficient=COEFF["gated"], **common))
    holder["model"] = s

    def body(it: Iterator[Tensor], steps: int) -> Any:
        cfg = SAETrainerConfig(total_training_samples=steps * batch,
                               train_batch_size_samples=batch, lr=lr, lr_end=lr,
                               device=str(device))
        return SAETrainer(cfg, s, it).fit()
    return body


# ------------------------------------------------------------------------------ measuring

def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory(make: Callable[[], Callable[[Iterator[Tensor], int], Any]],
                batches: list[Tensor], device: torch.device) -> float:
    """Peak memory growth (MiB) of MEM_STEPS training steps: CUDA max_memory_allocated, or on
    CPU the peak-RSS growth in a forked child (VmHWM reset via /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        make()(iter(batches), len(batches))
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not os.path.exists("/proc/self/clear_refs"):
        return float("nan")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child
        os.close(r)
        try:
            body = make()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status("VmRSS:")
            body(iter(batches), len(batches))
            os.write(w, str(_status("VmHWM:") - base).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 64)
    os.waitpid(pid, 0)
    return int(out) / 2**20 if out else float("nan")


@torch.no_grad()
def quality(model: Any, kind: str, gt: sae.GroundTruthFeatures, batch: int,
            device: torch.device) -> dict[str, float]:
    """L0, FVE about the mean, ground-truth metrics on 8 held-out batches (eval mode)."""
    model.eval()
    xs = [x.to(device) for x in gt.batches(batch, 8, seed=12345)]
    n = sse = l0 = 0.0
    sum_x = torch.zeros(gt.d, dtype=torch.float64)
    sum_sq = 0.0
    for x in xs:
        if kind == "ref":
            _, acts = model.loss(x, torch.zeros(model.W_dec.shape[0], dtype=torch.bool,
                                                device=device))
            recon = acts @ model.W_dec + model.b_dec
        else:
            acts = model.encode(x)
            recon = model.decode(acts)
        xd, rd = x.double().cpu(), recon.double().cpu()
        n += len(xd)
        sse += float((xd - rd).pow(2).sum())
        sum_x += xd.sum(0)
        sum_sq += float(xd.pow(2).sum())
        l0 += float((acts > 0).sum())
    total_var = sum_sq - float(sum_x.pow(2).sum()) / n
    gtm = ground_truth_metrics(model.W_dec.detach().cpu(), gt.directions)
    return {"l0": l0 / n, "fve": 1 - sse / total_var, **gtm}


def recorder(log: list[tuple[int, float]], holder: dict[str, Any], directions: Tensor,
             batch: int) -> Callable[[int], None]:
    """At each burst boundary (outside the timing): the fraction of true features recovered so
    far, against the samples seen."""
    @torch.no_grad()
    def record(step: int) -> None:
        rec = ground_truth_metrics(holder["model"].W_dec.detach().cpu(), directions)
        log.append((step * batch, rec["recovered"]))
    return record


def first_at(recovery: list[tuple[int, float]], level: float) -> int | None:
    return next((s for s, r in recovery if r >= level), None)


# ------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=2**18)
    p.add_argument("--samples", type=int, default=4_194_304)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--burst", type=int, default=16, help="steps per burst")
    p.add_argument("--archs", nargs="*", default=ARCHS, choices=ARCHS)
    p.add_argument("--contenders", nargs="*", default=["ours", "ref", "saelens"],
                   choices=["ours", "ref", "saelens"])
    p.add_argument("--saelens-lr", type=float, default=3e-3)
    p.add_argument("--ref-lr", type=float, default=3e-3)
    p.add_argument("--ours", nargs="*", default=[], metavar="KEY=VALUE",
                   help="SAETrainConfig overrides for ours, e.g. lr=0.01 resample_every=100")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="2^15 vectors, 131k samples, bursts of 4 (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.vectors, args.samples, args.burst = 2**15, 2**17, 4
    import ast
    overrides = {}
    for item in args.ours:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    contenders = list(args.contenders)
    if "saelens" in contenders:
        try:
            import sae_lens
            print(f"sae_lens {sae_lens.__version__}")
        except ImportError:
            print("sae_lens is not importable here: SAELens contender skipped "
                  "(make bench-sae builds .venv-saelens with it)")
            contenders.remove("saelens")
    gt = sae.GroundTruthFeatures(1024, 128, p=8 / 1024, noise=0.02, seed=0)
    data = FixedData(gt, args.vectors, args.batch, seed=0)
    steps = args.samples // args.batch
    print(f"data: 1024 features in 128-d, p=8/1024, U(0.5,1.5), noise 0.02; {args.vectors} "
          f"vectors; batch {args.batch}; {steps} steps ({steps * args.batch} samples); "
          f"d_sae {args.d_sae}; k {args.k}; bursts of {args.burst}; {args.threads} thread(s);"
          f" device {device}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    if overrides:
        print(f"ours: SAETrainConfig overrides {overrides}")
    mem_batches = [x.clone() for _, x in zip(range(MEM_STEPS), data.batches(device))]

    def factory(name: str, arch: str, holder: dict[str, Any]):
        if name == "ours":
            return ours_body(arch, 128, args.d_sae, args.k, device, holder, overrides)
        if name == "ref":
            return ref_body(arch, 128, args.d_sae, args.k, args.ref_lr, device, holder)
        return saelens_body(arch, 128, args.d_sae, args.k, args.saelens_lr, args.batch,
                            device, holder)

    summary = []
    for arch in args.archs:
        print(f"\n== {arch} ==")
        mem = {}
        if not args.no_memory:
            for name in contenders:
                mem[name] = peak_memory(lambda n=name, a=arch: factory(n, a, {}), mem_batches,
                                        device)
        holders = {name: {} for name in contenders}
        recovery: dict[str, list[tuple[int, float]]] = {name: [] for name in contenders}
        sizes = bursts.fixed_bursts(steps, args.burst)
        parked = []
        for name in contenders:
            body, src = factory(name, arch, holders[name]), data.batches(device)
            parked.append(bursts.Parked(
                name, lambda c, body=body, src=src: body(c.wrap(src), c.steps), sizes,
                sync=sync, on_boundary=recorder(recovery[name], holders[name], gt.directions,
                                                args.batch)))
        for c in parked:
            c.start()
        n_rounds = len(sizes)
        bursts.run_rounds(parked, n_rounds, rotate=True)
        for c in parked:
            c.join()
        times = {c.name: c.times for c in parked}
        rows = {}
        for c in parked:
            tps = [r * args.batch for r in c.rates()]
            q = quality(holders[c.name]["model"], c.name, gt, args.batch, device)
            rows[c.name] = {"tok_s": statistics.median(tps), "mem": mem.get(c.name),
                            "to99": first_at(recovery[c.name], 0.99), **q}
        print(f"{'contender':<9} {'tok/s':>9} {'peak MiB':>9} {'L0':>7} {'FVE':>6} "
              f"{'MMCS':>6} {'recov':>6} {'MCC':>6} {'to 99%':>9}")
        for name, row in rows.items():
            to99 = f"{row['to99'] / 1e6:.2f}M" if row["to99"] else "never"
            mem_s = f"{row['mem']:.0f}" if row["mem"] is not None else "-"
            print(f"{name:<9} {row['tok_s']:>9.0f} {mem_s:>9} {row['l0']:>7.2f} "
                  f"{row['fve']:>6.3f} {row['mmcs_true']:>6.3f} {row['recovered']:>6.3f} "
                  f"{row['mcc']:>6.3f} {to99:>9}")
        line = {"arch": arch}
        for other in ("saelens", "ref"):
            if other in times and "ours" in times:
                ratio = bursts.paired(times[other], times["ours"])[0]   # > 1: ours faster
                line[other] = ratio
                print(f"RATIO {arch} ours/{other} tokens/s (paired median over "
                      f"{n_rounds} rounds): {ratio:.2f}x")
        summary.append(line)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    print(f"recovered = fraction of true features with a decoder row at cos >= {RECOVERED_COS}")
    for line in summary:
        parts = [f"{k} {v:.2f}x" for k, v in line.items() if k != "arch"]
        print(f"SUMMARY {line['arch']}: ours vs " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
