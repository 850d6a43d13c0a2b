"""Paired burst scheduling, shared by the speed benchmarks.

The machines these run on are shared and their load drifts, so contenders are never timed one
after the other. Each trains its full run exactly once, cut into short bursts that alternate
(A B A B ..., or rotated A B C, B C A, ... so that no one always goes first); only the time
inside a burst counts. Reported are the per-contender medians and the *paired* statistic, the
median over rounds of the per-round ratio: a load change between rounds hits both sides of a
ratio alike and cancels.

Two ways to cut a run into bursts:
- a contender that drives its own loop (`gpt_speed.py`) is called once per burst with the
  number of steps to run (`run_rounds(..., run=...)`);
- a contender whose loop is someone else's (`toy.train`, `sae.train`, SAELens's trainer) runs in
  a `Parked` thread that stops at burst boundaries: the loop calls `tick()` before each step,
  or draws its batches through `wrap(iterator)`, which ticks for it.
"""

from __future__ import annotations

import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def even_bursts(steps: int, rounds: int) -> list[int]:
    """Sizes of `rounds` bursts, as even as integers allow, summing to `steps`."""
    ends = [steps * (r + 1) // rounds for r in range(rounds)]
    return [b - a for a, b in zip([0, *ends[:-1]], ends)]


def fixed_bursts(steps: int, burst: int) -> list[int]:
    """Bursts of `burst` steps (the last one shorter) summing to `steps`."""
    return [min(burst, steps - i) for i in range(0, steps, burst)]


def rotated(items: Sequence[T], r: int) -> list[T]:
    """`items` rotated left by r: round r's order when who goes first rotates."""
    k = r % len(items)
    return list(items[k:]) + list(items[:k])


def paired(num: Sequence[float], den: Sequence[float]) -> tuple[float, float, float]:
    """Median and quartiles over rounds of the per-round ratios num[r] / den[r]."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), q1, q3


def run_rounds(contenders: Sequence[T], rounds: int, *, rotate: bool = True,
               run: Callable[[T, int], None] | None = None,
               after_round: Callable[[int], None] | None = None) -> None:
    """One burst of every contender per round; `run(c, r)` runs c's burst of round r (default:
    `c.run_burst()`, for `Parked` contenders). rotate: who goes first rotates every round."""
    for r in range(rounds):
        for c in rotated(contenders, r) if rotate else contenders:
            if run is None:
                c.run_burst()           # type: ignore[attr-defined]
            else:
                run(c, r)
        if after_round is not None:
            after_round(r)


class _Steps:
    """A run of `steps` steps whose loop calls `tick()` before each one."""

    steps: int

    def tick(self) -> None:
        raise NotImplementedError

    def wrap(self, source: Iterable[T]) -> Iterator[T]:
        """The first `steps` items of `source`, ticking before each."""
        it = iter(source)
        for _ in range(self.steps):
            self.tick()
            yield next(it)


class Parked(_Steps):
    """Runs `body(self)` in its own thread, parked at every burst boundary until the scheduler
    lets the next burst run (`run_burst`); only the time inside bursts is counted.

    The first `tick()` parks before any step (setup before it is not timed). At the end of each
    burst `sync()` runs first (CUDA: wait for the queued kernels), then the burst's time is
    recorded, then `on_boundary(steps_done)`, outside the timing. `threads`: torch intra-op
    threads for this thread (None: leave as is). `warmup()`: untimed, before anything else.
    """

    def __init__(self, name: str, body: Callable[[Parked], Any], sizes: Sequence[int], *,
                 sync: Callable[[], None] = lambda: None,
                 on_boundary: Callable[[int], None] | None = None,
                 warmup: Callable[[], None] | None = None, threads: int | None = None) -> None:
        self.name, self.body, self.sizes = name, body, list(sizes)
        self.steps = sum(self.sizes)
        ends, total = set(), 0
        for s in self.sizes[:-1]:
            total += s
            ends.add(total)
        self._ends = ends                # step counts at which a burst ends (not the last)
        self.sync, self.on_boundary, self.warmup, self.threads = sync, on_boundary, warmup, threads
        self.times: list[float] = []
        self.count = 0
        self.result: Any = None
        self.error: BaseException | None = None
        self._t0 = 0.0
        self._go, self._done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -------------------------------------------------------------- inside the thread
    def _park(self) -> None:
        self._done.set()
        self._go.wait()
        self._go.clear()
        self._t0 = time.perf_counter()

    def _end_burst(self) -> None:
        self.sync()
        self.times.append(time.perf_counter() - self._t0)
        if self.on_boundary is not None:
            self.on_boundary(self.count)

    def tick(self) -> None:
        """Call before every step."""
        if self.count == 0:
            self._park()
        elif self.count in self._ends:
            self._end_burst()
            self._park()
        self.count += 1

    def _run(self) -> None:
        try:
            if self.threads is not None:
                import torch
                torch.set_num_threads(self.threads)
            if self.warmup is not None:
                self.warmup()
            self.result = self.body(self)
            if self.count != self.steps:
                raise RuntimeError(f"{self.name} ran {self.count} steps, expected {self.steps}")
            self._end_burst()
        except BaseException as e:       # reported by the scheduler
            self.error = e
        self._done.set()

    # -------------------------------------------------------------- the scheduler's side
    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed") from self.error

    def start(self) -> None:
        """Start the thread and wait until it is parked before its first step."""
        self.thread.start()
        self._done.wait()
        self._check()

    def run_burst(self) -> None:
        if not self.thread.is_alive():
            self._check()
            raise RuntimeError(f"{self.name} has finished; it has no burst left to run")
        self._done.clear()
        self._go.set()
        self._done.wait()
        self._check()

    def join(self) -> None:
        self.thread.join()
        self._check()

    def rates(self) -> list[float]:
        """Steps per second of each burst."""
        return [n / t for n, t in zip(self.sizes, self.times)]


class Unparked(_Steps):
    """What a body receives in place of a `Parked` when it runs free (an untimed warm-up)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.count = 0

    def tick(self) -> None:
        self.count += 1


class StepContender:
    """A contender whose own loop runs `step(x, y)` over a batch list shared by all contenders:
    `burst(batches, n)` runs its next n batches, timed (CUDA synchronized at both ends), and
    appends ms/step to `ms` and, on CUDA, the peak bytes allocated above the burst's start to
    `peak`. Subclasses set `device` and define `step`."""

    device: Any

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.peak: list[int] = []
        self.count = 0

    def step(self, x: Any, y: Any) -> Any:
        raise NotImplementedError

    def burst(self, batches: Sequence[tuple[Any, Any]], n: int) -> None:
        import torch

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for x, y in batches[self.count:self.count + n]:
            self.step(x, y)
        if cuda:
            torch.cuda.synchronize()
        self.ms.append((time.perf_counter() - t0) * 1e3 / n)
        if cuda:
            self.peak.append(torch.cuda.max_memory_allocated() - base)
        self.count += n


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_rss_growth(run: Callable[[], Any]) -> tuple[int, str]:
    """Bytes the resident set grew by at its peak while `run()` ran, and how it was measured:
    "VmHWM" (Linux: the peak counter is reset just before, so earlier peaks do not count) or
    "ru_maxrss" (elsewhere: the process's lifetime peak, so call it in a fresh process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                           # reset the peak-RSS (VmHWM) counter
        before, peak = _vm("VmRSS"), lambda: _vm("VmHWM")
        method = "VmHWM"
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale  # noqa: E731
        method = "ru_maxrss"
    run()
    return peak() - before, method


def saved_activation_bytes(model: Any, loss: Callable[[], Any]) -> int:
    """Bytes of the tensors autograd saves for backward in one step of `model` (`loss()` runs
    its forward and returns the loss), parameters excluded, counted once per storage: the
    activation memory a training step holds at its peak. Gradients are cleared afterwards."""
    from torch.autograd.graph import saved_tensors_hooks

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = loss()
    out.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())
