"""Typed settings of the synthetic image generator.

A preset is data: a :class:`SynthConfig` whose every field is visible, validated and
serialisable, so a user can copy ``sd3``, change a range and generate with it. Unknown
keys are errors, never ignored. Ranges are ``(low, high)`` pairs sampled uniformly;
lengths are in pixels of the generated image, angles in degrees, intensities in the
unit interval of the image.

Needs only pydantic; must not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A generator setting is unknown, malformed or out of range."""


def _ordered(pair):
    low, high = pair
    if low > high:
        raise ValueError(f"range must be (low, high) with low <= high, got {pair}")
    return pair


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


def _within(low: float, high: float):
    def check(pair):
        if pair[0] < low or pair[1] > high:
            raise ValueError(f"range {pair} must lie within [{low}, {high}]")
        return pair

    return AfterValidator(check)


Unit = Annotated[Range, _within(0.0, 1.0)]
Positive = Annotated[Range, _within(0.0, float("inf"))]
Count = Annotated[IntRange, _within(0, 10_000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerlinParams(_Model):
    """Perlin background, thesis eqs. 2.3-2.9; defaults are Table 4.1."""

    wavelength1: Annotated[IntRange, _within(2, 4096)] = (10, 100)
    wavelength2: Annotated[IntRange, _within(2, 4096)] = (10, 100)
    w_perlin: Positive = (0.2, 0.4)
    w_white1: Positive = (0.5, 0.7)
    s1: Positive = (1.0, 1.0)
    # Table 4.1 lists r_noise without saying where it enters; we read it as the
    # factor on sigma(P4) that weights X2 (eq. 2.7 is r_noise = 1).
    r_noise: Positive = (0.2, 0.4)
    s2: Positive = (0.6, 0.8)
    # Affine map of the final [0, 1] background; (1, 1) and (0, 0) keep eq. 2.9 as is.
    gain: Positive = (1.0, 1.0)
    offset: Range = (0.0, 0.0)


class PatchParams(_Model):
    """Real background patches (thesis 2.1.2): two patches blended with a random opacity."""

    opacity: Unit = (0.3, 0.7)
    zoom: Annotated[Range, _within(0.1, 10.0)] = (0.6, 1.6)
    flip: bool = True
    rotate: bool = True


class BackgroundParams(_Model):
    mode: Literal["perlin", "patches", "mixed"] = "perlin"
    # With mode "mixed": share of images that use real patches.
    patch_fraction: float = Field(0.5, ge=0.0, le=1.0)
    perlin: PerlinParams = PerlinParams()
    patches: PatchParams = PatchParams()


class SpacingParams(_Model):
    """Distance between neighbouring dislocations of a pile-up, along the slip direction.

    A mixture as in the RD1 statistics (thesis Fig. 4.7): narrow pairs about 7 px apart
    and wider spacings between the pairs.
    """

    pair_probability: float = Field(0.4, ge=0.0, le=1.0)
    pair: Positive = (5.0, 9.0)
    wide: Positive = (15.0, 60.0)
    # Narrow spacings alternate with wide ones (pairs), as in SD1, when True.
    alternate: bool = False


class ShapeParams(_Model):
    """Library of parametric dislocation shapes in the local frame (y from 0 to 1)."""

    weights: dict[
        Literal["straight", "bowed", "s_shaped", "wavy", "sharp_turn", "hook", "labelme"], float
    ] = {"straight": 1.0, "bowed": 3.0, "s_shaped": 1.0}
    tilt: Annotated[Range, _within(-2.0, 2.0)] = (-0.2, 0.2)
    bow: Annotated[Range, _within(-2.0, 2.0)] = (0.05, 0.35)
    wave_amplitude: Annotated[Range, _within(0.0, 1.0)] = (0.03, 0.12)
    inflections: Annotated[IntRange, _within(1, 8)] = (2, 4)
    turn_angle: Annotated[Range, _within(0.0, 170.0)] = (30.0, 110.0)
    # Random jitter of each support point, in local units (fraction of the slip width).
    jitter: Annotated[Range, _within(0.0, 0.5)] = (0.0, 0.015)
    # Per-dislocation change of shape within a pile-up (local units).
    perturbation: Annotated[Range, _within(0.0, 0.5)] = (0.0, 0.02)
    # labelme files whose line shapes join the library (family "labelme").
    labelme_files: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_weights(self):
        if not self.weights or sum(self.weights.values()) <= 0 or min(self.weights.values()) < 0:
            raise ValueError(f"shape weights must be >= 0 with a positive sum, got {self.weights}")
        if self.weights.get("labelme", 0) > 0 and not self.labelme_files:
            raise ValueError("shape family 'labelme' has weight > 0 but labelme_files is empty")
        return self


class PileupParams(_Model):
    """Pile-ups (thesis Table 2.1)."""

    count: Annotated[IntRange, _within(0, 100)] = (1, 4)
    dislocations: Annotated[IntRange, _within(1, 200)] = (2, 8)
    max_dislocations: int = Field(20, ge=1, le=1000)
    slip_width: Annotated[Range, _within(4.0, 1e5)] = (80.0, 250.0)
    orientation: Annotated[Range, _within(-360.0, 360.0)] = (-180.0, 180.0)
    # All pile-ups of an image share one orientation (+- jitter) when True (SD1).
    shared_orientation: bool = False
    orientation_jitter: Annotated[float, Field(ge=0.0, le=90.0)] = 3.0
    spacing: SpacingParams = SpacingParams()
    allow_overlaps: bool = False
    # Smallest gap kept between any two dislocations when overlaps are not allowed.
    min_gap: float = Field(2.0, ge=0.0)
    # Dislocations not in a pile-up, with any orientation and position.
    isolated: Count = (0, 0)


class RenderParams(_Model):
    """Rendering (thesis 2.3): segment-wise gray values and thickness, then a Gaussian filter."""

    gray_factor: Annotated[Range, _within(0.0, 1.0)] = (0.1, 0.4)
    thickness: Annotated[Range, _within(1.0, 30.0)] = (1.5, 3.5)
    thickness_variation: Annotated[Range, _within(0.0, 10.0)] = (0.0, 0.5)
    segment_length: Annotated[Range, _within(1.0, 500.0)] = (6.0, 18.0)
    blur: Annotated[Range, _within(0.0, 10.0)] = (0.5, 1.2)
    noise: Annotated[Range, _within(0.0, 1.0)] = (0.0, 0.02)
    dark_field_probability: float = Field(0.0, ge=0.0, le=1.0)
    vignetting_probability: float = Field(0.0, ge=0.0, le=1.0)
    vignetting: Unit = (0.1, 0.4)
    gradient_probability: float = Field(0.0, ge=0.0, le=1.0)
    gradient: Unit = (0.05, 0.2)


class SlipTraceParams(_Model):
    """Two straight slip trace lines per pile-up with per-segment gray values (thesis 2.2.3)."""

    probability: float = Field(0.0, ge=0.0, le=1.0)
    contrast: Unit = (0.02, 0.1)
    width: Annotated[Range, _within(1.0, 20.0)] = (1.0, 3.0)
    segment_length: Annotated[Range, _within(1.0, 500.0)] = (5.0, 20.0)
    dark_probability: float = Field(0.6, ge=0.0, le=1.0)
    # Brightness change of the slip band between the two traces (negative: darker), as
    # in real images where the swept band differs from its surroundings; (0, 0) is off.
    band: Annotated[Range, _within(-1.0, 1.0)] = (0.0, 0.0)


class SpotParams(_Model):
    """Spots / second-phase particles: irregular convex polygons (thesis 2.2.4)."""

    count: Count = (0, 0)
    radius: Annotated[Range, _within(0.5, 1000.0)] = (2.0, 10.0)
    vertices: Annotated[IntRange, _within(3, 100)] = (5, 12)
    irregularity: Annotated[Range, _within(0.0, 3.2)] = (0.0, 0.5)
    spikiness: Annotated[Range, _within(0.0, 2.0)] = (0.0, 0.4)
    contrast: Unit = (0.1, 0.4)


class GrainBoundaryParams(_Model):
    """Straight grain or twin boundaries across the image with a contrast step."""

    count: Count = (0, 0)
    step: Annotated[Range, _within(-1.0, 1.0)] = (-0.15, 0.15)
    line_contrast: Annotated[Range, _within(-1.0, 1.0)] = (0.05, 0.25)
    width: Annotated[Range, _within(1.0, 30.0)] = (1.0, 4.0)


class SynthConfig(_Model):
    """Everything the generator samples from; a preset is one instance of it."""

    name: str = "custom"
    description: str = ""
    size: tuple[int, int] = (512, 512)
    background: BackgroundParams = BackgroundParams()
    pileups: PileupParams = PileupParams()
    shapes: ShapeParams = ShapeParams()
    render: RenderParams = RenderParams()
    slip_traces: SlipTraceParams = SlipTraceParams()
    spots: SpotParams = SpotParams()
    grain_boundaries: GrainBoundaryParams = GrainBoundaryParams()

    @model_validator(mode="after")
    def _check_size(self):
        if min(self.size) < 16 or max(self.size) > 8192:
            raise ValueError(f"size must be (height, width) within [16, 8192], got {self.size}")
        return self

    def with_size(self, size: int | tuple[int, int]) -> "SynthConfig":
        """Return a copy for another image size; lengths stay in pixels."""
        if isinstance(size, int):
            size = (size, size)
        return validate_config({**self.model_dump(), "size": tuple(size)})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def validate_config(data: dict) -> SynthConfig:
    """Build a :class:`SynthConfig` from plain data, raising :class:`ConfigError` on any problem."""
    try:
        return SynthConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid generator config: {problems}") from None


def load_config(path: str | Path) -> SynthConfig:
    """Read a config from a JSON file (the format :meth:`SynthConfig.to_json` writes)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    return validate_config(data)
