"""Segmentation backends: from a name or a model file to what turns frames into masks.

Every backend has

- ``name`` (str): its registry name;
- ``input_size`` (``(H, W)`` in pixels, or None): the frame size ``predict`` needs; None
  means any size (fit frames of other sizes with :mod:`temtrack.sdk.preprocess`);
- ``threshold`` (float or None): the probability threshold post-processing should use
  on its output (``PostprocessSettings.threshold``); None when it returns thresholded
  uint8 masks;
- ``predict(frames)``: a ``(B, H, W)`` batch of frames in [0, 1] -> a list of B
  ``(N_i, H, W)`` mask stacks, uint8 0/1 or float32 probabilities in [0, 1];
- ``describe()``: its settings (and model hash) as JSON-serialisable values, for the
  outputs;
- optionally ``predict_packed(frames)``: the same masks as bounding-box crops
  (:class:`temtrack.sdk.pipeline.PackedMasks`), which the main job prefers (the
  classical backend has it: a frame can hold hundreds of components).

Available: ``"classical"`` (Sauvola thresholding, no model, uint8 masks, any size),
``"onnxruntime"`` (an ONNX model file at the model's input size; CPU, or CUDA and
TensorRT execution providers with the ``[gpu]`` extra), ``"tensorrt"`` (a native
TensorRT engine built by ``tem-track export --tensorrt``; needs TensorRT and an NVIDIA
GPU), ``"torch"`` (a training checkpoint ``.pt``, any frame size; needs the
``[train]`` extra) and ``"auto"`` (the fastest of these that can run the given model
here, :mod:`temtrack.sdk.backends.auto`); :func:`get_backend` also takes the model
path itself.

Cheap to import: a backend's module (and its heavy libraries, e.g. onnxruntime) is
imported only when that backend is asked for. Must never import torch.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Backend",
    "ClassicalBackend",
    "ModelError",
    "OnnxBackend",
    "backend_names",
    "get_backend",
    "sauvola_instances",
]

# name -> (module, class); modules are imported on first use.
_BACKENDS: dict[str, tuple[str, str]] = {
    "classical": ("temtrack.sdk.backends.classical", "ClassicalBackend"),
    "onnxruntime": ("temtrack.sdk.backends.onnx", "OnnxBackend"),
    # A training checkpoint in PyTorch. Named, not imported: the training stack (torch,
    # segmentation-models-pytorch, the [train] extra) loads only when this is asked for.
    "torch": ("temtrack.training.inference", "torch_backend"),
    "tensorrt": ("temtrack.sdk.backends.tensorrt", "TensorRTBackend"),
    "auto": ("temtrack.sdk.backends.auto", "auto_backend"),
}
_LAZY = {
    "ClassicalBackend": "temtrack.sdk.backends.classical",
    "sauvola_instances": "temtrack.sdk.backends.classical",
    "OnnxBackend": "temtrack.sdk.backends.onnx",
    "ModelError": "temtrack.sdk.modelmeta",
}
_ONNX_SUFFIX = ".onnx"
_ENGINE_SUFFIX = ".engine"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


class Backend(Protocol):
    """What the runtime needs from a segmentation backend (see the module docstring)."""

    name: str
    input_size: tuple[int, int] | None
    threshold: float | None

    def predict(self, frames: np.ndarray) -> list[np.ndarray]: ...

    def describe(self) -> dict: ...


def backend_names() -> list[str]:
    """Names accepted by :func:`get_backend`, sorted."""
    return sorted(_BACKENDS)


def get_backend(spec: str | os.PathLike, **options) -> Backend:
    """The backend named ``spec``, or the model backend of the file ``spec``.

    Parameters
    ----------
    spec : str or path-like
        A backend name (see :func:`backend_names`), or a model file: ``.engine``
        gives the TensorRT backend, ``.pt``/``.pth``/``.ckpt`` the torch backend, and
        ``.onnx`` or any other existing file the
        :class:`~temtrack.sdk.backends.onnx.OnnxBackend`.
    **options
        Settings of that backend: for ``"classical"`` the keyword arguments of
        :func:`~temtrack.sdk.backends.classical.sauvola_instances`; for
        ``"onnxruntime"`` ``path`` (required), ``providers`` and ``threads``; for
        ``"auto"`` ``path`` (optional) and ``threads``; for a model file those of its
        backend without ``path``.

    Raises
    ------
    ValueError
        ``spec`` is an unknown name (the message lists the valid ones) or a directory.
    ModuleNotFoundError
        The backend's runtime is not installed (the message says which extra).
    TypeError
        ``spec`` is neither a string nor a path, an option is unknown to the backend
        (the message lists the valid ones), or a required option is missing.
    FileNotFoundError, ModelError
        From :class:`~temtrack.sdk.backends.onnx.OnnxBackend` for a model file.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a backend name or a model path (str), got {type(spec).__name__}")
    if spec in _BACKENDS:
        return _build(spec, _BACKENDS[spec], options)
    lowered = spec.lower()
    path = Path(spec)
    if lowered.endswith(_ENGINE_SUFFIX):
        if "path" in options:
            raise TypeError(f"option path given twice: spec {spec!r} is already the engine")
        return _build("tensorrt", _BACKENDS["tensorrt"], {"path": spec, **options})
    if lowered.endswith(_CHECKPOINT_SUFFIXES):
        if "path" in options:
            raise TypeError(f"option path given twice: spec {spec!r} is already the checkpoint")
        return _build("torch", _BACKENDS["torch"], {"path": spec, **options})
    if lowered.endswith(_ONNX_SUFFIX) or path.is_file():
        if "path" in options:
            raise TypeError(f"option path given twice: spec {spec!r} is already the model file")
        return _build("onnxruntime", _BACKENDS["onnxruntime"], {"path": spec, **options})
    if path.is_dir():
        raise ValueError(
            f"cannot use {spec!r}: it is a directory, not a model file (.onnx); "
            f"valid backends: {', '.join(backend_names())}"
        )
    raise ValueError(f"unknown backend {spec!r}; valid backends: {', '.join(backend_names())}, or a model file (.onnx, a TensorRT .engine, or a .pt training checkpoint)")


def _build(name: str, entry: tuple[str, str], options: dict) -> Backend:
    module, attribute = entry
    try:
        cls = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "segmentation_models_pytorch") and name == "torch":
            raise ModuleNotFoundError(
                f"backend {name!r} needs {exc.name}, which is not installed: pip install 'tem-track[train]'",
                name=exc.name,
            ) from None
        raise
    if hasattr(cls, "__dataclass_fields__"):
        valid, required = set(cls.__dataclass_fields__), set()
    else:
        parameters = list(inspect.signature(cls).parameters.values())
        valid = {p.name for p in parameters}
        required = {p.name for p in parameters if p.default is inspect.Parameter.empty}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} for backend {name!r}; valid options: {', '.join(sorted(valid))}"
        )
    missing = sorted(required - set(options))
    if missing:
        hint = f" (the model file: get_backend({name!r}, path='model.onnx'))" if "path" in missing else ""
        raise TypeError(f"backend {name!r} needs option(s) {', '.join(missing)}{hint}")
    return cls(**options)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
