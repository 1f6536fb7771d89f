"""PNG plots of the time series: pair distances and positions against time.

Each function takes the DataFrames of :mod:`temtrack.tracker.timeseries` and a path, draws
one panel per pile-up, and writes the file atomically (a temporary file in the same
folder, then ``os.replace``), so a reader never sees half a PNG. matplotlib is
imported on first use, with its Agg canvas directly (no pyplot, no global state, safe
in a worker thread).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["plot_pairs", "plot_positions"]

_MAX_PANELS = 12  # more pile-ups than this: the largest ones, so the figure stays legible
_MAX_LINES = 20  # per panel; the longest series


def plot_pairs(pairs, path, *, unit: str = "px", title: str | None = None) -> Path:
    """Plot the distance of every neighbour pair against time, one panel per pile-up.

    Parameters
    ----------
    pairs : pandas.DataFrame
        Rows of :meth:`SeriesBuilder.update` / :func:`series` (``pileup``, ``track_a``,
        ``track_b``, ``frame``, ``time_s``, ``distance_px``/``distance_nm``). Not modified.
    path : str or Path
        Output PNG; its folder must exist.
    unit : {"px", "nm"}
        Which distance column to plot (``"nm"`` needs a calibrated series).
    title : str, optional

    Returns
    -------
    Path
        ``path``.
    """
    column = {"px": "distance_px", "nm": "distance_nm"}.get(unit)
    if column is None:
        raise ValueError(f"unit must be 'px' or 'nm', got {unit!r}")
    _check_columns("pairs", pairs, ("pileup", "track_a", "track_b", "frame", "time_s", column))
    if unit == "nm" and len(pairs) and pairs[column].isna().all():
        raise ValueError("unit='nm' needs distances in nm: the series has no pixel size (distance_nm is all NaN)")
    series = {
        (int(p), int(a), int(b)): group
        for (p, a, b), group in pairs.groupby(["pileup", "track_a", "track_b"], sort=True)
    }
    return _plot(series, column, f"distance ({unit})", "pair {1}-{2}", path, title or "Neighbour distances")


def plot_positions(tracks, path, *, unit: str = "px", title: str | None = None) -> Path:
    """Plot each track's position along its pile-up's glide axis against time.

    The position is that of the line's centroid (``position_px``/``position_nm``),
    one line per track, one panel per pile-up.

    Parameters
    ----------
    tracks : pandas.DataFrame
        Rows of :meth:`SeriesBuilder.update` / :func:`series`. Not modified.
    path : str or Path
        Output PNG; its folder must exist.
    unit : {"px", "nm"}
    title : str, optional

    Returns
    -------
    Path
        ``path``.
    """
    column = {"px": "position_px", "nm": "position_nm"}.get(unit)
    if column is None:
        raise ValueError(f"unit must be 'px' or 'nm', got {unit!r}")
    _check_columns("tracks", tracks, ("pileup", "track_id", "frame", "time_s", column))
    if unit == "nm" and len(tracks) and tracks[column].isna().all():
        raise ValueError("unit='nm' needs positions in nm: the series has no pixel size (position_nm is all NaN)")
    series = {(int(p), int(t)): group for (p, t), group in tracks.groupby(["pileup", "track_id"], sort=True)}
    return _plot(series, column, f"position along glide axis ({unit})", "track {1}", path, title or "Positions")


def _check_columns(name: str, df, columns) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; pass the DataFrame made by temtrack.tracker.timeseries")


def _plot(series: dict, column: str, ylabel: str, label: str, path, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the plot {path} does not exist")
    groups: dict[int, list] = {}
    for key, frame in series.items():
        groups.setdefault(key[0], []).append((key, frame))
    # Time in seconds where every row has one, else frame numbers.
    everything = [f for items in groups.values() for _, f in items]
    timed = bool(everything) and all(f["time_s"].notna().all() for f in everything)
    xcol, xlabel = ("time_s", "time (s)") if timed else ("frame", "frame")
    panels = sorted(groups, key=lambda p: -sum(len(f) for _, f in groups[p]))[:_MAX_PANELS]
    panels.sort()
    rows = max(len(panels), 1)
    figure = Figure(figsize=(8, 2.4 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, squeeze=False, sharex=True)[:, 0]
    for ax, pileup in zip(axes, panels):
        items = sorted(groups[pileup], key=lambda item: -len(item[1]))[:_MAX_LINES]
        for key, frame in sorted(items, key=lambda item: item[0]):
            frame = frame.sort_values("frame")
            ax.plot(frame[xcol].to_numpy(), frame[column].to_numpy(), lw=1.0, label=label.format(*key))
        ax.set_title(f"pile-up {pileup}", fontsize=9, loc="left")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=4, loc="best")
    if not panels:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel(xlabel)
    figure.suptitle(title)
    _save(figure, path)
    return path


def _save(figure, path: Path) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", dpi=110)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
