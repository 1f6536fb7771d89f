"""Synthetic in-situ TEM videos with persistent dislocation ids.

One :class:`Scene` is sampled once; its background is rendered once on a canvas larger
than the frame and every frame crops a drifting view of it, so the texture moves with
the field of view instead of being regenerated. Between frames each pile-up glides
along its slip direction in stick-slip episodes (mostly stuck, sudden slips of a few
pixels), spacings inside a pile-up and the dislocation shapes wander slightly, the view
drifts and the brightness flickers. A dislocation keeps its ``DislocationSpec.id`` as
track id in every frame it is visible in; outside the frame it is simply absent.

Coordinates are pixels, ``x`` = column and ``y`` = row. Pure numpy/OpenCV; PyAV and
pyarrow are imported only by :func:`write_video`.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from temtrack.sdk.atomic import new_partial_folder, publish_folder

from .config import Positive, SynthConfig
from .distractors import burn_in, overlay_layers
from .render import compose, render_background
from .scene import Scene, sample_scene
from .storage import VIDEO_FORMAT, prepare_output

# Spacings and shapes are random walks pulled back towards their sampled values by this
# fraction per frame, so long videos keep plausible geometry (stationary std ~ 5 steps).
_REVERSION = 0.02
_FLICKER_MEMORY = 0.7  # AR(1) coefficient: flicker is smooth over a few frames.
_OUTSIDE = 4.0  # px beyond the frame edge that count as outside (half line width + blur).
_ROW_GROUP = 100  # frames per parquet row group
# Independent random streams per process: changing one setting (say noise) never
# changes another process (say the glide) of the same seed.
_GLIDE, _GEOMETRY, _OPTICS, _FRAME, _PLACEMENT = range(1, 6)


class VideoSettings(BaseModel):
    """Dynamics and encoding of a synthetic video; lengths in px, rates per frame.

    Defaults give a realistic in-situ look: pile-ups are stuck most of the time
    (a slip starts with probability 0.08 per frame, i.e. every ~12 frames) and slip for
    ~2 frames at 0.5-3 px/frame, a jump of a few px; the view drifts 0.15 px/frame in a
    slowly turning direction; brightness flickers by 2 %.

    With ``enter_leave`` each pile-up is placed from its total glide over the whole
    video, so a longer video of the same seed is not an extension of a shorter one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(100, ge=1, le=10_000_000)
    fps: float = Field(15.0, gt=0.0, le=10_000.0)
    glide_speed: Positive = (0.5, 3.0)  # px/frame while slipping, drawn per slip episode
    stick_probability: float = Field(0.5, ge=0.0, le=1.0)  # per frame, slipping -> stuck
    slip_probability: float = Field(0.08, ge=0.0, le=1.0)  # per frame, stuck -> slipping
    spacing_jitter: float = Field(0.2, ge=0.0)  # px/frame std of each spacing's random walk
    min_spacing: float = Field(3.0, ge=0.0)  # px; spacings never shrink below it
    shape_drift: float = Field(0.002, ge=0.0, le=0.1)  # local units/frame, interior support x
    drift: float = Field(0.15, ge=0.0)  # px/frame speed of the field-of-view drift
    drift_turn: float = Field(3.0, ge=0.0, le=180.0)  # degrees/frame std of its direction
    max_drift: float = Field(32.0, ge=0.0, le=4096.0)  # px; the view bounces at +-max_drift
    flicker: float = Field(0.02, ge=0.0, le=0.5)  # relative brightness std
    noise: float = Field(0.01, ge=0.0, le=1.0)  # std of per-frame white noise
    enter_leave: bool = True  # place pile-ups so dislocations enter / leave the view
    crf: int = Field(18, ge=0, le=51)  # H.264 quality (lower is better)


@dataclass(frozen=True)
class VideoFrame:
    """One frame of a synthetic video with its ground truth.

    Attributes
    ----------
    index : int
    time_s : float
        ``index / fps``.
    image : (H, W) ndarray of float32 in [0, 1]
    centrelines : list of (n_i, 2) ndarray of float64
        ``(x, y)`` px in frame coordinates of each visible dislocation, clipped to the frame.
    track_ids, pileups : (N,) ndarray of int64
        Persistent id (``DislocationSpec.id``) and pile-up of each visible dislocation.
    masks : (N, H, W) ndarray of uint8
    offset : (float, float)
        Field-of-view drift ``(dx, dy)`` px applied to background and structures.
    gain : float
        Brightness factor of the frame (flicker).
    scene : Scene
        The frame's scene in canvas coordinates (before ``offset``).
    """

    index: int
    time_s: float
    image: np.ndarray
    centrelines: list
    track_ids: np.ndarray
    pileups: np.ndarray
    masks: np.ndarray
    offset: tuple[float, float]
    gain: float
    scene: Scene


def _glide_steps(rng: np.random.Generator, count: int, settings: VideoSettings) -> Iterator[np.ndarray]:
    """Per-frame glide distance (px, >= 0) of ``count`` pile-ups in stick-slip episodes."""
    slipping, speed = np.zeros(count, bool), np.zeros(count)
    while True:
        # Draw the same amount every frame so the stream does not depend on the state.
        switch, fresh = rng.random(count), rng.uniform(*settings.glide_speed, count)
        start = ~slipping & (switch < settings.slip_probability)
        stop = slipping & (switch < settings.stick_probability)
        speed = np.where(start, fresh, speed)
        slipping = (slipping | start) & ~stop
        yield np.where(slipping, speed, 0.0)


def _exit_distance(curve: np.ndarray, velocity: np.ndarray, height: int, width: int) -> float:
    """Smallest ``t >= 0`` such that ``curve + s * velocity`` lies outside the frame for all ``s >= t``."""
    low = np.full(2, -0.5 - _OUTSIDE)
    high = np.array([width, height]) - 0.5 + _OUTSIDE
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (low - curve) / velocity, (high - curve) / velocity
    inside = (curve >= low) & (curve <= high)
    moving = velocity != 0
    enter = np.where(moving, np.minimum(a, b), np.where(inside, -np.inf, np.inf)).max(axis=1)
    leave = np.where(moving, np.maximum(a, b), np.where(inside, np.inf, -np.inf)).min(axis=1)
    return float(max(leave[enter <= leave].max(initial=0.0), 0.0))


class _Motion:
    """Dynamic state of a video: glide, spacings, shapes, drift and flicker."""

    def __init__(self, scene: Scene, seed: int, settings: VideoSettings):
        self.scene, self.settings = scene, settings
        where = {d.id: i for i, d in enumerate(scene.dislocations)}
        self.groups = [np.array([where[i] for i in p.dislocations], dtype=int) for p in scene.pileups]
        angles = np.radians([p.angle for p in scene.pileups])
        self.slip = np.column_stack([np.cos(angles), np.sin(angles)]).reshape(-1, 2)
        self.origin0 = np.array([d.origin for d in scene.dislocations], dtype=float).reshape(-1, 2)
        self.spacing0 = [np.diff(self.origin0[g], axis=0) @ u for g, u in zip(self.groups, self.slip)]
        self.spacing = [s.copy() for s in self.spacing0]
        # Never force a jump: a sampled spacing below min_spacing is its own floor.
        self.floor = [np.minimum(s, settings.min_spacing) for s in self.spacing0]
        self.support0 = [np.asarray(d.support, dtype=float) for d in scene.dislocations]
        self.support = [s.copy() for s in self.support0]

        count = len(scene.pileups)
        placement = np.random.default_rng([seed, _PLACEMENT])
        self.sign = placement.choice([-1.0, 1.0], count)  # which way along the slip direction it glides
        steps = _glide_steps(np.random.default_rng([seed, _GLIDE]), count, settings)
        totals = sum((next(steps) for _ in range(settings.frames - 1)), np.zeros(count))
        self.position = np.zeros(count)  # px along sign * slip direction
        for p, group in enumerate(self.groups):
            enter, part = placement.random() < 0.5, placement.uniform(0.15, 0.85)
            rank = placement.geometric(0.5) - 1
            if not settings.enter_leave or totals[p] < 1.0 or not len(group):
                continue
            # One member is put `part` of the pile-up's total glide away from crossing the
            # frame edge, so it enters (glides in at the back) or leaves (at the front)
            # during the video. Mostly the member nearest that edge (rank 0), so the rest
            # stay in view; members further in line may start or stay outside.
            away = (-1.0 if enter else 1.0) * self.sign[p] * self.slip[p]
            exits = np.sort([_exit_distance(scene.dislocations[i].curve(), away, *scene.size) for i in group])
            crossing = exits[min(rank, len(exits) - 1)]
            self.position[p] = -(crossing + part * totals[p]) if enter else crossing - part * totals[p]
        self.glide_steps = _glide_steps(np.random.default_rng([seed, _GLIDE]), count, settings)

        self.geometry = np.random.default_rng([seed, _GEOMETRY])
        self.optics = np.random.default_rng([seed, _OPTICS])
        self.heading = self.optics.uniform(0.0, 2.0 * np.pi)
        self.offset = np.zeros(2)
        self.flicker = self.optics.normal(0.0, settings.flicker)

    @property
    def gain(self) -> float:
        return float(1.0 + self.flicker)

    def step(self) -> None:
        """Advance every process by one frame."""
        s = self.settings
        self.position += next(self.glide_steps)
        kicks = self.geometry.standard_normal(sum(len(x) for x in self.spacing) + sum(len(x) for x in self.support))
        start = 0
        for spacing, spacing0, floor in zip(self.spacing, self.spacing0, self.floor):
            spacing += _REVERSION * (spacing0 - spacing) + s.spacing_jitter * kicks[start : start + len(spacing)]
            np.maximum(spacing, floor, out=spacing)
            start += len(spacing)
        for support, support0 in zip(self.support, self.support0):
            # Only interior points move, across the line (local x): the ends stay on the slip traces.
            inner = slice(1, len(support) - 1)
            kick = kicks[start : start + len(support)][inner]
            support[inner, 0] += _REVERSION * (support0[inner, 0] - support[inner, 0]) + s.shape_drift * kick
            start += len(support)

        turn, kick = self.optics.standard_normal(2)
        self.heading += np.radians(s.drift_turn) * turn
        self.offset += s.drift * np.array([np.cos(self.heading), np.sin(self.heading)])
        for axis in (0, 1):
            if abs(self.offset[axis]) > s.max_drift:  # bounce: the background canvas ends there
                mirrored = np.sign(self.offset[axis]) * 2 * s.max_drift - self.offset[axis]
                self.offset[axis] = np.clip(mirrored, -s.max_drift, s.max_drift)
                self.heading = np.pi - self.heading if axis == 0 else -self.heading
        self.flicker = _FLICKER_MEMORY * self.flicker + np.sqrt(1 - _FLICKER_MEMORY**2) * s.flicker * kick

    def scene_now(self, finish_seed: int) -> Scene:
        """A copy of the scene with the current origins, spacings, shapes and a per-frame finish seed."""
        origins = self.origin0.copy()
        pileups = []
        for p, (pileup, group) in enumerate(zip(self.scene.pileups, self.groups)):
            along = np.concatenate([[0.0], np.cumsum(self.spacing[p] - self.spacing0[p])])
            move = self.position[p] * self.sign[p] * self.slip[p]
            origins[group] += move + along[:, None] * self.slip[p]
            p0 = (np.asarray(pileup.p0) + move).tolist()
            pileups.append(pileup.model_copy(update={"p0": tuple(p0), "spacings": self.spacing[p].tolist()}))
        dislocations = [
            d.model_copy(update={"origin": tuple(o), "support": [tuple(q) for q in s.tolist()]})
            for d, o, s in zip(self.scene.dislocations, origins.tolist(), self.support)
        ]
        # The scene's own noise is redrawn every frame: a frozen noise pattern would
        # stay put while the view drifts and bias any registration towards zero shift.
        finish = self.scene.finish.model_copy(update={"seed": finish_seed})
        return self.scene.model_copy(update={"pileups": pileups, "dislocations": dislocations, "finish": finish})


def iter_video(
    config: SynthConfig, seed: int, settings: VideoSettings = VideoSettings(), *, backgrounds=None
) -> Iterator[VideoFrame]:
    """Generate a synthetic video frame by frame.

    Parameters
    ----------
    config : SynthConfig
        Generator config; ``config.size`` is the frame size (height, width) in px.
    seed : int
        Non-negative; the same config, seed and settings always give the same frames.
    settings : VideoSettings
        Dynamics of the video.
    backgrounds : path, optional
        Folder of real background images, for configs that use real patches.

    Yields
    ------
    VideoFrame
        One at a time; memory does not grow with the number of frames.
    """
    if not isinstance(settings, VideoSettings):
        raise TypeError(f"settings must be a VideoSettings, got {type(settings).__name__}")
    # Sampled here, not in the generator, so a bad seed or config fails at the call.
    scene = sample_scene(config, seed, backgrounds=backgrounds)
    margin = int(np.ceil(settings.max_drift if settings.drift > 0 else 0.0)) + 4  # + cubic support
    height, width = scene.size
    canvas = render_background(scene, backgrounds=backgrounds, shape=(height + 2 * margin, width + 2 * margin))
    return _frames(scene, canvas, margin, int(seed), settings)


def _frames(scene: Scene, canvas: np.ndarray, margin: int, seed: int, settings: VideoSettings) -> Iterator[VideoFrame]:
    height, width = scene.size
    motion = _Motion(scene, seed, settings)
    # Burnt-in overlays stay put in the frame while the specimen drifts (compose draws
    # them without the offset); drawn again over the camera noise below to stay crisp.
    overlay = overlay_layers(scene.distractors, (height, width))
    for index in range(settings.frames):
        if index:
            motion.step()
        rng = np.random.default_rng([seed, _FRAME, index])
        frame_scene = motion.scene_now(int(rng.integers(0, 2**31 - 1)))
        dx, dy = motion.offset.tolist()
        # Frame pixel (x, y) shows canvas point (x + margin - dx, y + margin - dy).
        shift = np.float32([[1, 0, dx - margin], [0, 1, dy - margin]])
        view = cv2.warpAffine(canvas, shift, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        np.clip(view, 0.0, 1.0, out=view)
        sample = compose(frame_scene, view, offset=(dx, dy), gain=motion.gain)
        image = sample.image
        if settings.noise > 0:
            image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(settings.noise)
            np.clip(image, 0.0, 1.0, out=image)
            if overlay is not None:
                image = burn_in(image, overlay)
        yield VideoFrame(
            index=index,
            time_s=index / settings.fps,
            image=image,
            centrelines=sample.centrelines,
            track_ids=sample.ids,
            pileups=sample.pileups,
            masks=sample.masks,
            offset=(dx, dy),
            gain=motion.gain,
            scene=frame_scene,
        )


def write_video(
    path,
    config: SynthConfig,
    seed: int,
    settings: VideoSettings = VideoSettings(),
    *,
    backgrounds=None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write a synthetic video and its ground truth into the folder ``path``.

    The folder receives ``video.mp4`` (H.264, yuv420p, gray frames ``round(255 * image)``),
    ``ground_truth.parquet`` (one row per visible dislocation per frame: ``frame`` int32,
    ``time_s`` float64, ``track_id`` int32, ``pileup`` int32, ``x`` and ``y``
    list<float32> centreline px; key-value metadata ``config``, ``seed``, ``settings``,
    ``version`` as JSON) and ``video.json`` (the same plus the frame-0 ``scene``, and
    ``"format": "tem-track-synth-video"``, the marker that lets ``overwrite`` replace it).
    Frames stream to disk; everything is written into a temporary sibling folder that
    becomes ``path`` only when complete, and is removed on any error.

    Parameters
    ----------
    path : path
        Output folder; an existing one raises :class:`FileExistsError` unless it is
        empty or ``overwrite``.
    config, seed, settings, backgrounds
        As for :func:`iter_video`. The frame height and width must be even (yuv420p).
    overwrite : bool
        Replace an existing ``path``, only once the new output is complete, and only
        if tem-track synth wrote it
        (:func:`~temtrack.training.synth.storage.check_replaceable`): anything else
        raises :class:`FileExistsError` and is left as it was.
    progress : bool
        Show a progress bar over frames (only on a terminal).

    Returns
    -------
    (Path, Path)
        The video file and the ground-truth file.
    """
    from tqdm import tqdm

    from temtrack import __version__

    path = Path(path)
    height, width = config.size
    if height % 2 or width % 2:
        raise ValueError(
            f"config.size must have an even height and width for H.264 yuv420p video, got {tuple(config.size)}"
        )
    replace = prepare_output(path, overwrite=overwrite)
    if not isinstance(settings, VideoSettings):
        raise TypeError(f"settings must be a VideoSettings, got {type(settings).__name__}")
    meta = {
        "config": config.model_dump(mode="json"),
        "seed": int(seed),
        "settings": settings.model_dump(mode="json"),
        "version": __version__,
    }
    partial = new_partial_folder(path)
    try:
        frames = iter_video(config, seed, settings, backgrounds=backgrounds)
        quiet = not (progress and getattr(sys.stderr, "isatty", lambda: False)())
        with tqdm(frames, total=settings.frames, unit="frame", desc=path.name, disable=quiet) as bar:
            scene = _write_streams(partial, bar, meta, settings, (height, width))
        document = {"format": VIDEO_FORMAT, **meta, "frames": settings.frames, "fps": settings.fps,
                    "scene": scene.model_dump(mode="json")}
        (partial / "video.json").write_text(json.dumps(document, indent=2))
        if path.exists() or path.is_symlink():  # again: it may have changed while encoding
            replace = prepare_output(path, overwrite=overwrite)
        publish_folder(partial, path, overwrite=replace)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path / "video.mp4", path / "ground_truth.parquet"


def _write_streams(folder: Path, frames, meta: dict, settings: VideoSettings, size) -> Scene:
    """Encode ``frames`` into ``folder``; return the scene of frame 0."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("frame", pa.int32()),
            ("time_s", pa.float64()),
            ("track_id", pa.int32()),
            ("pileup", pa.int32()),
            ("x", pa.list_(pa.float32())),
            ("y", pa.list_(pa.float32())),
        ],
        metadata={key: json.dumps(value) for key, value in meta.items()},
    )
    rows = {name: [] for name in schema.names}
    first = None
    with av.open(str(folder / "video.mp4"), mode="w") as container, pq.ParquetWriter(
        folder / "ground_truth.parquet", schema
    ) as table:
        stream = container.add_stream("libx264", rate=Fraction(settings.fps).limit_denominator(1001))
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(settings.crf)}
        for frame in frames:
            if first is None:
                first = frame.scene
            pixels = np.round(frame.image * 255.0).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="gray")))
            for line, track, pileup in zip(frame.centrelines, frame.track_ids, frame.pileups):
                for name, value in zip(schema.names, (frame.index, frame.time_s, track, pileup)):
                    rows[name].append(value)
                rows["x"].append(line[:, 0].astype(np.float32))
                rows["y"].append(line[:, 1].astype(np.float32))
            if rows["frame"] and ((frame.index + 1) % _ROW_GROUP == 0 or frame.index + 1 == settings.frames):
                table.write_table(pa.table(rows, schema=schema))
                rows = {name: [] for name in schema.names}
        container.mux(stream.encode(None))  # flush the encoder's delayed frames
    return first
