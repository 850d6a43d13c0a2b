"""Every config of the package declares its validation once, as a table (issue 12): each
dataclass named *Config has a `_constraints` rule for every field, no rule for a field it
lacks, is keyword-only, and refuses inf where a finite number is meant."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import pkgutil

import pytest

import superpose


def _configs() -> list[type]:
    found = {}
    for info in pkgutil.walk_packages(superpose.__path__, "superpose."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and name.endswith("Config") and obj.__module__ == info.name
                    and dataclasses.is_dataclass(obj)):
                found[f"{obj.__module__}.{name}"] = obj
    return [found[k] for k in sorted(found)]


CONFIGS = _configs()


def test_the_configs_are_found():
    names = {c.__name__ for c in CONFIGS}
    assert {"ToyConfig", "TrainConfig", "GPTConfig", "GPTTrainConfig", "SAEConfig",
            "SAETrainConfig"} <= names


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_one_rule_per_field_and_keyword_only(cls):
    table = getattr(cls, "_constraints", None)
    assert isinstance(table, dict), f"{cls.__name__} has no _constraints table"
    fields = [f for f in dataclasses.fields(cls)]
    assert set(table) == {f.name for f in fields}
    assert all(f.kw_only for f in fields), f"{cls.__name__} is not keyword-only"
    assert "check_fields" in inspect.getsource(cls.__post_init__)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_no_float_field_takes_infinity(cls, user_errors):
    """Every field whose rule is a finite number refuses inf with the field's name."""
    required = {"GPTConfig": dict(d_vocab=11), "SAEConfig": dict(d_in=8, d_sae=16),
                "EncoderConfig": dict(d_vocab=11), "Seq2SeqConfig": dict(d_vocab=11),
                "CrosscoderConfig": dict(d_in=8, d_sae=64)}
    base = required.get(cls.__name__, {})
    cls(**base)                                      # the defaults are valid
    for name, rule in cls._constraints.items():
        if name in base or rule.ok(math.inf) or not rule.ok(1.0 if name != "lr" else 1e-3):
            continue
        with pytest.raises(ValueError, match=f"^{name} must be .*got inf"):
            cls(**{**base, name: math.inf})
