"""Evening out the illumination (``--flatten``): the correction itself on frames with a
known illumination, its guards, the main job and ``tem-track eval`` applying it as
they say, and what it wins back on vignetted real frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from temtrack.sdk.illumination import DEFAULT_SIGMA, FLOOR, flatten, illumination, photometric
from temtrack.training.synth import generate_sample

from _fake_backends import RecordingBackend


def _vignetting(shape):
    """A quadratic fall-off from a centre off the frame's (as a converged beam lights a
    frame) to 0.27 of it in the far corner, as dark as the dislocation samples' corners
    (the training augmentation's profile)."""
    from temtrack.training.augment import _vignette

    return _vignette(shape, np.array([0.35, 0.3]), 0.73)


def _frame(seed=0, size=384):
    return generate_sample("sd2", seed=seed, size=size).image.astype(np.float32)


def test_a_uniformly_lit_frame_comes_back_as_it_was():
    flat = np.full((96, 130), 0.62, np.float32)
    np.testing.assert_allclose(flatten(flat, sigma=20), flat, atol=1e-6)
    image = _frame()
    # A generator frame is lit evenly but for its texture: little changes (gray levels
    # in [0, 1]; its lines shade the blur a little).
    assert np.abs(flatten(image) - image).mean() < 0.05


@pytest.mark.parametrize("sigma", [8.0, 20.0, DEFAULT_SIGMA])
def test_the_illumination_is_the_gaussian_blur_within_two_percent(sigma):
    image = _frame(1)
    exact = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    fast = illumination(image, sigma=sigma)
    assert fast.shape == image.shape and fast.dtype == np.float32
    assert np.abs(fast / exact - 1).max() < 0.02


def test_vignetting_is_undone():
    """The same frame lit by a strong off-centre vignetting and evenly: evened out, both
    agree five times as closely as they do lit, within 0.05 of the gray scale at the 99th
    percentile. (Each keeps its own mean gray level: compared at the same mean.)"""
    image = _frame(2)
    lit = image * _vignetting(image.shape)
    inner = (slice(24, -24), slice(24, -24))  # the blur reflects at the border
    before = np.abs(lit * image.mean() / lit.mean() - image)[inner]
    after = np.abs(flatten(lit) * image.mean() / lit.mean() - flatten(image))[inner]
    # Here 0.066 and 0.23 as lit, 0.010 and 0.035 evened out (gray levels; mean 0.48).
    assert before.mean() > 0.05 and np.percentile(before, 99) > 0.2
    assert after.mean() < 0.2 * before.mean() and np.percentile(after, 99) < 0.05, (after.mean(), np.percentile(after, 99))


def test_a_line_keeps_its_contrast_to_the_background_around_it():
    """A line in a corner lit at a third of the centre's brightness is, evened out, as
    deep (relative to the background beside it) as the same line in the centre."""
    h, w = 256, 256
    y, x = np.mgrid[:h, :w].astype(np.float32)
    lines = 1 - 0.2 * (np.exp(-((x - 128) ** 2) / 8) + np.exp(-((x - 230) ** 2) / 8))  # 20 % deep
    light = np.clip(1 - 0.7 * (x / w) ** 2, 0, 1)  # from 1 on the left to 0.3 on the right
    flat = flatten(0.8 * lines * light, sigma=20)

    def depth(column):
        beside = flat[100:156, column + 8].mean()
        return (beside - flat[100:156, column].mean()) / beside

    assert depth(128) == pytest.approx(0.2, abs=0.03) and depth(230) == pytest.approx(depth(128), abs=0.03)
    # Before: the corner line's background is 0.55 of the centre line's.
    assert (0.8 * lines * light)[128, 238] < 0.6 * (0.8 * lines * light)[128, 136]


def test_black_bars_stay_black():
    """A letterbox bar (gray 0.02 with noise) beside a lit frame is not lifted to the
    frame's gray: the illumination is not taken below FLOOR of the mean."""
    rng = np.random.default_rng(0)
    frame = np.full((200, 300), 0.6, np.float32) + rng.normal(0, 0.02, (200, 300)).astype(np.float32)
    frame[:, :60] = 0.02 + rng.normal(0, 0.005, (200, 60)).astype(np.float32)
    flat = flatten(np.clip(frame, 0, 1), sigma=30)
    bar = np.clip(frame, 0, 1)[:, :20]
    # Divided by the whole illumination, the bar would come out as gray as the rest.
    assert flat[:, :20].mean() <= bar.mean() / FLOOR * 1.01 and flat[:, :20].mean() < 0.2 * flat[:, 150:].mean()
    assert flat[:, 150:].mean() == pytest.approx(frame.mean(), rel=0.1)


def test_bad_input_is_named_and_input_not_modified():
    image = _frame(3, size=64)
    copy = image.copy()
    flatten(image, sigma=10)
    photometric(image, invert=True, flatten_sigma=10)
    np.testing.assert_array_equal(image, copy)
    for sigma in (0, -3, float("nan"), float("inf"), True, "45"):
        with pytest.raises(ValueError, match="sigma"):
            flatten(image, sigma=sigma)
    with pytest.raises(ValueError, match="2-D"):
        flatten(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(TypeError, match="floats"):
        flatten(np.zeros((8, 8), np.uint8))
    assert photometric(image) is image  # nothing asked: the frame as it is
    np.testing.assert_allclose(photometric(image, invert=True), 1 - image)


# --- the main job and tem-track eval ----------------------------------------------------


def test_the_main_job_gives_a_line_field_model_the_evened_out_frames_and_records_it(tmp_path):
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.results import read_metadata

    stack = np.stack([_frame(k, size=160) * _vignetting((160, 160)) for k in range(2)])
    for option, sigma in (("auto", DEFAULT_SIGMA), (20.0, 20.0), (None, None)):
        backend = RecordingBackend()
        out = tmp_path / f"{option}.parquet"
        Analyzer(backend=backend, workers=0, scale=None, flatten=option).run(stack, out, progress=False)
        expected = stack if sigma is None else [flatten(f, sigma=sigma) for f in stack]
        np.testing.assert_allclose(np.stack(backend.frames), np.stack(expected), atol=1e-6)
        assert read_metadata(out)["settings"]["pipeline"]["flatten"] == sigma
    # Bright lines: inverted first, then evened out.
    backend = RecordingBackend()
    Analyzer(backend=backend, workers=0, scale=None, lines="bright").run(stack, progress=False)
    np.testing.assert_allclose(backend.frames[0], flatten(1 - stack[0], sigma=DEFAULT_SIGMA), atol=1e-6)


def test_flatten_is_validated_and_auto_leaves_other_models_alone():
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.pipeline import PipelineSettings

    with pytest.raises(ValueError, match="flatten"):
        Analyzer(backend=RecordingBackend(), flatten="strong")
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="flatten"):
            PipelineSettings(flatten=bad)
    with pytest.raises(ValueError, match="scale"):  # True is not a scale of 1
        PipelineSettings(scale=True)
    assert Analyzer(backend="classical", workers=0).settings.flatten is None
    assert Analyzer(backend="classical", workers=0, flatten=30).settings.flatten == 30


def test_eval_shows_the_model_what_the_main_job_shows_it(tmp_path):
    """``evaluate`` with a scale and flatten: the model gets the resampled, evened-out
    image, and the line it finds there is scored in the image's own pixels (found: a
    line left in the model's pixels would lie 20 px off its label)."""
    from temtrack.sdk.evaluate import evaluate
    from temtrack.sdk.preprocess import fit_to_input

    image = np.full((96, 128), 0.7, np.float32)
    image[39:42, 10:118] = 0.4  # one dark horizontal line, labelled along row 40
    label = np.zeros(image.shape, np.uint8)
    label[40, 10:118] = 255
    cv2.imwrite(str(tmp_path / "frame.png"), np.round(image * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "frame_dislocations.png"), label)
    image = cv2.imread(str(tmp_path / "frame.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255

    class DarkestRow(RecordingBackend):
        """Centre map: a ridge along the darkest row of whatever it sees."""

        def predict(self, frames):
            out = []
            for f in frames:
                self.frames.append(np.array(f))
                fields = np.zeros((3, *f.shape), np.float32)
                rows = np.arange(f.shape[0])[:, None]
                fields[0, :, 16:-16] = np.exp(-((rows - np.argmin(f.mean(axis=1))) ** 2) / 2.88)
                fields[1] = 1.0
                out.append(fields)
            return out

    for scale in (None, 1.5):
        backend = DarkestRow()
        report = evaluate(tmp_path, backend, scale=scale, flatten=20.0, progress=False)
        seen, _ = fit_to_input(image, None, scale=scale)
        np.testing.assert_allclose(backend.frames[0], flatten(seen, sigma=20.0), atol=1e-6)
        assert report.settings["model_view"]["scale"] == scale
        assert report.summary["spline_recall"] == 1.0 and report.summary["pred_per_frame"] == 1
    with pytest.raises(ValueError, match="scale"):
        evaluate(tmp_path, "classical", scale=2.0, progress=False)
    with pytest.raises(ValueError, match="lines"):
        evaluate(tmp_path, "classical", lines="grey", progress=False)


def test_curve_masks_draw_what_extract_lines_draws():
    from temtrack.sdk.linefield import curve_masks, extract_lines, instance_masks
    from temtrack.training.synth.targets import line_targets

    sample = generate_sample("sd3", seed=5, size=192)
    targets = line_targets(sample.centrelines, sample.image.shape)
    frame = extract_lines(np.concatenate([targets.centre[None], targets.direction]))
    assert len(frame.dislocations) >= 3
    drawn = curve_masks([d.points for d in frame.dislocations], frame.settings.mask_width, frame.shape)
    np.testing.assert_array_equal(drawn, instance_masks(frame))


# --- on real frames ---------------------------------------------------------------------


def test_vignetted_twip_frames_keep_their_lines_when_evened_out(real_data):
    """Every third labelled TWIP frame under a strong off-centre vignetting (the far
    corner at 0.27, as dark as the dislocation samples' corners): the bundled model
    finds more of the labelled lines with the illumination evened out (the default) than
    without (all 59 frames: ``benchmarks/bench_illumination.py``)."""
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.groundtruth import iter_ground_truth
    from temtrack.sdk.postprocess import PostprocessSettings, extract_dislocations
    from temtrack.sdk.splinematch import score_splines

    truths = [t for k, t in enumerate(iter_ground_truth(real_data / "twip-8.4um" / "labeled")) if k % 3 == 0]
    labels = [[d.points for d in extract_dislocations(t.masks, settings=PostprocessSettings()).dislocations] for t in truths]
    stack = np.stack([t.image * _vignetting(t.image.shape) for t in truths])
    found = {}
    for option in (None, "auto"):
        splines = Analyzer(workers=0, flatten=option).run(stack, progress=False).splines
        found[option] = sum(score_splines([np.column_stack([x, y]) for x, y in zip(s.x, s.y)], lab).n_found
                            for s, lab in ((splines[splines.frame == k], lab) for k, lab in enumerate(labels)))
    total = sum(len(lab) for lab in labels)
    # Here 158 against 149 of 370 labelled lines.
    assert found["auto"] >= found[None] + 0.015 * total, (found, total)


def test_tem_track_eval_takes_the_main_jobs_options_and_says_what_the_model_saw(tmp_path, capsys):
    import json

    from temtrack.cli import main
    from temtrack.training.synth import resolve_config
    from temtrack.training.synth.storage import write_dataset

    folder = write_dataset(tmp_path / "set", resolve_config("sd1", size=128), 2, seed=3, progress=False)
    for options, view in ((("--flatten", "off"), {"scale": None, "lines": "dark", "flatten": None}),
                          (("--scale", "1.5", "--lines", "bright", "--flatten", "20"),
                           {"scale": 1.5, "lines": "bright", "flatten": 20.0})):
        out = tmp_path / f"r{len(options)}.json"
        assert main(["eval", "--data", str(folder), "--model", "default", "--quiet", "--out", str(out), *options]) == 0
        recorded = json.loads(out.read_text())["settings"]["model_view"]
        assert {key: recorded[key] for key in view} == view
        assert "model input: " in capsys.readouterr().out
    assert main(["eval", "--data", str(folder), "--backend", "classical", "--scale", "2", "--quiet",
                 "--out", str(tmp_path / "c.json")]) == 2
    assert "scale 2.0 needs a line-field model" in capsys.readouterr().err
