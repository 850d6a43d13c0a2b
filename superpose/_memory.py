"""Memory estimates checked before large allocations.

A config that asks for 400 GB should fail at once with the estimate in the message, not after
the allocator has tried (or, worse, after the machine has started swapping). Every place that
allocates something whose size comes from user input calls `check_allocation(what, n_bytes,
device)` first. The limit is the memory the device has free now; override it with

    with superpose.memory_limit("64GB"):      # or None to turn the check off
        ...

or the environment variable ``SUPERPOSE_MEMORY_LIMIT`` ("64GB", "1.5e11", "off").
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

ENV = "SUPERPOSE_MEMORY_LIMIT"
_OFF = {"off", "none", "unlimited"}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_local = threading.local()
_UNSET = object()


class MemoryEstimateError(ValueError, MemoryError):
    """A requested size would not fit: raised before allocating. Catch it as either
    `ValueError` (bad input) or `MemoryError` (out of memory)."""


def parse_bytes(value: Any, what: str = "memory limit") -> int | None:
    """`value` as a byte count: an int, a float, or a string such as "64GB", "1.5e11",
    "512MiB"; None or "off" means no limit."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text in _OFF:
            return None
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)([kmgt]i?b|b)?", text)
        if not m:
            raise ValueError(f"{what} must be a size such as '64GB', '512MiB' or '1.5e11', or "
                             f"'off', got {value!r}")
        value = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number of bytes, a size string "
                         f"such as '64GB', or None/'off' for no limit, got {value!r}")
    return int(value)


def format_bytes(n: int | float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_bytes(device: Any = None) -> int | None:
    """Memory free now on `device` (CPU: the OS's MemAvailable; CUDA: the driver's free
    count), or None where it cannot be told."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except Exception:                              # noqa: BLE001 - no driver, no answer
            return None
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def current_limit(device: Any = None) -> int | None:
    """The limit `check_allocation` applies: `memory_limit(...)` if one is active, else
    ``$SUPERPOSE_MEMORY_LIMIT``, else the memory free on `device`."""
    override = getattr(_local, "limit", _UNSET)
    if override is not _UNSET:
        return override
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return parse_bytes(env, f"${ENV}")
    return available_bytes(device)


@contextlib.contextmanager
def memory_limit(limit: int | float | str | None) -> Iterator[None]:
    """Within the block, refuse allocations estimated above `limit` bytes ("64GB", 2e10, ...)
    instead of the device's free memory; `None` turns the check off."""
    parsed = parse_bytes(limit)
    old = getattr(_local, "limit", _UNSET)
    _local.limit = parsed
    try:
        yield
    finally:
        if old is _UNSET:
            del _local.limit
        else:
            _local.limit = old


def check_allocation(what: str, n_bytes: int | float, device: Any = None) -> None:
    """Raise `MemoryEstimateError` if `n_bytes` (an estimate of what `what` will allocate on
    `device`) is above the current limit; the message gives the estimate, the limit and the
    two ways to override."""
    limit = current_limit(device)
    if limit is None or n_bytes <= limit:
        return
    where = "free memory" if getattr(_local, "limit", _UNSET) is _UNSET and not os.environ.get(
        ENV) else "the memory limit"
    raise MemoryEstimateError(
        f"{what} needs about {format_bytes(n_bytes)}, more than {where} "
        f"({format_bytes(limit)} on {device or 'cpu'}); make it smaller, or, if the estimate is "
        f"wrong or you want to try anyway, raise the limit with "
        f"`with superpose.memory_limit('{format_bytes(n_bytes * 1.5).replace(' ', '')}'):` "
        f"(None for no check) or ${ENV}=off")
