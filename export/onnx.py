"""A training checkpoint as an ONNX model the SDK runs: ``tem-track export``.

The graph takes ``image`` ``(B, 1, H, W)`` float32 frames in [0, 1] (B dynamic, H and
W fixed to the export size) and gives ``masks`` ``(B, N, H, W)``:

- ``output="probabilities"``: float32, the sigmoid is inside the graph;
- ``output="masks"``: uint8 0/1, the threshold and the cast are inside the graph too
  (a quarter of the bytes to move off the GPU; the comparison is done on the logits,
  ``logit > log(t / (1 - t))``, which is the same test without the sigmoid).

A line-field checkpoint (``model.family = "linefield"``) gives its fields instead
(centre map and extras through a sigmoid, the direction through tanh, inside the
graph; metadata ``output="fields"``), and its graph is fully convolutional: H and W
are dynamic too (``size_multiple`` in the metadata), so frames run at their own pixel
size, the size the model was trained at. Its parity check runs on frames of a size
other than the training size, which checks the dynamic axes as well.

With ``fp16=True`` the weights and the arithmetic are half precision, with float32 in
and out (casts inside the graph), so every runtime feeds it the same way; the first
convolution, which reads the frame, stays fp32 (:func:`half_network` says why).
With ``fp16_weights=True`` only the stored weights are half precision: each is cast
back to float32 inside the graph (:func:`fp16_weight_storage`), which onnxruntime folds
once when it loads the file. The file is half the size and the arithmetic stays fp32,
which matters on CPUs, where onnxruntime's fp16 kernels are about 20x slower than its
fp32 ones. That is how the bundled default model ships.

Every file carries the ``"temtrack"`` metadata (:mod:`temtrack.sdk.modelmeta`): input
size, normalisation, N, threshold and output kind, and in ``extra`` the encoder and
decoder, precision, opset, the checkpoint's hash, step and best validation score, the
whole training config and the SHA-256 of its data section, the last validation
metrics, any evaluation reports given, the parity figures and the versions of
tem-track, torch and onnx.

Before the file appears (atomically, by rename) onnxruntime runs it on synthetic
frames and :mod:`temtrack.export.parity` compares its masks with the PyTorch network's;
a failed check raises :class:`~temtrack.export.parity.ParityError` and writes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import onnx

from temtrack import __version__
from temtrack.sdk.modelmeta import ModelMetadata, file_sha256
from temtrack.sdk.atomic import write_atomic
from temtrack.training.checkpoint import load_model
from temtrack.training.linefield import linefield_outputs
from temtrack.training.torch_backend import logit_threshold

from .parity import ParityReport, compare, parity_frames, tolerance_for

__all__ = ["ExportError", "ExportResult", "export_onnx", "half_network", "reference_probabilities"]

INPUT_NAME, OUTPUT_NAME = "image", "masks"
DEFAULT_OPSET = 17
MIN_OPSET = 13  # the Sigmoid/Greater/Cast and Resize forms the network needs


class ExportError(ValueError):
    """A checkpoint cannot be exported with the settings asked for (the message says why)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The ONNX file.
    metadata : ModelMetadata
        Its ``"temtrack"`` metadata.
    parity : ParityReport
        The export-time comparison with the PyTorch network.
    sha256 : str
        Of the file written.
    """

    path: Path
    metadata: ModelMetadata
    parity: ParityReport
    sha256: str


class _Fp32Stem(torch.nn.Module):
    """The first convolution in fp32, its output in fp16.

    Rounding the frame itself to fp16 (a relative 2**-11) moves the probabilities of a
    trained U-Net++ by up to 0.05 (measured on the CPU model of issue 5), more than the
    fp16 tolerance; the convolution that reads the frame costs little, so it stays fp32.
    """

    def __init__(self, conv: torch.nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float()).half()


def half_network(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` in fp16 except its first convolution (:class:`_Fp32Stem`):
    float32 frames in, fp16 logits out."""
    half = copy.deepcopy(net).half()
    name, _ = next((n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d))
    parent_name, _, attribute = name.rpartition(".")
    parent = half.get_submodule(parent_name) if parent_name else half
    setattr(parent, attribute, _Fp32Stem(copy.deepcopy(net.get_submodule(name)).float()))
    return half


class _Deployed(torch.nn.Module):
    """The network as deployed: frames in, probabilities (0/1 masks, or line fields) out."""

    def __init__(self, net: torch.nn.Module, *, cut: float | None, fields: bool = False):
        super().__init__()
        self.net, self.cut, self.fields = net, cut, fields

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.net(image)
        if self.fields:
            return linefield_outputs(logits.float())
        if self.cut is not None:
            return (logits > self.cut).to(torch.uint8)
        return torch.sigmoid(logits.float())


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    input_size: tuple[int, int] | None = None,
    fp16: bool = False,
    fp16_weights: bool = False,
    opset: int = DEFAULT_OPSET,
    output: str = "probabilities",
    threshold: float = 0.5,
    line_threshold: float | None = None,
    reports: dict | None = None,
    parity_count: int = 4,
    overwrite: bool = False,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
) -> ExportResult:
    """Export a tem-track training checkpoint to ONNX, checked for parity.

    Parameters
    ----------
    checkpoint : path
        A ``.pt`` checkpoint written by ``tem-track train``.
    out : path
        The ONNX file to write (an existing one only with ``overwrite``).
    input_size : (int, int), optional
        ``(H, W)`` in pixels the graph takes, multiples of the network's 32; default:
        the training image size. The runtime fits every frame to it.
    fp16 : bool
        Half-precision weights and arithmetic (float32 in and out).
    fp16_weights : bool
        Half-precision stored weights, float32 arithmetic (half the file size at fp32
        speed on CPUs); exclusive with ``fp16``.
    opset : int
        ONNX opset, >= 13 (default 17).
    output : {"probabilities", "masks"}
        float32 probabilities, or uint8 0/1 masks thresholded inside the graph.
    threshold : float
        Probability threshold in (0, 1) recorded for post-processing (and applied in
        the graph with ``output="masks"``).
    line_threshold : float, optional
        For a line-field model: the upper threshold on its centre map that its
        tracing runs at by default (``ModelMetadata.line_threshold``; the main job's
        and eval's ``--threshold`` unless the user gives one). None: the tracing's
        defaults.
    reports : dict, optional
        Name -> evaluation summary (e.g. ``tem-track eval`` reports' ``summary``) to
        record as the model's metric figures.
    parity_count : int
        Synthetic frames of the parity check (>= 1).
    overwrite : bool
    name, version, description : str, optional
        The metadata's free-text fields (defaults: the architecture, the checkpoint's
        step, and a line naming precision and checkpoint).

    Returns
    -------
    ExportResult

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    ExportError
        Impossible settings (the message names the setting and what is allowed).
    ParityError
        The exported model's masks differ from the network's beyond the tolerance
        (:data:`temtrack.export.parity.TOLERANCES`); nothing is written.
    FileNotFoundError, CheckpointError
        From reading the checkpoint.
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"out must be an .onnx file, got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if output not in ("probabilities", "masks"):
        raise ExportError(f"output must be 'probabilities' or 'masks' (uint8, thresholded in the graph), got {output!r}")
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        raise ExportError(f"threshold must lie in (0, 1), got {threshold!r}")
    if line_threshold is not None and not (isinstance(line_threshold, (int, float)) and 0.0 < line_threshold < 1.0):
        raise ExportError(f"line_threshold must lie in (0, 1), got {line_threshold!r}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    if parity_count < 1:
        raise ExportError(f"parity_count must be >= 1, got {parity_count}")
    if fp16 and fp16_weights:
        raise ExportError("fp16 (half-precision arithmetic) and fp16_weights (half-precision storage only) exclude each other")

    net, config, state = load_model(checkpoint)
    fields = config.family == "linefield"
    if fields and output == "masks":
        raise ExportError(
            f"{checkpoint} is a 'linefield' model: it outputs fields, not the 'multilabel' family's masks; "
            "export it with output='probabilities' (the default)"
        )
    if line_threshold is not None and not fields:
        raise ExportError(f"{checkpoint} is a 'multilabel' model: line_threshold is for a 'linefield' model "
                          "(a mask model's threshold is 'threshold')")
    train_config = state["config"]
    size = _input_size(input_size, train_config, config.size_multiple)
    net = net.eval()
    cut = logit_threshold(threshold) if output == "masks" else None
    deployed = _Deployed(half_network(net) if fp16 else net, cut=cut, fields=fields).eval()

    # A graph of any size is checked at a size it was not traced at.
    check_size = (size[0], size[1] + 2 * config.size_multiple) if fields else size
    frames = parity_frames(check_size, n=parity_count)
    reference = reference_probabilities(net, frames, fields=fields)
    precision = "fp16" if fp16 else "fp16-weights" if fp16_weights else "fp32"
    tolerance = tolerance_for(precision, output)
    sha = file_sha256(checkpoint)
    extra = {
        "tem_track_version": __version__,
        "architecture": config.architecture,
        "family": config.family,
        "outputs": list(config.output_names) if fields else None,
        "encoder": config.encoder,
        "decoder_channels": list(config.decoder_channels),
        "precision": precision,
        "opset": opset,
        "checkpoint": {"file": Path(checkpoint).name, "sha256": sha, "step": state["step"], "best_length_score": state["best"]},
        "training_config": train_config,
        "data_sha256": _canonical_sha256(train_config.get("data", {})),
        "validation": state["metrics"],
        "reports": dict(reports or {}),
        "torch": torch.__version__,
    }

    def write(tmp: Path) -> None:
        import onnx

        _trace(deployed, tmp, size, opset, dynamic_size=fields)
        proto = onnx.load(str(tmp))
        if fp16_weights:
            proto = fp16_weight_storage(proto)
            onnx.save(proto, str(tmp))
        extra["onnx"] = onnx.__version__
        parity = _check(tmp, out.name, frames, reference, threshold, tolerance)
        extra["parity"] = parity.to_dict()
        metadata = ModelMetadata(
            input_size=size,
            n_masks=config.out_channels,
            threshold=threshold,
            output="fields" if fields else "masks" if output == "masks" else "probabilities",
            family=config.family,
            size_multiple=config.size_multiple if fields else None,
            line_threshold=line_threshold,
            name=name or (f"linefield-{config.architecture}-{config.encoder}" if fields else f"unetplusplus-{config.encoder}"),
            version=version or f"step-{state['step']}",
            description=description
            or f"tem-track {config.family} {config.architecture} ({config.encoder}), {precision}, "
            f"exported from {Path(checkpoint).name}",
            extra=extra,
        )
        from temtrack.sdk.modelmeta import write_metadata

        proto = write_metadata(proto, metadata)
        onnx.save(proto, str(tmp))
        written.update(metadata=metadata, parity=parity)

    written: dict = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, write)
    return ExportResult(out, written["metadata"], written["parity"], file_sha256(out))


# Initializers smaller than this stay float32: scalars such as the logit cut of
# ``output="masks"`` keep their exact value, and they weigh nothing.
FP16_STORAGE_MIN_SIZE = 64


def fp16_weight_storage(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """``proto`` with every float32 weight (>= :data:`FP16_STORAGE_MIN_SIZE` values)
    stored as float16 and cast back to float32 by a ``Cast`` node in front of the graph.

    The arithmetic is unchanged (float32); only the weights are rounded to fp16, a
    relative 2**-11. onnxruntime constant-folds the casts when it loads the model.
    Raises :class:`ExportError` when a weight does not fit fp16's range.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = copy.deepcopy(proto)
    graph = proto.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < FP16_STORAGE_MIN_SIZE:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        if np.abs(values).max() > np.finfo(np.float16).max:
            raise ExportError(f"weight {init.name} exceeds the fp16 range (max |w| {np.abs(values).max():.3g}); export in fp32")
        half = numpy_helper.from_array(values.astype(np.float16), f"{init.name}_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=f"{init.name}_to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto


@torch.inference_mode()
def reference_probabilities(net: torch.nn.Module, frames: np.ndarray, *, batch_size: int = 4, fields: bool = False) -> np.ndarray:
    """The network's fp32 probabilities on the CPU: ``(B, H, W)`` -> ``(B, N, H, W)`` float32
    (with ``fields``, a line-field network's fields)."""
    net = net.float().eval()
    parts = []
    for start in range(0, len(frames), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size], np.float32)[:, None])
        out = net(x)
        parts.append((linefield_outputs(out) if fields else torch.sigmoid(out)).numpy())
    return np.concatenate(parts)


def _input_size(input_size, train_config: dict, multiple: int) -> tuple[int, int]:
    if input_size is None:
        side = int(train_config.get("image_size", 512))
        return (side, side)
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) != 2 or min(size) < multiple or any(v % multiple for v in size):
        raise ExportError(f"input_size must be (H, W), both positive multiples of {multiple}, got {input_size!r}")
    return size


def _trace(deployed: torch.nn.Module, path: Path, size: tuple[int, int], opset: int, *, dynamic_size: bool = False) -> None:
    example = torch.zeros(1, 1, *size)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript exporter: deprecated in favour of the dynamo one, which needs
        # onnxscript; it still exports these convolutional networks exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            deployed,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _check(path: Path, name: str, frames, reference, threshold, tolerance) -> ParityReport:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: frames[:, None]})
    return compare(reference, got, threshold=threshold, tolerance=tolerance).check(f"the ONNX export {name}")


def _canonical_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
