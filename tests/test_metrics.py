"""The thesis' length metric and the standard metrics, on generator ground truth with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numpy.testing import assert_allclose

from temtrack.sdk.metrics import ImageScore, dice_matrix, score_image, summarize
from temtrack.sdk.postprocess import PostprocessSettings, extract_dislocations
from temtrack.training.synth import generate_sample


@pytest.fixture(scope="module")
def sample():
    """sd2, 7 separate dislocations of 150-200 px in 256 x 256, each mask one dislocation."""
    s = generate_sample("sd2", seed=3, size=256)
    frame = extract_dislocations(s.masks)
    assert [m.n_dislocations for m in frame.masks] == [1] * len(s.masks), "fixture precondition"
    return s


def first_half(mask: np.ndarray, centreline: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` nearest to the first half (by arc length) of ``centreline``."""
    steps = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(centreline, axis=0).T))])
    rows, cols = np.nonzero(mask)
    d = np.hypot(cols[:, None] - centreline[None, :, 0], rows[:, None] - centreline[None, :, 1])
    nearest = np.argmin(d, axis=1)
    keep = steps[nearest] <= steps[-1] / 2
    half = np.zeros_like(mask)
    half[rows[keep], cols[keep]] = 1
    return half


def test_perfect_prediction_scores_one(sample):
    score = score_image(sample.masks, sample.masks)
    assert isinstance(score, ImageScore)
    assert_allclose(score.length_score, 1.0, atol=1e-9)
    assert score.pixel_dice == score.pixel_iou == score.pixel_precision == score.pixel_recall == 1.0
    assert score.n_gt == score.n_pred == score.n_matched == len(sample.masks)
    assert score.dislocation_precision == score.dislocation_recall == 1.0
    assert score.count_error == 0 and score.n_gt_ignored == 0
    assert_allclose(score.centreline_distance, 0.0, atol=1e-9)
    assert [m.pred_index for m in score.matches] == list(range(len(sample.masks)))
    assert all(m.dice == 1.0 for m in score.matches)


def test_float_probabilities_score_like_their_binary_masks(sample):
    probabilities = sample.masks.astype(np.float32) * np.float32(0.9)
    assert_allclose(score_image(probabilities, sample.masks).length_score, 1.0, atol=1e-9)


def test_permuted_prediction_with_empty_masks_scores_the_same(sample):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sample.masks))
    pred = np.concatenate([sample.masks[order], np.zeros((5, 256, 256), np.uint8)])
    pred = pred[rng.permutation(len(pred))]
    score = score_image(pred, sample.masks)
    assert_allclose(score.length_score, 1.0, atol=1e-9)
    assert score.n_pred_masks == len(sample.masks) and score.count_error == 0
    # Every ground-truth mask found its own mask back, wherever it went.
    for m in score.matches:
        assert np.array_equal(pred[m.pred_index], sample.masks[m.gt_index])


def test_merged_masks_score_zero(sample):
    union = np.maximum(sample.masks[0], sample.masks[1])
    pred = np.concatenate([union[None], sample.masks[2:]])
    for rule in ("exclude", "zero"):
        score = score_image(pred, sample.masks, multiple=rule)
        assert score.matches[0].score == score.matches[1].score == 0.0
        assert all(m.score == pytest.approx(1.0, abs=1e-9) for m in score.matches[2:])
        n = len(sample.masks)
        assert_allclose(score.length_score, (n - 2) / n, atol=1e-9)
        assert score.n_pred_multiple == 1
    # The thesis filters such masks before matching; "zero" matches them and scores 0.
    excluded = score_image(pred, sample.masks, multiple="exclude")
    assert [m.pred_index for m in excluded.matches[:2]] == [-1, -1]
    zeroed = score_image(pred, sample.masks, multiple="zero")
    assert zeroed.matches[0].pred_index == 0 and zeroed.matches[0].multiple
    assert zeroed.matches[1].pred_index == -1  # the merged mask is used once only


def test_truncated_prediction_scores_about_half(sample):
    frame = extract_dislocations(sample.masks)
    k = int(np.argmax([d.length for d in frame.candidates]))
    pred = sample.masks.copy()
    pred[k] = first_half(sample.masks[k], sample.centrelines[k])
    score = score_image(pred, sample.masks)
    match = score.matches[k]
    assert match.pred_index == k
    # Half the line: L_P ~ L_T / 2 within the few pixels the ends of masks blur.
    assert_allclose(match.score, 0.5, atol=0.05)
    n = len(sample.masks)
    assert_allclose(score.length_score, (n - 1 + match.score) / n, atol=1e-9)
    assert 0.5 < score.pixel_dice < 1.0


def test_unmatched_ground_truth_scores_zero(sample):
    truth = sample.masks[:4]
    score = score_image(truth[[0, 1, 3]], truth)
    assert score.length_score <= 0.75 + 1e-9
    assert score.matches[2].pred_index == -1 and score.matches[2].score == 0.0
    assert math.isnan(score.matches[2].pred_length) and math.isnan(score.matches[2].distance)
    assert score.dislocation_recall == 0.75 and score.dislocation_precision == 1.0
    assert score.count_error == -1


def test_low_dice_is_no_match(sample):
    truth = sample.masks[:1]
    pred = np.zeros_like(truth)
    rows, cols = np.nonzero(truth[0])
    pred[0, rows[:5], cols[:5]] = 1  # 5 shared pixels: Dice well under 0.1
    pred[0, 200:203, 10:60] = 1  # plus a line elsewhere, so the mask holds a dislocation
    score = score_image(pred, truth)
    assert score.matches[0].pred_index == -1
    assert score.length_score == 0.0 and score.dislocation_precision == 0.0


def test_duplicates_are_counted_once(sample):
    pred = np.concatenate([sample.masks, sample.masks[:2], sample.masks[3:4]])
    score = score_image(pred, sample.masks)
    assert_allclose(score.length_score, 1.0, atol=1e-9)
    assert score.n_pred_masks == len(sample.masks) + 3
    # After de-duplication the pipeline outputs each dislocation once.
    assert score.n_pred == len(sample.masks) and score.count_error == 0
    assert score.dislocation_precision == 1.0


def test_false_positive_lowers_precision_and_counts(sample):
    extra = np.zeros((1, 256, 256), np.uint8)
    cv2.line(extra[0], (5, 250), (60, 250), 1, 3)
    extra[0] &= 1 - sample.masks.max(axis=0)
    pred = np.concatenate([sample.masks, extra])
    score = score_image(pred, sample.masks)
    n = len(sample.masks)
    assert score.count_error == 1
    assert_allclose(score.dislocation_precision, n / (n + 1), atol=1e-12)
    assert score.length_score == pytest.approx(1.0, abs=1e-9)
    assert score.pixel_precision < 1.0 and score.pixel_recall == 1.0


def test_lines_drawn_by_hand():
    truth = np.zeros((2, 64, 64), np.uint8)
    cv2.line(truth[0], (5, 10), (55, 10), 1, 3)
    cv2.line(truth[1], (5, 40), (55, 40), 1, 3)
    pred = truth[::-1].copy()
    pred[0, :, 32:] = 0  # the second line now ends at x = 30: 25 of its 50 px
    score = score_image(pred, truth)
    assert [m.pred_index for m in score.matches] == [1, 0]
    assert_allclose([m.gt_length for m in score.matches], [50.0, 50.0], atol=0.5)
    assert_allclose(score.matches[1].pred_length, 25.0, atol=0.5)
    assert_allclose(score.length_score, 0.75, atol=0.01)


def test_too_long_prediction_is_floored_at_zero():
    truth = np.zeros((1, 64, 64), np.uint8)
    cv2.line(truth[0], (20, 30), (30, 30), 1, 3)  # 10 px
    pred = np.zeros_like(truth)
    cv2.line(pred[0], (20, 30), (60, 30), 1, 3)  # 40 px: 1 - 30/10 = -2
    score = score_image(pred, truth)
    assert score.matches[0].pred_index == 0 and score.matches[0].score == 0.0


def test_images_without_dislocations():
    nothing = np.zeros((0, 32, 32), np.uint8)
    empty = score_image(np.zeros((3, 32, 32), np.float32), nothing)
    assert empty.length_score == 1.0 and empty.pixel_dice == 1.0 and empty.dislocation_precision == 1.0
    assert math.isnan(empty.centreline_distance) and empty.n_gt == 0 and empty.matches == ()
    pred = np.zeros((1, 32, 32), np.uint8)
    cv2.line(pred[0], (2, 5), (30, 5), 1, 3)
    spurious = score_image(pred, nothing)
    assert spurious.length_score == 0.0 and spurious.pixel_dice == 0.0 and spurious.count_error == 1
    missed = score_image(nothing, pred)
    assert missed.length_score == 0.0 and missed.dislocation_recall == 0.0 and missed.pixel_recall == 0.0


def test_specks_in_ground_truth_are_not_scored():
    truth = np.zeros((2, 32, 32), np.uint8)
    cv2.line(truth[0], (2, 5), (30, 5), 1, 3)
    truth[1, 20, 20] = 1  # a dislocation just touching the image: no line to measure
    score = score_image(truth[:1], truth)
    assert score.n_gt == 1 and score.n_gt_ignored == 1
    assert_allclose(score.length_score, 1.0, atol=1e-9)


def test_dice_matrix_matches_a_direct_count(sample):
    rng = np.random.default_rng(1)
    pred = (rng.random((4, 256, 256)) < 0.02).astype(np.uint8)
    pred[1] |= sample.masks[2]
    pred[3] = 0
    expected = np.zeros((len(sample.masks), 4))
    for i, a in enumerate(sample.masks.astype(bool)):
        for j, b in enumerate(pred.astype(bool)):
            expected[i, j] = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert_allclose(dice_matrix(sample.masks, pred), expected, rtol=1e-12, atol=1e-12)
    assert dice_matrix(sample.masks, pred[:0]).shape == (len(sample.masks), 0)


def test_inputs_are_not_modified(sample):
    pred = sample.masks.astype(np.float32) * np.float32(0.8)
    truth = sample.masks.copy()
    before = pred.copy(), truth.copy()
    score_image(pred, truth)
    assert np.array_equal(pred, before[0]) and np.array_equal(truth, before[1])


@pytest.mark.parametrize(
    ("pred", "truth", "error", "words"),
    [
        (np.zeros((2, 32, 32), np.uint8), np.zeros((2, 32, 16), np.uint8), ValueError, ["pred_masks", "true_masks", "(2, 32, 32)", "(2, 32, 16)"]),
        (np.zeros((32, 32), np.uint8), np.zeros((1, 32, 32), np.uint8), ValueError, ["pred_masks", "(32, 32)"]),
        (np.zeros((1, 32, 32), np.uint8), np.zeros((1, 1, 32, 32), np.uint8), ValueError, ["true_masks", "4-D"]),
        (np.zeros((1, 32, 32), np.uint8), np.full((1, 32, 32), np.nan, np.float32), ValueError, ["true_masks", "NaN"]),
        (np.full((1, 32, 32), 2.0), np.zeros((1, 32, 32), np.uint8), ValueError, ["pred_masks", "[0, 1]"]),
        (np.zeros((1, 32, 32), np.int32), np.zeros((1, 32, 32), np.uint8), TypeError, ["pred_masks", "int32"]),
        ([[[0]]], np.zeros((1, 1, 1), np.uint8), TypeError, ["pred_masks", "list"]),
    ],
)
def test_bad_masks_name_the_argument(pred, truth, error, words):
    with pytest.raises(error) as info:
        score_image(pred, truth)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"min_dice": 0.0}, ["min_dice", "0.0"]),
        ({"min_dice": 1.5}, ["min_dice", "1.5"]),
        ({"multiple": "drop"}, ["multiple", "'drop'", "exclude"]),
        ({"settings": {"threshold": 0.5}}, ["settings", "dict"]),
    ],
)
def test_bad_options_name_the_argument(options, words):
    masks = np.zeros((1, 16, 16), np.uint8)
    with pytest.raises((ValueError, TypeError)) as info:
        score_image(masks, masks, **options)
    for word in words:
        assert word in str(info.value)


def test_settings_reach_the_post_processing(sample):
    # A size filter larger than any mask leaves nothing to score on either side.
    score = score_image(sample.masks, sample.masks, settings=PostprocessSettings(min_pixels=100_000))
    assert score.n_gt == 0 and score.n_gt_ignored == len(sample.masks) and score.length_score == 1.0


def test_summarize(sample):
    perfect = score_image(sample.masks, sample.masks)
    partial = score_image(sample.masks[:4][[0, 1, 3]], sample.masks[:4])
    summary = summarize([perfect, partial])
    assert summary["n_images"] == 2 and summary["n_gt"] == len(sample.masks) + 4
    assert_allclose(summary["length_score_mean"], (1.0 + 0.75) / 2, atol=1e-9)
    assert_allclose(summary["length_score_median"], (1.0 + 0.75) / 2, atol=1e-9)
    n = len(sample.masks)
    assert_allclose(summary["length_score_pooled"], (n + 3) / (n + 4), atol=1e-9)
    assert_allclose(summary["dislocation_recall_pooled"], (n + 3) / (n + 4), atol=1e-12)
    assert summary["count_error_mean"] == -0.5 and summary["count_error_abs_mean"] == 0.5
    assert_allclose(summary["centreline_distance_mean"], 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(TypeError, match=r"scores\[0\]"):
        summarize([{"length_score": 1.0}])


def test_to_dict_is_json_ready(sample):
    import json

    score = score_image(sample.masks[:2], sample.masks[:3])
    text = json.dumps(score.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["matches"][2]["pred_index"] == -1 and back["matches"][2]["distance"] is None
