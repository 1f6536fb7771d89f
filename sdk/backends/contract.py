"""The backend contract: what a backend is, what it returns, and which backend runs a file.

The words, one meaning each (the README uses them the same way):

- **model**: a trained network saved as a file the SDK can run: an ONNX model
  (``.onnx``, with its metadata, :mod:`temtrack.sdk.modelmeta`), a TensorRT engine
  (``.engine``, with its sidecar, :mod:`temtrack.sdk.enginemeta`) or a training
  checkpoint (``.pt``). The models tem-track knows by name are in
  :mod:`temtrack.sdk.models` (the bundled default and the user's own).
- **backend**: what runs on frames and returns masks: a runtime for a model
  (``"onnxruntime"``, ``"tensorrt"``, ``"torch"``) or a method without one
  (``"classical"``). Backends are found by name in the registry,
  :func:`temtrack.sdk.backends.get_backend`.

This module holds the parts every backend shares:

- :class:`Backend`, the protocol (``name``, ``input_size``, ``threshold``,
  ``predict``, ``describe``; optionally ``predict_packed``);
- :class:`PackedMasks`, one frame's masks as bounding-box crops (what
  ``predict_packed`` returns and what the main job sends to its workers);
- the input and output checks of model backends: :func:`checked_frames`,
  :func:`normalisation` and :func:`checked_probabilities`;
- :data:`MODEL_SUFFIXES`, the one table from a model file's suffix to the backend
  that runs it, read through :func:`model_backend`.

numpy only (OpenCV when masks are packed); it must not import any backend, nor torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..enginemeta import ENGINE_SUFFIX
from ..modelmeta import ModelError

__all__ = [
    "MODEL_SUFFIXES",
    "Backend",
    "PackedMasks",
    "checked_frames",
    "checked_fields",
    "checked_probabilities",
    "has_model_suffix",
    "model_backend",
    "normalisation",
    "pad_to_multiple",
]

# Which backend runs a model file, by the file's suffix (lowercase). A file with any
# other suffix is tried as an ONNX model (model_backend's default).
MODEL_SUFFIXES: dict[str, str] = {
    ".onnx": "onnxruntime",
    ENGINE_SUFFIX: "tensorrt",
    ".pt": "torch",
    ".pth": "torch",
    ".ckpt": "torch",
}
_OTHER_FILES = "onnxruntime"


class Backend(Protocol):
    """What the runtime needs from a segmentation backend.

    Attributes
    ----------
    name : str
        Its registry name.
    input_size : (int, int) or None
        ``(H, W)`` in pixels that ``predict`` needs; None means any size (fit frames
        of other sizes with :mod:`temtrack.sdk.preprocess`).
    threshold : float or None
        The probability threshold post-processing should use on its output
        (``PostprocessSettings.threshold``); None when it returns thresholded uint8
        masks.

    Notes
    -----
    ``predict(frames)`` takes a ``(B, H, W)`` batch of frames in [0, 1] and returns a
    list of B ``(N_i, H, W)`` mask stacks, uint8 0/1 or float32 probabilities in
    [0, 1]; ``describe()`` returns its settings (and model hash) as JSON-serialisable
    values, for the outputs. A backend may also have ``predict_packed(frames)``: the
    same masks as :class:`PackedMasks`, which the main job prefers (the classical
    backend has it: a frame can hold hundreds of components).
    """

    name: str
    input_size: tuple[int, int] | None
    threshold: float | None

    def predict(self, frames: np.ndarray) -> list[np.ndarray]: ...

    def describe(self) -> dict: ...


def model_backend(path: str | os.PathLike) -> str:
    """The name of the backend that runs the model file ``path``, from its suffix.

    Parameters
    ----------
    path : str or path-like
        A model file (it need not exist).

    Returns
    -------
    str
        The backend :data:`MODEL_SUFFIXES` gives the suffix (case-insensitive);
        ``"onnxruntime"`` for any other suffix.

    Examples
    --------
    >>> model_backend("run/best.PT"), model_backend("model.engine"), model_backend("m.bin")
    ('torch', 'tensorrt', 'onnxruntime')
    """
    lowered = os.fspath(path).lower()
    for suffix, name in MODEL_SUFFIXES.items():
        if lowered.endswith(suffix):
            return name
    return _OTHER_FILES


def has_model_suffix(path: str | os.PathLike) -> bool:
    """Whether ``path`` ends in one of the :data:`MODEL_SUFFIXES` (case-insensitive)."""
    return os.fspath(path).lower().endswith(tuple(MODEL_SUFFIXES))


@dataclass(frozen=True)
class PackedMasks:
    """One frame's non-empty masks as bounding-box crops: what travels to a worker
    (a dislocation covers a few % of a frame, so crops cut the bytes by 10-100x).

    ``crops[k]`` is mask ``indices[k]`` cut at rows ``boxes[k, 0]:boxes[k, 0] + h`` and
    columns ``boxes[k, 1]:boxes[k, 1] + w`` of a ``shape`` frame.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` of the frame.
    indices : (K,) ndarray of int64
        Index of each crop's mask in the backend's ``(N, H, W)`` output.
    boxes : (K, 2) ndarray of int64
        Top row and left column of each crop.
    crops : tuple of K 2-D ndarrays
        The masks inside their boxes: uint8 0/1, or float16 probabilities.
    dtype : str
        ``"float16"`` for probabilities, else the masks' dtype.
    """

    shape: tuple
    indices: np.ndarray
    boxes: np.ndarray
    crops: tuple
    dtype: str

    @classmethod
    def pack(cls, masks: np.ndarray, threshold: float | None) -> PackedMasks:
        """The masks holding any pixel above ``threshold`` (nonzero for uint8/bool);
        float probabilities travel as float16 (1e-3 steps near 0.5)."""
        import cv2  # only when packing: the contract itself stays numpy-only

        floating = np.issubdtype(masks.dtype, np.floating)
        binary = masks > (threshold if floating and threshold is not None else 0)
        indices, boxes, crops = [], [], []
        for index in np.flatnonzero(binary.any(axis=(1, 2))):
            x, y, w, h = cv2.boundingRect(binary[index].view(np.uint8))
            crop = masks[index, y : y + h, x : x + w]
            crops.append(crop.astype(np.float16) if floating else np.ascontiguousarray(crop))
            indices.append(index)
            boxes.append((y, x))
        dtype = "float16" if floating else str(masks.dtype)
        return cls(tuple(masks.shape[1:]), np.asarray(indices, np.int64), np.asarray(boxes, np.int64).reshape(-1, 2),
                   tuple(crops), dtype)

    def unpack(self) -> np.ndarray:
        """The (K, H, W) masks, zero outside the crops; probabilities as float32 (numpy
        is several times slower on float16 arrays than on float32)."""
        masks = np.zeros((len(self.crops), *self.shape), np.float32 if self.dtype == "float16" else self.dtype)
        for mask, (y, x), crop in zip(masks, self.boxes.tolist(), self.crops):
            mask[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
        return masks


def checked_frames(frames, input_size: tuple[int, int], model: str) -> np.ndarray:
    """``frames`` if it is a batch a model backend can take.

    Parameters
    ----------
    frames : (B, H, W) ndarray
        Floating dtype in [0, 1], or uint8.
    input_size : (int, int)
        The model's ``(H, W)``.
    model : str
        The model's name, for the messages.

    Returns
    -------
    ndarray
        ``frames`` itself (not copied, not modified).

    Raises
    ------
    TypeError
        ``frames`` is not a numpy array.
    ValueError
        Wrong shape (the message says how to fit frames of another size) or dtype,
        NaN, or values outside [0, 1].
    """
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array of shape (B, H, W), got {type(frames).__name__}")
    height, width = input_size
    if frames.ndim != 3 or frames.shape[1:] != (height, width):
        raise ValueError(
            f"frames must have shape (B, {height}, {width}) for model {model}, got {frames.shape}; "
            "fit frames of another size with temtrack.sdk.preprocess.fit_to_input"
        )
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be of a floating dtype in [0, 1] or uint8, got dtype {frames.dtype}")
    if frames.size:
        low, high = float(frames.min()), float(frames.max())  # NaN propagates into both
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(f"frames must hold values in [0, 1] without NaN, got range [{low:g}, {high:g}]")
    return frames


def normalisation(frames: np.ndarray, scale: np.float32, shift: np.float32) -> tuple[np.float32, np.float32]:
    """``(scale, shift)`` taking checked ``frames`` to the model input ``x * scale + shift``:
    uint8 frames are read as ``frames / 255``."""
    return (scale / np.float32(255.0), shift) if frames.dtype == np.uint8 else (scale, shift)


def checked_probabilities(y: np.ndarray, *, source: str) -> np.ndarray:
    """``y`` clipped to [0, 1] in place, after checking it holds probabilities.

    Sigmoid kernels round to a few ulp outside [0, 1] (onnxruntime's CPU Sigmoid gives
    1.0000001 for large logits): values within 1e-5 of the interval are rounding and
    are clipped; anything further out (or NaN) is a model that does not output
    probabilities, and a :class:`~temtrack.sdk.modelmeta.ModelError` starting with
    ``source`` says so.

    Examples
    --------
    >>> checked_probabilities(np.array([0.0, 1.0000001], np.float32), source="m").tolist()
    [0.0, 1.0]
    """
    if y.size:
        low, high = float(y.min()), float(y.max())  # NaN propagates into both
        if not (-1e-5 <= low and high <= 1.0 + 1e-5):
            raise ModelError(
                f"{source} returned values in [{low:.7g}, {high:.7g}], not probabilities; if it outputs logits, "
                "set output='logits' with temtrack.sdk.modelmeta.write_metadata"
            )
        if low < 0.0 or high > 1.0:
            np.clip(y, 0.0, 1.0, out=y)
    return y


def checked_fields(y: np.ndarray, *, source: str) -> np.ndarray:
    """``y`` ``(B, C, H, W)`` line fields, checked and clipped in place: channel 0 and the
    extras (``3:``) are maps in [0, 1], channels 1-2 the direction in [-1, 1] (rounding
    within 1e-5 is clipped; anything further out or NaN is a
    :class:`~temtrack.sdk.modelmeta.ModelError` starting with ``source``)."""
    checked_probabilities(y[:, :1], source=f"{source} (centre map)")
    if y.shape[1] > 3:
        checked_probabilities(y[:, 3:], source=f"{source} (extra maps)")
    direction = y[:, 1:3]
    if direction.size:
        low, high = float(direction.min()), float(direction.max())
        if not (-1.0 - 1e-5 <= low and high <= 1.0 + 1e-5):
            raise ModelError(f"{source} returned a direction field in [{low:.7g}, {high:.7g}], not in [-1, 1]")
        np.clip(direction, -1.0, 1.0, out=direction)
    return y


def pad_to_multiple(frames: np.ndarray, multiple: int) -> np.ndarray:
    """``(B, H, W)`` frames padded at the bottom and right to multiples of ``multiple``
    by reflection (no edge that a line-field model could read as a line; by repeating
    the last row or column where a frame is too small to reflect); the frames
    themselves when no padding is needed. How every backend feeds a graph of any size.

    >>> pad_to_multiple(np.arange(3.0).reshape(1, 1, 3), 4).tolist()
    [[[0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 2.0]]]
    """
    height, width = frames.shape[1:]
    ph, pw = -height % multiple, -width % multiple
    if not (ph or pw):
        return frames
    mode = "reflect" if ph < height and pw < width else "edge"
    return np.pad(frames, ((0, 0), (0, ph), (0, pw)), mode=mode)
