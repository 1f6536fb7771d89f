"""Burnt-in overlays (scale bars and their labels, dose text, timestamps, cursors) found in frames.

Acquisition and screen-recording software draws overlays over the micrograph after
imaging. A line model puts splines on their strokes, so the main job drops
dislocations that lie mostly on them (:class:`AnnotationSettings`,
:func:`temtrack.sdk.pipeline.iterate_results`).

What tells an overlay from the specimen, in one frame
-----------------------------------------------------
A *candidate* is a connected region (8-connected) of saturated pixels: within
``level`` of white (1) or of black (0) in the [0, 1] input range. Each candidate is
scored on what software drawing gives and microscope optics never do:

- **sharp edges**: the share of its border pixels from which the gray value falls by
  at least :data:`SHARP_DROP` within 2 px (optics and drift blur specimen contrast over
  more pixels);
- **contrast to its surroundings**: one minus the mean (polarity-corrected) gray value
  on a ring 2-4 px around it;
- **axis-aligned edges**: the share of border pixels whose gradient points along x or
  y, as the strokes of fonts, bars, boxes and borders do;
- **an outline**: the share of border pixels within 3 px of saturation of the other
  polarity (white text with a black shadow, a white cursor with a black rim); clipped
  specimen contrast never goes from white to black in 3 px.

A candidate of at least :data:`SEED_AREA` px with enough contrast and either very
sharp edges, or sharp and axis-aligned edges, or sharp edges and an outline, is an
overlay (a *seed*). Weaker candidates (sharp and contrasted, but e.g. the round glyphs
of a compressed label) join when they lie near an overlay, within 1.5 times their own
height: labels are lines of glyphs. The accepted pixels, grown by ``grow``
px to cover anti-aliasing and compression ringing, form the mask.

Over a stack of frames the mask is the union of the frames' masks. A "static across
frames" cue was weighed and left out: in the real videos we have, specimen regions
clip to white at the same pixels for hundreds of frames (TWIP), while the overlays of
a video assembled from several recordings change from clip to clip (fecral: the scale
bar's length, label and place, and the dose text); stillness tells neither apart.

Coordinates are pixels, ``x`` = column and ``y`` = row. Needs numpy and OpenCV only;
must never import torch or the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AnnotationSettings", "annotation_mask", "on_mask"]

SHARP_DROP = 0.3  # gray drop within 2 px of a border pixel that makes it a sharp edge
SEED_AREA = 30  # px: smaller saturated specks (noise, clipped specimen spots) never seed
_SEED_CONTRAST = 0.3  # ring contrast of a seed
_MEMBER_CONTRAST = 0.25  # ring contrast of a candidate that joins a nearby overlay
_MEMBER_SHARP = 0.2  # share of sharp border of such a candidate
_MEMBER_AREA = 4  # px
_VERY_SHARP = 0.75  # share of sharp border that alone makes a seed
_SHARP = 0.3  # share of sharp border that makes a seed with axis-aligned edges or an outline
_AXIS = 0.5  # share of axis-aligned border
_SOME_AXIS = 0.3  # share of axis-aligned border of a very sharp seed (a blob of any shape has ~0.25)
_OUTLINE = 0.2  # share of border next to the other polarity
_GAP = 1.5  # a glyph joins a neighbour this many times the taller one's height away (a space, a '.')
_MAX_GAP = 48  # px: the farthest a glyph joins its neighbour, whatever their height


@dataclass(frozen=True)
class AnnotationSettings:
    """How the main job drops dislocations lying on burnt-in overlays.

    Attributes
    ----------
    grow : int
        Pixels the overlay mask is grown by (anti-aliasing, compression ringing).
    level : float
        How close to white (1) or black (0) a pixel must be to count as saturated, in
        the [0, 1] input range.
    share : float
        A dislocation is dropped when at least this share of its points lie on the mask.
    """

    grow: int = 3
    level: float = 0.08
    share: float = 0.5

    def __post_init__(self):
        if isinstance(self.grow, bool) or not isinstance(self.grow, int) or not 0 <= self.grow <= 50:
            raise ValueError(f"grow must be an integer from 0 to 50 px, got {self.grow!r}")
        if not (isinstance(self.level, (int, float)) and 0.0 < self.level < 0.5):
            raise ValueError(f"level must be a number in (0, 0.5), got {self.level!r}")
        if not (isinstance(self.share, (int, float)) and 0.0 < self.share <= 1.0):
            raise ValueError(f"share must be a number in (0, 1], got {self.share!r}")


def _as_stack(frames) -> np.ndarray:
    """``frames`` as a (T, H, W) float32 stack in [0, 1], validated; never a view that is written to."""
    array = np.asarray(frames)
    if array.ndim not in (2, 3):
        raise ValueError(f"frames must be an (H, W) frame or a (T, H, W) stack, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"frames must not be empty, got shape {array.shape}")
    if array.dtype.kind == "u":
        array = array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("frames hold NaN or infinite values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"float frames must lie in [0, 1] (the sources' range), got values from {array.min():g} to {array.max():g}"
            )
        array = array.astype(np.float32, copy=False)
    else:
        raise TypeError(f"frames must be unsigned integers or floats in [0, 1], got dtype {array.dtype}")
    return array[None] if array.ndim == 2 else array


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _candidates(image: np.ndarray, level: float):
    """Saturated regions of both polarities with their scores.

    Returns ``(labels, boxes, seed, member)``: per polarity the (H, W) int32 label
    image (0 = none), and for all regions of both polarities together their
    ``(x0, y0, x1, y1)`` boxes (inclusive), whether each seeds an overlay and whether
    it may join one. Region ``k`` of polarity ``p`` is row ``offsets[p] + k - 1``.
    """
    saturated = [(image >= 1.0 - level).astype(np.uint8), (image <= level).astype(np.uint8)]
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    axis_aligned = np.minimum(np.abs(gx), np.abs(gy)) < 0.2 * np.hypot(gx, gy)
    labels, boxes, seed, member = [], [], [], []
    for polarity, sat in enumerate(saturated):
        count, label, stats, _ = cv2.connectedComponentsWithStats(sat, connectivity=8)
        labels.append(label)
        if count <= 1:
            continue
        value = image if polarity == 0 else 1.0 - image  # 1 = saturated, for either polarity
        border = (sat > 0) & (cv2.erode(sat, np.ones((3, 3), np.uint8)) == 0)
        on_border = label[border]
        n_border = np.maximum(np.bincount(on_border, minlength=count), 1)

        def share(flags):
            return np.bincount(on_border, weights=flags[border], minlength=count) / n_border

        sharp = share(cv2.erode(value, _disk(2)) <= 1.0 - level - SHARP_DROP)
        # Edge direction on the pixels just outside a region, where the image gradient
        # is strong even for a 1-px stroke (on the stroke itself it cancels).
        spread = cv2.dilate(label.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
        outside = (sat == 0) & (spread > 0)
        axis = np.bincount(spread[outside], weights=axis_aligned[outside], minlength=count) / np.maximum(
            np.bincount(spread[outside], minlength=count), 1
        )
        outline = share(cv2.dilate(saturated[1 - polarity], _disk(3)) > 0)
        # The ring 2-4 px around each region: labels spread by a max filter (where two
        # rings meet one of them takes the pixel, which moves a mean little).
        spread = cv2.dilate(label.astype(np.float32), _disk(4)).astype(np.int32)
        ring = (cv2.dilate(sat, _disk(1)) == 0) & (spread > 0)
        owner = spread[ring]
        contrast = 1.0 - np.bincount(owner, weights=value[ring], minlength=count) / np.maximum(
            np.bincount(owner, minlength=count), 1
        )
        area = stats[:, cv2.CC_STAT_AREA]
        drawn = outline >= _OUTLINE
        strong = ((sharp >= _VERY_SHARP) & ((axis >= _SOME_AXIS) | drawn)) | ((sharp >= _SHARP) & ((axis >= _AXIS) | drawn))
        seed.append(((area >= SEED_AREA) & (contrast >= _SEED_CONTRAST) & strong)[1:])
        member.append(((area >= _MEMBER_AREA) & (contrast >= _MEMBER_CONTRAST) & (sharp >= _MEMBER_SHARP))[1:])
        x, y, w, h = (stats[1:, i] for i in range(4))
        boxes.append(np.stack([x, y, x + w - 1, y + h - 1], axis=1))
    if not boxes:
        return labels, np.zeros((0, 4), int), np.zeros(0, bool), np.zeros(0, bool)
    return labels, np.concatenate(boxes), np.concatenate(seed), np.concatenate(member)


def _grouped(boxes: np.ndarray, seed: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Seeds, and members that lie (through other members) near a seed: within ``_GAP``
    times the member's height, at most ``_MAX_GAP`` px. (n,) bool."""
    accepted = seed.copy()
    waiting = np.flatnonzero(member & ~seed)
    if not accepted.any() or not len(waiting):
        return accepted
    height = boxes[:, 3] - boxes[:, 1] + 1
    new = np.flatnonzero(accepted)
    while len(new) and len(waiting):
        a, b = boxes[waiting][:, None, :], boxes[new][None, :, :]
        gap_x = np.maximum(np.maximum(a[..., 0] - b[..., 2], b[..., 0] - a[..., 2]), 0)
        gap_y = np.maximum(np.maximum(a[..., 1] - b[..., 3], b[..., 1] - a[..., 3]), 0)
        # A candidate reaches as far as its own height allows: a speck on a dislocation
        # next to a tall label box stays out, the glyphs of a line of text join.
        reach = np.minimum(_GAP * height[waiting], _MAX_GAP)[:, None]
        near = ((gap_x <= reach) & (gap_y <= reach)).any(axis=1)
        new = waiting[near]
        accepted[new] = True
        waiting = waiting[~near]
    return accepted


def _frame_mask(image: np.ndarray, level: float) -> np.ndarray:
    labels, boxes, seed, member = _candidates(image, level)
    mask = np.zeros(image.shape, bool)
    accepted = _grouped(boxes, seed, member)
    start = 0
    for label in labels:
        count = int(label.max())
        chosen = np.flatnonzero(accepted[start : start + count]) + 1
        start += count
        if len(chosen):
            lookup = np.zeros(count + 1, bool)
            lookup[chosen] = True
            mask |= lookup[label]
    return mask


def annotation_mask(frames, *, grow: int = 3, level: float = 0.08) -> np.ndarray:
    """Pixels of burnt-in overlays (scale bars, labels, dose text, cursors) in frames.

    The rule is in the module docstring: saturated regions with sharp edges and high
    contrast to their surroundings, and sharp-edged saturated regions next to them.

    Parameters
    ----------
    frames : (H, W) or (T, H, W) ndarray
        One frame or a stack sampled over a video: floats in [0, 1] (what the sources
        give) or unsigned integers (scaled by their dtype's maximum). Not modified.
    grow : int
        Pixels the mask is grown by (a disk), to cover anti-aliased and compressed
        stroke edges.
    level : float
        How close to white or black a pixel must be to count as saturated, in [0, 1]
        units.

    Returns
    -------
    (H, W) ndarray of bool
        True on overlay pixels in any of the frames (grown by ``grow``); all False on
        frames without overlays.

    Raises
    ------
    ValueError
        ``frames`` of another shape, empty, with NaN or values outside [0, 1]; ``grow``
        or ``level`` out of range.
    TypeError
        ``frames`` of a dtype other than unsigned integers or floats.

    Examples
    --------
    >>> import cv2
    >>> frame = np.full((60, 120), 128, np.uint8)
    >>> frame[50:53, 10:70] = 255                     # a white scale bar
    >>> _ = cv2.putText(frame, "5 um", (15, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    >>> frame[20:28, 90:100] = 90                     # a dark specimen feature
    >>> mask = annotation_mask(frame)
    >>> bool(mask[51, 40]), bool(mask[24, 95])
    (True, False)
    >>> bool(annotation_mask(np.full((60, 120), 0.5, np.float32)).any())
    False
    """
    AnnotationSettings(grow=grow, level=level)  # validates both
    stack = _as_stack(frames)
    mask = np.zeros(stack.shape[1:], bool)
    for image in stack:
        mask |= _frame_mask(image, level)
    if grow and mask.any():
        mask = cv2.dilate(mask.view(np.uint8), _disk(grow)).astype(bool)
    return mask


def on_mask(points, mask: np.ndarray, *, share: float = 0.5) -> bool:
    """Whether at least ``share`` of a spline's points lie on ``mask``.

    Parameters
    ----------
    points : (n, 2) array_like of float
        ``(x, y)`` px; points outside the frame are clamped to its edge.
    mask : (H, W) ndarray of bool
    share : float
        In (0, 1].

    Returns
    -------
    bool
        False for a spline without points.

    Examples
    --------
    >>> mask = np.zeros((10, 10), bool); mask[:, :5] = True
    >>> on_mask([(1.0, 2.0), (3.2, 2.0), (7.0, 2.0)], mask)
    True
    >>> on_mask([(1.0, 2.0), (7.0, 2.0), (8.0, 2.0)], mask)
    False
    """
    if not (isinstance(share, (int, float)) and 0.0 < share <= 1.0 and not math.isnan(share)):
        raise ValueError(f"share must be a number in (0, 1], got {share!r}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    if not len(points):
        return False
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, mask.shape[0] - 1)
    return bool(mask[rows, cols].mean() >= share)
