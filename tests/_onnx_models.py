"""Tiny ONNX models with known outputs, built with ``onnx.helper`` (no torch).

For tests anywhere in the project (``from _onnx_models import ...``; tests/ is on the
path). Every model is a 1x1 convolution, so its masks are a per-pixel function of the
input that :func:`dark_line_reference` computes in numpy:

- mask 0 = sigmoid(k * (t - z)), with z = (frame - mean) / std the model input, so
  pixels darker than ``t`` become foreground (a dark line gives a line mask);
- masks 1..N-1 = sigmoid(-k), about 2e-9 for k = 20: empty at any threshold.

The graph ends with a Sigmoid when ``output="probabilities"``; with ``"logits"`` it
stops at the convolution and the runtime applies the sigmoid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import onnx
from onnx import TensorProto, helper, numpy_helper

from temtrack.sdk.modelmeta import METADATA_KEY, ModelMetadata, write_metadata

# Supported by every onnxruntime the project allows (>= 1.17).
OPSET = 17
IR_VERSION = 8


def dark_line_reference(frames, *, n_masks: int = 4, k: float = 20.0, t: float = 0.5, mean: float = 0.0, std: float = 1.0):
    """What :func:`dark_line_model` predicts, as probabilities.

    Parameters
    ----------
    frames : (B, H, W) array_like of float in [0, 1]

    Returns
    -------
    (B, N, H, W) ndarray of float64
    """
    z = (np.asarray(frames, np.float64) - mean) / std
    logits = np.empty((len(z), n_masks, *z.shape[1:]))
    logits[:, 0] = k * (t - z)
    logits[:, 1:] = -k
    return 1.0 / (1.0 + np.exp(-logits))


def dark_line_model(
    path,
    *,
    size=(64, 64),
    n_masks: int = 4,
    output: str = "logits",
    metadata: bool = True,
    batch: int | None = None,
    k: float = 20.0,
    t: float = 0.5,
    mean: float = 0.0,
    std: float = 1.0,
    threshold: float = 0.5,
    dynamic_size: bool = False,
) -> Path:
    """Write the dark-line model (see the module docstring) to ``path``.

    Parameters
    ----------
    size : (int, int)
        ``(H, W)`` of the input; static in the graph unless ``dynamic_size``.
    output : {"logits", "probabilities"}
    metadata : bool
        Store ``"temtrack"`` metadata (input_size, mean, std, n_masks, threshold, output).
    batch : int, optional
        A fixed batch dimension; None: dynamic.
    """
    height, width = size
    spatial = ["h", "w"] if dynamic_size else [height, width]
    b = batch if batch is not None else "batch"
    weights = np.zeros((n_masks, 1, 1, 1), np.float32)
    weights[0] = -k
    biases = np.full(n_masks, -k, np.float32)
    biases[0] = k * t
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logits" if output == "probabilities" else "masks"])]
    if output == "probabilities":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["masks"]))
    model = _model(
        nodes,
        helper.make_tensor_value_info("image", TensorProto.FLOAT, [b, 1, *spatial]),
        helper.make_tensor_value_info("masks", TensorProto.FLOAT, [b, n_masks, *spatial]),
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(biases, "b")],
    )
    if metadata:
        meta = ModelMetadata(
            input_size=size, n_masks=n_masks, output=output, mean=mean, std=std, threshold=threshold, name="dark-line"
        )
        model = write_metadata(model, meta)
    return _save(model, path)


def wrong_rank_model(path) -> Path:
    """Input (B, 64, 64) without a channel axis; output (B, 1, 64, 64)."""
    nodes = [helper.make_node("Unsqueeze", ["image", "axes"], ["masks"])]
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return _save(
        _model(
            nodes,
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 64, 64]),
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["batch", 1, 64, 64]),
            [axes],
        ),
        path,
    )


def wrong_output_rank_model(path) -> Path:
    """Input (B, 1, 64, 64); output (B, 64, 64)."""
    nodes = [helper.make_node("Squeeze", ["image", "axes"], ["masks"])]
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return _save(
        _model(
            nodes,
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 64, 64]),
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["batch", 64, 64]),
            [axes],
        ),
        path,
    )


def three_channel_model(path, *, n_masks: int = 2) -> Path:
    """Input (B, 3, 64, 64), as an RGB-pretrained encoder would have; output (B, N, 64, 64)."""
    weights = numpy_helper.from_array(np.ones((n_masks, 3, 1, 1), np.float32), "w")
    return _save(
        _model(
            [helper.make_node("Conv", ["image", "w"], ["masks"])],
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64]),
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["batch", n_masks, 64, 64]),
            [weights],
        ),
        path,
    )


def dynamic_size_model(path, *, n_masks: int = 4, output: str = "logits") -> Path:
    """The dark-line model with dynamic (H, W) and no metadata: its input size is unknown."""
    return dark_line_model(path, n_masks=n_masks, output=output, metadata=False, dynamic_size=True)


def set_raw_metadata(path, value: str, *, key: str = METADATA_KEY) -> Path:
    """Store ``value`` as it is under ``key`` (e.g. invalid JSON), replacing that key."""
    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=key, value=value)
    return _save(model, path)


def _model(nodes, image, masks, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tem-track-test", [image], [masks], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path) -> Path:
    path = Path(path)
    onnx.save(model, str(path))
    return path
