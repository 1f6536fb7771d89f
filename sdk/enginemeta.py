"""The TensorRT engine sidecar: what an engine was built from and for, in pure Python.

A TensorRT engine (``model.engine``) is built from a tem-track ONNX model by
:func:`temtrack.export.tensorrt.build_engine` and is only valid on the GPU
architecture (compute capability) and the TensorRT version it was built with. Beside
it lies a JSON sidecar, ``model.engine.json``, that says which: the ONNX model's
``"temtrack"`` metadata (:class:`~temtrack.sdk.modelmeta.ModelMetadata`) and a
``"tensorrt"`` section (TensorRT version, GPU, compute capability, precision, batch
profile, hashes of the ONNX file and of the engine). :func:`read_engine_info` reads
and validates it and :func:`check_engine_gpu` compares it with a machine, so that a
mismatch is reported in words before TensorRT is asked to deserialize an engine it
cannot run.

The sidecar is to an engine what :mod:`temtrack.sdk.modelmeta` is to an ONNX model.
pydantic and the standard library only: no tensorrt, no CUDA, no torch.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .modelmeta import ModelError, ModelMetadata, file_sha256

__all__ = [
    "ENGINE_SUFFIX",
    "REBUILD_HINT",
    "SIDECAR_FORMAT_VERSION",
    "EngineInfo",
    "ModelError",
    "check_engine_gpu",
    "read_engine_info",
    "sidecar_path",
]

ENGINE_SUFFIX = ".engine"
SIDECAR_FORMAT_VERSION = 1
REBUILD_HINT = (
    "rebuild it with `tem-track export CHECKPOINT --out model.onnx --tensorrt model.engine` on this "
    "machine or use the .onnx with --backend onnxruntime"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CAPABILITY = re.compile(r"^\d+\.\d+$")


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_batch: int
    opt_batch: int
    max_batch: int

    @model_validator(mode="after")
    def _ordered(self):
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        return self


class _TensorRTSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    gpu: str
    compute_capability: str
    precision: Literal["fp32", "fp16"]
    profile: _Profile
    workspace_gib: float
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    tem_track_version: str
    created: str

    @field_validator("compute_capability")
    @classmethod
    def _capability(cls, value):
        if not _CAPABILITY.match(value):
            raise ValueError(f"must be 'major.minor', e.g. '8.6', got {value!r}")
        return value

    @field_validator("onnx_sha256", "engine_sha256")
    @classmethod
    def _sha(cls, value):
        if not _SHA256.match(value):
            raise ValueError(f"must be 64 lowercase hex digits, got {value!r}")
        return value

    @field_validator("version", "gpu")
    @classmethod
    def _not_empty(cls, value):
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class _Sidecar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int
    metadata: ModelMetadata
    tensorrt: _TensorRTSection

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, value):
        if value != SIDECAR_FORMAT_VERSION:
            raise ValueError(
                f"sidecar format_version {value} is not understood by this tem-track "
                f"(it reads version {SIDECAR_FORMAT_VERSION}); rebuild the engine"
            )
        return value


@dataclass(frozen=True)
class EngineInfo:
    """What a TensorRT engine's sidecar (``<engine>.json``) records.

    Attributes
    ----------
    path : pathlib.Path
        The engine file.
    metadata : ModelMetadata
        The ``"temtrack"`` metadata of the ONNX model it was built from.
    tensorrt_version : str
        ``tensorrt.__version__`` of the build, e.g. ``"10.3.0"``.
    gpu_name : str
        The GPU it was built on, e.g. ``"NVIDIA H100 80GB HBM3"``.
    compute_capability : str
        ``"major.minor"`` of that GPU, e.g. ``"9.0"`` (``sm_90``).
    precision : {"fp32", "fp16"}
        ``"fp16"`` when TensorRT was allowed half-precision kernels.
    min_batch, opt_batch, max_batch : int
        The optimisation profile: the batch sizes the engine accepts and the one it
        is tuned for.
    workspace_gib : float
        The builder's workspace limit in GiB.
    onnx_file : str
        Name of the ONNX file it was built from.
    onnx_sha256, engine_sha256 : str
        Hex SHA-256 of the ONNX file and of the engine file.
    tem_track_version : str
        tem-track version of the build.
    created : str
        UTC time of the build, ISO 8601.
    """

    path: Path
    metadata: ModelMetadata
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_gib: float
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    tem_track_version: str
    created: str

    @property
    def sm(self) -> str:
        """The architecture as CUDA names it, e.g. ``"sm_90"``."""
        return _sm(self.compute_capability)

    def to_dict(self) -> dict:
        """The sidecar's JSON content (what :func:`read_engine_info` reads back)."""
        return {
            "format_version": SIDECAR_FORMAT_VERSION,
            "metadata": self.metadata.model_dump(mode="json"),
            "tensorrt": {
                "version": self.tensorrt_version,
                "gpu": self.gpu_name,
                "compute_capability": self.compute_capability,
                "precision": self.precision,
                "profile": {"min_batch": self.min_batch, "opt_batch": self.opt_batch, "max_batch": self.max_batch},
                "workspace_gib": self.workspace_gib,
                "onnx_file": self.onnx_file,
                "onnx_sha256": self.onnx_sha256,
                "engine_sha256": self.engine_sha256,
                "tem_track_version": self.tem_track_version,
                "created": self.created,
            },
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """The sidecar of an engine: ``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_info(engine_path: str | os.PathLike, *, check_hash: bool = True) -> EngineInfo:
    """Read and validate the sidecar of a TensorRT engine.

    Parameters
    ----------
    engine_path : str or path-like
        The engine file; its sidecar is :func:`sidecar_path` of it.
    check_hash : bool
        Compare the engine file's SHA-256 with the one recorded, so that a sidecar
        left from an earlier build is not trusted (reads the whole engine once).

    Returns
    -------
    EngineInfo

    Raises
    ------
    TypeError
        ``engine_path`` is not a str or path-like.
    FileNotFoundError
        The engine file does not exist.
    ModelError
        The engine is a directory, the sidecar is missing, is not JSON, lacks keys or
        holds invalid values, or describes another engine file (the message names
        the file and says how to fix it).
    """
    if not isinstance(engine_path, (str, os.PathLike)):
        raise TypeError(f"engine_path must be a str or path-like (the .engine file), got {type(engine_path).__name__}")
    path = Path(engine_path)
    if not path.exists():
        raise FileNotFoundError(f"TensorRT engine {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a TensorRT engine file")
    sidecar = sidecar_path(path)
    rebuild = "rebuild the engine with temtrack.export.tensorrt.build_engine (tem-track export --tensorrt), which writes both"
    if not sidecar.is_file():
        raise ModelError(
            f"{path}: its sidecar {sidecar.name} is missing; tem-track needs it to know the model's input size, "
            f"normalisation and the GPU the engine was built for; {rebuild}"
        )
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelError(f"{sidecar}: not UTF-8 text ({exc.reason}); {rebuild}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{sidecar}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {rebuild}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{sidecar}: must hold a JSON object, got {type(data).__name__}; {rebuild}")
    try:
        parsed = _Sidecar.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ModelError(f"{sidecar}: invalid engine sidecar ({problems}); {rebuild}") from None
    trt_section = parsed.tensorrt
    info = EngineInfo(
        path=path,
        metadata=parsed.metadata,
        tensorrt_version=trt_section.version,
        gpu_name=trt_section.gpu,
        compute_capability=trt_section.compute_capability,
        precision=trt_section.precision,
        min_batch=trt_section.profile.min_batch,
        opt_batch=trt_section.profile.opt_batch,
        max_batch=trt_section.profile.max_batch,
        workspace_gib=trt_section.workspace_gib,
        onnx_file=trt_section.onnx_file,
        onnx_sha256=trt_section.onnx_sha256,
        engine_sha256=trt_section.engine_sha256,
        tem_track_version=trt_section.tem_track_version,
        created=trt_section.created,
    )
    if check_hash:
        actual = file_sha256(path)
        if actual != info.engine_sha256:
            raise ModelError(
                f"{path}: its sidecar {sidecar.name} describes another engine (SHA-256 {info.engine_sha256[:12]}..., "
                f"the file has {actual[:12]}...); the engine was replaced without its sidecar; {rebuild}"
            )
    return info


def check_engine_gpu(info: EngineInfo, *, gpu_name: str, compute_capability: str, trt_version: str) -> None:
    """Raise :class:`ModelError` unless the engine ``info`` describes can run here.

    A serialized engine holds kernels for one GPU architecture and one TensorRT
    version: another compute capability or another TensorRT version is an error. A
    different GPU of the same compute capability runs it, possibly slower (TensorRT
    chose its kernels by timing them on the build GPU), so that only warns.

    Parameters
    ----------
    info : EngineInfo
        From :func:`read_engine_info`.
    gpu_name : str
        This machine's GPU, e.g. ``"NVIDIA A100-SXM4-40GB"``.
    compute_capability : str
        Its ``"major.minor"``, e.g. ``"8.0"``.
    trt_version : str
        The installed ``tensorrt.__version__``.

    Raises
    ------
    TypeError
        ``info`` is not an :class:`EngineInfo`.
    ValueError
        ``compute_capability`` is not ``"major.minor"``.
    ModelError
        The engine was built for another compute capability or TensorRT version (the
        message says how to rebuild it or which file to use instead).

    Warns
    -----
    UserWarning
        Same compute capability, another GPU model.
    """
    if not isinstance(info, EngineInfo):
        raise TypeError(f"info must be an EngineInfo (from read_engine_info), got {type(info).__name__}")
    if not isinstance(compute_capability, str) or not _CAPABILITY.match(compute_capability):
        raise ValueError(f"compute_capability must be 'major.minor', e.g. '8.6', got {compute_capability!r}")
    if compute_capability != info.compute_capability or trt_version != info.tensorrt_version:
        raise ModelError(
            f"{info.path}: engine built for {info.gpu_name} ({info.sm}) with TensorRT {info.tensorrt_version}; "
            f"this machine has {gpu_name} ({_sm(compute_capability)}), TensorRT {trt_version}; {REBUILD_HINT}"
            f" ({info.onnx_file})"
        )
    if gpu_name != info.gpu_name:
        warnings.warn(
            f"{info.path}: engine built on {info.gpu_name}, running on {gpu_name} (both {info.sm}); it runs, but "
            "TensorRT chose its kernels on the other GPU: rebuild it here for full speed",
            UserWarning,
            stacklevel=2,
        )


def _sm(capability: str) -> str:
    return "sm_" + capability.replace(".", "")

