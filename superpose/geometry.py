"""Geometry of vector sets, shared by every part of the lab.

A *vector set* is a tensor `[..., n, d]` of n vectors (rows) in R^d, with any leading batch
dimensions (a toy model's instances, say). The columns of a toy model's W
(`ToyModel.feature_directions()`), an SAE's decoder rows, a GPT's embedding matrix and a packing
all go through these functions.

The superposition measures follow Elhage et al., "Toy Models of Superposition" (2022):
  ||W_i||                          how strongly feature i is represented
  Σ_{j≠i} (Ŵ_i · W_j)²             how much other features share its direction
  D_i = ||W_i||² / Σ_j (Ŵ_i·W_j)²  the fraction of a dimension feature i gets
  m / ||W||_F²                     dimensions per (represented) feature
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _validate as v

EPS = 1e-12


def _check_vectors(V: Tensor, name: str = "vectors", where: str | None = None) -> None:
    where = f"geometry.{where}" if where and "." not in where else where
    pre = f"{where}: " if where else ""
    if not isinstance(V, Tensor):
        raise TypeError(f"{pre}{name} must be a torch.Tensor of shape [..., n, d], "
                        f"got {type(V).__name__}")
    if V.ndim < 2:
        raise ValueError(f"{pre}{name} must have shape [..., n, d] (rows are vectors), "
                         f"got shape {list(V.shape)}")
    if not V.is_floating_point():
        raise ValueError(f"{pre}{name} must be a floating-point tensor, got dtype {V.dtype}")
    if not bool(torch.isfinite(V).all()):
        v.check_finite(where or "geometry", name, V,
                       fix="norms, angles and dimensionalities of them are undefined. Drop "
                           "or fix those vectors first")


def _check_nonzero(V: Tensor, where: str, name: str = "vectors") -> Tensor:
    """The lengths of V's rows, after refusing a zero row (its angles are undefined)."""
    length = V.norm(dim=-1)
    v.check_nonzero_rows(where if "." in where else f"geometry.{where}", name, length,
                         eps=EPS)
    return length


def norms(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch n"]:
    """The length of every vector."""
    _check_vectors(V, where="norms")
    return V.norm(dim=-1)


def normalize(V: Float[Tensor, "*batch n d"], *args: float, eps: float = EPS
              ) -> Float[Tensor, "*batch n d"]:
    """Unit vectors (a zero vector stays zero rather than becoming NaN). `eps` positionally is
    deprecated (pass eps=...)."""
    eps = deprecation.positional_option("normalize", "eps", args, eps, default=EPS)
    _check_vectors(V, where="normalize")
    return V / V.norm(dim=-1, keepdim=True).clamp_min(eps)


def gram(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch n n"]:
    """All dot products V Vᵀ; for a toy model this is the paper's WᵀW."""
    _check_vectors(V, where="gram")
    return V @ V.transpose(-1, -2)


def cosine_matrix(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch n n"]:
    """All pairwise cosine similarities (0 for pairs involving a zero vector: a toy model's
    dead feature; `angles_deg` and the pairwise statistics below refuse zero vectors)."""
    _check_vectors(V, where="cosine_matrix")
    U = normalize(V)
    return U @ U.transpose(-1, -2)


def interference(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch n n"]:
    """WᵀW with its diagonal zeroed: how much feature j leaks into feature i's read-out."""
    _check_vectors(V, where="interference")
    G = gram(V)
    return G - torch.diag_embed(torch.diagonal(G, dim1=-2, dim2=-1))


def superposition(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch n"]:
    """Σ_{j≠i} (Ŵ_i · W_j)²: 0 for a feature with a dimension to itself."""
    _check_vectors(V, where="superposition")
    proj = normalize(V) @ V.transpose(-1, -2)                      # [.., n, n]: Ŵ_i · W_j
    proj = proj - torch.diag_embed(torch.diagonal(proj, dim1=-2, dim2=-1))
    return proj.square().sum(-1)


def feature_dimensionality(V: Float[Tensor, "*batch n d"], *args: float, eps: float = 1e-10
                           ) -> Float[Tensor, "*batch n"]:
    """D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)²: 1 for a dedicated dimension, 1/2 for an antipodal
    pair, 2/5 for a pentagon, 0 for a feature that is not represented. `eps` positionally is
    deprecated (pass eps=...)."""
    eps = deprecation.positional_option("feature_dimensionality", "eps", args, eps,
                                        default=1e-10)
    _check_vectors(V, where="feature_dimensionality")
    proj = normalize(V) @ V.transpose(-1, -2)
    denom = proj.square().sum(-1)
    n2 = V.square().sum(-1)
    return torch.where(denom > eps, n2 / denom.clamp_min(eps), torch.zeros_like(n2))


def dimensions_per_feature(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch"]:
    """m / ||W||_F²: how many hidden dimensions each (represented) feature gets on average.
    Undefined (a ValueError naming the set) when a set holds no vectors or only zero ones."""
    _check_vectors(V, where="dimensions_per_feature")
    fro2 = V.square().sum(dim=(-1, -2))
    empty = fro2 <= EPS
    if bool(empty.any()):
        idx = empty.nonzero()[0].tolist() if fro2.ndim else []
        at = "".join(f"[{i}]" for i in idx)
        raise ValueError(f"geometry.dimensions_per_feature: vectors{at} has ||W||_F² = "
                         f"{float(fro2[tuple(idx)]):.3g} ({V.shape[-2]} vector(s), none "
                         "represented), so dimensions per feature m / ||W||_F² is undefined; "
                         "leave out sets with no represented feature")
    return V.shape[-1] / fro2


def n_represented(V: Float[Tensor, "*batch n d"], *args: float, threshold: float = 0.5
                  ) -> Tensor:
    """How many vectors have norm above `threshold` (the paper's 'represented' features).
    `threshold` positionally is deprecated (pass threshold=...)."""
    threshold = deprecation.positional_option("n_represented", "threshold", args, threshold,
                                              default=0.5)
    _check_vectors(V, where="n_represented")
    return (norms(V) > threshold).sum(-1)


def angles_deg(V: Float[Tensor, "*batch n d"]) -> Float[Tensor, "*batch n n"]:
    """Pairwise angles in degrees (a zero vector, with no direction, is a ValueError)."""
    _check_vectors(V, where="angles_deg")
    _check_nonzero(V, "angles_deg")
    return torch.rad2deg(torch.arccos(cosine_matrix(V).clamp(-1, 1)))


def coherence(V: Float[Tensor, "*batch n d"], *args: int, chunk: int | None = None
              ) -> Float[Tensor, "*batch"]:
    """max_{i≠j} |cos(v_i, v_j)|, computed `chunk` rows at a time so n×n is never built at
    once. `chunk=None` picks the rows from the same element budget as the other pairwise
    functions here (about 2²² cosines per block, counting batch dimensions); the result does
    not depend on `chunk` beyond float rounding. A zero vector (a toy model's dead feature)
    counts as orthogonal to all, as in `cosine_matrix`; a set with fewer than 2 non-zero
    vectors is a ValueError. `chunk` positionally is deprecated."""
    chunk = deprecation.positional_option("coherence", "chunk", args, chunk)
    _check_vectors(V, where="coherence")
    n = V.shape[-2]
    if n < 2:
        raise ValueError(f"coherence needs at least 2 vectors, got n={n}")
    alive = (V.norm(dim=-1) > EPS).sum(-1)
    if bool((alive < 2).any()):
        idx = (alive < 2).nonzero()[0].tolist() if alive.ndim else []
        at = "".join(f"[{i}]" for i in idx)
        raise ValueError(f"geometry.coherence: vectors{at} has {int(alive[tuple(idx)])} "
                         "non-zero vector(s); a coherence needs at least 2 (zero vectors have no "
                         "direction)")
    batch = math.prod(V.shape[:-2])
    rows = (_chunk_rows(n, chunk) if chunk is not None
            else max(1, min(n, _CHUNK_ELEMENTS // max(n * batch, 1))))
    U = normalize(V)
    best = torch.full(V.shape[:-2], -math.inf, dtype=V.dtype, device=V.device)
    for s in range(0, n, rows):
        c = (U[..., s:s + rows, :] @ U.transpose(-1, -2)).abs()         # [.., rows, n]
        r = torch.arange(s, min(s + rows, n), device=V.device)
        c[..., r - s, r] = -math.inf                                     # skip i == j
        best = torch.maximum(best, c.amax(dim=(-1, -2)))
    return best


# --------------------------------------------------------------------------------------------
# Pairwise statistics of large vector sets, in row chunks.
#
# These take one vector set [n, d] (no batch dimensions) and never hold more than
# `chunk × n` cosines at a time, so n = 100,000 vectors in d = 1,000 fit in a few hundred MB.
# Zero or non-finite vectors are errors here (an angle with a zero vector is undefined), named
# by their index.
# --------------------------------------------------------------------------------------------

_CHUNK_ELEMENTS = 2**22          # cosines held at once by default (16 MB in float32)


def unit_rows(V: Float[Tensor, "n d"], name: str = "vectors", min_n: int = 2, *,
              where: str = "geometry.unit_rows") -> Float[Tensor, "n d"]:
    """The rows of V scaled to unit length, after checking that V is an [n, d] set of at least
    `min_n` finite, non-zero vectors (the error names `where`, the calling function, and the
    first bad row)."""
    where = where if "." in where else f"geometry.{where}"
    pre = f"{where}: "
    if isinstance(V, Tensor) and V.ndim == 2 and V.is_floating_point():
        finite = torch.isfinite(V).all(dim=-1)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(f"{pre}{name}[{i}] contains NaN or inf ({int((~finite).sum())} "
                             "such row(s)); every vector must be finite: drop or fix them first")
    _check_vectors(V, name, where)
    if V.ndim != 2:
        raise ValueError(f"{pre}{name} must have shape [n, d] here (one vector set, no batch "
                         f"dimensions), got shape {list(V.shape)}")
    n = V.shape[0]
    if n < min_n:
        raise ValueError(f"{pre}{name} needs at least {min_n} vectors (rows), got n={n}")
    length = _check_nonzero(V, where, name)
    return V / length[:, None]


def _chunk_rows(n: int, chunk: int | None) -> int:
    if chunk is None:
        return max(1, min(n, _CHUNK_ELEMENTS // max(n, 1)))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer (rows per block) or None, "
                         f"got {chunk!r}")
    return chunk


def _pair_cosines(U: Tensor, chunk: int | None):
    """Yield 1-D tensors holding cos(u_i, u_j) for every pair i < j, one row block at a time."""
    n = U.shape[0]
    rows = _chunk_rows(n, chunk)
    for s in range(0, n - 1, rows):
        e = min(s + rows, n)
        block = U[s:e] @ U[s:].T                                        # [b, n - s]
        keep = torch.ones(block.shape, dtype=torch.bool, device=U.device).triu(1)
        yield block[keep]


def angle_histogram(V: Float[Tensor, "n d"], *args: int | tuple[float | int, float | int],
                    bins: int = 180, range_deg: tuple[float | int, float | int] | None = None,
                    lines: bool = False, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Counts of the pairwise angles (pairs i < j, in degrees) in `bins` equal bins.

    lines=False: angles between vectors, in [0°, 180°]; lines=True: angles between the lines
    they span (from |cos|), in [0°, 90°]. Angles outside `range_deg` are not counted; an angle
    on an inner edge goes to the bin on its right, the last edge is inclusive.
    Returns (counts [bins] int64, edges [bins + 1] float64). `bins` and `range_deg`
    positionally are deprecated (pass bins=..., range_deg=...).
    """
    bins, range_deg = deprecation.positional_options(
        "angle_histogram", "V", args, {"bins": bins, "range_deg": range_deg},
        {"bins": 180, "range_deg": None})
    U = unit_rows(V, where="angle_histogram")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    lo, hi = range_deg if range_deg is not None else (0.0, 90.0 if lines else 180.0)
    if not 0 <= lo < hi <= 180:
        raise ValueError(f"range_deg must satisfy 0 <= lo < hi <= 180, got {(lo, hi)}")
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    inner = edges[1:-1].to(U.device, U.dtype)
    counts = torch.zeros(bins, dtype=torch.int64, device=U.device)
    for c in _pair_cosines(U, chunk):
        if lines:
            c = c.abs()
        a = torch.rad2deg(torch.arccos(c.clamp(-1, 1)))
        a = a[(a >= lo) & (a <= hi)]
        counts += torch.bincount(torch.bucketize(a, inner, right=True), minlength=bins)
    return counts.cpu(), edges


def count_pairs_in_band(V: Float[Tensor, "n d"], lo_deg: float | int, hi_deg: float | int, *,
                        chunk: int | None = None) -> int:
    """How many pairs i < j have their angle in [lo_deg, hi_deg] (degrees, both inclusive).

    `count_pairs_in_band(V, 89, 91) == n(n-1)/2` is the claim "every angle is within 1° of
    perpendicular". Compared in cosine space: cos(hi) <= cos <= cos(lo).
    """
    U = unit_rows(V, where="count_pairs_in_band")
    if not 0 <= lo_deg <= hi_deg <= 180:
        raise ValueError(f"the band must satisfy 0 <= lo_deg <= hi_deg <= 180, "
                         f"got lo_deg={lo_deg!r}, hi_deg={hi_deg!r}")
    c_hi, c_lo = math.cos(math.radians(lo_deg)), math.cos(math.radians(hi_deg))
    total = 0
    for c in _pair_cosines(U, chunk):
        total += int(((c >= c_lo) & (c <= c_hi)).sum())
    return total


def nearest_neighbour_angles(V: Float[Tensor, "n d"], *, lines: bool = False,
                             chunk: int | None = None) -> Float[Tensor, " n"]:
    """For every vector, the angle (degrees) to its nearest other vector (lines=True: to the
    nearest other line, from |cos|, in [0°, 90°])."""
    U = unit_rows(V, where="nearest_neighbour_angles")
    n = U.shape[0]
    rows = _chunk_rows(n, chunk)
    out = torch.empty(n, dtype=U.dtype, device=U.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        c = U[s:e] @ U.T                                                # [b, n]
        if lines:
            c = c.abs()
        r = torch.arange(e - s, device=U.device)
        c[r, r + s] = -math.inf                                         # skip i == j
        out[s:e] = c.amax(dim=-1)
    return torch.rad2deg(torch.arccos(out.clamp(-1, 1)))


@dataclass(frozen=True)
class CosineStats:
    """Summary of the n(n-1)/2 pairwise cosines of a vector set.

    max_abs is the coherence; max_deviation_deg = 90° − arccos(max_abs) is how far the worst
    pair is from perpendicular; rms is sqrt(mean cos²) (the frame potential per pair).
    """

    n: int
    d: int
    n_pairs: int
    mean: float
    std: float
    mean_abs: float
    rms: float
    max_abs: float
    min: float
    max: float
    min_angle_deg: float
    max_angle_deg: float
    max_deviation_deg: float

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def cosine_stats(V: Float[Tensor, "n d"], *, chunk: int | None = None) -> CosineStats:
    """Mean, std, mean |cos|, rms, max |cos| (coherence), min/max cos and the extreme angles of
    all pairs i < j, accumulated in float64 over row chunks."""
    U = unit_rows(V, where="cosine_stats")
    return unit_cosine_stats(U, rows=_chunk_rows(U.shape[0], chunk))


def unit_cosine_stats(U: Float[Tensor, "n d"], *, rows: int) -> CosineStats:
    """`cosine_stats` of rows that are already unit vectors (not checked, not renormalised: the
    packing optimizer reports the exact iterate it returns), `rows` rows per block.

    One pass over the upper triangle: each block is multiplied only against the rows after its
    first one, so every pair is formed once, and the few pairs inside the block that are not
    i < j are masked in a [rows, rows] corner rather than with an [rows, n] mask."""
    n, d = U.shape
    if n < 2:
        raise ValueError(f"cosine statistics need at least 2 vectors, got n={n}")
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
    return CosineStats(n=n, d=d, n_pairs=m, mean=mean, std=math.sqrt(max(s2 / m - mean**2, 0.0)),
                       mean_abs=sa / m, rms=math.sqrt(s2 / m), max_abs=mx, min=lo, max=hi,
                       min_angle_deg=deg(hi), max_angle_deg=deg(lo),
                       max_deviation_deg=90.0 - deg(mx))
