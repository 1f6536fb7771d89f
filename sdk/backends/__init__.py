"""Segmentation backends: from a name to what turns frames into instance masks.

Every backend has a ``name``, ``predict(frames)`` taking a ``(B, H, W)`` batch of
frames in [0, 1] and returning a list of B ``(N_i, H, W)`` uint8 mask stacks, and
``describe()`` returning its settings for the outputs. Available now: ``"classical"``
(Sauvola thresholding, no model). Model backends (ONNX, TensorRT) come with the export
work.

Cheap to import: a backend's module (and its heavy libraries) is imported only when
that backend is asked for. Must never import torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Backend", "ClassicalBackend", "backend_names", "get_backend", "sauvola_instances"]

# name -> (module, class); modules are imported on first use.
_BACKENDS: dict[str, tuple[str, str]] = {
    "classical": ("temtrack.sdk.backends.classical", "ClassicalBackend"),
}
_LAZY = {
    "ClassicalBackend": "temtrack.sdk.backends.classical",
    "sauvola_instances": "temtrack.sdk.backends.classical",
}
_MODEL_SUFFIXES = (".onnx", ".engine")


class Backend(Protocol):
    """What the runtime needs from a segmentation backend."""

    name: str

    def predict(self, frames: np.ndarray) -> list[np.ndarray]: ...

    def describe(self) -> dict: ...


def backend_names() -> list[str]:
    """Names accepted by :func:`get_backend`, sorted."""
    return sorted(_BACKENDS)


def get_backend(spec: str, **options) -> Backend:
    """The backend named ``spec``, built with ``options`` as its settings.

    Parameters
    ----------
    spec : str
        A backend name (see :func:`backend_names`).
    **options
        Settings of that backend (for ``"classical"``, the keyword arguments of
        :func:`~temtrack.sdk.backends.classical.sauvola_instances`).

    Raises
    ------
    ValueError
        ``spec`` is an unknown name (the message lists the valid ones), or a model
        file (``.onnx``, ``.engine`` or an existing path): model backends are not
        available yet.
    TypeError
        ``spec`` is not a string, or an option is unknown to the backend.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a backend name (str), got {type(spec).__name__}")
    if spec not in _BACKENDS:
        if spec.lower().endswith(_MODEL_SUFFIXES) or Path(spec).exists():
            raise ValueError(
                f"cannot use {spec!r}: model backends (ONNX/TensorRT) arrive with the export issue; "
                f"available now: {', '.join(backend_names())}"
            )
        raise ValueError(f"unknown backend {spec!r}; valid backends: {', '.join(backend_names())}")
    module, attribute = _BACKENDS[spec]
    cls = getattr(importlib.import_module(module), attribute)
    valid = set(getattr(cls, "__dataclass_fields__", {}))
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} for backend {spec!r}; valid options: {', '.join(sorted(valid))}"
        )
    return cls(**options)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
