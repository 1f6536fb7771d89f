"""Realism statistics (known answers, bad input) and the generator options behind the realistic presets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from temtrack.training.synth import (
    generate_sample,
    get_preset,
    preset_names,
    render_scene,
    sample_scene,
    validate_config,
)
from temtrack.training.synth.realism import (
    STATISTICS,
    cross_line_profiles,
    image_statistics,
    lines_from_label,
    load_image_folder,
    load_labelled_folder,
    load_video_frames,
    noise_level,
    pool_statistics,
    realism_distances,
    vignetting_profile,
)


def _textured(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), 3.0)
    return (0.3 + 0.4 * (image - image.min()) / (image.max() - image.min())).astype(np.float32)


def _gaussian_line(sigma: float, *, depth: float = 0.2, level: float = 0.8, angle: float = 0.0, size: int = 96):
    """A dark straight line through the centre with a Gaussian cross-section, and its centreline."""
    a = np.radians(angle)
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    c = size // 2
    distance = (xs - c) * np.cos(a) + (ys - c) * np.sin(a)  # across the line
    image = level * (1.0 - depth * np.exp(-0.5 * (distance / sigma) ** 2))
    t = np.arange(-30.0, 30.0)
    line = np.column_stack([c - t * np.sin(a), c + t * np.cos(a)])
    return image.astype(np.float32), line


# --- known answers -------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 35.0])
@pytest.mark.parametrize("sigma", [1.5, 2.5])
def test_fwhm_and_depth_of_a_gaussian_line(sigma, angle):
    image, line = _gaussian_line(sigma, angle=angle)
    depth, fwhm = cross_line_profiles(image, line)
    assert len(depth) >= 3 and len(fwhm) == len(depth)
    # Bilinear sampling between pixels loses up to 5 % of a narrow line's depth.
    np.testing.assert_allclose(depth, 0.2, atol=0.01)
    # Bilinear sampling widens a narrow line off the pixel grid by up to 4 %.
    np.testing.assert_allclose(fwhm, 2.3548 * sigma, rtol=0.05)


def test_line_label_off_by_two_px_is_recentred():
    image, line = _gaussian_line(2.0)
    _, fwhm = cross_line_profiles(image, line + (2.0, 0.0))
    np.testing.assert_allclose(fwhm, 2.3548 * 2.0, atol=0.15)


def test_vignetting_profile_of_a_known_falloff():
    height, width, strength = 96, 128, 0.3
    ys = np.arange(height) - (height - 1) / 2.0
    xs = np.arange(width) - (width - 1) / 2.0
    radius = np.hypot(ys[:, None], xs[None, :]) / np.hypot((height - 1) / 2.0, (width - 1) / 2.0)
    image = (0.8 * (1.0 - strength * radius**2)).astype(np.float32)
    ring = np.minimum((radius * 10).astype(int), 9)
    expected = np.array([image[ring == k].mean() for k in range(10)]) / image[ring == 0].mean()
    got = vignetting_profile(image)
    # The blur (sigma 6 px, reflected border) flattens the falloff in the outer rings.
    np.testing.assert_allclose(got[:8], expected[:8], atol=0.01)
    np.testing.assert_allclose(got[8:], expected[8:], atol=0.03)
    assert got[-1] < 0.8  # the falloff is there: corners about 0.7 of the centre


def test_noise_level_of_white_noise_on_a_smooth_image():
    rng = np.random.default_rng(0)
    smooth = _textured(1, 128)
    noisy = smooth + rng.normal(0.0, 0.02, smooth.shape).astype(np.float32)
    assert noise_level(smooth) < 0.002
    np.testing.assert_allclose(noise_level(noisy), 0.02 / noisy.mean(), rtol=0.1)


def test_local_contrast_and_spectrum_do_not_depend_on_brightness():
    image = _textured(2)
    a, b = image_statistics([image]), image_statistics([image * 0.5])
    np.testing.assert_allclose(a.spectrum, b.spectrum, atol=1e-4)
    np.testing.assert_allclose(a.local_contrast, b.local_contrast, atol=1e-5)


def test_set_against_itself_is_zero_and_against_a_shifted_set_positive():
    images = [_textured(seed) for seed in range(3)]
    line_image, line = _gaussian_line(2.0)
    stats = image_statistics([*images, line_image], lines=[[], [], [], [line]])
    same = realism_distances(stats, stats)
    assert set(same) == set(STATISTICS)
    np.testing.assert_allclose(list(same.values()), 0.0, atol=1e-12)
    darker = image_statistics([*(i * 0.8 for i in images), line_image], lines=[[], [], [], [line]])
    shifted = realism_distances(stats, darker)
    assert shifted["intensity"] > 0.02  # gray levels shifted by about 0.1
    assert shifted["spectrum"] < 1e-3  # brightness drops out of the normalised spectrum
    wider_image, wider_line = _gaussian_line(3.0)
    wider = image_statistics([*images, wider_image], lines=[[], [], [], [wider_line]])
    np.testing.assert_allclose(realism_distances(stats, wider)["line_fwhm"], 2.3548, atol=0.15)


def test_line_distances_are_nan_without_lines_and_pooling_adds_up():
    a = image_statistics([_textured(0)])
    b = image_statistics([_textured(1), _textured(2)])
    assert np.isnan(realism_distances(a, b)["line_fwhm"])
    pooled = pool_statistics([a, b])
    assert pooled.n_images == 3 and pooled.spectrum.shape[0] == 3
    np.testing.assert_allclose(pooled.intensity.sum(), 1.0)


def test_lines_from_label_gives_one_ordered_centreline_per_component():
    label = np.zeros((64, 64), np.uint8)
    cv2.line(label, (5, 10), (55, 20), 255, 3)
    cv2.line(label, (10, 50), (12, 60), 255, 2)
    cv2.circle(label, (40, 45), 1, 255, -1)  # too small: left out
    lines = lines_from_label(label, min_pixels=5)
    assert len(lines) == 2
    long = max(lines, key=len)
    assert len(long) > 40
    assert np.all(np.hypot(*np.diff(long, axis=0).T) < 2.0)  # ordered: neighbours 1-1.4 px apart


def test_input_not_modified():
    image, line = _gaussian_line(2.0)
    image_copy, line_copy = image.copy(), line.copy()
    image_statistics([image], lines=[[line]])
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(line, line_copy)


# --- loaders and bad input ------------------------------------------------------------


def test_load_image_folder_scales_by_bit_depth(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((16, 16), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((16, 16), 51, np.uint8))
    images = load_image_folder(tmp_path)
    assert [float(i.max()) for i in images] == pytest.approx([1.0, 0.2])
    assert load_image_folder(tmp_path, pattern="b*")[0].dtype == np.float32


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")


def test_mixed_bit_depths_are_an_error_naming_the_file(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((16, 16), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((16, 16), np.uint16))
    with pytest.raises(ValueError, match=r"b\.png is 16-bit"):
        load_image_folder(tmp_path)


def test_labelled_folder(tmp_path):
    image, _ = _gaussian_line(2.0)
    cv2.imwrite(str(tmp_path / "frame001.png"), (image * 255).astype(np.uint8))
    label = np.zeros(image.shape, np.uint8)
    label[20:76, 47:49] = 255
    cv2.imwrite(str(tmp_path / "frame001_dislocations.png"), label)
    images, lines = load_labelled_folder(tmp_path)
    assert len(images) == 1 and len(lines[0]) == 1
    with pytest.raises(ValueError, match="no line labels"):
        load_labelled_folder(tmp_path, suffix="_loops")


def test_video_frames_are_sampled_evenly():
    frames = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    got = load_video_frames(frames, count=3)
    assert [round(float(f[0, 0]) * 255) for f in got] == [0, 3, 6]


@pytest.mark.parametrize(
    "images, match",
    [([], "empty"), ([np.zeros((4, 4, 3))], "2-D"), ([np.zeros((16, 16), np.uint8)], "dtype"),
     ([np.full((16, 16), np.nan)], "NaN")],
)
def test_bad_images_are_errors(images, match):
    with pytest.raises(ValueError, match=match):
        image_statistics(images)


# --- the generator options and presets -------------------------------------------------

# Pinned on the generator before the realism options were added (mask sizes are exact
# integers; image moments to 1e-5, robust to last-bit differences of OpenCV builds).
THESIS_PINS = {
    "sd1": ([11, 398, 406, 124, 326], [0.559023, 0.281096, 0.271484, 0.362667]),
    "sd2": ([176, 286, 88, 124, 305], [0.558963, 0.283599, 0.273537, 0.365067]),
    "sd3": ([35, 320, 96, 263, 81], [0.493929, 0.258015, 0.228107, 0.305471]),
}


@pytest.mark.parametrize("name", sorted(THESIS_PINS))
def test_thesis_presets_render_as_before_the_new_options(name):
    sample = generate_sample(name, 7, size=128)
    image = sample.image.astype(np.float64)
    y, x = np.mgrid[:128, :128] / 127.0
    masks, moments = THESIS_PINS[name]
    assert sample.masks.sum(axis=(1, 2)).tolist() == masks
    np.testing.assert_allclose([image.mean(), (image * x).mean(), (image * y).mean(), (image**2).mean()], moments, atol=1e-5)


def _one_line(**render) -> dict:
    """A config of one straight vertical-ish dislocation on a flat background, no blur or noise."""
    data = get_preset("sd2").model_dump()
    data["size"] = (96, 96)
    data["background"]["perlin"].update(gain=(0.0, 0.0), offset=(0.7, 0.7))
    data["pileups"].update(count=(1, 1), dislocations=(1, 1), slip_width=(60.0, 60.0))
    data["shapes"].update(weights={"straight": 1.0}, tilt=(0.0, 0.0), jitter=(0.0, 0.0), perturbation=(0.0, 0.0))
    data["render"].update(
        gray_factor=(0.2, 0.2), thickness=(2.0, 2.0), thickness_variation=(0.0, 0.0), blur=(0.0, 0.0), noise=(0.0, 0.0), **render
    )
    return data


def test_line_softness_widens_the_line_and_keeps_its_depth():
    soft = generate_sample(validate_config(_one_line(line_softness=(2.5, 2.5))), 3)
    assert soft.scene.dislocations[0].softness == 2.5
    scene = soft.scene.model_copy(deep=True)
    scene.dislocations[0].softness = 0.0
    crisp = render_scene(scene)
    _, w0 = cross_line_profiles(crisp.image, crisp.centrelines[0])
    d1, w1 = cross_line_profiles(soft.image, soft.centrelines[0])
    # A 2 px line (value U(0.75, 1) per segment) blurred by sigma 2.5: FWHM ~ 2.355 * 2.6.
    assert np.median(w0) < 3.0 and 5.0 < np.median(w1) < 7.0
    # Peak darkness kept: gray factor 0.2 on 0.7 times a segment value in U(0.75, 1).
    assert 0.75 * 0.2 / 0.7 - 0.01 < np.median(d1) < 0.2 / 0.7 + 0.01
    np.testing.assert_array_equal(soft.masks, crisp.masks)  # the ground truth does not change


def test_lead_bow_bows_the_first_dislocation_most():
    data = _one_line()
    data["pileups"].update(dislocations=(4, 4), lead_bow=(0.3, 0.3), spacing={"pair": (12.0, 12.0), "wide": (12.0, 12.0)})
    scene = sample_scene(validate_config(data), 5)
    bows = [np.abs(np.asarray(d.support)[:, 0]).max() for d in scene.dislocations]
    # Straight support points at y = 0, 1/3, 2/3, 1: the bulge 4y(1-y) is 8/9 there.
    np.testing.assert_allclose(bows, 0.3 * 8 / 9 * np.array([1.0, 2 / 3, 1 / 3, 0.0]), atol=1e-9)


def test_soft_spots_spread_and_keep_their_peak():
    data = _one_line()
    data["pileups"]["count"] = (0, 0)
    data["spots"].update(count=(1, 1), radius=(6.0, 6.0), contrast=(0.3, 0.3), irregularity=(0.0, 0.0), spikiness=(0.0, 0.0))
    flat = generate_sample(validate_config(data), 11)
    data["spots"]["softness"] = (1.0, 1.0)
    soft = generate_sample(validate_config(data), 11)
    assert soft.scene.spots[0].softness == pytest.approx(6.0)
    np.testing.assert_allclose(0.7 - soft.image.min(), 0.3, atol=0.01)
    dark_flat, dark_soft = (flat.image < 0.69).sum(), (soft.image < 0.69).sum()
    assert dark_soft > 1.5 * dark_flat  # the blob reaches about 2 sigma beyond the polygon
    assert (0.7 - soft.image).sum() > 2 * (0.7 - flat.image).sum()


@pytest.mark.parametrize("name", ["sd1_real", "sd2_real", "sd3_real"])
def test_realistic_presets_validate_and_render(name):
    assert name in preset_names()
    config = get_preset(name)
    thesis = get_preset(name.removesuffix("_real"))
    assert config.pileups.count == thesis.pileups.count and config.pileups.spacing == thesis.pileups.spacing
    assert config.shapes == thesis.shapes and config.background.mode == "perlin"
    sample = render_scene(sample_scene(config.with_size(128), 2))
    assert sample.image.dtype == np.float32 and 0.0 <= sample.image.min() and sample.image.max() <= 1.0
    assert all(d.softness >= 1.0 for d in sample.scene.dislocations)
    assert validate_config(config.model_dump()) == config
