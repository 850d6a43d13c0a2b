"""Progress bars: tqdm, on unless the caller says `progress=False` or the user sets tqdm's own
switch `TQDM_DISABLE=1`. tqdm reads that variable only for arguments the caller leaves out, and
every bar here passes `disable=`, so the switch is read here, once, for all of them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def disabled_by_env() -> bool:
    """True when `TQDM_DISABLE` is set to anything but "", "0" or "false"."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def bar(iterable: Iterable | None = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, silent when `progress` is False or `TQDM_DISABLE` is set."""
    return tqdm(iterable, disable=not progress or disabled_by_env(), **kwargs)
