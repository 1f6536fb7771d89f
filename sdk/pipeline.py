"""The main job's engine: frames in, tracked dislocation splines out, stages overlapped.

Four stages run at the same time, joined by bounded queues so memory stays flat
however long the video is::

    decode thread -> inference thread -> post-processing processes -> caller
    (frames ahead)   (batches, backend)  (masks -> splines, parallel)   (tracker, series)

The decode thread reads ahead; the inference thread batches whatever frames are
waiting (up to ``batch_size``, so a live camera at batch size 1 is not held back),
fits them to the backend's input (:mod:`temtrack.sdk.preprocess`), predicts and sends
each frame's non-empty masks (a line-field model's fields as
:class:`~temtrack.sdk.linefield.SparseFields`: only the pixels the tracing reads) to a
pool of post-processing processes (the GIL stops threads from overlapping the
skeleton work); the caller's thread takes the results in
frame order, links them into tracks and derives the time series. Any stage's error
stops the others and is raised in the caller's thread.

The inference thread also finds each frame's burnt-in overlays, judged with the
frames around it (:class:`temtrack.sdk.annotations.OverlayWindow`): a frame goes on
once the ``window`` frames after it have been read (all remaining ones when the stream
ends), and the caller drops the dislocations lying on them before tracking.

No torch here; the tracker is :mod:`temtrack.tracker`, which knows nothing of the SDK.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import numpy as np

from .backends.contract import PackedMasks
from .geometry import fit_spline
from .linefield import LineFieldSettings, SparseFields, extract_lines
from .postprocess import PostprocessSettings, extract_dislocations

__all__ = [
    "DislocationRecord",
    "FrameResult",
    "PackedMasks",
    "PipelineSettings",
    "cap_workers",
    "check_finite",
    "frame_records",
    "interrupts_ignored",
    "iterate_results",
    "line_records",
    "worker_init",
]

_EDGE = 2.0  # px: an end this close to the frame border is cut by the field of view
_DONE = object()


@dataclass(frozen=True)
class PipelineSettings:
    """How the stages of the main job run (not what they compute).

    Attributes
    ----------
    batch_size : int
        Most frames per backend call; fewer when fewer are waiting.
    workers : int or None
        Post-processing processes; None picks ``cpu_count - 1`` (at least 1), 0 runs
        post-processing in the inference thread (no processes).
    scale : float or None
        Model px per frame px; None fits the whole frame to the model input
        (letterbox, :mod:`temtrack.sdk.preprocess`).
    read_ahead : int
        Frames decoded ahead of inference.
    invert : bool
        Give the model ``1 - frame``: for dislocations brighter than the background
        (dark field, weak beam), since the models know dark lines only. Everything else
        (overlays, burnt-in text, outputs) sees the frames as they are.
    flatten : float or None
        Even out each model input's illumination (vignetting, thickness) by dividing it
        by its Gaussian blur of ``flatten`` model px
        (:func:`temtrack.sdk.illumination.flatten`), after the resampling and the
        inversion; None gives the model the frames as they are.
    """

    batch_size: int = 4
    workers: int | None = None
    scale: float | None = None
    read_ahead: int = 16
    invert: bool = False
    flatten: float | None = None

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be None or an integer >= 0, got {self.workers!r}")
        if self.scale is not None and (isinstance(self.scale, bool) or not (
                isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0)):
            raise ValueError(f"scale must be None or a finite number > 0, got {self.scale!r}")
        if not isinstance(self.read_ahead, int) or self.read_ahead < 1:
            raise ValueError(f"read_ahead must be an integer >= 1, got {self.read_ahead!r}")
        if not isinstance(self.invert, bool):
            raise ValueError(f"invert must be True or False, got {self.invert!r}")
        if self.flatten is not None and (isinstance(self.flatten, bool) or not isinstance(self.flatten, (int, float))
                                         or not math.isfinite(self.flatten) or self.flatten <= 0):
            raise ValueError(f"flatten must be None or a finite number of px > 0, got {self.flatten!r}")

    @property
    def processes(self) -> int:
        """Post-processing processes this run starts (0 = inline); never more than the
        CPU cores (:func:`cap_workers` warns about a larger ``workers``)."""
        cores = os.cpu_count() or 2
        if self.workers is not None:
            return min(self.workers, cores)
        return max(1, cores - 1)


def cap_workers(workers: int | None) -> int | None:
    """``workers`` capped at the CPU cores, with a warning when it was more."""
    cores = os.cpu_count() or 2
    if workers is not None and not isinstance(workers, bool) and isinstance(workers, int) and workers > cores:
        import warnings

        warnings.warn(f"workers {workers} is more than the {cores} CPU cores here; using {cores}", stacklevel=3)
        return cores
    return workers


@dataclass(frozen=True)
class DislocationRecord:
    """One dislocation of one frame, in frame pixel coordinates.

    Attributes
    ----------
    points : (n, 2) ndarray of float32
        ``(x, y)`` px, equally spaced along the spline.
    length_px : float
    mean_curvature, max_curvature : float
        1/px.
    centroid : (float, float)
        Mean of ``points``, px.
    score : float
        Mean mask probability over its pixels (1.0 for thresholded masks).
    mask_index : int
        Output mask it came from.
    n_pixels : int
        Mask pixels it owns, at the model's resolution.
    closed : bool
        A loop.
    multiple : bool
        Its mask held several dislocations.
    at_edge : bool
        An end lies within 2 px of the frame border: the field of view cuts it, so its
        length is a lower bound.
    """

    points: np.ndarray = field(repr=False)
    length_px: float
    mean_curvature: float
    max_curvature: float
    centroid: tuple
    score: float
    mask_index: int
    n_pixels: int
    closed: bool
    multiple: bool
    at_edge: bool


@dataclass(frozen=True)
class FrameResult:
    """Everything the main job knows about one frame.

    Attributes
    ----------
    frame : int
        Index in the source.
    time_s : float
        Seconds from the first frame (NaN when the source has no timing).
    dislocations : tuple of DislocationRecord
    track_ids : (k,) ndarray of int64
        Track of each dislocation, in order.
    tracks, pairs : pandas.DataFrame
        This frame's rows of the per-track and per-pair time series.
    image : (H, W) ndarray of float32 or None
        The frame, when asked for (overlays).
    latency_s : float
        Seconds from the frame leaving the source to this result.
    masked_pixels : int
        Pixels of the frame found to be burnt-in overlays (0 when that is off).
    dropped : tuple of DislocationRecord
        Dislocations left out because they lie mostly on those overlays.
    cut : tuple of (DislocationRecord, tuple of DislocationRecord)
        Dislocations cut where they cross those overlays, each with its pieces off them
        (those long enough; they are among ``dislocations``).
    """

    frame: int
    time_s: float
    dislocations: tuple
    track_ids: np.ndarray
    tracks: object = field(repr=False)
    pairs: object = field(repr=False)
    image: np.ndarray | None = field(default=None, repr=False)
    latency_s: float = 0.0
    masked_pixels: int = 0
    dropped: tuple = field(default=(), repr=False)
    cut: tuple = field(default=(), repr=False)


def frame_records(packed: PackedMasks, settings: PostprocessSettings, placement) -> list:
    """Post-process one frame's non-empty masks into :class:`DislocationRecord` s.

    ``packed`` holds the masks at the model's resolution and their output mask
    numbers; ``placement`` maps model px to frame px (None: the same). Runs in the
    worker processes.
    """
    if not len(packed.indices):
        return []
    found = extract_dislocations(packed, settings=settings)  # crops: never a full-size mask per instance
    multiple = {summary.index: summary.multiple for summary in found.masks}
    return _records(found, placement, [int(packed.indices[d.mask_index]) for d in found.dislocations],
                    [multiple[d.mask_index] for d in found.dislocations])


def line_records(fields: np.ndarray | SparseFields, settings: LineFieldSettings, placement) -> list:
    """Trace one frame's line fields (a line-field model's output at the model's
    resolution, dense or sparse) into :class:`DislocationRecord` s; nothing is traced
    in letterbox padding. Runs in the worker processes."""
    valid = None
    if placement is not None:
        rows, columns = placement.valid
        valid = (rows.start, rows.stop, columns.start, columns.stop)
    found = extract_lines(fields, settings=settings, valid=valid)
    return _records(found, placement, [d.mask_index for d in found.dislocations], [False] * len(found.dislocations))


def _records(found, placement, mask_indices, multiple) -> list:
    """The dislocations of ``found`` in frame px, as records."""
    scale = 1.0 if placement is None else placement.scale
    height, width = found.shape if placement is None else placement.frame_shape
    records = []
    for dislocation, mask_index, several in zip(found.dislocations, mask_indices, multiple):
        points = dislocation.points if placement is None else placement.to_frame(dislocation.points)
        # The spline may overshoot a line that leaves the frame by a pixel or so.
        points = np.clip(points, -0.5, np.array([width - 0.5, height - 0.5]))
        at_edge = not dislocation.closed and _ends_at_edge(points, height, width)
        centroid = points.mean(axis=0)
        records.append(
            DislocationRecord(
                points=points.astype(np.float32),
                length_px=float(dislocation.length / scale),
                mean_curvature=float(dislocation.mean_curvature * scale),
                max_curvature=float(dislocation.max_curvature * scale),
                centroid=(float(centroid[0]), float(centroid[1])),
                score=float(dislocation.score),
                mask_index=int(mask_index),
                n_pixels=int(dislocation.n_pixels),
                closed=bool(dislocation.closed),
                multiple=bool(several),
                at_edge=at_edge,
            )
        )
    return records


def _context():
    """How worker processes start: forked on Linux, before this run's threads exist
    (every worker is created by the first submit, see _Stages), so a user's script
    needs no ``if __name__ == "__main__"`` guard; spawned elsewhere."""
    if "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _ready(_) -> bool:
    return True


def worker_init(parent: int) -> None:
    """Set up a worker process (post-processing here; also the generator's and the
    trainer's pools): Ctrl-C is the parent's to handle (the worker would print a
    traceback of its own), and the worker ends when its parent dies, even by ``kill -9``,
    so it is never orphaned. On Linux the kernel sees to that (``PR_SET_PDEATHSIG``; no
    thread is started in the worker); elsewhere a watcher thread polls the parent's PID."""
    import gc
    import signal

    # Objects inherited through fork are never collected here: the parent's garbage may
    # hold a runtime (an onnxruntime session) whose destructor waits for threads that
    # only exist in the parent, and would hang this process forever.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if _die_with_parent():
        if os.getppid() != parent:  # the parent died before the kernel was told
            os._exit(1)
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="temtrack-parent-watch", daemon=True).start()


@contextlib.contextmanager
def interrupts_ignored():
    """Ignore SIGINT while worker processes are started, so that they are born ignoring
    it (the setting is inherited through fork and exec): a Ctrl-C during their start-up,
    before :func:`worker_init` runs, would print a traceback from each. The parent's
    handler comes back at the end. Only the main thread can change handlers; elsewhere
    this does nothing."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def check_finite(outputs, first_frame: int) -> None:
    """Raise :class:`ValueError` when a backend's float outputs hold NaN or infinite
    values (a broken model or engine): its masks would silently be empty."""
    for offset, output in enumerate(outputs):
        if isinstance(output, np.ndarray) and output.dtype.kind == "f" and not np.isfinite(output).all():
            bad = int(np.count_nonzero(~np.isfinite(output)))
            raise ValueError(
                f"the model returned NaN or infinite values ({bad} of {output.size}) for frame {first_frame + offset}; "
                "the model file or its backend is broken (check it with 'tem-track models', or re-export it)"
            )


class _Stop(Exception):
    """The consumer went away; stages wind down."""


class _Stages:
    """Decode and inference threads plus the post-processing pool of one run."""

    def __init__(self, frames: Iterable, backend, postprocess, placement_of, settings, keep_images, annotations=None,
                 context=()):
        self.backend, self.postprocess, self.settings = backend, postprocess, settings
        self.annotations, self.context = annotations, context
        self.placement_of, self.keep_images = placement_of, keep_images
        self.stop = threading.Event()
        self.decoded: queue.Queue = queue.Queue(maxsize=settings.read_ahead)
        # Results in flight: bounds masks held in memory whatever the video length.
        self.pending: queue.Queue = queue.Queue(maxsize=2 * max(settings.processes, 1) + settings.batch_size)
        self.pool = None
        if settings.processes:
            import gc
            from concurrent.futures import ProcessPoolExecutor

            gc.collect()  # garbage is destroyed here, where its threads live, not in a forked worker

            self.pool = ProcessPoolExecutor(
                settings.processes, mp_context=_context(), initializer=worker_init, initargs=(os.getpid(),)
            )
            # Start the workers now, before the stage threads, not when the first frame
            # is waiting for them.
            with interrupts_ignored():
                list(self.pool.map(_ready, range(settings.processes)))
        self.threads = [
            threading.Thread(target=self._guard, args=(self._decode, frames, self.decoded), name="temtrack-decode", daemon=True),
            threading.Thread(target=self._guard, args=(self._infer, None, self.pending), name="temtrack-infer", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _put(self, target: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _get(self, source: queue.Queue):
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                return source.get(timeout=0.1)
            except queue.Empty:
                continue

    def _guard(self, work, argument, output: queue.Queue) -> None:
        try:
            work(argument)
            self._put(output, _DONE)
        except _Stop:
            pass
        except BaseException as error:  # handed to the caller's thread, raised there
            try:
                self._put(output, error)
            except _Stop:
                pass

    def _decode(self, frames) -> None:
        for frame in frames:
            self._put(self.decoded, (frame, time.perf_counter()))

    def _infer(self, _) -> None:
        from .illumination import photometric
        from .preprocess import apply as fit

        backend, options = self.backend, self.postprocess
        fields = isinstance(options, LineFieldSettings)
        # --- burnt-in overlays (issue 17): found here, while the workers trace. Each
        # frame's mask is judged with its neighbours, so a frame goes on once the
        # window has seen the frames after it; context frames (those before a resumed
        # run's first) only fill the window. ---
        overlays = None
        if self.annotations is not None:
            from .annotations import OverlayWindow

            overlays = OverlayWindow(self.annotations)
            for image in self.context:
                self._send(overlays.push(image))
            self.context = ()  # the window keeps its own copies
        ended = False
        while not ended:
            batch = [self._get(self.decoded)]
            # Take what is waiting, never wait for a full batch: bounded latency live.
            while len(batch) < self.settings.batch_size and not isinstance(batch[-1], BaseException) and batch[-1] is not _DONE:
                try:
                    batch.append(self.decoded.get_nowait())
                except queue.Empty:
                    break
            if isinstance(batch[-1], BaseException):
                raise batch[-1]
            if batch[-1] is _DONE:
                ended = True
                batch.pop()
            if not batch:
                break
            frames = [frame for frame, _ in batch]
            placement = self.placement_of(frames[0].image.shape)
            inputs = np.stack([f.image if placement is None else fit(f.image, placement) for f in frames])
            if self.settings.invert or self.settings.flatten is not None:
                # Bright lines (dark field) as the dark lines the models know; the
                # illumination evened out.
                inputs = np.stack([photometric(image, invert=self.settings.invert, flatten_sigma=self.settings.flatten)
                                   for image in inputs])
            predict_packed = getattr(backend, "predict_packed", None)
            if not fields and getattr(backend, "threshold", None) not in (None, options.threshold):
                predict_packed = None  # its crops are cut at its own threshold, not the one asked for
            field_low = getattr(backend, "field_low", None)
            if fields and (field_low is None or field_low > options.low):
                predict_packed = None  # its sparse fields are cut above the tracing's lower threshold
            outputs = predict_packed(inputs) if predict_packed is not None else backend.predict(inputs)
            check_finite(outputs, frames[0].index)
            for (frame, started), masks in zip(batch, outputs):
                if fields:
                    work, payload = line_records, masks
                    if not isinstance(masks, SparseFields) and self.pool is not None:
                        # Packing plus the trip to a worker against the dense fields' trip
                        # (benchmarks/bench_sparse.py, bundled model): 0.58-0.64x on 512²
                        # generator frames (15 % of pixels kept), 0.99-1.16x on real TWIP
                        # frames (51 % kept); a few ms either way beside the model's
                        # hundreds on a CPU (issue 20).
                        payload = SparseFields.pack(masks, low=options.low)
                elif isinstance(masks, PackedMasks):  # the backend gave crops: any size, nothing padded
                    work, payload = frame_records, masks
                else:
                    if placement is not None:
                        masks = placement.clear_outside(masks)
                    work, payload = frame_records, PackedMasks.pack(masks, options.threshold)
                if self.pool is None:
                    records = work(payload, options, placement)
                else:
                    records = self.pool.submit(work, payload, options, placement)
                image = frame.image if self.keep_images else None
                item = (frame.index, frame.time_s, records, image, started)
                if overlays is None:
                    self._put(self.pending, (*item, None))
                else:
                    self._send(overlays.push(frame.image, item))
        if overlays is not None:
            self._send(overlays.flush())

    def _send(self, judged) -> None:
        """Pass on the frames whose overlay masks the window gave (context frames have no item)."""
        for item, mask in judged:
            if item is not None:
                self._put(self.pending, (*item, mask))

    def results(self) -> Iterator[tuple]:
        """(frame, time_s, records, image, started, overlay mask or None) in frame order."""
        while True:
            item = self._get(self.pending)
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            index, time_s, records, image, started, overlays = item
            if not isinstance(records, list):
                records = records.result()
            yield index, time_s, records, image, started, overlays

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def iterate_results(
    frames: Iterable,
    backend,
    *,
    linker,
    series,
    postprocess: PostprocessSettings | LineFieldSettings,
    settings: PipelineSettings = PipelineSettings(),
    keep_images: bool = False,
    annotations=None,
    context: Iterable = (),
) -> Iterator[FrameResult]:
    """Run frames through backend, post-processing, tracker and series, in frame order.

    Parameters
    ----------
    frames : iterable of Frame
        ``temtrack.sdk.sources.Frame`` objects (index, time_s, (H, W) float32 image).
    backend : Backend
        From :func:`temtrack.sdk.backends.get_backend`.
    linker, series
        A stateful linker (``step(frame, curves) -> ids``) and a series builder
        (``update(frame, time_s, curves, ids) -> (tracks, pairs)``) from
        :mod:`temtrack.tracker`, advanced one frame at a time here.
    postprocess : PostprocessSettings or LineFieldSettings
        Mask post-processing (:mod:`temtrack.sdk.postprocess`), or, for a line-field
        model's backend, line tracing (:mod:`temtrack.sdk.linefield`).
    settings : PipelineSettings
    keep_images : bool
        Attach each frame's image to its result (for overlays).
    annotations : AnnotationSettings, optional
        Find burnt-in overlays (scale bars, labels, cursors) in each frame
        (:class:`temtrack.sdk.annotations.OverlayWindow`: each frame judged with the
        ``annotations.window`` frames before and after it, so results come that many
        frames later) and leave out the dislocations lying mostly on them, before
        tracking; None keeps every one.
    context : iterable of Frame
        The frames just before ``frames`` (as many as ``annotations.window``), only to
        judge the first frames' overlays as a run from further back would: a resumed
        run's. Not segmented, tracked or yielded; read before the stages start.

    Yields
    ------
    FrameResult
        One per frame, in order; the stages run ahead by a bounded number of frames.
    """
    from .preprocess import placement_for

    size = getattr(backend, "input_size", None)
    placements: dict = {}

    def placement_of(shape):
        if size is None and settings.scale is None:
            return None
        if shape not in placements:
            placements[shape] = placement_for(tuple(shape), size, scale=settings.scale)
        return placements[shape]

    context = [] if annotations is None else [frame.image for frame in context]
    stages = _Stages(frames, backend, postprocess, placement_of, settings, keep_images, annotations, context)
    try:
        for index, time_s, records, image, started, overlays in stages.results():
            dropped: list = []
            cut: list = []
            if overlays is not None:  # --- burnt-in overlays (issue 17) ---
                records, dropped, cut = _off_overlays(records, overlays, annotations)
            curves = [record.points for record in records]
            ids = np.asarray(linker.step(index, curves), dtype=np.int64)
            tracks, pairs = series.update(index, time_s, curves, ids)
            yield FrameResult(
                frame=index,
                time_s=time_s,
                dislocations=tuple(records),
                track_ids=ids,
                tracks=tracks,
                pairs=pairs,
                image=image,
                latency_s=time.perf_counter() - started,
                masked_pixels=0 if overlays is None else int(np.count_nonzero(overlays)),
                dropped=tuple(dropped),
                cut=tuple(cut),
            )
    finally:
        stages.close()


def _off_overlays(records: list, mask: np.ndarray, settings) -> tuple[list, list, list]:
    """``(kept, dropped, cut)``: ``records`` without what lies on burnt-in overlays.

    A record is dropped when at least ``settings.share`` of its points lie on ``mask``
    (as :func:`~temtrack.sdk.annotations.on_mask` counts them). Of an open record with
    fewer points on it, the parts on it are cut away and each piece left of at least
    ``settings.min_piece`` px is kept, with its own spline. ``kept`` holds the records
    left whole and the pieces, ``cut`` the ``(record, pieces)`` of each record cut.
    ``settings``: an :class:`~temtrack.sdk.annotations.AnnotationSettings`.
    """
    from .annotations import points_on_mask

    if not records or not mask.any():
        return records, [], []
    kept, dropped, cut = [], [], []
    for record in records:
        on = points_on_mask(record.points, mask)
        if on.mean() >= settings.share:
            dropped.append(record)
        elif not on.any() or record.closed:
            kept.append(record)
        else:
            pieces = tuple(_piece(record, run, mask.shape) for run in _runs(record.points, ~on, settings.min_piece))
            cut.append((record, pieces))
            kept.extend(pieces)
    return kept, dropped, cut


def _runs(points: np.ndarray, off: np.ndarray, min_length: float) -> list[np.ndarray]:
    """The runs of consecutive ``points`` where ``off`` is True that are at least
    ``min_length`` px long along the points."""
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], off.astype(np.int8), [0]])))
    runs = []
    for start, stop in zip(bounds[::2], bounds[1::2]):
        run = points[start:stop]
        if len(run) >= 2 and float(np.hypot(*np.diff(run, axis=0).T).sum()) >= min_length:
            runs.append(run)
    return runs


def _piece(record: DislocationRecord, points: np.ndarray, shape: tuple) -> DislocationRecord:
    """``record`` cut down to ``points`` (a run of its own points): a spline through
    them, with its length, curvature, centroid, share of pixels and edge flag."""
    spline = fit_spline(points, n_points=len(record.points), sigma=0.0)
    return replace(
        record,
        points=spline.points.astype(np.float32),
        length_px=float(spline.length),
        mean_curvature=float(spline.mean_curvature),
        max_curvature=float(spline.max_curvature),
        centroid=tuple(float(v) for v in spline.points.mean(axis=0)),
        n_pixels=int(round(record.n_pixels * spline.length / max(record.length_px, 1e-9))),
        at_edge=_ends_at_edge(spline.points, *shape),
    )


def _ends_at_edge(points: np.ndarray, height: int, width: int) -> bool:
    """Whether an end of ``points`` lies within ``_EDGE`` px of the frame's border."""
    ends = points[[0, -1]]
    return bool(np.any((ends < _EDGE) | (ends > np.array([width - 1, height - 1]) - _EDGE)))
