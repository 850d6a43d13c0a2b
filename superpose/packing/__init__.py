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

Modules: `bounds` (bounds, capacity, the random baseline), `known` (the literature table, Gold
lines), `optimizer` (`pack`), `adam` (the in-place Adam `pack` steps with; `torch.optim.Adam`
is its reference).
"""

from superpose.packing.bounds import (
    Bounds,
    Capacity,
    bounds,
    capacity,
    random_angle_density,
    random_coherence,
)
from superpose.packing.known import KnownPacking, gold_lines, known_packings
from superpose.packing.optimizer import (
    INITS,
    Init,
    PackResult,
    initial_vectors,
    pack,
)

__all__ = [
    "INITS", "Bounds", "Capacity", "Init", "KnownPacking", "PackResult", "bounds", "capacity",
    "gold_lines", "initial_vectors", "known_packings", "pack", "random_angle_density",
    "random_coherence",
]
