"""Small-multiple PNG plots of the time series: pair distances and positions against time.

One panel per pile-up, so a reader follows one pile-up at a time; panels share the
time axis of the whole run, each has its own vertical scale. Pile-ups are ranked by
size, largest first, and paged ``per_page`` panels to a figure
(``pair_distances_01.png``, ``pair_distances_02.png``, ..., ``positions_01.png``, ...);
only the largest ``max_pileups`` are drawn, and every page says how many were left out.

Size of a pile-up: its **track-frames**, the rows of the tracks table (each track
counted once per frame it was seen), which grows with both the number of dislocations
and how long they were seen; ties go to more tracks, then to the smaller id. The pair
pages use the same ranking (from the tracks table when given), so a pile-up keeps its
rank on both kinds of page; pile-ups with no neighbour pair have no panel there.

Readability rules: a line is broken where its series misses more than 3 frames (3
steps of the run), never bridged by a long straight segment; a series (one track, or
one neighbour pair) never followed for ``min_frames`` frames in a row (shorter gaps
bridged) is drawn thin and light grey behind the others, and the panel
says how many there are; a pile-up with no longer series gets no panel (it is counted
among those left out). There are no legends: with at most ``label_lines`` long series
in a panel each is labelled at its last point (track id, or ``a-b`` for a pair),
otherwise the colours only separate lines; beyond 30 long series they are drawn in one
translucent colour, and a pair panel with more than ``label_lines`` pairs adds their
median distance, frame by frame, in black. The panel title names the pile-up, its
number of tracks and of frames. A panel's vertical range is at least 10 px (or its
equivalent in nm), so the jitter of a line that stands still does not look like motion.

Every PNG carries, in its text chunks, a ``Title``, a plain ``Description`` and a JSON
``Comment`` (kind, page, pages, the pile-ups drawn and those left out), so a script can
tell what a page shows without reading pixels. Files are written atomically (a
temporary file in the same folder, then ``os.replace``), so a reader never sees half a
PNG. matplotlib is imported on first use, with its Agg canvas directly (no pyplot, no
global state, safe in a worker thread). Knows nothing of the other tem-track packages.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ._settings import Settings, check_int, check_real, set_fields

__all__ = ["PlotSettings", "pileup_sizes", "plot_pairs", "plot_positions", "render_page", "write_plots"]

_KINDS = {
    # kind -> (file stem, series key columns, axis label, figure title)
    "pairs": ("pair_distances", ("track_a", "track_b"), "distance", "Distance between neighbouring dislocations"),
    "positions": ("positions", ("track_id",), "position", "Position of each dislocation along its pile-up's glide axis"),
}
_COLUMNS = {("pairs", "px"): "distance_px", ("pairs", "nm"): "distance_nm",
            ("positions", "px"): "position_px", ("positions", "nm"): "position_nm"}
_PANEL_INCHES = (4.0, 2.9)  # one panel, with its title and tick labels
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
_SHORT_COLOUR = "#c8c8c8"
_CROWD_COLOUR = "#3b6ea5"
_CROWDED = 30  # long series in a panel beyond which colours no longer tell lines apart
_MIN_SPAN_PX = 10.0  # smallest vertical range of a panel, px: a still line's jitter should look small
_GAP = 3  # missed steps that break a line: longer gaps are not bridged by a straight segment


@dataclass(frozen=True)
class PlotSettings(Settings):
    """How the small multiples are laid out.

    Attributes
    ----------
    min_frames : int
        Series never followed for this many frames in a row (gaps of up to 3 steps
        bridged) are drawn in light grey (and a pile-up with only
        such series gets no panel).
    max_pileups : int
        Panels in all, over all pages: the largest pile-ups.
    per_page : int
        Panels per page (figure).
    columns : int
        Panels per row (fewer when a page holds fewer panels).
    label_lines : int
        Label the long series at their ends when a panel has at most this many (0: never).
    dpi : int
        Pixels per inch of the PNG; a full 4x4 page is 16 x 12.35 inches, 1600 x 1235 px
        at the default 100.
    """

    min_frames: int = 5
    max_pileups: int = 64
    per_page: int = 16
    columns: int = 4
    label_lines: int = 8
    dpi: int = 100

    def __post_init__(self):
        set_fields(
            self,
            min_frames=check_int("min_frames", self.min_frames, low=1),
            max_pileups=check_int("max_pileups", self.max_pileups, low=1),
            per_page=check_int("per_page", self.per_page, low=1, high=64),
            columns=check_int("columns", self.columns, low=1, high=8),
            label_lines=check_int("label_lines", self.label_lines, low=0),
            dpi=int(check_real("dpi", self.dpi, low=20, high=300)),
        )


def pileup_sizes(tracks):
    """The size of every pile-up in a tracks table, largest first.

    Parameters
    ----------
    tracks : pandas.DataFrame
        Rows of :meth:`SeriesBuilder.update` / :func:`series` (``pileup``, ``track_id``,
        ``frame``). Not modified.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``pileup`` in rank order (track-frames descending, then tracks
        descending, then id), with int64 columns ``track_frames`` (rows), ``tracks``
        (distinct track ids), ``frames`` (distinct frames), ``first_frame``,
        ``last_frame``. Empty (same columns) for an empty table.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"pileup": [0, 1, 1, 1], "track_id": [5, 6, 7, 6], "frame": [0, 0, 0, 1]})
    >>> pileup_sizes(t)[["track_frames", "tracks", "frames"]].to_dict("index")
    {1: {'track_frames': 3, 'tracks': 2, 'frames': 2}, 0: {'track_frames': 1, 'tracks': 1, 'frames': 1}}
    """
    _check_columns("tracks", tracks, ("pileup", "track_id", "frame"))
    return _sizes(tracks, ("track_id",))


def _sizes(table, keys: tuple[str, ...]):
    import numpy as np
    import pandas as pd

    columns = ["track_frames", "tracks", "frames", "first_frame", "last_frame"]
    if not len(table):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in columns}, index=pd.Index([], name="pileup", dtype="int64"))
    groups = table.groupby("pileup", sort=True)
    ids = table[list(keys)].to_numpy(dtype=np.int64).reshape(len(table), -1)
    members = pd.DataFrame({"pileup": np.repeat(table["pileup"].to_numpy(), ids.shape[1]), "id": ids.reshape(-1)})
    sizes = pd.DataFrame({
        "track_frames": groups.size(),
        "tracks": members.groupby("pileup")["id"].nunique(),
        "frames": groups["frame"].nunique(),
        "first_frame": groups["frame"].min(),
        "last_frame": groups["frame"].max(),
    }).astype("int64")
    sizes.index = sizes.index.astype("int64").rename("pileup")
    order = np.lexsort((sizes.index.to_numpy(), -sizes["tracks"].to_numpy(), -sizes["track_frames"].to_numpy()))
    return sizes.iloc[order]


def plot_pairs(pairs, path, *, unit: str = "px", title: str | None = None, page: int = 1, tracks=None,
               settings: PlotSettings | None = None) -> Path:
    """Plot one page of neighbour distances against time, one panel per pile-up.

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
        Replaces the page title's first words.
    page : int
        Which page (1-based) of the small multiples; :func:`write_plots` writes them all.
    tracks : pandas.DataFrame, optional
        The run's tracks table: ranks the pile-ups as the position pages do and gives
        the panel titles their track counts (else both come from ``pairs``).
    settings : PlotSettings, optional

    Returns
    -------
    Path
        ``path``.
    """
    return _write_png(path, render_page("pairs", pairs, tracks=tracks, unit=unit, page=page, title=title, settings=settings))


def plot_positions(tracks, path, *, unit: str = "px", title: str | None = None, page: int = 1,
                   settings: PlotSettings | None = None) -> Path:
    """Plot one page of track positions along the glide axis against time, one panel per pile-up.

    The position is that of the line's centroid (``position_px``/``position_nm``), one
    line per track. Parameters as :func:`plot_pairs`, with ``tracks`` (``pileup``,
    ``track_id``, ``frame``, ``time_s``, ``position_px``/``position_nm``) the table drawn.

    Returns
    -------
    Path
        ``path``.
    """
    return _write_png(path, render_page("positions", tracks, unit=unit, page=page, title=title, settings=settings))


def write_plots(tracks, pairs, folder, *, unit: str = "px", settings: PlotSettings | None = None) -> list[Path]:
    """Write every page of both kinds of small multiples for a run's tables into ``folder``.

    Parameters
    ----------
    tracks, pairs : pandas.DataFrame
        The run's tracks and pairs tables (:func:`series`). Not modified.
    folder : str or Path
        An existing folder. Files: ``pair_distances_01.png``, ... then
        ``positions_01.png``, ...; at least one page of each (an empty run gets one
        page saying there are no dislocations). Existing files of those names are
        replaced; others are left alone.
    unit : {"px", "nm"}
    settings : PlotSettings, optional

    Returns
    -------
    list of Path
        The files written, pair pages first, each kind in page order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"plot folder {folder} does not exist")
    settings = _settings(settings)
    layouts = {"pairs": _layout("pairs", pairs, tracks, unit, settings), "positions": _layout("positions", tracks, tracks, unit, settings)}
    written = []
    for kind, layout in layouts.items():
        for page in range(1, layout.n_pages + 1):
            name = f"{_KINDS[kind][0]}_{page:02d}.png"
            written.append(_write_png(folder / name, _render(layout, page, None, settings)))
    return written


def render_page(kind: str, table, *, tracks=None, unit: str = "px", page: int = 1, title: str | None = None,
                settings: PlotSettings | None = None) -> bytes:
    """One page of small multiples as PNG bytes (for embedding; :func:`plot_pairs` writes it).

    Parameters
    ----------
    kind : {"pairs", "positions"}
        ``table`` is the pairs table (distances) or the tracks table (positions).
    table : pandas.DataFrame
    tracks : pandas.DataFrame, optional
        Ranks the pile-ups and counts their tracks (``kind="pairs"``; ignored for positions).
    unit, page, title, settings
        As :func:`plot_pairs`. A page past the last raises ValueError.

    Returns
    -------
    bytes
        A PNG file.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))}; got {kind!r}")
    settings = _settings(settings)
    layout = _layout(kind, table, table if kind == "positions" else tracks, unit, settings)
    page = check_int("page", page, low=1)
    if page > layout.n_pages:
        raise ValueError(f"page must be <= {layout.n_pages} (the pages of this table), got {page}")
    return _render(layout, page, title, settings)


def _settings(settings) -> PlotSettings:
    if settings is None:
        return PlotSettings()
    if not isinstance(settings, PlotSettings):
        raise TypeError(f"settings must be a PlotSettings, got {type(settings).__name__}")
    return settings


def _check_columns(name: str, df, columns) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; pass the DataFrame made by temtrack.tracker.timeseries")


@dataclass
class _Series:
    label: str
    x: object  # (n,) ndarray
    y: object
    long: bool


@dataclass
class _Panel:
    pileup: int
    title: str
    series: list[_Series]

    @property
    def n_short(self) -> int:
        return sum(not s.long for s in self.series)


@dataclass
class _Layout:
    kind: str
    unit: str
    xlabel: str
    xlim: tuple[float, float] | None
    panels: list[_Panel]  # drawn, in rank order
    n_pileups: int  # pile-ups in the table(s)
    beyond: int  # with long series, left out past max_pileups
    short_only: int  # left out: no series followed for min_frames in a row
    empty: str | None  # why there is nothing to draw
    min_span: float = _MIN_SPAN_PX  # smallest vertical range, in the plotted unit
    per_page: int = 16
    pages: list[list[_Panel]] = field(default_factory=list)

    @property
    def n_pages(self) -> int:
        return max(len(self.pages), 1)


def _layout(kind: str, table, tracks, unit: str, settings: PlotSettings) -> _Layout:
    import numpy as np

    column = _COLUMNS.get((kind, unit))
    if column is None:
        raise ValueError(f"unit must be 'px' or 'nm', got {unit!r}")
    _, keys, quantity, _ = _KINDS[kind]
    name = "pairs" if kind == "pairs" else "tracks"
    _check_columns(name, table, ("pileup", *keys, "frame", "time_s", column))
    if unit == "nm" and len(table) and table[column].isna().all():
        raise ValueError(f"unit='nm' needs {quantity}s in nm: the series has no pixel size ({column} is all NaN)")
    if tracks is not None:
        _check_columns("tracks", tracks, ("pileup", "track_id", "frame", "time_s"))
    sizes = _sizes(tracks, ("track_id",)) if tracks is not None else _sizes(table, keys)

    # Time in seconds where every row has one, else frame numbers; one range for all panels.
    frames = [t for t in (table, tracks) if t is not None and len(t)]
    timed = bool(frames) and all(t["time_s"].notna().all() for t in frames)
    xcol, xlabel = ("time_s", "time (s)") if timed else ("frame", "frame")
    xlim = None
    if frames:
        low = min(float(t[xcol].min()) for t in frames)
        high = max(float(t[xcol].max()) for t in frames)
        pad = 0.02 * (high - low) if high > low else 0.5
        # Room on the right for the labels at the lines' ends.
        xlim = (low - pad, high + (6 * pad if settings.label_lines else pad))

    # The run's frame step (``every``): a series is broken where it misses more than _GAP steps.
    steps = np.diff(np.unique(table["frame"].to_numpy())) if len(table) else np.empty(0)
    step = int(steps.min()) if len(steps) else 1
    series = _split(table, keys, xcol, column, step, settings.min_frames)
    ranked = [int(p) for p in sizes.index if int(p) in series] + sorted(set(series) - {int(p) for p in sizes.index})
    with_long = [p for p in ranked if any(s.long for s in series[p])]
    shown = with_long[: settings.max_pileups]
    panels = []
    for pileup in shown:
        if pileup in sizes.index:
            n_tracks, n_frames = int(sizes.at[pileup, "tracks"]), int(sizes.at[pileup, "frames"])
        else:
            n_tracks, n_frames = len(series[pileup]), 0
        title = f"pile-up {pileup}: {n_tracks} track{'s' * (n_tracks != 1)}, {n_frames} frame{'s' * (n_frames != 1)}"
        # Short series first (drawn behind), then the long ones by mean value, so colours run across the panel.
        ordered = sorted(series[pileup], key=lambda s: (s.long, float(np.nanmean(s.y)) if np.isfinite(s.y).any() else 0.0))
        panels.append(_Panel(pileup, title, ordered))

    n_pileups = len({int(p) for p in sizes.index} | set(series))
    empty = None
    if not panels:
        if not len(tracks if tracks is not None else table) and (tracks is not None or kind == "positions"):
            empty = "no dislocations"
        elif not len(table):
            empty = "no neighbour pairs: no pile-up held two dislocations side by side"
        else:
            empty = f"no {'pair' if kind == 'pairs' else 'track'} was followed for {settings.min_frames} frames in a row"
    min_span = _MIN_SPAN_PX
    if unit == "nm" and len(table):
        px = table[_COLUMNS[(kind, "px")]].to_numpy(dtype=np.float64) if _COLUMNS[(kind, "px")] in table else np.empty(0)
        nm = table[column].to_numpy(dtype=np.float64)
        ok = np.isfinite(px) & np.isfinite(nm) & (np.abs(px) > 1e-9)
        if ok.any():
            min_span = _MIN_SPAN_PX * float(np.median(np.abs(nm[ok] / px[ok])))
    layout = _Layout(kind, unit, xlabel, xlim, panels, n_pileups, len(with_long) - len(shown),
                     len(ranked) - len(with_long), empty, min_span, settings.per_page)
    layout.pages = [panels[i: i + settings.per_page] for i in range(0, len(panels), settings.per_page)]
    return layout


def _split(table, keys: tuple[str, ...], xcol: str, column: str, step: int, min_frames: int) -> dict[int, list[_Series]]:
    """The table's series (one per pile-up and key), grouped by pile-up; one sort, no groupby."""
    import numpy as np

    if not len(table):
        return {}
    pileup = table["pileup"].to_numpy(dtype=np.int64)
    ids = [table[k].to_numpy(dtype=np.int64) for k in keys]
    frame = table["frame"].to_numpy(dtype=np.int64)
    order = np.lexsort((frame, *reversed(ids), pileup))
    pileup, ids, frame = pileup[order], [i[order] for i in ids], frame[order]
    x, y = table[xcol].to_numpy(dtype=np.float64)[order], table[column].to_numpy(dtype=np.float64)[order]
    change = np.zeros(len(order), dtype=bool)
    change[0] = True
    for column_ in (pileup, *ids):
        change[1:] |= column_[1:] != column_[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(order))
    series: dict[int, list[_Series]] = {}
    for start, end in zip(starts.tolist(), ends.tolist()):
        f = frame[start:end]
        steps = np.diff(f)
        xs, ys = x[start:end], y[start:end]
        gaps = np.flatnonzero(steps > _GAP * step) + 1
        if len(gaps):
            xs, ys = np.insert(xs, gaps, np.nan), np.insert(ys, gaps, np.nan)
        # The longest stretch between gaps, in distinct frames.
        bounds = [0, *gaps.tolist(), len(f)]
        longest = max(1 + int(np.count_nonzero(steps[a: b - 1])) for a, b in itertools.pairwise(bounds))
        label = "-".join(str(int(i[start])) for i in ids)
        series.setdefault(int(pileup[start]), []).append(_Series(label, xs, ys, longest >= min_frames))
    return series


def _joined(items: list[_Series]):
    """One polyline of several series, NaN between them: one matplotlib line, drawn fast."""
    import numpy as np

    x = np.concatenate([np.append(s.x, np.nan) for s in items])
    y = np.concatenate([np.append(s.y, np.nan) for s in items])
    return x, y


def _render(layout: _Layout, page: int, title: str | None, settings: PlotSettings) -> bytes:
    import textwrap

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _, _, quantity, default_title = _KINDS[layout.kind]
    panels = layout.pages[page - 1] if layout.pages else []
    columns = max(1, min(settings.columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    width = max(_PANEL_INCHES[0] * columns, 6.0)

    header = f"{title or default_title} ({layout.unit})"
    notes = _notes(layout, settings)
    if panels:
        first = (page - 1) * layout.per_page + 1
        shown = f"pile-up {first}" if len(panels) == 1 else f"pile-ups {first}-{first + len(panels) - 1}"
        notes = f"Page {page} of {layout.n_pages}: {shown} of {len(layout.panels)} drawn, largest first. {notes}"
    # Wrapped to the page's width (DejaVu Sans: about 11 px per bold 12 pt character, 7.7 per 8.5 pt one, at 100 dpi).
    header_lines = textwrap.wrap(header, int(width * 100 / 11.0))
    note_lines = textwrap.wrap(notes, int(width * 100 / 7.7))
    top = 0.12 + 0.22 * len(header_lines) + 0.16 * len(note_lines) + 0.1  # inches above the panels' titles
    figure = Figure(figsize=(width, _PANEL_INCHES[1] * rows + top), dpi=settings.dpi)
    FigureCanvasAgg(figure)
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.7 / width, right=1 - 0.25 / width, bottom=0.5 / height,
                           top=1 - (top + 0.25) / height, wspace=0.25, hspace=0.42)
    figure.text(0.5, 1 - 0.12 / height, "\n".join(header_lines), ha="center", va="top", fontsize=12, weight="bold",
                linespacing=1.2)
    figure.text(0.5, 1 - (0.14 + 0.22 * len(header_lines)) / height, "\n".join(note_lines), ha="center", va="top",
                fontsize=8.5, color="#444444", linespacing=1.3)

    if not panels:
        ax = figure.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, layout.empty or "nothing to draw", ha="center", va="center", fontsize=14, transform=ax.transAxes)
    axes = figure.subplots(rows, columns, squeeze=False) if panels else np.empty((0, 0))
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_axis_off()
            continue
        panel = panels[index]
        _draw_panel(ax, panel, layout, settings)
        column = index % columns
        last_in_column = index + columns >= len(panels)
        if last_in_column:
            ax.set_xlabel(layout.xlabel, fontsize=8)
        else:
            ax.tick_params(labelbottom=False)
        if column == 0:
            ax.set_ylabel(f"{quantity} ({layout.unit})", fontsize=8)

    comment = {
        "kind": layout.kind, "unit": layout.unit, "page": page, "pages": layout.n_pages,
        "pileups": [p.pileup for p in panels], "drawn": len(layout.panels), "pileups_total": layout.n_pileups,
        "left_out_beyond_max": layout.beyond, "left_out_short": layout.short_only, "min_frames": settings.min_frames,
        "empty": layout.empty,
    }
    description = f"{header}. {notes}" if panels else f"{header}: {layout.empty}. {notes}"
    stream = io.BytesIO()
    figure.savefig(stream, format="png", dpi=settings.dpi,
                   metadata={"Title": header, "Description": description, "Comment": json.dumps(comment), "Software": "tem-track"})
    return stream.getvalue()


def _notes(layout: _Layout, settings: PlotSettings) -> str:
    parts = [f"{layout.n_pileups} pile-up{'s' * (layout.n_pileups != 1)} in the run"]
    left = []
    if layout.beyond:
        left.append(f"{layout.beyond} beyond the largest {settings.max_pileups}")
    if layout.short_only:
        left.append(f"{layout.short_only} never followed for {settings.min_frames} frames in a row")
    if left:
        parts.append("not drawn: " + " and ".join(left))
    if layout.panels:
        parts.append(f"grey: series never followed for {settings.min_frames} frames in a row")
        parts.append("time axis shared, vertical scale per panel")
    return "; ".join(parts)


def _draw_panel(ax, panel: _Panel, layout: _Layout, settings: PlotSettings) -> None:
    import numpy as np

    long = [s for s in panel.series if s.long]
    short = [s for s in panel.series if not s.long]
    box = {"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1}
    if short:
        ax.plot(*_joined(short), color=_SHORT_COLOUR, lw=0.7, zorder=1)
    if len(long) > _CROWDED:
        # Colours no longer tell the lines apart: one colour, translucent, drawn as one line.
        ax.plot(*_joined(long), color=_CROWD_COLOUR, lw=0.5, alpha=0.35, zorder=2)
    else:
        label = len(long) <= settings.label_lines
        for i, s in enumerate(long):
            colour = _COLOURS[i % len(_COLOURS)]
            # Dots too, so a lone frame between two gaps still shows.
            ax.plot(s.x, s.y, color=colour, lw=1.1 if label else 0.9, zorder=2, marker=".", ms=2.5)
            finite = np.flatnonzero(np.isfinite(s.y))
            if label and len(finite):
                j = finite[-1]
                ax.annotate(s.label, (s.x[j], s.y[j]), xytext=(2, 0), textcoords="offset points", fontsize=6.5,
                            color=colour, va="center", ha="left", zorder=3, annotation_clip=False)
    if layout.kind == "pairs" and len(long) > settings.label_lines:
        # Too many pairs to follow one by one: their median distance, frame by frame, in black.
        import pandas as pd

        x, y = _joined(long)
        median = pd.Series(y).groupby(x).median()
        ax.plot(median.index.to_numpy(), median.to_numpy(), color="black", lw=1.8, zorder=4)
        ax.text(0.01, 0.97, f"black: median of {len(long)} pairs", ha="left", va="top", fontsize=6.5,
                transform=ax.transAxes, zorder=5, bbox=box)
    elif len(long) > _CROWDED:
        ax.text(0.01, 0.97, f"{len(long)} tracks followed for {settings.min_frames}+ frames", ha="left", va="top",
                fontsize=6.5, transform=ax.transAxes, zorder=5, bbox=box)
    values = np.concatenate([s.y[np.isfinite(s.y)] for s in long]) if long else np.empty(0)
    if len(values):
        low, high = float(values.min()), float(values.max())
        widen = max(layout.min_span - (high - low), 0.0) / 2  # jitter of a still line stays small
        pad = 0.08 * (high - low + 2 * widen)
        ax.set_ylim(low - widen - pad, high + widen + pad)
    if layout.xlim is not None:
        ax.set_xlim(*layout.xlim)
    ax.set_title(panel.title, fontsize=9, loc="left")
    if panel.n_short:
        ax.set_title(f"+{panel.n_short} short", fontsize=7, loc="right", color="#777777")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _write_png(path, content: bytes) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the plot {path} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
