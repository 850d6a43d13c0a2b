"""Johnson–Lindenstrauss: random projections, the distortion they cause, and the bound.

The lemma (Johnson & Lindenstrauss 1984; the form here is Dasgupta & Gupta 2003): n points can
be mapped linearly into k >= 4 ln n / (eps²/2 - eps³/3) dimensions so that every squared
pairwise distance changes by a factor inside (1 - eps, 1 + eps); a Gaussian random matrix does
it with probability at least 1 - 1/n. `min_dim` is that k (scikit-learn's
`johnson_lindenstrauss_min_dim`, to the integer).

- `project(X, k, kind=...)`: scikit-learn's random projections. "gaussian" is N(0, 1/k)
  entries; "sparse" is Achlioptas (2003), density 1/3; "very_sparse" is Li, Hastie & Church
  (2006), density 1/sqrt(d) (scikit-learn's `density="auto"`).
- `pairwise_distortion(X, X_proj)`: the ratio ||f(x)-f(y)||² / ||x-y||² for every pair i < j
  (or a seeded sample of pairs), computed a block of rows at a time, never the whole N×N.
- `sweep` / `smallest_k`: the distortion as a function of k, and the smallest k that keeps
  every pair (quantile=1.0), or a given quantile of pairs, within eps, against `min_dim`.

    >>> from superpose import jl
    >>> int(jl.min_dim(10_000, eps=0.1))
    7894
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, Literal, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _validate as validate
from superpose import geometry

Kind = Literal["gaussian", "sparse", "very_sparse"]
KINDS: tuple[str, ...] = ("gaussian", "sparse", "very_sparse")
Points = Union[Float[Tensor, "n d"], Float[np.ndarray, "n d"]]
Projected = Union[Float[Tensor, "n k"], Float[np.ndarray, "n k"]]
Numbers = Union[int, float, np.integer, np.floating, Sequence[Union[int, float]], np.ndarray]

# `chunk` is rows per block, as everywhere in superpose: None picks them from geometry's element
# budget (about 2²² pair entries per block, float64 here). The sampled-pairs path has its own
# budget, in pairs per step. Neither changes a result beyond float rounding.
_SAMPLED_PAIRS_PER_STEP = 65_536


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_CHUNK":
        deprecation.warn("jl.DEFAULT_CHUNK is deprecated: chunk=None (the default) picks the "
                         "rows per block from geometry's element budget", stacklevel=3)
        return 1024
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rows(n: int, chunk: int | None) -> int:
    """Rows per block: `chunk`, or geometry's element budget over n columns."""
    if chunk is None:
        return max(1, min(n, geometry._CHUNK_ELEMENTS // max(n, 1)))
    return _check_int("chunk", chunk)


# ----------------------------------------------------------------------------- the bound

def min_dim(n: Numbers | None = None, *args: Numbers, eps: Numbers = 0.1,
            n_samples: Numbers | None = None) -> Any:
    """The JL dimension 4 ln(n) / (eps²/2 - eps³/3) for n points, truncated to an integer.

    Equal to scikit-learn's `johnson_lindenstrauss_min_dim(n_samples, eps=eps)` for scalars and
    arrays (broadcast against each other); returns a numpy integer or an integer array.
    Deprecated: `n_samples=` (now `n`, the number of points, as in `default_ks(n, d)`) and
    `eps` positionally (now `eps=`, keyword-only as in scikit-learn).

    >>> int(min_dim(1e6, eps=0.5))
    663
    """
    eps = deprecation.positional_option("min_dim", "eps", args, eps, default=0.1)
    if n_samples is not None:
        n = deprecation.renamed_argument("min_dim", "n_samples", "n", n_samples, n)
    if n is None:
        raise TypeError("min_dim() missing required argument 'n' (the number of points)")
    e = np.asarray(eps, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if not np.all((e > 0) & (e < 1)):             # also catches NaN
        bad = e[~((e > 0) & (e < 1))].ravel()[0] if e.ndim else e
        raise ValueError(f"eps must be in (0, 1) (the allowed relative distortion), "
                         f"got {float(bad)!r}")
    if not np.all((n >= 1) & np.isfinite(n)):
        bad = n[~((n >= 1) & np.isfinite(n))].ravel()[0] if n.ndim else n
        raise ValueError(f"n (the number of points) must be a finite number >= 1, got "
                         f"{float(bad):g}")
    return (4 * np.log(n) / (e ** 2 / 2 - e ** 3 / 3)).astype(np.int64)


# ----------------------------------------------------------------------------- validation

def _check_kind(kind: Any) -> None:
    if kind not in KINDS:
        import difflib

        hint = difflib.get_close_matches(str(kind), KINDS, n=1)
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) \
            or not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1) (the allowed relative distortion), got {eps!r}")
    return float(eps)


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_float64(name: str, X: Any) -> Tensor:
    """A CPU float64 tensor [n, d] from numpy or torch, with finite values."""
    if isinstance(X, Tensor):
        T = X.detach().to("cpu")
    elif isinstance(X, np.ndarray):
        T = torch.from_numpy(np.ascontiguousarray(X))
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor [n, d], "
                        f"got {type(X).__name__}")
    if T.ndim != 2:
        raise ValueError(f"{name} must have shape [n, d] (points as rows), "
                         f"got shape {list(T.shape)}")
    if T.shape[0] < 1 or T.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one point of dimension >= 1, "
                         f"got shape {list(T.shape)}")
    if not (T.is_floating_point() or T.dtype in (torch.int32, torch.int64, torch.int16,
                                                  torch.uint8, torch.int8)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {T.dtype}")
    T = T.to(torch.float64)
    finite = torch.isfinite(T).all(dim=1)
    if not finite.all():
        rows = (~finite).nonzero().ravel()
        raise ValueError(f"{name} has NaN or inf in {len(rows)} row(s) (first: row "
                         f"{int(rows[0])}); drop or clean those rows first")
    return T


# ----------------------------------------------------------------------------- projections

def make_projector(k: int, *, kind: Kind = "gaussian", seed: int = 0) -> Any:
    """An unfitted scikit-learn random projection with k components."""
    from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection

    _check_kind(kind)
    k = _check_int("k", k)
    if kind == "gaussian":
        return GaussianRandomProjection(n_components=k, random_state=seed)
    density: float | str = 1 / 3 if kind == "sparse" else "auto"   # auto = 1/sqrt(d)
    return SparseRandomProjection(n_components=k, density=density, dense_output=True,
                                  random_state=seed)


def _fit(X: Tensor, k: int, kind: str, seed: int) -> Any:
    """Fit a projector on X (only its shape matters). k > d is allowed: JL on low-dimensional
    data (digits, d = 64) needs it, so scikit-learn's 'not reduced' warning is silenced."""
    from sklearn.exceptions import DataDimensionalityWarning

    proj = make_projector(k, kind=kind, seed=seed)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataDimensionalityWarning)
        proj.fit(np.zeros((1, X.shape[1])))
    return proj


def _components(proj: Any) -> np.ndarray:
    """The projection matrix R [k, d] as a dense float64 array."""
    R = proj.components_
    R = R.toarray() if hasattr(R, "toarray") else np.asarray(R)
    return R.astype(np.float64, copy=False)


def project(X: Points, k: int, *, kind: Kind = "gaussian", seed: int = 0
            ) -> tuple[Projected, Any]:
    """Project the rows of X to k dimensions with scikit-learn's random projection.

    Returns `(X_proj, projector)`: X_proj of the same kind as X (numpy in, numpy out; torch
    in, torch out with X's dtype and device) and the fitted scikit-learn estimator (its
    `components_` is the [k, d] matrix R; X_proj = X Rᵀ). k may exceed d.

    >>> import numpy as np
    >>> Y, p = project(np.ones((3, 10)), 4, kind="sparse", seed=0)
    >>> Y.shape
    (3, 4)
    """
    _check_kind(kind)
    k = _check_int("k", k)
    T = _as_float64("X", X)
    proj = _fit(T, k, kind, seed)
    Y = torch.from_numpy(np.asarray(T.numpy() @ _components(proj).T))
    if isinstance(X, Tensor):
        return Y.to(dtype=X.dtype if X.is_floating_point() else torch.float64,
                    device=X.device), proj
    return Y.numpy().astype(X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64,
                            copy=False), proj


# ----------------------------------------------------------------------------- distortion

def _sq_norms(T: Tensor) -> Tensor:
    return T.square().sum(1)


def _ratios_all_pairs(X: Tensor, Y: Tensor, chunk: int | None) -> Tensor:
    """||y_i - y_j||² / ||x_i - x_j||² for i < j, row blocks of `chunk`, identical x skipped.

    Y only needs the Gram matrix of the projection (Y Yᵀ = X_proj X_projᵀ), which is how
    `sweep` measures a k > d projection at the cost of a d-dimensional one."""
    n = X.shape[0]
    chunk = _rows(n, chunk)
    nx, ny = _sq_norms(X), _sq_norms(Y)
    out = []
    for s in range(0, n - 1, chunk):
        e = min(s + chunk, n)
        dx = nx[s:e, None] + nx[None, s + 1:] - 2 * X[s:e] @ X[s + 1:].T     # [b, n-s-1]
        dy = ny[s:e, None] + ny[None, s + 1:] - 2 * Y[s:e] @ Y[s + 1:].T
        i = torch.arange(s, e)[:, None]
        j = torch.arange(s + 1, n)[None, :]
        # distinct points only: a tolerance relative to the norms absorbs the rounding of the
        # Gram form (x identical to y gives |dx| ~ 1e-16 (|x|² + |y|²))
        tol = 1e-10 * (nx[s:e, None] + nx[None, s + 1:])
        keep = (j > i) & (dx > tol)
        out.append((dy[keep] / dx[keep]).clamp_min(0.0))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _pair_sample(n: int, max_pairs: int, seed: int) -> tuple[Tensor, Tensor]:
    """`max_pairs` pairs i < j drawn uniformly with replacement (seeded)."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (max_pairs,), generator=g)
    j = torch.randint(0, n - 1, (max_pairs,), generator=g)
    j = j + (j >= i).long()                           # uniform over j != i
    return torch.minimum(i, j), torch.maximum(i, j)


def _ratios_sampled(X: Tensor, Y: Tensor, i: Tensor, j: Tensor) -> Tensor:
    out = []
    step = _SAMPLED_PAIRS_PER_STEP
    for s in range(0, len(i), step):
        a, b = i[s:s + step], j[s:s + step]
        dx = (X[a] - X[b]).square().sum(1)
        dy = (Y[a] - Y[b]).square().sum(1)
        keep = dx > 0
        out.append(dy[keep] / dx[keep])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _ratios(X: Tensor, Y: Tensor, chunk: int | None, max_pairs: int | None, seed: int
            ) -> Tensor:
    n = X.shape[0]
    if max_pairs is not None and max_pairs < n * (n - 1) // 2:
        i, j = _pair_sample(n, max_pairs, seed)
        return _ratios_sampled(X, Y, i, j)
    return _ratios_all_pairs(X, Y, chunk)


def pairwise_distortion(X: Points, X_proj: Projected, *, chunk: int | None = None,
                        max_pairs: int | None = None, seed: int = 0
                        ) -> Float[Tensor, " pairs"]:
    """The distortion ratios ||f(x_i) - f(x_j)||² / ||x_i - x_j||² (float64, CPU).

    All pairs i < j in row-major order, computed `chunk` rows at a time (memory ~ chunk × n;
    None: geometry's element budget, about 2²² entries per block), or, with `max_pairs`
    smaller than n(n-1)/2, a seeded uniform sample of that many pairs (with replacement; then
    `chunk` does not apply). The ratios do not depend on `chunk` beyond float rounding.
    Pairs of identical points (ratio 0/0) are skipped. A ratio of 1 is a
    perfectly preserved distance; JL with eps asks for every ratio inside (1 - eps, 1 + eps).
    """
    Xt = _as_float64("X", X)
    Yt = _as_float64("X_proj", X_proj)
    if Yt.shape[0] != Xt.shape[0]:
        raise ValueError(f"X_proj must have one row per row of X ({Xt.shape[0]}), "
                         f"got {Yt.shape[0]} rows")
    if chunk is not None:
        chunk = _check_int("chunk", chunk)
    if max_pairs is not None:
        max_pairs = _check_int("max_pairs", max_pairs)
    return _ratios(Xt, Yt, chunk, max_pairs, seed)


@dataclasses.dataclass(frozen=True)
class DistortionSummary:
    """How far a projection moves the pairwise squared distances."""

    n_pairs: int
    max_abs: float                      # max |ratio - 1|: the worst pair
    quantiles: dict[float, float]       # quantile q of |ratio - 1|
    min_ratio: float
    max_ratio: float
    eps: float | None = None
    fraction_within: float | None = None    # fraction of pairs with |ratio - 1| <= eps


def summarize(ratios: Float[Tensor, " pairs"] | Float[np.ndarray, " pairs"], *,
              eps: float | None = None,
              quantiles: Sequence[float] = (0.5, 0.9, 0.99, 1.0)) -> DistortionSummary:
    """Summarise distortion ratios from `pairwise_distortion` (a NaN/inf ratio is a
    ValueError: quantiles and maxima of them would be NaN)."""
    r = np.asarray(ratios.detach().cpu() if isinstance(ratios, Tensor) else ratios,
                   dtype=np.float64).ravel()
    validate.check_finite("jl.summarize", "ratios", r,
                          fix="a summary of them would be NaN. Drop or fix those pairs first "
                              "(pairwise_distortion leaves out identical points)")
    if r.size == 0:
        raise ValueError("ratios is empty (were all points identical?)")
    if eps is not None:
        eps = _check_eps(eps)
    for q in quantiles:
        if not 0 <= q <= 1:
            raise ValueError(f"quantiles must be in [0, 1], got {q!r}")
    dev = np.abs(r - 1)
    qs = np.quantile(dev, list(quantiles)) if len(quantiles) else []
    return DistortionSummary(
        n_pairs=int(r.size), max_abs=float(dev.max()),
        quantiles={float(q): float(v) for q, v in zip(quantiles, qs)},
        min_ratio=float(r.min()), max_ratio=float(r.max()), eps=eps,
        fraction_within=None if eps is None else float((dev <= eps).mean()))


def distortion(X: Points, k: int, *, kind: Kind = "gaussian", seed: int = 0,
               eps: float | None = None, chunk: int | None = None,
               max_pairs: int | None = None) -> DistortionSummary:
    """Project X to k dimensions and summarise how every pair's squared distance moved: the
    one-call form of `project` + `pairwise_distortion` + `summarize`.

    >>> import numpy as np
    >>> s = distortion(np.random.default_rng(0).normal(size=(50, 200)), 2000, eps=0.2)
    >>> s.n_pairs, s.fraction_within
    (1225, 1.0)
    """
    X_proj, _ = project(X, k, kind=kind, seed=seed)
    return summarize(pairwise_distortion(X, X_proj, chunk=chunk, max_pairs=max_pairs,
                                         seed=seed), eps=eps)


# ----------------------------------------------------------------------------- sweeps over k

def _equivalent_points(X: Tensor, R: np.ndarray) -> Tensor:
    """Points with the Gram matrix of X Rᵀ in min(k, d) dimensions: for k > d,
    X (RᵀR)^{1/2} (d columns) has the same pairwise distances as X Rᵀ (k columns)."""
    k, d = R.shape
    Rt = torch.from_numpy(R)
    if k <= d:
        return X @ Rt.T
    evals, evecs = torch.linalg.eigh(Rt.T @ Rt)
    return X @ (evecs * evals.clamp_min(0).sqrt())


def default_ks(n: int | None = None, d: int | None = None, *args: float | int,
               eps: float = 0.1, count: int = 24, n_samples: int | None = None,
               n_features: int | None = None) -> list[int]:
    """A geometric grid of `count` values of k (fewer after rounding merges some) from 1 to
    twice the JL bound for n points, and at least up to the dimension d.

    Deprecated (scikit-learn's names, where `n_features` is the dimension, unlike everywhere
    else in superpose): `n_samples=` (now `n`), `n_features=` (now `d`), and `eps` and the
    grid size positionally (now `eps=`, `count=`). The old keyword `n=` for the grid size is
    now `count=`: `n` is the number of points.
    """
    if n_samples is not None:
        n = deprecation.renamed_argument("default_ks", "n_samples", "n", n_samples, n)
    if n_features is not None:
        d = deprecation.renamed_argument("default_ks", "n_features", "d", n_features, d)
    eps, count = deprecation.positional_options(
        "default_ks", "n, d", args, {"eps": eps, "count": count}, {"eps": 0.1, "count": 24})
    for name, value in (("n", n), ("d", d)):
        if value is None:
            raise TypeError(f"default_ks() missing required argument {name!r}: call "
                            "default_ks(n, d, eps=..., count=...)")
        _check_int(name, value)
    count = _check_int("count", count)
    top = max(2 * int(min_dim(max(n, 2), eps=eps)), d, 2)
    return sorted({int(round(x)) for x in np.geomspace(1, top, count)})


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Distortion vs k for one projection kind: entries [len(ks), trials] hold the quantile q
    of |ratio - 1| over the pairs, for each q in `quantiles` (1.0 = the worst pair)."""

    kind: str
    ks: list[int]
    seeds: list[int]
    n: int                                      # points
    d: int                                      # their dimension
    quantiles: dict[float, np.ndarray]          # q -> [len(ks), trials]

    @property
    def n_samples(self) -> int:
        """Deprecated: `n`."""
        deprecation.warn("Sweep.n_samples is now Sweep.n (the number of points)")
        return self.n

    @property
    def n_features(self) -> int:
        """Deprecated: `d` (it is the points' dimension, not a number of features)."""
        deprecation.warn("Sweep.n_features is now Sweep.d (the points' dimension)")
        return self.d

    @property
    def worst(self) -> np.ndarray:
        return self.quantiles[1.0]

    @property
    def median(self) -> np.ndarray:
        return self.quantiles[0.5]

    def first_k(self, eps: float, quantile: float = 1.0) -> int | None:
        """Smallest k on the grid with the quantile within eps in every trial, or None."""
        ok = np.all(self.quantiles[quantile] <= eps, axis=1)
        return int(self.ks[int(np.argmax(ok))]) if ok.any() else None


def _evaluate(X: Tensor, k: int, kind: str, seeds: Sequence[int], qs: Sequence[float],
              chunk: int | None, max_pairs: int | None) -> np.ndarray:
    """[len(qs), trials]: quantiles of |ratio - 1| for a k-dimensional projection per seed."""
    out = np.empty((len(qs), len(seeds)))
    for t, s in enumerate(seeds):
        Y = _equivalent_points(X, _components(_fit(X, k, kind, s)))
        dev = (_ratios(X, Y, chunk, max_pairs, s) - 1).abs().numpy()
        if dev.size == 0:
            raise ValueError("X has no two distinct points: no distance to distort")
        out[:, t] = np.quantile(dev, qs)
    return out


def _quantile_list(quantile: float) -> list[float]:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) \
            or not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1] (1.0 = every pair, 0.5 = the median "
                         f"pair), got {quantile!r}")
    return sorted({0.5, 1.0, float(quantile)})


def sweep(X: Points, *, kind: Kind = "gaussian", ks: Sequence[int] | None = None,
          trials: int = 3, seed: int = 0, quantiles: Sequence[float] = (0.5, 1.0),
          chunk: int | None = None, max_pairs: int | None = None) -> Sweep:
    """Distortion of every pair (or `max_pairs` sampled pairs) vs k, `trials` projections per
    k (seeds seed, seed+1, ...; the same seeds at every k). `ks` defaults to `default_ks`."""
    _check_kind(kind)
    trials = _check_int("trials", trials)
    T = _as_float64("X", X)
    n, d = T.shape
    if n < 2:
        raise ValueError(f"X must hold at least 2 points to have a pairwise distance, got {n}")
    ks = default_ks(n, d) if ks is None else [_check_int("k", k) for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one k, got an empty list")
    ks = sorted(set(ks))
    qs = sorted({0.5, 1.0, *[float(q) for q in quantiles]})
    for q in qs:
        _quantile_list(q)
    seeds = [seed + t for t in range(trials)]
    if chunk is not None:
        chunk = _check_int("chunk", chunk)
    vals = np.stack([_evaluate(T, k, kind, seeds, qs, chunk, max_pairs)
                     for k in ks])                                 # [ks, qs, trials]
    return Sweep(kind=kind, ks=ks, seeds=seeds, n=n, d=d,
                 quantiles={q: vals[:, i, :] for i, q in enumerate(qs)})


@dataclasses.dataclass(frozen=True)
class SmallestK:
    """The smallest k keeping the `quantile` of pairs within eps, and the curve behind it."""

    k: int | None               # None: no k on the grid was enough (extend `ks`)
    eps: float
    quantile: float
    kind: str
    bound: int                  # min_dim(n, eps=eps)
    sweep: Sweep

    @property
    def ratio_to_bound(self) -> float | None:
        return None if self.k is None else self.k / self.bound


def smallest_k(X: Points, eps: float, *, kind: Kind = "gaussian", quantile: float = 1.0,
               ks: Sequence[int] | None = None, seed: int = 0, trials: int = 3,
               refine: bool = True, chunk: int | None = None,
               max_pairs: int | None = None, precomputed: Sweep | None = None) -> SmallestK:
    """The smallest k at which a `kind` projection keeps the `quantile` of pairs (1.0: every
    pair; 0.5: the median pair) within eps, in every one of `trials` seeded projections.

    Sweeps `ks` (default: a geometric grid up to twice the JL bound), then, with `refine`,
    bisects between the last failing and the first passing grid value (the distortion falls
    with k in expectation, not for every draw, so the answer is as noisy as the projections).
    `precomputed`: a `Sweep` of the same X and kind (and the same seed/trials) to reuse.
    """
    eps = _check_eps(eps)
    _check_kind(kind)
    qs = _quantile_list(quantile)
    T = _as_float64("X", X)
    if precomputed is not None:
        if precomputed.kind != kind or precomputed.n != T.shape[0] \
                or quantile not in precomputed.quantiles:
            raise ValueError(f"precomputed must be a Sweep of this X with kind={kind!r} and "
                             f"quantile {quantile} recorded, got kind={precomputed.kind!r}, "
                             f"n={precomputed.n}, quantiles "
                             f"{sorted(precomputed.quantiles)}")
        sw = precomputed
    else:
        sw = sweep(T, kind=kind, ks=ks, trials=trials, seed=seed, quantiles=qs, chunk=chunk,
                   max_pairs=max_pairs)
    k = sw.first_k(eps, quantile)
    if refine and k is not None:
        i = sw.ks.index(k)
        lo, hi = (sw.ks[i - 1] if i > 0 else 0), k      # lo fails (or is 0), hi passes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            v = _evaluate(T, mid, kind, sw.seeds, [quantile], chunk, max_pairs)
            if np.all(v <= eps):
                hi = mid
            else:
                lo = mid
        k = hi
    return SmallestK(k=k, eps=eps, quantile=float(quantile), kind=kind,
                     bound=int(min_dim(T.shape[0], eps=eps)), sweep=sw)


__all__ = ["KINDS", "DistortionSummary", "SmallestK", "Sweep", "default_ks", "distortion",
           "make_projector",
           "min_dim", "pairwise_distortion", "project", "smallest_k", "summarize", "sweep"]
