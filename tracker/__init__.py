"""Curves per frame -> tracks -> time series (pair distances, kinematics).

Knows nothing of the other tem-track packages: it takes curves as ``(n, 2)`` arrays of
``(x, y)`` pixels (``x`` = column, ``y`` = row) and returns arrays and tables. Importing
it is cheap: numpy, scipy, pandas, trackpy and matplotlib are imported by the functions
that need them, on first use.

Linking (one interface, two methods; ``"curve"`` is the default)::

    linker = make_linker("curve")            # or make_linker("trackpy", search_range=6)
    ids = linker.step(frame, curves)         # (len(curves),) int64, persistent
    link(df) / link_iter(frames)             # the same as DataFrame and iterator layers

Time series::

    builder = SeriesBuilder(pixel_size_nm=2.0)
    tracks, pairs = builder.update(frame, time_s, curves, ids)
    tracks, pairs = series(df)               # the same for a whole DataFrame
    write_plots(tracks, pairs, "plots/")     # small multiples: pair_distances_01.png, ..., positions_01.png, ...
    plot_pairs(pairs, "pairs.png"); plot_positions(tracks, "positions.png")   # one page each

Loops and black dots (points, not curves; :mod:`temtrack.tracker.loops`)::

    linked = link_loops(detections, settings=LoopLinkSettings(search_range=6))   # trackpy
    track_summary(linked, settings=...)      # lifetime, size, D_eff (2-D and 1-D) with intervals
"""

__all__ = [
    "CurveLinker",
    "CurveLinkerSettings",
    "LoopLinkSettings",
    "Linker",
    "PlotSettings",
    "SeriesBuilder",
    "SeriesSettings",
    "TrackingScores",
    "TrackpyLinker",
    "TrackpyLinkerSettings",
    "diffusion",
    "link",
    "link_iter",
    "link_loops",
    "linker_names",
    "make_linker",
    "pair_distances",
    "pileup_sizes",
    "plot_loops",
    "plot_pairs",
    "plot_positions",
    "render_page",
    "series",
    "size_over_time",
    "track_summary",
    "tracking_scores",
    "write_plots",
]

_LAZY = {
    "Linker": "linking",
    "link": "linking",
    "link_iter": "linking",
    "linker_names": "linking",
    "make_linker": "linking",
    "CurveLinker": "curve_linker",
    "CurveLinkerSettings": "curve_linker",
    "TrackpyLinker": "trackpy_linker",
    "TrackpyLinkerSettings": "trackpy_linker",
    "SeriesBuilder": "timeseries",
    "SeriesSettings": "timeseries",
    "pair_distances": "timeseries",
    "series": "timeseries",
    "PlotSettings": "plots",
    "pileup_sizes": "plots",
    "plot_pairs": "plots",
    "plot_positions": "plots",
    "render_page": "plots",
    "write_plots": "plots",
    "LoopLinkSettings": "loops",
    "link_loops": "loops",
    "plot_loops": "loops",
    "diffusion": "loops",
    "track_summary": "loops",
    "size_over_time": "loops",
    "TrackingScores": "metrics",
    "tracking_scores": "metrics",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
