"""Catalogue cases of the other jobs: ``synth``, ``eval``, ``models``, ``train``, ``export``
and the model backends' registry.

Every case runs in a fresh folder holding ``v.mp4`` (see :mod:`test_hostile`); models
cases point ``$TEMTRACK_MODEL_DIR`` at ``folder/models`` so that no case reads or
writes the real user model folder. ``S`` below is ``--n 1 --size 64 --quiet``.
"""

from __future__ import annotations

import json

from _hostile import Case

S = ["--n", "1", "--size", "64", "--quiet"]
VIDEO = ["--video", "--frames", "2", "--size", "64", "--quiet"]
EVAL = ["--backend", "classical", "--quiet"]


# --- setups -------------------------------------------------------------------------------


def _thesis(name: str = "p"):
    """Someone's work under ``name``: the folder a mistyped --out must never replace."""

    def setup(folder):
        (folder / name / "figures").mkdir(parents=True)
        (folder / name / "thesis.tex").write_text("\\chapter{Dislocations in TWIP steel}\n")
        (folder / name / "refs.bib").write_text("@article{govind2024, title={...}}\n")
        (folder / name / "figures" / "fig1.png").write_bytes(b"\x89PNG not really")

    return setup


def _file(name: str, text: str = "mine\n"):
    def setup(folder):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    return setup


def _folder(name: str):
    def setup(folder):
        (folder / name).mkdir(parents=True)

    return setup


def _both(*setups):
    def setup(folder):
        for step in setups:
            step(folder)

    return setup


def _dataset(name: str = "p", seed: int = 0):
    """An earlier ``tem-track synth`` dataset (one 64 px image)."""

    def setup(folder):
        from temtrack.training.synth import resolve_config
        from temtrack.training.synth.storage import write_dataset

        write_dataset(folder / name, resolve_config("sd1", size=64), 1, seed=seed, progress=False)

    return setup


def _synth_video(name: str = "p"):
    """An earlier ``tem-track synth --video`` folder (two 64 px frames)."""

    def setup(folder):
        from temtrack.training.synth import resolve_config
        from temtrack.training.synth.video import VideoSettings, write_video

        write_video(folder / name, resolve_config("sd1", size=64), 0, VideoSettings(frames=2), progress=False)

    return setup


DATASET_FILES = ("p/dataset.json", "p/images/000000.png", "p/masks/000000.npz", "p/labels/000000.json")
VIDEO_FILES = ("p/video.mp4", "p/video.json", "p/ground_truth.parquet")


def _images(labels: str | None, names=("a", "b", "c"), labelled=("c",)):
    """``data/`` with 64 px synthetic images ``a.png`` ... and labels for ``labelled``:
    labelme JSON (``labels="labelme"``), line labels (``"lines"``) or none."""

    def setup(folder):
        import cv2
        import numpy as np

        from temtrack.sdk.labelme import write_labelme
        from temtrack.training.synth import generate_sample
        from temtrack.training.synth.storage import to_uint8

        data = folder / "data"
        data.mkdir()
        for seed, name in enumerate(names):
            sample = generate_sample("sd1", seed, size=64)
            cv2.imwrite(str(data / f"{name}.png"), to_uint8(sample.image))
            if name not in labelled or labels is None:
                continue
            if labels == "labelme":
                write_labelme(data / f"{name}.json", sample.centrelines, image_shape=sample.image.shape,
                              image_path=f"{name}.png")
            else:
                lines = (sample.masks.max(axis=0) * 255).astype(np.uint8)
                cv2.imwrite(str(data / f"{name}_dislocations.png"), lines)

    return setup


def _user_models(monkeypatch, folder):
    monkeypatch.setenv("TEMTRACK_MODEL_DIR", str(folder / "models"))


def _model_dir_is(name: str):
    def patch(monkeypatch, folder):
        monkeypatch.setenv("TEMTRACK_MODEL_DIR", str(folder / name))

    return patch


def _onnx(name: str):
    """A valid tem-track ONNX model (a tiny dark-line detector) at ``name``."""

    def setup(folder):
        from _onnx_models import dark_line_model

        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        dark_line_model(folder / name)

    return setup


def _cut_model(folder):
    """A user model cut short (a copy interrupted), beside a sound one."""
    from _onnx_models import dark_line_model

    (folder / "models").mkdir()
    good = dark_line_model(folder / "models" / "good.onnx")
    (folder / "models" / "cut.onnx").write_bytes(good.read_bytes()[:300])


def _run_folder_of_someone_else(folder):
    """A folder with a config.json and last.pt that no tem-track run wrote."""
    _thesis("thesis")(folder)
    (folder / "thesis" / "config.json").write_text('{"documentclass": "book"}\n')
    (folder / "thesis" / "last.pt").write_bytes(b"a draft, not a checkpoint")


# --- checks -------------------------------------------------------------------------------


def _nothing_left_beside(*names):
    """No partial or temporary folder was left for the next run to trip over."""

    def check(folder, output):
        stray = [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old", ".tmp"))]
        assert not stray, stray
        for name in names:
            assert not (folder / name).exists(), name

    return check


def _seed_is(seed: int, name: str = "p/dataset.json"):
    def check(folder, output):
        assert json.loads((folder / name).read_text())["seed"] == seed
        _nothing_left_beside()(folder, output)

    return check


def _skipped(*names):
    def check(folder, output):
        report = json.loads((folder / "r.json").read_text())
        assert report["skipped_unlabelled"] == list(names)
        assert report["summary"]["n_images"] == 1

    return check


# --- the cases ----------------------------------------------------------------------------

CASES = [
    # 1. --overwrite replaces only what tem-track synth wrote.
    Case(
        name="synth-overwrite-thesis-folder",
        kind="data loss",
        setup=_thesis(),
        argv=lambda f, v: ["synth", *S, "--out", "p", "--overwrite"],
        code=2,
        message=r"synth: error: p does not look like a tem-track synth dataset .*not replaced",
        check=_nothing_left_beside(),
    ),
    Case(
        name="synth-video-overwrite-thesis-folder",
        kind="data loss",
        setup=_thesis(),
        argv=lambda f, v: ["synth", *VIDEO, "--out", "p", "--overwrite"],
        code=2,
        message=r"p does not look like a tem-track synth dataset .*not replaced",
        check=_nothing_left_beside(),
    ),
    Case(
        name="synth-overwrite-a-file",
        kind="data loss",
        setup=_file("notes.txt"),
        argv=lambda f, v: ["synth", *S, "--out", "notes.txt", "--overwrite"],
        code=2,
        message=r"notes.txt is a file, not a folder tem-track synth wrote, so it is not replaced",
    ),
    Case(
        name="synth-overwrite-dataset-holding-other-files",
        kind="data loss",
        setup=_both(_dataset(), _file("p/notes.txt")),
        argv=lambda f, v: ["synth", *S, "--out", "p", "--overwrite"],
        code=2,
        message=r"p is a tem-track synth dataset but also holds files tem-track synth did not write \(notes.txt\)",
    ),
    Case(
        name="synth-overwrite-earlier-dataset",
        kind="clear",
        setup=_dataset(seed=0),
        argv=lambda f, v: ["synth", *S, "--seed", "1", "--out", "p", "--overwrite"],
        code=0,
        message=r"wrote 1 images with ground truth to p",
        changes=DATASET_FILES,
        check=_seed_is(1),
    ),
    Case(
        name="synth-video-overwrite-earlier-video",
        kind="clear",
        setup=_synth_video(),
        argv=lambda f, v: ["synth", *VIDEO, "--seed", "1", "--out", "p", "--overwrite"],
        code=0,
        message=r"wrote p/video.mp4",
        changes=VIDEO_FILES,
        check=_seed_is(1, "p/video.json"),
    ),
    Case(
        name="synth-into-empty-folder",
        kind="clear",
        setup=_folder("p"),
        argv=lambda f, v: ["synth", *S, "--out", "p"],
        code=0,
        message=r"wrote 1 images with ground truth to p",
        check=_seed_is(0),
    ),
    Case(
        name="synth-existing-dataset-without-overwrite",
        kind="clear",
        setup=_dataset(),
        argv=lambda f, v: ["synth", *S, "--out", "p"],
        code=2,
        message=r"output folder p exists; choose another or pass overwrite \(--overwrite\)",
    ),
    Case(
        name="synth-resume-partial-folder-not-ours",
        kind="clear",
        setup=_file("p.partial/mine.txt"),
        argv=lambda f, v: ["synth", *S, "--out", "p", "--resume"],
        code=2,
        message=r"p.partial exists but is not an interrupted tem-track synth run",
    ),
    Case(
        name="synth-video-resume",
        kind="silent",
        argv=lambda f, v: ["synth", *VIDEO, "--out", "p", "--resume"],
        code=2,
        message=r"--resume goes with image datasets, not --video",
        check=_nothing_left_beside("p"),
    ),
    # 5. synth's other inputs.
    Case(
        name="synth-n-zero",
        kind="clear",
        argv=lambda f, v: ["synth", "--n", "0", "--size", "64", "--quiet", "--out", "p"],
        code=2,
        message=r"n must be a positive integer, got 0",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-n-negative",
        kind="clear",
        argv=lambda f, v: ["synth", "--n", "-1", "--size", "64", "--quiet", "--out", "p"],
        code=2,
        message=r"n must be a positive integer, got -1",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-size-too-small",
        kind="clear",
        argv=lambda f, v: ["synth", "--n", "1", "--size", "7", "--out", "p"],
        code=2,
        message=r"size must be \(height, width\) within \[16, 8192\], got \(7, 7\)",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-size-too-large",
        kind="clear",
        argv=lambda f, v: ["synth", "--n", "1", "--size", "100000", "--out", "p"],
        code=2,
        message=r"size must be \(height, width\) within \[16, 8192\], got \(100000, 100000\)",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-workers-zero",
        kind="clear",
        argv=lambda f, v: ["synth", *S, "--workers", "0", "--out", "p"],
        code=2,
        message=r"workers must be a positive integer, got 0",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-seed-negative",
        kind="clear",
        argv=lambda f, v: ["synth", *S, "--seed", "-1", "--out", "p"],
        code=2,
        message=r"--seed must be a non-negative integer, got -1",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-config-not-json",
        kind="clear",
        setup=_file("c.json", "{not json"),
        argv=lambda f, v: ["synth", *S, "--config", "c.json", "--out", "p"],
        code=2,
        message=r"config file c.json is not valid JSON",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-config-unknown-key",
        kind="clear",
        setup=_file("c.json", '{"bogus": 1}'),
        argv=lambda f, v: ["synth", *S, "--config", "c.json", "--out", "p"],
        code=2,
        message=r"invalid generator config: bogus: Extra inputs are not permitted",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-config-missing",
        kind="clear",
        argv=lambda f, v: ["synth", *S, "--config", "c.json", "--out", "p"],
        code=2,
        message=r"config file not found: c.json",
    ),
    Case(
        name="synth-config-is-a-folder",
        kind="clear",
        setup=_folder("c.json"),
        argv=lambda f, v: ["synth", *S, "--config", "c.json", "--out", "p"],
        code=2,
        message=r"--config must be a JSON file \(see --show-config\), got the folder c.json",
    ),
    Case(
        name="synth-backgrounds-empty-folder",
        kind="clear",
        setup=_folder("bg"),
        argv=lambda f, v: ["synth", *S, "--backgrounds", "bg", "--out", "p"],
        code=2,
        message=r"background folder .*bg holds no image",
        check=_nothing_left_beside("p"),  # the partial folder it left made the next run fail
    ),
    Case(
        name="synth-backgrounds-a-file",
        kind="clear",
        setup=_file("bg.png", "not an image"),
        argv=lambda f, v: ["synth", *S, "--backgrounds", "bg.png", "--out", "p"],
        code=2,
        message=r"background folder not found or not a folder: .*bg.png",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-patches-without-backgrounds",
        kind="clear",
        argv=lambda f, v: ["synth", *S, "--background-mode", "patches", "--out", "p"],
        code=2,
        message=r"uses real background patches .*--backgrounds DIR",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-video-frames-zero",
        kind="clear",
        argv=lambda f, v: ["synth", "--video", "--frames", "0", "--size", "64", "--out", "p"],
        code=2,
        message=r"--frames must be between 1 and 10000000, got 0",
        check=_nothing_left_beside("p"),
    ),
    Case(
        name="synth-video-odd-size",
        kind="clear",
        argv=lambda f, v: ["synth", "--video", "--frames", "2", "--size", "63", "--out", "p"],
        code=2,
        message=r"even height and width .*got \(63, 63\)",
        check=_nothing_left_beside("p"),
    ),
    # 2. models exits non-zero when a model is broken.
    Case(
        name="models-broken-user-model",
        kind="silent",
        setup=_cut_model,
        patch=_user_models,
        argv=lambda f, v: ["models"],
        code=1,
        message=r"(?=.*PROBLEM .*cut.onnx: not an ONNX model)1 of 3 models is broken: cut \(its PROBLEM line says why\)",
    ),
    Case(
        name="models-json-broken-user-model",
        kind="silent",
        setup=_cut_model,
        patch=_user_models,
        argv=lambda f, v: ["models", "--json"],
        code=1,
        message=r"(?=.*\"problem\": \".*cut.onnx: not an ONNX model)1 of 3 models is broken: cut \(its problem field says why\)",
    ),
    Case(
        name="models-engine-without-sidecar",
        kind="silent",
        setup=_file("models/gpu.engine", "not an engine"),
        patch=_user_models,
        argv=lambda f, v: ["models"],
        code=1,
        message=r"(?=.*PROBLEM .*gpu.engine: its sidecar gpu.engine.json is missing)1 of 2 models is broken: gpu",
    ),
    Case(
        name="models-folder-is-a-file",
        kind="silent",
        setup=_file("models"),
        patch=_user_models,
        argv=lambda f, v: ["models"],
        code=2,
        message=r"the user model folder .*models \(\$TEMTRACK_MODEL_DIR\) is a file, not a folder",
    ),
    Case(
        name="models-add-missing-file",
        kind="clear",
        patch=_user_models,
        argv=lambda f, v: ["models", "--add", "m.onnx"],
        code=2,
        message=r"model file m.onnx does not exist",
        check=_nothing_left_beside("models"),
    ),
    Case(
        name="models-add-not-onnx",
        kind="clear",
        setup=_file("notes.txt"),
        patch=_user_models,
        argv=lambda f, v: ["models", "--add", "notes.txt"],
        code=2,
        message=r"notes.txt: only .onnx models can be added",
        check=_nothing_left_beside("models"),
    ),
    Case(
        name="models-add-corrupt-onnx",
        kind="clear",
        setup=_file("m.onnx", "garbage"),
        patch=_user_models,
        argv=lambda f, v: ["models", "--add", "m.onnx"],
        code=2,
        message=r"m.onnx: not an ONNX model, it cannot be parsed",
        check=_nothing_left_beside("models"),
    ),
    Case(
        name="models-add-onto-existing-name",
        kind="clear",
        setup=_both(_onnx("models/mine.onnx"), _onnx("other/mine.onnx")),
        patch=_user_models,
        argv=lambda f, v: ["models", "--add", "other/mine.onnx"],
        code=2,
        message=r"models/mine.onnx exists; pass overwrite=True \(--overwrite\) to replace it",
    ),
    Case(
        name="models-add-into-a-file",
        kind="clear",
        setup=_both(_file("models"), _onnx("m.onnx")),
        patch=_user_models,
        argv=lambda f, v: ["models", "--add", "m.onnx"],
        code=2,
        message=r"the user model folder .*models \(\$TEMTRACK_MODEL_DIR\) is a file, not a folder",
    ),
    # 3. eval says which images it skipped for want of labels.
    Case(
        name="eval-skips-unlabelled-labelme",
        kind="silent",
        setup=_images("labelme"),
        argv=lambda f, v: ["eval", "--data", "data", *EVAL, "--out", "r.json"],
        code=0,
        message=r"skipped 2 of 3 images without labels: a.png, b.png",
        check=_skipped("a.png", "b.png"),
    ),
    Case(
        name="eval-skips-unlabelled-lines",
        kind="silent",
        setup=_images("lines"),
        argv=lambda f, v: ["eval", "--data", "data", *EVAL, "--out", "r.json"],
        code=0,
        message=r"skipped 2 of 3 images without labels: a.png, b.png",
        check=_skipped("a.png", "b.png"),
    ),
    Case(
        name="eval-no-image-labelled",
        kind="clear",
        setup=_images(None),
        argv=lambda f, v: ["eval", "--data", "data", *EVAL, "--out", "r.json"],
        code=2,
        message=r"data holds neither a synthetic dataset .*nor labelme files .*nor line labels",
        check=_nothing_left_beside("r.json", "r.png"),
    ),
    Case(
        name="eval-missing-folder",
        kind="clear",
        argv=lambda f, v: ["eval", "--data", "data", *EVAL],
        code=2,
        message=r"data folder data does not exist",
    ),
    Case(
        name="eval-data-is-a-file",
        kind="clear",
        argv=lambda f, v: ["eval", "--data", "v.mp4", *EVAL, "--out", "r.json"],
        code=2,
        message=r"data must be a folder .*got the file v.mp4",
    ),
    Case(
        name="eval-empty-folder",
        kind="clear",
        setup=_folder("data"),
        argv=lambda f, v: ["eval", "--data", "data", *EVAL, "--out", "r.json"],
        code=2,
        message=r"data holds neither a synthetic dataset",
    ),
    Case(
        name="eval-synthetic-video-folder",
        kind="clear",
        setup=_synth_video(),
        argv=lambda f, v: ["eval", "--data", "p", *EVAL, "--out", "r.json"],
        code=2,
        message=r"p is a synthetic video \('tem-track synth --video'\), not images with labels",
    ),
    Case(
        name="eval-damaged-dataset",
        kind="traceback",
        setup=_both(_dataset(), _file("p/labels/000000.json", "{}")),
        argv=lambda f, v: ["eval", "--data", "p", *EVAL, "--out", "r.json"],
        code=2,
        message=r"p/labels/000000.json is not a sample's label file .*the dataset is damaged",
        check=_nothing_left_beside("r.json"),
    ),
    Case(
        name="eval-out-is-a-folder",
        kind="traceback",
        setup=_both(_dataset(), _file("r.json/keep.txt")),
        argv=lambda f, v: ["eval", "--data", "p", *EVAL, "--out", "r.json", "--overwrite"],
        code=2,
        message=r"--out r.json: r.json is a folder; give a report file name ending in .json",
    ),
    Case(
        name="eval-out-not-json",
        kind="clear",
        setup=_dataset(),
        argv=lambda f, v: ["eval", "--data", "p", *EVAL, "--out", "r.txt"],
        code=2,
        message=r"--out must end in .json",
    ),
    Case(
        name="eval-model-is-a-folder",
        kind="clear",
        setup=_both(_dataset(), _folder("m.onnx")),
        argv=lambda f, v: ["eval", "--data", "p", "--model", "m.onnx", "--quiet", "--out", "r.json"],
        code=2,
        message=r"--model m.onnx is a folder, not a model file",
    ),
    Case(
        name="eval-model-corrupt",
        kind="clear",
        setup=_both(_dataset(), _file("m.onnx", "garbage")),
        argv=lambda f, v: ["eval", "--data", "p", "--model", "m.onnx", "--quiet", "--out", "r.json"],
        code=2,
        message=r"m.onnx: not an ONNX model",
        check=_nothing_left_beside("r.json"),
    ),
    Case(
        name="eval-backend-auto-without-model",
        kind="traceback",
        setup=_dataset(),
        argv=lambda f, v: ["eval", "--data", "p", "--backend", "auto", "--quiet", "--out", "r.json"],
        code=2,
        message=r"the auto backend picks the runtime for a model: give --model MODEL instead",
    ),
    # 4. A model backend without a model.
    Case(
        name="eval-backend-onnxruntime-without-model",
        kind="traceback",
        setup=_dataset(),
        argv=lambda f, v: ["eval", "--data", "p", "--backend", "onnxruntime", "--quiet", "--out", "r.json"],
        code=2,
        message=r"eval: error: the onnxruntime backend runs a model: give --model MODEL.onnx "
        r"\(or a model name from 'tem-track models'\)",
    ),
    *[
        Case(
            name=f"run-backend-{backend}-without-model",
            kind="traceback",
            argv=lambda f, v, backend=backend: [v.name, "--backend", backend, "--out", "s.parquet", "--quiet"],
            code=2,
            message=rf"tem-track: error: the {backend} backend runs a model: give --model {model}",
            check=_nothing_left_beside("s.parquet"),
        )
        for backend, model in (("onnxruntime", "MODEL.onnx"), ("tensorrt", "ENGINE.engine"), ("torch", "CHECKPOINT.pt"))
    ],
    # train and export (these import torch).
    Case(
        name="train-overwrite-folder-not-a-run",
        kind="data loss",
        setup=_both(_thesis("thesis"), _file("thesis/config.json", '{"documentclass": "book"}')),
        argv=lambda f, v: ["train", "--out", "thesis", "--overwrite", "--quiet"],
        code=2,
        message=r"thesis does not look like a tem-track run folder .*config.json, so they are not replaced",
    ),
    Case(
        name="train-resume-folder-not-a-run",
        kind="clear",
        setup=_run_folder_of_someone_else,
        argv=lambda f, v: ["train", "--out", "thesis", "--resume", "--quiet"],
        code=2,
        message=r"cannot resume thesis: it is not a tem-track run folder",
    ),
    Case(
        name="train-out-is-a-file",
        kind="clear",
        setup=_file("notes.txt"),
        argv=lambda f, v: ["train", "--out", "notes.txt", "--quiet"],
        code=2,
        message=r"the run folder notes.txt is a file",
    ),
    Case(
        name="train-config-missing",
        kind="clear",
        argv=lambda f, v: ["train", "c.toml", "--out", "run"],
        code=2,
        message=r"training config c.toml does not exist",
        check=_nothing_left_beside("run"),
    ),
    Case(
        name="train-config-bad-toml",
        kind="clear",
        setup=_file("c.toml", "steps = = 3\n"),
        argv=lambda f, v: ["train", "c.toml", "--out", "run"],
        code=2,
        message=r"c.toml is not valid TOML",
        check=_nothing_left_beside("run"),
    ),
    Case(
        name="train-set-unknown-key",
        kind="clear",
        argv=lambda f, v: ["train", "--set", "bogus=3", "--out", "run"],
        code=2,
        message=r"the config with --set has invalid settings:\s+bogus: unknown key",
        check=_nothing_left_beside("run"),
    ),
    Case(
        name="train-set-without-value",
        kind="clear",
        argv=lambda f, v: ["train", "--set", "steps", "--out", "run"],
        code=2,
        message=r"--set takes KEY=VALUE, got 'steps'",
        check=_nothing_left_beside("run"),
    ),
    Case(
        name="export-missing-checkpoint",
        kind="clear",
        argv=lambda f, v: ["export", "c.pt", "--out", "m.onnx"],
        code=2,
        message=r"checkpoint c.pt does not exist",
        check=_nothing_left_beside("m.onnx"),
    ),
    Case(
        name="export-not-a-checkpoint",
        kind="clear",
        setup=_file("c.pt", "not a checkpoint"),
        argv=lambda f, v: ["export", "c.pt", "--out", "m.onnx"],
        code=2,
        message=r"c.pt is not a tem-track checkpoint",
        check=_nothing_left_beside("m.onnx"),
    ),
]
