"""The parametric generator of synthetic TEM images and videos with exact ground truth.

Implements the model of Govind's thesis (chapter 2, section 4.3) and paper (section 3).
Needs numpy, scipy, OpenCV and pydantic only: never torch.

>>> from temtrack.training.synth import generate_sample
>>> sample = generate_sample("sd2", seed=7, size=128)
>>> sample.image.shape, sample.masks.shape[1:]
((128, 128), (128, 128))
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, SynthConfig, load_config, validate_config
from .presets import get_preset, preset_names
from .render import Sample, render_scene
from .scene import Scene, SceneError, sample_scene
from .video import VideoFrame, VideoSettings, iter_video, write_video

__all__ = [
    "ConfigError",
    "Sample",
    "Scene",
    "SceneError",
    "SynthConfig",
    "generate_sample",
    "get_preset",
    "load_config",
    "preset_names",
    "render_scene",
    "resolve_config",
    "sample_scene",
    "validate_config",
    "VideoFrame",
    "VideoSettings",
    "iter_video",
    "write_video",
]


def resolve_config(preset: str | SynthConfig, *, size: int | tuple[int, int] | None = None) -> SynthConfig:
    """A config from a preset name or a config, optionally at another image size."""
    if isinstance(preset, SynthConfig):
        config = preset
    elif isinstance(preset, str):
        config = get_preset(preset)
    else:
        raise TypeError(f"preset must be a preset name or a SynthConfig, got {type(preset).__name__}")
    return config if size is None else config.with_size(size)


def generate_sample(
    preset: str | SynthConfig,
    seed: int,
    *,
    size: int | tuple[int, int] | None = None,
    backgrounds: str | Path | None = None,
) -> Sample:
    """Generate one synthetic image with its masks, centrelines and parameters.

    Parameters
    ----------
    preset : str or SynthConfig
        ``"sd1"``, ``"sd2"``, ``"sd3"`` or a config of one's own.
    seed : int
        The same preset and seed always give the same sample.
    size : int or (int, int), optional
        Image size (height, width) in pixels; the preset's (512) by default.
    backgrounds : path, optional
        Folder of real background images, for configs that use real patches.
    """
    config = resolve_config(preset, size=size)
    return render_scene(sample_scene(config, seed, backgrounds=backgrounds), backgrounds=backgrounds)
