"""Lower bounds on the coherence of n lines in R^d, the random baseline, and the capacity
question turned around: at most how many vectors keep every angle within 90° ± a.

Coherence is a property of *lines*: v and −v count the same, so n ≤ d(d+1)/2 is where the
classical bounds change regime (Conway, Hardin & Sloane 1996; Levenshtein 1982).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from scipy import special
from torch import Tensor

from superpose import _validate as v


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
    are weakly dependent, so this runs a few percent high; the cruder heuristic
    sqrt(2 ln(n²) / d) from a Gaussian tail is further off (benchmarks/README.md has both
    against simulation)."""
    for name, value in (("n", n), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"random_coherence: {name} must be a positive integer, got "
                             f"{value!r}")
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
    v.check_finite("packing.random_angle_density", "angles_deg", angles_deg,
                   fix="a density at them is undefined. Drop or fix those angles first")
    theta = torch.deg2rad(angles_deg.double())
    log_norm = float(special.betaln(0.5, (d - 1) / 2)) - math.log(math.pi / 180)
    s = torch.sin(theta).clamp_min(0.0)
    log_f = (d - 2) * torch.log(s) - log_norm if d > 2 else torch.full_like(s, -log_norm)
    f = torch.exp(log_f)
    hi = 90.0 if lines else 180.0
    inside = (angles_deg >= 0) & (angles_deg <= hi)
    return torch.where(inside, f * (2.0 if lines else 1.0), torch.zeros_like(f))
