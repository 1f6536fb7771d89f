"""Random augmentation of synthetic training images and their per-dislocation masks.

The model is trained on synthetic images and applied to real TEM frames; these
augmentations widen the synthetic distribution towards the real one: Gaussian noise,
brightness, contrast and histogram equalisation (thesis section 4.4.1), plus flips,
90 degree rotations, Gaussian blur, gamma, vignetting and JPEG compression.

:func:`augment` and :class:`AugmentConfig` need only numpy, OpenCV and pydantic.
:class:`AugmentedDataset` wraps a torch dataset, so this module imports torch: use it
from training code only, never from ``temtrack.sdk``.
"""

from __future__ import annotations

from typing import Annotated

import cv2
import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from torch.utils.data import IterableDataset

__all__ = ["AugmentConfig", "AugmentedDataset", "augment"]


def _ordered(pair):
    low, high = pair
    if low > high:
        raise ValueError(f"range must be (low, high) with low <= high, got {pair}")
    return pair


def _within(low: float, high: float, *, open_low: bool = False):
    def check(pair):
        below = pair[0] <= low if open_low else pair[0] < low
        if below or pair[1] > high:
            bracket = "(" if open_low else "["
            raise ValueError(f"range {pair} must lie within {bracket}{low}, {high}]")
        return pair

    return AfterValidator(check)


_Finite = Annotated[float, Field(allow_inf_nan=False)]
Range = Annotated[tuple[_Finite, _Finite], AfterValidator(_ordered)]
IntRange = Annotated[tuple[int, int], AfterValidator(_ordered)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class AugmentConfig(BaseModel):
    """Probabilities and parameter ranges of the training augmentations.

    Each augmentation ``name`` is applied with probability ``p_name``; its parameter is
    drawn uniformly from the ``(low, high)`` range ``name``. Intensities are in the unit
    interval of the image, lengths in pixels. Unknown keys are errors.

    Attributes
    ----------
    enabled : bool
        ``False`` turns every augmentation off.
    p_hflip, p_vflip : float
        Probability of a left-right / up-down flip.
    p_rot90 : float
        Probability of a rotation by 90, 180 or 270 degrees (equally likely); square
        images only, so that a batch keeps one shape.
    p_equalize : float
        Probability of histogram equalisation of the 8-bit image.
    p_brightness, brightness : float, (float, float)
        Additive intensity shift, within [-1, 1].
    p_contrast, contrast : float, (float, float)
        Factor on the deviation from the image mean, >= 0 (< 1 flattens, > 1 stretches).
    p_gamma, gamma : float, (float, float)
        Exponent on the intensity, > 0 (< 1 brightens mid-tones, > 1 darkens them).
    p_vignette, vignette : float, (float, float)
        Radial vignetting strength, within [-1, 1]: the intensity is multiplied by
        ``1 - strength * (r / r_max)**2`` with ``r`` the distance to the vignette
        centre and ``r_max`` that of the farthest corner; positive darkens the edges,
        negative brightens them.
    vignette_center : (float, float)
        Range, as a fraction of the height and width within [0, 1], from which each
        coordinate of the vignette centre is drawn.
    p_blur, blur_sigma : float, (float, float)
        Gaussian blur standard deviation in pixels, >= 0.
    p_noise, noise_sigma : float, (float, float)
        Standard deviation of additive Gaussian noise, within [0, 1].
    p_jpeg, jpeg_quality : float, (int, int)
        JPEG encode/decode quality, within [1, 100].
    p_zoom, zoom : float, (float, float)
        Line-field stream only (:class:`temtrack.training.linefield.LineFieldDataset`):
        the scene is rendered at ``size / zoom`` and resized to ``size``, the factor
        drawn log-uniformly from ``zoom`` (> 0), so lines are seen at other widths and
        scales than the generator's (other microscopes, other magnifications); the
        centrelines are scaled with it and the targets drawn at the final size.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    p_hflip: Probability = 0.5
    p_vflip: Probability = 0.5
    p_rot90: Probability = 0.5
    p_equalize: Probability = 0.2
    p_brightness: Probability = 0.5
    brightness: Annotated[Range, _within(-1.0, 1.0)] = (-0.15, 0.15)
    p_contrast: Probability = 0.5
    contrast: Annotated[Range, _within(0.0, float("inf"))] = (0.6, 1.4)
    p_gamma: Probability = 0.3
    gamma: Annotated[Range, _within(0.0, float("inf"), open_low=True)] = (0.6, 1.6)
    p_vignette: Probability = 0.3
    vignette: Annotated[Range, _within(-1.0, 1.0)] = (0.0, 0.5)
    vignette_center: Annotated[Range, _within(0.0, 1.0)] = (0.3, 0.7)
    p_blur: Probability = 0.3
    blur_sigma: Annotated[Range, _within(0.0, float("inf"))] = (0.3, 1.5)
    p_noise: Probability = 0.5
    noise_sigma: Annotated[Range, _within(0.0, 1.0)] = (0.0, 0.08)
    p_jpeg: Probability = 0.3
    jpeg_quality: Annotated[IntRange, _within(1, 100)] = (30, 90)
    p_zoom: Probability = 0.0
    zoom: Annotated[Range, _within(0.0, float("inf"), open_low=True)] = (1.0, 1.0)


# One uniform draw per step, always all of them, so that changing one probability
# does not change the random draws of the other augmentations.
_STEPS = ("hflip", "vflip", "rot90", "equalize", "brightness", "contrast", "gamma", "vignette", "blur", "noise", "jpeg")


def augment(
    image: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment an image and its per-dislocation masks.

    Geometric transforms (flips, then a 90 degree rotation) move the image and the
    masks together; photometric ones change the image only. The order follows the
    imaging chain: geometry; equalisation, brightness, contrast, gamma and vignetting;
    blur; noise; JPEG compression last, as the encoder of a camera would. The image is
    clipped to [0, 1] after every step that can leave it.

    Parameters
    ----------
    image : (H, W) ndarray of float
        Grayscale image with values in [0, 1].
    masks : (n, H, W) ndarray
        One mask per dislocation, any numeric or bool dtype; ``n`` may be 0.
    rng : numpy.random.Generator
        Source of all random draws: the same generator state gives the same result.
    config : AugmentConfig
        Probabilities and parameter ranges.

    Returns
    -------
    image : (H, W) ndarray of float32
        Augmented image in [0, 1], C-contiguous. The shape never changes: rotations
        are drawn for square images only, so that a batch keeps one shape.
    masks : (n, H, W) ndarray
        Transformed masks, same dtype as the input, C-contiguous.

    Raises
    ------
    TypeError
        If ``image`` is not a floating-point array, ``masks`` not a numeric array,
        ``rng`` not a :class:`numpy.random.Generator` or ``config`` not an
        :class:`AugmentConfig`.
    ValueError
        If the shapes do not match or the image has values outside [0, 1].

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image, masks = augment(np.full((8, 8), 0.5, np.float32), np.zeros((2, 8, 8), np.uint8), rng)
    >>> image.shape, image.dtype, masks.shape, masks.dtype
    ((8, 8), dtype('float32'), (2, 8, 8), dtype('uint8'))
    """
    _check_inputs(image, masks, rng, config)
    image = image.astype(np.float32)
    if not config.enabled:
        return image, masks.copy()

    c = config
    draw = dict(zip(_STEPS, rng.random(len(_STEPS))))
    rot_k = int(rng.integers(1, 4))
    shift = rng.uniform(*c.brightness)
    factor = rng.uniform(*c.contrast)
    gamma = rng.uniform(*c.gamma)
    strength = rng.uniform(*c.vignette)
    center = rng.uniform(*c.vignette_center, size=2)
    blur_sigma = rng.uniform(*c.blur_sigma)
    noise_sigma = rng.uniform(*c.noise_sigma)
    quality = int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1))

    def applies(step: str) -> bool:
        return draw[step] < getattr(c, f"p_{step}")

    if applies("hflip"):
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    if applies("vflip"):
        image, masks = image[::-1], masks[:, ::-1]
    if applies("rot90") and image.shape[0] == image.shape[1]:
        image, masks = np.rot90(image, rot_k), np.rot90(masks, rot_k, axes=(1, 2))
    # Copies: the masks may still be (views of) the input.
    image = np.array(image, order="C")
    masks = np.array(masks, order="C")

    # Equalisation first: it would undo most of a brightness, contrast or gamma change
    # applied before it (it is nearly invariant to monotonic intensity maps).
    if applies("equalize"):
        image = cv2.equalizeHist(_to_uint8(image)).astype(np.float32) / 255.0
    if applies("brightness"):
        image = np.clip(image + np.float32(shift), 0.0, 1.0)
    if applies("contrast"):
        mean = image.mean(dtype=np.float64)
        image = np.clip((image - mean) * factor + mean, 0.0, 1.0).astype(np.float32)
    if applies("gamma"):
        image = np.power(image, np.float32(gamma))
    if applies("vignette"):
        image = np.clip(image * _vignette(image.shape, center, strength), 0.0, 1.0)
    # cv2 derives the kernel size from sigma only when sigma > 0.
    if applies("blur") and blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    if applies("noise"):
        noise = rng.normal(0.0, noise_sigma, image.shape).astype(np.float32)
        image = np.clip(image + noise, 0.0, 1.0)
    if applies("jpeg"):
        ok, encoded = cv2.imencode(".jpg", _to_uint8(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"OpenCV failed to JPEG-encode a {image.shape} image at quality {quality}")
        image = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return np.ascontiguousarray(image, dtype=np.float32), masks


def _check_inputs(image, masks, rng, config) -> None:
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating):
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"image must be a floating-point ndarray with values in [0, 1], got {kind}")
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D (H, W) grayscale array, got shape {image.shape}")
    if image.size and not (image.min() >= 0.0 and image.max() <= 1.0):
        raise ValueError(f"image values must lie in [0, 1], got [{image.min()}, {image.max()}]")
    if not isinstance(masks, np.ndarray) or not (
        np.issubdtype(masks.dtype, np.number) or masks.dtype == np.bool_
    ):
        kind = masks.dtype if isinstance(masks, np.ndarray) else type(masks).__name__
        raise TypeError(f"masks must be a numeric or bool ndarray, got {kind}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape:
        raise ValueError(f"masks must have shape (n, {image.shape[0]}, {image.shape[1]}) to match the image, got {masks.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255.0).astype(np.uint8)


def _vignette(shape: tuple[int, int], center: np.ndarray, strength: float) -> np.ndarray:
    """Multiplicative radial profile: 1 at ``center`` (fractions of the size), ``1 - strength`` at the farthest corner."""
    height, width = shape
    cy, cx = center[0] * (height - 1), center[1] * (width - 1)
    y, x = np.ogrid[:height, :width]
    r2 = (y - cy) ** 2 + (x - cx) ** 2
    r2_max = max(cy, height - 1 - cy) ** 2 + max(cx, width - 1 - cx) ** 2
    # A 1x1 image has no radius to normalise by: no vignetting.
    if r2_max == 0:
        return np.ones(shape, np.float32)
    return (1.0 - strength * r2 / r2_max).astype(np.float32)


class AugmentedDataset(IterableDataset):
    """Iterable dataset that augments the items of another one.

    Items are dicts with at least

    - ``image``: (1, H, W) float32 tensor in [0, 1]
    - ``masks``: (N, H, W) tensor, zero-padded; the first ``count`` are valid
    - ``count``: int64 scalar tensor, number of valid masks
    - ``index``: int64 scalar tensor, the sample index

    as :class:`temtrack.training.datasets.SyntheticDataset` yields them; other keys are
    passed through. Item ``index`` is augmented with the generator
    ``np.random.default_rng([seed, index])``, so the result does not depend on the
    number of DataLoader workers. The padding masks stay zero.

    Parameters
    ----------
    dataset : iterable of dict
        The wrapped dataset; iterated in each worker, so it must split its items among
        workers itself (as ``SyntheticDataset`` does).
    config : AugmentConfig, optional
        Default ``AugmentConfig()``.
    seed : int
        Augmentation seed, >= 0.
    """

    def __init__(self, dataset, config: AugmentConfig | None = None, *, seed: int = 0):
        super().__init__()
        if config is None:
            config = AugmentConfig()
        if not isinstance(config, AugmentConfig):
            raise TypeError(f"config must be an AugmentConfig or None, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.dataset = dataset
        self.config = config
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        for item in self.dataset:
            yield self.transform(item)

    def transform(self, item: dict) -> dict:
        """Augment one item; returns a new dict and leaves ``item`` unchanged."""
        missing = [key for key in ("image", "masks", "count", "index") if key not in item]
        if missing:
            raise KeyError(f"dataset items must have the keys image, masks, count and index; missing {missing}")
        image, masks = item["image"], item["masks"]
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"item image must have shape (1, H, W), got {tuple(image.shape)}")
        if masks.ndim != 3 or masks.shape[1:] != image.shape[1:]:
            raise ValueError(f"item masks must have shape (N, {image.shape[1]}, {image.shape[2]}), got {tuple(masks.shape)}")
        count, index = int(item["count"]), int(item["index"])
        if not 0 <= count <= masks.shape[0]:
            raise ValueError(f"item count must be within [0, {masks.shape[0]}] (the number of mask channels), got {count}")
        rng = np.random.default_rng([self.seed, index])
        new_image, new_masks = augment(image[0].numpy(), masks[:count].numpy(), rng, self.config)
        out_masks = torch.zeros_like(masks)
        out_masks[:count] = torch.from_numpy(new_masks)
        return {**item, "image": torch.from_numpy(new_image[None]), "masks": out_masks}
