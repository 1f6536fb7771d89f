"""Dislocation shapes as cubic splines through support points in a local frame.

The local frame is the thesis' (section 2.2.1): the first support point lies at
``(x_start, 0)`` and the last at ``(x_end, 1)``; ``y`` runs across the slip plane from
one slip trace to the other, ``x`` along the slip direction. A pile-up scales the frame
by the slip width, rotates it by the slip direction and moves it to its place.

Shape families (parametrised, each sampled from :class:`ShapeParams`): straight,
bowed, S-shaped, wavy (several inflections), sharp turn, hook, and shapes read from
labelme files. numpy and scipy only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline

from .config import ShapeParams

FAMILIES = ("straight", "bowed", "s_shaped", "wavy", "sharp_turn", "hook", "labelme")


def sample_support_points(params: ShapeParams, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """Draw a shape family by weight and support points for it.

    Returns
    -------
    family : str
    points : (k, 2) ndarray of float64
        Support points ``(x, y)`` in the local frame, ``y[0] = 0`` and ``y[-1] = 1``.
    """
    names = [name for name, weight in params.weights.items() if weight > 0]
    weights = np.array([params.weights[name] for name in names], dtype=float)
    family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    tilt = rng.uniform(*params.tilt)
    if family == "labelme":
        shapes = labelme_shapes(tuple(params.labelme_files))
        points = shapes[int(rng.integers(len(shapes)))].copy()
        if rng.random() < 0.5:
            points[:, 0] *= -1.0
    else:
        points = _FAMILY[family](params, rng, tilt)
    jitter = rng.uniform(*params.jitter)
    if jitter > 0 and len(points) > 2:
        points[1:-1] += rng.normal(0.0, jitter, size=(len(points) - 2, 2))
    return family, points


def _straight(params, rng, tilt):
    y = np.linspace(0.0, 1.0, 4)
    return np.column_stack([tilt * y, y])


def _bowed(params, rng, tilt):
    y = np.linspace(0.0, 1.0, int(rng.integers(5, 8)))
    bow = rng.uniform(*params.bow) * rng.choice([-1.0, 1.0])
    # An off-centre apex: real bowed-out segments are rarely symmetric.
    apex = rng.uniform(0.35, 0.65)
    shape = np.where(y < apex, y / apex, (1.0 - y) / (1.0 - apex))
    return np.column_stack([tilt * y + bow * (1.0 - (1.0 - shape) ** 2), y])


def _s_shaped(params, rng, tilt):
    y = np.linspace(0.0, 1.0, 9)
    amplitude = rng.uniform(*params.bow) * 0.6 * rng.choice([-1.0, 1.0])
    return np.column_stack([tilt * y + amplitude * np.sin(2.0 * np.pi * y), y])


def _wavy(params, rng, tilt):
    inflections = int(rng.integers(params.inflections[0], params.inflections[1] + 1))
    half_waves = inflections + 1
    y = np.linspace(0.0, 1.0, 4 * half_waves + 1)
    amplitude = rng.uniform(*params.wave_amplitude) * rng.choice([-1.0, 1.0])
    return np.column_stack([tilt * y + amplitude * np.sin(np.pi * half_waves * y), y])


def _sharp_turn(params, rng, tilt):
    corner = rng.uniform(0.3, 0.7)
    turn = np.radians(rng.uniform(*params.turn_angle)) * rng.choice([-1.0, 1.0])
    # Dense points on both sides of the corner keep the spline from rounding it off.
    y = np.unique(np.concatenate([np.linspace(0.0, 1.0, 5), corner + np.array([-0.04, 0.0, 0.04])]))
    after = np.clip(y - corner, 0.0, None)
    return np.column_stack([tilt * y + np.tan(turn / 2.0) * after, y])


def _hook(params, rng, tilt):
    curl = rng.uniform(0.1, 0.25) * rng.choice([-1.0, 1.0])
    y = np.array([0.0, 0.25, 0.5, 0.75, 0.95, 1.08, 1.0])
    x = tilt * y
    x[-3:] += curl * np.array([0.15, 0.55, 1.0])
    return np.column_stack([x, y])


_FAMILY = {
    "straight": _straight,
    "bowed": _bowed,
    "s_shaped": _s_shaped,
    "wavy": _wavy,
    "sharp_turn": _sharp_turn,
    "hook": _hook,
}


@lru_cache(maxsize=16)
def labelme_shapes(files: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Support points in the local frame of every line shape in the given labelme files."""
    from temtrack.sdk.groundtruth import read_labelme

    shapes = []
    for path in files:
        shapes.extend(to_local_frame(line) for line in read_labelme(path).centrelines)
    if not shapes:
        raise ValueError(f"labelme files {list(files)} hold no line shapes for the shape library")
    return tuple(shapes)


def to_local_frame(points: np.ndarray) -> np.ndarray:
    """Map image points ``(n, 2)`` to the local frame: first at (0, 0), last at (0, 1)."""
    points = np.asarray(points, dtype=float)
    chord = points[-1] - points[0]
    length = float(np.hypot(*chord))
    if length == 0:
        raise ValueError("a shape's first and last points coincide; it has no local frame")
    # Rotate the chord onto the +y axis and scale it to unit length.
    c, s = chord[1] / length, chord[0] / length
    rel = points - points[0]
    return np.column_stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]]) / length


def dense_curve(support: np.ndarray, *, scale: float, spacing: float = 0.5) -> np.ndarray:
    """Natural cubic spline through ``support`` (local frame), sampled every ``spacing`` px.

    The spline is parametrised by cumulative chord length, so shapes that fold back
    (hooks) are represented. Returns ``(n, 2)`` points in the scaled local frame (pixels),
    a read-only array: results are cached, as a scene asks for each line several times
    (placing it, slip traces at its ends, drawing it).
    """
    support = np.asarray(support, dtype=float)
    return _dense_curve(support.tobytes(), support.shape, float(scale), float(spacing))


@lru_cache(maxsize=64)
def _dense_curve(data: bytes, shape: tuple, scale: float, spacing: float) -> np.ndarray:
    curve = _spline_samples(np.frombuffer(data).reshape(shape) * scale, spacing)
    curve.flags.writeable = False
    return curve


def _spline_samples(support: np.ndarray, spacing: float) -> np.ndarray:
    steps = np.hypot(*np.diff(support, axis=0).T)
    keep = np.concatenate([[True], steps > 1e-9])
    support, steps = support[keep], steps[keep[1:]]
    if len(support) < 2:
        return support
    t = np.concatenate([[0.0], np.cumsum(steps)])
    count = max(int(np.ceil(t[-1] * 1.3 / spacing)) + 1, 2)
    samples = np.linspace(0.0, t[-1], count)
    if len(support) == 2:
        return support[0] + (samples / t[-1])[:, None] * (support[1] - support[0])
    return CubicSpline(t, support, bc_type="natural")(samples)


def place(points: np.ndarray, *, angle: float, origin: tuple[float, float]) -> np.ndarray:
    """Rotate local-frame points by ``angle`` degrees (local +x onto the slip direction) and move them to ``origin``."""
    a = np.radians(angle)
    c, s = np.cos(a), np.sin(a)
    rotation = np.array([[c, s], [-s, c]])
    return points @ rotation + np.asarray(origin, dtype=float)


def bounding_box(curve: np.ndarray, margin: float, height: int, width: int) -> tuple[int, int, int, int]:
    """Bounding box ``(y0, y1, x0, x1)`` of ``curve`` grown by ``margin``, clipped to the image (may be empty)."""
    x0 = max(int(np.floor(curve[:, 0].min() - margin)), 0)
    x1 = max(min(int(np.ceil(curve[:, 0].max() + margin)) + 1, width), x0)
    y0 = max(int(np.floor(curve[:, 1].min() - margin)), 0)
    y1 = max(min(int(np.ceil(curve[:, 1].max() + margin)) + 1, height), y0)
    return y0, y1, x0, x1


def odd_thickness(width: float) -> int:
    """OpenCV's ``thickness`` argument that draws a line ``width`` px wide (odd widths only)."""
    width = max(int(round(width)), 1)
    return 1 if width < 3 else width - 1 if width % 2 else width
