"""Curve geometry: smoothing splines through centrelines, arc length, curvature, distances.

Curves are ``(n, 2)`` arrays of ``(x, y)`` points in pixels (``x`` = column, ``y`` = row),
ordered from one end to the other. Pure numpy/scipy; no torch.

The spline-free functions (``arc_length``, ``resample``, ``curve_distance``,
``min_distance``, ``distance_to_curve``) live in :mod:`temtrack.tracker.geometry`,
because the tracker may not import the SDK; they are re-exported here unchanged.

>>> import numpy as np
>>> line = np.column_stack([np.arange(0.0, 41.0), np.full(41, 5.0)])
>>> spline = fit_spline(line, n_points=5)
>>> round(spline.length, 6), (spline.points[:, 0].round(6) + 0.0).tolist()
(40.0, [0.0, 10.0, 20.0, 30.0, 40.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import interpolate

from temtrack.tracker.geometry import (
    _check_curve,
    _closest,
    _resampled,
    arc_length,
    curve_distance,
    distance_to_curve,
    min_distance,
    resample,
)

__all__ = [
    "Spline",
    "arc_length",
    "curve_distance",
    "distance_to_curve",
    "fit_spline",
    "hausdorff_distance",
    "length_nm",
    "min_distance",
    "resample",
]

# Skeleton pixels are staircases within ~0.3 px of the line they trace; sigma = 0.25 px
# (scipy s = m * sigma^2) is the value that keeps 98% of synthetic dislocations within
# 1.5 px and 3% of length (benchmarks/bench_postprocess.py): 0.5 cuts sharp turns.
DEFAULT_SIGMA = 0.25


@dataclass(frozen=True)
class Spline:
    """A smoothing spline through a centreline, resampled at equal arc length.

    Attributes
    ----------
    points : (n, 2) ndarray of float64
        ``(x, y)`` in pixels, equally spaced along the curve, from one end to the other.
        For a closed curve the last point repeats the first.
    length : float
        Arc length in pixels.
    mean_curvature, max_curvature : float
        Mean and maximum of the unsigned curvature ``|x'y'' - y'x''| / |r'|^3`` along
        the curve, in 1/px (0 for a straight line).
    closed : bool
        Whether the curve is a closed loop.
    """

    points: np.ndarray
    length: float
    mean_curvature: float
    max_curvature: float
    closed: bool = False


def _dedupe(points: np.ndarray) -> np.ndarray:
    """Drop points that repeat their predecessor (zero-length chords break the fit)."""
    repeats = (points[1:] == points[:-1]).all(axis=1)
    return points[np.insert(~repeats, 0, True)] if repeats.any() else points


def _steps(points: np.ndarray) -> np.ndarray:
    """Lengths of the ``n - 1`` steps along ``points`` ((n, 2) float)."""
    step = points[1:] - points[:-1]
    return np.hypot(step[:, 0], step[:, 1])


def fit_spline(
    curve,
    *,
    n_points: int = 50,
    sigma: float = DEFAULT_SIGMA,
    closed: bool = False,
) -> Spline:
    """Fit a cubic smoothing spline through an ordered centreline and resample it.

    Parameters
    ----------
    curve : (m, 2) array_like of float
        Ordered ``(x, y)`` points in pixels, e.g. the pixels of a skeleton path.
    n_points : int
        Number of equally spaced output points (at least 2).
    sigma : float
        Expected deviation of the points from the true line, in pixels; sets scipy's
        smoothing ``s = m * sigma**2``. ``0`` interpolates.
    closed : bool
        Fit a periodic spline (a dislocation loop); ``curve`` need not repeat its
        first point.

    Returns
    -------
    Spline
        With arc length and curvature measured on the spline, not on the pixels.
    """
    points = _dedupe(_check_curve(curve, "curve"))
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 pixels, got {sigma}")
    if closed and len(points) > 1 and np.all(points[0] == points[-1]):
        points = points[:-1]
    if len(points) < 2:
        return Spline(np.repeat(points[:1], n_points, axis=0), 0.0, 0.0, 0.0, closed)
    if len(points) > 16:
        # Pixel paths step 1-1.4 px; every other point carries the same line at half the
        # fitting cost (the fit dominates post-processing time). The last point stays.
        every_other = points[::2]
        points = _dedupe(every_other if len(points) % 2 else np.vstack([every_other, points[-1:]]))
    if closed:
        points = np.vstack([points, points[:1]])
    u = np.concatenate([[0.0], np.cumsum(_steps(points))])
    degree = min(3, len(points) - 1 - int(closed))
    if degree < 1 or (closed and len(points) < 5):
        dense = points
        tck = None
    else:
        smoothing = len(points) * sigma**2
        (knots, coefficients, _), _ = interpolate.splprep(points.T, u=u, k=degree, s=smoothing, per=int(closed), quiet=2)
        # FITPACK's knots and coefficients are valid as they are: skip BSpline's checks.
        tck = interpolate.BSpline.construct_fast(knots, np.column_stack(coefficients), degree)
        # 2 samples per pixel: the polyline length is then within 1e-4 of the spline's
        # for curvature radii above 5 px.
        count = max(int(2 * u[-1]), 16)
        t = np.linspace(u[0], u[-1], count)
        dense = tck(t)
    steps = _steps(dense)
    length = float(steps.sum())
    if tck is not None and degree >= 2:
        dx, dy = tck(t, nu=1).T
        ddx, ddy = tck(t, nu=2).T
        speed = np.maximum(np.hypot(dx, dy), 1e-12)
        curvature = np.abs(dx * ddy - dy * ddx) / speed**3
        mean_curvature, max_curvature = float(curvature.mean()), float(curvature.max())
    else:
        mean_curvature = max_curvature = 0.0
    return Spline(_resampled(dense, steps, n_points), length, mean_curvature, max_curvature, closed)


def hausdorff_distance(a, b, *, exclude_ends: float = 0.0) -> float:
    """Symmetric Hausdorff distance between two polylines, in pixels.

    Parameters
    ----------
    a, b : (n, 2) array_like
        Ordered curves.
    exclude_ends : float
        Arc length in pixels left out at each end of both curves before measuring,
        so that where a line stops (a question of the mask's end cap) does not
        dominate a measure of where it runs.
    """
    a, b = _check_curve(a, "a"), _check_curve(b, "b")
    a_in, b_in = _trim(a, exclude_ends), _trim(b, exclude_ends)
    return float(max(_closest(a_in, b).max(), _closest(b_in, a).max()))


def _trim(curve: np.ndarray, margin: float) -> np.ndarray:
    if margin <= 0 or len(curve) < 2:
        return curve
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(curve, axis=0).T))])
    if arc[-1] <= 2 * margin:
        middle = np.interp(arc[-1] / 2, arc, np.arange(len(curve)))
        return curve[[int(round(middle))]]
    dense = resample(curve, max(int(arc[-1] * 2), 2))
    dense_arc = np.linspace(0.0, arc[-1], len(dense))
    return dense[(dense_arc >= margin) & (dense_arc <= arc[-1] - margin)]


def length_nm(length_px: float, pixel_size_nm: float) -> float:
    """A length in pixels converted to nanometres with the pixel size (nm per pixel)."""
    if not np.isfinite(pixel_size_nm) or pixel_size_nm <= 0:
        raise ValueError(f"pixel_size_nm must be a positive number of nm per pixel, got {pixel_size_nm}")
    return float(length_px) * float(pixel_size_nm)

