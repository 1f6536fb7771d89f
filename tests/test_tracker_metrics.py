"""Tests of temtrack.tracker.metrics: IDF1 and ID switches on hand-made trackings."""

from __future__ import annotations

import numpy as np
import pytest

from temtrack.tracker import tracking_scores


def test_perfect_tracking():
    frame = np.repeat(np.arange(10), 3)
    gt = np.tile([0, 1, 2], 10)
    s = tracking_scores(frame, gt, gt + 100)
    assert (s.idf1, s.idp, s.idr, s.id_switches, s.switches_per_1000) == (1.0, 1.0, 1.0, 0, 0.0)
    assert (s.gt_detections, s.gt_tracks, s.predicted_tracks) == (30, 3, 3)


def test_one_fragmentation_is_one_switch():
    # One ground-truth track over 10 frames whose predicted id changes once at frame 6.
    frame = np.arange(10)
    s = tracking_scores(frame, np.zeros(10, int), np.where(frame < 6, 5, 7))
    assert s.id_switches == 1
    assert s.switches_per_1000 == pytest.approx(100.0)
    assert s.idtp == 6  # the longer piece is paired with the ground-truth track
    assert s.idf1 == pytest.approx(2 * 6 / 20)


def test_known_swap():
    # Two tracks over 8 frames swap ids at frame 5 (and stay swapped): one switch each;
    # the best one-to-one pairing keeps 5 of the 8 detections of each.
    frame = np.repeat(np.arange(8), 2)
    gt = np.tile([0, 1], 8)
    pred = np.where(frame < 5, gt, 1 - gt) + 40
    s = tracking_scores(frame, gt, pred)
    assert s.id_switches == 2
    assert s.idtp == 10
    assert s.idf1 == pytest.approx(10 / 16)
    # Order of the detections does not matter.
    order = np.random.default_rng(0).permutation(len(frame))
    assert tracking_scores(frame[order], gt[order], pred[order]) == s


def test_gap_and_false_positives():
    # Track 0 missed in frame 2 keeps its id: no switch. A false positive (gt -1) in
    # frame 1 gets an id of its own; it counts against precision only.
    frame = np.array([0, 1, 1, 3])
    gt = np.array([0, 0, -1, 0])
    pred = np.array([4, 4, 9, 4])
    s = tracking_scores(frame, gt, pred)
    assert s.id_switches == 0
    assert (s.idtp, s.gt_detections, s.predicted_detections) == (3, 3, 4)
    assert s.idp == pytest.approx(0.75) and s.idr == 1.0
    assert s.idf1 == pytest.approx(6 / 7)
    # A false positive that takes a track's id then costs that track nothing but precision.
    assert tracking_scores(frame, gt, np.array([4, 4, 4, 4]) + [0, 0, 1, 0]).id_switches == 0


def test_hand_computed_idf1_with_two_tracks():
    # gt A: frames 0-5; gt B: frames 0-3. Predicted: A has id 1 in frames 0-2, then
    # id 3; B has id 2 throughout. Pairing A-1 (3), B-2 (4): IDTP 7 of 10 + 10 detections.
    frame = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    gt = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([1, 1, 1, 3, 3, 3, 2, 2, 2, 2])
    s = tracking_scores(frame, gt, pred)
    assert s.id_switches == 1 and s.idtp == 7 and s.idf1 == pytest.approx(14 / 20)
    # A linker can never give one id to two detections of a frame.
    with pytest.raises(ValueError, match="pred_id repeats within a frame"):
        tracking_scores(frame, gt, np.array([1, 1, 1, 2, 2, 2, 2, 2, 2, 2]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="one value per detection"):
        tracking_scores([0, 1], [0], [0, 1])
    with pytest.raises(ValueError, match="gt_id must be >= 0, or -1"):
        tracking_scores([0], [-2], [0])
    with pytest.raises(ValueError, match="pred_id must be >= 0"):
        tracking_scores([0], [0], [-1])
    with pytest.raises(TypeError, match="frame must hold integers"):
        tracking_scores([0.5], [0], [0])
    with pytest.raises(ValueError, match="gt_id repeats within a frame"):
        tracking_scores([0, 0], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="must be 1-D"):
        tracking_scores(np.zeros((2, 2), int), [0, 1], [0, 1])
    empty = tracking_scores([], [], [])
    assert np.isnan(empty.idf1) and empty.id_switches == 0
