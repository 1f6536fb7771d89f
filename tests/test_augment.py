"""Training augmentations: geometry moves masks with the image, photometry the image only."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")

from torch.utils.data import DataLoader  # noqa: E402

from temtrack.training.augment import AugmentConfig, AugmentedDataset, augment  # noqa: E402
from temtrack.training.datasets import SyntheticDataset  # noqa: E402
from temtrack.training.synth import render_scene, resolve_config, sample_scene  # noqa: E402

ALL_OFF = {name: 0.0 for name in AugmentConfig.model_fields if name.startswith("p_")}


def only(**settings) -> AugmentConfig:
    """A config with every augmentation off except those given (``p_*=1`` and ranges)."""
    return AugmentConfig(**{**ALL_OFF, **settings})


def sample(seed: int = 1, size=64):
    rendered = render_scene(sample_scene(resolve_config("sd2", size=size), seed))
    assert len(rendered.masks) > 0, "fixture needs at least one dislocation"
    return rendered.image, rendered.masks


def mid_gray(image: np.ndarray, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """The image squeezed into [low, high], away from clipping."""
    return (low + (high - low) * image).astype(np.float32)


# --- geometry -------------------------------------------------------------------------


def test_hflip_moves_image_and_masks_together():
    image, masks = sample()
    out_image, out_masks = augment(image, masks, np.random.default_rng(0), only(p_hflip=1.0))
    np.testing.assert_array_equal(out_image, np.flip(image, 1))
    np.testing.assert_array_equal(out_masks, np.flip(masks, 2))


def test_vflip_moves_image_and_masks_together():
    image, masks = sample()
    out_image, out_masks = augment(image, masks, np.random.default_rng(0), only(p_vflip=1.0))
    np.testing.assert_array_equal(out_image, np.flip(image, 0))
    np.testing.assert_array_equal(out_masks, np.flip(masks, 1))


def test_rot90_rotates_image_and_masks_by_the_same_quarter_turns():
    image, masks = sample()
    seen = set()
    for seed in range(12):
        out_image, out_masks = augment(image, masks, np.random.default_rng(seed), only(p_rot90=1.0))
        turns = [k for k in (1, 2, 3) if np.array_equal(out_image, np.rot90(image, k))]
        assert len(turns) == 1, f"seed {seed}: image is not one rotation of the input"
        np.testing.assert_array_equal(out_masks, np.rot90(masks, turns[0], axes=(1, 2)))
        seen.add(turns[0])
    assert seen == {1, 2, 3}


def test_rot90_is_skipped_for_non_square_images():
    image, masks = sample(size=(48, 64))
    for seed in range(5):
        out_image, out_masks = augment(image, masks, np.random.default_rng(seed), only(p_rot90=1.0))
        np.testing.assert_array_equal(out_image, image)
        np.testing.assert_array_equal(out_masks, masks)


def test_pixels_under_a_mask_stay_under_it():
    # Geometry permutes pixels: the image summed under each mask is invariant only if
    # the masks move with the image.
    image, masks = sample()
    under = (masks * image.astype(np.float64)).sum(axis=(1, 2))
    config = only(p_hflip=0.5, p_vflip=0.5, p_rot90=0.5)
    moved = 0
    for seed in range(8):
        out_image, out_masks = augment(image, masks, np.random.default_rng(seed), config)
        np.testing.assert_allclose((out_masks * out_image.astype(np.float64)).sum(axis=(1, 2)), under, rtol=1e-12)
        moved += not np.array_equal(out_image, image)
    assert moved > 0


# --- photometry -----------------------------------------------------------------------


def test_photometric_transforms_leave_masks_bit_identical():
    image, masks = sample()
    config = only(p_equalize=1.0, p_brightness=1.0, p_contrast=1.0, p_gamma=1.0, p_vignette=1.0, p_blur=1.0, p_noise=1.0, p_jpeg=1.0)
    for dtype in (np.uint8, np.bool_, np.float32):
        out_image, out_masks = augment(image, masks.astype(dtype), np.random.default_rng(0), config)
        assert out_masks.dtype == dtype
        np.testing.assert_array_equal(out_masks, masks.astype(dtype))
        assert not np.array_equal(out_image, image)


def test_brightness_shifts_the_mean():
    image = mid_gray(sample()[0])
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), only(p_brightness=1.0, brightness=(0.1, 0.1)))
    np.testing.assert_allclose(out, image + np.float32(0.1), atol=1e-6)
    assert out.mean() > image.mean() + 0.099


def test_contrast_scales_the_deviation_from_the_mean():
    image = mid_gray(sample()[0], 0.4, 0.6)
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), only(p_contrast=1.0, contrast=(1.5, 1.5)))
    np.testing.assert_allclose(out.std(), 1.5 * image.std(), rtol=1e-4)
    np.testing.assert_allclose(out.mean(), image.mean(), atol=1e-5)


def test_gamma_below_one_brightens_mid_tones():
    image = mid_gray(sample()[0])
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), only(p_gamma=1.0, gamma=(0.7, 0.7)))
    np.testing.assert_allclose(out, image**0.7, rtol=1e-5)
    assert (out > image).all()


def test_equalize_spreads_the_8_bit_histogram():
    image = mid_gray(sample()[0], 0.4, 0.6)
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), only(p_equalize=1.0))
    assert out.max() == 1.0 and out.min() < 0.05
    np.testing.assert_array_equal(np.round(out * 255), out * 255)  # 8-bit levels


def test_noise_residual_has_the_drawn_sigma():
    image = np.full((64, 64), 0.5, np.float32)
    sigma = 0.05  # 0.5 +- 10 sigma never clips
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(3), only(p_noise=1.0, noise_sigma=(sigma, sigma)))
    residual = out.astype(np.float64) - image
    # The std of 4096 samples is within 5 % (about 4.5 standard errors) of sigma.
    np.testing.assert_allclose(residual.std(), sigma, rtol=0.05)
    np.testing.assert_allclose(residual.mean(), 0.0, atol=0.005)


def high_frequency_energy(image: np.ndarray) -> float:
    return float((np.diff(image, axis=0) ** 2).sum() + (np.diff(image, axis=1) ** 2).sum())


def test_blur_removes_high_frequency_energy():
    image = sample()[0]
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), only(p_blur=1.0, blur_sigma=(1.0, 1.0)))
    assert high_frequency_energy(out) < 0.5 * high_frequency_energy(image)
    np.testing.assert_allclose(out.mean(), image.mean(), atol=0.01)


@pytest.mark.parametrize("strength", [0.4, -0.4])
def test_vignetting_darkens_or_brightens_the_corners(strength):
    image = np.full((64, 64), 0.5, np.float32)
    config = only(p_vignette=1.0, vignette=(strength, strength), vignette_center=(0.5, 0.5))
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), config)
    # Centred vignette: every corner is a farthest point, scaled by 1 - strength.
    corners = out[[0, 0, -1, -1], [0, -1, 0, -1]]
    np.testing.assert_allclose(corners, 0.5 * (1 - strength), rtol=1e-5)
    np.testing.assert_allclose(out[31:33, 31:33], 0.5, atol=1e-3)


def test_vignetting_centre_is_random():
    image = np.full((64, 64), 0.5, np.float32)
    config = only(p_vignette=1.0, vignette=(0.5, 0.5))
    brightest = {np.unravel_index(augment(image, np.zeros((0, 64, 64)), np.random.default_rng(s), config)[0].argmax(), (64, 64)) for s in range(4)}
    assert len(brightest) > 1


def test_jpeg_changes_the_image_but_keeps_it_close():
    image = sample()[0]
    out, _ = augment(image, np.zeros((0, 64, 64)), np.random.default_rng(0), only(p_jpeg=1.0, jpeg_quality=(30, 30)))
    assert not np.array_equal(out, image)
    assert np.abs(out - image).mean() < 0.05


# --- outputs, inputs, determinism -----------------------------------------------------


def strong_config() -> AugmentConfig:
    return AugmentConfig(**{name: 1.0 for name in ALL_OFF}, brightness=(-0.5, 0.5), contrast=(0.2, 3.0), noise_sigma=(0.2, 0.3))


def test_outputs_are_float32_contiguous_in_unit_interval_and_inputs_unchanged():
    image, masks = sample()
    image_before, masks_before = image.copy(), masks.copy()
    for config in (AugmentConfig(), strong_config()):
        for seed in range(6):
            out_image, out_masks = augment(image, masks, np.random.default_rng(seed), config)
            assert out_image.dtype == np.float32 and out_image.flags.c_contiguous
            assert out_masks.dtype == masks.dtype and out_masks.flags.c_contiguous
            assert out_image.shape == image.shape and out_masks.shape == masks.shape
            assert 0.0 <= out_image.min() and out_image.max() <= 1.0
            assert not np.shares_memory(out_image, image) and not np.shares_memory(out_masks, masks)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(masks, masks_before)


def test_float64_image_gives_float32():
    image, masks = sample()
    out, _ = augment(image.astype(np.float64), masks, np.random.default_rng(0), strong_config())
    assert out.dtype == np.float32


def test_no_masks_is_fine():
    image = sample()[0]
    out_image, out_masks = augment(image, np.zeros((0, 64, 64), np.uint8), np.random.default_rng(0), strong_config())
    assert out_masks.shape == (0, 64, 64) and out_image.shape == (64, 64)


def test_disabled_returns_unchanged_copies():
    image, masks = sample()
    out_image, out_masks = augment(image, masks, np.random.default_rng(0), strong_config().model_copy(update={"enabled": False}))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_masks, masks)
    assert not np.shares_memory(out_image, image) and not np.shares_memory(out_masks, masks)


def test_same_seed_same_result_other_seed_other_result():
    image, masks = sample()
    first = augment(image, masks, np.random.default_rng(5))
    again = augment(image, masks, np.random.default_rng(5))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    others = [augment(image, masks, np.random.default_rng(seed))[0] for seed in range(6, 10)]
    assert not any(np.array_equal(first[0], other) for other in others)


def test_applying_a_step_does_not_shift_the_other_draws():
    # Gamma 1 is the identity, so the outputs differ only if applying gamma consumed
    # random numbers that the noise would otherwise get.
    image, masks = sample()
    skipped, applied = (
        augment(image, masks, np.random.default_rng(2), only(p_noise=1.0, noise_sigma=(0.01, 0.1), p_gamma=p, gamma=(1.0, 1.0)))[0]
        for p in (0.0, 1.0)
    )
    assert not np.array_equal(skipped, image)
    np.testing.assert_array_equal(skipped, applied)


@pytest.mark.parametrize(
    "image, masks, rng, error, match",
    [
        (np.zeros((1, 8, 8), np.float32), np.zeros((0, 8, 8)), np.random.default_rng(0), ValueError, "2-D"),
        (np.zeros((8, 8), np.uint8), np.zeros((0, 8, 8)), np.random.default_rng(0), TypeError, "floating-point"),
        (np.full((8, 8), 2.0, np.float32), np.zeros((0, 8, 8)), np.random.default_rng(0), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8), np.float32), np.zeros((8, 8)), np.random.default_rng(0), ValueError, r"\(n, 8, 8\)"),
        (np.zeros((8, 8), np.float32), np.zeros((2, 8, 9)), np.random.default_rng(0), ValueError, r"\(2, 8, 9\)"),
        (np.zeros((8, 8), np.float32), [[[0]]], np.random.default_rng(0), TypeError, "masks"),
        (np.zeros((8, 8), np.float32), np.zeros((1, 8, 8)), np.random.RandomState(0), TypeError, "Generator"),
        (np.zeros((8, 8), np.float32), np.zeros((1, 8, 8)), 0, TypeError, "Generator"),
    ],
)
def test_bad_inputs_are_named(image, masks, rng, error, match):
    with pytest.raises(error, match=match):
        augment(image, masks, rng)


def test_bad_config_type_is_named():
    with pytest.raises(TypeError, match="AugmentConfig"):
        augment(np.zeros((8, 8), np.float32), np.zeros((0, 8, 8)), np.random.default_rng(0), {"p_noise": 1.0})


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"p_nosie": 0.5}, "p_nosie"),
        ({"p_noise": 1.5}, "p_noise"),
        ({"p_blur": -0.1}, "p_blur"),
        ({"brightness": (0.2, -0.2)}, "brightness"),
        ({"noise_sigma": (-0.1, 0.1)}, "noise_sigma"),
        ({"gamma": (0.0, 1.0)}, "gamma"),
        ({"jpeg_quality": (30, 101)}, "jpeg_quality"),
        ({"blur_sigma": (-1.0, 1.0)}, "blur_sigma"),
        ({"contrast": (0.5, float("nan"))}, "contrast"),
    ],
)
def test_config_rejects_unknown_keys_and_impossible_values(settings, field):
    with pytest.raises(pydantic.ValidationError) as info:
        AugmentConfig(**settings)
    assert field in str(info.value)


def test_config_is_frozen_and_round_trips():
    config = AugmentConfig(p_noise=0.7)
    with pytest.raises(pydantic.ValidationError):
        config.p_noise = 0.1
    assert AugmentConfig.model_validate_json(config.model_dump_json()) == config


# --- dataset wrapper ------------------------------------------------------------------


def synthetic(length: int = 6, size=64, max_masks: int = 6) -> SyntheticDataset:
    return SyntheticDataset("sd2", seed=4, max_masks=max_masks, size=size, length=length)


def test_dataset_result_does_not_depend_on_the_worker_count():
    dataset = AugmentedDataset(synthetic(), strong_config(), seed=11)
    serial = {int(item["index"]): item for item in dataset}
    parallel = {int(item["index"]): item for item in DataLoader(dataset, batch_size=None, num_workers=2)}
    assert sorted(serial) == sorted(parallel) == list(range(6))
    for index, item in serial.items():
        assert torch.equal(item["image"], parallel[index]["image"])
        assert torch.equal(item["masks"], parallel[index]["masks"])


def test_dataset_keeps_count_padding_and_extra_keys():
    base = synthetic(max_masks=6)
    dataset = AugmentedDataset(base, only(p_hflip=1.0, p_noise=1.0, noise_sigma=(0.05, 0.05)), seed=0)
    for raw in base:
        raw["name"] = f"sample-{int(raw['index'])}"
        item = dataset.transform(raw)
        count = int(item["count"])
        assert item["count"] is raw["count"] and item["index"] is raw["index"] and item["name"] == raw["name"]
        assert item["image"].shape == raw["image"].shape and item["image"].dtype == torch.float32
        assert item["masks"].shape == raw["masks"].shape and item["masks"].dtype == raw["masks"].dtype
        assert torch.equal(item["masks"][:count], torch.flip(raw["masks"][:count], dims=(2,)))
        assert not item["masks"][count:].any()
        assert not torch.equal(item["image"], raw["image"])


def test_dataset_skips_rot90_for_non_square_images():
    base = synthetic(length=3, size=(48, 64))
    dataset = AugmentedDataset(base, only(p_rot90=1.0))
    for raw, item in zip(base, dataset):
        assert torch.equal(item["image"], raw["image"]) and torch.equal(item["masks"], raw["masks"])


def test_dataset_seed_changes_the_augmentation_and_len_delegates():
    base = synthetic(length=2)
    first = next(iter(AugmentedDataset(base, strong_config(), seed=0)))
    second = next(iter(AugmentedDataset(base, strong_config(), seed=1)))
    assert not torch.equal(first["image"], second["image"])
    assert len(AugmentedDataset(base)) == 2
    with pytest.raises(TypeError, match="no length"):
        len(AugmentedDataset(synthetic(length=None)))


def test_dataset_validates_its_arguments_and_items():
    with pytest.raises(TypeError, match="AugmentConfig"):
        AugmentedDataset(synthetic(), {"p_noise": 1.0})
    with pytest.raises(ValueError, match="seed"):
        AugmentedDataset(synthetic(), seed=-1)
    item = synthetic().item(0)
    with pytest.raises(KeyError, match="index"):
        AugmentedDataset(synthetic()).transform({k: v for k, v in item.items() if k != "index"})
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        AugmentedDataset(synthetic()).transform({**item, "image": item["image"][0]})
