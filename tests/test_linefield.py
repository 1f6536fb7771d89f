"""Line fields without torch: targets from exact centrelines, extraction by geometry,
and the spline-level matching that scores partially labelled frames.

Known answers come from hand-drawn lines and from the generator: perfect fields (the
targets themselves) must give back the generator's dislocations.
"""

from __future__ import annotations

import numpy as np
import pytest

from temtrack.sdk.linefield import LineFieldSettings, extract_lines, hessian_direction, instance_masks
from temtrack.sdk.metrics import score_image, score_splines, summarize
from temtrack.training.synth import generate_sample
from temtrack.training.synth.targets import line_targets


def _line(start, end, n=200):
    return np.column_stack([np.linspace(start[0], end[0], n), np.linspace(start[1], end[1], n)])


def _fields(curves, shape, **options):
    t = line_targets(curves, shape, **options)
    return np.concatenate([t.centre[None], t.direction])


# --- targets ----------------------------------------------------------------------------


def test_ridge_peaks_on_the_centreline_with_sigma_width():
    t = line_targets([_line((10, 20.3), (90, 20.3))], (48, 100), sigma=1.2)
    column = t.centre[:, 50].astype(float)
    assert np.argmax(column) == 20
    # exp(-d^2 / 2 sigma^2) at d = 0.3 and 1.7 px, within float32 and 0.5 px sampling
    np.testing.assert_allclose(column[20], np.exp(-0.09 / 2.88), atol=0.02)
    np.testing.assert_allclose(column[22], np.exp(-1.7**2 / 2.88), atol=0.02)
    assert column[30] == 0.0


def test_pile_up_neighbours_5px_apart_stay_two_peaks():
    t = line_targets([_line((0, 20), (99, 20)), _line((0, 25), (99, 25))], (48, 100))
    column = t.centre[:, 50]
    assert column[20] > 0.95 and column[25] > 0.95
    assert column[22] < 0.5 * column[20]  # a valley between them


@pytest.mark.parametrize(
    ("angle", "expected"),
    [(0.0, (1.0, 0.0)), (45.0, (0.0, 1.0)), (90.0, (-1.0, 0.0)), (135.0, (0.0, -1.0))],
)
def test_direction_is_the_doubled_angle_near_lines_only(angle, expected):
    a = np.radians(angle)
    centre = np.array([50.0, 50.0])
    line = _line(centre - 40 * np.array([np.cos(a), np.sin(a)]), centre + 40 * np.array([np.cos(a), np.sin(a)]))
    t = line_targets([line], (100, 100), band=3.0)
    np.testing.assert_allclose(t.direction[:, 50, 50], expected, atol=1e-6)
    assert t.weight[50, 50] == 1.0
    assert t.weight[0, 99] == 0.0 and (t.direction[:, 0, 99] == 0).all()
    # A line and its reverse are the same target.
    np.testing.assert_allclose(line_targets([line[::-1]], (100, 100)).direction, t.direction, atol=1e-6)


def test_end_map_marks_line_ends_but_not_where_the_image_cuts_the_line():
    t = line_targets([_line((30, 20), (99.0, 20))], (40, 100), ends=True)
    assert t.ends[20, 30] == pytest.approx(1.0, abs=1e-6)
    assert t.ends[20, 99] == 0.0


def test_targets_of_no_line_are_empty_and_bad_input_is_named():
    t = line_targets([], (16, 16))
    assert not t.centre.any() and not t.weight.any()
    with pytest.raises(ValueError, match="sigma"):
        line_targets([], (16, 16), sigma=0)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        line_targets([np.zeros((5, 3))], (16, 16))


# --- extraction -------------------------------------------------------------------------


def test_one_line_gives_one_dislocation_of_its_length():
    frame = extract_lines(_fields([_line((10, 30), (110, 60))], (96, 128)))
    assert len(frame.dislocations) == 1
    d = frame.dislocations[0]
    assert d.length == pytest.approx(np.hypot(100, 30), abs=3.0)
    ends = sorted(map(tuple, np.round(d.points[[0, -1]])))
    assert np.allclose(ends, [(10, 30), (110, 60)], atol=2.5)


def test_crossing_lines_are_paired_by_direction():
    a, b = _line((10, 10), (110, 110)), _line((10, 100), (110, 20))
    frame = extract_lines(_fields([a, b], (128, 128)))
    assert len(frame.dislocations) == 2
    lengths = sorted(d.length for d in frame.dislocations)
    np.testing.assert_allclose(lengths, sorted([np.hypot(100, 100), np.hypot(100, 80)]), atol=4.0)
    for d in frame.dislocations:  # each traced line is straight: no turn at the crossing
        assert d.max_curvature < 0.05


def test_a_line_ending_on_another_stays_separate():
    through, stem = _line((10, 60), (118, 60)), _line((64, 62), (64, 120))
    frame = extract_lines(_fields([through, stem], (128, 128)))
    lengths = sorted(d.length for d in frame.dislocations)
    assert len(lengths) == 2
    assert lengths[1] == pytest.approx(108, abs=4) and lengths[0] == pytest.approx(58, abs=5)


def test_neighbours_5px_apart_are_two_dislocations():
    frame = extract_lines(_fields([_line((10, 40), (110, 40)), _line((10, 45), (110, 45))], (96, 128)))
    assert len(frame.dislocations) == 2
    ys = sorted(float(d.points[:, 1].mean()) for d in frame.dislocations)
    np.testing.assert_allclose(ys, [40, 45], atol=0.5)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_hessian_direction_runs_along_a_ridge(angle):
    a = np.radians(angle)
    centre = _fields([_line((64 - 50 * np.cos(a), 64 - 50 * np.sin(a)), (64 + 50 * np.cos(a), 64 + 50 * np.sin(a)))], (128, 128))[0]
    cos2, sin2 = hessian_direction(centre)
    y, x = np.mgrid[:128, :128]
    on = (centre > 0.5) & (np.abs((x - 64) * np.cos(a) + (y - 64) * np.sin(a)) < 40)  # away from the ends
    # Within 3 degrees of the line's axis on the ridge (the doubled angle within 6).
    doubled = np.degrees(np.angle(np.exp(1j * (np.arctan2(sin2[on], cos2[on]) - 2 * a))))
    assert on.sum() > 120 and np.abs(doubled).max() < 6.0
    assert np.allclose(np.hypot(cos2, sin2), 1.0, atol=1e-5)
    flat = hessian_direction(np.zeros((16, 16), np.float32))
    assert np.array_equal(flat[0], np.ones((16, 16))) and not flat[1].any()
    with pytest.raises(ValueError, match="sigma"):
        hessian_direction(centre, 0)


def test_the_centre_map_s_hessian_makes_the_tracing_ignore_a_wrong_direction_field():
    fields = _fields([_line((10, 40), (110, 40)), _line((10, 45), (110, 45))], (96, 128))
    fields[1:3] = -fields[1:3]  # the direction channels turned by 90 degrees
    frame = extract_lines(fields)  # the default reads the direction off the centre map
    assert len(frame.dislocations) == 2
    assert sorted(round(d.length) for d in frame.dislocations) == pytest.approx([100, 100], abs=3)
    # Read from the channels, the suppression runs along the lines and breaks them.
    channels = extract_lines(fields, settings=LineFieldSettings(direction_sigma=0))
    assert sum(d.length for d in channels.dislocations) < 100
    with pytest.raises(ValueError, match="direction_sigma"):
        LineFieldSettings(direction_sigma=-1)


def test_valid_region_excludes_the_rest_and_input_is_not_modified():
    fields = _fields([_line((10, 20), (110, 20)), _line((10, 70), (110, 70))], (96, 128))
    before = fields.copy()
    frame = extract_lines(fields, valid=(0, 48, 0, 128))
    assert len(frame.dislocations) == 1 and frame.dislocations[0].points[:, 1].mean() == pytest.approx(20, abs=0.5)
    np.testing.assert_array_equal(fields, before)


def test_empty_and_bad_fields():
    assert extract_lines(np.zeros((3, 32, 32), np.float32)).dislocations == ()
    with pytest.raises(ValueError, match="NaN"):
        extract_lines(np.full((3, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"C >= 3"):
        extract_lines(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        extract_lines(np.full((3, 8, 8), 2.0, np.float32))
    with pytest.raises(TypeError, match="floating"):
        extract_lines(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="LineFieldSettings.low"):
        LineFieldSettings(high=0.3, low=0.5)


@pytest.mark.parametrize(("preset", "floor"), [("sd1", 0.95), ("sd2", 0.95), ("sd3", 0.7)])
def test_perfect_fields_recover_the_generator_dislocations(preset, floor):
    """The ceiling of the extraction: generator targets in, thesis metric out.
    Measured 0.99 / 0.99 / 0.82 over 20 images each (seeds 5000-5019); these 4 seeds
    get a margin of 0.04-0.1 below that."""
    scores = []
    for seed in range(5000, 5004):
        sample = generate_sample(preset, seed=seed)
        frame = extract_lines(_fields(sample.centrelines, sample.image.shape))
        scores.append(score_image(instance_masks(frame), sample.masks))
    summary = summarize(scores)
    assert summary["length_score_mean"] >= floor
    assert summary["dislocation_recall_mean"] >= 0.95


# --- spline-level matching ---------------------------------------------------------------


def test_spline_matching_one_prediction_per_label():
    label = _line((0, 10), (100, 10), 50)
    twin = label + [0, 4]  # a pile-up neighbour 4 px away: one prediction cannot serve both
    s = score_splines([label + [0, 1]], [label, twin])
    assert s.n_found == 1 and s.recall == 0.5
    assert s.distances[0] == pytest.approx(1.0, abs=1e-6)


def test_spline_matching_needs_coverage_and_nearness():
    label = _line((0, 10), (100, 10), 50)
    assert score_splines([label[:20]], [label]).n_found == 0  # covers 40 % < 50 %
    assert score_splines([label + [0, 6]], [label]).n_found == 0  # 6 px away
    found = score_splines([label[:30], label + [0, 40]], [label])
    assert found.n_found == 1 and found.length_scores[0] == pytest.approx(30 / 50, abs=0.03)
    empty = score_splines([], [])
    assert empty.recall == 1.0 and empty.n_found == 0
    with pytest.raises(ValueError, match="min_coverage"):
        score_splines([], [], min_coverage=0)


def test_found_lines_keep_the_sign_of_their_length_error():
    """The length score is symmetric; the ratio says whether lines come out short
    (pieces, cut ends) or long (run on beyond the label), and the summary counts each."""
    from temtrack.sdk.splinematch import summarize_splines

    label = _line((0, 10), (120, 10), 61)  # 120 px
    short = score_splines([label[:37]], [label])  # 72 px: 0.6 of the label
    longer = score_splines([_line((0, 10), (150, 10), 76)], [label])  # 150 px: 1.25 of it
    assert short.length_ratios[0] == pytest.approx(0.6, abs=0.01)
    assert longer.length_ratios[0] == pytest.approx(1.25, abs=0.01)
    # The score cannot tell them apart by sign: 1 - |ratio - 1| either way.
    assert short.length_scores[0] == pytest.approx(1 - abs(short.length_ratios[0] - 1), abs=1e-9)
    assert longer.length_scores[0] == pytest.approx(1 - abs(longer.length_ratios[0] - 1), abs=1e-9)
    exact = score_splines([label + [0, 1]], [label])
    summary = summarize_splines([short, longer, exact])
    assert summary["matched_length_ratio"] == pytest.approx(1.0, abs=0.01)  # median of 0.6, 1.0, 1.25
    assert summary["matched_shorter"] == pytest.approx(1 / 3) and summary["matched_longer"] == pytest.approx(1 / 3)
    low, high = summary["matched_length_ratio_quartiles"]
    assert 0.6 < low < 1.0 < high < 1.25
    nothing = summarize_splines([score_splines([], [label])])
    assert nothing["matched_length_ratio"] is None and nothing["matched_shorter"] is None


def test_spline_recall_takes_a_models_own_curves():
    """A line-field model's splines are matched as they are, not re-extracted from the
    masks drawn along them: two neighbours 3 px apart drawn 3 px wide merge into one
    band, which the mask route reads as one line; the curves are two."""
    import cv2

    first, second = _line((10, 40), (110, 40), 50), _line((10, 43), (110, 43), 50)
    truth = np.zeros((2, 120, 120), np.uint8)
    for mask, line in zip(truth, (first, second)):
        cv2.polylines(mask, [np.round(line).astype(np.int32)], False, 1, 3)
    drawn = truth.max(0, keepdims=True)  # both lines in one predicted mask
    through_masks = score_image(drawn, truth, splines=True).splines
    own = score_image(drawn, truth, splines=True, pred_curves=[first + [0, 0.5], second - [0, 0.5]]).splines
    assert own.n_found == 2 and own.recall == 1.0
    assert through_masks.n_found < 2


# --- both families everywhere: the main job and eval with a perfect line-field backend ----


class TruthFields:
    """A perfect line-field model: the generator's targets of each frame (looked up by
    the frame's 8-bit pixels)."""

    name = "truth-fields"
    family = "linefield"
    input_size = None
    threshold = None

    def __init__(self, images, centrelines):
        self.fields = {self._key(i): _fields(c, i.shape) for i, c in zip(images, centrelines)}

    @staticmethod
    def _key(image):
        return np.round(np.asarray(image, np.float64) * 255).astype(np.uint8).tobytes()

    def predict(self, frames):
        return [self.fields[self._key(image)] for image in frames]

    def describe(self):
        return {"name": self.name}


@pytest.fixture(scope="module")
def pileup_video():
    from temtrack.training.synth import iter_video, resolve_config
    from temtrack.training.synth.video import VideoSettings

    return list(iter_video(resolve_config("sd1", size=160), 4, VideoSettings(frames=12, fps=10.0, noise=0.0)))


@pytest.mark.parametrize("workers", [0, 1])
def test_main_job_traces_line_fields_into_tracked_splines(pileup_video, workers):
    from temtrack.sdk.analyzer import Analyzer

    stack = np.stack([f.image for f in pileup_video])
    backend = TruthFields([f.image for f in pileup_video], [f.centrelines for f in pileup_video])
    analyzer = Analyzer(backend=backend, workers=workers, flatten=None)  # the frames as they are: fields looked up by pixels
    assert isinstance(analyzer.postprocess, LineFieldSettings)
    splines = analyzer.run(stack, progress=False, fps=10.0).splines
    for frame in pileup_video:
        found = splines[splines.frame == frame.index]
        long = [c for c in frame.centrelines if len(c) > 1 and np.hypot(*np.diff(c, axis=0).T).sum() > 12]
        assert abs(len(found) - len(long)) <= 1, frame.index
        for line in long:  # each line is found where it is, with its length
            centroid = line.mean(axis=0)
            nearest = np.hypot(found.centroid_x - centroid[0], found.centroid_y - centroid[1]).to_numpy()
            assert nearest.min() < 2.0
    # One track per dislocation: as many tracks as lines in a frame, give or take one.
    assert splines.track_id.nunique() <= max(len(f.centrelines) for f in pileup_video) + 2


def test_settings_of_the_other_family_are_refused(pileup_video):
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.postprocess import PostprocessSettings

    backend = TruthFields([], [])
    with pytest.raises(TypeError, match="'linefield'.*'multilabel'"):
        Analyzer(backend=backend, postprocess=PostprocessSettings())
    assert Analyzer(backend=backend, threshold=0.6).postprocess.high == 0.6


def _labelled_frames(folder, seeds=(11, 12, 13)):
    """Generator frames written as a folder of line labels (``frameK.png`` with
    ``frameK_dislocations.png``); their images (as read back) and true centrelines."""
    import cv2

    images, curves = [], []
    for k, seed in enumerate(seeds):
        sample = generate_sample("sd2", seed=seed, size=192)
        image = np.round(sample.image * 255).astype(np.uint8)
        labels = np.zeros_like(image)
        for line in sample.centrelines:
            cv2.polylines(labels, [np.round(line).astype(np.int32).reshape(-1, 1, 2)], False, 255, 1)
        cv2.imwrite(str(folder / f"frame{k:03d}.png"), image)
        cv2.imwrite(str(folder / f"frame{k:03d}_dislocations.png"), labels)
        images.append(image / 255.0)
        curves.append(sample.centrelines)
    return images, curves


def test_eval_scores_a_line_field_model_and_finds_labelled_lines(tmp_path):
    from temtrack.sdk.evaluate import evaluate, format_summary

    images, curves = _labelled_frames(tmp_path)
    report = evaluate(tmp_path, TruthFields(images, curves), flatten=None, progress=False)
    summary = report.summary
    # Lines that touch merge into one label component; the rest are found one to one.
    assert summary["spline_recall"] >= 0.8 and summary["matched_length_score"] >= 0.9
    assert summary["pred_per_frame"] >= summary["true_per_frame"] - 1
    assert report.settings["linefield"]["high"] == LineFieldSettings().high
    # Perfect fields draw each found line about as long as its label.
    assert 0.9 <= summary["matched_length_ratio"] <= 1.1 and summary["matched_shorter"] <= 0.2
    text = format_summary(report)
    assert "spline recall" in text
    ratio_row = next(line for line in text.splitlines() if line.startswith("found length / labelled length"))
    assert float(ratio_row.split()[-1]) == pytest.approx(summary["matched_length_ratio"], abs=5e-4)


class DimFields(TruthFields):
    """Perfect fields whose centre map peaks at 0.65: found at a threshold of 0.6, not
    at the default 0.7. Counts the frames it is shown."""

    def __init__(self, images, centrelines):
        super().__init__(images, centrelines)
        self.seen = 0

    def predict(self, frames):
        self.seen += len(frames)
        dimmed = [f.copy() for f in super().predict(frames)]
        for fields in dimmed:
            fields[0] *= 0.65
        return dimmed


def test_eval_compares_thresholds_with_one_run_of_the_model(tmp_path):
    from temtrack.sdk.evaluate import evaluate, evaluate_thresholds, format_thresholds, plot_thresholds

    images, curves = _labelled_frames(tmp_path)
    model = DimFields(images, curves)
    reports = evaluate_thresholds(tmp_path, model, [0.6, 0.7, None], flatten=None, progress=False)
    assert model.seen == len(images)  # the model ran once per image, for all three thresholds
    low, high, default = (r.summary for r in reports)
    # At 0.6 the dimmed ridges are traced (and scored like the full-strength fields);
    # at 0.7, the default's upper threshold, nothing reaches it.
    assert low["spline_recall"] >= 0.8 and low["matched_length_score"] >= 0.9
    assert high["pred_per_frame"] == 0 and high["spline_recall"] == 0
    assert default == high
    assert [r.settings["threshold"] for r in reports] == [0.6, 0.7, None]
    assert reports[0].settings["linefield"]["high"] == 0.6 and reports[0].settings["linefield"]["min_score"] == 0.6
    # Each report is the one a run at that threshold alone gives.
    alone = evaluate(tmp_path, DimFields(images, curves), flatten=None, threshold=0.6, progress=False)
    assert alone.summary == low and alone.settings == reports[0].settings
    table = format_thresholds(reports).splitlines()
    assert len(table) == 2 + 3 and table[2].split()[0] == "0.6" and table[4].split()[0] == "as"
    assert float(table[2].split()[4]) == pytest.approx(low["spline_recall"], abs=5e-4)
    picture = plot_thresholds(reports, tmp_path / "out" / "thresholds.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="thresholds.png"):
        plot_thresholds(reports, picture)
    for bad, message in (([0.6, 0.6], "given twice"), ([1.2], r"\(0, 1\)"), ([], "at least one"), ("0.6", "sequence")):
        with pytest.raises((ValueError, TypeError), match=message):
            evaluate_thresholds(tmp_path, model, bad, flatten=None, progress=False)


def test_lines_along_the_image_edge_are_dropped():
    fields = _fields([_line((5, 1), (120, 1)), _line((5, 40), (120, 40)), _line((126, 5), (126, 90))], (96, 128))
    kept = extract_lines(fields)
    assert len(kept.dislocations) == 1 and kept.dislocations[0].points[:, 1].mean() == pytest.approx(40, abs=0.5)
    assert len(extract_lines(fields, settings=LineFieldSettings(border=0)).dislocations) == 3
    # The edge of the valid region counts as the image's edge.
    inside = _fields([_line((5, 60), (120, 60))], (96, 128))
    assert extract_lines(inside, valid=(0, 62, 0, 128)).dislocations == ()


def _polyline_fields(points, shape=(96, 128)):
    """Ideal fields of one polyline (a Gaussian ridge along it, its direction)."""
    from temtrack.training.synth.targets import line_targets

    t = line_targets([np.asarray(points, float)], shape)
    return np.concatenate([t.centre[None], t.direction])


def _dense_polyline(corners, step=0.5):
    corners = np.asarray(corners, float)
    pieces = [np.linspace(a, b, int(np.hypot(*(b - a)) / step) + 1) for a, b in zip(corners[:-1], corners[1:])]
    return np.vstack(pieces)


def test_a_sharp_turn_is_cut_and_a_gentle_one_is_not():
    # An 80 degree corner (a line meeting a slip trace) becomes two lines ...
    corner = _dense_polyline([(10, 70), (60, 70), (60 + 40 * np.cos(np.radians(-80)), 70 + 40 * np.sin(np.radians(-80)))])
    frame = extract_lines(_polyline_fields(corner))
    assert len(frame.dislocations) == 2
    lengths = sorted(d.length for d in frame.dislocations)
    assert lengths[0] > 30 and lengths[1] > 40
    # ... unless cutting is off (with the direction channels: the Hessian of the centre
    # map has no ridge normal at the corner's apex, which breaks the ridge there too),
    # and a 25 degree bend stays one line.
    no_cuts = LineFieldSettings(max_turn=180, direction_sigma=0)
    assert len(extract_lines(_polyline_fields(corner), settings=no_cuts).dislocations) == 1
    bend = _dense_polyline([(10, 70), (60, 70), (60 + 50 * np.cos(np.radians(-25)), 70 + 50 * np.sin(np.radians(-25)))])
    assert len(extract_lines(_polyline_fields(bend)).dislocations) == 1


def test_max_turn_is_validated():
    with pytest.raises(ValueError, match="max_turn"):
        LineFieldSettings(max_turn=0)


def test_a_line_running_into_a_weaker_ridge_is_trimmed_where_it_fades():
    # A line of strength 0.95 over x = 10..70 whose ridge runs on at 0.4 (above ``low``,
    # so the same traced path) to x = 110: trimmed to the strong part within the
    # averaging window; kept whole with trim = 0.
    fields = _fields([_line((10, 40), (110, 40))], (80, 128))
    fields[0, :, 71:] *= 0.4 / 0.95
    fields[0] *= 0.95
    trimmed = extract_lines(fields)
    assert len(trimmed.dislocations) == 1
    assert trimmed.dislocations[0].points[:, 0].max() == pytest.approx(70, abs=4)
    whole = extract_lines(fields, settings=LineFieldSettings(trim=0))
    assert whole.dislocations[0].points[:, 0].max() == pytest.approx(110, abs=2)
    # A line of even strength loses nothing.
    even = extract_lines(_fields([_line((10, 40), (110, 40))], (80, 128)))
    assert even.dislocations[0].length == pytest.approx(100, abs=3)


def test_a_line_that_only_grazes_high_is_dropped_by_its_mean_score():
    # Two parallel lines 40 px apart: one at 0.95 along its length, one at 0.5 that
    # reaches 0.75 (over ``high``) on 10 px only: a texture-like ridge whose mean centre
    # value (about 0.53) is under ``min_score`` (0.6).
    fields = _fields([_line((10, 20), (110, 20)), _line((10, 60), (110, 60))], (80, 128))
    fields[0, :40] *= 0.95
    fields[0, 40:] *= 0.5
    fields[0, 40:, 55:65] *= 1.5
    kept = extract_lines(fields)
    assert len(kept.dislocations) == 1
    assert kept.dislocations[0].points[:, 1].mean() == pytest.approx(20, abs=1)
    assert kept.dislocations[0].score >= LineFieldSettings().min_score
    both = extract_lines(fields, settings=LineFieldSettings(min_score=0))
    assert sorted(round(d.points[:, 1].mean()) for d in both.dislocations) == [20, 60]
    assert 0.5 < min(d.score for d in both.dislocations) < 0.6
    with pytest.raises(ValueError, match="min_score"):
        LineFieldSettings(min_score=1.0)


def test_pieces_cut_at_a_crossing_join_on_their_traced_direction_not_the_mixed_field():
    # A horizontal line with a 6 px hole where, as at a crossing, the direction field
    # near the hole points 60 degrees off the line: the ends' directions come from the
    # traced pixels, so the two pieces are joined into one line.
    fields = _fields([_line((10, 40), (110, 40))], (80, 128))
    fields[0, :, 57:63] = 0.0
    angle = np.radians(2 * 60)
    fields[1, 30:50, 50:70], fields[2, 30:50, 50:70] = np.cos(angle), np.sin(angle)
    frame = extract_lines(fields)
    assert len(frame.dislocations) == 1
    assert frame.dislocations[0].length == pytest.approx(100, abs=4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_ends_of_all_paths_at_once_match_the_rule_path_by_path(seed):
    # The ends' outward directions are computed for all segments together; written out
    # here path by path: the chord from the pixel END_REACH px inside (or the far end of
    # a shorter path) to the tip, and for a one-pixel path the direction field's axis,
    # outward both ways. Random 8-connected walks of 1-30 px, some shorter than the reach.
    from temtrack.sdk import linefield

    rng = np.random.default_rng(seed)
    direction = rng.uniform(-1, 1, (2, 64, 64)).astype(np.float32)
    steps = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc])
    paths = []
    for length in rng.integers(1, 31, 40).tolist() + [1, 2, 11, 12]:
        walk = np.cumsum(np.vstack([rng.integers(20, 44, 2), steps[rng.integers(0, 8, length - 1)]]), axis=0)
        paths.append(walk)
    segments = linefield._segments_along(paths, direction)
    assert len(segments) == len(paths)
    for path, segment in zip(paths, segments):
        assert segment.path is path
        reach = min(linefield.END_REACH, len(path) - 1)
        (y0, x0), (y1, x1) = path[0], path[-1]
        np.testing.assert_array_equal(segment.ends, [(x0, y0), (x1, y1)])
        for k, (tip, inner) in enumerate(((path[0], path[reach]), (path[-1], path[-1 - reach]))):
            chord = (tip - inner)[::-1].astype(float)
            if np.hypot(*chord) > 0:
                expected = chord / np.hypot(*chord)
            else:
                theta = 0.5 * np.arctan2(float(direction[1][tuple(path.T)].mean()), float(direction[0][tuple(path.T)].mean()))
                expected = np.array([np.cos(theta), np.sin(theta)]) * (1 if k == 0 else -1)
            np.testing.assert_allclose(segment.out[k], expected, atol=1e-12)


def test_trim_is_validated():
    with pytest.raises(ValueError, match="trim"):
        LineFieldSettings(trim=1.0)


def test_a_line_is_cut_where_the_line_end_map_sees_two_ends_meet():
    # Two dislocations end to end along one ridge (x = 10..60 and 60..110): the ridge
    # alone is one line. The generator's end map (``ends=True``: a spot at each of the
    # four ends) as a fourth channel cuts it at x = 60 with ``end_cut``; the spots at
    # the outer ends cut nothing (they are where the line ends anyway).
    shape = (80, 128)
    ridge = _fields([_line((10, 40), (110, 40))], shape)
    ends = line_targets([_line((10, 40), (60, 40)), _line((60, 40), (110, 40))], shape, ends=True).ends
    fields = np.concatenate([ridge, ends[None]])
    assert len(extract_lines(fields).dislocations) == 1  # end_cut is off by default
    cut = extract_lines(fields, settings=LineFieldSettings(end_cut=0.5)).dislocations
    assert len(cut) == 2
    spans = sorted((d.points[:, 0].min(), d.points[:, 0].max()) for d in cut)
    np.testing.assert_allclose(spans, [(10, 60), (60, 110)], atol=4)  # px
    # Without the fourth channel the setting has nothing to cut with.
    assert len(extract_lines(ridge, settings=LineFieldSettings(end_cut=0.5)).dislocations) == 1
    with pytest.raises(ValueError, match="end_cut"):
        LineFieldSettings(end_cut=1.0)
