"""The default linker: whole-curve distances after a pile-up-aware motion prediction.

Why not centroids: dislocations of a pile-up are long parallel lines a few pixels
apart, and clipping at the frame edge or a partial detection moves a centroid along
the line by tens of pixels while the line itself has not moved. The distance between
whole curves (paper 6.4, with the parts running past the other's end left out) sees
the motion across the lines, which is what separates neighbours.

Why a shared motion: a pile-up glides together in stick-slip jumps of up to a few
px/frame while its members may be 5 px apart, so a jump can carry a line closer to
where its neighbour was than to where it was itself. Each step therefore

1. predicts every track from its own velocity (tracks with little history borrow the
   median velocity of their neighbours);
2. solves the assignment (scipy ``linear_sum_assignment`` on the classic square
   matrix with a cost for leaving a track or a curve unmatched, so that a chain of
   links shifted by one neighbour costs two unmatched ends);
3. takes, for every track, the median residual offset of the matched tracks beside it
   (the pile-up's jump in this frame), moves the predictions by it and solves again;
4. where something is left unexplained (a track seen in the previous step unlinked,
   a curve unlinked, a costly link), registers each neighbourhood of tracks on the
   curves: the jump across the lines that lays the most of them on curves, even
   beyond the gate (frames skipped, a long slip), and solves again;
5. keeps whichever of these linkings costs least (a registered jump must win by at
   least one unlinked item's cost).

Tracks that are missed stay linkable for ``memory`` steps and keep moving with their
neighbours meanwhile. No randomness: replaying the same steps gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _curves
from ._settings import Settings, check_choice, check_int, check_real, set_fields
from .linking import Linker

__all__ = ["CurveLinker", "CurveLinkerSettings"]

# Tracks with fewer observations than this predict with their neighbours' velocity.
_MIN_HISTORY = 3
# Consensus shifts below this (px) change no assignment: skip the second solve.
_MIN_SHIFT = 0.25
# Steps with more tracks plus curves than this gate pairs spatially before measuring
# them and solve the assignment per connected group of possible links: the same
# linking (up to exact ties), without the cost growing with the square of the count.
_GATED_ABOVE = 200


@dataclass(frozen=True)
class CurveLinkerSettings(Settings):
    """Settings of the ``"curve"`` linker (lengths in px, ``memory`` in steps).

    Attributes
    ----------
    max_cost : float
        Largest cost (px, roughly the distance between the predicted and the found
        line) of a link; also the cost of leaving a track or a curve unlinked.
        Raise it when frames are skipped and dislocations move further between steps.
    memory : int
        Steps a track may go unmatched and still be linked again (0: none).
    n_points : int
        Points each curve is resampled to for the cost.
    predict : {"pileup", "velocity", "none"}
        Motion model: per-track velocity plus the shared jump of neighbouring tracks
        (default), per-track velocity only, or none (tracks stay where last seen).
    smoothing : float
        Weight in (0, 1] of the newest displacement in each track's velocity.
    overhang_weight : float
        Cost (px) per px of line that runs past the other curve's ends (a partial or
        clipped line costs little, a short spurious curve beside a long line a lot).
    gap_penalty : float
        Cost (px) added per step a track has been missed, so that tracks seen in the
        previous frame win ties.
    gap_growth : float
        Px per frame by which a track's largest link cost grows beyond ``max_cost``
        for every frame since it was last seen, beyond the first: the longer unseen
        (missed, or frames skipped), the less sure its predicted place. A link never
        costs more than twice ``max_cost``: leaving both ends unlinked is cheaper.
    neighbour_radius : float
        Tracks whose centroids lie at most this far apart across the lines (and which
        are parallel within ``max_angle`` degrees and overlap along the lines) share
        their motion.
    max_angle : float
        Degrees; see ``neighbour_radius``.
    """

    max_cost: float = 6.0
    memory: int = 10
    n_points: int = 24
    predict: str = "pileup"
    smoothing: float = 0.5
    overhang_weight: float = 0.05
    gap_penalty: float = 0.5
    gap_growth: float = 2.0
    neighbour_radius: float = 40.0
    max_angle: float = 30.0

    def __post_init__(self):
        set_fields(
            self,
            max_cost=check_real("max_cost", self.max_cost, low=0.0, low_open=True),
            memory=check_int("memory", self.memory, low=0),
            n_points=check_int("n_points", self.n_points, low=2, high=1000),
            predict=check_choice("predict", self.predict, ("pileup", "velocity", "none")),
            smoothing=check_real("smoothing", self.smoothing, low=0.0, low_open=True, high=1.0),
            overhang_weight=check_real("overhang_weight", self.overhang_weight, low=0.0),
            gap_penalty=check_real("gap_penalty", self.gap_penalty, low=0.0),
            gap_growth=check_real("gap_growth", self.gap_growth, low=0.0),
            neighbour_radius=check_real("neighbour_radius", self.neighbour_radius, low=0.0),
            max_angle=check_real("max_angle", self.max_angle, low=0.0, high=90.0),
        )


class CurveLinker(Linker):
    """Link curves by whole-curve distance after a pile-up-aware prediction (``method="curve"``).

    Parameters
    ----------
    settings : CurveLinkerSettings, optional
    **options
        Or the fields of :class:`CurveLinkerSettings` as keywords.

    Examples
    --------
    Two lines 5 px apart jump 3 px together: the nearer old position of each new line
    is its neighbour's, yet both keep their ids.

    >>> import numpy as np
    >>> line = np.column_stack([np.zeros(40), np.arange(40.0)])
    >>> linker = CurveLinker()
    >>> linker.step(0, [line, line + [5, 0]]).tolist()
    [0, 1]
    >>> linker.step(1, [line + [8, 0], line + [3, 0]]).tolist()
    [1, 0]
    """

    method = "curve"
    Settings = CurveLinkerSettings
    _gated_above = _GATED_ABOVE  # tests set it to compare the gated and the dense paths

    def _init_state(self) -> None:
        k = self._settings.n_points
        self._ids = np.empty(0, np.int64)
        self._curves = np.empty((0, k, 2))
        self._velocity = np.empty((0, 2))  # px per frame
        self._last = np.empty(0, np.int64)  # frame of the stored curve
        self._missed = np.empty(0, np.int64)  # consecutive steps unmatched
        self._seen = np.empty(0, np.int64)  # number of observations
        self._seen_frame = np.empty(0, np.int64)  # frame of the last observation

    def _step(self, frame: int, curves: list[np.ndarray]) -> np.ndarray:
        s = self._settings
        found = _curves.resample_all(curves, s.n_points)
        n, m = len(self._ids), len(found)
        links, offsets = np.empty((0, 2), np.int64), np.empty((0, 2))
        predicted = self._curves
        if n and m:
            predicted, links, offsets = self._assign(frame, found)
        elif n:
            predicted = self._predict(frame, None)
        ids = np.full(m, -1, np.int64)
        ids[links[:, 1]] = self._ids[links[:, 0]]
        self._update(frame, found, predicted, links, offsets)
        born = np.flatnonzero(ids < 0)
        ids[born] = self._births(frame, found[born])
        return ids

    # --- prediction and assignment ---------------------------------------------------

    def _predict(self, frame: int, near: np.ndarray | None) -> np.ndarray:
        """Each track's curve moved to ``frame`` with its velocity (N, K, 2).

        Tracks with little history take the median velocity of the ``near`` (N, N)
        tracks that have more: a dislocation entering a gliding pile-up glides too.
        """
        s = self._settings
        if s.predict == "none":
            return self._curves
        velocity = self._velocity
        young = self._seen < _MIN_HISTORY
        if near is not None and young.any():
            velocity = velocity.copy()
            for k in np.flatnonzero(young):
                guides = near[k] & ~young
                if guides.any():
                    velocity[k] = np.median(self._velocity[guides], axis=0)
        dt = (frame - self._last).astype(float)
        return self._curves + (velocity * dt[:, None])[:, None, :]

    def _assign(self, frame: int, found: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted track curves (N, K, 2), links ``(track, curve)`` (L, 2) and each
        link's residual offset from prediction to curve (L, 2)."""
        s = self._settings
        gated = self._gated = len(self._ids) + len(found) > self._gated_above
        near = pairs = None
        if s.predict == "pileup":
            near, pairs = self._neighbours(self._curves, gated)
        predicted = self._predict(frame, near)
        gates = self._gates(frame)
        # Measured further than any link may reach: the registration below looks for
        # jumps beyond the gate.
        geometry = _curves.pair_geometry(
            predicted, found, reach=gates.max() + s.max_cost * (near is not None), gated=gated
        )
        links, total = self._solve(geometry, gates)
        best = (total, predicted, geometry, links)
        if near is not None and len(links):
            # Each shift is a hypothesis about this frame's jump of the pile-ups; the
            # linking that explains the curves at the lowest cost wins.
            hypotheses = [(self._consensus(near, geometry, links, pairs), 0.0)]
            trouble = self._trouble(geometry, links, len(found))
            if trouble.any():
                # Something is left unexplained: maybe a jump beyond the gate. A
                # registered jump must explain the curves better by at least one
                # unlinked item's cost to win over the prediction.
                hypotheses.append((self._register(predicted, geometry, near, trouble), s.max_cost))
            for shift, margin in hypotheses:
                moving = np.hypot(shift[:, 0], shift[:, 1]) > _MIN_SHIFT
                if not moving.any():
                    continue
                moved = predicted.copy()
                moved[moving] += shift[moving, None, :]
                # Only the shifted tracks' rows change.
                part = _curves.pair_geometry(moved[moving], found, reach=gates.max(), gated=gated)
                distance, overhang, offset = geometry.distance.copy(), geometry.overhang.copy(), geometry.offset.copy()
                distance[moving], overhang[moving], offset[moving] = part.distance, part.overhang, part.offset
                trial = _curves.PairGeometry(distance, overhang, offset)
                trial_links, trial_total = self._solve(trial, gates)
                if trial_total + margin < best[0]:
                    best = (trial_total, moved, trial, trial_links)
        _, predicted, geometry, links = best
        return predicted, links, geometry.offset[links[:, 0], links[:, 1]]

    def _trouble(self, geometry: _curves.PairGeometry, links: np.ndarray, m: int) -> np.ndarray:
        """Tracks (N,) bool that the linking leaves unexplained: seen in the previous step
        but unlinked now, linked at a high cost, or near a curve left unlinked."""
        n = len(self._ids)
        trouble = np.ones(n, bool)
        trouble[links[:, 0]] = False
        trouble &= self._missed == 0
        cost = self._cost(geometry)[links[:, 0], links[:, 1]]
        trouble[links[cost > 0.5 * self._settings.max_cost, 0]] = True
        unlinked = np.ones(m, bool)
        unlinked[links[:, 1]] = False
        trouble |= np.isfinite(geometry.distance[:, unlinked]).any(axis=1)
        return trouble

    def _register(
        self, predicted: np.ndarray, geometry: _curves.PairGeometry, near: np.ndarray, trouble: np.ndarray
    ) -> np.ndarray:
        """Per track, the jump across its line (N, 2) that best lays its neighbourhood on the curves.

        For track k and a shift t along its normal, every track m beside it (and k) is
        charged the cost of its best curve once moved by t, approximated from the
        measured offsets, or ``max_cost`` if none is near; every curve near them is
        charged likewise. Candidate shifts are the measured offsets themselves. Only
        tracks with a ``trouble`` (N,) track beside them are registered; the rest keep 0.

        All registered tracks are scored together (:func:`_best_shifts`), not in a
        Python loop over tracks: a dense frame has hundreds of small neighbourhoods.
        """
        s = self._settings
        n = len(predicted)
        shift = np.zeros((n, 2))
        beside = near | np.eye(n, dtype=bool)
        tracks = np.flatnonzero(trouble | near[:, trouble].any(axis=1))
        tracks = tracks[beside[tracks].sum(axis=1) >= 2]  # a track alone has no neighbourhood
        if not len(tracks):
            return shift
        _, normal = _curves.axes(predicted)
        # The overhang and gap terms of the cost, which a shift keeps.
        cost0 = s.overhang_weight * geometry.overhang + s.gap_penalty * self._missed[:, None]
        # Only measured (track, curve) pairs can cost less than max_cost: the pairs of
        # each registered track's group, member by member (sorted by member).
        track_of, member = np.nonzero(beside[tracks])  # sorted by track, then member
        pair_rows, pair_curves = np.nonzero(np.isfinite(geometry.distance))  # sorted by row
        first = np.searchsorted(pair_rows, np.arange(n + 1))
        count = first[member + 1] - first[member]
        pair = _ranges(first[member], count)
        owner = np.repeat(track_of, count)  # the registered track (index into tracks) of each pair
        rows, curve = pair_rows[pair], pair_curves[pair]  # rows: the group member of each pair
        along = (geometry.offset[rows, curve] * normal[tracks[owner]]).sum(axis=1)
        lateral2 = np.maximum(geometry.distance[rows, curve] ** 2 - along**2, 0.0)
        # Candidates: 0 and every pair's offset along the normal, to 0.1 px, per track.
        values = np.concatenate([np.zeros(len(tracks)), np.round(along, 1)])
        holder = np.concatenate([np.arange(len(tracks)), owner])
        order = np.lexsort((values, holder))
        values, holder = values[order], holder[order]
        new = np.ones(len(values), bool)
        new[1:] = (holder[1:] != holder[:-1]) | (values[1:] != values[:-1])
        candidates, candidate_of = values[new], holder[new]
        # A pair whose lateral distance and fixed cost already reach max_cost costs
        # max_cost at every shift: it cannot move the best shift. Left out (a curve or
        # track with no other pair then adds the same max_cost to every candidate's
        # score, which leaves the argmin alone), the blocks shrink several times on a
        # dense frame.
        fixed = cost0[rows, curve]
        useful = np.sqrt(lateral2) + fixed < s.max_cost
        pairs = _Pairs(owner[useful], rows[useful], curve[useful], along[useful], lateral2[useful], fixed[useful])
        best = _best_shifts(pairs, candidates, candidate_of, s.max_cost)
        registered = np.flatnonzero(np.isfinite(best))
        shift[tracks[registered]] = best[registered, None] * normal[tracks[registered]]
        return shift

    def _cost(self, geometry: _curves.PairGeometry) -> np.ndarray:
        s = self._settings
        return (
            geometry.distance
            + s.overhang_weight * geometry.overhang
            + s.gap_penalty * self._missed[:, None]
        )

    def _solve(self, geometry: _curves.PairGeometry, gates: np.ndarray) -> tuple[np.ndarray, float]:
        """Links ``(track, curve)`` (L, 2) minimising link costs plus ``max_cost`` per
        unlinked item, with no link costing more than its track's gate (N,)."""
        cost = self._cost(geometry)
        allowed = cost <= gates[:, None]
        if getattr(self, "_gated", False):
            return self._solve_groups(cost, allowed)
        rows, cols, total = _assignment(np.where(allowed, cost, np.inf), self._settings.max_cost)
        return np.column_stack([rows, cols]).astype(np.int64), total

    def _solve_groups(self, cost: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, float]:
        """:meth:`_solve` one connected group of allowed links at a time.

        Unlinked items cost the same wherever they are, so the optimum splits into
        the optima of the groups of tracks and curves joined by allowed links; a
        track or curve with no allowed link is simply unlinked.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n, m = cost.shape
        gate = self._settings.max_cost
        rows, cols = np.nonzero(allowed)
        linked_rows, linked_cols = [], []
        total = gate * (n + m - len(np.unique(rows)) - len(np.unique(cols)))
        if len(rows):
            graph = coo_matrix((np.ones(len(rows)), (rows, n + cols)), shape=(n + m, n + m))
            _, label = connected_components(graph, directed=False)
            edge_label = label[rows]
            order = np.argsort(edge_label, kind="stable")
            bounds = np.flatnonzero(np.diff(edge_label[order])) + 1
            for group in np.split(order, bounds):
                if len(group) == 1 and cost[rows[group[0]], cols[group[0]]] < 2 * gate:
                    # One track, one curve, one allowed link (most groups): linking
                    # costs less than leaving both, as the assignment below would find.
                    total += float(cost[rows[group[0]], cols[group[0]]])
                    linked_rows.append(rows[group])
                    linked_cols.append(cols[group])
                    continue
                tracks, curves = np.unique(rows[group]), np.unique(cols[group])
                sub = np.ix_(tracks, curves)
                r, c, part = _assignment(np.where(allowed[sub], cost[sub], np.inf), gate)
                total += part
                linked_rows.append(tracks[r])
                linked_cols.append(curves[c])
        if not linked_rows:
            return np.empty((0, 2), np.int64), float(total)
        links = np.column_stack([np.concatenate(linked_rows), np.concatenate(linked_cols)]).astype(np.int64)
        return links[np.argsort(links[:, 0], kind="stable")], float(total)

    def _gates(self, frame: int) -> np.ndarray:
        """Largest link cost of each track (N,) in ``frame``, px."""
        s = self._settings
        unseen = np.maximum(frame - self._seen_frame - 1, 0)
        return np.minimum(s.max_cost + s.gap_growth * unseen, 2.0 * s.max_cost)

    def _neighbours(self, stack: np.ndarray, gated: bool) -> tuple[np.ndarray, tuple | None]:
        """Which tracks lie side by side, (N, N) bool; with ``gated`` also as index pairs."""
        s = self._settings
        if not gated:
            return _curves.neighbours(stack, radius=s.neighbour_radius, max_angle=s.max_angle), None
        k, j = _curves.neighbour_pairs(stack, radius=s.neighbour_radius, max_angle=s.max_angle)
        near = np.zeros((len(stack), len(stack)), bool)
        near[k, j] = True
        return near, (k, j)

    def _consensus(
        self, near: np.ndarray, geometry: _curves.PairGeometry, links: np.ndarray, pairs: tuple | None = None
    ) -> np.ndarray:
        """Per track, the median residual offset (N, 2) of the linked tracks among itself
        and its ``near`` (N, N) neighbours (or their index ``pairs``); 0 where none is linked."""
        n = len(near)
        residual = np.full((n, 2), np.nan)
        residual[links[:, 0]] = geometry.offset[links[:, 0], links[:, 1]]
        if pairs is not None:
            return _sparse_median(n, pairs, residual)
        group = near | np.eye(n, dtype=bool)
        values = np.sort(np.where(group[:, :, None], residual[None, :, :], np.nan), axis=1)  # NaN sort last
        count = (group & ~np.isnan(residual[:, 0])[None, :]).sum(axis=1)

        def rank(at: np.ndarray) -> np.ndarray:  # the at-th smallest per row, (N, 2)
            return np.take_along_axis(values, np.broadcast_to(at[:, None, None], (n, 1, 2)), axis=1)[:, 0]

        # Median of the `count` valid values: the mean of the two middle ones.
        shift = 0.5 * (rank(np.maximum(count - 1, 0) // 2) + rank(np.minimum(count // 2, n - 1)))
        return np.where(count[:, None] > 0, shift, 0.0)

    # --- state -------------------------------------------------------------------------

    def _update(self, frame: int, found: np.ndarray, predicted: np.ndarray, links: np.ndarray, offsets: np.ndarray) -> None:
        s = self._settings
        n = len(self._ids)
        if not n:
            return
        track, curve = links[:, 0], links[:, 1]
        dt = (frame - self._last).astype(float)
        velocity = self._velocity.copy()
        if len(links):
            # Displacement from the stored curve to the found one: the prediction's
            # translation plus the residual offset across the line.
            moved = (predicted[track] - self._curves[track]).mean(axis=1) + offsets
            observed = moved / dt[track, None]
            first = self._seen[track] == 1
            weight = np.where(first, 1.0, s.smoothing)[:, None]
            velocity[track] = weight * observed + (1.0 - weight) * velocity[track]
        matched = np.zeros(n, bool)
        matched[track] = True
        curves = predicted.copy()  # the missed keep moving as predicted
        curves[track] = found[curve]
        missed = np.where(matched, 0, self._missed + 1)
        seen = self._seen + matched
        seen_frame = np.where(matched, frame, self._seen_frame)
        keep = missed <= s.memory
        self._curves, self._velocity = curves[keep], velocity[keep]
        self._ids, self._missed, self._seen = self._ids[keep], missed[keep], seen[keep]
        self._seen_frame = seen_frame[keep]
        self._last = np.full(int(keep.sum()), frame, np.int64)

    def _births(self, frame: int, found: np.ndarray) -> np.ndarray:
        ids = self._new_ids(len(found))
        if len(found):
            self._ids = np.concatenate([self._ids, ids])
            self._curves = np.concatenate([self._curves, found])
            self._velocity = np.concatenate([self._velocity, np.zeros((len(found), 2))])
            self._last = np.concatenate([self._last, np.full(len(found), frame, np.int64)])
            self._missed = np.concatenate([self._missed, np.zeros(len(found), np.int64)])
            self._seen = np.concatenate([self._seen, np.ones(len(found), np.int64)])
            self._seen_frame = np.concatenate([self._seen_frame, np.full(len(found), frame, np.int64)])
        return ids


def _sparse_median(n: int, pairs: tuple, residual: np.ndarray) -> np.ndarray:
    """Per row k, the median (N, 2) of ``residual[j]`` over k itself and the ``pairs``
    (k, j), NaN rows left out; 0 where none is left. Same values as the dense median."""
    rows = np.concatenate([np.arange(n), pairs[0]])
    cols = np.concatenate([np.arange(n), pairs[1]])
    valid = ~np.isnan(residual[cols, 0])
    rows, cols = rows[valid], cols[valid]
    count = np.bincount(rows, minlength=n)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    shift = np.zeros((n, 2))
    has = count > 0
    for d in range(2):
        values = residual[cols, d]
        order = np.lexsort((values, rows))
        ordered = values[order]
        low = ordered[np.minimum(start + np.maximum(count - 1, 0) // 2, max(len(ordered) - 1, 0))] if len(ordered) else 0
        high = ordered[np.minimum(start + count // 2, max(len(ordered) - 1, 0))] if len(ordered) else 0
        shift[:, d] = np.where(has, 0.5 * (low + high), 0.0)
    return shift


def _assignment(cost: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The links of least total cost in an (a, b) block of link costs (inf: not allowed),
    each item left unlinked costing ``gate``: the rows and columns linked, and the total."""
    from scipy.optimize import linear_sum_assignment

    a, b = cost.shape
    # Square matrix [[links, track unlinked], [curve unlinked, filler]]: every
    # assignment of it is a valid linking, and its cost counts each unlinked item once.
    full = np.full((a + b, b + a), np.inf)
    full[:a, :b] = cost
    full[np.arange(a), b + np.arange(a)] = gate
    full[a + np.arange(b), np.arange(b)] = gate
    full[a:, b:] = 0.0
    rows, cols = linear_sum_assignment(full)
    keep = (rows < a) & (cols < b)
    return rows[keep], cols[keep], float(full[rows, cols].sum())


@dataclass(frozen=True)
class _Pairs:
    """The (track, curve) pairs of every registered track's group, flat: sorted by the
    registered track (``owner``), then by group member."""

    owner: np.ndarray
    member: np.ndarray
    curve: np.ndarray
    along: np.ndarray
    lateral2: np.ndarray
    fixed: np.ndarray


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])``, without the loop."""
    total = int(counts.sum())
    if not total:
        return np.zeros(0, np.int64)
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)


def _best_shifts(pairs: _Pairs, candidates: np.ndarray, candidate_of: np.ndarray, max_cost: float) -> np.ndarray:
    """The best shift along the normal of each registered track; NaN for those without a pair.

    For track k every candidate shift t is scored: each member of its group, the cost of
    its best pair moved by t, capped at ``max_cost`` (``max_cost`` without a pair); plus
    each curve with a pair, its best pair's, capped. The lowest score wins; ties go to
    the smaller jump, then to the first candidate (``np.argmin``'s rule).
    ``candidates`` (ascending within each track) and ``candidate_of`` (ascending) list
    every track's candidates.

    A pair costs less than ``max_cost`` only at the candidates within
    ``sqrt((max_cost - fixed)**2 - lateral2)`` of its own offset. The score is therefore
    a constant per track (``max_cost`` per member and curve), which cannot move the
    argmin and is left out, lowered where such (candidate, pair) entries are; only those
    entries are computed, a tenth or less of the whole block on a dense frame.
    """
    n = int(candidate_of.max()) + 1 if len(candidate_of) else 0
    best = np.full(n, np.nan)
    if not len(pairs.owner):
        return best
    # Every track's candidates searched at once: keys are the track's index times a
    # span wider than any candidate's or query's range, plus the value.
    reach = np.sqrt(np.maximum((max_cost - pairs.fixed) ** 2 - pairs.lateral2, 0.0)) + 1e-6
    span = 2.0 * (np.abs(candidates).max() + np.abs(pairs.along).max() + reach.max()) + 1.0
    keys = candidate_of * span + candidates
    centre = pairs.owner * span + pairs.along
    low = np.searchsorted(keys, centre - reach, side="left")
    high = np.searchsorted(keys, centre + reach, side="right")
    entry_pair = np.repeat(np.arange(len(low)), high - low)
    entry_choice = _ranges(low, high - low)
    cost = np.sqrt(pairs.lateral2[entry_pair] + (pairs.along[entry_pair] - candidates[entry_choice]) ** 2)
    lowered = np.minimum(cost + pairs.fixed[entry_pair], max_cost) - max_cost  # <= 0
    score = np.zeros(len(candidates))
    for item in (pairs.member, pairs.curve):
        # Each member (each curve) counts once per candidate, with its best pair there.
        _, item_id = np.unique(pairs.owner * (int(item.max()) + 1) + item, return_inverse=True)
        items = int(item_id.max()) + 1
        key = entry_choice * items + item_id[entry_pair]  # (candidate, item) of each entry
        order = np.argsort(key, kind="stable")
        key = key[order]
        if len(key):
            start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            least = np.minimum.reduceat(lowered[order], start)
            score += np.bincount(key[start] // items, weights=least, minlength=len(candidates))
    # The first lowest value of each track with pairs.
    tracks = np.flatnonzero(np.bincount(pairs.owner, minlength=n))
    counts = np.bincount(candidate_of, minlength=n)[tracks]
    where = _ranges(np.searchsorted(candidate_of, tracks), counts)
    value = score[where] + 1e-3 * np.abs(candidates[where])
    where = where[value == np.repeat(np.minimum.reduceat(value, np.cumsum(counts) - counts), counts)]
    track = candidate_of[where]
    first = np.r_[True, track[1:] != track[:-1]]
    best[track[first]] = candidates[where[first]]
    return best
