"""Tests of temtrack.training.synth.video: synthetic in-situ videos with persistent ids."""

import json

import cv2
import numpy as np
import pytest

from temtrack.training.synth import Scene, get_preset, validate_config
from temtrack.training.synth import video as video_module
from temtrack.training.synth.video import VideoSettings, iter_video, write_video

# Motion off: only what a test switches on moves.
STILL = dict(glide_speed=(0.0, 0.0), spacing_jitter=0.0, shape_drift=0.0, drift=0.0, flicker=0.0, noise=0.0)


def small_config(size=(96, 96)):
    """sd2 scaled to small frames: slip widths and spacings in pixels shrink with the frame."""
    base = get_preset("sd2").model_dump()
    return validate_config(
        {
            **base,
            "size": size,
            "pileups": {
                **base["pileups"],
                "slip_width": (30.0, 70.0),
                "spacing": {"pair": (4.0, 7.0), "wide": (8.0, 20.0)},
            },
            "render": {**base["render"], "noise": (0.0, 0.0)},
        }
    )


def test_settings_are_validated_and_serialisable():
    settings = VideoSettings(frames=7, drift=0.1)
    assert VideoSettings.model_validate_json(settings.model_dump_json()) == settings
    with pytest.raises(ValueError, match="frames"):
        VideoSettings(frames=0)
    with pytest.raises(ValueError, match="bogus"):
        VideoSettings(bogus=1)
    with pytest.raises(ValueError, match="glide_speed"):
        VideoSettings(glide_speed=(3.0, 1.0))
    with pytest.raises(ValueError, match="seed"):
        iter_video(small_config(), -1)  # checked at the call, not at the first frame
    with pytest.raises(TypeError, match="VideoSettings"):
        iter_video(small_config(), 1, {"frames": 3})


def test_iter_video_is_deterministic():
    config, settings = small_config(), VideoSettings(frames=12)
    first, second = list(iter_video(config, 4, settings)), list(iter_video(config, 4, settings))
    assert len(first) == 12
    for a, b in zip(first, second):
        assert a.image.dtype == np.float32 and a.image.shape == (96, 96)
        assert 0.0 <= a.image.min() and a.image.max() <= 1.0
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        assert len(a.centrelines) == len(b.centrelines) == len(a.track_ids) == len(a.masks)
        for p, q in zip(a.centrelines, b.centrelines):
            np.testing.assert_array_equal(p, q)
    other = list(iter_video(config, 5, settings))
    assert not np.array_equal(first[-1].image, other[-1].image)


def _inside(curve, height, width, margin=1.0):
    return bool(
        (curve[:, 0] >= margin).all() and (curve[:, 0] <= width - 1 - margin).all()
        and (curve[:, 1] >= margin).all() and (curve[:, 1] <= height - 1 - margin).all()
    )


def test_track_ids_persist_and_move_boundedly():
    settings = VideoSettings(frames=30)
    frames = list(iter_video(small_config((128, 128)), 7, settings))
    pileup_of, steps = {}, []
    for before, after in zip(frames, frames[1:]):
        for frame in (before, after):
            for track, pileup in zip(frame.track_ids.tolist(), frame.pileups.tolist()):
                assert pileup_of.setdefault(track, pileup) == pileup
        # Only lines wholly inside both frames: a clipped line's centroid jumps as it enters.
        full = {}
        for frame in (before, after):
            for spec in frame.scene.dislocations:
                curve = spec.curve() + frame.offset
                full.setdefault(spec.id, []).append(_inside(curve, 128, 128))
        lines = [dict(zip(f.track_ids.tolist(), f.centrelines)) for f in (before, after)]
        for track in set(lines[0]) & set(lines[1]):
            if all(full[track]):
                step = np.hypot(*(lines[1][track].mean(axis=0) - lines[0][track].mean(axis=0)))
                assert step <= settings.glide_speed[1] + settings.drift + 3.0, (before.index, track, step)
                steps.append(step)
    assert len(steps) > 100 and max(steps) > 1.0  # many pairs compared, and they did move


def test_pileups_stick_and_slip():
    frames = list(iter_video(small_config((128, 128)), 3, VideoSettings(frames=60)))
    p0 = np.array([[p.p0 for p in f.scene.pileups] for f in frames])  # (frames, pileups, 2)
    steps = np.hypot(*np.diff(p0, axis=0).transpose(2, 0, 1))  # (frames - 1, pileups)
    assert steps.shape[1] >= 1
    stuck, slipping = steps < 1e-6, steps >= 0.5
    assert (stuck | slipping).all()  # glide comes in whole steps of at least the lowest speed
    for pileup in range(steps.shape[1]):
        assert stuck[:, pileup].mean() > 0.5  # mostly stuck ...
        assert slipping[:, pileup].any()  # ... with sudden slips
        assert steps[:, pileup].max() <= 3.0 + 1e-9


def test_dislocations_enter_and_leave():
    config = small_config((128, 128))
    frames = list(iter_video(config, 6, VideoSettings(frames=80)))
    seen = [set(f.track_ids.tolist()) for f in frames]
    assert set.union(*seen) != set.intersection(*seen)
    # Control: without glide and enter/leave placement the visible set stays put.
    still = list(iter_video(config, 6, VideoSettings(frames=20, enter_leave=False, **STILL)))
    assert len({tuple(f.track_ids.tolist()) for f in still}) == 1


def test_gliding_pileups_cross_the_frame_edge():
    config = small_config((128, 128))
    fast = dict(frames=40, drift=0.0, glide_speed=(2.0, 3.0), slip_probability=0.3, stick_probability=0.3)
    changed, pileups, entered, left = {True: 0, False: 0}, 0, 0, 0
    for seed in range(4):
        for enter_leave in (True, False):
            frames = list(iter_video(config, seed, VideoSettings(enter_leave=enter_leave, **fast)))
            first, last = set(frames[0].track_ids.tolist()), set(frames[-1].track_ids.tolist())
            for start, end in zip(frames[0].scene.pileups, frames[-1].scene.pileups):
                assert np.hypot(*np.subtract(end.p0, start.p0)) >= 20.0  # every pile-up glides far
                members = set(start.dislocations)
                changed[enter_leave] += (first & members) != (last & members)
                pileups += enter_leave
            if enter_leave:
                entered, left = entered + len(last - first), left + len(first - last)
    assert changed[True] == pileups  # each pile-up has a member entering or leaving the view
    assert changed[False] < pileups  # which gliding alone does not give
    assert entered and left


def test_drift_moves_background_and_structures_together():
    settings = VideoSettings(frames=13, enter_leave=False, **{**STILL, "drift": 0.5, "drift_turn": 0.0})
    frames = list(iter_video(small_config((128, 128)), 5, settings))
    expected = np.subtract(frames[12].offset, frames[0].offset)
    assert np.hypot(*expected) == pytest.approx(12 * 0.5)
    window = cv2.createHanningWindow((128, 128), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(frames[0].image.astype(np.float64), frames[12].image.astype(np.float64), window)
    assert np.hypot(dx - expected[0], dy - expected[1]) < 0.5, ((dx, dy), expected)


def test_noise_and_flicker_are_redrawn_every_frame():
    noisy = list(iter_video(small_config(), 8, VideoSettings(frames=3, enter_leave=False, **{**STILL, "noise": 0.02})))
    difference = noisy[2].image - noisy[1].image
    # Independent noise per frame: the difference has std sqrt(2) * 0.02 (a little less where clipped).
    assert 0.022 < difference.std() < 0.03
    gains = [f.gain for f in iter_video(small_config(), 8, VideoSettings(frames=20, **{**STILL, "flicker": 0.05}))]
    assert len(set(gains)) == 20 and 0.01 < np.std(gains) < 0.1


def _read_mp4(path):
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]


def test_write_video_round_trip(tmp_path):
    import pyarrow.parquet as pq

    config, settings = small_config(), VideoSettings(frames=20)
    video, truth = write_video(tmp_path / "out", config, 1, settings, progress=False)
    assert (video, truth) == (tmp_path / "out" / "video.mp4", tmp_path / "out" / "ground_truth.parquet")
    frames = list(iter_video(config, 1, settings))
    decoded = _read_mp4(video)
    assert len(decoded) == 20 and decoded[0].shape == (96, 96)
    # Measured 2.3-2.4 levels at crf 18: mostly the per-frame white noise (std 0.01 =
    # 2.55 levels, mean |.| 2.0) that x264 smooths away; without noise it is ~1.3.
    error = np.mean([np.abs(np.round(f.image * 255) - d).mean() for f, d in zip(frames, decoded)])
    assert error < 3.0

    table = pq.read_table(truth)
    assert table.num_rows == sum(len(f.track_ids) for f in frames)
    assert str(table.schema.field("x").type) == "list<element: float>"
    rows = table.to_pylist()
    expected = [(f, t, line) for f in frames for t, line in zip(f.track_ids.tolist(), f.centrelines)]
    for row, (frame, track, line) in zip(rows, expected):
        assert (row["frame"], row["track_id"]) == (frame.index, track)
        assert row["time_s"] == pytest.approx(frame.index / settings.fps)
        np.testing.assert_array_equal(np.float32(row["x"]), line[:, 0].astype(np.float32))
        np.testing.assert_array_equal(np.float32(row["y"]), line[:, 1].astype(np.float32))
    metadata = table.schema.metadata
    assert json.loads(metadata[b"seed"]) == 1
    assert VideoSettings.model_validate(json.loads(metadata[b"settings"])) == settings
    document = json.loads((tmp_path / "out" / "video.json").read_text())
    assert document["seed"] == 1
    assert Scene.model_validate(document["scene"]) == frames[0].scene
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_lossless_encoding_keeps_pixels(tmp_path):
    config, settings = small_config(), VideoSettings(frames=3, crf=0)
    video, _ = write_video(tmp_path / "out", config, 2, settings, progress=False)
    for frame, decoded in zip(iter_video(config, 2, settings), _read_mp4(video)):
        # Only the gray <-> limited-range YUV conversion rounds.
        assert np.abs(np.round(frame.image * 255) - decoded).max() <= 1


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    write_video(out, small_config(), 1, VideoSettings(frames=2), progress=False)
    before = (out / "video.mp4").read_bytes()
    with pytest.raises(FileExistsError, match="out"):
        write_video(out, small_config(), 2, VideoSettings(frames=2), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "video.mp4").read_bytes() == before
    write_video(out, small_config(), 2, VideoSettings(frames=2), overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["ground_truth.parquet", "video.json", "video.mp4"]
    assert json.loads((out / "video.json").read_text())["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_overwrite_refuses_a_folder_synth_did_not_write(tmp_path, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="does not look like a tem-track synth dataset.*not replaced"):
        write_video(out, small_config(), 1, VideoSettings(frames=2), overwrite=overwrite, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["mine.txt"]


def test_overwrite_refuses_a_synth_folder_holding_other_files(tmp_path):
    out = tmp_path / "out"
    write_video(out, small_config(), 1, VideoSettings(frames=2), progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"also holds files tem-track synth did not write \(notes.txt\)"):
        write_video(out, small_config(), 1, VideoSettings(frames=2), overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_an_empty_folder_is_used_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    write_video(tmp_path / "out", small_config(), 1, VideoSettings(frames=2), progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ground_truth.parquet", "video.json", "video.mp4"]


def test_a_video_written_before_the_format_marker_is_still_replaced(tmp_path):
    out = tmp_path / "out"
    write_video(out, small_config(), 1, VideoSettings(frames=2), progress=False)
    document = json.loads((out / "video.json").read_text())
    assert document.pop("format") == "tem-track-synth-video"
    (out / "video.json").write_text(json.dumps(document))
    write_video(out, small_config(), 2, VideoSettings(frames=2), overwrite=True, progress=False)
    assert json.loads((out / "video.json").read_text())["seed"] == 2


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("boom at frame 5")
        return real(*args, **kwargs)

    real = video_module.compose
    monkeypatch.setattr(video_module, "compose", failing)
    with pytest.raises(RuntimeError, match="boom"):
        write_video(tmp_path / "out", small_config(), 1, VideoSettings(frames=10), progress=False)
    assert list(tmp_path.iterdir()) == []

    # A failed overwrite leaves the previous output as it was.
    monkeypatch.setattr(video_module, "compose", real)
    write_video(tmp_path / "out", small_config(), 1, VideoSettings(frames=2), progress=False)
    old = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    monkeypatch.setattr(video_module, "compose", failing)
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        write_video(tmp_path / "out", small_config(), 1, VideoSettings(frames=10), overwrite=True, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == old


def test_odd_frame_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "out", small_config((97, 96)), 1, VideoSettings(frames=2), progress=False)
    assert list(tmp_path.iterdir()) == []
