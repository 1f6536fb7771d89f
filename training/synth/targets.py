"""Dense line-field targets rendered from exact centrelines (the line-field model family).

A line-field model predicts, at every pixel, how close it is to a dislocation's
centreline and which way the line runs there. The targets come straight from the
generator's exact centrelines, never from masks:

- ``centre``: a Gaussian ridge ``exp(-d^2 / (2 sigma^2))`` of the distance ``d`` (px)
  to the nearest centreline point; with ``sigma`` about 1.2 px, neighbours 5 px apart
  in a pile-up stay two separate peaks;
- ``direction``: ``(cos 2θ, sin 2θ)`` of the nearest centreline's tangent angle θ (the
  doubled angle makes a line and its reverse the same value);
- ``weight``: 1 where the direction is supervised (``d <= band``), 0 elsewhere;
- optionally ``ends``: a Gaussian spot of the same ``sigma`` at every line end inside
  the image.

Only pixels within a few px of a line are evaluated: an approximate distance transform
(OpenCV) finds them, and a k-d tree of the centreline points (scipy) gives each its
exact nearest point. Needs numpy, scipy and OpenCV only: never torch.

>>> import numpy as np
>>> line = np.column_stack([np.arange(10.0, 50.0), np.full(40, 20.0)])
>>> t = line_targets([line], (40, 64))
>>> float(t.centre[20, 30]), float(t.centre[22, 30]) < 0.3, float(t.direction[0, 20, 30])
(1.0, True, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree

__all__ = ["LineTargets", "line_targets"]


@dataclass(frozen=True)
class LineTargets:
    """Dense targets of one image (see the module docstring).

    Attributes
    ----------
    centre : (H, W) ndarray of float32 in [0, 1]
    direction : (2, H, W) ndarray of float32 in [-1, 1]
        ``cos 2θ`` and ``sin 2θ``; 0 where ``weight`` is 0.
    weight : (H, W) ndarray of float32, 0 or 1
    ends : (H, W) ndarray of float32 in [0, 1], or None
    """

    centre: np.ndarray
    direction: np.ndarray
    weight: np.ndarray
    ends: np.ndarray | None = None


def _dense(curve: np.ndarray, spacing: float) -> np.ndarray:
    """``curve`` resampled every ``spacing`` px or closer (keeps its own points)."""
    if len(curve) < 2:
        return curve
    steps = np.hypot(*np.diff(curve, axis=0).T)
    counts = np.maximum(np.ceil(steps / spacing).astype(int), 1)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    t = (np.arange(counts.sum()) - first) / np.repeat(counts, counts)
    start = np.repeat(curve[:-1], counts, axis=0)
    delta = np.repeat(np.diff(curve, axis=0), counts, axis=0)
    return np.vstack([start + t[:, None] * delta, curve[-1:]])


def _tangent_angles(curve: np.ndarray) -> np.ndarray:
    """Tangent angle (radians) at each point, from a +-2 point central difference."""
    k = min(2, len(curve) - 1)
    padded = np.vstack([np.repeat(curve[:1], k, 0), curve, np.repeat(curve[-1:], k, 0)])
    delta = padded[2 * k :] - padded[: -2 * k]
    return np.arctan2(delta[:, 1], delta[:, 0])


def line_targets(
    centrelines,
    shape: tuple[int, int],
    *,
    sigma: float = 1.2,
    band: float = 3.0,
    ends: bool = False,
) -> LineTargets:
    """Render line-field targets for the given exact centrelines.

    Parameters
    ----------
    centrelines : sequence of (n_i, 2) ndarray of float
        Centreline points ``(x, y)`` in pixels (pixel centres at integers), e.g.
        :attr:`temtrack.training.synth.Sample.centrelines`. Points outside the image are
        ignored.
    shape : (H, W)
    sigma : float
        Width of the centre ridge in px (> 0).
    band : float
        Distance (px) from a centreline within which the direction is supervised (> 0).
    ends : bool
        Also render the line-end map.

    Returns
    -------
    LineTargets
    """
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be two positive ints, got {shape}")
    if not sigma > 0 or not band > 0:
        raise ValueError(f"sigma and band must be > 0 px, got sigma={sigma}, band={band}")
    points, angles, tips = [], [], []
    for curve in centrelines:
        curve = np.asarray(curve, dtype=float)
        if curve.ndim != 2 or curve.shape[1] != 2:
            raise ValueError(f"each centreline must be an (n, 2) array, got shape {curve.shape}")
        if len(curve) < 2:
            continue
        dense = _dense(curve, 0.5)
        points.append(dense)
        angles.append(_tangent_angles(dense))
        tips.extend([curve[0], curve[-1]])
    centre = np.zeros((height, width), np.float32)
    direction = np.zeros((2, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    end_map = np.zeros((height, width), np.float32) if ends else None
    if not points:
        return LineTargets(centre, direction, weight, end_map)
    xy = np.vstack(points)
    theta = np.concatenate(angles)
    cols, rows = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    if not inside.any():
        return LineTargets(centre, direction, weight, end_map)
    xy, theta, rows, cols = xy[inside], theta[inside], rows[inside], cols[inside]
    # Pixels near a line (an approximate distance transform of the rasterised points,
    # with a margin) get their exact nearest point from a k-d tree of the points.
    free = np.ones((height, width), np.uint8)
    free[rows, cols] = 0
    rough = cv2.distanceTransform(free, cv2.DIST_L2, 3)
    reach = max(4.0 * sigma, band)
    near_r, near_c = np.nonzero(rough <= reach + 1.5)
    distance, nearest = cKDTree(xy).query(np.column_stack([near_c, near_r]).astype(float))
    ridge = distance <= 4.0 * sigma
    centre[near_r[ridge], near_c[ridge]] = np.exp(-(distance[ridge] ** 2) / (2.0 * sigma * sigma))
    supervised = distance <= band
    rs, cs = near_r[supervised], near_c[supervised]
    weight[rs, cs] = 1.0
    doubled = 2.0 * theta[nearest[supervised]]
    direction[0, rs, cs] = np.cos(doubled)
    direction[1, rs, cs] = np.sin(doubled)
    if ends:
        tips = np.asarray(tips)
        # Ends cut by the image border are not line ends.
        keep = (tips[:, 0] > 1) & (tips[:, 0] < width - 2) & (tips[:, 1] > 1) & (tips[:, 1] < height - 2)
        radius = int(np.ceil(4 * sigma))
        for x, y in tips[keep]:
            c0, c1 = max(int(x) - radius, 0), min(int(x) + radius + 2, width)
            r0, r1 = max(int(y) - radius, 0), min(int(y) + radius + 2, height)
            spot = np.exp(
                -((np.arange(c0, c1)[None, :] - x) ** 2 + (np.arange(r0, r1)[:, None] - y) ** 2) / (2 * sigma * sigma)
            ).astype(np.float32)
            np.maximum(end_map[r0:r1, c0:c1], spot, out=end_map[r0:r1, c0:c1])
    return LineTargets(centre, direction, weight, end_map)
