"""The line-field family in training: config, stream, loss, training run, torch backend.

Needs the [train] extra. The runs are a few steps on 64 px images with a small ResNet18
U-Net; the loss test overfits one fixed batch, which must take the loss down.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed (pip install -e '.[train]')")

from temtrack.training.augment import AugmentConfig  # noqa: E402
from temtrack.training.checkpoint import load_model  # noqa: E402
from temtrack.training.config import TrainConfigError, validate_train_config  # noqa: E402
from temtrack.training.labelled import LabelledFrame  # noqa: E402
from temtrack.training.linefield import (  # noqa: E402
    LabelledLineDataset,
    LineFieldDataset,
    dihedral,
    known_pixels,
    label_centrelines,
    linefield_loss,
    linefield_outputs,
)
from temtrack.training.model import ModelConfig, build_model  # noqa: E402
from temtrack.training.synth import generate_sample  # noqa: E402
from temtrack.training.synth.targets import GAP_SIGMA, line_targets, separation  # noqa: E402
from temtrack.training.torch_backend import TorchBackend  # noqa: E402
from temtrack.training.train import train  # noqa: E402

LINEFIELD = {"family": "linefield", "architecture": "unet", "encoder": "resnet18", "decoder_channels": [32, 16, 16, 8, 8]}


def tiny_linefield(**changes):
    data = {
        "model": LINEFIELD,
        "image_size": 64,
        "batch_size": 4,
        "steps": 4,
        "threads": 2,
        "device": "cpu",
        "data": {"presets": {"sd1": 1.0, "sd3": 1.0}, "workers": 0},
        "validation": {"presets": ["sd1"], "images": 2, "every": 2, "size": 128},
        "optim": {"warmup_steps": 0, "schedule": "constant"},
        "checkpoint_every": 2,
        "log_every": 1,
    }
    data.update(changes)
    return validate_train_config(data)


# --- config -----------------------------------------------------------------------------


def test_linefield_model_has_centre_direction_and_extras():
    config = ModelConfig(**LINEFIELD, extras=["ends"])
    assert config.out_channels == 4 and config.output_names == ("centre", "cos2theta", "sin2theta", "ends")
    model = build_model(config).eval()
    with torch.no_grad():
        fields = linefield_outputs(model(torch.rand(1, 1, 64, 96)))
    assert fields.shape == (1, 4, 64, 96)
    assert 0 <= float(fields[:, 0].min()) and float(fields[:, 0].max()) <= 1
    assert -1 <= float(fields[:, 1:3].min()) and float(fields[:, 1:3].max()) <= 1


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"model": {**LINEFIELD, "n_masks": 20}}, "n_masks"),
        ({"model": {"encoder": "resnet18", "extras": ["ends"]}}, "extras"),
        ({"model": LINEFIELD, "loss": {"matching": "hungarian"}}, "loss.matching"),
        ({"model": {"encoder": "resnet18"}, "loss": {"direction_weight": 2.0}}, "loss.direction_weight"),
        ({"model": LINEFIELD, "data": {"datasets": ["somewhere"]}}, "data.datasets"),
        ({"model": {"encoder": "resnet18"}, "loss": {"partial_negatives": "everywhere"}}, "loss.partial_negatives"),
        ({"model": {"encoder": "resnet18"}, "loss": {"gap_weight": 10.0}}, "loss.gap_weight"),
    ],
)
def test_mixing_the_families_names_the_key(data, key):
    with pytest.raises(TrainConfigError, match=key.replace(".", r"\.")):
        validate_train_config(data)


def test_a_stored_config_reads_back_as_the_same_family():
    config = tiny_linefield()
    stored = config.to_json()
    assert "n_masks" not in stored["model"] and "matching" not in stored["loss"]
    assert validate_train_config(stored) == config
    multilabel = validate_train_config({"model": {"encoder": "resnet18"}}).to_json()
    assert "extras" not in multilabel["model"] and "direction_weight" not in multilabel["loss"]


# --- stream and loss ----------------------------------------------------------------------


def test_dihedral_moves_lines_with_the_image():
    sample = generate_sample("sd2", seed=3, size=128)
    base = line_targets(sample.centrelines, (128, 128)).centre
    for seed in range(12):
        image, curves = dihedral(sample.image, sample.centrelines, np.random.default_rng(seed), AugmentConfig())
        moved = line_targets(curves, (128, 128)).centre
        # The same dihedral transform on the image and on the targets drawn from the moved lines.
        for flipped_image, flipped_target in [
            (sample.image, base), (sample.image[:, ::-1], base[:, ::-1]),
            (sample.image[::-1], base[::-1]), (sample.image[::-1, ::-1], base[::-1, ::-1]),
        ]:
            for k in range(4):
                if np.array_equal(np.rot90(flipped_image, k), image):
                    np.testing.assert_allclose(np.rot90(flipped_target, k), moved, atol=0.03)
                    break
            else:
                continue
            break
        else:
            pytest.fail(f"seed {seed}: the image is no dihedral transform of the sample")


def test_stream_items_are_addressed_by_index():
    stream = LineFieldDataset("sd1", seed=5, size=64, extras=("ends",))
    a, b = stream.item(7), stream.item(7)
    assert a["image"].shape == (1, 64, 64) and a["target"].shape == (4, 64, 64) and a["weight"].shape == (1, 64, 64)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["image"], stream.item(8)["image"])


def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    stream = LineFieldDataset("sd1", seed=1, size=64)
    items = [stream.item(i) for i in range(4)]
    x = torch.stack([i["image"] for i in items])
    target, weight = torch.stack([i["target"] for i in items]), torch.stack([i["weight"] for i in items])
    model = build_model(ModelConfig(**LINEFIELD))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, parts = linefield_loss(model(x), target, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {"centre", "direction"}
    assert losses[-1] < 0.6 * losses[0]


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        linefield_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 8, 8), torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("spacing", [5.0, 7.0, 9.0])
def test_separation_weight_between_close_lines_follows_unets_formula(spacing):
    """Two parallel lines ``spacing`` px apart: at every pixel between them d1 + d2 is the
    spacing, so the weight is exp(-spacing^2 / (2 GAP_SIGMA^2)); tolerance: the distance
    transform measures to drawn pixels (the lines here lie on pixel rows: exact)."""
    a = np.array([[2.0, 20.0], [77.0, 20.0]])
    b = np.array([[2.0, 20.0 + spacing], [77.0, 20.0 + spacing]])
    weight = separation([a, b], (60, 80))
    expected = np.exp(-(spacing**2) / (2 * GAP_SIGMA**2))
    between = weight[20 : 21 + int(spacing), 40]
    assert np.allclose(between, expected, atol=1e-4)
    # Outside the pair it falls off: 2 px beyond the second line d1 + d2 = spacing + 4.
    assert weight[22 + int(spacing), 40] == pytest.approx(np.exp(-((spacing + 4) ** 2) / (2 * GAP_SIGMA**2)), abs=1e-4)
    # Closer pairs weigh more; a single line, or lines far apart, weigh nothing.
    assert separation([a], (60, 80)).max() == 0.0
    far = np.array([[2.0, 50.0], [77.0, 50.0]])
    assert separation([a, far], (60, 80))[35, 40] == 0.0


def test_separation_weight_rides_with_the_targets_and_the_stream():
    sample = generate_sample("sd1", seed=4, size=128)
    targets = line_targets(sample.centrelines, (128, 128), gaps=True)
    assert targets.gaps is not None and np.array_equal(targets.gaps, separation(sample.centrelines, (128, 128)))
    assert line_targets(sample.centrelines, (128, 128)).gaps is None
    # An SD1 pile-up has close neighbours: the weight is high somewhere, and highest on
    # and between lines (near a ridge of the centre target), not on the open background.
    assert targets.gaps.max() > 0.3
    assert float(targets.centre[targets.gaps > 0.3].max()) > 0.5
    item = LineFieldDataset("sd1", seed=5, size=64, gaps=True).item(3)
    assert item["gaps"].shape == (1, 64, 64) and 0 <= float(item["gaps"].min()) and float(item["gaps"].max()) <= 1
    assert torch.equal(item["target"], LineFieldDataset("sd1", seed=5, size=64).item(3)["target"])
    assert "gaps" not in LineFieldDataset("sd1", seed=5, size=64).item(3)


def test_gap_weight_weighs_the_centre_map_where_lines_run_close():
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 16, 16)
    target, weight = torch.zeros(2, 3, 16, 16), torch.ones(2, 1, 16, 16)
    gaps = torch.zeros(2, 1, 16, 16)
    plain, _ = linefield_loss(raw, target, weight)
    assert float(linefield_loss(raw, target, weight, gaps=gaps, gap_weight=10.0)[0]) == pytest.approx(float(plain), abs=1e-6)
    gaps[..., 4:8, :] = 0.5
    wrong = raw.clone()
    wrong[:, 0, 4:8, :] += 5.0  # a confident 'line' in the gap between two lines
    gain = float(linefield_loss(wrong, target, weight)[0]) - float(plain)
    weighted = float(linefield_loss(wrong, target, weight, gaps=gaps, gap_weight=10.0)[0])
    weighted -= float(linefield_loss(raw, target, weight, gaps=gaps, gap_weight=10.0)[0])
    assert weighted > 3.0 * gain > 0  # the BCE weight there is 1 + 10 * 0.5 = 6 against 1
    with pytest.raises(ValueError, match="gaps=True"):
        linefield_loss(raw, target, weight, gap_weight=1.0)


def test_a_run_with_the_gap_weight_trains(tmp_path):
    run = train(tiny_linefield(steps=2, loss={"gap_weight": 10.0}), tmp_path / "run", progress=False)
    assert run.step == 2 and (tmp_path / "run" / "best.pt").is_file()
    _, config, _ = load_model(tmp_path / "run" / "last.pt")
    assert config.family == "linefield" and config.out_channels == 3


# --- a run, its checkpoint and the torch backend -------------------------------------------


def test_linefield_run_resumes_and_its_checkpoint_runs_on_torch(tmp_path):
    run = tmp_path / "run"
    first = train(tiny_linefield(steps=2), run, progress=False)
    assert first.step == 2 and (run / "best.pt").is_file()
    resumed = train(tiny_linefield(steps=4), run, resume=True, progress=False)
    assert resumed.step == 4
    model, config, _ = load_model(run / "last.pt")
    assert config.family == "linefield"
    backend = TorchBackend(model, config, device="cpu")
    fields = backend.predict(np.random.default_rng(0).random((2, 70, 90), dtype=np.float32))
    assert len(fields) == 2 and fields[0].shape == (3, 70, 90) and fields[0].dtype == np.float32
    with pytest.raises(ValueError, match="line-field"):
        TorchBackend(model, config, device="cpu", output="masks")


def test_a_checkpoint_of_the_other_family_is_refused_naming_both(tmp_path):
    run = tmp_path / "run"
    train(tiny_linefield(steps=2), run, progress=False)
    with pytest.raises(Exception, match=r"linefield.*multilabel|multilabel.*linefield"):
        load_model(run / "last.pt", expected=ModelConfig(encoder="resnet18", decoder_channels=[32, 16, 16, 8, 8], n_masks=8))


def test_an_end_map_can_be_added_to_a_trained_model(linefield_checkpoint, tmp_path):
    """init from a model without extras into one with the end map: the centre and
    direction outputs are the checkpoint's exactly (same weights), the end map is new;
    any other difference is still refused, naming the setting."""
    from temtrack.training.checkpoint import CheckpointError, init_weights

    source, _, _ = load_model(linefield_checkpoint)
    grown_config = ModelConfig(**LINEFIELD, extras=["ends"])
    grown = build_model(grown_config).eval()
    init_weights(grown, linefield_checkpoint, grown_config)
    x = torch.from_numpy(np.random.default_rng(1).random((1, 1, 64, 96), dtype=np.float32))
    with torch.no_grad():
        before, after = source(x), grown(x)
    assert after.shape[1] == 4
    torch.testing.assert_close(after[:, :3], before, rtol=0, atol=0)
    run = train(tiny_linefield(steps=2, model={**LINEFIELD, "extras": ["ends"]}, init=str(linefield_checkpoint)),
                tmp_path / "ends", progress=False)
    assert run.step == 2
    other = ModelConfig(**{**LINEFIELD, "decoder_channels": [32, 16, 16, 16, 8]}, extras=["ends"])
    with pytest.raises(CheckpointError, match="decoder_channels"):
        init_weights(build_model(other), linefield_checkpoint, other)


# --- export and the ONNX backend ---------------------------------------------------------


@pytest.fixture(scope="module")
def linefield_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("linefield") / "run"
    train(tiny_linefield(steps=2, validation={"presets": ["sd1"], "images": 1, "every": 2, "size": 64}), run, progress=False)
    return run / "last.pt"


def test_export_runs_any_frame_size_with_the_network_s_fields(linefield_checkpoint, tmp_path):
    from temtrack.export.onnx import ExportError, export_onnx
    from temtrack.sdk.backends.onnx import OnnxBackend

    result = export_onnx(linefield_checkpoint, tmp_path / "lf.onnx")
    meta = result.metadata
    assert (meta.family, meta.output, meta.size_multiple, meta.n_masks) == ("linefield", "fields", 32, 3)
    assert result.parity.passed
    onnx_backend = OnnxBackend(tmp_path / "lf.onnx")
    assert onnx_backend.family == "linefield" and onnx_backend.input_size is None
    model, config, _ = load_model(linefield_checkpoint)
    torch_backend = TorchBackend(model, config, device="cpu")
    frames = np.random.default_rng(3).random((2, 75, 101), dtype=np.float32)  # not multiples of 32
    for got, want in zip(onnx_backend.predict(frames), torch_backend.predict(frames)):
        assert got.shape == (3, 75, 101)
        np.testing.assert_allclose(got, want, atol=1e-4)  # fp32 parity, as the export's own check
    with pytest.raises(ExportError, match="'linefield'.*'multilabel'"):
        export_onnx(linefield_checkpoint, tmp_path / "masks.onnx", output="masks")


def test_main_job_and_eval_run_an_exported_line_field_model(linefield_checkpoint, tmp_path):
    import cv2

    from temtrack.export.onnx import export_onnx
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.evaluate import evaluate

    path = export_onnx(linefield_checkpoint, tmp_path / "lf.onnx").path
    frames = np.stack([generate_sample("sd1", seed=s, size=96).image for s in range(3)])
    analyzer = Analyzer(path, workers=0)
    assert analyzer.backend.family == "linefield"
    assert analyzer.run(frames, progress=False).frames == 3
    sample = generate_sample("sd1", seed=5, size=96)
    cv2.imwrite(str(tmp_path / "f.png"), np.round(sample.image * 255).astype(np.uint8))
    label = np.zeros((96, 96), np.uint8)
    cv2.line(label, (10, 10), (80, 10), 255, 1)
    cv2.imwrite(str(tmp_path / "f_dislocations.png"), label)
    report = evaluate(tmp_path, analyzer.backend, progress=False)
    assert report.summary["n_images"] == 1 and report.summary["true_per_frame"] == 1.0


def test_a_line_field_model_carries_its_threshold_to_the_main_job_and_eval(linefield_checkpoint, tmp_path):
    """Exported with line_threshold 0.45, the model traces at 0.45 in the main job and in
    eval unless the user gives a threshold; without it, the checkpoint and its export
    trace alike, at the tracing's defaults."""
    import cv2

    from temtrack.export.onnx import ExportError, export_onnx
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.evaluate import evaluate, format_summary
    from temtrack.sdk.linefield import LineFieldSettings

    plain = export_onnx(linefield_checkpoint, tmp_path / "plain.onnx").path
    tuned = export_onnx(linefield_checkpoint, tmp_path / "tuned.onnx", line_threshold=0.45)
    assert tuned.metadata.line_threshold == 0.45
    assert Analyzer(tuned.path, workers=0).postprocess == LineFieldSettings.for_threshold(0.45)
    assert Analyzer(tuned.path, workers=0, threshold=0.6).postprocess.high == 0.6
    assert Analyzer(plain, workers=0).postprocess == LineFieldSettings()
    assert Analyzer(linefield_checkpoint, workers=0).postprocess == LineFieldSettings()  # the .pt as its export
    folder = tmp_path / "frames"
    folder.mkdir()
    sample = generate_sample("sd1", seed=5, size=96)
    cv2.imwrite(str(folder / "f.png"), np.round(sample.image * 255).astype(np.uint8))
    label = np.zeros((96, 96), np.uint8)
    cv2.line(label, (10, 10), (80, 10), 255, 1)
    cv2.imwrite(str(folder / "f_dislocations.png"), label)
    report = evaluate(folder, Analyzer(tuned.path, workers=0).backend, progress=False)
    assert report.settings["threshold"] == 0.45 and report.settings["linefield"]["high"] == 0.45
    assert "threshold 0.45" in format_summary(report).splitlines()
    assert evaluate(folder, Analyzer(tuned.path, workers=0).backend, threshold=0.6, progress=False).settings["linefield"]["high"] == 0.6
    for bad, message in ((1.5, r"line_threshold must lie in \(0, 1\)"), (0.0, "line_threshold")):
        with pytest.raises(ExportError, match=message):
            export_onnx(linefield_checkpoint, tmp_path / "bad.onnx", line_threshold=bad)


def test_metadata_ties_the_family_to_its_output():
    from temtrack.sdk.modelmeta import ModelMetadata

    with pytest.raises(ValueError, match="line_threshold is for a line-field model"):
        ModelMetadata(input_size=(64, 64), n_masks=3, output="probabilities", line_threshold=0.5)
    with pytest.raises(ValueError, match=r"line_threshold must lie in \(0, 1\)"):
        ModelMetadata(input_size=(64, 64), n_masks=3, output="fields", family="linefield", line_threshold=1.0)

    with pytest.raises(ValueError, match="line-field model outputs 'fields'"):
        ModelMetadata(input_size=(64, 64), n_masks=3, output="probabilities", family="linefield")
    with pytest.raises(ValueError, match="line-field model outputs 'fields'"):
        ModelMetadata(input_size=(64, 64), n_masks=3, output="fields")


def test_zoom_draws_the_targets_on_the_zoomed_lines():
    """With zoom 2 the lines are twice as wide; the ridge of the targets still runs on
    their dark centres (darker than the image around them)."""
    quiet = dict(p_hflip=0, p_vflip=0, p_rot90=0, p_equalize=0, p_brightness=0, p_contrast=0, p_gamma=0,
                 p_vignette=0, p_blur=0, p_noise=0, p_jpeg=0)
    zoomed = LineFieldDataset("sd1", seed=2, size=128, augment_config=AugmentConfig(**quiet, p_zoom=1.0, zoom=(2.0, 2.0)))
    for index in range(3):
        item = zoomed.item(index)
        image, centre = item["image"][0].numpy(), item["target"][0].numpy()
        ridge = centre > 0.9
        assert ridge.any()
        band = (centre > 0.0) & (centre < 0.05)  # 3-5 px from the centreline
        assert image[ridge].mean() < image[band].mean() - 0.02


# --- partially labelled real frames -------------------------------------------------------


def _labelled_frame(seed: int = 4, size: int = 160, keep: int = 2) -> tuple[LabelledFrame, object]:
    """A synthetic sd2 frame of which only the first ``keep`` dislocations are 'labelled'."""
    sample = generate_sample("sd2", seed=seed, size=size)
    frame = LabelledFrame("v", seed, f"frame{seed:03d}", sample.image, sample.masks[:keep].copy())
    return frame, sample


def test_label_centrelines_follow_the_exact_centrelines():
    sample = generate_sample("sd2", seed=11, size=192)
    curves = label_centrelines(sample.masks)
    assert len(curves) >= len(sample.masks) - 1
    truth = np.vstack(sample.centrelines)
    # Traced label points lie on the exact centrelines (masks are 1-5 px wide); this
    # sample has one line along the image border whose skeleton grows a short branch.
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(truth).query(np.vstack(curves))
    assert np.median(distance) < 0.75 and np.percentile(distance, 85) < 1.5


def test_known_pixels_rules():
    line = np.column_stack([np.arange(10.0, 50.0), np.full(40, 30.0)])
    near = known_pixels([line], (60, 60), near=5.0)
    assert near[30, 30] == 1 and near[35, 30] == 1 and near[37, 30] == 0 and near[5, 5] == 0
    assert known_pixels([], (8, 8)).sum() == 0
    assert known_pixels([], (8, 8), rule="everywhere").sum() == 64
    with pytest.raises(ValueError, match="rule"):
        known_pixels([line], (60, 60), rule="nowhere")


def test_labelled_stream_supervises_only_near_the_labels():
    frame, sample = _labelled_frame(keep=1)
    stream = LabelledLineDataset([frame], size=96, seed=2, augment_config=AugmentConfig(enabled=False))
    items = [stream.item(i) for i in range(12)]
    assert torch.equal(items[3]["image"], stream.item(3)["image"])
    for item in items:
        assert item["image"].shape == item["known"].shape == (1, 96, 96) and item["target"].shape == (3, 96, 96)
        centre, known = item["target"][0], item["known"][0]
        # Every labelled ridge pixel is supervised; nothing far from the label is.
        assert bool((known[centre > 0.5] == 1).all())
        assert float(known.mean()) < 0.5
    assert any(float(i["target"][0].max()) > 0.9 for i in items)
    everywhere = LabelledLineDataset([frame], size=96, seed=2, rule="everywhere")
    assert float(everywhere.item(0)["known"].mean()) == 1.0


def test_unknown_pixels_do_not_move_the_loss():
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 16, 16)
    target, weight = torch.zeros(2, 3, 16, 16), torch.ones(2, 1, 16, 16)
    known = torch.zeros(2, 1, 16, 16)
    known[..., :8, :] = 1
    loss, _ = linefield_loss(raw, target, weight, known=known)
    changed = raw.clone()
    changed[:, 0, 8:, :] += 5.0  # a confident 'line' where nothing is known
    assert float(linefield_loss(changed, target, weight, known=known)[0]) == pytest.approx(float(loss), abs=1e-6)
    assert float(linefield_loss(changed, target, weight)[0]) > float(linefield_loss(raw, target, weight)[0]) + 0.1
    with pytest.raises(ValueError, match="known"):
        linefield_loss(raw, target, weight, known=torch.ones(2, 1, 8, 8))


def test_fine_tuning_on_labelled_frames_runs_and_resumes(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for seed in range(3):
        frame, _ = _labelled_frame(seed=seed + 20, size=128)
        cv2.imwrite(str(folder / f"frame{seed:03d}.png"), np.round(frame.image * 255).astype(np.uint8))
        label = (frame.masks.max(axis=0) * 255).astype(np.uint8) if len(frame.masks) else np.zeros((128, 128), np.uint8)
        cv2.imwrite(str(folder / f"frame{seed:03d}_dislocations.png"), label)
    config = tiny_linefield(
        data={"presets": {"sd1": 1.0}, "labelled": [str(folder)], "weights": {"synthetic": 1.0, "labelled": 1.0}, "workers": 0},
        validation={"presets": ["sd1"], "images": 1, "every": 2, "size": 64, "labelled_fraction": 0.34, "gap": 0},
    )
    result = train(config, tmp_path / "run")
    assert result.step == 4
    header = (tmp_path / "run" / "validation.csv").read_text().splitlines()[0]
    assert "frames_recall" in header and "sd1_recall" in header
