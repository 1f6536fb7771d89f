"""Vectorised geometry between many curves at once, for linking and pile-up grouping.

All curves here are resampled to a common number of equally spaced points, so a stack
of them is one ``(N, K, 2)`` array and every point weighs the same length of line.
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np

# A point counts as lying alongside the other curve unless it projects more than this
# (px) past that curve's end: skeleton ends jitter by about a pixel from frame to frame.
END_MARGIN = 1.5


def resample_all(curves, n_points: int) -> np.ndarray:
    """``(len(curves), n_points, 2)`` float64: each curve resampled at equal arc length.

    Same result as :func:`~temtrack.tracker.geometry.resample` per curve, with one
    interpolation for all: the curves are laid end to end on one arc-length axis,
    each shifted past the previous one's end.
    """
    count = len(curves)
    if not count:
        return np.empty((0, n_points, 2))
    points = np.concatenate(curves)
    sizes = np.array([len(c) for c in curves])
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    step = np.hypot(*np.diff(points, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(step)])
    arc_first = arc[first]
    total = arc[first + sizes - 1] - arc_first
    # Every curve starts 1 px after the previous one ended, so no two share a stretch
    # of the axis; the step between curves is dropped by starting each at its own first point.
    offset = np.concatenate([[0.0], np.cumsum(total + 1.0)[:-1]])
    axis = arc - np.repeat(arc_first - offset, sizes)
    samples = offset[:, None] + np.linspace(0.0, 1.0, n_points)[None, :] * total[:, None]
    out = np.empty((count, n_points, 2))
    out[..., 0] = np.interp(samples, axis, points[:, 0])
    out[..., 1] = np.interp(samples, axis, points[:, 1])
    return out


def lengths(stack: np.ndarray) -> np.ndarray:
    """Polyline length (px) of each curve of an ``(N, K, 2)`` stack, shape ``(N,)``."""
    return np.hypot(*np.diff(stack, axis=1).transpose(2, 0, 1)).sum(axis=1)


def axes(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit line direction and unit normal of each curve, each ``(N, 2)``.

    The direction is the chord from first to last point; both it and the normal are
    signed to point to +x (or +y when perpendicular to x): curves have no preferred
    end, and neither may these.
    """
    chord = stack[:, -1] - stack[:, 0]
    norm = np.hypot(chord[:, 0], chord[:, 1])
    flat = norm < 1e-9
    chord = np.where(flat[:, None], [1.0, 0.0], chord / np.where(flat, 1.0, norm)[:, None])
    tangent = _positive(chord)
    return tangent, _positive(np.column_stack([-tangent[:, 1], tangent[:, 0]]))


def _positive(vectors: np.ndarray) -> np.ndarray:
    """Each (x, y) row, or its negative, whichever points to +x (or +y when x is 0)."""
    # Round off last-bit noise so a vertical line's x of -1e-17 does not flip it.
    x = np.round(vectors[:, 0], 12)
    flip = (x < 0) | ((x == 0) & (vectors[:, 1] < 0))
    return np.where(flip[:, None], -vectors, vectors)


@dataclass(frozen=True)
class PairGeometry:
    """How each curve of one stack (``A``, N curves) sits against each of another (``B``, M).

    Attributes
    ----------
    distance : (N, M) ndarray of float64
        Symmetric mean closest distance (px) over the points lying alongside the other
        curve (paper 6.4, with the parts that run past the other's end left out, so
        that a line clipped by the frame edge is not pushed away from itself).
    overhang : (N, M) ndarray of float64
        Length (px) of both curves together that runs past the other's ends.
    offset : (N, M, 2) ndarray of float64
        Mean vector (px) from the points of ``A[n]`` to their closest points on
        ``B[m]``: how far and which way ``A[n]`` must move to lie on ``B[m]``.
    """

    distance: np.ndarray
    overhang: np.ndarray
    offset: np.ndarray


def pair_geometry(
    a: np.ndarray, b: np.ndarray, *, margin: float = END_MARGIN, reach: float = np.inf, gated: bool = False
) -> PairGeometry:
    """Distances, overhangs and offsets between every curve of ``a`` (N, K, 2) and ``b`` (M, L, 2).

    Pairs whose bounding boxes are more than ``reach`` px apart are not measured:
    their distance is ``inf`` (every point of one is then further than ``reach``
    from the other), their overhang 0 and their offset NaN. With ``gated``, pairs
    whose centroids lie too far apart for their bounding boxes to come within
    ``reach`` are dropped before the boxes are compared (same result, for many curves).
    """
    n, m = len(a), len(b)
    distance, overhang = np.full((n, m), np.inf), np.zeros((n, m))
    offset = np.full((n, m, 2), np.nan)
    if n == 0 or m == 0:
        return PairGeometry(distance, overhang, offset)
    length_a, length_b = lengths(a), lengths(b)
    if gated and np.isfinite(reach):
        # A box gap along x or y is at least the centroid distance over sqrt 2 less
        # both curves' radii: pairs further apart are never within reach.
        centre_a, centre_b = a.mean(axis=1), b.mean(axis=1)
        root2 = np.sqrt(2.0)
        rows, cols = near_pairs(
            centre_a, root2 * _radii(a, centre_a) + 1.0, centre_b, root2 * _radii(b, centre_b), root2 * reach
        )
        rows, cols = _within(a, b, rows, cols, reach)
    else:
        rows, cols = np.nonzero(_separation(a, b) <= reach)
    if len(rows):
        d_ab, over_ab, vec_ab, d_ba, over_ba = paired_geometry(a[rows], b[cols], margin=margin)
        distance[rows, cols] = 0.5 * (d_ab + d_ba)
        overhang[rows, cols] = over_ab * length_a[rows] + over_ba * length_b[cols]
        offset[rows, cols] = vec_ab
    return PairGeometry(distance, overhang, offset)


def _separation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A lower bound (px) on the distance between any point of ``a[n]`` and any of ``b[m]``, (N, M).

    The largest gap between the two curves' extents along x, y and the normal of
    ``a[n]``: projecting onto a unit vector never lengthens a distance. The normal
    separates the long parallel lines of a pile-up, whose bounding boxes all overlap.
    """
    low_a, high_a = a.min(axis=1), a.max(axis=1)
    low_b, high_b = b.min(axis=1), b.max(axis=1)
    gap = np.maximum(low_b[None] - high_a[:, None], low_a[:, None] - high_b[None]).max(axis=2)
    _, normal = axes(a)
    own = a[..., 0] * normal[:, None, 0] + a[..., 1] * normal[:, None, 1]  # (N, K)
    other = (b.reshape(-1, 2) @ normal.T).reshape(len(b), -1, len(a))  # (M, L, N)
    across = np.maximum(other.min(axis=1).T - own.max(axis=1)[:, None], own.min(axis=1)[:, None] - other.max(axis=1).T)
    return np.maximum(gap, across)


def paired_geometry(a: np.ndarray, b: np.ndarray, *, margin: float = END_MARGIN):
    """:func:`pair_geometry` for curves taken pair by pair: ``a[i]`` against ``b[i]``.

    Returns mean distances a->b (P,), the fraction of ``a``'s points past ``b``'s
    ends (P,), mean offsets a->b (P, 2), and the same distances and fractions b->a.
    The pairs are measured :data:`_CHUNK` at a time, in buffers that stay in the
    processor's cache (each pair's figures do not depend on the others').
    """
    p = len(a)
    # At least one chunk, empty when there are no pairs: the outputs keep their shapes.
    parts = [_paired_chunk(a[i : i + _CHUNK], b[i : i + _CHUNK], margin) for i in range(0, max(p, 1), _CHUNK)]
    return tuple(np.concatenate(column) for column in zip(*parts))


# Pairs measured at once by paired_geometry: a (chunk, K, L) float64 buffer of about
# 600 kB at K = L = 24, which the elementwise steps then find in cache (about twice as fast on
# thousands of pairs as one pass over all of them).
_CHUNK = 128


def _paired_chunk(a: np.ndarray, b: np.ndarray, margin: float):
    """:func:`paired_geometry` of one chunk of pairs."""
    p = len(a)
    sq = a[:, :, None, 0] - b[:, None, :, 0]
    dy = a[:, :, None, 1] - b[:, None, :, 1]
    # (P, K, L) squared distances, in place (components apart: numpy reduces a
    # length-2 axis slowly).
    np.multiply(sq, sq, out=sq)
    np.multiply(dy, dy, out=dy)
    np.add(sq, dy, out=sq)
    if a.shape[1] == b.shape[1]:
        # Both directions in one pass: half the numpy calls.
        dist, over, vec = _one_sided(
            np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([sq.argmin(axis=2), sq.argmin(axis=1)]), margin
        )
        return dist[:p], over[:p], vec[:p], dist[p:], over[p:]
    d_ab, over_ab, vec_ab = _one_sided(a, b, sq.argmin(axis=2), margin)
    d_ba, over_ba, _ = _one_sided(b, a, sq.argmin(axis=1), margin)
    return d_ab, over_ab, vec_ab, d_ba, over_ba


def _one_sided(a: np.ndarray, b: np.ndarray, nearest: np.ndarray, margin: float):
    """From the points of each curve ``a[i]`` (P, K, 2) to the polyline ``b[i]`` (P, L, 2).

    ``nearest`` (P, K) holds the index of the vertex of ``b[i]`` nearest to each point.
    Returns the mean distance over the points alongside ``b[i]`` (P,), the fraction of
    points that run past its ends (P,), and the mean vector from those points to
    their closest points (P, 2).
    """
    p, k, _ = a.shape
    l = b.shape[1]
    if l == 1:
        vec = b[:, :1, :] - a
        return np.hypot(vec[..., 0], vec[..., 1]).mean(axis=1), np.zeros(p), vec.mean(axis=1)
    ax, ay = a[..., 0], a[..., 1]
    # Segments of all curves in flat arrays, indexed by curve * (L - 1) + segment.
    sx, sy = b[:, :-1, 0].ravel(), b[:, :-1, 1].ravel()
    ux, uy = np.diff(b[..., 0], axis=1).ravel(), np.diff(b[..., 1], axis=1).ravel()
    length2 = np.maximum(ux * ux + uy * uy, 1e-12)
    base = (np.arange(p) * (l - 1))[:, None]
    best = None
    # The closest point lies on one of the two segments at the nearest vertex.
    for seg in (np.clip(nearest - 1, 0, l - 2), np.clip(nearest, 0, l - 2)):
        at = base + seg
        rx, ry = ax - sx[at], ay - sy[at]
        dx, dy, l2 = ux[at], uy[at], length2[at]
        t_raw = (rx * dx + ry * dy) / l2
        t = np.clip(t_raw, 0.0, 1.0)
        vx, vy = t * dx - rx, t * dy - ry
        d2 = vx * vx + vy * vy
        past = np.maximum(np.where(seg == 0, -t_raw, 0.0), np.where(seg == l - 2, t_raw - 1.0, 0.0))
        beyond = past * np.sqrt(l2)
        if best is None:
            best = [d2, vx, vy, beyond]
        else:
            closer = d2 < best[0]
            best = [np.where(closer, new, old) for new, old in zip((d2, vx, vy, beyond), best)]
    d2, vx, vy, beyond = best
    along = beyond <= margin
    count = along.sum(axis=1)
    dist = np.sqrt(d2)
    safe = np.maximum(count, 1)
    some = count > 0
    # With no point alongside (curves end to end), fall back to all points: the
    # overhang term then says how little they overlap.
    mean_dist = np.where(some, (dist * along).sum(axis=1) / safe, dist.mean(axis=1))
    mean_x = np.where(some, (vx * along).sum(axis=1) / safe, vx.mean(axis=1))
    mean_y = np.where(some, (vy * along).sum(axis=1) / safe, vy.mean(axis=1))
    return mean_dist, 1.0 - count / k, np.column_stack([mean_x, mean_y])


def neighbours(stack: np.ndarray, *, radius: float, max_angle: float) -> np.ndarray:
    """Which curves of an ``(N, K, 2)`` stack lie side by side: ``(N, N)`` bool, False on the diagonal.

    Side by side: directions within ``max_angle`` degrees, centroids at most ``radius``
    px apart across the lines, and their extents along the lines overlapping.
    """
    n = len(stack)
    if n == 0:
        return np.zeros((0, 0), bool)
    tangent, normal = axes(stack)
    centre = stack.mean(axis=1)
    parallel = np.abs(tangent @ tangent.T) >= np.cos(np.radians(max_angle))
    delta = centre[None, :, :] - centre[:, None, :]  # [k, j] = c_j - c_k
    across = np.abs((delta * normal[:, None, :]).sum(axis=2))
    # Extent of every curve along every other's direction: overlap of the intervals.
    proj = (stack.reshape(-1, 2) @ tangent.T).reshape(n, -1, n)  # [j, p, k]: points of j along t_k
    low, high = proj.min(axis=1).T, proj.max(axis=1).T  # [k, j]
    own_low, own_high = np.diagonal(low)[:, None], np.diagonal(high)[:, None]
    overlap = (np.minimum(high, own_high) - np.maximum(low, own_low)) >= 0.0
    near = parallel & (across <= radius) & overlap & overlap.T
    np.fill_diagonal(near, False)
    return near


def paired_offsets(a: np.ndarray, b: np.ndarray, *, margin: float = END_MARGIN) -> np.ndarray:
    """Mean vector (px) from the points of ``a[i]`` to their closest points on ``b[i]``, ``(N, 2)``.

    ``a`` and ``b`` are ``(N, K, 2)`` and ``(N, L, 2)`` stacks paired curve by curve
    (the same dislocation in two frames); points running past ``b[i]``'s ends are
    left out, so clipping at the frame edge does not read as motion.
    """
    if len(a) == 0:
        return np.empty((0, 2))
    return paired_geometry(a, b, margin=margin)[2]


def mean_curvature(stack: np.ndarray) -> np.ndarray:
    """Mean unsigned curvature (1/px) of each curve of an ``(N, K, 2)`` stack, ``(N,)``.

    The turning angle at each interior point over the mean length of its two
    segments: exact for a circle sampled at equal arc length, 0 for a straight line.
    """
    if stack.shape[1] < 3:
        return np.zeros(len(stack))
    seg = np.diff(stack, axis=1)
    length = np.hypot(seg[..., 0], seg[..., 1])
    angle = np.arctan2(seg[..., 1], seg[..., 0])
    turn = np.abs((np.diff(angle, axis=1) + np.pi) % (2.0 * np.pi) - np.pi)
    local = 0.5 * (length[:, 1:] + length[:, :-1])
    curvature = np.where(local > 1e-9, turn / np.maximum(local, 1e-9), 0.0)
    return curvature.mean(axis=1)


def paired_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paper 6.4 mean distance and the smallest distance of each pair ``a[i]``, ``b[i]``.

    ``a`` (P, K, 2) and ``b`` (P, L, 2), K and L >= 2. The mean of the closest distances
    from each curve's points to the other polyline, averaged both ways; and the
    smallest distance between the polylines, 0 where they cross. Returns two (P,) arrays.
    """
    ab, ba = _to_polylines(a, b), _to_polylines(b, a)
    mean = 0.5 * (ab.mean(axis=1) + ba.mean(axis=1))
    smallest = np.minimum(ab.min(axis=1), ba.min(axis=1))
    return mean, np.where(_cross(a, b), 0.0, smallest)


def _to_polylines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point of ``a[i]`` to the polyline ``b[i]`` over all its segments, (P, K)."""
    sx, sy = b[:, None, :-1, 0], b[:, None, :-1, 1]
    ux, uy = np.diff(b[..., 0], axis=1)[:, None], np.diff(b[..., 1], axis=1)[:, None]
    rx, ry = a[:, :, None, 0] - sx, a[:, :, None, 1] - sy
    t = np.clip((rx * ux + ry * uy) / np.maximum(ux * ux + uy * uy, 1e-12), 0.0, 1.0)
    dx, dy = rx - t * ux, ry - t * uy
    return np.sqrt((dx * dx + dy * dy).min(axis=2))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether the polylines ``a[i]`` and ``b[i]`` intersect, (P,) bool."""
    px, py = a[:, :-1, None, 0], a[:, :-1, None, 1]
    rx, ry = np.diff(a[..., 0], axis=1)[:, :, None], np.diff(a[..., 1], axis=1)[:, :, None]
    qx, qy = b[:, None, :-1, 0], b[:, None, :-1, 1]
    sx, sy = np.diff(b[..., 0], axis=1)[:, None], np.diff(b[..., 1], axis=1)[:, None]
    denom = rx * sy - ry * sx
    wx, wy = qx - px, qy - py
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (wx * sy - wy * sx) / denom
        u = (wx * ry - wy * rx) / denom
    hit = (denom != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    return hit.reshape(len(a), -1).any(axis=1)


def _radii(stack: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Largest distance (px) of each curve's points from its centroid, (N,)."""
    d = stack - centre[:, None, :]
    return np.sqrt((d * d).sum(axis=2).max(axis=1))


def near_pairs(centre_a, radius_a, centre_b, radius_b, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` whose centroid distance is at most ``reach + radius_a[i] + radius_b[j]``.

    A superset of the pairs of curves that come within ``reach`` px of each other
    (every point of a curve lies within its radius of its centroid), found with a
    k-d tree per class of radii so that a few long curves do not widen every query.
    Sorted by ``i`` then ``j``.
    """
    from scipy.spatial import cKDTree

    if not len(centre_a) or not len(centre_b):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    level = np.floor(np.log2(radius_b + 1.0)).astype(np.int64)
    rows, cols = [], []
    for value in np.unique(level):
        members = np.flatnonzero(level == value)
        tree = cKDTree(centre_b[members])
        # Unsorted lists: the pairs are sorted once at the end.
        hits = tree.query_ball_point(centre_a, reach + radius_a + radius_b[members].max() + 1e-6, return_sorted=False)
        sizes = np.fromiter(map(len, hits), np.int64, len(hits))
        total = int(sizes.sum())
        if not total:
            continue
        rows.append(np.repeat(np.arange(len(centre_a)), sizes))
        cols.append(members[np.fromiter(chain.from_iterable(hits), np.int64, total)])
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    delta = centre_b[cols] - centre_a[rows]
    keep = np.hypot(delta[:, 0], delta[:, 1]) <= reach + radius_a[rows] + radius_b[cols] + 1e-6
    rows, cols = rows[keep], cols[keep]
    order = np.lexsort((cols, rows))
    return rows[order], cols[order]


def neighbour_pairs(stack: np.ndarray, *, radius: float, max_angle: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`neighbours` as index pairs ``(k, j)`` (``near[k, j]`` True), sorted by k then j.

    Only pairs whose centroids can satisfy the conditions are examined: lines side
    by side lie within ``radius`` px across and overlap along, so their centroids are
    at most ``radius`` plus both curves' radii apart.
    """
    n = len(stack)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    tangent, normal = axes(stack)
    centre = stack.mean(axis=1)
    extent = _radii(stack, centre)
    k, j = near_pairs(centre, extent, centre, extent, radius)
    other = k != j
    k, j = k[other], j[other]
    parallel = np.abs((tangent[k] * tangent[j]).sum(axis=1)) >= np.cos(np.radians(max_angle))
    across = np.abs(((centre[j] - centre[k]) * normal[k]).sum(axis=1))
    k, j = k[parallel & (across <= radius)], j[parallel & (across <= radius)]

    def extent_along(curves, direction):  # (P,) low and high of curves' points along direction
        proj = curves[..., 0] * direction[:, None, 0] + curves[..., 1] * direction[:, None, 1]
        return proj.min(axis=1), proj.max(axis=1)

    # overlap[k, j] and overlap[j, k] of the dense version.
    low_jk, high_jk = extent_along(stack[j], tangent[k])
    low_kk, high_kk = extent_along(stack[k], tangent[k])
    low_kj, high_kj = extent_along(stack[k], tangent[j])
    low_jj, high_jj = extent_along(stack[j], tangent[j])
    overlap = ((np.minimum(high_jk, high_kk) - np.maximum(low_jk, low_kk)) >= 0.0) & (
        (np.minimum(high_kj, high_jj) - np.maximum(low_kj, low_jj)) >= 0.0
    )
    return k[overlap], j[overlap]


def _within(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray, reach: float):
    """The pairs ``(rows, cols)`` whose :func:`_separation` is at most ``reach``:
    bounding boxes first, then the extents across ``a``'s line for the pairs left."""
    low_a, high_a = a.min(axis=1), a.max(axis=1)
    low_b, high_b = b.min(axis=1), b.max(axis=1)
    gap = np.maximum(low_b[cols] - high_a[rows], low_a[rows] - high_b[cols]).max(axis=1)
    rows, cols = rows[gap <= reach], cols[gap <= reach]
    _, normal = axes(a)
    own = a[..., 0] * normal[:, None, 0] + a[..., 1] * normal[:, None, 1]  # (N, K)
    n = normal[rows]
    other = b[cols][..., 0] * n[:, None, 0] + b[cols][..., 1] * n[:, None, 1]  # (P, L)
    across = np.maximum(other.min(axis=1) - own.max(axis=1)[rows], own.min(axis=1)[rows] - other.max(axis=1))
    return rows[across <= reach], cols[across <= reach]
