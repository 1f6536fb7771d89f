"""Tests of temtrack.training.synth.patches: real background patches without dislocations.

Most tests need the real data in ``../shared/data/real`` (relative to the repository
root) and skip without it; that data is read in place and never copied here.
"""

import json
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from temtrack.training.synth import generate_sample, get_preset, validate_config
from temtrack.training.synth.background import list_patch_folder, load_patch, patch_background, patch_view
from temtrack.training.synth.patches import (
    FECRAL_TEXT_TOP,
    FORBIDDEN_MARGIN,
    PROVENANCE,
    SAMPLE_BOXES,
    make_patch_folder,
)
from temtrack.training.synth.render import render_background, render_scene
from temtrack.training.synth.scene import Scene

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

needs_real = pytest.mark.skipif(
    not REAL.is_dir(),
    reason=f"real TEM data not found at {REAL} (a fresh clone has no ../shared/data/real)",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip(f"real TEM data not found at {REAL}")
    out = tmp_path_factory.mktemp("patches") / "backgrounds"
    files = make_patch_folder(REAL, out)
    return out, files


def _provenance(out: Path) -> dict:
    return json.loads((out / PROVENANCE).read_text(encoding="utf-8"))


def _patches_config(**patches):
    base = get_preset("sd3").model_dump()
    background = {**base["background"], "mode": "patches"}
    background["patches"] = {**background["patches"], **patches}
    return validate_config({**base, "name": "sd3-patches", "background": background})


def _samples_only_root(tmp_path: Path) -> Path:
    root = tmp_path / "real"
    root.mkdir()
    (root / "dislocation-samples").symlink_to(REAL / "dislocation-samples", target_is_directory=True)
    return root


# --- needs no real data -------------------------------------------------------------


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="real data folder not found"):
        make_patch_folder(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_root_without_any_source_is_a_clear_error(tmp_path):
    (tmp_path / "real").mkdir()
    with pytest.raises(FileNotFoundError, match="dislocation-samples"):
        make_patch_folder(tmp_path / "real", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the full folder ----------------------------------------------------------------


@needs_real
def test_folder_holds_usable_pngs_with_provenance(folder):
    out, files = folder
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 20
    assert pngs == files
    provenance = _provenance(out)
    records = {r["file"]: r for r in provenance["patches"]}
    assert sorted(records) == [p.name for p in pngs]
    counts = {}
    for record in records.values():
        assert re.fullmatch(r"(twip|samples|fecral)_\d{3}\.png", record["file"])
        assert (REAL / record["source"]).is_file()
        x, y, w, h = record["box"]
        image = cv2.imread(str(out / record["file"]), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (h, w)
        assert min(x, y) >= 0 and min(w, h) >= 64
        counts[record["file"].split("_")[0]] = counts.get(record["file"].split("_")[0], 0) + 1
    assert counts == provenance["counts"]
    assert set(counts) == {"twip", "samples", "fecral"}
    # Every patch is readable by the generator's patch-folder code.
    listed = list_patch_folder(out)
    assert [f.name for f in listed] == [p.name for p in pngs]
    for entry in listed:
        patch = load_patch(str(out / entry.name))
        assert patch.dtype == np.float32 and 0.0 <= patch.min() <= patch.max() <= 1.0


@needs_real
def test_twip_crops_avoid_the_labelled_lines(folder):
    out, _ = folder
    records = [r for r in _provenance(out)["patches"] if r["file"].startswith("twip")]
    assert records
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * FORBIDDEN_MARGIN + 1,) * 2)
    for record in records:
        source = REAL / record["source"]
        frame = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
        labels = np.zeros(frame.shape, np.uint8)
        for suffix in ("dislocations", "slip_traces"):
            label = source.with_name(f"{source.stem}_{suffix}.png")
            if label.is_file():
                labels |= (cv2.imread(str(label), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        assert labels.any(), f"{source} has no labelled pixel: the test would prove nothing"
        forbidden = cv2.dilate(labels, kernel)
        x, y, w, h = record["box"]
        assert not forbidden[y : y + h, x : x + w].any(), f"{record['file']} touches a labelled line"
        # The patch is exactly that box of that frame.
        patch = cv2.imread(str(out / record["file"]), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(patch, frame[y : y + h, x : x + w])


@needs_real
def test_sample_and_fecral_crops_match_their_boxes(folder):
    out, _ = folder
    records = _provenance(out)["patches"]
    samples = [r for r in records if r["file"].startswith("samples")]
    assert len(samples) == sum(len(b) for b in SAMPLE_BOXES.values())
    for record in samples:
        x, y, w, h = record["box"]
        source = cv2.imread(str(REAL / record["source"]), cv2.IMREAD_GRAYSCALE)
        patch = cv2.imread(str(out / record["file"]), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(patch, source[y : y + h, x : x + w])
    fecral = [r for r in records if r["file"].startswith("fecral")]
    assert fecral and len({r["frame"] for r in fecral}) >= 3
    for record in fecral:
        x, y, w, h = record["box"]
        assert y + h <= FECRAL_TEXT_TOP, "a fecral crop reaches the burnt-in scale bar / text"


@needs_real
def test_patches_config_renders_from_the_folder(folder):
    out, _ = folder
    config = _patches_config(zoom=(0.6, 1.0))
    sample = generate_sample(config, seed=3, size=128, backgrounds=out)
    spec = sample.scene.background
    assert spec.kind == "patches"
    names = {f.name for f in list_patch_folder(out)}
    assert len(spec.patches) == 2 and all(p.file in names for p in spec.patches)
    assert sample.image.shape == (128, 128) and 0.0 <= sample.image.min() <= sample.image.max() <= 1.0

    # The background is the blend of the two recorded crops of the real patches ...
    layers = [
        patch_view(load_patch(str(out / p.file)), (128, 128), crop=p.crop, flip=p.flip, rot90=p.rot90)
        for p in spec.patches
    ]
    expected = np.clip((1.0 - spec.opacity) * layers[0] + spec.opacity * layers[1], 0.0, 1.0)
    background = patch_background(
        (128, 128), folder=out, patches=[p.model_dump() for p in spec.patches], opacity=spec.opacity
    )
    np.testing.assert_allclose(background, expected, atol=1e-6)
    # ... and the scene JSON alone re-renders the same background and image.
    scene = Scene.from_json(sample.scene.model_dump_json())
    np.testing.assert_array_equal(render_background(scene), background)
    np.testing.assert_array_equal(render_scene(scene).image, sample.image)


@needs_real
def test_default_zoom_renders_patches_smaller_than_the_image(folder):
    out, _ = folder
    config = _patches_config()  # zoom (0.6, 1.6); the patches are <= 256 px, the image 512 px
    for seed in range(8):
        sample = generate_sample(config, seed=seed, backgrounds=out)
        assert sample.image.shape == tuple(config.size)
        assert np.isfinite(sample.image).all() and 0.0 <= sample.image.min() <= sample.image.max() <= 1.0
        for spec in sample.scene.background.patches:
            patch = load_patch(str(out / spec.file))
            assert patch.shape[0] < config.size[0] and patch.shape[1] < config.size[1]
            # The crop lies inside its (smaller) patch, which is stretched to fill the image.
            x, y, w, h = spec.crop
            assert 0 <= x and 0 <= y and x + w <= patch.shape[1] and y + h <= patch.shape[0], (spec.crop, patch.shape)


# --- overwrite and missing sources (dislocation-samples only: fast) ------------------


@needs_real
def test_refuses_to_overwrite_and_skips_missing_sources(tmp_path):
    root = _samples_only_root(tmp_path)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="missing"):
        files = make_patch_folder(root, out)
    assert len(files) == sum(len(b) for b in SAMPLE_BOXES.values())
    assert all(f.name.startswith("samples_") for f in files)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    with pytest.raises(FileExistsError, match="overwrite"):
        make_patch_folder(root, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    (out / "stale.png").write_bytes(b"x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        again = make_patch_folder(root, out, overwrite=True)
    assert [f.name for f in again] == [f.name for f in files]
    assert not (out / "stale.png").exists()
    # No temporary folders are left next to the result.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"]

    # overwrite=True never replaces a folder this tool did not make.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a patch folder"):
        make_patch_folder(root, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
