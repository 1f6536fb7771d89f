"""The ``auto`` backend: what it picks on this machine, and that every skip is announced.

This machine (and CI) has onnxruntime's CPU build, no GPU and no TensorRT, so ``auto``
must land on onnxruntime's CPU provider and say why each faster option was skipped.
A GPU provider that onnxruntime lists but cannot start (no driver) is simulated by
listing ``CUDAExecutionProvider`` as available: onnxruntime then runs on the CPU, which
the backend detects, and ``auto`` must fall back, announcing it.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from _onnx_models import dark_line_model

from temtrack.sdk.analyzer import Analyzer
from temtrack.sdk.backends import get_backend
from temtrack.sdk.backends.auto import choose
from temtrack.sdk.backends.onnx import OnnxBackend
from temtrack.sdk.backends.gpu import tensorrt_available

NO_GPU_ORT = not set(onnxruntime.get_available_providers()) & {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
needs_cpu_only = pytest.mark.skipif(not NO_GPU_ORT, reason="this onnxruntime has GPU providers")


@pytest.fixture
def model(tmp_path):
    return dark_line_model(tmp_path / "dark.onnx", size=(64, 64), n_masks=3)


@needs_cpu_only
def test_onnx_model_runs_on_the_cpu_and_says_why(model):
    choice = choose(model)
    assert isinstance(choice.backend, OnnxBackend) and choice.backend.providers == ["CPUExecutionProvider"]
    assert choice.label == "onnxruntime [CPUExecutionProvider]"
    text = choice.announcement()
    assert text.startswith("backend auto: onnxruntime [CPUExecutionProvider] (not used: ")
    assert "tensorrt engine (no dark.engine beside the model)" in text
    assert "TensorrtExecutionProvider (not in this onnxruntime; pip install 'tem-track[gpu]')" in text
    assert "CUDAExecutionProvider (not in this onnxruntime" in text


def test_an_engine_beside_the_model_that_cannot_run_here_is_named(model):
    if tensorrt_available() is None:
        pytest.skip("TensorRT runs here")
    model.with_suffix(".engine").write_bytes(b"not an engine")
    text = choose(model).announcement()
    assert f"tensorrt engine dark.engine ({tensorrt_available()})" in text


@needs_cpu_only
def test_a_gpu_provider_that_does_not_start_is_a_announced_fallback(model, monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    choice = choose(model)
    assert choice.backend.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider (could not be started: no GPU or driver)" in choice.announcement()
    # Asked for explicitly, the same provider is an error, not a fallback.
    with pytest.raises(ValueError, match="could not be started"):
        OnnxBackend(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_auto_predicts_like_the_onnx_backend(model):
    frames = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    auto = get_backend("auto", path=str(model))
    assert auto.auto_choice.backend is auto
    np.testing.assert_array_equal(np.stack(auto.predict(frames)), np.stack(OnnxBackend(model).predict(frames)))


def test_without_a_model_the_fallback_is_used():
    choice = choose(None)
    assert choice.label == "classical" and choice.backend.name == "classical"
    assert choice.skipped == ["no model file given"]


def test_analyzer_defaults_to_auto_for_a_model_and_announces_it(model):
    analyzer = Analyzer(model)
    assert analyzer.selection.startswith("backend auto: onnxruntime [")
    assert analyzer.describe()["selection"] == analyzer.selection
    explicit = Analyzer(model, providers=["CPUExecutionProvider"])
    assert explicit.selection is None and explicit.backend.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="providers pick the onnxruntime backend"):
        Analyzer(model, backend="auto", providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"runs on the 'onnxruntime' backend, not 'tensorrt'"):
        Analyzer(model, backend="tensorrt")


def test_checkpoint_runs_on_torch(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("segmentation_models_pytorch")
    import torch

    from temtrack.training.checkpoint import save_checkpoint
    from temtrack.training.model import ModelConfig, build_model

    config = ModelConfig(encoder="resnet18", n_masks=4, decoder_channels=(32, 16, 16, 8, 8))
    path = save_checkpoint(tmp_path / "m.pt", model=build_model(config), config={"model": config.model_dump()}, step=0)
    choice = choose(path)
    assert choice.backend.name == "torch"
    if not torch.cuda.is_available():
        assert choice.label == "torch on cpu (fp32)"
        assert any("tem-track export" in reason for reason in choice.skipped)
