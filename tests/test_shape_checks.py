"""The run-time checks tests/conftest.py installs reach every module of the package: a module
added later is found on disk, and one imported before the import hooks (so left unchecked) is
caught here."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import conftest
import jaxtyping
import pytest
from shape_checks import after_the_body

PACKAGE = Path(__file__).resolve().parents[1] / "superpose"


def _functions(module) -> list:
    out = []
    for obj in vars(module).values():
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            out.append(obj)
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            out += [f for f in vars(obj).values() if inspect.isfunction(f)]
    return out


def test_every_module_file_is_checked():
    on_disk = {".".join(("superpose", *p.relative_to(PACKAGE).with_suffix("").parts))
               for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    checked = set(conftest.TYPECHECKED) | set(conftest.CHECKED_AFTER_THE_BODY)
    assert on_disk == checked
    assert not set(conftest.TYPECHECKED) & set(conftest.CHECKED_AFTER_THE_BODY)
    for name in ("superpose._progress", "superpose.hooks", "superpose.gpt.heads",
                 "superpose.toy.analysis"):
        assert name in conftest.TYPECHECKED
    for name in ("superpose._validate", "superpose.toy.config", "superpose.gpt.config"):
        assert name in conftest.CHECKED_AFTER_THE_BODY


@pytest.mark.parametrize("name", sorted(conftest.TYPECHECKED + conftest.CHECKED_AFTER_THE_BODY))
def test_the_import_hook_wrapped_the_module(name):
    # A module imported before the hooks were installed keeps its bare functions.
    module = importlib.import_module(name)
    functions = _functions(module)
    if not functions:
        pytest.skip(f"{name} defines no functions")
    bare = [f.__qualname__ for f in functions if not hasattr(f, "__wrapped__")]
    assert len(bare) < len(functions), f"{name}: nothing wrapped by jaxtyping ({bare[:5]})"


def test_after_the_body_lets_the_library_speak_first():
    @jaxtyping.jaxtyped(typechecker=after_the_body)
    def validated(x: int) -> int:
        if not isinstance(x, int):
            raise ValueError(f"x must be an int, got {x!r}")
        return x

    @jaxtyping.jaxtyped(typechecker=after_the_body)
    def lenient(x: int) -> int:
        return 0

    assert validated(3) == 3
    with pytest.raises(ValueError, match="x must be an int, got 1.5"):
        validated(1.5)
    with pytest.raises(jaxtyping.TypeCheckError):    # let through, still caught afterwards
        lenient(1.5)
