"""Dislocation loops and black dots: classical detection, measurement and tracking (issue 21).

No neural model: a classical baseline in the spirit of Shen's thesis (ch. 3.3, where
YOLO finds the boxes and a watershed plus ellipse fit measures them).

Detection of one frame (:func:`detect_loops`):

1. optional median filter (salt-and-pepper noise);
2. background flattening: ``residual = background - image`` where ``background`` is a
   grey closing (a max-then-min filter wider than the largest object, which removes the
   dark objects) smoothed by a Gaussian; dark objects are positive in ``residual``;
3. ``residual`` smoothed by a small Gaussian; the noise level ``sigma`` is its robust
   (MAD) spread; seeds are local maxima above ``threshold * sigma``;
4. each seed, strongest first: the object is the connected region above
   ``join * peak`` around it, closed by a disk of radius ``bridge`` (joins a coffee bean's lobes and a ring's arcs), measured
   as the convex hull of its pixels above ``0.5 * peak`` (the half-maximum extent, the
   ground-truth convention of :mod:`temtrack.training.synth.loops`); when that joined
   object is too big or elongated (two touching loops), the half-maximum part around
   the seed alone is used instead (a cheap stand-in for Shen's watershed split); seeds
   inside an object already found are skipped;
5. rejected: sizes outside ``[min_size, max_size]``, aspect above ``max_aspect``,
   objects within ``overlay_margin`` px of burnt-in white (pixels >= ``overlay_white``:
   scale bars and white labels with dark outlines), and objects with overlay-sharp
   edges (largest gradient per unit depth above ``max_steepness``: burnt-in black text
   has 1-px edges, specimen contrast is blurred by the optics), and objects centred in
   a hand-given ``exclude`` box (a burnt-in label the rules do not catch).

Per object: centre ``x``, ``y`` (column, row px; intensity-weighted centroid of the
half-maximum region), ellipse ``major``, ``minor`` (full axes, px, second moments of the
hull), ``angle`` (degrees from +x towards +y, [0, 180)), ``area`` (hull px),
``contrast`` (peak depth in image units) and ``snr`` (depth / noise).

:func:`track_loops` streams a source, detects, links with
:func:`temtrack.tracker.loops.link_loops` (trackpy) and writes ``loops.parquet``
atomically with provenance metadata under :data:`~temtrack.sdk.results.METADATA_KEY`.

numpy, OpenCV, scipy, scikit-image, pandas; pyarrow when writing. Never torch, training
or export.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

__all__ = ["LOOP_COLUMNS", "LoopResult", "LoopSettings", "detect_loops", "track_loops"]

# Column -> (pyarrow type, description) of loops.parquet.
LOOP_COLUMNS = {
    "frame": ("int64", "frame index in the source (0-based)"),
    "time_s": ("float64", "seconds from the first frame (NaN without timing)"),
    "track_id": ("int64", "persistent id of the loop across frames (trackpy)"),
    "x": ("float64", "centre, column px"),
    "y": ("float64", "centre, row px"),
    "major": ("float64", "major axis of the half-maximum ellipse, px (the size)"),
    "minor": ("float64", "minor axis, px"),
    "angle": ("float64", "major axis direction, degrees from +x towards +y, [0, 180)"),
    "area": ("float64", "half-maximum region (convex hull) px"),
    "contrast": ("float64", "peak darkening below the local background, image units"),
    "snr": ("float64", "contrast / frame noise"),
    "major_nm": ("float64", "major axis, nm (null without a pixel size)"),
}


@dataclass(frozen=True)
class LoopSettings:
    """Settings of the classical loop detector and of the linking; lengths in px.

    Unknown keys are rejected by :meth:`from_dict`. ``link`` holds the options of
    :class:`temtrack.tracker.loops.LoopLinkSettings` (``search_range``, ``memory``, ...).
    """

    min_size: float = 4.0
    max_size: float = 40.0
    median: int = 0  # median filter width (0 = off; 3 for salt-and-pepper noise)
    smooth_sigma: float = 1.0
    threshold: float = 5.0  # seed level, in noise sigmas
    join: float = 0.3  # fraction of the peak that joins an object's parts
    bridge: int = 2  # px: parts closer than twice this are one object
    max_aspect: float = 3.0
    overlay_white: float = 0.94
    overlay_margin: int = 4
    max_steepness: float = 0.9  # largest |gradient| per unit depth, 1/px
    exclude: tuple = ()  # boxes (x0, y0, x1, y1) px, end exclusive, where no object is kept (burnt-in labels)
    link: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("min_size", "max_size", "smooth_sigma", "threshold", "max_aspect", "max_steepness"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"LoopSettings.{name} must be a positive number, got {value!r}")
        if self.min_size >= self.max_size:
            raise ValueError(f"LoopSettings.min_size ({self.min_size}) must be below max_size ({self.max_size})")
        if not (0 < self.join < 0.5):
            raise ValueError(f"LoopSettings.join must be in (0, 0.5), got {self.join!r}")
        if self.median not in (0, 3, 5):
            raise ValueError(f"LoopSettings.median must be 0, 3 or 5, got {self.median!r}")
        boxes = tuple(tuple(int(v) for v in box) for box in self.exclude)
        if any(len(box) != 4 for box in boxes):
            raise ValueError(f"LoopSettings.exclude must hold (x0, y0, x1, y1) boxes, got {self.exclude!r}")
        object.__setattr__(self, "exclude", boxes)
        if not isinstance(self.link, dict):
            raise TypeError(f"LoopSettings.link must be a dict of linking options, got {type(self.link).__name__}")

    @classmethod
    def from_dict(cls, options: dict | None) -> "LoopSettings":
        options = dict(options or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"unknown loop option(s) {', '.join(map(repr, unknown))}; valid options: {', '.join(names)}")
        return cls(**options)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D (H, W) gray array, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number):
        raise TypeError(f"image must be numeric, got dtype {image.dtype}")
    return image.astype(np.float32)  # a copy: the input is never modified


def flatten(image: np.ndarray, *, max_size: float, median: int = 0, smooth_sigma: float = 1.0) -> np.ndarray:
    """Dark objects as positive ``residual = background - image``, ``(H, W)`` float32."""
    import cv2

    work = cv2.medianBlur(image, median) if median else image
    smooth = cv2.GaussianBlur(work, (0, 0), smooth_sigma)
    k = 2 * int(math.ceil(max_size / 2)) + 3
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    background = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REFLECT)
    background = cv2.GaussianBlur(background, (0, 0), max_size / 4)
    return background - smooth


def detect_loops(image, *, settings: LoopSettings | None = None):
    """Find dark loops and black dots in one frame and measure their ellipses.

    Parameters
    ----------
    image : (H, W) array_like of float
        Gray frame, bright field (objects darker than the background), values in [0, 1].
    settings : LoopSettings, optional

    Returns
    -------
    pandas.DataFrame
        One row per object, columns ``x``, ``y``, ``major``, ``minor``, ``angle``,
        ``area``, ``contrast``, ``snr`` (px, degrees, image units; see module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:64, :64]
    >>> frame = 0.6 - 0.3 * np.exp(-((xx - 30.0) ** 2 + (yy - 20.0) ** 2) / (2 * 3.0 ** 2))
    >>> found = detect_loops(frame)
    >>> len(found), round(float(found.x[0]), 1), round(float(found.y[0]), 1)
    (1, 30.0, 20.0)
    """
    import cv2
    import pandas as pd
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import regionprops
    from skimage.morphology import convex_hull_image

    s = settings or LoopSettings()
    if not isinstance(s, LoopSettings):
        raise TypeError(f"settings must be a LoopSettings, got {type(s).__name__}")
    image = _check_image(image)
    residual = flatten(image, max_size=s.max_size, median=s.median, smooth_sigma=s.smooth_sigma)
    centre = float(np.median(residual))
    sigma = max(1.4826 * float(np.median(np.abs(residual - centre))), 1e-4)
    peaks = peak_local_max(residual, min_distance=max(int(s.min_size // 2), 1), threshold_abs=centre + s.threshold * sigma,
                           exclude_border=False)
    grad = None
    white = None
    if (image >= s.overlay_white).any():
        # Opening first: isolated bright pixels (salt noise, shot noise) are not overlays.
        solid = cv2.morphologyEx((image >= s.overlay_white).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        white = cv2.dilate(solid, np.ones((2 * s.overlay_margin + 1,) * 2, np.uint8)) > 0
    height, width = image.shape
    reach = int(math.ceil(s.max_size))
    taken = np.zeros(image.shape, bool)
    excluded = None
    if s.exclude:
        excluded = np.zeros(image.shape, bool)
        for x0, y0, x1, y1 in s.exclude:
            excluded[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    bridge = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * s.bridge + 1,) * 2)
    rows = []
    for r, c in peaks[np.argsort(-residual[peaks[:, 0], peaks[:, 1]])] if len(peaks) else []:
        if taken[r, c]:
            continue
        y0, y1, x0, x1 = max(r - reach, 0), min(r + reach + 1, height), max(c - reach, 0), min(c + reach + 1, width)
        crop = residual[y0:y1, x0:x1] - centre
        peak = float(crop[r - y0, c - x0])
        measured = None
        # First the joined object (closing bridges gaps of up to 2 * bridge px: a coffee
        # bean's line of no contrast); if that is too big or elongated (two touching
        # loops, or a loop merged with dark texture), the half-maximum part alone.
        for level, close in ((s.join, True), (0.5, False)):
            mask = (crop >= level * peak).astype(np.uint8)
            if close:
                mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, bridge)
            labels, _ = ndimage.label(mask > 0)
            part = labels == labels[r - y0, c - x0]
            core = part & (crop >= 0.5 * peak) & ~taken[y0:y1, x0:x1]
            if core.sum() < 3:
                break
            hull = convex_hull_image(core)
            prop = regionprops(hull.astype(np.int32))[0]
            major, minor = float(prop.axis_major_length), float(prop.axis_minor_length)
            if s.min_size <= major <= s.max_size and minor > 0 and major / minor <= s.max_aspect:
                measured = core, hull, prop, major, minor
                break
        if measured is None:
            continue
        core, hull, prop, major, minor = measured
        taken[y0:y1, x0:x1] |= hull
        if excluded is not None and excluded[r, c]:
            continue
        if white is not None and white[y0:y1, x0:x1][hull].any():
            continue
        if grad is None:
            gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3) / 8
            gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3) / 8
            grad = np.hypot(gx, gy)
        ring = cv2.dilate(hull.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if float(grad[y0:y1, x0:x1][ring].max()) / peak > s.max_steepness:
            continue
        weight = np.where(core, crop, 0.0)
        total = float(weight.sum())
        ys, xs = np.nonzero(weight)
        cy = float((ys * weight[ys, xs]).sum() / total) + y0
        cx = float((xs * weight[ys, xs]).sum() / total) + x0
        angle = math.degrees(math.pi / 2 - prop.orientation) % 180.0
        rows.append((cx, cy, major, minor, angle, float(prop.area), peak, peak / sigma))
    return pd.DataFrame(rows, columns=["x", "y", "major", "minor", "angle", "area", "contrast", "snr"])


@dataclass
class LoopResult:
    """What :func:`track_loops` found.

    Attributes
    ----------
    loops : pandas.DataFrame
        One row per loop per frame, columns :data:`LOOP_COLUMNS`.
    tracks : pandas.DataFrame
        One row per track (:func:`temtrack.tracker.loops.track_summary`): lifetime, size,
        D_eff in 2-D and 1-D with confidence intervals.
    metadata : dict
        Provenance written into the Parquet file.
    path : Path or None
        ``loops.parquet`` when written.
    """

    loops: object
    tracks: object
    metadata: dict
    path: Path | None = None


def track_loops(source, out=None, *, start: int = 0, end: int | None = None, every: int = 1,
                settings: LoopSettings | dict | None = None, overwrite: bool = False) -> LoopResult:
    """Detect, measure and link loops in a video; optionally write ``loops.parquet``.

    Parameters
    ----------
    source : path, ndarray or iterable
        Anything :func:`temtrack.sdk.sources.open_source` opens.
    out : path, optional
        Parquet file to write atomically (columns :data:`LOOP_COLUMNS`; provenance as
        JSON under the key ``temtrack``). An existing file raises
        :class:`FileExistsError` unless ``overwrite``.
    start, end, every : int
        Frames ``start, start + every, ... < end`` (``end`` None: to the last).
    settings : LoopSettings or dict, optional

    Returns
    -------
    LoopResult
    """
    import pandas as pd

    from temtrack import __version__
    from temtrack.tracker.loops import LoopLinkSettings, link_loops, track_summary

    from .sources import open_source

    if isinstance(settings, dict) or settings is None:
        settings = LoopSettings.from_dict(settings)
    if not isinstance(settings, LoopSettings):
        raise TypeError(f"settings must be a LoopSettings, a dict or None, got {type(settings).__name__}")
    link = LoopLinkSettings.from_options("loop linking", settings.link)
    for name, value in (("start", start), ("every", every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "start" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'start' else 1}, got {value!r}")
    if out is not None:
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"output {out} exists; pass overwrite=True to replace it")
    opened = open_source(source)
    parts, frames = [], 0
    for frame in opened.frames(start=start, end=end, every=every):
        found = detect_loops(frame.image, settings=settings)
        found.insert(0, "time_s", frame.time_s)
        found.insert(0, "frame", frame.index)
        parts.append(found)
        frames += 1
    detections = pd.concat(parts, ignore_index=True) if parts else detect_loops(np.zeros((8, 8), np.float32)).assign(frame=0, time_s=0.0)
    linked = link_loops(detections, settings=link)
    pixel = opened.pixel_size_nm
    linked["major_nm"] = linked["major"] * pixel if pixel else np.nan
    linked = linked[list(LOOP_COLUMNS)].astype({"frame": "int64", "track_id": "int64"})
    metadata = {
        "kind": "loops", "version": __version__, "source": str(source) if isinstance(source, (str, Path)) else type(source).__name__,
        "start": start, "end": end, "every": every, "frames_processed": frames,
        "fps": opened.fps, "pixel_size_nm": pixel, "detector": "classical",
        "settings": settings.to_dict(), "link_settings": link.to_dict(),
    }
    path = None
    if out is not None:
        path = _write(linked, out, metadata)
    tracks = track_summary(linked, settings=link)
    return LoopResult(loops=linked, tracks=tracks, metadata=metadata, path=path)


def _write(table, out: Path, metadata: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import write_atomic
    from .results import METADATA_KEY

    schema = pa.schema([(name, pa.from_numpy_dtype(np.dtype(kind))) for name, (kind, _) in LOOP_COLUMNS.items()])
    arrow = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    arrow = arrow.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, default=str).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, lambda tmp: pq.write_table(arrow, tmp))
