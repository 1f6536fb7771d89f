"""Torch datasets of synthetic images generated on the fly.

Imports torch: use it from training code only, never from ``temtrack.sdk``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .synth import SynthConfig, render_scene, resolve_config, sample_scene
from .synth.storage import sample_seed


class SyntheticDataset(IterableDataset):
    """Endless (or ``length``-long) stream of synthetic samples, generated in the workers.

    Sample ``i`` is generated from ``sample_seed(seed, i)``: the same seed gives the same
    stream whatever the number of DataLoader workers, and no two workers ever produce
    the same image (worker ``w`` of ``W`` generates samples ``w, w + W, w + 2W, ...``).

    Each item is a dict:

    - ``image``: (1, H, W) float32 tensor in [0, 1]
    - ``masks``: (max_masks, H, W) float32 tensor, one dislocation per channel, zero-padded
    - ``count``: int64 tensor, number of valid masks (dislocations beyond ``max_masks``
      are dropped, largest masks kept)
    - ``index``: int64 tensor, the sample index
    - ``partial``: bool tensor, False (every dislocation of a synthetic image is labelled)

    Parameters
    ----------
    preset : str or SynthConfig
    seed : int
        Stream seed.
    max_masks : int
        Number of mask channels (the model's N; 20 in the thesis).
    size : int or (int, int), optional
        Image size; the preset's by default.
    backgrounds : path, optional
        Real background patch folder for configs that use one.
    length : int, optional
        Number of samples; ``None`` for an endless stream.
    start : int
        Index of the first sample (to continue a stream after a restart).
    """

    def __init__(
        self,
        preset: str | SynthConfig,
        *,
        seed: int = 0,
        max_masks: int = 20,
        size: int | tuple[int, int] | None = None,
        backgrounds: str | Path | None = None,
        length: int | None = None,
        start: int = 0,
    ):
        super().__init__()
        if max_masks < 1:
            raise ValueError(f"max_masks must be >= 1, got {max_masks}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0 or None, got {length}")
        self.config = resolve_config(preset, size=size)
        self.seed = int(seed)
        self.max_masks = int(max_masks)
        self.backgrounds = backgrounds
        self.length = length
        self.start = int(start)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless SyntheticDataset has no length")
        return self.length

    def item(self, index: int) -> dict:
        """Generate sample ``index`` of the stream."""
        scene = sample_scene(self.config, sample_seed(self.seed, index), backgrounds=self.backgrounds)
        sample = render_scene(scene, backgrounds=self.backgrounds)
        masks = sample.masks
        if len(masks) > self.max_masks:
            keep = np.sort(np.argsort(-masks.reshape(len(masks), -1).sum(axis=1), kind="stable")[: self.max_masks])
            masks = masks[keep]
        padded = np.zeros((self.max_masks, *sample.image.shape), np.float32)
        padded[: len(masks)] = masks
        return {
            "image": torch.from_numpy(sample.image[None]),
            "masks": torch.from_numpy(padded),
            "count": torch.tensor(len(masks), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "partial": torch.tensor(False),
        }

    def __iter__(self):
        return worker_items(self.item, start=self.start, length=self.length)


def worker_items(item, *, start: int = 0, length: int | None = None):
    """``item(i)`` for this DataLoader worker's share of the indices ``start, start + 1, ...``.

    Worker ``w`` of ``W`` takes ``start + w, start + w + W, ...`` (all of them outside a
    worker), up to ``start + length`` (endless for None). A stream whose items depend
    only on their index is thereby the same for any number of workers.
    """
    info = get_worker_info()
    worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
    stop = None if length is None else start + length
    index = start + worker
    while stop is None or index < stop:
        yield item(index)
        index += workers
