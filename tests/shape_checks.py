"""The second run-time checker tests/conftest.py installs, for the modules that validate their
own input (configs in `__post_init__`, the constraint tables of `superpose._validate`).

jaxtyping checks a function in two steps: its parameters before the body runs (a generated stub
whose return annotation is `Any`), then parameters and return value together after the body (a
stub with one extra keyword-only parameter, `ret...`, for the value returned). For these modules
only the second runs: a bad value meets the library's own validation first, so a test sees the
ValueError a user gets (naming the field, the value and the rule), and a value the validation
lets through that its annotation forbids still fails the test. An int passes where a float is
annotated (PEP 484's numeric tower), as every validator accepts `lr=1`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from beartype import BeartypeConf, beartype

TOWER = BeartypeConf(is_pep484_tower=True)


def after_the_body(stub: Callable) -> Callable:
    params = list(inspect.signature(stub).parameters.values())
    returns_checked = bool(params) and params[-1].kind is inspect.Parameter.KEYWORD_ONLY \
        and params[-1].name.startswith("ret")
    return beartype(stub, conf=TOWER) if returns_checked else stub
