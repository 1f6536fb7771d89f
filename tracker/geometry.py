"""Pure polyline geometry shared by linking and time series: length, resampling, distances.

Curves are ``(n, 2)`` arrays of ``(x, y)`` points in pixels (``x`` = column, ``y`` = row),
ordered from one end to the other. numpy only; this module must not import anything
else of tem-track (the SDK re-exports it as ``temtrack.sdk.geometry``).

>>> import numpy as np
>>> a = np.column_stack([np.linspace(0, 10, 11), np.zeros(11)])
>>> arc_length(a), curve_distance(a, a + [0, 3]), min_distance(a, a + [0, 3])
(10.0, 3.0, 3.0)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "arc_length",
    "check_curve",
    "curve_distance",
    "distance_to_curve",
    "min_distance",
    "resample",
]


def check_curve(curve, name: str = "curve", *, min_points: int = 1) -> np.ndarray:
    """``curve`` as an ``(n, 2)`` float64 array, or a ValueError naming ``name``.

    Parameters
    ----------
    curve : (n, 2) array_like of float
        ``(x, y)`` points in pixels.
    name : str
        Argument name used in the error message.
    min_points : int
        Fewest points accepted.

    Returns
    -------
    (n, 2) ndarray of float64
        A view of ``curve`` when it already is one (never modified here).
    """
    array = np.asarray(curve, dtype=float)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} must be an (n, 2) array of (x, y) points, got shape {array.shape}")
    if len(array) < min_points:
        raise ValueError(f"{name} needs at least {min_points} point(s), got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite coordinates")
    return array


# The SDK's older private name; kept so code written against it keeps working.
_check_curve = check_curve


def arc_length(curve) -> float:
    """Length in pixels of the polyline through ``curve`` ((n, 2) array)."""
    points = check_curve(curve, "curve")
    return float(np.hypot(*np.diff(points, axis=0).T).sum())


def resample(curve, n_points: int) -> np.ndarray:
    """``n_points`` points equally spaced along the polyline ``curve`` ((n, 2) float64)."""
    points = check_curve(curve, "curve")
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    return _resampled(points, np.hypot(*np.diff(points, axis=0).T), n_points)


def _resampled(points: np.ndarray, steps: np.ndarray, n_points: int) -> np.ndarray:
    """:func:`resample` of checked ``points`` ((n, 2) float64) whose ``n - 1`` step
    lengths are ``steps``: for callers that have measured them already (the spline fit,
    for every line of every frame)."""
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] == 0:
        return np.repeat(points[:1], n_points, axis=0)
    samples = np.linspace(0.0, arc[-1], n_points)
    return np.column_stack([np.interp(samples, arc, points[:, 0]), np.interp(samples, arc, points[:, 1])])


def _closest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from every point of ``a`` to the polyline ``b`` (not just its vertices)."""
    if len(b) == 1:
        return np.hypot(*(a - b[0]).T)
    start, stop = b[:-1], b[1:]
    direction = stop - start
    norm = np.maximum((direction**2).sum(axis=1), 1e-12)
    # Exact over all segments: cheap at n ~ 50-500, and no candidate search to get wrong.
    rel = a[:, None, :] - start[None, :, :]
    t = np.clip((rel * direction[None]).sum(axis=2) / norm[None], 0.0, 1.0)
    nearest = start[None] + t[..., None] * direction[None]
    return np.sqrt(((a[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)


def distance_to_curve(points, curve) -> np.ndarray:
    """Distance in pixels from each of ``points`` ((m, 2)) to the polyline ``curve`` ((n, 2))."""
    return _closest(check_curve(points, "points"), check_curve(curve, "curve"))


def curve_distance(a, b) -> float:
    """Mean distance between two curves, in pixels (paper section 6.4).

    The mean over the points of ``a`` of their closest distance to ``b``, and the same
    from ``b`` to ``a``, averaged. Use equally spaced points (e.g. ``resample(a, 50)``)
    so that every part of each curve weighs the same.

    >>> import numpy as np
    >>> a = np.column_stack([np.linspace(0, 10, 11), np.zeros(11)])
    >>> curve_distance(a, a + [0, 3])
    3.0
    """
    a, b = check_curve(a, "a"), check_curve(b, "b")
    return float(0.5 * (_closest(a, b).mean() + _closest(b, a).mean()))


def min_distance(a, b) -> float:
    """Smallest distance between the polylines ``a`` and ``b``, in pixels (0 if they cross)."""
    a, b = check_curve(a, "a"), check_curve(b, "b")
    if len(a) > 1 and len(b) > 1 and _polylines_cross(a, b):
        return 0.0
    return float(min(_closest(a, b).min(), _closest(b, a).min()))


def _polylines_cross(a: np.ndarray, b: np.ndarray) -> bool:
    p, r = a[:-1, None, :], np.diff(a, axis=0)[:, None, :]
    q, s = b[None, :-1, :], np.diff(b, axis=0)[None, :, :]

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    denom = cross(r, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = cross(q - p, s) / denom
        u = cross(q - p, r) / denom
    return bool(np.any((denom != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)))
