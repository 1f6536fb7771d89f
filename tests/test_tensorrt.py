"""TensorRT engines: the sidecar, the GPU check, the backend's host side, and the build.

Most tests run anywhere: the sidecar and the GPU check are pure Python, and the
backend's batching, normalisation, copies and clean-up run against a fake ``tensorrt``
and a fake CUDA runtime that compute the dark-line model (tests/_onnx_models.py) in
numpy on host memory. The tests that build and run a real engine need an NVIDIA GPU
with tensorrt and cuda-python: opt in with ``--run-gpu``.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from _onnx_models import dark_line_model, dark_line_reference
from temtrack.sdk.backends import gpu as nvidia
from temtrack.sdk.backends.gpu import tensorrt_available
from temtrack.sdk.backends.tensorrt import TensorRTBackend
from temtrack.sdk.enginemeta import EngineInfo, check_engine_gpu, read_engine_info, sidecar_path
from temtrack.sdk.modelmeta import ModelError, ModelMetadata, file_sha256

INSTALL = "pip install 'tem-track[gpu]'"
SIZE = (16, 24)
N_MASKS = 3


def _engine(tmp_path, *, name="model.engine", content=b"not really an engine", output="logits", mean=0.0, std=1.0,
            profile=(1, 8, 32), gpu="NVIDIA H100 80GB HBM3", capability="9.0", version="10.3.0") -> EngineInfo:
    """An engine file with a valid sidecar; returns what the sidecar says."""
    path = tmp_path / name
    path.write_bytes(content)
    info = EngineInfo(
        path=path,
        metadata=ModelMetadata(input_size=SIZE, n_masks=N_MASKS, output=output, mean=mean, std=std, name="dark-line"),
        tensorrt_version=version,
        gpu_name=gpu,
        compute_capability=capability,
        precision="fp16",
        min_batch=profile[0],
        opt_batch=profile[1],
        max_batch=profile[2],
        workspace_gib=4.0,
        onnx_file="model.onnx",
        onnx_sha256="a" * 64,
        engine_sha256=file_sha256(path),
        tem_track_version="0.1.0",
        created="2024-05-01T12:00:00+00:00",
    )
    sidecar_path(path).write_text(info.to_json(), encoding="utf-8")
    return info


def _edit_sidecar(info: EngineInfo, edit) -> None:
    path = sidecar_path(info.path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --- the sidecar ---------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path):
    info = _engine(tmp_path)
    assert sidecar_path(info.path) == tmp_path / "model.engine.json"
    back = read_engine_info(info.path)
    assert back == info
    assert back.sm == "sm_90"
    assert json.loads(info.to_json()) == info.to_dict()
    assert info.to_dict()["metadata"]["input_size"] == list(SIZE)


def test_missing_engine(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_engine_info(tmp_path / "absent.engine")


def test_engine_path_type():
    with pytest.raises(TypeError, match="engine_path must be"):
        read_engine_info(3)


def test_missing_sidecar(tmp_path):
    info = _engine(tmp_path)
    sidecar_path(info.path).unlink()
    with pytest.raises(ModelError, match=r"sidecar model\.engine\.json is missing.*build_engine"):
        read_engine_info(info.path)


def test_sidecar_bad_json(tmp_path):
    info = _engine(tmp_path)
    sidecar_path(info.path).write_text('{"format_version": 1,')
    with pytest.raises(ModelError, match=r"not valid JSON .*line 1"):
        read_engine_info(info.path)


def test_sidecar_not_an_object(tmp_path):
    info = _engine(tmp_path)
    sidecar_path(info.path).write_text("[1, 2]")
    with pytest.raises(ModelError, match="must hold a JSON object, got list"):
        read_engine_info(info.path)


@pytest.mark.parametrize(
    "keys",
    [("metadata",), ("tensorrt",), ("tensorrt", "gpu"), ("tensorrt", "compute_capability"),
     ("tensorrt", "profile", "max_batch"), ("metadata", "n_masks"), ("tensorrt", "engine_sha256")],
)
def test_sidecar_missing_key(tmp_path, keys):
    info = _engine(tmp_path)

    def drop(data):
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    _edit_sidecar(info, drop)
    location = re.escape(".".join(keys))
    with pytest.raises(ModelError, match=rf"invalid engine sidecar \({location}: Field required"):
        read_engine_info(info.path)


@pytest.mark.parametrize(
    "keys, value, message",
    [
        (("tensorrt", "compute_capability"), "nine", "major.minor"),
        (("tensorrt", "precision"), "int8", "precision"),
        (("tensorrt", "profile"), {"min_batch": 8, "opt_batch": 4, "max_batch": 32}, "min_batch <= opt_batch"),
        (("tensorrt", "onnx_sha256"), "xyz", "64 lowercase hex"),
        (("tensorrt", "surprise"), 1, "surprise: Extra inputs"),
        (("metadata", "std"), 0.0, "metadata.std"),
        (("format_version",), 2, "format_version 2 is not understood"),
    ],
)
def test_sidecar_invalid_value(tmp_path, keys, value, message):
    info = _engine(tmp_path)

    def put(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    _edit_sidecar(info, put)
    with pytest.raises(ModelError, match=message):
        read_engine_info(info.path)


def test_sidecar_of_another_engine(tmp_path):
    info = _engine(tmp_path)
    info.path.write_bytes(b"a rebuilt engine")
    with pytest.raises(ModelError, match="describes another engine"):
        read_engine_info(info.path)
    assert read_engine_info(info.path, check_hash=False).engine_sha256 == info.engine_sha256


# --- the GPU check -------------------------------------------------------------------


def test_check_engine_gpu_same_machine(tmp_path):
    info = _engine(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_engine_gpu(info, gpu_name=info.gpu_name, compute_capability="9.0", trt_version="10.3.0") is None


def test_check_engine_gpu_other_architecture(tmp_path):
    info = _engine(tmp_path)
    with pytest.raises(ModelError) as caught:
        check_engine_gpu(info, gpu_name="NVIDIA GeForce RTX 3090", compute_capability="8.6", trt_version="10.3.0")
    message = str(caught.value)
    assert "engine built for NVIDIA H100 80GB HBM3 (sm_90) with TensorRT 10.3.0" in message
    assert "this machine has NVIDIA GeForce RTX 3090 (sm_86), TensorRT 10.3.0" in message
    assert "tem-track export CHECKPOINT --out model.onnx --tensorrt model.engine" in message
    assert "--backend onnxruntime" in message


def test_check_engine_gpu_other_tensorrt(tmp_path):
    info = _engine(tmp_path)
    with pytest.raises(ModelError, match=r"\(sm_90\) with TensorRT 10\.3\.0; this machine has .*\(sm_90\), TensorRT 10\.8\.0"):
        check_engine_gpu(info, gpu_name=info.gpu_name, compute_capability="9.0", trt_version="10.8.0")


def test_check_engine_gpu_other_model_same_architecture_warns(tmp_path):
    info = _engine(tmp_path)
    with pytest.warns(UserWarning, match="built on NVIDIA H100 80GB HBM3, running on NVIDIA H200"):
        check_engine_gpu(info, gpu_name="NVIDIA H200", compute_capability="9.0", trt_version="10.3.0")


def test_check_engine_gpu_arguments(tmp_path):
    info = _engine(tmp_path)
    with pytest.raises(ValueError, match="compute_capability must be 'major.minor'"):
        check_engine_gpu(info, gpu_name="x", compute_capability="90", trt_version="10.3.0")
    with pytest.raises(TypeError, match="info must be an EngineInfo"):
        check_engine_gpu(info.to_dict(), gpu_name="x", compute_capability="9.0", trt_version="10.3.0")


# --- missing packages ----------------------------------------------------------------


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def no_cuda_python(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)


def test_backend_without_tensorrt(tmp_path, no_tensorrt):
    info = _engine(tmp_path)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tem-track\[gpu\]'.*NVIDIA GPU") as caught:
        TensorRTBackend(info.path)
    assert caught.value.name == "tensorrt"


def test_backend_reads_sidecar_before_tensorrt(tmp_path, no_tensorrt):
    info = _engine(tmp_path)
    sidecar_path(info.path).unlink()
    with pytest.raises(ModelError, match="is missing"):
        TensorRTBackend(info.path)


def test_old_tensorrt_is_refused(monkeypatch):
    old = ModuleType("tensorrt")
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(ImportError, match="needs TensorRT >= 10, found 8.6.1"):
        nvidia.import_tensorrt()
    assert "needs TensorRT >= 10" in tensorrt_available()


def test_import_cudart_without_cuda_python(no_cuda_python):
    with pytest.raises(ModuleNotFoundError, match=r"cuda-python .*pip install 'tem-track\[gpu\]'"):
        nvidia.import_cudart()


def test_backend_arguments(tmp_path):
    with pytest.raises(TypeError, match="path must be"):
        TensorRTBackend(None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TensorRTBackend(tmp_path / "absent.engine")
    info = _engine(tmp_path)
    with pytest.raises(ValueError, match="device must be a CUDA device index"):
        TensorRTBackend(info.path, device=-1)
    with pytest.raises(TypeError, match="device must be a CUDA device index"):
        TensorRTBackend(info.path, device="cuda:0")


def test_tensorrt_available_without_tensorrt(no_tensorrt):
    reason = tensorrt_available()
    assert isinstance(reason, str)
    assert "tensorrt" in reason and INSTALL in reason


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_available_here():
    reason = tensorrt_available()
    assert isinstance(reason, str) and "tensorrt is not usable" in reason


class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def _device_counter(result):
    return SimpleNamespace(
        cudaError_t=_Err,
        cudaGetDeviceCount=lambda: result,
        cudaGetErrorString=lambda err: (_Err.cudaSuccess, b"no CUDA-capable device is detected"),
    )


@pytest.mark.parametrize(
    "result, expected",
    [
        ((_Err.cudaErrorNoDevice, 0), "no usable CUDA device: CUDA error while counting CUDA devices: cudaErrorNoDevice"),
        ((_Err.cudaSuccess, 0), "no CUDA device 0 (this machine has 0)"),
        ((_Err.cudaSuccess, 1), None),
    ],
)
def test_tensorrt_available_device(monkeypatch, result, expected):
    monkeypatch.setattr(nvidia, "import_tensorrt", lambda: SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(nvidia, "import_cudart", lambda: _device_counter(result))
    reason = tensorrt_available()
    if expected is None:
        assert reason is None
    else:
        assert reason.startswith(expected)


def test_imports_stay_light():
    code = (
        "import sys, temtrack.sdk.backends.tensorrt, temtrack.export.tensorrt; "
        "heavy = sorted(m for m in ('tensorrt', 'cuda', 'torch', 'onnxruntime') if m in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- build_engine without TensorRT ---------------------------------------------------


@pytest.fixture
def onnx_model(tmp_path):
    return dark_line_model(tmp_path / "model.onnx", size=(32, 32), n_masks=2, output="probabilities")


def test_build_engine_without_tensorrt(tmp_path, onnx_model, no_tensorrt):
    from temtrack.export.tensorrt import build_engine

    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tem-track\[gpu\]'.*NVIDIA GPU"):
        build_engine(onnx_model, tmp_path / "model.engine")
    assert not (tmp_path / "model.engine").exists()
    assert not (tmp_path / "model.engine.json").exists()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_batch": 0}, ValueError, "max_batch must be >= 1"),
        ({"max_batch": 4, "opt_batch": 8}, ValueError, r"opt_batch must lie in 1\.\.max_batch \(4\)"),
        ({"max_batch": 4.0}, TypeError, "max_batch must be an integer"),
        ({"workspace_gib": 0}, ValueError, "workspace_gib must be a finite number > 0"),
        ({"fp16": "yes"}, TypeError, "fp16 must be True or False"),
        ({"timing_cache": 3}, TypeError, "timing_cache must be a path"),
        ({"device": -1}, ValueError, "device must be a CUDA device index"),
    ],
)
def test_build_engine_settings(tmp_path, onnx_model, no_tensorrt, kwargs, error, message):
    from temtrack.export.tensorrt import build_engine

    with pytest.raises(error, match=message):
        build_engine(onnx_model, tmp_path / "model.engine", **kwargs)


def test_build_engine_paths(tmp_path, onnx_model, no_tensorrt):
    from temtrack.export.tensorrt import build_engine

    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_engine(tmp_path / "absent.onnx", tmp_path / "model.engine")
    with pytest.raises(ValueError, match="must end with '.engine'"):
        build_engine(onnx_model, tmp_path / "model.trt")
    (tmp_path / "model.engine").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_engine(onnx_model, tmp_path / "model.engine")
    assert (tmp_path / "model.engine").read_bytes() == b"old"


def test_build_engine_needs_metadata(tmp_path, no_tensorrt):
    from temtrack.export.tensorrt import build_engine

    bare = dark_line_model(tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(ModelError, match="has no 'temtrack' metadata"):
        build_engine(bare, tmp_path / "model.engine")


def test_timing_cache_path():
    from temtrack.export.tensorrt import timing_cache_path

    assert timing_cache_path(Path("out/model.engine")) == Path("out/model.engine.timing-cache")


class _FakeBuilderTrt:
    """The builder half of tensorrt, recording what build_engine asks for."""

    __version__ = "10.3.0"
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(FP16="fp16")

    class ILogger:
        Severity = SimpleNamespace(ERROR="error", INTERNAL_ERROR="internal", WARNING="warning")

        def __init__(self):
            pass

    def __init__(self, *, input_shape=(-1, 1, 32, 32), output_shape=(-1, 2, 32, 32), parse_errors=(), build=b"ENGINE",
                 cache_fits=True):
        self.calls: dict = {"flags": [], "profiles": [], "caches_loaded": []}
        fake = self

        class Network:
            num_inputs = num_outputs = 1

            def get_input(self, i):
                return SimpleNamespace(name="image", shape=input_shape)

            def get_output(self, i):
                return SimpleNamespace(name="masks", shape=output_shape)

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = len(parse_errors)

            def parse_from_file(self, path):
                fake.calls["parsed"] = path
                return not parse_errors

            def get_error(self, i):
                return parse_errors[i]

        class Cache:
            def __init__(self, blob):
                self.blob = bytes(blob)

            def serialize(self):
                return self.blob + b"+timings"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls["workspace"] = (pool, size)

            def set_flag(self, flag):
                fake.calls["flags"].append(flag)

            def add_optimization_profile(self, profile):
                fake.calls["profiles"].append(profile.shapes)

            def create_timing_cache(self, blob):
                return Cache(blob)

            def set_timing_cache(self, cache, ignore_mismatch):
                ok = cache_fits or cache.blob == b""
                if ok:
                    self.cache = cache
                    fake.calls["caches_loaded"].append(cache.blob)
                return ok

            def get_timing_cache(self):
                return self.cache

        class Profile:
            shapes: dict = {}

            def set_shape(self, name, low, opt, high):
                self.shapes = {name: (low, opt, high)}

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                assert flags == 0
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if build is None:
                    self.logger.log(fake.ILogger.Severity.ERROR, "out of workspace")
                return build

        self.Builder, self.OnnxParser = Builder, Parser


@pytest.fixture
def fake_builder(monkeypatch):
    import temtrack.export.tensorrt as export_trt

    def install(**options):
        fake = _FakeBuilderTrt(**options)
        monkeypatch.setattr(export_trt, "import_tensorrt", lambda: fake)
        monkeypatch.setattr(export_trt, "import_cudart", lambda: _FakeCuda())
        monkeypatch.setattr(export_trt, "device_properties", lambda device: ("NVIDIA H100 80GB HBM3", "9.0"))
        return fake

    return export_trt, install


def test_fake_build_writes_engine_and_sidecar(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    fake = install()
    engine = tmp_path / "out" / "model.engine"
    info = export_trt.build_engine(onnx_model, engine, max_batch=16, opt_batch=4, workspace_gib=0.5)
    assert engine.read_bytes() == b"ENGINE"
    assert read_engine_info(engine) == info
    assert (info.gpu_name, info.compute_capability, info.tensorrt_version) == ("NVIDIA H100 80GB HBM3", "9.0", "10.3.0")
    assert (info.precision, info.min_batch, info.opt_batch, info.max_batch) == ("fp16", 1, 4, 16)
    assert info.onnx_sha256 == file_sha256(onnx_model) and info.onnx_file == "model.onnx"
    assert info.metadata.input_size == (32, 32) and info.metadata.n_masks == 2
    assert fake.calls["profiles"] == [{"image": ((1, 1, 32, 32), (4, 1, 32, 32), (16, 1, 32, 32))}]
    assert fake.calls["flags"] == ["fp16"] and fake.calls["workspace"] == ("workspace", 1 << 29)
    assert fake.calls["caches_loaded"] == [b""]
    cache = tmp_path / "out" / "model.engine.timing-cache"
    assert cache.read_bytes() == b"+timings"
    # A second build loads the cache it saved.
    export_trt.build_engine(onnx_model, engine, fp16=False, overwrite=True)
    assert fake.calls["caches_loaded"][-1] == b"+timings"
    assert read_engine_info(engine).precision == "fp32"


def test_fake_build_without_timing_cache(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    fake = install()
    export_trt.build_engine(onnx_model, tmp_path / "model.engine", timing_cache=False)
    assert fake.calls["caches_loaded"] == []
    assert not (tmp_path / "model.engine.timing-cache").exists()


def test_fake_build_replaces_a_foreign_timing_cache(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    fake = install(cache_fits=False)
    cache = tmp_path / "other-gpu.cache"
    cache.write_bytes(b"timings of another GPU")
    export_trt.build_engine(onnx_model, tmp_path / "model.engine", timing_cache=cache)
    assert fake.calls["caches_loaded"] == [b""]
    assert cache.read_bytes() == b"+timings"


def test_fake_build_lists_parser_errors(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    install(parse_errors=("node 3 (Resize): unsupported mode", "node 7: bad attribute"))
    with pytest.raises(export_trt.EngineBuildError, match=r"cannot parse .*\n  node 3 \(Resize\): unsupported mode\n  node 7"):
        export_trt.build_engine(onnx_model, tmp_path / "model.engine")
    assert not (tmp_path / "model.engine").exists()


def test_fake_build_failure_names_build_serialized_network(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    install(build=None)
    with pytest.raises(export_trt.EngineBuildError, match=r"(?s)build_serialized_network returned None.*out of workspace"):
        export_trt.build_engine(onnx_model, tmp_path / "model.engine")
    assert not (tmp_path / "model.engine").exists() and not (tmp_path / "model.engine.json").exists()


def test_fake_build_graph_contradicts_metadata(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    install(output_shape=(-1, 5, 32, 32))
    with pytest.raises(ModelError, match=r"graph output 'masks' has shape \(-1, 5, 32, 32\); its metadata promises \(B, 2, 32, 32\)"):
        export_trt.build_engine(onnx_model, tmp_path / "model.engine")


def test_fake_build_fixed_batch_graph(tmp_path, onnx_model, fake_builder):
    export_trt, install = fake_builder
    fake = install(input_shape=(4, 1, 32, 32), output_shape=(4, 2, 32, 32))
    info = export_trt.build_engine(onnx_model, tmp_path / "model.engine")
    assert (info.min_batch, info.opt_batch, info.max_batch) == (4, 4, 4)
    assert fake.calls["profiles"] == []  # a static graph takes no profile


# --- the backend against a fake TensorRT and CUDA runtime -----------------------------


class _FakeCuda:
    """cuda-python's runtime API on host memory: enough for TensorRTBackend."""

    cudaError_t = _Err
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, *, name=b"NVIDIA H100 80GB HBM3", major=9, minor=0):
        self.props = SimpleNamespace(name=name, major=major, minor=minor)
        self.live: dict[int, ctypes.Array] = {}
        self.streams = 0

    def _alloc(self, nbytes):
        buffer = (ctypes.c_byte * nbytes)()
        self.live[ctypes.addressof(buffer)] = buffer
        return _Err.cudaSuccess, ctypes.addressof(buffer)

    def _release(self, pointer):
        del self.live[int(pointer)]
        return (_Err.cudaSuccess,)

    cudaMalloc = cudaMallocHost = _alloc
    cudaFree = cudaFreeHost = _release

    def cudaSetDevice(self, device):
        return (_Err.cudaSuccess if device == 0 else _Err.cudaErrorNoDevice,)

    def cudaGetDeviceProperties(self, device):
        return _Err.cudaSuccess, self.props

    def cudaGetDeviceCount(self):
        return _Err.cudaSuccess, 1

    def cudaGetErrorString(self, err):
        return _Err.cudaSuccess, b"fake error"

    def cudaStreamCreate(self):
        self.streams += 1
        return _Err.cudaSuccess, 0

    def cudaStreamDestroy(self, stream):
        self.streams -= 1
        return (_Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        return (_Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        assert int(dst) in self.live and int(src) in self.live, "copy between unknown allocations"
        ctypes.memmove(int(dst), int(src), count)
        return (_Err.cudaSuccess,)


class _FakeLogger:
    WARNING = "warning"

    def __init__(self, severity):
        self.severity = severity


def _fake_tensorrt(*, size=SIZE, n_masks=N_MASKS, profile=(1, 8, 32), fixed_batch=None, out_dtype=np.float32,
                   k=20.0, t=0.5, version="10.3.0"):
    """A tensorrt module whose engine is the dark-line model (logits, or uint8 masks)."""
    height, width = size
    modes = SimpleNamespace(INPUT="in", OUTPUT="out")
    runs = []

    class Context:
        def __init__(self):
            self.addresses, self.rows = {}, None

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def set_input_shape(self, name, shape):
            ok = profile[0] <= shape[0] <= profile[2] if fixed_batch is None else shape[0] == fixed_batch
            self.rows = shape[0] if ok else None
            return ok

        def get_tensor_shape(self, name):
            return (self.rows, 1, height, width) if name == "image" else (self.rows, n_masks, height, width)

        def execute_async_v3(self, stream):
            count = self.rows * height * width
            z = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses["image"]))
            z = z.reshape(self.rows, height, width)
            logits = np.full((self.rows, n_masks, height, width), -k, np.float32)
            logits[:, 0] = k * (t - z)
            out = np.dtype(out_dtype)
            raw = (ctypes.c_byte * (logits.size * out.itemsize)).from_address(self.addresses["masks"])
            target = np.frombuffer(raw, dtype=out).reshape(logits.shape)
            target[...] = (logits > 0) if out == np.uint8 else logits
            runs.append(self.rows)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("image", "masks")[i]

        def get_tensor_mode(self, name):
            return modes.INPUT if name == "image" else modes.OUTPUT

        def get_tensor_shape(self, name):
            batch = -1 if fixed_batch is None else fixed_batch
            return (batch, 1, height, width) if name == "image" else (batch, n_masks, height, width)

        def get_tensor_dtype(self, name):
            return np.float32 if name == "image" else out_dtype

        def get_tensor_profile_shape(self, name, index):
            return [(b, 1, height, width) for b in profile]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            runs.append("deserialized")
            return Engine()

    return SimpleNamespace(
        __version__=version,
        Logger=_FakeLogger,
        Runtime=Runtime,
        TensorIOMode=modes,
        nptype=lambda dtype: dtype,
        runs=runs,
    ), runs


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install a fake CUDA runtime and a fake tensorrt; returns (cuda, make_trt)."""
    cuda = _FakeCuda()
    monkeypatch.setattr(nvidia, "import_cudart", lambda: cuda)

    def install(**options):
        module, runs = _fake_tensorrt(**options)
        monkeypatch.setattr(nvidia, "import_tensorrt", lambda: module)
        return runs

    return cuda, install


def _frames(count, *, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count, *SIZE)).astype(np.float32)


def test_fake_backend_matches_reference(tmp_path, fake_gpu):
    cuda, install = fake_gpu
    runs = install()
    info = _engine(tmp_path, mean=0.3, std=0.5)
    backend = TensorRTBackend(info.path)
    assert (backend.name, backend.input_size, backend.n_masks, backend.threshold) == ("tensorrt", SIZE, N_MASKS, 0.5)
    assert (backend.min_batch, backend.max_batch, backend.sha256) == (1, 32, info.engine_sha256)
    frames = _frames(5)
    before = frames.copy()
    masks = backend.predict(frames)
    assert len(masks) == 5 and all(m.shape == (N_MASKS, *SIZE) and m.dtype == np.float32 for m in masks)
    expected = dark_line_reference(frames, n_masks=N_MASKS, mean=0.3, std=0.5)
    assert_allclose(np.stack(masks), expected, atol=1e-5)
    np.testing.assert_array_equal(frames, before)
    assert runs == ["deserialized", 5]


def test_fake_backend_uint8_and_float64_frames(tmp_path, fake_gpu):
    _, install = fake_gpu
    install()
    backend = TensorRTBackend(_engine(tmp_path, mean=0.1, std=2.0).path)
    frames8 = (_frames(3) * 255).astype(np.uint8)
    expected = dark_line_reference(frames8 / 255.0, n_masks=N_MASKS, mean=0.1, std=2.0)
    assert_allclose(np.stack(backend.predict(frames8)), expected, atol=1e-5)
    assert_allclose(np.stack(backend.predict(frames8 / 255.0)), expected, atol=1e-5)


def test_fake_backend_chunks_large_batches(tmp_path, fake_gpu):
    _, install = fake_gpu
    runs = install()
    backend = TensorRTBackend(_engine(tmp_path).path)
    frames = _frames(40, seed=1)
    masks = backend.predict(frames)
    assert runs[1:] == [32, 8]
    assert_allclose(np.stack(masks), dark_line_reference(frames, n_masks=N_MASKS), atol=1e-5)


def test_fake_backend_fixed_batch_pads(tmp_path, fake_gpu):
    _, install = fake_gpu
    runs = install(fixed_batch=4, profile=(4, 4, 4))
    backend = TensorRTBackend(_engine(tmp_path, profile=(4, 4, 4)).path)
    frames = _frames(6, seed=2)
    masks = backend.predict(frames)
    assert runs[1:] == [4, 4] and len(masks) == 6
    assert_allclose(np.stack(masks), dark_line_reference(frames, n_masks=N_MASKS), atol=1e-5)


def test_fake_backend_returns_copies(tmp_path, fake_gpu):
    _, install = fake_gpu
    install()
    backend = TensorRTBackend(_engine(tmp_path).path)
    first = backend.predict(np.zeros((2, *SIZE), np.float32))
    kept = [m.copy() for m in first]
    backend.predict(np.ones((2, *SIZE), np.float32))
    for mask, copy in zip(first, kept):
        np.testing.assert_array_equal(mask, copy)
    assert first[0][0].min() > 0.99  # dark frame: mask 0 is foreground


def test_fake_backend_uint8_masks(tmp_path, fake_gpu):
    _, install = fake_gpu
    install(out_dtype=np.uint8)
    backend = TensorRTBackend(_engine(tmp_path, output="masks").path)
    assert backend.threshold is None
    frames = _frames(3, seed=3)
    masks = backend.predict(frames)
    assert all(m.dtype == np.uint8 for m in masks)
    expected = dark_line_reference(frames, n_masks=N_MASKS) > 0.5
    np.testing.assert_array_equal(np.stack(masks), expected.astype(np.uint8))


def test_fake_backend_rejects_bad_frames(tmp_path, fake_gpu):
    _, install = fake_gpu
    install()
    backend = TensorRTBackend(_engine(tmp_path).path)
    assert backend.predict(np.zeros((0, *SIZE), np.float32)) == []
    with pytest.raises(TypeError, match="numpy array"):
        backend.predict([[0.0]])
    with pytest.raises(ValueError, match=r"shape \(B, 16, 24\).*got \(16, 24\)"):
        backend.predict(np.zeros(SIZE, np.float32))
    bad = np.zeros((1, *SIZE), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="without NaN"):
        backend.predict(bad)
    with pytest.raises(ValueError, match="dtype int32"):
        backend.predict(np.zeros((1, *SIZE), np.int32))


def test_fake_backend_refuses_other_gpu_before_deserializing(tmp_path, fake_gpu):
    cuda, install = fake_gpu
    runs = install()
    cuda.props = SimpleNamespace(name=b"NVIDIA GeForce RTX 3090", major=8, minor=6)
    with pytest.raises(ModelError, match=r"\(sm_90\).*this machine has NVIDIA GeForce RTX 3090 \(sm_86\)"):
        TensorRTBackend(_engine(tmp_path).path)
    assert runs == []


def test_fake_backend_refuses_other_tensorrt(tmp_path, fake_gpu):
    _, install = fake_gpu
    install(version="10.8.0")
    with pytest.raises(ModelError, match="TensorRT 10.3.0; this machine has .*TensorRT 10.8.0"):
        TensorRTBackend(_engine(tmp_path).path)


def test_fake_backend_engine_contradicts_sidecar(tmp_path, fake_gpu):
    _, install = fake_gpu
    install(n_masks=5)
    with pytest.raises(ModelError, match=r"output 'masks' has shape .*sidecar promises \(B, 3, 16, 24\)"):
        TensorRTBackend(_engine(tmp_path).path)


def test_fake_backend_describe(tmp_path, fake_gpu):
    _, install = fake_gpu
    install()
    info = _engine(tmp_path)
    described = TensorRTBackend(info.path).describe()
    assert json.loads(json.dumps(described)) == described
    assert described["backend"] == "tensorrt" and described["sha256"] == info.engine_sha256
    assert described["model"] == str(info.path.resolve())
    assert described["engine"]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert described["engine"]["tensorrt"] == "10.3.0" and described["engine"]["precision"] == "fp16"
    assert described["metadata"]["n_masks"] == N_MASKS


def test_fake_backend_close_frees_everything(tmp_path, fake_gpu):
    cuda, install = fake_gpu
    install()
    with TensorRTBackend(_engine(tmp_path).path) as backend:
        assert len(cuda.live) == 4 and cuda.streams == 1  # pinned + device, input + output
        backend.predict(_frames(2))
    assert cuda.live == {} and cuda.streams == 0
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="is closed"):
        backend.predict(_frames(1))


def test_fake_backend_freed_when_collected(tmp_path, fake_gpu):
    cuda, install = fake_gpu
    install()
    backend = TensorRTBackend(_engine(tmp_path).path)
    assert cuda.live
    del backend
    import gc

    gc.collect()
    assert cuda.live == {} and cuda.streams == 0


# --- a real engine (opt-in: --run-gpu on a machine with an NVIDIA GPU) -----


@pytest.fixture
def real_tensorrt():
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (pip install 'tem-track[gpu]')")
    reason = tensorrt_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def built_engine(real_tensorrt, tmp_path):
    from temtrack.export.tensorrt import build_engine

    onnx_path = dark_line_model(tmp_path / "dark.onnx", size=(64, 64), n_masks=4, output="probabilities",
                                mean=0.2, std=0.5)
    info = build_engine(onnx_path, tmp_path / "dark.engine", fp16=True, max_batch=32, opt_batch=8)
    return onnx_path, info


@pytest.mark.gpu
def test_gpu_build_writes_engine_sidecar_and_cache(built_engine, tmp_path):
    onnx_path, info = built_engine
    assert info.path.is_file() and info.path.stat().st_size > 0
    assert read_engine_info(info.path) == info
    assert (info.precision, info.min_batch, info.opt_batch, info.max_batch) == ("fp16", 1, 8, 32)
    assert info.onnx_sha256 == file_sha256(onnx_path)
    assert info.metadata.input_size == (64, 64) and info.metadata.n_masks == 4
    assert (tmp_path / "dark.engine.timing-cache").stat().st_size > 0
    import tensorrt

    assert info.tensorrt_version == tensorrt.__version__


@pytest.mark.gpu
def test_gpu_predict_matches_reference(built_engine):
    _, info = built_engine
    frames = np.random.default_rng(7).random((5, 64, 64)).astype(np.float32)
    with TensorRTBackend(info.path) as backend:
        masks = backend.predict(frames)
    assert len(masks) == 5 and masks[0].shape == (4, 64, 64) and masks[0].dtype == np.float32
    assert_allclose(np.stack(masks), dark_line_reference(frames, n_masks=4, mean=0.2, std=0.5), atol=2e-2)


@pytest.mark.gpu
def test_gpu_batch_above_profile(built_engine):
    _, info = built_engine
    frames = np.random.default_rng(8).random((40, 64, 64)).astype(np.float32)
    with TensorRTBackend(info.path) as backend:
        assert backend.max_batch == 32
        masks = backend.predict(frames)
    assert len(masks) == 40
    assert_allclose(np.stack(masks), dark_line_reference(frames, n_masks=4, mean=0.2, std=0.5), atol=2e-2)


@pytest.mark.gpu
def test_gpu_rebuild_needs_overwrite_and_reuses_cache(built_engine, tmp_path):
    from temtrack.export.tensorrt import build_engine

    onnx_path, info = built_engine
    with pytest.raises(FileExistsError):
        build_engine(onnx_path, info.path)
    again = build_engine(onnx_path, info.path, overwrite=True)
    assert read_engine_info(info.path) == again
