"""What a segmentation model file says about itself: the ``"temtrack"`` metadata.

The export step writes, and the runtime reads, one JSON object stored in the ONNX
file's ``metadata_props`` under the single key ``"temtrack"`` (:data:`METADATA_KEY`).
It holds what running the model needs and the graph cannot say: the input size the
model was trained for, the normalisation of frames, whether the output is logits or
probabilities, and the probability threshold for post-processing; plus a free
``extra`` dict for training provenance. Example of the stored value::

    {"format_version": 1, "input_size": [512, 512], "channels": 1, "mean": 0.45,
     "std": 0.22, "n_masks": 20, "threshold": 0.5, "output": "logits",
     "name": "unetpp-sd2", "version": "2024-05", "description": "", "extra": {}}

Reading (:func:`read_metadata`, :func:`output_op_types`) and writing
(:func:`write_metadata`, for the export step and the tests) parse the file with
``onnx``, a dependency of the runtime, imported lazily inside the functions so that
importing this module stays cheap. Weights in external data files are never loaded.
Must never import torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "ModelError",
    "ModelMetadata",
    "check_against_graph",
    "file_sha256",
    "output_op_types",
    "read_metadata",
    "model_threshold",
    "write_metadata",
]

METADATA_KEY = "temtrack"
FORMAT_VERSION = 1


class ModelError(ValueError):
    """A model file is not a usable tem-track model: not ONNX, an incompatible graph,
    or invalid ``"temtrack"`` metadata. The message names the file and how to fix it."""


class ModelMetadata(BaseModel):
    """The ``"temtrack"`` metadata of a model file. Unknown keys are an error.

    Attributes
    ----------
    format_version : int
        Version of this schema; only :data:`FORMAT_VERSION` (1) is understood.
    input_size : (int, int)
        ``(H, W)`` in pixels of the frames the model takes (its training patch size).
    channels : int
        Input channels; the runtime feeds grayscale frames and needs 1.
    mean, std : float
        Input normalisation: a frame ``x`` in [0, 1] enters the model as
        ``(x - mean) / std``. ``std`` > 0.
    n_masks : int
        The output channels per frame: N masks for the multi-label family; for the
        line-field family its fields (centre, cos 2θ, sin 2θ and any extras).
    threshold : float
        Probability above which a mask pixel is dislocation, in [0, 1).
    output : {"logits", "probabilities", "masks", "fields"}
        What the graph's output holds: float logits (the runtime applies a sigmoid),
        float probabilities, or uint8 0/1 masks already thresholded in the graph; for
        a line-field model ``"fields"``: the centre map in [0, 1] and the direction in
        [-1, 1] (activations in the graph).
    family : {"multilabel", "linefield"}
        The model family (:mod:`temtrack.sdk.linefield` turns fields into
        dislocations, :mod:`temtrack.sdk.postprocess` masks).
    line_threshold : float, optional
        A line-field model's upper threshold on its centre map: the ``--threshold`` its
        tracing runs at unless the user gives one (``LineFieldSettings.for_threshold``),
        for a model whose centre map runs lower or higher than the one the tracing's
        defaults were chosen for. None: the tracing's defaults. Only for
        ``family="linefield"`` (``threshold`` is the mask threshold of the other family).
    size_multiple : int, optional
        A fully convolutional graph with dynamic height and width: it takes frames of
        any size whose sides are multiples of this (the runtime pads them), so frames
        run at their own pixel size; ``input_size`` is then the training size only.
    name, version, description : str
        Free text for people and reports.
    extra : dict
        JSON-serialisable provenance (training data, epochs, scores, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = FORMAT_VERSION
    input_size: tuple[int, int]
    channels: int = 1
    mean: float = 0.0
    std: float = 1.0
    n_masks: int
    threshold: float = 0.5
    output: Literal["logits", "probabilities", "masks", "fields"]
    family: Literal["multilabel", "linefield"] = "multilabel"
    size_multiple: int | None = None
    line_threshold: float | None = None
    name: str = ""
    version: str = ""
    description: str = ""
    extra: dict = {}

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, value):
        if value != FORMAT_VERSION:
            raise ValueError(
                f"format_version {value} is not understood by this tem-track (it reads version {FORMAT_VERSION}); "
                "use the tem-track version that exported the model, or re-export it"
            )
        return value

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value):
        if min(value) < 1:
            raise ValueError(f"input_size must be (H, W) in pixels, both >= 1, got {value}")
        return value

    @field_validator("channels", "n_masks")
    @classmethod
    def _positive(cls, value):
        if value < 1:
            raise ValueError(f"must be an integer >= 1, got {value}")
        return value

    @field_validator("mean")
    @classmethod
    def _finite(cls, value):
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a finite number > 0, got {value}")
        return value

    @field_validator("threshold")
    @classmethod
    def _unit_threshold(cls, value):
        # Same range as PostprocessSettings.threshold, which it becomes.
        if not 0.0 <= value < 1.0:
            raise ValueError(f"must lie in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _family_output(self):
        if (self.family == "linefield") != (self.output == "fields"):
            raise ValueError(
                f"family={self.family!r} with output={self.output!r}: a line-field model outputs 'fields', "
                "a multi-label model 'logits', 'probabilities' or 'masks'"
            )
        if self.line_threshold is not None:
            if self.family != "linefield":
                raise ValueError(f"line_threshold is for a line-field model, not family={self.family!r} (whose mask threshold is 'threshold')")
            if not 0.0 < self.line_threshold < 1.0:
                raise ValueError(f"line_threshold must lie in (0, 1), got {self.line_threshold}")
        if self.size_multiple is not None and self.size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1 or None, got {self.size_multiple}")
        return self

    @field_validator("extra")
    @classmethod
    def _json_extra(cls, value):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON-serialisable: {exc}") from None
        return value

    def to_json(self) -> str:
        """The JSON text stored under :data:`METADATA_KEY`."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str, *, source: str | os.PathLike = "<string>") -> ModelMetadata:
        """Parse the stored JSON text; :class:`ModelError` naming ``source`` if invalid."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ModelError(
                f"{source}: invalid {METADATA_KEY!r} metadata ({problems}); "
                "rewrite it with temtrack.sdk.modelmeta.write_metadata"
            ) from None


def model_threshold(metadata: ModelMetadata) -> float | None:
    """The threshold a runtime offers the post-processing for a model (its
    ``threshold`` attribute, which the main job and eval use unless the user gives
    one): the mask threshold of a model that outputs probabilities or logits; None
    for one that outputs masks thresholded in the graph; a line-field model's
    ``line_threshold`` (None: the tracing's defaults)."""
    if metadata.output == "fields":
        return metadata.line_threshold
    return None if metadata.output == "masks" else metadata.threshold


def read_metadata(path: str | os.PathLike) -> ModelMetadata | None:
    """The ``"temtrack"`` metadata of an ONNX file, or None if it has none.

    Parameters
    ----------
    path : str or path-like
        An ONNX model file. Weights stored in external data files are not loaded.

    Returns
    -------
    ModelMetadata or None
        None when the file has no ``"temtrack"`` key.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelError
        The file is not an ONNX model, or its ``"temtrack"`` value is not valid JSON
        for :class:`ModelMetadata` (or appears more than once).
    """
    return _metadata_in(_load_model(path), path)


def output_op_types(path: str | os.PathLike) -> dict[str, str]:
    """The operator producing each graph output of an ONNX file, e.g. ``{"masks": "Sigmoid"}``.

    An output that is a graph input or an initializer maps to ``""``.

    Raises
    ------
    FileNotFoundError, ModelError
        As :func:`read_metadata`.
    """
    return _output_ops(_load_model(path))


def write_metadata(model: onnx.ModelProto | str | os.PathLike, metadata: ModelMetadata) -> onnx.ModelProto:
    """Store ``metadata`` under ``"temtrack"`` in an ONNX model, replacing any previous value.

    The metadata is first checked against the graph's static shapes (input
    ``(B, channels, H, W)`` with ``(H, W) == input_size``, output ``(B, n_masks, H, W)``);
    dynamic dimensions are accepted.

    Parameters
    ----------
    model : onnx.ModelProto or str or path-like
        A model in memory (not modified: a copy is returned) or an ONNX file, which is
        rewritten in place (weights stored in external data files stay where they are).
    metadata : ModelMetadata

    Returns
    -------
    onnx.ModelProto
        The model with the metadata (for a file, what was saved).

    Raises
    ------
    TypeError
        ``metadata`` is not a :class:`ModelMetadata`, or ``model`` neither a model nor a path.
    FileNotFoundError
        ``model`` is a path that does not exist.
    ModelError
        The file cannot be parsed, or the metadata contradicts the graph.
    """
    import onnx

    if not isinstance(metadata, ModelMetadata):
        raise TypeError(f"metadata must be a ModelMetadata, got {type(metadata).__name__}")
    if isinstance(model, onnx.ModelProto):
        source, path = "<in-memory model>", None
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    elif isinstance(model, (str, os.PathLike)):
        path = _existing_file(model)
        source = str(path)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise ModelError(f"{path}: not an ONNX model, it cannot be parsed ({exc})") from exc
    else:
        raise TypeError(f"model must be an onnx.ModelProto or a file path, got {type(model).__name__}")

    graph = proto.graph
    if len(graph.input) and len(graph.output):
        initializers = {t.name for t in graph.initializer}
        inputs = [v for v in graph.input if v.name not in initializers]
        if len(inputs) == 1 and len(graph.output) == 1:
            check_against_graph(
                metadata,
                input_shape=_proto_shape(inputs[0]),
                output_shape=_proto_shape(graph.output[0]),
                source=source,
            )
    keep = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    proto.metadata_props.add(key=METADATA_KEY, value=metadata.to_json())
    if path is not None:
        onnx.save(proto, str(path))
    return proto


def check_against_graph(
    metadata: ModelMetadata,
    *,
    input_shape: tuple | None,
    output_shape: tuple | None,
    source: str | os.PathLike,
) -> None:
    """Raise :class:`ModelError` where ``metadata`` contradicts the graph's static shapes.

    Parameters
    ----------
    metadata : ModelMetadata
    input_shape, output_shape : tuple of (int or None), or None
        The graph's input ``(B, C, H, W)`` and output ``(B, N, H, W)``; None for an
        unknown dimension or an unknown shape. Shapes of another rank are not checked
        here (the backend rejects them with its own message).
    source : str or path-like
        The file, for the message.
    """
    fix = "fix the metadata with temtrack.sdk.modelmeta.write_metadata or re-export the model"
    height, width = metadata.input_size
    if input_shape is not None and len(input_shape) == 4:
        _, channels, h, w = input_shape
        if channels is not None and channels != metadata.channels:
            raise ModelError(
                f"{source}: metadata says channels={metadata.channels} but the graph input has {channels} channels; {fix}"
            )
        if metadata.size_multiple is not None:
            if h is not None or w is not None:
                raise ModelError(
                    f"{source}: metadata says size_multiple={metadata.size_multiple} (any frame size) but the graph "
                    f"input {_shape_text(input_shape)} has a fixed size; {fix}"
                )
        elif (h is not None and h != height) or (w is not None and w != width):
            raise ModelError(
                f"{source}: metadata says input_size=({height}, {width}) but the graph input is "
                f"{_shape_text(input_shape)}; {fix}"
            )
    if output_shape is not None and len(output_shape) == 4:
        _, n, h, w = output_shape
        if n is not None and n != metadata.n_masks:
            raise ModelError(
                f"{source}: metadata says n_masks={metadata.n_masks} but the graph output has {n} masks; {fix}"
            )
        if metadata.size_multiple is None and ((h is not None and h != height) or (w is not None and w != width)):
            raise ModelError(
                f"{source}: the graph output {_shape_text(output_shape)} does not have the input size "
                f"({height}, {width}); tem-track needs masks at the input resolution"
            )


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    path = _existing_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- internals -----------------------------------------------------------------------


def _existing_file(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not an ONNX model file")
    return path


def _shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _proto_shape(value_info) -> tuple | None:
    """(int or None, ...) of an onnx ValueInfoProto; None if it has no shape."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def _load_model(path) -> onnx.ModelProto:
    """The ModelProto of an ONNX file for reading, without its external data.

    Raises FileNotFoundError, or ModelError naming the file when it is empty, cannot
    be parsed as a binary ONNX model, or has no graph.
    """
    import onnx

    path = _existing_file(path)
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        # Binary protobuf whatever the file's extension (onnx would guess a text format
        # from ".txt" or ".json").
        model = onnx.load(str(path), format="protobuf", load_external_data=False)
    except MemoryError:
        raise
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{path}: not an ONNX model, it cannot be parsed ({exc})") from exc
    if not model.HasField("graph"):
        raise ModelError(f"{path}: not an ONNX model, it cannot be parsed (no graph)")
    return model


def _metadata_in(model: onnx.ModelProto, source) -> ModelMetadata | None:
    """The ``"temtrack"`` metadata of a loaded model; ``source`` names it in errors."""
    values = [p.value for p in model.metadata_props if p.key == METADATA_KEY]
    if not values:
        return None
    if len(values) > 1:
        raise ModelError(
            f"{source}: holds {len(values)} {METADATA_KEY!r} metadata entries; "
            "rewrite it with temtrack.sdk.modelmeta.write_metadata (which keeps one)"
        )
    value = values[0]
    if isinstance(value, bytes):  # onnx.proto is proto2: strings are not checked for UTF-8
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{source}: its {METADATA_KEY!r} metadata is not UTF-8 text") from None
    return ModelMetadata.from_json(value, source=source)


def _output_ops(model: onnx.ModelProto) -> dict[str, str]:
    """The operator producing each graph output of a loaded model (``""`` for none)."""
    producers = {}
    for node in model.graph.node:
        for name in node.output:
            producers[_str(name)] = _str(node.op_type)
    return {_str(out.name): producers.get(_str(out.name), "") for out in model.graph.output}


def _str(value) -> str:
    """A proto2 string field as text (invalid UTF-8 arrives as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
