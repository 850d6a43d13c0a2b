"""Toy models of superposition as one batched TransformerLens `HookedRootModule`.

Every parameter carries a leading instance dimension, so a whole sweep over sparsity or
importance is one tensor program: instance i never sees another instance's weights, data or
loss gradient (tested: joint training equals separate training with the same random numbers).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from superpose import _memory, runs
from superpose import _validate as v
from superpose.hooks import CheckedHookNames
from superpose.toy.config import ToyConfig


class _Unset:
    """Marks an argument the caller left out (None is a value of `seed`)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


class ToyModel(CheckedHookNames, HookedRootModule):
    """`n_instances` toy models; see `ToyConfig` for the variants.

    Hook points (TransformerLens names, usable with `run_with_cache` / `run_with_hooks`):
      hook_hidden: [batch, inst, n_hidden]   the bottleneck h (after the ReLU where there is one)
      hook_out:    [batch, inst, n_features] the reconstruction x'
    """

    def __init__(self, cfg: ToyConfig, *, device: torch.device | str | None = None,
                 seed: int | None | _Unset = _UNSET) -> None:
        """The weights start from `cfg.seed` (drawn on the CPU, then moved to `device`, so one
        seed gives the same model on every device).

        `seed` is deprecated: set `ToyConfig(seed=...)`. Passed, it warns and overrides
        `cfg.seed` (and `self.cfg` records it); `seed=None` draws a fresh random init.
        """
        super().__init__()
        if not isinstance(cfg, ToyConfig):
            raise TypeError(f"ToyModel takes a ToyConfig, got {type(cfg).__name__}")
        if not isinstance(seed, _Unset):
            fix = (f"ToyConfig(..., seed={seed!r}) or dataclasses.replace(cfg, seed={seed!r})"
                   if seed is not None else
                   "for a random init, a random seed: ToyConfig(..., seed=random.randrange(2**32))")
            warnings.warn(
                f"ToyModel(seed={seed!r}) is deprecated and will be removed in the next "
                f"release; set the seed in the config: {fix}",
                DeprecationWarning, stacklevel=2)
            if seed is not None:
                v.non_negative_int("seed", seed)
                cfg = dataclasses.replace(cfg, seed=seed)
        self.cfg = cfg
        dev = v.resolve_device(device)
        gen = torch.Generator(device="cpu")
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(cfg.seed)
        inst, f, h = cfg.n_instances, cfg.n_features, cfg.n_hidden
        n_weights = inst * h * f * (2 if cfg.variant == "abs" else 1) + inst * (f + h)
        what = (f"ToyModel(n_instances={inst}, n_features={f}, n_hidden={h}, "
                f"variant={cfg.variant!r}) ({n_weights:,} weights)")
        _memory.check_allocation(what, 2 * 4 * n_weights, "cpu")    # drawn, then scaled
        if dev.type != "cpu":
            _memory.check_allocation(what, 4 * n_weights, dev)
        # Xavier-normal per instance (fan_in + fan_out = n_hidden + n_features). torch's own
        # xavier on a 3-d tensor would count n_instances into the fan and change the init with
        # the size of the sweep.
        std = math.sqrt(2.0 / (h + f)) if cfg.init == "xavier_normal" else 1.0 / math.sqrt(h)

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter((torch.randn(shape, generator=gen) * std).to(dev))

        if cfg.variant == "abs":
            self.W_in = init(inst, h, f)
            self.b_in = nn.Parameter(torch.zeros(inst, h, device=dev))
            self.W_out = init(inst, f, h)
        else:
            self.W = init(inst, h, f)
        self.b_final = nn.Parameter(torch.zeros(inst, f, device=dev))
        self.hook_hidden = HookPoint()  # [batch, inst, n_hidden]
        self.hook_out = HookPoint()     # [batch, inst, n_features]
        self.setup()

    @property
    def device(self) -> torch.device:
        return self.b_final.device

    def forward(self, x: Float[Tensor, "batch inst n_features"]
                ) -> Float[Tensor, "batch inst n_features"]:
        cfg = self.cfg
        if x.ndim != 3 or x.shape[1:] != (cfg.n_instances, cfg.n_features):
            raise ValueError(
                f"ToyModel expects input of shape [batch, n_instances={cfg.n_instances}, "
                f"n_features={cfg.n_features}], got {list(x.shape)}"
            )
        if x.dtype != self.b_final.dtype:
            raise ValueError(f"ToyModel's input must have the weights' dtype {self.b_final.dtype}"
                             f", got {x.dtype}; convert it with x.to({self.b_final.dtype}) (or "
                             f"the model with model.to(dtype))")
        if cfg.variant == "abs":
            h = torch.relu(torch.einsum("ihf,bif->bih", self.W_in, x) + self.b_in)
            h = self.hook_hidden(h)
            out = torch.relu(torch.einsum("ifh,bih->bif", self.W_out, h) + self.b_final)
            return self.hook_out(out)
        h = torch.einsum("ihf,bif->bih", self.W, x)
        if cfg.variant == "relu_hidden":
            h = torch.relu(h)
        h = self.hook_hidden(h)
        out = torch.einsum("ihf,bih->bif", self.W, h) + self.b_final
        if cfg.variant != "linear":
            out = torch.relu(out)
        return self.hook_out(out)

    def feature_directions(self) -> Float[Tensor, "inst n_features n_hidden"]:
        """Each feature's direction in the hidden space (the columns of W; W_in for "abs"),
        as rows: the vector set that `superpose.geometry` and `superpose.plot` take."""
        W = self.W_in if self.cfg.variant == "abs" else self.W
        return W.detach().transpose(-1, -2)

    def select(self, instances: int | list[int] | slice) -> ToyModel:
        """A new model holding copies of the chosen instances (for analysis or comparison)."""
        idx = torch.arange(self.cfg.n_instances)[instances]
        idx = idx.reshape(-1)
        imp = self.cfg.importance_tensor()[idx].tolist()
        prob = self.cfg.probability_tensor()[idx].tolist()
        sub_cfg = dataclasses.replace(self.cfg, n_instances=len(idx), importance=imp,
                                      feature_probability=prob)
        sub = ToyModel(sub_cfg, device=self.device)
        with torch.no_grad():
            for name, p in self.named_parameters():
                getattr(sub, name).copy_(p[idx.to(p.device)])
        return sub

    def save(self, path: str | Path) -> Path:
        """Write `config.json` + `model.safetensors` into the folder `path` (atomically)."""
        return runs.save_module(path, self, self.cfg)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> ToyModel:
        """Load a model written by `save`; a missing, corrupt or mismatched file fails clearly."""
        return runs.load_module(path, cls, ToyConfig, device=device)
