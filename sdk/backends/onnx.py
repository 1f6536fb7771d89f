"""The ONNX Runtime backend: a trained U-Net++ exported to ONNX, on the CPU or a GPU.

A model file must have one input ``(B, 1, H, W)`` (float32, grayscale frames after
normalisation) and one output ``(B, N, H, W)`` (float32/float16 logits or
probabilities, or uint8 0/1 masks thresholded in the graph, at the input resolution).
What the graph cannot say comes from the file's ``"temtrack"`` metadata
(:mod:`temtrack.sdk.modelmeta`).

Execution providers: the CPU by default; ``CUDAExecutionProvider`` and
``TensorrtExecutionProvider`` (the ``onnxruntime-gpu`` package, ``[gpu]`` extra) when
asked for, with settings from :func:`provider_options` (TensorRT: fp16, optimisation
profile for batch 1 to 32, engine and timing caches in a folder beside the model).
:data:`GPU_PROVIDERS` is the order the ``auto`` backend tries. Every run goes through
ONNX Runtime's I/O binding: the frames are read from the caller's buffer and the masks
written straight into a fresh numpy array, with no intermediate copies on the host.

Without that metadata the backend falls back to the graph: the input size ``(H, W)``
and N must then be static in the graph (else :class:`ModelError` says how to add the
metadata), the normalisation is none (mean 0, std 1), the threshold 0.5, and the
output counts as probabilities when the node producing it is a ``Sigmoid`` and as
logits otherwise. ``describe()["metadata_source"]`` says which case applies.

onnxruntime and onnx are imported when a backend is built, never when this module is
imported.
The session is created once per backend and reused by every ``predict`` call. Must
never import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..modelmeta import (
    METADATA_KEY,
    ModelError,
    ModelMetadata,
    _load_model,
    _metadata_in,
    _output_ops,
    check_against_graph,
    file_sha256,
    model_threshold,
)
from .contract import checked_fields, checked_frames, checked_probabilities, normalisation, pad_to_multiple

__all__ = ["DEFAULT_PROVIDERS", "GPU_PROVIDERS", "ModelError", "OnnxBackend", "provider_options"]

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
# Fastest first: what the auto backend tries, each falling back to the next.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
MAX_BATCH = 32  # TensorRT optimisation profile: batch 1..MAX_BATCH
_OUTPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}

_ADD_METADATA = (
    "add the metadata with temtrack.sdk.modelmeta.write_metadata(path, ModelMetadata(input_size=(H, W), "
    "n_masks=N, output='logits' or 'probabilities', ...))"
)


class OnnxBackend:
    """Instance-mask probabilities from an ONNX model, by ONNX Runtime.

    Parameters
    ----------
    path : str or path-like
        The ``.onnx`` model file.
    providers : sequence of str, optional
        ONNX Runtime execution providers, in order of preference; each must be in
        ``onnxruntime.get_available_providers()``. Default: ``["CPUExecutionProvider"]``.
    threads : int, optional
        Threads for one operator (ONNX Runtime's ``intra_op_num_threads``); default:
        ONNX Runtime's choice (the physical cores).

    Attributes
    ----------
    name : str
        ``"onnxruntime"``.
    path : pathlib.Path
        The model file.
    metadata : ModelMetadata
        From the file, or the fallback built from the graph (see the module docstring).
    metadata_source : {"file", "graph"}
        Where ``metadata`` came from.
    input_size : (int, int)
        ``(H, W)`` in pixels that ``predict`` needs.
    n_masks : int
        N, masks per frame.
    threshold : float or None
        Threshold for post-processing (:func:`~temtrack.sdk.modelmeta.model_threshold`):
        ``metadata.threshold`` for probabilities; None for uint8 masks thresholded in
        the graph; a line-field model's ``metadata.line_threshold``.
    providers : list of str
        The providers the session uses.
    sha256 : str
        Hex SHA-256 of the model file when it was loaded.
    session : onnxruntime.InferenceSession
        Created once, here.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelError
        The file is not an ONNX model or not one tem-track can run (the message says
        which and how to fix it).
    ValueError
        An unavailable provider, or ``threads`` < 1.
    TypeError
        ``path``, ``providers`` or ``threads`` of the wrong type.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, providers=None, threads: int | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path-like (the .onnx file), got {type(path).__name__}")
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        if self.path.is_dir():
            raise ModelError(f"{self.path} is a directory, not an ONNX model file")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))):
            raise TypeError(f"threads must be an integer >= 1 or None, got {threads!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
        self.threads = None if threads is None else int(threads)

        import onnxruntime

        self._ort_version = onnxruntime.__version__
        requested = _check_providers(providers, onnxruntime.get_available_providers())
        options = onnxruntime.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path),
                sess_options=options,
                providers=[(p, provider_options(p, self.path)) for p in requested],
            )
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's own exception classes derive from Exception only
            raise ModelError(
                f"{self.path}: not an ONNX model that onnxruntime {self._ort_version} can load "
                f"({_first_line(exc)}); give the .onnx file written by tem-track's export step"
            ) from exc
        self.providers = list(self.session.get_providers())
        # onnxruntime falls back to the CPU, with only a printed warning, when a
        # provider fails to start (e.g. CUDA without a driver); say so instead.
        failed = [p for p in requested if p not in self.providers]
        if failed:
            raise ValueError(
                f"execution provider(s) {', '.join(map(repr, failed))} could not be started for {self.path} "
                f"(onnxruntime uses {', '.join(self.providers)}); check the GPU driver and CUDA libraries, "
                "or leave providers unset to run on the CPU"
            )
        # Hashed when loaded, so that the hash describes the model that runs.
        self.sha256 = file_sha256(self.path)

        self._input, self._output = self._check_graph()
        # Parsed once for both the metadata and the output's producer (what
        # read_metadata and output_op_types each do from the file).
        proto = _load_model(self.path)
        metadata = _metadata_in(proto, self.path)
        last_op = _output_ops(proto).get(self._output.name, "")
        input_shape, output_shape = _shape(self._input.shape), _shape(self._output.shape)
        if metadata is None:
            self.metadata_source = "graph"
            metadata = self._fallback_metadata(input_shape, output_shape, last_op)
        else:
            self.metadata_source = "file"
            check_against_graph(metadata, input_shape=input_shape, output_shape=output_shape, source=self.path)
            if metadata.channels != 1:
                raise ModelError(
                    f"{self.path}: metadata says channels={metadata.channels}; tem-track feeds grayscale frames, "
                    "so the model must take 1 channel (export it with in_channels=1)"
                )
            if metadata.output == "logits" and last_op == "Sigmoid":
                raise ModelError(
                    f"{self.path}: metadata says output='logits' but the graph ends with a Sigmoid, so it "
                    "outputs probabilities; set output='probabilities' with temtrack.sdk.modelmeta.write_metadata"
                )
        if metadata.output == "fields" and self._output.type == "tensor(uint8)":
            raise ModelError(f"{self.path}: metadata says output='fields' but the graph output is uint8; re-export the model")
        if metadata.output != "fields" and (metadata.output == "masks") != (self._output.type == "tensor(uint8)"):
            raise ModelError(
                f"{self.path}: metadata says output={metadata.output!r} but the graph output is {self._output.type}; "
                "uint8 output goes with output='masks' (thresholded in the graph), float output with "
                "'logits' or 'probabilities'; re-export the model"
            )
        self.metadata = metadata
        self.family = metadata.family
        # A fully convolutional graph takes any size: frames run at their own pixel size.
        self._multiple = metadata.size_multiple
        self.input_size = None if self._multiple else tuple(metadata.input_size)
        self.n_masks = metadata.n_masks
        self.threshold = model_threshold(metadata)
        self._dtype = _OUTPUT_TYPES[self._output.type]
        batch = input_shape[0]
        # A graph exported with a fixed batch runs in chunks of that size.
        self._batch = batch if isinstance(batch, int) and batch > 0 else None
        self._scale = np.float32(1.0 / metadata.std)
        self._shift = np.float32(-metadata.mean / metadata.std)

    # --- public ----------------------------------------------------------------------

    def predict(self, frames: np.ndarray) -> list[np.ndarray]:
        """Mask probabilities of each frame.

        Parameters
        ----------
        frames : (B, H, W) ndarray of floating dtype in [0, 1], or of uint8
            Grayscale frames with ``(H, W) == input_size`` (fit other sizes with
            :func:`temtrack.sdk.preprocess.fit_to_input`); uint8 is read as
            ``frames / 255``. A single frame must be given as ``frames[None]``.
            Not modified.

        Returns
        -------
        list of B ndarrays, each (N, H, W)
            float32 probabilities in [0, 1] (the sigmoid of the output when the model
            gives logits), or uint8 0/1 masks for a model thresholded in the graph; for
            a line-field model float32 fields (centre, cos 2θ, sin 2θ, extras). The
            arrays are views into one buffer per model run.

        Raises
        ------
        TypeError
            ``frames`` is not a numpy array.
        ValueError
            Wrong shape or dtype, NaN, or values outside [0, 1].
        ModelError
            The model's output does not have the shape its metadata promises, or
            "probabilities" outside [0, 1].
        """
        x = self._model_input(frames)
        if len(x) == 0:
            return []
        if self._multiple:  # padded: cut the outputs back to the frames
            height, width = frames.shape[1:]
            return [y[:, :height, :width] for y in self._predict_chunks(x)]
        return self._predict_chunks(x)

    def _predict_chunks(self, x: np.ndarray) -> list[np.ndarray]:
        step = self._batch or len(x)
        result = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            count = len(chunk)
            if count < step:  # last chunk of a fixed-batch model: pad with copies
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - count, axis=0)])
            result.extend(self._run(chunk)[:count])
        return result

    def describe(self) -> dict:
        """The backend, model file and hash, metadata and runtime, as JSON-serialisable values."""
        return {
            "backend": self.name,
            "model": str(self.path.resolve()),
            "sha256": self.sha256,
            "metadata": self.metadata.model_dump(mode="json"),
            "metadata_source": self.metadata_source,
            "providers": list(self.providers),
            "threads": self.threads,
            "onnxruntime": self._ort_version,
        }

    def __repr__(self) -> str:
        return (
            f"OnnxBackend({str(self.path)!r}, input_size={self.input_size}, n_masks={self.n_masks}, "
            f"providers={self.providers})"
        )

    # --- internals -------------------------------------------------------------------

    def _check_graph(self):
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{self.path}: the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "tem-track needs one image input (B, 1, H, W)"
            )
        if len(outputs) != 1:
            raise ModelError(
                f"{self.path}: the graph has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); "
                "tem-track needs one mask output (B, N, H, W)"
            )
        (inp,), (out,) = inputs, outputs
        if inp.type != "tensor(float)":
            raise ModelError(f"{self.path}: the graph input {inp.name!r} is {inp.type}; tem-track feeds tensor(float) (float32)")
        shape = _shape(inp.shape)
        if len(shape) != 4:
            raise ModelError(
                f"{self.path}: the graph input {inp.name!r} has shape {_text(inp.shape)}, rank {len(shape)}; "
                "tem-track needs rank 4 (B, C, H, W) with C = 1"
            )
        if shape[1] is not None and shape[1] != 1:
            raise ModelError(
                f"{self.path}: the graph input {inp.name!r} has shape {_text(inp.shape)}, {shape[1]} channels; "
                "tem-track feeds grayscale frames, so C must be 1 (export the model with in_channels=1)"
            )
        out_shape = _shape(out.shape)
        if len(out_shape) != 4:
            raise ModelError(
                f"{self.path}: the graph output {out.name!r} has shape {_text(out.shape)}, rank {len(out_shape)}; "
                "tem-track needs rank 4 (B, N, H, W)"
            )
        if out.type not in _OUTPUT_TYPES:
            raise ModelError(
                f"{self.path}: the graph output {out.name!r} is {out.type}; tem-track needs float or uint8 masks"
            )
        return inp, out

    def _fallback_metadata(self, input_shape, output_shape, last_op: str) -> ModelMetadata:
        _, _, height, width = input_shape
        if height is None or width is None:
            raise ModelError(
                f"{self.path}: the input size cannot be determined: the graph input {self._input.name!r} has "
                f"dynamic shape {_text(self._input.shape)} and the file has no {METADATA_KEY!r} metadata; "
                + _ADD_METADATA
            )
        n_masks = output_shape[1]
        if n_masks is None:
            raise ModelError(
                f"{self.path}: the number of masks cannot be determined: the graph output {self._output.name!r} "
                f"has shape {_text(self._output.shape)} and the file has no {METADATA_KEY!r} metadata; "
                + _ADD_METADATA
            )
        metadata = ModelMetadata(
            input_size=(height, width),
            n_masks=n_masks,
            output="masks" if self._output.type == "tensor(uint8)" else "probabilities" if last_op == "Sigmoid" else "logits",
        )
        check_against_graph(metadata, input_shape=input_shape, output_shape=output_shape, source=self.path)
        return metadata

    def _model_input(self, frames) -> np.ndarray:
        """Validated frames as one C-contiguous (B, 1, H, W) float32 array, normalised
        (for a graph of any size, padded by reflection to its size multiple)."""
        size = self.input_size or tuple(getattr(frames, "shape", (0, 0))[-2:])
        scale, shift = normalisation(checked_frames(frames, size, self.path.name), self._scale, self._shift)
        if self._multiple:
            frames = pad_to_multiple(frames, self._multiple)
        height, width = frames.shape[1:]
        if frames.dtype == np.float32 and scale == 1 and shift == 0 and frames.flags.c_contiguous:
            x = frames  # fed as it is: onnxruntime does not write to its inputs
        else:
            x = np.multiply(frames, scale, dtype=np.float32)
            if shift:
                x += shift
        return x.reshape(len(x), 1, height, width)

    def _run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        expected = (len(x), self.n_masks, *x.shape[2:])
        # I/O binding: onnxruntime reads the frames from x and writes the masks into y
        # (copied to or from the GPU directly for a GPU provider). A graph whose output
        # shape is not (B, N, H, W) fails here, in onnxruntime, with the shapes named.
        y = np.empty(expected, self._dtype)
        binding = self.session.io_binding()
        binding.bind_input(self._input.name, "cpu", 0, np.float32, x.shape, x.ctypes.data)
        binding.bind_output(self._output.name, "cpu", 0, self._dtype, y.shape, y.ctypes.data)
        try:
            self.session.run_with_iobinding(binding)
        except MemoryError:
            raise
        except Exception as exc:
            raise ModelError(
                f"{self.path}: the model failed on an input of shape {x.shape}, expecting masks of shape "
                f"{expected} ({_first_line(exc)})"
            ) from exc
        if y.dtype == np.uint8:
            return y
        if y.dtype != np.float32:
            y = y.astype(np.float32)
        if self.metadata.output == "fields":
            checked_fields(y, source=f"{self.path}: metadata says output='fields' but the model")
        elif self.metadata.output == "logits":
            # In place: the output buffer is ours. exp overflows to inf for very
            # negative logits, which correctly gives probability 0.
            with np.errstate(over="ignore"):
                np.negative(y, out=y)
                np.exp(y, out=y)
                y += np.float32(1.0)
                np.reciprocal(y, out=y)
        else:
            checked_probabilities(y, source=f"{self.path}: metadata says output='probabilities' but the model")
        return y


def provider_options(provider: str, model: Path) -> dict:
    """The settings tem-track gives an execution provider for ``model``.

    TensorRT: fp16 kernels, an optimisation profile for batch 1 to :data:`MAX_BATCH` at
    the model's size, and its engine and timing caches in ``.<model>.trt-cache/``
    beside the model (the first run builds the engine, minutes; later runs load it).
    CUDA: cuDNN's exhaustive convolution search (the shapes never change). Others:
    none.
    """
    if provider == "TensorrtExecutionProvider":
        cache = model.parent / f".{model.name}.trt-cache"
        options = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        metadata = _metadata_in(_load_model(model), model)
        if metadata is not None and metadata.size_multiple is None:
            height, width = metadata.input_size
            shape = lambda b: f"image:{b}x1x{height}x{width}"  # noqa: E731
            options.update(
                trt_profile_min_shapes=shape(1), trt_profile_opt_shapes=shape(8), trt_profile_max_shapes=shape(MAX_BATCH)
            )
        return options
    if provider == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    return {}


def _check_providers(providers, available) -> list[str]:
    if providers is None:
        return list(DEFAULT_PROVIDERS)
    if isinstance(providers, str) or not all(isinstance(p, str) for p in providers):
        raise TypeError(f"providers must be a list of provider names (str), got {providers!r}")
    providers = list(providers)
    if not providers:
        raise ValueError(f"providers must name at least one provider; available: {', '.join(available)}")
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(
            f"execution provider(s) {', '.join(map(repr, missing))} not available in this onnxruntime; "
            f"available: {', '.join(available)} (CUDA needs the onnxruntime-gpu package: pip install tem-track[gpu])"
        )
    return providers


def _shape(shape) -> tuple:
    """onnxruntime's shape (ints, symbolic names, None) as ints and None."""
    if shape is None:
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def _text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
