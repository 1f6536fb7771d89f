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
  the image;
- optionally ``gaps``: where two lines run close, ``exp(-(d1 + d2)^2 / (2 s^2))`` of the
  distances ``d1 <= d2`` (px) to the nearest and the second-nearest line, with
  ``s`` = :data:`GAP_SIGMA`: U-Net's separation weight (Ronneberger et al. 2015, eq. 2),
  high on and between neighbours a few px apart, so a loss can weigh the valley that
  keeps a close pair two lines (``LossConfig.gap_weight``).

Only pixels within a few px of a line are evaluated: each centreline point offers itself
to the pixels of a small window around it, and every pixel keeps its exact nearest
point (the distances and points of a k-d tree query, bit for bit). Needs numpy, and
scipy's k-d tree for the rare pixel equally near two points: never torch.

>>> import numpy as np
>>> line = np.column_stack([np.arange(10.0, 50.0), np.full(40, 20.0)])
>>> t = line_targets([line], (40, 64))
>>> float(t.centre[20, 30]), float(t.centre[22, 30]) < 0.3, float(t.direction[0, 20, 30])
(1.0, True, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GAP_SIGMA", "LineTargets", "line_distance", "line_targets", "separation"]

#: Scale (px) of the separation weight (``gaps``): ``exp(-(d1 + d2)^2 / (2 GAP_SIGMA^2))``
#: is 0.46 between lines 5 px apart, 0.08 at 9 px and under 0.01 beyond 12 px.
GAP_SIGMA = 4.0


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
    gaps : (H, W) ndarray of float32 in [0, 1], or None
        The separation weight (:func:`separation`).
    """

    centre: np.ndarray
    direction: np.ndarray
    weight: np.ndarray
    ends: np.ndarray | None = None
    gaps: np.ndarray | None = None


def _dense_lines(curves: list, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Every curve resampled every ``spacing`` px or closer (keeping its own points), all
    stacked, with the tangent angle (radians) at each point.

    ``curves`` are ``(n_i, 2)`` float arrays, n_i >= 2. The angle comes from a +-2 point
    central difference within the point's own curve (+-1 for a 2-point curve), clipped at
    its ends. All curves in one pass: per curve, numpy's call overhead would dominate.
    """
    lengths = np.array([len(c) for c in curves])
    stacked = np.concatenate(curves)
    delta = np.diff(stacked, axis=0)
    inner = np.ones(len(delta), bool)
    inner[np.cumsum(lengths)[:-1] - 1] = False  # no step from one curve to the next
    start, delta = stacked[:-1][inner], delta[inner]
    counts = np.maximum(np.ceil(np.hypot(*delta.T) / spacing).astype(int), 1)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    t = (np.arange(counts.sum()) - first) / np.repeat(counts, counts)
    # Curve i gets its segments' samples, then its last point.
    dense_lengths = np.add.reduceat(counts, np.cumsum(lengths - 1) - (lengths - 1)) + 1
    ends = np.cumsum(dense_lengths)
    last = np.zeros(ends[-1], bool)
    last[ends - 1] = True
    points = np.empty((ends[-1], 2))
    points[~last] = np.repeat(start, counts, axis=0) + t[:, None] * np.repeat(delta, counts, axis=0)
    points[last] = stacked[np.cumsum(lengths) - 1]
    k = np.repeat(np.minimum(2, dense_lengths - 1), dense_lengths)
    index = np.arange(ends[-1])
    low, high = np.repeat(ends - dense_lengths, dense_lengths), np.repeat(ends - 1, dense_lengths)
    step = points[np.minimum(index + k, high)] - points[np.maximum(index - k, low)]
    return points, np.arctan2(step[:, 1], step[:, 0])


def _nearest_points(xy, rows, cols, shape: tuple[int, int], reach: float, band: float, *, chunk: int = 16384):
    """Squared distance from each pixel to its nearest point of ``xy``, and that point.

    A pixel within ``reach`` px of a point lies within ``floor(reach + 0.5)`` px, on each
    axis, of the point's rounded position ``(cols, rows)``: the windows of that
    half-width around the rounded points hold every candidate, and each pixel keeps the
    least squared distance offered. Squared distances are summed as SciPy's k-d tree
    sums them, ``dx * dx + dy * dy`` in float64, so their square roots are bit for bit
    its distances. ``chunk`` points at a time bound the memory.

    Returns
    -------
    squared : (H, W) ndarray of float64
        Exact where it is <= ``reach**2``; larger or ``inf`` elsewhere.
    nearest : (H, W) ndarray of int32
        Index into ``xy`` of the nearest point where the distance is <= ``band`` (among
        points at exactly the same distance, the one SciPy's k-d tree returns); undefined
        elsewhere.
    """
    height, width = shape
    half, inner = int(np.floor(reach + 0.5)), int(np.floor(min(band, reach) + 0.5))
    offsets = np.arange(-half, half + 1)[:, None]
    stride = width + 2 * half
    # Pixel (r, c) sits at (r + half) * stride + c + half of the padded, flattened canvas.
    window = ((offsets * stride) + offsets.T).astype(np.int32)[:, :, None]
    core = slice(half - inner, half + inner + 1)

    def pairs(start: int):
        # Laid out (window row, window column, point): long inner loops for numpy.
        x, y = xy[start : start + chunk, 0], xy[start : start + chunk, 1]
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        dx, dy = (c + offsets) - x, (r + offsets) - y
        return ((r + half) * stride + c + half).astype(np.int32), dx * dx, dy * dy

    best = np.full((height + 2 * half) * stride, np.inf)
    starts = range(0, len(xy), chunk)
    kept = [pairs(start) for start in starts[:1]]  # a single chunk is not computed twice
    for start in starts:
        base, dx2, dy2 = kept[0] if len(starts) == 1 else pairs(start)
        np.minimum.at(best, (window + base).ravel(), (dy2[:, None] + dx2).ravel())
    pixels, points = [], []
    for start in starts:
        base, dx2, dy2 = kept[0] if len(starts) == 1 else pairs(start)
        # Only pixels within the band need their point: the inner window holds them.
        index = (window[core, core] + base).ravel()
        won = np.flatnonzero((dy2[core, None] + dx2[core]).ravel() == best[index])
        pixels.append(index[won])
        points.append(start + won % len(base))
    pixels, points = np.concatenate(pixels), np.concatenate(points).astype(np.int32)
    nearest = np.full(best.shape, -1, np.int32)
    nearest[pixels] = points
    # A pixel with two points at exactly the same distance (repeated points, integer
    # coordinates; never seen in generated lines) takes the k-d tree's choice, which
    # these targets have always had.
    ties = np.unique(pixels[nearest[pixels] != points])
    if len(ties):
        from scipy.spatial import cKDTree

        tie_rows, tie_cols = np.divmod(ties, stride)
        nearest[ties] = cKDTree(xy).query(np.column_stack([tie_cols - half, tie_rows - half]).astype(float))[1]
    crop = (slice(half, half + height), slice(half, half + width))
    return best.reshape(-1, stride)[crop], nearest.reshape(-1, stride)[crop]


def line_targets(
    centrelines,
    shape: tuple[int, int],
    *,
    sigma: float = 1.2,
    band: float = 3.0,
    ends: bool = False,
    gaps: bool = False,
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
    gaps : bool
        Also render the separation weight (:func:`separation`).

    Returns
    -------
    LineTargets
    """
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be two positive ints, got {shape}")
    if not sigma > 0 or not band > 0:
        raise ValueError(f"sigma and band must be > 0 px, got sigma={sigma}, band={band}")
    points, tips = [], []
    for curve in centrelines:
        curve = np.asarray(curve, dtype=float)
        if curve.ndim != 2 or curve.shape[1] != 2:
            raise ValueError(f"each centreline must be an (n, 2) array, got shape {curve.shape}")
        if len(curve) < 2:
            continue
        points.append(curve)
        tips.extend([curve[0], curve[-1]])
    centre = np.zeros((height, width), np.float32)
    direction = np.zeros((2, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    end_map = np.zeros((height, width), np.float32) if ends else None
    gap_map = separation(points, (height, width)) if gaps else None
    if not points:
        return LineTargets(centre, direction, weight, end_map, gap_map)
    xy, theta = _dense_lines(points, 0.5)
    cols, rows = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    if not inside.any():
        return LineTargets(centre, direction, weight, end_map, gap_map)
    xy, theta, rows, cols = xy[inside], theta[inside], rows[inside], cols[inside]
    reach = max(4.0 * sigma, band)
    squared, nearest = _nearest_points(xy, rows, cols, (height, width), reach, band)
    # sqrt is monotonic and correctly rounded: the margin keeps every pixel whose
    # distance is <= reach, the comparisons below then decide as before.
    near_r, near_c = np.nonzero(squared <= reach * reach * (1.0 + 1e-9))
    distance = np.sqrt(squared[near_r, near_c])
    nearest = nearest[near_r, near_c]
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
    return LineTargets(centre, direction, weight, end_map, gap_map)


def separation(centrelines, shape: tuple[int, int], *, sigma: float = GAP_SIGMA) -> np.ndarray:
    """U-Net's separation weight between close lines: ``exp(-(d1 + d2)^2 / (2 sigma^2))``.

    ``d1 <= d2`` are a pixel's distances (px) to the nearest and the second-nearest of
    ``centrelines``: the exact Euclidean distance to each line's drawn pixels
    (:func:`line_distance`; within half a pixel of the distance to the curve itself, and
    a weight needs no more). Zero where fewer than two lines lie within ``3 sigma`` px.

    Parameters
    ----------
    centrelines : sequence of (n_i, 2) ndarray of float
        ``(x, y)`` in pixels; lines of fewer than 2 points are ignored.
    shape : (H, W)
    sigma : float
        px (> 0).

    Returns
    -------
    (H, W) ndarray of float32 in [0, 1]

    >>> import numpy as np
    >>> a = np.array([[0.0, 10.0], [39.0, 10.0]])
    >>> b = np.array([[0.0, 16.0], [39.0, 16.0]])
    >>> w = separation([a, b], (30, 40))
    >>> round(float(w[13, 20]), 2), round(float(w[10, 20]), 2), float(separation([a], (30, 40)).max())
    (0.32, 0.32, 0.0)
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 px, got {sigma!r}")
    height, width = (int(v) for v in shape)
    out = np.zeros((height, width), np.float32)
    if sum(len(c) >= 2 for c in centrelines) < 2:
        return out
    reach = 3.0 * sigma
    distances = [d for d in (line_distance([c], (height, width)) for c in centrelines if len(c) >= 2) if d is not None]
    if len(distances) < 2:
        return out
    nearest_two = np.partition(np.stack(distances), 1, axis=0)[:2]
    close = nearest_two[1] <= reach
    total = nearest_two[0][close] + nearest_two[1][close]
    out[close] = np.exp(-(total.astype(np.float64) ** 2) / (2.0 * sigma * sigma))
    return out


def line_distance(curves, shape: tuple[int, int]) -> np.ndarray | None:
    """Distance (px, float64) from every pixel to the nearest pixel drawn along ``curves``
    (``(n, 2)`` arrays of ``(x, y)``, drawn 8-connected at 1/16 px precision; curves of
    fewer than 2 points are skipped); None when nothing is drawn inside ``shape``.

    SciPy's exact transform, the same in every run (OpenCV's precise mask is not:
    sdk/loops.py), so a training stream that uses it repeats itself exactly.
    """
    import cv2
    from scipy.ndimage import distance_transform_edt

    free = np.full(tuple(int(v) for v in shape), 255, np.uint8)
    for curve in curves:
        curve = np.asarray(curve, dtype=float)
        if len(curve) >= 2:
            cv2.polylines(free, [np.round(curve * 16).astype(np.int32)], False, 0, 1, cv2.LINE_8, shift=4)
    return None if free.all() else distance_transform_edt(free)
