"""Tests of temtrack.tracker.timeseries and plots: known answers from hand-made lines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from temtrack.tracker import SeriesBuilder, pair_distances, plot_pairs, plot_positions, series
from temtrack.tracker.geometry import curve_distance, min_distance, resample
from temtrack.tracker.timeseries import PAIR_COLUMNS, TRACK_COLUMNS

ANGLE = np.radians(30.0)
TANGENT = np.array([np.cos(ANGLE), np.sin(ANGLE)])  # lines run along this
NORMAL = np.array([-np.sin(ANGLE), np.cos(ANGLE)])  # and glide along this


def line(offset: float, *, length: float = 80.0, centre=(128.0, 128.0), n: int = 33) -> np.ndarray:
    """A straight line tilted 30 degrees, ``offset`` px from ``centre`` along its normal."""
    s = np.linspace(-length / 2, length / 2, n)
    return np.asarray(centre) + offset * NORMAL + s[:, None] * TANGENT


def two_lines_gliding(frames: int = 6, *, fps: float | None = 10.0):
    """Two parallel lines 10 px apart gliding 2 px/frame along their normal: (frame, time, curves, ids)."""
    out = []
    for f in range(frames):
        time_s = None if fps is None else f / fps
        out.append((f, time_s, [line(2.0 * f), line(2.0 * f + 10.0)], [3, 9]))
    return out


def run(builder, frames):
    tracks, pairs = zip(*(builder.update(*frame) for frame in frames))
    return pd.concat(tracks, ignore_index=True), pd.concat(pairs, ignore_index=True)


def test_two_parallel_lines_known_answers():
    tracks, pairs = run(SeriesBuilder(pixel_size_nm=2.5), two_lines_gliding())
    assert list(tracks.columns) == list(TRACK_COLUMNS) and list(pairs.columns) == list(PAIR_COLUMNS)
    assert len(tracks) == 12 and len(pairs) == 6
    np.testing.assert_allclose(pairs["distance_px"], 10.0, atol=0.05)
    np.testing.assert_allclose(pairs["min_distance_px"], 10.0, atol=0.05)
    np.testing.assert_allclose(pairs["distance_nm"], 25.0, atol=0.125)
    assert (pairs["pileup"] == tracks["pileup"].iloc[0]).all()
    # Ordered along the glide axis (+x side of the normal): track 9 lies 10 px towards -axis.
    assert pairs[["track_a", "track_b"]].drop_duplicates().values.tolist() == [[9, 3]]
    moving = tracks[tracks["frame"] > 0]
    assert tracks[tracks["frame"] == 0]["velocity_px_s"].isna().all()  # no earlier position
    # The glide axis is the lines' normal signed to +x: NORMAL points to -x, so motion is negative.
    np.testing.assert_allclose(moving["velocity_px_s"], -20.0, atol=1e-6)
    np.testing.assert_allclose(moving["velocity_px_frame"], -2.0, atol=1e-9)
    np.testing.assert_allclose(moving["velocity_nm_s"], -50.0, atol=1e-6)
    np.testing.assert_allclose(tracks["length_px"], 80.0, atol=1e-9)
    np.testing.assert_allclose(tracks["length_nm"], 200.0, atol=1e-6)
    np.testing.assert_allclose(tracks["mean_curvature"], 0.0, atol=1e-9)
    first = tracks[tracks["track_id"] == 3]
    np.testing.assert_allclose(np.diff(first["position_px"]), -2.0, atol=1e-9)
    centre = np.array([128.0, 128.0]) + 2.0 * 5 * NORMAL
    np.testing.assert_allclose(first[["centroid_x", "centroid_y"]].iloc[-1], centre, atol=1e-9)


def test_unknown_time_and_no_calibration():
    tracks, pairs = run(SeriesBuilder(), two_lines_gliding(fps=None))
    assert tracks["velocity_px_s"].isna().all() and tracks["time_s"].isna().all()
    np.testing.assert_allclose(tracks[tracks["frame"] > 0]["velocity_px_frame"].abs(), 2.0, atol=1e-9)
    for column in ("velocity_nm_s", "length_nm", "position_nm"):
        assert tracks[column].isna().all()
    assert pairs["distance_nm"].isna().all()


def test_frame_skips_scale_velocity():
    frames = [(f, f / 10.0, [line(2.0 * f), line(2.0 * f + 10.0)], [0, 1]) for f in (0, 5, 10)]
    tracks, _ = run(SeriesBuilder(), frames)
    np.testing.assert_allclose(tracks[tracks["frame"] > 0]["velocity_px_frame"], -2.0, atol=1e-9)
    np.testing.assert_allclose(tracks[tracks["frame"] > 0]["velocity_px_s"], -20.0, atol=1e-6)


def test_lead_point_is_furthest_along_the_glide():
    # An arc bowing towards +x, gliding +x: its lead point is the apex.
    t = np.linspace(-0.6, 0.6, 41)
    arc = np.column_stack([50.0 * np.cos(t), 50.0 * np.sin(t)]) + [100.0, 128.0]
    builder = SeriesBuilder()
    for f in range(4):
        tracks, _ = builder.update(f, f / 10.0, [arc + [3.0 * f, 0.0]], [1])
    assert tracks["lead_x"].iloc[0] == pytest.approx(150.0 + 9.0, abs=0.2)
    assert tracks["lead_y"].iloc[0] == pytest.approx(128.0, abs=1.5)
    # Curvature of a circle of radius 50 px.
    assert tracks["mean_curvature"].iloc[0] == pytest.approx(1 / 50.0, rel=0.01)
    # Now gliding -x: once the pile-up's net glide turns, the lead is the arc's ends.
    for f in range(4, 12):
        tracks, _ = builder.update(f, f / 10.0, [arc + [9.0 - 3.0 * (f - 3), 0.0]], [1])
    assert tracks["lead_x"].iloc[0] == pytest.approx(100.0 + 50.0 * np.cos(0.6) + 9.0 - 24.0, abs=0.2)


def two_pileups(frame: int):
    """Three lines near x = 60 and three near x = 200 (vertical, 8-12 px apart)."""
    xs_a, xs_b = (60.0, 68.0, 80.0), (200.0, 210.0, 218.0)
    curves = [np.column_stack([np.full(30, x + frame), np.linspace(20, 120, 30)]) for x in xs_a + xs_b]
    return curves, [10, 11, 12, 20, 21, 22]


def test_two_separate_pileups_and_consecutive_pairs():
    builder = SeriesBuilder()
    for f in range(3):
        curves, ids = two_pileups(f)
        order = [3, 0, 5, 1, 4, 2]  # input order must not matter
        tracks, pairs = builder.update(f, None, [curves[k] for k in order], [ids[k] for k in order])
    groups = tracks.groupby("pileup")["track_id"].apply(sorted).tolist()
    assert sorted(groups) == [[10, 11, 12], [20, 21, 22]]
    assert sorted(map(tuple, pairs[["track_a", "track_b"]].values.tolist())) == [(10, 11), (11, 12), (20, 21), (21, 22)]
    np.testing.assert_allclose(sorted(pairs["distance_px"]), [8.0, 8.0, 10.0, 12.0], atol=1e-9)


def test_pileup_ids_are_stable_and_a_missed_member_still_separates_its_neighbours():
    builder = SeriesBuilder()
    curves, ids = two_pileups(0)
    first, _ = builder.update(0, None, curves, ids)
    pileup_of = dict(zip(first["track_id"], first["pileup"]))
    # Track 11 (between 10 and 12) is missed: no pair 10-12 is made up.
    curves, ids = two_pileups(1)
    tracks, pairs = builder.update(1, None, [c for c, i in zip(curves, ids) if i != 11], [i for i in ids if i != 11])
    assert (10, 12) not in set(map(tuple, pairs[["track_a", "track_b"]].values.tolist()))
    # A new line joins the first pile-up beside track 12 and keeps the pile-up's id.
    curves, ids = two_pileups(2)
    new = np.column_stack([np.full(30, 92.0 + 2), np.linspace(20, 120, 30)])
    tracks, pairs = builder.update(2, None, curves + [new], ids + [13])
    got = dict(zip(tracks["track_id"], tracks["pileup"]))
    assert got[13] == pileup_of[10]
    assert all(got[i] == pileup_of[i] for i in pileup_of)
    assert (12, 13) in set(map(tuple, pairs[["track_a", "track_b"]].values.tolist()))


def test_memory_is_bounded_by_active_tracks():
    builder = SeriesBuilder(forget_after=5)
    for f in range(200):
        # Two new tracks every 10 frames, each seen for 10 frames only.
        ids = [2 * (f // 10), 2 * (f // 10) + 1]
        builder.update(f, None, [line(0.0), line(12.0)], ids)
        assert builder.active_tracks <= 4
    assert len(builder._pileups) <= 4


def test_batch_equals_streaming_and_input_not_modified():
    frames = two_lines_gliding(frames=5) + [(f, f / 10.0, [line(10.0)], [9]) for f in range(5, 8)]
    rows = [
        {"frame": f, "time_s": t, "track_id": i, "x": list(c[:, 0]), "y": list(c[:, 1])}
        for f, t, curves, ids in frames
        for c, i in zip(curves, ids)
    ]
    df = pd.DataFrame(rows[::-1])  # frames in reverse order: series sorts them
    before = df.copy(deep=True)
    tracks, pairs = series(df, pixel_size_nm=2.0)
    pd.testing.assert_frame_equal(df, before)
    stream_tracks, stream_pairs = run(SeriesBuilder(pixel_size_nm=2.0), frames)
    tracks = tracks.sort_values(["frame", "track_id"], ignore_index=True)
    stream_tracks = stream_tracks.sort_values(["frame", "track_id"], ignore_index=True)
    pd.testing.assert_frame_equal(tracks, stream_tracks)
    pd.testing.assert_frame_equal(pairs, stream_pairs)
    empty_tracks, empty_pairs = series(df.iloc[:0])
    assert list(empty_tracks.columns) == list(TRACK_COLUMNS) and len(empty_pairs) == 0


def test_curves_not_modified_by_update():
    curves = [line(0.0), line(10.0)]
    kept = [c.copy() for c in curves]
    SeriesBuilder().update(0, 0.0, curves, np.array([1, 2]))
    for a, b in zip(curves, kept):
        np.testing.assert_array_equal(a, b)


def test_pair_distances_follow_the_paper():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.normal(size=(rng.integers(2, 30), 2)).cumsum(axis=0) * 4
        b = rng.normal(size=(rng.integers(2, 30), 2)).cumsum(axis=0) * 4 + rng.normal(size=2) * 10
        mean, smallest = pair_distances(a, b)
        assert mean == pytest.approx(curve_distance(resample(a, 50), resample(b, 50)), abs=1e-9)
        assert smallest == pytest.approx(min_distance(resample(a, 50), resample(b, 50)), abs=1e-9)
    # A shorter line beside a longer one: closest distances from the overhang count (paper 6.4).
    short = np.array([[0.0, 0.0], [0.0, 10.0]])
    long = np.array([[4.0, 0.0], [4.0, 20.0]])
    mean, smallest = pair_distances(short, long)
    assert smallest == pytest.approx(4.0)
    assert mean > 4.0


def test_bad_inputs_are_clear_errors():
    builder = SeriesBuilder()
    builder.update(0, 0.0, [line(0.0)], [1])
    with pytest.raises(ValueError, match="frame must increase"):
        builder.update(0, 0.0, [line(0.0)], [1])
    with pytest.raises(ValueError, match="one id per curve"):
        builder.update(1, 0.1, [line(0.0)], [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        builder.update(1, 0.1, [line(0.0), line(9.0)], [1, 1])
    with pytest.raises(TypeError, match="track_ids must be integers"):
        builder.update(1, 0.1, [line(0.0)], [1.5])
    with pytest.raises(TypeError, match="time_s must be"):
        builder.update(1, "0.1", [line(0.0)], [1])
    with pytest.raises(ValueError, match=r"curves\[0\] must be an \(n, 2\)"):
        builder.update(1, 0.1, [np.zeros((4, 3))], [1])
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'pixel_size'.*pixel_size_nm"):
        SeriesBuilder(pixel_size=2.0)
    with pytest.raises(ValueError, match="pixel_size_nm must be > 0"):
        SeriesBuilder(pixel_size_nm=0.0)
    with pytest.raises(ValueError, match="df lacks column"):
        series(pd.DataFrame({"frame": [0], "x": [[0.0]], "y": [[0.0]]}))
    assert json.loads(json.dumps(SeriesBuilder(pixel_size_nm=1.5).describe()))["settings"]["pixel_size_nm"] == 1.5


def test_plots_are_written_atomically(tmp_path):
    tracks, pairs = run(SeriesBuilder(pixel_size_nm=2.0), two_lines_gliding())
    for function, frame in ((plot_pairs, pairs), (plot_positions, tracks)):
        for unit in ("px", "nm"):
            path = tmp_path / f"{function.__name__}_{unit}.png"
            assert function(frame, path, unit=unit) == path
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{f}_{u}.png" for f in ("plot_pairs", "plot_positions") for u in ("px", "nm")
    )  # no temporary files left behind
    plot_pairs(pairs.iloc[:0], tmp_path / "empty.png")
    uncalibrated, _ = run(SeriesBuilder(), two_lines_gliding())
    with pytest.raises(ValueError, match="no pixel size"):
        plot_positions(uncalibrated, tmp_path / "x.png", unit="nm")
    with pytest.raises(ValueError, match="unit must be"):
        plot_pairs(pairs, tmp_path / "x.png", unit="um")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_pairs(pairs, tmp_path / "missing" / "x.png")
    with pytest.raises(ValueError, match="lacks column"):
        plot_positions(pairs, tmp_path / "x.png")
