"""The baseline linker: trackpy on curve centroids (Shen's thesis, section 3.3).

trackpy's own ``trackpy.linking.Linker`` does the linking (Crocker-Grier with subnet
resolution, ``memory`` in steps) and its predictors (``NearestVelocityPredict``,
``DriftPredict``) the prediction; this module only feeds it centroids frame by frame
and gives its tracks tem-track's ids. trackpy is imported when the first linker of
this kind is made.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _curves
from ._settings import Settings, check_choice, check_int, check_real, set_fields
from .linking import Linker

__all__ = ["TrackpyLinker", "TrackpyLinkerSettings"]

_PREDICTORS = ("nearest_velocity", "drift", "none")
_STRATEGIES = ("auto", "recursive", "nonrecursive", "numba", "hybrid", "drop")
# Centroids are means of this many equally spaced points: the centre of the line,
# not of however densely its points happen to be sampled.
_CENTROID_POINTS = 50


@dataclass(frozen=True)
class TrackpyLinkerSettings(Settings):
    """Settings of the ``"trackpy"`` linker; see :func:`trackpy.link_iter`.

    Attributes
    ----------
    search_range : float
        Largest centroid displacement (px) between steps, after prediction.
    memory : int
        Steps a track may go unmatched and still be linked again.
    predictor : {"nearest_velocity", "drift", "none"}
        trackpy's ``NearestVelocityPredict`` (velocity of the nearest track),
        ``DriftPredict`` (mean velocity of all tracks) or no prediction.
    span : int
        Frames back over which the predictor measures velocities.
    adaptive_stop : float or None
        trackpy's adaptive search: when a subnetwork is too large to solve, shrink
        ``search_range`` (by ``adaptive_step``) down to this (px) instead of failing.
    adaptive_step : float
        Factor in (0, 1) of each shrink.
    link_strategy : str
        trackpy's subnet solver: "auto", "recursive", "nonrecursive", "numba",
        "hybrid" or "drop".
    """

    search_range: float = 8.0
    memory: int = 3
    predictor: str = "nearest_velocity"
    span: int = 1
    adaptive_stop: float | None = 0.5
    adaptive_step: float = 0.95
    link_strategy: str = "auto"

    def __post_init__(self):
        set_fields(
            self,
            search_range=check_real("search_range", self.search_range, low=0.0, low_open=True),
            memory=check_int("memory", self.memory, low=0),
            predictor=check_choice("predictor", self.predictor, _PREDICTORS),
            span=check_int("span", self.span, low=1),
            adaptive_stop=check_real("adaptive_stop", self.adaptive_stop, low=0.0, low_open=True, allow_none=True),
            adaptive_step=check_real("adaptive_step", self.adaptive_step, low=0.0, low_open=True, high=0.999),
            link_strategy=check_choice("link_strategy", self.link_strategy, _STRATEGIES),
        )


class TrackpyLinker(Linker):
    """Link curve centroids with trackpy (``method="trackpy"``).

    Parameters
    ----------
    settings : TrackpyLinkerSettings, optional
    **options
        Or the fields of :class:`TrackpyLinkerSettings` as keywords.
    """

    method = "trackpy"
    Settings = TrackpyLinkerSettings

    def _init_state(self) -> None:
        from trackpy import predict
        from trackpy.linking import Linker as _TrackpyCore

        s = self._settings
        self._predictor = None
        if s.predictor != "none":
            kind = predict.NearestVelocityPredict if s.predictor == "nearest_velocity" else predict.DriftPredict
            self._predictor = kind(pos_columns=["x", "y"], span=s.span)
            # Normally set by the predictor's own link wrappers, which we do not use.
            self._predictor.t_column = "frame"
        self._core = _TrackpyCore(
            s.search_range,
            memory=s.memory,
            predictor=None if self._predictor is None else self._predict,
            adaptive_stop=s.adaptive_stop,
            adaptive_step=s.adaptive_step,
            link_strategy=s.link_strategy,
        )
        self._started = False

    def _step(self, frame: int, curves: list[np.ndarray]) -> np.ndarray:
        centroids = _curves.resample_all(curves, _CENTROID_POINTS).mean(axis=1)
        if not self._started:
            if not len(curves):
                return np.empty(0, np.int64)  # trackpy cannot start on an empty frame
            self._core.init_level(centroids, frame)
            self._started = True
        else:
            self._core.next_level(centroids, frame)
        ids = np.empty(len(curves), np.int64)
        # trackpy numbers its tracks with a class-wide counter that every new Linker
        # resets, so its ids are not ours: each trackpy track object is given its own
        # id when first seen, in the order of the frame's curves (deterministic).
        for index, point in enumerate(self._core.hash.points):
            track = point.track
            if getattr(track, "temtrack_id", None) is None:
                track.temtrack_id = int(self._new_ids(1)[0])
            ids[index] = track.temtrack_id
        if self._predictor is not None and len(curves):
            self._observe(frame, centroids, ids)
        return ids

    def _predict(self, t1, particles):
        """trackpy's prediction, with the last position where it has none.

        Velocity predictors answer NaN when two frames share no track (a mean over
        nothing), and trackpy's KD-tree then fails; no motion is the honest guess.
        """
        particles = list(particles)
        guess = np.asarray(list(self._predictor.predict(t1, particles)), dtype=float).reshape(len(particles), -1)
        bad = ~np.isfinite(guess).all(axis=1)
        if bad.any():
            guess[bad] = [particles[k].pos for k in np.flatnonzero(bad)]
        return guess

    def _observe(self, frame: int, centroids: np.ndarray, ids: np.ndarray) -> None:
        import pandas as pd

        table = pd.DataFrame({"x": centroids[:, 0], "y": centroids[:, 1], "frame": frame, "particle": ids})
        with warnings.catch_warnings():
            # "no tracks in common" between two frames (the predictor then predicts no
            # motion, which is all we could ask of it), and trackpy's own pandas
            # deprecations: neither is the caller's to act on.
            warnings.simplefilter("ignore", UserWarning)
            warnings.filterwarnings("ignore", module=r"trackpy\.")
            self._predictor.observe(table)
