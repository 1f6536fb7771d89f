"""One configuration of ``bench_suite.py``, run in its own process.

    python benchmarks/_suite_stages.py '<job as JSON>'

Prints one JSON line (the last line of stdout): per-stage figures, the end-to-end run
and the process's peak memory. A fresh process per configuration makes the peak RSS
that configuration's own. Two kinds of job:

``pipeline``  the product: ``Analyzer.run`` end to end, then every stage alone on the
              same frames (decode, preprocess, inference, post-processing, tracking,
              writing).
``thesis``    the thesis' set-up as one sequential loop per frame: decode, letterbox,
              PyTorch eager fp32 at batch 1, full-frame post-processing
              (:func:`thesis_postprocess`), tracking, writing.

Not part of the package: benchmark code, it may import torch.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _summary(times_s, frames: int, total_s: float | None = None, per: int = 1) -> dict:
    """frames/s over ``total_s`` (default: the sum of ``times_s``), and p50/p99 of
    ``times_s`` in ms divided by ``per`` (frames per call)."""
    times = np.asarray(times_s, float)
    total = float(times.sum()) if total_s is None else float(total_s)
    if not len(times):
        return {"fps": None, "p50_ms": None, "p99_ms": None, "frames": frames, "calls": 0, "seconds": total}
    return {
        "fps": frames / total if total > 0 else None,
        "p50_ms": 1e3 * float(np.percentile(times, 50)) / per,
        "p99_ms": 1e3 * float(np.percentile(times, 99)) / per,
        "frames": frames,
        "calls": len(times),
        "seconds": total,
    }


def _rss() -> dict:
    # VmHWM, not ru_maxrss: Linux carries the pre-exec high-water mark (the parent's,
    # here the suite with torch loaded) into ru_maxrss of an exec'ed child.
    peak = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {
        "rss_mib": peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


# --- backends ---------------------------------------------------------------------------


def make_backend(spec: dict):
    """The backend object a job asks for (built once, reused by every stage)."""
    kind = spec["type"]
    if kind == "classical":
        from temtrack.sdk.backends import get_backend

        return get_backend("classical")
    if kind == "torch":
        from temtrack.training.torch_backend import TorchBackend

        backend = TorchBackend.from_checkpoint(spec["checkpoint"], device=spec["device"], precision=spec["precision"],
                                               batch_size=spec["batch"])
        if spec.get("channels_last"):
            import torch

            backend.model = backend.model.to(memory_format=torch.channels_last)
        # TorchBackend takes frames of any size; give it the ONNX model's input size so
        # both runtimes see the same letterboxed frames (same pixels, same work).
        backend.input_size = tuple(spec["input_size"])
        return backend
    if kind == "onnxruntime":
        from temtrack.sdk.backends.onnx import OnnxBackend

        return OnnxBackend(spec["model"], providers=spec.get("providers"), threads=spec.get("threads"))
    if kind == "tensorrt":
        from temtrack.sdk.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(spec["engine"])
    raise ValueError(f"unknown backend type {kind!r}; valid: classical, torch, onnxruntime, tensorrt")


def _warm(backend, size, batch: int) -> None:
    """One call at the batch size, so one-time costs (allocations, kernel choice,
    thread start) stay out of every figure."""
    shape = tuple(size) if size is not None else (256, 256)
    backend.predict(np.full((batch, *shape), 0.5, np.float32))


def _describe(backend) -> dict:
    """The backend's description without the model file's training record (bulky)."""
    described = dict(backend.describe())
    if isinstance(described.get("metadata"), dict):
        described["metadata"] = {k: v for k, v in described["metadata"].items() if k != "extra"}
    return described


def _cuda_peak() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


# --- the product: end to end, then each stage alone --------------------------------------


def _end_to_end(backend, job: dict, scratch: Path) -> dict:
    """``Analyzer.run`` on the first K frames, with each frame's latency (frame leaves
    the decoder -> its result reaches the writer) recorded by a writer that notes it."""
    import temtrack.sdk.results as results
    from temtrack.sdk.analyzer import Analyzer

    latencies = []

    class NotingWriter(results.RunWriter):
        def add(self, result):
            latencies.append(result.latency_s)
            super().add(result)

    original, results.RunWriter = results.RunWriter, NotingWriter
    try:
        analyzer = Analyzer(backend=backend, batch_size=job["batch"], tracker=job.get("tracker", "curve"))
        run = analyzer.run(job["video"], scratch / "e2e.parquet", end=job["frames"], progress=False, overwrite=True)
    finally:
        results.RunWriter = original
    figures = _summary(latencies, run.frames, run.seconds)
    figures["latency_means"] = "frame leaves the decoder -> result written (includes waiting in the read-ahead queue)"
    figures["workers"] = analyzer.settings.processes
    return figures


def _decode(video: str, frames: int):
    from temtrack.sdk.sources import open_source

    images, times, took = [], [], []
    with open_source(video) as source:
        iterator = source.frames(end=frames)
        while True:
            began = time.perf_counter()
            frame = next(iterator, None)
            if frame is None:
                break
            took.append(time.perf_counter() - began)
            images.append(frame.image)
            times.append(frame.time_s)
    return images, times, took


def _stages(backend, job: dict, scratch: Path) -> tuple[dict, float]:
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.pipeline import FrameResult, PackedMasks, frame_records
    from temtrack.sdk.preprocess import apply, placement_for

    analyzer = Analyzer(backend=backend, batch_size=job["batch"], tracker=job.get("tracker", "curve"))
    post, batch_size = analyzer.postprocess, job["batch"]
    stages = {}
    images, times, took = _decode(job["video"], job["frames"])
    stages["decode"] = _summary(took, len(images))

    size = getattr(backend, "input_size", None)
    placement = None if size is None else placement_for(images[0].shape, size)
    batches, took = [], []
    for start in range(0, len(images), batch_size):
        began = time.perf_counter()
        chunk = [img if placement is None else apply(img, placement) for img in images[start:start + batch_size]]
        batches.append(np.stack(chunk))
        took.append(time.perf_counter() - began)
    stages["preprocess"] = _summary(took, len(images), per=batch_size)

    packed_direct = getattr(backend, "predict_packed", None)
    outputs, took = [], []
    for inputs in batches:
        began = time.perf_counter()
        out = packed_direct(inputs) if packed_direct is not None else backend.predict(inputs)
        took.append(time.perf_counter() - began)
        outputs.extend(out)
    stages["inference"] = _summary(took, len(images), per=batch_size)
    del batches

    def packed(masks):
        if isinstance(masks, PackedMasks):
            return masks
        return PackedMasks.pack(masks if placement is None else placement.clear_outside(masks), post.threshold)

    frame_records(packed(outputs[0]), post, placement)  # imports (scikit-image, ...) out of the timing
    records, took = [], []
    for masks in outputs:
        began = time.perf_counter()
        # What the inference thread does (clear the padding, pack), then a worker.
        records.append(frame_records(packed(masks), post, placement))
        took.append(time.perf_counter() - began)
    stages["postprocess"] = _summary(took, len(images))
    del outputs

    linker, series = analyzer._new_linker(), analyzer._series(None)
    results, took = [], []
    for index, (found, time_s) in enumerate(zip(records, times)):
        began = time.perf_counter()
        curves = [r.points for r in found]
        ids = np.asarray(linker.step(index, curves), np.int64)
        tracks, pairs = series.update(index, time_s, curves, ids)
        took.append(time.perf_counter() - began)
        results.append(FrameResult(index, time_s, tuple(found), ids, tracks, pairs))
    stages["tracking"] = _summary(took, len(results))

    stages["writing"] = _write(results, scratch / "stage.parquet")
    return stages, float(np.mean([len(r) for r in records])) if records else 0.0


def _write(results, out: Path) -> dict:
    from temtrack.sdk.results import RunWriter

    writer = RunWriter(out, metadata={"settings": {}, "input": {}}, overwrite=True)
    took = []
    for result in results:
        began = time.perf_counter()
        writer.add(result)
        took.append(time.perf_counter() - began)
    began = time.perf_counter()
    writer.finish()
    figures = _summary(took, len(results), sum(took) + time.perf_counter() - began)
    figures["latency_means"] = "RunWriter.add per frame; frames/s includes finish()"
    return figures


def pipeline_job(job: dict) -> dict:
    backend = make_backend(job["backend"])
    _warm(backend, getattr(backend, "input_size", None), job["batch"])
    with tempfile.TemporaryDirectory() as scratch:
        end_to_end = _end_to_end(backend, job, Path(scratch))
        memory = _rss()  # the end-to-end run's peak, before the stages hold all frames
        stages, per_frame = _stages(backend, job, Path(scratch))
    return {
        "end_to_end": end_to_end,
        "stages": stages,
        "dislocations_per_frame": per_frame,
        **memory,
        "cuda_max_allocated_mib": _cuda_peak(),
        "describe": _describe(backend),
    }


# --- the thesis' set-up ------------------------------------------------------------------


def thesis_postprocess(probabilities: np.ndarray, settings):
    """Post-processing as the thesis did it: every one of the N masks at full size.

    Parameters
    ----------
    probabilities : (N, H, W) ndarray of float32
        One frame's mask probabilities at the model's resolution.
    settings : PostprocessSettings

    Returns
    -------
    FrameDislocations

    Each mask is thresholded, labelled into 8-connected components, size-filtered and
    Lee-skeletonized over the whole frame, empty or not (thesis 3.4.3). The
    centreline ordering and spline fit then reuse ``extract_dislocations`` on the full
    (N, H, W) stack, not the pipeline's bounding-box crops of the non-empty masks
    (``PackedMasks``); its own skeletons of the components it finds are thus computed
    a second time, a small overcount beside N full-frame passes.
    """
    from skimage.measure import label
    from skimage.morphology import skeletonize

    from temtrack.sdk.postprocess import extract_dislocations

    for mask in probabilities:
        binary = mask > settings.threshold
        labels = label(binary, connectivity=2)
        keep = np.bincount(labels.ravel()) >= settings.min_pixels
        keep[0] = False
        skeletonize(keep[labels], method="lee")
    return extract_dislocations(probabilities, settings=settings)


def _reference(path: str) -> list:
    """Each frame's stored probabilities: (mask indices, crop corners, crops)."""
    data = np.load(path)
    frames = []
    for k in range(int(data["count"])):
        indices, boxes = data[f"{k}_indices"], data[f"{k}_boxes"]
        crops = [data[f"{k}_crop{j}"] for j in range(len(indices))]
        frames.append((indices, boxes, crops))
    return frames


def _full(recipe, n_masks: int, size) -> np.ndarray:
    indices, boxes, crops = recipe
    masks = np.zeros((n_masks, *size), np.float32)
    for index, (y, x), crop in zip(indices.tolist(), boxes.tolist(), crops):
        masks[index, y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return masks


def _records(found, placement) -> list:
    """Frame-pixel records of a full-stack result (as ``frame_records`` makes them)."""
    from temtrack.sdk.pipeline import DislocationRecord

    multiple = {summary.index: summary.multiple for summary in found.masks}
    records = []
    for d in found.dislocations:
        points = placement.to_frame(d.points).astype(np.float32)
        centroid = points.mean(axis=0)
        records.append(DislocationRecord(
            points=points, length_px=float(d.length / placement.scale),
            mean_curvature=float(d.mean_curvature * placement.scale),
            max_curvature=float(d.max_curvature * placement.scale), centroid=(float(centroid[0]), float(centroid[1])),
            score=float(d.score), mask_index=int(d.mask_index), n_pixels=int(d.n_pixels), closed=bool(d.closed),
            multiple=bool(multiple[d.mask_index]), at_edge=False))
    return records


def thesis_job(job: dict) -> dict:
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.pipeline import FrameResult
    from temtrack.sdk.postprocess import PostprocessSettings
    from temtrack.sdk.preprocess import apply, placement_for
    from temtrack.sdk.results import RunWriter
    from temtrack.sdk.sources import open_source

    backend = make_backend(job["backend"])
    size = tuple(job["backend"]["input_size"])
    _warm(backend, size, 1)
    settings = PostprocessSettings(threshold=backend.threshold)
    analyzer = Analyzer(backend="classical", tracker=job.get("tracker", "curve"))  # for its linker and series only
    linker, series = analyzer._new_linker(), analyzer._series(None)
    reference = _reference(job["reference"])
    # Imports and first-call costs out of the timing (the pipeline job warms these by
    # its end-to-end run).
    warm = _records(thesis_postprocess(_full(reference[0], backend.config.n_masks, size), settings),
                    placement_for((size[0], size[1]), size))
    analyzer._series(None).update(0, 0.0, [r.points for r in warm], analyzer._new_linker().step(0, [r.points for r in warm]))
    took = {name: [] for name in ("decode", "preprocess", "inference", "postprocess", "tracking", "writing")}
    count, found_total = 0, 0
    with tempfile.TemporaryDirectory() as scratch, open_source(job["video"]) as source:
        writer = RunWriter(Path(scratch) / "thesis.parquet", metadata={"settings": {}, "input": {}})
        frames = source.frames(end=job["frames"])
        placement = None
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            t1 = time.perf_counter()
            placement = placement or placement_for(frame.image.shape, size)
            x = apply(frame.image, placement)[None]
            t2 = time.perf_counter()
            backend.predict(x)  # the thesis network's own output, computed and paid for
            t3 = time.perf_counter()
            # Post-processed: our model's probabilities of this frame (stored, untimed),
            # so both set-ups post-process the same masks (random ResNet50 weights give noise).
            probabilities = _full(reference[count], backend.config.n_masks, size)
            t4 = time.perf_counter()
            records = _records(thesis_postprocess(probabilities, settings), placement)
            curves = [r.points for r in records]
            t5 = time.perf_counter()
            ids = np.asarray(linker.step(frame.index, curves), np.int64)
            tracks, pairs = series.update(frame.index, frame.time_s, curves, ids)
            t6 = time.perf_counter()
            writer.add(FrameResult(frame.index, frame.time_s, tuple(records), ids, tracks, pairs))
            t7 = time.perf_counter()
            for name, seconds in zip(took, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5, t7 - t6)):
                took[name].append(seconds)
            count += 1
            found_total += len(curves)
        began = time.perf_counter()
        writer.finish()
        finish = time.perf_counter() - began
    stages = {name: _summary(values, count) for name, values in took.items()}
    stages["writing"] = _summary(took["writing"], count, sum(took["writing"]) + finish)
    per_frame = np.sum([values for values in took.values()], axis=0)
    end_to_end = _summary(per_frame, count, per_frame.sum() + finish)
    end_to_end["latency_means"] = "one frame's sequential work, decode to written"
    return {
        "end_to_end": end_to_end,
        "stages": stages,
        "dislocations_per_frame": found_total / max(count, 1),
        **_rss(),
        "cuda_max_allocated_mib": _cuda_peak(),
        "describe": _describe(backend),
    }


def main() -> None:
    job = json.loads(sys.argv[1])
    result = thesis_job(job) if job["kind"] == "thesis" else pipeline_job(job)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
