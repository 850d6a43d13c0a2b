"""Configuration of a batch of toy models of superposition (Elhage et al. 2022).

One config describes `n_instances` independent models trained side by side as one tensor
program, and the data each instance sees: which features are active how often
(`feature_probability`), how much each one matters in the loss (`importance`), and whether
features come in correlated or anticorrelated sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

import numpy as np
import torch

from superpose import _validate as v

Variant = Literal["relu_out", "linear", "relu_hidden", "abs"]
VARIANTS: tuple[str, ...] = ("relu_out", "linear", "relu_hidden", "abs")
Correlation = Literal["independent", "correlated", "anticorrelated"]
CORRELATIONS: tuple[str, ...] = ("independent", "correlated", "anticorrelated")

# A float, a per-feature (importance) or per-instance (feature_probability) list, or a full
# [n_instances][n_features] nested list (numpy arrays and tensors of those shapes too).
Spec = Union[float, Sequence[float], Sequence[Sequence[float]], np.ndarray, torch.Tensor]


def _freeze(x: Any) -> Any:
    """Lists become tuples so the config stays hashable and JSON-friendly; tensors and numpy
    arrays become (nested) tuples of floats; ints become floats."""
    if isinstance(x, torch.Tensor) or (hasattr(x, "tolist") and not isinstance(x, (list, tuple))):
        x = x.tolist()                             # tensors, numpy arrays and numpy scalars
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(e) for e in x)
    return float(x) if isinstance(x, int) and not isinstance(x, bool) else x


class _Spec(v.Rule):
    """A number passing `item`, a flat list of them, or a nested list of such lists (rows of
    numbers). Tensors and numpy arrays count as lists; the value is stored as floats in
    (nested) tuples. How many entries each level needs depends on `n_features` and
    `n_instances`, so `__post_init__` checks the shape after the table."""

    def __init__(self, item: v.Rule) -> None:
        self.item = item
        self.text = f"{item.text}, or a list or nested list of them"

    def ok(self, value: Any) -> bool:
        try:
            spec = _freeze(value)
        except (TypeError, ValueError, RuntimeError):
            return False
        if not isinstance(spec, tuple):
            return self.item.ok(spec)
        if all(isinstance(row, tuple) for row in spec) and spec:
            return all(self.item.ok(x) for row in spec for x in row)
        return all(self.item.ok(x) for x in spec)

    def convert(self, value: Any) -> Any:
        return _freeze(value)


@dataclass(frozen=True, kw_only=True)
class ToyConfig:
    """A batch of toy models: x ∈ R^n_features → h ∈ R^n_hidden → x' ∈ R^n_features.
    Every field is keyword-only.

    variant:
      - "relu_out":   h = W x,        x' = ReLU(Wᵀh + b)   (the paper's main model)
      - "linear":     h = W x,        x' = Wᵀh + b         (keeps only the top n_hidden features)
      - "relu_hidden": h = ReLU(W x), x' = ReLU(Wᵀh + b)   (privileged hidden basis)
      - "abs":        h = ReLU(W₁x + b₁), x' = ReLU(W₂h + b₂), target |x| with x ∈ [-1, 1]
                      (computation in superposition; n_hidden is the MLP width)
    importance: a float r means r**i for feature i (the paper's 0.9**i); a list of n_features
      values is the same for every instance; a nested [n_instances][n_features] list sets each.
    feature_probability: probability that a feature is non-zero (1 = dense). A float is shared;
      a list of n_instances values gives one density per instance (a sparsity sweep); a nested
      [n_instances][n_features] list sets each feature of each instance.
    correlation: "correlated" features come in sets of `set_size` that are all on or all off
      together; "anticorrelated" sets have at most one feature on at a time.
    seed: seeds the weights `ToyModel` starts from (as `GPTConfig.seed` and `SAEConfig.seed`
      do), so a saved config says how its model was initialised. What training draws is seeded
      by the training config's own `seed`. A config saved before this field existed loads
      with seed 0, the initialisation `ToyModel` used by default then.
    """

    n_features: int = 5
    n_hidden: int = 2
    n_instances: int = 1
    variant: Variant = "relu_out"
    importance: Spec = 1.0
    feature_probability: Spec = 1.0
    correlation: Correlation = "independent"
    set_size: int = 2
    init: Literal["xavier_normal", "normal"] = "xavier_normal"
    seed: int = 0

    # Every field's rule, once (checked by `_validate.check_fields`, first thing in
    # `__post_init__`); the rules that tie fields together (list lengths against n_features and
    # n_instances, sets against n_features) follow it there.
    _constraints: ClassVar[dict[str, v.Rule]] = {
        "n_features": v.Int(1),
        "n_hidden": v.Int(1),
        "n_instances": v.Int(1),
        "variant": v.Choice(*VARIANTS),
        "importance": _Spec(v.Float(ge=0)),
        "feature_probability": _Spec(v.Float(gt=0, le=1)),
        "correlation": v.Choice(*CORRELATIONS),
        "set_size": v.Int(1),
        "init": v.Choice("xavier_normal", "normal"),
        "seed": v.Int(0),
    }

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        imp = self.importance_tensor()
        if not torch.isfinite(imp).all():           # float32 overflow (r**i with r > 1)
            raise ValueError(f"importance must stay finite in float32 over {self.n_features} "
                             f"features, got {self.importance!r}")
        p = self.probability_tensor()
        if (p <= 0).any():                          # float32 underflow
            raise ValueError(f"feature_probability must stay > 0 in float32, "
                             f"got {self.feature_probability!r}")
        if self.correlation != "independent":
            if self.set_size < 2:
                raise ValueError(f"set_size must be >= 2 for {self.correlation} features, "
                                 f"got {self.set_size}")
            if self.n_features % self.set_size:
                raise ValueError(
                    f"n_features ({self.n_features}) must be a multiple of set_size "
                    f"({self.set_size}) for {self.correlation} features"
                )
            if self.correlation == "anticorrelated" and (p * self.set_size > 1 + 1e-9).any():
                raise ValueError(
                    f"anticorrelated sets need feature_probability * set_size <= 1 (one feature "
                    f"of a set is on with probability p * set_size); got max p = {p.max():.3g} "
                    f"with set_size {self.set_size}"
                )
            ps = p.view(self.n_instances, -1, self.set_size)
            if not torch.allclose(ps, ps[..., :1].expand_as(ps)):
                raise ValueError("features in one correlated/anticorrelated set must share "
                                 "one feature_probability")

    # The tensors below are built on demand from the frozen specs (the config stays plain data).
    def importance_tensor(self) -> torch.Tensor:
        """Importance as a float32 tensor of shape [n_instances, n_features]."""
        return _broadcast("importance", self.importance, self.n_instances, self.n_features,
                          per_feature_1d=True)

    def probability_tensor(self) -> torch.Tensor:
        """Feature probability as a float32 tensor of shape [n_instances, n_features]."""
        return _broadcast("feature_probability", self.feature_probability, self.n_instances,
                          self.n_features, per_feature_1d=False)


def _broadcast(name: str, spec: float | tuple, n_inst: int, n_feat: int, *,
               per_feature_1d: bool) -> torch.Tensor:
    """A spec that passed its `_Spec` rule, as a float32 [n_inst, n_feat] tensor; a list whose
    length does not fit n_instances / n_features is refused here."""
    if isinstance(spec, float):
        if name == "importance":
            row = torch.tensor(spec, dtype=torch.float64) ** torch.arange(n_feat)
            return row.float().expand(n_inst, n_feat).clone()
        return torch.full((n_inst, n_feat), spec)
    if spec and isinstance(spec[0], tuple):
        lengths = sorted({len(row) for row in spec})
        if (len(spec), lengths) != (n_inst, [n_feat]):
            got = (f"[{len(spec)}][{lengths[0]}]" if len(lengths) == 1
                   else f"{len(spec)} rows of lengths {lengths}")
            raise ValueError(f"{name} given as a nested list must have shape "
                             f"[n_instances={n_inst}][n_features={n_feat}], got {got}")
        return torch.tensor(spec, dtype=torch.float32)
    t = torch.tensor(spec, dtype=torch.float32)
    want = n_feat if per_feature_1d else n_inst
    what = "n_features" if per_feature_1d else "n_instances"
    if t.numel() != want:
        raise ValueError(
            f"{name} given as a flat list must have {what}={want} entries, got {t.numel()}; "
            f"pass a float, a list of {want}, or a nested [{n_inst}][{n_feat}] list"
        )
    return (t.expand(n_inst, n_feat) if per_feature_1d else t[:, None].expand(n_inst, n_feat)
            ).clone()
