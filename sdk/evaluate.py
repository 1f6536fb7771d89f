"""Score a segmentation backend on a folder of images with ground truth.

A folder is a synthetic dataset (``dataset.json``, ``images/``, ``masks/``, as
``tem-track synth`` writes it), a folder of labelme JSON files, each next to the
image its ``imagePath`` names, or a folder of line labels (``NAME.png`` with
``NAME_dislocations.png``); :mod:`temtrack.sdk.groundtruth` reads all three. Every image is segmented by the
backend and scored with :func:`~temtrack.sdk.metrics.score_image`; the report (JSON)
records the settings, the backend and the package version, the scores of every image
with its matches, and a summary, and comes with a box plot of the length score
against the number of dislocations per image (thesis Fig. 4.12).

The backend ``"truth"`` predicts the ground-truth masks themselves: its length score
is the ceiling set by the post-processing alone.

Needs numpy, OpenCV and the post-processing; matplotlib only when plotting, tqdm only
for the progress bar. Must never import torch, ``temtrack.training`` or
``temtrack.export``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .groundtruth import (
    EVAL_REPORT_FORMAT,
    GroundTruthError,
    count_images,
    folder_kind,
    iter_ground_truth,
    unlabelled_images,
)
from .linefield import LineFieldSettings, curve_masks, extract_lines
from .metrics import MULTIPLE_RULES, ImageScore, score_image, summarize, summarize_splines
from .atomic import write_atomic
from .postprocess import PostprocessSettings

__all__ = [
    "EvaluationError",
    "EvaluationReport",
    "ImageResult",
    "check_thresholds",
    "default_report_path",
    "evaluate",
    "evaluate_thresholds",
    "format_skipped",
    "format_summary",
    "format_thresholds",
    "plot_length_scores",
    "plot_path",
    "plot_thresholds",
    "read_report_summary",
    "threshold_report_path",
    "thresholds_plot_path",
    "write_report",
]

REPORT_FORMAT = EVAL_REPORT_FORMAT
REPORT_FORMAT_VERSION = 1
TRUTH = "truth"


# A folder that cannot be evaluated is one that cannot be read as ground truth.
EvaluationError = GroundTruthError


@dataclass(frozen=True)
class ImageResult:
    """The scores of one image, with the time the backend took on it (seconds)."""

    image_id: str
    shape: tuple
    score: ImageScore
    predict_seconds: float

    def to_dict(self) -> dict:
        return {
            "image": self.image_id,
            "shape": list(self.shape),
            "predict_seconds": round(self.predict_seconds, 6),
            **self.score.to_dict(),
        }


@dataclass(frozen=True)
class EvaluationReport:
    """What :func:`evaluate` found.

    Attributes
    ----------
    data : str
        The folder evaluated (absolute path).
    kind : {"synthetic", "labelme", "lines"}
    backend : dict
        The backend's ``describe()``.
    settings : dict
        ``postprocess`` (the PostprocessSettings), ``min_dice``, ``multiple`` and
        ``label_width`` (px, labelme folders).
    version : str
        tem-track version.
    images : tuple of ImageResult
        In folder order.
    summary : dict
        :func:`~temtrack.sdk.metrics.summarize` of the images.
    seconds : float
        Wall time of the evaluation.
    skipped_unlabelled : tuple of str
        Names of the images in the folder that no label covers, so were not scored
        (:func:`~temtrack.sdk.groundtruth.unlabelled_images`).
    """

    data: str
    kind: str
    backend: dict
    settings: dict
    version: str
    images: tuple
    summary: dict
    seconds: float
    skipped_unlabelled: tuple = ()

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "format_version": REPORT_FORMAT_VERSION,
            "tem_track_version": self.version,
            "data": self.data,
            "kind": self.kind,
            "backend": self.backend,
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
            "skipped_unlabelled": list(self.skipped_unlabelled),
            "images": [image.to_dict() for image in self.images],
        }


class _Truth:
    """The ground truth as the prediction (the ceiling of post-processing)."""

    name = TRUTH

    def describe(self) -> dict:
        return {"backend": TRUTH, "note": "ground-truth masks used as the prediction"}


# --- evaluating -----------------------------------------------------------------------


def _resolve_backend(backend):
    if isinstance(backend, str):
        if backend == TRUTH:
            return _Truth()
        from .backends import get_backend

        if backend == "auto":
            raise ValueError(
                "the auto backend picks the runtime for a model: give --model MODEL instead "
                "(--model default scores the bundled model)"
            )
        from .backends import MissingModelError

        try:
            return get_backend(backend)
        except MissingModelError:
            raise
        except ValueError as exc:
            raise ValueError(f"{exc} (or {TRUTH!r}: the ground truth itself, the ceiling of post-processing)") from None
    if not (callable(getattr(backend, "predict", None)) and callable(getattr(backend, "describe", None))):
        raise TypeError(
            "backend must be a backend name or an object with predict(frames) and describe(), "
            f"got {type(backend).__name__}"
        )
    return backend


def evaluate(
    data: str | os.PathLike,
    backend,
    *,
    settings: PostprocessSettings | None = None,
    min_dice: float = 0.1,
    multiple: str = "exclude",
    label_width: int = 3,
    line_settings: LineFieldSettings | None = None,
    scale: float | str | None = "auto",
    lines: str = "dark",
    flatten: float | str | None = "auto",
    threshold: float | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Segment every image of a folder with ``backend`` and score it against its ground truth.

    Parameters
    ----------
    data : path
        A synthetic dataset folder, a folder of labelme files or a folder of line
        labels (see :func:`~temtrack.sdk.groundtruth.iter_ground_truth`).
    backend : str or backend object
        A name for :func:`~temtrack.sdk.backends.get_backend` (e.g. ``"classical"``),
        ``"truth"`` (the ground-truth masks as prediction), or an object with
        ``predict(frames)`` and ``describe()``.
    settings : PostprocessSettings, optional
        Post-processing of prediction and ground truth.
    min_dice, multiple
        Matching rules of :func:`~temtrack.sdk.metrics.score_image`.
    label_width : int
        Mask width in pixels for labelme centrelines.
    line_settings : LineFieldSettings, optional
        Post-processing of a line-field model's output
        (:func:`~temtrack.sdk.linefield.extract_lines`); its dislocations are drawn as
        masks along their splines in the image's pixels
        (:func:`~temtrack.sdk.linefield.curve_masks`) and then scored like any mask
        model's.
    scale, lines, flatten
        What the model sees, as in the main job (:class:`~temtrack.sdk.analyzer.Analyzer`,
        whose defaults these are): ``scale`` in model px per image px, or ``"auto"``,
        which for a line-field model measures the line width in up to
        :data:`~temtrack.sdk.linescale.FRAMES` images spread over the folder and
        resamples every image by the one scale it picks
        (:func:`~temtrack.sdk.linescale.choose_scale`); a line-field model's lines are
        mapped back and scored in the image's own pixels. ``lines="bright"`` gives the
        model ``1 - image``; ``flatten`` evens out the illumination
        (:func:`~temtrack.sdk.illumination.flatten`; ``"auto"``: for a line-field
        model). An explicit scale needs a line-field model.
    threshold : float, optional
        The main job's ``--threshold``: a line-field model's upper threshold on its
        centre map (``line_settings.high``; ``low`` and ``min_score`` follow it down
        where they are above it), or a mask model's mask threshold
        (``settings.threshold``). None: as the main job, the model's own threshold
        (its runtime's ``threshold``: a line-field model's ``line_threshold``, a mask
        model's mask threshold) when the settings are not given, else the settings
        as given.
    progress : bool
        Show a progress bar (on a terminal).

    Returns
    -------
    EvaluationReport

    Raises
    ------
    FileNotFoundError, NotADirectoryError, EvaluationError
        See :func:`~temtrack.sdk.groundtruth.iter_ground_truth`; also when the
        folder holds no image.
    ValueError
        Unknown backend name (the message lists the valid ones), or bad settings.
    """
    return evaluate_thresholds(
        data, backend, [threshold], settings=settings, min_dice=min_dice, multiple=multiple,
        label_width=label_width, line_settings=line_settings, scale=scale, lines=lines,
        flatten=flatten, progress=progress,
    )[0]


def evaluate_thresholds(
    data: str | os.PathLike,
    backend,
    thresholds,
    *,
    settings: PostprocessSettings | None = None,
    min_dice: float = 0.1,
    multiple: str = "exclude",
    label_width: int = 3,
    line_settings: LineFieldSettings | None = None,
    scale: float | str | None = "auto",
    lines: str = "dark",
    flatten: float | str | None = "auto",
    progress: bool = True,
) -> tuple[EvaluationReport, ...]:
    """:func:`evaluate` at each of several thresholds, the model run once per image.

    What a threshold buys and costs on one's own labelled frames: each report is
    exactly what ``evaluate(..., threshold=t)`` gives (the same images, the model's
    output computed once and post-processed at every threshold).

    Parameters
    ----------
    thresholds : sequence of float or None
        Distinct thresholds in (0, 1) (see ``threshold`` of :func:`evaluate`); None
        stands for the settings as given.
    Everything else as :func:`evaluate`.

    Returns
    -------
    tuple of EvaluationReport
        One per threshold, in the order given; ``settings["threshold"]`` says which
        (None: the settings' own).
    """
    start = time.perf_counter()
    folder = Path(data)
    kind = folder_kind(folder)
    if isinstance(min_dice, bool) or not isinstance(min_dice, (int, float)) or not 0.0 < min_dice <= 1.0:
        raise ValueError(f"min_dice must be a number in (0, 1], got {min_dice!r}")
    if multiple not in MULTIPLE_RULES:
        raise ValueError(f"multiple must be one of {', '.join(MULTIPLE_RULES)}; got {multiple!r}")
    if isinstance(label_width, bool) or not isinstance(label_width, int) or label_width < 1:
        raise ValueError(f"label_width must be an int >= 1 (pixels), got {label_width!r}")
    given = settings is not None, line_settings is not None
    settings = PostprocessSettings() if settings is None else settings
    line_settings = LineFieldSettings() if line_settings is None else line_settings
    if not isinstance(settings, PostprocessSettings):
        raise TypeError(f"settings must be a PostprocessSettings or None, got {type(settings).__name__}")
    thresholds = check_thresholds(thresholds)
    model = _resolve_backend(backend)
    view = _ModelView.of(model, folder, scale=scale, lines=lines, flatten=flatten)
    skipped = tuple(path.name for path in unlabelled_images(folder, kind=kind))
    fields = getattr(model, "family", "multilabel") == "linefield" and not isinstance(model, _Truth)
    # As in the main job: without a threshold, the model's own (its runtime's
    # ``threshold``), unless the settings were given.
    own = None if given[1 if fields else 0] else getattr(model, "threshold", None)
    thresholds = [own if t is None else t for t in thresholds]
    variants = [_at_threshold(settings, line_settings, t) for t in thresholds]

    from tqdm import tqdm

    results = [[] for _ in thresholds]
    bar = tqdm(
        total=count_images(folder, kind=kind),
        desc=f"eval {getattr(model, 'name', 'backend')}",
        unit="img",
        disable=not (progress and sys.stderr.isatty()),
    )
    try:
        for truth in iter_ground_truth(folder, label_width=label_width):
            tic = time.perf_counter()
            output = placement = None
            if not isinstance(model, _Truth):
                output, placement = view.predict(model, truth.image)
            model_seconds = time.perf_counter() - tic
            for (mask_settings, field_settings), scored in zip(variants, results):
                tic = time.perf_counter()
                curves = None
                if output is None:
                    pred = truth.masks
                elif fields:
                    # The masks (for the thesis' metric) are drawn from the splines; the
                    # spline-level matching takes the splines themselves, as the main job
                    # writes them (in the image's own pixels).
                    found = extract_lines(output, settings=field_settings)
                    curves = [placement.to_frame(d.points) for d in found.dislocations]
                    pred = curve_masks(curves, field_settings.mask_width, truth.image.shape)
                else:
                    pred = output
                seconds = model_seconds + time.perf_counter() - tic
                score = score_image(
                    pred, truth.masks, settings=mask_settings, min_dice=min_dice, multiple=multiple,
                    splines=True, pred_curves=curves,
                )
                scored.append(ImageResult(truth.image_id, tuple(truth.image.shape), score, seconds))
            bar.update()
    finally:
        bar.close()
    if not results[0]:
        raise EvaluationError(f"{folder} holds no image to evaluate")

    from temtrack import __version__

    seconds = time.perf_counter() - start
    return tuple(
        EvaluationReport(
            data=str(folder.resolve()),
            kind=kind,
            backend=model.describe(),
            settings={
                "postprocess": mask_settings.to_dict(),
                "min_dice": float(min_dice),
                "multiple": multiple,
                "label_width": label_width,
                "threshold": threshold,
                **({"linefield": field_settings.to_dict()} if fields else {}),
                **view.describe(),
            },
            version=__version__,
            images=tuple(scored),
            summary={
                **summarize([r.score for r in scored]),
                **summarize_splines([r.score.splines for r in scored]),
            },
            seconds=seconds,
            skipped_unlabelled=skipped,
        )
        for threshold, (mask_settings, field_settings), scored in zip(thresholds, variants, results)
    )


def check_thresholds(thresholds) -> list:
    """``thresholds`` as a list of floats in (0, 1) (None kept), each once; else a
    ValueError naming the value."""
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise TypeError(f"thresholds must be a sequence of numbers, got {thresholds!r}")
    checked = []
    for value in thresholds:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 < value < 1.0:
                raise ValueError(f"a threshold must be a number in (0, 1), got {value!r}")
            value = float(value)
        if value in checked:
            raise ValueError(f"threshold {value!r} is given twice")
        checked.append(value)
    if not checked:
        raise ValueError("give at least one threshold")
    return checked


def _at_threshold(settings: PostprocessSettings, line_settings: LineFieldSettings, threshold):
    """The mask and line-field settings at the main job's ``--threshold``: the masks'
    threshold, and a line-field model's ``high`` with ``low`` and ``min_score`` brought
    down to it where they are above (as :meth:`LineFieldSettings.for_threshold` does
    for the defaults)."""
    if threshold is None:
        return settings, line_settings
    return (
        replace(settings, threshold=threshold),
        replace(line_settings, high=threshold, low=min(line_settings.low, threshold),
                min_score=min(line_settings.min_score, threshold)),
    )


# --- writing --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelView:
    """How ``evaluate`` shows each image to the model: the main job's scale, polarity
    and illumination."""

    scale: float | None
    invert: bool
    flatten: float | None
    choice: dict | None = None  # scale="auto": the ScaleChoice, as the main job records it

    @classmethod
    def of(cls, model, folder: Path, *, scale, lines: str, flatten) -> "_ModelView":
        from .analyzer import LINES
        from .illumination import model_flatten
        from .pipeline import PipelineSettings

        if lines not in LINES:
            raise ValueError(f"lines must be one of {', '.join(map(repr, LINES))}, got {lines!r}")
        if isinstance(scale, str) and scale != "auto":
            raise ValueError(f"scale must be a number > 0, 'auto' or None, got {scale!r}")
        fields = getattr(model, "family", "multilabel") == "linefield" and not isinstance(model, _Truth)
        flatten = model_flatten(flatten, line_field=fields)
        # The numbers are checked as the main job checks them.
        PipelineSettings(scale=None if scale == "auto" else scale, flatten=flatten)
        dynamic = fields and getattr(model, "input_size", None) is None
        if scale not in (None, "auto") and not dynamic:
            raise ValueError(f"scale {scale!r} needs a line-field model that runs at any frame size; "
                             "this backend's images are fitted to its input (give scale='auto' or None)")
        choice = None
        if scale == "auto":
            scale = None
            if dynamic:
                from .linescale import FRAMES, choose_scale
                from .sources.base import _sample_indices

                count = count_images(folder)
                picked = None if count is None else set(_sample_indices(count, FRAMES))
                images = [t.image for k, t in enumerate(iter_ground_truth(folder)) if picked is None or k in picked]
                if picked is None:
                    images = [images[k] for k in _sample_indices(len(images), FRAMES)]
                made = choose_scale(images, invert=lines == "bright")
                choice = made.to_dict()
                scale = None if made.scale == 1.0 else made.scale
        return cls(scale=scale, invert=lines == "bright", flatten=flatten, choice=choice)

    def predict(self, model, image: np.ndarray):
        """The model's output for one image and the Placement that maps it back: a
        model with a fixed input size sees the image letterboxed (its masks come back
        at the image's size, with a placement of scale 1); a line-field model sees it
        resampled by ``scale`` (its fields stay at that size)."""
        from .illumination import photometric
        from .preprocess import apply, placement_for

        size = getattr(model, "input_size", None)
        fixed = size is not None and tuple(size) != image.shape
        placement = placement_for(image.shape, tuple(size) if fixed else None, scale=None if fixed else self.scale)
        seen = photometric(apply(image, placement), invert=self.invert, flatten_sigma=self.flatten)
        output = model.predict(seen[None])[0]
        if fixed:
            return placement.masks_to_frame(output), placement_for(image.shape, None)
        return output, placement

    def describe(self) -> dict:
        return {"model_view": {"scale": self.scale, "lines": "bright" if self.invert else "dark",
                               "flatten": self.flatten, "scale_choice": self.choice}}


def default_report_path(data: str | os.PathLike, backend: str) -> Path:
    """Where ``tem-track eval`` writes without ``--out``: ``<DIR>_<backend>_report.json``
    beside the folder ``DIR``, never inside it (so a dataset stays as it was written).

    >>> default_report_path("data/sd2", "classical").as_posix()
    'data/sd2_classical_report.json'
    """
    folder = Path(data)
    if folder.name in ("", ".", ".."):
        folder = folder.resolve()  # "." must land beside the folder, not in it
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(str(backend)).name) or "backend"
    return folder.parent / f"{folder.name}_{safe}_report.json"


def plot_path(path: str | os.PathLike) -> Path:
    """The box plot beside a report: ``report.json`` -> ``report.png``."""
    return Path(path).with_suffix(".png")


def plot_length_scores(report: EvaluationReport, path: str | os.PathLike) -> Path:
    """Box plot of the per-image length score against the number of ground-truth
    dislocations in the image (thesis Fig. 4.12), as a PNG at ``path`` (replaced)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    groups: dict[int, list[float]] = {}
    for image in report.images:
        groups.setdefault(image.score.n_gt, []).append(image.score.length_score)
    counts = sorted(groups)
    figure = Figure(figsize=(max(4.0, 0.45 * len(counts) + 2.0), 3.6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.boxplot([groups[c] for c in counts], positions=range(len(counts)), widths=0.6)
    axes.set_xticks(range(len(counts)), [str(c) for c in counts])
    for x, c in enumerate(counts):
        axes.annotate(f"n={len(groups[c])}", (x, 1.02), ha="center", va="bottom", fontsize=7, color="0.4")
    axes.set_ylim(-0.02, 1.1)
    axes.set_xlabel("dislocations in the image")
    axes.set_ylabel("length score")
    mean = report.summary["length_score_mean"]
    axes.set_title(f"{Path(report.data).name}, backend {report.backend.get('backend', '?')}: mean {mean:.3f}", fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def write_report(report: EvaluationReport, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the report as JSON at ``path`` and its box plot beside it (``.png``).

    Each file is written to a temporary file in the same folder and renamed, so a
    crash never leaves a half-written report.

    Parameters
    ----------
    report : EvaluationReport
    path : path
        Destination ending in ``.json``; missing parent folders are created.
    overwrite : bool
        Replace existing files instead of raising FileExistsError.

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(report, EvaluationReport):
        raise TypeError(f"report must be an EvaluationReport, got {type(report).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"path must end in .json (the box plot goes beside it as .png), got {path}")
    image = plot_path(path)
    if not overwrite:
        for existing in (path, image):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; pass overwrite (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    plot_length_scores(report, image)
    return path


def threshold_report_path(path: str | os.PathLike, threshold: float) -> Path:
    """Where a threshold comparison puts the report at ``threshold``:
    ``report.json`` -> ``report_t0.6.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_t{threshold:g}{path.suffix}")


def thresholds_plot_path(path: str | os.PathLike) -> Path:
    """Where a threshold comparison puts its plot: ``report.json`` -> ``report_thresholds.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_thresholds.png")


def _threshold_label(report: EvaluationReport) -> str:
    threshold = report.settings.get("threshold")
    return "as set" if threshold is None else f"{threshold:g}"


def format_thresholds(reports) -> str:
    """A plain-text table of :func:`evaluate_thresholds`' reports, one row per threshold:
    the thesis' length score and recall, spline recall, length score of the found
    lines, found over labelled length (median) and labelled / predicted lines per frame."""
    columns = ("threshold", "length score", "recall", "precision", "spline recall", "length, found",
               "found/labelled length", "labelled / predicted per frame")
    rows = []
    for report in reports:
        s = report.summary
        rows.append((
            _threshold_label(report), _cell(s["length_score_mean"]), _cell(s["dislocation_recall_mean"]),
            _cell(s["dislocation_precision_mean"]), _cell(s.get("spline_recall")), _cell(s.get("matched_length_score")),
            _cell(s.get("matched_length_ratio")), _pair(s.get("true_per_frame"), s.get("pred_per_frame")) or "-",
        ))
    widths = [max(len(column), *(len(row[k]) for row in rows)) for k, column in enumerate(columns)]
    first = reports[0]
    lines = [f"{Path(first.data).name} | backend {first.backend.get('backend', '?')} | {len(first.images)} images"]
    lines.append("  ".join(f"{column:>{width}}" for column, width in zip(columns, widths)))
    lines += ["  ".join(f"{cell:>{width}}" for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def plot_thresholds(reports, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """What each threshold finds against how many lines it draws, as a PNG at ``path``:
    spline recall and the thesis' length score (y) against predicted lines per frame
    (x), one point per threshold, labelled with it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite (--overwrite) to replace it")
    figure = Figure(figsize=(5.6, 3.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = [r.summary.get("pred_per_frame", math.nan) for r in reports]
    for key, label, marker in (("spline_recall", "spline recall (found / labelled lines)", "o"),
                               ("length_score_mean", "length score (thesis)", "s")):
        y = [r.summary.get(key, math.nan) for r in reports]
        order = np.argsort(x, kind="stable")
        axes.plot(np.asarray(x)[order], np.asarray(y, float)[order], marker=marker, label=label)
        for xi, yi, report in zip(x, y, reports):
            axes.annotate(_threshold_label(report), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("predicted lines per frame")
    axes.set_ylabel("score")
    axes.set_ylim(0.0, 1.0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    first = reports[0]
    axes.set_title(f"{Path(first.data).name}, {first.backend.get('backend', '?')}: thresholds compared", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def read_report_summary(path: str | os.PathLike) -> dict:
    """The summary of a report :func:`write_report` wrote (``tem-track eval``).

    Raises
    ------
    ValueError
        ``path`` is unreadable, not JSON, or holds no summary.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())["summary"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable 'tem-track eval' report with a summary ({exc})") from None


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pair(a, b) -> str | None:
    return None if a is None or b is None else f"{a:.1f} / {b:.1f}"


def _shares(a, b) -> str | None:
    return None if a is None or b is None else f"{a:.0%} / {b:.0%}"


def format_skipped(report: EvaluationReport, *, limit: int = 10) -> str | None:
    """One line naming the images the evaluation skipped for want of labels, or None.

    >>> report = EvaluationReport("d", "labelme", {}, {}, "0", (None,), {}, 0.0, ("a.png", "b.png"))
    >>> format_skipped(report)
    'skipped 2 of 3 images without labels: a.png, b.png'
    """
    names = report.skipped_unlabelled
    if not names:
        return None
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"skipped {len(names)} of {len(names) + len(report.images)} images without labels: {shown}"


def format_summary(report: EvaluationReport) -> str:
    """A short plain-text table of the summary."""
    s = report.summary
    rows = [
        ("images", s["n_images"], None),
        ("ground-truth dislocations", s["n_gt"], None),
        ("predicted dislocations", s["n_pred"], None),
        ("length score (thesis)", s["length_score_mean"], s["length_score_median"]),
        ("length score, per dislocation", s["length_score_pooled"], None),
        ("pixel Dice", s["pixel_dice_mean"], s["pixel_dice_median"]),
        ("pixel IoU", s["pixel_iou_mean"], s["pixel_iou_median"]),
        ("dislocation precision", s["dislocation_precision_mean"], s["dislocation_precision_median"]),
        ("dislocation recall", s["dislocation_recall_mean"], s["dislocation_recall_median"]),
        ("count error (pred - true)", s["count_error_mean"], s["count_error_median"]),
        ("centreline distance (px)", s["centreline_distance_mean"], None),
        ("spline recall (found / labelled lines)", s.get("spline_recall"), None),
        ("length score, found lines", s.get("matched_length_score"), None),
        ("found length / labelled length", None, s.get("matched_length_ratio")),
        ("  found lines >10 % shorter / longer", _shares(s.get("matched_shorter"), s.get("matched_longer")), None),
        ("labelled / predicted per frame", _pair(s.get("true_per_frame"), s.get("pred_per_frame")), None),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{Path(report.data).name} | backend {report.backend.get('backend', '?')}"]
    view = report.settings.get("model_view")
    if view:
        choice = view.get("scale_choice")
        scale = choice["reason"] if choice else ("the images' own size" if view["scale"] is None else f"scale {view['scale']:g}")
        flat = "as they are" if view["flatten"] is None else f"illumination evened out over {view['flatten']:g} px"
        lines.append(f"model input: {scale}; {view['lines']} lines; {flat}")
    if report.settings.get("threshold") is not None:
        lines.append(f"threshold {report.settings['threshold']:g}")
    lines.append(f"{'':{width}}  {'mean':>8}  {'median':>8}")
    for name, mean, median in rows:
        lines.append(f"{name:{width}}  {_cell(mean):>8}  {_cell(median):>8}")
    return "\n".join(lines)
