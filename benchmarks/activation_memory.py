"""Peak memory of `ActivationStore.from_tensor`'s NaN/inf check: the chunked check
(`activations.first_nonfinite_row`) against the whole-tensor check it replaced
(`~torch.isfinite(acts).flatten(1).all(dim=1)`), as extra peak RSS over the tensor itself.

Each measurement is a fresh child process (peak RSS is per process): it allocates the tensor,
notes its RSS, runs one check, and reports the growth of the peak. The two contenders alternate
(A B A B ...) and the script prints paired medians, in units of the tensor's size.

    python benchmarks/activation_memory.py [--mb 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import resource, sys, torch
from superpose.activations import ActivationStore, first_nonfinite_row   # imported before
kind, mb = sys.argv[1], int(sys.argv[2])                                 # measuring
def peak_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
acts = torch.randn(mb * 2**20 // (4 * 1024), 1024)
acts[-1, -1] = 0.0                                  # touch every page
before = peak_kb()
if kind == "whole":
    bad = ~torch.isfinite(acts).flatten(1).all(dim=1)
    assert not bool(bad.any())
elif kind == "chunked":
    assert first_nonfinite_row(acts) is None
else:
    ActivationStore.from_tensor(acts, batch_size=1024, device="cpu")
print((peak_kb() - before) * 1024 / acts.nbytes)
"""


def measure(kind: str, mb: int) -> float:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(mb)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=512, help="tensor size in MiB")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    kinds = ("whole", "chunked", "from_tensor")
    got: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:                                # alternate: A B C A B C ...
            got[k].append(measure(k, args.mb))
    print(f"extra peak memory over a {args.mb} MiB tensor (x its size), median of "
          f"{args.repeats} alternated runs:")
    for k in kinds:
        print(f"  {k:12s} {statistics.median(got[k]):.3f}   (runs: "
              f"{', '.join(f'{x:.3f}' for x in got[k])})")
    w, c = statistics.median(got["whole"]), statistics.median(got["chunked"])
    print(f"peak of the check incl. the tensor: whole {1 + w:.2f}x, chunked {1 + c:.2f}x")


if __name__ == "__main__":
    main()
