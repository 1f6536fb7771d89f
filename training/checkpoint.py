"""Training checkpoints: weights and settings only, never pickled code.

A checkpoint is a ``torch.save`` file holding plain data that
``torch.load(weights_only=True)`` accepts:

- ``format`` (``"tem-track-checkpoint"``) and ``format_version``;
- ``config``: the training configuration as a JSON string (its ``model`` entry is the
  :class:`~temtrack.training.model.ModelConfig`);
- ``model``: the network's ``state_dict``;
- ``step``, ``best`` (the best validation length score so far, or None), ``metrics``
  (JSON string of the last validation);
- for resuming: ``optimizer``, ``scheduler``, ``scaler`` state dicts and the torch RNG
  state.

Files are written atomically (a temporary file in the same folder, then a rename), so
an interruption never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from temtrack.sdk.atomic import write_atomic

from .model import ModelConfig, build_model

__all__ = ["CheckpointError", "init_weights", "load_model", "read_checkpoint", "save_checkpoint"]

FORMAT = "tem-track-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a tem-track checkpoint, or one that does not fit the model."""


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    config: dict,
    step: int,
    best: float | None = None,
    metrics: dict | None = None,
    optimizer=None,
    scheduler=None,
    scaler=None,
) -> Path:
    """Write a checkpoint atomically; returns its path.

    ``config`` is the training configuration as JSON-serialisable data, with the model
    configuration under ``"model"``.
    """
    path = Path(path)
    if "model" not in config:
        raise ValueError("config must hold the model configuration under 'model'")
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "best": None if best is None else float(best),
        "metrics": json.dumps(metrics or {}),
        "torch_rng": torch.get_rng_state(),
    }
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            state[name] = obj.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint's contents (on the CPU, ``weights_only=True``).

    Returns the stored dict with ``config`` and ``metrics`` decoded from JSON.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        Not a torch file, or a torch file that is not a tem-track checkpoint (e.g. a
        pickled model object, which ``weights_only`` refuses to load).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        # Not torch's text: it advises weights_only=False, which would run pickled code.
        raise CheckpointError(
            f"{path} is not a tem-track checkpoint: torch cannot read it as saved weights ({type(exc).__name__}; "
            "a file of another kind, truncated, or a pickled object rather than a state)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a tem-track checkpoint (no format {FORMAT!r})")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format_version']}, newer than this tem-track "
            f"reads ({FORMAT_VERSION}); upgrade tem-track"
        )
    state = dict(state)
    state["config"] = json.loads(state["config"])
    state["metrics"] = json.loads(state["metrics"])
    return state


def model_config_of(state: dict, path: str | os.PathLike = "checkpoint") -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint read by :func:`read_checkpoint`."""
    try:
        return ModelConfig(**state["config"]["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} holds no valid model configuration: {exc}") from None


def load_model(path: str | os.PathLike, *, expected: ModelConfig | None = None) -> tuple[torch.nn.Module, ModelConfig, dict]:
    """The network of a checkpoint, in eval mode on the CPU.

    Parameters
    ----------
    path : path
        A checkpoint written by :func:`save_checkpoint`.
    expected : ModelConfig, optional
        When given (fine-tuning a model of a chosen architecture), a checkpoint of
        another architecture, encoder or N is refused with the difference named.

    Returns
    -------
    (model, model_config, state)
    """
    state = read_checkpoint(path)
    config = model_config_of(state, path)
    if expected is not None:
        _check_same_model(config, expected, path)
    model = build_model(config)
    _load_weights(model, state["model"], path)
    model.eval()
    return model, config, state


def _check_same_model(config: ModelConfig, expected: ModelConfig, path) -> None:
    """A checkpoint's model ``config`` must be ``expected``; the error names the difference."""
    if expected.family != config.family:
        raise CheckpointError(
            f"{path} is a checkpoint of the {config.family!r} model family, but a {expected.family!r} model is "
            f"expected here; use a {expected.family!r} checkpoint or set model.family = {config.family!r}"
        )
    if expected != config:
        diff = {
            k: (getattr(config, k), getattr(expected, k))
            for k in ModelConfig.model_fields
            if getattr(config, k) != getattr(expected, k)
        }
        described = "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path} is a checkpoint of another model ({described})")


def _load_weights(model: torch.nn.Module, weights: dict, path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit its own model configuration ({exc})") from None


def init_weights(model: torch.nn.Module, path: str | os.PathLike, config: ModelConfig) -> None:
    """Start ``model`` (built from ``config``) from the weights of the checkpoint at ``path``.

    The checkpoint must be of the same model, except that a line-field ``config`` may
    add extras after the checkpoint's (``extras = ["ends"]`` on a model trained
    without): the output head's existing channels keep their weights and the added
    ones start from ``model``'s own initialisation. Anything else that differs is an
    error naming it, as in :func:`load_model`.
    """
    state = read_checkpoint(path)
    source = model_config_of(state, path)
    grows = (
        source.family == config.family == "linefield"
        and len(config.extras) > len(source.extras)
        and tuple(config.extras[: len(source.extras)]) == tuple(source.extras)
        and source.model_copy(update={"extras": config.extras}) == config
    )
    if not grows:
        _check_same_model(source, config, path)
        _load_weights(model, state["model"], path)
        return
    own = model.state_dict()
    weights = {}
    for key, value in state["model"].items():
        target = own.get(key)
        if target is None:
            raise CheckpointError(f"{path}: weight {key!r} has no place in the {config.family!r} model")
        if value.shape == target.shape:
            weights[key] = value
        elif value.shape[1:] == target.shape[1:] and value.shape[0] == source.out_channels:
            grown = target.clone()  # the output head: the checkpoint's channels first
            grown[: value.shape[0]] = value
            weights[key] = grown
        else:
            raise CheckpointError(f"{path}: weight {key!r} is {tuple(value.shape)}, the model needs {tuple(target.shape)}")
    model.load_state_dict(weights)
