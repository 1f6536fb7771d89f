"""Fitting frames of any size to a model's input: letterbox, explicit scale, coordinates.

Known answers: a linear ramp (each pixel's value is its own x) tells where a resized
pixel comes from, so the coordinate convention is checked against OpenCV itself; a
1 px line says whether thin dislocations survive shrinking.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from temtrack.sdk.preprocess import Placement, apply, fit_to_input, placement_for

BACKGROUND, LINE = 0.7, 0.2


def _line_frame(shape=(700, 1024), x0=300.0, slope=0.3):
    """A 1 px dark line x = x0 + slope * y (rounded per row) on a flat background."""
    frame = np.full(shape, BACKGROUND, np.float32)
    rows = np.arange(shape[0])
    frame[rows, np.rint(x0 + slope * rows).astype(int)] = LINE
    return frame


# --- placement ---------------------------------------------------------------------------


def test_letterbox_fits_the_whole_frame_with_its_aspect_ratio():
    p = placement_for((700, 1024), (512, 512))
    assert p.scale == 0.5 and p.offset == (0, 0)
    assert p.frame_shape == (700, 1024) and p.input_shape == (512, 512)
    assert p.scaled_shape == (350, 512)
    assert p.valid == (slice(0, 350), slice(0, 512))


def test_non_square_input():
    p = placement_for((700, 1024), (256, 384))
    assert p.scale == pytest.approx(256 / 700)  # rows limit: 384 / 1024 is larger
    assert p.scaled_shape == (256, 374) and p.input_shape == (256, 384)
    x, p2 = fit_to_input(_line_frame(), (256, 384))
    assert x.shape == (256, 384) and p2 == p
    np.testing.assert_array_equal(x[:, 374:], np.median(x[:, :374]))


def test_enlarging_a_small_frame():
    frame = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)
    x, p = fit_to_input(frame, (64, 64))
    assert p.scale == pytest.approx(4 / 3) and p.scaled_shape == (43, 64)
    assert x.shape == (64, 64) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize(
    "frame_shape, size, scale",
    [((700, 1024), (512, 512), None), ((32, 48), (64, 64), None), ((700, 1024), (512, 512), 0.37), ((50, 60), None, 2.5)],
)
def test_points_round_trip(frame_shape, size, scale):
    p = placement_for(frame_shape, size, scale=scale)
    rng = np.random.default_rng(0)
    points = rng.uniform(-5, 1100, size=(100, 2))
    np.testing.assert_allclose(p.to_frame(p.to_input(points)), points, rtol=0, atol=1e-9)
    np.testing.assert_allclose(p.to_input(p.to_frame(points)), points, rtol=0, atol=1e-9)
    shifted = Placement(scale=0.8, offset=(7, 3), frame_shape=frame_shape, input_shape=(600, 900))
    np.testing.assert_allclose(shifted.to_frame(shifted.to_input(points)), points, rtol=0, atol=1e-9)


def test_pixel_centre_convention():
    p = placement_for((700, 1024), (512, 512))
    # Model pixel 0 averages frame pixels 0 and 1: its centre is frame x = 0.5.
    np.testing.assert_allclose(p.to_frame([[0.0, 0.0], [10.0, 3.0]]), [[0.5, 0.5], [20.5, 6.5]])
    np.testing.assert_allclose(p.to_input([[-0.5, -0.5]]), [[-0.5, -0.5]])  # the frame's corner edge
    shifted = Placement(scale=2.0, offset=(10, 20), frame_shape=(10, 10), input_shape=(64, 64))
    np.testing.assert_allclose(shifted.to_input([[0.0, 0.0]]), [[10.5, 20.5]])


@pytest.mark.parametrize("scale", [0.5, 0.37, 1.7])
def test_coordinates_match_what_opencv_resamples(scale):
    # Each frame pixel holds its own x; a resampled pixel then holds the frame x it
    # came from, which to_frame must predict (away from the borders, where the
    # ramp is clamped). Measured: 6e-5 px at 0.5 and 1.7, 0.04 px at 0.37 (OpenCV's
    # area weights are float32).
    width = 400
    ramp = np.tile(np.arange(width, dtype=np.float64) / width, (40, 1))
    x, p = fit_to_input(ramp, None, scale=scale)
    columns = np.arange(3, p.scaled_shape[1] - 3, dtype=np.float64)
    expected = p.to_frame(np.stack([columns, np.zeros_like(columns)], axis=1))[:, 0]
    np.testing.assert_allclose(x[5, 3:-3] * width, expected, rtol=0, atol=0.05)


# --- the letterboxed image ---------------------------------------------------------------


@pytest.mark.parametrize("slope", [0.0, 0.3])
def test_thin_line_stays_visible_and_in_place(slope):
    frame = _line_frame(x0=301.0, slope=slope)
    x, p = fit_to_input(frame, (512, 512))
    rows, columns = p.valid
    inside = x[rows, columns]
    background = float(np.median(inside))
    assert background == pytest.approx(BACKGROUND, abs=1e-6)
    darkness = np.clip(background - inside, 0, None) / (BACKGROUND - LINE)
    # INTER_AREA averages the 1 px line into the model pixels it falls in: every
    # model row keeps all of its darkness, 0.5 px wide at scale 0.5 (point sampling
    # would keep or lose the line row by row).
    np.testing.assert_allclose(darkness.sum(axis=1), 0.5, rtol=0, atol=1e-5)
    contrast = darkness.max(axis=1)
    if slope == 0:
        assert contrast.min() >= 0.4, contrast.min()  # exactly 0.5
    else:
        # Where the digital line steps to the next column inside a 2x2 block, its
        # darkness is split between two model pixels.
        assert contrast.min() >= 0.25 and np.median(contrast) >= 0.4, contrast
    # Sub-pixel line position per model row (darkness-weighted), mapped back to frame
    # pixels: within 0.5 px of the drawn pixels of the two frame rows it covers (a
    # model pixel cannot tell where in its 2 px the line was), and a line fitted
    # through it is the true line within 0.5 px (measured: 0.5 for x0 = 301 exactly
    # between model pixel centres, 0.05 for the slanted line).
    xs = (darkness * np.arange(inside.shape[1])).sum(axis=1) / darkness.sum(axis=1)
    ys = np.arange(inside.shape[0], dtype=np.float64)
    back = p.to_frame(np.stack([xs, ys], axis=1))
    drawn = np.rint(301.0 + slope * np.arange(700)).reshape(350, 2).mean(axis=1)
    np.testing.assert_allclose(back[:, 1], np.arange(350) * 2 + 0.5, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back[:, 0], drawn, rtol=0, atol=0.5 + 1e-9)
    fitted = np.polyval(np.polyfit(back[:, 1], back[:, 0], 1), back[:, 1])
    assert np.abs(fitted - (301.0 + slope * back[:, 1])).max() <= 0.5 + 1e-9


def test_pad_is_the_median_of_the_frame():
    rng = np.random.default_rng(1)
    frame = rng.uniform(0.2, 0.9, size=(300, 500)).astype(np.float32)
    x, p = fit_to_input(frame, (256, 256))
    rows, columns = p.valid
    assert (rows, columns) == (slice(0, 154), slice(0, 256))
    pad = x[rows.stop :]
    assert pad.size and np.all(pad == np.float32(np.median(x[rows, columns])))
    assert np.median(x[rows, columns]) == pytest.approx(np.median(frame), abs=0.01)


def test_explicit_scale():
    frame = _line_frame()
    x, p = fit_to_input(frame, (512, 512), scale=0.25)
    assert p.scale == 0.25 and p.scaled_shape == (175, 256)
    assert x.shape == (512, 512)
    assert np.all(x[175:] == x[-1, -1]) and np.all(x[:, 256:] == x[-1, -1])


def test_too_large_scale_says_which_scale_fits():
    with pytest.raises(ValueError, match=r"larger than the model input \(512, 512\); use scale <= 0\.5 .*tiling is not implemented"):
        placement_for((700, 1024), (512, 512), scale=0.8)


def test_without_a_model_size_only_the_scale_applies():
    frame = _line_frame((50, 60), x0=20.0)
    x, p = fit_to_input(frame, None)
    assert p.scale == 1.0 and p.input_shape == (50, 60)
    np.testing.assert_array_equal(x, frame)
    assert x is not frame
    x, p = fit_to_input(frame, None, scale=2.0)
    assert x.shape == (100, 120) == p.input_shape == p.scaled_shape


def test_uint8_frames_are_read_as_fractions():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, size=(70, 90), dtype=np.uint8)
    x8, _ = fit_to_input(frame, (64, 64))
    xf, _ = fit_to_input(frame.astype(np.float64) / 255, (64, 64))
    assert x8.dtype == np.float32
    np.testing.assert_allclose(x8, xf, rtol=0, atol=1e-6)


def test_placement_once_per_video():
    p = placement_for((700, 1024), (512, 512))
    frames = [_line_frame(x0=x0) for x0 in (100.0, 200.0)]
    for frame in frames:
        x, q = fit_to_input(frame, (512, 512))
        np.testing.assert_array_equal(apply(frame, p), x)
        assert q == p
    assert json.loads(json.dumps(p.to_dict())) == {
        "scale": 0.5, "offset": [0, 0], "frame_shape": [700, 1024], "input_shape": [512, 512]
    }


def test_inputs_not_modified():
    frame = _line_frame()
    before = frame.copy()
    fit_to_input(frame, (512, 512))
    fit_to_input(frame, None)
    np.testing.assert_array_equal(frame, before)


# --- masks -----------------------------------------------------------------------------


def test_clear_outside_zeroes_the_pad_and_copies():
    p = placement_for((700, 1024), (512, 512))
    masks = np.random.default_rng(3).random((3, 512, 512)).astype(np.float32)
    before = masks.copy()
    cleared = p.clear_outside(masks)
    assert cleared.dtype == masks.dtype and cleared.shape == masks.shape
    np.testing.assert_array_equal(cleared[:, :350], masks[:, :350])
    assert not cleared[:, 350:].any()
    np.testing.assert_array_equal(masks, before)
    binary = p.clear_outside(np.ones((512, 512), np.uint8))
    assert binary.dtype == np.uint8 and binary.sum() == 350 * 512
    with pytest.raises(ValueError, match=r"masks must have shape \(\.\.\., 512, 512\), got \(2, 64, 64\)"):
        p.clear_outside(np.zeros((2, 64, 64)))


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame_shape, size, scale, message",
    [
        ((0, 10), (64, 64), None, "frame_shape must be two integers >= 1"),
        ((10, 10), (64,), None, r"size must be \(height, width\)"),
        ((10, 10), (64, 64.0), None, "size must be two integers"),
        ((10, 10), (64, 64), 0.0, "scale must be a finite number > 0"),
        ((10, 10), (64, 64), float("nan"), "scale must be a finite number > 0"),
        ((10, 10), (64, 64), True, "scale must be a finite number > 0"),
        ((10, 1000), None, 0.0001, "less than one pixel"),
    ],
)
def test_bad_placements(frame_shape, size, scale, message):
    with pytest.raises(ValueError, match=message):
        placement_for(frame_shape, size, scale=scale)


def test_bad_images():
    with pytest.raises(ValueError, match=r"image must be 2-D \(h, w\), got shape \(2, 8, 8\)"):
        fit_to_input(np.zeros((2, 8, 8), np.float32), (64, 64))
    with pytest.raises(ValueError, match="floating dtype or uint8, got dtype int64"):
        fit_to_input(np.zeros((8, 8), np.int64), (64, 64))
    with pytest.raises(TypeError, match="numpy array"):
        fit_to_input([[0.5]], (64, 64))
    p = placement_for((8, 8), (64, 64))
    with pytest.raises(ValueError, match=r"placement is for frames of \(8, 8\)"):
        apply(np.zeros((9, 8), np.float32), p)


def test_masks_to_frame_undoes_the_letterbox():
    frame = np.zeros((100, 200), np.float32)
    frame[40:60, 50:150] = 1.0
    fitted, placement = fit_to_input(frame, (64, 64))  # scale 0.32, content in rows 0..31
    masks = np.stack([fitted, 1.0 - fitted]).astype(np.float32)
    back = placement.masks_to_frame(masks)
    assert back.shape == (2, 100, 200) and back.dtype == np.float32
    assert np.mean((back[0] > 0.5) == (frame > 0.5)) > 0.98
    binary = placement.masks_to_frame((masks > 0.5).astype(np.uint8))
    assert binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 1}
    assert np.mean(binary[0] == (frame > 0.5)) > 0.98
    with pytest.raises(ValueError, match=r"masks must be an \(N, 64, 64\) array, got \(64, 64\)"):
        placement.masks_to_frame(masks[0])


def test_masks_to_frame_at_the_same_size_is_a_copy():
    masks = np.random.default_rng(0).random((3, 32, 48)).astype(np.float32)
    placement = placement_for((32, 48), (32, 48))
    back = placement.masks_to_frame(masks)
    np.testing.assert_array_equal(back, masks)
    assert back is not masks and not np.shares_memory(back, masks)


def test_scaled_frames_stay_within_0_and_1():
    # fecral-loops' 1120 x 710 frames fitted to 512 px: INTER_AREA's float32 averages
    # of white pixels come out as 1.0000002 without the clip.
    frame = np.ones((710, 1120), np.float32)
    frame[np.random.default_rng(0).random(frame.shape) < 0.3] = 0.9
    fitted, placement = fit_to_input(frame, (512, 512))
    assert placement.scale == pytest.approx(512 / 1120)
    assert fitted.max() == 1.0 and fitted.min() >= 0.0
