"""Backgrounds of synthetic TEM images.

(a) Perlin noise with white noise and two Gaussian filters (thesis eqs. 2.3-2.9);
(b) two real background patches superimposed with a random opacity (thesis 2.1.2).

Both take explicit parameters (a sampled scene, never a preset) and a seed, so the same
parameters always give the same array. numpy and OpenCV only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class BackgroundError(ValueError):
    """A background folder is missing, empty or holds an unreadable image."""


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], wavelength: int, rng: np.random.Generator) -> np.ndarray:
    """Two-dimensional gradient (Perlin) noise.

    Parameters
    ----------
    shape : (int, int)
        (height, width) of the result.
    wavelength : int
        Lattice spacing in pixels: the dominant wavelength of the noise.
    rng : numpy.random.Generator
        Source of the lattice gradients.

    Returns
    -------
    (H, W) ndarray of float32
        Noise with values in about [-0.7, 0.7], zero at the lattice points.
    """
    height, width = shape
    cell = int(wavelength)
    if cell < 1:
        raise ValueError(f"wavelength must be a positive integer, got {wavelength!r}")
    rows, cols = -(-height // cell), -(-width // cell)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(rows + 1, cols + 1))
    gx, gy = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)

    # The image is cut into (rows, cell, cols, cell) blocks: the per-cell gradients
    # then broadcast against the in-cell offsets, with no per-pixel gathers.
    t = (np.arange(cell, dtype=np.float32) + 0.5) / cell
    u, v = t[None, None, None, :], t[None, :, None, None]
    fu, fv = _fade(u), _fade(v)

    def corner(dr: int, dc: int) -> np.ndarray:
        cx = gx[dr : dr + rows, dc : dc + cols][:, None, :, None]
        cy = gy[dr : dr + rows, dc : dc + cols][:, None, :, None]
        return cx * (u - dc) + cy * (v - dr)

    def lerp(low: np.ndarray, high: np.ndarray, weight: np.ndarray) -> np.ndarray:
        # low + weight * (high - low), in place in high (the same float32 operations).
        high -= low
        high *= weight
        high += low
        return high

    top = lerp(corner(0, 0), corner(0, 1), fu)
    noise = lerp(top, lerp(corner(1, 0), corner(1, 1), fu), fv)
    return noise.reshape(rows * cell, cols * cell)[:height, :width]


def perlin_background(
    shape: tuple[int, int],
    *,
    wavelength1: int,
    wavelength2: int,
    w_perlin: float,
    w_white1: float,
    s1: float,
    r_noise: float,
    s2: float,
    gain: float = 1.0,
    offset: float = 0.0,
    seed: int,
) -> np.ndarray:
    """Synthetic background of thesis eqs. 2.3-2.9.

    P3 = P1(λ1) + w_P P2(λ2); P3* = minmax(P3); P4 = P3* + w_w1 X1; P5 = G(P4; s1);
    P6 = P5 + r_noise σ(P4) X2; P7 = G(P6; s2); P = clip(P7, 0, 1), with X1, X2 white
    noise uniform in [-1, 1]. Finally ``offset + gain * P``, clipped to [0, 1].

    Returns
    -------
    (H, W) ndarray of float32 in [0, 1]
    """
    rng = np.random.default_rng(seed)
    p3 = perlin_noise(shape, wavelength1, rng)
    p3 += np.float32(w_perlin) * perlin_noise(shape, wavelength2, rng)
    low, high = float(p3.min()), float(p3.max())
    p3 -= np.float32(low)
    p3 *= np.float32(1.0 / max(high - low, 1e-12))
    p4 = _white(shape, rng, np.float32(w_white1))
    p4 += p3
    p5 = _gaussian(p4, s1)
    p6 = _white(shape, rng, np.float32(r_noise * float(p4.std())))
    p6 += p5
    p7 = _gaussian(p6, s2)
    if gain != 1.0 or offset != 0.0:
        np.clip(p7, 0.0, 1.0, out=p7)
        p7 = np.float32(offset) + np.float32(gain) * p7
    return np.clip(p7, 0.0, 1.0, out=p7)


def _white(shape: tuple[int, int], rng: np.random.Generator, scale: np.float32) -> np.ndarray:
    """``scale`` times white noise uniform in [-1, 1), float32."""
    noise = rng.random(shape, dtype=np.float32)
    noise *= np.float32(2.0)
    noise -= np.float32(1.0)
    noise *= scale
    return noise


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


# --- real patches -----------------------------------------------------------------


@dataclass(frozen=True)
class PatchFile:
    """One background image of a patch folder: its name and content hash."""

    name: str
    sha1: str


def list_patch_folder(folder: str | Path) -> list[PatchFile]:
    """List the background images of ``folder`` (sorted by name, with SHA-1 hashes).

    Raises :class:`BackgroundError` when the folder is missing or holds no image.
    """
    return list(_list_patch_folder(str(Path(folder).resolve())))


@lru_cache(maxsize=8)
def _list_patch_folder(folder: str) -> tuple[PatchFile, ...]:
    path = Path(folder)
    if not path.is_dir():
        raise BackgroundError(f"background folder not found or not a folder: {folder}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BackgroundError(
            f"background folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})"
        )
    return tuple(PatchFile(p.name, hashlib.sha1(p.read_bytes()).hexdigest()) for p in files)


@lru_cache(maxsize=256)
def load_patch(path: str) -> np.ndarray:
    """Read a background image as float32 grayscale in [0, 1] (8- or 16-bit input)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BackgroundError(f"cannot read background image {path}")
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.dtype not in (np.uint8, np.uint16):
        raise BackgroundError(f"background image {path} has unsupported dtype {image.dtype}")
    if min(image.shape) < 8:
        raise BackgroundError(f"background image {path} is too small: {image.shape}")
    out = image.astype(np.float32) / np.float32(scale)
    out.flags.writeable = False
    return out


def patch_view(
    image: np.ndarray,
    shape: tuple[int, int],
    *,
    crop: tuple[int, int, int, int],
    flip: bool,
    rot90: int,
) -> np.ndarray:
    """Crop ``(x, y, w, h)`` of ``image``, flip, rotate by ``rot90`` quarter turns, resize to ``shape``."""
    x, y, w, h = crop
    view = image[y : y + h, x : x + w]
    if flip:
        view = view[:, ::-1]
    view = np.rot90(view, rot90)
    return cv2.resize(np.ascontiguousarray(view), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def patch_background(
    shape: tuple[int, int],
    *,
    folder: str | Path,
    patches: list[dict],
    opacity: float,
) -> np.ndarray:
    """Blend two real patches: ``(1 - opacity) * first + opacity * second``.

    ``patches`` holds two dicts with keys ``file``, ``sha1``, ``crop``, ``flip``, ``rot90``
    as sampled by the scene; a changed file (other hash) is an error, so a background is
    never silently regenerated from different data.
    """
    folder = Path(folder)
    known = {f.name: f.sha1 for f in list_patch_folder(folder)}
    layers = []
    for patch in patches:
        path = folder / patch["file"]
        if known.get(patch["file"]) != patch["sha1"]:
            raise BackgroundError(
                f"background image {path} is missing or differs from the one recorded "
                f"(sha1 {patch['sha1']})"
            )
        image = load_patch(str(path))
        layers.append(patch_view(image, shape, crop=tuple(patch["crop"]), flip=patch["flip"], rot90=patch["rot90"]))
    first, second = layers
    return np.clip((1.0 - opacity) * first + opacity * second, 0.0, 1.0).astype(np.float32)
