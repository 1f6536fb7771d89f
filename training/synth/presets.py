"""The generator presets of the thesis (section 4.3) as plain :class:`SynthConfig` data.

- ``sd1``: close pairs of dislocations in one slip direction, as in the real video RD1.
- ``sd2``: 1-4 pile-ups of 2-8 dislocations (at most 20), any orientation, no overlaps.
- ``sd3``: slip widths of 50-400 px, many shapes, grain boundaries, slip traces, spots,
  overlapping and intersecting dislocations.

``sd1_real``, ``sd2_real`` and ``sd3_real`` hold the same scenes (pile-up counts,
spacings, shapes; plus a bow that grows towards the leading dislocation) with the
appearance measured on real bright-field frames (TWIP, the four dislocation samples,
FeCrAl; ``benchmarks/bench_realism.py``): a calm Perlin background of lower contrast
with texture at 4-150 px instead of blotches, little fine noise, vignetting in half of
the images, soft lines 5-7 px wide and 10-25 % darker than their surroundings, soft
spots. Every range is kept wide around the measured values, so that a model also sees
microscopes other than these.
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


# Appearance of the realistic presets, laid over their thesis preset. Numbers from
# benchmarks/bench_realism.py (48 images per preset against the pooled real frames):
# gain/offset put the local contrast (std/mean in 16 px boxes, real median 0.08) and the
# gray levels (real 10-90 % 0.26-0.69) where the real frames have them; the short
# wavelengths and light blurs give the real spectrum's slope at 0.1-0.25 cycles/px; the
# line gray factor and softness give depths of 0.1-0.3 and a FWHM of 4-9 px (real
# medians 0.19 and 6.0 px).
_REAL_LOOK: dict = {
    "background": {
        "mode": "perlin",
        "perlin": {
            "wavelength1": (36, 150),
            "wavelength2": (4, 20),
            "w_perlin": (0.3, 1.0),
            "w_white1": (0.05, 0.3),
            "s1": (0.5, 1.0),
            "r_noise": (0.0, 0.1),
            "s2": (0.5, 1.0),
            "gain": (0.3, 0.7),
            "offset": (0.05, 0.45),
        },
    },
    "pileups": {"lead_bow": (0.0, 0.15)},
    "render": {
        "gray_factor": (0.05, 0.22),
        "thickness": (1.5, 4.0),
        "line_softness": (1.0, 3.5),
        "blur": (0.3, 0.8),
        "noise": (0.001, 0.005),
        "dark_field_probability": 0.0,
        "vignetting_probability": 0.5,
        "vignetting": (0.05, 0.3),
        "gradient_probability": 0.3,
        "gradient": (0.02, 0.15),
    },
}


def _merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _realistic(base: str, description: str, extra: dict | None = None) -> dict:
    return _merge(_merge(_PRESETS[base], _REAL_LOOK), {"name": f"{base}_real", "description": description, **(extra or {})})


_PRESETS.update(
    {
        "sd1_real": _realistic("sd1", "sd1 scenes with the appearance of real bright-field frames"),
        "sd2_real": _realistic("sd2", "sd2 scenes with the appearance of real bright-field frames"),
        "sd3_real": _realistic(
            "sd3",
            "sd3 scenes with the appearance of real bright-field frames, soft spots, rare dark field",
            {"render": {"dark_field_probability": 0.05}, "spots": {"softness": (0.3, 1.0)}},
        ),
    }
)


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    return sorted(_PRESETS)


def get_preset(name: str, **overrides) -> SynthConfig:
    """Return the built-in preset ``name`` (``sd1``, ``sd2``, ``sd3``, ``sd1_real``, ...).

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
