"""The configuration of a training run (``tem-track train CONFIG``).

A typed, frozen pydantic model: unknown keys and impossible values are errors that name
the key. Read from TOML or JSON (:func:`load_train_config`); saved beside the run as
``config.json`` and inside every checkpoint. Every field has a default, so the smallest
config file is empty; ``tem-track train --print-config`` shows them all.

Imports no torch (the CLI validates a config before loading the training stack).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .augment import AugmentConfig
from .model import ModelConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainConfigError",
    "ValidationConfig",
    "load_train_config",
    "merge_settings",
    "nest_dotted",
    "validate_train_config",
]


class TrainConfigError(ValueError):
    """A training configuration file that cannot be read or holds invalid settings."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the training images come from (mixed in one stream).

    Attributes
    ----------
    presets : dict of str to float
        Generator presets (``sd1``, ``sd2``, ``sd3``) or generator config files
        (``.json``), each with its sampling weight; generated on the fly.
    datasets : list of paths
        Stored synthetic dataset folders (``tem-track synth``), cropped at random.
    labelled : list of paths
        Folders of labelled real frames (line-label PNGs or labelme), cropped at random;
        each folder is one video. Their labels are taken as partial (see the README).
    weights : dict
        Share of each source kind in the stream: ``{"synthetic": ..., "datasets": ...,
        "labelled": ...}`` (only the kinds present are used).
    backgrounds : path, optional
        Folder of real background patches for configs whose background mode uses them.
    workers : int
        DataLoader worker processes generating and augmenting images.
    """

    presets: dict[str, float] = Field(default_factory=lambda: {"sd1": 1.0, "sd2": 1.0, "sd3": 2.0})
    datasets: list[Path] = Field(default_factory=list)
    labelled: list[Path] = Field(default_factory=list)
    weights: dict[Literal["synthetic", "datasets", "labelled"], float] = Field(
        default_factory=lambda: {"synthetic": 1.0, "datasets": 1.0, "labelled": 1.0}
    )
    backgrounds: Path | None = None
    workers: int = Field(2, ge=0, le=64)

    @field_validator("presets", "weights")
    @classmethod
    def _positive_weights(cls, value):
        for key, weight in value.items():
            if not weight > 0:
                raise ValueError(f"weight of {key!r} must be > 0, got {weight}")
        return value

    @model_validator(mode="after")
    def _some_source(self):
        if not (self.presets or self.datasets or self.labelled):
            raise ValueError("no training data: give presets, datasets or labelled folders")
        return self


class ValidationConfig(_Strict):
    """The fixed validation set, scored with the length metric (thesis 3.4.3).

    Attributes
    ----------
    presets : list of str
        Presets whose validation images are generated once at the start (``images``
        each, from ``seed``, at the training image size unless ``size`` is given).
    images : int
        Images per preset.
    seed : int
        Seed of the validation images; keep it apart from the training seed.
    size : int, optional
        Validation image size (a multiple of the model's size multiple).
    labelled_fraction : float
        Share of the labelled frames held out for validation, split by video (or by
        time within a single video, dropping ``gap`` frames around the cut).
    gap : int
        Frames left out between the training and validation parts of one video.
    every : int
        Validate every this many steps (and at the end).
    """

    presets: list[str] = Field(default_factory=lambda: ["sd1", "sd2", "sd3"])
    images: int = Field(16, ge=1, le=100_000)
    seed: int = Field(1_000_003, ge=0)
    size: int | None = Field(None, ge=32, le=4096)
    labelled_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    gap: int = Field(5, ge=0)
    every: int = Field(500, ge=1)


class OptimConfig(_Strict):
    """AdamW with a linear warm-up then ``schedule`` down to ``min_lr_ratio * lr``."""

    lr: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.02, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)


class LossConfig(_Strict):
    """The loss of each model family.

    Multi-label family: the matched Dice loss
    (:func:`~temtrack.training.losses.matched_dice_loss`) with ``matching`` and
    ``empty_weight``. ``empty_weight`` applies to fully labelled (synthetic) images
    only; on partially labelled real frames an unmatched mask may hold an unlabelled
    dislocation, so it is not pushed towards empty there.

    Line-field family (:func:`~temtrack.training.linefield.linefield_loss`):
    ``positive_weight`` (extra BCE weight on the centre ridge, which covers ~1 % of the
    pixels), ``direction_weight`` and ``ends_weight`` (the terms beside the centre map),
    ``gap_weight`` (extra BCE weight on and between lines a few px apart, U-Net's
    separation weight: :func:`~temtrack.training.synth.targets.separation`; 0 = off).
    On partially labelled real frames (``data.labelled``), ``partial_negatives`` says
    where the centre map may be pushed towards "no line": ``"near_labels"`` (the
    default) only within ``near_labels`` px of a labelled line, so an unlabelled
    dislocation elsewhere is never punished; ``"everywhere"`` treats every unlabelled
    pixel as background (the naive rule, kept for comparison).
    """

    matching: Literal["greedy", "hungarian"] = "greedy"
    empty_weight: float = Field(0.1, ge=0)
    positive_weight: float = Field(10.0, ge=0)
    direction_weight: float = Field(1.0, ge=0)
    ends_weight: float = Field(0.5, ge=0)
    gap_weight: float = Field(0.0, ge=0, le=1000)
    partial_negatives: Literal["near_labels", "everywhere"] = "near_labels"
    near_labels: float = Field(6.0, gt=0, le=100)


# Loss options that belong to one model family only.
_LOSS_OPTIONS = {
    "multilabel": ("matching", "empty_weight"),
    "linefield": ("positive_weight", "direction_weight", "ends_weight", "gap_weight", "partial_negatives", "near_labels"),
}


class TrainConfig(_Strict):
    """Everything a training run depends on.

    Attributes
    ----------
    model : ModelConfig
    data : DataConfig
    validation : ValidationConfig
    optim : OptimConfig
    loss : LossConfig
    augment : AugmentConfig
    image_size : int
        Side of the square training images (generated at that size, or crops of that
        size); a multiple of the model's size multiple (32).
    batch_size, steps : int
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``auto``: bf16 autocast on a GPU that supports it, else fp16 on a GPU, fp32 on
        the CPU.
    channels_last : bool, optional
        Memory format; None: on for GPUs, off on the CPU.
    device : {"auto", "cpu", "cuda"}
    seed : int
        Seed of the training stream and of the weight initialisation.
    checkpoint_every, log_every : int
        Steps between checkpoints (``last.pt``) and log lines.
    init : path, optional
        A checkpoint to start from (fine-tuning); its model must equal ``model``, except
        that a line-field model may add extras (the new outputs start untrained).
    threads : int, optional
        torch CPU threads (None: torch's default).
    """

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    image_size: int = Field(256, ge=32, le=4096)
    batch_size: int = Field(8, ge=1, le=4096)
    steps: int = Field(10_000, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(20, ge=1)
    init: Path | None = None
    threads: int | None = Field(None, ge=1, le=512)

    @model_serializer(mode="wrap")
    def _own_loss_options(self, handler):
        data = handler(self)
        for family, options in _LOSS_OPTIONS.items():
            if family != self.model.family and isinstance(data.get("loss"), dict):
                for option in options:
                    data["loss"].pop(option, None)
        return data

    @model_validator(mode="after")
    def _one_family(self):
        family = self.model.family
        for other, options in _LOSS_OPTIONS.items():
            mixed = [o for o in options if other != family and o in self.loss.model_fields_set]
            if mixed:
                raise ValueError(
                    f"loss.{mixed[0]} is an option of the {other!r} family, but model.family is {family!r}; "
                    f"remove it or set model.family = {other!r}"
                )
        if family != "linefield" and self.augment.p_zoom > 0:
            raise ValueError(
                "augment.p_zoom: the zoom augmentation is for the 'linefield' family's stream only "
                f"(model.family is {family!r}); remove it or set model.family = 'linefield'"
            )
        if family == "linefield" and self.data.datasets:
            raise ValueError(
                "data.datasets: the line-field family trains on generator presets (exact centrelines) and "
                "labelled real frames (data.labelled), not on stored datasets; remove it or use "
                "model.family = 'multilabel'"
            )
        return self

    @model_validator(mode="after")
    def _sizes(self):
        multiple = self.model.size_multiple
        for name, size in (("image_size", self.image_size), ("validation.size", self.validation.size)):
            if size is not None and size % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} (the U-Net++ depth), got {size}")
        return self

    def to_json(self) -> dict:
        """JSON-serialisable dict (paths as strings)."""
        return json.loads(self.model_dump_json())


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def validate_train_config(data: dict, *, source: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from a dict; errors list every bad key with its problem."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{source} must hold a table of settings, got {type(data).__name__}")
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise TrainConfigError(f"{source} has invalid settings:\n{_describe(exc)}") from None


def nest_dotted(settings: dict, *, option: str = "setting") -> dict:
    """Dotted keys as nested tables: ``{"model.encoder": "resnet34"}`` becomes
    ``{"model": {"encoder": "resnet34"}}`` (the ``--set KEY=VALUE`` overrides).

    Parameters
    ----------
    settings : dict
        Dotted key -> value.
    option : str
        What the keys came from, for the error message (e.g. ``"--set"``).

    Raises
    ------
    ValueError
        A key is used both as a value and as a table.

    Examples
    --------
    >>> nest_dotted({"model.encoder": "resnet34", "steps": 5})
    {'model': {'encoder': 'resnet34'}, 'steps': 5}
    """
    nested: dict = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{option} {key}: {part!r} is set to a value and used as a table")
        node[leaf] = value
    return nested


def merge_settings(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it, table by table (neither is modified).

    Examples
    --------
    >>> merge_settings({"model": {"encoder": "b0", "n_masks": 20}}, {"model": {"encoder": "resnet34"}})
    {'model': {'encoder': 'resnet34', 'n_masks': 20}}
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read a training configuration from a ``.toml`` or ``.json`` file.

    Relative paths inside the file (datasets, labelled folders, backgrounds, init) are
    taken relative to the file's folder.

    Raises
    ------
    FileNotFoundError
        No such file.
    TrainConfigError
        Unreadable file, unknown key or impossible value (all named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise TrainConfigError(f"{path}: use a .toml or .json file, got {path.suffix or 'no suffix'!r}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise TrainConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    config = validate_train_config(data, source=str(path))
    return _relative_to(config, path.parent)


def _relative_to(config: TrainConfig, base: Path) -> TrainConfig:
    def fix(p):
        return p if p is None or p.is_absolute() else base / p

    data = config.data.model_copy(
        update={
            "datasets": [fix(p) for p in config.data.datasets],
            "labelled": [fix(p) for p in config.data.labelled],
            "backgrounds": fix(config.data.backgrounds),
        }
    )
    presets = {
        str(fix(Path(name))) if name.lower().endswith(".json") else name: weight
        for name, weight in config.data.presets.items()
    }
    data = data.model_copy(update={"presets": presets})
    return config.model_copy(update={"data": data, "init": fix(config.init)})
