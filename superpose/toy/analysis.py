"""Naming what a 2-D toy model found: "2 orthogonal", "antipodal pair", "pentagon", ...

Elhage et al. (2022) describe the solutions of the 5-features-in-2-dimensions model by their
shape: dense data gives the two most important features orthogonal dimensions; as features
get sparser, antipodal pairs, then a square of two pairs, then a pentagon appear. `classify_2d`
turns one instance's feature directions into such a label by sorting the angles of the
represented features around the circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _validate as v
from superpose import geometry


@dataclass(frozen=True)
class Shape2D:
    """The geometry of one instance's represented features in a 2-D hidden space."""

    label: str                       # "pentagon", "2 orthogonal", "antipodal pair", ...
    n_represented: int               # features with norm above the threshold
    represented: list[int]           # their indices, in angular order
    gaps_deg: list[float] = field(default_factory=list)   # angles between neighbours (sum 360)
    antipodal_pairs: int = 0         # pairs of represented features with cos < -cos_tol

    def to_dict(self) -> dict:
        return {"shape": self.label, "n_represented": self.n_represented,
                "represented": self.represented,
                "gaps_deg": [round(g, 1) for g in self.gaps_deg],
                "antipodal_pairs": self.antipodal_pairs}


def classify_2d(vectors: Float[Tensor, "n_features 2"], *, threshold: float = 0.5,
                tol_deg: float = 12.0) -> Shape2D:
    """Name the arrangement of the features with norm > `threshold` in a 2-D hidden space.

    Labels: "none", "1 feature", "2 orthogonal", "antipodal pair", "2 at <a>°",
    "triangle", "antipodal pair + 1", "square", "2 antipodal pairs", "pentagon",
    "regular <k>-gon", or "<k> irregular (<p> antipodal pairs)". Angles match when within
    `tol_deg` of the ideal (90° for orthogonal, 180° for antipodal, 360/k for a regular polygon).
    """
    if not isinstance(vectors, Tensor) or vectors.ndim != 2 or vectors.shape[-1] != 2:
        shape = list(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise ValueError(f"vectors must have shape [n_features, 2], got {shape}")
    if not 0 < tol_deg < 90:
        raise ValueError(f"tol_deg must lie in (0, 90), got {tol_deg}")
    v.non_negative_float("threshold", threshold)
    v.check_finite("toy.analysis.classify_2d", "vectors", vectors,
                   fix="norms and angles of them are undefined. Drop or fix those features "
                       "first")
    V = vectors.detach().double().cpu()
    norm = geometry.norms(V)
    idx = [int(i) for i in torch.nonzero(norm > threshold).flatten()]
    k = len(idx)
    if k == 0:
        return Shape2D("none", 0, [])
    ang = torch.rad2deg(torch.atan2(V[idx, 1], V[idx, 0])) % 360
    order = torch.argsort(ang)
    ang = ang[order]
    idx = [idx[int(o)] for o in order]
    if k == 1:
        return Shape2D("1 feature", 1, idx, [360.0])
    gaps = [float(g) for g in torch.diff(torch.cat([ang, ang[:1] + 360]))]
    cos = geometry.cosine_matrix(V[idx])
    pairs = _antipodal_pairs(cos, math.cos(math.radians(180 - tol_deg)))
    regular = all(abs(g - 360 / k) <= tol_deg for g in gaps)

    def near(a: float, b: float | int) -> bool:
        return abs(a - b) <= tol_deg

    if k == 2:
        between = min(gaps)
        if near(between, 90):
            label = "2 orthogonal"
        elif near(between, 180):
            label = "antipodal pair"
        else:
            label = f"2 at {between:.0f}°"
    elif k == 3:
        label = "triangle" if regular else ("antipodal pair + 1" if pairs else "3 irregular")
    elif k == 4 and regular:
        label = "square"
    elif k == 4 and pairs == 2:
        label = "2 antipodal pairs"
    elif k == 5 and regular:
        label = "pentagon"
    elif regular:
        label = f"regular {k}-gon"
    else:
        label = f"{k} irregular ({pairs} antipodal pairs)"
    return Shape2D(label, k, idx, gaps, pairs)


def _antipodal_pairs(cos: Tensor, limit: float) -> int:
    """Greedy count of disjoint pairs with cosine below `limit` (most antipodal first)."""
    k = cos.shape[0]
    cands = sorted((float(cos[i, j]), i, j) for i in range(k) for j in range(i + 1, k)
                   if cos[i, j] < limit)
    used: set[int] = set()
    n = 0
    for _, i, j in cands:
        if i not in used and j not in used:
            used |= {i, j}
            n += 1
    return n


def classify_instances(directions: Float[Tensor, "inst n_features 2"], *,
                       threshold: float = 0.5, tol_deg: float = 12.0) -> list[Shape2D]:
    """`classify_2d` for every instance (e.g. of `ToyModel.feature_directions()`)."""
    if not isinstance(directions, Tensor) or directions.ndim != 3:
        shape = (list(directions.shape) if isinstance(directions, Tensor)
                 else type(directions).__name__)
        raise ValueError(f"directions must have shape [inst, n_features, 2], got {shape}")
    v.check_finite("toy.analysis.classify_instances", "directions", directions,
                   fix="norms and angles of them are undefined. Drop or fix those instances "
                       "first")
    return [classify_2d(d, threshold=threshold, tol_deg=tol_deg) for d in directions]
