"""Centreline paths through the skeletons of mask components: a pixel graph and its paths.

Each component of a thresholded mask is thinned (Lee, :func:`skeleton_mosaic`) and
its skeleton becomes an 8-neighbour pixel graph (:func:`pixel_graph`, scipy's
csgraph). The centreline is the longest path through it, so spurs are pruned;
branches longer than ``spur_length`` are further dislocations in the same component,
with the four arms at a crossing paired by straightness; a skeleton without ends is a
closed loop (:func:`component_paths`, and :func:`skeleton_paths` for all components of
a frame at once).

Coordinates are ``(row, col)`` pixel indices of the component's crop. Used by
:mod:`temtrack.sdk.postprocess`. Pure numpy/scipy/scikit-image; no torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csgraph, csr_matrix

__all__ = ["ARM_PX", "component_paths", "pixel_graph", "skeleton_mosaic", "skeleton_paths"]

_SQRT2 = math.sqrt(2.0)
# Arm direction at a junction: from the junction to the point this far along the arm.
ARM_PX = 8.0


def skeleton_mosaic(components: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Lee skeletons of padded components, thinned in one call: the stacked skeletons and
    the first row of each (plus the total height).

    The components are stacked into one image (their empty borders keep them apart, and
    thinning is local), so scikit-image's per-call overhead is paid once per frame.
    """
    from skimage.morphology import skeletonize

    width = max(c.shape[1] for c in components)
    starts = np.cumsum([0] + [c.shape[0] for c in components])
    mosaic = np.zeros((starts[-1], width), bool)
    for start, component in zip(starts, components):
        mosaic[start : start + component.shape[0], : component.shape[1]] = component
    return skeletonize(mosaic, method="lee").astype(bool), starts


def skeleton_paths(components: list[np.ndarray], spur_length: float) -> list[list[tuple[np.ndarray, bool]]]:
    """Ordered centreline paths of every component of a frame (see ``component_paths``).

    The components are thinned and turned into one pixel graph together. Most skeletons
    are simple open paths; one multi-source shortest-path run from an end of each orders
    all of them at once (along a path the distance from its end only grows). Loops and
    skeletons with junctions are handled one by one.
    """
    if not components:
        return []
    thin, starts = skeleton_mosaic(components)
    coords, graph, degree, _ = pixel_graph(thin)
    bounds = np.searchsorted(coords[:, 0], starts)
    results: list[list] = [[] for _ in components]
    sources, simple = [], []
    for i, component in enumerate(components):
        a, b = bounds[i], bounds[i + 1]
        if b - a < 2:
            continue
        local = degree[a:b]
        if (local >= 3).any():
            skeleton = thin[starts[i] : starts[i + 1], : component.shape[1]]
            results[i] = component_paths(skeleton, spur_length)
            continue
        ends = np.flatnonzero(local == 1)
        if len(ends) == 0:  # a simple loop
            order = csgraph.depth_first_order(graph, a, directed=False, return_predecessors=False)
            results[i] = [(coords[order] - [starts[i], 0], True)]
        else:
            sources.append(a + ends[0])
            simple.append(i)
    if sources:
        distance = csgraph.dijkstra(graph, directed=False, indices=sources, min_only=True)
        for i in simple:
            a, b = bounds[i], bounds[i + 1]
            order = a + np.argsort(distance[a:b], kind="stable")
            results[i] = [(coords[order] - [starts[i], 0], False)]
    return results


def pixel_graph(skeleton: np.ndarray):
    """8-neighbour graph of skeleton pixels, without the diagonal shortcuts of corners.

    ``skeleton`` has an empty 1 px border. Returns the (row, col) of each node, the
    symmetric CSR graph weighted by step length, the node degrees and the edge count.
    """
    rows, cols = np.divmod(np.flatnonzero(skeleton), skeleton.shape[1])  # 2-D nonzero is several times slower
    n = len(rows)
    index = np.full(skeleton.shape, -1, np.int32)
    index[rows, cols] = np.arange(n, dtype=np.int32)
    heads, tails, weights = [], [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        other = index[rows + dr, cols + dc]
        keep = other >= 0
        if dr and dc:
            # A diagonal step between two pixels that share a 4-neighbour on the skeleton
            # is a shortcut around a corner, not a branch.
            keep &= ~(skeleton[rows, cols + dc] | skeleton[rows + dr, cols])
        heads.append(np.flatnonzero(keep).astype(np.int32))
        tails.append(other[keep])
        weights.append(np.full(int(keep.sum()), _SQRT2 if dr and dc else 1.0))
    heads, tails, weights = np.concatenate(heads), np.concatenate(tails), np.concatenate(weights)
    source = np.concatenate([heads, tails])
    order = np.argsort(source, kind="stable")
    indptr = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(source, minlength=n), out=indptr[1:])
    graph = csr_matrix(
        (np.concatenate([weights, weights])[order], np.concatenate([tails, heads])[order], indptr), shape=(n, n)
    )
    return np.column_stack([rows, cols]), graph, np.diff(indptr), len(heads)


def component_paths(skeleton: np.ndarray, spur_length: float) -> list[tuple[np.ndarray, bool]]:
    """Ordered paths ((m, 2) row, col) through one component's skeleton (with an empty
    1 px border), and whether each is closed."""
    coords, graph, degree, n_edges = pixel_graph(skeleton)
    n = len(coords)
    if n < 2:
        return []
    ends = np.flatnonzero(degree == 1)
    if not (degree >= 3).any():
        if len(ends) == 0:  # a simple loop
            order = csgraph.depth_first_order(graph, 0, directed=False, return_predecessors=False)
            return [(coords[order], True)]
        order = csgraph.depth_first_order(graph, ends[0], directed=False, return_predecessors=False)
        return [(coords[order], False)]
    if n_edges >= n:
        loop = _loop_paths(coords, graph, degree, spur_length)
        if loop is not None:
            return loop
        graph = csgraph.minimum_spanning_tree(graph)
        graph = graph + graph.T
    return _tree_paths(coords, graph, spur_length)


def _longest_path(graph, source: int) -> np.ndarray:
    """Node indices of the longest shortest path from ``source``'s farthest node (double sweep)."""
    distance = csgraph.dijkstra(graph, directed=False, indices=source)
    start = int(np.argmax(np.where(np.isfinite(distance), distance, -1)))
    distance, predecessors = csgraph.dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    end = int(np.argmax(np.where(np.isfinite(distance), distance, -1)))
    return _walk_back(predecessors, end)[::-1]


def _walk_back(predecessors: np.ndarray, node: int) -> np.ndarray:
    path = [node]
    while predecessors[path[-1]] >= 0:
        path.append(int(predecessors[path[-1]]))
    return np.array(path)


def _tree_paths(coords: np.ndarray, graph, spur_length: float) -> list[tuple[np.ndarray, bool]]:
    main = _longest_path(graph, 0)
    branches = _long_branches(graph, main, spur_length)
    if not branches:
        return [(coords[main], False)]
    arms = _pair_crossing(coords, main, branches)
    if arms is not None:
        return arms
    return [(coords[main], False)] + [(coords[b], False) for b in branches]


def _long_branches(graph, main: np.ndarray, spur_length: float) -> list[np.ndarray]:
    """Branches off ``main`` longer than ``spur_length``, each ordered from its attachment
    node on ``main`` to its tip."""
    distance, predecessors, _ = csgraph.dijkstra(
        graph, directed=False, indices=main, return_predecessors=True, min_only=True
    )
    off = np.isfinite(distance) & (distance > 0)
    if not off.any() or distance[off].max() < spur_length:
        return []
    sub = graph[off][:, off]
    n_parts, part = csgraph.connected_components(sub, directed=False)
    off_nodes = np.flatnonzero(off)
    branches = []
    for p in range(n_parts):
        nodes = off_nodes[part == p]
        tip = nodes[np.argmax(distance[nodes])]
        if distance[tip] >= spur_length:
            branches.append(_walk_back(predecessors, int(tip))[::-1])
    return branches


def _arm_direction(coords: np.ndarray, arm: np.ndarray) -> np.ndarray:
    """Unit vector from the arm's first node towards the node ~ARM_PX along it."""
    points = coords[arm].astype(float)
    steps = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    far = points[min(int(np.searchsorted(steps, ARM_PX)), len(points) - 1)]
    vector = far - points[0]
    return vector / max(np.hypot(*vector), 1e-9)


def _pair_crossing(coords, main, branches):
    """Two branches leaving ``main`` at one point make a crossing: pair its four arms so
    that each pair runs straightest through it. None when the geometry is not that."""
    if len(branches) != 2:
        return None
    attach = [int(np.flatnonzero(main == b[0])[0]) for b in branches]
    if abs(attach[0] - attach[1]) > 4:
        return None
    j = int(round(sum(attach) / 2))
    if j == 0 or j == len(main) - 1:
        return None
    arms = [main[j::-1], main[j:], np.concatenate([[main[j]], branches[0]]), np.concatenate([[main[j]], branches[1]])]
    directions = [_arm_direction(coords, arm) for arm in arms]

    def cost(a, b):  # 0 when the arms leave in opposite directions
        return 1.0 + float(directions[a] @ directions[b])

    pairings = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    best = min(pairings, key=lambda p: cost(*p[0]) + cost(*p[1]))
    return [(coords[np.concatenate([arms[a][::-1], arms[b][1:]])], False) for a, b in best]


def _loop_paths(coords, graph, degree, spur_length):
    """A closed loop, possibly with spurs or tails: the cycle, plus long tails as pieces.
    None when the core is not a single cycle."""
    alive = np.ones(len(coords), bool)
    deg = degree.copy()
    while True:
        tips = np.flatnonzero(alive & (deg <= 1))
        if len(tips) == 0:
            break
        alive[tips] = False
        deg = np.asarray(graph[:, alive].astype(bool).sum(axis=1)).ravel()
    if not alive.any() or (deg[alive] != 2).any():
        return None
    core = np.flatnonzero(alive)
    sub = graph[core][:, core]
    n_parts, _ = csgraph.connected_components(sub, directed=False)
    if n_parts != 1:
        return None
    order = csgraph.depth_first_order(sub, 0, directed=False, return_predecessors=False)
    cycle = core[order]
    tails = _long_branches(graph, cycle, spur_length)
    return [(coords[cycle], True)] + [(coords[t], False) for t in tails]
