"""A one-page HTML summary of a run, for a scientist to read at a glance.

:func:`write_summary` takes a run's three tables and its metadata and writes one
self-contained HTML file (images embedded as base64 PNG/JPEG, inline CSS, no
JavaScript, no other files): the input, the model and backend, the counts
(dislocations per frame, tracks and their lengths, pile-ups, neighbour pairs), the
dislocations per frame against time, a histogram of track lengths, the first page of
the neighbour-distance and position small multiples
(:func:`temtrack.tracker.plots.render_page`), the largest pile-ups as a table, and a
few frames with their tracked splines drawn over them (when the source can be read).

Counting rules, stated once:

- frames processed: ``settings.start + k * settings.every`` for
  ``k < frames_processed`` from the metadata (frames with no dislocation have no row in
  the tables, so the tables alone cannot count them); when the metadata lacks them, the
  frames that have rows;
- a track: a ``track_id >= 0`` of the splines table; its length: the number of frames
  it was seen in;
- a pile-up: a ``pileup`` of the tracks table; neighbour pairs: distinct
  ``(pileup, track_a, track_b)`` of the pairs table.

An empty run (no dislocation) gets a summary that says so plainly. Needs numpy,
pandas, OpenCV and matplotlib (imported on first use, Agg canvas, no pyplot). No torch.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
from numbers import Integral
from pathlib import Path

import numpy as np

from .atomic import write_atomic

# Marks a page as tem-track's own: only such a page is replaced by --overwrite.
GENERATOR_TAG = "<meta name='generator' content='tem-track'>"

__all__ = ["write_summary"]

_STILL_WIDTH = 800  # px, largest width of an embedded frame
_MAX_STILLS = 16
_TOP_PILEUPS = 10  # rows of the pile-up table
_CROWDED_STILL = 40  # dislocations in a still beyond which lines are thin and unlabelled

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:1.6em}
.sub{color:#666;margin-top:2px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{color:#555;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}
figure{margin:8px 0}figcaption{color:#555;font-size:.9em}img{max-width:100%;height:auto;border:1px solid #eee}
.alert{background:#fff4d6;border:1px solid #e8c66a;padding:8px 12px;font-size:1.1em}
.note{color:#666;font-size:.9em}.stills figure{flex:1 1 480px;max-width:100%}.stills img{width:100%}
"""


def write_summary(path, *, splines, tracks, pairs, metadata, source=None, stills: int = 4) -> Path:
    """Write the HTML summary of a run.

    Parameters
    ----------
    path : str or Path
        The HTML file to write (atomically); its folder must exist.
    splines, tracks, pairs : pandas.DataFrame
        The run's tables, as written to ``OUT``, ``OUT_tracks.parquet`` and
        ``OUT_pairs.parquet`` (columns: README). Not modified.
    metadata : dict
        The run metadata, as :func:`temtrack.sdk.results.read_metadata` returns it.
        Missing entries are shown as "unknown".
    source : str, Path or FrameSource, optional
        The input, to draw ``stills`` frames with their splines: a path (or glob)
        :func:`temtrack.sdk.sources.open_source` opens (with the run's input range),
        or an open source (left open). None: no stills (e.g. frames given as arrays).
        A source that cannot be read leaves a note in the summary instead of stills.
    stills : int
        Frames to draw, evenly spaced over the frames processed (0-16).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError, ValueError
        A table that is not a DataFrame or lacks a column, metadata not a dict, a bad
        ``stills``.
    FileNotFoundError
        ``path``'s folder does not exist.
    """
    _check_table("splines", splines, ("frame", "time_s", "track_id", "x", "y"))
    _check_table("tracks", tracks, ("frame", "time_s", "track_id", "pileup", "position_px"))
    _check_table("pairs", pairs, ("frame", "time_s", "pileup", "track_a", "track_b", "distance_px"))
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict (read_metadata's), got {type(metadata).__name__}")
    if isinstance(stills, bool) or not isinstance(stills, Integral) or not 0 <= stills <= _MAX_STILLS:
        raise ValueError(f"stills must be an int from 0 to {_MAX_STILLS}, got {stills!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the summary {path} does not exist")
    facts = _facts(splines, tracks, pairs, metadata)
    page = _html(facts, splines, tracks, pairs, metadata, source, int(stills))
    return write_atomic(path, page)


def _check_table(name: str, table, columns) -> None:
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; pass the run's {name} table")


def _get(mapping, *keys, default=None):
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return default if mapping is None else mapping


def _facts(splines, tracks, pairs, metadata) -> dict:
    """The numbers of the summary, computed once from the tables and the metadata."""
    import pandas as pd

    settings = _get(metadata, "settings", default={})
    start, every = _get(settings, "start", default=0), _get(settings, "every", default=1)
    processed = _get(metadata, "frames_processed")
    seen = np.unique(splines["frame"].to_numpy(dtype=np.int64))
    if isinstance(processed, int) and isinstance(start, int) and isinstance(every, int) and every >= 1:
        frames = np.union1d(start + every * np.arange(processed, dtype=np.int64), seen)
        frames_from = "metadata"
    else:
        frames, frames_from = seen, "tables"
    counts = splines.groupby("frame").size().reindex(frames, fill_value=0).to_numpy(dtype=np.int64)

    fps = _get(metadata, "fps")
    times = pd.Series(np.nan, index=frames, dtype=np.float64)
    if len(splines):
        known = splines.groupby("frame")["time_s"].first()
        times.loc[known.index] = known.to_numpy()
    if fps:
        missing = times.isna().to_numpy()
        times.iloc[missing] = frames[missing] / float(fps)

    tracked = splines[splines["track_id"] >= 0]
    lengths = tracked.groupby("track_id")["frame"].nunique().to_numpy(dtype=np.int64)
    pair_keys = pairs[["pileup", "track_a", "track_b"]].drop_duplicates()
    return {
        "frames": frames,
        "frames_from": frames_from,
        "counts": counts,
        "times": times.to_numpy(),
        "timed": bool(len(frames)) and not times.isna().any(),
        "dislocations": len(splines),
        "untracked": int((splines["track_id"] < 0).sum()),
        "tracks": len(lengths),
        "track_lengths": lengths,
        "pileups": int(tracks["pileup"].nunique()),
        "pairs": len(pair_keys),
        "pair_frames": len(pairs),
    }


def _html(facts, splines, tracks, pairs, metadata, source, stills: int) -> str:
    from temtrack.tracker.plots import PlotSettings, pileup_sizes, render_page

    e = html.escape
    input_ = _get(metadata, "input", default={})
    name = str(_get(input_, "name", default="unknown input"))
    n_frames = len(facts["frames"])
    counts = facts["counts"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{GENERATOR_TAG}<title>tem-track summary: {e(Path(name).name)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>tem-track summary: {e(Path(name).name)}</h1>",
             (f"<p class='sub'>{e(name)}; written {e(_created(metadata))} by tem-track "
              f"{e(str(_get(metadata, 'tem_track_version', default='?')))}</p>")]

    if facts["dislocations"] == 0:
        parts.append(f"<p class='alert'><b>No dislocations were found</b> in the {n_frames} frame"
                     f"{'s' * (n_frames != 1)} processed: the tables are empty. The stills below (if any) show what "
                     "the model saw; check the model, the threshold and the input range.</p>")
    else:
        parts.append(
            f"<p><b>{facts['dislocations']:,}</b> dislocations in <b>{n_frames:,}</b> frames "
            f"(<b>{np.mean(counts):.1f}</b> per frame on average), linked into <b>{facts['tracks']:,}</b> tracks in "
            f"<b>{facts['pileups']:,}</b> pile-ups, with <b>{facts['pairs']:,}</b> neighbour pairs.</p>")

    parts.append("<h2>Input</h2>" + _table(_input_rows(metadata, facts)))
    parts.append("<h2>Model</h2>" + _table(_model_rows(metadata)))
    parts.append("<h2>Counts</h2>" + _table(_count_rows(facts)))

    parts.append("<h2>Over time</h2><div class='grid'>")
    parts.append(_figure(_png_counts(facts), "Dislocations found in each frame processed."))
    if facts["tracks"]:
        parts.append(_figure(_png_lengths(facts["track_lengths"]),
                             "Track lengths: in how many frames each track was seen (log count)."))
    parts.append("</div>")

    if len(tracks):
        sizes = pileup_sizes(tracks).head(_TOP_PILEUPS)
        compact = PlotSettings(per_page=8, max_pileups=8, dpi=75)
        parts.append("<h2>Pile-ups</h2>")
        parts.append(_pileup_table(sizes, pairs, len(tracks["pileup"].unique())))
        parts.append(_figure(render_page("positions", tracks, settings=compact),
                             "Positions along each pile-up's glide axis, the 8 largest pile-ups (all pages: --plots)."))
        if len(pairs):
            parts.append(_figure(render_page("pairs", pairs, tracks=tracks, settings=compact),
                                 "Distances between neighbouring dislocations, the 8 largest pile-ups with pairs."))
        else:
            parts.append("<p>No neighbour pairs: no pile-up held two dislocations side by side.</p>")

    if stills and source is not None:
        parts.append("<h2>Frames</h2><p class='note'>Each frame as read (left) and with the splines found in it, "
                     "in the colour of their track (right).</p>")
        parts.append(_stills(splines, facts, metadata, source, stills))
    elif stills:
        parts.append("<h2>Frames</h2><p class='note'>No stills: the source was not given (frames from memory).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _created(metadata) -> str:
    created = _get(metadata, "created_unix_s")
    if not isinstance(created, (int, float)):
        return "at an unknown time"
    return datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _number(value, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "unknown"
    return f"{value:.{digits}g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _input_rows(metadata, facts) -> list[tuple[str, str]]:
    input_ = _get(metadata, "input", default={})
    facts_of = _get(input_, "metadata", default={})
    shape = _get(input_, "shape")
    settings = _get(metadata, "settings", default={})
    rows = [("file", str(_get(input_, "name", default="unknown"))), ("kind", str(_get(input_, "kind", default="unknown")))]
    if isinstance(shape, (list, tuple)) and len(shape) == 2:
        rows.append(("frame size", f"{shape[1]} x {shape[0]} px (width x height)"))
    rows.append(("frames in the input", _number(_get(input_, "n_frames"))))
    frames = facts["frames"]
    if len(frames):
        every = _get(settings, "every", default=1)
        rows.append(("frames processed", f"{len(frames)}: {frames[0]} to {frames[-1]}" + (f", every {every}" if every != 1 else "")))
    else:
        rows.append(("frames processed", "0"))
    fps = _get(metadata, "fps")
    source = _get(facts_of, "fps_source")
    rows.append(("frame rate", _number(fps, " frames/s") + (f" ({source})" if fps and source else "")))
    if facts["timed"] and len(frames):
        rows.append(("time span", f"{facts['times'][0]:.3g} s to {facts['times'][-1]:.3g} s"))
    size = _get(metadata, "pixel_size_nm")
    source = _get(facts_of, "pixel_size_source")
    if size:
        rows.append(("pixel size", _number(size, " nm/px") + (f" ({source})" if source else "")))
    else:
        rows.append(("pixel size", "unknown (lengths in px only)"))
    span = _get(facts_of, "input_range")
    if isinstance(span, dict) and "low" in span:
        rows.append(("input range", (f"{_number(span.get('low'))} to {_number(span.get('high'))} mapped to "
                                     f"black-white ({span.get('source', '?')})")))
    for key in ("codec", "bit_depth", "dtype"):
        if _get(facts_of, key) is not None:
            rows.append((key.replace("_", " "), str(facts_of[key])))
    return rows


def _model_rows(metadata) -> list[tuple[str, str]]:
    backend = _get(metadata, "backend", default={})
    about = _get(backend, "metadata", default={})
    model = _get(metadata, "model")
    rows = [("backend", str(_get(backend, "backend", default="unknown")))]
    if model:
        rows.append(("model", f"{_get(about, 'name', default=Path(str(model)).stem)} "
                              f"{_get(about, 'version', default='')}".strip()))
        rows.append(("model file", str(model)))
        sha = _get(metadata, "model_sha256")
        if sha:
            rows.append(("model sha256", f"{sha[:16]}..."))
        if _get(about, "description"):
            rows.append(("about", str(about["description"])))
    elif _get(backend, "backend") == "classical":
        rows.append(("model", "none: classical image processing (adaptive threshold and skeleton)"))
    providers = _get(backend, "providers") or _get(metadata, "settings", "backend", "providers")
    if providers:
        rows.append(("execution providers", ", ".join(map(str, providers)) if isinstance(providers, list) else str(providers)))
    post = _get(metadata, "settings", "postprocess", default={})
    if _get(post, "threshold") is not None:
        rows.append(("threshold", _number(post["threshold"])))
    elif _get(post, "high") is not None and _get(post, "low") is not None:
        rows.append(("thresholds", f"centreline {_number(post['high'])} (seed), {_number(post['low'])} (extend)"))
    choice = _get(metadata, "scale_choice")
    scale = _get(metadata, "settings", "pipeline", "scale")
    if isinstance(choice, dict):  # --scale auto (linescale.ScaleChoice)
        rows.append(("scale", f"{_number(choice.get('scale'))} model px per frame px: {choice.get('reason', '')}"))
    elif scale is not None:
        rows.append(("scale", f"{_number(scale)} model px per frame px"))
    if _get(metadata, "settings", "pipeline", "lines") == "bright":
        rows.append(("lines", "bright (dark field): the model saw the inverted frames"))
    flatten = _get(metadata, "settings", "pipeline", "flatten")
    if isinstance(flatten, (int, float)):
        rows.append(("illumination", f"evened out before the model (divided by its blur of {_number(flatten)} model px)"))
    selection = _get(metadata, "settings", "selection")
    if isinstance(selection, str):
        rows.append(("backend choice", selection))
    tracker = _get(metadata, "settings", "tracker", "method")
    if tracker:
        rows.append(("linker", str(tracker)))
    return rows


def _count_rows(facts) -> list[tuple[str, str]]:
    counts, lengths = facts["counts"], facts["track_lengths"]
    rows = [("frames processed", f"{len(counts):,}"),
            *([("", "counted from the tables (the metadata lacks them): frames with no dislocation are missing")]
              if facts["frames_from"] == "tables" and len(counts) else []),
            ("frames with a dislocation", f"{int((counts > 0).sum()):,}"),
            ("dislocations (all frames)", f"{facts['dislocations']:,}")]
    if len(counts):
        rows.append(("dislocations per frame", (f"mean {np.mean(counts):.1f}, median {np.median(counts):g}, "
                                                f"min {counts.min()}, max {counts.max()}")))
    if facts["untracked"]:
        rows.append(("untracked dislocations", f"{facts['untracked']:,}"))
    rows.append(("tracks", f"{facts['tracks']:,}"))
    if len(lengths):
        rows.append(("track length (frames seen)", (f"median {np.median(lengths):g}, max {lengths.max()}; "
                                                    f"{int((lengths >= 5).sum()):,} tracks seen in 5 frames or more, "
                                                    f"{int((lengths == 1).sum()):,} in one frame only")))
    rows.append(("pile-ups", f"{facts['pileups']:,}"))
    rows.append(("neighbour pairs", f"{facts['pairs']:,} ({facts['pair_frames']:,} pair-frames)"))
    return rows


def _table(rows) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _pileup_table(sizes, pairs, n_pileups: int) -> str:
    unit = "nm" if "distance_nm" in pairs.columns and pairs["distance_nm"].notna().any() else "px"
    median = pairs.groupby("pileup")[f"distance_{unit}"].median() if len(pairs) else None
    head = ("<tr><th>pile-up</th><th>tracks</th><th>track-frames</th><th>frames seen</th>"
            f"<th>first-last frame</th><th>median neighbour distance ({unit})</th></tr>")
    rows = []
    for pileup, row in sizes.iterrows():
        distance = median.get(pileup) if median is not None else None
        rows.append(f"<tr><td class='n'>{pileup}</td><td class='n'>{row['tracks']}</td><td class='n'>{row['track_frames']}</td>"
                    f"<td class='n'>{row['frames']}</td><td class='n'>{row['first_frame']}-{row['last_frame']}</td>"
                    f"<td class='n'>{'-' if distance is None or not math.isfinite(distance) else f'{distance:.1f}'}</td></tr>")
    note = (f"<p class='note'>The {len(sizes)} largest of {n_pileups} pile-ups by track-frames (each track counted once "
            "per frame it was seen).</p>")
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _figure(png: bytes, caption: str, *, mime: str = "image/png", kind: str = "plot") -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure class='{kind}'><img src='data:{mime};base64,{data}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    stream = io.BytesIO()
    figure.savefig(stream, format="png", dpi=100)
    return stream.getvalue()


def _png_counts(facts) -> bytes:
    figure = _canvas(6.6, 2.6)
    ax = figure.add_subplot()
    x = facts["times"] if facts["timed"] else facts["frames"]
    ax.plot(x, facts["counts"], color="#1f4e79", lw=1.2, marker="." if len(x) < 60 else None)
    ax.set_xlabel("time (s)" if facts["timed"] else "frame")
    ax.set_ylabel("dislocations")
    ax.set_ylim(bottom=0, top=max(1, int(facts["counts"].max()) if len(x) else 1) * 1.08)
    if not len(x):
        ax.text(0.5, 0.5, "no frames processed", ha="center", va="center", transform=ax.transAxes)
    elif not facts["dislocations"]:
        ax.text(0.5, 0.5, "no dislocations", ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_title("Dislocations per frame", loc="left", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(figure)


def _png_lengths(lengths) -> bytes:
    figure = _canvas(4.2, 2.6)
    ax = figure.add_subplot()
    top = int(lengths.max())
    edges = np.arange(0.5, top + 1.5) if top <= 40 else np.linspace(0.5, top + 0.5, 41)
    ax.hist(lengths, bins=edges, color="#4a7fb0")
    ax.set_yscale("log")
    ax.set_xlabel("frames seen")
    ax.set_ylabel("tracks")
    ax.set_title(f"Track lengths ({len(lengths):,} tracks)", loc="left", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _png(figure)


def _gray8(image) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _jpeg(bgr) -> bytes:
    import cv2

    options = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # full-resolution colour keeps 1 px lines their colour
        options += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, data = cv2.imencode(".jpg", bgr, options)
    if not ok:
        raise ValueError("OpenCV could not encode a still as JPEG")
    return data.tobytes()


def _still_frames(facts, stills: int) -> list[int]:
    frames = facts["frames"]
    if not len(frames):
        return []
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, min(stills, len(frames)))).astype(int))
    return [int(frames[i]) for i in picks]


def _open(source, metadata):
    """``(source, owned)``: the source to read stills from, and whether to close it."""
    if hasattr(source, "frames") and hasattr(source, "close"):
        return source, False
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or an open FrameSource, got {type(source).__name__}")
    from .sources import open_source

    span = _get(metadata, "input", "metadata", "input_range")
    # The run's own mapping of raw values to gray, when it was not the default one.
    input_range = None
    if isinstance(span, dict) and span.get("source") in ("argument", "data"):
        input_range = (float(span["low"]), float(span["high"]))
    return open_source(source, input_range=input_range), True


def _stills(splines, facts, metadata, source, stills: int) -> str:
    import cv2

    from .overlay import draw_tracks

    picks = _still_frames(facts, stills)
    if not picks:
        return "<p class='note'>No stills: no frames were processed.</p>"
    times = dict(zip(facts["frames"].tolist(), facts["times"].tolist()))
    rows = {frame: group for frame, group in splines.groupby("frame") if frame in set(picks)}
    parts = ["<div class='grid stills'>"]
    try:
        reader, owned = _open(source, metadata)
    except (OSError, ValueError) as error:
        return f"<p class='note'>No stills: the source could not be opened ({html.escape(str(error))}).</p>"
    try:
        for frame in picks:
            try:
                frames = reader.frames(start=frame, end=frame + 1)
                try:
                    image = next(frames, None)
                finally:
                    frames.close()  # a video decoder is released now, not at garbage collection
            except (OSError, ValueError) as error:
                parts.append(f"<p class='note'>Frame {frame} could not be read ({html.escape(str(error))}).</p>")
                continue
            if image is None:
                parts.append(f"<p class='note'>Frame {frame} is not in the source.</p>")
                continue
            gray = image.image
            scale = min(1.0, _STILL_WIDTH / gray.shape[1])
            if scale < 1.0:
                gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            group = rows.get(frame)
            curves, ids = [], []
            if group is not None:
                for x, y, track in zip(group["x"], group["y"], group["track_id"]):
                    points = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
                    if len(points) and np.isfinite(points).all():
                        # Pixel centres at integer coordinates, before and after scaling.
                        curves.append((points + 0.5) * scale - 0.5)
                        ids.append(int(track))
            # Thin lines and no ids when crowded, so the frame under them stays visible.
            crowded = len(curves) > _CROWDED_STILL
            drawn = draw_tracks(gray, curves, ids, labels=not crowded, thickness=1 if crowded else 2)
            when = times.get(frame, float("nan"))
            name = f"frame {frame}" + (f", t = {when:.2f} s" if math.isfinite(when) else "")
            parts.append(_figure(_jpeg(cv2.cvtColor(_gray8(gray), cv2.COLOR_GRAY2BGR)), f"{name}, as read", mime="image/jpeg",
                                 kind="raw"))
            parts.append(_figure(_jpeg(drawn), f"{name}: {len(curves)} dislocation{'s' * (len(curves) != 1)}, "
                                               "coloured by track", mime="image/jpeg", kind="still"))
    finally:
        if owned:
            reader.close()
    parts.append("</div>")
    return "\n".join(parts)
