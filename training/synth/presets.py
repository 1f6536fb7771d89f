"""The generator presets of the thesis (section 4.3) as plain :class:`SynthConfig` data.

- ``sd1``: close pairs of dislocations in one slip direction, as in the real video RD1.
- ``sd2``: 1-4 pile-ups of 2-8 dislocations (at most 20), any orientation, no overlaps.
- ``sd3``: slip widths of 50-400 px, many shapes, grain boundaries, slip traces, spots,
  overlapping and intersecting dislocations.
"""

from __future__ import annotations

from .config import ConfigError, SynthConfig, validate_config

_PRESETS: dict[str, dict] = {
    "sd1": {
        "name": "sd1",
        "description": "Close pairs in one slip direction (RD1-like), no overlaps",
        "pileups": {
            "count": (1, 3),
            "dislocations": (2, 6),
            "slip_width": (90.0, 200.0),
            "orientation": (-180.0, 180.0),
            "shared_orientation": True,
            "min_gap": 1.0,
            "spacing": {"pair_probability": 0.5, "pair": (5.0, 9.0), "wide": (25.0, 70.0), "alternate": True},
        },
        "shapes": {"weights": {"bowed": 4.0, "straight": 1.0}, "bow": (0.08, 0.3)},
        "render": {"thickness": (1.2, 2.5), "thickness_variation": (0.0, 0.3)},
    },
    "sd2": {
        "name": "sd2",
        "description": "1-4 pile-ups of 2-8 dislocations, any orientation, no overlaps (thesis SD2)",
        "pileups": {
            "count": (1, 4),
            "dislocations": (2, 8),
            "max_dislocations": 20,
            "slip_width": (60.0, 220.0),
            "orientation": (-180.0, 180.0),
        },
        "shapes": {"weights": {"bowed": 3.0, "straight": 1.0, "s_shaped": 1.0}},
    },
    "sd3": {
        "name": "sd3",
        "description": "General: slip width 50-400 px, many shapes, grain boundaries, "
        "slip traces, spots, overlaps (thesis SD3)",
        "pileups": {
            "count": (1, 4),
            "dislocations": (1, 8),
            "max_dislocations": 20,
            "slip_width": (50.0, 400.0),
            "orientation": (-180.0, 180.0),
            "allow_overlaps": True,
            "isolated": (0, 3),
        },
        "shapes": {
            "weights": {"straight": 1.0, "bowed": 2.0, "s_shaped": 1.5, "wavy": 1.5, "sharp_turn": 1.0, "hook": 0.5},
            "jitter": (0.0, 0.03),
        },
        "render": {
            "thickness": (1.2, 4.5),
            "gray_factor": (0.08, 0.45),
            "dark_field_probability": 0.1,
            "vignetting_probability": 0.4,
            "gradient_probability": 0.4,
        },
        "slip_traces": {"probability": 0.5, "band": (-0.04, 0.12)},
        "spots": {"count": (0, 12)},
        "grain_boundaries": {"count": (0, 1)},
        "background": {"mode": "perlin"},
    },
}


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    return sorted(_PRESETS)


def get_preset(name: str, **overrides) -> SynthConfig:
    """Return the built-in preset ``name`` (``sd1``, ``sd2``, ``sd3``).

    Parameters
    ----------
    name : str
        Preset name; an unknown name raises :class:`ConfigError` listing the valid ones.
    **overrides
        Top-level fields to replace (e.g. ``size=(256, 256)``), validated like the rest.
    """
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    return validate_config({**_PRESETS[name], **overrides})
