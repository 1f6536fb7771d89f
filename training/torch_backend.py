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

:meth:`TorchBackend.predict_packed` (what the main job calls) sends only compact
results back (issue 20: copying N full planes per frame held a 951 fps model to
84 fps): for a multi-label model the threshold, the skipping of empty masks, the
bounding boxes and one gather of every box's pixels run on the device, and one
buffer per batch comes back, which the host cuts into
:class:`~temtrack.sdk.backends.contract.PackedMasks` equal to
``PackedMasks.pack`` of :meth:`predict`'s output; for a line-field model the
threshold at the tracing's lower threshold, the dilation by the tracing's reach
(``max_pool2d``) and one gather of the kept pixels run on the device, and one buffer
per chunk comes back, cut into :class:`~temtrack.sdk.linefield.SparseFields` equal to
``SparseFields.pack`` of :meth:`predict`'s fields (they trace exactly the same lines).
The values are float32 by default (``field_dtype``: float16 halves them, but changed
the traced lines on 1 of 18 synthetic 256 px frames, a line more, and moved spline
points by up to 2 px, measured with the bundled line-field model on the CPU; so it is
an option, not the default). On CUDA the host buffers are pinned and
reused, copies run on their own stream, and the next chunk of a call is queued
before the previous one is collected, so copies overlap compute; on the CPU the same
code runs synchronously. The model options ``channels_last``, ``compile`` and
``cuda_graphs`` are switches, measured with ``benchmarks/bench_gpu.py``.

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
import torch.nn.functional as F

from temtrack.sdk.backends.contract import PackedMasks, pad_to_multiple
from temtrack.sdk.linefield import FIELD_REACH, LineFieldSettings, SparseFields

from .checkpoint import load_model
from .linefield import linefield_outputs
from .model import ModelConfig

__all__ = ["TorchBackend", "autocast_dtype", "logit_threshold", "resolve_device", "torch_backend"]

# predict_packed's dtypes for a line-field model's fields
_FIELD_DTYPES = {"float16": torch.float16, "float32": torch.float32}


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
    threshold : float, optional
        Probability threshold post-processing should use (None: 0.5); for a line-field
        model the upper threshold of its tracing (None: the tracing's defaults, as for
        the model's ONNX export).
    batch_size : int
        Most frames per forward pass.
    output : {"probabilities", "masks"}
        float32 probabilities, or uint8 0/1 masks thresholded on the device (then
        the ``threshold`` attribute is None: nothing is left to threshold).
    source : dict, optional
        What to record about the model's origin in :meth:`describe`.
    channels_last : bool, optional
        Run the network in the channels-last memory format (None: on CUDA only, where
        cuDNN's NHWC convolutions use the tensor cores; on the CPU it is usually slower).
    compile : bool
        ``torch.compile`` the network for fixed shapes (``dynamic=False``): fused
        elementwise ops, expected to pay on a GPU after a compile of tens of seconds
        per input shape; off by default because it is not measured yet.
    cuda_graphs : bool
        Replay the forward pass as a CUDA graph captured once per input shape (CUDA
        only): removes the per-kernel launch cost, which dominates at small batches;
        off by default because it is not measured yet.
    field_dtype : {"float32", "float16"}
        The dtype in which :meth:`predict_packed` returns a line-field model's fields.
        float32 traces exactly the lines of :meth:`predict`; float16 halves the bytes
        but rounds the fields by up to 2.4e-4, which changed the traced lines on 1 of
        18 synthetic frames (see the module docstring).
    field_low : float, optional
        The centre value from which :meth:`predict_packed` keeps a line-field model's
        pixels (:class:`~temtrack.sdk.linefield.SparseFields`): the lower hysteresis
        threshold of the tracing it is meant for (tracing with a higher ``low`` is
        exact too). None: ``LineFieldSettings.for_threshold(threshold).low``, the ``low``
        the analyzer derives from this backend's ``threshold``. The main job traces the
        dense fields of :meth:`predict` when its ``low`` is below this.
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
        threshold: float | None = None,
        batch_size: int = 8,
        output: str = "probabilities",
        source: dict | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
        field_dtype: str = "float32",
        field_low: float | None = None,
    ):
        if output not in ("probabilities", "masks"):
            raise ValueError(f"output must be 'probabilities' or 'masks', got {output!r}")
        if output == "masks" and config.family == "linefield":
            raise ValueError("output='masks' needs a multi-label model; a line-field model outputs fields (use 'probabilities')")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        fields = config.family == "linefield"
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if field_dtype not in _FIELD_DTYPES:
            raise ValueError(f"field_dtype must be one of {', '.join(_FIELD_DTYPES)}; got {field_dtype!r}")
        if field_low is not None and not 0.0 < field_low < 1.0:
            raise ValueError(f"field_low must be None or in (0, 1), got {field_low!r}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.cuda = self.device.type == "cuda"
        if cuda_graphs and not self.cuda:
            raise ValueError(f"cuda_graphs=True needs a CUDA device, got device {str(self.device)!r}")
        self.dtype = autocast_dtype(precision, self.device)
        self.precision = precision
        self.channels_last = self.cuda if channels_last is None else bool(channels_last)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        self.compiled = bool(compile)
        self._network = torch.compile(self.model, dynamic=False) if compile else self.model
        self.cuda_graphs = bool(cuda_graphs)
        self._graphs: dict = {}
        self.config = config
        self.family = config.family
        self.output = output
        # A line-field model's threshold is its tracing's (None: the defaults); the
        # probability threshold is the masks' (0.5 unless given).
        self.probability_threshold = 0.5 if threshold is None or fields else float(threshold)
        self.threshold = (None if threshold is None else float(threshold)) if fields else (
            None if output == "masks" else self.probability_threshold)
        self.batch_size = int(batch_size)
        self.field_dtype = field_dtype
        self.field_low = LineFieldSettings.for_threshold(self.threshold if fields else self.probability_threshold).low if field_low is None else float(field_low)
        self.source = dict(source or {})
        self._pinned = None
        self._host: dict = {}  # reused (pinned on CUDA) host buffers of predict_packed, by slot
        self._copies = torch.cuda.Stream(self.device) if self.cuda else None

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

    def _padded(self, frames) -> np.ndarray:
        """Checked ``(B, H, W)`` float32 frames, padded to the network's size multiple."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 3:
            raise ValueError(f"frames must have shape (B, H, W), got {frames.shape}")
        # A line-field model sees frames padded as on every other backend (by
        # reflection, no edge to read as a line); masks models as they were trained.
        if self.family == "linefield":
            return pad_to_multiple(frames, self.config.size_multiple)
        return pad_batch(frames, self.config.size_multiple)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's raw outputs for the device batch ``x`` (autocast, compile or
        a CUDA graph as configured)."""
        if self.cuda_graphs:
            return self._replay(x)
        with autocast(self.device, self.dtype):
            return self._network(x)

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass as a CUDA graph, captured at the first batch of each shape.

        The output tensor is the graph's own and is overwritten by the next replay:
        callers derive new tensors from it on the same stream before that.
        """
        key = tuple(x.shape)
        if key not in self._graphs:
            static_x = x.clone(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), autocast(self.device, self.dtype):
                for _ in range(3):  # cuDNN autotuning and lazy allocations happen outside the capture
                    self._network(static_x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), autocast(self.device, self.dtype):
                static_y = self._network(static_x)
            self._graphs[key] = (graph, static_x, static_y)
        graph, static_x, static_y = self._graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_y

    @torch.inference_mode()
    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """``(B, H, W)`` frames in [0, 1] -> ``(B, N, H, W)`` float32 probabilities
        (uint8 0/1 masks with ``output="masks"``); for a line-field model ``(B, C, H, W)``
        fields (:func:`~temtrack.training.linefield.linefield_outputs`)."""
        padded = self._padded(frames)
        b, h, w = np.shape(frames)
        cut = logit_threshold(self.probability_threshold) if self.output == "masks" else None
        out = np.empty((b, self.config.out_channels, h, w), np.float32 if cut is None else np.uint8)
        for start in range(0, b, self.batch_size):
            x = self._upload(padded[start : start + self.batch_size])
            logits = self._forward(x)[:, :, :h, :w]
            if self.family == "linefield":
                result = linefield_outputs(logits.float())
            elif cut is not None:
                result = (logits > cut).to(torch.uint8)
            else:
                result = torch.sigmoid(logits.float())
            out[start : start + len(x)] = result.cpu().numpy()
        return out

    def _upload(self, batch: np.ndarray, slot: int = 0) -> torch.Tensor:
        """A ``(b, 1, H, W)`` tensor on the device; on CUDA through a reused pinned buffer
        (one per ``slot``, so a chunk can go up while the previous one is in use)."""
        x = torch.from_numpy(np.ascontiguousarray(batch[:, None]))
        if not self.cuda:
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        buffers = self._pinned if isinstance(self._pinned, dict) else {}
        self._pinned = buffers
        staged, copied = buffers.get(slot, (None, None))
        if staged is None or staged.shape[1:] != x.shape[1:] or len(staged) < len(x):
            staged, copied = torch.empty((max(len(x), self.batch_size), *x.shape[1:]), pin_memory=True), None
        if copied is not None:
            copied.synchronize()  # the last upload from this buffer has left (not: its forward pass ran)
        staged[: len(x)].copy_(x)
        moved = staged[: len(x)].to(self.device, non_blocking=True)
        buffers[slot] = (staged, torch.cuda.current_stream(self.device).record_event())
        return moved.contiguous(memory_format=torch.channels_last) if self.channels_last else moved

    def predict(self, frames: np.ndarray) -> list[np.ndarray]:
        """The backend protocol: a list of B ``(N, H, W)`` float32 probability stacks
        (uint8 masks with ``output="masks"``)."""
        return list(self.probabilities(frames))

    @torch.inference_mode()
    def predict_packed(self, frames: np.ndarray) -> list:
        """Compact results of ``(B, H, W)`` frames in [0, 1], made on the device.

        Returns
        -------
        list
            Multi-label model: B :class:`~temtrack.sdk.backends.contract.PackedMasks`,
            each equal to ``PackedMasks.pack(masks, self.threshold)`` of the masks
            :meth:`predict` gives (same indices, boxes and crop pixels: uint8 0/1 crops
            with ``output="masks"``, else float16 probabilities). Line-field model: B
            :class:`~temtrack.sdk.linefield.SparseFields`, each equal to
            ``SparseFields.pack(fields.astype(field_dtype), low=self.field_low)`` of the
            fields :meth:`predict` gives (same indices and values).

        Raises
        ------
        ValueError
            Bad frames; for a line-field model, fields holding NaN or infinite values
            (a broken checkpoint: its sparse fields would silently be empty).

        Notes
        -----
        Per chunk of ``batch_size`` frames: forward pass; threshold; per mask, the rows
        and columns holding a pixel (``any`` reductions) give the box; a small
        ``(B*N, 5)`` table (kept, top, left, height, width) comes back first, then
        one gather of all boxes' pixels into one flat buffer, copied back on a
        separate stream into a reused pinned buffer. Chunk ``k + 1`` is queued before
        chunk ``k`` is collected. Line fields: centre ``>= field_low``, dilated by
        ``FIELD_REACH`` px (``max_pool2d``), ``nonzero``, one gather of every kept
        pixel's channels; per-frame counts, indices and values go back as one byte
        buffer.
        """
        padded = self._padded(frames)
        b, h, w = np.shape(frames)
        results: list = []
        pending = None
        for start in range(0, b, self.batch_size):
            slot = (start // self.batch_size) % 2
            x = self._upload(padded[start : start + self.batch_size], slot)
            raw = self._forward(x)[:, :, :h, :w]
            queued = self._queue_fields(raw, slot) if self.family == "linefield" else self._queue_masks(raw, slot)
            if pending is not None:
                results.extend(self._collect(pending))
            pending = queued
        if pending is not None:
            results.extend(self._collect(pending))
        return results

    def _host_buffer(self, slot: int, name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
        """The first ``n`` elements of a reused host buffer (pinned on CUDA), grown as needed."""
        key = (slot, name)
        buffer = self._host.get(key)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < n:
            buffer = torch.empty(max(n, 1024), dtype=dtype, pin_memory=self.cuda)
            self._host[key] = buffer
        return buffer[:n]

    def _to_host(self, tensor: torch.Tensor, slot: int, name: str):
        """``tensor`` (flattened) copied into a host buffer; returns ``(buffer, event)``.

        On CUDA the copy runs on the copy stream once ``tensor`` is ready and the event
        marks its end; on the CPU it is done on return (event None).
        """
        flat = tensor.reshape(-1)
        host = self._host_buffer(slot, name, flat.numel(), flat.dtype)
        if not self.cuda:
            host.copy_(flat)
            return host, None
        ready = torch.cuda.current_stream(self.device).record_event()
        with torch.cuda.stream(self._copies):
            self._copies.wait_event(ready)
            host.copy_(flat, non_blocking=True)
            flat.record_stream(self._copies)  # not freed for reuse before the copy ran
            done = self._copies.record_event()
        return host, done

    def _queue_fields(self, raw: torch.Tensor, slot: int) -> tuple:
        """Fields, their kept pixels and non-finite counts of one chunk, queued on the device."""
        fields = linefield_outputs(raw.float()).to(_FIELD_DTYPES[self.field_dtype])
        b, c, h, w = fields.shape
        # Compared in float32, as numpy compares float32 fields with a Python float.
        core = fields[:, :1].float() >= torch.tensor(np.float32(self.field_low), device=fields.device)
        side = 2 * FIELD_REACH + 1
        kept = F.max_pool2d(core.float(), side, stride=1, padding=FIELD_REACH).reshape(b, h * w) > 0
        bad = (~torch.isfinite(fields)).reshape(b, -1).sum(dim=1)
        return ("fields", (b, c, h, w), fields, kept, bad, slot)

    def _collect_fields(self, queued: tuple) -> list:
        """One chunk's kept pixels gathered on the device, one buffer back, cut per frame.

        The buffer (bytes): per-frame pixel counts and non-finite counts (int32 each),
        the flat pixel indices (int32, frame after frame) and the ``(C, K)`` values.
        """
        _, (b, c, h, w), fields, kept, bad, slot = queued
        frame, pixel = kept.nonzero(as_tuple=True)  # row-major: frame by frame, pixels increasing
        counts = torch.bincount(frame, minlength=b)
        values = fields.reshape(b, c, h * w).permute(1, 0, 2)[:, frame, pixel]  # (C, K all frames)
        parts = [counts.int(), bad.int(), pixel.int(), values.reshape(-1)]
        buffer, copied = self._to_host(torch.cat([part.contiguous().view(torch.uint8) for part in parts]), slot, "sparse")
        if copied is not None:
            copied.synchronize()
        raw = buffer.numpy()
        header = raw[: 8 * b].view(np.int32)
        counts_host, bad_host = header[:b], header[b:]
        if bad_host.any():
            first = int(np.flatnonzero(bad_host)[0])
            raise ValueError(
                f"the model returned NaN or infinite values ({int(bad_host[first])} of {c * h * w}) for frame {first} "
                "of a batch; the checkpoint is broken"
            )
        total = int(counts_host.sum())
        pixels = raw[8 * b : 8 * b + 4 * total].view(np.int32)
        dtype = np.float16 if fields.dtype == torch.float16 else np.float32
        flat_values = raw[8 * b + 4 * total :].view(dtype).reshape(c, total)
        starts = np.concatenate([[0], np.cumsum(counts_host)]).tolist()
        # Copies: out of the reused buffer, each frame's values contiguous.
        return [SparseFields((c, h, w), pixels[a:e].copy(), flat_values[:, a:e].copy())
                for a, e in zip(starts[:-1], starts[1:])]

    def _queue_masks(self, raw: torch.Tensor, slot: int) -> tuple:
        """Threshold, boxes and the ``(B*N, 5)`` table of one chunk, queued on the device."""
        if self.output == "masks":
            binary = raw > logit_threshold(self.probability_threshold)
            values = binary.to(torch.uint8)
        else:
            values = torch.sigmoid(raw.float())
            # float32 on both sides, as numpy compares float32 masks with a Python float
            binary = values > torch.tensor(np.float32(self.probability_threshold), device=values.device)
            values = values.to(torch.float16)
        b, n, h, w = binary.shape
        rows, columns = binary.any(dim=3), binary.any(dim=2)  # (b, n, h), (b, n, w)
        kept = rows.any(dim=2)
        y = torch.arange(h, device=binary.device)
        x = torch.arange(w, device=binary.device)
        top = torch.where(rows, y, h).amin(dim=2)
        left = torch.where(columns, x, w).amin(dim=2)
        height = (rows * (y + 1)).amax(dim=2) - top
        width = (columns * (x + 1)).amax(dim=2) - left
        table = torch.stack([kept.long(), top, left, height.clamp_min(0), width.clamp_min(0)], dim=-1).reshape(b * n, 5)
        host, done = self._to_host(table, slot, "table")
        return ("masks", (b, n, h, w), host, done, table, values, slot)

    def _collect(self, queued: tuple) -> list:
        """Wait for one queued chunk and turn it into per-frame results (host side)."""
        if queued[0] == "fields":
            return self._collect_fields(queued)
        _, (b, n, h, w), host, done, table, values, slot = queued
        if done is not None:
            done.synchronize()
        rows = host.numpy().reshape(b * n, 5)
        sizes = rows[:, 0] * rows[:, 3] * rows[:, 4]
        total = int(sizes.sum())
        flat = np.empty(0, np.uint8 if values.dtype == torch.uint8 else np.float16)
        if total:
            sizes_device = table[:, 0] * table[:, 3] * table[:, 4]
            owner = torch.repeat_interleave(torch.arange(b * n, device=values.device), sizes_device, output_size=total)
            local = torch.arange(total, device=values.device) - (torch.cumsum(sizes_device, 0) - sizes_device)[owner]
            crop_width = table[owner, 4]
            r = table[owner, 1] + torch.div(local, crop_width, rounding_mode="floor")
            c = table[owner, 2] + local % crop_width
            pixels = values[torch.div(owner, n, rounding_mode="floor"), owner % n, r, c]  # one gather
            buffer, copied = self._to_host(pixels, slot, "pixels")
            if copied is not None:
                copied.synchronize()
            flat = buffer.numpy().copy()
        dtype = "uint8" if values.dtype == torch.uint8 else "float16"
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        packed = []
        for frame in range(b):
            chosen = np.flatnonzero(rows[frame * n : (frame + 1) * n, 0])
            ids = frame * n + chosen
            crops = tuple(flat[offsets[k] : offsets[k + 1]].reshape(rows[k, 3], rows[k, 4]) for k in ids)
            packed.append(PackedMasks((h, w), chosen.astype(np.int64), rows[ids][:, 1:3].astype(np.int64).reshape(-1, 2),
                                      crops, dtype))
        return packed

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.config.model_dump(),
            "device": str(self.device),
            "precision": self.precision,
            "autocast": self.precision_label,
            "output": self.output,
            "threshold": self.threshold if self.family == "linefield" else self.probability_threshold,
            "channels_last": self.channels_last,
            "compile": self.compiled,
            "cuda_graphs": self.cuda_graphs,
            "field_dtype": self.field_dtype,
            "field_low": self.field_low,
            **self.source,
        }


def torch_backend(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "auto",
    threshold: float | None = None,
    batch_size: int = 8,
    output: str = "probabilities",
    channels_last: bool | None = None,
    compile: bool = False,
    cuda_graphs: bool = False,
    field_dtype: str = "float32",
    field_low: float | None = None,
) -> TorchBackend:
    """The SDK registry's ``"torch"`` backend (an entry point): :meth:`TorchBackend.from_checkpoint`."""
    return TorchBackend.from_checkpoint(
        path, device=device, precision=precision, threshold=threshold, batch_size=batch_size, output=output,
        channels_last=channels_last, compile=compile, cuda_graphs=cuda_graphs, field_dtype=field_dtype,
        field_low=field_low,
    )
