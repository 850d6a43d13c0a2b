"""Near-orthogonal packings: how many almost perpendicular directions fit in R^d.

Two questions, answered side by side:

- `pack(n, d)` *constructs* n unit vectors in R^d with small coherence μ = max_{i≠j} |cos|,
  by descending a smooth surrogate of that max (a log-sum-exp of |cos| whose sharpness rises
  during the run, i.e. an annealed p-norm) with projection back onto the sphere.
- `bounds(n, d)` says what no construction can beat (lower bounds on μ), and `capacity(d, a)`
  turns that around: at most how many vectors can keep every angle within [90° − a, 90° + a].

Coherence is a property of *lines*: v and −v count the same, so n ≤ d(d+1)/2 is where the
classical bounds change regime (Conway, Hardin & Sloane 1996; Levenshtein 1982).
`known_packings()` returns the best packings in the literature for small cases, to check the
optimizer against; `gold_lines(m)` builds a large algebraic packing (4^m lines in R^(2^m − 1))
within a few percent of Levenshtein's bound, the yardstick for large cases.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import torch
from jaxtyping import Float
from scipy import special
from torch import Tensor
from tqdm.auto import tqdm

from superpose import _validate as v
from superpose import geometry

log = logging.getLogger(__name__)

Init = Literal["auto", "random", "orthonormal", "orthoplex"]
INITS: tuple[str, ...] = ("auto", "random", "orthonormal", "orthoplex")


# --------------------------------------------------------------------------------------------
# Bounds
# --------------------------------------------------------------------------------------------

def _deg(mu: float) -> float:
    """Max deviation from 90° of a packing with coherence mu: 90° − arccos(mu)."""
    return 90.0 - math.degrees(math.acos(min(max(mu, 0.0), 1.0)))


def _welch(n: int, d: int, k: int) -> float:
    """Order-k Welch bound μ^{2k} ≥ (n / C(d+k−1, k) − 1) / (n − 1); 0 where it is vacuous."""
    b = math.comb(d + k - 1, k)
    if n <= b:
        return 0.0
    return ((n / b - 1) / (n - 1)) ** (1 / (2 * k))


def _levenshtein(n: int, d: int) -> float:
    """Levenshtein's second (real) bound μ² ≥ (3n − d² − 2d) / ((d + 2)(n − d)); a valid lower
    bound for every n > d, non-trivial once 3n > d² + 2d and above Welch for n > d(d+1)/2."""
    if n <= d:
        return 0.0
    return math.sqrt(max(3 * n - d * d - 2 * d, 0) / ((d + 2) * (n - d)))


def _pair_tail(d: int, t: float) -> float:
    """P(|cos| > t) for two independent uniform unit vectors in R^d (cos² ~ Beta(1/2, (d−1)/2))."""
    if d == 1:
        return 1.0 if t < 1 else 0.0
    return float(special.betaincc(0.5, (d - 1) / 2, t * t))


def random_coherence(n: int, d: int) -> float:
    """Median coherence of n independent uniform unit vectors in R^d.

    Computed from the exact tail of one pair's |cos| (cos² ~ Beta(1/2, (d−1)/2)), treating the
    n(n−1)/2 pairs as independent: the t with P(no pair above t) = 1/2. Pairs sharing a vector
    are weakly dependent, so this runs a few percent high (0.617 vs 0.590 measured at n=1000,
    d=50); the cruder heuristic sqrt(2 ln(n²) / d) from a Gaussian tail is 15-25% high."""
    if n < 2:
        return 0.0
    if d == 1:
        return 1.0
    pairs = n * (n - 1) / 2
    q = -math.expm1(math.log(0.5) / pairs)                  # per-pair exceedance probability
    return math.sqrt(float(special.betainccinv(0.5, (d - 1) / 2, q)))


@dataclass(frozen=True)
class Bounds:
    """Lower bounds on the coherence μ of any n unit vectors in R^d (0.0 where vacuous).

    welch, welch2, welch3: Welch (1974) bounds of order k = 1, 2, 3,
        μ^{2k} ≥ (n / C(d+k−1, k) − 1) / (n − 1); k=1 is sqrt((n − d) / (d(n − 1))), attained by
        equiangular tight frames.
    orthoplex: μ ≥ 1/sqrt(d) once n > d(d+1)/2 (Rankin's bound, Conway–Hardin–Sloane 1996).
    levenshtein: μ² ≥ (3n − d² − 2d) / ((d+2)(n − d)) (Levenshtein 1982, real case).
    best / best_name: the largest; best_deg = 90° − arccos(best), the least possible max
        deviation from perpendicular.
    random / random_deg: median coherence of random unit vectors (see `random_coherence`).
    """

    n: int
    d: int
    welch: float
    welch2: float
    welch3: float
    orthoplex: float
    levenshtein: float
    best: float
    best_name: str
    best_deg: float
    random: float
    random_deg: float


def bounds(n: int, d: int) -> Bounds:
    """Lower bounds on the coherence of n unit vectors in R^d, and the random baseline.

    >>> b = bounds(10_000, 100)
    >>> round(b.levenshtein, 4), b.best_name
    (0.14, 'levenshtein')
    """
    v.positive_int("n", n)
    v.positive_int("d", d)
    if n == 1:
        named = {"welch": 0.0, "welch2": 0.0, "welch3": 0.0, "orthoplex": 0.0,
                 "levenshtein": 0.0}
    else:
        named = {"welch": _welch(n, d, 1), "welch2": _welch(n, d, 2), "welch3": _welch(n, d, 3),
                 "orthoplex": 1 / math.sqrt(d) if n > d * (d + 1) // 2 else 0.0,
                 "levenshtein": _levenshtein(n, d)}
    best_name = max(named, key=lambda k: named[k])
    best = named[best_name]
    rnd = random_coherence(n, d)
    return Bounds(n=n, d=d, **named, best=best, best_name=best_name, best_deg=_deg(best),
                  random=rnd, random_deg=_deg(rnd))


@dataclass(frozen=True)
class Capacity:
    """How many unit vectors in R^d can have every pairwise angle in [90° − a, 90° + a]
    (i.e. coherence ≤ max_abs_cos = sin a).

    upper: at most this many, the smallest of `upper_by` (the bounds of `bounds()` inverted,
        plus the cap-packing volume bound, which is finite for every a < 90°).
    random_lower: at least this many exist — n random vectors work with positive probability
        once n(n−1)/2 · P(|cos| > sin a) < 1 (union bound with the exact pair tail).
    jl_estimate: the Johnson–Lindenstrauss-style closed form exp(d sin²(a) / 4), from the same
        union bound with the tail P(|cos| > t) ≤ 2 exp(−d t² / 2). It grows exponentially in d
        at a fixed tolerance — but with the small constant sin²(a)/4.
    """

    d: int
    angle_deg: float
    max_abs_cos: float
    upper: float
    upper_by: dict[str, float] = field(default_factory=dict)
    random_lower: float = 0.0
    jl_estimate: float = 0.0


def capacity(d: int, angle_deg: float | int) -> Capacity:
    """At most (and at least) how many vectors fit in R^d with all angles within 90° ± angle_deg.

    >>> capacity(1000, 1.0).upper      # "millions within 89°-91° in 1000-D"? No: 1437.
    1437.0
    """
    v.positive_int("d", d)
    if isinstance(angle_deg, bool) or not isinstance(angle_deg, (int, float)) \
            or not 0 <= angle_deg < 90:
        raise ValueError(f"angle_deg must be a number in [0, 90), got {angle_deg!r}")
    a = math.sin(math.radians(angle_deg))
    a2 = a * a
    by: dict[str, float] = {}
    for k, name in ((1, "welch"), (2, "welch2"), (3, "welch3")):
        b = math.comb(d + k - 1, k)
        if a ** (2 * k) < 1 / b:
            by[name] = float(math.floor((1 - a ** (2 * k)) / (1 / b - a ** (2 * k)) + 1e-9))
    if a2 < 1 / d:
        by["orthoplex"] = float(d * (d + 1) // 2)
    if a2 < 3 / (d + 2):
        by["levenshtein"] = float(math.floor(d * (d + 2) * (1 - a2) / (3 - (d + 2) * a2) + 1e-9))
    # 2n points ±v with pairwise angles ≥ θ = arccos(a): caps of radius θ/2 are disjoint.
    half = math.acos(a) / 2
    if d == 1:
        by["cap"] = 1.0
    else:
        frac = float(special.betainc((d - 1) / 2, 0.5, math.sin(half) ** 2))  # = 2 cap area
        inv = 1 / frac if frac > 0 else math.inf      # 1 / 1e-310 overflows to inf
        by["cap"] = float(math.floor(inv)) if math.isfinite(inv) else math.inf
    upper = min(by.values())
    # Existence by random vectors: largest n with n(n−1)/2 · p < 1.
    p = _pair_tail(d, a)
    if p >= 1:
        lower = 1.0
    elif p > 1e-300:
        lower = float(math.ceil((1 + math.sqrt(1 + 8 / p)) / 2) - 1)
    else:                                                   # tail underflows: use its log
        log_p = math.log(2) - d * a2 / 2
        lower = math.exp(min(0.5 * (math.log(2) - log_p), 700.0))
    lower = min(lower, upper)
    jl = math.exp(min(d * a2 / 4, 700.0))
    return Capacity(d=d, angle_deg=float(angle_deg), max_abs_cos=a, upper=upper, upper_by=by,
                    random_lower=lower, jl_estimate=jl)


# --------------------------------------------------------------------------------------------
# Known packings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KnownPacking:
    """The best coherence known (or proved) for n lines in R^d, with its source."""

    n: int
    d: int
    coherence: float
    angle_deg: float
    optimal: bool
    source: str


def known_packings() -> list[KnownPacking]:
    """The table in superpose/data/known_packings.json (d ≤ 10), sorted by (d, n)."""
    text = resources.files("superpose").joinpath("data/known_packings.json").read_text("utf-8")
    data = json.loads(text)
    out = [KnownPacking(n=e["n"], d=e["d"], coherence=e["coherence"],
                        angle_deg=math.degrees(math.acos(e["coherence"])),
                        optimal=e["optimal"], source=data["sources"][e["source"]])
           for e in data["entries"]]
    return sorted(out, key=lambda k: (k.d, k.n))


# --------------------------------------------------------------------------------------------
# A construction: Gold codes
# --------------------------------------------------------------------------------------------

# Primitive trinomials x^m + x^k + 1 over GF(2), as the taps of s(i + m) = s(i + k) + s(i).
_GOLD_TAPS = {3: 1, 5: 2, 7: 1, 9: 4}


def _m_sequence(m: int) -> Tensor:
    """One period (2^m − 1 bits) of the maximal-length LFSR sequence of x^m + x^k + 1."""
    k, N = _GOLD_TAPS[m], 2**m - 1
    s = [1] + [0] * (m - 1)
    while len(s) < N:
        s.append(s[-m] ^ s[-m + k])
    return torch.tensor(s, dtype=torch.uint8)


def gold_lines(m: int, dtype: torch.dtype = torch.float32) -> Float[Tensor, "n d"]:
    """4^m unit vectors in R^(2^m − 1) with coherence exactly (1 + 2^((m+1)/2)) / (2^m − 1).

    The ±1 codewords of the Gold code (the dual of the double-error-correcting binary BCH code,
    Gold 1967): an m-sequence s, its decimation t(i) = s(3i), all their cyclic shifts and every
    XOR of a shift of s with a shift of t. Its nonzero weights are 2^(m−1) and
    2^(m−1) ± 2^((m−1)/2), so every pair of the 4^m lines has N·|cos| ∈ {1, 2^((m+1)/2) ± 1}.
    That is a known algebraic packing close to Levenshtein's bound (ratio 1.16 at m = 5,
    1.07 at m = 7, 1.03 at m = 9; m = 3 is small enough for `pack` to beat it), far closer
    than `pack` gets from random starts at the same size (1.28× at m = 5): a yardstick for
    what the optimizer leaves on the table, and a structured start (`pack(init=...)` after
    selecting rows or coordinates).

    m: odd, 3 ≤ m ≤ 9 (64 × 7 … 262,144 × 511; m = 9 is 536 MB in float32).
    """
    if isinstance(m, bool) or not isinstance(m, int) or m not in _GOLD_TAPS:
        raise ValueError(f"m must be an odd integer in {sorted(_GOLD_TAPS)} (Gold codes need m "
                         f"odd; 2^m − 1 is the dimension), got {m!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    N = 2**m - 1
    s = _m_sequence(m)
    t = s[(3 * torch.arange(N)) % N]
    idx = (torch.arange(N)[:, None] + torch.arange(N)[None, :]) % N   # row j: shift by j
    zero = torch.zeros(1, N, dtype=torch.uint8)
    S = torch.cat([zero, s[idx]])                                     # [N + 1, N]
    T = torch.cat([zero, t[idx]])
    bits = (S[:, None, :] ^ T[None, :, :]).reshape(-1, N)             # [4^m, N]
    return (1.0 - 2.0 * bits.to(dtype)) / math.sqrt(N)


# --------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------

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


def initial_vectors(n: int, d: int, init: str = "auto", seed: int = 0) -> Float[Tensor, "n d"]:
    """Starting points for `pack` (float64, CPU).

    random:      Gaussian rows, normalised (uniform on the sphere).
    orthonormal: n ≤ d rows of a random rotation: coherence 0, already optimal.
    orthoplex:   n ≤ 2d: an orthonormal basis plus a second, mutually unbiased one (the
                 normalised Hadamard matrix when d is a power of 2, coherence 1/sqrt(d);
                 otherwise a random rotation of the first). Not ±e_i: as *lines* an antipodal
                 pair has |cos| = 1.
    auto:        orthonormal when n ≤ d, else random (the optimizer beats the orthoplex start
                 for d < n ≤ 2d, whose 1/sqrt(d) is well above Welch there).
    """
    v.choice("init", init, INITS)
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

_BLOCK_ELEMENTS = 2**21          # cosines per row block (8 MB in float32): fits the cache


def _exp_range(dtype: torch.dtype) -> tuple[float, float]:
    """Clamp for the exponent: below, exp stays a normal float (denormals are ~50× slower on
    CPUs); above, the sums cannot overflow."""
    return (-80.0, 30.0) if dtype == torch.float32 else (-700.0, 200.0)


def _rows(n: int, chunk: int | None) -> int:
    """Rows per block: ~2M cosines, but at least 128 rows (a GEMM with fewer rows runs at half
    speed: 16 vs 26-30 GFLOP/s at n=100000, d=1000 on one core)."""
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


def _cosine_stats(U: Tensor, rows: int) -> geometry.CosineStats:
    """`geometry.cosine_stats` of unit rows in one chunked pass over the upper triangle
    (row block × the rows after it: half the products, no [chunk, n] mask); sums in float64."""
    n, d = U.shape
    s1 = s2 = sa = 0.0
    lo, hi, mx = math.inf, -math.inf, 0.0
    for s in range(0, n - 1, rows):
        e = min(s + rows, n)
        b = e - s
        c = U[s:e] @ U[s + 1:].T                          # row i = s + r, column j = s + 1 + k
        inv = None
        if b > 1:                                         # k < r is j <= i: not a pair i < j
            inv = torch.ones(b, b - 1, dtype=torch.bool, device=U.device).tril_(-1)
            c[:, :b - 1].masked_fill_(inv, 0.0)
        a = c.abs()
        mx = max(mx, float(a.amax()))
        s1 += float(c.sum(dtype=torch.float64))
        s2 += float(c.square().sum(dtype=torch.float64))
        sa += float(a.sum(dtype=torch.float64))
        if inv is not None:                               # c[0, 0] is a pair: neutral filler
            c[:, :b - 1].masked_fill_(inv, float(c[0, 0]))
        lo, hi = min(lo, float(c.amin())), max(hi, float(c.amax()))
    m = n * (n - 1) // 2
    mean = s1 / m
    deg = lambda x: math.degrees(math.acos(max(-1.0, min(1.0, x))))  # noqa: E731
    return geometry.CosineStats(
        n=n, d=d, n_pairs=m, mean=mean, std=math.sqrt(max(s2 / m - mean**2, 0.0)),
        mean_abs=sa / m, rms=math.sqrt(s2 / m), max_abs=mx, min=lo, max=hi,
        min_angle_deg=deg(hi), max_angle_deg=deg(lo), max_deviation_deg=90.0 - deg(mx))


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
    O(n²), and a step costs two GEMM-sized products (≈ 1.5 n²d multiply-adds): ~1.2 s of one
    CPU core at (10000, 100), but ~20 min at (100000, 1000) — a GPU case (steps=0 still
    measures the random start and its exact statistics, one half-Gram pass).

    What to expect: the small known cases (d ≤ 10) to within 0.03%; larger ones settle on a
    plateau that does not depend on the seed (20 seeds at 276 × 23, optimum 0.2: 0.2861 to
    0.2868), 1.2–1.65× above `bounds(n, d).best` and rising with d (1.24× at 400 × 20, 1.43×
    at 276 × 23, 1.59× at 10000 × 100, 1.65× at 16384 × 127, where `gold_lines(7)` sits at
    1.07×). Longer runs and other schedules move it by a few percent; a structured warm start
    (`init=`) by a few more.

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
            if not math.isfinite(x):
                raise ValueError(f"{name} must be a finite positive number, got {x!r}")
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
        U = geometry.unit_rows(init.detach(), "init").to(dev, dtype)
    else:
        v.choice("init", init, INITS)
        U = initial_vectors(n, d, init, seed).to(dev, dtype)
    lr0 = lr if lr is not None else 0.3 / d
    rows = _rows(n, chunk)

    t0 = time.perf_counter()
    G = torch.empty_like(U)
    buf = torch.empty(2 * rows * n, dtype=dtype, device=dev)
    m1 = torch.zeros_like(U)
    m2 = torch.zeros_like(U)
    b1, b2, eps = 0.9, 0.999, 1e-12
    best_mu, best_U = math.inf, U.clone()
    history: list[float] = []
    history_steps: list[int] = []
    history_seconds: list[float] = []
    best_stats: geometry.CosineStats | None = None
    mu_ref = 1.0
    bar = tqdm(total=steps, disable=not progress, desc=f"pack n={n} d={d}", leave=False)
    for t in range(steps + 1):
        frac = t / max(steps, 1)
        p = p_start * (p_end / p_start) ** frac
        last = None
        if t < steps:
            mu = _surrogate_grad(U, G, buf, p / max(mu_ref, 1e-6), mu_ref, rows)
        else:                         # the last iterate: all its statistics in the same pass
            last = _cosine_stats(U, rows)
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
        m1.mul_(b1).add_(G, alpha=1 - b1)
        m2.mul_(b2).addcmul_(G, G, value=1 - b2)
        torch.div(m2, 1 - b2 ** (t + 1), out=G).sqrt_().add_(eps)         # G: reused buffer
        lr_t = lr0 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
        U.addcdiv_(m1, G, value=-lr_t / (1 - b1 ** (t + 1)))
        U.div_(U.norm(dim=-1, keepdim=True))
        bar.update(1)
    bar.close()
    del buf, G, m1, m2
    st = best_stats if best_stats is not None else _cosine_stats(best_U, rows)
    return PackResult(vectors=best_U, coherence=st.max_abs,
                      max_deviation_deg=st.max_deviation_deg, stats=st, history=history,
                      history_steps=history_steps, bounds=bounds(n, d),
                      seconds=time.perf_counter() - t0, history_seconds=history_seconds)


# --------------------------------------------------------------------------------------------
# The random baseline, as a density
# --------------------------------------------------------------------------------------------

def random_angle_density(angles_deg: Float[Tensor, " k"], d: int, *, lines: bool = False
                         ) -> Float[Tensor, " k"]:
    """Exact density (per degree) of the angle between two independent uniform unit vectors
    in R^d: sin^(d−2)(θ) / B(1/2, (d−1)/2) per radian on [0°, 180°]. lines=True: the angle
    between the lines they span, on [0°, 90°] (twice the density there). Computed in log space,
    so d = 10^6 works; 0 outside the range.

    >>> round(float(random_angle_density(torch.tensor([90.0]), 2)), 5)     # uniform: 1/180
    0.00556
    """
    v.positive_int("d", d)
    if d < 2:
        raise ValueError(f"random_angle_density needs d >= 2 (in R^1 every angle is 0° or "
                         f"180°), got d={d}")
    if not isinstance(angles_deg, Tensor):
        raise TypeError(f"angles_deg must be a torch.Tensor of angles in degrees, "
                        f"got {type(angles_deg).__name__}")
    theta = torch.deg2rad(angles_deg.double())
    log_norm = float(special.betaln(0.5, (d - 1) / 2)) - math.log(math.pi / 180)
    s = torch.sin(theta).clamp_min(0.0)
    log_f = (d - 2) * torch.log(s) - log_norm if d > 2 else torch.full_like(s, -log_norm)
    f = torch.exp(log_f)
    hi = 90.0 if lines else 180.0
    inside = (angles_deg >= 0) & (angles_deg <= hi)
    return torch.where(inside, f * (2.0 if lines else 1.0), torch.zeros_like(f))
