"""Time per frame of the curve linker on a crowded frame, against trackpy in the same run.

A pile-up of 15 parallel 120 px lines glides 0.5 px per frame; each linker links
``--frames`` frames after a 5-frame warm-up. Printed: milliseconds per frame of each
linker and the ratio curve / trackpy (the baseline, run side by side in this process,
so the ratio does not depend on how fast the machine is). The curve linker used to be
held to < 20 ms per frame by a unit test (about 1-2 ms on one core); the ratio is what
to watch for regressions.

    python benchmarks/bench_linker_frame.py [--frames 40] [--lines 15] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from temtrack.tracker import make_linker


def vertical(x: float, y0: float = 20.0, length: float = 120.0, n: int = 40) -> np.ndarray:
    """A vertical line at column x from row y0, (n, 2) px."""
    return np.column_stack([np.full(n, float(x)), np.linspace(y0, y0 + length, n)])


def seconds_per_frame(method: str, frames: int, lines: int) -> float:
    xs = 20.0 + 7.0 * np.arange(lines)
    linker = make_linker(method)
    for f in range(5):
        linker.step(f, [vertical(x + 0.5 * f) for x in xs])
    curves = [[vertical(x + 0.5 * f) for x in xs] for f in range(5, 5 + frames)]
    start = time.perf_counter()
    for f, frame in enumerate(curves, start=5):
        linker.step(f, frame)
    return (time.perf_counter() - start) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames timed per run (default: 40)")
    parser.add_argument("--lines", type=int, default=15, help="curves per frame (default: 15)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per linker; the fastest counts (default: 5)")
    args = parser.parse_args()
    times = {}
    for method in ("trackpy", "curve"):  # trackpy is the baseline
        times[method] = min(seconds_per_frame(method, args.frames, args.lines) for _ in range(args.repeats))
    print(f"{args.lines} curves per frame, {args.frames} frames, best of {args.repeats}")
    for method, seconds in times.items():
        print(f"  {method:8s} {1000 * seconds:7.2f} ms/frame  ({seconds / times['trackpy']:.2f} x trackpy)")


if __name__ == "__main__":
    main()
