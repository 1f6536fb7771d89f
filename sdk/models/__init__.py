"""The model store: the models tem-track knows by name, the bundled default and the user's own.

A *model* is a trained network saved as a file the SDK runs (see
:mod:`temtrack.sdk.backends.contract` for the vocabulary); this package finds model
files by name. It does not build networks (``training/model.py`` does) nor read a
model's metadata (:mod:`temtrack.sdk.modelmeta`).

The package ships one ONNX model (:data:`MANIFEST`, ``manifest.json`` beside this file,
names it and records its SHA-256 and size). It is what ``tem-track VIDEO`` and
``Analyzer()`` run when no model is given. Its hash is checked every time it is
loaded (about 20 ms), so a truncated or replaced file is an error naming the problem,
not a silent change of results.

User models are ``.onnx`` (and TensorRT ``.engine``) files in :func:`user_model_dir`:
``$TEMTRACK_MODEL_DIR`` if set, else ``$XDG_DATA_HOME/tem-track/models`` (by default
``~/.local/share/tem-track/models``; ``%LOCALAPPDATA%\\tem-track\\models`` on Windows).
``tem-track models --add FILE`` copies one there after checking its metadata; it is then
known by its file stem: ``tem-track VIDEO --model NAME``.

:func:`resolve_model` turns what a user typed into a file: an existing path as is,
``"default"`` or a bundled model's name to the verified bundled file, else a user
model's stem. Must never import torch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..backends.contract import has_model_suffix
from ..modelmeta import ModelError, ModelMetadata, file_sha256

__all__ = [
    "BUNDLED_DIR",
    "DEFAULT_NAME",
    "MANIFEST",
    "ModelEntry",
    "add_user_model",
    "bundled_models",
    "default_model",
    "list_models",
    "resolve_model",
    "user_model_dir",
    "user_models",
    "verify_bundled",
]

BUNDLED_DIR = Path(__file__).resolve().parent
MANIFEST = BUNDLED_DIR / "manifest.json"
DEFAULT_NAME = "default"
USER_MODEL_SUFFIXES = (".onnx", ".engine")  # what the user folder holds: the SDK runs them without torch


@dataclass(frozen=True)
class ModelEntry:
    """One model tem-track knows by name.

    Attributes
    ----------
    name : str
        What ``--model`` accepts (a bundled model's name, a user model's file stem).
    path : Path
    source : {"bundled", "user"}
    sha256 : str or None
        Bundled: the hash the manifest records (checked at load). User: None.
    default : bool
        Whether ``tem-track VIDEO`` runs it when no model is given.
    card : str or None
        Where the bundled model's model card lives (repository path).
    """

    name: str
    path: Path
    source: str
    sha256: str | None = None
    default: bool = False
    card: str | None = None
    size_bytes: int | None = field(default=None, compare=False)


def _manifest() -> dict:
    try:
        data = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        raise ModelError(f"the bundled model manifest {MANIFEST} is missing; reinstall tem-track") from None
    except ValueError as exc:
        raise ModelError(f"the bundled model manifest {MANIFEST} is not valid JSON ({exc}); reinstall tem-track") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or "default" not in data:
        raise ModelError(f"the bundled model manifest {MANIFEST} lacks 'default' or 'models'; reinstall tem-track")
    return data


def bundled_models() -> list[ModelEntry]:
    """The models shipped inside the package, as the manifest lists them (not verified)."""
    data = _manifest()
    entries = []
    for item in data["models"]:
        try:
            entries.append(ModelEntry(
                name=str(item["name"]),
                path=BUNDLED_DIR / str(item["file"]),
                source="bundled",
                sha256=str(item["sha256"]),
                default=item["name"] == data["default"],
                card=item.get("card"),
                size_bytes=int(item["bytes"]),
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the bundled model manifest {MANIFEST} has a bad entry {item!r} ({exc})") from None
    return entries


def verify_bundled(entry: ModelEntry) -> Path:
    """``entry``'s file after checking its size and SHA-256 against the manifest.

    Raises
    ------
    ModelError
        The file is missing, truncated or differs from the one shipped.
    """
    path = entry.path
    if not path.is_file():
        raise ModelError(f"the bundled model {entry.name!r} ({path}) is missing; reinstall tem-track")
    stat = path.stat()
    _verify(str(path), stat.st_size, stat.st_mtime_ns, entry.sha256, entry.size_bytes)
    return path


@lru_cache(maxsize=8)
def _verify(path: str, size: int, mtime_ns: int, sha256: str | None, expected_size: int | None) -> None:
    # Cached on (size, mtime): a file changed since it was checked is checked again.
    if expected_size is not None and size != expected_size:
        raise ModelError(
            f"the bundled model {path} has {size} bytes, the manifest says {expected_size}: the file is damaged "
            "or was replaced; reinstall tem-track"
        )
    actual = file_sha256(path)
    if actual != sha256:
        raise ModelError(
            f"the bundled model {path} has SHA-256 {actual[:16]}..., the manifest says {str(sha256)[:16]}...: "
            "the file is damaged or was replaced; reinstall tem-track"
        )


def default_model() -> Path:
    """The bundled default model's file, verified (:func:`verify_bundled`)."""
    for entry in bundled_models():
        if entry.default:
            return verify_bundled(entry)
    raise ModelError(f"the bundled model manifest {MANIFEST} names no model as its default; reinstall tem-track")


def user_model_dir() -> Path:
    """Folder of the user's models (it need not exist yet); see the module docstring."""
    if os.environ.get("TEMTRACK_MODEL_DIR"):
        return Path(os.environ["TEMTRACK_MODEL_DIR"]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "tem-track" / "models"
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "tem-track" / "models"


def user_models() -> list[ModelEntry]:
    """The ``.onnx`` and ``.engine`` files in :func:`user_model_dir`, by name.

    Raises
    ------
    NotADirectoryError
        :func:`user_model_dir` is a file.
    """
    folder = user_model_dir()
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(_not_a_folder(folder))
        return []
    return [
        ModelEntry(name=path.stem, path=path, source="user", size_bytes=path.stat().st_size)
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in USER_MODEL_SUFFIXES and path.is_file()
    ]


def _not_a_folder(folder: Path) -> str:
    where = "$TEMTRACK_MODEL_DIR" if os.environ.get("TEMTRACK_MODEL_DIR") else "the default location"
    return f"the user model folder {folder} ({where}) is a file, not a folder; move it or set TEMTRACK_MODEL_DIR"


def list_models() -> list[ModelEntry]:
    """Bundled models first, then the user's."""
    return bundled_models() + user_models()


def resolve_model(spec: str | os.PathLike) -> Path:
    """The model file ``spec`` means.

    An existing path is returned as is; ``"default"`` or a bundled model's name gives
    the bundled file, verified; otherwise a user model's name (file stem). Anything else
    is returned unchanged, so the backend that opens it names the missing file.
    """
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if os.sep in text or (os.altsep and os.altsep in text) or has_model_suffix(path):
        return path
    for entry in bundled_models():
        if text == entry.name or (text == DEFAULT_NAME and entry.default):
            return verify_bundled(entry)
    matches = [entry.path for entry in user_models() if entry.name == text]
    if len(matches) > 1:
        raise ModelError(f"two user models are named {text!r}: {', '.join(map(str, matches))}; give the file path")
    if matches:
        return matches[0]
    known = ", ".join([DEFAULT_NAME] + [e.name for e in list_models()])
    raise FileNotFoundError(f"no model file or known model named {text!r}; known models: {known} ('tem-track models')")


def add_user_model(path: str | os.PathLike, name: str | None = None, *, overwrite: bool = False) -> Path:
    """Copy an ONNX model into :func:`user_model_dir` as ``NAME.onnx`` (atomically).

    The file must be an ONNX model with tem-track metadata (checked first).

    Raises
    ------
    FileNotFoundError, ModelError
        ``path`` is missing or is not a tem-track ONNX model.
    FileExistsError
        A user model of that name exists and ``overwrite`` is False (or is a folder).
    NotADirectoryError
        :func:`user_model_dir` is a file.
    ValueError
        ``name`` is not a plain file stem or shadows a bundled model.
    """
    from ..modelmeta import read_metadata
    from ..atomic import write_atomic

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ModelError(f"{path}: only .onnx models can be added (a TensorRT engine is tied to its GPU; copy it yourself)")
    if read_metadata(path) is None:
        raise ModelError(f"{path} has no tem-track metadata; export it with 'tem-track export'")
    name = name or path.stem
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"model name must be a plain file name without folders, got {name!r}")
    if name == DEFAULT_NAME or name in {e.name for e in bundled_models()}:
        raise ValueError(f"{name!r} is a bundled model's name; choose another")
    if user_model_dir().exists() and not user_model_dir().is_dir():
        raise NotADirectoryError(_not_a_folder(user_model_dir()))
    target = user_model_dir() / f"{name}.onnx"
    if target.is_dir():
        raise FileExistsError(f"{target} is a folder; choose another --name")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(target, lambda tmp: shutil.copyfile(path, tmp))


def describe(entry: ModelEntry) -> dict:
    """What ``tem-track models`` shows of one model: its metadata and whether its file is sound.

    ``problem`` is None, or why the model cannot run: a bundled file that differs from
    the manifest, an ONNX file that does not parse or has no tem-track metadata, a
    TensorRT engine without a sidecar that describes it.
    """
    from ..enginemeta import ENGINE_SUFFIX, read_engine_info
    from ..modelmeta import read_metadata

    row = {"name": entry.name, "source": entry.source, "default": entry.default, "path": str(entry.path),
           "size_mib": None, "problem": None, "metadata": None, "card": entry.card}
    try:
        if entry.source == "bundled":
            verify_bundled(entry)
        if not entry.path.is_file():
            raise ModelError(f"{entry.path} is missing")
        row["size_mib"] = round(entry.path.stat().st_size / 2**20, 2)
        if entry.path.suffix.lower() == ".onnx":
            metadata: ModelMetadata | None = read_metadata(entry.path)
            row["metadata"] = None if metadata is None else metadata.model_dump(mode="json")
            if metadata is None:
                row["problem"] = "no tem-track metadata"
        elif entry.path.suffix.lower() == ENGINE_SUFFIX:
            # Whether it runs on this GPU is the runtime's question; whether the file
            # is the engine its sidecar describes is answered here.
            row["metadata"] = read_engine_info(entry.path).metadata.model_dump(mode="json")
    except (ModelError, OSError) as exc:
        row["problem"] = str(exc)
    return row
