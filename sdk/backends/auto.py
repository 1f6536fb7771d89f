"""The ``auto`` backend: the fastest way this machine has to run a model, and why.

For a model file, in order:

- ``.engine``: the native TensorRT backend (a given engine is never replaced);
- ``.pt`` checkpoint: the torch backend, on the GPU when torch sees one;
- ``.onnx``: a TensorRT engine of the same name beside it (``model.engine`` with its
  ``model.engine.json``) when TensorRT can run it here; else onnxruntime with the
  TensorRT execution provider, else with CUDA, else on the CPU.

Every step that is skipped is skipped for a reason (a package missing, no GPU, an
engine built for another GPU, a provider that would not start), and
:attr:`AutoChoice.skipped` lists them: the choice is announced, never silent. Without
a model file it is the ``fallback`` backend name (the default model's backend).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AutoChoice", "auto_backend", "choose"]


@dataclass
class AutoChoice:
    """What :func:`choose` picked.

    Attributes
    ----------
    backend : Backend
        Built and ready.
    label : str
        What runs, e.g. ``"onnxruntime [CUDAExecutionProvider, CPUExecutionProvider]"``.
    skipped : list of str
        The faster options not taken, each with its reason.
    """

    backend: object
    label: str
    skipped: list[str] = field(default_factory=list)

    def announcement(self) -> str:
        """One line for people: ``backend auto: LABEL (skipped: ...)``."""
        text = f"backend auto: {self.label}"
        if self.skipped:
            text += " (not used: " + "; ".join(self.skipped) + ")"
        return text


def choose(path: str | os.PathLike | None, *, fallback: str = "classical", threads: int | None = None) -> AutoChoice:
    """The fastest available backend for the model file ``path`` (see the module docstring).

    Parameters
    ----------
    path : path or None
        The model file; None picks ``fallback``.
    fallback : str
        Backend name used without a model file.
    threads : int, optional
        CPU threads for onnxruntime on the CPU.

    Raises
    ------
    FileNotFoundError, ModelError, ModuleNotFoundError
        From building the backend the file calls for (an ``.engine`` or ``.pt`` whose
        runtime is missing is an error: there is nothing else to run it with).
    """
    from . import get_backend
    from .contract import model_backend

    if path is None:
        return AutoChoice(get_backend(fallback), fallback, ["no model file given"])
    path = Path(path)
    runtime = model_backend(path)
    if runtime == "tensorrt":
        backend = get_backend(str(path))
        return AutoChoice(backend, f"tensorrt engine on {backend.describe().get('gpu', 'the GPU')}")
    if runtime == "torch":
        return _torch(path)
    return _onnx(path, threads)


def _torch(path: Path) -> AutoChoice:
    from . import get_backend

    backend = get_backend(str(path), device="auto", precision="auto")
    skipped = []
    if backend.device.type == "cpu":
        skipped.append("CUDA (torch sees no GPU)")
        skipped.append("onnxruntime (export the checkpoint with 'tem-track export' for faster CPU inference)")
    return AutoChoice(backend, f"torch on {backend.device} ({backend.precision_label})", skipped)


def _onnx(path: Path, threads: int | None) -> AutoChoice:
    import onnxruntime

    from ..enginemeta import ENGINE_SUFFIX
    from .gpu import tensorrt_available
    from .onnx import GPU_PROVIDERS, OnnxBackend

    skipped = []
    engine = path.with_suffix(ENGINE_SUFFIX)
    reason = tensorrt_available()
    if not engine.is_file():
        skipped.append(f"tensorrt engine (no {engine.name} beside the model)")
    elif reason is not None:
        skipped.append(f"tensorrt engine {engine.name} ({reason})")
    else:
        from .tensorrt import TensorRTBackend

        try:
            backend = TensorRTBackend(engine)
        except (ValueError, RuntimeError, OSError) as exc:  # ModelError is a ValueError
            skipped.append(f"tensorrt engine {engine.name} ({exc})")
        else:
            return AutoChoice(backend, f"tensorrt engine {engine.name}", skipped)

    available = onnxruntime.get_available_providers()
    for provider in GPU_PROVIDERS:
        if provider not in available:
            skipped.append(f"{provider} (not in this onnxruntime; pip install 'tem-track[gpu]')")
            continue
        providers = [p for p in GPU_PROVIDERS[GPU_PROVIDERS.index(provider):] if p in available]
        try:
            backend = OnnxBackend(path, providers=[*providers, "CPUExecutionProvider"])
        except ValueError as exc:  # a provider that would not start (no driver, no GPU)
            if "could not be started" not in str(exc):
                raise
            skipped.append(f"{provider} (could not be started: no GPU or driver)")
            continue
        return AutoChoice(backend, f"onnxruntime [{', '.join(backend.providers)}]", skipped)
    backend = OnnxBackend(path, threads=threads)
    return AutoChoice(backend, f"onnxruntime [{', '.join(backend.providers)}]", skipped)


def auto_backend(path: str | os.PathLike | None = None, *, threads: int | None = None):
    """The registry's ``"auto"`` backend: :func:`choose`'s backend, with the
    :class:`AutoChoice` as its ``auto_choice`` attribute (for the announcement)."""
    choice = choose(path, threads=threads)
    # object.__setattr__: some backends are frozen dataclasses (the classical one).
    object.__setattr__(choice.backend, "auto_choice", choice)
    return choice.backend
