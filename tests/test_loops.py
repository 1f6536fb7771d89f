"""Loops and black dots: generator, classical detector, linking and D_eff (issue 21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from temtrack.sdk.loops import LoopSettings, detect_loops, track_loops
from temtrack.tracker.loops import LoopLinkSettings, diffusion, link_loops, track_summary
from temtrack.training.synth.loops import LoopObject, LoopVideoSettings, iter_loop_video, sample_objects, write_loop_video


def _isolated(kind, x, y, size, aspect=1.0, angle=0.0, loop_id=0):
    return LoopObject(loop_id=loop_id, kind=kind, birth=0, death=10**6, x=x, y=y, size=size, aspect=aspect,
                      angle=angle, contrast=0.35, D=0.0, motion="2d", direction=None)


def _with_truth(objects, settings):
    # Fill in the ground-truth ellipse the same way sample_objects does.
    from temtrack.training.synth.loops import _truth_ellipse

    out = []
    for obj in objects:
        major, minor, angle = _truth_ellipse(obj, settings.blur)
        out.append(obj.model_copy(update={"major": major, "minor": minor, "ellipse_angle": angle}))
    return out


QUIET = LoopVideoSettings(size=(128, 192), frames=1, noise=0.005)


@pytest.mark.parametrize(
    "kind, size, aspect, angle",
    [("dot", 10.0, 1.0, 0.0), ("dot", 16.0, 1.0, 0.0), ("ring", 14.0, 0.7, 30.0), ("ring", 18.0, 1.0, 0.0), ("bean", 16.0, 0.75, 120.0)],
)
def test_isolated_object_centre_and_axes(kind, size, aspect, angle):
    objects = _with_truth([_isolated(kind, 80.3, 60.6, size, aspect, angle)], QUIET)
    frame = next(iter_loop_video(QUIET, 0, objects=objects))
    found = detect_loops(frame.image)
    assert len(found) == 1
    truth = frame.truth
    np.testing.assert_allclose([found.x[0], found.y[0]], [truth["x"][0], truth["y"][0]], atol=0.3)  # px
    np.testing.assert_allclose([found.major[0], found.minor[0]], [truth["major"][0], truth["minor"][0]], atol=1.0)  # px


def test_several_objects_all_found():
    settings = LoopVideoSettings(size=(192, 192), frames=1, count=8, noise=0.01)
    frame = next(iter_loop_video(settings, 3))
    found = detect_loops(frame.image)
    assert len(found) == len(frame.truth["x"])
    dist = np.hypot(found.x.values[:, None] - frame.truth["x"][None], found.y.values[:, None] - frame.truth["y"][None])
    assert (dist.min(axis=0) < 1.0).all()


@pytest.mark.parametrize("gap", [1.0, 2.0, 3.0])
def test_touching_loops_are_split_in_two(gap):
    """Two black dots whose half-maximum ellipses are ``gap`` px apart are one joined
    object at the join level (30 % of the peak, closed by 2 px); the watershed split
    gives two, each with its own size within 1 px. Without the split (``split_aspect``
    out of reach) they come out as one object about twice as long."""
    objects = _with_truth([_isolated("dot", 70.3, 60.6, 12.0), _isolated("dot", 0.0, 60.6, 12.0, loop_id=1)], QUIET)
    objects[1] = objects[1].model_copy(update={"x": 70.3 + (objects[0].major + objects[1].major) / 2 + gap})
    frame = next(iter_loop_video(QUIET, 0, objects=objects))
    found = detect_loops(frame.image).sort_values("x", ignore_index=True)
    assert len(found) == 2
    np.testing.assert_allclose(found.major, frame.truth["major"], atol=1.0)  # px
    np.testing.assert_allclose(found.x, frame.truth["x"], atol=0.5)  # px
    joined = detect_loops(frame.image, settings=LoopSettings(split_aspect=100.0))
    assert len(joined) == 1 and joined.major[0] > 1.8 * frame.truth["major"].max()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_coffee_bean_with_a_wide_line_of_no_contrast_is_one_object(seed):
    """A large, faint bean (17.8 px, the one that generator seed 3 splits) on the
    default textured, noisy background: its line of no contrast is wider than the
    closing bridges, so its two lobes are found alone (checked with the pairing off);
    they are parallel, alike and face each other, and are joined into one object whose
    centre is the bean's within 0.5 px and whose axes are within 1 px."""
    settings = LoopVideoSettings(size=(128, 192), frames=1)
    bean = _isolated("bean", 90.3, 60.6, 17.8, 0.65, 110.4).model_copy(update={"contrast": 0.29})
    frame = next(iter_loop_video(settings, seed, objects=_with_truth([bean], settings)))
    apart = detect_loops(frame.image, settings=LoopSettings(pair_lobes=False))
    assert len(apart) == 2 and (apart.major < 0.7 * frame.truth["major"][0]).all()
    found = detect_loops(frame.image)
    assert len(found) == 1
    np.testing.assert_allclose([found.x[0], found.y[0]], [frame.truth["x"][0], frame.truth["y"][0]], atol=0.5)  # px
    np.testing.assert_allclose([found.major[0], found.minor[0]], [frame.truth["major"][0], frame.truth["minor"][0]], atol=1.0)


def test_lobe_pairing_leaves_round_and_unlike_neighbours_apart():
    """Two dots side by side (round: no lobe axis) and a ring beside a bean stay
    separate objects: the pairing changes nothing."""
    objects = _with_truth([_isolated("dot", 50.3, 60.6, 12.0), _isolated("dot", 64.3, 60.6, 12.0, loop_id=1),
                           _isolated("ring", 120.0, 60.0, 16.0, 0.7, 90.0, loop_id=2),
                           _isolated("bean", 140.0, 60.0, 16.0, 0.7, 90.0, loop_id=3)], QUIET)
    frame = next(iter_loop_video(QUIET, 0, objects=objects))
    found = detect_loops(frame.image).sort_values("x", ignore_index=True)
    assert len(found) == 4
    np.testing.assert_allclose(found.x, np.sort(frame.truth["x"]), atol=1.0)  # px
    pd.testing.assert_frame_equal(found, detect_loops(frame.image, settings=LoopSettings(pair_lobes=False))
                                  .sort_values("x", ignore_index=True))


def test_detection_does_not_depend_on_where_the_frame_sits_in_memory():
    """Frame 84 of generator video 2 holds two touching objects whose watershed split is
    a near-tie. With OpenCV's precise distance transform (last-bit differences from call
    to call) about one call in four split them differently; the exact distance gives the
    same table every time. Twelve calls, each on a fresh copy after other allocations."""
    frame = next(f for f in iter_loop_video(LoopVideoSettings(), 2) if f.index == 84)
    first = detect_loops(frame.image)
    held = []
    for k in range(12):
        held.append(np.empty(97 * k + 13, np.uint8))  # moves the next arrays' addresses
        pd.testing.assert_frame_equal(detect_loops(np.array(frame.image, copy=True)), first)


def test_white_overlay_and_excluded_box_are_ignored():
    objects = _with_truth([_isolated("dot", 40.0, 40.0, 12.0), _isolated("dot", 140.0, 80.0, 12.0, loop_id=1)], QUIET)
    image = next(iter_loop_video(QUIET, 0, objects=objects)).image.copy()
    image[95:100, 10:110] = 1.0  # a white scale bar with a dark outline
    image[93:95, 10:110] = 0.05
    image[100:102, 10:110] = 0.05
    found = detect_loops(image, settings=LoopSettings(exclude=((120, 60, 160, 100),)))
    assert len(found) == 1 and abs(found.x[0] - 40.0) < 0.5


def test_input_not_modified_and_validation():
    image = np.full((32, 32), 0.5, np.float32)
    copy = image.copy()
    assert len(detect_loops(image)) == 0
    np.testing.assert_array_equal(image, copy)
    with pytest.raises(ValueError, match="2-D"):
        detect_loops(np.zeros((2, 8, 8)))
    with pytest.raises(TypeError, match="unknown loop option"):
        LoopSettings.from_dict({"threshhold": 3})
    with pytest.raises(ValueError, match="pair_gap"):
        LoopSettings(pair_gap=0)
    with pytest.raises(TypeError, match="pair_lobes"):
        LoopSettings(pair_lobes="yes")


def test_diffusion_recovery_of_a_random_walk():
    # n steps of a 2-D walk: relative SD of D from the MSD fit ~ sqrt(2 / (d n)) ~ 0.02 for
    # n = 2000, d = 2; a tolerance of 10 % is 5 standard deviations.
    rng = np.random.default_rng(1)
    D = 0.3
    walk = np.cumsum(rng.normal(0.0, np.sqrt(2 * D), (2000, 2)), axis=0)
    out = diffusion(np.arange(2000), walk, bootstrap=100)
    assert abs(out["D_2d"] / D - 1) < 0.1
    assert out["D_2d_low"] < D < out["D_2d_high"]
    # 1-D hops along 60 degrees: D = p h^2 / 2.
    p, h = 0.3, 2.0
    steps = (rng.random(2000) < p) * rng.choice([-h, h], 2000)
    axis = np.array([np.cos(np.radians(60)), np.sin(np.radians(60))])
    hops = np.cumsum(steps[:, None] * axis, axis=0) + rng.normal(0, 0.05, (2000, 2))
    out = diffusion(np.arange(2000), hops, bootstrap=0)
    assert abs(out["D_1d"] / (p * h * h / 2) - 1) < 0.15
    assert abs(out["direction"] - 60) < 2


def test_covariance_estimator_is_unbiased_under_localisation_noise():
    """A slow walk (D = 0.05 px² per frame) seen with 0.5 px localisation noise: the mean
    squared step alone is 2 D + 2 sigma² = 0.6, six times 2 D; the covariance estimator
    removes the noise. Over 40 tracks of 50 frames its median is within 10 % of D (the
    median of 40 tracks has a spread of ~5 %), its predicted SD matches the scatter of
    the estimates within 30 %, and the 95 % interval covers D in 85-100 % of tracks."""
    from temtrack.tracker.loops import cve

    rng = np.random.default_rng(3)
    D, sigma, n = 0.05, 0.5, 50
    estimates, sds = [], []
    for _ in range(40):
        walk = np.cumsum(rng.normal(0, np.sqrt(2 * D), (n, 2)), axis=0) + rng.normal(0, sigma, (n, 2))
        out = diffusion(np.arange(n), walk)
        estimates.append(out["D_2d"])
        sds.append((out["D_2d_high"] - out["D_2d_low"]) / (2 * 1.96))
    estimates = np.array(estimates)
    assert abs(np.median(estimates) / D - 1) < 0.1
    assert 0.7 < np.median(sds) / estimates.std() < 1.3
    lows, highs = estimates - 1.96 * np.array(sds), estimates + 1.96 * np.array(sds)
    assert 0.85 <= np.mean((lows <= D) & (D <= highs)) <= 1.0
    walk = np.cumsum(rng.normal(0, np.sqrt(2 * D), 400))
    assert cve(np.arange(400), walk)[0] == pytest.approx(np.mean(np.diff(walk) ** 2) / 2 + np.mean(np.diff(walk)[1:] * np.diff(walk)[:-1]))
    frames = np.delete(np.arange(400), [100, 101, 250])  # gaps: only steps between consecutive frames count
    assert cve(frames, walk[frames])[2] == 399 - 5


def test_pooled_noise_estimator_is_tighter_than_the_covariance_one():
    """120 tracks of 120 frames, D log-uniform over 0.01-1 px² per frame, all seen with
    the same 0.06 px localisation noise (the detector's jitter on the synthetic videos):
    the noise pooled over tracks comes out within 50 % of sigma² (3.6e-3 px²); with it the
    per-track relative error of D has a median at least a quarter below the covariance
    estimator's (whose spread is about sqrt(3) times the ideal when the noise is small)
    and its median ratio is within 5 % of 1; its 95 % interval covers D in 85-100 % of
    tracks. Without the pooled noise the estimator refuses to run."""
    from temtrack.tracker.loops import pooled_noise

    rng = np.random.default_rng(5)
    sigma, n = 0.06, 120
    tracks = []
    for _ in range(120):
        D = 10 ** rng.uniform(-2, 0)
        tracks.append((np.arange(n), np.cumsum(rng.normal(0, np.sqrt(2 * D), (n, 2)), axis=0) + rng.normal(0, sigma, (n, 2)), D))
    noise = pooled_noise((frames, points) for frames, points, _ in tracks)
    assert noise == pytest.approx(sigma**2, rel=0.5)
    pooled = [diffusion(f, p, estimator="pooled", noise=noise, bootstrap=0) for f, p, _ in tracks]
    ratio = np.array([out["D_2d"] / D for out, (_, _, D) in zip(pooled, tracks)])
    ratio_cve = np.array([diffusion(f, p)["D_2d"] / D for f, p, D in tracks])
    assert np.median(np.abs(ratio - 1)) < 0.75 * np.median(np.abs(ratio_cve - 1))
    assert abs(np.median(ratio) - 1) < 0.05
    covered = [out["D_2d_low"] <= D <= out["D_2d_high"] for out, (_, _, D) in zip(pooled, tracks)]
    assert 0.85 <= np.mean(covered) <= 1.0
    with pytest.raises(ValueError, match="pooled"):
        diffusion(np.arange(n), tracks[0][1], estimator="pooled")
    # track_summary pools the noise over the tracks it is given.
    linked = pd.concat([pd.DataFrame({"frame": f, "track_id": k, "x": p[:, 0], "y": p[:, 1]}) for k, (f, p, _) in enumerate(tracks)])
    summary = track_summary(linked, settings=LoopLinkSettings(estimator="pooled", bootstrap=0))
    np.testing.assert_allclose(summary.D_2d, [out["D_2d"] for out in pooled], rtol=1e-9)


def test_linking_keeps_identities_on_a_short_video():
    settings = LoopVideoSettings(size=(160, 160), frames=30, count=6, birth_rate=0.0, lifetime=(100, 100), d_range=(0.05, 0.5))
    rows = []
    for frame in iter_loop_video(settings, 5):
        found = detect_loops(frame.image)
        dist = np.hypot(found.x.values[:, None] - frame.truth["x"][None], found.y.values[:, None] - frame.truth["y"][None])
        rows.append(found.assign(frame=frame.index, gt=frame.truth["loop_id"][dist.argmin(axis=1)]))
    linked = link_loops(pd.concat(rows, ignore_index=True), settings=LoopLinkSettings(search_range=5.0))
    assert linked.track_id.nunique() == 6
    assert (linked.groupby("track_id").gt.nunique() == 1).all()
    summary = track_summary(linked)
    assert (summary.lifetime == 30).all()


def test_generator_is_reproducible_and_d_known():
    settings = LoopVideoSettings(size=(96, 96), frames=3, count=3)
    a = [f.truth["x"] for f in iter_loop_video(settings, 7)]
    b = [f.truth["x"] for f in iter_loop_video(settings, 7)]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    objects = sample_objects(settings, 7)
    assert all(settings.d_range[0] <= o.D <= settings.d_range[1] for o in objects)


def test_track_loops_writes_parquet_with_metadata(tmp_path):
    import pyarrow.parquet as pq

    from temtrack.sdk.results import METADATA_KEY

    settings = LoopVideoSettings(size=(96, 96), frames=5, count=3, birth_rate=0.0)
    frames = np.stack([f.image for f in iter_loop_video(settings, 2)])
    result = track_loops(frames, tmp_path / "loops.parquet")
    table = pq.read_table(result.path)
    assert table.num_rows == len(result.loops) == 15
    assert METADATA_KEY in table.schema.metadata
    with pytest.raises(FileExistsError):
        track_loops(frames, tmp_path / "loops.parquet")


def test_command_line_finds_the_loops_of_a_synthetic_video(tmp_path, capsys):
    """``tem-track VIDEO --objects loops``: the loops of an H.264 video (3 loops, 5 frames)
    in one table; an output that is the input is refused."""
    import pandas as pd

    from temtrack.cli import main

    settings = LoopVideoSettings(size=(96, 96), frames=5, count=3, birth_rate=0.0)
    video, truth = write_loop_video(tmp_path / "v", settings, 2)
    out = tmp_path / "l.parquet"
    assert main([str(video), "--objects", "loops", "--out", str(out)]) == 0
    found = pd.read_parquet(out)
    assert len(found) == len(pd.read_parquet(truth)) == 15  # every loop in every frame, despite the codec
    assert main([str(video), "--objects", "loops", "--out", str(video), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    # With --plots: one picture of sizes, D_eff and trajectories, never over an earlier one.
    plots = tmp_path / "plots"
    assert main([str(video), "--objects", "loops", "--out", str(tmp_path / "m.parquet"), "--plots", str(plots),
                 "--overlay", str(tmp_path / "m.mp4"), "--quiet"]) == 0
    assert (tmp_path / "m.mp4").stat().st_size > 0 and (tmp_path / "m_tracks.parquet").exists()
    import cv2

    picture = cv2.imread(str(plots / "loops.png"))
    assert picture is not None and picture.shape[:2] == (460, 1500)
    assert main([str(video), "--objects", "loops", "--out", str(tmp_path / "n.parquet"), "--plots", str(plots)]) == 2
    assert "loops.png already exists" in capsys.readouterr().err


def test_loop_plot_of_an_empty_run(tmp_path):
    import pandas as pd

    from temtrack.tracker import plot_loops, track_summary

    empty = pd.DataFrame({"frame": [], "track_id": [], "x": [], "y": [], "major": []})
    path = plot_loops(empty, track_summary(empty), tmp_path / "loops.png")
    assert path.stat().st_size > 0 and not list(tmp_path.glob(".*"))  # written whole, no temporary left


def _short_video(frames=12, seed=4):
    settings = LoopVideoSettings(size=(96, 96), frames=frames, count=4, birth_rate=0.0, lifetime=(500, 500), d_range=(0.05, 0.3))
    return np.stack([f.image for f in iter_loop_video(settings, seed)])


def test_interrupted_run_keeps_its_frames_and_resume_gives_the_same_tables(tmp_path, monkeypatch):
    """Ctrl-C after 9 of 12 frames (chunks of 4): the 9 frames stay in .OUT.partial, a plain
    rerun is refused, ``resume`` detects only the last 3 and links the same tracks as an
    uninterrupted run (linking runs once over the whole table)."""
    import temtrack.sdk.loops as loops_module

    frames = _short_video()
    whole = track_loops(frames, tmp_path / "whole.parquet")
    monkeypatch.setattr(loops_module, "_CHUNK_FRAMES", 4)
    real, calls = loops_module.detect_loops, []

    def interrupted(image, **options):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(image, **options)

    monkeypatch.setattr(loops_module, "detect_loops", interrupted)
    out = tmp_path / "loops.parquet"
    with pytest.raises(KeyboardInterrupt):
        track_loops(frames, out)
    partial = tmp_path / ".loops.parquet.partial"
    assert not out.exists() and not (tmp_path / ".loops.parquet.lock").exists()
    assert len(list(partial.glob("chunk-*.json"))) == 3  # frames 0-3, 4-7 and, flushed on the interrupt, 8
    with pytest.raises(FileExistsError, match="--resume"):
        track_loops(frames, out)
    with pytest.raises(ValueError, match="another settings"):
        track_loops(frames, out, resume=True, settings={"threshold": 4.0})
    monkeypatch.setattr(loops_module, "detect_loops", real)
    result = track_loops(frames, out, resume=True)
    assert (result.frames, result.resumed_frames) == (3, 9)
    pd.testing.assert_frame_equal(result.loops, whole.loops)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "whole.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loops.parquet", "loops_tracks.parquet", "whole.parquet",
                                                          "whole_tracks.parquet"]  # no partial, lock or temporary left


def test_a_live_lock_refuses_a_second_writer(tmp_path):
    import os

    (tmp_path / ".loops.parquet.lock").write_text(f"{os.getpid()}\n")
    with pytest.raises(FileExistsError, match="another tem-track run"):
        track_loops(_short_video(frames=2), tmp_path / "loops.parquet")


def test_overlay_draws_each_loop_in_its_track_colour(tmp_path):
    """The overlay has one frame per processed frame and, on each loop's outline, the
    colour of its track (H.264 at crf 20 moves colours by a few levels: 40 allowed)."""
    import av

    from temtrack.sdk.loops import ellipse_curve
    from temtrack.sdk.overlay import is_overlay, track_colour

    frames = _short_video(frames=6)
    result = track_loops(frames, tmp_path / "loops.parquet", overlay=tmp_path / "overlay.mp4")
    assert is_overlay(result.paths["overlay"])
    with av.open(str(result.paths["overlay"])) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) == 6
    for row in result.loops[result.loops.frame == 3].itertuples():
        outline = ellipse_curve(row.x, row.y, row.major, row.minor, row.angle, points=8)[4:8]  # away from the label
        colours = np.array([decoded[3][int(round(y)), int(round(x))] for x, y in outline], float)
        assert np.abs(colours - np.array(track_colour(int(row.track_id)))).max(axis=1).min() < 40
    with pytest.raises(FileExistsError):
        track_loops(frames, tmp_path / "other.parquet", overlay=tmp_path / "overlay.mp4")


@pytest.mark.parametrize("annotations", ["off", "auto"])
def test_burnt_in_text_and_scale_bar_give_no_loops(annotations):
    """Black dose text (sharp, saturated glyphs and periods) and a white scale bar with
    its label burnt into every frame: no loop on them, with the detector's own rules
    ("off") and with the annotation mask from sampled frames ("auto"); the specimen's
    loops away from them are still found."""
    import cv2

    settings = LoopVideoSettings(size=(192, 256), frames=4, count=6, birth_rate=0.0, noise=0.01, lifetime=(500, 500))
    frames, truths = [], []
    for frame in iter_loop_video(settings, 11):
        image = frame.image.copy()
        for text, where, value in (("1.5-2.0 dpa", (120, 180), 0.0), ("5 um", (12, 162), 1.0)):
            ink = np.zeros(image.shape, np.uint8)  # OpenCV draws text on 8-bit images only
            cv2.putText(ink, text, where, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2, cv2.LINE_AA)
            alpha = ink / 255.0
            image = (image * (1 - alpha) + value * alpha).astype(np.float32)
        image[170:174, 8:80] = 1.0
        frames.append(image)
        truths.append(frame.truth)
    result = track_loops(np.stack(frames), settings={"annotations": annotations})
    on_text = (result.loops.y > 160) & (result.loops.x > 110) | (result.loops.y > 145) & (result.loops.x < 90)
    assert not on_text.any(), result.loops[on_text]
    clear = [(t["y"] < 140) & (t["x"] > 12) & (t["x"] < 244) & (t["y"] > 12) for t in truths]
    found = result.loops.groupby("frame").size()
    assert all(found.get(i, 0) >= int(c.sum()) for i, c in enumerate(clear))  # the loops well away from the labels


def test_glyphs_on_a_blended_status_bar_give_no_loops(real_data, monkeypatch):
    """Fecral frame 987 scrolls between clips: the white status bar with the dose text is
    two copies blended, so its glyphs are gray (no burnt-in black) and the white between
    them is too patchy for the white-mark rule. Without any annotation mask, no object is
    found on the bar (rows 655-712); without the white-surround rule there are 9."""
    import temtrack.sdk.loops as loops
    from temtrack.sdk.sources import open_source

    with open_source(real_data / "fecral-loops" / "video.mp4") as source:
        image = next(source.frames(start=987, end=988)).image
    on_bar = lambda found: found[(found.y > 655) & (found.y < 712)]  # noqa: E731
    assert on_bar(detect_loops(image)).empty
    specimen = (detect_loops(image).y < 640).sum()
    monkeypatch.setattr(loops, "_WHITE_SHARE", 1.01)
    assert len(on_bar(detect_loops(image))) >= 5
    assert (detect_loops(image).y < 640).sum() == specimen  # the rule touches no specimen loop


def test_salt_and_pepper_noise_is_filtered_automatically():
    """5 % of the pixels salt or pepper (skimage's default amount): the default median
    "auto" finds the frame's impulse noise and filters it, so every loop is found and
    nothing else; without the median the spikes seed false objects or hide loops."""
    settings = LoopVideoSettings(size=(160, 160), frames=1, count=6, noise=0.01)
    frame = next(iter_loop_video(settings, 8))
    rng = np.random.default_rng(8)
    hit = rng.random(frame.image.shape) < 0.05
    noisy = np.where(hit, (rng.random(frame.image.shape) < 0.5).astype(np.float32), frame.image)
    found = detect_loops(noisy)
    assert len(found) == len(frame.truth["x"]) == 6
    dist = np.hypot(found.x.values[:, None] - frame.truth["x"][None], found.y.values[:, None] - frame.truth["y"][None])
    assert (dist.min(axis=0) < 1.0).all()  # px
    assert len(detect_loops(noisy, settings=LoopSettings(median=0))) != 6
