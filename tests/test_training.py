"""Model, checkpoints, training configuration and the training loop (needs the [train] extra).

The smoke training runs a small U-Net++ on 128 x 128 synthetic images on the CPU and
checks that the matched Dice loss falls; the other runs are a handful of steps on 64 x 64
images, enough to exercise resume, fine-tuning and evaluation of a checkpoint.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed (pip install -e '.[train]')")

import cv2  # noqa: E402

from temtrack.cli import main  # noqa: E402
from temtrack.training.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint  # noqa: E402
from temtrack.training.config import TrainConfig, TrainConfigError, load_train_config, validate_train_config  # noqa: E402
from temtrack.training.torch_backend import TorchBackend, pad_batch  # noqa: E402
from temtrack.training.model import ModelConfig, build_model  # noqa: E402
from temtrack.training.synth import render_scene, resolve_config, sample_scene  # noqa: E402
from temtrack.training.train import ItemStream, train  # noqa: E402

SMALL = {"encoder": "resnet18", "n_masks": 8, "decoder_channels": [32, 16, 16, 8, 8]}


def tiny_config(**changes) -> TrainConfig:
    """A config that trains in seconds: 64 px, N = 8, two validation images per preset."""
    data = {
        "model": SMALL,
        "image_size": 64,
        "batch_size": 4,
        "steps": 4,
        "threads": 2,
        "data": {"presets": {"sd1": 1.0}, "workers": 0},
        "validation": {"presets": ["sd1"], "images": 2, "every": 2},
        "optim": {"warmup_steps": 0, "schedule": "constant"},
        "checkpoint_every": 2,
        "log_every": 1,
    }
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return validate_train_config(data)


# --- model ------------------------------------------------------------------------------


def test_model_maps_one_channel_to_n_masks():
    model = build_model(ModelConfig(**SMALL)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 96))
    assert out.shape == (2, 8, 64, 96)


def test_unknown_encoder_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown encoder 'resnet17'.*resnet18"):
        ModelConfig(encoder="resnet17")


# --- checkpoints ------------------------------------------------------------------------


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    config = tiny_config()
    model = build_model(config.model).eval()
    path = save_checkpoint(tmp_path / "a.pt", model=model, config=config.to_json(), step=7, best=0.5)
    state = torch.load(path, weights_only=True)  # plain data only: no pickled code
    assert state["step"] == 7
    loaded, model_config, stored = load_model(path)
    assert model_config == config.model
    assert stored["config"] == config.to_json()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    config = tiny_config()
    path = save_checkpoint(tmp_path / "a.pt", model=build_model(config.model), config=config.to_json(), step=0)
    other = ModelConfig(**{**SMALL, "n_masks": 20})
    with pytest.raises(CheckpointError, match="another model.*n_masks: checkpoint 8, config 20"):
        load_model(path, expected=other)


def test_pickled_model_and_foreign_files_are_refused(tmp_path):
    pickled = tmp_path / "module.pt"
    torch.save(build_model(ModelConfig(**SMALL)), pickled)  # a whole pickled module: code, not weights
    with pytest.raises(CheckpointError, match="cannot read it as saved weights"):
        read_checkpoint(pickled)
    plain = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a tem-track checkpoint"):
        read_checkpoint(plain)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        read_checkpoint(text)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modle": {}}, r"modle: unknown key"),
        ({"model": {"encoder": "resnet18", "depth": 3}}, r"model\.depth: unknown key"),
        ({"image_size": 100}, r"multiple of 32"),
        ({"optim": {"lr": -1}}, r"optim\.lr"),
        ({"model": {"n_masks": 0}}, r"model\.n_masks"),
        ({"data": {"presets": {"sd1": 0}}}, r"weight of 'sd1' must be > 0"),
        ({"precision": "fp8"}, r"precision"),
        ({"augment": {"p_noise": 1.5}}, r"augment\.p_noise"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(TrainConfigError, match=message):
        validate_train_config(data)


def test_config_file_toml_with_relative_paths(tmp_path):
    (tmp_path / "cfg.toml").write_text(
        'steps = 12\nimage_size = 64\n[model]\nencoder = "resnet18"\nn_masks = 5\n'
        '[data]\nlabelled = ["frames"]\npresets = {sd2 = 2.0}\n'
    )
    config = load_train_config(tmp_path / "cfg.toml")
    assert (config.steps, config.model.n_masks, config.data.presets) == (12, 5, {"sd2": 2.0})
    assert config.data.labelled == [tmp_path / "frames"]
    (tmp_path / "bad.toml").write_text("steps = [")
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        load_train_config(tmp_path / "bad.toml")
    (tmp_path / "cfg.yaml").write_text("steps: 3")
    with pytest.raises(TrainConfigError, match="use a .toml or .json"):
        load_train_config(tmp_path / "cfg.yaml")


def test_cli_print_config_applies_overrides(capsys):
    assert main(["train", "--print-config", "--set", "model.encoder=resnet34", "--set", "steps=5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["encoder"] == "resnet34" and printed["steps"] == 5
    assert main(["train", "--print-config", "--set", "model.colour=red"]) == 2
    assert "model.colour: unknown key" in capsys.readouterr().err


# --- data stream ------------------------------------------------------------------------


class _Constant:
    def __init__(self, value):
        self.value = value

    def item(self, index):
        return {"source": self.value, "image": torch.full((1, 2, 2), float(index))}


def test_item_stream_mixes_by_weight_and_is_addressed_by_index():
    stream = ItemStream([_Constant(0), _Constant(1)], [1.0, 3.0], seed=5)
    chosen = np.array([stream.source_of(i) for i in range(2000)])
    assert abs(chosen.mean() - 0.75) < 0.04  # binomial sd ~ 0.01
    resumed = ItemStream([_Constant(0), _Constant(1)], [1.0, 3.0], seed=5, start=100)
    first = next(iter(resumed))
    assert int(first["index"]) == 100 and first["source"] == stream.source_of(100)


def test_pad_batch_pads_with_median_and_keeps_content():
    frames = np.random.default_rng(0).random((2, 40, 70)).astype(np.float32)
    padded = pad_batch(frames, 32)
    assert padded.shape == (2, 64, 96)
    assert np.array_equal(padded[:, :40, :70], frames)
    assert np.allclose(padded[1, 50, 80], np.median(frames[1]))


# --- training ---------------------------------------------------------------------------


def _log(run):
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_smoke_training_loss_falls(tmp_path):
    """CPU smoke run: 128 x 128 sd1 images, small U-Net++, 80 steps (about 40 s on 2 cores).

    The matched Dice loss starts near 1 (20 thin lines against random masks) and falls
    slowly at first; measured over 4 runs: first-10-steps mean 0.97, last-10 mean
    0.90-0.91. Asserted: a drop of at least 0.03 and a negative trend that is not noise
    (slope at least 4 standard errors below 0).
    """
    config = tiny_config(
        image_size=128, steps=80, batch_size=6, validation={"every": 80},
        optim={"lr": 1e-2, "warmup_steps": 5, "schedule": "cosine"}, checkpoint_every=80, log_every=1,
        data={"presets": {"sd1": 1.0}, "workers": 1}, loss={"empty_weight": 0.0},
    )
    result = train(config, tmp_path / "run", progress=False)
    losses = np.array([float(r["loss"]) for r in _log(tmp_path / "run")])
    assert len(losses) == 80
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < first - 0.03, f"loss did not fall: first 10 steps {first:.4f}, last 10 {last:.4f}"
    steps = np.arange(len(losses))
    slope, intercept = np.polyfit(steps, losses, 1)
    residual = losses - (slope * steps + intercept)
    stderr = residual.std(ddof=2) / np.sqrt(((steps - steps.mean()) ** 2).sum())
    assert slope < -4 * stderr, f"no significant downward trend: slope {slope:.2e} +- {stderr:.2e}"
    assert result.step == 80 and result.best is not None
    for name in ("config.json", "log.csv", "validation.csv", "curves.png", "best.pt", "last.pt", "summary.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_resume_continues_exactly(tmp_path):
    config = tiny_config(steps=4)
    straight = train(config, tmp_path / "straight", progress=False)
    stopped = train(config, tmp_path / "resumed", progress=False, max_seconds=0)  # stops after step 1
    assert stopped.stopped == "time" and stopped.step == 1
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "resumed", progress=False)
    resumed = train(config, tmp_path / "resumed", progress=False, resume=True)
    assert resumed.step == straight.step == 4
    a, b = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(tmp_path / "resumed" / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in _log(tmp_path / "resumed")] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="differs from the run's in image_size"):
        train(tiny_config(image_size=96), tmp_path / "resumed", progress=False, resume=True)


def test_overwrite_and_resume_touch_only_run_folders(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    files = {"config.json": '{"latex": true}', "summary.json": "{}", "thesis.tex": "text", "last.pt": "junk"}
    for name, text in files.items():
        (thesis / name).write_text(text)
    with pytest.raises(FileExistsError, match="does not look like a tem-track run folder.*not replaced"):
        train(tiny_config(), thesis, progress=False, overwrite=True)
    with pytest.raises(ValueError, match="cannot resume .*not a tem-track run folder"):
        train(tiny_config(), thesis, progress=False, resume=True)
    assert {p.name: p.read_text() for p in thesis.iterdir()} == files
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotADirectoryError, match="is a file"):
        train(tiny_config(), tmp_path / "notes.txt", progress=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # A run folder is replaced: its run files go, anything else in it stays.
    from temtrack.training.train import _prepare_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny_config().to_json()))
    (run / "last.pt").write_text("old")
    (run / "notes.txt").write_text("mine")
    assert _prepare_run(tiny_config(), run, resume=False, overwrite=True) is None
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def _line_label_folder(folder, n=6, size=64):
    """A line-label folder (frameNNN.png + frameNNN_dislocations.png) from the generator."""
    folder.mkdir()
    config = resolve_config("sd1", size=size)
    for i in range(n):
        sample = render_scene(sample_scene(config, 100 + i))
        cv2.imwrite(str(folder / f"frame{i:03d}.png"), (sample.image * 255).astype(np.uint8))
        lines = np.zeros((size, size), np.uint8)
        for line in sample.centrelines:
            cv2.polylines(lines, [np.round(line).astype(np.int32).reshape(-1, 1, 2)], False, 255, 1)
        cv2.imwrite(str(folder / f"frame{i:03d}_dislocations.png"), lines)
    return folder


def test_fine_tuning_on_labelled_frames_and_eval_of_the_checkpoint(tmp_path):
    base = train(tiny_config(steps=2), tmp_path / "base", progress=False)
    frames = _line_label_folder(tmp_path / "frames")
    tuned_config = tiny_config(
        steps=2, init=str(base.run / "best.pt"),
        data={"presets": {"sd1": 1.0}, "labelled": [str(frames)], "weights": {"synthetic": 1.0, "labelled": 3.0}},
        validation={"presets": ["sd1"], "images": 1, "labelled_fraction": 0.34, "gap": 0, "every": 2},
    )
    train(tuned_config, tmp_path / "tuned", progress=False)
    with (tmp_path / "tuned" / "validation.csv").open() as f:
        columns = next(csv.reader(f))
    assert "frames_length_score" in columns and "sd1_length_score" in columns  # the held-out video is scored

    wrong = tiny_config(model={**SMALL, "n_masks": 4}, init=str(base.run / "best.pt"))
    with pytest.raises(CheckpointError, match="n_masks"):
        train(wrong, tmp_path / "wrong", progress=False)

    out = tmp_path / "report.json"
    assert main(["eval", "--data", str(frames), "--model", str(tmp_path / "tuned" / "best.pt"), "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["backend"]["backend"] == "torch" and len(report["images"]) == 6


def test_torch_backend_takes_any_frame_size(tmp_path):
    config = tiny_config()
    path = save_checkpoint(tmp_path / "m.pt", model=build_model(config.model), config=config.to_json(), step=0)
    backend = TorchBackend.from_checkpoint(path)
    masks = backend.predict(np.random.default_rng(1).random((3, 50, 70)).astype(np.float32))
    assert len(masks) == 3 and masks[0].shape == (8, 50, 70)
    assert all(((m >= 0) & (m <= 1)).all() for m in masks)
    assert backend.describe()["step"] == 0 and len(backend.describe()["sha256"]) == 64


def test_pickle_free_checkpoint_has_no_code(tmp_path):
    """The stored file holds no reference to tem-track classes (loadable anywhere)."""
    config = tiny_config()
    path = save_checkpoint(tmp_path / "m.pt", model=build_model(config.model), config=config.to_json(), step=0)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"temtrack" not in data and b"segmentation_models" not in data


def test_main_job_runs_a_checkpoint(tmp_path):
    """``Analyzer(model="run/best.pt")``: the torch backend inside the streaming pipeline."""
    from temtrack import Analyzer

    config = tiny_config()
    path = save_checkpoint(tmp_path / "m.pt", model=build_model(config.model), config=config.to_json(), step=0)
    frames = np.stack([render_scene(sample_scene(resolve_config("sd1", size=64), i)).image for i in range(3)])
    analyzer = Analyzer(model=path, workers=1)
    assert analyzer.backend.name == "torch"
    result = analyzer.run(frames)
    assert result.frames == 3
    assert set(result.splines.columns) >= {"frame", "x", "y", "length_px"}
    assert analyzer.backend.describe()["checkpoint"] == str(path.resolve())


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples" / "train").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_configs_load_with_their_generator_configs(path):
    from temtrack.training.synth import load_config

    config = load_train_config(path)
    for preset in config.data.presets:
        if preset.endswith(".json"):
            synth = load_config(preset)  # a generator config file beside the example: valid
            assert synth.background.mode in ("perlin", "patches", "mixed")
    assert config.model.n_masks >= 1 and config.steps >= 1
