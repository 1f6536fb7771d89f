"""Time series from tracked curves: kinematics per track, distances per neighbour pair.

Frame by frame, :class:`SeriesBuilder` turns the tracked curves of a frame into rows:

- per track: centroid, lead point, position along the glide axis, velocity, length,
  mean curvature;
- per pair of neighbouring dislocations in a pile-up: the mean distance between the
  two lines (paper, section 6.4: closest distances between the curves resampled to 50
  equally spaced points, averaged both ways) and the smallest distance.

Its memory is bounded by the number of active tracks (a track unseen for
``forget_after`` steps is forgotten), so it streams videos of any length;
:func:`series` runs the same code over a whole DataFrame.

Pile-ups: a track joins a pile-up when first seen, and keeps it. A new track joins the
pile-up of the nearest track lying side by side with it (parallel within
``max_angle`` degrees, at most ``pileup_gap`` px apart across the lines, overlapping
along them); new tracks beside no known one form new pile-ups with the new tracks
beside them. Each pile-up's glide axis is fixed when it is created: the normal to
its lines, signed towards +x (or +y for lines along x). Velocities and positions are
signed along that axis; a position is that of the line's centroid, which, unlike
the lead point, never jumps from one end of a straight line to the other. Which way
a pile-up glides is learnt from its net motion (once it exceeds
``direction_threshold`` px); the lead point of a line is its point furthest that way
(its point furthest along +axis until then).

Neighbour pairs are consecutive members of a pile-up ordered along its glide axis
(``track_a`` lies further towards -axis than ``track_b``); a pair is left out while
a member missed in this frame was last seen between the two.

Units: px, frames and seconds; nm columns are NaN unless ``pixel_size_nm`` (nm per
pixel) is given, ``velocity_px_s`` is NaN when the frame time is unknown (NaN).
numpy and pandas only; knows nothing of the rest of tem-track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Sequence

import numpy as np

from . import _curves
from ._settings import Settings, check_int, check_real, set_fields
from .geometry import check_curve

__all__ = ["PAIR_COLUMNS", "SeriesBuilder", "SeriesSettings", "TRACK_COLUMNS", "pair_distances", "series"]

TRACK_COLUMNS = {
    "frame": "int64",
    "time_s": "float64",
    "track_id": "int64",
    "pileup": "int64",
    "centroid_x": "float64",
    "centroid_y": "float64",
    "lead_x": "float64",
    "lead_y": "float64",
    "position_px": "float64",
    "velocity_px_frame": "float64",
    "velocity_px_s": "float64",
    "length_px": "float64",
    "mean_curvature": "float64",
    "position_nm": "float64",
    "velocity_nm_s": "float64",
    "length_nm": "float64",
}
"""Columns (and dtypes) of the per-track rows; see :meth:`SeriesBuilder.update`."""

PAIR_COLUMNS = {
    "frame": "int64",
    "time_s": "float64",
    "pileup": "int64",
    "track_a": "int64",
    "track_b": "int64",
    "distance_px": "float64",
    "min_distance_px": "float64",
    "distance_nm": "float64",
    "min_distance_nm": "float64",
}
"""Columns (and dtypes) of the per-pair rows; see :meth:`SeriesBuilder.update`."""


@dataclass(frozen=True)
class SeriesSettings(Settings):
    """Settings of :class:`SeriesBuilder` (lengths in px).

    Attributes
    ----------
    pixel_size_nm : float or None
        nm per pixel; fills the ``*_nm`` columns.
    n_points : int
        Points each curve is resampled to (paper: 50) for distances, lead point and
        curvature.
    pileup_gap : float
        Largest distance across the lines between neighbours of one pile-up.
    max_angle : float
        Largest angle (degrees) between the lines of one pile-up.
    forget_after : int
        Steps after which an unseen track is forgotten (a later curve with its id
        starts afresh, possibly in another pile-up).
    direction_threshold : float
        Net glide (px) of a pile-up that fixes which way it glides.
    """

    pixel_size_nm: float | None = None
    n_points: int = 50
    pileup_gap: float = 40.0
    max_angle: float = 20.0
    forget_after: int = 25
    direction_threshold: float = 2.0

    def __post_init__(self):
        set_fields(
            self,
            pixel_size_nm=check_real("pixel_size_nm", self.pixel_size_nm, low=0.0, low_open=True, allow_none=True),
            n_points=check_int("n_points", self.n_points, low=2, high=10_000),
            pileup_gap=check_real("pileup_gap", self.pileup_gap, low=0.0),
            max_angle=check_real("max_angle", self.max_angle, low=0.0, high=90.0),
            forget_after=check_int("forget_after", self.forget_after, low=0),
            direction_threshold=check_real("direction_threshold", self.direction_threshold, low=0.0),
        )


@dataclass
class _Track:
    pileup: int
    curve: np.ndarray  # (n_points, 2) resampled, as last seen
    frame: int
    time_s: float
    step: int
    along: float  # centroid along the pile-up's glide axis, px


@dataclass
class _Pileup:
    axis: np.ndarray  # (2,) unit glide axis, fixed at creation
    net: float = 0.0  # summed mean glide of its members, px along axis
    sense: float = 1.0  # +1 / -1: which way along axis it glides
    members: set = field(default_factory=set)


class SeriesBuilder:
    """Streams per-track and per-pair time series, one frame at a time.

    Parameters
    ----------
    settings : SeriesSettings, optional
    **options
        Or the fields of :class:`SeriesSettings` as keywords, e.g.
        ``SeriesBuilder(pixel_size_nm=1.9)``; an unknown one is a TypeError.

    Examples
    --------
    Two straight lines 10 px apart gliding 2 px per frame at 10 frames/s:

    >>> import numpy as np
    >>> line = np.column_stack([np.zeros(50), np.arange(50.0)])
    >>> builder = SeriesBuilder(pixel_size_nm=2.0)
    >>> for frame in range(3):
    ...     curves = [line + [2 * frame, 0], line + [2 * frame + 10, 0]]
    ...     tracks, pairs = builder.update(frame, frame / 10, curves, [7, 8])
    >>> tracks["velocity_px_s"].round(6).tolist(), pairs["distance_px"].round(6).tolist()
    ([20.0, 20.0], [10.0])
    """

    def __init__(self, settings: SeriesSettings | None = None, **options):
        if settings is not None:
            if options:
                raise TypeError("pass either settings or keyword options to SeriesBuilder, not both")
            if not isinstance(settings, SeriesSettings):
                raise TypeError(f"settings must be a SeriesSettings, got {type(settings).__name__}")
        else:
            settings = SeriesSettings.from_options("SeriesBuilder", options)
        self._settings = settings
        self._tracks: dict[int, _Track] = {}
        self._pileups: dict[int, _Pileup] = {}
        self._next_pileup = 0
        self._step = 0
        self._last_frame: int | None = None

    @property
    def settings(self) -> SeriesSettings:
        return self._settings

    @property
    def active_tracks(self) -> int:
        """Tracks held in memory (seen within the last ``forget_after`` steps)."""
        return len(self._tracks)

    def describe(self) -> dict:
        """The settings as a JSON-able dict, for output metadata."""
        return {"series": "temtrack.tracker.SeriesBuilder", "settings": self._settings.to_dict()}

    def update(self, frame: int, time_s: float | None, curves: Sequence[np.ndarray], track_ids):
        """Rows of one frame.

        Parameters
        ----------
        frame : int
            Frame number, larger than the previous update's.
        time_s : float or None
            Time of the frame in seconds; None or NaN when unknown.
        curves : sequence of (n_i, 2) array_like of float
            Tracked curves of the frame, ``(x, y)`` px. Not modified.
        track_ids : (len(curves),) array_like of int
            Their track ids (distinct).

        Returns
        -------
        tracks : pandas.DataFrame
            One row per curve, columns :data:`TRACK_COLUMNS`: ``frame``, ``time_s``,
            ``track_id``, ``pileup``, ``centroid_x``/``centroid_y`` and ``lead_x``/
            ``lead_y`` (px), ``position_px`` (centroid along the glide axis),
            ``velocity_px_frame`` and ``velocity_px_s`` (along the glide axis, since
            the track was last seen; NaN on its first frame), ``length_px``,
            ``mean_curvature`` (1/px), and ``position_nm``, ``velocity_nm_s``,
            ``length_nm``.
        pairs : pandas.DataFrame
            One row per neighbour pair, columns :data:`PAIR_COLUMNS`: ``frame``,
            ``time_s``, ``pileup``, ``track_a``, ``track_b``, ``distance_px`` (paper
            6.4), ``min_distance_px``, ``distance_nm``, ``min_distance_nm``.
        """
        track_rows, pair_rows = self._update(frame, time_s, curves, track_ids)
        return _frame(track_rows, TRACK_COLUMNS), _frame(pair_rows, PAIR_COLUMNS)

    # --- one frame ---------------------------------------------------------------------

    def _update(self, frame, time_s, curves, track_ids) -> tuple[dict, dict]:
        frame, time_s, curves, ids = self._check(frame, time_s, curves, track_ids)
        s = self._settings
        self._step += 1
        self._last_frame = frame
        stack = _curves.resample_all(curves, s.n_points)
        new = self._assign_pileups(ids, stack)

        n = len(ids)
        pileup = np.array([self._tracks[i].pileup if i in self._tracks else new[i] for i in ids], np.int64)
        axis = np.array([self._pileups[p].axis for p in pileup]).reshape(n, 2)
        # Motion since each continuing track was last seen, across its line.
        old = [k for k, i in enumerate(ids) if i in self._tracks]
        glide = np.full(n, np.nan)
        frames_since = np.full(n, np.nan)
        seconds_since = np.full(n, np.nan)
        if old:
            previous = np.stack([self._tracks[ids[k]].curve for k in old])
            offsets = _curves.paired_offsets(previous, stack[old])
            glide[old] = (offsets * axis[old]).sum(axis=1)
            frames_since[old] = [frame - self._tracks[ids[k]].frame for k in old]
            seconds_since[old] = [time_s - self._tracks[ids[k]].time_s for k in old]
        for p in np.unique(pileup[old]) if old else []:
            members = [k for k in old if pileup[k] == p]
            record = self._pileups[int(p)]
            record.net += float(np.mean(glide[members]))
            if abs(record.net) >= s.direction_threshold:
                record.sense = math.copysign(1.0, record.net)

        centroid = stack.mean(axis=1)
        sense = np.array([self._pileups[p].sense for p in pileup]).reshape(n)
        lead = _lead_points(stack, axis * sense[:, None])
        position = (centroid * axis).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_second = np.where(seconds_since > 0, glide / seconds_since, np.nan)
        length = np.array([_length(c) for c in curves])
        scale = np.nan if s.pixel_size_nm is None else s.pixel_size_nm
        tracks = {
            "frame": np.full(n, frame, np.int64),
            "time_s": np.full(n, time_s),
            "track_id": ids.copy(),
            "pileup": pileup,
            "centroid_x": centroid[:, 0],
            "centroid_y": centroid[:, 1],
            "lead_x": lead[:, 0],
            "lead_y": lead[:, 1],
            "position_px": position,
            "velocity_px_frame": glide / frames_since,
            "velocity_px_s": per_second,
            "length_px": length,
            "mean_curvature": _curves.mean_curvature(stack),
            "position_nm": position * scale,
            "velocity_nm_s": per_second * scale,
            "length_nm": length * scale,
        }
        pairs = self._pairs(frame, time_s, ids, pileup, stack, position)
        for k, i in enumerate(ids):
            self._tracks[int(i)] = _Track(int(pileup[k]), stack[k], frame, time_s, self._step, float(position[k]))
        self._forget()
        return tracks, pairs

    def _check(self, frame, time_s, curves, track_ids):
        if isinstance(frame, bool) or not isinstance(frame, Integral):
            raise TypeError(f"frame must be an integer frame number, got {type(frame).__name__} {frame!r}")
        frame = int(frame)
        if self._last_frame is not None and frame <= self._last_frame:
            raise ValueError(f"frame must increase from update to update: got frame {frame} after frame {self._last_frame}")
        if time_s is None:
            time_s = float("nan")
        elif isinstance(time_s, bool) or not isinstance(time_s, Real):
            raise TypeError(f"time_s must be a number of seconds or None, got {type(time_s).__name__} {time_s!r}")
        time_s = float(time_s)
        if isinstance(curves, np.ndarray) and curves.ndim != 3:
            raise TypeError(f"curves must be a sequence of (n, 2) arrays, got one array of shape {curves.shape}")
        curves = [check_curve(c, f"curves[{k}]") for k, c in enumerate(curves)]
        ids = np.asarray(track_ids)
        if ids.ndim != 1 or len(ids) != len(curves):
            raise ValueError(f"track_ids must hold one id per curve: got shape {ids.shape} for {len(curves)} curves")
        if len(ids) and ids.dtype.kind not in "iu":
            raise TypeError(f"track_ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"track_ids must be distinct within a frame, got {ids.tolist()}")
        return frame, time_s, curves, ids

    def _assign_pileups(self, ids: np.ndarray, stack: np.ndarray) -> dict[int, int]:
        """Pile-ups of the tracks new in this frame: track id -> pile-up."""
        s = self._settings
        fresh = [k for k, i in enumerate(ids) if i not in self._tracks]
        if not fresh:
            return {}
        # Side-by-side pairs, found among centroids near enough to be (a k-d tree prefilter).
        rows, cols = _curves.neighbour_pairs(stack, radius=s.pileup_gap, max_angle=s.max_angle)
        beside_of = {k: [] for k in range(len(ids))}
        for k, j in zip(rows.tolist(), cols.tolist()):
            beside_of[k].append(j)
        centre = stack.mean(axis=1)

        def gap(k, j):
            return np.hypot(*(centre[k] - centre[j]))
        known = {k: self._tracks[i].pileup for k, i in enumerate(ids) if i in self._tracks}
        waiting = sorted(fresh, key=lambda k: ids[k])  # id order: deterministic
        changed = True
        while changed and waiting:
            changed = False
            for k in list(waiting):
                beside = [j for j in beside_of[k] if j in known]
                if beside:
                    known[k] = known[min(beside, key=lambda j: (gap(k, j), ids[j]))]
                    waiting.remove(k)
                    changed = True
        # The rest start pile-ups of their own, one per group of new tracks side by side.
        while waiting:
            group, queue = [], [waiting.pop(0)]
            while queue:
                k = queue.pop(0)
                group.append(k)
                pending = set(waiting)
                for j in sorted((j for j in beside_of[k] if j in pending), key=waiting.index):
                    waiting.remove(j)
                    queue.append(j)
            number = self._new_pileup(stack[group])
            known.update({k: number for k in group})
        for k in fresh:
            self._pileups[known[k]].members.add(int(ids[k]))
        return {int(ids[k]): known[k] for k in fresh}

    def _new_pileup(self, members: np.ndarray) -> int:
        tangent, _ = _curves.axes(members)
        mean = tangent.sum(axis=0)  # canonical signs already agree for near-parallel lines
        _, axis = _curves.axes(np.stack([[[0.0, 0.0], mean]]))
        number = self._next_pileup
        self._next_pileup += 1
        self._pileups[number] = _Pileup(axis=axis[0])
        return number

    def _pairs(self, frame, time_s, ids, pileup, stack, along) -> dict:
        s = self._settings
        present = {int(i) for i in ids}
        absent_along: dict[int, list] = {}
        for i, t in self._tracks.items():
            if i not in present:
                absent_along.setdefault(t.pileup, []).append(t.along)
        first, second = [], []
        for p in np.unique(pileup):
            members = np.flatnonzero(pileup == p)
            if len(members) < 2:
                continue
            members = members[np.argsort(along[members], kind="stable")]
            # Members missed in this frame still stand between their neighbours.
            absent = absent_along.get(int(p), [])
            for a, b in zip(members[:-1], members[1:]):
                if not any(along[a] < x < along[b] for x in absent):
                    first.append(a)
                    second.append(b)
        first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
        if len(first):
            distance, closest = _curves.paired_distances(stack[first], stack[second])
        else:
            distance = closest = np.empty(0)
        scale = np.nan if s.pixel_size_nm is None else s.pixel_size_nm
        return {
            "frame": np.full(len(first), frame, np.int64),
            "time_s": np.full(len(first), time_s),
            "pileup": pileup[first],
            "track_a": ids[first],
            "track_b": ids[second],
            "distance_px": distance,
            "min_distance_px": closest,
            "distance_nm": distance * scale,
            "min_distance_nm": closest * scale,
        }

    def _forget(self) -> None:
        limit = self._step - self._settings.forget_after
        for i in [i for i, t in self._tracks.items() if t.step < limit]:
            track = self._tracks.pop(i)
            record = self._pileups[track.pileup]
            record.members.discard(i)
            if not record.members:
                del self._pileups[track.pileup]


def _lead_points(stack: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The point of each curve (N, K, 2) furthest along its unit ``direction`` (N, 2).

    Points within 1e-6 px of the furthest tie (a straight line across the glide:
    every point leads); the middle one of them is taken, so the answer does not
    hang on rounding.
    """
    if not len(stack):
        return np.empty((0, 2))
    ahead = np.einsum("nkd,nd->nk", stack, direction)
    ties = ahead >= ahead.max(axis=1, keepdims=True) - 1e-6
    count = ties.sum(axis=1)
    rank = np.cumsum(ties, axis=1)
    pick = np.argmax(ties & (rank == ((count + 1) // 2)[:, None]), axis=1)
    return stack[np.arange(len(stack)), pick]


def _length(curve: np.ndarray) -> float:
    return float(np.hypot(*np.diff(curve, axis=0).T).sum())


def _frame(columns: dict, schema: dict):
    import pandas as pd

    return pd.DataFrame({name: np.asarray(columns[name], dtype=dtype) for name, dtype in schema.items()})


def pair_distances(a, b, *, n_points: int = 50) -> tuple[float, float]:
    """Mean and smallest distance (px) between two dislocation lines.

    The mean distance follows the paper (section 6.4): both curves resampled to
    ``n_points`` equally spaced points, the closest distance from each point to the
    other polyline, averaged over each curve and then over both directions. The
    smallest distance is that between the polylines (0 where they cross).

    Parameters
    ----------
    a, b : (n, 2) array_like of float
        The two curves, ``(x, y)`` px.
    n_points : int
        Points per curve (paper: 50).

    Returns
    -------
    (float, float)
        ``(distance_px, min_distance_px)``.

    >>> import numpy as np
    >>> a = np.column_stack([np.zeros(2), [0.0, 40.0]])
    >>> pair_distances(a, a + [10, 0])
    (10.0, 10.0)
    """
    if isinstance(n_points, bool) or not isinstance(n_points, Integral) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    a = _curves.resample_all([check_curve(a, "a")], int(n_points))
    b = _curves.resample_all([check_curve(b, "b")], int(n_points))
    distance, closest = _curves.paired_distances(a, b)
    return float(distance[0]), float(closest[0])


def series(df, *, settings: SeriesSettings | None = None, **options):
    """Per-track and per-pair time series of a whole tracked DataFrame.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per curve: ``frame`` (int), ``track_id`` (int), ``x`` and ``y`` (each a
        sequence of floats, px) and optionally ``time_s`` (s; per frame). Not modified.
    settings, **options
        As for :class:`SeriesBuilder`.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        ``(tracks, pairs)`` with the columns of :meth:`SeriesBuilder.update`, frames in
        increasing order, the tracks of a frame in the order of their rows in ``df``.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("frame", "track_id", "x", "y") if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks column(s) {', '.join(missing)}; it needs frame, track_id, x and y")
    builder = SeriesBuilder(settings, **options)
    frames = df["frame"].to_numpy()
    if frames.dtype.kind not in "iu":
        raise TypeError(f"df['frame'] must hold integers, got dtype {frames.dtype}")
    times = df["time_s"].to_numpy(dtype=float) if "time_s" in df.columns else np.full(len(df), np.nan)
    xs, ys, ids = df["x"].to_numpy(), df["y"].to_numpy(), df["track_id"].to_numpy()
    order = np.argsort(frames, kind="stable")
    parts_t = {name: [] for name in TRACK_COLUMNS}
    parts_p = {name: [] for name in PAIR_COLUMNS}
    for rows in np.split(order, np.flatnonzero(np.diff(frames[order])) + 1) if len(order) else []:
        curves = []
        for r in rows:
            x, y = np.asarray(xs[r], float), np.asarray(ys[r], float)
            if x.ndim != 1 or x.shape != y.shape:
                raise ValueError(f"row {df.index[r]!r} of df: x and y must be 1-D sequences of equal length")
            curves.append(np.column_stack([x, y]))
        tracks, pairs = builder._update(int(frames[rows[0]]), float(times[rows[0]]), curves, ids[rows])
        for name in TRACK_COLUMNS:
            parts_t[name].append(np.asarray(tracks[name]))
        for name in PAIR_COLUMNS:
            parts_p[name].append(np.asarray(pairs[name]))
    join = {name: np.concatenate(v) if v else [] for name, v in parts_t.items()}
    join_p = {name: np.concatenate(v) if v else [] for name, v in parts_p.items()}
    return _frame(join, TRACK_COLUMNS), _frame(join_p, PAIR_COLUMNS)
