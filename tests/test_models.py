"""The bundled default model and user models: hash check at load, names, `tem-track models`.

The bundled model itself is exercised here (it is part of the package); its quality on
the held-out sets is measured by ``benchmarks/model_card.py``, not by tests.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from _onnx_models import dark_line_model

from temtrack.sdk import models
from temtrack.cli import main
from temtrack.sdk.modelmeta import ModelError, file_sha256, read_metadata
from temtrack.training.synth import generate_sample

MiB = 2**20
# Floors for 6 SD1-like frames (see the last test); the bundled line-field model measured
# recall 0.96 and length score 0.75 on them (the previous multi-label stopgap 0.37, the
# classical backend about 0.02 on SD1-like sets).
RECALL_FLOOR, LENGTH_FLOOR = 0.8, 0.6


@pytest.fixture
def bundled_copy(tmp_path, monkeypatch):
    """The bundled folder copied to tmp_path, the models module pointed at it."""
    folder = tmp_path / "bundled"
    shutil.copytree(models.BUNDLED_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(models, "BUNDLED_DIR", folder)
    monkeypatch.setattr(models, "MANIFEST", folder / "manifest.json")
    models._verify.cache_clear()
    yield folder
    models._verify.cache_clear()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("TEMTRACK_MODEL_DIR", str(folder))
    return folder


# --- the bundled model -----------------------------------------------------------------------


def test_the_package_bundles_one_default_model_within_16_mib():
    (entry,) = models.bundled_models()
    assert entry.default and entry.source == "bundled"
    path = models.default_model()
    assert path == entry.path and path.stat().st_size <= 16 * MiB
    assert file_sha256(path) == entry.sha256
    meta = read_metadata(path)
    assert meta is not None and meta.n_masks >= 1 and meta.output in ("probabilities", "masks", "fields")
    assert meta.extra["checkpoint"]["step"] > 0 and meta.extra["parity"]["passed"]


def test_a_damaged_bundled_model_is_refused(bundled_copy):
    (entry,) = models.bundled_models()
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    entry.path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256 .* damaged or was replaced; reinstall"):
        models.default_model()
    entry.path.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(ModelError, match="bytes, the manifest says"):
        models.default_model()
    entry.path.unlink()
    with pytest.raises(ModelError, match="is missing"):
        models.default_model()


def test_a_missing_or_broken_manifest_is_named(bundled_copy):
    (bundled_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        models.bundled_models()
    (bundled_copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest .* is missing"):
        models.default_model()


def test_the_hash_is_checked_again_after_the_file_changes(bundled_copy):
    path = models.default_model()  # verified and cached
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        models.default_model()


# --- names -----------------------------------------------------------------------------------


def test_names_resolve_to_files(tmp_path, user_dir):
    bundled = models.default_model()
    assert models.resolve_model("default") == bundled
    assert models.resolve_model(models.bundled_models()[0].name) == bundled
    mine = dark_line_model(tmp_path / "mine.onnx")
    assert models.resolve_model(mine) == mine  # an existing path as it is
    added = models.add_user_model(mine, "steel-v1")
    assert added == user_dir / "steel-v1.onnx" and models.resolve_model("steel-v1") == added
    with pytest.raises(FileNotFoundError, match="known models: default, .*steel-v1"):
        models.resolve_model("stee1-v1")
    missing = tmp_path / "nowhere" / "model.onnx"
    assert models.resolve_model(missing) == missing  # the backend names the missing file


def test_adding_a_user_model_checks_it(tmp_path, user_dir):
    plain = dark_line_model(tmp_path / "plain.onnx", metadata=False)
    with pytest.raises(ModelError, match="no tem-track metadata"):
        models.add_user_model(plain)
    good = dark_line_model(tmp_path / "good.onnx")
    with pytest.raises(ValueError, match="bundled model's name"):
        models.add_user_model(good, "default")
    with pytest.raises(ValueError, match="plain file name"):
        models.add_user_model(good, "../escape")
    models.add_user_model(good)
    with pytest.raises(FileExistsError, match="overwrite"):
        models.add_user_model(good)
    assert models.add_user_model(good, overwrite=True).read_bytes() == good.read_bytes()


def test_models_command_lists_bundled_and_user_models(tmp_path, user_dir, capsys):
    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    entry = models.bundled_models()[0]
    meta = read_metadata(entry.path)
    shape = f"line fields ({meta.n_masks} channels)" if meta.family == "linefield" else f"N={meta.n_masks}"
    assert f"{entry.name}  (default, bundled)" in printed and shape in printed and "no user models" in printed
    if meta.family == "linefield":  # the threshold it is traced at, not the mask threshold it does not use
        assert (f"traced at threshold {meta.line_threshold}" if meta.line_threshold else "traced at the default threshold") in printed
    trained = next(line for line in printed.splitlines() if "best validation length score" in line)
    assert re.search(r"score \d\.\d{4}$", trained), trained  # rounded, not 0.15339999...
    model = dark_line_model(tmp_path / "lab.onnx", n_masks=3)
    assert main(["models", "--add", str(model), "--name", "lab"]) == 0
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["lab"]["source"] == "user" and rows["lab"]["metadata"]["n_masks"] == 3
    assert rows[entry.name]["default"] and rows[entry.name]["problem"] is None
    assert rows[entry.name]["metadata"]["extra"]["precision"] in ("fp32", "fp16", "fp16-weights")


def test_models_command_reports_a_damaged_bundled_model(bundled_copy, capsys):
    (entry,) = models.bundled_models()
    entry.path.write_bytes(entry.path.read_bytes()[:-1])
    assert main(["models"]) == 1
    assert "PROBLEM" in capsys.readouterr().out


@pytest.mark.parametrize("as_json", [False, True])
def test_models_command_fails_on_a_broken_user_model(tmp_path, user_dir, capsys, as_json):
    user_dir.mkdir()
    model = dark_line_model(tmp_path / "lab.onnx")
    (user_dir / "good.onnx").write_bytes(model.read_bytes())
    (user_dir / "cut.onnx").write_bytes(model.read_bytes()[:200])
    (user_dir / "gpu.engine").write_bytes(b"not an engine")  # and no sidecar
    assert main(["models", *(["--json"] if as_json else [])]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^2 of 4 models are broken: cut, gpu ", captured.err, re.M), captured.err
    if as_json:
        rows = {row["name"]: row for row in json.loads(captured.out)}
        assert rows["good"]["problem"] is None and "not an ONNX model" in rows["cut"]["problem"]
        assert "sidecar" in rows["gpu"]["problem"]
    else:
        assert captured.out.count("PROBLEM") == 2


def test_models_command_names_a_model_folder_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").write_text("mine")
    monkeypatch.setenv("TEMTRACK_MODEL_DIR", str(tmp_path / "models"))
    assert main(["models"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["models", "--add", str(dark_line_model(tmp_path / "m.onnx"))]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "models").read_text() == "mine"


# --- the default at work ---------------------------------------------------------------------


def test_analyzer_without_a_model_runs_the_bundled_one():
    from temtrack.sdk.analyzer import Analyzer

    analyzer = Analyzer(workers=0)
    described = analyzer.backend.describe()
    assert analyzer.backend.name == "onnxruntime"
    assert str(models.default_model()) in json.dumps(described)
    assert analyzer.selection is not None and "onnxruntime" in analyzer.selection


def test_the_default_model_finds_dislocations_in_a_synthetic_frame():
    """Out of the box on SD1-like frames (known answer: the generator's masks).

    Floors set well under the held-out figures of the model card (a broken model, an
    empty output or a wrong normalisation falls far below them).
    """
    from temtrack.sdk.backends import get_backend
    from temtrack.sdk.metrics import score_image

    from temtrack.sdk.linefield import extract_lines, instance_masks

    backend = get_backend(str(models.default_model()))
    scores = []
    for seed in range(20, 26):
        sample = generate_sample("sd1", seed, size=512)
        (output,) = backend.predict(sample.image[None].astype(np.float32))
        if getattr(backend, "family", "multilabel") == "linefield":
            output = instance_masks(extract_lines(output))
        scores.append(score_image(output, sample.masks))
    recall = np.mean([s.dislocation_recall for s in scores])
    length = np.mean([s.length_score for s in scores])
    assert recall >= RECALL_FLOOR and length >= LENGTH_FLOOR, f"recall {recall:.2f}, length score {length:.2f}"


# --- bundling (maintainers) --------------------------------------------------------------------


def test_bundling_writes_the_manifest_and_drops_the_old_file(tmp_path, monkeypatch):
    from temtrack.export import bundle

    folder = tmp_path / "bundled"
    folder.mkdir()
    first = bundle.bundle_model(dark_line_model(tmp_path / "a.onnx"), name="model-a", card="docs/x.md", folder=folder)
    assert first["default"] == "model-a" and (folder / "model-a.onnx").is_file()
    second = bundle.bundle_model(dark_line_model(tmp_path / "b.onnx", n_masks=2), name="model-b", folder=folder)
    (entry,) = second["models"]
    assert not (folder / "model-a.onnx").exists() and entry["sha256"] == file_sha256(folder / "model-b.onnx")
    assert json.loads((folder / "manifest.json").read_text()) == second
    monkeypatch.setattr(models, "BUNDLED_DIR", folder)
    monkeypatch.setattr(models, "MANIFEST", folder / "manifest.json")
    assert models.default_model() == folder / "model-b.onnx" and read_metadata(models.default_model()).n_masks == 2


def test_bundling_refuses_what_cannot_ship(tmp_path, monkeypatch):
    from temtrack.export import bundle

    folder = tmp_path / "bundled"
    folder.mkdir()
    with pytest.raises(ModelError, match="no tem-track metadata"):
        bundle.bundle_model(dark_line_model(tmp_path / "plain.onnx", metadata=False), folder=folder)
    model = dark_line_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="not 'default'"):
        bundle.bundle_model(model, name="default", folder=folder)
    monkeypatch.setattr(bundle, "MAX_BYTES", model.stat().st_size - 1)
    with pytest.raises(ModelError, match="over the 0 MiB.*--fp16-weights"):
        bundle.bundle_model(model, folder=folder)
    assert list(folder.iterdir()) == []
