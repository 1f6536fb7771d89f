"""Masks to splines: known answers from drawn lines and from the generator's ground truth."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numpy.testing import assert_allclose

from temtrack.sdk.geometry import arc_length, curve_distance, fit_spline, hausdorff_distance, length_nm, min_distance
from temtrack.sdk.postprocess import PostprocessSettings, extract_dislocations
from temtrack.training.synth import generate_sample


def line_masks(lines, *, shape=(128, 128), width=3, n_masks=None):
    """One uint8 mask per polyline (list of (x, y) points), drawn ``width`` px wide."""
    n_masks = n_masks or len(lines)
    masks = np.zeros((n_masks, *shape), np.uint8)
    for k, line in enumerate(lines):
        cv2.polylines(masks[k], [np.asarray(line, np.int32).reshape(-1, 1, 2)], False, 1, width)
    return masks


def test_straight_line_length_and_points():
    masks = line_masks([[(10, 20), (110, 20)]])
    frame = extract_dislocations(masks)
    assert len(frame.dislocations) == 1
    d = frame.dislocations[0]
    assert d.points.shape == (50, 2)
    # The drawn line runs from x=10 to x=110: 100 px, recovered within 1 px.
    assert_allclose(d.length, 100.0, atol=1.0)
    assert_allclose(sorted([d.start[0], d.end[0]]), [10.0, 110.0], atol=1.0)
    assert_allclose(d.points[:, 1], 20.0, atol=0.3)
    assert d.max_curvature < 0.01
    spacing = np.hypot(*np.diff(d.points, axis=0).T)
    assert_allclose(spacing, d.length / 49, rtol=0.02)
    assert_allclose(d.centroid, [60.0, 20.0], atol=1.0)
    assert frame.masks[0].multiple is False and frame.masks[0].n_dislocations == 1


def test_empty_masks_give_nothing():
    frame = extract_dislocations(np.zeros((5, 64, 64), np.float32))
    assert frame.dislocations == () and frame.candidates == ()
    assert [m.n_pixels for m in frame.masks] == [0] * 5


def test_zero_masks_are_fine():
    frame = extract_dislocations(np.zeros((0, 64, 64), np.uint8))
    assert frame.dislocations == () and frame.masks == () and frame.shape == (64, 64)


def test_one_pixel_mask_is_noise_even_when_kept():
    masks = np.zeros((1, 32, 32), np.uint8)
    masks[0, 10, 10] = 1
    assert extract_dislocations(masks).dislocations == ()
    # Kept by the size filter, a single pixel still has no length to fit a line to.
    frame = extract_dislocations(masks, settings=PostprocessSettings(min_pixels=1))
    assert frame.dislocations == ()
    assert frame.masks[0].n_components == 1


def test_small_components_are_dropped_by_size():
    masks = line_masks([[(10, 10), (24, 10)]], width=1)  # 15 px < 20
    assert extract_dislocations(masks).dislocations == ()
    assert len(extract_dislocations(masks, settings=PostprocessSettings(min_pixels=10)).dislocations) == 1


@pytest.mark.parametrize("width", [1, 3, 9, 15])
def test_thin_and_thick_lines(width):
    masks = line_masks([[(20, 30), (100, 90)]], width=width)
    frame = extract_dislocations(masks)
    assert len(frame.dislocations) == 1
    d = frame.dislocations[0]
    true = np.array([[20.0, 30.0], [100.0, 90.0]])
    # Thick masks have flat ends in OpenCV's rasterisation; the centre stays on the line.
    assert hausdorff_distance(d.points, true, exclude_ends=3 + width / 2) < 1.5
    assert_allclose(d.length, 100.0, rtol=0.03 + 0.01 * (width > 9))


def test_crossing_dislocations_in_one_mask_are_flagged_and_split():
    lines = [[(10, 64), (118, 64)], [(64, 10), (64, 118)]]
    masks = np.maximum(*line_masks(lines))[None]
    frame = extract_dislocations(masks)
    assert frame.masks[0].multiple
    assert len(frame.dislocations) == 2
    # Each piece runs straight through the crossing, not round the corner.
    lengths = sorted(d.length for d in frame.dislocations)
    assert_allclose(lengths, [108.0, 108.0], atol=3.0)
    for d in frame.dislocations:
        assert d.max_curvature < 0.2
        horizontal = np.ptp(d.points[:, 1]) < 3
        vertical = np.ptp(d.points[:, 0]) < 3
        assert horizontal or vertical


def test_touching_dislocations_t_junction():
    lines = [[(10, 64), (118, 64)], [(64, 66), (64, 118)]]  # the second ends on the first
    masks = np.maximum(*line_masks(lines))[None]
    frame = extract_dislocations(masks)
    assert frame.masks[0].multiple
    lengths = sorted(d.length for d in frame.dislocations)
    assert len(lengths) == 2
    assert_allclose(lengths, [53.0, 108.0], atol=4.0)


def test_two_components_in_one_mask_are_two_dislocations():
    lines = [[(10, 20), (110, 20)], [(10, 90), (110, 100)]]
    masks = np.maximum(*line_masks(lines))[None]
    frame = extract_dislocations(masks)
    assert frame.masks[0].multiple and frame.masks[0].n_components == 2
    assert len(frame.dislocations) == 2


def test_short_spurs_are_pruned():
    masks = line_masks([[(10, 64), (118, 64)]])
    cv2.line(masks[0], (60, 64), (60, 58), 1, 1)  # a 5 px bump
    frame = extract_dislocations(masks)
    assert not frame.masks[0].multiple
    assert_allclose(frame.dislocations[0].length, 108.0, atol=1.5)


def test_closed_loop():
    masks = np.zeros((1, 128, 128), np.uint8)
    cv2.circle(masks[0], (64, 64), 40, 1, 3)
    frame = extract_dislocations(masks)
    assert len(frame.dislocations) == 1
    d = frame.dislocations[0]
    assert d.closed
    assert_allclose(d.points[0], d.points[-1], atol=1e-6)
    assert_allclose(d.length, 2 * np.pi * 40, rtol=0.02)
    assert_allclose(d.mean_curvature, 1 / 40, rtol=0.1)
    assert_allclose(np.hypot(*(d.points - 64).T), 40.0, atol=1.0)


def test_line_leaving_the_image_runs_to_the_border():
    masks = line_masks([[(-20, 40), (60, 40)]], shape=(80, 80))
    d = extract_dislocations(masks).dislocations[0]
    # Visible from the border (x = -0.5) to x = 60.
    assert_allclose(min(d.start[0], d.end[0]), -0.5, atol=1.0)
    assert_allclose(d.length, 60.5, atol=1.5)


def test_float_and_uint8_inputs_agree_and_are_not_modified():
    sample = generate_sample("sd1", seed=5, size=256)
    binary = sample.masks.copy()
    noise = np.random.default_rng(0).uniform(-0.05, 0.05, binary.shape)
    probs = (np.where(binary > 0, 0.8, 0.1) + noise).astype(np.float32)
    before_b, before_p = binary.copy(), probs.copy()
    from_binary = extract_dislocations(binary)
    from_probs = extract_dislocations(probs)
    np.testing.assert_array_equal(binary, before_b)
    np.testing.assert_array_equal(probs, before_p)
    thresholded = extract_dislocations((probs > 0.5).astype(np.uint8))
    as_bool = extract_dislocations(probs > 0.5)
    assert len(from_probs.dislocations) == len(thresholded.dislocations) == len(as_bool.dislocations)
    for a, b in zip(from_probs.dislocations, thresholded.dislocations):
        assert_allclose(a.points, b.points)
        assert 0.5 < a.score <= 1.0 and b.score == 1.0
    assert len(from_binary.dislocations) == len(from_probs.dislocations) == len(sample.masks) >= 2
    for a, b in zip(from_binary.dislocations, from_probs.dislocations):
        assert_allclose(a.points, b.points)


def test_duplicate_masks_are_merged_and_recorded():
    line = [(10, 30), (110, 60)]
    masks = np.zeros((3, 128, 128), np.float32)
    cv2.polylines(masks[0], [np.array(line, np.int32)], False, 0.9, 3)
    cv2.polylines(masks[2], [np.array(line, np.int32) + [0, 1]], False, 0.7, 5)  # same, shifted, fatter
    frame = extract_dislocations(masks)
    assert len(frame.candidates) == 2
    assert len(frame.dislocations) == 1
    # The higher mean probability wins.
    assert frame.dislocations[0].mask_index == 0
    (merge,) = frame.merges
    assert merge.reason == "duplicate" and merge.kept == (0, 0) and merge.dropped == (2, 0)
    assert merge.dice > 0.5


def test_fragment_inside_a_larger_piece_is_not_counted_twice():
    masks = line_masks([[(10, 30), (110, 30)], [(40, 30), (70, 30)]], width=3)
    masks[1] = np.maximum(masks[1], line_masks([[(10, 100), (110, 100)]])[0])  # + another line
    frame = extract_dislocations(masks)
    assert len(frame.dislocations) == 2
    assert any(m.reason == "contained" for m in frame.merges)


def test_dislocation_split_across_two_masks_is_joined():
    masks = line_masks([[(10, 40), (60, 40)], [(62, 40), (115, 40)]])
    frame = extract_dislocations(masks)
    assert len(frame.candidates) == 2
    assert len(frame.dislocations) == 1
    assert_allclose(frame.dislocations[0].length, 105.0, atol=2.0)
    assert [m.reason for m in frame.merges] == ["joined"]


def test_overlapping_halves_in_two_masks_are_joined_without_doubling_back():
    masks = line_masks([[(10, 40), (70, 40)], [(60, 40), (115, 40)]])  # 10 px overlap
    frame = extract_dislocations(masks)
    assert len(frame.dislocations) == 1
    assert_allclose(frame.dislocations[0].length, 105.0, atol=2.0)


def test_parallel_neighbours_are_not_joined():
    # A pile-up: parallel lines 6 px apart are separate dislocations.
    masks = line_masks([[(10, 40), (110, 40)], [(10, 46), (110, 46)], [(10, 52), (110, 52)]])
    assert len(extract_dislocations(masks).dislocations) == 3


def test_fidelity_on_generator_ground_truth():
    """The recovered spline lies within 1.5 px of the exact centreline (ends excluded) and
    its length within 3 %, for ground-truth masks of the generator (full benchmark:
    benchmarks/bench_postprocess.py)."""
    within, total = 0, 0
    for preset, seed in (("sd1", 0), ("sd2", 1), ("sd3", 2)):
        sample = generate_sample(preset, seed=seed)
        frame = extract_dislocations(sample.masks)
        for k, centreline in enumerate(sample.centrelines):
            pieces = [d for d in frame.candidates if d.mask_index == k]
            best = max(pieces, key=lambda d: d.n_pixels)
            total += 1
            close = hausdorff_distance(best.points, centreline, exclude_ends=3.0) <= 1.5
            within += close and abs(best.length / arc_length(centreline) - 1) <= 0.03
    assert total >= 15
    assert within / total >= 0.9


def test_settings_are_validated():
    with pytest.raises(ValueError, match="threshold"):
        PostprocessSettings(threshold=1.5)
    with pytest.raises(ValueError, match="n_points"):
        PostprocessSettings(n_points=1)
    with pytest.raises(TypeError):
        PostprocessSettings(bogus=1)


@pytest.mark.parametrize(
    "masks, error, match",
    [
        (np.zeros((64, 64), np.float32), ValueError, "shape \\(N, H, W\\)"),
        (np.zeros((2, 64, 64), np.int32), TypeError, "int32"),
        (np.full((1, 8, 8), np.nan, np.float32), ValueError, "NaN"),
        (np.full((1, 8, 8), 2.0, np.float32), ValueError, "\\[2, 2\\]"),
        ([[[0.0]]], TypeError, "list"),
    ],
)
def test_bad_masks_are_named(masks, error, match):
    with pytest.raises(error, match=match):
        extract_dislocations(masks)


def test_curve_distances():
    a = np.column_stack([np.linspace(0, 50, 51), np.zeros(51)])
    b = a + [0, 4]
    assert_allclose(curve_distance(a, b), 4.0)
    assert_allclose(min_distance(a, b), 4.0)
    # Half as long: from b every point is 4 px away, from a half of them are farther.
    c = b[:26]
    assert curve_distance(a, c) > 4.0
    crossing = np.array([[25.0, -5.0], [25.0, 5.0]])
    assert min_distance(a, crossing) == 0.0
    assert_allclose(length_nm(120.0, 0.5), 60.0)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        length_nm(10.0, 0.0)
    with pytest.raises(ValueError, match="\\(n, 2\\)"):
        curve_distance(np.zeros(5), a)


def test_fit_spline_smooths_a_staircase():
    # A 30-degree line rasterised to pixels: the staircase is 8 % longer than the line.
    x = np.arange(0, 100)
    staircase = np.column_stack([x, np.round(x * np.tan(np.radians(30)))])
    true_length = 99 / np.cos(np.radians(30))
    assert arc_length(staircase) > 1.05 * true_length
    assert_allclose(fit_spline(staircase).length, true_length, rtol=0.01)


def test_fit_spline_survives_a_path_that_steps_back():
    # Every other point of this path repeats a point: the fit must not see a zero chord.
    path = np.array([[x, 0.0] for x in range(11)] + [[8.5, 0.0], [10.0, 0.0]] + [[x, 0.0] for x in range(11, 21)])
    spline = fit_spline(path)
    assert np.isfinite(spline.points).all()
    assert 19.0 <= spline.length <= 24.0


def test_huge_blob_split_into_pieces_does_not_overflow_the_line_width():
    # A frame-filling blob pierced by small holes: its skeleton is a mesh of short paths,
    # so area / path length (the width of each piece's pixel band) passed OpenCV's
    # maximum line thickness, 32767, and cv2.polylines raised (issue 18, 4096 px frames).
    size = 640
    masks = np.zeros((1, size, size), np.uint8)
    masks[0, 2:-2, 2:-2] = 1
    for y, x in np.random.default_rng(1).integers(50, size - 50, (30, 2)):
        masks[0, y : y + 3, x : x + 3] = 0
    frame = extract_dislocations(masks)
    assert frame.masks[0].multiple and len(frame.dislocations) > 1
    for d in frame.dislocations:  # each piece's pixels still lie in the mask
        r0, r1, c0, c1 = d.box
        assert (masks[0, r0:r1, c0:c1][d.pixels.astype(bool)] == 1).all()


def test_band_width_is_bounded_by_the_line_the_crop_and_opencv():
    from temtrack.sdk.postprocess import _band_width

    assert _band_width(100, 100.0, (20, 110), 1.0) == 3  # a one-pixel line: the minimum
    assert _band_width(1000, 100.0, (20, 110), 5.0) == 11  # the mean width, odd
    # A short path in a big blob: no wider than the thickest part of the component ...
    assert _band_width(400 * 400, 2.0, (400, 400), 7.2) == 2 * 8 + 3
    # ... nor than needed to cover the crop, nor than OpenCV draws.
    assert _band_width(400 * 400, 2.0, (400, 400), 1000.0) == 2 * 566 + 1
    assert _band_width(4100 * 4100, 1.0, (30000, 30000), 1e5) == 32767


def _same_frames(a, b):
    assert a.shape == b.shape and a.masks == b.masks and a.merges == b.merges
    assert len(a.dislocations) == len(b.dislocations) and len(a.candidates) == len(b.candidates)
    for x, y in zip(a.dislocations + a.candidates, b.dislocations + b.candidates):
        assert (x.key, x.box, x.n_pixels, x.score, x.closed) == (y.key, y.box, y.n_pixels, y.score, y.closed)
        assert_allclose(x.points, y.points, atol=0)
        np.testing.assert_array_equal(x.pixels, y.pixels)


@pytest.mark.parametrize("floating", [False, True])
def test_packed_masks_give_what_the_full_masks_give(floating):
    from temtrack.sdk.backends.contract import PackedMasks

    lines = [[(10, 64), (118, 64)], [(64, 10), (64, 118)], [(12, 20), (60, 30)], [(14, 22), (58, 31)]]
    masks = line_masks(lines, n_masks=6)
    masks[2] = np.maximum(masks[2], masks[0])  # a crossing in one mask, a duplicate across masks
    if floating:
        masks = (cv2.GaussianBlur(masks.astype(np.float32).transpose(1, 2, 0), (5, 5), 1.0) * 0.9).transpose(2, 0, 1)
        masks = np.ascontiguousarray(masks)
    packed = PackedMasks.pack(masks, 0.5 if floating else None)
    assert len(packed.crops) == 4  # the empty masks are not packed
    _same_frames(extract_dislocations(packed), extract_dislocations(packed.unpack()))


def test_bad_packed_masks_are_named():
    from temtrack.sdk.backends.contract import PackedMasks

    packed = PackedMasks.pack(line_masks([[(10, 20), (110, 20)]]), None)
    outside = PackedMasks(packed.shape, packed.indices, packed.boxes + [0, 100], packed.crops, packed.dtype)
    with pytest.raises(ValueError, match=r"masks: crop 0 of shape \(\d+, \d+\) at row \d+, column 1\d\d lies outside"):
        extract_dislocations(outside)
    wrong = PackedMasks(packed.shape, packed.indices, packed.boxes, (packed.crops[0].astype(np.int32),), "int32")
    with pytest.raises(TypeError, match="masks crop 0 must be float probabilities"):
        extract_dislocations(wrong)


def _all_pairs_best_join(pieces, settings):
    """The join search as it was before the k-d tree (every pair of ends): the reference."""
    from temtrack.sdk.geometry import distance_to_curve
    from temtrack.sdk.postprocess import _OVERLAP_OFFSET, _end_tangents

    open_ = [k for k, d in enumerate(pieces) if not d.closed]
    if len(open_) < 2:
        return None
    ends = np.array([[pieces[k].points[0], pieces[k].points[-1]] for k in open_]).reshape(-1, 2)
    gap = np.hypot(*(ends[:, None, :] - ends[None, :, :]).transpose(2, 0, 1))
    owner = np.repeat(np.arange(len(open_)), 2)
    lengths = np.repeat([pieces[k].length for k in open_], 2)
    reach = np.maximum(settings.join_distance, 0.5 * np.minimum(lengths[:, None], lengths[None, :]))
    near = (gap <= reach) & (owner[:, None] < owner[None, :])
    tangents = np.array([_end_tangents(pieces[k]) for k in open_]).reshape(-1, 2)
    near &= -(tangents @ tangents.T) >= math.cos(math.radians(settings.join_angle))
    for a, b in np.argwhere(near & (gap > settings.join_distance)):
        pa, pb = pieces[open_[owner[a]]], pieces[open_[owner[b]]]
        near[a, b] = (distance_to_curve(ends[a : a + 1], pb.points)[0] <= _OVERLAP_OFFSET
                      and distance_to_curve(ends[b : b + 1], pa.points)[0] <= _OVERLAP_OFFSET)
    candidates = np.argwhere(near)
    if len(candidates) == 0:
        return None
    a, b = candidates[np.argmin(gap[candidates[:, 0], candidates[:, 1]])]
    return open_[owner[a]], open_[owner[b]], int(a % 2), int(b % 2)


def test_join_search_finds_what_the_all_pairs_search_finds():
    from temtrack.sdk.postprocess import _best_join, _joined

    settings = PostprocessSettings()
    rng = np.random.default_rng(7)
    # 60 straight lines, each cut in two with a 3 px gap, one piece per mask: pieces that
    # must be joined back, among crossings and near misses.
    segments = []
    for _ in range(60):
        start = rng.uniform(20, 490, 2)
        angle = rng.uniform(0, math.pi)
        direction = np.array([math.cos(angle), math.sin(angle)])
        length = rng.uniform(40, 160)
        cut = rng.uniform(0.3, 0.7) * length
        segments += [[start, start + direction * cut], [start + direction * (cut + 3), start + direction * length]]
    masks = line_masks([np.clip(s, 0, 511) for s in segments], shape=(512, 512))
    pieces = sorted(extract_dislocations(masks).candidates, key=lambda d: d.key)
    joins = 0
    while True:
        found = _best_join(pieces, settings)
        assert found == _all_pairs_best_join(pieces, settings)
        if found is None:
            break
        i, j, a_end, b_end = found
        pieces[i] = _joined(pieces[i], pieces[j], a_end, b_end, settings)
        del pieces[j]
        joins += 1
    assert joins >= 40


@pytest.mark.slow
def test_classical_masks_of_a_4096_frame_in_bounded_memory():
    # The classical backend on a 4096 x 4096 frame gave ~1200 components, one a mesh
    # across the frame that splits into ~12000 pieces: cv2.polylines raised, then the
    # full-size masks (17 GB), each piece's band as wide as the mesh and the all-pairs
    # join search (9 GB) ran out of memory. Packed, it takes ~2 GB and a minute or two.
    import tracemalloc

    from temtrack.sdk.backends.classical import ClassicalBackend

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.normal(0.5, 0.1, (4096, 4096)).astype(np.float32), (0, 0), 20)
    image = (image - image.min()) / (image.max() - image.min())
    for _ in range(8):
        cv2.line(image, (int(rng.integers(0, 4096)), 0), (int(rng.integers(0, 4096)), 4095), 0.1, 6)
    image = np.clip(image + rng.normal(0, 0.05, image.shape).astype(np.float32), 0, 1)
    (packed,) = ClassicalBackend().predict_packed(image[None])
    tracemalloc.start()
    try:
        frame = extract_dislocations(packed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(frame.dislocations) > 1000
    assert peak < 4e9, f"peak {peak / 1e9:.1f} GB"
