"""Synthetic feature data for toy models: sparse, correlated and anticorrelated features.

Every generator takes a `torch.Generator` (or a seed), so a batch is a pure function of it.
Present features take values uniform in [0, 1] (the paper's choice); for the "abs" variant,
uniform in [-1, 1].
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from superpose import _validate as v
from superpose.toy.config import ToyConfig


def make_generator(seed: int | torch.Generator | None,
                   device: torch.device | str | None = None) -> torch.Generator:
    """A `torch.Generator` seeded with `seed` on `device` (None: CUDA when available, else
    CPU); `seed=None` seeds it from the OS. A generator passes through unchanged; one that
    lives on another device than an explicit `device` is an error, not a silent move (a
    generator draws on its own device only)."""
    if isinstance(seed, torch.Generator):
        if device is not None and not same_device(seed.device, v.resolve_device(device)):
            raise ValueError(
                f"generator lives on {seed.device} but device={str(device)!r} was asked for; "
                f"pass a generator made on that device (torch.Generator(device=...)), an int "
                f"seed, or device={str(seed.device)!r}")
        return seed
    g = torch.Generator(device=v.resolve_device(device))
    if seed is None:
        g.seed()
    else:
        v.non_negative_int("seed", seed)
        g.manual_seed(seed)
    return g


def same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:0` name the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    here = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else here) == (b.index if b.index is not None
                                                           else here)


def sparse_uniform(probability: Float[Tensor, "inst n_features"], batch_size: int, *,
                   generator: torch.Generator) -> Float[Tensor, "batch inst n_features"]:
    """Independent features: each is on with its probability p, then uniform in (0, 1).

    One uniform draw u per entry does both jobs: the feature is on when u > 1 - p, and then
    (u - (1 - p)) / p is again uniform on (0, 1). So x = ReLU((u - 1 + p) / p), two cheap ops
    and half the random numbers of drawing a mask and a value separately.
    """
    p = probability
    u = torch.rand((batch_size, *p.shape), generator=generator, device=p.device)
    return u.mul_(1 / p).add_(1 - 1 / p).relu_()


def correlated_uniform(probability: Float[Tensor, "inst n_features"], batch_size: int,
                       set_size: int, *, generator: torch.Generator
                       ) -> Float[Tensor, "batch inst n_features"]:
    """Features in consecutive sets of `set_size` switch on and off together."""
    n_inst, n_feat = probability.shape
    p_set = probability.view(n_inst, -1, set_size)[..., 0]                # [inst, sets]
    dev = probability.device
    on = torch.rand((batch_size, n_inst, n_feat // set_size), generator=generator, device=dev)
    on = (on < p_set).repeat_interleave(set_size, dim=-1)
    values = torch.rand((batch_size, n_inst, n_feat), generator=generator, device=dev)
    return values * on


def anticorrelated_uniform(probability: Float[Tensor, "inst n_features"], batch_size: int,
                           set_size: int, *, generator: torch.Generator
                           ) -> Float[Tensor, "batch inst n_features"]:
    """At most one feature of each set is on: the set fires with probability p * set_size and
    then picks one member uniformly, so each feature keeps its marginal probability p."""
    n_inst, n_feat = probability.shape
    n_sets = n_feat // set_size
    p = probability.view(n_inst, n_sets, set_size)[..., 0]                 # [inst, sets]
    dev = probability.device
    r = torch.rand((batch_size, n_inst, n_sets), generator=generator, device=dev)
    # r < p*k fires the set; r / p is then uniform on [0, k) and its floor picks the member.
    which = torch.where(r < p * set_size, (r / p).long().clamp_max(set_size - 1), set_size)
    onehot = torch.nn.functional.one_hot(which, set_size + 1)[..., :set_size]
    values = torch.rand((batch_size, n_inst, n_feat), generator=generator, device=dev)
    return values * onehot.reshape(batch_size, n_inst, n_feat)


def generate_batch(cfg: ToyConfig, batch_size: int, *,
                   generator: torch.Generator | int | None = None,
                   device: torch.device | str | None = None,
                   probability: Tensor | None = None,
                   ) -> Float[Tensor, "batch inst n_features"]:
    """A batch of feature vectors drawn from the distribution `cfg` describes, on `device`
    (None: the generator's device when a generator is given, else CUDA when available, else
    CPU). An int `generator` seeds a generator on that device.

    `probability` (an [n_instances, n_features] tensor already on the device) skips rebuilding
    it from the config, which the training loop uses to stay fast.
    """
    v.positive_int("batch_size", batch_size)
    if probability is not None:
        dev = probability.device
    elif device is None and isinstance(generator, torch.Generator):
        dev = generator.device                       # the caller's stream says where
    else:
        dev = v.resolve_device(device)
    gen = make_generator(generator, dev)
    p = cfg.probability_tensor().to(dev) if probability is None else probability
    if cfg.correlation == "correlated":
        x = correlated_uniform(p, batch_size, cfg.set_size, generator=gen)
    elif cfg.correlation == "anticorrelated":
        x = anticorrelated_uniform(p, batch_size, cfg.set_size, generator=gen)
    else:
        x = sparse_uniform(p, batch_size, generator=gen)
    if cfg.variant == "abs":
        # Values uniform in [-1, 1]: stretch the (0, 1) values of present features.
        x = torch.where(x > 0, 2 * x - 1, x)
    return x
