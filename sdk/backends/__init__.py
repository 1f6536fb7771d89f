"""Segmentation backends: from a name or a model file to what turns frames into masks.

The registry. A backend is anything with the interface of
:class:`~temtrack.sdk.backends.contract.Backend` (``name``, ``input_size``,
``threshold``, ``predict``, ``describe``; optionally ``predict_packed``, which returns
:class:`~temtrack.sdk.backends.contract.PackedMasks`); the contract module also holds
the one table from a model file's suffix to its backend
(:func:`~temtrack.sdk.backends.contract.model_backend`).

Available: ``"classical"`` (Sauvola thresholding, no model, uint8 masks, any size),
``"onnxruntime"`` (an ONNX model file at the model's input size; CPU, or CUDA and
TensorRT execution providers with the ``[gpu]`` extra), ``"tensorrt"`` (a native
TensorRT engine built by ``tem-track export --tensorrt``; needs TensorRT and an NVIDIA
GPU), ``"torch"`` (a training checkpoint ``.pt``, any frame size; needs the
``[train]`` extra) and ``"auto"`` (the fastest of these that can run the given model
here, :mod:`temtrack.sdk.backends.auto`); :func:`get_backend` also takes the model
path itself.

The SDK's own backends are listed here. Others come from packaging entry points in
the group ``"temtrack.backends"`` (:data:`ENTRY_POINT_GROUP`): ``name = "module:factory"``,
optionally followed by the install extra it needs (``[train]``). The torch backend is
one: the ``training`` package provides it, so the SDK never names it.

Cheap to import: a backend's module (and its heavy libraries, e.g. onnxruntime) is
imported only when that backend is asked for. Must never import torch.
"""

from __future__ import annotations

import importlib
import inspect
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .contract import Backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "ClassicalBackend",
    "MissingModelError",
    "ModelError",
    "OnnxBackend",
    "PackedMasks",
    "backend_names",
    "get_backend",
    "model_backend",
    "sauvola_instances",
]

ENTRY_POINT_GROUP = "temtrack.backends"

# The SDK's backends: name -> "module:attribute", imported on first use.
_BUILTIN: dict[str, str] = {
    "classical": "temtrack.sdk.backends.classical:ClassicalBackend",
    "onnxruntime": "temtrack.sdk.backends.onnx:OnnxBackend",
    "tensorrt": "temtrack.sdk.backends.tensorrt:TensorRTBackend",
    "auto": "temtrack.sdk.backends.auto:auto_backend",
}
_LAZY = {
    "Backend": "temtrack.sdk.backends.contract",
    "PackedMasks": "temtrack.sdk.backends.contract",
    "model_backend": "temtrack.sdk.backends.contract",
    "ClassicalBackend": "temtrack.sdk.backends.classical",
    "sauvola_instances": "temtrack.sdk.backends.classical",
    "OnnxBackend": "temtrack.sdk.backends.onnx",
    "ModelError": "temtrack.sdk.modelmeta",
}
# What the "path given twice" error calls the file, per backend.
_FILE_NOUNS = {"tensorrt": "engine", "torch": "checkpoint", "onnxruntime": "model file"}
# The file a model backend runs, as its "give the model" error names it.
_MODEL_FILES = {"tensorrt": "ENGINE.engine", "torch": "CHECKPOINT.pt", "onnxruntime": "MODEL.onnx"}


class MissingModelError(ValueError, TypeError):
    """A backend that runs a model file was asked for without one.

    A ValueError, so the command line reports it in one line; also a TypeError, which
    :func:`get_backend` raised for it before (a missing required option).
    """


def backend_names() -> list[str]:
    """Names accepted by :func:`get_backend`, sorted: the SDK's and those of entry points."""
    return sorted({*_BUILTIN, *_plugins()})


def get_backend(spec: str | os.PathLike, **options) -> Backend:
    """The backend named ``spec``, or the model backend of the file ``spec``.

    Parameters
    ----------
    spec : str or path-like
        A backend name (see :func:`backend_names`), or a model file: ``.engine``
        gives the TensorRT backend, ``.pt``/``.pth``/``.ckpt`` the torch backend, and
        ``.onnx`` or any other existing file the
        :class:`~temtrack.sdk.backends.onnx.OnnxBackend`
        (:func:`~temtrack.sdk.backends.contract.model_backend`).
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
    MissingModelError
        ``spec`` names a backend that runs a model file (``"onnxruntime"``,
        ``"tensorrt"``, ``"torch"``) and no ``path`` is given (a ValueError and a
        TypeError).
    TypeError
        ``spec`` is neither a string nor a path, an option is unknown to the backend
        (the message lists the valid ones), or another required option is missing.
    FileNotFoundError, ModelError
        From :class:`~temtrack.sdk.backends.onnx.OnnxBackend` for a model file.
    """
    from .contract import has_model_suffix, model_backend

    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a backend name or a model path (str), got {type(spec).__name__}")
    if spec in _MODEL_FILES and "path" not in options:
        _refuse_without_model(spec)  # before importing the runtime: it needs a model either way
    if spec in _BUILTIN or spec in _plugins():
        return _build(spec, options)
    path = Path(spec)
    if has_model_suffix(spec) or path.is_file():
        name = model_backend(spec)
        if "path" in options:
            raise TypeError(f"option path given twice: spec {spec!r} is already the {_FILE_NOUNS.get(name, 'model file')}")
        return _build(name, {"path": spec, **options})
    if path.is_dir():
        raise ValueError(
            f"cannot use {spec!r}: it is a directory, not a model file (.onnx); "
            f"valid backends: {', '.join(backend_names())}"
        )
    raise ValueError(f"unknown backend {spec!r}; valid backends: {', '.join(backend_names())}, or a model file (.onnx, a TensorRT .engine, or a .pt training checkpoint)")


@lru_cache(maxsize=1)
def _plugins() -> dict:
    """The backends of installed packages' entry points, by name (the SDK's own win)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN}


def _factory(name: str):
    """The class or function that builds backend ``name``, imported now."""
    if name in _BUILTIN:
        module, attribute = _BUILTIN[name].split(":")
        return getattr(importlib.import_module(module), attribute)
    entry = _plugins().get(name)
    if entry is None:  # a model file whose backend no installed package provides
        raise ModuleNotFoundError(
            f"backend {name!r} is not installed: no package provides it (entry point group {ENTRY_POINT_GROUP!r}); "
            "reinstall tem-track (pip install -e .) or install the package that provides it",
            name=name,
        )
    try:
        return entry.load()
    except ModuleNotFoundError as exc:
        provider = entry.dist.name if entry.dist is not None else "its package"
        extras = ",".join(entry.extras)
        hint = f"pip install '{provider}[{extras}]'" if extras else f"install what {provider} needs for it"
        raise ModuleNotFoundError(f"backend {name!r} needs {exc.name}, which is not installed: {hint}", name=exc.name) from None


def _refuse_without_model(name: str) -> None:
    """Raise :class:`MissingModelError` for backend ``name``, which was given no model file."""
    model = _MODEL_FILES.get(name, "MODEL")
    raise MissingModelError(
        f"the {name} backend runs a model: give --model {model} (or a model name from 'tem-track models'); "
        f"in Python, get_backend({model!r}) or get_backend({name!r}, path={model!r})"
    )


def _build(name: str, options: dict) -> Backend:
    cls = _factory(name)
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
    if "path" in missing:
        _refuse_without_model(name)
    if missing:
        raise TypeError(f"backend {name!r} needs option(s) {', '.join(missing)}")
    return cls(**options)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
