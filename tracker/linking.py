"""Linking dislocations across frames: one interface, a registry of linkers, three layers.

A linker receives, frame after frame, the dislocations found in that frame as curves
(``(n_i, 2)`` arrays of ``(x, y)`` pixels, ``x`` = column, ``y`` = row) and answers a
persistent track id per curve. As in trackpy, the same job has three layers:

- :func:`link`: a DataFrame with one row per curve (``frame``, ``x``, ``y``) in, a copy
  with ``track_id`` out;
- :func:`link_iter`: ``(frame, curves)`` pairs in, ``(frame, track_ids)`` pairs out;
- a stateful linker from :func:`make_linker`, advanced with ``step(frame, curves)``,
  for live use.

All three run the same code, so they give the same ids. Linkers are deterministic:
replaying the same steps into a fresh linker gives the same ids (a run that was
interrupted is resumed by replaying its stored curves).

Frame numbers must increase but may skip (every 5th frame processed, a frame lost):
motion predictions scale with the frame difference, while ``memory`` (how long a
missed dislocation stays linkable) counts *steps*, i.e. processed frames, as in trackpy.

Knows nothing of the other tem-track packages: numpy, scipy, pandas, trackpy only,
imported when first needed.
"""

from __future__ import annotations

import abc
from numbers import Integral
from typing import ClassVar, Iterable, Iterator, Sequence

import numpy as np

from ._settings import Settings as SettingsBase
from .geometry import check_curve

__all__ = ["Linker", "link", "link_iter", "linker_names", "make_linker", "DEFAULT_METHOD"]

DEFAULT_METHOD = "curve"
# name -> "module:Class", so that choosing one linker never imports another's dependencies.
_REGISTRY = {
    "curve": "temtrack.tracker.curve_linker:CurveLinker",
    "trackpy": "temtrack.tracker.trackpy_linker:TrackpyLinker",
}


class Linker(abc.ABC):
    """A stateful linker: call :meth:`step` once per frame, in increasing frame order.

    Parameters
    ----------
    settings : Settings, optional
        The linker's settings object (``CurveLinker.Settings`` ...).
    **options
        Or the settings as keyword options; an unknown option is a TypeError listing
        the valid ones.
    """

    method: ClassVar[str]
    Settings: ClassVar[type[SettingsBase]]

    def __init__(self, settings: SettingsBase | None = None, **options):
        if settings is not None:
            if options:
                raise TypeError(f"pass either settings or keyword options to {type(self).__name__}, not both")
            if not isinstance(settings, self.Settings):
                raise TypeError(
                    f"settings must be a {self.Settings.__qualname__}, got {type(settings).__name__}"
                )
        else:
            settings = self.Settings.from_options(f"linker {self.method!r}", options)
        self._settings = settings
        self._last_frame: int | None = None
        self._steps = 0
        self._next_id = 0
        self._init_state()

    @property
    def settings(self) -> SettingsBase:
        """The (frozen) settings of this linker."""
        return self._settings

    @property
    def steps(self) -> int:
        """Number of frames processed so far."""
        return self._steps

    def describe(self) -> dict:
        """What produced the ids, as a JSON-able dict for output metadata."""
        return {"method": self.method, "settings": self._settings.to_dict(), "memory_unit": "steps"}

    def step(self, frame: int, curves: Sequence[np.ndarray]) -> np.ndarray:
        """Link the curves of the next frame.

        Parameters
        ----------
        frame : int
            Frame number, larger than that of the previous step (gaps allowed).
        curves : sequence of (n_i, 2) array_like of float
            The dislocations of this frame, ``(x, y)`` px; an empty sequence is a frame
            without any. Not modified.

        Returns
        -------
        (len(curves),) ndarray of int64
            Track id of each curve; ids are never reused.
        """
        frame = _check_frame(frame, self._last_frame)
        arrays = _check_curves(curves)
        ids = np.asarray(self._step(frame, arrays), dtype=np.int64)
        self._last_frame = frame
        self._steps += 1
        return ids

    def _new_ids(self, count: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._next_id += count
        return ids

    @abc.abstractmethod
    def _init_state(self) -> None:
        """Set up an empty state (called once by ``__init__``)."""

    @abc.abstractmethod
    def _step(self, frame: int, curves: list[np.ndarray]) -> np.ndarray:
        """Link validated curves ((n_i, 2) float64) of frame ``frame``; return their ids."""


def _check_frame(frame, last: int | None) -> int:
    if isinstance(frame, bool) or not isinstance(frame, Integral):
        raise TypeError(f"frame must be an integer frame number, got {type(frame).__name__} {frame!r}")
    frame = int(frame)
    if last is not None and frame <= last:
        raise ValueError(f"frame must increase from step to step: got frame {frame} after frame {last}")
    return frame


def _check_curves(curves) -> list[np.ndarray]:
    if isinstance(curves, np.ndarray) and curves.ndim != 3:
        raise TypeError(
            f"curves must be a sequence of (n, 2) arrays (or an (N, n, 2) array), got one array of shape {curves.shape}"
        )
    if isinstance(curves, (str, bytes)) or not isinstance(curves, (Sequence, np.ndarray)):
        raise TypeError(f"curves must be a sequence of (n, 2) arrays, got {type(curves).__name__}")
    return [check_curve(c, f"curves[{i}]") for i, c in enumerate(curves)]


def linker_names() -> list[str]:
    """Names of the available linkers (the default is ``"curve"``)."""
    return sorted(_REGISTRY)


def linker_class(method: str) -> type[Linker]:
    """The linker class registered as ``method``; an unknown name lists the valid ones."""
    if not isinstance(method, str) or method not in _REGISTRY:
        raise ValueError(f"unknown linking method {method!r}; valid methods: {', '.join(linker_names())}")
    import importlib

    module, name = _REGISTRY[method].split(":")
    return getattr(importlib.import_module(module), name)


def make_linker(method: str = DEFAULT_METHOD, **settings) -> Linker:
    """A fresh stateful linker.

    Parameters
    ----------
    method : str
        ``"curve"`` (default: curve distances after a pile-up-aware motion prediction,
        solved as an assignment problem) or ``"trackpy"`` (trackpy on curve centroids,
        the approach of Shen's thesis, section 3.3).
    **settings
        Options of that linker (see its ``Settings``); an unknown one is a TypeError.

    Examples
    --------
    >>> import numpy as np
    >>> line = np.column_stack([np.zeros(20), np.arange(20.0)])
    >>> linker = make_linker("curve")
    >>> linker.step(0, [line, line + [30, 0]]).tolist()
    [0, 1]
    >>> linker.step(1, [line + [31, 0], line + [1, 0]]).tolist()
    [1, 0]
    """
    return linker_class(method)(**settings)


def link_iter(frames: Iterable, *, method: str = DEFAULT_METHOD, **settings) -> Iterator[tuple[int, np.ndarray]]:
    """Link an iterable of ``(frame, curves)`` pairs, lazily.

    Parameters
    ----------
    frames : iterable of (int, sequence of (n_i, 2) array_like)
        Frame numbers in increasing order with the curves of each frame.
    method, **settings
        As for :func:`make_linker`.

    Yields
    ------
    (int, (len(curves),) ndarray of int64)
        The frame number and the track id of each of its curves.
    """
    linker = make_linker(method, **settings)
    for item in frames:
        try:
            frame, curves = item
        except (TypeError, ValueError):
            raise TypeError(f"frames must yield (frame, curves) pairs, got {type(item).__name__}") from None
        yield frame, linker.step(frame, curves)


def link(df, *, method: str = DEFAULT_METHOD, **settings):
    """Link a DataFrame of curves into tracks.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per dislocation per frame, with columns ``frame`` (int) and ``x``, ``y``
        (each a sequence of floats: the curve's points, px). Not modified.
    method, **settings
        As for :func:`make_linker`.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` (same index and row order) with an int64 column ``track_id``.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("frame", "x", "y") if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks column(s) {', '.join(missing)}; it needs frame, x and y (one curve per row)")
    frames = df["frame"].to_numpy()
    if frames.dtype.kind not in "iu":
        raise TypeError(f"df['frame'] must hold integers, got dtype {frames.dtype}")
    linker = make_linker(method, **settings)
    ids = np.empty(len(df), dtype=np.int64)
    xs, ys = df["x"].to_numpy(), df["y"].to_numpy()
    # A stable sort keeps the rows of one frame in their given order: that order is
    # what the other layers see too, so all three give the same ids.
    order = np.argsort(frames, kind="stable")
    bounds = np.flatnonzero(np.diff(frames[order])) + 1
    for rows in np.split(order, bounds) if len(order) else []:
        curves = [_row_curve(xs[r], ys[r], r, df.index[r]) for r in rows]
        ids[rows] = linker.step(int(frames[rows[0]]), curves)
    out = df.copy()
    out["track_id"] = ids
    return out


def _row_curve(x, y, position: int, label) -> np.ndarray:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"row {label!r} of df: x and y must be 1-D sequences of equal length, got shapes {x.shape} and {y.shape}"
        )
    return check_curve(np.column_stack([x, y]), f"the curve in row {label!r} of df")
