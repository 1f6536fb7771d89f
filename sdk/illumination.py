"""Evening out a frame's illumination before a line-field model (``--flatten``).

In-situ TEM frames are often lit unevenly: a converged beam darkens the corners
(vignetting; the four dislocation samples fall to about a quarter of their centre's
brightness in the corners), and thickness and bend contours shade whole regions. A
dislocation is a line a few tenths darker than the background *around it*; in a dark
corner it is as dark, relative to its surroundings, as in the centre, but much darker in
absolute gray levels than the background elsewhere. The model sees that the line is
there less well. Vignetting as strong as the samples' costs the bundled model 6-12 % of
the labelled TWIP lines it finds, and :func:`flatten` wins it all back
(``benchmarks/bench_illumination.py``).

:func:`flatten` divides the frame by its illumination, a Gaussian blur of ``sigma`` px
(far wider than a line, so the lines themselves barely move it), and multiplies by the
frame's mean gray level, so the frame keeps its overall brightness and each line its
contrast to the background around it. The blur is computed on the frame shrunk by about
``sigma / 4`` (area averaging) and brought back by linear interpolation: the
illumination is smooth at that scale, and the cost is a few ms per frame at any
``sigma``. Where the illumination falls under a quarter of the frame's mean (a black
letterbox bar, a frame border) the division stops there, so the noise of black regions
is not blown up into texture.

Pure numpy/OpenCV; no torch, no model.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["DEFAULT_SIGMA", "FLOOR", "flatten", "illumination", "model_flatten", "photometric"]

#: The blur's sigma in model px used by default for line-field models: about 27 times the
#: width (Gaussian sigma, 1.68 px) of the lines the bundled model was trained on.
DEFAULT_SIGMA = 45.0
#: The illumination is not taken below this fraction of the frame's mean gray level.
FLOOR = 0.25
_SMALL_SIGMA = 4.0  # px: the blur's sigma on the shrunk frame


def _check(image, sigma: float) -> np.ndarray:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number of px > 0, got {sigma!r}")
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"image must be a non-empty 2-D array (H, W), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must hold floats (gray levels in [0, 1]), got {image.dtype}")
    return image


def illumination(image: np.ndarray, *, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """The frame's illumination: its Gaussian blur of ``sigma`` px.

    Computed on the frame shrunk by ``max(1, sigma // 4)`` (area averaging), blurred by
    the rest of ``sigma`` there (borders reflected) and enlarged back by linear
    interpolation; within about 1 % of the full-size blur on real frames.

    Parameters
    ----------
    image : (H, W) ndarray of float
        Gray levels (any range).
    sigma : float
        Gaussian sigma in px (> 0).

    Returns
    -------
    (H, W) ndarray of float32
    """
    return _illumination(_check(image, sigma), sigma)


def _illumination(image: np.ndarray, sigma: float) -> np.ndarray:
    height, width = image.shape
    image = image.astype(np.float32, copy=False)
    shrink = max(1, int(sigma // _SMALL_SIGMA))
    small_shape = (max(1, round(width / shrink)), max(1, round(height / shrink)))
    if shrink == 1:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    small = cv2.resize(image, small_shape, interpolation=cv2.INTER_AREA)
    # The shrunk pixel grid is `shrink` times coarser (per axis, as rounded).
    small_sigma = sigma * small_shape[0] / width, sigma * small_shape[1] / height
    blurred = cv2.GaussianBlur(small, (0, 0), sigmaX=small_sigma[0], sigmaY=small_sigma[1], borderType=cv2.BORDER_REFLECT)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


def flatten(image: np.ndarray, *, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """``image`` with its illumination evened out (see the module docstring).

    ``image / max(illumination, FLOOR * mean) * mean``, clipped to [0, 1], with ``mean``
    the frame's mean gray level. A uniformly lit frame comes back as it was, up to the
    faint shading of its own lines in the blur.

    Parameters
    ----------
    image : (H, W) ndarray of float
        Gray levels in [0, 1]. Not modified.
    sigma : float
        Gaussian sigma of the illumination, px (> 0).

    Returns
    -------
    (H, W) ndarray of float32 in [0, 1]

    Examples
    --------
    >>> y, x = np.mgrid[:128, :128]
    >>> lit = 0.8 * (1 - 0.6 * ((x - 64) ** 2 + (y - 64) ** 2) / 8192)  # dark corners
    >>> flat = flatten(lit, sigma=8)
    >>> round(float(lit.max() / lit.min()), 1), round(float(flat.max() / flat.min()), 1)
    (2.5, 1.3)
    """
    image = _check(image, sigma)
    mean = float(image.mean())
    if not mean > 0:
        return np.clip(image, 0, 1).astype(np.float32)
    light = np.maximum(_illumination(image, sigma), np.float32(FLOOR * mean))
    return np.clip(image / light * np.float32(mean), 0, 1).astype(np.float32)


def model_flatten(flatten, *, line_field: bool) -> float | None:
    """The blur sigma a model's inputs are evened out with, for a ``flatten`` option:
    ``"auto"`` is :data:`DEFAULT_SIGMA` for a line-field model and None (no evening
    out) for a mask model or the classical backend; a number or None is returned as it
    is (:class:`~temtrack.sdk.pipeline.PipelineSettings` checks numbers); any other
    text is a ValueError naming ``flatten``."""
    if isinstance(flatten, str):
        if flatten != "auto":
            raise ValueError(f"flatten must be a number of px > 0, 'auto' or None, got {flatten!r}")
        return DEFAULT_SIGMA if line_field else None
    return flatten


def photometric(image: np.ndarray, *, invert: bool = False, flatten_sigma: float | None = None) -> np.ndarray:
    """A model input as the model is to see it: inverted (``1 - image``, for bright
    lines) when ``invert``, then with its illumination evened out by :func:`flatten`
    of ``flatten_sigma`` px unless that is None. ``image`` itself is not modified
    (returned as it is when neither applies)."""
    if invert:
        image = 1.0 - image
    return image if flatten_sigma is None else flatten(image, sigma=flatten_sigma)
