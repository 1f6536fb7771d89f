"""A scene: every sampled parameter of one synthetic image, explicitly.

:func:`sample_scene` draws a scene from a preset and a seed; :func:`render_scene` (in
``render``) turns a scene into pixels deterministically. The scene is what the JSON
of each image holds, so an image and its masks are regenerated from the JSON alone,
and a user can edit a scene (move a pile-up, change a shape) and render it again.

Coordinates are pixels, ``x`` = column and ``y`` = row; angles in degrees, measured
from the +x axis towards +y.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .background import list_patch_folder, load_patch
from .config import SynthConfig
from .distractors import Distractor, sample_distractors
from .shapes import bounding_box, dense_curve, odd_thickness, place, sample_support_points

SCENE_VERSION = 1
Point = tuple[float, float]


class SceneError(ValueError):
    """A scene (the JSON of a synthetic image) is malformed."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PerlinSpec(_Spec):
    kind: Literal["perlin"] = "perlin"
    wavelength1: int
    wavelength2: int
    w_perlin: float
    w_white1: float
    s1: float
    r_noise: float
    s2: float
    gain: float = 1.0
    offset: float = 0.0
    seed: int


class PatchSpec(_Spec):
    file: str
    sha1: str
    crop: tuple[int, int, int, int]
    flip: bool
    rot90: int


class PatchesSpec(_Spec):
    kind: Literal["patches"] = "patches"
    folder: str
    patches: list[PatchSpec]
    opacity: float


class DislocationSpec(_Spec):
    id: int
    pileup: int
    family: str
    support: list[Point]
    slip_width: float
    angle: float
    origin: Point
    gray_factor: float
    thickness: float
    thickness_variation: float
    segment_length: float
    seed: int
    softness: float = 0.0  # Gaussian sigma (px) of the drawn line alone; 0 = crisp

    def curve(self, origin: Point | None = None) -> np.ndarray:
        """The dislocation line in image pixels, ``(n, 2)``, about 0.4 px between points;
        placed at ``origin`` instead of its own when given."""
        at = self.origin if origin is None else origin
        return place(dense_curve(np.asarray(self.support), scale=self.slip_width), angle=self.angle, origin=at)


class PileupSpec(_Spec):
    id: int
    dislocations: list[int]
    slip_width: float
    angle: float
    p0: Point
    spacings: list[float]
    isolated: bool = False


class LineSpec(_Spec):
    """A straight line drawn segment by segment: a slip trace."""

    start: Point
    end: Point
    contrast: float  # > 0 darkens, < 0 brightens
    width: float
    segment_length: float
    seed: int


class SpotSpec(_Spec):
    """A filled polygon: a spot, or the band between two slip traces."""

    vertices: list[Point]
    contrast: float  # > 0 darkens, < 0 brightens
    softness: float = 0.0  # Gaussian sigma (px), peak contrast kept; 0 = flat polygon


class BoundarySpec(_Spec):
    point: Point
    angle: float
    step: float
    line_contrast: float
    width: float


class FinishSpec(_Spec):
    blur: float
    noise: float
    seed: int
    dark_field: bool = False
    vignetting: float = 0.0
    vignetting_centre: Point = (0.5, 0.5)
    gradient: float = 0.0
    gradient_angle: float = 0.0


class Scene(_Spec):
    version: int = SCENE_VERSION
    generator: str
    preset: str
    seed: int
    size: tuple[int, int]
    background: Union[PerlinSpec, PatchesSpec] = Field(discriminator="kind")
    grain_boundaries: list[BoundarySpec] = []
    spots: list[SpotSpec] = []
    slip_traces: list[LineSpec] = []
    slip_bands: list[SpotSpec] = []
    pileups: list[PileupSpec] = []
    dislocations: list[DislocationSpec] = []
    finish: FinishSpec
    # Not dislocations: overlays and specimen structures drawn as negatives (distractors.py).
    distractors: list[Distractor] = []

    @classmethod
    def from_json(cls, text: str, *, source: str = "scene") -> "Scene":
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise SceneError(f"{source} is not a valid scene: {where}: {first['msg']}") from None


# --- sampling ----------------------------------------------------------------------


def _u(rng: np.random.Generator, pair) -> float:
    return float(rng.uniform(pair[0], pair[1]))


def _i(rng: np.random.Generator, pair) -> int:
    return int(rng.integers(pair[0], pair[1] + 1))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def sample_scene(config: SynthConfig, seed: int, *, backgrounds: str | Path | None = None) -> Scene:
    """Draw every parameter of one image from ``config`` with the random seed ``seed``.

    Parameters
    ----------
    config : SynthConfig
        A preset (see :func:`get_preset`) or a user's config.
    seed : int
        Seed of the image; the same config and seed always give the same scene.
    backgrounds : path, optional
        Folder of real background images; needed when the config's background mode is
        ``"patches"`` or ``"mixed"``.
    """
    from temtrack import __version__

    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    height, width = config.size
    background = _sample_background(config, rng, backgrounds)
    boundaries = _sample_boundaries(config, rng)
    spots = _sample_spots(config, rng)
    pileups, dislocations = _sample_pileups(config, rng)
    traces, bands = _sample_slip_traces(config, rng, pileups, dislocations)
    render = config.render
    finish = FinishSpec(
        blur=_u(rng, render.blur),
        noise=_u(rng, render.noise),
        seed=_seed(rng),
        dark_field=bool(rng.random() < render.dark_field_probability),
        vignetting=_u(rng, render.vignetting) if rng.random() < render.vignetting_probability else 0.0,
        vignetting_centre=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
        gradient=_u(rng, render.gradient) if rng.random() < render.gradient_probability else 0.0,
        gradient_angle=float(rng.uniform(0.0, 360.0)),
    )
    return Scene(
        generator=f"tem-track {__version__}",
        preset=config.name,
        seed=int(seed),
        size=(height, width),
        background=background,
        grain_boundaries=boundaries,
        spots=spots,
        slip_traces=traces,
        slip_bands=bands,
        pileups=pileups,
        dislocations=dislocations,
        finish=finish,
        # From their own random stream, so the draws above do not depend on them.
        distractors=sample_distractors(config, int(seed)),
    )


def _sample_background(config: SynthConfig, rng, folder) -> PerlinSpec | PatchesSpec:
    params = config.background
    use_patches = params.mode == "patches" or (params.mode == "mixed" and rng.random() < params.patch_fraction)
    if not use_patches:
        p = params.perlin
        return PerlinSpec(
            wavelength1=_i(rng, p.wavelength1),
            wavelength2=_i(rng, p.wavelength2),
            w_perlin=_u(rng, p.w_perlin),
            w_white1=_u(rng, p.w_white1),
            s1=_u(rng, p.s1),
            r_noise=_u(rng, p.r_noise),
            s2=_u(rng, p.s2),
            gain=_u(rng, p.gain),
            offset=_u(rng, p.offset),
            seed=_seed(rng),
        )
    if folder is None:
        raise ValueError(
            f"preset {config.name!r} uses real background patches (mode {params.mode!r}): "
            "give a background folder (backgrounds=DIR, or --backgrounds DIR)"
        )
    folder = Path(folder).resolve()
    files = list_patch_folder(folder)
    height, width = config.size
    patches = []
    for index in rng.choice(len(files), size=2, replace=len(files) < 2):
        entry = files[int(index)]
        image = load_patch(str(folder / entry.name))
        rot90 = int(rng.integers(4)) if params.patches.rotate else 0
        # A quarter turn swaps the crop's sides; crop what becomes (height, width) after it.
        out_h, out_w = (width, height) if rot90 % 2 else (height, width)
        # zoom > 1 magnifies (a smaller crop); a patch smaller than the crop is used whole.
        scale = min(1.0 / _u(rng, params.patches.zoom), image.shape[0] / out_h, image.shape[1] / out_w)
        crop_h = min(max(int(out_h * scale), 8), image.shape[0])
        crop_w = min(max(int(out_w * scale), 8), image.shape[1])
        y = int(rng.integers(0, image.shape[0] - crop_h + 1))
        x = int(rng.integers(0, image.shape[1] - crop_w + 1))
        patches.append(
            PatchSpec(
                file=entry.name,
                sha1=entry.sha1,
                crop=(x, y, crop_w, crop_h),
                flip=bool(params.patches.flip and rng.random() < 0.5),
                rot90=rot90,
            )
        )
    return PatchesSpec(folder=str(folder), patches=patches, opacity=_u(rng, params.patches.opacity))


def _sample_boundaries(config: SynthConfig, rng) -> list[BoundarySpec]:
    p = config.grain_boundaries
    height, width = config.size
    return [
        BoundarySpec(
            point=(float(rng.uniform(0.2, 0.8) * width), float(rng.uniform(0.2, 0.8) * height)),
            angle=float(rng.uniform(0.0, 180.0)),
            step=_u(rng, p.step),
            line_contrast=_u(rng, p.line_contrast),
            width=_u(rng, p.width),
        )
        for _ in range(_i(rng, p.count))
    ]


def _sample_spots(config: SynthConfig, rng) -> list[SpotSpec]:
    p = config.spots
    height, width = config.size
    spots = []
    for _ in range(_i(rng, p.count)):
        n = _i(rng, p.vertices)
        r0 = _u(rng, p.radius)
        # Irregularity is a fraction of the mean angular step 2π/N, spikiness of r0.
        theta = 2.0 * np.pi * np.arange(n) / n + rng.uniform(-1, 1, n) * _u(rng, p.irregularity) * 2.0 * np.pi / n
        radius = np.maximum(r0 + rng.normal(0.0, _u(rng, p.spikiness) * r0, n), 0.2 * r0)
        centre = rng.uniform(0, 1, 2) * (width, height)
        points = centre + np.column_stack([radius * np.cos(theta), radius * np.sin(theta)])
        hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(float)
        spot = SpotSpec(vertices=[tuple(v) for v in hull.tolist()], contrast=_u(rng, p.contrast))
        if p.softness[1] > 0:  # drawn only when on, so presets without it keep their images
            spot.softness = _u(rng, p.softness) * r0
        spots.append(spot)
    return spots


def _spacings(p, count: int, rng) -> list[float]:
    narrow_first = rng.random() < 0.5
    spacings = []
    for k in range(count - 1):
        if p.alternate:
            narrow = (k % 2 == 0) == narrow_first
        else:
            narrow = rng.random() < p.pair_probability
        spacings.append(_u(rng, p.pair if narrow else p.wide))
    return spacings


def _sample_pileups(config: SynthConfig, rng) -> tuple[list[PileupSpec], list[DislocationSpec]]:
    p = config.pileups
    height, width = config.size
    occupancy = None if p.allow_overlaps else np.zeros((height, width), np.uint8)
    budget = p.max_dislocations
    shared_angle = _u(rng, p.orientation)
    plans = [False] * _i(rng, p.count) + [True] * _i(rng, p.isolated)
    pileups, dislocations = [], []
    for isolated in plans:
        if budget <= 0:
            break
        count = 1 if isolated else min(_i(rng, p.dislocations), budget)
        angle = _u(rng, p.orientation)
        if p.shared_orientation and not isolated:
            angle = shared_angle + float(rng.uniform(-p.orientation_jitter, p.orientation_jitter))
        slip_width = _u(rng, p.slip_width)
        spacings = _spacings(p.spacing, count, rng)
        family, support = sample_support_points(config.shapes, rng)
        members = []
        offset = 0.0
        for k in range(count):
            if k:
                offset += spacings[k - 1]
                support = _perturb(support, _u(rng, config.shapes.perturbation), rng)
            members.append((offset, support))
        if p.lead_bow[1] > 0 and not isolated:  # drawn only when on, as in _look
            members = _lead_bow(members, _u(rng, p.lead_bow))
        looks = [_look(config, rng) for _ in members]
        for _attempt in range(12):
            centre = rng.uniform(0.15, 0.85, 2) * (width, height)
            p0 = _anchor(members, slip_width, angle, centre)
            candidate = [
                DislocationSpec(
                    id=len(dislocations) + k,
                    pileup=len(pileups),
                    family=family,
                    support=[tuple(q) for q in support.tolist()],
                    slip_width=slip_width,
                    angle=angle,
                    origin=tuple((p0 + offset * _direction(angle)).tolist()),
                    seed=_seed(rng),
                    **look,
                )
                for k, ((offset, support), look) in enumerate(zip(members, looks))
            ]
            if occupancy is None or _claim(occupancy, candidate, p.min_gap):
                break
        else:
            continue  # no free place for this pile-up: leave it out
        origins = np.array([d.origin for d in candidate])
        pileups.append(
            PileupSpec(
                id=len(pileups),
                dislocations=[d.id for d in candidate],
                slip_width=slip_width,
                angle=angle,
                p0=tuple(p0.tolist()),
                spacings=(np.diff(origins, axis=0) @ _direction(angle)).tolist(),
                isolated=isolated,
            )
        )
        dislocations.extend(candidate)
        budget -= count
    return pileups, dislocations


def _look(config: SynthConfig, rng) -> dict:
    r = config.render
    look = {
        "gray_factor": _u(rng, r.gray_factor),
        "thickness": _u(rng, r.thickness),
        "thickness_variation": _u(rng, r.thickness_variation),
        "segment_length": _u(rng, r.segment_length),
    }
    if r.line_softness[1] > 0:  # drawn only when on, so presets without it keep their images
        look["softness"] = _u(rng, r.line_softness)
    return look


def _lead_bow(members: list, bow: float) -> list:
    """Bow the first dislocation by ``bow`` (local units), the others less, the last not at all.

    The extra bow bulges towards -x, away from the followers (which sit at larger
    offsets), so it never pushes a dislocation into its neighbour.
    """
    count = len(members)
    out = []
    for k, (offset, support) in enumerate(members):
        share = 1.0 if count == 1 else (count - 1 - k) / (count - 1)
        bent = support.copy()
        y = np.clip(bent[:, 1], 0.0, 1.0)
        bent[:, 0] -= bow * share * 4.0 * y * (1.0 - y)
        out.append((offset, bent))
    return out


def _perturb(support: np.ndarray, amount: float, rng) -> np.ndarray:
    out = support.copy()
    if amount > 0 and len(out) > 2:
        out[1:-1, 0] += rng.normal(0.0, amount, len(out) - 2)
    return out


def _direction(angle: float) -> np.ndarray:
    a = np.radians(angle)
    return np.array([np.cos(a), np.sin(a)])


def _anchor(members, slip_width: float, angle: float, centre: np.ndarray) -> np.ndarray:
    """p0 such that the pile-up's bounding box is centred on ``centre``."""
    local = np.concatenate([support * slip_width + (offset, 0.0) for offset, support in members])
    middle = (local.min(axis=0) + local.max(axis=0)) / 2.0
    return centre - place(middle[None, :], angle=angle, origin=(0.0, 0.0))[0]


def _claim(occupancy: np.ndarray, candidate: list[DislocationSpec], gap: float) -> bool:
    """Mark the candidate pile-up on ``occupancy`` if it touches no marked dislocation.

    A dislocation that touches its predecessor in the pile-up is pushed further along
    the slip direction (1 px at a time, at most 12 px) rather than dropped, so narrow
    pairs stay as narrow as the line widths allow. Origins are updated in place.
    """
    height, width = occupancy.shape
    drawn = np.zeros_like(occupancy)
    for index, spec in enumerate(candidate):
        radius = spec.thickness / 2.0 + spec.thickness_variation + gap / 2.0
        step = _direction(spec.angle)
        # A push moves the origin only: the line placed at (0, 0) once, then shifted to
        # each origin, is spec.curve() bit for bit (place() rotates, then adds the origin).
        rotated = spec.curve(origin=(0.0, 0.0))
        for _push in range(13):
            curve = rotated + np.asarray(spec.origin, dtype=float)
            box = bounding_box(curve, radius + 1, height, width)
            y0, y1, x0, x1 = box
            layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
            if layer.size:  # a dislocation wholly outside the image touches nothing
                _draw_line(layer, curve - (x0, y0), radius)
            if not np.any(layer & drawn[y0:y1, x0:x1]):
                break
            if index == 0:
                return False
            spec.origin = tuple((np.asarray(spec.origin) + step).tolist())
        else:
            return False
        if np.any(layer & occupancy[y0:y1, x0:x1]):
            return False
        drawn[y0:y1, x0:x1] |= layer
    occupancy |= drawn
    return True


def _draw_line(canvas: np.ndarray, points: np.ndarray, radius: float) -> None:
    width = 2 * int(np.ceil(radius - 0.5)) + 1  # the odd width that covers the radius
    cv2.polylines(canvas, [np.round(points * 16).astype(np.int32)], False, 1, odd_thickness(width), cv2.LINE_8, shift=4)


def _sample_slip_traces(config: SynthConfig, rng, pileups, dislocations) -> tuple[list[LineSpec], list[SpotSpec]]:
    p = config.slip_traces
    traces, bands = [], []
    by_id = {d.id: d for d in dislocations}
    for pileup in pileups:
        if pileup.isolated or len(pileup.dislocations) < 2 or rng.random() >= p.probability:
            continue
        first, last = by_id[pileup.dislocations[0]].curve(), by_id[pileup.dislocations[-1]].curve()
        sign = 1.0 if rng.random() < p.dark_probability else -1.0
        for start, end in ((first[0], last[0]), (first[-1], last[-1])):
            traces.append(
                LineSpec(
                    start=tuple(start.tolist()),
                    end=tuple(end.tolist()),
                    contrast=sign * _u(rng, p.contrast),
                    width=_u(rng, p.width),
                    segment_length=_u(rng, p.segment_length),
                    seed=_seed(rng),
                )
            )
        if p.band != (0.0, 0.0):
            corners = [first[0], last[0], last[-1], first[-1]]
            bands.append(SpotSpec(vertices=[tuple(c.tolist()) for c in corners], contrast=-_u(rng, p.band)))
    return traces, bands
