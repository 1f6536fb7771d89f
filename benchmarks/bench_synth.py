"""Generator speed: images per second per core, and the share of time per stage.

    python benchmarks/bench_synth.py [--preset sd3] [--size 512] [--n 200] [--workers 2]

Prints, for one core: the time per stage (scene sampling, background, structures and
finishing with masks, writing the files), the images/s against the 50 images/s target,
and the Perlin background against a reference implementation run in the same process
(the common per-pixel-gather formulation), as a ratio. With --workers K it also measures
the throughput of K processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

from temtrack.training.synth import get_preset, render_scene, sample_scene
from temtrack.training.synth.background import perlin_noise
from temtrack.training.synth.render import compose, render_background
from temtrack.training.synth.storage import sample_seed, write_dataset, write_sample

TARGET = 50.0  # images/s per core (issue: feed 16 GPU-machine cores for on-the-fly training)


def reference_perlin(shape, wavelength, rng):
    """Per-pixel gather formulation of gradient noise, the usual numpy recipe."""
    height, width = shape
    rows, cols = -(-height // wavelength) + 1, -(-width // wavelength) + 1
    angle = rng.uniform(0, 2 * np.pi, (rows + 1, cols + 1))
    grad = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    y, x = np.mgrid[0:height, 0:width] / wavelength
    yi, xi = y.astype(int), x.astype(int)
    yf, xf = y - yi, x - xi

    def dot(dy, dx):
        g = grad[yi + dy, xi + dx]
        return g[..., 0] * (xf - dx) + g[..., 1] * (yf - dy)

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    u, v = fade(xf), fade(yf)
    top = dot(0, 0) + u * (dot(0, 1) - dot(0, 0))
    bottom = dot(1, 0) + u * (dot(1, 1) - dot(1, 0))
    return top + v * (bottom - top)


def _clock(fn, repeat):
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.sum(times))


def _worker_chunk(args):
    preset, size, indices = args
    config = get_preset(preset).with_size(size)
    for i in indices:
        render_scene(sample_scene(config, sample_seed(0, i)))
    return len(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sd3")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    config = get_preset(args.preset).with_size(args.size)
    seeds = [sample_seed(0, i) for i in range(args.n)]
    generate_sample = lambda i: render_scene(sample_scene(config, seeds[i]))  # noqa: E731
    generate_sample(0)  # warm caches and imports

    scenes = [sample_scene(config, s) for s in seeds]
    backgrounds = [render_background(s) for s in scenes[: min(args.n, 50)]]
    stage = {
        "scene sampling": _clock(lambda i: sample_scene(config, seeds[i]), args.n)[1] / args.n,
        "background": _clock(lambda i: render_background(scenes[i]), len(backgrounds))[1] / len(backgrounds),
        "structures + masks + finish": _clock(lambda i: compose(scenes[i], backgrounds[i]), len(backgrounds))[1]
        / len(backgrounds),
    }
    total_in_memory = _clock(generate_sample, args.n)[1] / args.n
    samples = [generate_sample(i) for i in range(20)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("images", "masks", "labels"):
            (root / sub).mkdir()
        stage["writing files"] = _clock(lambda i: write_sample(root, i, samples[i], seed=seeds[i]), 20)[1] / 20

    rng = np.random.default_rng(0)
    shape = (args.size, args.size)
    ours = _clock(lambda i: perlin_noise(shape, 10 + 4 * (i % 20), rng), 40)[1]
    reference = _clock(lambda i: reference_perlin(shape, 10 + 4 * (i % 20), rng), 40)[1]

    per_stage = sum(v for k, v in stage.items() if k != "writing files")
    print(f"preset {args.preset}, {args.size}x{args.size}, {args.n} images, one core")
    print(f"{'stage':32s} {'ms/image':>9s} {'share':>7s}")
    for name, seconds in stage.items():
        share = seconds / (per_stage + stage["writing files"])
        print(f"{name:32s} {seconds * 1e3:9.2f} {share:7.1%}")
    rate = 1.0 / total_in_memory
    rate_files = 1.0 / (total_in_memory + stage["writing files"])
    print(f"\nin memory (on-the-fly training): {rate:6.1f} images/s per core = {rate / TARGET:.2f}x the {TARGET:.0f}/s target")
    print(f"with files written:              {rate_files:6.1f} images/s per core = {rate_files / TARGET:.2f}x the target")
    print(f"Perlin layer, ours vs per-pixel-gather reference: {reference / ours:.1f}x faster")

    figures = {"images_per_s_per_core": rate, "images_per_s_per_core_with_files": rate_files,
               "stage_ms": {k: v * 1e3 for k, v in stage.items()}, "perlin_speedup": reference / ours}
    if args.workers > 1:
        chunks = [(args.preset, args.size, list(range(k, args.n, args.workers))) for k in range(args.workers)]
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            done = sum(pool.map(_worker_chunk, chunks))
        elapsed = time.perf_counter() - start
        print(f"{args.workers} processes: {done / elapsed:6.1f} images/s ({done / elapsed / args.workers:.1f} per process, incl. start-up)")
        figures["images_per_s_workers"] = done / elapsed
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(Path(tmp) / "ds", config, 40, seed=0, workers=1, progress=False)
        print(f"write_dataset, 40 images, 1 worker: {40 / (time.perf_counter() - start):6.1f} images/s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
