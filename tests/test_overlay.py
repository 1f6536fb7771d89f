"""Overlay drawing and the overlay video writer."""

from __future__ import annotations

import numpy as np
import pytest

from temtrack.sdk.overlay import OverlayWriter, draw_tracks, track_colour

LINE = np.array([[3.0, 10.0], [36.0, 10.0]])  # horizontal, on row 10


def decode(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)], rate


def leftovers(folder, keep=()):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_track_colours_are_fixed_distinct_and_gray_when_untracked():
    colours = [track_colour(i) for i in range(50)]
    assert colours == [track_colour(np.int64(i)) for i in range(50)]  # deterministic, numpy ids too
    assert len(set(colours)) == 50
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours)
    # Neighbouring ids (often tracks born together) must be told apart at a glance.
    steps = [np.linalg.norm(np.subtract(a, b)) for a, b in zip(colours, colours[1:])]
    assert min(steps) > 150
    assert track_colour(-1) == (200, 200, 200)
    with pytest.raises(ValueError, match="track_id"):
        track_colour(-2)
    with pytest.raises(TypeError, match="track_id"):
        track_colour(1.5)


def test_drawn_curve_has_its_track_colour():
    image = np.zeros((24, 40), np.float32)
    original = image.copy()
    vertical = np.array([[30.0, 2.0], [30.0, 21.0]])
    out = draw_tracks(image, [LINE, vertical], [3, 7], labels=False)
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[10, 8:25], np.tile(track_colour(3), (17, 1)))
    np.testing.assert_array_equal(out[5:18, 30], np.tile(track_colour(7), (13, 1)))
    assert track_colour(3) != track_colour(7)
    assert (out[0, :20] == 0).all() and (out[20:, :20] == 0).all()  # nothing drawn away from the lines
    np.testing.assert_array_equal(image, original)


def test_sub_pixel_position_and_untracked_curves():
    image = np.full((24, 40), 0.5)
    low = draw_tracks(image, [LINE + [0, 0.25]], [-1], labels=False)
    high = draw_tracks(image, [LINE + [0, 0.75]], [-1], labels=False)
    assert not np.array_equal(low, high)  # a quarter pixel shows
    # Untracked: light gray, and (weighted) centre of the line where it was asked for.
    column = low[:, 20, 0].astype(float) - 128
    assert np.average(np.arange(24), weights=np.clip(column, 0, None)) == pytest.approx(10.25, abs=0.15)
    assert tuple(low[10, 20]) == track_colour(-1) or tuple(low[11, 20]) == track_colour(-1)


def test_labels_are_written_in_the_track_colour():
    image = np.zeros((40, 60))
    plain = draw_tracks(image, [LINE + [0, 20]], [12], labels=False)
    labelled = draw_tracks(image, [LINE + [0, 20]], [12], labels=True)
    changed = np.any(plain != labelled, axis=2)
    assert changed[:30, :].sum() > 5 and not changed[:, 40:].any()  # near the first point (3, 30)
    assert (labelled[changed] == track_colour(12)).all(axis=1).any()


def test_draw_accepts_uint8_bgr_and_points():
    bgr = np.full((10, 12, 3), 40, np.uint8)
    before = bgr.copy()
    out = draw_tracks(bgr, [np.array([[5.0, 5.0]])], [0], labels=False)  # one point: a dot
    assert tuple(out[5, 5]) == track_colour(0)
    np.testing.assert_array_equal(bgr, before)
    gray = draw_tracks(np.full((10, 12), 200, np.uint8), [], [], labels=True)
    assert (gray == 200).all()


@pytest.mark.parametrize(
    "curves, ids, match",
    [
        ([np.zeros((3, 3))], [1], r"curves\[0\] must be an \(n, 2\)"),
        ([np.zeros((0, 2))], [1], r"curves\[0\]"),
        ([np.array([[0.0, np.nan]])], [1], "NaN"),
        ([LINE, LINE], [1], "one id per curve"),
        ([LINE], [-3], "track_id"),
    ],
)
def test_draw_validation(curves, ids, match):
    with pytest.raises(ValueError, match=match):
        draw_tracks(np.zeros((24, 40)), curves, ids)


def test_draw_rejects_bad_images():
    with pytest.raises(ValueError, match="image must be"):
        draw_tracks(np.zeros((2, 24, 40)), [], [])
    with pytest.raises(ValueError, match="NaN"):
        draw_tracks(np.full((4, 4), np.nan), [], [])
    with pytest.raises(ValueError, match="thickness"):
        draw_tracks(np.zeros((4, 4)), [], [], thickness=0)


def test_writer_round_trip(tmp_path):
    path = tmp_path / "overlay.mp4"
    with OverlayWriter(path, fps=12.0, shape=(24, 40)) as writer:
        for i in range(6):
            writer.write(np.full((24, 40), 0.1 * i), [LINE], [4])
        assert not path.exists()  # only the temporary file while writing
    assert writer.frames_written == 6
    frames, rate = decode(path)
    assert len(frames) == 6 and frames[0].shape == (24, 40, 3) and rate == 12.0
    # The line's colour survives H.264 (4:2:0 chroma is why lines are 2 px by default).
    assert np.abs(frames[3][10, 10:30].astype(int) - track_colour(4)).mean() < 25
    assert leftovers(tmp_path) == ["overlay.mp4"]


def test_odd_sized_frames_are_padded(tmp_path):
    path = tmp_path / "odd.mp4"
    with OverlayWriter(path, fps=5, shape=(23, 41)) as writer:
        for _ in range(3):
            writer.write(np.full((23, 41), 0.6), [LINE], [-1])
    frames, _ = decode(path)
    assert len(frames) == 3 and frames[0].shape == (24, 42, 3)
    assert abs(int(frames[0][2, 2, 1]) - 153) <= 3  # the frame itself
    assert frames[0][23, :, 1].max() < 20 and frames[0][:, 41, 1].max() < 20  # the black padding


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "overlay.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with OverlayWriter(path, fps=10, shape=(24, 40)) as writer:
            writer.write(np.zeros((24, 40)), [LINE], [1])
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="aborted"):
        writer.write(np.zeros((24, 40)), [LINE], [1])


def test_overwrite_rule(tmp_path):
    path = tmp_path / "overlay.mp4"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overlay.mp4 already exists"):
        OverlayWriter(path, fps=10, shape=(24, 40))
    with pytest.raises(ValueError, match="shape"):  # a failed write keeps the old file
        with OverlayWriter(path, fps=10, shape=(24, 40), overwrite=True) as writer:
            writer.write(np.zeros((20, 40)), [], [])
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == ["overlay.mp4"]
    with OverlayWriter(path, fps=10, shape=(24, 40), overwrite=True) as writer:
        writer.write(np.zeros((24, 40)), [LINE], [1])
    assert len(decode(path)[0]) == 1 and leftovers(tmp_path) == ["overlay.mp4"]


def test_no_frames_saves_nothing(tmp_path):
    writer = OverlayWriter(tmp_path / "empty.mp4", fps=10, shape=(8, 8))
    with pytest.raises(ValueError, match="no frames were written"):
        writer.close()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"fps": 0, "shape": (8, 8)}, ValueError, "fps"),
        ({"fps": "25", "shape": (8, 8)}, TypeError, "fps"),
        ({"fps": 10, "shape": (8,)}, ValueError, "shape"),
        ({"fps": 10, "shape": (0, 8)}, ValueError, "shape"),
        ({"fps": 10, "shape": (8, 8), "crf": 60}, ValueError, "crf"),
    ],
)
def test_writer_validation(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        OverlayWriter(tmp_path / "x.mp4", **kwargs)
    assert leftovers(tmp_path) == []
