"""Render a :class:`Scene` into an image, one mask per dislocation and exact centrelines.

Rendering follows thesis section 2.3: each dislocation is drawn segment by segment with
gray value ``background - gray_factor * U(0.75, 1)`` and a per-segment thickness, then
the whole image is smoothed by a Gaussian filter. Everything random here is drawn from
seeds stored in the scene, so a scene always renders to the same pixels.

Work is done on bounding-box crops: a dislocation touches only its own box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .background import patch_background, perlin_background
from .distractors import burn_in, hidden_by, overlay_layers, specimen_layer
from .scene import DislocationSpec, LineSpec, PatchesSpec, Scene
from .shapes import bounding_box, odd_thickness

_SHIFT = 4  # OpenCV sub-pixel bits: coordinates are drawn with 1/16 px precision.


@dataclass(frozen=True)
class Sample:
    """One synthetic image with its ground truth.

    Attributes
    ----------
    image : (H, W) ndarray of float32
        Intensities in [0, 1].
    masks : (N, H, W) ndarray of uint8
        One binary mask (0/1) per visible dislocation; masks may overlap.
    centrelines : list of (n_i, 2) ndarray of float64
        The exact centreline ``(x, y)`` of each dislocation, in pixels, sampled about
        every pixel, clipped to the image (the longest part inside it).
    ids : (N,) ndarray of int64
        Dislocation ids (``Scene.dislocations[*].id``) in the order of ``masks``.
    pileups : (N,) ndarray of int64
        Pile-up id of each dislocation.
    scene : Scene
        Every parameter the sample was rendered from.
    """

    image: np.ndarray
    masks: np.ndarray
    centrelines: list
    ids: np.ndarray
    pileups: np.ndarray
    scene: Scene


def render_background(scene: Scene, *, backgrounds: str | Path | None = None, shape=None) -> np.ndarray:
    """The scene's background alone, ``(H, W)`` float32 in [0, 1].

    ``backgrounds`` overrides the folder recorded in the scene (data moved elsewhere);
    ``shape`` renders a larger canvas (videos crop a drifting view from it).
    """
    shape = tuple(shape or scene.size)
    spec = scene.background
    if isinstance(spec, PatchesSpec):
        return patch_background(
            shape,
            folder=backgrounds or spec.folder,
            patches=[p.model_dump() for p in spec.patches],
            opacity=spec.opacity,
        )
    params = spec.model_dump(exclude={"kind", "seed"})
    return perlin_background(shape, seed=spec.seed, **params)


def render_scene(scene: Scene, *, backgrounds: str | Path | None = None) -> Sample:
    """Render ``scene`` to a :class:`Sample` (image, masks, centrelines)."""
    background = render_background(scene, backgrounds=backgrounds)
    return compose(scene, background)


def compose(scene: Scene, background: np.ndarray, *, offset=(0.0, 0.0), gain: float = 1.0) -> Sample:
    """Draw the scene's structures on ``background`` and finish the image.

    ``offset`` shifts every structure by ``(dx, dy)`` pixels and ``gain`` scales the
    brightness (used by videos for drift and flicker).
    """
    height, width = background.shape
    image = background * np.float32(gain) if gain != 1.0 else background.copy()
    shift = np.asarray(offset, dtype=float)
    for boundary in scene.grain_boundaries:
        _draw_boundary(image, boundary, shift)
    for spot in [*scene.slip_bands, *scene.spots]:
        vertices = np.asarray(spot.vertices) + shift
        y0, y1, x0, x1 = bounding_box(vertices, 2 + _reach(spot.softness), height, width)
        if y1 > y0 and x1 > x0:
            layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(layer, [np.round((vertices - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=_SHIFT)
            image[y0:y1, x0:x1] -= _soften(layer, spot.softness) * np.float32(spot.contrast / 255.0)
    for trace in scene.slip_traces:
        _draw_trace(image, trace, shift)
    if scene.distractors:
        image += specimen_layer(scene.distractors, (height, width), offset=shift)
    # Overlays are burnt in at the end, fixed in the frame (no offset), and hide what is
    # beneath: masks are zeroed under them, centrelines cut 1 px clear of them (so that
    # points resampled between two kept points stay clear too).
    overlay = overlay_layers(scene.distractors, (height, width))
    hidden = hidden_by(overlay, (height, width))
    blocked = None if hidden is None else cv2.dilate(hidden.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0

    darkening = np.zeros((height, width), np.float32)
    masks, centrelines, ids, pileups = [], [], [], []
    for spec in scene.dislocations:
        curve = spec.curve() + shift
        drawn = _draw_dislocation(darkening, spec, curve)
        if drawn is None:
            continue
        line = _visible(curve, height, width, hidden=blocked)
        if hidden is not None:
            box, crop = drawn
            y0, y1, x0, x1 = box
            drawn = box, crop * ~hidden[y0:y1, x0:x1]
            if not drawn[1].any() or len(line) < 2:
                continue  # wholly under an overlay
        masks.append(drawn)
        centrelines.append(line)
        ids.append(spec.id)
        pileups.append(spec.pileup)
    image -= darkening

    finish = scene.finish
    if finish.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), finish.blur, borderType=cv2.BORDER_REFLECT)
    if finish.vignetting > 0 or finish.gradient != 0:
        image *= _illumination(finish, height, width)
    if finish.noise > 0:
        rng = np.random.default_rng(finish.seed)
        image += rng.standard_normal((height, width), dtype=np.float32) * np.float32(finish.noise)
    if finish.dark_field:
        image = 1.0 - image
    np.clip(image, 0.0, 1.0, out=image)
    if overlay is not None:
        image = burn_in(image, overlay)

    stack = np.zeros((len(masks), height, width), np.uint8)
    for index, (box, crop) in enumerate(masks):
        y0, y1, x0, x1 = box
        stack[index, y0:y1, x0:x1] = crop
    return Sample(
        image=image,
        masks=stack,
        centrelines=centrelines,
        ids=np.asarray(ids, dtype=np.int64),
        pileups=np.asarray(pileups, dtype=np.int64),
        scene=scene,
    )


def _segments(curve: np.ndarray, length: float) -> list[tuple[int, int]]:
    """Cut a dense curve into consecutive pieces of about ``length`` px (sharing end
    points): piece ``(a, b)`` is ``curve[a : b + 1]``."""
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(curve, axis=0).T))])
    count = max(int(round(arc[-1] / max(length, 1e-6))), 1)
    cuts = np.searchsorted(arc, np.linspace(0.0, arc[-1], count + 1)[1:-1])
    bounds = [0, *cuts.tolist(), len(curve) - 1]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _draw_dislocation(darkening: np.ndarray, spec: DislocationSpec, curve: np.ndarray):
    """Draw one dislocation; return ``(box, mask crop)``, or None when it is outside the image."""
    height, width = darkening.shape
    rng = np.random.default_rng(spec.seed)
    # OpenCV's cost grows with the vertices of a thick polyline; ~2 px chords keep the
    # drawn line within 0.05 px of the spline for curvature radii above 10 px.
    coarse = curve[np.append(np.arange(0, len(curve) - 1, 5), len(curve) - 1)]
    pieces = _segments(coarse, spec.segment_length)
    thickness = np.maximum(
        spec.thickness + rng.uniform(-1.0, 1.0, len(pieces)) * spec.thickness_variation, 1.0
    )
    value = rng.uniform(0.75, 1.0, len(pieces))
    box = bounding_box(curve, thickness.max() + 2 + _reach(spec.softness), height, width)
    y0, y1, x0, x1 = box
    if y1 <= y0 or x1 <= x0:
        return None
    layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
    mask = np.zeros_like(layer)
    fixed = np.round((coarse - np.array([x0, y0], dtype=float)) * 16).astype(np.int32)
    pts = [[fixed[a : b + 1]] for a, b in pieces]
    # OpenCV draws only odd widths (1, 3, 5 px). A width w between two odd widths is
    # drawn as the wider one at partial value under the narrower one at full value, so
    # the line's integrated darkness is w; fringes go first so no core is overwritten.
    narrow = 2 * np.floor((thickness - 1.0) / 2.0) + 1
    fraction = (thickness - narrow) / 2.0
    narrow, value, fraction = narrow.tolist(), value.tolist(), fraction.tolist()
    cv_width = {w: odd_thickness(w) for w in {*narrow, *(w + 2 for w in narrow)}}
    for p, w, v, f in zip(pts, narrow, value, fraction):
        if f > 0.02:
            cv2.polylines(layer, p, False, int(255 * v * f + 0.5), cv_width[w + 2], cv2.LINE_AA, shift=_SHIFT)
    for p, w, v in zip(pts, narrow, value):
        cv2.polylines(layer, p, False, int(255 * v + 0.5), cv_width[w], cv2.LINE_AA, shift=_SHIFT)
    # The mask does not vary in value along the line: one call per width.
    mask_width = [w + 2 if f >= 0.5 else w for w, f in zip(narrow, fraction)]
    for w in sorted(set(mask_width)):
        group = [p[0] for p, m in zip(pts, mask_width) if m == w]
        cv2.polylines(mask, group, False, 1, cv_width[w], cv2.LINE_8, shift=_SHIFT)
    if not mask.any():
        return None
    region = darkening[y0:y1, x0:x1]
    np.maximum(region, _soften(layer, spec.softness) * np.float32(spec.gray_factor / 255.0), out=region)
    return box, mask


def _reach(sigma: float) -> int:
    """Extra margin (px) a Gaussian softening of ``sigma`` px needs; 0 when off."""
    return int(np.ceil(3.0 * sigma)) if sigma > 0 else 0


def _soften(layer: np.ndarray, sigma: float) -> np.ndarray:
    """``layer`` as float32, Gaussian-blurred by ``sigma`` px with its peak value kept.

    Keeping the peak makes a soft line or spot as dark at its centre as the crisp one
    (``gray_factor`` and ``contrast`` keep their meaning) but wider, with soft shoulders.
    """
    out = layer.astype(np.float32)
    if sigma <= 0 or not out.any():
        return out
    peak = out.max()
    out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return out * np.float32(peak / max(float(out.max()), 1e-6))


def _visible(curve: np.ndarray, height: int, width: int, spacing: float = 1.0, *, hidden=None) -> np.ndarray:
    """The longest run of ``curve`` inside the image, resampled every ``spacing`` px.

    ``hidden``, an optional ``(height, width)`` bool array, marks pixels where the line
    is not visible (under an overlay): points on them end a run like the image border.
    """
    inside = (curve[:, 0] >= -0.5) & (curve[:, 0] <= width - 0.5) & (curve[:, 1] >= -0.5) & (curve[:, 1] <= height - 0.5)
    if hidden is not None:
        rows = np.clip(np.round(curve[:, 1]).astype(np.int64), 0, height - 1)
        cols = np.clip(np.round(curve[:, 0]).astype(np.int64), 0, width - 1)
        inside &= ~hidden[rows, cols]
    if not inside.all():
        edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
        starts, stops = edges[::2], edges[1::2]
        if len(starts) == 0:
            return np.empty((0, 2))
        longest = int(np.argmax(stops - starts))
        curve = curve[starts[longest] : stops[longest]]
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(curve, axis=0).T))])
    if len(curve) < 2 or arc[-1] == 0:
        return curve.copy()
    samples = np.linspace(0.0, arc[-1], max(int(np.ceil(arc[-1] / spacing)) + 1, 2))
    return np.column_stack([np.interp(samples, arc, curve[:, 0]), np.interp(samples, arc, curve[:, 1])])


def _draw_trace(image: np.ndarray, trace: LineSpec, shift: np.ndarray) -> None:
    start, end = np.asarray(trace.start) + shift, np.asarray(trace.end) + shift
    length = float(np.hypot(*(end - start)))
    count = max(int(length / max(trace.segment_length, 1e-6)), 1)
    rng = np.random.default_rng(trace.seed)
    ends = start + np.linspace(0.0, 1.0, count + 1)[:, None] * (end - start)
    height, width = image.shape
    width_px = odd_thickness(trace.width)
    y0, y1, x0, x1 = bounding_box(ends, width_px + 2, height, width)
    if y1 <= y0 or x1 <= x0:
        return
    layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for a, b, v in zip(ends[:-1], ends[1:], rng.uniform(0.3, 1.0, count)):
        pts = [np.round((np.stack([a, b]) - (x0, y0)) * 16).astype(np.int32)]
        cv2.polylines(layer, pts, False, int(255 * v + 0.5), width_px, cv2.LINE_AA, shift=_SHIFT)
    image[y0:y1, x0:x1] -= layer.astype(np.float32) * np.float32(trace.contrast / 255.0)


def _signed_distance(point: np.ndarray, angle: float, height: int, width: int) -> np.ndarray:
    a = np.radians(angle)
    normal = np.array([-np.sin(a), np.cos(a)], dtype=np.float32)
    ys = (np.arange(height, dtype=np.float32) - np.float32(point[1]))[:, None]
    xs = (np.arange(width, dtype=np.float32) - np.float32(point[0]))[None, :]
    return xs * normal[0] + ys * normal[1]


def _draw_boundary(image: np.ndarray, boundary, shift: np.ndarray) -> None:
    height, width = image.shape
    distance = _signed_distance(np.asarray(boundary.point) + shift, boundary.angle, height, width)
    # A step in brightness across the boundary, plus a line of its own contrast on it.
    image += np.float32(boundary.step) * np.clip(distance + 0.5, 0.0, 1.0)
    line = np.clip(boundary.width / 2.0 + 0.5 - np.abs(distance), 0.0, 1.0)
    image -= np.float32(boundary.line_contrast) * line


def _illumination(finish, height: int, width: int) -> np.ndarray:
    ys = (np.arange(height, dtype=np.float32) / max(height - 1, 1))[:, None]
    xs = (np.arange(width, dtype=np.float32) / max(width - 1, 1))[None, :]
    field = np.ones((height, width), np.float32)
    if finish.vignetting > 0:
        cx, cy = finish.vignetting_centre
        field -= np.float32(finish.vignetting) * ((xs - cx) ** 2 + (ys - cy) ** 2) / np.float32(0.5)
    if finish.gradient != 0:
        a = np.radians(finish.gradient_angle)
        field += np.float32(finish.gradient) * ((xs - 0.5) * np.float32(np.cos(a)) + (ys - 0.5) * np.float32(np.sin(a)))
    return np.clip(field, 0.05, None)
