"""The native TensorRT backend: a serialized engine run on an NVIDIA GPU.

An engine (``model.engine``) is built from a tem-track ONNX model by
:func:`temtrack.export.tensorrt.build_engine`; its JSON sidecar (``model.engine.json``,
:mod:`temtrack.sdk.enginemeta`) says what it was built from and for, and is read and
checked against this machine before TensorRT is asked to deserialize the engine.

:class:`TensorRTBackend` follows the backend contract
(:mod:`temtrack.sdk.backends.contract`, whose frame and probability checks it shares
with :class:`~temtrack.sdk.backends.onnx.OnnxBackend`). tensorrt and cuda-python are
imported through :mod:`temtrack.sdk.backends.gpu` when a backend is built, never when
this module is imported. Torch is never imported here.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from ..enginemeta import REBUILD_HINT, check_engine_gpu, read_engine_info
from ..modelmeta import ModelError, model_threshold
from . import gpu
from .contract import checked_frames, checked_probabilities, normalisation
from .gpu import cuda_call

__all__ = ["ModelError", "TensorRTBackend"]


# --- the backend ---------------------------------------------------------------------


class _HostDevice:
    """A pinned host buffer (seen as an ndarray) and a device buffer of the same size."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype: np.dtype):
        self._cudart = cudart
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.host_ptr = self.device_ptr = None
        self.host_ptr = cuda_call(cudart, cudart.cudaMallocHost(self.nbytes), f"allocating {self.nbytes} bytes of pinned memory")
        try:
            self.device_ptr = cuda_call(cudart, cudart.cudaMalloc(self.nbytes), f"allocating {self.nbytes} bytes on the GPU")
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
        Threshold for post-processing (:func:`~temtrack.sdk.modelmeta.model_threshold`):
        None when the engine outputs thresholded uint8 masks (``metadata.output ==
        "masks"``); a line-field engine's ``metadata.line_threshold``.
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
        self.threshold = model_threshold(self.metadata)
        if self.metadata.channels != 1:
            raise ModelError(
                f"{self.path}: metadata says channels={self.metadata.channels}; tem-track feeds grayscale frames, "
                "so the model must take 1 channel"
            )

        trt = gpu.import_tensorrt()
        cudart = gpu.import_cudart()
        self._trt, self._cudart = trt, cudart
        cuda_call(cudart, cudart.cudaSetDevice(self.device), f"selecting CUDA device {self.device}")
        self.gpu_name, self.compute_capability = gpu.device_properties(self.device)
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
                f"{REBUILD_HINT}"
            )
        self._input, self._output, in_dtype, out_dtype = self._check_tensors()
        self.min_batch, self.max_batch = self._batch_range()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")

        height, width = self.input_size
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "creating a CUDA stream")
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
            cuda_call(self._cudart, self._cudart.cudaSetDevice(self.device), f"selecting CUDA device {self.device}")
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
                f"(B, 1, {height}, {width}); {REBUILD_HINT}"
            )
        if len(out_shape) != 4 or tuple(out_shape[1:]) != (self.n_masks, height, width):
            raise ModelError(
                f"{self.path}: the engine output {out!r} has shape {out_shape}; its sidecar promises "
                f"(B, {self.n_masks}, {height}, {width}); {REBUILD_HINT}"
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
        cuda_call(
            cudart,
            cudart.cudaMemcpyAsync(
                self._in.device_ptr, self._in.host_ptr, in_bytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
            ),
            "copying frames to the GPU",
        )
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError(f"{self.path}: TensorRT failed to run the engine (see its log above)")
        cuda_call(
            cudart,
            cudart.cudaMemcpyAsync(
                self._out.host_ptr, self._out.device_ptr, out_bytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
            ),
            "copying masks from the GPU",
        )
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "running the engine")
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
            checked_probabilities(y, source=f"{self.path}: metadata says output='probabilities' but the engine")
        return list(y)
