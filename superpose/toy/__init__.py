"""Toy models of superposition (Elhage et al. 2022): config, batched model, data, training."""

from superpose.toy.config import ToyConfig
from superpose.toy.data import generate_batch, make_generator
from superpose.toy.model import ToyModel
from superpose.toy.training import (
    TrainConfig,
    TrainResult,
    loss_per_instance,
    lr_at,
    target,
    train,
)

__all__ = [
    "ToyConfig", "ToyModel", "TrainConfig", "TrainResult", "generate_batch", "loss_per_instance",
    "lr_at", "make_generator", "target", "train",
]
