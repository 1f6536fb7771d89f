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
from .synth.targets import line_targets

__all__ = ["LineFieldDataset", "dihedral", "linefield_loss", "linefield_outputs"]

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
        augment_config: AugmentConfig | None = None,
        backgrounds: str | Path | None = None,
        start: int = 0,
    ):
        super().__init__()
        unknown = sorted(set(extras) - {"ends"})
        if unknown:
            raise ValueError(f"unknown line-field extras {unknown}; known: ['ends']")
        self.config = resolve_config(preset, size=size)
        self.seed, self.sigma, self.extras = int(seed), float(sigma), tuple(extras)
        self.augment_config = augment_config or AugmentConfig()
        self.photometric = self.augment_config.model_copy(update=_GEOMETRY_OFF)
        self.backgrounds = backgrounds
        self.start = int(start)

    def item(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        image, curves = self._render(index, rng)
        image, curves = dihedral(image, curves, rng, self.augment_config)
        targets = line_targets(curves, image.shape, sigma=self.sigma, ends="ends" in self.extras)
        image, _ = augment(image, np.zeros((0, *image.shape), np.uint8), rng, self.photometric)
        planes = [targets.centre[None], targets.direction]
        if "ends" in self.extras:
            planes.append(targets.ends[None])
        return {
            "image": torch.from_numpy(image[None]),
            "target": torch.from_numpy(np.concatenate(planes)),
            "weight": torch.from_numpy(targets.weight[None]),
            "index": torch.tensor(index, dtype=torch.int64),
        }

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


def linefield_outputs(raw: torch.Tensor) -> torch.Tensor:
    """Network outputs to fields: sigmoid on the maps, tanh on the direction pair.

    ``raw`` is ``(B, C, H, W)``; the result has the same shape, centre and extras in
    [0, 1], direction in [-1, 1]. The same function runs in the exported graph.
    """
    maps = torch.sigmoid(raw[:, :1])
    direction = torch.tanh(raw[:, 1:3])
    return torch.cat([maps, direction, torch.sigmoid(raw[:, 3:])], dim=1)


def _map_loss(logits: torch.Tensor, target: torch.Tensor, positive_weight: float) -> torch.Tensor:
    """Soft-target BCE, heavier on the ridge (lines cover ~1 % of pixels), plus soft Dice."""
    weight = 1.0 + positive_weight * target
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).mean()
    p = torch.sigmoid(logits)
    dims = (1, 2, 3)
    dice = 1.0 - (2.0 * (p * target).sum(dims) + 1.0) / (p.sum(dims) + target.sum(dims) + 1.0)
    return bce + dice.mean()


def linefield_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    positive_weight: float = 10.0,
    direction_weight: float = 1.0,
    ends_weight: float = 0.5,
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
    """
    if raw.shape != target.shape:
        raise ValueError(f"outputs {tuple(raw.shape)} and targets {tuple(target.shape)} differ in shape")
    raw = raw.float()
    centre = _map_loss(raw[:, :1], target[:, :1], positive_weight)
    squared = (torch.tanh(raw[:, 1:3]) - target[:, 1:3]).square().sum(1, keepdim=True)
    direction = (squared * weight).sum() / weight.sum().clamp_min(1.0)
    loss = centre + direction_weight * direction
    parts = {"centre": float(centre.detach()), "direction": float(direction.detach())}
    if raw.shape[1] > 3:
        ends = _map_loss(raw[:, 3:4], target[:, 3:4], positive_weight)
        loss = loss + ends_weight * ends
        parts["ends"] = float(ends.detach())
    return loss, parts
