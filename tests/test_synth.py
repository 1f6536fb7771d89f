"""The synthetic image generator: backgrounds, presets, rendering, ground truth, files."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from temtrack.training.synth import (
    ConfigError,
    Scene,
    SceneError,
    generate_sample,
    get_preset,
    render_scene,
    sample_scene,
    validate_config,
)
from temtrack.training.synth.background import (
    BackgroundError,
    perlin_background,
    perlin_noise,
)
from temtrack.training.synth.render import render_background
from temtrack.training.synth.shapes import dense_curve, sample_support_points, to_local_frame
from temtrack.sdk.groundtruth import DatasetError, read_sample
from temtrack.training.synth.storage import regenerate, to_uint8, write_dataset


def small(preset: str, size: int = 128, **pileups):
    """A preset at ``size`` px with slip widths that fit the smaller image."""
    data = get_preset(preset).model_dump()
    data["size"] = (size, size)
    data["pileups"].update({"slip_width": (30.0, 60.0), **pileups})
    return validate_config(data)


# --- backgrounds -----------------------------------------------------------------------


def test_perlin_wavelength_sets_the_texture_scale():
    fine = perlin_noise((256, 256), 8, np.random.default_rng(0))
    coarse = perlin_noise((256, 256), 32, np.random.default_rng(0))
    ratio = np.abs(np.diff(fine, axis=1)).mean() / np.abs(np.diff(coarse, axis=1)).mean()
    assert 3.0 < ratio < 5.0  # gradients scale as 1 / wavelength
    # Continuous across cell borders: no step larger than the gradient bound allows.
    assert np.abs(np.diff(fine, axis=1)).max() < 2.5 / 8
    assert np.abs(np.diff(fine, axis=0)).max() < 2.5 / 8


def test_perlin_background_without_white_noise_is_minmax_of_two_layers():
    rng = np.random.default_rng(3)
    p3 = perlin_noise((64, 80), 20, rng) + np.float32(0.3) * perlin_noise((64, 80), 7, rng)
    expected = (p3 - p3.min()) / (p3.max() - p3.min())
    got = perlin_background(
        (64, 80), wavelength1=20, wavelength2=7, w_perlin=0.3, w_white1=0.0, s1=0.0, r_noise=0.0, s2=0.0, seed=3
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_perlin_background_range_and_seed():
    kw = dict(wavelength1=50, wavelength2=12, w_perlin=0.3, w_white1=0.6, s1=1.0, r_noise=0.3, s2=0.7)
    a = perlin_background((96, 96), seed=1, **kw)
    assert a.dtype == np.float32 and a.shape == (96, 96)
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, perlin_background((96, 96), seed=1, **kw))
    assert not np.array_equal(a, perlin_background((96, 96), seed=2, **kw))


# --- config and presets ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, words",
    [
        ({"pileups": {"colour": 3}}, "colour"),
        ({"pileups": {"slip_width": (300.0, 100.0)}}, "low <= high"),
        ({"render": {"gray_factor": (0.1, 1.5)}}, "gray_factor"),
        ({"size": (8, 8)}, "size"),
        ({"shapes": {"weights": {"spiral": 1.0}}}, "spiral"),
    ],
)
def test_bad_config_names_the_problem(change, words):
    data = get_preset("sd2").model_dump()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=words):
        validate_config(data)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="sd1, sd1_real, sd2, sd2_real, sd3, sd3_real"):
        get_preset("sd7")


def test_presets_are_data_that_round_trip_through_json():
    for name in ("sd1", "sd2", "sd3"):
        config = get_preset(name)
        assert validate_config(json.loads(config.to_json())) == config


@pytest.mark.parametrize("preset", ["sd1", "sd2"])
def test_no_overlap_presets_keep_dislocations_apart(preset):
    for seed in range(8):
        sample = generate_sample(small(preset, 160), seed)
        total = sample.masks.sum(axis=0)
        assert total.max() <= 1, f"seed {seed}: masks overlap"


def test_sd2_counts_follow_the_thesis():
    config = get_preset("sd2")
    for seed in range(10):
        scene = sample_scene(config, seed)
        assert 1 <= len(scene.pileups) <= 4
        assert len(scene.dislocations) <= 20
        assert all(1 <= len(p.dislocations) <= 8 for p in scene.pileups)


def test_sd1_pileups_share_one_orientation():
    config = get_preset("sd1")
    for seed in range(10):
        angles = [p.angle for p in sample_scene(config, seed).pileups]
        assert np.ptp(angles) <= 2 * config.pileups.orientation_jitter + 1e-9


def test_sd3_has_overlaps_and_clutter():
    scenes = [sample_scene(get_preset("sd3"), seed) for seed in range(20)]
    assert any(s.grain_boundaries for s in scenes)
    assert any(s.slip_traces for s in scenes)
    assert any(s.spots for s in scenes)
    assert max(len(s.dislocations) for s in scenes) <= 20
    overlapping = [generate_sample(get_preset("sd3"), seed).masks.sum(axis=0).max() > 1 for seed in range(10)]
    assert any(overlapping)


# --- shapes ------------------------------------------------------------------------------


def test_every_shape_family_spans_the_local_frame():
    params = get_preset("sd3").shapes
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        family, points = sample_support_points(params, rng)
        seen.add(family)
        assert points[0, 1] == pytest.approx(0.0, abs=1e-12) and points[-1, 1] == pytest.approx(1.0, abs=1e-12)
    assert seen == {"straight", "bowed", "s_shaped", "wavy", "sharp_turn", "hook"}


def test_spline_passes_through_its_support_points():
    support = np.array([[0.0, 0.0], [0.1, 0.3], [-0.05, 0.6], [0.0, 1.0]])
    curve = dense_curve(support, scale=100.0)
    gaps = [np.hypot(*(curve - p).T).min() for p in support * 100.0]
    assert max(gaps) < 0.3
    assert np.hypot(*np.diff(curve, axis=0).T).max() < 0.5


def test_local_frame_of_an_image_polyline():
    points = np.array([[10.0, 10.0], [30.0, 12.0], [50.0, 10.0]])
    local = to_local_frame(points)
    np.testing.assert_allclose(local[0], [0, 0], atol=1e-12)
    np.testing.assert_allclose(local[-1], [0, 1], atol=1e-12)
    assert abs(local[1, 0]) == pytest.approx(2.0 / 40.0)


# --- rendering and ground truth ------------------------------------------------------------


def test_sample_shapes_and_types():
    sample = generate_sample(small("sd2"), 4)
    n = len(sample.ids)
    assert sample.image.dtype == np.float32 and sample.image.shape == (128, 128)
    assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
    assert sample.masks.dtype == np.uint8 and sample.masks.shape == (n, 128, 128)
    assert set(np.unique(sample.masks)) <= {0, 1}
    assert len(sample.centrelines) == n and all(c.shape[1] == 2 for c in sample.centrelines)
    assert all(m.any() for m in sample.masks)


def test_centrelines_lie_on_their_masks():
    for seed in range(5):
        sample = generate_sample(get_preset("sd3"), seed)
        for mask, line in zip(sample.masks, sample.centrelines):
            distance = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)
            cols = np.clip(np.round(line[:, 0]).astype(int), 0, mask.shape[1] - 1)
            rows = np.clip(np.round(line[:, 1]).astype(int), 0, mask.shape[0] - 1)
            assert distance[rows, cols].max() <= 1.0


def test_dislocations_are_darkened_by_the_gray_value_factor():
    # Thesis 2.3: gray value = background - factor * U(0.75, 1) on the dislocation.
    scene = sample_scene(small("sd2", 160), 11)
    finish = scene.finish.model_copy(update={"blur": 0.0, "noise": 0.0, "vignetting": 0.0, "gradient": 0.0, "dark_field": False})
    scene = scene.model_copy(update={"finish": finish, "slip_traces": [], "spots": [], "grain_boundaries": []})
    background = render_background(scene)
    sample = render_scene(scene)
    for spec_id, line in zip(sample.ids, sample.centrelines):
        spec = next(d for d in scene.dislocations if d.id == spec_id)
        rows, cols = np.round(line[5:-5, 1]).astype(int), np.round(line[5:-5, 0]).astype(int)
        drop = (background - sample.image)[rows, cols]
        unclipped = background[rows, cols] > spec.gray_factor  # away from clipping at 0
        drop = drop[unclipped]
        assert drop.max() <= spec.gray_factor + 1.5 / 255
        assert np.median(drop) >= 0.6 * spec.gray_factor


def test_dark_field_shows_bright_lines():
    scene = sample_scene(small("sd2", 128), 5)
    bright = render_scene(scene.model_copy(update={"finish": scene.finish.model_copy(update={"dark_field": True})}))
    dark = render_scene(scene.model_copy(update={"finish": scene.finish.model_copy(update={"dark_field": False})}))
    on = bright.masks.any(axis=0)
    assert bright.image[on].mean() > bright.image[~on].mean()
    assert dark.image[on].mean() < dark.image[~on].mean()


def test_same_seed_same_sample_and_other_seed_differs():
    a, b = generate_sample("sd3", 21, size=128), generate_sample("sd3", 21, size=128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, generate_sample("sd3", 22, size=128).image)


def test_scene_json_alone_regenerates_the_sample():
    sample = generate_sample(get_preset("sd3"), 9)
    again = render_scene(Scene.from_json(sample.scene.model_dump_json()))
    np.testing.assert_array_equal(again.image, sample.image)
    np.testing.assert_array_equal(again.masks, sample.masks)


def test_malformed_scene_is_a_clear_error():
    data = json.loads(generate_sample(small("sd2"), 1).scene.model_dump_json())
    data["dislocations"][0]["slip_width"] = "wide"
    with pytest.raises(SceneError, match="slip_width"):
        Scene.from_json(json.dumps(data), source="x.json")


def test_labelme_shapes_join_the_library(tmp_path):
    from temtrack.sdk.labelme import write_labelme

    zigzag = np.array([[0.0, 0.0], [8.0, 20.0], [0.0, 40.0], [8.0, 60.0], [0.0, 80.0]])
    path = write_labelme(tmp_path / "shape.json", [zigzag], image_shape=(100, 100))
    data = get_preset("sd2").model_dump()
    data["size"] = (128, 128)
    data["pileups"].update(slip_width=(40.0, 60.0))
    data["shapes"].update(weights={"labelme": 1.0}, labelme_files=(str(path),), jitter=(0.0, 0.0))
    scene = sample_scene(validate_config(data), 0)
    assert {d.family for d in scene.dislocations} == {"labelme"}
    support = np.asarray(scene.dislocations[0].support)
    np.testing.assert_allclose(np.abs(support[:, 0]), np.abs(to_local_frame(zigzag)[:, 0]), atol=1e-9)


def test_patch_background_errors(tmp_path):
    data = get_preset("sd2").model_dump()
    data["background"]["mode"] = "patches"
    config = validate_config(data)
    with pytest.raises(ValueError, match="background folder"):
        sample_scene(config, 0)
    with pytest.raises(BackgroundError, match="no image"):
        sample_scene(config, 0, backgrounds=tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BackgroundError, match="cannot read"):
        sample_scene(config, 0, backgrounds=tmp_path)


def test_patch_background_refuses_changed_files(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"bg{k}.png"), rng.integers(80, 200, (200, 240), dtype=np.uint8))
    data = get_preset("sd2").model_dump()
    data["background"]["mode"] = "patches"
    data["size"] = (96, 96)
    data["pileups"]["slip_width"] = (30.0, 50.0)
    scene = sample_scene(validate_config(data), 0, backgrounds=tmp_path)
    np.testing.assert_array_equal(render_scene(scene).image, render_scene(scene).image)
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"bg{k}.png"), np.full((200, 240), 9, np.uint8))
    from temtrack.training.synth.background import _list_patch_folder

    _list_patch_folder.cache_clear()
    with pytest.raises(BackgroundError, match="differs"):
        render_scene(scene)


# --- dataset files ---------------------------------------------------------------------------


def test_dataset_round_trip_and_regeneration(tmp_path):
    out = write_dataset(tmp_path / "ds", small("sd3"), 3, seed=5, progress=False)
    header = json.loads((out / "dataset.json").read_text())
    assert header["n"] == 3 and header["seed"] == 5
    for index in range(3):
        stored = read_sample(out, index)
        again = regenerate(out / "labels" / f"{index:06d}.json")
        np.testing.assert_array_equal(to_uint8(again.image), to_uint8(stored.image))
        np.testing.assert_array_equal(again.masks, stored.masks)
        for a, b in zip(again.centrelines, stored.centrelines):
            np.testing.assert_allclose(a, b, atol=0.006)


def test_dataset_files_are_byte_identical(tmp_path):
    a = write_dataset(tmp_path / "a", small("sd3"), 3, seed=1, progress=False)
    b = write_dataset(tmp_path / "b", small("sd3"), 3, seed=1, workers=2, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_dataset_refuses_to_overwrite_and_resumes(tmp_path):
    config = small("sd2")
    out = write_dataset(tmp_path / "ds", config, 4, seed=2, progress=False)
    with pytest.raises(FileExistsError, match="exists"):
        write_dataset(out, config, 4, seed=2, progress=False)
    # An interrupted run: the partial folder holds two complete samples.
    partial = tmp_path / "again.partial"
    write_dataset(tmp_path / "again", config, 4, seed=2, progress=False).rename(partial)
    for name in ("000002", "000003"):
        (partial / "labels" / f"{name}.json").unlink()
    with pytest.raises(FileExistsError, match="resume"):
        write_dataset(tmp_path / "again", config, 4, seed=2, progress=False)
    with pytest.raises(DatasetError, match="other settings"):
        write_dataset(tmp_path / "again", config, 4, seed=3, resume=True, progress=False)
    resumed = write_dataset(tmp_path / "again", config, 4, seed=2, resume=True, progress=False)
    assert not partial.exists()
    for rel in ("labels/000003.json", "images/000002.png", "masks/000003.npz"):
        assert (resumed / rel).read_bytes() == (out / rel).read_bytes()


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_dataset_overwrite_replaces_only_what_synth_wrote(tmp_path, overwrite):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\chapter{Dislocations}")
    (thesis / "chapters" / "one.tex").write_text("text")
    before = _tree(thesis)
    with pytest.raises(FileExistsError, match="does not look like a tem-track synth dataset.*not replaced"):
        write_dataset(thesis, small("sd2", 64), 1, overwrite=overwrite, progress=False)
    assert _tree(thesis) == before and sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]
    # A folder with a dataset.json of someone else's format is not ours either.
    (thesis / "dataset.json").write_text(json.dumps({"format": "coco"}))
    with pytest.raises(FileExistsError, match="does not look like"):
        write_dataset(thesis, small("sd2", 64), 1, overwrite=True, progress=False)
    # Nor is a file.
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        write_dataset(tmp_path / "notes.txt", small("sd2", 64), 1, overwrite=True, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_dataset_overwrite_replaces_a_dataset_but_not_files_added_to_it(tmp_path):
    out = write_dataset(tmp_path / "ds", small("sd2", 64), 1, seed=1, progress=False)
    again = write_dataset(out, small("sd2", 64), 2, seed=2, overwrite=True, progress=False)
    assert json.loads((again / "dataset.json").read_text())["n"] == 2
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"also holds files tem-track synth did not write \(notes.txt\)"):
        write_dataset(out, small("sd2", 64), 1, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "dataset.json").read_text())["n"] == 2


def test_dataset_goes_into_an_empty_folder(tmp_path):
    (tmp_path / "ds").mkdir()
    write_dataset(tmp_path / "ds", small("sd2", 64), 1, progress=False)
    assert (tmp_path / "ds" / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_dataset_refuses_a_partial_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "ds.partial").mkdir()
    (tmp_path / "ds.partial" / "mine.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="not an interrupted tem-track synth run"):
            write_dataset(tmp_path / "ds", small("sd2", 64), 1, resume=resume, progress=False)
    assert [p.name for p in (tmp_path / "ds.partial").iterdir()] == ["mine.txt"]


def test_dataset_failing_before_any_sample_leaves_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackgroundError, match="holds no image"):
        write_dataset(tmp_path / "ds", small("sd2", 64), 1, backgrounds=tmp_path / "empty", progress=False)
    config = small("sd2", 64)
    patches = validate_config({**config.model_dump(), "background": {**config.background.model_dump(), "mode": "patches"}})
    with pytest.raises(ValueError, match="--backgrounds"):  # needs patches, none given: fails in the first sample
        write_dataset(tmp_path / "ds", patches, 1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# --- command line -----------------------------------------------------------------------------


def test_cli_version_imports_nothing_heavy():
    code = (
        "import sys; from temtrack import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'cv2', 'torch', 'scipy', 'av', 'pydantic') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "tem-track" in out and out.strip().endswith("[]")


def test_cli_synth_writes_a_dataset_and_reports_errors(tmp_path):
    from temtrack.cli import main

    assert main(["synth", "--preset", "sd3", "--n", "2", "--size", "96", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 2
    assert main(["synth", "--preset", "sd3", "--n", "2", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert main(["synth", "--preset", "nope", "--out", str(tmp_path / "e")]) == 2
    assert main(["synth", "--backgrounds", str(tmp_path / "missing"), "--n", "1", "--out", str(tmp_path / "f")]) == 2
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


def test_dataset_labelme_output_matches_the_centrelines(tmp_path):
    from temtrack.sdk.groundtruth import read_labelme

    out = write_dataset(tmp_path / "ds", small("sd2"), 2, seed=4, progress=False, labelme=True)
    for index in range(2):
        stored = read_sample(out, index)
        annotation = read_labelme(out / "images" / f"{index:06d}.json")
        assert annotation.image_path == f"{index:06d}.png"
        assert annotation.group_ids == [int(i) for i in stored.ids]
        for a, b in zip(annotation.centrelines, stored.centrelines):
            np.testing.assert_allclose(a, b, atol=0.006)
