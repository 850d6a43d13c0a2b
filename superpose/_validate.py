"""Small validators shared by every config: each error names the field, the value, the rule."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def non_negative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def positive_float(name: str, value: Any) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def non_negative_float(name: str, value: Any) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


def choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}{extra}")


def close_matches(word: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """Names in `candidates` that look like `word`, best first (for 'did you mean' messages)."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


def replace_config(cfg: Any, overrides: dict[str, Any]) -> Any:
    """`dataclasses.replace` that rejects unknown keys with the list of valid ones."""
    if not overrides:
        return cfg
    fields = [f.name for f in dataclasses.fields(cfg)]
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        hints = {k: close_matches(k, fields, 1) for k in unknown}
        hint = "; ".join(f"{k!r} -> did you mean {v[0]!r}?" for k, v in hints.items() if v)
        raise ValueError(
            f"unknown {type(cfg).__name__} field(s) {unknown}; valid fields are {fields}"
            + (f" ({hint})" if hint else "")
        )
    return dataclasses.replace(cfg, **overrides)


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from JSON, rejecting unknown keys (a file from another version)."""
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.__name__} is read from a JSON object, got a "
                         f"{type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(
            f"{cls.__name__} does not take key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    required = sorted(f.name for f in dataclasses.fields(cls) if f.init
                      and f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING)
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{cls.__name__} needs key(s) {missing}, which are missing; the file "
                         "is incomplete or was written by something else")
    return cls(**data)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None, got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for CUDA, but torch sees no CUDA device; "
                         "use device='cpu' or device=None")
    return dev


def finite_tensor(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {bad}); "
                         "clean the input before passing it in")


# ---- declared constraints ---------------------------------------------------------------------
# Each config lists the rule of every field once, in a table beside its fields (as
# scikit-learn's `_parameter_constraints` does), and `check_fields` enforces the table in
# `__post_init__`. Rules that tie two fields together stay in `__post_init__`, after the table.

class Rule:
    """One field's constraint: `ok(value)` decides, `text` completes "<field> must be ...",
    `convert` normalises an accepted value (int to float, list to tuple)."""

    text: str = ""

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        return value

    def __or__(self, other: Rule) -> Rule:
        return AnyOf(self, other)

    def described(self, text: str) -> Rule:
        """The same rule, explained in the field's own words in its error message."""
        self.text = text
        return self


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _bounds(lo: float | int | None, hi: float | int | None, lo_open: bool,
            hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


class Int(Rule):
    """An int (not a bool) in [lo, hi]."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        if lo == 1 and hi is None:
            self.text = "a positive integer"
        elif lo == 0 and hi is None:
            self.text = "a non-negative integer"
        else:
            self.text = f"an integer {_bounds(lo, hi, False, False)}".rstrip()

    def ok(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and (self.lo is None or value >= self.lo)
                and (self.hi is None or value <= self.hi))


class Float(Rule):
    """A finite real number (ints accepted, stored as float) within the given bounds:
    `gt`/`ge` below, `lt`/`le` above. Infinity and NaN never pass."""

    def __init__(self, *, gt: float | int | None = None, ge: float | int | None = None,
                 lt: float | int | None = None, le: float | int | None = None) -> None:
        self.lo, self.lo_open = (gt, True) if gt is not None else (ge, False)
        self.hi, self.hi_open = (lt, True) if lt is not None else (le, False)
        if gt == 0 and self.hi is None:
            self.text = "a positive finite number"
        elif ge == 0 and self.hi is None:
            self.text = "a non-negative finite number"
        else:
            self.text = f"a finite number {_bounds(self.lo, self.hi, self.lo_open, self.hi_open)}"
            self.text = self.text.rstrip()

    def ok(self, value: Any) -> bool:
        if not _is_number(value) or not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None
                    and (value >= self.hi if self.hi_open else value > self.hi))

    def convert(self, value: Any) -> Any:
        return float(value)


class Choice(Rule):
    """One of the given values; a near miss gets a "did you mean" hint."""

    def __init__(self, *options: Any) -> None:
        self.options = list(options)
        self.text = f"one of {self.options}"

    def ok(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)

    def hint(self, value: Any) -> str:
        close = difflib.get_close_matches(str(value), [str(o) for o in self.options], n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""


class Bool(Rule):
    text = "True or False"

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool)


class Str(Rule):
    text = "a string"

    def ok(self, value: Any) -> bool:
        return isinstance(value, str)


class Const(Rule):
    """Exactly this value (with `|`: `Float(gt=0) | Const(None)`)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.text = repr(value)

    def ok(self, value: Any) -> bool:
        return value is self.value if self.value is None else value == self.value


class Pair(Rule):
    """A tuple or list of exactly `n` values each passing `item`; stored as a tuple."""

    def __init__(self, item: Rule, n: int = 2) -> None:
        self.item, self.n = item, n
        self.text = f"{'two' if n == 2 else n} values, each {item.text}"

    def ok(self, value: Any) -> bool:
        return (isinstance(value, (tuple, list)) and len(value) == self.n
                and all(self.item.ok(x) for x in value))

    def convert(self, value: Any) -> Any:
        return tuple(self.item.convert(x) for x in value)


class AnyOf(Rule):
    """The first rule that accepts the value decides (and converts)."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules
        self.text = " or ".join(r.text for r in rules)

    def ok(self, value: Any) -> bool:
        return any(r.ok(value) for r in self.rules)

    def convert(self, value: Any) -> Any:
        return next(r for r in self.rules if r.ok(value)).convert(value)


class Check(Rule):
    """A rule from a predicate and its description (for what the others cannot say)."""

    def __init__(self, ok: Callable[[Any], bool], text: str) -> None:
        self._ok, self.text = ok, text

    def ok(self, value: Any) -> bool:
        try:
            return bool(self._ok(value))
        except (TypeError, ValueError):
            return False


def check_fields(cfg: Any, constraints: dict[str, Rule]) -> None:
    """Enforce a config's table: every dataclass field must have exactly one rule (a table that
    drifts from the fields is a bug, caught the first time the config is built), every value
    must pass its rule, and accepted values are normalised in place (frozen or not)."""
    names = [f.name for f in dataclasses.fields(cfg)]
    missing = [n for n in names if n not in constraints]
    extra = [n for n in constraints if n not in names]
    if missing or extra:
        raise TypeError(f"{type(cfg).__name__}'s constraint table is out of date: fields "
                        f"without a rule {missing}, rules without a field {extra}")
    for name in names:
        rule, value = constraints[name], getattr(cfg, name)
        if not rule.ok(value):
            hint = rule.hint(value) if isinstance(rule, Choice) else ""
            raise ValueError(f"{name} must be {rule.text}, got {value!r}{hint}")
        new = rule.convert(value)
        if new is not value:
            object.__setattr__(cfg, name, new)


# ---- non-finite, empty and zero-vector data (issue 13) ----------------------------------------
# One wording everywhere: "<where>: <name> holds N NaN/inf value(s) (first at index [i, j]);
# <fix>". `where` is the public function ("plot.loss_curves", "geometry.gram"), `name` its
# argument, so the message says whose data is bad and where in it to look.

NAN_POLICIES = ("raise", "omit")


def find_nonfinite(x: Any, depth: int = 0) -> tuple[int, list] | None:
    """(count, index of the first) of the NaN/inf values in a tensor, a NumPy array, a float
    or a list / tuple / dict / dataclass of them (five levels deep; the index then starts with
    the list position, dict key or field name); None when every number is finite or `x`
    holds no numbers."""
    import numpy as np

    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return None
        bad = ~torch.isfinite(x.detach())
        if not bool(bad.any()):
            return None
        return int(bad.sum()), bad.nonzero()[0].tolist()
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fc" or x.size == 0:
            return None
        bad = ~np.isfinite(x)
        if not bad.any():
            return None
        return int(bad.sum()), [int(i) for i in np.argwhere(bad)[0]]
    if isinstance(x, (float, np.floating)):
        return None if math.isfinite(x) else (1, [])
    if isinstance(x, (list, tuple)) and x and all(type(i) in (float, int) for i in x):
        return find_nonfinite(np.asarray(x, dtype=float))      # a logged series: one pass
    if depth < 5 and dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    if depth < 5 and isinstance(x, (list, tuple, dict)):
        items = list(x.items()) if isinstance(x, dict) else list(enumerate(x))
        count, first = 0, None
        for key, item in items:
            found = find_nonfinite(item, depth + 1)
            if found is not None:
                count += found[0]
                if first is None:
                    first = [key, *found[1]]
        return None if first is None else (count, first)
    return None


def nonfinite_message(where: str, name: str, count: int, index: list, fix: str) -> str:
    at = f" (first at index {index})" if index else ""
    return f"{where}: {name} holds {count} NaN/inf value(s){at}; {fix}"


def check_finite(where: str, name: str, x: Any, *,
                 fix: str = "drop or fix those values first") -> None:
    """One ValueError naming `where`, the argument `name`, how many NaN/inf values `x` holds
    and the index of the first, then `fix`. `x`: anything `find_nonfinite` reads."""
    found = find_nonfinite(x)
    if found is not None:
        raise ValueError(nonfinite_message(where, name, found[0], found[1], fix))


def check_nan_policy(where: str, nan_policy: Any) -> str:
    """`nan_policy` must be "raise" (the default everywhere: non-finite data is an error) or
    "omit" (drop it, and say how much was dropped)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"{where}: nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    return nan_policy


def check_not_empty(where: str, name: str, n: int, *, what: str = "rows", min_n: int = 1
                    ) -> None:
    """`n` (the count of `what` in argument `name`) must be at least `min_n`: a figure or a
    statistic of nothing is blank or undefined, never an answer."""
    if n < min_n:
        need = "at least one" if min_n == 1 else f"at least {min_n}"
        raise ValueError(f"{where}: {name} has {n} {what}; it needs {need}")


def check_nonzero_rows(where: str, name: str, lengths: torch.Tensor, *, eps: float = 1e-12
                       ) -> None:
    """Rows whose length is <= `eps` have no direction: cosines and angles with them are
    undefined (0/0), so name the first instead of returning NaN."""
    zero = lengths <= eps
    if bool(zero.any()):
        idx = zero.nonzero()[0].tolist()
        row = "".join(f"[{i}]" for i in idx)
        raise ValueError(f"{where}: {name}{row} is a zero vector (norm "
                         f"{float(lengths[tuple(idx)]):.3g}); angles and cosines with it are "
                         "undefined: drop it first (e.g. keep norms(V) > 0.5)")
