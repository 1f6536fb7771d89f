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
    # Extra bow of the leading dislocation (the first of a pile-up, at p0), in local
    # units (fraction of the slip width), falling linearly to 0 at the last one and
    # bulging away from the others: real pile-ups bow most at the head. (0, 0) is off.
    lead_bow: Annotated[Range, _within(0.0, 1.0)] = (0.0, 0.0)


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
    # Per-dislocation Gaussian softening (sigma, px) of the drawn line alone, peak darkness
    # kept: real lines are 5-7 px wide with soft shoulders. (0, 0) is off.
    line_softness: Annotated[Range, _within(0.0, 10.0)] = (0.0, 0.0)


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
    # Gaussian softening of each spot (sigma as a fraction of its radius), peak contrast
    # kept: real spots are soft blobs, not flat polygons. (0, 0) is off.
    softness: Annotated[Range, _within(0.0, 3.0)] = (0.0, 0.0)


class GrainBoundaryParams(_Model):
    """Straight grain or twin boundaries across the image with a contrast step."""

    count: Count = (0, 0)
    step: Annotated[Range, _within(-1.0, 1.0)] = (-0.15, 0.15)
    line_contrast: Annotated[Range, _within(-1.0, 1.0)] = (0.05, 0.25)
    width: Annotated[Range, _within(1.0, 30.0)] = (1.0, 4.0)


# --- distractors: things that are not dislocations, drawn as negatives ------------------
# Each kind has a `probability`: the share of images that get it (0 = off, the default).
# Drawn by `distractors.py`; see its module docstring for what each kind looks like.

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
TextHeight = Annotated[Range, _within(4.0, 200.0)]  # px, height of a capital letter


class ScaleBarParams(_Model):
    """A burnt-in scale bar with its label ("5 µm"), usually near a corner."""

    probability: Probability = 0.0
    length: Annotated[Range, _within(0.01, 0.9)] = (0.08, 0.3)  # fraction of the image width
    thickness: Annotated[Range, _within(1.0, 60.0)] = (2.0, 8.0)  # px
    text_height: TextHeight = (8.0, 24.0)
    box_probability: Probability = 0.4  # share drawn on a contrasting box
    corner_probability: Probability = 0.85  # share near a corner (else anywhere)
    white_probability: Probability = 0.6  # share drawn white (else black)


class TextParams(_Model):
    """Burnt-in labels: timestamps, dose, frame numbers, magnification."""

    probability: Probability = 0.0
    count: Annotated[IntRange, _within(1, 50)] = (1, 3)
    text_height: TextHeight = (6.0, 24.0)
    box_probability: Probability = 0.3
    corner_probability: Probability = 0.8
    white_probability: Probability = 0.5


class CursorParams(_Model):
    """A mouse arrow pointer left in a screen recording."""

    probability: Probability = 0.0
    size: Annotated[Range, _within(4.0, 200.0)] = (10.0, 28.0)  # px, tip to tail
    white_probability: Probability = 0.7  # white with a black outline (else black)


class PaddingParams(_Model):
    """Letterbox / pillarbox: constant bands along one or two sides."""

    probability: Probability = 0.0
    width: Annotated[Range, _within(0.0, 0.45)] = (0.02, 0.2)  # fraction of the side across it
    two_sided_probability: Probability = 0.5
    # Gray value of the bands: black, white or a gray from `gray`, with these shares.
    black_probability: Probability = 0.6
    white_probability: Probability = 0.15
    gray: Unit = (0.2, 0.8)


class BorderParams(_Model):
    """A thin frame rectangle, or a line along one or more image edges."""

    probability: Probability = 0.0
    thickness: Annotated[Range, _within(1.0, 20.0)] = (1.0, 3.0)  # px
    inset: Annotated[Range, _within(0.0, 100.0)] = (0.0, 6.0)  # px from the image edge
    full_frame_probability: Probability = 0.6  # all four sides (else one or two)
    white_probability: Probability = 0.5


class SlipBandParams(_Model):
    """Straight band edges across the whole image, independent of the pile-ups."""

    probability: Probability = 0.0
    count: Annotated[IntRange, _within(1, 50)] = (1, 4)
    step: Unit = (0.03, 0.15)  # brightness change across an edge
    bright_probability: Probability = 0.5  # share of edges that brighten (else darken)
    # Share drawn as a band (two parallel edges `width` px apart), else a single step.
    band_probability: Probability = 0.7
    width: Annotated[Range, _within(1.0, 1e4)] = (4.0, 60.0)
    softness: Annotated[Range, _within(0.0, 20.0)] = (0.3, 2.0)  # px, edge blur
    # Bands of one image share an orientation (one slip system) +- jitter, with this share.
    parallel_probability: Probability = 0.7
    orientation_jitter: Annotated[float, Field(ge=0.0, le=90.0)] = 2.0


class LoopParams(_Model):
    """Dislocation loops: small dark elliptical rings or coffee-bean double lobes."""

    probability: Probability = 0.0
    count: Count = (3, 60)
    size: Annotated[Range, _within(1.0, 200.0)] = (3.0, 20.0)  # px, outer diameter
    aspect: Annotated[Range, _within(0.1, 1.0)] = (0.4, 1.0)  # minor / major axis
    contrast: Unit = (0.1, 0.4)
    bean_probability: Probability = 0.4


class BlackDotParams(_Model):
    """Black dots: small dark soft blobs (defect clusters)."""

    probability: Probability = 0.0
    count: Count = (10, 150)
    size: Annotated[Range, _within(0.5, 100.0)] = (2.0, 6.0)  # px, diameter
    contrast: Unit = (0.1, 0.4)


class BendContourParams(_Model):
    """Bend contours: broad, smooth, dark curved bands with soft edges."""

    probability: Probability = 0.0
    count: Annotated[IntRange, _within(1, 20)] = (1, 2)
    width: Annotated[Range, _within(1.0, 1000.0)] = (10.0, 60.0)  # px
    contrast: Unit = (0.1, 0.4)
    # Radius of curvature as a multiple of the image diagonal (large: nearly straight).
    radius: Annotated[Range, _within(0.1, 100.0)] = (0.4, 3.0)
    wobble: Annotated[Range, _within(0.0, 1.0)] = (0.0, 0.3)  # amplitude, fraction of the width


class DirtParams(_Model):
    """Dirt / contamination: irregular soft blobs, dark or bright."""

    probability: Probability = 0.0
    count: Count = (1, 6)
    size: Annotated[Range, _within(1.0, 1000.0)] = (5.0, 40.0)  # px, diameter
    contrast: Unit = (0.05, 0.35)
    bright_probability: Probability = 0.3


class DistractorParams(_Model):
    """Things that are not dislocations, rendered into the image only (no mask, no centreline).

    Overlays (``scale_bar``, ``text``, ``cursor``, ``padding``, ``border``) are burnt in
    after the finish and hide what lies beneath; specimen structures (``slip_bands``,
    ``loops``, ``black_dots``, ``bend_contours``, ``dirt``) are drawn before the blur.
    """

    scale_bar: ScaleBarParams = ScaleBarParams()
    text: TextParams = TextParams()
    cursor: CursorParams = CursorParams()
    padding: PaddingParams = PaddingParams()
    border: BorderParams = BorderParams()
    slip_bands: SlipBandParams = SlipBandParams()
    loops: LoopParams = LoopParams()
    black_dots: BlackDotParams = BlackDotParams()
    bend_contours: BendContourParams = BendContourParams()
    dirt: DirtParams = DirtParams()


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
    distractors: DistractorParams = DistractorParams()

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
