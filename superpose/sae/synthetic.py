"""Ground-truth activations for SAE tests and benchmarks: sparse features in superposition.

    gt = GroundTruthFeatures(n_features=1024, d=128, p=8 / 1024, noise=0.02, seed=0)
    x = gt.sample(4096)                         # [4096, 128]
    for x in gt.batches(4096, n_batches=1000):  # what `sae.train` takes
        ...
    evaluate(s, gt.batches(4096, 8, seed=1), ground_truth=gt.directions)

Each input is x = Σ_i m_i·f_i·d_i + ε: d_i random unit directions [n_features, d], f_i ~
Bernoulli(p_i), magnitudes m_i ~ U(lo, hi), ε ~ N(0, noise²) per coordinate. `power_law=α`
gives frequencies p_i ∝ (i+1)^-α rescaled to mean p (clipped at 1); `correlated_fraction`
pairs up that fraction of the features (0↔1, 2↔3, ...): the second of a pair fires exactly when
the first does, the hardest case for a dictionary (it may learn the sum).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _deprecation, _memory
from superpose import _validate as v


def direction_seed(seed: int) -> int:
    """The generator seed of the feature directions: a fixed odd multiplier mixes `seed`, so
    it never equals the small seeds that SAE initialisations use."""
    return (seed * 0x9E3779B97F4A7C15 + 0x5EED) % 2**63


class GroundTruthFeatures:
    """A seeded source of sparse superposed activations with known feature `.directions`."""

    def __init__(self, n_features: int, d: int, *args: float, p: float = 0.01,
                 magnitude: tuple[float, float] = (0.5, 1.5), noise: float = 0.0,
                 correlated_fraction: float = 0.0, power_law: float | None = None,
                 seed: int = 0, device: str | torch.device | None = None) -> None:
        p = _deprecation.positional_option("GroundTruthFeatures", "p", args, p, default=0.01)
        v.positive_int("n_features", n_features)
        v.positive_int("d", d)
        v.positive_float("p", p)
        if p > 1:
            raise ValueError(f"p must be a finite number in (0, 1], got {p!r}")
        lo, hi = magnitude
        if not 0 <= lo <= hi:
            raise ValueError(f"magnitude must be (lo, hi) with 0 <= lo <= hi, got {magnitude!r}")
        v.non_negative_float("noise", noise)
        if not 0 <= correlated_fraction <= 1:
            raise ValueError(f"correlated_fraction must be in [0, 1], got {correlated_fraction!r}")
        if power_law is not None:
            v.non_negative_float("power_law", power_law)
        v.non_negative_int("seed", seed)
        self.n_features, self.d, self.magnitude, self.noise = n_features, d, (lo, hi), noise
        self.seed = seed
        self.device = v.resolve_device(device)
        what = f"GroundTruthFeatures(n_features={n_features}, d={d}) (directions [n_features, d])"
        _memory.check_allocation(what, 2 * 4 * n_features * d, "cpu")   # drawn, normalised
        if self.device.type != "cpu":
            _memory.check_allocation(what, 4 * n_features * d, self.device)
        # A seed of its own: with manual_seed(seed), the directions of n_features = d_sae,
        # d = d_in would be exactly the random decoder rows an SAE of the same seed starts
        # from (both are randn(n, d) normalised), and recovery would be "perfect" at step 0.
        gen = torch.Generator().manual_seed(direction_seed(seed))
        dirs = torch.randn(n_features, d, generator=gen)       # drawn on the CPU: one seed, one
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)           # set of directions everywhere
        self.directions: Float[Tensor, "n_features d_in"] = dirs.to(self.device)
        if power_law is None:
            probs = torch.full((n_features,), float(p))
        else:
            probs = (torch.arange(n_features) + 1.0) ** -power_law
            probs = probs / probs.mean() * p
        self.probabilities: Float[Tensor, " n_features"] = probs.clamp(max=1.0).to(self.device)
        self.n_pairs = int(correlated_fraction * n_features) // 2

    def sample(self, batch_size: int, *args: torch.Generator,
               generator: torch.Generator | None = None) -> Float[Tensor, "batch d_in"]:
        """`batch_size` inputs (float32, on the generator's device: `self.device` when
        `generator` is None)."""
        generator = _deprecation.positional_option("GroundTruthFeatures.sample", "generator",
                                                   args, generator)
        v.positive_int("batch_size", batch_size)
        self._check_batch_memory(batch_size)
        return self._sample(batch_size, generator)

    def sample_bytes(self, batch_size: int) -> int:
        """Bytes one `sample(batch_size)` needs at its peak, about: the [batch, n_features]
        firing mask (bool), uniform draws, magnitudes and their product (float32 each), and
        the [batch, d] result (plus its noise)."""
        per_row = self.n_features * (1 + 3 * 4) + self.d * 4 * (3 if self.noise else 1)
        return batch_size * per_row

    def _check_batch_memory(self, batch_size: int) -> None:
        _memory.check_allocation(
            f"GroundTruthFeatures.sample(batch_size={batch_size}) with n_features="
            f"{self.n_features}, d={self.d} ([batch, n_features] mask and magnitudes)",
            self.sample_bytes(batch_size), self.device)

    def _sample(self, batch_size: int, generator: torch.Generator | None) -> Tensor:
        dev = generator.device if generator is not None else self.device
        if dev.type != self.device.type:
            raise ValueError(f"generator is on {dev} but the features are on {self.device}; "
                             "make the generator with torch.Generator(device=gt.device)")
        on = torch.rand(batch_size, self.n_features, generator=generator, device=dev) \
            < self.probabilities
        if self.n_pairs:
            lead = on[:, 0:2 * self.n_pairs:2]
            on[:, 1:2 * self.n_pairs:2] = lead
        lo, hi = self.magnitude
        mags = lo + (hi - lo) * torch.rand(batch_size, self.n_features, generator=generator,
                                           device=dev)
        x = (on * mags) @ self.directions
        if self.noise:
            x = x + self.noise * torch.randn(batch_size, self.d, generator=generator, device=dev)
        return x

    def batches(self, batch_size: int, n_batches: int | None = None, *, seed: int | None = None
                ) -> Iterator[Float[Tensor, "batch d_in"]]:
        """`n_batches` batches (endless when None), seeded by `seed` (default: the data's own
        seed + 1, so the stream differs from the directions' draw)."""
        v.positive_int("batch_size", batch_size)
        self._check_batch_memory(batch_size)
        gen = torch.Generator(device=self.device).manual_seed(
            self.seed + 1 if seed is None else seed)
        i = 0
        while n_batches is None or i < n_batches:
            yield self._sample(batch_size, gen)
            i += 1
