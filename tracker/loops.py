"""Loops and black dots over time: linking (trackpy), MSD, D_eff, lifetimes, sizes.

Takes a table of point detections (``frame``, ``x``, ``y``, optional ``major``) and
returns tables; knows nothing of the other tem-track packages.

- :func:`link_loops`: ``trackpy.link`` (Crocker-Grier), Shen's choice, with
  ``search_range`` and ``memory`` from :class:`LoopLinkSettings`; adds ``track_id``.
- :func:`diffusion`: per track, ``D`` in 2-D and in 1-D projected on the track's main
  direction of motion (the principal axis of its steps), by one of two estimators:

  - ``"cve"`` (default, :func:`cve`): the covariance-based estimator of Vestergaard,
    Blainey and Flyvbjerg (Phys. Rev. E 89, 022726, 2014) on the steps between
    consecutive frames, ``D = <dx_k²> / 2 + <dx_k dx_(k+1)>`` per axis (frames as the
    time unit): the covariance of neighbouring steps, ``-sigma²``, cancels the
    localisation noise ``2 sigma²`` in the mean squared step, so it is unbiased with
    noise track by track; the price is a spread about ``sqrt(3)`` times the ideal when
    the noise is small. Its 95 % interval is
    ``D ± 1.96 SD`` with their variance formula (eq. 20 with the reduced noise
    ``epsilon`` estimated from the track);
  - ``"msd"``: the mean squared displacement over lags ``1..max_lag`` and a straight
    line with intercept, ``MSD(t) = 2 d D t + c`` (``c`` absorbs the localisation
    error); the 95 % interval from resampling the track's steps (``bootstrap`` times);
  - ``"pooled"`` (:func:`pooled_noise`, in :func:`track_summary`): the mean squared step
    less a localisation noise ``2 sigma²`` estimated once from the step covariance of
    all tracks together, ``D = <dx_k²> / 2 - sigma²``. The covariance term is what makes
    the CVE's spread about ``sqrt(3)`` times the ideal when the noise is small; pooled over
    tracks it costs almost nothing. Unbiased only when every track has about the same
    localisation noise (one detector, similar objects); otherwise a track's D is off by
    its own noise less the pooled one.

  For a track of ``N`` steps no estimator does better than a relative spread of about
  ``sqrt(1 / (d N))`` (``d`` dimensions; 14 % for ``N = 50`` in 2-D, 20 % in 1-D).
- :func:`track_summary`: one row per track: lifetime, size, D.
- :func:`size_over_time`: per frame, count and median / quartiles of the size.

Units: px and frames (``D`` in px² per frame); convert with the pixel size and the frame
rate. numpy, pandas, trackpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np

from ._settings import Settings, check_choice, check_int, check_real, set_fields

ESTIMATORS = ("cve", "msd", "pooled")

__all__ = ["ESTIMATORS", "LoopLinkSettings", "cve", "diffusion", "link_loops", "plot_loops", "pooled_noise", "size_over_time",
           "track_summary"]


@dataclass(frozen=True)
class LoopLinkSettings(Settings):
    """Linking and dynamics settings of loops.

    Attributes
    ----------
    search_range : float
        Largest displacement (px) between linked detections.
    memory : int
        Frames a loop may be missed and still keep its id.
    max_lag : int
        Largest lag (frames) of the MSD fit (at most a quarter of the track).
    min_length : int
        Tracks with fewer detections get no D (NaN).
    bootstrap : int
        Resamplings for the confidence interval of D (0: none).
    seed : int
        Seed of the bootstrap.
    estimator : {"cve", "msd", "pooled"}
        How D is estimated (:func:`diffusion`): the covariance-based estimator of
        Vestergaard et al. (2014), unbiased under localisation noise track by track
        (default); the MSD fit with an offset; or the mean squared step less a
        localisation noise pooled over all tracks (tighter, unbiased when the noise is
        alike for all tracks; module docstring).
    """

    # 8 px and 10 frames: the plateau of IDF1 on the synthetic videos (bench_loops.py;
    # 6 px and 3 frames gave 0.89-0.92 against 0.93-0.94 over all ground truth).
    search_range: float = 8.0
    memory: int = 10
    max_lag: int = 10
    min_length: int = 10
    bootstrap: int = 200
    seed: int = 0
    estimator: str = "cve"

    def __post_init__(self):
        set_fields(
            self,
            search_range=check_real("search_range", self.search_range, low=0.0, low_open=True),
            memory=check_int("memory", self.memory, low=0),
            max_lag=check_int("max_lag", self.max_lag, low=1),
            min_length=check_int("min_length", self.min_length, low=3),
            bootstrap=check_int("bootstrap", self.bootstrap, low=0),
            seed=check_int("seed", self.seed),
            estimator=check_choice("estimator", self.estimator, ESTIMATORS),
        )


def link_loops(detections, *, settings: LoopLinkSettings | None = None):
    """Give each detection a persistent ``track_id`` with ``trackpy.link``.

    Parameters
    ----------
    detections : pandas.DataFrame
        Columns ``frame`` (int), ``x``, ``y`` (px) at least; not modified.
    settings : LoopLinkSettings, optional

    Returns
    -------
    pandas.DataFrame
        A copy with ``track_id`` (int64, 0, 1, ... in order of first appearance), sorted
        by frame.
    """
    import pandas as pd
    import trackpy

    s = settings or LoopLinkSettings()
    missing = {"frame", "x", "y"} - set(detections.columns)
    if missing:
        raise ValueError(f"detections need columns frame, x, y; missing {sorted(missing)}")
    table = detections.reset_index(drop=True).copy()
    if table.empty:
        table["track_id"] = pd.Series(dtype="int64")
        return table
    trackpy.quiet()
    linked = trackpy.link(table, s.search_range, memory=s.memory, pos_columns=["x", "y"], t_column="frame")
    linked = linked.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)
    order = pd.unique(linked["particle"])
    linked["track_id"] = linked["particle"].map({p: i for i, p in enumerate(order)}).astype("int64")
    return linked.drop(columns="particle")


def _msd(frames: np.ndarray, points: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Lags with data and the MSD at each; ``points`` (n, d) on ``frames`` (n,), gaps allowed."""
    span = int(frames[-1] - frames[0]) + 1
    full = np.full((span, points.shape[1]), np.nan)
    full[frames - frames[0]] = points
    lags, values = [], []
    for lag in range(1, min(max_lag, span - 1) + 1):
        d = full[lag:] - full[:-lag]
        sq = np.nansum(d * d, axis=1)[~np.isnan(d).any(axis=1)]
        if len(sq):
            lags.append(lag)
            values.append(sq.mean())
    return np.asarray(lags, float), np.asarray(values, float)


def _fit(lags: np.ndarray, msd: np.ndarray, dims: int) -> float:
    if len(lags) < 2:
        return float(msd[0] / (2 * dims * lags[0])) if len(lags) else float("nan")
    slope = np.polyfit(lags, msd, 1)[0]
    return float(slope / (2 * dims))


def _unit_steps(frames, values):
    """``(unit, steps, n, mean_square)`` of positions along one axis (``(n,)``) or several
    (``(n, d)``): which steps join consecutive frames, all steps, their number, and the
    mean squared unit step per axis (NaN with none)."""
    unit = np.diff(np.asarray(frames, dtype=np.int64)) == 1
    steps = np.diff(np.asarray(values, dtype=float), axis=0)
    n = int(unit.sum())
    return unit, steps, n, float(np.mean(steps[unit] ** 2)) if n else float("nan")


def cve(frames, values) -> tuple[float, float, int]:
    """Covariance-based estimate of D along one axis (Vestergaard et al. 2014).

    Parameters
    ----------
    frames : (n,) array_like of int
        Increasing frame numbers; gaps allowed (only steps between consecutive frames
        count, and only pairs of such steps that follow each other for the covariance).
    values : (n,) array_like of float
        Positions along the axis, px.

    Returns
    -------
    D : float
        px² per frame (NaN with fewer than 2 unit steps). Can come out negative for a
        short, nearly still track: an unbiased estimate scatters around a small D.
    sd : float
        Its standard deviation from eq. 20 of the paper, ``D² ((6 + 4 eps + 2 eps²) / N
        + 4 (1 + eps)² / N²)``, with ``eps = sigma² / D`` (no motion blur term: a TEM
        frame is taken far faster than a loop moves) estimated from the track and
        clipped at 0.
    steps : int
        ``N``, the unit steps used.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> walk = np.cumsum(rng.normal(0, np.sqrt(2 * 0.5), 20000))
    >>> noisy = walk + rng.normal(0, 1.0, 20000)   # localisation noise of 1 px
    >>> round(cve(np.arange(20000), noisy)[0], 1)
    0.5
    """
    unit, steps, n, mean_square = _unit_steps(frames, values)
    if n < 2:
        return float("nan"), float("nan"), n
    pairs = unit[1:] & unit[:-1]
    covariance = float(np.mean(steps[1:][pairs] * steps[:-1][pairs])) if pairs.any() else 0.0
    d = mean_square / 2 + covariance
    noise = max(-covariance, 0.0)  # sigma², from the step covariance -sigma²
    eps = noise / d if d > 0 else 0.0
    variance = d * d * ((6 + 4 * eps + 2 * eps * eps) / n + 4 * (1 + eps) ** 2 / n**2)
    return float(d), float(math.sqrt(variance)), n


def pooled_noise(tracks) -> float:
    """Localisation noise ``sigma²`` (px², per axis) from the step covariance of many tracks.

    ``tracks`` is an iterable of ``(frames, points)`` (``(n,)`` int, ``(n, 2)`` px);
    neighbouring steps between consecutive frames have covariance ``-sigma²`` per axis
    (the shared position's noise), whatever each track's D. Each track's mean product
    of neighbouring steps is weighted by its number of pairs over its squared mean
    squared step (the inverse of that mean's variance), so fast tracks, whose products
    scatter widely, do not drown the noise of the slow ones. Clipped at 0; 0 without a
    pair of neighbouring steps.
    """
    total, weights = 0.0, 0.0
    for frames, points in tracks:
        if len(frames) < 3:
            continue
        unit, steps, _, mean_square = _unit_steps(frames, points)
        pairs = unit[1:] & unit[:-1]
        if not pairs.any() or mean_square <= 0:
            continue
        weight = 2 * int(pairs.sum()) / mean_square**2
        total += weight * float(np.mean(steps[1:][pairs] * steps[:-1][pairs]))
        weights += weight
    return max(-total / weights, 0.0) if weights else 0.0


def _pooled(frames, values, noise: float) -> tuple[float, float, int]:
    """D along one axis as the mean squared unit step / 2 less ``noise`` (sigma²), its SD
    (``sqrt((2 (D + sigma²)² + sigma⁴) / N)``: squared steps of Gaussian steps, neighbours
    correlated through the shared position) and ``N``."""
    _, _, n, mean_square = _unit_steps(frames, values)
    if n < 2:
        return float("nan"), float("nan"), n
    d = mean_square / 2 - noise
    return d, math.sqrt((2 * (max(d, 0.0) + noise) ** 2 + noise**2) / n), n


def diffusion(frames, points, *, max_lag: int = 10, bootstrap: int = 200, seed: int = 0, estimator: str = "cve",
              noise: float | None = None) -> dict:
    """D_eff of one track in 2-D and in 1-D along its main direction, with 95 % intervals.

    Parameters
    ----------
    frames : (n,) array_like of int
        Increasing frame numbers (gaps allowed).
    points : (n, 2) array_like of float
        ``(x, y)`` px.
    max_lag : int
        ``"msd"``: largest lag of the fit; capped at a quarter of the track's span (at
        least 2).
    bootstrap, seed : int
        ``"msd"``: resamplings of the steps for the interval (0: none), and their seed.
    estimator : {"cve", "msd", "pooled"}
        See the module docstring.
    noise : float, optional
        ``"pooled"``: the localisation noise ``sigma²`` (px² per axis) of
        :func:`pooled_noise` over all tracks; required for it.

    Returns
    -------
    dict
        ``D_2d``, ``D_2d_low``, ``D_2d_high``, ``D_1d``, ``D_1d_low``, ``D_1d_high``
        (px² / frame), ``direction`` (degrees, [0, 180), main axis of the steps) and
        ``anisotropy`` (step variance along / across that axis).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> walk = np.cumsum(rng.normal(0, np.sqrt(2 * 0.5), (2000, 2)), axis=0)
    >>> round(diffusion(np.arange(2000), walk, bootstrap=0)["D_2d"], 1)
    0.5
    """
    frames = np.asarray(frames, dtype=np.int64)
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(frames):
        raise ValueError(f"points must be (n, 2) with one row per frame; got {points.shape} for {len(frames)} frames")
    if len(frames) > 1 and (np.diff(frames) <= 0).any():
        raise ValueError("frames must be strictly increasing")
    nan = float("nan")
    out = dict(D_2d=nan, D_2d_low=nan, D_2d_high=nan, D_1d=nan, D_1d_low=nan, D_1d_high=nan, direction=nan, anisotropy=nan)
    if len(frames) < 3:
        return out
    lag_cap = max(2, min(max_lag, int(frames[-1] - frames[0]) // 4))
    unit_steps = np.diff(points, axis=0)[np.diff(frames) == 1]
    if len(unit_steps) >= 2:
        cov = np.cov(unit_steps.T)
        values, vectors = np.linalg.eigh(cov)
        axis = vectors[:, 1]
        out["direction"] = float(np.degrees(np.arctan2(axis[1], axis[0])) % 180.0)
        out["anisotropy"] = float(values[1] / max(values[0], 1e-12))
    else:
        axis = np.array([1.0, 0.0])
    if estimator in ("cve", "pooled"):
        if estimator == "pooled" and noise is None:
            raise ValueError("estimator 'pooled' needs the pooled localisation noise (noise=pooled_noise(tracks))")
        one = cve if estimator == "cve" else lambda f, v: _pooled(f, v, noise)
        (dx, sx, _), (dy, sy, _) = (one(frames, points[:, i]) for i in range(2))
        d2, s2 = (dx + dy) / 2, math.sqrt(sx * sx + sy * sy) / 2
        d1, s1, _ = one(frames, points @ axis)
        out.update(D_2d=d2, D_2d_low=d2 - 1.96 * s2, D_2d_high=d2 + 1.96 * s2,
                   D_1d=d1, D_1d_low=d1 - 1.96 * s1, D_1d_high=d1 + 1.96 * s1)
        return out
    if estimator != "msd":
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    projected = (points @ axis)[:, None]
    lags, msd2 = _msd(frames, points, lag_cap)
    out["D_2d"] = _fit(lags, msd2, 2)
    lags1, msd1 = _msd(frames, projected, lag_cap)
    out["D_1d"] = _fit(lags1, msd1, 1)
    if bootstrap and len(unit_steps) >= 4:
        rng = np.random.default_rng(seed)
        n = len(unit_steps)
        idx = np.arange(n + 1)
        d2, d1 = [], []
        for _ in range(bootstrap):
            steps = unit_steps[rng.integers(0, n, n)]
            walk = np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)])
            l2, m2 = _msd(idx, walk, lag_cap)
            d2.append(_fit(l2, m2, 2))
            l1, m1 = _msd(idx, (walk @ axis)[:, None], lag_cap)
            d1.append(_fit(l1, m1, 1))
        out["D_2d_low"], out["D_2d_high"] = (float(v) for v in np.percentile(d2, [2.5, 97.5]))
        out["D_1d_low"], out["D_1d_high"] = (float(v) for v in np.percentile(d1, [2.5, 97.5]))
    return out


def track_summary(linked, *, settings: LoopLinkSettings | None = None):
    """One row per track: lifetime, size and D_eff.

    Parameters
    ----------
    linked : pandas.DataFrame
        Columns ``frame``, ``track_id``, ``x``, ``y``, and ``major`` if sizes are wanted.

    Returns
    -------
    pandas.DataFrame
        ``track_id``, ``first_frame``, ``last_frame``, ``lifetime`` (frames, last - first
        + 1), ``detections``, ``x``, ``y`` (mean px), ``median_major`` (px),
        ``size_slope`` (px / frame, least squares), then the keys of :func:`diffusion`
        (NaN for tracks shorter than ``min_length``).
    """
    import pandas as pd

    s = settings or LoopLinkSettings()
    tracks = []
    for track, group in linked.sort_values("frame", kind="stable").groupby("track_id", sort=True):
        if group["frame"].duplicated().any():  # a track is one object per frame
            group = group.drop_duplicates("frame")
        tracks.append((track, group, group["frame"].to_numpy(np.int64), group[["x", "y"]].to_numpy(float)))
    noise = pooled_noise((frames, points) for *_, frames, points in tracks) if s.estimator == "pooled" else None
    rows = []
    for track, group, frames, points in tracks:
        row = {"track_id": int(track), "first_frame": int(frames[0]), "last_frame": int(frames[-1]),
               "lifetime": int(frames[-1] - frames[0] + 1), "detections": len(frames),
               "x": float(points[:, 0].mean()), "y": float(points[:, 1].mean())}
        if "major" in group:
            major = group["major"].to_numpy(float)
            row["median_major"] = float(np.median(major))
            row["size_slope"] = float(np.polyfit(frames, major, 1)[0]) if len(frames) > 1 else float("nan")
        if len(frames) >= s.min_length:
            row.update(diffusion(frames, points, max_lag=s.max_lag, bootstrap=s.bootstrap, seed=s.seed + int(track),
                                 estimator=s.estimator, noise=noise))
        else:
            row.update(diffusion(frames[:0], points[:0], bootstrap=0))  # the same columns, NaN
        rows.append(row)
    return pd.DataFrame(rows)


def size_over_time(linked):
    """Per frame: ``count`` and ``median``, ``q1``, ``q3`` of ``major`` (px)."""
    grouped = linked.groupby("frame")["major"]
    table = grouped.agg(count="size", median="median")
    table["q1"] = grouped.quantile(0.25)
    table["q3"] = grouped.quantile(0.75)
    return table.reset_index()


def plot_loops(linked, summary, path, *, min_length: int = 10):
    """One PNG of a loop run: size against frame (median and quartiles), D_eff against
    size (tracks of at least ``min_length`` detections, with 95 % intervals), and the
    trajectories (tracks of at least ``min_length`` detections, one colour each).

    Parameters
    ----------
    linked : pandas.DataFrame
        Linked detections (``frame``, ``track_id``, ``x``, ``y``, ``major``).
    summary : pandas.DataFrame
        :func:`track_summary` of ``linked``.
    path : str or Path
        The PNG, written atomically; its folder must exist.

    Returns
    -------
    Path
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import _write_png

    figure = Figure(figsize=(15, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    size_ax, d_ax, path_ax = figure.subplots(1, 3)
    if len(linked):
        sizes = size_over_time(linked)
        size_ax.fill_between(sizes.index, sizes["q1"], sizes["q3"], color="#9ecae1", label="quartiles")
        size_ax.plot(sizes.index, sizes["median"], color="#08519c", lw=1.2, label="median")
        size_ax.legend(fontsize=8, loc="upper left")
    size_ax.set(xlabel="frame", ylabel="size, major axis (px)", title=f"Size against frame ({len(linked)} detections)")
    long = summary[(summary["detections"] >= min_length) & summary["D_2d"].notna()] if len(summary) else summary
    if len(long):
        low = (long["D_2d"] - long["D_2d_low"]).clip(lower=0)
        high = (long["D_2d_high"] - long["D_2d"]).clip(lower=0)
        d_ax.errorbar(long["median_major"], long["D_2d"], yerr=[low, high], fmt="o", ms=3, lw=0.6, alpha=0.7)
        if (long["D_2d"] > 0).all():
            d_ax.set_yscale("log")
    d_ax.set(xlabel="median size (px)", ylabel="D_eff, 2-D (px² per frame)",
             title=f"D_eff against size ({len(long)} tracks of ≥ {min_length} detections)")
    shown = set(long["track_id"]) if len(long) else set()
    for track, group in linked[linked["track_id"].isin(shown)].groupby("track_id") if len(linked) else []:
        path_ax.plot(group["x"], group["y"], lw=0.8)
    path_ax.invert_yaxis()
    path_ax.set_aspect("equal", adjustable="datalim")
    path_ax.set(xlabel="x (px)", ylabel="y (px)", title=f"Trajectories ({len(shown)} tracks)")
    for ax in (size_ax, d_ax, path_ax):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    if not len(linked):
        size_ax.text(0.5, 0.5, "no loops found", transform=size_ax.transAxes, ha="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return _write_png(path, buffer.getvalue())
