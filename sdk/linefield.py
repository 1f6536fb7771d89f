"""From line fields (centreline map + direction) to dislocations as splines.

A line-field model predicts, at full resolution, a centreline map ``centre`` (a narrow
ridge on every dislocation's centreline, in [0, 1]) and the local line direction as
``(cos 2θ, sin 2θ)``. Geometry, not the network, decides which pixels form which
dislocation, in this order:

1. **non-maximum suppression** across the line: a pixel stays when ``centre`` there is
   at least its value one pixel away on both sides along the line's normal (bilinear
   samples), so neighbours a few pixels apart in a pile-up stay two ridges. The normal
   is, by default, that of the centre map's own ridge, from its Hessian
   (:func:`hessian_direction`, ``direction_sigma``); the model's direction channels
   (``direction_sigma = 0``) are noisier on real frames and break lines into pieces;
2. **hysteresis**: ridge pixels above ``low`` that are 8-connected to a pixel above
   ``high``; then thinning (Zhang-Suen) to one-pixel lines;
3. **tracing**: the thinned ridges are cut at junction pixels (three or more
   neighbours) into simple segments, each ordered from one end (one shortest-path
   search from all segment ends at once, no per-pixel Python loop);
4. **pairing at crossings and gaps**: segment ends closer than ``link_distance`` whose
   directions (the chord of the traced path's last ``END_REACH`` px) continue each
   other within ``link_angle``, and whose lateral offset seen over the gap is within it
   too, are joined, cheapest pair first, each end once. The two arms
   of a line through a crossing are joined; the other line's arms are joined to each
   other; a line ending on another (a T) stays separate;
5. **cuts and trims**: joined lines are cut at turns sharper than ``max_turn``, and
   their ends are trimmed back to where the centre map is still a fair share of the
   line's own (``trim``);
6. the existing spline fit (:func:`temtrack.sdk.geometry.fit_spline`), ``n_points``
   equally spaced points, and a per-dislocation mask drawn along the spline
   (``mask_width`` px), so the thesis' metric, the overlay and every output work as for
   mask models.

The result is a :class:`~temtrack.sdk.postprocess.FrameDislocations`, the same contract
as mask post-processing.

The fields may also come as :class:`SparseFields` (issue 20): only the pixels the
tracing reads, i.e. those whose centre value reaches the lower threshold ``low`` and
their neighbours within :data:`FIELD_REACH` px (the suppression's bilinear samples one
pixel along the normal). Every later step reads the fields only on ridge pixels, so
tracing the sparse fields gives exactly the splines of the dense ones. What the main job
sends to its worker processes: with the bundled model, 15 % of a 512² generator frame's
pixels (a fifth of the dense bytes) but about half of a real TWIP frame's, where the
centre map rises over ``low`` on much of the texture (three quarters of the dense bytes).

Pure numpy/OpenCV/scipy/scikit-image; no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy.sparse import csgraph

from .geometry import DEFAULT_SIGMA, fit_spline
from .postprocess import Dislocation, FrameDislocations, MaskSummary
from .skeleton import pixel_graph

__all__ = [
    "FIELD_REACH",
    "LineFieldSettings",
    "SparseFields",
    "check_fields",
    "curve_masks",
    "extract_lines",
    "hessian_direction",
    "instance_masks",
    "kept_pixels",
    "ridges",
    "split_fields",
    "traced_direction",
]


@dataclass(frozen=True)
class LineFieldSettings:
    """Tuning of line-field post-processing (lengths in pixels, angles in degrees).

    Attributes
    ----------
    high, low : float
        Hysteresis thresholds on the centreline map: a ridge is kept when it reaches
        ``high`` somewhere and is followed down to ``low``.
    min_length : float
        Dislocations shorter than this (arc length of the traced pixels) are dropped.
    link_distance : float
        Largest gap between two segment ends that may be joined (a crossing's hole,
        a faint stretch of line).
    link_angle : float
        Largest deviation from a straight continuation for a join.
    n_points : int
        Equally spaced points per dislocation (paper: 50).
    sigma : float
        Smoothing of the spline (expected deviation of ridge pixels from the line).
    mask_width : int
        Width (odd, px) of the per-dislocation masks drawn along the splines.
    max_turn : float
        A traced line that turns by more than this (degrees, over ``2 * TURN_REACH``
        px) is cut at the turn: where a dislocation meets a slip trace or another line
        at an angle, the ridge runs on without a junction, and one line would otherwise
        follow both. 180 keeps every turn.
    trim : float
        A traced line's ends are cut back to where the centreline map, averaged over
        ``TRIM_WINDOW`` px along it, first reaches ``trim`` times the line's own upper
        quartile: a ridge that runs from a line into a weaker ridge beside its end
        (texture, another line's faint tail) stops where the line does. 0 keeps the ends.
    end_cut : float
        For a model that also predicts a line-end map (``extras = ["ends"]``, channel
        3): a traced line is cut where that map peaks above ``end_cut`` at least
        ``END_MARGIN`` px inside it, i.e. where the model sees a dislocation end on a
        ridge that runs on (into a slip trace, texture or a neighbour's end). 0, or a
        model without the map, cuts nothing.
    border : float
        A traced line with 80 % of its pixels within this distance (px) of the image's
        edge (of ``valid``, when given) runs along the edge of the field of view or of
        padding, not a dislocation, and is dropped; 0 keeps everything.
    min_score : float
        A traced line whose mean centreline value along its pixels (its ``score``) is
        below this is dropped: a ridge that only grazes ``high`` somewhere and runs on
        texture. 0 keeps every line.
    direction_sigma : float
        Where the suppression takes the line's direction from. Above 0: from the
        Hessian of the centreline map itself, smoothed by a Gaussian of this sigma (px)
        (:func:`hessian_direction`), so the normal is the one of the ridge being
        suppressed. 0: from the model's direction channels.
    """

    # Chosen on the synthetic validation images of the line-field CPU model 2026.11 (never
    # the held-out sets or real frames): the same length score as 0.5 / 0.25 / 10 px with
    # a third of the predictions (docs/model-card.md). A model may carry its own ``high``
    # (ModelMetadata.line_threshold; the bundled 2026.12 model's is 0.4).
    high: float = 0.7
    low: float = 0.35
    min_length: float = 30.0
    link_distance: float = 10.0
    link_angle: float = 35.0
    n_points: int = 50
    sigma: float = DEFAULT_SIGMA
    mask_width: int = 3
    border: float = 5.0
    # Chosen with the end directions (END_REACH) on 40 synthetic images per preset (seed
    # 777001, not the held-out sets) and the 59 labelled TWIP frames; 0.7 loses TWIP
    # lines (docs/model-card.md, *End directions and trimming*).
    trim: float = 0.55
    # Chosen on the 47 TWIP frames a fine-tuning run trains on (never its held-out
    # frames) and 40 synthetic images per preset: at 50 degrees spline recall on those
    # frames rises from 0.31 to about 0.35 while sd1/sd3 length scores move by < 0.02
    # (sd3's sharp-turn shapes are the cost). 180 turns the cutting off.
    max_turn: float = 50.0
    # Only for models with a line-end map (extras "ends", channel 3); 0 turns it off.
    end_cut: float = 0.0
    # Chosen on 40 synthetic images per preset (seed 777001, not the held-out sets):
    # with the bundled model a fifth fewer lines per image (mostly on the Perlin
    # texture) at the same spline recall (sd3 -0.006); then checked on the 59 labelled
    # TWIP frames (recall -0.002) and FeCrAl (16 % fewer lines). 0.65 and 0.7 cost more
    # recall on both (docs/model-card.md, *Line scores*).
    min_score: float = 0.6
    # Measured on the 59 labelled TWIP frames and the held-out synthetic sets with the
    # bundled model: the model's own direction channels are noisier than its centre
    # map's ridges on real frames, and suppressing across them breaks lines into
    # pieces (docs/model-card.md, *Direction from the centre map*).
    direction_sigma: float = 1.5

    def __post_init__(self):
        problems = {
            "high": (0.0 < self.high < 1.0, "in (0, 1)"),
            "low": (0.0 < self.low <= self.high, "in (0, high]"),
            "min_length": (self.min_length >= 0, ">= 0 px"),
            "link_distance": (self.link_distance >= 0, ">= 0 px"),
            "link_angle": (0.0 <= self.link_angle <= 90.0, "in [0, 90] degrees"),
            "n_points": (isinstance(self.n_points, (int, np.integer)) and self.n_points >= 2, "an integer >= 2"),
            "sigma": (self.sigma >= 0, ">= 0 px"),
            "mask_width": (isinstance(self.mask_width, (int, np.integer)) and self.mask_width >= 1 and self.mask_width % 2, "an odd integer >= 1"),
            "border": (self.border >= 0, ">= 0 px"),
            "trim": (0.0 <= self.trim < 1.0, "in [0, 1)"),
            "max_turn": (0.0 < self.max_turn <= 180.0, "in (0, 180] degrees"),
            "end_cut": (0.0 <= self.end_cut < 1.0, "in [0, 1)"),
            "min_score": (0.0 <= self.min_score < 1.0, "in [0, 1)"),
            "direction_sigma": (0.0 <= self.direction_sigma <= 10.0, "in [0, 10] px"),
        }
        for name, (ok, allowed) in problems.items():
            if not ok:
                raise ValueError(f"LineFieldSettings.{name} must be {allowed}, got {getattr(self, name)!r}")

    @classmethod
    def for_threshold(cls, threshold: float | None) -> "LineFieldSettings":
        """The defaults with a user's threshold as ``high``; ``low`` and ``min_score``
        follow it down where it is below them. None: the defaults."""
        if threshold is None:
            return cls()
        return cls(high=threshold, low=min(cls.low, threshold), min_score=min(cls.min_score, threshold))

    def to_dict(self) -> dict:
        return asdict(self)


def check_fields(fields, name: str = "fields") -> np.ndarray:
    """``fields`` if it is a ``(C >= 3, H, W)`` float array of a line-field model's outputs
    (centre in [0, 1], direction in [-1, 1]); else a TypeError/ValueError naming ``name``."""
    _check_layout(fields, name)
    _check_ranges(fields, name)
    return fields


def _check_layout(fields, name: str) -> None:
    """A TypeError/ValueError naming ``name`` unless ``fields`` is a ``(C >= 3, H, W)``
    floating-point ndarray (its values are not looked at)."""
    if not isinstance(fields, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape (C, H, W), got {type(fields).__name__}")
    if fields.ndim != 3 or fields.shape[0] < 3:
        raise ValueError(f"{name} must have shape (C >= 3, H, W): centre, cos 2θ, sin 2θ; got shape {fields.shape}")
    if not np.issubdtype(fields.dtype, np.floating):
        raise TypeError(f"{name} must be floating point, got dtype {fields.dtype}")


def _check_ranges(values: np.ndarray, name: str) -> None:
    """A ValueError naming ``name`` when ``values`` (channels first: centre, then the
    others) holds NaN, a centre value outside [0, 1] or any value outside [-1, 1]."""
    if not values.size:
        return
    # One pass over each channel: the centre's range and the others'.
    c_low, c_high = float(values[0].min()), float(values[0].max())
    o_low, o_high = float(values[1:].min()), float(values[1:].max())
    if any(math.isnan(v) for v in (c_low, c_high, o_low, o_high)):
        raise ValueError(f"{name} holds {int(np.isnan(values).sum())} NaN values")
    low, high = min(c_low, o_low), max(c_high, o_high)
    if c_low < 0.0 or c_high > 1.0 or low < -1.0 or high > 1.0:
        raise ValueError(
            f"{name}: the centre map must lie in [0, 1] and the direction in [-1, 1]; "
            f"got centre in [{c_low:g}, {c_high:g}], all in [{low:g}, {high:g}]"
        )


#: Reach (px, along rows and columns) of the tracing around a pixel whose centre value
#: reaches ``low``: the non-maximum suppression samples the centre map bilinearly one
#: pixel along the line's normal, i.e. within that pixel's 3 x 3 window. Every later
#: step reads the fields only on ridge pixels, which are above ``low`` themselves.
FIELD_REACH = 1


def kept_pixels(centre: np.ndarray, *, low: float) -> np.ndarray:
    """The pixels :class:`SparseFields` keeps: centre ``>= low`` (compared in float32,
    as the tracing compares), dilated by :data:`FIELD_REACH` px.

    Parameters
    ----------
    centre : (H, W) ndarray of float
        The centreline map.
    low : float
        The tracing's lower hysteresis threshold (``LineFieldSettings.low``).

    Returns
    -------
    (H, W) ndarray of bool
    """
    core = np.asarray(centre, np.float32) >= np.float32(low)
    side = 2 * FIELD_REACH + 1
    return cv2.dilate(core.view(np.uint8), np.ones((side, side), np.uint8)).view(bool)


@dataclass(frozen=True, eq=False)
class SparseFields:
    """One frame's line fields, kept only where :func:`extract_lines` reads them.

    The kept pixels are those whose centre value reaches the tracing's lower threshold
    ``low`` and their neighbours within :data:`FIELD_REACH` px (:func:`kept_pixels`);
    the fields are zero elsewhere. Traced with settings whose ``low`` is at least the
    one they were packed at, they give exactly the splines of the dense fields. What
    the main job sends to its worker processes instead of ``C * H * W`` floats (16
    bytes per kept pixel against 12 per pixel dense: 15 % of a generator frame's pixels
    are kept, about half of a real TWIP frame's).

    Attributes
    ----------
    shape : (int, int, int)
        ``(C, H, W)`` of the dense fields (``C >= 3``: centre, cos 2θ, sin 2θ, extras).
    indices : (K,) ndarray of int32
        Flat indices (``row * W + column``) of the kept pixels, strictly increasing.
    values : (C, K) ndarray of float32 or float16
        The fields at those pixels.

    Raises
    ------
    TypeError, ValueError
        On construction, for a bad shape, indices that are not integers, out of range
        or not strictly increasing, values of the wrong shape or dtype, NaN, or values
        outside the fields' ranges (as :func:`check_fields`); the message names the
        attribute.

    Examples
    --------
    >>> fields = np.zeros((3, 4, 5), np.float32)
    >>> fields[0, 1, 2] = 0.9
    >>> sparse = SparseFields.pack(fields, low=0.35)
    >>> sparse.indices.tolist()  # the pixel (1, 2) and its 3 x 3 window
    [1, 2, 3, 6, 7, 8, 11, 12, 13]
    >>> bool((sparse.dense() == fields).all())
    True
    """

    shape: tuple
    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        shape = self.shape
        if (not isinstance(shape, tuple) or len(shape) != 3
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in shape)
                or shape[0] < 3):
            raise ValueError(f"SparseFields.shape must be (C >= 3, H, W) of integers >= 0, got {shape!r}")
        channels, height, width = (int(v) for v in shape)
        if height * width > np.iinfo(np.int32).max:
            raise ValueError(f"SparseFields.shape {shape}: H * W must fit int32 indices (<= 2**31 - 1)")
        indices, values = self.indices, self.values
        if not isinstance(indices, np.ndarray) or indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"SparseFields.indices must be a 1-D integer ndarray, got {_described(indices)}")
        if not isinstance(values, np.ndarray) or values.dtype not in (np.float32, np.float16):
            raise TypeError(f"SparseFields.values must be a float32 or float16 ndarray, got {_described(values)}")
        if values.shape != (channels, len(indices)):
            raise ValueError(f"SparseFields.values must have shape (C, K) = ({channels}, {len(indices)}) for "
                             f"{len(indices)} indices of {channels}-channel fields, got {values.shape}")
        if len(indices):
            first, last = int(indices.min()), int(indices.max())
            if first < 0 or last >= height * width:
                raise ValueError(f"SparseFields.indices must lie in [0, H * W) = [0, {height * width}) for frames of "
                                 f"{height} x {width}, got values in [{first}, {last}]")
            if len(indices) > 1 and not (np.diff(indices) > 0).all():
                raise ValueError("SparseFields.indices must be strictly increasing (each pixel once, row by row)")
        values = np.ascontiguousarray(values)  # reductions and pickling are slow on other layouts
        _check_ranges(values, "SparseFields.values")
        object.__setattr__(self, "shape", (channels, height, width))
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "indices", indices.astype(np.int32, copy=False))

    @classmethod
    def pack(cls, fields: np.ndarray, *, low: float) -> SparseFields:
        """The sparse form of dense ``fields``, for tracing with a lower threshold of
        ``low`` or more.

        Parameters
        ----------
        fields : (C >= 3, H, W) ndarray of float
            As :func:`extract_lines` takes them; its shape and dtype are checked, its
            values only where kept (NaN or out-of-range values elsewhere are dropped
            unseen). Not modified.
        low : float
            The tracing's lower hysteresis threshold, in (0, 1).

        Returns
        -------
        SparseFields
            float16 values for float16 fields, else float32 (the tracing reads float32).
        """
        _check_layout(fields, "fields")
        if not 0.0 < low < 1.0:
            raise ValueError(f"low must be in (0, 1), got {low!r}")
        indices = np.flatnonzero(kept_pixels(fields[0], low=low)).astype(np.int32)
        values = np.take(fields.reshape(len(fields), -1), indices, axis=1)  # C-ordered, unlike [:, indices]
        dtype = np.float16 if fields.dtype == np.float16 else np.float32
        return cls(tuple(fields.shape), indices, values.astype(dtype, copy=False))

    def dense(self) -> np.ndarray:
        """The ``(C, H, W)`` float32 fields, zero outside the kept pixels."""
        channels, height, width = self.shape
        out = np.zeros((channels, height * width), np.float32)
        for plane, values in zip(out, self.values):  # twice as fast as out[:, indices] = ...
            plane[self.indices] = values
        return out.reshape(self.shape)


def _described(value) -> str:
    """``value``'s type, with its shape and dtype when it is an array (for messages)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def split_fields(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(centre (H, W), direction (2, H, W))`` float32 views/copies of ``fields``."""
    return np.asarray(fields[0], np.float32), np.asarray(fields[1:3], np.float32)


def hessian_direction(centre: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """The ridges' direction as ``(cos 2θ, sin 2θ)`` from the Hessian of ``centre``.

    Along a bright ridge the Hessian's eigenvector of the larger eigenvalue runs along
    the line: ``2θ = atan2(2 Hxy, Hxx - Hyy)``, with the second derivatives taken by
    Gaussian derivative kernels of ``sigma`` px (reflected at the border). Where the
    Hessian vanishes (a flat map) the direction is (1, 0).

    Parameters
    ----------
    centre : (H, W) ndarray of float
    sigma : float
        Gaussian scale of the derivatives, px (> 0).

    Returns
    -------
    (2, H, W) ndarray of float32
    """
    along, across = _hessian_terms(centre, sigma)
    norm = np.hypot(along, across)
    flat = norm <= 1e-12
    norm[flat] = 1.0
    return np.stack([np.where(flat, np.float32(1), along / norm), np.where(flat, np.float32(0), across / norm)])


def gaussian_kernels(sigma: float, *, reach: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian kernels of ``sigma`` px over ``±ceil(reach * sigma)`` px, float32:
    smoothing (sums to 1), first derivative (for OpenCV, which correlates: the sign
    cancels in ``Hxy``) and second derivative (zero-sum: a flat image has no curvature)."""
    x = np.arange(-math.ceil(reach * sigma), math.ceil(reach * sigma) + 1, dtype=np.float64)
    g0 = np.exp(-0.5 * (x / sigma) ** 2)
    g0 /= g0.sum()
    g1 = (x / sigma**2 * g0).astype(np.float32)
    g2 = (x**2 / sigma**4 - 1 / sigma**2) * g0
    return g0.astype(np.float32), g1, (g2 - g2.mean()).astype(np.float32)


def _hessian_terms(centre: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(Hxx - Hyy, 2 Hxy)`` of ``centre`` by Gaussian derivative kernels of ``sigma`` px."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 px, got {sigma!r}")
    g0, g1, g2 = gaussian_kernels(sigma, reach=4.0)
    image = np.asarray(centre, np.float32)

    def filtered(kx, ky):
        return cv2.sepFilter2D(image, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT)

    return filtered(g2, g0) - filtered(g0, g2), 2 * filtered(g1, g1)


def traced_direction(centre: np.ndarray, direction: np.ndarray, settings: LineFieldSettings) -> np.ndarray:
    """The direction field the tracing reads (:func:`ridges`, and the axis of one-pixel
    segments): the model's channels ``direction`` when ``settings.direction_sigma`` is 0,
    else the Hessian of ``centre`` (:func:`hessian_direction`) on the pixels
    :class:`SparseFields` keeps, so sparse and dense fields trace alike. (2, H, W)
    float32, proportional to ``(cos 2θ, sin 2θ)``: only the angle is read, so the
    Hessian's terms are not normalised."""
    if settings.direction_sigma <= 0:
        return direction
    near = np.where(kept_pixels(centre, low=settings.low), centre, np.float32(0))
    return np.stack(_hessian_terms(near, settings.direction_sigma))


def ridges(centre: np.ndarray, direction: np.ndarray, *, high: float = 0.5, low: float = 0.25) -> np.ndarray:
    """One-pixel ridges of the centreline map: NMS across the line, hysteresis, thinning.

    Parameters
    ----------
    centre : (H, W) ndarray of float32 in [0, 1]
    direction : (2, H, W) ndarray of float32: cos 2θ, sin 2θ (or any positive
        multiple of them: only their angle is read)
    high, low : float
        Hysteresis thresholds.

    Returns
    -------
    (H, W) ndarray of bool
    """
    from scipy.ndimage import map_coordinates
    from skimage.morphology import skeletonize

    # Only pixels above ``low`` can stay (a few percent of a frame): the suppression,
    # the hysteresis and the thinning's crop work on those alone. (A 2-D np.nonzero is
    # several times slower than flatnonzero.)
    rows, cols = np.divmod(np.flatnonzero(centre > low), centre.shape[1])
    keep = np.zeros(centre.shape, bool)
    if not len(rows):
        return keep
    theta = 0.5 * np.arctan2(direction[1][rows, cols], direction[0][rows, cols])
    normal_r, normal_c = np.cos(theta), -np.sin(theta)
    value = centre[rows, cols]
    forward = map_coordinates(centre, [rows + normal_r, cols + normal_c], order=1, mode="constant", cval=0.0)
    backward = map_coordinates(centre, [rows - normal_r, cols - normal_c], order=1, mode="constant", cval=0.0)
    # Strict on one side: a flat two-pixel top keeps one of its pixels, not both.
    top = (value > forward) & (value >= backward)
    rows, cols, value = rows[top], cols[top], value[top]
    keep[rows, cols] = True
    count, labels = cv2.connectedComponents(keep.view(np.uint8), connectivity=8)
    component = labels[rows, cols]
    strong = np.zeros(count, bool)
    strong[component[value > high]] = True
    rows, cols = rows[strong[component]], cols[strong[component]]
    kept = np.zeros(centre.shape, bool)
    if not len(rows):
        return kept
    kept[rows, cols] = True
    # Zhang-Suen thinning within the ridges' bounding box: NMS leaves them mostly one
    # pixel wide already, this removes the rest (a few times faster than thin()).
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    kept[y0:y1, x0:x1] = skeletonize(np.pad(kept[y0:y1, x0:x1], 1))[1:-1, 1:-1]
    return kept


@dataclass
class _Segment:
    path: np.ndarray  # (m, 2) row, col, ordered
    ends: np.ndarray  # (2, 2) x, y of its two ends
    out: np.ndarray  # (2, 2) unit outward direction at each end


def _segments(skeleton: np.ndarray) -> list[np.ndarray]:
    """Ordered (row, col) paths of the skeleton cut at its junction pixels."""
    padded = np.pad(skeleton, 1)
    # A pixel with three or more neighbours (four or more in its 3 x 3 window) is a junction.
    window = cv2.boxFilter(padded.view(np.uint8), -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    simple = padded & (window <= 3)
    coords, graph, degree, _ = pixel_graph(simple)
    if len(coords) == 0:
        return []
    n_comp, labels = csgraph.connected_components(graph, directed=False)
    # One start per segment: an end (degree <= 1) if it has one, else (a loop) any pixel.
    starts = np.full(n_comp, -1, np.int64)
    ends = np.flatnonzero(degree <= 1)
    starts[labels[ends[::-1]]] = ends[::-1]
    loops = np.flatnonzero(starts < 0)
    if len(loops):
        first = np.full(n_comp, -1, np.int64)
        first[labels[::-1]] = np.arange(len(labels))[::-1]
        starts[loops] = first[loops]
    distance = csgraph.dijkstra(graph, directed=False, indices=starts, min_only=True)
    order = np.lexsort((distance, labels))
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    ordered = coords[order] - 1
    edges = [0, *bounds.tolist(), len(ordered)]
    return [ordered[a:b] for a, b in zip(edges[:-1], edges[1:])]  # np.split's pieces, a few times faster


#: Arc (px) over which a segment end's outward direction is measured: the chord from the
#: pixel this far along the segment to its tip.
END_REACH = 10


def _axis(direction: np.ndarray, path: np.ndarray) -> tuple[float, float]:
    """Mean line axis (unit (x, y), sign arbitrary) of the direction field along ``path``."""
    if len(path) == 1:  # the common case (a bridge pixel): plain floats, no numpy reductions
        (row, col), = path.tolist()
        c, s = float(direction[0][row, col]), float(direction[1][row, col])
    else:
        c = float(direction[0][path[:, 0], path[:, 1]].mean())
        s = float(direction[1][path[:, 0], path[:, 1]].mean())
    theta = 0.5 * math.atan2(s, c)
    return math.cos(theta), math.sin(theta)


def _segments_along(paths: list[np.ndarray], direction: np.ndarray) -> list[_Segment]:
    """The segments along ``paths`` (ordered (row, col) pixels, none empty) with their
    ends and the ends' outward directions, all paths at once.

    An end's direction is the chord of the last ``END_REACH`` px of the traced path, not
    the predicted direction field there: where the segment was cut at a crossing, the
    field near the cut mixes both lines' directions, and on the real TWIP frames the
    chord joins more of a line's pieces (docs/model-card.md, *End directions and
    trimming*). A one-pixel segment (a bridge left between two junctions) has no chord
    and takes the field's axis, both ways.
    """
    if not paths:
        return []
    counts = np.array([len(path) for path in paths])
    first = np.cumsum(counts) - counts
    last = first + counts - 1
    reach = np.minimum(END_REACH, counts - 1)
    pixels = np.concatenate(paths)
    # (n, 2 ends, 2) as (x, y): the tips and the pixels END_REACH px inside them.
    tips = pixels[np.column_stack([first, last])][..., ::-1].astype(float)
    inner = pixels[np.column_stack([first + reach, last - reach])][..., ::-1].astype(float)
    chord = tips - inner
    norm = np.hypot(chord[..., 0], chord[..., 1])  # exact for these small integer chords
    out = chord / np.where(norm > 0, norm, 1.0)[..., None]
    for k in np.flatnonzero((norm == 0).any(axis=1)).tolist():
        ax, ay = _axis(direction, paths[k])
        for end, sign in ((0, 1.0), (1, -1.0)):
            if norm[k, end] == 0:
                out[k, end] = (sign * ax, sign * ay)
    return [_Segment(path, ends, directions) for path, ends, directions in zip(paths, tips, out)]


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (degrees) between the rows of ``a`` and ``b`` ((n, 2) each)."""
    norms = np.maximum(np.hypot(a[:, 0], a[:, 1]) * np.hypot(b[:, 0], b[:, 1]), 1e-12)
    return np.degrees(np.arccos(np.clip((a * b).sum(1) / norms, -1.0, 1.0)))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z components of the cross products of the rows of ``a`` and ``b`` ((n, 2) each)."""
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def _join_cost(out_a: np.ndarray, out_b: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Cost (degrees) of joining segment ends across ``gap`` (b's tip - a's tip), given
    their outward directions ``out_a`` and ``out_b`` ((n, 2) each); inf when an end points away.

    How far the two ends are from pointing at each other, and how far the gap runs off
    their axes: the other end's mean lateral offset, as an angle over the gap. Not the
    gap's own direction, which between pixel ends a few px apart takes one of eight
    directions only (45 degrees apart). Ends that touch join on their directions alone.
    """
    distance = np.hypot(gap[:, 0], gap[:, 1])
    bend = 180.0 - _angles(out_a, out_b)
    lateral = 0.5 * (np.abs(_cross(out_a, gap)) + np.abs(_cross(out_b, gap)))
    offset = np.degrees(np.arctan2(lateral, np.maximum(distance, 1.0)))
    backwards = ((out_a * gap).sum(1) < 0) | ((out_b * gap).sum(1) > 0)
    return np.where(distance < 1.5, bend, np.where(backwards, np.inf, np.maximum(bend, offset)))


def _links(segments: list[_Segment], settings: LineFieldSettings) -> list[tuple[int, int, int, int]]:
    """Joins ``(segment a, end of a, segment b, end of b)`` costing at most ``link_angle``
    (:func:`_join_cost`), cheapest first, each end once, never closing a ring."""
    if len(segments) < 2 or settings.link_distance <= 0:
        return []
    from scipy.spatial import cKDTree

    # Row 2 k + e: end e of segment k.
    tips = np.concatenate([s.ends for s in segments])
    out = np.concatenate([s.out for s in segments])
    pairs = cKDTree(tips).query_pairs(settings.link_distance, output_type="ndarray")
    pairs = pairs[pairs[:, 0] // 2 != pairs[:, 1] // 2] if len(pairs) else pairs
    if not len(pairs):
        return []
    i, j = pairs[:, 0], pairs[:, 1]
    cost = _join_cost(out[i], out[j], tips[j] - tips[i])
    keep = cost <= settings.link_angle
    order = np.argsort(cost[keep], kind="stable")
    return joins_in_order(pairs[keep][order], len(segments))


def joins_in_order(pairs: np.ndarray, n_segments: int) -> list[tuple[int, int, int, int]]:
    """Joins ``(segment a, end of a, segment b, end of b)`` taken from ``pairs`` (rows of
    two end numbers ``2 k + e``, best first) while each end is still free and the join
    closes no ring (a union-find over the segments)."""
    used, parent, joins = set(), list(range(n_segments)), []

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for first, second in np.asarray(pairs).reshape(-1, 2).tolist():
        a, ea, b, eb = first // 2, first % 2, second // 2, second % 2
        if (a, ea) in used or (b, eb) in used or root(a) == root(b):
            continue
        used.update({(a, ea), (b, eb)})
        parent[root(a)] = root(b)
        joins.append((a, ea, b, eb))
    return joins


def _chains(segments: list[_Segment], joins) -> list[np.ndarray]:
    """The joined segments as ordered (row, col) paths."""
    partner = {}
    for a, ea, b, eb in joins:
        partner[(a, ea)] = (b, eb)
        partner[(b, eb)] = (a, ea)
    seen, chains = set(), []
    # Start from segments with a free end; whatever is left forms no chain end (a
    # joined ring) and starts anywhere.
    starts = [k for k in range(len(segments)) if (k, 0) not in partner or (k, 1) not in partner]
    free = set(starts)
    starts += [k for k in range(len(segments)) if k not in free]
    for k in starts:
        if k in seen:
            continue
        entry = 0 if (k, 0) not in partner else 1 if (k, 1) not in partner else 0
        pieces, current = [], (k, entry)
        while current is not None and current[0] not in seen:
            index, enter = current
            seen.add(index)
            path = segments[index].path
            pieces.append(path if enter == 0 else path[::-1])
            current = partner.get((index, 1 - enter))
        chains.append(pieces[0] if len(pieces) == 1 else np.vstack(pieces))
    return chains


#: Half the arc (px) over which a line's turning is measured (see ``max_turn``).
TURN_REACH = 6


def _split_at_turns(paths: list[np.ndarray], max_turn: float) -> list[np.ndarray]:
    """The ``paths`` ((n, 2) pixels, 8-connected) cut at their turns sharper than
    ``max_turn``: the pieces, path after path.

    The turns of all paths are measured at once; only paths with a sharp turn are
    then cut one by one (:func:`_cut_at_turns`).
    """
    reach = TURN_REACH
    long = [k for k, path in enumerate(paths) if len(path) >= 2 * reach + 3]
    if max_turn >= 180.0 or not long:
        return list(paths)
    pixels, counts, starts = _packed([paths[k] for k in long])
    xy = pixels.astype(float)
    # turn[i]: at packed pixel i + reach, within its path for the path's first n - 2 reach
    # pixels (the others' windows span two paths).
    turn = _angles(xy[reach:-reach] - xy[: -2 * reach], xy[2 * reach :] - xy[reach:-reach])
    owner = np.repeat(np.arange(len(long)), counts)[: len(turn)]
    within = np.arange(len(turn)) - starts[owner] < (counts - 2 * reach)[owner]
    sharpest = np.maximum.reduceat(np.where(within, turn, 0.0), starts)
    pieces = {k: [paths[k]] for k in range(len(paths))}
    for k, a, n, worst in zip(long, starts.tolist(), counts.tolist(), sharpest.tolist()):
        if worst > max_turn:
            pieces[k] = _cut_at_turns(paths[k], turn[a : a + n - 2 * reach], max_turn)
    return [piece for k in range(len(paths)) for piece in pieces[k]]


def _cut_at_turns(path: np.ndarray, turn: np.ndarray, max_turn: float) -> list[np.ndarray]:
    """``path`` cut at its turns (``turn[i]`` at pixel ``i + TURN_REACH``, degrees)
    sharper than ``max_turn``, the sharpest first, cuts more than ``TURN_REACH`` px apart."""
    reach = TURN_REACH
    cuts = []
    for k in np.argsort(-turn, kind="stable"):
        if turn[k] <= max_turn:
            break
        if all(abs(k - c) > reach for c in cuts):
            cuts.append(int(k))
    if not cuts:
        return [path]
    bounds = [0, *sorted(c + reach for c in cuts), len(path)]
    return [path[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2]


#: A line-end peak closer than this (px along the path) to a traced line's own end does
#: not cut it (see ``end_cut``): that end is already where it should be.
END_MARGIN = 8
#: Pixels dropped on each side of an end cut (the end spot's core).
END_GAP = 2


def _split_at_ends(path: np.ndarray, ends: np.ndarray | None, level: float) -> list[np.ndarray]:
    """``path`` cut where the line-end map ``ends`` peaks above ``level`` inside it."""
    from scipy.signal import find_peaks

    if ends is None or level <= 0 or len(path) < 2 * END_MARGIN + 1:
        return [path]
    values = ends[path[:, 0], path[:, 1]].astype(float)
    peaks, _ = find_peaks(values, height=level, distance=END_MARGIN)
    peaks = peaks[(peaks >= END_MARGIN) & (peaks < len(path) - END_MARGIN)]
    if not len(peaks):
        return [path]
    bounds = [0, *[v for p in peaks for v in (p - END_GAP, p + END_GAP + 1)], len(path)]
    return [path[a:b] for a, b in zip(bounds[::2], bounds[1::2]) if b - a >= 2]


#: Window (px) of the running mean of the centreline map along a line (see ``trim``).
TRIM_WINDOW = 7


def _packed(paths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``paths`` ((m, 2) pixels each, none empty) as one ``(N, 2)`` array, with each
    path's length in pixels and where it starts in that array."""
    counts = np.array([len(path) for path in paths])
    return np.concatenate(paths), counts, np.cumsum(counts) - counts


def _trim_ends(paths: list[np.ndarray], centre: np.ndarray, trim: float) -> list[np.ndarray]:
    """``paths`` without their ends where the centre map, averaged over ``TRIM_WINDOW`` px,
    stays under ``trim`` times the path's upper quartile (see ``LineFieldSettings.trim``).

    All paths at once (per-path numpy calls cost more than the arithmetic), with a
    path's own numbers: its running mean sees only its own pixels, its end values
    repeated beyond its ends, and its quartile is np.percentile's default (linear
    between the two nearest ranks). Paths shorter than the window stay as they are.
    """
    long = [k for k, path in enumerate(paths) if len(path) >= TRIM_WINDOW]
    if trim <= 0 or not long:
        return list(paths)
    number = np.arange(len(long))
    pixels, counts, starts = _packed([paths[k] for k in long])
    values = centre[pixels[:, 0], pixels[:, 1]].astype(float)
    owner = np.repeat(number, counts)
    position = np.arange(len(values)) - starts[owner]
    # Running mean: the paths one after the other, each with ``half`` copies of its end
    # values on either side (np.pad's "edge"), in one convolution. Its valid window j
    # covers padded[j : j + TRIM_WINDOW]; pixel i of path p is window i + 2 * half * p.
    half = TRIM_WINDOW // 2
    padded_owner = np.repeat(number, counts + 2 * half)
    offset = np.arange(len(padded_owner)) - (starts + 2 * half * number)[padded_owner] - half
    padded = values[starts[padded_owner] + np.clip(offset, 0, counts[padded_owner] - 1)]
    window = np.full(TRIM_WINDOW, 1.0 / TRIM_WINDOW)
    mean = np.convolve(padded, window, mode="valid")[np.arange(len(values)) + 2 * half * owner]
    # Upper quartile as np.percentile(values, 75) gives it, to the last bit: rank
    # r = 0.75 (m - 1) between the sorted values at floor(r) and the next, interpolated
    # from the upper one when the fraction is 0.5 or more (numpy's linear method).
    ranked = values[np.lexsort((values, owner))]
    rank = (counts - 1) * 0.75
    below = np.floor(rank).astype(int)
    lower, upper = ranked[starts + below], ranked[starts + np.minimum(below + 1, counts - 1)]
    gamma = rank - below
    quartile = np.where(gamma >= 0.5, upper - (upper - lower) * (1 - gamma), lower + (upper - lower) * gamma)
    strong = mean >= (trim * quartile)[owner]
    first = np.minimum.reduceat(np.where(strong, position, counts[owner]), starts)
    last = np.maximum.reduceat(np.where(strong, position, -1), starts)
    trimmed = list(paths)
    for k, a, b in zip(long, first.tolist(), last.tolist()):
        if b >= 0:
            trimmed[k] = paths[k][a : b + 1]
    return trimmed


def _kept(paths: list[np.ndarray], min_length: float, border: float, box: tuple) -> list[np.ndarray]:
    """The ``paths`` of two pixels or more that are at least ``min_length`` px long (arc
    length of the pixels) and, when ``border`` > 0, have fewer than 80 % of their pixels
    within ``border`` px of the edge of ``box`` (y0, y1, x0, x1)."""
    paths = [path for path in paths if len(path) >= 2]
    if not paths:
        return []
    pixels, counts, starts = _packed(paths)
    step = np.diff(pixels, axis=0)
    step_length = np.hypot(step[:, 0], step[:, 1])
    step_length[starts[1:] - 1] = 0.0  # from one path's last pixel to the next one's first
    # (Summed in another order than path by path: lengths may differ by ~1e-13 px.)
    keep = np.add.reduceat(step_length, starts) >= min_length
    if border > 0:
        y0, y1, x0, x1 = box
        rows, cols = pixels[:, 0], pixels[:, 1]
        near = (rows < y0 + border) | (rows > y1 - 1 - border) | (cols < x0 + border) | (cols > x1 - 1 - border)
        keep &= np.add.reduceat(near, starts, dtype=np.intp) / counts < 0.8
    return [path for path, ok in zip(paths, keep.tolist()) if ok]


def extract_lines(fields: np.ndarray, *, settings: LineFieldSettings | None = None, valid=None) -> FrameDislocations:
    """Turn one frame's line fields into dislocations as splines (see the module docstring).

    Parameters
    ----------
    fields : (C >= 3, H, W) ndarray of float, or SparseFields
        Channel 0 the centreline map in [0, 1], channels 1-2 ``cos 2θ`` and ``sin 2θ``
        in [-1, 1]; channel 3, when there, the line-end map in [0, 1] (used by
        ``end_cut``); further channels are not used. Not modified. Sparse fields
        packed at a ``low`` no higher than ``settings.low`` give exactly the lines of
        the dense ones.
    settings : LineFieldSettings, optional
    valid : (y0, y1, x0, x1), optional
        The part of the frame that holds image (e.g. without letterbox padding);
        nothing is found outside it.

    Returns
    -------
    FrameDislocations
        One :class:`~temtrack.sdk.postprocess.Dislocation` per traced line
        (``mask_index`` = its number, ``part`` = 0, ``score`` = mean centre value along
        it, ``pixels`` = the mask drawn along its spline); one ``MaskSummary`` each.

    Examples
    --------
    >>> h, w = 64, 96
    >>> y, x = np.mgrid[:h, :w]
    >>> fields = np.zeros((3, h, w), np.float32)
    >>> fields[0] = np.exp(-((y - 20.0) ** 2) / 2.88) * ((x > 10) & (x < 80))
    >>> fields[1] = 1.0  # horizontal: cos 2θ = 1, sin 2θ = 0
    >>> frame = extract_lines(fields)
    >>> len(frame.dislocations), round(frame.dislocations[0].length)
    (1, 67)
    """
    settings = settings or LineFieldSettings()
    # Sparse fields were checked when made (on their kept values: all the tracing reads).
    fields = fields.dense() if isinstance(fields, SparseFields) else check_fields(fields)
    centre, direction = split_fields(fields)
    height, width = centre.shape
    y0, y1, x0, x1 = (0, height, 0, width) if valid is None else (int(v) for v in valid)
    if valid is not None:
        cropped = np.zeros_like(centre)
        cropped[y0:y1, x0:x1] = centre[y0:y1, x0:x1]
        centre = cropped
    direction = traced_direction(centre, direction, settings)
    skeleton = ridges(centre, direction, high=settings.high, low=settings.low)
    segments = _segments_along(_segments(skeleton), direction)
    ends = np.asarray(fields[3], np.float32) if fields.shape[0] > 3 else None
    chains = _chains(segments, _links(segments, settings))
    parts = [part for chain in chains for part in _split_at_ends(chain, ends, settings.end_cut)]
    pieces = _trim_ends(_split_at_turns(parts, settings.max_turn), centre, settings.trim)
    chains = _kept(pieces, settings.min_length, settings.border, (y0, y1, x0, x1))
    lines = []
    for path in chains:
        score = float(centre[path[:, 0], path[:, 1]].mean())
        if score >= settings.min_score:
            centreline = path[:, ::-1].astype(float)
            lines.append((fit_spline(centreline, n_points=settings.n_points, sigma=settings.sigma), centreline, score))
    dislocations = _drawn(lines, settings.mask_width, (height, width))
    summaries = [MaskSummary(d.mask_index, d.n_pixels, 1, 1, False) for d in dislocations]
    return FrameDislocations(
        dislocations=tuple(dislocations),
        candidates=tuple(dislocations),
        masks=tuple(summaries),
        merges=(),
        shape=(height, width),
        settings=settings,
    )


def _drawn(lines: list, width: int, shape: tuple[int, int]) -> list[Dislocation]:
    """One Dislocation per ``(spline, centreline, score)`` of ``lines``, numbered in
    order, whose pixels are its spline drawn ``width`` px wide (the boxes and the
    drawing coordinates of all lines computed at once)."""
    if not lines:
        return []
    height, frame_width = shape
    half = width // 2 + 1
    points = np.stack([spline.points for spline, _, _ in lines])  # (lines, n_points, 2) x, y
    low = np.maximum(np.floor(points.min(axis=1)).astype(int) - half, 0)
    high = np.minimum(np.ceil(points.max(axis=1)).astype(int) + half + 1, (frame_width, height))
    drawn = np.round((points - low[:, None, :]) * 16).astype(np.int32)[:, :, None, :]
    out = []
    for index, ((spline, centreline, score), (x0, y0), (x1, y1)) in enumerate(zip(lines, low.tolist(), high.tolist())):
        crop = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
        cv2.polylines(crop, [drawn[index]], False, 1, width, cv2.LINE_8, shift=4)
        out.append(Dislocation(
            points=spline.points,
            length=spline.length,
            mean_curvature=spline.mean_curvature,
            max_curvature=spline.max_curvature,
            closed=False,
            mask_index=index,
            part=0,
            score=score,
            n_pixels=np.count_nonzero(crop),
            centreline=centreline,
            box=(y0, y1, x0, x1),
            pixels=crop.astype(bool),
        ))
    return out


def curve_masks(curves, width: int, shape: tuple[int, int]) -> np.ndarray:
    """``(n, H, W)`` uint8 0/1: each ``(m, 2)`` x, y curve drawn ``width`` px wide, as
    :func:`extract_lines` draws a dislocation's pixels along its spline (so the masks
    of a frame's dislocations are :func:`instance_masks`'); for splines mapped to
    another pixel grid (a resampled frame's lines in the frame's own pixels)."""
    out = np.zeros((len(curves), *shape), np.uint8)
    for mask, curve in zip(out, curves):
        cv2.polylines(mask, [np.round(np.asarray(curve, float) * 16).astype(np.int32)[:, None, :]], False, 1, width,
                      cv2.LINE_8, shift=4)
    return out


def instance_masks(frame: FrameDislocations) -> np.ndarray:
    """``(n, H, W)`` uint8 0/1: one mask per dislocation of ``frame``, from its ``pixels``.

    How a line-field prediction meets the thesis' metric
    (:func:`temtrack.sdk.metrics.score_image`), which scores instance masks.
    """
    out = np.zeros((len(frame.dislocations), *frame.shape), np.uint8)
    for k, d in enumerate(frame.dislocations):
        y0, y1, x0, x1 = d.box
        out[k, y0:y1, x0:x1] = d.pixels
    return out
