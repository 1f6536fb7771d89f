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
    assert main([str(video), "--objects", "loops", "--out", str(tmp_path / "m.parquet"), "--plots", str(plots)]) == 0
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
