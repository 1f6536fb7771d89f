"""Training the line-field family: its data stream and its dense losses.

The network predicts a centreline map and the line direction at every pixel
(:mod:`temtrack.training.model`); the targets come from the generator's exact
centrelines (:func:`temtrack.training.synth.targets.line_targets`), never from N×H×W
masks, and the losses are per pixel with no matching, so a CPU learns them in a few
thousand steps.

Geometric augmentation (a zoom, flips, 90 degree rotations) moves the centrelines with
the image before the targets are drawn, so the targets stay exact; photometric
augmentation then changes the image only (:func:`temtrack.training.augment.augment`).

Imports torch: training code only.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from .augment import AugmentConfig, augment
from .datasets import worker_items
from .synth import SynthConfig, render_scene, resolve_config, sample_scene
from .synth.storage import sample_seed
from .synth.targets import line_distance, line_targets

__all__ = [
    "LabelledLineDataset",
    "LineFieldDataset",
    "dihedral",
    "known_pixels",
    "label_centrelines",
    "linefield_loss",
    "linefield_outputs",
]

_GEOMETRY_OFF = {"p_hflip": 0.0, "p_vflip": 0.0, "p_rot90": 0.0}


def dihedral(image: np.ndarray, curves: list, rng: np.random.Generator, config: AugmentConfig):
    """Random flips and a 90 degree rotation of ``image`` with its ``(x, y)`` curves.

    Draws as :func:`~temtrack.training.augment.augment` configures them (``p_hflip``,
    ``p_vflip``, ``p_rot90``; rotations of square images only). Returns the new image
    (C-contiguous) and the moved curves.
    """
    height, width = image.shape
    draws = rng.random(3)
    k = int(rng.integers(1, 4))
    curves = [np.asarray(c, float).copy() for c in curves]
    if not config.enabled:
        return np.ascontiguousarray(image), curves
    if draws[0] < config.p_hflip:
        image = image[:, ::-1]
        for c in curves:
            c[:, 0] = width - 1 - c[:, 0]
    if draws[1] < config.p_vflip:
        image = image[::-1]
        for c in curves:
            c[:, 1] = height - 1 - c[:, 1]
    if draws[2] < config.p_rot90 and height == width:
        # np.rot90 turns counter-clockwise on screen: (x, y) -> (y, W - 1 - x), k times.
        image = np.rot90(image, k)
        for c in curves:
            for _ in range(k):
                c[:, 0], c[:, 1] = c[:, 1].copy(), width - 1 - c[:, 0]
    return np.ascontiguousarray(image), curves


class LineFieldDataset(IterableDataset):
    """Endless stream of augmented synthetic images with line-field targets.

    Item ``i`` is rendered from ``sample_seed(seed, i)`` and augmented with
    ``np.random.default_rng([seed, i])``: the same whatever the number of workers, and a
    resumed run continues it exactly. Each item is a dict:

    - ``image``: (1, H, W) float32 tensor in [0, 1]
    - ``target``: (3 + len(extras), H, W) float32 tensor: centre, cos 2θ, sin 2θ, extras
    - ``weight``: (1, H, W) float32 tensor, where the direction is supervised
    - ``known``: (1, H, W) float32 tensor, where the centre map is supervised (all
      ones: a synthetic image is labelled in full)
    - ``gaps`` (only with ``gaps=True``): (1, H, W) float32 tensor, the separation
      weight between close lines (:func:`~temtrack.training.synth.targets.separation`)
    - ``index``: int64 tensor

    Parameters
    ----------
    preset : str or SynthConfig
    seed : int
    size : int, optional
        Image size (the preset's lengths stay in pixels).
    sigma : float
        Width of the centre ridge (px).
    extras : tuple of str
        ``("ends",)`` adds the line-end map.
    gaps : bool
        Adds the ``gaps`` plane (for ``LossConfig.gap_weight``).
    augment_config : AugmentConfig, optional
    backgrounds : path, optional
    start : int
    """

    def __init__(
        self,
        preset: str | SynthConfig,
        *,
        seed: int = 0,
        size: int | None = None,
        sigma: float = 1.2,
        extras: tuple = (),
        gaps: bool = False,
        augment_config: AugmentConfig | None = None,
        backgrounds: str | Path | None = None,
        start: int = 0,
    ):
        super().__init__()
        unknown = sorted(set(extras) - {"ends"})
        if unknown:
            raise ValueError(f"unknown line-field extras {unknown}; known: ['ends']")
        self.config = resolve_config(preset, size=size)
        self.seed, self.sigma, self.extras, self.gaps = int(seed), float(sigma), tuple(extras), bool(gaps)
        self.augment_config = augment_config or AugmentConfig()
        self.photometric = self.augment_config.model_copy(update=_GEOMETRY_OFF)
        self.backgrounds = backgrounds
        self.start = int(start)

    def item(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        image, curves = self._render(index, rng)
        image, curves = dihedral(image, curves, rng, self.augment_config)
        return _item(self, index, image, curves, None, rng)

    def _render(self, index: int, rng: np.random.Generator):
        """The sample's image and centrelines, zoomed (``AugmentConfig.p_zoom``)."""
        config, c = self.config, self.augment_config
        draw, log_zoom = rng.random(), rng.uniform(*np.log(c.zoom))
        zoom = float(np.exp(log_zoom)) if c.enabled and draw < c.p_zoom else 1.0
        height, width = config.size
        source = (max(int(round(height / zoom)), 16), max(int(round(width / zoom)), 16))
        if source != (height, width):
            config = config.with_size(source)
        scene = sample_scene(config, sample_seed(self.seed, index), backgrounds=self.backgrounds)
        sample = render_scene(scene, backgrounds=self.backgrounds)
        if source == (height, width):
            return sample.image, sample.centrelines
        scale_x, scale_y = width / source[1], height / source[0]
        shrink = scale_x < 1.0
        image = cv2.resize(sample.image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        # Pixel centres at integers: x' = (x + 0.5) * s - 0.5.
        curves = [np.column_stack([(c[:, 0] + 0.5) * scale_x - 0.5, (c[:, 1] + 0.5) * scale_y - 0.5]) for c in sample.centrelines]
        return np.clip(image, 0.0, 1.0), curves

    def __iter__(self):
        return worker_items(self.item, start=self.start)


def _item(stream, index: int, image: np.ndarray, curves: list, known, rng) -> dict:
    """A stream's item from its (already moved) image and curves: targets, then the
    photometric augmentation; ``known`` None means fully labelled."""
    targets = line_targets(curves, image.shape, sigma=stream.sigma, ends="ends" in stream.extras, gaps=stream.gaps)
    image, _ = augment(image, np.zeros((0, *image.shape), np.uint8), rng, stream.photometric)
    planes = [targets.centre[None], targets.direction]
    if "ends" in stream.extras:
        planes.append(targets.ends[None])
    known = np.ones((1, *image.shape), np.float32) if known is None else known[None]
    item = {
        "image": torch.from_numpy(image[None]),
        "target": torch.from_numpy(np.concatenate(planes)),
        "weight": torch.from_numpy(targets.weight[None]),
        "known": torch.from_numpy(np.ascontiguousarray(known, dtype=np.float32)),
        "index": torch.tensor(index, dtype=torch.int64),
    }
    if stream.gaps:
        item["gaps"] = torch.from_numpy(targets.gaps[None])
    return item


# --- partially labelled real frames ------------------------------------------------------


def label_centrelines(masks: np.ndarray) -> list[np.ndarray]:
    """Centrelines ``(x, y)`` of hand-labelled dislocation masks, one per mask.

    Each mask is thinned and fitted with a spline by the SDK's post-processing
    (:func:`temtrack.sdk.postprocess.extract_dislocations`), the same path the
    evaluation takes for the labels, so training targets and scores see the same lines.
    A mask whose skeleton branches may give several lines.

    Parameters
    ----------
    masks : (N, H, W) ndarray
        One 0/1 mask per labelled dislocation.

    Returns
    -------
    list of (n_i, 2) ndarray of float64
    """
    from temtrack.sdk.postprocess import extract_dislocations

    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be an (N, H, W) array, got shape {masks.shape}")
    if not len(masks):
        return []
    frame = extract_dislocations(masks.astype(np.float32))
    return [np.asarray(d.points, dtype=float) for d in frame.dislocations if len(d.points) >= 2]


def known_pixels(curves, shape: tuple[int, int], *, rule: str = "near_labels", near: float = 6.0) -> np.ndarray:
    """Where the centre map of a partially labelled image is supervised.

    Parameters
    ----------
    curves : sequence of (n_i, 2) ndarray
        The labelled centrelines ``(x, y)`` in pixels.
    shape : (H, W)
    rule : {"near_labels", "everywhere"}
        ``"near_labels"``: pixels within ``near`` px of a labelled line (the line itself
        and the background beside it, which the labeller saw); ``"everywhere"``: every
        pixel (an unlabelled dislocation is then taught as background).
    near : float
        Radius in px (> 0).

    Returns
    -------
    (H, W) ndarray of float32, 0 or 1

    >>> line = np.column_stack([np.arange(10.0, 30.0), np.full(20, 20.0)])
    >>> known = known_pixels([line], (40, 40), near=4.0)
    >>> int(known[20, 20]), int(known[24, 20]), int(known[26, 20]), int(known[5, 5])
    (1, 1, 0, 0)
    """
    if rule not in ("near_labels", "everywhere"):
        raise ValueError(f"rule must be 'near_labels' or 'everywhere', got {rule!r}")
    if not near > 0:
        raise ValueError(f"near must be > 0 px, got {near!r}")
    height, width = (int(v) for v in shape)
    if rule == "everywhere":
        return np.ones((height, width), np.float32)
    distance = line_distance(curves, (height, width))
    if distance is None:
        return np.zeros((height, width), np.float32)
    return (distance <= near).astype(np.float32)


class LabelledLineDataset(IterableDataset):
    """Endless stream of random crops of hand-labelled real frames with line-field targets.

    The labels of real frames are partial (e.g. only the moving dislocations of a
    video), so each item carries ``known``: where the centre map may be trained at all
    (:func:`known_pixels`). Items have the keys of :class:`LineFieldDataset`. Sample
    ``i`` is drawn with ``np.random.default_rng([seed, i])`` (a frame with probability
    proportional to its area, a crop position, a dihedral transform when the crop is
    square, then the photometric augmentation), so a resumed run continues exactly.

    Parameters
    ----------
    frames : sequence of LabelledFrame
        From :func:`temtrack.training.labelled.load_frames`; at least one labelled.
        Frames smaller than the crop are padded with their median (unknown there).
    size : int
        Crop side in px.
    seed : int
    sigma : float
        Width of the centre ridge (px).
    extras : tuple of str
        ``("ends",)`` adds the line-end map (line ends inside the crop).
    gaps : bool
        Adds the ``gaps`` plane between the labelled lines.
    rule, near
        See :func:`known_pixels`.
    augment_config : AugmentConfig, optional
    start : int
    """

    def __init__(
        self,
        frames,
        *,
        size: int,
        seed: int = 0,
        sigma: float = 1.2,
        extras: tuple = (),
        gaps: bool = False,
        rule: str = "near_labels",
        near: float = 6.0,
        augment_config: AugmentConfig | None = None,
        start: int = 0,
    ):
        super().__init__()
        frames = list(frames)
        if not frames:
            raise ValueError("frames is empty: a LabelledLineDataset needs at least one labelled frame")
        if not isinstance(size, (int, np.integer)) or size < 16:
            raise ValueError(f"size must be an int >= 16 (px), got {size!r}")
        known_pixels([], (1, 1), rule=rule, near=near)  # validates rule and near
        self.frames, self.size, self.seed = frames, int(size), int(seed)
        self.sigma, self.extras, self.rule, self.near = float(sigma), tuple(extras), rule, float(near)
        self.gaps = bool(gaps)
        self.augment_config = augment_config or AugmentConfig()
        self.photometric = self.augment_config.model_copy(update=_GEOMETRY_OFF)
        self.start = int(start)
        self.curves = [label_centrelines(frame.masks) for frame in frames]
        if not any(self.curves):
            raise ValueError("none of the frames has a labelled line to learn from")
        areas = np.array([frame.image.size for frame in frames], float)
        self._p = areas / areas.sum()

    def item(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.choice(len(self.frames), p=self._p))
        frame, size = self.frames[k], self.size
        fh, fw = frame.image.shape
        y0 = int(rng.integers(0, max(fh - size, 0) + 1))
        x0 = int(rng.integers(0, max(fw - size, 0) + 1))
        crop = frame.image[y0 : y0 + size, x0 : x0 + size]
        image = np.full((size, size), np.median(frame.image), np.float32)
        image[: crop.shape[0], : crop.shape[1]] = crop
        inside = np.zeros((size, size), np.float32)
        inside[: crop.shape[0], : crop.shape[1]] = 1.0
        # The same flips for the image and for where it holds frame pixels (the draws replayed).
        state = rng.bit_generator.state
        inside, _ = dihedral(inside, [], rng, self.augment_config)
        rng.bit_generator.state = state
        image, curves = dihedral(image, [c - (x0, y0) for c in self.curves[k]], rng, self.augment_config)
        known = known_pixels(curves, image.shape, rule=self.rule, near=self.near) * inside
        return _item(self, index, image, curves, known, rng)

    def __iter__(self):
        return worker_items(self.item, start=self.start)


def linefield_outputs(raw: torch.Tensor) -> torch.Tensor:
    """Network outputs to fields: sigmoid on the maps, tanh on the direction pair.

    ``raw`` is ``(B, C, H, W)``; the result has the same shape, centre and extras in
    [0, 1], direction in [-1, 1]. The same function runs in the exported graph.
    """
    maps = torch.sigmoid(raw[:, :1])
    direction = torch.tanh(raw[:, 1:3])
    return torch.cat([maps, direction, torch.sigmoid(raw[:, 3:])], dim=1)


def _map_loss(logits: torch.Tensor, target: torch.Tensor, positive_weight: float, known=None, extra=None) -> torch.Tensor:
    """Soft-target BCE, heavier on the ridge (lines cover ~1 % of pixels), plus soft Dice.

    ``known`` (B, 1, H, W) limits both to the pixels whose label is known; the BCE stays
    a mean over all pixels, so a crop that is mostly unknown weighs less. ``extra``
    (B, 1, H, W) adds to the BCE's weight (the separation weight between close lines).
    """
    weight = 1.0 + positive_weight * target
    if extra is not None:
        weight = weight + extra
    if known is not None:
        weight = weight * known
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).mean()
    p = torch.sigmoid(logits)
    if known is not None:
        p, target = p * known, target * known
    dims = (1, 2, 3)
    dice = 1.0 - (2.0 * (p * target).sum(dims) + 1.0) / (p.sum(dims) + target.sum(dims) + 1.0)
    return bce + dice.mean()


def linefield_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    known: torch.Tensor | None = None,
    positive_weight: float = 10.0,
    direction_weight: float = 1.0,
    ends_weight: float = 0.5,
    gaps: torch.Tensor | None = None,
    gap_weight: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """The dense line-field loss of one batch; returns ``(loss, its parts as floats)``.

    Parameters
    ----------
    raw : (B, C, H, W) tensor
        Network outputs (logits; direction before tanh).
    target : (B, C, H, W) tensor
        Centre, cos 2θ, sin 2θ (, ends).
    weight : (B, 1, H, W) tensor
        1 where the direction is supervised.
    known : (B, 1, H, W) tensor, optional
        1 where the centre (and ends) labels are known; None: everywhere (synthetic
        images). Partially labelled real frames set it (:func:`known_pixels`).
    gaps : (B, 1, H, W) tensor, optional
        The separation weight between close lines (the items' ``gaps``); the centre
        map's BCE weighs ``gap_weight * gaps`` more there.
    """
    if raw.shape != target.shape:
        raise ValueError(f"outputs {tuple(raw.shape)} and targets {tuple(target.shape)} differ in shape")
    raw = raw.float()
    if known is not None and known.shape != weight.shape:
        raise ValueError(f"known {tuple(known.shape)} must have the shape of weight {tuple(weight.shape)}")
    if gap_weight > 0 and gaps is None:
        raise ValueError("gap_weight > 0 needs the separation weight: items made with gaps=True")
    extra = gap_weight * gaps.float() if gap_weight > 0 else None
    if extra is not None and extra.shape != weight.shape:
        raise ValueError(f"gaps {tuple(extra.shape)} must have the shape of weight {tuple(weight.shape)}")
    centre = _map_loss(raw[:, :1], target[:, :1], positive_weight, known, extra)
    squared = (torch.tanh(raw[:, 1:3]) - target[:, 1:3]).square().sum(1, keepdim=True)
    direction = (squared * weight).sum() / weight.sum().clamp_min(1.0)
    loss = centre + direction_weight * direction
    parts = {"centre": float(centre.detach()), "direction": float(direction.detach())}
    if raw.shape[1] > 3:
        ends = _map_loss(raw[:, 3:4], target[:, 3:4], positive_weight, known)
        loss = loss + ends_weight * ends
        parts["ends"] = float(ends.detach())
    return loss, parts
