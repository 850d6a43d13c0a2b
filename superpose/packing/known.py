"""Packings to check the optimizer against: the best known small cases from the literature, and
the Gold-code lines, a large algebraic packing close to Levenshtein's bound."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _deprecation as deprecation
from superpose import _validate as v


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


def gold_lines(m: int, *args: torch.dtype, dtype: torch.dtype = torch.float32,
               device: str | torch.device | None = None) -> Float[Tensor, "n d"]:
    """4^m unit vectors in R^(2^m − 1) with coherence exactly (1 + 2^((m+1)/2)) / (2^m − 1).

    The ±1 codewords of the Gold code (the dual of the double-error-correcting binary BCH code,
    Gold 1967): an m-sequence s, its decimation t(i) = s(3i), all their cyclic shifts and every
    XOR of a shift of s with a shift of t. Its nonzero weights are 2^(m−1) and
    2^(m−1) ± 2^((m−1)/2), so every pair of the 4^m lines has N·|cos| ∈ {1, 2^((m+1)/2) ± 1}.
    That is a known algebraic packing close to Levenshtein's bound (ratio 1.16 at m = 5,
    1.07 at m = 7, 1.03 at m = 9; m = 3 is small enough for `pack` to beat it), far closer
    than `pack` gets from random starts at the same size: a yardstick for
    what the optimizer leaves on the table, and a structured start (`pack(init=...)` after
    selecting rows or coordinates).

    m: odd, 3 ≤ m ≤ 9 (64 × 7 … 262,144 × 511; m = 9 is 536 MB in float32).
    dtype: float32 or float64. device: where the lines are built and returned (None: CUDA when
    available, else CPU); the construction is exact, so every device gives the same lines.
    Deprecated: `dtype` as the second positional argument (now `dtype=`).
    """
    dtype = deprecation.positional_option("gold_lines", "dtype", args, dtype,
                                          default=torch.float32)
    if isinstance(m, bool) or not isinstance(m, int) or m not in _GOLD_TAPS:
        raise ValueError(f"m must be an odd integer in {sorted(_GOLD_TAPS)} (Gold codes need m "
                         f"odd; 2^m − 1 is the dimension), got {m!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    dev = v.resolve_device(device)
    N = 2**m - 1
    s = _m_sequence(m)
    t = s[(3 * torch.arange(N)) % N]
    idx = (torch.arange(N)[:, None] + torch.arange(N)[None, :]) % N   # row j: shift by j
    zero = torch.zeros(1, N, dtype=torch.uint8)
    S = torch.cat([zero, s[idx]]).to(dev)                             # [N + 1, N]
    T = torch.cat([zero, t[idx]]).to(dev)
    bits = (S[:, None, :] ^ T[None, :, :]).reshape(-1, N)             # [4^m, N]
    return (1.0 - 2.0 * bits.to(dtype)) / math.sqrt(N)

