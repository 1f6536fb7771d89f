"""Time per frame of the curve linker on a crowded frame, against trackpy in the same run.

A pile-up of 15 parallel 120 px lines glides 0.5 px per frame; each linker links
``--frames`` frames after a 5-frame warm-up. Printed: milliseconds per frame of each
linker and the ratio curve / trackpy (the baseline, run side by side in this process,
so the ratio does not depend on how fast the machine is). The curve linker used to be
held to < 20 ms per frame by a unit test (about 1-2 ms on one core); the ratio is what
to watch for regressions.

With ``--splines`` the frames are a real run's instead: the splines Parquet file the main
job wrote (e.g. ``tem-track ../shared/data/real/twip-8.4um/video.mp4 --out twip.parquet
--end 40``: about 200 curves per frame), linked from its first frame, both linkers timed
over every frame after the warm-up.

    python benchmarks/bench_linker_frame.py [--frames 40] [--lines 15] [--repeats 5]
    python benchmarks/bench_linker_frame.py --splines twip.parquet [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from temtrack.tracker import make_linker


def vertical(x: float, y0: float = 20.0, length: float = 120.0, n: int = 40) -> np.ndarray:
    """A vertical line at column x from row y0, (n, 2) px."""
    return np.column_stack([np.full(n, float(x)), np.linspace(y0, y0 + length, n)])


#: Frames each linker links before the clock starts.
WARM_UP = 5


def pileup_frames(frames: int, lines: int) -> list[list[np.ndarray]]:
    """``WARM_UP + frames`` frames of ``lines`` parallel lines 7 px apart gliding 0.5 px per frame."""
    xs = 20.0 + 7.0 * np.arange(lines)
    return [[vertical(x + 0.5 * f) for x in xs] for f in range(WARM_UP + frames)]


def real_frames(path) -> list[list[np.ndarray]]:
    """The curves of each frame of a splines Parquet file, frame by frame."""
    import pandas as pd

    table = pd.read_parquet(path, columns=["frame", "x", "y"])
    return [
        [np.column_stack([x, y]) for x, y in zip(group["x"], group["y"])]
        for _, group in table.groupby("frame", sort=True)
    ]


def seconds_per_frame(method: str, frames: list[list[np.ndarray]]) -> float:
    """Seconds per frame of ``method`` linking ``frames`` after the first ``WARM_UP``."""
    linker = make_linker(method)
    for f, curves in enumerate(frames[:WARM_UP]):
        linker.step(f, curves)
    start = time.perf_counter()
    for f, curves in enumerate(frames[WARM_UP:], start=WARM_UP):
        linker.step(f, curves)
    return (time.perf_counter() - start) / (len(frames) - WARM_UP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames timed per run (default: 40)")
    parser.add_argument("--lines", type=int, default=15, help="curves per frame (default: 15)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per linker; the fastest counts (default: 5)")
    parser.add_argument("--splines", help="a splines Parquet file of the main job: link its frames instead")
    args = parser.parse_args()
    if args.splines:
        frames = real_frames(args.splines)
        if len(frames) <= WARM_UP:
            parser.error(f"--splines {args.splines}: {len(frames)} frames, need more than {WARM_UP} (they warm up the linkers)")
        count = np.mean([len(c) for c in frames])
        print(f"{args.splines}: {count:.1f} curves per frame, {len(frames) - WARM_UP} frames timed, best of {args.repeats}")
    else:
        frames = pileup_frames(args.frames, args.lines)
        print(f"{args.lines} curves per frame, {args.frames} frames, best of {args.repeats}")
    # trackpy is the baseline
    times = {method: min(seconds_per_frame(method, frames) for _ in range(args.repeats)) for method in ("trackpy", "curve")}
    for method, seconds in times.items():
        print(f"  {method:8s} {1000 * seconds:7.2f} ms/frame  ({seconds / times['trackpy']:.2f} x trackpy)")


if __name__ == "__main__":
    main()
