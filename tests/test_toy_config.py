import dataclasses
import json

import numpy as np
import pytest
import torch

from superpose import toy
from superpose._validate import config_from_dict


def test_importance_float_is_geometric_decay():
    cfg = toy.ToyConfig(n_features=4, n_instances=2, importance=0.9)
    imp = cfg.importance_tensor()
    assert imp.shape == (2, 4)
    torch.testing.assert_close(imp[1], torch.tensor([1, 0.9, 0.81, 0.729]))


def test_probability_list_is_per_instance_and_nested_is_full():
    cfg = toy.ToyConfig(n_features=3, n_instances=2, feature_probability=[1.0, 0.1])
    torch.testing.assert_close(cfg.probability_tensor(), torch.tensor([[1.0] * 3, [0.1] * 3]))
    cfg = toy.ToyConfig(n_features=2, n_instances=2, feature_probability=[[1, 0.5], [0.2, 0.1]])
    assert cfg.probability_tensor()[1].tolist() == pytest.approx([0.2, 0.1])


def test_config_is_frozen_and_hashable_after_lists():
    cfg = toy.ToyConfig(n_instances=2, feature_probability=[0.5, 0.1])
    assert isinstance(cfg.feature_probability, tuple)
    hash(cfg)
    with pytest.raises(AttributeError):
        cfg.n_features = 3  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_features=0), "n_features must be a positive integer, got 0"),
    (dict(n_hidden=-2), "n_hidden must be a positive integer, got -2"),
    (dict(n_instances=1.5), "n_instances must be a positive integer, got 1.5"),
    (dict(feature_probability=0.0),
     "feature_probability must be a finite number in (0, 1], or a list or nested list of them, "
     "got 0.0"),
    (dict(feature_probability=1.5), "feature_probability must be a finite number in (0, 1]"),
    (dict(feature_probability=float("nan")), "feature_probability must be a finite number"),
    (dict(n_instances=2, feature_probability=[0.5, 0.0]),
     "feature_probability must be a finite number in (0, 1], or a list or nested list of them, "
     "got [0.5, 0.0]"),
    (dict(n_instances=2, n_features=2, feature_probability=[[1, 0.5], [0.2]]),
     "feature_probability given as a nested list must have shape [n_instances=2][n_features=2], "
     "got 2 rows of lengths [1, 2]"),
    (dict(n_instances=2, feature_probability=[1, [0.5]]), "or a list or nested list of them"),
    (dict(n_instances=3, feature_probability=[0.5, 0.1]),
     "feature_probability given as a flat list must have n_instances=3 entries, got 2"),
    (dict(n_features=5, importance=[1, 1]),
     "importance given as a flat list must have n_features=5 entries, got 2"),
    (dict(importance=-1.0),
     "importance must be a non-negative finite number, or a list or nested list of them, "
     "got -1.0"),
    (dict(importance=float("inf")), "importance must be a non-negative finite number"),
    (dict(importance="0.9"), "importance must be a non-negative finite number"),
    (dict(importance=2.0, n_features=200),
     "importance must stay finite in float32 over 200 features, got 2.0"),
    (dict(init="uniform"), "init must be one of ['xavier_normal', 'normal'], got 'uniform'"),
    (dict(seed=-1), "seed must be a non-negative integer, got -1"),
    (dict(seed=1.0), "seed must be a non-negative integer, got 1.0"),
    (dict(set_size=True), "set_size must be a positive integer, got True"),
    (dict(correlation="correlated", set_size=1), "set_size must be >= 2 for correlated features"),
    (dict(variant="relu"), "variant must be one of ['relu_out', 'linear', 'relu_hidden', 'abs'], "
                           "got 'relu'"),
    (dict(correlation="correlated", n_features=5, set_size=2),
     "n_features (5) must be a multiple of set_size (2)"),
    (dict(correlation="anticorrelated", n_features=4, feature_probability=0.8),
     "anticorrelated sets need feature_probability * set_size <= 1"),
])
def test_impossible_configs_name_field_value_and_rule(kwargs, message):
    with pytest.raises(ValueError) as e:
        toy.ToyConfig(**kwargs)
    assert message in str(e.value)


def test_config_is_keyword_only_and_its_table_covers_every_field():
    with pytest.raises(TypeError):
        toy.ToyConfig(5, 2)                         # type: ignore[misc]
    assert list(toy.ToyConfig._constraints) == [f.name for f in
                                                 dataclasses.fields(toy.ToyConfig)]


def test_arrays_and_numbers_are_stored_as_floats_and_json_round_trips():
    cfg = toy.ToyConfig(n_features=3, n_instances=2, importance=np.array([1, 0.5, 0.25]),
                        feature_probability=torch.tensor([1.0, 0.5]))
    assert cfg.importance == (1.0, 0.5, 0.25) and cfg.feature_probability == (1.0, 0.5)
    assert toy.ToyConfig(feature_probability=1).feature_probability == 1.0
    nested = toy.ToyConfig(n_features=2, n_instances=2, importance=[[1, 0.5], [1, 0.9]],
                           feature_probability=[[1, 0.5], [0.2, 0.1]])
    for c in (cfg, nested):
        data = json.loads(json.dumps(dataclasses.asdict(c)))
        assert config_from_dict(toy.ToyConfig, data) == c


def test_unknown_variant_suggests_close_match():
    with pytest.raises(ValueError, match="did you mean 'linear'"):
        toy.ToyConfig(variant="liner")


def test_train_config_validation_and_unknown_override():
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        toy.TrainConfig(steps=0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        toy.TrainConfig(schedule="linaer")
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['step'\].*did you "
                                         r"mean 'steps'"):
        toy.train(toy.ToyModel(toy.ToyConfig(), device="cpu"), step=10)


def test_lr_schedules():
    cfg = toy.TrainConfig(steps=100, lr=1.0, schedule="cosine", warmup_steps=10)
    lrs = [toy.lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    warm = toy.TrainConfig(steps=100, lr=1.0, schedule="constant", warmup_steps=4)
    assert [toy.lr_at(s, warm) for s in (0, 3, 50)] == pytest.approx([0.25, 1.0, 1.0])
