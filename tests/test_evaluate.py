"""Evaluating a backend on a folder: synthetic datasets, labelme folders, reports and the CLI."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from temtrack import __version__
from temtrack.sdk.evaluate import (
    EvaluationError,
    EvaluationReport,
    default_report_path,
    evaluate,
    evaluate_thresholds,
    format_skipped,
    plot_path,
    write_report,
)
from temtrack.sdk.groundtruth import iter_ground_truth, read_sample
from temtrack.sdk.labelme import write_labelme
from temtrack.training.synth import get_preset, validate_config
from temtrack.training.synth.storage import to_uint8, write_dataset

N_IMAGES = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 sd1 images of 256 x 256 px (sd1 seed 0: no line leaves the image and comes back,
    so the post-processing sees every ground-truth mask as one dislocation)."""
    data = get_preset("sd1").model_dump()
    data["size"] = (256, 256)
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "ds", validate_config(data), N_IMAGES, seed=0, progress=False)


@pytest.fixture(scope="module")
def labelme_folder(dataset, tmp_path_factory):
    """The same images as PNG with labelme centrelines beside them."""
    folder = tmp_path_factory.mktemp("labelme")
    for index in range(N_IMAGES):
        sample = read_sample(dataset, index)
        cv2.imwrite(str(folder / f"frame{index}.png"), to_uint8(sample.image))
        write_labelme(folder / f"frame{index}.json", sample.centrelines, image_shape=sample.image.shape,
                      image_path=f"frame{index}.png")
    return folder


@pytest.fixture(scope="module")
def truth_report(dataset):
    return evaluate(dataset, "truth", progress=False)


def _scores_are_valid(report: EvaluationReport):
    for image in report.images:
        s = image.score
        for name in ("length_score", "pixel_dice", "pixel_iou", "pixel_precision", "pixel_recall",
                     "dislocation_precision", "dislocation_recall"):
            assert 0.0 <= getattr(s, name) <= 1.0, (image.image_id, name)
        assert all(0.0 <= m.score <= 1.0 for m in s.matches)


def test_truth_backend_gives_the_post_processing_ceiling(truth_report, dataset):
    assert [r.image_id for r in truth_report.images] == ["000000", "000001", "000002"]
    assert truth_report.kind == "synthetic" and truth_report.version == __version__
    assert truth_report.backend["backend"] == "truth"
    # The ground truth scored against itself: only post-processing can lose anything.
    assert truth_report.summary["length_score_mean"] > 0.98
    assert truth_report.summary["pixel_dice_mean"] == 1.0
    n_masks = sum(len(read_sample(dataset, i).masks) for i in range(N_IMAGES))
    assert truth_report.summary["n_gt"] + sum(r.score.n_gt_ignored for r in truth_report.images) == n_masks
    _scores_are_valid(truth_report)


def test_classical_backend_gives_a_valid_report(dataset, tmp_path):
    report = evaluate(dataset, "classical", progress=False)
    assert report.backend["backend"] == "classical" and report.backend["window"] == 51
    assert len(report.images) == N_IMAGES
    _scores_are_valid(report)
    assert all(r.predict_seconds > 0 for r in report.images)
    path = write_report(report, tmp_path / "out" / "classical.json")
    stored = json.loads(path.read_text())
    assert stored["format"] == "tem-track-eval" and stored["tem_track_version"] == __version__
    assert stored["backend"] == report.backend
    assert stored["settings"]["postprocess"]["threshold"] == 0.5 and stored["settings"]["min_dice"] == 0.1
    assert stored["summary"]["length_score_mean"] == pytest.approx(report.summary["length_score_mean"])
    first = stored["images"][0]
    assert first["image"] == "000000" and {"length_score", "pixel_dice", "n_gt", "n_pred", "matches"} <= set(first)
    picture = cv2.imread(str(plot_path(path)))
    assert picture is not None and picture.shape[0] > 100


def test_labelme_folder_is_evaluated(labelme_folder):
    truths = list(iter_ground_truth(labelme_folder, label_width=3))
    assert [t.image_id for t in truths] == ["frame0", "frame1", "frame2"]
    assert all(t.masks.dtype == np.uint8 and t.masks.shape[1:] == (256, 256) for t in truths)
    report = evaluate(labelme_folder, "truth", progress=False)
    assert report.kind == "labelme" and report.settings["label_width"] == 3
    assert report.summary["length_score_mean"] > 0.95
    _scores_are_valid(evaluate(labelme_folder, "classical", progress=False))


def test_line_label_folder_is_evaluated(dataset, tmp_path):
    """NAME.png + NAME_dislocations.png (each 8-connected line one dislocation), the
    format of the real TWIP labels; the generator's masks drawn apart are the answer."""
    expected = []
    for index in range(N_IMAGES):
        sample = read_sample(dataset, index)
        cv2.imwrite(str(tmp_path / f"frame{index:03d}.png"), to_uint8(sample.image))
        # Only dislocations that touch no other one stay separate components.
        masks = sample.masks.astype(bool)
        others = [masks[:k].any(axis=0) | masks[k + 1 :].any(axis=0) for k in range(len(masks))]
        alone = [k for k in range(len(masks)) if not (cv2.dilate(masks[k].view(np.uint8), np.ones((3, 3))) & others[k]).any()]
        label = np.zeros(sample.image.shape, np.uint8)
        for k in alone:
            label[masks[k]] = 255
        cv2.imwrite(str(tmp_path / f"frame{index:03d}_dislocations.png"), label)
        expected.append(len(alone))
    truths = list(iter_ground_truth(tmp_path))
    assert [t.image_id for t in truths] == ["frame000", "frame001", "frame002"]
    assert [len(t.masks) for t in truths] == expected and sum(expected) > 0
    report = evaluate(tmp_path, "truth", progress=False)
    assert report.kind == "lines"
    assert report.summary["length_score_mean"] > 0.98


def test_real_twip_labels_give_a_ceiling_near_one(real_data, tmp_path):
    folder = real_data / "twip-8.4um" / "labeled"
    for name in ("frame000", "frame005"):
        for suffix in ("", "_dislocations"):
            shutil.copy(folder / f"{name}{suffix}.png", tmp_path)
    report = evaluate(tmp_path, "truth", progress=False)
    assert report.kind == "lines" and len(report.images) == 2
    # 15-27 hand-drawn lines per frame; a few cross and become one mask with two lines.
    assert all(image.score.n_gt >= 15 for image in report.images)
    assert report.summary["length_score_mean"] > 0.9


def test_report_inside_a_labelme_folder_is_not_read_as_annotation(labelme_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(labelme_folder, folder)
    write_report(evaluate(folder, "truth", progress=False), folder / "report.json")
    assert len(evaluate(folder, "truth", progress=False).images) == N_IMAGES


def test_backend_objects_are_accepted_and_checked(dataset):
    class Blind:
        name = "blind"

        def predict(self, frames):
            return [np.zeros((0, *frames.shape[1:]), np.uint8) for _ in frames]

        def describe(self):
            return {"backend": "blind"}

    report = evaluate(dataset, Blind(), progress=False)
    assert report.summary["length_score_mean"] == 0.0 and report.summary["dislocation_recall_mean"] == 0.0
    with pytest.raises(TypeError, match="predict"):
        evaluate(dataset, object(), progress=False)


def test_a_mask_models_threshold_is_its_mask_threshold(dataset, truth_report):
    """A "model" that returns the true masks at probability 0.65: every dislocation is
    found at a mask threshold of 0.6 (as the ground truth itself scores), none at 0.7."""

    class Faint:
        name = "faint"

        def __init__(self):
            self.masks = {read_sample(dataset, k).image.tobytes(): read_sample(dataset, k).masks for k in range(N_IMAGES)}

        def predict(self, frames):
            return [0.65 * self.masks[np.asarray(f, np.float32).tobytes()].astype(np.float32) for f in frames]

        def describe(self):
            return {"backend": "faint"}

    found, missed = evaluate_thresholds(dataset, Faint(), [0.6, 0.7], progress=False)
    assert found.summary["length_score_mean"] == pytest.approx(truth_report.summary["length_score_mean"], abs=1e-9)
    assert found.settings["postprocess"]["threshold"] == 0.6 and "linefield" not in found.settings
    assert missed.summary["length_score_mean"] == 0.0 and missed.summary["n_pred"] == 0


def test_write_report_refuses_to_overwrite(truth_report, tmp_path):
    path = write_report(truth_report, tmp_path / "r.json")
    assert path.is_file() and plot_path(path).is_file()
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="r.json"):
        write_report(truth_report, path)
    assert path.read_bytes() == before
    write_report(truth_report, path, overwrite=True)
    path.unlink()  # the PNG alone also blocks
    with pytest.raises(FileExistsError, match="r.png"):
        write_report(truth_report, path)
    with pytest.raises(ValueError, match=".json"):
        write_report(truth_report, tmp_path / "r.txt")
    assert not list(tmp_path.glob(".*tmp"))


def test_bad_folders_are_clear_errors(tmp_path, dataset):
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate(tmp_path / "missing", "truth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError) as info:
        evaluate(tmp_path / "empty", "truth")
    assert "empty" in str(info.value) and "dataset.json" in str(info.value) and "labelme" in str(info.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        evaluate(tmp_path / "file.txt", "truth")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    write_labelme(lonely / "a.json", [np.array([[1.0, 1.0], [20.0, 20.0]])], image_shape=(32, 32), image_path="a.png")
    with pytest.raises(EvaluationError, match="a.png"):
        evaluate(lonely, "truth")
    cv2.imwrite(str(lonely / "a.png"), np.zeros((16, 32), np.uint8))
    with pytest.raises(EvaluationError, match="16x32"):
        evaluate(lonely, "truth")
    with pytest.raises(ValueError) as info:
        evaluate(dataset, "nope")
    assert "classical" in str(info.value) and "truth" in str(info.value)
    with pytest.raises(ValueError, match="label_width"):
        evaluate(dataset, "truth", label_width=0)


@pytest.mark.parametrize("kind", ["labelme", "lines"])
def test_unlabelled_images_are_reported_as_skipped(dataset, tmp_path, capsys, kind):
    from temtrack.cli import main

    folder = tmp_path / "data"
    folder.mkdir()
    for index, name in enumerate(("a", "b", "c")):
        sample = read_sample(dataset, index)
        cv2.imwrite(str(folder / f"{name}.png"), to_uint8(sample.image))
    sample = read_sample(dataset, 2)
    if kind == "labelme":
        write_labelme(folder / "c.json", sample.centrelines, image_shape=sample.image.shape, image_path="c.png")
    else:
        cv2.imwrite(str(folder / "c_dislocations.png"), (sample.masks.max(axis=0) * 255).astype(np.uint8))
    report = evaluate(folder, "truth", progress=False)
    assert report.kind == kind and [r.image_id for r in report.images] == ["c"]
    assert report.skipped_unlabelled == ("a.png", "b.png")
    assert report.to_dict()["skipped_unlabelled"] == ["a.png", "b.png"]
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(folder), "--backend", "truth", "--out", str(out), "--quiet"]) == 0
    assert "skipped 2 of 3 images without labels: a.png, b.png" in capsys.readouterr().err
    assert json.loads(out.read_text())["skipped_unlabelled"] == ["a.png", "b.png"]
    # A fully labelled folder skips nothing and says nothing.
    assert evaluate(dataset, "truth", progress=False).skipped_unlabelled == ()


def test_long_skip_lists_are_cut(truth_report):
    from dataclasses import replace

    names = tuple(f"{i:02d}.png" for i in range(12))
    line = format_skipped(replace(truth_report, skipped_unlabelled=names))
    assert line.startswith(f"skipped 12 of {12 + N_IMAGES} images") and line.endswith("09.png, ...")


def test_folders_eval_cannot_score_say_why(tmp_path, dataset, capsys):
    from temtrack.cli import main
    from temtrack.training.synth.video import VideoSettings, write_video

    video = write_video(tmp_path / "vid", get_preset("sd1").with_size(64), 0, VideoSettings(frames=2), progress=False)[0]
    with pytest.raises(EvaluationError, match="is a synthetic video"):
        evaluate(video.parent, "truth")
    for backend, words in (("onnxruntime", "give --model MODEL.onnx"), ("auto", "give --model MODEL instead")):
        with pytest.raises(ValueError, match=words):
            evaluate(dataset, backend)
    (tmp_path / "out.json").mkdir()
    assert main(["eval", "--data", str(dataset), "--backend", "truth", "--out", str(tmp_path / "out.json")]) == 2
    assert "is a folder" in capsys.readouterr().err and not list((tmp_path / "out.json").iterdir())


def test_a_damaged_dataset_names_the_damaged_file(dataset, tmp_path):
    from temtrack.sdk.groundtruth import DatasetError

    for relative, content, words in (
        ("labels/000001.json", b"{}", r"labels/000001.json is not a sample's label file"),
        ("labels/000001.json", b"\xff\xfe", r"labels/000001.json is not a sample's label file"),
        ("masks/000001.npz", b"junk", r"masks/000001.npz is not a mask archive written by tem-track synth"),
        ("dataset.json", b"{", r"dataset.json is not valid JSON"),
        ("dataset.json", b"[]", r"dataset.json is not a tem-track synthetic dataset \(format 'list'\)"),
    ):
        copy = shutil.copytree(dataset, tmp_path / "copy", dirs_exist_ok=False)
        (copy / relative).write_bytes(content)
        with pytest.raises(DatasetError, match=words):
            evaluate(copy, "truth", progress=False)
        shutil.rmtree(copy)


def test_default_report_path_is_beside_the_folder(tmp_path, monkeypatch):
    assert default_report_path("data/sd2", "classical").as_posix() == "data/sd2_classical_report.json"
    assert default_report_path("data/sd2/", "model.onnx").name == "sd2_model.onnx_report.json"
    monkeypatch.chdir(tmp_path)
    assert default_report_path(".", "truth") == tmp_path.parent / f"{tmp_path.name}_truth_report.json"


def test_cli_eval(dataset, tmp_path, capsys):
    from temtrack.cli import main

    out = tmp_path / "report.json"
    args = ["eval", "--data", str(dataset), "--backend", "truth", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "length score" in printed and str(out) in printed
    assert json.loads(out.read_text())["summary"]["n_images"] == N_IMAGES and plot_path(out).is_file()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["eval", "--data", str(tmp_path / "nowhere"), "--backend", "truth"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["eval", "--data", str(dataset), "--backend", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "valid backends" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_cli_eval_compares_thresholds(dataset, tmp_path, capsys):
    from temtrack.cli import main

    out = tmp_path / "sweep" / "report.json"
    args = ["eval", "--data", str(dataset), "--model", "default", "--out", str(out), "--quiet", "--threshold", "0.5,0.7"]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(k for k, line in enumerate(printed) if line.lstrip().startswith("threshold"))
    rows = [line.split() for line in printed[header + 1 : header + 3]]
    assert [row[0] for row in rows] == ["0.5", "0.7"]
    for threshold, row in zip((0.5, 0.7), rows):
        report = json.loads((out.parent / f"report_t{threshold:g}.json").read_text())
        assert report["settings"]["threshold"] == threshold and report["settings"]["linefield"]["high"] == threshold
        assert float(row[1]) == pytest.approx(report["summary"]["length_score_mean"], abs=5e-4)
        assert float(row[4]) == pytest.approx(report["summary"]["spline_recall"], abs=5e-4)
        assert plot_path(out.parent / f"report_t{threshold:g}.json").is_file()
    assert (out.parent / "report_thresholds.png").is_file() and not out.exists()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    for bad, message in (("0.5,x", "'x'"), ("1.5", "(0, 1)"), ("0.5,0.5", "twice")):
        with pytest.raises(SystemExit):
            main(["eval", "--data", str(dataset), "--model", "default", "--threshold", bad])
        assert message in capsys.readouterr().err


def test_cli_eval_default_output_goes_beside_the_dataset(dataset, capsys):
    from temtrack.cli import main

    assert main(["eval", "--data", str(dataset), "--backend", "truth", "--quiet"]) == 0
    expected = dataset.parent / "ds_truth_report.json"
    assert expected.is_file() and plot_path(expected).is_file()
    assert not list(dataset.glob("*report*"))


def test_metrics_and_evaluation_import_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, temtrack.sdk.metrics, temtrack.sdk.evaluate\n"
        "print([m for m in ('torch', 'matplotlib', 'tqdm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fixed_size_model_sees_the_letterboxed_image_and_is_scored_at_image_size(dataset, truth_report):
    """A 128 x 128 "model" that returns the true masks at its own resolution: evaluate
    must fit each 256 px image to 128 px and map the masks back, so the score stays
    close to the ground truth's own."""
    samples = iter([read_sample(dataset, i) for i in range(N_IMAGES)])

    class HalfResolutionOracle:
        name, input_size, threshold = "oracle128", (128, 128), 0.5

        def predict(self, frames):
            assert frames.shape == (1, 128, 128)
            masks = next(samples).masks.astype(np.float32)
            # area averaging, amplified: thin lines stay connected (>= 0.5) at half resolution
            return [np.stack([np.minimum(4 * cv2.resize(m, (128, 128), interpolation=cv2.INTER_AREA), 1) for m in masks])]

        def describe(self):
            return {"backend": self.name}

    report = evaluate(dataset, HalfResolutionOracle(), progress=False)
    assert [image.shape for image in report.images] == [(256, 256)] * N_IMAGES
    ceiling = truth_report.summary["length_score_mean"]
    assert report.summary["length_score_mean"] >= 0.8 * ceiling
    assert report.summary["dislocation_recall_mean"] >= 0.8 * truth_report.summary["dislocation_recall_mean"]
