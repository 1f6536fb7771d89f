"""The ONNX Runtime backend and the model metadata.

Known answers come from the tiny models of ``_onnx_models`` (1x1 convolutions built
with onnx.helper), whose masks :func:`dark_line_reference` computes in numpy; the
error cases are files written by hand (garbage bytes, text, wrong graphs, bad JSON).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from _onnx_models import (  # noqa: E402  (after the skips: needs onnx)
    dark_line_model,
    dark_line_reference,
    dynamic_size_model,
    set_raw_metadata,
    three_channel_model,
    wrong_output_rank_model,
    wrong_rank_model,
)

from temtrack.sdk.backends import ClassicalBackend, backend_names, get_backend  # noqa: E402
from temtrack.sdk.backends.onnx import ModelError, OnnxBackend  # noqa: E402
from temtrack.sdk.modelmeta import (  # noqa: E402
    METADATA_KEY,
    ModelMetadata,
    file_sha256,
    output_op_types,
    read_metadata,
    write_metadata,
)
from temtrack.sdk.postprocess import PostprocessSettings, extract_dislocations  # noqa: E402
from temtrack.sdk.preprocess import fit_to_input  # noqa: E402

ATOL = 1e-5


def _frames(n=3, size=(64, 64), seed=0):
    return np.random.default_rng(seed).random((n, *size), dtype=np.float32)


class _CountingSession:
    """An InferenceSession stand-in that records the batch size of every model run."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def io_binding(self):
        return _RecordingBinding(self.session.io_binding())

    def run_with_iobinding(self, binding):
        self.batches.append(binding.batch)
        return self.session.run_with_iobinding(binding.binding)


class _RecordingBinding:
    def __init__(self, binding):
        self.binding, self.batch = binding, None

    def bind_input(self, name, device, device_id, dtype, shape, pointer):
        self.batch = shape[0]
        self.binding.bind_input(name, device, device_id, dtype, shape, pointer)

    def bind_output(self, *args):
        self.binding.bind_output(*args)


# --- predictions ---------------------------------------------------------------------


@pytest.mark.parametrize("output", ["logits", "probabilities"])
def test_predictions_match_numpy(tmp_path, output):
    path = dark_line_model(tmp_path / "m.onnx", output=output)
    backend = OnnxBackend(path)
    frames = _frames()
    masks = backend.predict(frames)
    assert isinstance(masks, list) and len(masks) == 3
    for got, expected in zip(masks, dark_line_reference(frames)):
        assert got.shape == (4, 64, 64) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert all(0.0 <= m.min() and m.max() <= 1.0 for m in masks)


def test_metadata_normalisation_and_threshold_are_applied(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx", size=(32, 48), n_masks=3, mean=0.4, std=0.25, threshold=0.7)
    backend = OnnxBackend(path)
    assert backend.metadata == read_metadata(path) and backend.metadata_source == "file"
    assert backend.input_size == (32, 48) and backend.n_masks == 3 and backend.threshold == 0.7
    frames = _frames(size=(32, 48))
    expected = dark_line_reference(frames, n_masks=3, mean=0.4, std=0.25)
    np.testing.assert_allclose(np.stack(backend.predict(frames)), expected, rtol=0, atol=ATOL)
    # uint8 frames are read as frames / 255.
    frames8 = (frames * 255).round().astype(np.uint8)
    expected8 = dark_line_reference(frames8 / 255.0, n_masks=3, mean=0.4, std=0.25)
    np.testing.assert_allclose(np.stack(backend.predict(frames8)), expected8, rtol=0, atol=ATOL)


def test_metadata_gives_the_size_of_a_dynamic_graph(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx", size=(40, 56), dynamic_size=True)
    backend = OnnxBackend(path)
    assert backend.input_size == (40, 56)
    frames = _frames(2, (40, 56))
    np.testing.assert_allclose(np.stack(backend.predict(frames)), dark_line_reference(frames), rtol=0, atol=ATOL)


@pytest.mark.parametrize("output", ["logits", "probabilities"])
def test_without_metadata_the_graph_decides(tmp_path, output):
    path = dark_line_model(tmp_path / "m.onnx", size=(48, 64), n_masks=2, output=output, metadata=False)
    assert read_metadata(path) is None
    backend = OnnxBackend(path)
    assert backend.metadata_source == "graph"
    assert backend.metadata == ModelMetadata(input_size=(48, 64), n_masks=2, output=output)
    assert (backend.threshold, backend.metadata.mean, backend.metadata.std) == (0.5, 0.0, 1.0)
    frames = _frames(2, (48, 64))
    np.testing.assert_allclose(np.stack(backend.predict(frames)), dark_line_reference(frames, n_masks=2), rtol=0, atol=ATOL)


@pytest.mark.parametrize("batch, n, runs", [(1, 3, [1, 1, 1]), (2, 3, [2, 2]), (None, 5, [5])])
def test_batches(tmp_path, batch, n, runs):
    backend = OnnxBackend(dark_line_model(tmp_path / "m.onnx", batch=batch))
    counting = backend.session = _CountingSession(backend.session)
    frames = _frames(n)
    masks = backend.predict(frames)
    assert counting.batches == runs and len(masks) == n
    np.testing.assert_allclose(np.stack(masks), dark_line_reference(frames), rtol=0, atol=ATOL)
    assert backend.predict(frames[:0]) == []


def test_session_is_created_once(tmp_path, monkeypatch):
    created = []
    real = onnxruntime.InferenceSession

    def counting(*args, **kwargs):
        created.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting)
    backend = OnnxBackend(dark_line_model(tmp_path / "m.onnx"))
    session = backend.session
    backend.predict(_frames(2))
    backend.predict(_frames(1))
    assert len(created) == 1 and backend.session is session


@pytest.mark.parametrize("mean", [0.0, 0.3])
def test_input_not_modified(tmp_path, mean):
    backend = OnnxBackend(dark_line_model(tmp_path / "m.onnx", mean=mean))
    frames = _frames()
    before = frames.copy()
    backend.predict(frames)
    np.testing.assert_array_equal(frames, before)


def test_predict_checks_its_input(tmp_path):
    backend = OnnxBackend(dark_line_model(tmp_path / "model.onnx"))
    with pytest.raises(ValueError, match=r"frames must have shape \(B, 64, 64\) for model model\.onnx, got \(64, 64\).*fit_to_input"):
        backend.predict(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 64, 32\)"):
        backend.predict(np.zeros((2, 64, 32), np.float32))
    with pytest.raises(ValueError, match=r"values in \[0, 1\] without NaN, got range \[2, 2\]"):
        backend.predict(np.full((1, 64, 64), 2.0, np.float32))
    with pytest.raises(ValueError, match="without NaN"):
        backend.predict(np.full((1, 64, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="dtype int32"):
        backend.predict(np.zeros((1, 64, 64), np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        backend.predict([[[0.5]]])


def test_probabilities_outside_the_unit_interval_mean_wrong_metadata(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx", output="logits", metadata=False)
    write_metadata(path, ModelMetadata(input_size=(64, 64), n_masks=4, output="probabilities"))
    backend = OnnxBackend(path)
    with pytest.raises(ModelError, match=r"m\.onnx: metadata says output='probabilities' but .* set output='logits'"):
        backend.predict(_frames(1))


def test_describe(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx")
    backend = OnnxBackend(path, threads=1)
    description = json.loads(json.dumps(backend.describe()))
    assert description["backend"] == "onnxruntime" == backend.name
    assert description["model"] == str(path.resolve())
    assert description["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert description["metadata"] == json.loads(read_metadata(path).to_json())
    assert description["metadata_source"] == "file"
    assert description["providers"] == ["CPUExecutionProvider"] and description["threads"] == 1
    assert description["onnxruntime"] == onnxruntime.__version__


def test_a_dark_line_through_preprocess_backend_and_postprocess(tmp_path):
    # A 1 px dark line x = 40 + 0.5 y in a 96 x 128 frame; the model (64 x 64) sees it
    # letterboxed at scale 0.5; its mask 0 holds the line, the others nothing.
    backend = OnnxBackend(dark_line_model(tmp_path / "m.onnx", k=40.0, t=0.7))
    frame = np.full((96, 128), 0.8, np.float32)
    rows = np.arange(8, 88)
    frame[rows, np.rint(40 + 0.5 * rows).astype(int)] = 0.1
    x, placement = fit_to_input(frame, backend.input_size)
    (masks,) = backend.predict(x[None])
    masks = placement.clear_outside(masks)
    result = extract_dislocations(masks, settings=PostprocessSettings(threshold=backend.threshold, min_pixels=5))
    assert [d.mask_index for d in result.dislocations] == [0]
    points = placement.to_frame(result.dislocations[0].points)
    # Measured: 0.36 px off the line, ends within 1 px of rows 8 and 87.
    assert np.abs(points[:, 0] - (40 + 0.5 * points[:, 1])).max() <= 0.75
    assert points[:, 1].min() <= 10 and points[:, 1].max() >= 85


# --- model errors --------------------------------------------------------------------


def _garbage(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return path


def _text(path):
    path.write_text("this is not a model\n")
    return path


def _invalid_json(path):
    return set_raw_metadata(dark_line_model(path), "{input_size: [64, 64]")


def _unknown_key(path):
    meta = json.loads(ModelMetadata(input_size=(64, 64), n_masks=4, output="logits").to_json())
    return set_raw_metadata(dark_line_model(path), json.dumps({**meta, "colour": "grey"}))


def _wrong_size(path):
    return set_raw_metadata(
        dark_line_model(path), ModelMetadata(input_size=(32, 32), n_masks=4, output="logits").to_json()
    )


def _wrong_count(path):
    return set_raw_metadata(
        dark_line_model(path), ModelMetadata(input_size=(64, 64), n_masks=5, output="logits").to_json()
    )


def _sigmoid_called_logits(path):
    return set_raw_metadata(
        dark_line_model(path, output="probabilities"),
        ModelMetadata(input_size=(64, 64), n_masks=4, output="logits").to_json(),
    )


def _empty(path):
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (_garbage, "not an ONNX model"),
        (_text, "not an ONNX model"),
        (_empty, "not an ONNX model"),
        (wrong_rank_model, r"rank 3; tem-track needs rank 4 \(B, C, H, W\)"),
        (wrong_output_rank_model, r"output 'masks' has shape \(batch, 64, 64\), rank 3"),
        (three_channel_model, r"3 channels; .* C must be 1"),
        (dynamic_size_model, r"input size cannot be determined.* dynamic shape \(batch, 1, h, w\).*write_metadata"),
        (_invalid_json, r"invalid 'temtrack' metadata \(.*Invalid JSON.*write_metadata"),
        (_unknown_key, r"invalid 'temtrack' metadata \(colour: Extra inputs are not permitted\)"),
        (_wrong_size, r"metadata says input_size=\(32, 32\) but the graph input is \(\?, 1, 64, 64\)"),
        (_wrong_count, r"metadata says n_masks=5 but the graph output has 4 masks"),
        (_sigmoid_called_logits, r"output='logits' but the graph ends with a Sigmoid"),
    ],
)
def test_incompatible_models_raise_model_error(tmp_path, make, message):
    path = make(tmp_path / "bad_model.onnx")
    with pytest.raises(ModelError, match=message) as info:
        OnnxBackend(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.onnx does not exist"):
        OnnxBackend(tmp_path / "nowhere.onnx")
    with pytest.raises(ModelError, match="is a directory"):
        OnnxBackend(tmp_path)


def test_providers(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx")
    assert OnnxBackend(path, providers=["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match=r"provider\(s\) 'NoSuchExecutionProvider' not available .*available: .*CPUExecutionProvider"):
        OnnxBackend(path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(TypeError, match="list of provider names"):
        OnnxBackend(path, providers="CPUExecutionProvider")
    with pytest.raises(ValueError, match="at least one provider"):
        OnnxBackend(path, providers=[])
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        OnnxBackend(path, threads=0)


def test_a_provider_that_fails_to_start_is_an_error(tmp_path, monkeypatch):
    # onnxruntime itself only prints a warning and runs on the CPU.
    real = onnxruntime.InferenceSession

    class FellBack:
        def __init__(self, *args, **kwargs):
            self.session = real(*args, **{**kwargs, "providers": ["CPUExecutionProvider"]})

        def __getattr__(self, name):
            return getattr(self.session, name)

    monkeypatch.setattr(onnxruntime, "InferenceSession", FellBack)
    available = onnxruntime.get_available_providers()
    other = next((p for p in available if p != "CPUExecutionProvider"), None)
    if other is None:
        pytest.skip("this onnxruntime has no provider besides the CPU")
    with pytest.raises(ValueError, match=rf"provider\(s\) '{other}' could not be started .*uses CPUExecutionProvider"):
        OnnxBackend(dark_line_model(tmp_path / "m.onnx"), providers=[other, "CPUExecutionProvider"])


# --- the registry --------------------------------------------------------------------


def test_registry_names_and_unknown_name():
    assert backend_names() == ["auto", "classical", "onnxruntime", "tensorrt", "torch"]
    with pytest.raises(ValueError, match=r"unknown backend 'unet'; valid backends: auto, classical, onnxruntime, tensorrt, torch, or a model file \(\.onnx"):
        get_backend("unet")


def test_get_backend_with_a_model_path(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx")
    for spec in (str(path), path):
        backend = get_backend(spec, threads=1)
        assert isinstance(backend, OnnxBackend) and backend.path == path
    renamed = path.rename(tmp_path / "model.bin")  # any existing file is a model path
    assert isinstance(get_backend(str(renamed)), OnnxBackend)
    with pytest.raises(FileNotFoundError):
        get_backend(str(tmp_path / "missing.ONNX"))
    with pytest.raises(TypeError, match=r"unknown option\(s\) k for backend 'onnxruntime'; valid options: path, providers, threads"):
        get_backend(str(renamed), k=0.2)
    with pytest.raises(TypeError, match="path given twice"):
        get_backend(str(renamed), path=str(renamed))


def test_get_backend_by_name(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx")
    backend = get_backend("onnxruntime", path=str(path), providers=["CPUExecutionProvider"])
    assert isinstance(backend, OnnxBackend) and backend.input_size == (64, 64)
    with pytest.raises(ValueError, match="the onnxruntime backend runs a model: give --model"):
        get_backend("onnxruntime")


def test_get_backend_routes_engines_and_rejects_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="TensorRT engine models/unet.ENGINE does not exist"):
        get_backend("models/unet.ENGINE")
    with pytest.raises(ValueError, match="is a directory, not a model file"):
        get_backend(str(tmp_path))


def test_every_backend_says_its_input_size_and_threshold(tmp_path):
    classical = ClassicalBackend()
    assert classical.input_size is None and classical.threshold is None
    assert "input_size" not in classical.describe()  # class attributes, not settings
    onnx_backend = OnnxBackend(dark_line_model(tmp_path / "m.onnx", threshold=0.4))
    assert onnx_backend.input_size == (64, 64) and onnx_backend.threshold == 0.4


def test_imports_are_cheap():
    code = (
        "import sys, temtrack.sdk.backends, temtrack.sdk.modelmeta, temtrack.sdk.backends.onnx; "
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- metadata --------------------------------------------------------------------------


def test_metadata_round_trip_in_memory_and_on_disk(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx", metadata=False)
    meta = ModelMetadata(
        input_size=(64, 64), n_masks=4, output="logits", mean=0.5, std=0.2, name="u", extra={"epochs": 3, "data": ["sd1"]}
    )
    proto = onnx.load(str(path))
    written = write_metadata(proto, meta)
    assert not any(p.key == METADATA_KEY for p in proto.metadata_props)  # input not modified
    assert [p.key for p in written.metadata_props] == [METADATA_KEY]
    assert ModelMetadata.from_json(written.metadata_props[0].value) == meta

    write_metadata(path, meta)
    assert read_metadata(path) == meta
    changed = meta.model_copy(update={"threshold": 0.6})
    write_metadata(path, changed)  # replaces, keeps one key
    assert read_metadata(path) == changed
    assert [p.key for p in onnx.load(str(path)).metadata_props].count(METADATA_KEY) == 1
    assert output_op_types(path) == {"masks": "Conv"}


def test_write_metadata_checks_the_graph(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx", metadata=False)
    with pytest.raises(ModelError, match=r"m\.onnx: metadata says n_masks=3 but the graph output has 4 masks"):
        write_metadata(path, ModelMetadata(input_size=(64, 64), n_masks=3, output="logits"))
    with pytest.raises(TypeError, match="ModelMetadata"):
        write_metadata(path, {"input_size": (64, 64)})
    assert read_metadata(path) is None


def test_duplicated_metadata_is_an_error(tmp_path):
    path = dark_line_model(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    proto.metadata_props.add(key=METADATA_KEY, value=proto.metadata_props[0].value)
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="holds 2 'temtrack' metadata entries"):
        read_metadata(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "grey"}, "Extra inputs are not permitted"),
        ({"threshold": 1.0}, r"must lie in \[0, 1\)"),
        ({"std": 0.0}, "finite number > 0"),
        ({"mean": float("nan")}, "finite"),
        ({"input_size": (0, 64)}, "both >= 1"),
        ({"n_masks": 0}, "integer >= 1"),
        ({"output": "sigmoid"}, "'logits', 'probabilities', 'masks' or 'fields'"),
        ({"format_version": 2}, "not understood by this tem-track"),
        ({"extra": {"f": object()}}, "JSON-serialisable"),
    ],
)
def test_metadata_schema(change, message):
    fields = {"input_size": (64, 64), "n_masks": 4, "output": "logits", **change}
    with pytest.raises(ValueError, match=message):
        ModelMetadata(**fields)


def test_metadata_is_frozen_with_defaults():
    meta = ModelMetadata(input_size=(512, 512), n_masks=20, output="probabilities")
    assert (meta.format_version, meta.channels, meta.mean, meta.std, meta.threshold) == (1, 1, 0.0, 1.0, 0.5)
    with pytest.raises(ValueError):
        meta.threshold = 0.3
    assert json.loads(meta.to_json())["input_size"] == [512, 512]


def test_probabilities_a_rounding_error_outside_0_1_are_clipped():
    from temtrack.sdk.backends.contract import checked_probabilities

    y = np.array([[0.0, 0.5, np.float32(1.0000001)]], np.float32)
    assert checked_probabilities(y, source="m") is y and y.max() == 1.0  # clipped in place
    for bad in (1.01, -0.01, np.nan):
        with pytest.raises(ModelError, match=r"m returned values in \[.*\], not probabilities"):
            checked_probabilities(np.array([0.2, bad], np.float32), source="m")
