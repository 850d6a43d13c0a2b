"""`pack(n, d)`: n unit vectors in R^d with small coherence, by projected Adam on a soft max of
|cos| over all pairs, evaluated in upper-triangle row blocks so memory never grows as n²."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _progress, geometry
from superpose import _validate as v
from superpose.packing.adam import InPlaceAdam
from superpose.packing.bounds import Bounds, bounds

Init = Literal["auto", "random", "orthonormal", "orthoplex"]
INITS: tuple[str, ...] = ("auto", "random", "orthonormal", "orthoplex")


@dataclass(frozen=True)
class PackResult:
    """What `pack` found: the best iterate (lowest coherence) and how the run went.

    vectors: [n, d] unit rows. coherence: their max |cos|. max_deviation_deg: 90° − arccos of
    it. stats: all pairwise cosine statistics. history: coherence of the iterate at each logged
    step (history_steps), history_seconds: wall time at those steps (the time curve).
    bounds: `bounds(n, d)`, so `ratio` = coherence / bounds.best. seconds: total wall time.
    """

    vectors: Tensor
    coherence: float
    max_deviation_deg: float
    stats: geometry.CosineStats
    history: list[float]
    history_steps: list[int]
    bounds: Bounds
    seconds: float
    history_seconds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Achieved coherence over the best lower bound (≥ 1; inf when the bound is 0)."""
        return self.coherence / self.bounds.best if self.bounds.best > 0 else math.inf


def _hadamard(d: int) -> Tensor | None:
    if d & (d - 1):
        return None
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < d:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H / math.sqrt(d)


def _random_orthogonal(d: int, g: torch.Generator) -> Tensor:
    Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def initial_vectors(n: int, d: int, *args: str | int, init: Init = "auto", seed: int = 0,
                    device: str | torch.device | None = None) -> Float[Tensor, "n d"]:
    """Starting points for `pack`, float64 on `device` (None: CUDA when available, else CPU).
    They are drawn on the CPU from `seed`, so one seed gives the same start on every device.

    random:      Gaussian rows, normalised (uniform on the sphere).
    orthonormal: n ≤ d rows of a random rotation: coherence 0, already optimal.
    orthoplex:   n ≤ 2d: an orthonormal basis plus a second, mutually unbiased one (the
                 normalised Hadamard matrix when d is a power of 2, coherence 1/sqrt(d);
                 otherwise a random rotation of the first). Not ±e_i: as *lines* an antipodal
                 pair has |cos| = 1.
    auto:        orthonormal when n ≤ d, else random (the optimizer beats the orthoplex start
                 for d < n ≤ 2d, whose 1/sqrt(d) is well above Welch there).

    Deprecated: `init` and `seed` as the third and fourth positional arguments (now
    keyword-only: `initial_vectors(n, d, init=..., seed=...)`).
    """
    init, seed = deprecation.positional_options(
        "initial_vectors", "n, d", args, {"init": init, "seed": seed},
        {"init": "auto", "seed": 0})
    v.positive_int("n", n)
    v.positive_int("d", d)
    v.choice("init", init, INITS)
    v.non_negative_int("seed", seed)
    dev = v.resolve_device(device)
    return _initial_vectors(n, d, init, seed).to(dev)


def _initial_vectors(n: int, d: int, init: str, seed: int) -> Float[Tensor, "n d"]:
    g = torch.Generator().manual_seed(seed)
    if init == "auto":
        init = "orthonormal" if n <= d else "random"
    if init == "orthonormal":
        if n > d:
            raise ValueError(f"init='orthonormal' needs n <= d, got n={n}, d={d}; "
                             "use init='random' or 'orthoplex' (n <= 2d)")
        return _random_orthogonal(d, g)[:n]
    if init == "orthoplex":
        if n > 2 * d:
            raise ValueError(f"init='orthoplex' needs n <= 2d, got n={n}, d={d}; "
                             "use init='random'")
        Q = _random_orthogonal(d, g)
        H = _hadamard(d)
        second = H @ Q if H is not None else _random_orthogonal(d, g) @ Q
        return torch.cat([Q, second])[:n]
    return geometry.normalize(torch.randn(n, d, generator=g, dtype=torch.float64))


# The cost of a step is two matrix products over the upper triangle of the Gram matrix: row
# blocks U[s:e] @ U[s:].T (≈ n²d/2 multiply-adds in all), then the weighted sums W @ U[s:] for
# the block's own rows and Wᵀ @ U[s:e] for the later rows (≈ n²d). Everything elementwise runs
# in place on one reused block buffer: no n×n matrix, no float64 copy, no per-step allocation.

# One block holds two [rows, n] buffers (cosines and pair weights), so half of geometry's
# element budget per buffer keeps a block's memory at geometry's: 2**21 cosines each, 8 MB in
# float32, which fits the cache.
_BLOCK_ELEMENTS = geometry._CHUNK_ELEMENTS // 2


def _exp_range(dtype: torch.dtype) -> tuple[float, float]:
    """Clamp for the exponent: below, exp stays a normal float (arithmetic on denormals is
    many times slower on CPUs); above, the sums cannot overflow."""
    return (-80.0, 30.0) if dtype == torch.float32 else (-700.0, 200.0)


def _rows(n: int, chunk: int | None) -> int:
    """Rows per block (`chunk` when given): ~2M cosines per buffer, but at least 128 rows (a
    GEMM with fewer rows runs well below the CPU's matmul throughput), so for n > 16384 a
    block holds 128·n cosines per buffer, more than the budget."""
    return chunk or min(n, max(_BLOCK_ELEMENTS // n, 128))


def _weigh_(a: Tensor, c: Tensor, beta: float, mu_ref: float, rng: tuple[float, float]) -> None:
    """a = |c| in, a = sign(c)·exp(β(|c| − μ_ref)) out: the soft-max pair weights, in place."""
    a.sub_(mu_ref).mul_(beta).clamp_(*rng).exp_().copysign_(c)


def _dense_grad(U: Tensor, G: Tensor, buf: Tensor, beta: float, mu_ref: float, rows: int
                ) -> float:
    """G = Σ_j w_ij u_j with w_ij = sign(c_ij) exp(β(|c_ij| − μ_ref)) over every pair i ≠ j (up
    to a positive factor, the gradient of Σ_{i≠j} exp(β(|c_ij| − μ_ref))), by upper-triangle
    row blocks; returns max |c_ij|."""
    n = U.shape[0]
    rng = _exp_range(U.dtype)
    mx = torch.zeros((), dtype=U.dtype, device=U.device)
    G.zero_()
    half = buf.numel() // 2
    for s in range(0, n - 1, rows):
        e = min(s + rows, n)
        b, m = e - s, n - s
        c = buf[:b * m].view(b, m)                                       # contiguous views
        a = buf[half:half + b * m].view(b, m)
        torch.mm(U[s:e], U[s:].T, out=c)
        c.diagonal().zero_()                                             # no self-pairs
        torch.abs(c, out=a)
        mx = torch.maximum(mx, a.amax())
        _weigh_(a, c, beta, mu_ref, rng)
        a.diagonal().zero_()
        G[s:e].addmm_(a, U[s:])                                          # pairs (i, j ≥ s)
        if e < n:
            G[e:].addmm_(a[:, b:].T, U[s:e])                             # and their mirror
    return float(mx)


def _surrogate_grad(U: Tensor, G: Tensor, buf: Tensor, beta: float, mu_ref: float, rows: int
                    ) -> float:
    """`_dense_grad` normalised to this step's own max μ (weights exp(β(|c| − μ)) ≤ 1), so the
    gradient's scale does not jump with μ from step to step (Adam's second moment would lag
    behind it). μ_ref, the last step's μ, lets one pass do it; when μ moved so far that the
    exponent clamp bit, the pass is redone around the new μ."""
    mu = _dense_grad(U, G, buf, beta, mu_ref, rows)
    lo, hi = _exp_range(U.dtype)
    shift = beta * (mu - mu_ref)
    if shift > hi - 5 or shift < lo + 30:
        mu = _dense_grad(U, G, buf, beta, mu, rows)
        shift = 0.0
    G.mul_(math.exp(-shift))
    return mu


def pack(n: int, d: int, *, steps: int = 2000, lr: float | int | None = None,
         init: Init | Tensor = "auto", seed: int = 0, device: str | torch.device | None = None,
         chunk: int | None = None, p_start: float | int = 4.0, p_end: float | int = 1000.0,
         log_every: int = 10, dtype: torch.dtype | None = None, progress: bool = True
         ) -> PackResult:
    """n unit vectors in R^d with small coherence (max |cos|), by projected Adam on a soft max.

    The loss is Σ_{i≠j} exp(β(|cos_ij| − μ)) with β = p / μ (μ: the last step's coherence), a
    log-sum-exp whose pair weights are ≈ (|cos_ij| / μ)^p: an annealed p-norm of |cos|. p rises
    geometrically from p_start (every pair pushes) to p_end (only the worst pairs do); lr decays
    on a cosine schedule. Each step moves along the sphere's tangent and renormalises. The best
    iterate is returned, with exact statistics of all its pairs.

    Every step evaluates all pairs in upper-triangle row blocks of `chunk` rows (default:
    about 2M cosines per block, at least 128 rows), so memory is O(chunk · n + n·d), never
    O(n²), and a step costs two GEMM-sized products (≈ 1.5 n²d multiply-adds), so the cost
    grows as n²d: large cases (n = 10^5, d = 10^3) are for a GPU (steps=0 still measures the
    random start and its exact statistics, one half-Gram pass).

    What to expect: the small known cases (d ≤ 10) are reached; larger ones settle on a
    plateau above `bounds(n, d).best` that does not depend on the seed and rises with d (the
    Levenshtein bound is not attained there; `gold_lines` shows how much closer a structured
    packing gets). Longer runs and other schedules move it by a few percent; a structured warm
    start (`init=`) by a few more. The measured ratios are in benchmarks/README.md.

    init: 'auto' | 'random' | 'orthonormal' | 'orthoplex' (see `initial_vectors`), or an
        [n, d] tensor to start from (a warm start; rows are normalised).
    lr: Adam step per coordinate; default 0.3 / d (small moves relative to a unit vector).
    dtype: default float64 for n ≤ 2048 (small cases converge to 1e-6), float32 above.
    """
    v.positive_int("n", n)
    v.positive_int("d", d)
    if n < 2:
        raise ValueError(f"pack needs n >= 2 vectors (coherence is a max over pairs), got n={n}")
    v.non_negative_int("steps", steps)
    v.positive_int("log_every", log_every)
    for name, x in (("p_start", p_start), ("p_end", p_end), ("lr", lr)):
        if x is not None:
            v.positive_float(name, x)
    if chunk is not None:
        v.positive_int("chunk", chunk)
    dev = v.resolve_device(device)
    if dtype is None:
        dtype = torch.float64 if n <= 2048 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}; "
                         "half precision cannot resolve the small cosines being minimised")
    if isinstance(init, Tensor):
        if init.ndim != 2 or tuple(init.shape) != (n, d):
            raise ValueError(f"init tensor must have shape [n, d] = [{n}, {d}], "
                             f"got {list(init.shape)}")
        U = geometry.unit_rows(init.detach(), "init", where="packing.pack").to(dev, dtype)
    else:
        v.choice("init", init, INITS)
        U = initial_vectors(n, d, init=init, seed=seed, device=dev).to(dtype=dtype)
    lr0 = lr if lr is not None else 0.3 / d
    rows = _rows(n, chunk)

    t0 = time.perf_counter()
    G = torch.empty_like(U)
    buf = torch.empty(2 * rows * n, dtype=dtype, device=dev)
    adam = InPlaceAdam(U)
    best_mu, best_U = math.inf, U.clone()
    history: list[float] = []
    history_steps: list[int] = []
    history_seconds: list[float] = []
    best_stats: geometry.CosineStats | None = None
    mu_ref = 1.0
    bar = _progress.bar(total=steps, progress=progress, desc=f"pack n={n} d={d}", leave=False)
    for t in range(steps + 1):
        frac = t / max(steps, 1)
        p = p_start * (p_end / p_start) ** frac
        last = None
        if t < steps:
            mu = _surrogate_grad(U, G, buf, p / max(mu_ref, 1e-6), mu_ref, rows)
        else:                         # the last iterate: all its statistics in the same pass
            last = geometry.unit_cosine_stats(U, rows=rows)
            mu = last.max_abs
        mu_ref = mu
        if mu < best_mu:
            best_mu, best_stats = mu, last
            best_U.copy_(U)
        if t % log_every == 0 or t == steps:
            history.append(mu)
            history_steps.append(t)
            history_seconds.append(time.perf_counter() - t0)
            bar.set_postfix(coherence=f"{mu:.5f}", best=f"{best_mu:.5f}")
        if t == steps or best_mu <= 1e-12:
            break
        G.sub_((G * U).sum(-1, keepdim=True) * U)                           # tangent to sphere
        lr_t = lr0 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
        adam.step(G, lr_t)                                                  # overwrites G
        U.div_(U.norm(dim=-1, keepdim=True))                                # back onto it
        bar.update(1)
    bar.close()
    del buf, G, adam
    st = best_stats if best_stats is not None else geometry.unit_cosine_stats(best_U, rows=rows)
    return PackResult(vectors=best_U, coherence=st.max_abs,
                      max_deviation_deg=st.max_deviation_deg, stats=st, history=history,
                      history_steps=history_steps, bounds=bounds(n, d),
                      seconds=time.perf_counter() - t0, history_seconds=history_seconds)

