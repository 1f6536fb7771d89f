"""Main-job pipeline: overlap of the stages, memory over long videos, streaming latency.

    python benchmarks/bench_pipeline.py              # all parts (~10 min on 2 cores)
    python benchmarks/bench_pipeline.py --quick      # a smoke run (~1 min)
    python benchmarks/bench_pipeline.py --part overlap|latency|memory|real

Parts
-----
overlap  Each stage timed alone on the same frames with the resources it has in the
         pipeline (decode; backend; post-processing with its process pool; tracker and
         series; writer), then the whole run end to end. Prints every stage's frames/s
         and the ratio end-to-end / slowest stage (target >= 0.85).
latency  ``Analyzer.stream`` at batch size 1: per-frame latency (frame leaves the
         source -> its result), beside the per-frame work done alone.
memory   Peak RSS (main process, and the largest worker) of ``tem-track VIDEO`` on a
         1 000- and a 20 000-frame synthetic video of the same size, each in a fresh
         process; prints the ratio (target: within 10 %).
real     ``../shared/data/real/fecral-loops/video.mp4`` (1176 frames, 1120x710) run
         through end to end: frames/s, dislocations per frame, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


SEED = 7


def _spec(frames: int, size: int):
    from temtrack.training.synth import resolve_config
    from temtrack.training.synth.video import VideoSettings

    return resolve_config("sd1", size=size), SEED, VideoSettings(frames=frames)


def _video(folder: Path, frames: int, size: int) -> Path:
    from temtrack.training.synth.video import write_video

    path = folder / f"synthetic_{size}px_{frames}f"
    if not path.exists():
        write_video(path, *_spec(frames, size), progress=False)
    return path / "video.mp4"


class TruthBackend:
    """A perfect model: the generator's own masks of each frame, in frame order.

    ``precompute`` renders them all up front (kept as crops), so predicting costs only
    unpacking them plus ``model_ms`` per frame of waiting with the GIL released: a GPU
    model as the CPU sees it. Without ``precompute`` they are rendered on demand (a
    few ms of CPU per frame, memory flat however long the video).
    """

    name = "synthetic-truth"
    input_size = None
    threshold = None

    def __init__(self, frames: int, size: int, *, model_ms: float = 0.0, precompute: bool = False):
        from temtrack.sdk.pipeline import PackedMasks
        from temtrack.training.synth import iter_video

        self.spec, self.model_ms = (frames, size), model_ms
        rendered = (f.masks for f in iter_video(*_spec(frames, size)))
        if precompute:
            packed = [PackedMasks.pack(masks, None) for masks in rendered]
            self._masks = (p.unpack() for p in packed)
        else:
            self._masks = rendered

    def predict(self, batch):
        if self.model_ms:
            time.sleep(self.model_ms * len(batch) / 1000)
        return [next(self._masks) for _ in batch]

    def describe(self):
        return {"name": self.name, "frames": self.spec[0], "size": self.spec[1], "seed": SEED, "model_ms": self.model_ms}


MODEL_MS = 10.0  # emulated GPU model time per frame


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _analyzer(model, frames, size, **options):
    from temtrack.sdk.analyzer import Analyzer

    if model == "truth":
        return Analyzer(backend=TruthBackend(frames, size, model_ms=MODEL_MS, precompute=True), **options)
    if model == "truth-render":
        return Analyzer(backend=TruthBackend(frames, size), **options)
    return Analyzer(None if model == "classical" else model, backend="classical" if model == "classical" else None,
                    **options)


def overlap(folder: Path, *, frames: int, size: int, batch_size: int, model: str) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from temtrack.sdk.pipeline import FrameResult, PackedMasks, frame_records
    from temtrack.sdk.preprocess import apply, placement_for
    from temtrack.sdk.results import RunWriter
    from temtrack.sdk.sources import open_source

    video = _video(folder, frames, size)
    analyzer = _analyzer(model, frames, size, batch_size=batch_size)
    backend, settings, post = analyzer.backend, analyzer.settings, analyzer.postprocess
    print(f"\n## overlap: {frames} frames {size}x{size}, backend {backend.name}, batch {batch_size}, "
          f"{settings.processes} post-processing process(es)")
    stages = {}
    began = time.perf_counter()
    with open_source(video) as source:
        images, times = zip(*[(f.image, f.time_s) for f in source.frames()])
    stages["decode"] = _rate(len(images), time.perf_counter() - began)

    size_in = getattr(backend, "input_size", None)
    placement = None if size_in is None else placement_for(images[0].shape, size_in)
    began, masks = time.perf_counter(), []
    for start in range(0, len(images), batch_size):
        batch = [img if placement is None else apply(img, placement) for img in images[start:start + batch_size]]
        for out in backend.predict(np.stack(batch)):
            if placement is not None:
                out = placement.clear_outside(out)
            masks.append(PackedMasks.pack(out, post.threshold))
    stages["backend"] = _rate(len(images), time.perf_counter() - began)

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max(settings.processes, 1), mp_context=multiprocessing.get_context(method)) as pool:
        list(pool.map(frame_records, masks[:4], [post] * 4, [placement] * 4))  # start the workers
        began = time.perf_counter()
        records = list(pool.map(frame_records, masks, [post] * len(masks), [placement] * len(masks)))
        stages["post-processing"] = _rate(len(masks), time.perf_counter() - began)

    linker, series = analyzer._new_linker(), analyzer._series(None)
    began, results = time.perf_counter(), []
    for index, (found, time_s) in enumerate(zip(records, times)):
        curves = [r.points for r in found]
        ids = np.asarray(linker.step(index, curves), np.int64)
        tracks, pairs = series.update(index, time_s, curves, ids)
        results.append(FrameResult(index, time_s, tuple(found), ids, tracks, pairs))
    stages["tracker + series"] = _rate(len(records), time.perf_counter() - began)
    curves_per_frame = np.mean([len(r.dislocations) for r in results])

    with tempfile.TemporaryDirectory() as scratch:
        writer = RunWriter(Path(scratch) / "s.parquet", metadata={"settings": {}, "input": {}})
        began = time.perf_counter()
        for result in results:
            writer.add(result)
        writer.finish()
        stages["writer"] = _rate(len(results), time.perf_counter() - began)

        analyzer = _analyzer(model, frames, size, batch_size=batch_size)
        began = time.perf_counter()
        run = analyzer.run(video, Path(scratch) / "run.parquet", progress=False)
        end_to_end = _rate(run.frames, time.perf_counter() - began)
    slowest = min(stages, key=stages.get)
    print(f"{curves_per_frame:.1f} dislocations per frame")
    for name, rate in stages.items():
        print(f"{name:>18}: {rate:8.1f} frames/s" + ("   <- slowest" if name == slowest else ""))
    print(f"{'end to end':>18}: {end_to_end:8.1f} frames/s  (includes starting the worker processes)")
    print(f"ratio end-to-end / slowest stage ({slowest}): {end_to_end / stages[slowest]:.2f}  (target >= 0.85)")


def _paced(images, interval: float):
    """Frames as a camera delivers them: one every ``interval`` seconds."""
    due = time.perf_counter()
    for image in images:
        due += interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        yield image


def latency(folder: Path, *, frames: int, size: int, model: str) -> None:
    from temtrack.sdk.sources import open_source

    video = _video(folder, frames, size)
    with open_source(video) as source:
        images = [np.round(f.image * 255).astype(np.uint8) for f in source.frames()]
    analyzer = _analyzer(model, frames, size, batch_size=1, workers=0)
    began = time.perf_counter()
    for _ in analyzer.stream(iter(images), fps=15.0):
        pass
    work = (time.perf_counter() - began) / len(images)  # all stages, one after the other
    print(f"\n## latency: stream at batch size 1, {len(images)} frames {size}x{size}, backend {analyzer.backend.name}; "
          f"one frame's work done alone: {1e3 * work:.1f} ms (first 5 frames, the warm-up, left out)")
    for workers in (None, 0):
        for load in (0.5, 0.9):
            analyzer = _analyzer(model, frames, size, batch_size=1, workers=workers)
            latencies = [r.latency_s for r in analyzer.stream(_paced(images, work / load), fps=15.0)][5:]
            latencies = np.array(latencies)
            label = f"{'workers' if workers is None else 'inline'}, camera at {load:.0%} of capacity"
            print(f"{label:>36}: median {1e3 * np.median(latencies):.1f} ms, p95 {1e3 * np.percentile(latencies, 95):.1f} ms, "
                  f"max {1e3 * latencies.max():.1f} ms")


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
from bench_pipeline import _analyzer
began = time.perf_counter()
frames, size = (int(v) for v in sys.argv[3].split("x"))
result = _analyzer(sys.argv[5], frames, size).run(sys.argv[1], sys.argv[2], progress=False, overwrite=True)
seconds = time.perf_counter() - began
print(json.dumps({"frames": result.frames, "seconds": seconds,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _peak(video: Path, out: Path, *, frames: int = 0, size: int = 0, model: str = "classical") -> dict:
    command = [sys.executable, "-c", _CHILD, str(video), str(out), f"{frames}x{size}", str(Path(__file__).parent), model]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(folder: Path, *, short: int, long: int, size: int) -> None:
    print(f"\n## memory: peak RSS, {short}- vs {long}-frame synthetic videos {size}x{size}, truth backend, "
          "each in a fresh process")
    figures = {}
    for frames in (short, long):
        video = _video(folder, frames, size)
        figures[frames] = f = _peak(video, folder / f"run_{frames}.parquet", frames=frames, size=size,
                                    model="truth-render")
        print(f"{frames:>6} frames: {f['seconds']:.0f} s ({f['frames'] / f['seconds']:.0f} frames/s); "
              f"peak RSS main {f['rss_mib']:.0f} MiB, largest worker {f['worker_rss_mib']:.0f} MiB")
    for key in ("rss_mib", "worker_rss_mib"):
        ratio = figures[long][key] / figures[short][key]
        print(f"ratio {long}/{short} frames, {key}: {ratio:.3f}  (target within 10 %)")


def real(folder: Path) -> None:
    video = REAL / "fecral-loops" / "video.mp4"
    if not video.exists():
        print(f"\n## real: skipped, {video} is absent")
        return
    f = _peak(video, folder / "fecral.parquet")
    import pandas as pd

    splines = pd.read_parquet(folder / "fecral.parquet", columns=["frame", "track_id", "length_px"])
    print(f"\n## real: {video.name} (fecral-loops, 1120x710), classical backend")
    print(f"{f['frames']} frames in {f['seconds']:.0f} s ({f['frames'] / f['seconds']:.1f} frames/s); "
          f"peak RSS main {f['rss_mib']:.0f} MiB, largest worker {f['worker_rss_mib']:.0f} MiB")
    per_frame = splines.groupby("frame").size().reindex(range(f["frames"]), fill_value=0)
    print(f"line dislocations per frame: median {per_frame.median():.0f}, max {per_frame.max()}; "
          f"{splines.track_id.nunique()} tracks (this video shows loops, not lines)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--part", choices=("overlap", "latency", "memory", "real"), action="append")
    parser.add_argument("--model", default="truth", help="'truth' (the generator's masks, pre-rendered, plus 10 ms per "
                        "frame of GIL-free waiting: a perfect GPU model; default), 'truth-render' (rendered on demand, "
                        "CPU), 'classical', or an ONNX model file (overlap, latency)")
    parser.add_argument("--size", type=int, default=512, help="frame size of the overlap/latency videos (default 512)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="keep the synthetic videos in this folder (reused next time)")
    args = parser.parse_args()
    parts = args.part or ["overlap", "latency", "memory", "real"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        if "overlap" in parts:
            overlap(folder, frames=40 if args.quick else 200, size=args.size, batch_size=args.batch_size, model=args.model)
        if "latency" in parts:
            latency(folder, frames=20 if args.quick else 100, size=args.size, model=args.model)
        if "memory" in parts:
            memory(folder, short=100 if args.quick else 1000, long=1000 if args.quick else 20000, size=128)
        if "real" in parts and not args.quick:
            real(folder)


if __name__ == "__main__":
    main()
