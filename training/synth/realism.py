"""How much a set of synthetic images looks like a set of real ones, in numbers.

:func:`image_statistics` reduces a set of grayscale images (intensities in [0, 1],
``x`` = column, ``y`` = row) to distributions and curves; :func:`realism_distances`
turns two such summaries into one scalar distance per statistic (0 for identical
sets, larger for less alike). The statistics, and why each is normalised as it is:

``spectrum``
    Radially averaged power spectrum of each image, mean-subtracted, Hann-windowed and
    divided by its own energy, so that brightness, contrast and image size drop out:
    ``PSD(f) = |F(f)|^2 / sum(x_w^2)`` averages to 1 over the frequency square. It is
    averaged in :data:`SPECTRUM_EDGES` (log-spaced bands, cycles/px) and kept as
    ``log10``. Distance: mean over bands of the absolute difference of the two sets'
    mean log-spectra (decades).
``intensity``
    Histogram of all gray levels (256 bins on [0, 1]). Distance: Wasserstein-1 (the
    area between the two cumulative histograms), in units of full scale.
``local_contrast``
    Local standard deviation over local mean in ``window`` px boxes, one value per
    non-overlapping box. Distance: Wasserstein-1 of the two distributions.
``noise``
    Per image, the robust sigma of the 3x3 Laplacian residual (Immerkaer's mask,
    ``1.4826 * median|I * M| / 6`` is the sigma of white noise), over the image's mean.
    Distance: Wasserstein-1 of the per-image values.
``vignetting``
    Mean intensity of a heavily blurred image (sigma = min(H, W) / 16) in
    :data:`VIGNETTING_BINS` rings of radius from the centre over half the diagonal,
    divided by the innermost ring. Distance: mean absolute difference of the two sets'
    mean profiles.
``line_depth``, ``line_fwhm``
    Cross-line profiles of labelled dislocations (:func:`cross_line_profiles`): depth
    ``(background - minimum) / background`` and full width at half that depth, in px.
    Distance: Wasserstein-1 of each distribution (fraction, px). NaN when a set has
    no lines.

Wasserstein-1 keeps the units of the statistic, so a distance reads as "how far the
typical value is off". Needs numpy, scipy, OpenCV and scikit-image; never torch.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Edges of the spectrum's frequency bands, cycles/px (log-spaced, 1/128 to Nyquist).
SPECTRUM_EDGES = np.geomspace(1.0 / 128.0, 0.5, 13)
#: Number of rings of the vignetting profile (radius over half the diagonal, 0 to 1).
VIGNETTING_BINS = 10
INTENSITY_BINS = 256
STATISTICS = ("spectrum", "intensity", "local_contrast", "noise", "vignetting", "line_depth", "line_fwhm")
_LAPLACIAN = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


@dataclass(frozen=True)
class RealismStats:
    """Statistics of a set of images (see the module docstring for each).

    Attributes
    ----------
    n_images : int
    spectrum : (n_images, B) ndarray of float64
        log10 of the normalised power in each band of :data:`SPECTRUM_EDGES` (NaN
        where an image is too small to have a frequency in the band).
    intensity : (256,) ndarray of float64
        Fraction of pixels per gray-level bin on [0, 1]; sums to 1.
    local_contrast : (m,) ndarray of float64
        Local std / local mean, one value per box.
    noise : (n_images,) ndarray of float64
        Noise sigma relative to the image mean.
    vignetting : (n_images, VIGNETTING_BINS) ndarray of float64
        Mean ring intensity relative to the innermost ring.
    line_depth : (k,) ndarray of float64
        Depth of each measured line piece, fraction of the local background.
    line_fwhm : (j,) ndarray of float64
        Full width at half depth of each line piece deep enough to have one, px.
    """

    n_images: int
    spectrum: np.ndarray
    intensity: np.ndarray
    local_contrast: np.ndarray
    noise: np.ndarray
    vignetting: np.ndarray
    line_depth: np.ndarray
    line_fwhm: np.ndarray

    def summary(self) -> dict[str, float]:
        """Typical values, for reports: medians of the distributions, the corner vignetting."""
        levels = (np.arange(INTENSITY_BINS) + 0.5) / INTENSITY_BINS
        med = lambda v: float(np.median(v)) if len(v) else float("nan")
        return {
            "intensity_mean": float(levels @ self.intensity),
            "local_contrast": med(self.local_contrast),
            "noise": med(self.noise),
            "vignetting_edge": float(np.nanmean(self.vignetting[:, -1])) if self.n_images else float("nan"),
            "line_depth": med(self.line_depth),
            "line_fwhm": med(self.line_fwhm),
        }


# --- statistics ----------------------------------------------------------------------


def image_statistics(images: Sequence[np.ndarray], *, lines=None, window: int = 16) -> RealismStats:
    """Statistics of a set of grayscale images, and of their dislocation lines.

    Parameters
    ----------
    images : sequence of (H, W) ndarray
        Intensities in [0, 1] (float; images may differ in size).
    lines : sequence of (sequence of (n, 2) ndarray), optional
        For each image, the centrelines ``(x, y)`` in px of its labelled dislocations,
        points about 1 px apart in order along the line (e.g. ``Sample.centrelines``
        or :func:`lines_from_label`). Without them the line statistics are empty.
    window : int
        Box size of the local contrast, px (>= 4).

    Returns
    -------
    RealismStats

    Examples
    --------
    >>> import numpy as np
    >>> flat = [np.full((64, 64), 0.5)]
    >>> image_statistics(flat).summary()["local_contrast"]
    0.0
    """
    images = list(images)
    if not images:
        raise ValueError("images is empty: give at least one (H, W) image")
    if int(window) != window or window < 4:
        raise ValueError(f"window must be an integer >= 4 px, got {window!r}")
    if lines is not None:
        lines = list(lines)
        if len(lines) != len(images):
            raise ValueError(f"lines must hold one list of centrelines per image: {len(lines)} for {len(images)} images")
    spectra, contrast, noise, vignetting, depth, fwhm = [], [], [], [], [], []
    histogram = np.zeros(INTENSITY_BINS)
    for index, raw in enumerate(images):
        image = _check_image(raw, index)
        spectra.append(_spectrum(image))
        histogram += np.histogram(np.clip(image, 0.0, 1.0), bins=INTENSITY_BINS, range=(0.0, 1.0))[0]
        contrast.append(_local_contrast(image, int(window)))
        noise.append(noise_level(image))
        vignetting.append(vignetting_profile(image))
        for line in (lines[index] if lines is not None else ()):
            d, w = cross_line_profiles(image, line)
            depth.append(d)
            fwhm.append(w)
    cat = lambda parts: np.concatenate(parts) if parts else np.empty(0)
    return RealismStats(
        n_images=len(images),
        spectrum=np.array(spectra),
        intensity=histogram / histogram.sum(),
        local_contrast=cat(contrast),
        noise=np.array(noise),
        vignetting=np.array(vignetting),
        line_depth=cat(depth),
        line_fwhm=cat(fwhm),
    )


def pool_statistics(parts: Sequence[RealismStats]) -> RealismStats:
    """The statistics of the union of several image sets (each image counts once)."""
    parts = list(parts)
    if not parts:
        raise ValueError("parts is empty: give at least one RealismStats")
    weights = np.array([p.n_images for p in parts], float)
    return RealismStats(
        n_images=int(weights.sum()),
        spectrum=np.concatenate([p.spectrum for p in parts]),
        intensity=np.sum([w * p.intensity for w, p in zip(weights, parts)], axis=0) / weights.sum(),
        local_contrast=np.concatenate([p.local_contrast for p in parts]),
        noise=np.concatenate([p.noise for p in parts]),
        vignetting=np.concatenate([p.vignetting for p in parts]),
        line_depth=np.concatenate([p.line_depth for p in parts]),
        line_fwhm=np.concatenate([p.line_fwhm for p in parts]),
    )


def realism_distances(a: RealismStats, b: RealismStats) -> dict[str, float]:
    """One distance per statistic between two sets (0 for identical sets).

    Returns
    -------
    dict
        Keys :data:`STATISTICS`; the measure of each is in the module docstring. Line
        distances are NaN when either set has no measured line.
    """
    for name, stats in (("a", a), ("b", b)):
        if not isinstance(stats, RealismStats):
            raise TypeError(f"{name} must be a RealismStats, got {type(stats).__name__}")
    nan = float("nan")

    def w1(x, y):
        return float(wasserstein_distance(x, y)) if len(x) and len(y) else nan

    def curves(x, y):
        with np.errstate(all="ignore"):
            diff = np.abs(np.nanmean(x, axis=0) - np.nanmean(y, axis=0))
        return float(np.nanmean(diff)) if np.isfinite(diff).any() else nan

    return {
        "spectrum": curves(a.spectrum, b.spectrum),
        "intensity": float(np.abs(np.cumsum(a.intensity) - np.cumsum(b.intensity)).sum() / INTENSITY_BINS),
        "local_contrast": w1(a.local_contrast, b.local_contrast),
        "noise": w1(a.noise, b.noise),
        "vignetting": curves(a.vignetting, b.vignetting),
        "line_depth": w1(a.line_depth, b.line_depth),
        "line_fwhm": w1(a.line_fwhm, b.line_fwhm),
    }


def _check_image(image, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 8:
        raise ValueError(f"images[{index}] must be a 2-D (H, W) image of at least 8x8 px, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images[{index}] must be float intensities in [0, 1], got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"images[{index}] holds NaN or infinite values")
    return array.astype(np.float32)  # a copy: the caller's array is never touched


def _spectrum(image: np.ndarray) -> np.ndarray:
    height, width = image.shape
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    centred = (image - image.mean()) * window
    energy = float((centred.astype(np.float64) ** 2).sum())
    power = np.abs(np.fft.fft2(centred)) ** 2 / max(energy, 1e-30)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    radius = np.hypot(fy, fx).ravel()
    band = np.digitize(radius, SPECTRUM_EDGES) - 1
    inside = (band >= 0) & (band < len(SPECTRUM_EDGES) - 1)
    sums = np.bincount(band[inside], power.ravel()[inside], minlength=len(SPECTRUM_EDGES) - 1)
    counts = np.bincount(band[inside], minlength=len(SPECTRUM_EDGES) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan) + 1e-12)


def _local_contrast(image: np.ndarray, window: int) -> np.ndarray:
    height, width = image.shape
    rows, cols = height // window, width // window
    if rows == 0 or cols == 0:
        return np.empty(0)
    boxes = image[: rows * window, : cols * window].reshape(rows, window, cols, window)
    mean = boxes.mean(axis=(1, 3))
    std = boxes.std(axis=(1, 3))
    # A floor on the mean: a black box has no meaningful relative contrast.
    return (std / np.maximum(mean, 0.02)).ravel().astype(np.float64)


def noise_level(image: np.ndarray) -> float:
    """Robust white-noise sigma of ``image`` relative to its mean.

    Parameters
    ----------
    image : (H, W) ndarray of float
        At least 3x3 px.

    Returns
    -------
    float
        ``1.4826 * median(|I * M|) / 6 / mean(I)`` with ``M`` the 3x3 Laplacian mask
        of Immerkaer (1996), which cancels planes and passes white noise with gain 6.
    """
    image = np.asarray(image, np.float32)
    residual = cv2.filter2D(image, -1, _LAPLACIAN, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    sigma = 1.4826 * float(np.median(np.abs(residual))) / 6.0
    return sigma / max(float(image.mean()), 1e-6)


def vignetting_profile(image: np.ndarray, *, bins: int = VIGNETTING_BINS) -> np.ndarray:
    """Mean intensity against distance from the centre, relative to the centre.

    Parameters
    ----------
    image : (H, W) ndarray of float
    bins : int
        Rings of equal width in radius over half the diagonal, from 0 to 1.

    Returns
    -------
    (bins,) ndarray of float64
        Mean of the blurred image (sigma = min(H, W) / 16 px) in each ring over the
        mean in the innermost ring; NaN for an empty ring.
    """
    image = np.asarray(image, np.float32)
    height, width = image.shape
    smooth = cv2.GaussianBlur(image, (0, 0), max(min(height, width) / 16.0, 0.5), borderType=cv2.BORDER_REFLECT)
    ys = np.arange(height) - (height - 1) / 2.0
    xs = np.arange(width) - (width - 1) / 2.0
    radius = np.hypot(ys[:, None], xs[None, :]) / np.hypot((height - 1) / 2.0, (width - 1) / 2.0)
    ring = np.minimum((radius * bins).astype(int), bins - 1).ravel()
    sums = np.bincount(ring, smooth.ravel().astype(np.float64), minlength=bins)
    counts = np.bincount(ring, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        profile = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return profile / profile[0]


# --- cross-line profiles -----------------------------------------------------------


def cross_line_profiles(
    image: np.ndarray,
    line: np.ndarray,
    *,
    half_width: float = 12.0,
    search: float = 3.0,
    chunk: int = 10,
    min_depth: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth and width of a dark line from profiles across it.

    At every centreline point the image is sampled (bilinear, every 0.5 px) along the
    normal; each profile is re-centred on its minimum within ``search`` px (labels are
    drawn by hand, a px or two off), and ``chunk`` consecutive profiles are averaged
    into one piece. Per piece: the background is the mean of the medians of the outer
    4 px on each side, the depth is ``(background - minimum) / background``, and the
    FWHM is the distance between the two half-depth crossings (linear interpolation).

    Parameters
    ----------
    image : (H, W) ndarray of float
        Intensities.
    line : (n, 2) ndarray of float
        Centreline ``(x, y)`` in px, points about 1 px apart in order along the line.
    half_width : float
        Profiles reach this far on each side, px (> 4).
    search : float
        How far the minimum may be from the given centreline, px (>= 0).
    chunk : int
        Profiles averaged per piece (>= 1); pieces near the image border are left out.
    min_depth : float
        Pieces shallower than this have no FWHM (not dark enough to measure one).

    Returns
    -------
    depth : (k,) ndarray of float64
        One value per piece (negative for a bright line).
    fwhm : (j,) ndarray of float64
        FWHM in px of the pieces at least ``min_depth`` deep whose half-depth level
        is crossed on both sides, ``j <= k``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(64)
    >>> image = np.tile(0.8 - 0.2 * np.exp(-0.5 * ((x - 32) / 2.0) ** 2), (64, 1))
    >>> depth, fwhm = cross_line_profiles(image, np.column_stack([np.full(40, 32.0), np.arange(12.0, 52.0)]))
    >>> round(float(depth.mean()), 3), bool(abs(fwhm.mean() - 2.3548 * 2.0) < 0.1)  # sigma 2 px
    (0.25, True)
    """
    if half_width <= 4 or search < 0 or int(chunk) != chunk or chunk < 1:
        raise ValueError(
            f"need half_width > 4, search >= 0 and an integer chunk >= 1, got {half_width}, {search}, {chunk}"
        )
    image = np.asarray(image, np.float32)
    points = np.asarray(line, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"line must be an (n, 2) array of (x, y) points, got shape {points.shape}")
    empty = (np.empty(0), np.empty(0))
    if len(points) < max(chunk, 3):
        return empty
    step = 0.5
    reach = half_width + search
    offsets = np.arange(-reach, reach + step / 2, step)
    k = min(3, len(points) - 1)
    ahead = np.concatenate([points[k:], np.repeat(points[-1:], k, axis=0)])
    behind = np.concatenate([np.repeat(points[:1], k, axis=0), points[:-k]])
    tangent = ahead - behind
    norm = np.hypot(*tangent.T)
    keep = norm > 1e-9
    points, tangent = points[keep], tangent[keep] / norm[keep, None]
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    xs = points[:, :1] + offsets[None, :] * normal[:, :1]
    ys = points[:, 1:] + offsets[None, :] * normal[:, 1:]
    height, width = image.shape
    inside = (xs.min(1) >= 0) & (xs.max(1) <= width - 1) & (ys.min(1) >= 0) & (ys.max(1) <= height - 1)
    if inside.sum() < chunk:
        return empty
    profiles = ndimage.map_coordinates(image, [ys[inside].ravel(), xs[inside].ravel()], order=1).reshape(-1, len(offsets))
    # Re-centre each profile on its (lightly smoothed) minimum near the given line.
    smooth = ndimage.gaussian_filter1d(profiles, 1.0 / step, axis=1, mode="nearest")
    centre = len(offsets) // 2
    shift_max = round(search / step)
    near = smooth[:, centre - shift_max : centre + shift_max + 1]
    lows = centre - shift_max + np.argmin(near, axis=1)
    half = round(half_width / step)
    index = lows[:, None] + np.arange(-half, half + 1)[None, :]
    aligned = np.take_along_axis(profiles, index, axis=1)
    pieces = aligned[: len(aligned) // chunk * chunk].reshape(-1, chunk, aligned.shape[1]).mean(axis=1)
    edge = round(4.0 / step)
    background = (np.median(pieces[:, :edge], axis=1) + np.median(pieces[:, -edge:], axis=1)) / 2.0
    low = pieces[:, half - 2 : half + 3].min(axis=1)
    depth = (background - low) / np.maximum(background, 1e-6)
    fwhm = []
    for profile, bg, lo, d in zip(pieces, background, low, depth):
        if d < min_depth:
            continue
        level = (bg + lo) / 2.0
        left, right = _crossing(profile[half::-1], level), _crossing(profile[half:], level)
        if left is not None and right is not None:
            fwhm.append((left + right) * step)
    return depth.astype(np.float64), np.array(fwhm, dtype=np.float64)


def _crossing(values: np.ndarray, level: float) -> float | None:
    """Position (in samples from values[0]) where values first rise to ``level``."""
    above = np.flatnonzero(values >= level)
    if len(above) == 0 or above[0] == 0:
        return None
    i = above[0]
    a, b = values[i - 1], values[i]
    return float(i - 1 + (level - a) / (b - a)) if b != a else float(i)


def lines_from_label(label: np.ndarray, *, min_pixels: int = 10) -> list[np.ndarray]:
    """Centrelines of a binary line label: one per 8-connected component.

    Parameters
    ----------
    label : (H, W) ndarray
        Nonzero = line (hand-drawn, a few px wide).
    min_pixels : int
        Components whose skeleton has fewer pixels are left out.

    Returns
    -------
    list of (n, 2) ndarray of float64
        Skeleton pixels ``(x, y)`` of each component, ordered along the component's
        principal axis (right for the mostly gently curved lines of dislocation labels;
        a line that folds back is cut into jumps, which only costs a few profiles).
    """
    from skimage.morphology import skeletonize

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be a 2-D (H, W) array, got shape {label.shape}")
    components, count = ndimage.label(label != 0, structure=np.ones((3, 3)))
    skeleton = skeletonize(label != 0)
    lines = []
    for index in range(1, count + 1):
        ys, xs = np.nonzero(skeleton & (components == index))
        if len(xs) < min_pixels:
            continue
        points = np.column_stack([xs, ys]).astype(float)
        centred = points - points.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        lines.append(points[np.argsort(centred @ axis, kind="stable")])
    return lines


# --- loading real data -------------------------------------------------------------


def _read_gray(path: Path) -> tuple[np.ndarray, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(image.dtype)
    if bits is None:
        raise ValueError(f"image {path} has dtype {image.dtype}; only 8- and 16-bit images are supported")
    return image, bits


def _read_all(folder: Path, files: list[Path]) -> list[np.ndarray]:
    images, first_bits = [], None
    for path in files:
        image, bits = _read_gray(path)
        if first_bits is None:
            first_bits, first = bits, path
        elif bits != first_bits:
            raise ValueError(
                f"folder {folder} mixes bit depths: {path.name} is {bits}-bit but {first.name} is "
                f"{first_bits}-bit; convert them to one depth"
            )
        images.append(image.astype(np.float32) / np.float32(2**bits - 1))
    return images


def load_image_folder(folder: str | Path, *, pattern: str = "*") -> list[np.ndarray]:
    """Read the images of a folder as float32 gray in [0, 1], scaled by their bit depth.

    Parameters
    ----------
    folder : path
    pattern : str
        Shell pattern the file names must match (e.g. ``"frame[0-9][0-9][0-9].png"``).

    Returns
    -------
    list of (H, W) ndarray of float32
        In file-name order.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a folder.
    ValueError
        No image file matches, an image is unreadable, or the images mix 8- and
        16-bit (the message names the folder and the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found or not a folder: {folder}")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and fnmatch.fnmatch(p.name, pattern)
    )
    if not files:
        raise ValueError(f"folder {folder} holds no images matching {pattern!r} ({', '.join(IMAGE_SUFFIXES)})")
    return _read_all(folder, files)


def load_labelled_folder(folder: str | Path, *, suffix: str = "_dislocations") -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Read ``NAME.png`` images with their ``NAME{suffix}.png`` line labels.

    Returns
    -------
    images : list of (H, W) ndarray of float32
    lines : list of list of (n, 2) ndarray
        For each image, :func:`lines_from_label` of its label.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a folder, or a label has no image beside it.
    ValueError
        The folder holds no label, or the images mix bit depths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"labelled folder not found or not a folder: {folder}")
    labels = sorted(p for p in folder.iterdir() if p.stem.endswith(suffix) and p.suffix.lower() in IMAGE_SUFFIXES)
    if not labels:
        raise ValueError(f"folder {folder} holds no line labels NAME{suffix}.png")
    files = []
    for label in labels:
        image = label.with_name(label.stem[: -len(suffix)] + label.suffix)
        if not image.is_file():
            raise FileNotFoundError(f"label {label} has no image {image.name} beside it")
        files.append(image)
    images = _read_all(folder, files)
    lines = [lines_from_label(_read_gray(label)[0]) for label in labels]
    return images, lines


def load_video_frames(path: str | Path, *, count: int = 30) -> list[np.ndarray]:
    """``count`` frames sampled evenly from a video (or any frame source), float32 in [0, 1]."""
    from temtrack.sdk.sources import open_source

    if int(count) != count or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    count = int(count)
    with open_source(path) as source:
        total = source.n_frames
        if not total:
            raise ValueError(f"{path}: the number of frames is unknown, cannot sample {count} evenly")
        every = max(total // count, 1)
        return [frame.image.copy() for frame in source.frames(end=min(every * count, total), every=every)]
