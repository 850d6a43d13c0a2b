"""Kill a child process at a chosen moment with SIGKILL (no `finally`, no atexit: what a power
cut or the OOM killer does), for kill-and-resume tests.

    proc = killing.start(CODE, out_dir)                  # python -c CODE out_dir, 1 thread
    killed = killing.kill_when(proc, lambda: any(out_dir.glob(".tmp-*")))   # mid-checkpoint
    killing.run(CODE, out_dir, "--resume")               # finish; raises with stderr if it fails

The child runs with one torch thread so that an interrupted-and-resumed run can be compared
bit for bit with an uninterrupted one (sums over another thread count differ in the last bits).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1",
       "OMP_WAIT_POLICY": "PASSIVE"}


def _env() -> dict[str, str]:
    env = {**os.environ, **ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start(code: str, *args: object) -> subprocess.Popen:
    """`python -c code *args` in the background (stdout/stderr captured)."""
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=_env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, condition: Callable[[], bool], *,
              timeout: float = 120.0, poll: float = 0.001) -> bool:
    """SIGKILL `proc` as soon as `condition()` holds. True if it was killed, False if it ended
    on its own first (then its exit status must be 0, else AssertionError with its stderr)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        if time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"child still running after {timeout}s; stderr:\n{err}")
        time.sleep(poll)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"child failed with exit status {proc.returncode}:\n{err}")
    return False


def some_time_after(event: Callable[[], bool], rng: random.Random, max_delay: float
                    ) -> Callable[[], bool]:
    """A condition for `kill_when` that holds a random 0..`max_delay` s (drawn from `rng`)
    after `event()` first holds: "at a random moment after the first checkpoint"."""
    at: list[float] = []

    def condition() -> bool:
        if not at and event():
            at.append(time.monotonic() + rng.uniform(0.0, max_delay))
        return bool(at) and time.monotonic() >= at[0]
    return condition


def kill_at_checkpoint_moments(code: str, out: Path, *args: object, rng: random.Random,
                               max_delay: float) -> list[str]:
    """Start the checkpointing child `code` (run with `out, *args`) three times and SIGKILL it:
    while it writes a checkpoint (a `.tmp-*` in `out`), at a random moment 0..`max_delay` s
    after its first `checkpoint-*`, and while it writes one again. Returns the names of the
    moments a kill landed on (a child that ended first is not one); every start resumes from
    what the previous kill left."""
    moments = [
        ("writing a checkpoint", lambda: any(out.glob(".tmp-*"))),
        ("at a random moment",
         some_time_after(lambda: any(out.glob("checkpoint-*")), rng, max_delay)),
        ("writing a checkpoint again", lambda: any(out.glob(".tmp-*"))),
    ]
    return [what for what, condition in moments
            if kill_when(start(code, out, *args), condition)]


def kill_after(proc: subprocess.Popen, seconds: float, *, timeout: float = 120.0) -> bool:
    """SIGKILL `proc` `seconds` after now (unless it ends first); see `kill_when`."""
    at = time.monotonic() + seconds
    return kill_when(proc, lambda: time.monotonic() >= at, timeout=timeout)


def run(code: str, *args: object, timeout: float = 120.0) -> str:
    """`python -c code *args` to the end; its stdout, or AssertionError with its stderr."""
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"child failed with exit status {done.returncode}:\n{done.stderr}")
    return done.stdout
