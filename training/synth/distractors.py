"""Distractors: things in a micrograph that are not dislocations, drawn as negatives.

A line-field model trained only on dislocations puts lines on anything line-like in
real videos: scale bars and their label, burnt-in dose text and timestamps, the mouse
cursor, letterbox padding, a frame border, straight slip-band edges, loops, black dots,
bend contours and dirt. This module samples such distractors into a scene
(:func:`sample_distractors`, one spec per kind and image) and draws them
(:func:`specimen_layer`, :func:`overlay_layers`). They go into the image only: never
into a mask or a centreline.

Two families:

- **overlays** (``scale_bar``, ``text``, ``cursor``, ``padding``, ``border``) are burnt
  in by the acquisition software after imaging: drawn crisp after the whole finish (blur,
  illumination, noise, dark-field inversion), fixed in the frame when the specimen
  drifts, and opaque: where an overlay covers a pixel (alpha >= 0.5, see
  :func:`hidden_by`) a dislocation is not visible, so its mask is zeroed there and its
  centreline cut;
- **specimen** structures (``slip_bands``, ``loops``, ``black_dots``, ``bend_contours``,
  ``dirt``) are part of the sample: an additive brightness layer drawn before the blur,
  moving with the specimen.

Distractors are sampled from their own random stream, ``default_rng([seed, 17, k])`` for
the ``k``-th kind of :data:`KINDS`, so switching them on or off changes no other draw of
a scene, and one kind's settings change no other kind.

Coordinates are pixels, ``x`` = column and ``y`` = row; angles in degrees from +x
towards +y; gray values and contrasts in the unit interval of the image. Needs numpy,
OpenCV and pydantic; must not import ``scene`` or ``render`` (they import this module).
"""

from __future__ import annotations

from typing import Annotated, Callable, Literal, NamedTuple, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .config import SynthConfig

Point = tuple[float, float]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 px, inclusive
_STREAM = 17  # random stream of the distractors, beside the scene's own
_SHIFT = 4  # OpenCV sub-pixel bits
_FONTS = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "plain": cv2.FONT_HERSHEY_PLAIN,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
}
FontName = Literal["simplex", "plain", "duplex", "complex", "triplex"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- specs: everything needed to redraw a distractor -----------------------------------


class Glyphs(_Spec):
    """A text drawn with an OpenCV Hershey font; ``µ`` is drawn as ``u`` with a descender."""

    text: str
    origin: tuple[int, int]  # bottom-left of the text (its baseline), px
    font: FontName
    scale: float  # OpenCV font scale
    thickness: int


class Label(_Spec):
    """A text of one gray value, optionally on an opaque box of another."""

    glyphs: Glyphs
    value: float
    box: Box | None = None
    box_value: float = 0.0


class ScaleBarSpec(_Spec):
    kind: Literal["scale_bar"] = "scale_bar"
    bar: Box
    value: float
    label: Label  # its box, if any, holds the bar too


class TextSpec(_Spec):
    kind: Literal["text"] = "text"
    labels: list[Label]


class CursorSpec(_Spec):
    kind: Literal["cursor"] = "cursor"
    tip: Point
    size: float  # px, tip to tail
    angle: float  # degrees, tilt of the arrow from upright
    white: bool  # white with a black outline, else black


class PaddingSpec(_Spec):
    kind: Literal["padding"] = "padding"
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0
    value: float


class BorderSpec(_Spec):
    kind: Literal["border"] = "border"
    sides: list[Literal["top", "bottom", "left", "right"]]
    inset: int
    thickness: int
    value: float


class Band(_Spec):
    """A straight edge (``width`` 0) or band of ``width`` px through ``point``."""

    point: Point
    angle: float
    step: float  # brightness added beyond the edge / inside the band
    width: float
    softness: float  # px


class SlipBandsSpec(_Spec):
    kind: Literal["slip_bands"] = "slip_bands"
    bands: list[Band]


class Loop(_Spec):
    centre: Point
    size: float  # px, outer major diameter
    aspect: float  # minor / major
    angle: float
    contrast: float
    bean: bool  # coffee-bean double lobe, else an elliptical ring


class LoopsSpec(_Spec):
    kind: Literal["loops"] = "loops"
    loops: list[Loop]


class Dot(_Spec):
    centre: Point
    size: float  # px, full width at half maximum
    contrast: float


class BlackDotsSpec(_Spec):
    kind: Literal["black_dots"] = "black_dots"
    dots: list[Dot]


class Contour(_Spec):
    """A dark arc of radius ``radius`` around ``centre``, wobbling ``waves`` times per turn."""

    centre: Point
    radius: float
    width: float  # px, full width at half maximum
    contrast: float
    wobble: float  # px, amplitude of the radius change
    waves: int
    phase: float  # radians


class BendContoursSpec(_Spec):
    kind: Literal["bend_contours"] = "bend_contours"
    contours: list[Contour]


class Blob(_Spec):
    centre: Point
    size: float  # px, about the diameter
    contrast: float  # > 0 darkens, < 0 brightens
    seed: int


class DirtSpec(_Spec):
    kind: Literal["dirt"] = "dirt"
    blobs: list[Blob]


Distractor = Annotated[
    Union[
        ScaleBarSpec,
        TextSpec,
        CursorSpec,
        PaddingSpec,
        BorderSpec,
        SlipBandsSpec,
        LoopsSpec,
        BlackDotsSpec,
        BendContoursSpec,
        DirtSpec,
    ],
    Field(discriminator="kind"),
]


# --- sampling --------------------------------------------------------------------------


def _u(rng, pair) -> float:
    return float(rng.uniform(pair[0], pair[1]))


def _i(rng, pair) -> int:
    return int(rng.integers(pair[0], pair[1] + 1))


def glyph_size(glyphs: Glyphs) -> tuple[int, int, int]:
    """``(width, height above the baseline, depth below it)`` of ``glyphs`` in px."""
    font = _FONTS[glyphs.font]
    (width, height), base = cv2.getTextSize(glyphs.text.replace("µ", "u"), font, glyphs.scale, glyphs.thickness)
    return width, height, base + (int(0.3 * height) if "µ" in glyphs.text else 0)


def _glyphs(rng, text: str, height_range) -> Glyphs:
    font = str(rng.choice(list(_FONTS)))
    cap = _u(rng, height_range)
    scale = cap / cv2.getTextSize("H", _FONTS[font], 1.0, 1)[0][1]
    thickness = max(1, int(round(cap * rng.uniform(0.05, 0.14))))
    return Glyphs(text=text, origin=(0, 0), font=font, scale=float(scale), thickness=thickness)


def _place(rng, size: tuple[int, int], block: tuple[int, int], corner_probability: float, corners) -> tuple[int, int]:
    """Top-left of a ``block`` (width, height) px near one of ``corners`` (weights) or anywhere."""
    height, width = size
    bw, bh = block
    if rng.random() < corner_probability:
        names = list(corners)
        corner = names[int(rng.choice(len(names), p=np.asarray(list(corners.values())) / sum(corners.values())))]
        margin_x = int(rng.uniform(0.0, 0.05) * width)
        margin_y = int(rng.uniform(0.0, 0.05) * height)
        x = margin_x if "left" in corner else width - bw - margin_x
        y = margin_y if "top" in corner else height - bh - margin_y
        return x, y
    return int(rng.uniform(0, max(width - bw, 1))), int(rng.uniform(0, max(height - bh, 1)))


def _white(rng, probability: float) -> float:
    return 1.0 if rng.random() < probability else 0.0


_SCALES = ["5 µm", "2 µm", "1 µm", "0.5 µm", "1 um", "500 nm", "200 nm", "100 nm", "50 nm", "20 nm", "10 nm", "2 um"]


def _sample_scale_bar(p, size, rng) -> ScaleBarSpec:
    width = size[1]
    value = _white(rng, p.white_probability)
    length = max(int(_u(rng, p.length) * width), 4)
    thick = max(int(round(_u(rng, p.thickness))), 1)
    glyphs = _glyphs(rng, str(rng.choice(_SCALES)), p.text_height)
    tw, th, td = glyph_size(glyphs)
    gap = int(0.4 * th) + 1
    pad = int(0.4 * th) + 2
    boxed = rng.random() < p.box_probability
    above = rng.random() < 0.75
    block_w, block_h = max(length, tw), th + td + gap + thick
    x, y = _place(rng, size, (block_w + 2 * pad * boxed, block_h + 2 * pad * boxed), p.corner_probability,
                  {"bottom left": 0.5, "bottom right": 0.25, "top left": 0.15, "top right": 0.1})
    x, y = x + pad * boxed, y + pad * boxed
    left_aligned = rng.random() < 0.3
    text_x = x if left_aligned else x + (block_w - tw) // 2
    bar_x = x + (block_w - length) // 2
    if above:
        text_y, bar_y = y + th, y + th + td + gap
    else:
        bar_y, text_y = y, y + thick + gap + th
    box = (x - pad, y - pad, x + block_w + pad, y + block_h + pad) if boxed else None
    label = Label(
        glyphs=glyphs.model_copy(update={"origin": (int(text_x), int(text_y))}),
        value=value,
        box=box,
        box_value=1.0 - value,
    )
    return ScaleBarSpec(bar=(bar_x, bar_y, bar_x + length - 1, bar_y + thick - 1), value=value, label=label)


def _timestamp(rng) -> str:
    h, m, s = int(rng.integers(0, 3)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    fraction = f".{int(rng.integers(0, 100)):02d}" if rng.random() < 0.6 else ""
    prefix = str(rng.choice(["", "", "t = ", "Time ", "T+"]))
    return f"{prefix}{h:02d}:{m:02d}:{s:02d}{fraction}"


def _dose(rng) -> str:
    mantissa, exponent = rng.uniform(1.0, 9.9), int(rng.integers(12, 17))
    a = rng.uniform(0.0, 5.0)
    return str(
        rng.choice(
            [
                f"Dose: {mantissa:.1f}e{exponent} ions/cm2",
                f"{mantissa:.1f}x10^{exponent} ions/cm2",
                f"{a:.1f}-{a + rng.uniform(0.2, 1.0):.1f} dpa",
                f"{a:.2f} dpa",
                f"Fluence {mantissa:.2f}E{exponent}",
            ]
        )
    )


def _frame_number(rng) -> str:
    n = int(rng.integers(0, 5000))
    return str(rng.choice([f"Frame {n}", f"#{n:05d}", f"{n}/{n + int(rng.integers(1, 3000))}", f"{n}", f"F{n:04d}"]))


def _instrument(rng) -> str:
    return str(
        rng.choice(
            [
                f"x{int(rng.choice([5, 8, 10, 15, 20, 25, 40, 50, 80, 100]))}k",
                f"Mag {int(rng.integers(5, 300))}0 kX",
                f"{int(rng.choice([80, 120, 200, 300]))} kV",
                f"T = {int(rng.integers(20, 800))} C",
                f"{int(rng.integers(290, 1100))} K",
                f"{int(rng.integers(1, 13)):02d}/{int(rng.integers(1, 29)):02d}/20{int(rng.integers(10, 25))}",
                "BF", "DF", "g = [200]", "B = [011]", "REC",
            ]
        )
    )


_TEXTS: tuple[Callable, ...] = (_timestamp, _dose, _frame_number, _instrument)


def _sample_text(p, size, rng) -> TextSpec:
    labels = []
    corners = {"bottom right": 0.35, "top left": 0.25, "top right": 0.25, "bottom left": 0.15}
    for _ in range(_i(rng, p.count)):
        glyphs = _glyphs(rng, _TEXTS[int(rng.integers(len(_TEXTS)))](rng), p.text_height)
        tw, th, td = glyph_size(glyphs)
        pad = int(0.3 * th) + 2
        boxed = rng.random() < p.box_probability
        x, y = _place(rng, size, (tw + 2 * pad * boxed, th + td + 2 * pad * boxed), p.corner_probability, corners)
        x, y = x + pad * boxed, y + pad * boxed
        value = _white(rng, p.white_probability)
        labels.append(
            Label(
                glyphs=glyphs.model_copy(update={"origin": (int(x), int(y + th))}),
                value=value,
                box=(x - pad, y - pad, x + tw + pad, y + th + td + pad) if boxed else None,
                box_value=1.0 - value,
            )
        )
    return TextSpec(labels=labels)


def _sample_cursor(p, size, rng) -> CursorSpec:
    height, width = size
    return CursorSpec(
        tip=(float(rng.uniform(0.02, 0.95) * width), float(rng.uniform(0.02, 0.95) * height)),
        size=_u(rng, p.size),
        angle=float(rng.normal(0.0, 8.0)),
        white=bool(rng.random() < p.white_probability),
    )


def _sample_padding(p, size, rng) -> PaddingSpec:
    height, width = size
    r = rng.random()
    value = 0.0 if r < p.black_probability else 1.0 if r < p.black_probability + p.white_probability else _u(rng, p.gray)
    across = {"top": height, "bottom": height, "left": width, "right": width}
    if rng.random() < p.two_sided_probability:
        sides = ("top", "bottom") if rng.random() < 0.5 else ("left", "right")
        first = _u(rng, p.width)
        # Mostly centred (equal bands), as when a video is letterboxed to a screen.
        second = first if rng.random() < 0.7 else _u(rng, p.width)
        widths = {sides[0]: first, sides[1]: second}
    else:
        widths = {str(rng.choice(list(across))): _u(rng, p.width)}
    return PaddingSpec(value=value, **{side: int(round(w * across[side])) for side, w in widths.items()})


def _sample_border(p, size, rng) -> BorderSpec:
    sides = ["top", "bottom", "left", "right"]
    if rng.random() >= p.full_frame_probability:
        sides = sorted(rng.choice(sides, size=int(rng.integers(1, 3)), replace=False).tolist())
    return BorderSpec(
        sides=sides,
        inset=int(round(_u(rng, p.inset))),
        thickness=max(int(round(_u(rng, p.thickness))), 1),
        value=_white(rng, p.white_probability),
    )


def _sample_slip_bands(p, size, rng) -> SlipBandsSpec:
    height, width = size
    shared = rng.random() < p.parallel_probability
    base = float(rng.uniform(0.0, 180.0))
    bands = []
    for _ in range(_i(rng, p.count)):
        angle = base + float(rng.uniform(-p.orientation_jitter, p.orientation_jitter)) if shared else float(
            rng.uniform(0.0, 180.0)
        )
        bands.append(
            Band(
                point=(float(rng.uniform(0.05, 0.95) * width), float(rng.uniform(0.05, 0.95) * height)),
                angle=angle,
                step=(1.0 if rng.random() < p.bright_probability else -1.0) * _u(rng, p.step),
                width=_u(rng, p.width) if rng.random() < p.band_probability else 0.0,
                softness=_u(rng, p.softness),
            )
        )
    return SlipBandsSpec(bands=bands)


def _sample_loops(p, size, rng) -> LoopsSpec:
    height, width = size
    return LoopsSpec(
        loops=[
            Loop(
                centre=(float(rng.uniform(0, width)), float(rng.uniform(0, height))),
                size=_u(rng, p.size),
                aspect=_u(rng, p.aspect),
                angle=float(rng.uniform(0.0, 180.0)),
                contrast=_u(rng, p.contrast),
                bean=bool(rng.random() < p.bean_probability),
            )
            for _ in range(_i(rng, p.count))
        ]
    )


def _sample_black_dots(p, size, rng) -> BlackDotsSpec:
    height, width = size
    return BlackDotsSpec(
        dots=[
            Dot(
                centre=(float(rng.uniform(0, width)), float(rng.uniform(0, height))),
                size=_u(rng, p.size),
                contrast=_u(rng, p.contrast),
            )
            for _ in range(_i(rng, p.count))
        ]
    )


def _sample_bend_contours(p, size, rng) -> BendContoursSpec:
    height, width = size
    diagonal = float(np.hypot(height, width))
    contours = []
    for _ in range(_i(rng, p.count)):
        through = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
        normal = rng.uniform(0.0, 2.0 * np.pi)
        radius = _u(rng, p.radius) * diagonal
        band = _u(rng, p.width)
        # A whole number of waves per turn keeps the band continuous where the angle wraps.
        wavelength = rng.uniform(0.5, 1.5) * diagonal
        contours.append(
            Contour(
                centre=tuple((through - radius * np.array([np.cos(normal), np.sin(normal)])).tolist()),
                radius=radius,
                width=band,
                contrast=_u(rng, p.contrast),
                wobble=_u(rng, p.wobble) * band,
                waves=max(int(round(2.0 * np.pi * radius / wavelength)), 1),
                phase=float(rng.uniform(0.0, 2.0 * np.pi)),
            )
        )
    return BendContoursSpec(contours=contours)


def _sample_dirt(p, size, rng) -> DirtSpec:
    height, width = size
    return DirtSpec(
        blobs=[
            Blob(
                centre=(float(rng.uniform(0, width)), float(rng.uniform(0, height))),
                size=_u(rng, p.size),
                contrast=(-1.0 if rng.random() < p.bright_probability else 1.0) * _u(rng, p.contrast),
                seed=int(rng.integers(0, 2**31 - 1)),
            )
            for _ in range(_i(rng, p.count))
        ]
    )


class _Kind(NamedTuple):
    sample: Callable
    overlay: bool


# Order matters: it is the draw order (padding under the labels, the cursor on top) and
# fixes each kind's random stream.
KINDS: dict[str, _Kind] = {
    "padding": _Kind(_sample_padding, True),
    "border": _Kind(_sample_border, True),
    "scale_bar": _Kind(_sample_scale_bar, True),
    "text": _Kind(_sample_text, True),
    "cursor": _Kind(_sample_cursor, True),
    "bend_contours": _Kind(_sample_bend_contours, False),
    "slip_bands": _Kind(_sample_slip_bands, False),
    "dirt": _Kind(_sample_dirt, False),
    "loops": _Kind(_sample_loops, False),
    "black_dots": _Kind(_sample_black_dots, False),
}
OVERLAYS = frozenset(name for name, kind in KINDS.items() if kind.overlay)


def sample_distractors(config: SynthConfig, seed: int) -> list:
    """Draw the distractors of one image: at most one spec per kind, in :data:`KINDS` order.

    Parameters
    ----------
    config : SynthConfig
        Its ``distractors`` field says which kinds are on and with what share.
    seed : int
        The image seed; each kind draws from ``default_rng([seed, 17, k])``.

    Returns
    -------
    list of distractor specs
        Empty when every kind is off (the default).

    Examples
    --------
    >>> from temtrack.training.synth import get_preset, validate_config
    >>> sample_distractors(get_preset("sd2"), 0)
    []
    >>> data = get_preset("sd2").model_dump()
    >>> data["distractors"] = {"scale_bar": {"probability": 1.0}}
    >>> [spec.kind for spec in sample_distractors(validate_config(data), 0)]
    ['scale_bar']
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    params = config.distractors
    out = []
    for index, (name, kind) in enumerate(KINDS.items()):
        p = getattr(params, name)
        if p.probability <= 0:
            continue
        rng = np.random.default_rng([int(seed), _STREAM, index])
        if rng.random() < p.probability:
            out.append(kind.sample(p, tuple(config.size), rng))
    return out


# --- drawing: specimen structures ------------------------------------------------------


def specimen_layer(distractors, shape: tuple[int, int], *, offset=(0.0, 0.0)) -> np.ndarray:
    """Brightness change of the specimen distractors, to add to the image before the finish.

    Parameters
    ----------
    distractors : list of distractor specs
        Overlays among them are ignored.
    shape : (int, int)
        ``(height, width)`` of the image in px.
    offset : (float, float)
        ``(dx, dy)`` px shift of every structure (a video's drift).

    Returns
    -------
    (H, W) ndarray of float32
        Added to the image: negative darkens. Zero where there is nothing.
    """
    height, width = shape
    layer = np.zeros((height, width), np.float32)
    shift = np.asarray(offset, dtype=float)
    for spec in distractors:
        draw = _SPECIMEN.get(spec.kind)
        if draw is not None:
            draw(layer, spec, shift)
    return layer


def _ramp(distance: np.ndarray, softness: float) -> np.ndarray:
    half = np.float32(softness + 0.5)  # at least one pixel of anti-aliasing
    return np.clip((distance + half) / (2 * half), 0.0, 1.0)


def _draw_slip_bands(layer: np.ndarray, spec: SlipBandsSpec, shift) -> None:
    height, width = layer.shape
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    for band in spec.bands:
        a = np.radians(band.angle)
        px, py = np.asarray(band.point) + shift
        distance = (xs - np.float32(px)) * np.float32(-np.sin(a)) + (ys - np.float32(py)) * np.float32(np.cos(a))
        profile = _ramp(distance, band.softness)
        if band.width > 0:
            profile = profile - _ramp(distance - np.float32(band.width), band.softness)
        layer += np.float32(band.step) * profile


def _local(centre, radius: float, shape) -> tuple[int, int, int, int] | None:
    height, width = shape
    x0, y0 = int(np.floor(centre[0] - radius)), int(np.floor(centre[1] - radius))
    x1, y1 = int(np.ceil(centre[0] + radius)) + 1, int(np.ceil(centre[1] + radius)) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _draw_loops(layer: np.ndarray, spec: LoopsSpec, shift) -> None:
    for loop in spec.loops:
        centre = np.asarray(loop.centre) + shift
        box = _local(centre, loop.size / 2 + 4, layer.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
        c = tuple(int(v) for v in np.round((centre - (x0, y0)) * 16))
        major = loop.size / 2
        axes = (int(round(major * 16)), int(round(major * loop.aspect * 16)))
        if loop.bean:
            # Coffee bean: a dark lobe pair split by a line of no contrast across the major axis.
            cv2.ellipse(canvas, c, axes, loop.angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
            a = np.radians(loop.angle + 90.0)
            reach = np.array([np.cos(a), np.sin(a)]) * major * 16
            ends = [np.round(np.asarray(c) + s * reach).astype(np.int32) for s in (-1.0, 1.0)]
            cv2.line(canvas, tuple(ends[0].tolist()), tuple(ends[1].tolist()), 0, max(int(round(major * 0.3)), 1), cv2.LINE_AA, _SHIFT)
        else:
            ring = 1 if loop.size < 9 else 2
            cv2.ellipse(canvas, c, axes, loop.angle, 0, 360, 255, ring, cv2.LINE_AA, _SHIFT)
        soft = cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), 0.6)
        layer[y0:y1, x0:x1] -= soft * np.float32(loop.contrast / 255.0)


def _draw_black_dots(layer: np.ndarray, spec: BlackDotsSpec, shift) -> None:
    for dot in spec.dots:
        centre = np.asarray(dot.centre) + shift
        sigma = dot.size / 2.355
        box = _local(centre, 3 * sigma + 1, layer.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(centre[1])
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(centre[0])
        blob = np.exp(-(xs**2 + ys**2) / np.float32(2 * sigma**2))
        region = layer[y0:y1, x0:x1]
        # Overlapping dots do not add up beyond the darker one.
        np.minimum(region, -np.float32(dot.contrast) * blob, out=region)


def _draw_bend_contours(layer: np.ndarray, spec: BendContoursSpec, shift) -> None:
    height, width = layer.shape
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    for contour in spec.contours:
        cx, cy = np.asarray(contour.centre) + shift
        dx, dy = xs - np.float32(cx), ys - np.float32(cy)
        radius = np.float32(contour.radius) + np.float32(contour.wobble) * np.sin(
            np.float32(contour.waves) * np.arctan2(dy, dx) + np.float32(contour.phase)
        )
        sigma = np.float32(contour.width / 2.355)
        layer -= np.float32(contour.contrast) * np.exp(-0.5 * ((np.hypot(dx, dy) - radius) / sigma) ** 2)


def _draw_dirt(layer: np.ndarray, spec: DirtSpec, shift) -> None:
    for blob in spec.blobs:
        rng = np.random.default_rng(blob.seed)
        centre = np.asarray(blob.centre) + shift
        parts = int(rng.integers(3, 8))
        offsets = rng.normal(0.0, blob.size / 5.0, (parts, 2))
        radii = rng.uniform(0.15, 0.4, parts) * blob.size
        box = _local(centre, blob.size, layer.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(centre[1])
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(centre[0])
        field = np.zeros((y1 - y0, x1 - x0), np.float32)
        for (ox, oy), r in zip(offsets, radii):
            field += np.exp(-((xs - np.float32(ox)) ** 2 + (ys - np.float32(oy)) ** 2) / np.float32(2 * (r / 1.5) ** 2))
        # A soft threshold of the summed lobes gives an irregular outline with soft edges.
        shape = np.clip((field - 0.35) / 0.4, 0.0, 1.0)
        layer[y0:y1, x0:x1] -= np.float32(blob.contrast) * shape * shape * (3 - 2 * shape)


_SPECIMEN = {
    "slip_bands": _draw_slip_bands,
    "loops": _draw_loops,
    "black_dots": _draw_black_dots,
    "bend_contours": _draw_bend_contours,
    "dirt": _draw_dirt,
}


# --- drawing: overlays -----------------------------------------------------------------


class Overlay(NamedTuple):
    """Burnt-in overlays, premultiplied: the image becomes ``paint + image * (1 - alpha)``."""

    paint: np.ndarray  # (H, W) float32
    alpha: np.ndarray  # (H, W) float32 in [0, 1]


def overlay_layers(distractors, shape: tuple[int, int]) -> Overlay | None:
    """The overlays among ``distractors`` as premultiplied gray and coverage.

    Parameters
    ----------
    distractors : list of distractor specs
        Specimen structures among them are ignored.
    shape : (int, int)
        ``(height, width)`` of the image in px.

    Returns
    -------
    Overlay or None
        None when there is no overlay.
    """
    overlays = [spec for spec in distractors if spec.kind in OVERLAYS]
    if not overlays:
        return None
    height, width = shape
    result = Overlay(np.zeros((height, width), np.float32), np.zeros((height, width), np.float32))
    for spec in overlays:
        _OVERLAY[spec.kind](result, spec)
    return result


def hidden_by(overlay: Overlay | None, shape: tuple[int, int]) -> np.ndarray | None:
    """``(H, W)`` bool: where the overlays hide the specimen (alpha >= 0.5); None without overlays."""
    if overlay is None:
        return None
    if overlay.alpha.shape != tuple(shape):
        raise ValueError(f"overlay of shape {overlay.alpha.shape} does not fit an image of shape {tuple(shape)}")
    return overlay.alpha >= 0.5


def burn_in(image: np.ndarray, overlay: Overlay | None) -> np.ndarray:
    """``image`` with the overlays drawn over it, ``(H, W)`` float32 in [0, 1]; a new array."""
    if overlay is None:
        return image.copy()
    if overlay.alpha.shape != image.shape:
        raise ValueError(f"overlay of shape {overlay.alpha.shape} does not fit an image of shape {image.shape}")
    return np.clip(overlay.paint + image * (1.0 - overlay.alpha), 0.0, 1.0).astype(np.float32, copy=False)


def _over(target: Overlay, cover: np.ndarray, value: float) -> None:
    """Composite a coverage canvas (uint8, 255 = fully covered) of gray ``value`` over ``target``."""
    a = cover.astype(np.float32) * np.float32(1.0 / 255.0)
    target.paint[:] = np.float32(value) * a + target.paint * (1.0 - a)
    target.alpha[:] = a + target.alpha * (1.0 - a)


def _canvas(target: Overlay) -> np.ndarray:
    return np.zeros(target.alpha.shape, np.uint8)


def _put(canvas: np.ndarray, glyphs: Glyphs) -> None:
    """Draw ``glyphs`` on ``canvas``; ``µ``, missing from Hershey fonts, is ``u`` with a descender."""
    font = _FONTS[glyphs.font]
    x, y = glyphs.origin
    for index, piece in enumerate(glyphs.text.split("µ")):
        if index:
            (w, h), _ = cv2.getTextSize("u", font, glyphs.scale, glyphs.thickness)
            cv2.putText(canvas, "u", (x, y), font, glyphs.scale, 255, glyphs.thickness, cv2.LINE_AA)
            stem = x + int(round(0.2 * w))
            cv2.line(canvas, (stem, y - h // 2), (stem, y + int(0.45 * h)), 255, glyphs.thickness, cv2.LINE_AA)
            x += w
        if piece:
            cv2.putText(canvas, piece, (x, y), font, glyphs.scale, 255, glyphs.thickness, cv2.LINE_AA)
            x += cv2.getTextSize(piece, font, glyphs.scale, glyphs.thickness)[0][0]


def _label(target: Overlay, label: Label) -> None:
    if label.box is not None:
        canvas = _canvas(target)
        x0, y0, x1, y1 = label.box
        cv2.rectangle(canvas, (x0, y0), (x1, y1), 255, -1)
        _over(target, canvas, label.box_value)
    canvas = _canvas(target)
    _put(canvas, label.glyphs)
    _over(target, canvas, label.value)


def _draw_scale_bar(target: Overlay, spec: ScaleBarSpec) -> None:
    _label(target, spec.label)
    canvas = _canvas(target)
    x0, y0, x1, y1 = spec.bar
    cv2.rectangle(canvas, (x0, y0), (x1, y1), 255, -1)
    _over(target, canvas, spec.value)


def _draw_text(target: Overlay, spec: TextSpec) -> None:
    for label in spec.labels:
        _label(target, label)


# The classic arrow pointer, tip at (0, 0), 18 units from tip to tail.
_ARROW = np.array([(0, 0), (0, 16), (4, 12.5), (7, 18), (9.5, 17), (6.7, 11.2), (11.5, 11.2)], dtype=float)


def _draw_cursor(target: Overlay, spec: CursorSpec) -> None:
    a = np.radians(spec.angle)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    scale = spec.size / 18.0
    points = _ARROW * scale @ rotation.T + spec.tip
    fixed = [np.round(points * 16).astype(np.int32)]
    canvas = _canvas(target)
    cv2.fillPoly(canvas, fixed, 255, cv2.LINE_AA, _SHIFT)
    _over(target, canvas, 1.0 if spec.white else 0.0)
    if spec.white:
        canvas = _canvas(target)
        cv2.polylines(canvas, fixed, True, 255, max(int(round(scale)), 1), cv2.LINE_AA, _SHIFT)
        _over(target, canvas, 0.0)


def _draw_padding(target: Overlay, spec: PaddingSpec) -> None:
    height, width = target.alpha.shape
    canvas = _canvas(target)
    canvas[: spec.top] = 255
    canvas[height - spec.bottom :] = 255  # an empty slice when the side has no band
    canvas[:, : spec.left] = 255
    canvas[:, width - spec.right :] = 255
    _over(target, canvas, spec.value)


def _draw_border(target: Overlay, spec: BorderSpec) -> None:
    height, width = target.alpha.shape
    canvas = _canvas(target)
    near, t = spec.inset, spec.thickness
    lines = {
        "top": (slice(near, near + t), slice(near, width - near)),
        "bottom": (slice(max(height - near - t, 0), height - near), slice(near, width - near)),
        "left": (slice(near, height - near), slice(near, near + t)),
        "right": (slice(near, height - near), slice(max(width - near - t, 0), width - near)),
    }
    for side in spec.sides:
        canvas[lines[side]] = 255
    _over(target, canvas, spec.value)


_OVERLAY = {
    "scale_bar": _draw_scale_bar,
    "text": _draw_text,
    "cursor": _draw_cursor,
    "padding": _draw_padding,
    "border": _draw_border,
}
