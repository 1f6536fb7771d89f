"""A tem-track ONNX model as a TensorRT engine for one GPU: ``tem-track export --tensorrt``.

:func:`build_engine` parses the ONNX file (from :func:`temtrack.export.onnx.export_onnx`)
with TensorRT's ONNX parser and builds an engine for the GPU it runs on:

- one optimisation profile, batch ``1..max_batch`` (tuned for ``opt_batch``) at the
  model's fixed ``(H, W)`` from its ``"temtrack"`` metadata;
- fp16 kernels allowed by default (``fp16=True``; the graph's input and output stay
  as the ONNX file has them);
- a timing cache (``<engine>.timing-cache`` by default), loaded when present and saved
  after the build, so a rebuild on the same GPU takes seconds instead of minutes.

The engine and its JSON sidecar ``<engine>.json`` appear atomically (by rename). The
sidecar records the ONNX model's metadata and the build (TensorRT version, GPU,
compute capability, precision, profile, the ONNX file's SHA-256); the runtime
(:class:`temtrack.sdk.backends.tensorrt.TensorRTBackend`) reads it to refuse an
engine from another GPU architecture or TensorRT version with a message instead of a
crash. The sidecar's schema, reading and checks live in :mod:`temtrack.sdk.enginemeta`
(the SDK must not import export); they are re-exported here.

Needs tensorrt (10 or later) and cuda-python, imported inside :func:`build_engine`;
no torch. INT8 calibration is not offered.
"""

from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path

from temtrack import __version__
from temtrack.sdk.backends.gpu import device_properties, import_cudart, import_tensorrt
from temtrack.sdk.enginemeta import ENGINE_SUFFIX, EngineInfo, check_engine_gpu, read_engine_info, sidecar_path
from temtrack.sdk.modelmeta import METADATA_KEY, ModelError, file_sha256, read_metadata
from temtrack.sdk.atomic import write_atomic

__all__ = [
    "EngineBuildError",
    "EngineInfo",
    "build_engine",
    "check_engine_gpu",
    "read_engine_info",
    "sidecar_path",
    "timing_cache_path",
]

_LOG = logging.getLogger(__name__)


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it (the message
    lists TensorRT's errors)."""


def timing_cache_path(engine_path: str | os.PathLike) -> Path:
    """The default timing cache of an engine: ``model.engine`` -> ``model.engine.timing-cache``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".timing-cache")


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    fp16: bool = True,
    max_batch: int = 32,
    opt_batch: int = 8,
    timing_cache: str | os.PathLike | bool | None = None,
    workspace_gib: float = 4,
    overwrite: bool = False,
    device: int = 0,
) -> EngineInfo:
    """Build a TensorRT engine from a tem-track ONNX model, for this machine's GPU.

    Parameters
    ----------
    onnx_path : str or path-like
        The ONNX model, with its ``"temtrack"`` metadata (as written by
        :func:`temtrack.export.onnx.export_onnx`).
    engine_path : str or path-like
        The engine file to write, ending in ``.engine``; its sidecar
        ``<engine_path>.json`` is written beside it.
    fp16 : bool
        Let TensorRT use half-precision kernels (about twice as fast; probabilities
        within about 2e-2 of fp32).
    max_batch : int
        Largest batch the engine accepts (>= 1); the runtime splits larger ones.
    opt_batch : int
        The batch TensorRT tunes its kernels for, in ``1..max_batch``.
    timing_cache : str or path-like or bool, optional
        TensorRT's timing cache file: loaded if it exists, written after the build.
        None or True: :func:`timing_cache_path` of the engine; False: no cache.
    workspace_gib : float
        GPU memory, in GiB, TensorRT may use as scratch space while choosing kernels.
    overwrite : bool
        Replace an existing engine (and sidecar).
    device : int
        CUDA device to build for.

    Returns
    -------
    EngineInfo
        What the sidecar records.

    Raises
    ------
    TypeError
        An argument of the wrong type.
    ValueError
        ``engine_path`` does not end in ``.engine``, or a batch size, workspace or
        device out of range.
    FileNotFoundError
        ``onnx_path`` does not exist.
    FileExistsError
        The engine exists and ``overwrite`` is False.
    ModelError
        The ONNX file has no ``"temtrack"`` metadata, or its graph contradicts it.
    ModuleNotFoundError
        tensorrt or cuda-python is not installed (the message says how to install
        them; an NVIDIA GPU is needed).
    RuntimeError
        No usable CUDA device.
    EngineBuildError
        TensorRT could not parse the model (its errors are listed) or build the
        engine (``build_serialized_network`` returned None).
    """
    onnx_path, engine_path, cache_path = _check_arguments(
        onnx_path, engine_path, fp16=fp16, max_batch=max_batch, opt_batch=opt_batch,
        timing_cache=timing_cache, workspace_gib=workspace_gib, overwrite=overwrite, device=device,
    )
    metadata = read_metadata(onnx_path)
    if metadata is None:
        raise ModelError(
            f"{onnx_path}: has no {METADATA_KEY!r} metadata, so the engine's input size and normalisation are "
            "unknown; export the model with `tem-track export` or add it with temtrack.sdk.modelmeta.write_metadata"
        )
    if metadata.channels != 1:
        raise ModelError(
            f"{onnx_path}: metadata says channels={metadata.channels}; tem-track feeds grayscale frames, so the "
            "model must take 1 channel"
        )
    trt = import_tensorrt()
    cudart = import_cudart()
    err, *_ = cudart.cudaSetDevice(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"cannot use CUDA device {device}: {getattr(err, 'name', err)}; TensorRT needs an NVIDIA GPU")
    gpu_name, capability = device_properties(device)
    onnx_sha256 = file_sha256(onnx_path)

    logger = _collecting_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise EngineBuildError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}:\n  " + "\n  ".join(errors or ["(no error reported)"])
        )
    input_name, dynamic, (min_batch, opt_batch, max_batch) = _check_network(
        network, metadata, onnx_path, max_batch=max_batch, opt_batch=opt_batch
    )
    height, width = metadata.input_size

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if dynamic:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            input_name, (min_batch, 1, height, width), (opt_batch, 1, height, width), (max_batch, 1, height, width)
        )
        config.add_optimization_profile(profile)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        _attach_timing_cache(config, cache_path)

    _LOG.info("building a TensorRT engine from %s for %s (batch %d..%d): this takes minutes", onnx_path, gpu_name,
              min_batch, max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not build an engine from {onnx_path} "
            "(builder.build_serialized_network returned None)"
            + (":\n  " + "\n  ".join(logger.errors) if logger.errors else "")
            + f"\n(settings: fp16={fp16}, batch {min_batch}..{max_batch}, workspace {workspace_gib} GiB; "
            "too little workspace is a common cause)"
        )
    if cache_path is not None:
        cache = config.get_timing_cache()
        if cache is not None:
            blob = cache.serialize()
            write_atomic(cache_path, lambda tmp: _write_bytes(tmp, blob))

    write_atomic(engine_path, lambda tmp: _write_bytes(tmp, serialized))
    info = EngineInfo(
        path=engine_path,
        metadata=metadata,
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name,
        compute_capability=capability,
        precision="fp16" if fp16 else "fp32",
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_gib=float(workspace_gib),
        onnx_file=onnx_path.name,
        onnx_sha256=onnx_sha256,
        engine_sha256=file_sha256(engine_path),
        tem_track_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    text = info.to_json()
    write_atomic(sidecar_path(engine_path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return info


# --- internals -----------------------------------------------------------------------


def _check_arguments(onnx_path, engine_path, *, fp16, max_batch, opt_batch, timing_cache, workspace_gib, overwrite,
                     device):
    """Validated (onnx_path, engine_path, timing cache path or None); raises before any heavy import."""
    for name, value in (("onnx_path", onnx_path), ("engine_path", engine_path)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name} must be a str or path-like, got {type(value).__name__}")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.exists():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    if onnx_path.is_dir():
        raise ModelError(f"{onnx_path} is a directory, not an ONNX model file")
    if engine_path.suffix.lower() != ENGINE_SUFFIX:
        raise ValueError(f"engine_path must end with {ENGINE_SUFFIX!r} (the runtime picks the backend by it), got {engine_path}")
    for name, value in (("fp16", fp16), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    for name, value in (("max_batch", max_batch), ("opt_batch", opt_batch), ("device", device)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch must lie in 1..max_batch ({max_batch}), got {opt_batch}")
    if device < 0:
        raise ValueError(f"device must be a CUDA device index >= 0, got {device}")
    if isinstance(workspace_gib, bool) or not isinstance(workspace_gib, (int, float)):
        raise TypeError(f"workspace_gib must be a number of GiB, got {workspace_gib!r}")
    if not (math.isfinite(workspace_gib) and workspace_gib > 0):
        raise ValueError(f"workspace_gib must be a finite number > 0, got {workspace_gib!r}")
    if timing_cache is None or timing_cache is True:
        cache_path = timing_cache_path(engine_path)
    elif timing_cache is False:
        cache_path = None
    elif isinstance(timing_cache, (str, os.PathLike)):
        cache_path = Path(timing_cache)
        if cache_path.is_dir():
            raise ValueError(f"timing_cache must be a file path, got the directory {cache_path}")
    else:
        raise TypeError(f"timing_cache must be a path, None/True (beside the engine) or False (none), got {timing_cache!r}")
    if not overwrite:
        for existing in (engine_path, sidecar_path(engine_path)):
            if existing.exists():
                raise FileExistsError(f"{existing} exists; pass overwrite=True (--overwrite) to replace it")
    return onnx_path, engine_path, cache_path


def _check_network(network, metadata, onnx_path, *, max_batch, opt_batch):
    """(input name, whether any input dimension is dynamic, (min, opt, max) batch) of a
    parsed network, checked against ``metadata``."""
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise ModelError(
            f"{onnx_path}: the graph has {network.num_inputs} inputs and {network.num_outputs} outputs; "
            "tem-track needs one image input (B, 1, H, W) and one mask output (B, N, H, W)"
        )
    height, width = metadata.input_size
    tensor, output = network.get_input(0), network.get_output(0)
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != 4 or any(d not in (-1, e) for d, e in zip(shape[1:], (1, height, width))):
        raise ModelError(
            f"{onnx_path}: the graph input {tensor.name!r} has shape {shape}; its metadata promises "
            f"(B, 1, {height}, {width}); re-export the model"
        )
    out_shape = tuple(int(d) for d in output.shape)
    if len(out_shape) != 4 or any(d not in (-1, e) for d, e in zip(out_shape[1:], (metadata.n_masks, height, width))):
        raise ModelError(
            f"{onnx_path}: the graph output {output.name!r} has shape {out_shape}; its metadata promises "
            f"(B, {metadata.n_masks}, {height}, {width}); re-export the model"
        )
    dynamic = any(d < 0 for d in shape)
    batch = shape[0]
    if batch > 0:
        # A graph exported with a fixed batch: the engine can only run that batch.
        if batch != max_batch:
            _LOG.warning("%s has a fixed batch of %d; the engine will run batches of %d", onnx_path, batch, batch)
        return tensor.name, dynamic, (batch, batch, batch)
    return tensor.name, dynamic, (1, opt_batch, max_batch)


def _attach_timing_cache(config, cache_path: Path) -> None:
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    # A cache from another GPU or TensorRT version only costs build time; start afresh
    # (it is replaced after the build) rather than mix timings from two devices.
    _LOG.warning("timing cache %s does not fit this GPU or TensorRT version; starting a new one", cache_path)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _write_bytes(path: Path, data) -> None:
    with open(path, "wb") as handle:
        handle.write(memoryview(data))


def _collecting_logger(trt):
    """A TensorRT logger that forwards to :mod:`logging` and keeps the errors for messages."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))
                _LOG.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                _LOG.warning("TensorRT: %s", msg)
            else:
                _LOG.debug("TensorRT: %s", msg)

    return _Logger()
