"""Synthetic videos of dislocation loops and black dots with ground truth (issue 21).

Bright-field contrast kinds, drawn with the distractor code of
:mod:`~temtrack.training.synth.distractors` (so a "loop" looks the same whether it is a
negative for the line models or the object tracked here):

- ``"dot"``: a dark Gaussian black dot (``Dot``; circular, ``size`` = FWHM);
- ``"ring"``: a dark elliptical ring (``Loop`` with ``bean=False``);
- ``"bean"``: a coffee bean, two dark lobes split by a line of no contrast.

Each object is born at a random frame (or alive at frame 0), lives a sampled number of
frames, and moves either by 1-D hops along one of a few fixed directions (each frame a
hop of ``±h`` with probability ``p``: ``D = p h² / 2``) or by a 2-D Gaussian random
walk (``D`` per axis: steps of standard deviation ``sqrt(2 D)``), with a known ``D``
drawn log-uniformly per object; it reflects at the frame border.

Ground-truth size: the half-maximum ellipse of the object rendered alone (blurred like
the frame, no background, no noise): the convex hull of the region darker than half the
object's own peak depth, its second-moment ellipse (``major``, ``minor`` full axes, px;
``angle`` degrees from +x towards +y in [0, 180)). That is what a human box around the
visible dark feature measures, whatever the kind. It is computed once per object.

Coordinates are pixels, ``x`` = column, ``y`` = row; ``D`` in px² per frame. Needs
numpy, OpenCV, scipy, scikit-image and pydantic; PyAV and pyarrow only in
:func:`write_loop_video`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .background import perlin_background
from .distractors import BlackDotsSpec, Dot, Loop, LoopsSpec, specimen_layer

__all__ = [
    "LOOP_VIDEO_FORMAT",
    "GT_COLUMNS",
    "LoopObject",
    "LoopVideoSettings",
    "LoopFrame",
    "sample_objects",
    "render_objects",
    "iter_loop_video",
    "write_loop_video",
]

LOOP_VIDEO_FORMAT = "tem-track-synth-loops"
Kind = Literal["dot", "ring", "bean"]
KINDS = ("dot", "ring", "bean")
GT_COLUMNS = ("frame", "time_s", "loop_id", "x", "y", "major", "minor", "angle", "D", "kind", "motion", "direction")
_OBJECTS, _MOTION, _BACKGROUND, _NOISE = range(1, 5)  # independent random streams


class LoopVideoSettings(BaseModel):
    """Everything a synthetic loop video is drawn from; lengths px, rates per frame.

    ``d_range`` is the range of the known diffusion coefficients (px² / frame, sampled
    log-uniformly); ``hop_fraction`` the share of objects that hop in 1-D along one of
    ``hop_directions`` (degrees) with probability ``hop_probability`` per frame.
    """

    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int] = (256, 256)  # (height, width), even for yuv420p
    frames: int = Field(120, ge=1)
    fps: float = Field(15.0, gt=0)
    count: int = Field(25, ge=0)  # objects alive at frame 0
    birth_rate: float = Field(0.05, ge=0)  # new objects per frame
    lifetime: tuple[int, int] = (60, 400)  # frames, uniform
    kind_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)  # dot, ring, bean
    size_px: tuple[float, float] = (7.0, 20.0)  # nominal diameter (dot: FWHM)
    aspect: tuple[float, float] = (0.6, 1.0)  # minor / major of rings and beans
    contrast: tuple[float, float] = (0.25, 0.5)
    d_range: tuple[float, float] = (0.01, 1.0)
    hop_fraction: float = Field(0.5, ge=0, le=1)
    hop_directions: tuple[float, ...] = (0.0, 60.0, 120.0)
    hop_probability: float = Field(0.3, gt=0, le=1)
    min_separation: float = Field(1.5, ge=0)  # in units of the larger object size, at birth
    background_level: tuple[float, float] = (0.45, 0.75)  # offset, offset + gain of the Perlin texture
    background_texture: float = Field(0.15, ge=0)  # gain of the texture
    blur: float = Field(0.8, ge=0)
    noise: float = Field(0.01, ge=0)  # Gaussian noise std per frame
    crf: int = Field(18, ge=0, le=51)


class LoopObject(BaseModel):
    """One loop or dot over its life."""

    model_config = ConfigDict(extra="forbid")

    loop_id: int
    kind: Kind
    birth: int
    death: int  # first frame it is gone
    x: float
    y: float
    size: float
    aspect: float
    angle: float
    contrast: float
    D: float
    motion: Literal["1d", "2d"]
    direction: float | None  # degrees, for 1-D hops
    major: float = 0.0  # ground-truth half-maximum ellipse, filled in by sample_objects
    minor: float = 0.0
    ellipse_angle: float = 0.0


@dataclass(frozen=True)
class LoopFrame:
    """One frame: ``image`` (H, W) float32 in [0, 1] and its ground-truth rows (a dict of arrays)."""

    index: int
    time_s: float
    image: np.ndarray
    truth: dict


def _u(rng, pair) -> float:
    return float(rng.uniform(pair[0], pair[1]))


def _spec(obj: LoopObject, x: float, y: float):
    if obj.kind == "dot":
        return BlackDotsSpec(dots=[Dot(centre=(x, y), size=obj.size, contrast=obj.contrast)])
    return LoopsSpec(loops=[Loop(centre=(x, y), size=obj.size, aspect=obj.aspect, angle=obj.angle,
                                 contrast=obj.contrast, bean=obj.kind == "bean")])


def render_objects(objects, positions, shape: tuple[int, int]) -> np.ndarray:
    """Darkening layer (``(H, W)`` float32, <= 0) of ``objects`` at ``positions`` ``(n, 2)`` px."""
    specs = [_spec(obj, float(x), float(y)) for obj, (x, y) in zip(objects, positions)]
    return specimen_layer(specs, shape)


def half_maximum_ellipse(layer: np.ndarray) -> tuple[float, float, float, float, float]:
    """``(x, y, major, minor, angle)`` of the convex hull of where ``-layer`` >= half its peak."""
    from skimage.measure import regionprops

    from skimage.morphology import convex_hull_image

    depth = -layer
    # The convex hull: a coffee bean's two lobes and a ring's hole are one object.
    region = convex_hull_image(depth >= 0.5 * depth.max())
    prop = regionprops(region.astype(np.int32))[0]
    y, x = prop.centroid
    # skimage's orientation is the angle from the row axis; ours is from +x towards +y.
    angle = float(np.degrees(np.pi / 2 - prop.orientation)) % 180.0
    return float(x), float(y), float(prop.axis_major_length), float(prop.axis_minor_length), angle


def _truth_ellipse(obj: LoopObject, blur: float) -> tuple[float, float, float]:
    half = int(np.ceil(obj.size)) + 8
    fx, fy = obj.x % 1.0, obj.y % 1.0
    layer = render_objects([obj], [(half + fx, half + fy)], (2 * half + 1, 2 * half + 1))
    if blur > 0:
        layer = cv2.GaussianBlur(layer, (0, 0), blur)
    _, _, major, minor, angle = half_maximum_ellipse(layer)
    return major, minor, angle


def _new_object(rng, s: LoopVideoSettings, loop_id: int, birth: int, placed) -> LoopObject:
    height, width = s.size
    kind = KINDS[int(rng.choice(3, p=np.asarray(s.kind_weights) / sum(s.kind_weights)))]
    size = _u(rng, s.size_px)
    margin = size + 2
    for _ in range(50):  # rejection sampling for a free spot
        x, y = float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin))
        if all(np.hypot(x - px, y - py) >= s.min_separation * max(size, ps) for px, py, ps in placed):
            break
    placed.append((x, y, size))
    D = float(np.exp(rng.uniform(np.log(s.d_range[0]), np.log(s.d_range[1]))))
    hop = rng.random() < s.hop_fraction and len(s.hop_directions) > 0
    obj = LoopObject(
        loop_id=loop_id, kind=kind, birth=birth, death=birth + int(rng.integers(s.lifetime[0], s.lifetime[1] + 1)),
        x=x, y=y, size=size, aspect=1.0 if kind == "dot" else _u(rng, s.aspect),
        angle=float(rng.uniform(0, 180)), contrast=_u(rng, s.contrast), D=D,
        motion="1d" if hop else "2d",
        direction=float(s.hop_directions[int(rng.integers(len(s.hop_directions)))]) if hop else None,
    )
    major, minor, angle = _truth_ellipse(obj, s.blur)
    return obj.model_copy(update={"major": major, "minor": minor, "ellipse_angle": angle})


def sample_objects(settings: LoopVideoSettings, seed: int) -> list[LoopObject]:
    """Every object of the video, with birth, death, start position, D and truth ellipse."""
    rng = np.random.default_rng([seed, _OBJECTS])
    placed: list = []
    objects = [_new_object(rng, settings, i, 0, placed) for i in range(settings.count)]
    births = rng.random(settings.frames) < settings.birth_rate
    for frame in np.flatnonzero(births[1:]) + 1:
        objects.append(_new_object(rng, settings, len(objects), int(frame), placed))
    return objects


def _reflect(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    span = high - low
    t = np.mod(value - low, 2 * span)
    return low + np.where(t > span, 2 * span - t, t)


def iter_loop_video(settings: LoopVideoSettings, seed: int, *, objects=None) -> Iterator[LoopFrame]:
    """Frames of a synthetic loop video with their ground truth, in order.

    Parameters
    ----------
    settings : LoopVideoSettings
    seed : int
        Seeds every random stream (objects, motion, background, noise).
    objects : list of LoopObject, optional
        Objects to draw instead of :func:`sample_objects` (tests place them by hand).

    Yields
    ------
    LoopFrame
        ``truth`` holds one array per column of :data:`GT_COLUMNS` (one row per object
        alive in that frame).
    """
    if not isinstance(settings, LoopVideoSettings):
        raise TypeError(f"settings must be a LoopVideoSettings, got {type(settings).__name__}")
    height, width = settings.size
    objects = sample_objects(settings, seed) if objects is None else list(objects)
    rng = np.random.default_rng([seed, _MOTION])
    noise_rng = np.random.default_rng([seed, _NOISE])
    texture = perlin_background((height, width), wavelength1=80, wavelength2=8, w_perlin=0.6, w_white1=0.15,
                                s1=0.8, r_noise=0.05, s2=0.8, seed=int(np.random.default_rng([seed, _BACKGROUND]).integers(2**31)))
    low, high = settings.background_level
    background = np.float32(low) + np.float32(high - low) * (
        (1 - settings.background_texture) * 0.5 + settings.background_texture * texture)
    pos = np.array([[o.x, o.y] for o in objects], dtype=float).reshape(-1, 2)
    margin = np.array([[o.size / 2 + 2] for o in objects]).reshape(-1, 1)
    lo, hi = margin, np.array([[width, height]]) - margin
    direction = np.array([[np.cos(np.radians(o.direction or 0)), np.sin(np.radians(o.direction or 0))] for o in objects]).reshape(-1, 2)
    hop_len = np.array([np.sqrt(2 * o.D / settings.hop_probability) for o in objects])
    is_1d = np.array([o.motion == "1d" for o in objects], dtype=bool)
    sigma = np.array([np.sqrt(2 * o.D) for o in objects])
    for index in range(settings.frames):
        if index > 0:  # every object draws its steps every frame, alive or not: streams stay aligned
            hops = (rng.random(len(objects)) < settings.hop_probability) * rng.choice([-1.0, 1.0], len(objects))
            walk = rng.standard_normal((len(objects), 2)) * sigma[:, None]
            step = np.where(is_1d[:, None], (hops * hop_len)[:, None] * direction, walk)
            pos = _reflect(pos + step, lo, hi)
        alive = [i for i, o in enumerate(objects) if o.birth <= index < o.death]
        image = background - 0.0
        image += render_objects([objects[i] for i in alive], pos[alive], (height, width))
        if settings.blur > 0:
            image = cv2.GaussianBlur(image, (0, 0), settings.blur, borderType=cv2.BORDER_REFLECT)
        if settings.noise > 0:
            image += noise_rng.standard_normal((height, width), dtype=np.float32) * np.float32(settings.noise)
        np.clip(image, 0.0, 1.0, out=image)
        sel = [objects[i] for i in alive]
        truth = {
            "frame": np.full(len(alive), index, np.int32),
            "time_s": np.full(len(alive), index / settings.fps),
            "loop_id": np.array([o.loop_id for o in sel], np.int32),
            "x": pos[alive, 0].astype(np.float32) if alive else np.zeros(0, np.float32),
            "y": pos[alive, 1].astype(np.float32) if alive else np.zeros(0, np.float32),
            "major": np.array([o.major for o in sel], np.float32),
            "minor": np.array([o.minor for o in sel], np.float32),
            "angle": np.array([o.ellipse_angle for o in sel], np.float32),
            "D": np.array([o.D for o in sel], np.float64),
            "kind": np.array([o.kind for o in sel], dtype=object),
            "motion": np.array([o.motion for o in sel], dtype=object),
            "direction": np.array([np.nan if o.direction is None else o.direction for o in sel], np.float32),
        }
        yield LoopFrame(index=index, time_s=index / settings.fps, image=image, truth=truth)


def write_loop_video(path, settings: LoopVideoSettings, seed: int, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``video.mp4``, ``ground_truth.parquet`` and ``loops.json`` into the folder ``path``.

    ``ground_truth.parquet`` has one row per object per frame it is alive in, columns
    :data:`GT_COLUMNS` (``D`` px²/frame, sizes px, ``angle`` degrees); ``loops.json``
    holds ``format``, ``seed``, ``settings`` and every object's parameters. Written into a
    temporary sibling folder that becomes ``path`` only when complete. An existing
    ``path`` raises :class:`FileExistsError` unless ``overwrite`` and it holds a
    ``loops.json`` of this format.
    """
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    from temtrack import __version__
    from temtrack.sdk.atomic import new_partial_folder, publish_folder

    path = Path(path)
    height, width = settings.size
    if height % 2 or width % 2:
        raise ValueError(f"settings.size must have an even height and width for yuv420p, got {settings.size}")
    if path.exists():
        marker = path / "loops.json"
        mine = marker.is_file() and json.loads(marker.read_text()).get("format") == LOOP_VIDEO_FORMAT
        if not overwrite or not mine:
            raise FileExistsError(f"output folder {path} exists; pass overwrite=True (only replaces a loop video)")
    objects = sample_objects(settings, seed)
    meta = {"format": LOOP_VIDEO_FORMAT, "seed": int(seed), "settings": settings.model_dump(mode="json"),
            "version": __version__}
    partial = new_partial_folder(path)
    try:
        tables = []
        with av.open(str(partial / "video.mp4"), mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(settings.fps).limit_denominator(1001))
            stream.height, stream.width = height, width
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(settings.crf)}
            for frame in iter_loop_video(settings, seed, objects=objects):
                pixels = np.round(frame.image * 255.0).astype(np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="gray")))
                tables.append(frame.truth)
            container.mux(stream.encode(None))
        columns = {name: np.concatenate([t[name] for t in tables]) for name in GT_COLUMNS}
        columns["kind"] = columns["kind"].astype(str)
        columns["motion"] = columns["motion"].astype(str)
        table = pa.table(columns).replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})
        pq.write_table(table, partial / "ground_truth.parquet")
        document = {**meta, "objects": [o.model_dump(mode="json") for o in objects]}
        (partial / "loops.json").write_text(json.dumps(document, indent=1))
        publish_folder(partial, path, overwrite=path.exists())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path / "video.mp4", path / "ground_truth.parquet"
