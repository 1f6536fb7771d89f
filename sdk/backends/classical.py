"""The classical (no-model) segmentation backend: Sauvola thresholding.

The method of Govind's thesis, section 1.5.3: histogram equalisation, then Sauvola's
adaptive threshold ``T = m * (1 + k * (s / R - 1))`` over a ``W x W`` window (thesis
values ``k = 0.2``, ``W = 51``, ``R = 128`` on 8-bit images), then one instance per
8-connected component, after removing tiny components and long straight lines (slip
traces, grain-boundary edges). It needs no training and no model file, and serves as
the baseline that learned backends are compared against.

Needs numpy, OpenCV and scikit-image only; must never import torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from .contract import PackedMasks

__all__ = ["ClassicalBackend", "sauvola_instances"]

_POLARITIES = ("dark", "bright")


def sauvola_instances(
    image: np.ndarray,
    *,
    window: int = 51,
    k: float = 0.2,
    r: float = 0.5,
    equalize: bool = True,
    polarity: Literal["dark", "bright"] = "dark",
    min_pixels: int = 30,
    min_length: float = 15.0,
    reject_straight: bool = True,
    straight_tolerance: float = 2.0,
    straight_min_span: float = 0.5,
) -> np.ndarray:
    """Segment dislocation lines by Sauvola thresholding, one mask per component.

    Steps: (1) histogram equalisation of the image quantised to 8 bits (optional);
    (2) Sauvola's threshold ``T = m * (1 + k * (s / r - 1))``, with ``m`` and ``s`` the
    mean and standard deviation over a ``window x window`` neighbourhood; a pixel is
    foreground when it is darker than ``T`` (``polarity="dark"``), or brighter than
    the threshold of the inverted image (``"bright"``); (3) 8-connected components;
    components smaller than ``min_pixels`` are dropped; (4) with ``reject_straight``,
    components that are long straight lines are dropped (see Notes).

    Parameters
    ----------
    image : (H, W) ndarray of floating dtype in [0, 1], or of uint8
        One grayscale frame; uint8 is read as ``image / 255``. Not modified.
    window : int, optional
        Side of the Sauvola window in pixels; odd, >= 3. The thesis uses 51.
    k : float, optional
        Sauvola's sensitivity: a larger ``k`` lowers the threshold where the local
        contrast ``s`` is small, so fewer pixels become foreground. The thesis uses 0.2.
    r : float, optional
        Sauvola's dynamic range of the standard deviation, in image units ([0, 1]).
        0.5 is R = 127.5 on the 8-bit scale (the thesis' R = 128 is r = 0.502); it is
        also what scikit-image uses by default for uint8 images, whereas its default
        for float images (r = 1) would be R = 255.
    equalize : bool, optional
        Equalise the histogram first (thesis: yes), which makes ``k`` and ``r`` mean
        the same for dim and bright, low- and high-contrast frames.
    polarity : {"dark", "bright"}, optional
        Dislocations are dark lines on a brighter background in bright-field TEM
        (``"dark"``); ``"bright"`` for dark-field images.
    min_pixels : int, optional
        Components with fewer pixels are dropped (noise specks).
    min_length : float, optional
        Components shorter than this along their principal axis (px; ``sqrt(12)`` times
        the standard deviation of their pixels along it, the length of a straight
        line) are dropped: dots, loops and blotches are not dislocation lines. 0 keeps
        every component.
    reject_straight : bool, optional
        Drop long straight components (slip traces, grain-boundary lines).
    straight_tolerance : float, optional
        Largest root-mean-square distance, in pixels, of a component's pixels from
        its principal axis for it to count as straight.
    straight_min_span : float, optional
        Smallest length of a straight component to be dropped, as a fraction of the
        image's shorter side (0.5: half of it).

    Returns
    -------
    (N, H, W) ndarray of uint8
        One 0/1 mask per kept component, the largest first (ties in image scan
        order); N may be 0. Masks do not overlap.

    Raises
    ------
    TypeError
        ``image`` is not a numpy array.
    ValueError
        ``image`` is not 2-D, empty, not float/uint8, holds NaN or values outside
        [0, 1]; or a tuning parameter is out of range.

    Notes
    -----
    A component is rejected as a straight line when both hold:

    - the RMS distance of its pixels from its principal axis (the square root of the
      smaller eigenvalue of its pixel-coordinate covariance) is at most
      ``straight_tolerance`` px: a straight band about ``sqrt(12) * tolerance`` px
      wide or narrower, or an arc whose sagitta is under about 3x the tolerance;
    - its bounding-box diagonal (its length, for a straight line) is at least
      ``straight_min_span * min(H, W)`` px.

    Slip traces and grain boundaries usually cross the whole field of view, while
    dislocations end inside it, so only straight dislocations longer than half the
    shorter side are lost with the defaults. A trace that touches a dislocation forms
    one component with it, which is not straight and is kept whole: the filter does
    not cut components apart.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((64, 64), 0.8, dtype=np.float32)
    >>> image[20:23, 10:40] = 0.2
    >>> masks = sauvola_instances(image)
    >>> masks.shape, masks.dtype, int(masks[0, 21, 25])
    ((1, 64, 64), dtype('uint8'), 1)
    """
    unit = _unit_image(image, "image")
    _check_settings(
        window=window,
        k=k,
        r=r,
        polarity=polarity,
        min_pixels=min_pixels,
        min_length=min_length,
        straight_tolerance=straight_tolerance,
        straight_min_span=straight_min_span,
    )
    return _segment(
        unit,
        window=int(window),
        k=float(k),
        r=float(r),
        equalize=bool(equalize),
        polarity=polarity,
        min_pixels=int(min_pixels),
        min_length=float(min_length),
        reject_straight=bool(reject_straight),
        straight_tolerance=float(straight_tolerance),
        straight_min_span=float(straight_min_span),
    )


@dataclass(frozen=True)
class ClassicalBackend:
    """The Sauvola segmentation as a runtime backend (no model file, CPU only).

    The fields are the tuning parameters of :func:`sauvola_instances`, with the same
    defaults and meaning; they are checked at construction, and an unknown one is a
    ``TypeError``.

    Examples
    --------
    >>> import numpy as np
    >>> backend = ClassicalBackend(k=0.25)
    >>> frames = np.full((2, 64, 64), 0.8, dtype=np.float32)
    >>> [m.shape for m in backend.predict(frames)]
    [(0, 64, 64), (0, 64, 64)]
    """

    window: int = 51
    k: float = 0.2
    r: float = 0.5
    equalize: bool = True
    polarity: Literal["dark", "bright"] = "dark"
    min_pixels: int = 30
    min_length: float = 15.0
    reject_straight: bool = True
    straight_tolerance: float = 2.0
    straight_min_span: float = 0.5

    # Class attributes, not settings (see temtrack.sdk.backends.Backend): any frame
    # size; the masks come thresholded (uint8), so post-processing needs no threshold.
    name = "classical"
    input_size = None
    threshold = None

    def __post_init__(self):
        _check_settings(
            window=self.window,
            k=self.k,
            r=self.r,
            polarity=self.polarity,
            min_pixels=self.min_pixels,
            min_length=self.min_length,
            straight_tolerance=self.straight_tolerance,
            straight_min_span=self.straight_min_span,
        )
        for field in ("equalize", "reject_straight"):
            value = getattr(self, field)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{field} must be True or False, got {value!r}")

    def predict(self, frames: np.ndarray) -> list[np.ndarray]:
        """Instance masks of each frame.

        Parameters
        ----------
        frames : (B, H, W) ndarray of floating dtype in [0, 1], or of uint8
            A batch of grayscale frames (uint8 is read as ``frames / 255``). A single
            frame must be given as ``frames[None]``. Not modified.

        Returns
        -------
        list of B ndarrays of uint8, each (N_i, H, W)
            The 0/1 masks of frame ``i``, as :func:`sauvola_instances` returns them.
        """
        unit = _unit_image(frames, "frames", ndim=3)
        settings = asdict(self)
        return [_segment(frame, **settings) for frame in unit]

    def predict_packed(self, frames: np.ndarray) -> list:
        """As :meth:`predict`, each frame's masks as bounding-box crops
        (:class:`~temtrack.sdk.backends.contract.PackedMasks`): what the main job uses, since a
        frame can hold hundreds of components and full-size masks would cost hundreds
        of MB per frame."""
        unit = _unit_image(frames, "frames", ndim=3)
        settings = asdict(self)
        return [_segment(frame, **settings, packed=True) for frame in unit]

    def describe(self) -> dict:
        """The backend name and all its settings, as plain JSON-serialisable values."""
        return {"backend": self.name, **asdict(self)}


# --- internals -----------------------------------------------------------------------


def _unit_image(array, name: str, *, ndim: int = 2) -> np.ndarray:
    """Validate an image (or stack) and return it as float32 in [0, 1] (a new array)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    shape_doc = "(H, W)" if ndim == 2 else "(B, H, W)"
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {shape_doc}, got shape {array.shape}")
    if min(array.shape[-2:]) < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be of a floating dtype in [0, 1] or uint8, got dtype {array.dtype}")
    if array.size == 0:
        return array.astype(np.float32)
    if np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN, got {int(np.isnan(array).sum())} NaN pixels")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1], got range [{low:g}, {high:g}]")
    return array.astype(np.float32)


def _check_settings(*, window, k, r, polarity, min_pixels, min_length, straight_tolerance, straight_min_span) -> None:
    if not _finite(min_length) or min_length < 0:
        raise ValueError(f"min_length must be a finite number >= 0 (pixels), got {min_length!r}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3 (pixels), got {window!r}")
    if not _finite(k) or k < 0:
        raise ValueError(f"k must be a finite number >= 0, got {k!r}")
    if not _finite(r) or r <= 0:
        raise ValueError(f"r must be a finite number > 0 (image units), got {r!r}")
    if polarity not in _POLARITIES:
        raise ValueError(f"polarity must be one of {', '.join(map(repr, _POLARITIES))}, got {polarity!r}")
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, (int, np.integer)) or min_pixels < 0:
        raise ValueError(f"min_pixels must be an integer >= 0, got {min_pixels!r}")
    if not _finite(straight_tolerance) or straight_tolerance <= 0:
        raise ValueError(f"straight_tolerance must be a finite number > 0 (pixels), got {straight_tolerance!r}")
    if not _finite(straight_min_span) or straight_min_span <= 0:
        raise ValueError(f"straight_min_span must be a finite number > 0 (fraction of min(H, W)), got {straight_min_span!r}")


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def _segment(
    unit: np.ndarray,
    *,
    window: int,
    k: float,
    r: float,
    equalize: bool,
    polarity: str,
    min_pixels: int,
    min_length: float,
    reject_straight: bool,
    straight_tolerance: float,
    straight_min_span: float,
    packed: bool = False,
):
    """The segmentation of one validated (H, W) float32 frame in [0, 1]: (N, H, W)
    masks, or with ``packed`` the same as bounding-box crops
    (:class:`~temtrack.sdk.backends.contract.PackedMasks`)."""
    from skimage.filters import threshold_sauvola

    height, width = unit.shape
    # Dark lines on a bright background are the reference; a bright-line image is
    # inverted so that a constant frame gives no foreground in either polarity.
    x = 1.0 - unit if polarity == "bright" else unit
    if equalize:
        # OpenCV equalises 8-bit images 50x faster than skimage does floats; uint8
        # input (or float = uint8 / 255) passes through the rounding unchanged.
        quantised = np.rint(x * 255.0).astype(np.uint8)
        x = cv2.equalizeHist(quantised).astype(np.float32) / np.float32(255.0)
    foreground = (x < threshold_sauvola(x, window_size=window, k=k, r=r)).astype(np.uint8)

    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= max(min_pixels, 1)
    keep[0] = False  # the background label
    if (reject_straight or min_length > 0) and keep.any():
        along, across = _principal_spreads(labels, count)
        keep &= np.sqrt(12.0 * along) >= min_length
        if reject_straight:
            span = straight_min_span * min(height, width)
            length = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
            keep &= ~((np.sqrt(across) <= straight_tolerance) & (length >= span))
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-areas[kept], kind="stable")]
    if packed:
        boxes = stats[kept][:, [cv2.CC_STAT_TOP, cv2.CC_STAT_LEFT, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_WIDTH]]
        crops = tuple(
            (labels[y : y + h, x : x + w] == label).view(np.uint8) for label, (y, x, h, w) in zip(kept, boxes.tolist())
        )
        return PackedMasks((height, width), np.arange(len(kept), dtype=np.int64), boxes[:, :2].astype(np.int64), crops, "uint8")

    masks = np.zeros((len(kept), height, width), np.uint8)
    if len(kept):
        rank = np.full(count, -1, np.int64)
        rank[kept] = np.arange(len(kept))
        ys, xs = np.nonzero(labels)
        index = rank[labels[ys, xs]]
        inside = index >= 0
        masks[index[inside], ys[inside], xs[inside]] = 1
    return masks


def _principal_spreads(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(count,) variances of each component's pixel coordinates along and across its
    principal axis (the eigenvalues of their 2x2 covariance), px^2."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    n = np.maximum(np.bincount(lab, minlength=count), 1).astype(np.float64)
    mx = np.bincount(lab, xs, count) / n
    my = np.bincount(lab, ys, count) / n
    dx, dy = xs - mx[lab], ys - my[lab]
    sxx = np.bincount(lab, dx * dx, count) / n
    syy = np.bincount(lab, dy * dy, count) / n
    sxy = np.bincount(lab, dx * dy, count) / n
    mean, spread = (sxx + syy) / 2.0, np.sqrt(((sxx - syy) / 2.0) ** 2 + sxy**2)
    return mean + spread, np.maximum(mean - spread, 0.0)
