"""Dislocation loops and black dots: classical detection, measurement and tracking (issue 21).

No neural model: a classical baseline in the spirit of Shen's thesis (ch. 3.3, where
YOLO finds the boxes and a watershed plus ellipse fit measures them).

Detection of one frame (:func:`detect_loops`):

1. a median filter (``median``; by default on frames with salt-and-pepper noise only);
2. background flattening: ``residual = background - image`` where ``background`` is a
   grey closing (a max-then-min filter wider than the largest object, which removes the
   dark objects) smoothed by a Gaussian; dark objects are positive in ``residual``;
3. ``residual`` smoothed by a small Gaussian; the noise level ``sigma`` is its robust
   (MAD) spread; seeds are local maxima above ``threshold * sigma``;
4. each seed, strongest first: the object is the connected region above
   ``join * peak`` around it, closed by a disk of radius ``bridge`` (joins a coffee bean's lobes and a ring's arcs), measured
   as the convex hull of its pixels above ``0.5 * peak`` (the half-maximum extent, the
   ground-truth convention of :mod:`temtrack.training.synth.loops`); when the joined
   object holds several seeds and is more elongated than ``split_aspect`` (loops that
   touch side by side; one ring or coffee bean is rounder), Shen's split: a watershed of
   the distance transform of its closed half-maximum region from the maxima standing
   ``neck`` px above their neck (:func:`_split_touching`), the seed's piece kept when it
   is rounder; when the object is still too big or elongated, the half-maximum part
   around the seed alone; seeds inside an object already found are skipped;
5. rejected: sizes outside ``[min_size, max_size]``, aspect above ``max_aspect``,
   objects within ``overlay_margin`` px of burnt-in white (pixels >= ``overlay_white``:
   scale bars and white labels with dark outlines), and objects with overlay-sharp
   edges (largest gradient of the 3x3 median per unit depth above ``max_steepness``: burnt-in black text
   has 1-px edges, specimen contrast is blurred by the optics), burnt-in black text
   (at least 3 % of the object and its 2 px surround at most ``overlay_black`` gray
   after a 3x3 median, with an edge of at least ``overlay_edge`` gray per px), objects
   within ``overlay_margin`` px of a given annotation ``mask`` (from
   :func:`temtrack.sdk.annotations.annotation_mask` in :func:`track_loops`), and
   objects centred in a hand-given ``exclude`` box (a burnt-in label the rules miss);
6. coffee beans found as their two lobes (a line of no contrast wider than the
   bridges) are joined (``pair_lobes``, :func:`_pair_lobes`): two elongated, parallel,
   alike objects facing each other across a gap of at most ``pair_gap`` px.

Per object: centre ``x``, ``y`` (column, row px; centroid of the half-maximum region,
each pixel weighted by its depth above the half maximum, so that pixels crossing the
threshold from frame to frame move the centre by little), ellipse ``major``, ``minor`` (full axes, px, second moments of the
hull), ``angle`` (degrees from +x towards +y, [0, 180)), ``area`` (hull px),
``contrast`` (peak depth in image units) and ``snr`` (depth / noise).

:func:`track_loops` streams a source, detects (dropping objects on the burnt-in
overlays that :func:`temtrack.sdk.annotations.annotation_mask` finds in frames sampled
over the range, when that module is installed), links with
:func:`temtrack.tracker.loops.link_loops` (trackpy) and writes ``loops.parquet`` and
``loops_tracks.parquet`` (and optionally an overlay video) as the main job writes its
outputs: chunks stored as it goes in ``.loops.parquet.partial/`` for ``resume``, a lock
file, and the outputs swapped in together at the end, with provenance metadata under
:data:`~temtrack.sdk.results.METADATA_KEY`.

numpy, OpenCV, scipy, scikit-image, pandas; pyarrow when writing. Never torch, training
or export.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

# An object is burnt-in text when at least this share of it and its 2 px surround is
# burnt-in black (with a sharp edge): specimen contrast on fecral reaches that black in a
# few pixels of the darkest dots only, and with blurred edges.
_TEXT_BLACK_SHARE = 0.03
# An object is a glyph on a white overlay when at least this share of its 2 px surround
# is near-saturated white (>= LoopSettings.overlay_white), even where that white is too
# patchy to survive the opening of the white-mark rule (a status bar blended with the
# next clip's while the video scrolls, fecral frame 987, whose 9 glyph objects have
# 9-33 %). Specimen loops have none: 0 of 2869 objects in every 25th fecral frame; noise
# on the brightest synthetic backgrounds gives about 3 %.
_WHITE_SHARE = 0.08
# Impulse noise: a pixel this far from its 3x3 median is a spike; frames with more than
# this share of spikes get the median filter (LoopSettings.median "auto").
_IMPULSE_STEP = 0.25
# Coffee-bean lobes (_pair_lobes): each lobe at least this elongated, axes parallel and
# facing each other within _LOBE_ANGLE degrees, lengths and depths within _LOBE_LIKE;
# the joined bean no more elongated than _LOBE_BEAN_ASPECT.
_LOBE_ASPECT = 1.15
_LOBE_ANGLE = 25.0
_LOBE_LIKE = 1.5
_LOBE_BEAN_ASPECT = 2.5
_IMPULSE_SHARE = 0.002

__all__ = ["LOOP_COLUMNS", "LOOP_TRACK_COLUMNS", "LoopResult", "LoopSettings", "detect_loops", "ellipse_curve",
           "loop_output_paths", "track_loops"]

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
    # Median filter width before flattening: 0 (off), 3, 5, or "auto": 3 on frames with
    # impulse noise (salt and pepper: over 0.2 % of pixels 0.25 off their 3x3 median,
    # spikes that would seed false objects), else off (a median shifts thin features,
    # e.g. a coffee bean's gap, by up to a pixel).
    median: int | str = "auto"
    smooth_sigma: float = 1.0
    threshold: float = 5.0  # seed level, in noise sigmas
    join: float = 0.3  # fraction of the peak that joins an object's parts
    bridge: int = 2  # px: parts closer than twice this are one object
    neck: float = 1.0  # px: a joined object with distance maxima this far above the neck between them is split there
    split_aspect: float = 1.9  # joined objects more elongated than this are tried for a split
    max_aspect: float = 3.0
    overlay_white: float = 0.94
    overlay_margin: int = 4
    max_steepness: float = 0.9  # largest |gradient| per unit depth, 1/px
    overlay_black: float = 0.06  # burnt-in black: at most this gray (3x3 median) ...
    overlay_edge: float = 0.19  # ... with an edge of at least this |gradient| (gray per px): text
    exclude: tuple = ()  # boxes (x0, y0, x1, y1) px, end exclusive, where no object is kept (burnt-in labels)
    pair_lobes: bool = True  # join a coffee bean found as its two lobes (_pair_lobes)
    pair_gap: float = 6.0  # px: widest line of no contrast between a bean's lobes
    annotations: str = "auto"  # "auto": mask burnt-in overlays found from sampled frames (track_loops); "off"
    link: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("min_size", "max_size", "smooth_sigma", "threshold", "neck", "pair_gap", "split_aspect", "max_aspect", "max_steepness",
                     "overlay_black", "overlay_edge"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"LoopSettings.{name} must be a positive number, got {value!r}")
        if self.min_size >= self.max_size:
            raise ValueError(f"LoopSettings.min_size ({self.min_size}) must be below max_size ({self.max_size})")
        if not (0 < self.join < 0.5):
            raise ValueError(f"LoopSettings.join must be in (0, 0.5), got {self.join!r}")
        if isinstance(self.median, bool) or self.median not in (0, 3, 5, "auto"):
            raise ValueError(f"LoopSettings.median must be 0, 3, 5 or 'auto', got {self.median!r}")
        boxes = tuple(tuple(int(v) for v in box) for box in self.exclude)
        if any(len(box) != 4 for box in boxes):
            raise ValueError(f"LoopSettings.exclude must hold (x0, y0, x1, y1) boxes, got {self.exclude!r}")
        object.__setattr__(self, "exclude", boxes)
        if not isinstance(self.pair_lobes, bool):
            raise TypeError(f"LoopSettings.pair_lobes must be True or False, got {self.pair_lobes!r}")
        if self.annotations not in ("auto", "off"):
            raise ValueError(f"LoopSettings.annotations must be 'auto' or 'off', got {self.annotations!r}")
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


def _hull_ellipse(region: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Convex hull of a region and its second-moment ellipse.

    The same as scikit-image's ``convex_hull_image`` (hull of the pixels' edge midpoints,
    pixel centres inside or on it) and ``regionprops`` (``axis_major_length`` =
    4 sqrt(largest eigenvalue of the pixel covariance)), which the generator's ground
    truth uses, at a tenth of the cost: OpenCV's hull and a half-plane test on the
    region's bounding box only.

    Parameters
    ----------
    region : (H, W) ndarray of bool
        At least one pixel.

    Returns
    -------
    hull : (H, W) ndarray of bool
    major, minor : float
        Full axes, px.
    angle : float
        Major axis, degrees from +x towards +y, [0, 180).
    """
    import cv2

    ys, xs = np.nonzero(region)
    y0, x0 = int(ys.min()), int(xs.min())
    points = np.column_stack([xs - x0, ys - y0]).astype(np.float32)
    corners = cv2.convexHull(points).reshape(-1, 2)
    diamond = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]], np.float32)
    polygon = cv2.convexHull((corners[:, None, :] + diamond).reshape(-1, 2)).reshape(-1, 2).astype(np.float64)
    height, width = int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1
    gy, gx = np.mgrid[:height, :width]
    edges = np.roll(polygon, -1, axis=0) - polygon
    # cv2.convexHull returns the vertices clockwise in image coordinates (y down): the
    # inside is where every edge's cross product has one sign; 1e-9 keeps points on edges.
    cross = edges[:, 0, None, None] * (gy - polygon[:, 1, None, None]) - edges[:, 1, None, None] * (gx - polygon[:, 0, None, None])
    inside = (cross >= -1e-9).all(axis=0) | (cross <= 1e-9).all(axis=0)
    hull = np.zeros(region.shape, bool)
    hull[y0:y0 + height, x0:x0 + width] = inside
    hy, hx = np.nonzero(inside)
    cov = np.cov(np.vstack([hx, hy]).astype(np.float64), bias=True) if len(hx) > 1 else np.zeros((2, 2))
    values, vectors = np.linalg.eigh(cov)
    major, minor = 4.0 * math.sqrt(max(values[1], 0.0)), 4.0 * math.sqrt(max(values[0], 0.0))
    angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1])) % 180.0
    return hull, major, minor, angle


def _split_touching(part: np.ndarray, seed: tuple[int, int], *, neck: float) -> np.ndarray:
    """The piece of ``part`` that holds ``seed`` when ``part`` is several touching objects.

    Shen's split: a watershed of the distance transform of ``part`` (holes filled, so a
    ring or a coffee bean is one solid shape with one deepest point) from its maxima that
    stand at least ``neck`` px above the neck joining them to a deeper one (h-maxima);
    touching loops meet at a neck and fall apart there, a lone ellipse has one maximum.

    Parameters
    ----------
    part : (H, W) ndarray of bool
        One connected object (the joined region around a seed).
    seed : (int, int)
        Row and column of the seed, inside ``part``.
    neck : float
        Least depth of a distance maximum below which it is not a separate object, px.

    Returns
    -------
    (H, W) ndarray of bool
        The watershed basin of ``seed`` (all of the filled ``part`` when there is no neck).

    Examples
    --------
    >>> yy, xx = np.mgrid[:20, :40]
    >>> two = (np.hypot(xx - 10, yy - 10) <= 6) | (np.hypot(xx - 22, yy - 10) <= 7)  # overlapping discs
    >>> piece = _split_touching(two, (10, 10), neck=1.5)
    >>> int(piece[10, 10]), int(piece[10, 22]), int(piece.sum()) < int(two.sum()) // 2
    (1, 0, True)
    """
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    filled = ndimage.binary_fill_holes(part)
    # The exact distance of scipy, not OpenCV's DIST_MASK_PRECISE: that one differs in
    # the last float32 bit from call to call (with the arrays' memory layout), and the
    # watershed's near-ties then split the same object differently in two runs.
    # Padded by one pixel: beyond the border is outside.
    dist = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    markers, count = ndimage.label(h_maxima(dist, neck))
    if count < 2:
        return filled
    basins = watershed(-dist, markers, mask=filled)
    return basins == basins[seed]


def detect_loops(image, *, settings: LoopSettings | None = None, mask=None):
    """Find dark loops and black dots in one frame and measure their ellipses.

    Parameters
    ----------
    image : (H, W) array_like of float
        Gray frame, bright field (objects darker than the background), values in [0, 1].
    settings : LoopSettings, optional
    mask : (H, W) array_like of bool, optional
        Burnt-in annotation pixels (scale bar, labels, cursor; e.g. from
        :func:`temtrack.sdk.annotations.annotation_mask`): an object within
        ``settings.overlay_margin`` px of them is dropped.

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

    s = settings or LoopSettings()
    if not isinstance(s, LoopSettings):
        raise TypeError(f"settings must be a LoopSettings, got {type(s).__name__}")
    image = _check_image(image)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise ValueError(f"mask must have the image's shape {image.shape}, got {mask.shape}")
    cleaned = cv2.medianBlur(image, 3)
    median = s.median
    if median == "auto":
        median = 3 if float(np.mean(np.abs(image - cleaned) > _IMPULSE_STEP)) > _IMPULSE_SHARE else 0
    residual = flatten(image, max_size=s.max_size, median=median, smooth_sigma=s.smooth_sigma)
    centre = float(np.median(residual))
    sigma = max(1.4826 * float(np.median(np.abs(residual - centre))), 1e-4)
    peaks = peak_local_max(residual, min_distance=max(int(s.min_size // 2), 1), threshold_abs=centre + s.threshold * sigma,
                           exclude_border=False)
    grad = None
    white = None
    bright = image >= s.overlay_white
    any_bright = bool(bright.any())
    if any_bright or (mask is not None and mask.any()):
        # Opening first: isolated bright pixels (salt noise, shot noise) are not overlays.
        solid = cv2.morphologyEx(bright.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        if mask is not None:
            solid |= mask.astype(bool).astype(np.uint8)
        white = cv2.dilate(solid, np.ones((2 * s.overlay_margin + 1,) * 2, np.uint8)) > 0
    height, width = image.shape
    seeds = np.zeros(image.shape, bool)
    seeds[peaks[:, 0], peaks[:, 1]] = True
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
            core = part & (crop >= 0.5 * peak)
            if close and np.count_nonzero(seeds[y0:y1, x0:x1] & part) > 1:
                # Several seeds: one ring or bean, or touching loops. Those joined side by side
                # are more elongated than one loop; Shen's watershed split, kept when the
                # seed's piece is rounder. Judged with the pieces already taken included, so
                # the second loop of a pair is split off the same way as the first.
                _, major, minor, _ = _hull_ellipse(core)
                if minor > 0 and major / minor > s.split_aspect:
                    closed = cv2.morphologyEx(core.astype(np.uint8), cv2.MORPH_CLOSE, bridge) > 0
                    piece = core & _split_touching(closed, (r - y0, c - x0), neck=s.neck)
                    if 3 <= piece.sum() < core.sum():
                        _, p_major, p_minor, _ = _hull_ellipse(piece)
                        if p_minor > 0 and p_major / p_minor < major / minor:
                            core = piece
            core &= ~taken[y0:y1, x0:x1]
            if core.sum() < 3:
                break
            hull, major, minor, angle = _hull_ellipse(core)
            if s.min_size <= major <= s.max_size and minor > 0 and major / minor <= s.max_aspect:
                measured = core, hull, major, minor, angle
                break
        if measured is None:
            continue
        core, hull, major, minor, angle = measured
        taken[y0:y1, x0:x1] |= hull
        if excluded is not None and excluded[r, c]:
            continue
        if white is not None and white[y0:y1, x0:x1][hull].any():
            continue
        around = cv2.dilate(hull.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the hull and 2 px around it
        if any_bright and bright[y0:y1, x0:x1][around & ~hull].mean() >= _WHITE_SHARE:
            continue
        if grad is None:
            # Edges and burnt-in black are judged on a 3x3 median: isolated salt and
            # pepper pixels (noise) are gone there, and overlay strokes (>= 2 px) stay.
            grad = np.hypot(cv2.Sobel(cleaned, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(cleaned, cv2.CV_32F, 0, 1, ksize=3)) / 8
            black = cleaned <= s.overlay_black
        ring = cv2.dilate(hull.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if float(grad[y0:y1, x0:x1][ring].max()) / peak > s.max_steepness:
            continue
        if (black[y0:y1, x0:x1][around].mean() >= _TEXT_BLACK_SHARE
                and float(grad[y0:y1, x0:x1][around].max()) >= s.overlay_edge):
            continue
        ys, xs = np.nonzero(core)
        # Centre weights fall to zero at the half maximum: a pixel entering or leaving the
        # region with the noise barely moves the centre. Against plain depth weights, on
        # four synthetic loop videos (bench_loops' settings, 60 frames), the frame-to-frame
        # change of a centre's error fell by a third for dots and a fifth for beans, and
        # not for rings, whose weights then sit on the darkest arc of the ring.
        weight = np.clip(crop[ys, xs] - 0.5 * peak, 0, None) + 1e-9 * peak
        rows.append(_Found(ys + y0, xs + x0, weight, major, minor, angle, float(hull.sum()), peak))
    if s.pair_lobes:
        rows = _pair_lobes(rows, s.pair_gap)
    return pd.DataFrame([found.row(sigma) for found in rows],
                        columns=["x", "y", "major", "minor", "angle", "area", "contrast", "snr"])


@dataclass
class _Found:
    """One object of :func:`detect_loops`: its half-maximum pixels (frame coordinates)
    with their centre weights (depth above the half maximum), and its hull ellipse."""

    ys: np.ndarray
    xs: np.ndarray
    weight: np.ndarray
    major: float
    minor: float
    angle: float
    area: float
    peak: float

    def row(self, sigma: float) -> tuple:
        total = float(self.weight.sum())
        cx = float((self.xs * self.weight).sum() / total)
        cy = float((self.ys * self.weight).sum() / total)
        return (cx, cy, self.major, self.minor, self.angle, self.area, self.peak, self.peak / sigma)


def _angle_between(a: float, b: float) -> float:
    """Difference of two axis directions in degrees, [0, 90]."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def _mean_axis(a: float, b: float) -> float:
    """The axis direction halfway between axis directions ``a`` and ``b`` (degrees, [0, 180))."""
    d = (b - a + 90.0) % 180.0 - 90.0
    return (a + d / 2.0) % 180.0


def _pair_lobes(found: list, gap: float) -> list:
    """Coffee beans found as their two lobes, joined into one object.

    A coffee bean is two dark lobes split by a line of no contrast across its major
    axis; where that line is wider than the closing bridges, each lobe is found alone.
    Two objects are a bean's lobes when they are elongated (aspect at least
    ``_LOBE_ASPECT``) and parallel (major axes within ``_LOBE_ANGLE`` degrees), face each
    other across their minor axes (the line between their centres within
    ``_LOBE_ANGLE`` degrees of square to the axis halfway between theirs: one lobe's
    measured axis can lean off the bean's), are alike (lengths and depths within a
    factor ``_LOBE_LIKE``), and their half-maximum regions come within ``gap`` px. Two
    round dots or rings side by side are never joined, and neither is one loop with a
    lobe. The pair is measured again as one object (the hull of both, which holds the
    line between them, as the ground truth does). Pairs are joined best first (closest
    in length and direction), each object once.
    """
    from scipy.spatial import cKDTree

    lobes = [k for k, f in enumerate(found) if f.minor > 0 and f.major / f.minor >= _LOBE_ASPECT]
    if len(lobes) < 2:
        return found
    centres = np.array([(found[k].xs.mean(), found[k].ys.mean()) for k in lobes])
    reach = max(found[k].major for k in lobes) + gap
    candidates = []
    for a, b in cKDTree(centres).query_pairs(reach):
        fa, fb = found[lobes[a]], found[lobes[b]]
        if _angle_between(fa.angle, fb.angle) > _LOBE_ANGLE:
            continue
        if max(fa.major, fb.major) > _LOBE_LIKE * min(fa.major, fb.major) or max(fa.peak, fb.peak) > _LOBE_LIKE * min(fa.peak, fb.peak):
            continue
        dx, dy = centres[b] - centres[a]
        across = math.degrees(math.atan2(dy, dx)) % 180.0
        if _angle_between(across, _mean_axis(fa.angle, fb.angle)) < 90.0 - _LOBE_ANGLE:
            continue
        pa, pb = np.column_stack([fa.xs, fa.ys]), np.column_stack([fb.xs, fb.ys])
        if cKDTree(pa).query(pb, distance_upper_bound=gap + 1.0)[0].min() > gap + 1.0:
            continue  # the regions do not come within gap px (+1: pixel centres)
        badness = _angle_between(fa.angle, fb.angle) / _LOBE_ANGLE + abs(math.log(fa.major / fb.major))
        candidates.append((badness, lobes[a], lobes[b]))
    used, joined = set(), []
    for _, a, b in sorted(candidates):
        if a in used or b in used:
            continue
        fa, fb = found[a], found[b]
        ys, xs = np.concatenate([fa.ys, fb.ys]), np.concatenate([fa.xs, fb.xs])
        y0, x0 = int(ys.min()), int(xs.min())
        region = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), bool)  # the pair's box, not the frame
        region[ys - y0, xs - x0] = True
        hull, major, minor, angle = _hull_ellipse(region)
        if minor <= 0 or major / minor > _LOBE_BEAN_ASPECT:
            continue
        used.update((a, b))
        joined.append(_Found(ys, xs, np.concatenate([fa.weight, fb.weight]), major, minor, angle, float(hull.sum()),
                             max(fa.peak, fb.peak)))
    return [f for k, f in enumerate(found) if k not in used] + joined


# Column -> (pyarrow type, description) of OUT_tracks.parquet, one row per track
# (:func:`temtrack.tracker.loops.track_summary`).
LOOP_TRACK_COLUMNS = {
    "track_id": ("int64", "the track's id, as in loops.parquet"),
    "first_frame": ("int64", "first frame with the loop"),
    "last_frame": ("int64", "last frame with the loop"),
    "lifetime": ("int64", "frames from first to last, inclusive"),
    "detections": ("int64", "frames in which it was found"),
    "x": ("float64", "mean centre, column px"),
    "y": ("float64", "mean centre, row px"),
    "median_major": ("float64", "median major axis, px"),
    "size_slope": ("float64", "major axis trend, px per frame (least squares)"),
    "D_2d": ("float64", "2-D diffusion coefficient, px² per frame (NaN below min_length detections)"),
    "D_2d_low": ("float64", "95 % interval of D_2d, low end"),
    "D_2d_high": ("float64", "95 % interval of D_2d, high end"),
    "D_1d": ("float64", "1-D diffusion coefficient along the main direction, px² per frame"),
    "D_1d_low": ("float64", "95 % interval of D_1d, low end"),
    "D_1d_high": ("float64", "95 % interval of D_1d, high end"),
    "direction": ("float64", "main direction of the steps, degrees from +x towards +y, [0, 180)"),
    "anisotropy": ("float64", "step variance along / across the main direction"),
}
# Frames per stored chunk: what an interruption can lose at most (~4k rows at 80 loops
# per frame, one small Parquet file).
_CHUNK_FRAMES = 50
_DETECTION_COLUMNS = ["frame", "time_s", "x", "y", "major", "minor", "angle", "area", "contrast", "snr"]


def ellipse_curve(x: float, y: float, major: float, minor: float, angle: float, *, points: int = 24) -> np.ndarray:
    """The outline of a loop's ellipse as a closed polyline.

    Parameters
    ----------
    x, y : float
        Centre, column and row px.
    major, minor : float
        Full axes, px.
    angle : float
        Major axis direction, degrees from +x towards +y.
    points : int
        Distinct points on the outline (>= 4); the first is repeated at the end.

    Returns
    -------
    (points + 1, 2) ndarray of float64
        ``(x, y)`` px, starting at the end of the major axis on the +x side.

    Examples
    --------
    >>> ellipse_curve(10.0, 5.0, 8.0, 4.0, 90.0, points=4).round(6).tolist()
    [[10.0, 9.0], [8.0, 5.0], [10.0, 1.0], [12.0, 5.0], [10.0, 9.0]]
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 4:
        raise ValueError(f"points must be an integer >= 4, got {points!r}")
    t = np.linspace(0.0, 2 * math.pi, points + 1)
    t[-1] = 0.0  # exactly closed
    theta = math.radians(angle)
    u = np.array([math.cos(theta), math.sin(theta)])
    v = np.array([-math.sin(theta), math.cos(theta)])
    return np.array([x, y]) + np.outer(np.cos(t) * major / 2, u) + np.outer(np.sin(t) * minor / 2, v)


@dataclass
class LoopResult:
    """What :func:`track_loops` found.

    Attributes
    ----------
    loops : pandas.DataFrame
        One row per loop per frame, columns :data:`LOOP_COLUMNS`.
    tracks : pandas.DataFrame
        One row per track, columns :data:`LOOP_TRACK_COLUMNS`: lifetime, size, D_eff in
        2-D and 1-D with confidence intervals.
    metadata : dict
        Provenance written into the Parquet files.
    paths : dict of str to Path
        ``loops`` and ``tracks`` (and ``overlay`` when asked); empty without ``out``.
    frames : int
        Frames detected by this call (not counting resumed ones).
    resumed_frames : int
        Frames taken over from an interrupted run.
    seconds : float
        Wall time of the call.
    """

    loops: object
    tracks: object
    metadata: dict
    paths: dict = field(default_factory=dict)
    frames: int = 0
    resumed_frames: int = 0
    seconds: float = 0.0

    @property
    def path(self) -> Path | None:
        """``loops.parquet`` when written."""
        return self.paths.get("loops")

    @property
    def fps(self) -> float:
        """Frames detected per second of wall time by this call."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def loop_output_paths(out) -> dict[str, Path]:
    """The files of a loop run writing ``out``: ``loops`` (``out``), ``tracks``
    (``OUT_tracks.parquet`` beside it), the hidden ``partial`` folder of an unfinished run
    and its ``lock`` file."""
    from .results import output_paths

    named = output_paths(out)  # one naming rule for the main job and the loop job
    out = Path(out)
    return {"loops": out, "tracks": named["tracks"], "partial": named["partial"], "lock": out.with_name(f".{out.name}.lock")}


class _LoopStore:
    """The detections of a loop run, stored in chunks in ``.OUT.partial/`` as it goes.

    Each chunk is a Parquet file written atomically, then a JSON marker that makes it
    count (as :class:`~temtrack.sdk.results.RunWriter` does for the main job): an
    interrupted run keeps every complete chunk and ``resume`` continues after the last.
    The folder records the run's settings and input; resuming with others is refused.
    """

    def __init__(self, out, *, metadata: dict, overwrite: bool, resume: bool, chunk_frames: int | None = None):
        from .atomic import ChunkFolder

        self.paths = loop_output_paths(out)
        self.metadata, self.chunk_frames = metadata, chunk_frames or _CHUNK_FRAMES
        self._folder = ChunkFolder(self.paths["partial"], metadata, overwrite=overwrite, resume=resume,
                                   keys=("kind", "settings", "input"))
        self.chunks = self._folder.chunks
        self._parts: list = []
        self._frames: list[tuple[int, float]] = []

    @property
    def resumed_frames(self) -> int:
        return sum(chunk["n_frames"] for chunk in self.chunks)

    def add(self, frame: int, time_s: float, found) -> None:
        self._parts.append(found)
        self._frames.append((frame, time_s))
        if len(self._frames) >= self.chunk_frames:
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames as one complete chunk."""
        import pandas as pd
        import pyarrow.parquet as pq

        from .atomic import write_atomic

        if not self._frames:
            return
        name = self._folder.next_name
        table = _arrow(pd.concat(self._parts, ignore_index=True), _detection_schema())
        write_atomic(self.paths["partial"] / f"{name}.parquet", lambda tmp: pq.write_table(table, tmp))
        frames = [f for f, _ in self._frames]
        self._folder.commit({"name": name, "n_frames": len(frames), "first_frame": frames[0], "last_frame": frames[-1]})  # counts from here on
        self._parts, self._frames = [], []

    def detections(self):
        """Every stored detection (after :meth:`flush`), one DataFrame."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        files = [self.paths["partial"] / f"{chunk['name']}.parquet" for chunk in self.chunks]
        tables = [pq.read_table(file) for file in files]
        return (pa.concat_tables(tables) if tables else _detection_schema().empty_table()).to_pandas()

    def cleanup(self) -> None:
        self._folder.remove()


def _detection_schema():
    import pyarrow as pa

    return pa.schema([(name, pa.from_numpy_dtype(np.dtype(LOOP_COLUMNS[name][0]))) for name in _DETECTION_COLUMNS])


def _schema(columns: dict):
    import pyarrow as pa

    return pa.schema([(name, pa.from_numpy_dtype(np.dtype(kind))) for name, (kind, _) in columns.items()])


def _arrow(table, schema, metadata: dict | None = None):
    import pyarrow as pa

    arrow = pa.Table.from_pandas(table[schema.names], schema=schema, preserve_index=False)
    if metadata is not None:
        from .results import METADATA_KEY

        arrow = arrow.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, default=str).encode()})
    return arrow


def _stage_table(table, columns: dict, metadata: dict, path: Path, staged) -> None:
    """Write ``table`` under a temporary name beside ``path`` into the Transaction ``staged``."""
    import pyarrow.parquet as pq

    from .atomic import PendingFile, stage_file

    arrow = _arrow(table, _schema(columns), metadata)
    pending = PendingFile(path)
    staged.add(pending.tmp, path)  # first, so that a failed write is discarded too
    stage_file(pending.tmp, lambda tmp: pq.write_table(arrow, tmp))


def _sampled_mask(opened, start: int, end: int | None, every: int, settings: "LoopSettings"):
    """The burnt-in annotation mask of the frames to process, or None.

    ``settings.annotations`` "auto": :func:`temtrack.sdk.annotations.annotation_mask` of up
    to ``_MASK_SAMPLES`` frames spread over the range (static, saturated, sharp-edged
    pixels: scale bars, labels, a cursor that stays put), as the main job samples frames
    for the input range.
    """
    if settings.annotations != "auto":
        return None
    try:
        from .annotations import annotation_mask
    except ImportError:  # not in this install: the detector's own overlay rules still apply
        return None
    stop = end if end is not None else opened.n_frames
    if stop is None or _read_once(opened):
        return None  # a live stream is read once: nothing to sample ahead
    wanted = list(range(start, stop, every))
    if len(wanted) < 2:
        return None
    picks = sorted({wanted[int(i)] for i in np.linspace(0, len(wanted) - 1, min(_MASK_SAMPLES, len(wanted))).round()})
    images = []
    for index in picks:
        for frame in opened.frames(start=index, end=index + 1):
            images.append(frame.image)
    if len(images) < 2:
        return None
    return np.asarray(annotation_mask(np.stack(images)), dtype=bool)


_MASK_SAMPLES = 16


def _read_once(opened) -> bool:
    return opened.kind == "iterator" and not opened.metadata.get("reiterable", False)


def track_loops(source, out=None, *, start: int = 0, end: int | None = None, every: int = 1,
                settings: LoopSettings | dict | None = None, fps: float | None = None,
                pixel_size_nm: float | None = None, overlay=None, resume: bool = False,
                overwrite: bool = False, progress: bool = False) -> LoopResult:
    """Detect, measure and link loops in a video; optionally write the tables and an overlay.

    Parameters
    ----------
    source : path, ndarray or iterable
        Anything :func:`temtrack.sdk.sources.open_source` opens.
    out : path, optional
        ``loops.parquet`` (columns :data:`LOOP_COLUMNS`); ``OUT_tracks.parquet`` (columns
        :data:`LOOP_TRACK_COLUMNS`) goes beside it. Both carry the provenance as JSON
        under the key ``temtrack``.
    start, end, every : int
        Frames ``start, start + every, ... < end`` (``end`` None: to the last).
    settings : LoopSettings or dict, optional
    fps, pixel_size_nm : float, optional
        Override the source's frame rate and pixel size (nm / px).
    overlay : path, optional
        An mp4 of the frames with each loop's ellipse and track id drawn in its track's
        colour (:class:`~temtrack.sdk.overlay.OverlayWriter`); a second pass over the
        frames once the tracks are known, so the source must be readable twice.
    resume : bool
        Continue the interrupted run that wrote ``out`` after its last stored chunk.
    overwrite : bool
        Replace existing outputs (only tem-track's own, once the new ones are complete).
    progress : bool
        A progress bar when stderr is a terminal.

    Returns
    -------
    LoopResult

    Raises
    ------
    FileExistsError
        An output exists and not ``overwrite``; another process is writing ``out``; an
        interrupted run exists and neither ``resume`` nor ``overwrite`` is given.
    ValueError
        Bad arguments; ``resume`` of a run made with other settings or input.

    Notes
    -----
    As the main job (:meth:`temtrack.sdk.analyzer.Analyzer.run`): detections are stored in
    chunks in ``.OUT.partial/`` beside ``out`` while the run goes, a lock file
    ``.OUT.lock`` lets one run at a time write ``out``, and the tables and the overlay
    are staged under temporary names and swapped in together at the end
    (:class:`~temtrack.sdk.atomic.Transaction`). An interruption (Ctrl-C, a signal, a
    full disk) keeps the frames done for ``resume``. Linking runs once over the whole
    table at the end (trackpy), so a resumed run gives the same tracks as one that ran
    through.
    """
    import time

    import pandas as pd

    from temtrack import __version__
    from temtrack.tracker.loops import LoopLinkSettings, link_loops, track_summary

    from .analyzer import check_range, check_start, keep_for_resume, progress_bar, check_outputs
    from .atomic import OutputLock, Transaction
    from .sources import open_source

    began = time.perf_counter()
    if isinstance(settings, dict) or settings is None:
        settings = LoopSettings.from_dict(settings)
    if not isinstance(settings, LoopSettings):
        raise TypeError(f"settings must be a LoopSettings, a dict or None, got {type(settings).__name__}")
    link = LoopLinkSettings.from_options("loop linking", settings.link)
    check_range(start, end, every)
    if resume and out is None:
        raise ValueError("resume needs out: the partial output to continue")
    if overlay is not None and out is None:
        raise ValueError("overlay needs out: the overlay is written with the tables")
    out, overlay, _ = check_outputs(source, out, overlay, None, overwrite)
    paths = None if out is None else loop_output_paths(out)
    with open_source(source, fps=fps, pixel_size_nm=pixel_size_nm) as opened:
        check_start(opened, start)
        if overlay is not None and _read_once(opened):
            raise ValueError("overlay needs a source that can be read twice (the overlay is drawn once the tracks are "
                             "known); give a file, an array or a list, or no overlay")
        pixel = opened.pixel_size_nm
        metadata = {
            "kind": "loops", "tem_track_version": __version__, "version": __version__, "created_unix_s": time.time(),
            "source": str(source) if isinstance(source, (str, Path)) else type(source).__name__,
            "input": {"name": opened.name, "kind": opened.kind, "n_frames": opened.n_frames,
                      "shape": list(opened.shape) if opened.shape is not None else None},
            "start": start, "end": end, "every": every, "fps": opened.fps, "pixel_size_nm": pixel,
            "detector": "classical",
            "settings": {**settings.to_dict(), "start": start, "end": end, "every": every, "fps": opened.fps,
                         "pixel_size_nm": pixel},
            "link_settings": link.to_dict(),
        }
        if paths is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        lock = None if paths is None else OutputLock(paths["lock"], str(out)).acquire()
        try:
            store = None if paths is None else _LoopStore(out, metadata=metadata, overwrite=overwrite, resume=resume)
            first = start if store is None or not store.chunks else store.chunks[-1]["last_frame"] + every
            stop = end if end is not None else opened.n_frames
            total = None if stop is None else max(0, len(range(start, stop, every)))
            parts, count, staged = [], 0, Transaction()
            try:
                mask = _sampled_mask(opened, start, end, every, settings)
                resumed = store.resumed_frames if store is not None else 0
                with progress_bar(total, resumed, progress, opened.name) as bar:
                    for frame in opened.frames(start=first, end=end, every=every):
                        found = detect_loops(frame.image, settings=settings, mask=mask)
                        found.insert(0, "time_s", frame.time_s)
                        found.insert(0, "frame", frame.index)
                        if store is not None:
                            store.add(frame.index, frame.time_s, found)
                        else:
                            parts.append(found)
                        count += 1
                        bar.update(1)
                if not count + resumed:
                    raise ValueError(f"no frames to process in {opened.name} from frame {start}"
                                     + (f" to {end}" if end is not None else "") + f" every {every}")
                if store is not None:
                    detections = store.detections()
                elif parts:
                    detections = pd.concat(parts, ignore_index=True)
                else:
                    detections = pd.DataFrame({name: pd.Series(dtype=LOOP_COLUMNS[name][0]) for name in _DETECTION_COLUMNS})
                linked = link_loops(detections, settings=link)
                linked["major_nm"] = linked["major"] * pixel if pixel else np.nan
                linked = linked[list(LOOP_COLUMNS)].astype({"frame": "int64", "track_id": "int64"})
                tracks = track_summary(linked, settings=link)
                if tracks.empty:
                    tracks = pd.DataFrame({name: pd.Series(dtype=kind) for name, (kind, _) in LOOP_TRACK_COLUMNS.items()})
                metadata["frames_processed"] = count + resumed
                written = {}
                if paths is not None:
                    _stage_table(linked, LOOP_COLUMNS, metadata, paths["loops"], staged)
                    _stage_table(tracks, LOOP_TRACK_COLUMNS, metadata, paths["tracks"], staged)
                    written = {"loops": paths["loops"], "tracks": paths["tracks"]}
                if overlay is not None:
                    staged.add(_stage_overlay(opened, linked, overlay, start, end, every, overwrite, progress), overlay)
                    written["overlay"] = overlay
                staged.commit()
            except BaseException:
                staged.discard()
                if store is not None:
                    keep_for_resume(store)
                raise
        finally:
            if lock is not None:
                lock.release()
        if store is not None:
            store.cleanup()
    return LoopResult(loops=linked, tracks=tracks, metadata=metadata, paths=written, frames=count,
                      resumed_frames=resumed, seconds=time.perf_counter() - began)


def _stage_overlay(opened, linked, overlay: Path, start, end, every, overwrite: bool, progress: bool) -> Path:
    """Draw every processed frame with its loops' ellipses and ids into an mp4 under a
    temporary name (:meth:`~temtrack.sdk.overlay.OverlayWriter.stage`); returns that name."""
    from .analyzer import progress_bar
    from .overlay import OverlayWriter

    by_frame = {frame: group for frame, group in linked.groupby("frame", sort=False)}
    writer = OverlayWriter(overlay, fps=opened.fps or 15.0, shape=opened.shape, overwrite=overwrite)
    try:
        total = sum(1 for _ in range(start, end if end is not None else (opened.n_frames or start), every)) or None
        with progress_bar(total, 0, progress, f"overlay {overlay.name}") as bar:
            for frame in opened.frames(start=start, end=end, every=every):
                rows = by_frame.get(frame.index)
                curves, ids = [], []
                if rows is not None:
                    for x, y, major, minor, angle, track in zip(rows.x, rows.y, rows.major, rows.minor, rows.angle, rows.track_id):
                        curves.append(ellipse_curve(x, y, major, minor, angle))
                        ids.append(int(track))
                writer.write(frame.image, curves, ids)
                bar.update(1)
        return writer.stage()
    except BaseException:
        writer.abort()
        raise
