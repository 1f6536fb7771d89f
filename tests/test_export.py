"""Export of a checkpoint to ONNX: graph, metadata, parity per backend, errors, CLI.

The checkpoint is a small randomly initialised U-Net++ (resnet18 encoder, N = 8) whose
segmentation head is scaled up so its masks are decisive (logits of a few units, as a
trained model's are), not a sea of probabilities near the threshold. Parity is checked
on generator frames against the network's fp32 PyTorch probabilities, with the
tolerances of :data:`temtrack.export.parity.TOLERANCES`: one base class, one subclass
per backend. GPU subclasses are opt-in (``--run-gpu``) and skip with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export needs torch (the [export] or [dev] extra)")
pytest.importorskip("segmentation_models_pytorch", reason="export needs segmentation-models-pytorch")

import onnxruntime  # noqa: E402

from temtrack.export import onnx as export_module  # noqa: E402
from temtrack.export.onnx import ExportError, export_onnx, half_network, reference_probabilities  # noqa: E402
from temtrack.export.parity import TOLERANCES, ParityError, Tolerance, compare, parity_frames  # noqa: E402
from temtrack.sdk.backends.onnx import OnnxBackend  # noqa: E402
from temtrack.sdk.modelmeta import file_sha256, read_metadata  # noqa: E402
from temtrack.training.checkpoint import load_model, save_checkpoint  # noqa: E402
from temtrack.training.torch_backend import TorchBackend  # noqa: E402
from temtrack.training.model import ModelConfig, build_model  # noqa: E402

SIZE = (64, 96)
SMALL = {"encoder": "resnet18", "n_masks": 8, "decoder_channels": [32, 16, 16, 8, 8]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(**SMALL)
    model = build_model(config)
    with torch.no_grad():
        for parameter in model.segmentation_head.parameters():
            parameter.mul_(40.0)
    train_config = {"model": config.model_dump(), "image_size": 64, "data": {"presets": {"sd1": 1.0}}}
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(path, model=model, config=train_config, step=123, best=0.25, metrics={"length_score": 0.25})


@pytest.fixture(scope="module")
def frames():
    return parity_frames(SIZE, n=3, seed=5)


@pytest.fixture(scope="module")
def reference(checkpoint, frames):
    net, _, _ = load_model(checkpoint)
    return reference_probabilities(net, frames)


def test_reference_masks_are_decisive(reference):
    # The fixture's premise: few pixels near the threshold, some on each side.
    assert np.mean(np.abs(reference - 0.5) < 0.01) < 0.01
    assert 0.01 < np.mean(reference > 0.5) < 0.99


# --- parity, one subclass per backend --------------------------------------------------------


class ParityCase:
    """Export with ``options``, run the backend of :meth:`masks`, compare with the reference."""

    options: dict = {}
    precision, output = "fp32", "probabilities"

    @pytest.fixture(scope="class")
    @classmethod
    def exported(cls, checkpoint, tmp_path_factory):
        out = tmp_path_factory.mktemp("onnx") / "model.onnx"
        return export_onnx(checkpoint, out, input_size=SIZE, **cls.options)

    def masks(self, exported, checkpoint, frames) -> np.ndarray:
        raise NotImplementedError

    def test_parity(self, exported, checkpoint, frames, reference):
        got = self.masks(exported, checkpoint, frames)
        tolerance = TOLERANCES[self.precision, self.output]
        report = compare(reference, got, threshold=0.5, tolerance=tolerance)
        assert report.passed, report.summary()
        if self.output == "masks":
            assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
        else:
            assert got.dtype == np.float32

    def test_batch_of_one_equals_batch_of_three(self, exported, checkpoint, frames):
        together = self.masks(exported, checkpoint, frames)
        alone = np.concatenate([self.masks(exported, checkpoint, frames[i : i + 1]) for i in range(len(frames))])
        # float32 sums in another order per batch size (torch 2.14's CPU convolutions
        # differ by up to 1.3e-5); a frame leaking into its batch neighbours differs by
        # orders of magnitude more.
        np.testing.assert_allclose(alone.astype(np.float32), together.astype(np.float32), rtol=0, atol=1e-4)


class OnnxRuntimeCase(ParityCase):
    providers = ["CPUExecutionProvider"]

    def masks(self, exported, checkpoint, frames):
        available = onnxruntime.get_available_providers()
        if not set(self.providers) <= set(available):
            pytest.skip(f"onnxruntime here has {available}, not {self.providers}")
        return np.stack(OnnxBackend(exported.path, providers=self.providers).predict(frames))


class TestOnnxRuntimeFp32(OnnxRuntimeCase):
    pass


class TestOnnxRuntimeFp32Masks(OnnxRuntimeCase):
    options = {"output": "masks"}
    output = "masks"


class TestOnnxRuntimeFp16(OnnxRuntimeCase):
    options = {"fp16": True}
    precision = "fp16"


class TestOnnxRuntimeFp16Weights(OnnxRuntimeCase):
    options = {"fp16_weights": True}
    precision = "fp16-weights"


class TestOnnxRuntimeFp16WeightsMasks(OnnxRuntimeCase):
    options = {"fp16_weights": True, "output": "masks"}
    precision, output = "fp16-weights", "masks"


class TestTorchBackend(ParityCase):
    def masks(self, exported, checkpoint, frames):
        return TorchBackend.from_checkpoint(checkpoint, device="cpu", precision="fp32").probabilities(frames)


class TestTorchBackendMasks(TestTorchBackend):
    output = "masks"

    def masks(self, exported, checkpoint, frames):
        backend = TorchBackend.from_checkpoint(checkpoint, device="cpu", precision="fp32", output="masks")
        assert backend.threshold is None
        return backend.probabilities(frames)


@pytest.mark.gpu
class TestOnnxRuntimeCuda(TestOnnxRuntimeFp32):
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.gpu
class TestOnnxRuntimeTensorrtProvider(TestOnnxRuntimeFp16):
    providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.gpu
class TestTorchCudaFp16(TestTorchBackend):
    precision = "fp16"

    def masks(self, exported, checkpoint, frames):
        if not torch.cuda.is_available():
            pytest.skip("torch sees no CUDA GPU")
        return TorchBackend.from_checkpoint(checkpoint, device="cuda", precision="fp16").probabilities(frames)


@pytest.mark.gpu
class TestTensorrtEngine(ParityCase):
    precision = "fp16"

    def masks(self, exported, checkpoint, frames):
        pytest.importorskip("tensorrt", reason="TensorRT is not installed")
        from temtrack.export.tensorrt import build_engine
        from temtrack.sdk.backends.tensorrt import TensorRTBackend

        engine = exported.path.with_suffix(".engine")
        if not engine.exists():
            build_engine(exported.path, engine)
        return np.stack(TensorRTBackend(engine).predict(frames))


# --- the graph and its metadata ----------------------------------------------------------------


def test_graph_has_dynamic_batch_and_fixed_size(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "m.onnx", input_size=SIZE)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "image" and isinstance(inp.shape[0], str) and inp.shape[1:] == [1, *SIZE]
    assert out.name == "masks" and isinstance(out.shape[0], str) and out.shape[1:] == [8, *SIZE]
    assert out.type == "tensor(float)"
    five = session.run(None, {"image": np.zeros((5, 1, *SIZE), np.float32)})[0]
    assert five.shape == (5, 8, *SIZE) and 0 <= five.min() and five.max() <= 1  # the sigmoid is in the graph


def test_masks_output_is_uint8_and_needs_no_threshold(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "m.onnx", input_size=SIZE, output="masks", threshold=0.7)
    backend = OnnxBackend(result.path)
    assert backend.threshold is None and backend.metadata.output == "masks" and backend.metadata.threshold == 0.7
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].type == "tensor(uint8)"


def test_metadata_records_what_the_runtime_and_people_need(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "m.onnx", input_size=SIZE, reports={"sd1": {"length_score_mean": 0.5}})
    stored = read_metadata(result.path)
    assert stored == result.metadata
    assert stored.input_size == SIZE and stored.n_masks == 8 and stored.output == "probabilities"
    assert (stored.mean, stored.std, stored.threshold) == (0.0, 1.0, 0.5)
    extra = stored.extra
    assert extra["encoder"] == "resnet18" and extra["decoder_channels"] == SMALL["decoder_channels"]
    assert extra["precision"] == "fp32" and extra["opset"] == 17
    assert extra["checkpoint"] == {"file": "model.pt", "sha256": file_sha256(checkpoint), "step": 123, "best_length_score": 0.25}
    assert extra["training_config"]["image_size"] == 64 and extra["validation"] == {"length_score": 0.25}
    assert len(extra["data_sha256"]) == 64 and extra["reports"] == {"sd1": {"length_score_mean": 0.5}}
    assert extra["parity"]["passed"] and extra["parity"]["max_abs"] <= 1e-4
    from temtrack import __version__

    assert extra["tem_track_version"] == __version__
    assert result.sha256 == file_sha256(result.path)


def test_data_hash_follows_the_data_config(checkpoint, tmp_path):
    net, config, state = load_model(checkpoint)
    other = save_checkpoint(
        tmp_path / "other.pt", model=net, config={**state["config"], "data": {"presets": {"sd2": 1.0}}}, step=1
    )
    first = export_onnx(checkpoint, tmp_path / "a.onnx", input_size=SIZE).metadata.extra["data_sha256"]
    second = export_onnx(other, tmp_path / "b.onnx", input_size=SIZE).metadata.extra["data_sha256"]
    assert first != second


def test_default_input_size_is_the_training_size(checkpoint, tmp_path):
    assert export_onnx(checkpoint, tmp_path / "m.onnx").metadata.input_size == (64, 64)


def test_fp16_graph_is_smaller_and_keeps_float32_io(checkpoint, tmp_path):
    full = export_onnx(checkpoint, tmp_path / "a.onnx", input_size=SIZE)
    half = export_onnx(checkpoint, tmp_path / "b.onnx", input_size=SIZE, fp16=True)
    assert half.path.stat().st_size < 0.6 * full.path.stat().st_size
    session = onnxruntime.InferenceSession(str(half.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    assert half.metadata.extra["precision"] == "fp16"


def test_half_network_keeps_the_first_convolution_in_fp32(checkpoint):
    net, _, _ = load_model(checkpoint)
    half = half_network(net)
    first = half.encoder.conv1
    assert first.conv.weight.dtype == torch.float32 and half.encoder.layer1[0].conv1.weight.dtype == torch.float16
    assert next(net.parameters()).dtype == torch.float32  # the input network is not modified


# --- refusals ------------------------------------------------------------------------------------


def test_failed_parity_writes_nothing(checkpoint, tmp_path, monkeypatch):
    real = export_module.reference_probabilities
    monkeypatch.setattr(export_module, "reference_probabilities", lambda net, frames, **options: real(net, frames, **options) * 0.9)
    out = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match=r"the ONNX export m.onnx does not match the PyTorch network: .*FAILED"):
        export_onnx(checkpoint, out, input_size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_needs_overwrite(checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(checkpoint, out, input_size=SIZE)
    assert out.read_text() == "keep me"
    export_onnx(checkpoint, out, input_size=SIZE, overwrite=True)
    assert read_metadata(out).n_masks == 8


@pytest.mark.parametrize(
    "options, message",
    [
        ({"input_size": (60, 64)}, r"input_size must be \(H, W\), both positive multiples of 32, got \(60, 64\)"),
        ({"output": "logits"}, "output must be 'probabilities' or 'masks'"),
        ({"threshold": 1.0}, r"threshold must lie in \(0, 1\)"),
        ({"opset": 11}, "opset must be an integer >= 13"),
    ],
)
def test_bad_settings_are_named(checkpoint, tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        export_onnx(checkpoint, tmp_path / "m.onnx", **options)
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_onnx(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="out must be an .onnx file"):
        export_onnx(checkpoint, tmp_path / "m.engine")


# --- compare ---------------------------------------------------------------------------------


def test_compare_known_answers():
    reference = np.full((1, 2, 10, 10), 0.2)
    reference[0, 0, :5] = 0.8
    candidate = reference.copy()
    candidate[0, 0, 0, 0] = 0.3  # one pixel of 200 flips and moves by 0.5
    report = compare(reference, candidate, threshold=0.5, tolerance=Tolerance(max_abs=0.6, min_identical=0.99))
    assert report.max_abs == pytest.approx(0.5) and report.identical == pytest.approx(199 / 200) and report.passed
    assert not compare(reference, candidate, threshold=0.5, tolerance=Tolerance(0.4, None)).passed
    assert not compare(reference, candidate, threshold=0.5, tolerance=Tolerance(None, 0.999)).passed
    masks = (candidate > 0.5).astype(np.uint8)
    report = compare(reference, masks, threshold=0.5, tolerance=TOLERANCES["fp32", "masks"])
    assert report.max_abs is None and report.identical == pytest.approx(199 / 200) and not report.passed
    with pytest.raises(ValueError, match="differ in shape"):
        compare(reference, candidate[:, :1], threshold=0.5, tolerance=Tolerance(1, None))


# --- command line ---------------------------------------------------------------------------------


def test_cli_export_with_a_report(checkpoint, tmp_path, capsys):
    from temtrack.cli import main

    report = tmp_path / "sd1_report.json"
    report.write_text(json.dumps({"summary": {"length_score_mean": 0.42}}))
    out = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), "--input-size", "64", "96", "--masks",
                 "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "passed" in printed and f"wrote {out}" in printed and "input 64x96, 8 masks" in printed
    metadata = read_metadata(out)
    assert metadata.output == "masks" and metadata.extra["reports"] == {"sd1_report": {"length_score_mean": 0.42}}
    assert main(["export", str(checkpoint), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


# --- fp16 weight storage --------------------------------------------------------------------


def test_fp16_weight_storage_halves_the_file_and_keeps_fp32_arithmetic(checkpoint, tmp_path):
    import onnx

    fp32 = export_onnx(checkpoint, tmp_path / "fp32.onnx", input_size=SIZE)
    half = export_onnx(checkpoint, tmp_path / "half.onnx", input_size=SIZE, fp16_weights=True, output="masks")
    assert half.metadata.extra["precision"] == "fp16-weights"
    assert 0.45 < half.path.stat().st_size / fp32.path.stat().st_size < 0.55
    graph = onnx.load(str(half.path)).graph
    by_type = {}
    for init in graph.initializer:
        by_type.setdefault(init.data_type, []).append(init)
    weights = by_type[onnx.TensorProto.FLOAT16]
    assert len(weights) > 10 and all(int(np.prod(w.dims)) >= 64 for w in weights)
    # The logit cut of the masks graph is a scalar: kept exact, in float32.
    assert all(int(np.prod(w.dims)) < 64 for w in by_type.get(onnx.TensorProto.FLOAT, []))
    # Every fp16 weight is cast back to float32 before use: fp32 arithmetic.
    casts = {n.input[0]: n for n in graph.node if n.op_type == "Cast"}
    assert all(casts[w.name].attribute[0].i == onnx.TensorProto.FLOAT for w in weights)


def test_fp16_and_fp16_weights_exclude_each_other(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="exclude each other"):
        export_onnx(checkpoint, tmp_path / "m.onnx", input_size=SIZE, fp16=True, fp16_weights=True)


def test_quantile_tolerance_ignores_a_few_outliers_but_not_many():
    reference = np.full((1, 1, 100, 100), 0.9)
    candidate = reference.copy()
    candidate.flat[:1] = 0.7  # one pixel of 10 000 moves by 0.2, still above the threshold
    tolerance = Tolerance(max_abs=0.02, min_identical=0.999, quantile=0.9999)
    report = compare(reference, candidate, threshold=0.5, tolerance=tolerance)
    assert report.passed and report.max_abs == pytest.approx(0.2) and report.quantile_abs < 0.02
    assert "99.99th-percentile" in report.summary()
    candidate.flat[:5] = 0.7  # 5 in 10 000: beyond the 99.99th percentile
    assert not compare(reference, candidate, threshold=0.5, tolerance=tolerance).passed
    assert not compare(reference, candidate, threshold=0.5, tolerance=Tolerance(0.02, 0.999)).passed


def test_export_names_the_model(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "m.onnx", input_size=SIZE, name="lab-model", version="v2",
                         description="fine-tuned on our steel")
    assert (result.metadata.name, result.metadata.version, result.metadata.description) == (
        "lab-model", "v2", "fine-tuned on our steel")


def test_fine_tuning_weights_load_back_as_the_fp16_rounded_network(checkpoint, tmp_path):
    from temtrack.export.bundle import fine_tuning_weights

    out = fine_tuning_weights(checkpoint, tmp_path / "weights.pt")
    assert out.stat().st_size < 0.6 * checkpoint.stat().st_size
    original, config, _ = load_model(checkpoint)
    loaded, loaded_config, state = load_model(out)
    assert loaded_config == config and state["step"] == 123 and "optimizer" not in state
    for (name, a), b in zip(original.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, name  # back in float32 (fp16 only on disk)
        if a.is_floating_point():
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)
