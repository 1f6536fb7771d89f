"""The main job from Python: an analyzer made once, run on videos or live frames.

::

    from temtrack import Analyzer
    analyzer = Analyzer("model.onnx")          # the model is loaded once
    result = analyzer.run("video.mp4", "splines.parquet", pixel_size_nm=0.8)
    result.splines.head()                      # pandas DataFrames
    for frame in analyzer.stream(camera_frames()):   # live: one result per frame
        print(frame.frame, len(frame.dislocations))

:func:`process_videos` runs many videos with a pool of processes. No torch here.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .annotations import AnnotationSettings
from .pipeline import FrameResult, PipelineSettings, cap_workers, iterate_results
from .linefield import LineFieldSettings
from .postprocess import PostprocessSettings

__all__ = ["Analyzer", "InputNotice", "LINES", "RunResult", "check_outputs", "process_videos", "resolve_backend"]

#: ``Analyzer(lines=...)``: dislocations darker than the background (bright field) or brighter (dark field).
LINES = ("dark", "bright")


@dataclass
class RunResult:
    """What :meth:`Analyzer.run` produced.

    Attributes
    ----------
    paths : dict of str to Path
        ``splines``, ``tracks``, ``pairs`` (and ``overlay``, ``plots`` when asked); empty
        when no output was asked for.
    frames : int
        Frames processed by this call (not counting resumed ones).
    resumed_frames : int
        Frames taken over from an interrupted run.
    seconds : float
        Wall time of this call.
    splines, tracks, pairs : pandas.DataFrame
        The three tables (read from the files on first access when written; kept in
        memory otherwise).
    """

    paths: dict
    frames: int
    resumed_frames: int
    seconds: float
    _tables: dict = field(default_factory=dict, repr=False)

    def _table(self, name: str):
        if name not in self._tables:
            import pandas as pd

            self._tables[name] = pd.read_parquet(self.paths[name])
        return self._tables[name]

    @property
    def splines(self):
        return self._table("splines")

    @property
    def tracks(self):
        return self._table("tracks")

    @property
    def pairs(self):
        return self._table("pairs")

    @property
    def fps(self) -> float:
        """Frames per second of this call."""
        return self.frames / self.seconds if self.seconds > 0 else math.nan


def _postprocess_for(family: str, postprocess, threshold):
    """The post-processing settings of a backend's model family, checked; ``threshold``
    (the user's, else the model's) is the mask threshold, or for line fields the
    hysteresis' upper threshold."""
    expected = LineFieldSettings if family == "linefield" else PostprocessSettings
    if postprocess is None:
        if family == "linefield":
            return LineFieldSettings.for_threshold(threshold)
        return PostprocessSettings() if threshold is None else PostprocessSettings(threshold=threshold)
    if not isinstance(postprocess, expected):
        other = "multilabel" if family == "linefield" else "linefield"
        raise TypeError(
            f"postprocess must be a {expected.__name__} for this {family!r} model, got {type(postprocess).__name__} "
            f"(the settings of the {other!r} family)"
        )
    return postprocess


class Analyzer:
    """Backend and settings loaded once; videos and live frames run through it.

    Parameters
    ----------
    model : path or str, optional
        A model file: ONNX (``.onnx``), TensorRT engine (``.engine``) or training
        checkpoint (``.pt``); or a model's name (``"default"``, a user model's name; see
        :mod:`temtrack.sdk.models` and ``tem-track models``). Without ``model`` or
        ``backend`` the bundled default model runs (its hash checked at load).
    backend : str or Backend, optional
        A backend name (``temtrack.sdk.backends.backend_names()``), or an object with
        the :class:`~temtrack.sdk.backends.Backend` interface (your own model
        runtime). With ``model`` and without ``providers`` the default is ``"auto"``:
        the fastest way this machine has to run the model
        (:mod:`temtrack.sdk.backends.auto`); :attr:`selection` says which and why.
    postprocess : PostprocessSettings or LineFieldSettings, optional
        Mask-to-spline settings (the threshold defaults to the model's), or for a
        line-field model the line tracing settings
        (:class:`~temtrack.sdk.linefield.LineFieldSettings`).
    threshold : float, optional
        Instead of ``postprocess``: the mask probability threshold, or for a line-field
        model the upper hysteresis threshold on its centreline map.
    tracker : {"curve", "trackpy"}
        Linker (``temtrack.tracker.linker_names()``); ``tracker_options`` its settings.
    batch_size, workers
        :class:`~temtrack.sdk.pipeline.PipelineSettings`.
    scale : float, "auto" or None
        Model px per frame px (:class:`~temtrack.sdk.pipeline.PipelineSettings`). None
        runs a line-field model at the frames' own size and fits frames to a
        fixed-size model's input. ``"auto"`` (the default) does the same for a
        fixed-size model, a mask model or the classical backend. For a line-field
        model, which runs at any size, it measures the width of the lines in a few
        frames spread through each input (a stream's first frame) and resamples the frames so the lines get the width the model was
        trained at when they are far from it
        (:func:`temtrack.sdk.linescale.choose_scale`): a resampling is announced as an
        :class:`InputNotice`, and the choice recorded in the outputs' metadata
        (``"scale_choice"``).
    providers : list of str, optional
        onnxruntime execution providers (implies ``backend="onnxruntime"``).
    lines : {"dark", "bright"}
        Dislocations darker than the background (bright field, the default) or
        brighter (dark field, weak beam): ``"bright"`` gives the model (and the line
        width measure of ``scale="auto"``) the inverted frames, ``1 - frame``.
    flatten : float, "auto" or None
        Even out the illumination of each frame the model sees (vignetting, thickness
        and bend contours) by dividing it by its Gaussian blur of ``flatten`` model px
        (:func:`temtrack.sdk.illumination.flatten`). ``"auto"`` (the default) does so
        for a line-field model, with
        :data:`~temtrack.sdk.illumination.DEFAULT_SIGMA`, and not for a mask model or
        the classical backend; None never does.
    annotations : bool or AnnotationSettings
        Leave out dislocations lying mostly on burnt-in overlays (scale bars and their
        labels, dose text, timestamps, cursors), found in every frame with the help of
        its neighbours (:mod:`temtrack.sdk.annotations`; results then come
        ``window`` frames later, 4 by default); on by default, ``False`` keeps every one.

    Attributes
    ----------
    backend : Backend
    selection : str or None
        With ``backend="auto"``: the announcement of what runs and which faster
        options were not available, and why.
    """

    def __init__(
        self,
        model=None,
        *,
        backend=None,
        postprocess: PostprocessSettings | LineFieldSettings | None = None,
        threshold: float | None = None,
        tracker: str = "curve",
        tracker_options: dict | None = None,
        batch_size: int = 4,
        workers: int | None = None,
        scale: float | str | None = "auto",
        providers: list | None = None,
        annotations: bool | AnnotationSettings = True,
        lines: str = "dark",
        flatten: float | str | None = "auto",
    ):
        from temtrack.tracker import linker_names

        # --- burnt-in overlays (issue 17) ---
        if isinstance(annotations, bool):
            annotations = AnnotationSettings() if annotations else None
        elif not isinstance(annotations, AnnotationSettings):
            raise TypeError(f"annotations must be True, False or an AnnotationSettings, got {annotations!r}")
        self.annotations = annotations

        if tracker not in linker_names():
            raise ValueError(f"unknown tracker {tracker!r}; valid trackers: {', '.join(linker_names())}")
        self.tracker, self.tracker_options = tracker, dict(tracker_options or {})
        self._check_tracker()
        if isinstance(scale, str) and scale != "auto":
            raise ValueError(f"scale must be a number > 0, 'auto' or None, got {scale!r}")
        if lines not in LINES:
            raise ValueError(f"lines must be one of {', '.join(map(repr, LINES))}, got {lines!r}")
        from .illumination import model_flatten

        # Checked before the model loads; "auto" is settled once its family is known.
        settings = PipelineSettings(batch_size=batch_size, workers=cap_workers(workers),
                                    scale=None if scale == "auto" else scale, invert=lines == "bright",
                                    flatten=model_flatten(flatten, line_field=False))
        self.backend, self.selection = resolve_backend(model, backend=backend, providers=providers)
        self.family = getattr(self.backend, "family", "multilabel")
        self.settings = dataclasses.replace(settings, flatten=model_flatten(flatten, line_field=self.family == "linefield"))
        # A model with a fixed input size fits each frame to it, and a mask model or the
        # classical backend runs at the frames' own size: that is their "auto".
        self.auto_scale = (scale == "auto" and self.family == "linefield"
                           and getattr(self.backend, "input_size", None) is None)
        if threshold is not None and postprocess is not None:
            raise ValueError("give either threshold or postprocess (whose settings hold the threshold), not both")
        self.postprocess = _postprocess_for(
            self.family, postprocess, threshold if threshold is not None else getattr(self.backend, "threshold", None)
        )

    def _check_tracker(self):
        try:
            self._new_linker()  # unknown options fail here, not at the first frame
        except TypeError as error:
            raise ValueError(f"tracker {self.tracker!r}: {error}") from None

    def _new_linker(self):
        from temtrack.tracker import make_linker

        return make_linker(self.tracker, **self.tracker_options)

    def describe(self) -> dict:
        """Backend and settings, as recorded in every output."""
        return {
            "backend": self.backend.describe(),
            "selection": self.selection,
            "postprocess": dataclasses.asdict(self.postprocess),
            "tracker": self._new_linker().describe(),
            "pipeline": {"batch_size": self.settings.batch_size, "scale": "auto" if self.auto_scale else self.settings.scale,
                         "lines": "bright" if self.settings.invert else "dark", "flatten": self.settings.flatten},
            "annotations": None if self.annotations is None else dataclasses.asdict(self.annotations),
        }

    def _series(self, pixel_size_nm):
        from temtrack.tracker import SeriesBuilder

        return SeriesBuilder(pixel_size_nm=pixel_size_nm)

    def stream(
        self, frames: Iterable, *, fps: float | None = None, pixel_size_nm: float | None = None, keep_images: bool = False
    ) -> Iterator[FrameResult]:
        """Results frame by frame as frames arrive (a live camera).

        Parameters
        ----------
        frames : iterable
            Of (H, W) arrays (uint8, uint16 or float in [0, 1]) or
            :class:`~temtrack.sdk.sources.Frame` s, or anything
            :func:`~temtrack.sdk.sources.open_source` reads.
        fps, pixel_size_nm : float, optional
            Timing and calibration of the frames.
        keep_images : bool
            Attach each frame to its result.

        Yields
        ------
        FrameResult
            One per frame, in order, as soon as it is done: frames are batched only when
            several are waiting, so at ``batch_size=1`` the latency is one frame's work,
            plus ``annotations.window`` frames (4 by default) while burnt-in overlays
            are looked for (each frame is judged with the frames after it too).
        """
        import itertools

        from .sources import Frame, open_source

        def results(items, pixel_size):
            settings = self.settings
            if self.auto_scale:  # a live stream cannot be read ahead: its first frame decides
                items = iter(items)
                first = next(items, None)
                if first is not None:
                    settings = self._chosen_settings(self._choose_scale("the stream", [first.image]))
                    items = itertools.chain([first], items)
            return iterate_results(
                items,
                self.backend,
                linker=self._new_linker(),
                series=self._series(pixel_size),
                postprocess=self.postprocess,
                settings=settings,
                keep_images=keep_images,
                annotations=self.annotations,
            )

        if not isinstance(frames, (str, Path)) and not hasattr(frames, "shape"):
            frames = iter(frames)
            first = next(frames, None)
            if isinstance(first, Frame):  # already decoded (e.g. FrameSource.frames()): keep their indices
                yield from results(itertools.chain([first], frames), pixel_size_nm)
                return
            frames = itertools.chain([] if first is None else [first], frames)
        with open_source(frames, fps=fps, pixel_size_nm=pixel_size_nm) as source:
            yield from results(source.frames(), source.pixel_size_nm)

    def run(
        self,
        source,
        out=None,
        *,
        start: int = 0,
        end: int | None = None,
        every: int = 1,
        fps: float | None = None,
        pixel_size_nm: float | None = None,
        input_range=None,
        overlay=None,
        plots=None,
        summary: bool = False,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
    ) -> RunResult:
        """Process a video (or stack, folder, array) into tracked splines and series.

        Parameters
        ----------
        source : path, array or iterable
            What :func:`~temtrack.sdk.sources.open_source` reads.
        out : path, optional
            The splines Parquet file; the tracks and pairs tables go beside it
            (``OUT_tracks.parquet``, ``OUT_pairs.parquet``). Without it the tables are
            kept in memory (mind long videos).
        start, end, every : int
            Frames ``start <= index < end``, every ``every``-th.
        fps, pixel_size_nm : float, optional
            Override the source's frame rate and pixel size (nm/px).
        input_range : "auto", "dtype" or (low, high), optional
            How raw values map to [0, 1] (:func:`~temtrack.sdk.sources.open_source`);
            a range read from the data is announced as an :class:`InputNotice` warning
            and recorded in the outputs' metadata.
        overlay : path, optional
            An mp4 with each spline drawn in its track's colour.
        plots : path, optional
            A folder for PNG plots of pair distances and positions against time: small
            multiples, one panel per pile-up, paged (:func:`temtrack.tracker.write_plots`).
        summary : bool
            With ``out``: also write ``OUT_summary.html`` beside the tables, one page with
            the counts, the main time series and overlay stills
            (:mod:`temtrack.sdk.summary`).
        resume : bool
            Continue an interrupted run writing ``out`` after its last complete chunk.
        overwrite : bool
            Replace existing outputs, once the new ones are complete, and only
            tem-track's own (tables with tem-track metadata, overlays it wrote, plot
            folders it wrote or empty ones).
        progress : bool
            A progress bar (frames, fps, ETA) when stderr is a terminal.

        Returns
        -------
        RunResult

        Raises
        ------
        FileExistsError
            An output exists and not ``overwrite``; an output is not tem-track's own;
            another process is writing ``out`` (its PID is named); or an interrupted
            run exists and neither ``resume`` nor ``overwrite`` is given.
        ValueError
            Bad arguments: an output that is the input or another output, an ``out``
            that is a folder, a frame range with no frames in the source.

        Notes
        -----
        All outputs (tables, overlay, plots) are staged under temporary names and
        swapped in together at the end (:class:`~temtrack.sdk.atomic.Transaction`): a
        failure (a full disk, a signal) leaves earlier outputs byte for byte, and the
        frames done so far stay for ``resume``. One run at a time writes ``out``: a lock
        file beside it holds the PID of the run.
        """
        from .atomic import OutputLock, Transaction
        from .results import RunWriter, summary_path
        from .sources import open_source

        check_range(start, end, every)
        if resume and out is None:
            raise ValueError("resume needs out: the partial output to continue")
        began = time.perf_counter()
        out, overlay, plots = check_outputs(source, out, overlay, plots, overwrite, summary)
        summary_file = summary_path(out) if out is not None and summary else None
        ranges = {} if input_range is None else {"input_range": input_range}
        with open_source(source, fps=fps, pixel_size_nm=pixel_size_nm, **ranges) as frames:
            if getattr(frames, "range_note", None):
                warnings.warn(frames.range_note, InputNotice, stacklevel=2)
            check_start(frames, start)
            metadata = self._metadata(frames, start, end, every)
            settings = self.settings
            if self.auto_scale:
                choice = self._choose_scale(frames.name, _spread_frames(frames, start, end, every))
                settings = self._chosen_settings(choice)
                metadata["scale_choice"] = choice.to_dict()
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
            lock = None if out is None else OutputLock(out.with_name(f".{out.name}.lock"), str(out)).acquire()
            try:
                writer = None if out is None else RunWriter(out, metadata=metadata, overwrite=overwrite, resume=resume)
                linker, series = self._new_linker(), self._series(frames.pixel_size_nm)
                stop = end if end is not None else frames.n_frames
                total = None if stop is None else max(0, len(range(start, stop, every)))
                first = start
                overlay_writer = self._overlay(overlay, frames, overwrite)
                memory = _Memory() if writer is None else None
                overlays = _OverlayCount()
                staged = Transaction()
                count = 0
                try:
                    context = ()
                    if writer is not None and writer.chunks:
                        first = self._replay(writer, frames, linker, series, overlay_writer, start, every)
                        # --- burnt-in overlays (issue 17): the frames before the first
                        # one left judge its overlays as in an uninterrupted run ---
                        if self.annotations is not None and self.annotations.window:
                            context = frames.frames(start=max(start, first - self.annotations.window * every),
                                                    end=first, every=every)
                    with progress_bar(total, writer.resumed_frames if writer else 0, progress, frames.name) as bar:
                        results = iterate_results(
                            frames.frames(start=first, end=end, every=every),
                            self.backend,
                            linker=linker,
                            series=series,
                            postprocess=self.postprocess,
                            settings=settings,
                            keep_images=overlay_writer is not None,
                            annotations=self.annotations,
                            context=context,
                        )
                        for result in results:
                            overlays.add(result)
                            if writer is not None:
                                writer.add(result)
                            else:
                                memory.add(result)
                            if overlay_writer is not None:
                                overlay_writer.write(result.image, [d.points for d in result.dislocations], result.track_ids)
                            count += 1
                            bar.update(1)
                    done = count + (writer.resumed_frames if writer is not None else 0)
                    if not done:
                        raise ValueError(
                            f"no frames to process in {frames.name} from frame {start}"
                            + (f" to {end}" if end is not None else "") + f" every {every}"
                        )
                    _warn_constant(frames, done)
                    if self.annotations is not None:
                        metadata["annotations"] = overlays.record()
                    tables = memory.tables(metadata) if memory is not None else {}
                    if writer is not None:
                        tables = writer.stage(staged)
                    if overlay_writer is not None:
                        staged.add(overlay_writer.stage(), overlay)
                    table = _loaded(tables)  # plots and summary read each staged table once
                    if plots is not None:
                        unit = "nm" if frames.pixel_size_nm else "px"
                        staged.add(_stage_plots(table, plots, unit), plots)
                    if summary_file is not None:
                        facts = {**metadata, "frames_processed": done}
                        staged.add(_stage_summary(table, facts, source, summary_file), summary_file)
                    staged.commit()
                except BaseException:
                    staged.discard()
                    if overlay_writer is not None:
                        overlay_writer.abort()
                    if writer is not None:
                        keep_for_resume(writer)
                    raise
            finally:
                if lock is not None:
                    lock.release()
            paths = writer.cleanup() if writer is not None else {}
            if overlay is not None:
                paths["overlay"] = overlay
            if plots is not None:
                paths["plots"] = plots
            if summary_file is not None:
                paths["summary"] = summary_file
        return RunResult(
            paths=paths,
            frames=count,
            resumed_frames=writer.resumed_frames - count if writer is not None else 0,
            seconds=time.perf_counter() - began,
            _tables=tables if memory is not None else {},
        )

    def _choose_scale(self, name: str, images: list | None):
        """``scale="auto"``: the scale for these frames of one input (None: an input
        that can be read only once), announced when it resamples."""
        from .linescale import ScaleChoice, choose_scale

        if images is None:
            choice = ScaleChoice(1.0, None, (), "the input can be read only once, so no frames were sampled for "
                                 "its line width: the frames' own size (give scale=S to resample)")
        else:
            choice = choose_scale(images, invert=self.settings.invert)
        if choice.scale != 1.0 or images is None:
            warnings.warn(f"{name}: {choice.reason}", InputNotice, stacklevel=3)
        return choice

    def _chosen_settings(self, choice) -> PipelineSettings:
        # Scale 1 runs exactly as without a scale (no resampling).
        return dataclasses.replace(self.settings, scale=None if choice.scale == 1.0 else choice.scale)

    def _metadata(self, frames, start, end, every) -> dict:
        from temtrack import __version__

        description = self.describe()
        backend = description["backend"]
        return {
            "tem_track_version": __version__,
            "created_unix_s": time.time(),
            "input": {
                "name": frames.name,
                "kind": frames.kind,
                "shape": list(frames.shape) if frames.shape is not None else None,
                "n_frames": frames.n_frames,
                "metadata": frames.metadata,
            },
            "fps": frames.fps,
            "pixel_size_nm": frames.pixel_size_nm,
            "model": backend.get("model") or backend.get("path"),
            "model_sha256": backend.get("sha256"),
            "backend": backend,
            "settings": {**description, "start": start, "end": end, "every": every, "fps": frames.fps,
                         "pixel_size_nm": frames.pixel_size_nm},
        }

    def _overlay(self, overlay, frames, overwrite):
        if overlay is None:
            return None
        from .overlay import OverlayWriter

        return OverlayWriter(overlay, fps=frames.fps or 15.0, shape=frames.shape, overwrite=overwrite)

    def _replay(self, writer, frames, linker, series, overlay_writer, start, every) -> int:
        """Rebuild the tracker state from an interrupted run's stored frames; return
        the first frame still to process."""
        import numpy as np

        images = frames.frames(start=start, end=writer.next_frame, every=every) if overlay_writer else None
        for frame, time_s, curves, stored in writer.stored_frames():
            ids = np.asarray(linker.step(frame, curves), dtype=np.int64)
            if not np.array_equal(ids, stored):
                raise RuntimeError(
                    f"cannot resume {writer.paths['partial']}: replaying frame {frame} gave other track ids than "
                    "the stored ones; use --overwrite to start over"
                )
            series.update(frame, time_s, curves, ids)
            if images is not None:
                overlay_writer.write(next(images).image, curves, ids)
        return writer.chunks[-1]["last_frame"] + every


class _OverlayCount:
    """What the overlay filter did in a run (issue 17), for its metadata."""

    def __init__(self):
        self.frames = self.frames_masked = self.pixels = self.most = self.dropped = self.cut = 0

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.frames_masked += result.masked_pixels > 0
        self.pixels += result.masked_pixels
        self.most = max(self.most, result.masked_pixels)
        self.dropped += len(result.dropped)
        self.cut += len(result.cut)

    def record(self) -> dict:
        """Counts over the frames processed by this call (not those taken over by resume)."""
        return {
            "frames": self.frames,
            "frames_with_overlays": self.frames_masked,
            "masked_pixels_per_frame": self.pixels / self.frames if self.frames else 0.0,
            "masked_pixels_max": self.most,
            "dislocations_dropped": self.dropped,
            "dislocations_cut": self.cut,
        }


class _Memory:
    """The tables of a run kept in memory (no output file)."""

    def __init__(self):
        self.results: list = []

    def add(self, result: FrameResult) -> None:
        self.results.append(result)

    def tables(self, metadata: dict) -> dict:
        from .results import splines_frame

        return {
            "splines": splines_frame(self.results, metadata.get("pixel_size_nm")),
            "tracks": _concat([r.tracks for r in self.results]),
            "pairs": _concat([r.pairs for r in self.results]),
        }


def _concat(frames):
    import pandas as pd

    frames = [f for f in frames if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def resolve_backend(model=None, *, backend=None, providers: list | None = None) -> tuple:
    """The backend that :class:`Analyzer` runs for its ``model``, ``backend`` and ``providers``.

    In order: a backend object is used as it is; a model name (or no model, with no
    backend or ``"auto"``: the bundled default) becomes its file
    (:func:`~temtrack.sdk.models.resolve_model`); a model file runs on the ``"auto"``
    backend unless a backend or providers are given; anything else is asked of the
    registry (:func:`~temtrack.sdk.backends.get_backend`).

    Parameters
    ----------
    model, backend, providers
        As :class:`Analyzer` takes them.

    Returns
    -------
    backend : Backend
        Built and ready.
    selection : str or None
        With ``"auto"``: what runs, and which faster options were not available and why.

    Raises
    ------
    TypeError
        ``backend`` is neither a name nor an object with the Backend interface.
    ValueError
        A contradictory combination: a backend object and a model, providers with
        ``"auto"``, or a model file on a backend that does not run it.
    """
    from .backends import get_backend, model_backend
    from .models import default_model, resolve_model

    if model is None and (backend is None or backend == "auto"):
        model = default_model()
    elif model is not None:
        model = resolve_model(model)
    if backend is None and model is not None and providers is None:
        backend = "auto"
    if backend == "auto":
        from .backends.auto import choose

        if providers is not None:
            raise ValueError("providers pick the onnxruntime backend: give backend='onnxruntime', not 'auto'")
        choice = choose(str(model))  # model is set: with no model, "auto" runs the bundled one
        return choice.backend, choice.announcement()
    if backend is not None and not isinstance(backend, str):
        for attribute in ("name", "predict", "describe"):
            if not hasattr(backend, attribute):
                raise TypeError(f"backend must be a backend name or have a {attribute!r} (the Backend interface)")
        if model is not None:
            raise ValueError("give model or a backend object, not both")
        return backend, None
    options = {} if providers is None else {"providers": providers}
    if model is None:
        return get_backend(backend, **options), None
    runs_on = model_backend(model)
    if backend is not None and backend != runs_on:
        if backend not in ("onnxruntime", "torch", "tensorrt"):
            raise ValueError(
                f"a model file runs on the 'auto', 'onnxruntime' (.onnx), 'tensorrt' (.engine) or 'torch' "
                f"(.pt checkpoint) backend, not {backend!r}"
            )
        raise ValueError(f"model {model} runs on the {runs_on!r} backend, not {backend!r}")
    return get_backend(str(model), **options), None


def _spread_frames(frames, start: int, end: int | None, every: int) -> list | None:
    """The images of up to ``linescale.FRAMES`` frames spread evenly over the frames a
    run processes (its first and last included); None for an input that can be read
    only once (an iterator)."""
    from .linescale import FRAMES
    from .sources import SourceError
    from .sources.base import _sample_indices

    stop = end if end is not None else frames.n_frames
    if frames.kind == "iterator" or stop is None:
        return None
    indices = range(start, stop, every)
    images = []
    for index in (indices[i] for i in _sample_indices(len(indices), FRAMES)):
        try:
            images.extend(frame.image for frame in frames.frames(start=index, end=index + 1))
        except SourceError:  # e.g. a video shorter than its container says: the run reports it when reached
            continue
    return images


class InputNotice(UserWarning):
    """Something the user should know about the input, e.g. the value range read from the
    data; the run goes on."""


def check_outputs(source, out, overlay, plots, overwrite: bool, summary: bool = False) -> tuple:
    """Refuse outputs that cannot be right, before any work: an output that is the input
    or another output, a folder given as a file (or a file as a folder), an ``out``
    ending in a separator, existing files that are not tem-track's own; returns
    ``(out, overlay, plots)`` as Paths (or None)."""
    import os

    from .overlay import is_overlay
    from .results import check_replaceable, output_paths, summary_path

    if out is not None and str(out).endswith(("/", os.sep)):
        raise ValueError(f"out {out} ends in a path separator; give the splines file, e.g. {Path(out) / 'splines.parquet'}")
    out, overlay, plots = (None if p is None else Path(p) for p in (out, overlay, plots))
    named = {}
    if out is not None:
        if out.is_dir():
            raise ValueError(f"out {out} is a folder; give the splines file, e.g. {out / 'splines.parquet'}")
        named.update({f"out ({key})": path for key, path in output_paths(out).items() if key != "partial"})
        if summary:
            named["out (summary)"] = summary_path(out)
    if overlay is not None:
        if overlay.is_dir():
            raise ValueError(f"overlay {overlay} is a folder; give the video file to write, e.g. {overlay / 'overlay.mp4'}")
        named["overlay"] = overlay
    if plots is not None:
        if plots.exists() and not plots.is_dir():
            raise ValueError(f"plots {plots} is a file; give a folder to write the plots into")
        named["plots"] = plots
    # First what can never be right: an output that is the input, or two outputs in one.
    inputs = [Path(source)] if isinstance(source, (str, os.PathLike)) and Path(source).exists() else []
    seen: dict = {}
    for what, path in named.items():
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise ValueError(f"{seen[key]} and {what} name the same file {path}; give them different names")
        seen[key] = what
        for given in inputs:
            if _same_path(path, given):
                raise ValueError(f"{what.split(' ')[0]} {path} is the input; tem-track never writes over its input: "
                                 "choose another output name")
            if path.is_dir() and _inside(given, path):
                raise ValueError(f"{what.split(' ')[0]} folder {path} holds the input {given}; tem-track never writes "
                                 "over its input: choose another folder")
    # Then existing outputs: replaced only when asked, and only when tem-track wrote them.
    for what, path in named.items():
        if path.exists() and not overwrite:
            raise FileExistsError(f"{what.split(' ')[0]} output {path} already exists; pass --overwrite to replace it")
    if overwrite:
        if out is not None:
            for key, path in output_paths(out).items():
                if key != "partial" and (path.exists() or path.is_symlink()):
                    check_replaceable(path, "output")
            page = summary_path(out)
            if summary and page.exists() and not is_summary(page):
                raise FileExistsError(f"summary {page} exists and is not a summary tem-track wrote, so --overwrite does "
                                      "not replace it; choose another --out or pass --no-summary")
        if overlay is not None and overlay.exists() and not is_overlay(overlay):
            raise FileExistsError(f"overlay {overlay} exists and is not an overlay tem-track wrote, so --overwrite "
                                  "does not replace it; choose another --overlay")
        if plots is not None and plots.is_dir() and any(plots.iterdir()) and not (plots / PLOTS_MARKER).is_file():
            raise FileExistsError(f"plots folder {plots} holds files tem-track did not write, so --overwrite does not "
                                  "replace it; choose another --plots folder")
    for path in named.values():
        _check_writable(path.parent)
    return out, overlay, plots


def _same_path(a: Path, b: Path) -> bool:
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


def _check_writable(folder: Path) -> None:
    """A clear PermissionError for an existing folder this process cannot write to."""
    import errno
    import os

    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # it will be created: the first existing ancestor decides
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "no permission to write in this folder", str(folder))


def check_start(frames, start: int) -> None:
    """Refuse a start past the end of a source whose length is known exactly."""
    n = frames.n_frames
    exact = frames.kind != "video" or frames.metadata.get("frames_exact", False)
    if n is not None and exact and start >= n:
        raise ValueError(f"start {start} is past the end of {frames.name}, which has {n} frames (0 to {n - 1})")


def _warn_constant(frames, processed: int) -> None:
    """Warn about frames whose pixels are all equal: nothing can be found in them."""
    count = getattr(frames, "n_constant_frames", 0)
    if count:
        shown = ", ".join(str(i) for i in getattr(frames, "constant_frames", [])[:10])
        more = ", ..." if count > 10 else ""
        warnings.warn(
            f"{count} of {processed} frames are constant (every pixel the same value: a blank or missing frame), "
            f"so nothing can be found in them: frames {shown}{more}",
            InputNotice,
            stacklevel=3,
        )


def keep_for_resume(writer) -> None:
    """After a failure: store the frames done (for resume); drop a partial run that
    holds none, so the next run is not told to resume nothing."""
    import shutil

    try:
        writer.flush()
    except Exception:  # the original error (a full disk, ...) is the one to report
        pass
    if not writer.chunks:
        shutil.rmtree(writer.paths["partial"], ignore_errors=True)


def check_range(start, end, every) -> None:
    """Refuse frame ranges that select nothing or are not integers (``start``, ``end``, ``every``)."""
    for name, value in (("start", start), ("every", every)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if end is not None and (not isinstance(end, int) or end <= start):
        raise ValueError(f"end must be an integer > start ({start}), got {end!r}")


def progress_bar(total, initial, enabled, name):
    """A frames progress bar named after the input, shown only when ``enabled`` and on a terminal."""
    from tqdm import tqdm

    quiet = not (enabled and getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(total=total, initial=initial, unit="frame", desc=Path(str(name)).name, disable=quiet, smoothing=0.1)


PLOTS_MARKER = "plots.json"


def _loaded(tables: dict):
    """``table(name)``: a run's table as a DataFrame (kept in memory, or a staged Parquet
    file read on first use and then kept)."""
    import pandas as pd

    cache: dict = {}

    def table(name):
        if name not in cache:
            value = tables[name]
            cache[name] = value if isinstance(value, pd.DataFrame) else pd.read_parquet(value)
        return cache[name]

    return table


def _stage_summary(table, metadata: dict, source, path: Path) -> Path:
    """The run's ``summary.html`` (:mod:`temtrack.sdk.summary`) under a temporary name
    beside ``path``, from ``table(name)`` (:func:`_loaded`)."""
    import os

    from .atomic import PendingFile
    from .summary import write_summary

    pending = PendingFile(path)
    frames = {name: table(name) for name in ("splines", "tracks", "pairs")}
    stills = source if isinstance(source, (str, os.PathLike)) else None
    try:
        write_summary(pending.tmp, **frames, metadata=metadata, source=stills)
    except BaseException:
        pending.discard()
        raise
    return pending.tmp


def is_summary(path: Path) -> bool:
    """Whether ``path`` is a summary page tem-track wrote (its generator tag says so)."""
    from .summary import GENERATOR_TAG

    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return GENERATOR_TAG in handle.read(4096)
    except OSError:
        return False


def _stage_plots(table, folder: Path, unit: str) -> Path:
    """The plots of a run's tables (``table(name)``, :func:`_loaded`) in a new temporary
    folder beside ``folder``, with the marker that makes it tem-track's own."""
    import json

    from temtrack import __version__
    from temtrack.tracker import write_plots

    from .atomic import new_partial_folder, write_atomic

    staged = new_partial_folder(folder)
    try:
        names = [path.name for path in write_plots(table("tracks"), table("pairs"), staged, unit=unit)]
        write_atomic(staged / PLOTS_MARKER, json.dumps({"written_by": "tem-track", "version": __version__, "files": names}))
    except BaseException:
        import shutil

        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _process_one(job) -> dict:
    video, out, options, run_options = job
    began = time.perf_counter()
    try:
        result = Analyzer(**options).run(video, out, progress=False, **run_options)
        return {"video": str(video), "out": str(out), "frames": result.frames, "seconds": result.seconds, "error": None}
    except Exception as error:  # reported per video; one bad file does not stop the batch
        return {"video": str(video), "out": str(out), "frames": 0, "seconds": time.perf_counter() - began,
                "error": f"{type(error).__name__}: {error}"}


def _video_worker(job, connection) -> None:
    """One video in its own process; the report goes back through ``connection``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the workers
    try:
        connection.send(_process_one(job))
    finally:
        connection.close()


def process_videos(videos: Iterable, out_dir, *, processes: int = 2, progress: bool = True, analyzer: dict | None = None,
                   **run_options) -> list[dict]:
    """Run many videos, one process per video, ``processes`` at a time.

    Parameters
    ----------
    videos : iterable of path
    out_dir : path
        ``OUT_DIR/<video stem>.parquet`` (+ ``_tracks``, ``_pairs``) per video.
    processes : int
        Videos processed at once; each runs its post-processing inline.
    progress : bool
        A progress bar over videos on a terminal.
    analyzer : dict, optional
        Keyword arguments of :class:`Analyzer` (``model``, ``backend``, ...).
    **run_options
        Keyword arguments of :meth:`Analyzer.run` (``every``, ``pixel_size_nm``,
        ``resume``, ``overwrite``, ...).

    Returns
    -------
    list of dict
        Per video, in the order given: ``video``, ``out``, ``frames``, ``seconds`` and
        ``error`` (None, or what went wrong). A video that fails, or whose process dies
        (killed, out of memory), is reported as failed and the others still run; its
        finished frames stay for ``resume``.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    from tqdm import tqdm

    from .pipeline import interrupts_ignored

    videos = [Path(v) for v in videos]
    stems = [v.stem for v in videos]
    if len(set(stems)) != len(stems):
        raise ValueError("videos must have distinct file names: their outputs are named after them")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {**(analyzer or {}), "workers": 0}
    Analyzer(**options)  # a bad model or option fails once, here
    jobs = [(video, out_dir / f"{video.stem}.parquet", options, run_options) for video in videos]
    quiet = not (progress and getattr(sys.stderr, "isatty", lambda: False)())
    context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    reports: list = [None] * len(jobs)
    running: dict = {}  # connection -> (job index, process, started)
    waiting = list(range(len(jobs)))
    try:
        with tqdm(total=len(jobs), unit="video", disable=quiet) as bar:
            while waiting or running:
                while waiting and len(running) < processes:
                    index = waiting.pop(0)
                    receive, send = context.Pipe(duplex=False)
                    process = context.Process(target=_video_worker, args=(jobs[index], send), daemon=True)
                    with interrupts_ignored():
                        process.start()
                    send.close()  # the child holds the only writer: its death closes the pipe
                    running[receive] = (index, process, time.perf_counter())
                for connection in wait(list(running)):
                    index, process, started = running.pop(connection)
                    try:
                        reports[index] = connection.recv()
                    except (EOFError, OSError):  # the process died before it reported
                        process.join()
                        video, out = jobs[index][:2]
                        reports[index] = {"video": str(video), "out": str(out), "frames": 0,
                                          "seconds": time.perf_counter() - started,
                                          "error": f"its worker process died ({_exit_reason(process.exitcode)})"}
                    connection.close()
                    process.join()
                    bar.update(1)
    finally:
        for connection, (_, process, _) in running.items():  # interrupted: end the videos still running
            process.terminate()
            process.join(timeout=10)
            connection.close()
    return reports


def _exit_reason(code) -> str:
    """A process exit code in words: ``killed by SIGKILL`` or ``exit code 3``."""
    import signal

    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
