"""How wide the dislocation lines of a video are, and the scale that brings them to the
width a line-field model was trained at (``--scale auto``).

A line-field model finds lines about as wide as those it was trained on. Seen twice as
wide (a higher magnification, a larger camera) or half as wide, the bundled model loses
40-50 % of the labelled TWIP lines it finds at the frames' own size
(``benchmarks/bench_linescale.py``). Resampling each frame by ``scale`` before the model
(model px per frame px, :class:`~temtrack.sdk.pipeline.PipelineSettings`) undoes that.

The width is measured without the model, by scale selection (Lindeberg 1998, "Edge
detection and ridge detection with automatic scale selection"): the ridge strength
``sigma**(2 * GAMMA) * (l1 - |l2|)`` of the Hessian's eigenvalues ``l1 >= l2`` at
Gaussian scales ``sigma`` in steps of 2**(1/4) peaks, with ``GAMMA = 3/4``, at the sigma
of a dark line's Gaussian cross-section; a round spot or loop, whose two eigenvalues are
alike, scores about 0. A frame's width is the strength-weighted median of the peak sigma
over the centres (maxima across the ridge) of its strongest ridges; a video's is the
median over frames spread through it.

:func:`choose_scale` keeps ``1`` while that width lies within ``BAND`` of the model's
training width ``REFERENCE_SIGMA``, when the sampled frames disagree, or when half or
fewer of them show a ridge wider than the smallest level (a video with no lines, e.g.
of loops, gives the widths of whatever else is in it: noise, texture, loops); otherwise
the scale is ``REFERENCE_SIGMA / width``, within ``[MIN_SCALE, MAX_SCALE]``.

Pure numpy/OpenCV; no torch, no model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .linefield import gaussian_kernels

__all__ = ["BAND", "REFERENCE_SIGMA", "ScaleChoice", "choose_scale", "line_sigma"]

GAMMA = 0.75
# Gaussian scales tried, px: 0.71 .. 8 in steps of 2**(1/4) (lines about 1.7 to 19 px
# wide at half depth).
STEP = 2**0.25
LEVELS = tuple(float(STEP**k) for k in range(-2, 13))
# The share of a frame's ridge centres, strongest first, whose scale is read.
TOP_SHARE = 0.01
# Frames larger than this on a side are measured on their central MAX_SIDE x MAX_SIDE px.
MAX_SIDE = 1024
# Measured by benchmarks/bench_linescale.py: generator images of the presets the
# bundled model trained on give medians of 1.41-1.68 px per preset.
REFERENCE_SIGMA = 1.68
# Widths within this factor of the reference keep scale 1: the labelled TWIP frames and
# the dislocation samples (2.0 px; sample1 alone 2.38 px), which the model traces well at
# their own size. A TWIP frame seen 2x or 0.5x as large is outside it; one seen 1.41x as
# large (2.38 px) is not, although the model finds a fifth fewer of its lines: a default
# that acts only on clear cases (benchmarks/bench_linescale.py).
BAND = 1.6
# The sampled frames must agree within this factor (upper over lower quartile).
AGREEMENT = 1.5
MIN_SCALE, MAX_SCALE = 0.25, 2.0
FRAMES = 8


@dataclass(frozen=True)
class ScaleChoice:
    """What :func:`choose_scale` decided, and why.

    Attributes
    ----------
    scale : float
        Model px per frame px (1.0: the frames' own size).
    sigma : float or None
        The video's line width as a Gaussian sigma, px (None: no frame had ridges).
    sigmas : tuple of float
        Each sampled frame's width, px (frames without ridges, or at the smallest
        level, left out).
    reason : str
        One line for the user.
    """

    scale: float
    sigma: float | None
    sigmas: tuple
    reason: str

    def to_dict(self) -> dict:
        return {"scale": self.scale, "sigma_px": self.sigma, "frame_sigmas_px": list(self.sigmas),
                "reference_sigma_px": REFERENCE_SIGMA, "reason": self.reason}


def _ridge(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(strength, normal)`` of dark ridges at ``sigma`` px: ``max(l1 - |l2|, 0)`` of
    the Hessian (``l1 >= l2``; about 0 on a round spot, where ``l2`` is close to ``l1``)
    by Gaussian derivative kernels reflected at the border, and the direction of ``l1``'s
    eigenvector (across the line) as 0-3 for 0, 45, 90 and 135 degrees."""
    g0, g1, g2 = gaussian_kernels(sigma, reach=3.0)

    def filtered(kx, ky):
        return cv2.sepFilter2D(image, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT)

    xx, yy, xy = filtered(g2, g0), filtered(g0, g2), filtered(g1, g1)
    half_trace, root = 0.5 * (xx + yy), np.sqrt(0.25 * (xx - yy) ** 2 + xy**2)
    l1, l2 = half_trace + root, half_trace - root
    strength = np.maximum(l1 - np.abs(l2), 0)
    # OpenCV correlates, so g1 x g1 gives +Hxy and the angle of l1's eigenvector is
    # 0.5 * atan2(2 Hxy, Hxx - Hyy) with y down the rows.
    normal = np.round(np.degrees(0.5 * np.arctan2(2 * xy, xx - yy)) / 45).astype(np.int8) % 4
    return strength, normal.astype(np.uint8)


# Row and column step to the neighbour across a ridge whose normal is 0, 45, 90, 135 deg.
_ACROSS = ((0, 1), (1, 1), (1, 0), (1, -1))


def line_sigma(image) -> float | None:
    """The width of the strongest elongated dark ridges of one frame, as a Gaussian sigma.

    Parameters
    ----------
    image : (H, W) array_like of float
        A gray frame in [0, 1] (dark lines on a brighter background), at least 32 px
        on each side. Not modified.

    Returns
    -------
    float or None
        Sigma in px (about the full width at half depth / 2.35), one of ``LEVELS``
        up to 1/32 of the frame's smaller side:
        within 1.5 levels (1.3x) of a Gaussian line's sigma from 0.9 to 7 px, 0.15
        levels low on average;
        None when the frame holds no elongated dark ridge (a flat frame). The smallest
        level means "this thin or thinner": pixel noise and compression texture.

    Examples
    --------
    >>> y, x = np.mgrid[:128, :128]
    >>> frame = 0.8 - 0.3 * np.exp(-((x - 64.0) ** 2) / (2 * 3.0**2))
    >>> round(line_sigma(frame), 2)  # sigma 3 px: the level 2.83
    2.83
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2 or min(image.shape) < 32:
        raise ValueError(f"image must be a 2-D frame of at least 32 x 32 px, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image holds NaN or infinite values")
    # A large frame's centre stands for it (about 1 s per 1024 x 1024 px here).
    top, left = max(0, (image.shape[0] - MAX_SIDE) // 2), max(0, (image.shape[1] - MAX_SIDE) // 2)
    image = image[top : top + MAX_SIDE, left : left + MAX_SIDE]
    height, width = image.shape
    # A line is narrow against the frame: in a small frame a wide band (a slip band, a
    # bend contour) would otherwise outweigh the few lines there.
    levels = [sigma for sigma in LEVELS if sigma <= min(height, width) / 32]
    best = np.zeros((height, width), np.float32)
    level = np.zeros((height, width), np.uint8)
    normal = np.zeros((height, width), np.uint8)
    for index, sigma in enumerate(levels):
        # Coarse scales run on a halved frame (the same sigma in frame px): a fifth of the
        # work. Halving lowers a thin ridge's sampled peak by a few per cent, enough to
        # move a flat maximum by a level, so only from 2.83 px on.
        factor = 1
        while sigma / factor > 2.83 and min(height, width) // (2 * factor) >= 32:
            factor *= 2
        small = image if factor == 1 else cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
        strength, across = _ridge(small, sigma / factor)
        strength *= sigma ** (2 * GAMMA) / factor**2  # per frame px squared
        if factor > 1:
            strength = cv2.resize(strength, (width, height), interpolation=cv2.INTER_LINEAR)
            across = cv2.resize(across, (width, height), interpolation=cv2.INTER_NEAREST)
        stronger = strength > best
        best[stronger], level[stronger], normal[stronger] = strength[stronger], index, across[stronger]
    margin = math.ceil(2 * levels[-1])  # the reflected border makes ridges of its own
    best[:margin] = best[-margin:] = 0
    best[:, :margin] = best[:, -margin:] = 0
    # Only a ridge's centre (a maximum across it): beside the centre the strength peaks
    # at larger scales, which would widen thin lines.
    padded = np.pad(best, 1)
    centre = best > 0
    for code, (dy, dx) in enumerate(_ACROSS):
        here = normal == code
        ahead = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        behind = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        centre &= ~here | ((best >= ahead) & (best >= behind))
    # A ridge must stand out of float rounding: strength in gray levels, 1e-4 of the range.
    centre &= best > 1e-4
    if not centre.any():
        return None
    strength = best[centre]
    chosen = strength >= np.quantile(strength, 1 - TOP_SHARE)
    chosen_levels, weights = level[centre][chosen], strength[chosen]
    totals = np.bincount(chosen_levels, weights=weights, minlength=len(levels))
    median = int(np.searchsorted(np.cumsum(totals), 0.5 * totals.sum()))
    return levels[median]


def choose_scale(frames: Iterable, *, invert: bool = False) -> ScaleChoice:
    """The scale that brings a video's lines to the bundled model's training width.

    Parameters
    ----------
    frames : iterable of (H, W) array_like of float
        A few frames spread through the video (:data:`FRAMES` is what the main job
        reads), gray in [0, 1].
    invert : bool
        The frames show bright lines, which the model sees inverted (``--lines
        bright``): the width is measured on ``1 - frame``, the lines the model will see.

    Returns
    -------
    ScaleChoice
        ``scale`` 1.0 when the width is within a factor ``BAND`` of
        ``REFERENCE_SIGMA``, when the frames disagree by more than ``AGREEMENT``
        (quartiles), or when no more than half of them show a ridge wider than the
        smallest level; else ``REFERENCE_SIGMA / sigma``
        within ``[MIN_SCALE, MAX_SCALE]``.
    """
    measured = [line_sigma(1.0 - np.asarray(frame, np.float32) if invert else frame) for frame in frames]
    # The smallest level is noise or texture finer than any line the scale could rescue.
    sigmas = tuple(s for s in measured if s is not None and s > LEVELS[0])
    if len(sigmas) <= len(measured) / 2:
        return ScaleChoice(1.0, None, sigmas, f"only {len(sigmas)} of {len(measured)} sampled frames show dark lines "
                           "of a measurable width: the frames' own size")
    sigma = float(np.median(sigmas))
    low, high = np.quantile(sigmas, [0.25, 0.75])
    width = f"line width sigma {sigma:.2f} px (model trained at {REFERENCE_SIGMA:.2f})"
    if high / low > AGREEMENT:
        return ScaleChoice(1.0, sigma, sigmas, f"{width}, but the sampled frames disagree "
                           f"({low:.2f}-{high:.2f} px): the frames' own size")
    if 1 / BAND <= sigma / REFERENCE_SIGMA <= BAND:
        return ScaleChoice(1.0, sigma, sigmas, f"{width}: the frames' own size")
    scale = float(np.clip(REFERENCE_SIGMA / sigma, MIN_SCALE, MAX_SCALE))
    return ScaleChoice(round(scale, 3), sigma, sigmas, f"{width}: frames resampled by {scale:.3g}")
