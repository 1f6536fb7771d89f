"""From N mask probabilities per frame to dislocations as splines.

The model predicts N masks per frame, ideally one dislocation per mask. This module
follows Govind's thesis (section 3.4.3) and paper (sections 6.3-6.4): threshold at 0.5,
8-connected components, a size filter, Lee skeletonization, a smoothing spline through
the centreline and ``n`` equally spaced points; masks whose Dice loss is below 0.5 hold
the same dislocation. On top of that:

- the centreline is the longest path through the skeleton graph
  (:mod:`temtrack.sdk.skeleton`), so
  spurs are pruned; branches longer than ``spur_length`` are further dislocations in
  the same mask, flagged and split, with the four arms at a crossing paired by
  straightness;
- pieces of one dislocation (in one mask or split across two) whose ends meet in line
  are joined, and a piece lying inside a larger one is dropped, so nothing is counted
  twice;
- everything works on bounding-box crops: an empty mask costs one threshold pass and
  one bounding-box scan.

Pure numpy/OpenCV/scikit-image/scipy; no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .geometry import DEFAULT_SIGMA, Spline, distance_to_curve, fit_spline
from .skeleton import ARM_PX, skeleton_paths

__all__ = [
    "Dislocation",
    "FrameDislocations",
    "MaskSummary",
    "Merge",
    "PostprocessSettings",
    "binarize",
    "extract_dislocations",
]

# Two overlapping pieces are one line when each end lies this close (px) to the other
# piece: closer than neighbours in a pile-up ever are.
_OVERLAP_OFFSET = 1.5
# cv2.polylines refuses thicker lines (MAX_THICKNESS in OpenCV's drawing.cpp).
_CV_MAX_THICKNESS = 32767


@dataclass(frozen=True)
class PostprocessSettings:
    """Tuning of mask-to-spline post-processing (all lengths in pixels).

    Attributes
    ----------
    threshold : float
        Probabilities above it are dislocation (thesis: 0.5). Ignored for uint8/bool masks,
        where any nonzero pixel is dislocation.
    min_pixels : int
        8-connected components with fewer pixels are noise and dropped.
    spur_length : float
        Skeleton branches shorter than this are spurs (pruned); longer ones are further
        dislocations in the same mask.
    n_points : int
        Equally spaced points per dislocation (paper: 50).
    sigma : float
        Smoothing of the spline: the expected deviation of skeleton pixels from the
        true line.
    duplicate_dice : float
        Two pieces with a Dice score above it (Dice loss below ``1 - duplicate_dice``;
        paper 6.3: loss < 0.5) hold the same dislocation; one is kept.
    contained : float
        A piece with at least this fraction of its pixels inside a larger piece is part
        of it and dropped.
    join_distance, join_angle : float
        Open pieces whose ends are at most ``join_distance`` apart (or overlap along the
        same line) and whose directions there differ by at most ``join_angle`` degrees
        are one dislocation, joined.
    """

    threshold: float = 0.5
    min_pixels: int = 20
    spur_length: float = 10.0
    n_points: int = 50
    sigma: float = DEFAULT_SIGMA
    duplicate_dice: float = 0.5
    contained: float = 0.8
    join_distance: float = 5.0
    join_angle: float = 30.0

    def __post_init__(self):
        checks = {
            "threshold": 0.0 <= self.threshold < 1.0,
            "min_pixels": isinstance(self.min_pixels, (int, np.integer)) and self.min_pixels >= 1,
            "spur_length": self.spur_length >= 0,
            "n_points": isinstance(self.n_points, (int, np.integer)) and self.n_points >= 2,
            "sigma": self.sigma >= 0,
            "duplicate_dice": 0.0 < self.duplicate_dice <= 1.0,
            "contained": 0.0 < self.contained <= 1.0,
            "join_distance": self.join_distance >= 0,
            "join_angle": 0.0 <= self.join_angle <= 180.0,
        }
        allowed = {
            "threshold": "in [0, 1)",
            "min_pixels": "an integer >= 1",
            "spur_length": ">= 0 px",
            "n_points": "an integer >= 2",
            "sigma": ">= 0 px",
            "duplicate_dice": "in (0, 1]",
            "contained": "in (0, 1]",
            "join_distance": ">= 0 px",
            "join_angle": "in [0, 180] degrees",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"PostprocessSettings.{name} must be {allowed[name]}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Dislocation:
    """One dislocation found in a frame.

    Attributes
    ----------
    points : (n, 2) ndarray of float64
        ``(x, y)`` in pixels, equally spaced along the spline from one end to the other
        (for a closed loop the last point repeats the first).
    length : float
        Arc length of the spline in pixels.
    mean_curvature, max_curvature : float
        Unsigned curvature along the spline, in 1/px.
    closed : bool
        A closed loop.
    mask_index : int
        The mask it came from (for joined pieces, the first one's).
    part : int
        Which piece of that mask (0 unless the mask held several dislocations).
    score : float
        Mean probability over its pixels (1.0 for binary masks).
    n_pixels : int
        Mask pixels assigned to it.
    centreline : (m, 2) ndarray of float64
        The ordered skeleton pixels the spline was fitted to.
    box : (y0, y1, x0, x1)
        Bounding box of ``pixels`` in the frame.
    pixels : (y1 - y0, x1 - x0) ndarray of bool
        Its mask pixels within ``box``.
    """

    points: np.ndarray
    length: float
    mean_curvature: float
    max_curvature: float
    closed: bool
    mask_index: int
    part: int
    score: float
    n_pixels: int
    centreline: np.ndarray = field(repr=False)
    box: tuple = field(repr=False)
    pixels: np.ndarray = field(repr=False)

    @property
    def start(self) -> np.ndarray:
        return self.points[0]

    @property
    def end(self) -> np.ndarray:
        return self.points[-1]

    @property
    def centroid(self) -> np.ndarray:
        """Mean of the equally spaced points: the centre of the line, not of its pixels."""
        points = self.points[:-1] if self.closed else self.points
        return points.mean(axis=0)

    @property
    def key(self) -> tuple[int, int]:
        return (self.mask_index, self.part)


@dataclass(frozen=True)
class MaskSummary:
    """What one input mask held.

    ``multiple`` is True when it held more than one dislocation (several large
    components or a skeleton with more than one long branch) after pieces of one
    dislocation were joined; the thesis' metric scores such a mask 0.
    """

    index: int
    n_pixels: int
    n_components: int
    n_dislocations: int
    multiple: bool


@dataclass(frozen=True)
class Merge:
    """A piece that was merged into another: ``dropped`` and ``kept`` are (mask, part).

    ``reason`` is ``"duplicate"`` (Dice above ``duplicate_dice``), ``"contained"`` (the
    piece lies inside the kept one) or ``"joined"`` (end to end, now one dislocation).
    """

    kept: tuple[int, int]
    dropped: tuple[int, int]
    reason: str
    dice: float


@dataclass(frozen=True)
class FrameDislocations:
    """The dislocations of one frame.

    Attributes
    ----------
    dislocations : tuple of Dislocation
        The final dislocations, duplicates merged, each once.
    candidates : tuple of Dislocation
        Every piece found per mask before merging across masks (what the thesis'
        metric scores).
    masks : tuple of MaskSummary
        One per input mask, in order.
    merges : tuple of Merge
        How candidates became dislocations.
    shape : (H, W)
    settings : PostprocessSettings
    """

    dislocations: tuple
    candidates: tuple
    masks: tuple
    merges: tuple
    shape: tuple
    settings: PostprocessSettings


def check_masks(masks, name: str = "masks") -> np.ndarray:
    """``masks`` if it is an (N, H, W) array of probabilities in [0, 1], uint8 or bool;
    else a TypeError/ValueError naming ``name`` and what it received."""
    if not isinstance(masks, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape (N, H, W), got {type(masks).__name__}")
    if masks.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {masks.ndim}-D shape {masks.shape}")
    floating = np.issubdtype(masks.dtype, np.floating)
    if masks.dtype != bool and masks.dtype != np.uint8 and not floating:
        raise TypeError(f"{name} must be float probabilities in [0, 1], uint8 or bool; got dtype {masks.dtype}")
    if floating and masks.size:
        low, high = float(masks.min()), float(masks.max())  # NaN propagates into both
        if math.isnan(low) or math.isnan(high):
            raise ValueError(f"{name} holds {int(np.isnan(masks).sum())} NaN values; expected probabilities in [0, 1]")
        if low < 0.0 or high > 1.0:
            raise ValueError(f"{name} probabilities must lie in [0, 1], got values in [{low:g}, {high:g}]")
    return masks


def threshold_masks(masks: np.ndarray, threshold: float) -> np.ndarray:
    """Checked ``masks`` as (N, H, W) uint8, nonzero = dislocation: probabilities above
    ``threshold``; uint8/bool masks as they are (a view, no copy)."""
    if np.issubdtype(masks.dtype, np.floating):
        return (masks > threshold).view(np.uint8)
    return masks.view(np.uint8)


def binarize(masks: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Binary masks ``(N, H, W)`` of bool: probabilities above ``threshold``, or nonzero uint8/bool."""
    binary = threshold_masks(check_masks(masks), threshold)
    return binary.view(bool) if masks.dtype != np.uint8 else binary != 0


def extract_dislocations(masks, *, settings: PostprocessSettings | None = None) -> FrameDislocations:
    """Turn one frame's N masks into dislocations as splines.

    Parameters
    ----------
    masks : (N, H, W) ndarray, or PackedMasks
        Mask probabilities (float, in [0, 1]) or thresholded masks (uint8 or bool,
        nonzero = dislocation). Not modified. Or the masks as bounding-box crops
        (:class:`~temtrack.sdk.backends.contract.PackedMasks`, or anything with its
        ``shape``, ``boxes`` and ``crops``), crop ``k`` being mask ``k``: the same
        result as for the full masks, without ever holding N full-size masks (a
        4096 x 4096 frame with 1000 components would need 17 GB).
    settings : PostprocessSettings, optional
        Thresholds and lengths; the defaults follow the thesis.

    Returns
    -------
    FrameDislocations

    Examples
    --------
    >>> import cv2, numpy as np
    >>> masks = np.zeros((2, 64, 64), np.uint8)
    >>> _ = cv2.line(masks[0], (5, 10), (55, 10), 1, 3)
    >>> frame = extract_dislocations(masks)
    >>> len(frame.dislocations), round(frame.dislocations[0].length)
    (1, 50)
    """
    settings = settings or PostprocessSettings()
    shape, layers = _mask_layers(masks, settings.threshold)
    components, summaries = [], []
    for index, (binary, probabilities, offset) in enumerate(layers):
        found, summary = _components(binary, probabilities, index, settings, offset)
        components.extend(found)
        summaries.append(summary)
    all_paths = skeleton_paths([c[2] for c in components], settings.spur_length)
    by_mask: dict[int, list] = {}
    for (index, origin, component, score), paths in zip(components, all_paths):
        if paths:
            paths = _extend_ends(paths, component, origin, shape)
        # A component holding several dislocations: what sizes each one's band of pixels.
        band = None if len(paths) == 1 else (int(np.count_nonzero(component)), _half_width(component))
        for path, closed in paths:
            by_mask.setdefault(index, []).append((path, closed, component, origin, score, band))
    candidates, merges = [], []
    for index, pieces in sorted(by_mask.items()):
        dislocations = [
            _make_dislocation(path, closed, component, origin, score, index, part, settings, band=band)
            for part, (path, closed, component, origin, score, band) in enumerate(pieces)
        ]
        dislocations, joins = _join_pieces(dislocations, settings)
        candidates.extend(dislocations)
        merges.extend(joins)
        summary = summaries[index]
        summaries[index] = MaskSummary(index, summary.n_pixels, summary.n_components, len(dislocations), len(dislocations) > 1)
    final, cross = _merge_across_masks(candidates, settings)
    return FrameDislocations(
        dislocations=tuple(final),
        candidates=tuple(candidates),
        masks=tuple(summaries),
        merges=tuple(merges + cross),
        shape=shape,
        settings=settings,
    )


def _mask_layers(masks, threshold: float):
    """``(H, W)`` and, lazily, one ``(binary uint8, probabilities or None, (row, col) offset)``
    per mask: of the full masks, or of each crop of packed masks (checked first)."""
    if all(hasattr(masks, name) for name in ("shape", "boxes", "crops")) and not isinstance(masks, np.ndarray):
        shape, boxes, crops = _check_packed(masks)
        layers = (_crop_layer(crop, threshold, box) for crop, box in zip(crops, boxes))
        return shape, layers
    masks = check_masks(masks)
    # OpenCV's bounding boxes and components take any nonzero pixel as foreground.
    binary = threshold_masks(masks, threshold)
    floating = np.issubdtype(masks.dtype, np.floating)
    return tuple(int(n) for n in masks.shape[1:]), (
        (binary[index], masks[index] if floating else None, (0, 0)) for index in range(binary.shape[0])
    )


def _crop_layer(crop: np.ndarray, threshold: float, box):
    if np.issubdtype(crop.dtype, np.floating):
        probabilities = crop.astype(np.float32)  # as PackedMasks.unpack gives them: numpy is slow on float16
        return (probabilities > threshold).view(np.uint8), probabilities, box
    return np.ascontiguousarray(crop).view(np.uint8), None, box


def _check_packed(packed, name: str = "masks"):
    """``(shape, boxes, crops)`` of packed masks whose crops fit their frame, of one
    allowed dtype, probabilities in [0, 1]; else a TypeError/ValueError naming ``name``."""
    shape = tuple(packed.shape)
    if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
        raise ValueError(f"{name}: packed masks need a frame shape (H, W) of positive ints, got {packed.shape!r}")
    shape = (int(shape[0]), int(shape[1]))
    boxes = np.asarray(packed.boxes).reshape(-1, 2)
    crops = tuple(packed.crops)
    if len(boxes) != len(crops):
        raise ValueError(f"{name}: packed masks hold {len(crops)} crops but {len(boxes)} boxes")
    checked_boxes = []
    for k, (crop, (y, x)) in enumerate(zip(crops, boxes.tolist())):
        if not isinstance(crop, np.ndarray) or crop.ndim != 2:
            raise TypeError(f"{name}: crop {k} must be a 2-D numpy array, got {type(crop).__name__}")
        check_masks(crop[None], f"{name} crop {k}")
        if y < 0 or x < 0 or y + crop.shape[0] > shape[0] or x + crop.shape[1] > shape[1]:
            raise ValueError(
                f"{name}: crop {k} of shape {crop.shape} at row {y}, column {x} lies outside the {shape} frame"
            )
        checked_boxes.append((int(y), int(x)))
    return shape, checked_boxes, crops


# --- one mask -----------------------------------------------------------------------


def _components(binary: np.ndarray, probabilities, index: int, settings: PostprocessSettings, offset=(0, 0)):
    """The mask's 8-connected components above the size filter, as (index, origin, padded
    component, mean probability), and the mask's summary so far. ``binary`` and
    ``probabilities`` (2-D) start at ``offset`` (row, col) of the frame."""
    x, y, w, h = cv2.boundingRect(binary)
    if w == 0:
        return [], MaskSummary(index, 0, 0, 0, False)
    crop = binary[y : y + h, x : x + w]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    found = []
    for label in range(1, count):
        cx, cy, cw, ch, area = stats[label]
        if area < settings.min_pixels:
            continue
        # The component with a 1 px empty border: thinning, the distance transform and
        # the neighbour lookups of the pixel graph then need no bounds checks.
        component = np.zeros((ch + 2, cw + 2), bool)
        inner = labels[cy : cy + ch, cx : cx + cw] == label
        component[1:-1, 1:-1] = inner
        score = 1.0
        if probabilities is not None:
            score = float(probabilities[y + cy : y + cy + ch, x + cx : x + cx + cw][inner].mean())
        found.append((index, (offset[0] + y + cy - 1, offset[1] + x + cx - 1), component, score))
    n_pixels = int(stats[1:, cv2.CC_STAT_AREA].sum())
    return found, MaskSummary(index, n_pixels, len(found), 0, False)


def _make_dislocation(path, closed, component, origin, score, index, part, settings, *, band) -> Dislocation:
    """A Dislocation from a skeleton path (component-local (row, col) pixels); ``band`` is
    None when the path is the component's only one, else the component's
    ``(pixel count, half width)``."""
    centreline = np.column_stack([path[:, 1] + origin[1], path[:, 0] + origin[0]]).astype(float)
    spline = fit_spline(centreline, n_points=settings.n_points, sigma=settings.sigma, closed=closed)
    if band is None:
        # The whole component; its padded border is cropped off here.
        return _dislocation(spline, index, part, score, centreline, (origin[0] + 1, origin[1] + 1), component[1:-1, 1:-1], trim=False)
    else:
        # A component holding several dislocations: each gets the pixels near its path.
        width = _band_width(band[0], _path_length(path), component.shape, band[1])
        # Drawn in the path's box grown by the band's half width (with a margin for the
        # round caps), not in the whole component: a mesh-like component may hold
        # thousands of paths.
        grow = width // 2 + 2
        rows, cols = np.round(path).astype(np.int64).T
        r0, c0 = max(int(rows.min()) - grow, 0), max(int(cols.min()) - grow, 0)
        r1 = min(int(rows.max()) + grow + 1, component.shape[0])
        c1 = min(int(cols.max()) + grow + 1, component.shape[1])
        drawn = np.zeros((r1 - r0, c1 - c0), np.uint8)
        corners = np.column_stack([cols - c0, rows - r0]).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(drawn, [corners], closed, 1, width)
        pixels = component[r0:r1, c0:c1] & drawn.astype(bool)
        origin = (origin[0] + r0, origin[1] + c0)
    return _dislocation(spline, index, part, score, centreline, origin, pixels)


def _dislocation(spline: Spline, index, part, score, centreline, origin, pixels, *, trim: bool = True) -> Dislocation:
    rows, cols = np.nonzero(pixels) if trim else (None, None)
    if not trim:
        box = (origin[0], origin[0] + pixels.shape[0], origin[1], origin[1] + pixels.shape[1])
    elif len(rows) == 0:
        box, pixels = (origin[0], origin[0], origin[1], origin[1]), pixels[:0, :0]
    else:
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box = (origin[0] + r0, origin[0] + r1, origin[1] + c0, origin[1] + c1)
        pixels = pixels[r0:r1, c0:c1].copy()  # a view would keep the whole component's array alive
    return Dislocation(
        points=spline.points,
        length=spline.length,
        mean_curvature=spline.mean_curvature,
        max_curvature=spline.max_curvature,
        closed=spline.closed,
        mask_index=index,
        part=part,
        score=score,
        n_pixels=int(np.count_nonzero(pixels)),
        centreline=centreline,
        box=tuple(int(v) for v in box),
        pixels=pixels,
    )


def _band_width(n_pixels: int, length: float, shape: tuple[int, int], half_width: float) -> int:
    """Odd line thickness (px) of the band of pixels given to a path of ``length`` px in a
    component of ``n_pixels`` pixels, ``shape`` (rows, cols) and ``half_width`` (the
    largest distance from a pixel to the background): ``n_pixels / length``, at least 3.

    A short path in a large component (a blob, or a mesh of many paths) asks for far
    more than that: the band is then capped at ``2 * ceil(half_width) + 3``, which still
    holds every pixel of a line around the path; at the crop (a disc that wide anywhere
    in it covers it); and at OpenCV's maximum line thickness (cv2.polylines raises above).
    """
    width = max(3, 2 * int(round(n_pixels / max(length, 1.0) / 2)) + 1)
    thick = 2 * math.ceil(half_width) + 3
    whole = 2 * math.ceil(math.hypot(*shape)) + 1
    return min(width, thick, whole, _CV_MAX_THICKNESS)


def _half_width(component: np.ndarray) -> float:
    """Largest distance (px) from a pixel of the (padded, bool) component to the background."""
    from scipy.ndimage import distance_transform_edt

    # scipy's exact distance: OpenCV's DIST_MASK_PRECISE can differ in the last bit
    # between calls, which moves a ceil() on an integer distance (sdk/loops.py's note).
    return float(distance_transform_edt(component).max())


def _path_length(path: np.ndarray) -> float:
    return float(np.hypot(*np.diff(path, axis=0).T).sum()) if len(path) > 1 else 0.0


# --- skeleton graph -----------------------------------------------------------------

_PROBE = np.arange(1, 41) * 0.5  # steps along an end tangent, up to 20 px


def _reach(end: np.ndarray, direction: np.ndarray, component, origin, shape, half: float):
    """Where the centreline really ends beyond the skeleton end ``end`` (row, col), or None."""
    norm = np.hypot(*direction)
    if norm == 0:
        return None
    direction = direction / norm
    probes = np.rint(end[None, :] + _PROBE[:, None] * direction[None, :]).astype(np.int64)
    in_image = (probes[:, 0] + origin[0] >= 0) & (probes[:, 0] + origin[0] < shape[0])
    in_image &= (probes[:, 1] + origin[1] >= 0) & (probes[:, 1] + origin[1] < shape[1])
    in_crop = (probes[:, 0] >= 0) & (probes[:, 0] < component.shape[0]) & (probes[:, 1] >= 0) & (probes[:, 1] < component.shape[1])
    inside = np.zeros(len(probes), bool)
    inside[in_crop] = component[probes[in_crop, 0], probes[in_crop, 1]]
    stop = int(np.argmin(inside)) if not inside.all() else len(probes)
    last = _PROBE[stop - 1] if stop > 0 else 0.0
    if stop < len(probes) and not in_image[stop]:
        reach = last  # the line leaves the image here: it runs to the border
    else:
        reach = last + 0.5 - half
    return end + reach * direction if reach > 0.25 else None


def _extend_ends(paths, component: np.ndarray, origin, shape) -> list:
    """Give back what thinning takes from the ends of open paths.

    Lee thinning stops about half a line width short of where the centreline ends: the
    centre of a round end cap lies half a width inside the mask's tip. Each end is moved
    along its tangent to the mask's tip less the line's half width (area over length),
    or to the image border when the line leaves the image there.
    """
    # Half the line width: the component's area over its centreline length, halved.
    total = sum(_path_length(path) + 1.0 for path, _ in paths)
    half = 0.5 * np.count_nonzero(component) / max(total, 1.0)
    extended = []
    for path, closed in paths:
        if closed or len(path) < 3:
            extended.append((path, closed))
            continue
        points = path.astype(float)
        inner = min(len(points) - 1, int(ARM_PX) // 2)
        new_ends = [_reach(end, end - points[k], component, origin, shape, half) for end, k in ((points[0], inner), (points[-1], -1 - inner))]
        head = [] if new_ends[0] is None else [new_ends[0]]
        tail = [] if new_ends[1] is None else [new_ends[1]]
        extended.append((np.vstack([*head, points, *tail]), closed))
    return extended


# --- joining and merging ------------------------------------------------------------


def _end_tangents(d: Dislocation) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit tangents at the start and the end."""
    points = d.points
    k = max(1, min(len(points) - 1, int(round(ARM_PX / max(d.length / (len(points) - 1), 1e-9)))))
    start, end = points[0] - points[k], points[-1] - points[-1 - k]
    return start / max(np.hypot(*start), 1e-9), end / max(np.hypot(*end), 1e-9)


def _joined(a: Dislocation, b: Dislocation, a_end: int, b_end: int, settings: PostprocessSettings) -> Dislocation:
    first = a.centreline if a_end == 1 else a.centreline[::-1]
    second = b.centreline if b_end == 0 else b.centreline[::-1]
    # Where the pieces overlap, the second starts behind the first's end: drop that part
    # so the joined line does not run back and forth.
    tangent = first[-1] - first[max(len(first) - 1 - int(ARM_PX), 0)]
    ahead = (second - first[-1]) @ tangent > 0
    if ahead.any():
        second = second[int(np.argmax(ahead)) :]
    centreline = np.vstack([first, second])
    spline = fit_spline(centreline, n_points=settings.n_points, sigma=settings.sigma)
    y0, x0 = min(a.box[0], b.box[0]), min(a.box[2], b.box[2])
    y1, x1 = max(a.box[1], b.box[1]), max(a.box[3], b.box[3])
    pixels = np.zeros((y1 - y0, x1 - x0), bool)
    for d in (a, b):
        pixels[d.box[0] - y0 : d.box[1] - y0, d.box[2] - x0 : d.box[3] - x0] |= d.pixels
    score = (a.score * a.n_pixels + b.score * b.n_pixels) / max(a.n_pixels + b.n_pixels, 1)
    return _dislocation(spline, a.mask_index, a.part, score, centreline, (y0, x0), pixels)


def _best_join(pieces: list[Dislocation], settings: PostprocessSettings, ends_of=None):
    """(i, j, end of i, end of j) of the closest pair of open ends that meet in line, or None.

    Two ends meet in line when they are at most ``join_distance`` apart and the outward
    tangents there point against each other within ``join_angle``. Pairs come from a
    k-d tree of the ends, not from all pairs: a frame can hold ten thousand pieces.
    ``ends_of(piece)`` gives a piece's ``(ends, tangents)`` (cached by :func:`_join_pieces`).
    """
    from scipy.spatial import cKDTree

    ends_of = ends_of or _ends
    open_ = [k for k, d in enumerate(pieces) if not d.closed]
    if len(open_) < 2:
        return None
    both = [ends_of(pieces[k]) for k in open_]
    ends = np.concatenate([e for e, _ in both])  # (2 * pieces, 2): start and end of each
    owner = np.repeat(np.arange(len(open_)), 2)
    lengths = np.repeat([pieces[k].length for k in open_], 2)
    # Ends close together, or (pieces that overlap) ends up to half the shorter piece
    # apart: within max(join_distance, half of its own piece) of each end. The slack
    # keeps a pair at exactly that distance, whatever the tree's rounding.
    radius = np.maximum(settings.join_distance, 0.5 * lengths)
    found = cKDTree(ends).query_ball_point(ends, radius * (1 + 1e-9) + 1e-9)
    a = np.repeat(np.arange(len(ends)), [len(f) for f in found])
    b = np.fromiter((j for f in found for j in f), np.int64, count=len(a))
    keep = owner[a] < owner[b]
    a, b = a[keep], b[keep]
    gap = np.hypot(*(ends[a] - ends[b]).T)
    reach = np.maximum(settings.join_distance, 0.5 * np.minimum(lengths[a], lengths[b]))
    keep = gap <= reach
    if not keep.any():
        return None
    a, b, gap = a[keep], b[keep], gap[keep]
    tangents = np.concatenate([t for _, t in both])
    keep = -np.einsum("ij,ij->i", tangents[a], tangents[b]) >= math.cos(math.radians(settings.join_angle))
    for n in np.flatnonzero(keep & (gap > settings.join_distance)):
        # Overlapping pieces of one line: each end lies on the other piece.
        pa, pb = pieces[open_[owner[a[n]]]], pieces[open_[owner[b[n]]]]
        on_b = distance_to_curve(ends[a[n] : a[n] + 1], pb.points)[0] <= _OVERLAP_OFFSET
        on_a = distance_to_curve(ends[b[n] : b[n] + 1], pa.points)[0] <= _OVERLAP_OFFSET
        keep[n] = on_a and on_b
    if not keep.any():
        return None
    a, b, gap = a[keep], b[keep], gap[keep]
    order = np.lexsort((b, a))  # ties go to the first pair in (end, end) order
    n = order[np.argmin(gap[order])]
    return open_[owner[a[n]]], open_[owner[b[n]]], int(a[n] % 2), int(b[n] % 2)


def _ends(d: Dislocation) -> tuple[np.ndarray, np.ndarray]:
    """``(2, 2)`` start and end points and ``(2, 2)`` outward unit tangents there."""
    return np.array([d.points[0], d.points[-1]], float), np.array(_end_tangents(d), float)


def _join_pieces(pieces: list[Dislocation], settings: PostprocessSettings):
    """Join pieces end to end until no two meet in line; the joins made."""
    pieces, joins = list(pieces), []
    cache: dict[int, tuple] = {}  # id -> (piece, its ends): each piece's ends computed once

    def ends_of(d):
        hit = cache.get(id(d))
        if hit is None or hit[0] is not d:
            hit = cache[id(d)] = (d, *_ends(d))
        return hit[1], hit[2]

    while len(pieces) > 1:
        found = _best_join(pieces, settings, ends_of)
        if found is None:
            break
        i, j, a_end, b_end = found
        a, b = pieces[i], pieces[j]
        joins.append(Merge(kept=a.key, dropped=b.key, reason="joined", dice=_dice(a, b)[0]))
        pieces[i] = _joined(a, b, a_end, b_end, settings)
        del pieces[j]
    return pieces, joins


def _overlap(a: Dislocation, b: Dislocation) -> int:
    y0, y1 = max(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    x0, x1 = max(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if y1 <= y0 or x1 <= x0:
        return 0
    pa = a.pixels[y0 - a.box[0] : y1 - a.box[0], x0 - a.box[2] : x1 - a.box[2]]
    pb = b.pixels[y0 - b.box[0] : y1 - b.box[0], x0 - b.box[2] : x1 - b.box[2]]
    return int(np.count_nonzero(pa & pb))


def _dice(a: Dislocation, b: Dislocation) -> tuple[float, int]:
    inter = _overlap(a, b)
    return 2.0 * inter / max(a.n_pixels + b.n_pixels, 1), inter


def _merge_across_masks(candidates: list[Dislocation], settings: PostprocessSettings):
    """Drop duplicates and contained pieces, then join pieces split across masks.

    Which duplicate is kept: the piece from a mask holding one dislocation over one from
    a mask holding several (a cleaner prediction), then the higher mean probability,
    then the longer one. A piece inside a larger piece always gives way to it.
    """
    multiple = {}
    for d in candidates:
        multiple[d.mask_index] = multiple.get(d.mask_index, 0) + 1
    ranked = sorted(candidates, key=lambda d: (multiple[d.mask_index] > 1, -d.score, -d.length, d.key))
    kept: list[Dislocation] = []
    merges = []
    # The kept pieces' boxes, masks and pixel counts as arrays: only pieces whose boxes
    # overlap can share pixels, and a frame can hold ten thousand pieces. (With no
    # shared pixel, and duplicate_dice and contained > 0, nothing happens to a pair, unless
    # one of them has no pixels at all.)
    boxes = np.zeros((len(ranked), 4), np.int64)
    owners = np.zeros(len(ranked), np.int64)
    empty = np.zeros(len(ranked), bool)
    for d in ranked:
        drop = False
        n = len(kept)
        near = owners[:n] != d.mask_index
        if d.n_pixels:
            box = boxes[:n]
            overlap = (np.maximum(box[:, 0], d.box[0]) < np.minimum(box[:, 1], d.box[1])) & (
                np.maximum(box[:, 2], d.box[2]) < np.minimum(box[:, 3], d.box[3])
            )
            near &= overlap | empty[:n]
        for i in np.flatnonzero(near).tolist():
            k = kept[i]
            if k is None:
                continue
            dice, inter = _dice(d, k)
            if dice > settings.duplicate_dice:
                merges.append(Merge(kept=k.key, dropped=d.key, reason="duplicate", dice=dice))
                drop = True
                break
            if inter >= settings.contained * d.n_pixels:
                merges.append(Merge(kept=k.key, dropped=d.key, reason="contained", dice=dice))
                drop = True
                break
            if inter >= settings.contained * k.n_pixels:
                merges.append(Merge(kept=d.key, dropped=k.key, reason="contained", dice=dice))
                kept[i] = None
        if not drop:
            boxes[len(kept)], owners[len(kept)], empty[len(kept)] = d.box, d.mask_index, d.n_pixels == 0
            kept.append(d)
    kept = [k for k in kept if k is not None]
    kept.sort(key=lambda d: d.key)
    joined, joins = _join_pieces(kept, settings)
    return joined, merges + joins
