"""Burnt-in overlays (scale bars and their labels, dose text, timestamps, cursors) found in frames.

Acquisition and screen-recording software draws overlays over the micrograph after
imaging. A line model puts splines on their strokes, so the main job drops
dislocations that lie mostly on them, and cuts the others where they cross them
(:class:`AnnotationSettings`, :func:`temtrack.sdk.pipeline.iterate_results`).

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
height (their width too where the frame edge cuts them short), or, on the rows of a
neighbouring glyph (a line of text), within 3 times the smaller one's size: labels
are lines of glyphs, and dose text is widely spaced.

The window of the recording software (a status bar across the frame, a letterbox
edge) is found by its edges instead: rows (or columns) along which the gray value
steps by at least :data:`_EDGE_STEP` over at least :data:`_EDGE_SPAN` of the frame's
width, and the bar between two such edges up to :data:`_BAR` px apart, with its text.
Such edges stay straight and frame-long while the window fades in or out (fecral
frames 455-457, 984-993, 1090-1093, where its gray text is nowhere saturated); no
specimen edge runs along one pixel row over the whole frame (in the real videos we
have, specimen rows step over at most a third of the width).
Beyond the outermost such edge, a band of at most a quarter of the frame that is mostly
(half or more) saturated white or black is the window's panel or a letterbox, and is
masked with whatever text it holds (fecral frames 991 and 1092, where the recording
window's white panel with its gray status text scrolls in).

The accepted pixels, grown by ``grow`` px to cover anti-aliasing and compression
ringing, form the mask.

With its neighbours in a video
------------------------------
Compression can blur an overlay past that rule in a few frames: the keyframes that
start the clips of a video joined from several recordings (fecral frames 117-120,
455-458), often while the recording window still scrolls. The overlay is sharp a few
frames later. :class:`OverlayWindow` (and :func:`annotation_masks` over a stack) judges
each frame with the ``window`` frames before and after it: a neighbour's cluster of
overlay pixels the frame does not find itself is looked for in it, moved by up to
``shift`` px, and carried over only where the frame shows it too: a normalised
cross-correlation of at least 0.7 with the neighbour's gray values on the cluster and
its rim, and its pixels still near white (or black). A clip without overlays (fecral
frames 833-983), or a specimen seen where an overlay used to be, matches neither, so
nothing is carried into it; and a video without overlays gets exactly the per-frame
masks, all empty.

Over a stack, :func:`annotation_mask` gives the union of the frames' own masks, but a
recording window's edges only where at least half of the frames show them (a window
that fades in for a few frames would otherwise mask its rows for the whole video). A
"static across frames" cue was weighed and left out: in the real videos we have,
specimen regions clip to white at the same pixels for hundreds of frames (TWIP), while
the overlays of a video assembled from several recordings change from clip to clip
(fecral: the scale bar's length, label and place, and the dose text); stillness tells
neither apart. The window asks something else: not "is it still?", but "is a drawn
overlay found nearby in a neighbouring frame also here?".

Coordinates are pixels, ``x`` = column and ``y`` = row. Needs numpy and OpenCV only;
must never import torch or the training stack.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AnnotationSettings", "OverlayWindow", "annotation_mask", "annotation_masks", "on_mask", "points_on_mask"]

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
_LINE = 0.8  # share of the taller one's rows two glyphs of one line of text both cover
_LINE_HEIGHT = 6  # px: the least height of a glyph joined as part of a line
_CLUSTER = 12  # px: overlay pixels this close are carried to neighbouring frames together
_MATCH = 0.7  # least normalised cross-correlation of a carried cluster with the frame it is carried to
_CARRY_LEVEL = 0.75  # least mean polarity-corrected gray value of a carried cluster's pixels there
_COVERED = 0.9  # share of a neighbour's cluster a frame's own mask covers (within 2 px) that needs no search
_AROUND = 16  # px: margin around carried pixels in which the frame's own strokes complete them
_NEAR = 3  # px: the first, cheap search around a neighbour's cluster (overlays mostly stand still)
_LINE_GAP = 3.0  # a glyph on the line of a neighbour joins it this many times the smaller one's size away
_EDGE_STEP = 0.06  # gray step between neighbouring rows (columns) that counts toward a drawn straight edge
_EDGE_SPAN = 0.8  # share of the frame's width (height) such an edge spans
_BAR = 40  # px: straight edges this close bound a bar (a status bar), masked between them
_MAX_EDGES = 0.1  # share of the rows (columns) beyond which frame-long steps are a pattern (scan lines), not a window
_PANEL = 0.25  # the widest band, as a share of the frame, beyond a window's outermost edge that may be its panel
_PANEL_SATURATED = 0.5  # least share of white or black pixels in such a band


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
        Of the others, the parts on the mask are cut away.
    min_piece : float
        Pixels: the shortest piece of a cut dislocation that is kept.
    window : int
        Frames on each side of a frame (of those processed) whose overlays are looked
        for again in it (:class:`OverlayWindow`); 0 judges every frame on its own. The
        main job holds each frame's result back by this many frames.
    shift : int
        Pixels, along x and along y, the farthest an overlay may have moved between a
        frame and a neighbour in the window (a recording window that scrolls).
    """

    grow: int = 3
    level: float = 0.08
    share: float = 0.5
    window: int = 4
    shift: int = 32
    min_piece: float = 30.0

    def __post_init__(self):
        if isinstance(self.grow, bool) or not isinstance(self.grow, int) or not 0 <= self.grow <= 50:
            raise ValueError(f"grow must be an integer from 0 to 50 px, got {self.grow!r}")
        if not (isinstance(self.level, (int, float)) and 0.0 < self.level < 0.5):
            raise ValueError(f"level must be a number in (0, 0.5), got {self.level!r}")
        if not (isinstance(self.share, (int, float)) and 0.0 < self.share <= 1.0):
            raise ValueError(f"share must be a number in (0, 1], got {self.share!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or not 0 <= self.window <= 30:
            raise ValueError(f"window must be an integer from 0 to 30 frames, got {self.window!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or not 0 <= self.shift <= 256:
            raise ValueError(f"shift must be an integer from 0 to 256 px, got {self.shift!r}")
        if not (isinstance(self.min_piece, (int, float)) and 0.0 <= self.min_piece < math.inf):
            raise ValueError(f"min_piece must be a finite number of px >= 0, got {self.min_piece!r}")


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


def _grouped(boxes: np.ndarray, seed: np.ndarray, member: np.ndarray, shape: tuple) -> np.ndarray:
    """Seeds, and members that lie (through other members) near a seed: within ``_GAP``
    times the member's height (its width too when the frame edge cuts it), or, on the
    line of a glyph, ``_LINE_GAP`` times the smaller one's height or width; at most
    ``_MAX_GAP`` px. ``shape``: the frame's (H, W). (n,) bool."""
    accepted = seed.copy()
    waiting = np.flatnonzero(member & ~seed)
    if not accepted.any() or not len(waiting):
        return accepted
    height = boxes[:, 3] - boxes[:, 1] + 1
    width = boxes[:, 2] - boxes[:, 0] + 1
    # A glyph cut short by the frame edge (a label's bottom row) keeps its width.
    cut = (boxes[:, 0] == 0) | (boxes[:, 1] == 0) | (boxes[:, 2] == shape[1] - 1) | (boxes[:, 3] == shape[0] - 1)
    size = np.where(cut, np.maximum(height, width), height)
    new = np.flatnonzero(accepted)
    while len(new) and len(waiting):
        a, b = boxes[waiting][:, None, :], boxes[new][None, :, :]
        gap_x = np.maximum(np.maximum(a[..., 0] - b[..., 2], b[..., 0] - a[..., 2]), 0)
        gap_y = np.maximum(np.maximum(a[..., 1] - b[..., 3], b[..., 1] - a[..., 3]), 0)
        # A candidate reaches as far as its own height allows: a speck on a dislocation
        # next to a tall label box stays out, the glyphs of a line of text join.
        reach = np.minimum(_GAP * size[waiting], _MAX_GAP)[:, None]
        # Glyphs on one line of text share its rows, and are joined farther: by the
        # size of the smaller one, its height or width (glyphs cut short by the frame
        # edge keep their width), times _LINE_GAP (widely spaced dose text).
        top, bottom = np.maximum(a[..., 1], b[..., 1]), np.minimum(a[..., 3], b[..., 3])
        high = np.maximum(height[waiting][:, None], height[new][None, :])
        line = (bottom - top + 1 >= _LINE * high) & (np.minimum(height[waiting][:, None], height[new][None, :]) >= _LINE_HEIGHT)
        scale = np.maximum(height, width)
        low = np.minimum(scale[waiting][:, None], scale[new][None, :])
        reach = np.where(line, np.minimum(_LINE_GAP * low, _MAX_GAP), reach)
        near = ((gap_x <= reach) & (gap_y <= reach)).any(axis=1)
        new = waiting[near]
        accepted[new] = True
        waiting = waiting[~near]
    return accepted


def _straight_edges(image: np.ndarray, level: float) -> np.ndarray:
    """Rows (columns) along which the frame steps by at least ``_EDGE_STEP`` across at
    least ``_EDGE_SPAN`` of its width (height), the bars between two such edges at most
    ``_BAR`` px apart, and the panel between the outermost such edge and the frame's
    border when it is narrow and mostly saturated. (H, W) bool.

    The window of the recording software (a status bar, a letterbox edge) is drawn with
    edges that run straight along a pixel row over the whole frame, even while it fades
    in or out; a specimen's edges are neither that straight nor that long. Beyond the
    outermost edge, a band of at most ``_PANEL`` of the frame whose pixels are at least
    ``_PANEL_SATURATED`` white or black (within ``level``) is the window's panel with
    its text, or a letterbox, not specimen. Steps along more than ``_MAX_EDGES`` of the
    rows (columns) are a pattern of the camera or the capture (scan lines, interlacing),
    not a window: none are taken then.
    """
    mask = np.zeros(image.shape, bool)
    saturated = None  # only for frames with such edges (most have none)
    for axis in (0, 1):
        stepped = np.abs(np.diff(image, axis=axis)) >= _EDGE_STEP
        edges = np.flatnonzero(stepped.mean(axis=1 - axis) >= _EDGE_SPAN)
        size = image.shape[axis]
        if not len(edges) or len(edges) > _MAX_EDGES * size:
            continue
        lines = np.zeros(size, bool)
        lines[edges] = lines[edges + 1] = True  # the step lies between a row and the next
        for a, b in zip(edges[:-1], edges[1:]):
            if b - a <= _BAR:
                lines[a : b + 1] = True
        if saturated is None:
            saturated = (image <= level) | (image >= 1.0 - level)
        share = saturated.mean(axis=1 - axis)  # per row (column)
        for band in (slice(0, edges[0] + 1), slice(edges[-1] + 1, size)):
            width = band.stop - band.start
            if 0 < width <= _PANEL * size and share[band].mean() >= _PANEL_SATURATED:
                lines[band] = True
        if axis == 0:
            mask[lines, :] = True
        else:
            mask[:, lines] = True
    return mask


def _frame_mask(image: np.ndarray, level: float, *, edges: bool = True) -> np.ndarray:
    """One frame's overlay pixels (not grown); ``edges``: with a recording window's
    straight edges and bars (:func:`_straight_edges`)."""
    labels, boxes, seed, member = _candidates(image, level)
    mask = _straight_edges(image, level) if edges else np.zeros(image.shape, bool)
    accepted = _grouped(boxes, seed, member, image.shape)
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
    contrast to their surroundings, and sharp-edged saturated regions next to them; and
    a recording window's straight, frame-long edges with the bars between them. Over a
    stack, the union of the frames' masks, but the window's edges only where at least
    half of the frames show them (a letterbox): a window is there in a few frames of a
    video, and its rows would be masked in all of them.

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
    edges = np.zeros(stack.shape[1:], np.int32)
    for image in stack:
        mask |= _frame_mask(image, level, edges=False)
        edges += _straight_edges(image, level)
    mask |= 2 * edges >= len(stack)
    return _grown(mask, grow)


def _grown(mask: np.ndarray, grow: int) -> np.ndarray:
    """``mask`` grown by a disk of ``grow`` px (itself when there is nothing to grow)."""
    if grow and mask.any():
        return cv2.dilate(mask.view(np.uint8), _disk(grow)).astype(bool)
    return mask


class _Cluster:
    """Overlay pixels of one frame that lie together (a label with its bar), as carried
    to neighbouring frames: their pixels, and the frame's gray values around them as a
    template weighted on them and a 2-px rim."""

    __slots__ = ("rows", "cols", "white", "box", "template", "weights")

    def __init__(self, image: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        height, width = image.shape
        self.rows, self.cols = rows, cols
        self.white = image[rows, cols] > 0.5
        y0, x0 = max(int(rows.min()) - 3, 0), max(int(cols.min()) - 3, 0)
        y1, x1 = min(int(rows.max()) + 4, height), min(int(cols.max()) + 4, width)
        self.box = (y0, y1, x0, x1)
        self.template = np.ascontiguousarray(image[y0:y1, x0:x1])
        inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
        inside[rows - y0, cols - x0] = 1
        self.weights = cv2.dilate(inside, _disk(2)).astype(np.float32)


def _clusters(image: np.ndarray, own: np.ndarray) -> list:
    """The clusters of a frame's own overlay pixels (those within ``_CLUSTER`` px of
    each other), of at least :data:`SEED_AREA` px."""
    if not own.any():
        return []
    _, label = cv2.connectedComponents(cv2.dilate(own.view(np.uint8), _disk(_CLUSTER)), connectivity=8)
    where = np.flatnonzero(own)
    which = label.ravel()[where]
    order = np.argsort(which, kind="stable")
    where, which = where[order], which[order]
    starts = np.flatnonzero(np.diff(which, prepend=-1))
    clusters = []
    for pixels in np.split(where, starts[1:]):
        if len(pixels) >= SEED_AREA:
            clusters.append(_Cluster(image, *np.divmod(pixels, image.shape[1])))
    return clusters


def _find(cluster: _Cluster, image: np.ndarray, padded: np.ndarray, reach: int, pad: int):
    """``(dy, dx)`` px at which ``cluster`` (from a neighbour) is seen again in ``image``
    within ``reach`` px of where it was, or None: the template correlates with the frame
    (normalised, weighted on the cluster and its rim) by at least ``_MATCH``, and the
    cluster's pixels there are still near their saturation (mean polarity-corrected gray
    value at least ``_CARRY_LEVEL``), so a mid-gray specimen where an overlay used to be
    never takes it."""
    y0, y1, x0, x1 = cluster.box
    search = padded[y0 + pad - reach : y1 + pad + reach, x0 + pad - reach : x1 + pad + reach]
    score = cv2.matchTemplate(search, cluster.template, cv2.TM_CCOEFF_NORMED, mask=cluster.weights)
    score[~np.isfinite(score) | (score > 1.0 + 1e-4)] = -1.0  # flat templates give NaN or garbage
    best = int(np.argmax(score))
    if score.flat[best] < _MATCH:
        return None
    dy, dx = (int(v) - reach for v in np.unravel_index(best, score.shape))
    height, width = image.shape
    values = image[np.clip(cluster.rows + dy, 0, height - 1), np.clip(cluster.cols + dx, 0, width - 1)]
    if np.where(cluster.white, values, 1.0 - values).mean() < _CARRY_LEVEL:
        return None
    return dy, dx


def _carried(image: np.ndarray, own: np.ndarray, neighbours: list, shift: int, level: float) -> np.ndarray:
    """``own`` plus the neighbours' clusters found again in ``image`` (:func:`_find`), at
    the place found, completed by the frame's saturated regions lying mostly on them.
    ``neighbours``: cluster lists, nearest frame first. (H, W) bool."""
    mask = own.copy()
    covered = None
    padded = None
    carried = False
    height, width = image.shape
    for clusters in neighbours:
        for cluster in clusters:
            if covered is None:
                covered = cv2.dilate(mask.view(np.uint8), _disk(2)) > 0
            # Most frames find their overlays themselves; only what they miss is searched.
            if covered[cluster.rows, cluster.cols].mean() >= _COVERED:
                continue
            if padded is None:
                padded = cv2.copyMakeBorder(image, shift, shift, shift, shift, cv2.BORDER_REPLICATE)
            found = None
            for reach in sorted({min(_NEAR, shift), shift}):  # overlays mostly stand still: look near first
                found = _find(cluster, image, padded, reach, shift)
                if found is not None:
                    break
            if found is None:
                continue
            rows, cols = cluster.rows + found[0], cluster.cols + found[1]
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            mask[rows[inside], cols[inside]] = True
            covered, carried = None, True
    if carried:
        mask |= _completed(image, mask & ~own, level)
    return mask


def _completed(image: np.ndarray, carried: np.ndarray, level: float) -> np.ndarray:
    """The saturated regions of ``image`` at least half of which lie within 2 px of
    ``carried``: a carried glyph's strokes as this frame shows them (a glyph the frame
    edge cut in the neighbour is whole here), never a specimen region it merely
    touches. Looked for in the box around ``carried`` (16 px more on each side); a
    region reaching that box's edge inside the frame is too big and left out.
    (H, W) bool."""
    found = np.zeros(image.shape, bool)
    rows, cols = np.nonzero(carried)
    if not len(rows):
        return found
    height, width = image.shape
    y0, x0 = max(int(rows.min()) - _AROUND, 0), max(int(cols.min()) - _AROUND, 0)
    y1, x1 = min(int(rows.max()) + _AROUND + 1, height), min(int(cols.max()) + _AROUND + 1, width)
    crop = image[y0:y1, x0:x1]
    near = cv2.dilate(carried[y0:y1, x0:x1].view(np.uint8), _disk(2)).ravel()
    edge = np.zeros(crop.shape, bool)  # the crop's edges that are not the frame's
    edge[0, :], edge[-1, :], edge[:, 0], edge[:, -1] = y0 > 0, y1 < height, x0 > 0, x1 < width
    for saturated in (crop >= 1.0 - level, crop <= level):
        count, label = cv2.connectedComponents(saturated.view(np.uint8), connectivity=8)
        if count <= 1:
            continue
        flat = label.ravel()
        on = np.bincount(flat, weights=near, minlength=count)
        size = np.bincount(flat, minlength=count)
        keep = on >= 0.5 * size
        keep[0] = False
        keep[np.unique(label[edge])] = False
        found[y0:y1, x0:x1] |= keep[label]
    return found


class _Entry:
    __slots__ = ("image", "own", "clusters", "payload")

    def __init__(self, image, own, payload):
        self.image, self.own, self.payload, self.clusters = image, own, payload, None


class OverlayWindow:
    """Overlay masks of a stream of frames, each frame judged with its neighbours.

    The stateful layer of :func:`annotation_masks`, advanced one frame at a time (the
    main job's inference thread holds one). A frame's mask is its own
    (:func:`annotation_mask`'s rule) plus the overlays of the ``window`` frames before
    and after it that are seen again in it, perhaps moved by up to ``shift`` px: a
    neighbour's cluster of overlay pixels (a label with its bar) is carried over when
    its gray values correlate with the frame's there (normalised cross-correlation at
    least 0.7, on the cluster and a 2-px rim) and its pixels are still near white (or
    black). That recovers overlays the per-frame rule misses where compression blurs
    them (the keyframes that start the clips of a joined video, a glyph at the frame
    edge) and is never carried to a frame where the specimen shows through instead.

    A frame's mask is given once the ``window`` frames after it have been pushed (or at
    :meth:`flush`), so results lag the stream by ``window`` frames.

    Parameters
    ----------
    settings : AnnotationSettings
        ``grow``, ``level``, ``window`` and ``shift`` are used.

    Examples
    --------
    >>> frames = np.full((3, 60, 120), 0.5, np.float32)
    >>> frames[:, 40:44, 10:90] = 1.0                 # a white scale bar
    >>> frames[0, 40:44, 10:90] = 0.9                 # blurred in the first frame
    >>> frames[0, 38, 10:90] = frames[0, 45, 10:90] = 0.7
    >>> window = OverlayWindow(AnnotationSettings(window=1))
    >>> window.push(frames[0], "a")
    []
    >>> [(name, bool(mask[42, 50])) for name, mask in window.push(frames[1], "b")]
    [('a', True)]
    >>> [(name, bool(mask[42, 50])) for name, mask in window.flush()]
    [('b', True)]
    """

    def __init__(self, settings: AnnotationSettings = AnnotationSettings()):
        if not isinstance(settings, AnnotationSettings):
            raise TypeError(f"settings must be an AnnotationSettings, got {type(settings).__name__}")
        self.settings = settings
        self._entries: deque = deque()
        self._next = 0  # entry whose mask is given next

    def push(self, image, payload=None) -> list:
        """Add the next frame; return ``(payload, mask)`` for each frame whose mask is
        now known (none, or one; oldest first). ``image``: (H, W), as for
        :func:`annotation_mask`; not modified (the window keeps a copy). ``mask``: (H, W)
        bool, grown by ``grow``."""
        stack = _as_stack(image)
        if stack.shape[0] != 1:
            raise ValueError(f"image must be one (H, W) frame, got shape {np.shape(image)}")
        frame = np.array(stack[0], dtype=np.float32, copy=True)  # the caller may change its own
        self._entries.append(_Entry(frame, _frame_mask(frame, self.settings.level), payload))
        return self._emit(final=False)

    def flush(self) -> list:
        """``(payload, mask)`` of every frame still waiting (the stream ended), oldest first."""
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> list:
        window = self.settings.window
        ready = []
        while self._next < len(self._entries) and (final or len(self._entries) - 1 - self._next >= window):
            ready.append(self._judge(self._next))
            self._next += 1
        while self._next > window:  # what no later frame needs as a neighbour
            self._entries.popleft()
            self._next -= 1
        return ready

    def _judge(self, at: int) -> tuple:
        entry, settings = self._entries[at], self.settings
        others = [j for j in range(max(at - settings.window, 0), min(at + settings.window + 1, len(self._entries))) if j != at]
        neighbours = []
        for j in sorted(others, key=lambda j: (abs(j - at), j)):
            other = self._entries[j]
            if other.image.shape != entry.image.shape or not other.own.any():
                continue
            if other.clusters is None:
                other.clusters = _clusters(other.image, other.own)
            neighbours.append(other.clusters)
        mask = _carried(entry.image, entry.own, neighbours, settings.shift, settings.level) if neighbours else entry.own
        return entry.payload, _grown(mask, settings.grow)


def annotation_masks(frames, *, window: int = 4, shift: int = 32, grow: int = 3, level: float = 0.08) -> np.ndarray:
    """Overlay pixels of each frame of a video, each judged with its neighbours.

    Parameters
    ----------
    frames : (T, H, W) ndarray or iterable of (H, W) ndarrays
        Consecutive frames (those processed, e.g. every n-th), as for
        :func:`annotation_mask`. Not modified.
    window : int
        Frames before and after each frame whose overlays are looked for in it
        (:class:`OverlayWindow`); 0 gives each frame's :func:`annotation_mask`.
    shift : int
        Pixels along x and y an overlay may have moved between neighbouring frames.
    grow, level
        As for :func:`annotation_mask`.

    Returns
    -------
    (T, H, W) ndarray of bool

    Raises
    ------
    ValueError, TypeError
        As :func:`annotation_mask`, and for ``window`` or ``shift`` out of range or no
        frames.

    Examples
    --------
    >>> frames = np.full((3, 60, 120), 0.5, np.float32)
    >>> frames[1:, 40:44, 10:90] = 1.0                # a bar from the second frame on
    >>> frames[0, 40:44, 10:90] = 0.9                 # blurred in the first
    >>> frames[0, 38, 10:90] = frames[0, 45, 10:90] = 0.7
    >>> [bool(m[42, 50]) for m in (annotation_mask(frames[0]), annotation_masks(frames)[0])]
    [False, True]
    """
    windowed = OverlayWindow(AnnotationSettings(grow=grow, level=level, window=window, shift=shift))
    masks = []
    for image in frames:
        masks += [mask for _, mask in windowed.push(image)]
    masks += [mask for _, mask in windowed.flush()]
    if not masks:
        raise ValueError("frames must hold at least one frame")
    return np.stack(masks)


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
    on = points_on_mask(points, mask)
    return bool(len(on) and on.mean() >= share)


def points_on_mask(points, mask: np.ndarray) -> np.ndarray:
    """Which of a spline's ``(x, y)`` points lie on ``mask`` (rounded to the nearest
    pixel; points outside the frame are clamped to its edge). ``(n,)`` bool.

    >>> mask = np.zeros((10, 10), bool); mask[:, :5] = True
    >>> points_on_mask([(1.0, 2.0), (4.6, 2.0), (-3.0, 20.0)], mask).tolist()
    [True, False, True]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, mask.shape[0] - 1)
    return mask[rows, cols].astype(bool)
