"""The torch backend: a training checkpoint run on frames.

:class:`TorchBackend` follows the SDK's backend protocol (``name``, ``input_size``,
``threshold``, ``predict``, ``describe``; see :mod:`temtrack.sdk.backends`), so a
training checkpoint can be evaluated (``tem-track eval --model run/best.pt``) and run
by the main job exactly like an ONNX model. It takes frames of any size: each batch is
padded at the bottom and right with the frame's median gray to a multiple of the
network's size multiple, and the masks are cropped back.

On a GPU the network runs channels-last under fp16/bf16 autocast, with cuDNN's
autotuner on; frames go up through a pinned host buffer (asynchronous copy) and, with
``output="masks"``, the threshold and the cast to uint8 happen on the GPU so a quarter
of the bytes come back.

Imports torch. The SDK never imports this module: :func:`torch_backend` is the
``torch`` entry point of the group ``temtrack.backends`` (``pyproject.toml``), which
the SDK's registry (:mod:`temtrack.sdk.backends`) loads when a checkpoint is asked for.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from temtrack.sdk.backends.contract import pad_to_multiple

from .checkpoint import load_model
from .linefield import linefield_outputs
from .model import ModelConfig

__all__ = ["TorchBackend", "autocast_dtype", "logit_threshold", "resolve_device", "torch_backend"]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:K]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32).

    ``"auto"`` is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU
    (CPU autocast is slower than fp32 on most CPUs).
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be one of auto, fp32, bf16, fp16; got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast needs a GPU; use precision 'fp32' or 'bf16' on the CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context that runs the forward pass in ``dtype`` (or does nothing for None)."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def logit_threshold(threshold: float) -> float:
    """The logit ``log(t / (1 - t))``: ``logit > it`` is ``sigmoid(logit) > t`` without the sigmoid."""
    return math.log(threshold / (1.0 - threshold))


def pad_batch(frames: np.ndarray, multiple: int) -> np.ndarray:
    """Pad a ``(B, H, W)`` batch at the bottom/right to multiples of ``multiple``, each
    frame with its own median gray (like the SDK's letterbox)."""
    b, h, w = frames.shape
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return frames
    out = np.empty((b, h + ph, w + pw), np.float32)
    out[:] = np.median(frames.reshape(b, -1), axis=1)[:, None, None]
    out[:, :h, :w] = frames
    return out


class TorchBackend:
    """A U-Net++ in PyTorch as a segmentation backend.

    Parameters
    ----------
    model : torch.nn.Module
        The network (logits out).
    config : ModelConfig
    device : str or torch.device
    precision : {"auto", "fp32", "bf16", "fp16"}
    threshold : float
        Probability threshold post-processing should use.
    batch_size : int
        Most frames per forward pass.
    output : {"probabilities", "masks"}
        float32 probabilities, or uint8 0/1 masks thresholded on the device (then
        the ``threshold`` attribute is None: nothing is left to threshold).
    source : dict, optional
        What to record about the model's origin in :meth:`describe`.
    """

    name = "torch"
    input_size = None

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        threshold: float = 0.5,
        batch_size: int = 8,
        output: str = "probabilities",
        source: dict | None = None,
    ):
        if output not in ("probabilities", "masks"):
            raise ValueError(f"output must be 'probabilities' or 'masks', got {output!r}")
        if output == "masks" and config.family == "linefield":
            raise ValueError("output='masks' needs a multi-label model; a line-field model outputs fields (use 'probabilities')")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = autocast_dtype(precision, self.device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        self.config = config
        self.family = config.family
        self.output = output
        self.probability_threshold = float(threshold)
        self.threshold = None if output == "masks" else float(threshold)
        self.batch_size = int(batch_size)
        self.source = dict(source or {})
        self._pinned = None

    @property
    def precision_label(self) -> str:
        """``"fp32"``, ``"bf16 autocast"`` or ``"fp16 autocast"``."""
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.dtype]

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **options) -> "TorchBackend":
        """A backend running the network of a tem-track checkpoint (see
        :func:`~temtrack.training.checkpoint.load_model`); ``options`` as the constructor."""
        from temtrack.sdk.modelmeta import file_sha256

        model, config, state = load_model(path)
        source = {"checkpoint": str(Path(path).resolve()), "sha256": file_sha256(path), "step": state["step"]}
        return cls(model, config, source=source, **options)

    @torch.inference_mode()
    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """``(B, H, W)`` frames in [0, 1] -> ``(B, N, H, W)`` float32 probabilities
        (uint8 0/1 masks with ``output="masks"``); for a line-field model ``(B, C, H, W)``
        fields (:func:`~temtrack.training.linefield.linefield_outputs`)."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 3:
            raise ValueError(f"frames must have shape (B, H, W), got {frames.shape}")
        b, h, w = frames.shape
        # A line-field model sees frames padded as on every other backend (by
        # reflection, no edge to read as a line); masks models as they were trained.
        if self.family == "linefield":
            padded = pad_to_multiple(frames, self.config.size_multiple)
        else:
            padded = pad_batch(frames, self.config.size_multiple)
        cut = logit_threshold(self.probability_threshold) if self.output == "masks" else None
        out = np.empty((b, self.config.out_channels, h, w), np.float32 if cut is None else np.uint8)
        for start in range(0, b, self.batch_size):
            x = self._upload(padded[start : start + self.batch_size])
            with autocast(self.device, self.dtype):
                logits = self.model(x)[:, :, :h, :w]
            if self.family == "linefield":
                result = linefield_outputs(logits.float())
            elif cut is not None:
                result = (logits > cut).to(torch.uint8)
            else:
                result = torch.sigmoid(logits.float())
            out[start : start + len(x)] = result.cpu().numpy()
        return out

    def _upload(self, batch: np.ndarray) -> torch.Tensor:
        """A ``(b, 1, H, W)`` tensor on the device; on CUDA through a reused pinned buffer."""
        x = torch.from_numpy(np.ascontiguousarray(batch[:, None]))
        if not self.cuda:
            return x
        if self._pinned is None or self._pinned.shape[1:] != x.shape[1:] or len(self._pinned) < len(x):
            self._pinned = torch.empty((max(len(x), self.batch_size), *x.shape[1:]), pin_memory=True)
        staged = self._pinned[: len(x)]
        staged.copy_(x)
        # non_blocking from pinned memory; the forward pass waits for it on the same
        # stream, and .cpu() of the result synchronises before the buffer is reused.
        return staged.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def predict(self, frames: np.ndarray) -> list[np.ndarray]:
        """The backend protocol: a list of B ``(N, H, W)`` float32 probability stacks
        (uint8 masks with ``output="masks"``)."""
        return list(self.probabilities(frames))

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.config.model_dump(),
            "device": str(self.device),
            "precision": self.precision,
            "autocast": self.precision_label,
            "output": self.output,
            "threshold": self.probability_threshold,
            **self.source,
        }


def torch_backend(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "auto",
    threshold: float = 0.5,
    batch_size: int = 8,
    output: str = "probabilities",
) -> TorchBackend:
    """The SDK registry's ``"torch"`` backend (an entry point): :meth:`TorchBackend.from_checkpoint`."""
    return TorchBackend.from_checkpoint(
        path, device=device, precision=precision, threshold=threshold, batch_size=batch_size, output=output
    )
