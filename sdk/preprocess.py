"""How frames of any size meet a model with a fixed input size.

Policy
------
A model takes frames of one size ``(H, W)`` (``backend.input_size``); video frames
have their own size ``(h, w)``. By default a frame is *letterboxed*:

1. **Scale to fit.** ``scale = min(H / h, W / w)`` model pixels per frame pixel, so
   the whole frame fits with its aspect ratio preserved; the scaled frame is
   ``(round(h * scale), round(w * scale))`` pixels.
2. **Resample.** Shrinking uses ``cv2.INTER_AREA``: each model pixel is the average of
   the frame pixels it covers, so a thin dark line becomes a fainter line (a 1 px line
   at half size keeps half its contrast) instead of being skipped or broken up by
   point sampling. Enlarging uses ``cv2.INTER_LINEAR``. ``scale == 1`` copies.
3. **Pad.** The scaled frame sits at the top-left corner of the model input; the
   bottom and right are padded with the median gray value of the scaled frame. A
   constant pad at the background level adds no edge a model could read as a line
   (a black pad would), and does not mirror dislocations into the pad (reflection
   would).

An explicit ``scale`` (model px per frame px) replaces step 1, e.g. to keep the pixel
size the model was trained at; a scaled frame larger than the input is an error that
names the largest scale that fits. Tiling large frames into several model inputs is
not implemented. Without a model size (``size=None``, a backend that takes any size)
only the optional ``scale`` applies and nothing is padded.

Coordinates
-----------
Points are ``(x, y)`` = (column, row) with pixel centres at integer coordinates, in
both frame and model-input pixels. The frame pixel grid is stretched by ``scale``
about pixel edges, as ``cv2.resize`` does, and shifted by ``offset``::

    x_input = (x_frame + 0.5) * scale - 0.5 + offset_x
    x_frame = (x_input - offset_x + 0.5) / scale - 0.5

(the same for ``y``). :class:`Placement` holds the numbers, computed once per video by
:func:`placement_for`, and maps points (:meth:`Placement.to_frame`,
:meth:`Placement.to_input`) and masks (:meth:`Placement.clear_outside`).

Needs numpy and OpenCV only; must never import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Placement", "apply", "fit_to_input", "placement_for"]


@dataclass(frozen=True)
class Placement:
    """Where a frame lies in a model input (see the module docstring for the policy).

    Attributes
    ----------
    scale : float
        Model pixels per frame pixel (< 1 shrinks).
    offset : (int, int)
        ``(x, y)`` in model pixels of the scaled frame's top-left pixel edge; ``(0, 0)``
        for the letterbox, which pads at the bottom and right.
    frame_shape : (int, int)
        ``(h, w)`` of the frame in pixels.
    input_shape : (int, int)
        ``(H, W)`` of the model input in pixels.

    Examples
    --------
    >>> p = placement_for((700, 1024), (512, 512))
    >>> p.scale, p.scaled_shape, p.valid
    (0.5, (350, 512), (slice(0, 350, None), slice(0, 512, None)))
    >>> p.to_frame([[0.0, 0.0]])  # the first model pixel covers frame pixels 0 and 1
    array([[0.5, 0.5]])
    """

    scale: float
    offset: tuple[int, int]
    frame_shape: tuple[int, int]
    input_shape: tuple[int, int]

    @property
    def scaled_shape(self) -> tuple[int, int]:
        """``(h', w')`` of the scaled frame in model pixels (as ``cv2.resize`` rounds it)."""
        return _scaled(self.frame_shape, self.scale)

    @property
    def valid(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices of the model input covered by the frame."""
        (height, width), (x, y) = self.scaled_shape, self.offset
        return slice(y, y + height), slice(x, x + width)

    def to_frame(self, points) -> np.ndarray:
        """Model-input points in frame pixels.

        Parameters
        ----------
        points : (n, 2) array_like of float
            ``(x, y)`` in model-input pixels. Not modified.

        Returns
        -------
        (n, 2) ndarray of float64
            ``(x, y)`` in frame pixels.
        """
        points = _points(points)
        return (points - self._offset + 0.5) / self.scale - 0.5

    def to_input(self, points) -> np.ndarray:
        """Frame points in model-input pixels.

        Parameters
        ----------
        points : (n, 2) array_like of float
            ``(x, y)`` in frame pixels. Not modified.

        Returns
        -------
        (n, 2) ndarray of float64
            ``(x, y)`` in model-input pixels.
        """
        points = _points(points)
        return (points + 0.5) * self.scale - 0.5 + self._offset

    def clear_outside(self, masks: np.ndarray) -> np.ndarray:
        """A copy of ``masks`` with everything outside the frame's region set to 0.

        Parameters
        ----------
        masks : (..., H, W) ndarray
            Masks on the model input, ``(H, W) == input_shape``; any dtype. Not modified.

        Returns
        -------
        (..., H, W) ndarray, same dtype
        """
        if not isinstance(masks, np.ndarray):
            raise TypeError(f"masks must be a numpy array (..., H, W), got {type(masks).__name__}")
        if masks.ndim < 2 or masks.shape[-2:] != tuple(self.input_shape):
            raise ValueError(f"masks must have shape (..., {self.input_shape[0]}, {self.input_shape[1]}), got {masks.shape}")
        rows, columns = self.valid
        cleared = np.zeros_like(masks)
        cleared[..., rows, columns] = masks[..., rows, columns]
        return cleared

    def masks_to_frame(self, masks: np.ndarray) -> np.ndarray:
        """Masks on the model input, cut to the frame's region and resized to the frame.

        For scoring against labels drawn on the frame. Probabilities are resized
        bilinearly, integer (0/1) masks by nearest neighbour.

        Parameters
        ----------
        masks : (N, H, W) ndarray
            Masks on the model input, ``(H, W) == input_shape``. Not modified.

        Returns
        -------
        (N, h, w) ndarray, same dtype, ``(h, w) == frame_shape``
        """
        if not isinstance(masks, np.ndarray) or masks.ndim != 3 or masks.shape[1:] != tuple(self.input_shape):
            shape = getattr(masks, "shape", type(masks).__name__)
            raise ValueError(f"masks must be an (N, {self.input_shape[0]}, {self.input_shape[1]}) array, got {shape}")
        rows, columns = self.valid
        height, width = self.frame_shape
        inside = masks[:, rows, columns]
        if inside.shape[1:] == (height, width):
            return inside.copy()
        floating = np.issubdtype(masks.dtype, np.floating)
        interpolation = cv2.INTER_LINEAR if floating else cv2.INTER_NEAREST
        source = inside.astype(np.float32) if floating and masks.dtype != np.float32 else inside
        out = np.stack([cv2.resize(m, (width, height), interpolation=interpolation) for m in source])
        return out.astype(masks.dtype, copy=False)

    def to_dict(self) -> dict:
        """The placement as JSON-serialisable values, for the outputs."""
        return {
            "scale": self.scale,
            "offset": list(self.offset),
            "frame_shape": list(self.frame_shape),
            "input_shape": list(self.input_shape),
        }

    @property
    def _offset(self) -> np.ndarray:
        return np.asarray(self.offset, dtype=np.float64)


def placement_for(frame_shape, size, *, scale: float | None = None) -> Placement:
    """Where frames of ``frame_shape`` go in a model input of ``size`` (once per video).

    Parameters
    ----------
    frame_shape : (int, int)
        ``(h, w)`` of the frames in pixels.
    size : (int, int) or None
        ``(H, W)`` of the model input in pixels (``backend.input_size``); None for a
        backend that takes any size.
    scale : float, optional
        Model pixels per frame pixel. Default: the largest that fits the frame into
        ``size`` (letterbox), or 1 when ``size`` is None.

    Returns
    -------
    Placement

    Raises
    ------
    ValueError
        A shape or size that is not two integers >= 1, a scale that is not a finite
        number > 0, or a scaled frame larger than ``size`` (the message gives the
        largest scale that fits) or smaller than one pixel.
    """
    frame_shape = _shape(frame_shape, "frame_shape")
    if size is not None:
        size = _shape(size, "size")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or not math.isfinite(scale) or scale <= 0
    ):
        raise ValueError(f"scale must be a finite number > 0 (model px per frame px) or None, got {scale!r}")
    fit = None if size is None else min(size[0] / frame_shape[0], size[1] / frame_shape[1])
    scale = float(scale) if scale is not None else (fit if fit is not None else 1.0)
    scaled = _scaled(frame_shape, scale)
    if min(scaled) < 1:
        raise ValueError(f"scale {scale:g} shrinks the {frame_shape} frame to {scaled} px: less than one pixel")
    if size is None:
        size = scaled
    elif scaled[0] > size[0] or scaled[1] > size[1]:
        raise ValueError(
            f"scale {scale:g} makes the {frame_shape} frame {scaled} model px, larger than the model input {size}; "
            f"use scale <= {fit:.6g} (the largest that fits) or scale=None to fit it; tiling is not implemented"
        )
    return Placement(scale=scale, offset=(0, 0), frame_shape=frame_shape, input_shape=size)


def apply(image: np.ndarray, placement: Placement) -> np.ndarray:
    """The model input of one frame: scaled and padded as ``placement`` says.

    Parameters
    ----------
    image : (h, w) ndarray of floating dtype, or of uint8
        One grayscale frame with ``(h, w) == placement.frame_shape``; uint8 is read as
        ``image / 255``. Not modified.

    Returns
    -------
    (H, W) ndarray of float32
        A new array of ``placement.input_shape``; outside ``placement.valid`` it holds
        the median of the scaled frame.
    """
    if not isinstance(placement, Placement):
        raise TypeError(f"placement must be a Placement, got {type(placement).__name__}")
    frame = _frame(image)
    if frame.shape != tuple(placement.frame_shape):
        raise ValueError(
            f"image has shape {image.shape} but the placement is for frames of {tuple(placement.frame_shape)}; "
            "compute it with placement_for(image.shape, size)"
        )
    if placement.scale == 1.0:
        scaled = frame.copy() if frame is image else frame
    else:
        # fx/fy rather than a target size: OpenCV then maps pixels with exactly
        # `scale`, which is what Placement.to_frame inverts.
        interpolation = cv2.INTER_AREA if placement.scale < 1.0 else cv2.INTER_LINEAR
        scaled = cv2.resize(frame, None, fx=placement.scale, fy=placement.scale, interpolation=interpolation)
        # Averaging in float32 can round a white pixel to 1.0000001.
        np.clip(scaled, 0.0, 1.0, out=scaled)
    if scaled.shape != placement.scaled_shape:  # never expected; guards the rounding rule
        raise RuntimeError(f"cv2.resize gave {scaled.shape}, expected {placement.scaled_shape}")
    if scaled.shape == tuple(placement.input_shape):
        return scaled
    model_input = np.full(placement.input_shape, np.median(scaled), dtype=np.float32)
    model_input[placement.valid] = scaled
    return model_input


def fit_to_input(image: np.ndarray, size, *, scale: float | None = None) -> tuple[np.ndarray, Placement]:
    """One frame as a model input of ``size``, and where it lies there.

    ``fit_to_input(image, size, scale=s)`` is ``apply(image, p), p`` with
    ``p = placement_for(image.shape, size, scale=s)``; for a video, compute the
    placement once and call :func:`apply` per frame.

    Parameters
    ----------
    image : (h, w) ndarray of floating dtype, or of uint8
        One grayscale frame (uint8 read as ``image / 255``). Not modified.
    size : (int, int) or None
        ``(H, W)`` of the model input; None: any size (only ``scale`` applies).
    scale : float, optional
        Model px per frame px; default: fit (letterbox).

    Returns
    -------
    model_input : (H, W) ndarray of float32
    placement : Placement

    Examples
    --------
    >>> import numpy as np
    >>> frame = np.full((700, 1024), 0.6, np.float32)
    >>> x, p = fit_to_input(frame, (512, 512))
    >>> x.shape, x.dtype, p.valid[0]
    ((512, 512), dtype('float32'), slice(0, 350, None))
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (h, w), got {type(image).__name__}")
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (h, w), got shape {image.shape}")
    placement = placement_for(image.shape, size, scale=scale)
    return apply(image, placement), placement


# --- internals -----------------------------------------------------------------------


def _scaled(shape, scale: float) -> tuple[int, int]:
    # Rounded half to even, as OpenCV's cvRound computes resize's output size.
    return int(np.rint(shape[0] * scale)), int(np.rint(shape[1] * scale))


def _shape(value, name: str) -> tuple[int, int]:
    try:
        height, width = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width) in pixels, got {value!r}") from None
    for v in (height, width):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be two integers >= 1 (height, width) in pixels, got {value!r}")
    return int(height), int(width)


def _points(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2) as (x, y), got {points.shape}")
    return points


def _frame(image) -> np.ndarray:
    """``image`` as float32 (the same object when it already is)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (h, w), got {type(image).__name__}")
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"image must be 2-D (h, w) and not empty, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be of a floating dtype or uint8, got dtype {image.dtype}")
    return np.ascontiguousarray(image, dtype=np.float32)  # OpenCV needs contiguous rows
