"""The native TensorRT backend: a serialized engine run on an NVIDIA GPU.

An engine (``model.engine``) is built from a tem-track ONNX model by
:func:`temtrack.export.tensorrt.build_engine` and is only valid on the GPU
architecture (compute capability) and the TensorRT version it was built with. Beside
it lies a JSON sidecar, ``model.engine.json``, that says which: the ONNX model's
``"temtrack"`` metadata (:class:`~temtrack.sdk.modelmeta.ModelMetadata`) and a
``"tensorrt"`` section (TensorRT version, GPU, compute capability, precision, batch
profile, hashes of the ONNX file and of the engine). :func:`read_engine_info` reads
and validates it and :func:`check_engine_gpu` compares it with a machine, both in pure
Python, so that a mismatch is reported in words before TensorRT is asked to
deserialize an engine it cannot run.

:class:`TensorRTBackend` follows the backend protocol of
:mod:`temtrack.sdk.backends` (see :class:`~temtrack.sdk.backends.onnx.OnnxBackend`,
whose input checks it shares). tensorrt and cuda-python (``cuda.bindings.runtime``,
or ``cuda.cudart`` before cuda-python 12.6) are imported when a backend is built or
:func:`tensorrt_available` is called, never when this module is imported. Torch is
never imported here.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..modelmeta import ModelError, ModelMetadata, file_sha256

__all__ = [
    "ENGINE_SUFFIX",
    "INSTALL_HINT",
    "MIN_TENSORRT_MAJOR",
    "SIDECAR_FORMAT_VERSION",
    "EngineInfo",
    "ModelError",
    "TensorRTBackend",
    "check_engine_gpu",
    "device_properties",
    "import_cudart",
    "import_tensorrt",
    "read_engine_info",
    "sidecar_path",
    "tensorrt_available",
]

ENGINE_SUFFIX = ".engine"
MIN_TENSORRT_MAJOR = 10
SIDECAR_FORMAT_VERSION = 1
INSTALL_HINT = (
    "pip install 'tem-track[gpu]' (or: pip install tensorrt cuda-python); "
    "TensorRT needs an NVIDIA GPU with its driver"
)
_REBUILD = (
    "rebuild it with `tem-track export CHECKPOINT --out model.onnx --tensorrt model.engine` on this "
    "machine or use the .onnx with --backend onnxruntime"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CAPABILITY = re.compile(r"^\d+\.\d+$")


# --- the sidecar ---------------------------------------------------------------------


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_batch: int
    opt_batch: int
    max_batch: int

    @model_validator(mode="after")
    def _ordered(self):
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        return self


class _TensorRTSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    gpu: str
    compute_capability: str
    precision: Literal["fp32", "fp16"]
    profile: _Profile
    workspace_gib: float
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    tem_track_version: str
    created: str

    @field_validator("compute_capability")
    @classmethod
    def _capability(cls, value):
        if not _CAPABILITY.match(value):
            raise ValueError(f"must be 'major.minor', e.g. '8.6', got {value!r}")
        return value

    @field_validator("onnx_sha256", "engine_sha256")
    @classmethod
    def _sha(cls, value):
        if not _SHA256.match(value):
            raise ValueError(f"must be 64 lowercase hex digits, got {value!r}")
        return value

    @field_validator("version", "gpu")
    @classmethod
    def _not_empty(cls, value):
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class _Sidecar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int
    metadata: ModelMetadata
    tensorrt: _TensorRTSection

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, value):
        if value != SIDECAR_FORMAT_VERSION:
            raise ValueError(
                f"sidecar format_version {value} is not understood by this tem-track "
                f"(it reads version {SIDECAR_FORMAT_VERSION}); rebuild the engine"
            )
        return value


@dataclass(frozen=True)
class EngineInfo:
    """What a TensorRT engine's sidecar (``<engine>.json``) records.

    Attributes
    ----------
    path : pathlib.Path
        The engine file.
    metadata : ModelMetadata
        The ``"temtrack"`` metadata of the ONNX model it was built from.
    tensorrt_version : str
        ``tensorrt.__version__`` of the build, e.g. ``"10.3.0"``.
    gpu_name : str
        The GPU it was built on, e.g. ``"NVIDIA H100 80GB HBM3"``.
    compute_capability : str
        ``"major.minor"`` of that GPU, e.g. ``"9.0"`` (``sm_90``).
    precision : {"fp32", "fp16"}
        ``"fp16"`` when TensorRT was allowed half-precision kernels.
    min_batch, opt_batch, max_batch : int
        The optimisation profile: the batch sizes the engine accepts and the one it
        is tuned for.
    workspace_gib : float
        The builder's workspace limit in GiB.
    onnx_file : str
        Name of the ONNX file it was built from.
    onnx_sha256, engine_sha256 : str
        Hex SHA-256 of the ONNX file and of the engine file.
    tem_track_version : str
        tem-track version of the build.
    created : str
        UTC time of the build, ISO 8601.
    """

    path: Path
    metadata: ModelMetadata
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_gib: float
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    tem_track_version: str
    created: str

    @property
    def sm(self) -> str:
        """The architecture as CUDA names it, e.g. ``"sm_90"``."""
        return _sm(self.compute_capability)

    def to_dict(self) -> dict:
        """The sidecar's JSON content (what :func:`read_engine_info` reads back)."""
        return {
            "format_version": SIDECAR_FORMAT_VERSION,
            "metadata": self.metadata.model_dump(mode="json"),
            "tensorrt": {
                "version": self.tensorrt_version,
                "gpu": self.gpu_name,
                "compute_capability": self.compute_capability,
                "precision": self.precision,
                "profile": {"min_batch": self.min_batch, "opt_batch": self.opt_batch, "max_batch": self.max_batch},
                "workspace_gib": self.workspace_gib,
                "onnx_file": self.onnx_file,
                "onnx_sha256": self.onnx_sha256,
                "engine_sha256": self.engine_sha256,
                "tem_track_version": self.tem_track_version,
                "created": self.created,
            },
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """The sidecar of an engine: ``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_info(engine_path: str | os.PathLike, *, check_hash: bool = True) -> EngineInfo:
    """Read and validate the sidecar of a TensorRT engine.

    Parameters
    ----------
    engine_path : str or path-like
        The engine file; its sidecar is :func:`sidecar_path` of it.
    check_hash : bool
        Compare the engine file's SHA-256 with the one recorded, so that a sidecar
        left from an earlier build is not trusted (reads the whole engine once).

    Returns
    -------
    EngineInfo

    Raises
    ------
    TypeError
        ``engine_path`` is not a str or path-like.
    FileNotFoundError
        The engine file does not exist.
    ModelError
        The engine is a directory, the sidecar is missing, is not JSON, lacks keys or
        holds invalid values, or describes another engine file (the message names
        the file and says how to fix it).
    """
    if not isinstance(engine_path, (str, os.PathLike)):
        raise TypeError(f"engine_path must be a str or path-like (the .engine file), got {type(engine_path).__name__}")
    path = Path(engine_path)
    if not path.exists():
        raise FileNotFoundError(f"TensorRT engine {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a TensorRT engine file")
    sidecar = sidecar_path(path)
    rebuild = "rebuild the engine with temtrack.export.tensorrt.build_engine (tem-track export --tensorrt), which writes both"
    if not sidecar.is_file():
        raise ModelError(
            f"{path}: its sidecar {sidecar.name} is missing; tem-track needs it to know the model's input size, "
            f"normalisation and the GPU the engine was built for; {rebuild}"
        )
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelError(f"{sidecar}: not UTF-8 text ({exc.reason}); {rebuild}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{sidecar}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {rebuild}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{sidecar}: must hold a JSON object, got {type(data).__name__}; {rebuild}")
    try:
        parsed = _Sidecar.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ModelError(f"{sidecar}: invalid engine sidecar ({problems}); {rebuild}") from None
    trt_section = parsed.tensorrt
    info = EngineInfo(
        path=path,
        metadata=parsed.metadata,
        tensorrt_version=trt_section.version,
        gpu_name=trt_section.gpu,
        compute_capability=trt_section.compute_capability,
        precision=trt_section.precision,
        min_batch=trt_section.profile.min_batch,
        opt_batch=trt_section.profile.opt_batch,
        max_batch=trt_section.profile.max_batch,
        workspace_gib=trt_section.workspace_gib,
        onnx_file=trt_section.onnx_file,
        onnx_sha256=trt_section.onnx_sha256,
        engine_sha256=trt_section.engine_sha256,
        tem_track_version=trt_section.tem_track_version,
        created=trt_section.created,
    )
    if check_hash:
        actual = file_sha256(path)
        if actual != info.engine_sha256:
            raise ModelError(
                f"{path}: its sidecar {sidecar.name} describes another engine (SHA-256 {info.engine_sha256[:12]}..., "
                f"the file has {actual[:12]}...); the engine was replaced without its sidecar; {rebuild}"
            )
    return info


def check_engine_gpu(info: EngineInfo, *, gpu_name: str, compute_capability: str, trt_version: str) -> None:
    """Raise :class:`ModelError` unless the engine ``info`` describes can run here.

    A serialized engine holds kernels for one GPU architecture and one TensorRT
    version: another compute capability or another TensorRT version is an error. A
    different GPU of the same compute capability runs it, possibly slower (TensorRT
    chose its kernels by timing them on the build GPU), so that only warns.

    Parameters
    ----------
    info : EngineInfo
        From :func:`read_engine_info`.
    gpu_name : str
        This machine's GPU, e.g. ``"NVIDIA A100-SXM4-40GB"``.
    compute_capability : str
        Its ``"major.minor"``, e.g. ``"8.0"``.
    trt_version : str
        The installed ``tensorrt.__version__``.

    Raises
    ------
    TypeError
        ``info`` is not an :class:`EngineInfo`.
    ValueError
        ``compute_capability`` is not ``"major.minor"``.
    ModelError
        The engine was built for another compute capability or TensorRT version (the
        message says how to rebuild it or which file to use instead).

    Warns
    -----
    UserWarning
        Same compute capability, another GPU model.
    """
    if not isinstance(info, EngineInfo):
        raise TypeError(f"info must be an EngineInfo (from read_engine_info), got {type(info).__name__}")
    if not isinstance(compute_capability, str) or not _CAPABILITY.match(compute_capability):
        raise ValueError(f"compute_capability must be 'major.minor', e.g. '8.6', got {compute_capability!r}")
    if compute_capability != info.compute_capability or trt_version != info.tensorrt_version:
        raise ModelError(
            f"{info.path}: engine built for {info.gpu_name} ({info.sm}) with TensorRT {info.tensorrt_version}; "
            f"this machine has {gpu_name} ({_sm(compute_capability)}), TensorRT {trt_version}; {_REBUILD}"
            f" ({info.onnx_file})"
        )
    if gpu_name != info.gpu_name:
        warnings.warn(
            f"{info.path}: engine built on {info.gpu_name}, running on {gpu_name} (both {info.sm}); it runs, but "
            "TensorRT chose its kernels on the other GPU: rebuild it here for full speed",
            UserWarning,
            stacklevel=2,
        )


def _sm(capability: str) -> str:
    return "sm_" + capability.replace(".", "")


# --- lazy imports and the CUDA device -----------------------------------------------


def import_tensorrt():
    """The ``tensorrt`` module.

    Raises
    ------
    ModuleNotFoundError
        tensorrt is not installed (the message says how to install it).
    ImportError
        tensorrt is installed but cannot be loaded (e.g. its CUDA libraries are
        missing), or is older than TensorRT 10.
    """
    try:
        import tensorrt
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tensorrt":
            raise ModuleNotFoundError(
                f"the TensorRT backend needs the tensorrt package, which is not installed: {INSTALL_HINT}",
                name="tensorrt",
            ) from None
        raise
    except ImportError as exc:
        raise ImportError(
            f"tensorrt is installed but cannot be loaded ({exc}); check the NVIDIA driver and that the "
            "TensorRT and CUDA libraries match (pip install 'tem-track[gpu]' installs a matching set)"
        ) from exc
    version = str(getattr(tensorrt, "__version__", "0"))
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_TENSORRT_MAJOR:
        # TensorRT 8 builds implicit-batch networks from create_network(0) and lacks
        # parts of the tensor API used here.
        raise ImportError(
            f"tem-track needs TensorRT >= {MIN_TENSORRT_MAJOR}, found {version}: pip install -U 'tem-track[gpu]'"
        )
    return tensorrt


def import_cudart():
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart``
    before cuda-python 12.6).

    Raises
    ------
    ModuleNotFoundError
        cuda-python is not installed (the message says how to install it).
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise ModuleNotFoundError(
                f"the TensorRT backend needs cuda-python (module cuda.bindings), which is not installed: {INSTALL_HINT}",
                name="cuda",
            ) from None
    return runtime


def device_properties(device: int = 0) -> tuple[str, str]:
    """The name and compute capability of a CUDA device.

    Parameters
    ----------
    device : int
        CUDA device index.

    Returns
    -------
    name : str
        e.g. ``"NVIDIA H100 80GB HBM3"``.
    compute_capability : str
        ``"major.minor"``, e.g. ``"9.0"``.

    Raises
    ------
    ModuleNotFoundError
        cuda-python is not installed.
    RuntimeError
        No such device, or no usable CUDA driver (the CUDA error is named).
    """
    cudart = import_cudart()
    prop = _cuda(cudart, cudart.cudaGetDeviceProperties(device), f"reading the properties of CUDA device {device}")
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{prop.major}.{prop.minor}"


def tensorrt_available(device: int = 0) -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can.

    For choosing a backend automatically: never raises for a missing package or GPU.

    Parameters
    ----------
    device : int
        CUDA device index to look for.

    Returns
    -------
    str or None
        None when tensorrt and cuda-python import and CUDA device ``device`` exists;
        else the reason, e.g. ``"tensorrt is not installed (pip install ...)"``.
    """
    try:
        import_tensorrt()
    except ImportError as exc:  # ModuleNotFoundError included
        return f"tensorrt is not usable: {exc}"
    try:
        cudart = import_cudart()
    except ImportError as exc:
        return f"cuda-python is not usable: {exc}"
    try:
        count = _cuda(cudart, cudart.cudaGetDeviceCount(), "counting CUDA devices")
    except RuntimeError as exc:
        return f"no usable CUDA device: {exc}"
    if not isinstance(device, int) or not 0 <= device < count:
        return f"no CUDA device {device!r} (this machine has {count})"
    return None


def _cuda(cudart, result, what: str):
    """The value(s) of a cuda-python call ``(err, *values)``; RuntimeError on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            _, text = cudart.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
        except (AttributeError, TypeError, ValueError):
            text = ""
        name = getattr(err, "name", str(err))
        raise RuntimeError(f"CUDA error while {what}: {name}" + (f" ({text})" if text else ""))
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# --- the backend ---------------------------------------------------------------------


class _HostDevice:
    """A pinned host buffer (seen as an ndarray) and a device buffer of the same size."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype: np.dtype):
        self._cudart = cudart
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.host_ptr = self.device_ptr = None
        self.host_ptr = _cuda(cudart, cudart.cudaMallocHost(self.nbytes), f"allocating {self.nbytes} bytes of pinned memory")
        try:
            self.device_ptr = _cuda(cudart, cudart.cudaMalloc(self.nbytes), f"allocating {self.nbytes} bytes on the GPU")
        except RuntimeError:
            self.free()
            raise
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def free(self) -> None:
        self.host = None
        if self.device_ptr is not None:
            self._cudart.cudaFree(self.device_ptr)
            self.device_ptr = None
        if self.host_ptr is not None:
            self._cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = None


class TensorRTBackend:
    """Instance-mask probabilities (or uint8 masks) from a TensorRT engine on a GPU.

    Parameters
    ----------
    path : str or path-like
        The ``.engine`` file, with its sidecar ``<engine>.json`` beside it (both
        written by :func:`temtrack.export.tensorrt.build_engine`).
    device : int
        CUDA device index (default 0).

    Attributes
    ----------
    name : str
        ``"tensorrt"``.
    path : pathlib.Path
        The engine file.
    info : EngineInfo
        Its sidecar.
    metadata : ModelMetadata
        The ONNX model's metadata (``info.metadata``).
    input_size : (int, int)
        ``(H, W)`` in pixels that ``predict`` needs.
    n_masks : int
        N, masks per frame.
    threshold : float or None
        Probability threshold for post-processing; None when the engine outputs
        thresholded uint8 masks (``metadata.output == "masks"``).
    sha256 : str
        Hex SHA-256 of the engine file when it was loaded.
    device : int
    gpu_name : str
        The GPU it runs on.
    max_batch : int
        Frames per engine run; ``predict`` splits larger batches.

    Raises
    ------
    TypeError
        ``path`` or ``device`` of the wrong type.
    ValueError
        ``device`` < 0.
    FileNotFoundError
        ``path`` does not exist.
    ModelError
        A missing or invalid sidecar, an engine built for another GPU architecture or
        TensorRT version (the message says how to rebuild it), or an engine TensorRT
        cannot load or whose tensors contradict the sidecar.
    ModuleNotFoundError
        tensorrt or cuda-python is not installed (the message gives the install
        command).
    RuntimeError
        No usable CUDA device, or GPU memory cannot be allocated.

    Notes
    -----
    The buffers (pinned host memory and GPU memory for ``max_batch`` frames) and one
    CUDA stream are allocated here and reused by every ``predict`` call; calls are
    serialised by a lock. :meth:`close` frees them (also on garbage collection and
    on leaving a ``with`` block).
    """

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, device: int = 0):
        self._closed = True  # until everything below exists; close() and __del__ rely on it
        self._buffers: list[_HostDevice] = []
        self._stream = None
        self._context = self._engine = self._runtime = None
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path-like (the .engine file), got {type(path).__name__}")
        if isinstance(device, bool) or not isinstance(device, (int, np.integer)):
            raise TypeError(f"device must be a CUDA device index (int >= 0), got {device!r}")
        if device < 0:
            raise ValueError(f"device must be a CUDA device index (int >= 0), got {device}")
        self.path = Path(path)
        self.device = int(device)
        # The sidecar first: it is plain JSON, and it says what the engine needs.
        self.info = read_engine_info(self.path)
        self.sha256 = self.info.engine_sha256  # verified against the file by read_engine_info
        self.metadata = self.info.metadata
        self.input_size = tuple(self.metadata.input_size)
        self.n_masks = self.metadata.n_masks
        self.threshold = None if self.metadata.output == "masks" else self.metadata.threshold
        if self.metadata.channels != 1:
            raise ModelError(
                f"{self.path}: metadata says channels={self.metadata.channels}; tem-track feeds grayscale frames, "
                "so the model must take 1 channel"
            )

        trt = import_tensorrt()
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        _cuda(cudart, cudart.cudaSetDevice(self.device), f"selecting CUDA device {self.device}")
        self.gpu_name, self.compute_capability = device_properties(self.device)
        self.tensorrt_version = str(trt.__version__)
        check_engine_gpu(
            self.info, gpu_name=self.gpu_name, compute_capability=self.compute_capability, trt_version=self.tensorrt_version
        )

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ModelError(
                f"{self.path}: TensorRT {self.tensorrt_version} could not deserialize the engine (see its log above); "
                f"{_REBUILD}"
            )
        self._input, self._output, in_dtype, out_dtype = self._check_tensors()
        self.min_batch, self.max_batch = self._batch_range()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")

        height, width = self.input_size
        self._stream = _cuda(cudart, cudart.cudaStreamCreate(), "creating a CUDA stream")
        self._closed = False
        self._in = _HostDevice(cudart, (self.max_batch, 1, height, width), in_dtype)
        self._buffers.append(self._in)
        self._out = _HostDevice(cudart, (self.max_batch, self.n_masks, height, width), out_dtype)
        self._buffers.append(self._out)
        self._context.set_tensor_address(self._input, int(self._in.device_ptr))
        self._context.set_tensor_address(self._output, int(self._out.device_ptr))
        self._scale = np.float32(1.0 / self.metadata.std)
        self._shift = np.float32(-self.metadata.mean / self.metadata.std)
        self._lock = threading.Lock()

    # --- public ----------------------------------------------------------------------

    def predict(self, frames: np.ndarray) -> list[np.ndarray]:
        """Mask probabilities (or uint8 masks) of each frame.

        Parameters
        ----------
        frames : (B, H, W) ndarray of floating dtype in [0, 1], or of uint8
            Grayscale frames with ``(H, W) == input_size``; uint8 is read as
            ``frames / 255``. Any B: batches above ``max_batch`` run in chunks. Not
            modified.

        Returns
        -------
        list of B ndarrays, each (N, H, W)
            float32 probabilities in [0, 1] (the sigmoid of the output when the model
            gives logits), or uint8 0/1 masks when ``metadata.output == "masks"``
            (then ``threshold`` is None). Copies, independent of the backend's
            buffers (views into one array per engine run).

        Raises
        ------
        TypeError
            ``frames`` is not a numpy array.
        ValueError
            Wrong shape or dtype, NaN, or values outside [0, 1].
        ModelError
            The engine's output does not have the expected shape, or
            "probabilities" outside [0, 1].
        RuntimeError
            The backend is closed, or CUDA/TensorRT failed.
        """
        frames, scale, shift = self._checked(frames)
        if len(frames) == 0:
            return []
        result: list[np.ndarray] = []
        with self._lock:
            if self._closed:
                raise RuntimeError(f"TensorRTBackend({str(self.path)!r}) is closed")
            _cuda(self._cudart, self._cudart.cudaSetDevice(self.device), f"selecting CUDA device {self.device}")
            for start in range(0, len(frames), self.max_batch):
                chunk = frames[start : start + self.max_batch]
                result.extend(self._run(chunk, scale, shift))
        return result

    def describe(self) -> dict:
        """The backend, engine file and hash, metadata and build, as JSON-serialisable values."""
        return {
            "backend": self.name,
            "model": str(self.path.resolve()),
            "sha256": self.sha256,
            "metadata": self.metadata.model_dump(mode="json"),
            "engine": {
                "gpu": self.info.gpu_name,
                "compute_capability": self.info.compute_capability,
                "tensorrt": self.info.tensorrt_version,
                "precision": self.info.precision,
                "profile": {"min_batch": self.min_batch, "opt_batch": self.info.opt_batch, "max_batch": self.max_batch},
                "onnx_file": self.info.onnx_file,
                "onnx_sha256": self.info.onnx_sha256,
            },
            "device": self.device,
            "device_name": self.gpu_name,
        }

    def close(self) -> None:
        """Free the GPU and pinned buffers, the stream and the engine. Idempotent."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            with lock:
                self._release()
        else:
            self._release()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        try:
            self._release()
        except Exception:  # noqa: BLE001 - at interpreter exit cudart may be half torn down; never raise here
            pass

    def __repr__(self) -> str:
        return (
            f"TensorRTBackend({str(self.path)!r}, input_size={self.input_size}, n_masks={self.n_masks}, "
            f"device={self.device}, max_batch={getattr(self, 'max_batch', None)})"
        )

    # --- internals -------------------------------------------------------------------

    def _release(self) -> None:
        if getattr(self, "_closed", True) and not getattr(self, "_buffers", None):
            return
        self._closed = True
        cudart = getattr(self, "_cudart", None)
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
        for buffer in self._buffers:
            buffer.free()
        self._buffers = []
        if cudart is not None and self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._stream = None
        # Context before engine before runtime: each was created from the next.
        self._context = self._engine = self._runtime = None

    def _check_tensors(self):
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{self.path}: the engine has inputs {inputs} and outputs {outputs}; tem-track needs one image "
                "input (B, 1, H, W) and one mask output (B, N, H, W)"
            )
        (inp,), (out,) = inputs, outputs
        height, width = self.input_size
        in_shape, out_shape = tuple(engine.get_tensor_shape(inp)), tuple(engine.get_tensor_shape(out))
        if len(in_shape) != 4 or tuple(in_shape[1:]) != (1, height, width):
            raise ModelError(
                f"{self.path}: the engine input {inp!r} has shape {in_shape}; its sidecar promises "
                f"(B, 1, {height}, {width}); {_REBUILD}"
            )
        if len(out_shape) != 4 or tuple(out_shape[1:]) != (self.n_masks, height, width):
            raise ModelError(
                f"{self.path}: the engine output {out!r} has shape {out_shape}; its sidecar promises "
                f"(B, {self.n_masks}, {height}, {width}); {_REBUILD}"
            )
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(inp)))
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(out)))
        if in_dtype.kind != "f":
            raise ModelError(f"{self.path}: the engine input {inp!r} is {in_dtype}; tem-track feeds float frames")
        if self.metadata.output == "masks":
            if out_dtype not in (np.dtype(np.uint8), np.dtype(np.bool_), np.dtype(np.int8)):
                raise ModelError(
                    f"{self.path}: metadata says output='masks' (uint8 0/1) but the engine output {out!r} is {out_dtype}"
                )
        elif out_dtype.kind != "f":
            raise ModelError(
                f"{self.path}: metadata says output={self.metadata.output!r} but the engine output {out!r} is "
                f"{out_dtype}; float probabilities or logits are needed"
            )
        return inp, out, in_dtype, out_dtype

    def _batch_range(self) -> tuple[int, int]:
        batch = int(self._engine.get_tensor_shape(self._input)[0])
        if batch > 0:  # built from a graph with a fixed batch
            return batch, batch
        low, _, high = self._engine.get_tensor_profile_shape(self._input, 0)
        return int(low[0]), int(high[0])

    def _checked(self, frames):
        """Validated frames and the normalisation ``x * scale + shift`` for their dtype
        (the checks of the ONNX backend)."""
        from .onnx import checked_frames, normalisation

        frames = checked_frames(frames, self.input_size, self.path.name)
        return (frames, *normalisation(frames, self._scale, self._shift))

    def _run(self, chunk: np.ndarray, scale, shift) -> list[np.ndarray]:
        cudart = self._cudart
        count = len(chunk)
        rows = max(count, self.min_batch)  # an engine of fixed batch runs padded chunks
        host_in = self._in.host
        # Normalised straight into the pinned buffer: no intermediate array.
        np.multiply(chunk, scale, out=host_in[:count, 0])
        if shift:
            host_in[:count] += shift
        if rows > count:
            host_in[count:rows] = host_in[count - 1 : count]
        height, width = self.input_size
        if not self._context.set_input_shape(self._input, (rows, 1, height, width)):
            raise ModelError(
                f"{self.path}: TensorRT rejected input shape ({rows}, 1, {height}, {width}); the engine's profile "
                f"allows batch {self.min_batch}..{self.max_batch}"
            )
        expected = (rows, self.n_masks, height, width)
        got = tuple(self._context.get_tensor_shape(self._output))
        if got != expected:
            raise ModelError(
                f"{self.path}: the engine gives output shape {got} for input ({rows}, 1, {height}, {width}); "
                f"expected {expected}"
            )
        in_bytes = rows * (self._in.nbytes // self.max_batch)
        out_bytes = rows * (self._out.nbytes // self.max_batch)
        stream = self._stream
        _cuda(
            cudart,
            cudart.cudaMemcpyAsync(
                self._in.device_ptr, self._in.host_ptr, in_bytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
            ),
            "copying frames to the GPU",
        )
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError(f"{self.path}: TensorRT failed to run the engine (see its log above)")
        _cuda(
            cudart,
            cudart.cudaMemcpyAsync(
                self._out.host_ptr, self._out.device_ptr, out_bytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
            ),
            "copying masks from the GPU",
        )
        _cuda(cudart, cudart.cudaStreamSynchronize(stream), "running the engine")
        y = self._out.host[:count]
        if self.metadata.output == "masks":
            return list(y.astype(np.uint8))  # a copy: the pinned buffer is reused
        y = y.astype(np.float32)  # a copy, float32 whatever the engine's output precision
        if self.metadata.output == "logits":
            with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, correct
                np.negative(y, out=y)
                np.exp(y, out=y)
                y += np.float32(1.0)
                np.reciprocal(y, out=y)
        else:
            from .onnx import checked_probabilities

            checked_probabilities(y, source=f"{self.path}: metadata says output='probabilities' but the engine")
        return list(y)
