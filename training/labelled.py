"""Training data from labelled frames: real hand-labelled images or stored synthetic ones.

Fine-tuning on real data needs three things the on-the-fly generator does not give:
reading labelled frames from disk (:func:`load_frames`, via the SDK's ground-truth
readers), a validation split that does not leak near-duplicate frames of one video
into both sets (:func:`split_frames`), and a stream of fixed-size training items cut
from frames of any size (:class:`CropDataset`), which the trainer's
:class:`~temtrack.training.train.ItemStream` mixes with other sources such as
:class:`~temtrack.training.datasets.SyntheticDataset`.

Items are dicts in the format of ``SyntheticDataset`` plus ``partial``:

- ``image``: (1, H, W) float32 tensor in [0, 1]
- ``masks``: (N, H, W) float32 tensor, one dislocation per channel, zero-padded
- ``count``: int64 scalar tensor, number of valid masks
- ``index``: int64 scalar tensor, position of the item in its stream
- ``partial``: bool scalar tensor, True when the labels are known to be incomplete
  (the loss must then not push unmatched predicted masks towards empty)

Imports torch: use it from training code only, never from ``temtrack.sdk``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from temtrack.sdk.groundtruth import (
    LINE_SHAPE_TYPES,
    DatasetError,
    GroundTruthError,
    LabelmeError,
    folder_kind,
    iter_ground_truth,
    labelme_files,
)

from .datasets import worker_items

__all__ = [
    "CropDataset",
    "LabelledDataError",
    "LabelledFrame",
    
    "Split",
    "load_frames",
    "split_frames",
]


class LabelledDataError(ValueError):
    """A folder of labelled frames is unusable for training (message names the folder and the problem)."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _frame_number(image_id: str) -> int | None:
    digits = re.findall(r"\d+", image_id)
    return int(digits[-1]) if digits else None


@dataclass(frozen=True, eq=False)
class LabelledFrame:
    """One labelled image of a video (or of a dataset treated as one).

    Frames compare by identity: two frames are equal only if they are the same object.

    Attributes
    ----------
    video : str
        Group key: frames of one video are near-duplicates and must not be split
        between training and validation carelessly (see :func:`split_frames`).
    frame : int or None
        Frame number, the last run of digits in `image_id` (``"frame085"`` -> 85);
        None if the id has no digits.
    image_id : str
        Name of the image within its folder.
    image : (H, W) ndarray of float32
        Intensities in [0, 1].
    masks : (n, H, W) ndarray of uint8
        One 0/1 mask per labelled dislocation; n may be 0.
    """

    video: str
    frame: int | None
    image_id: str
    image: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)

    def __post_init__(self):
        if not isinstance(self.video, str) or not self.video:
            raise TypeError(f"video must be a non-empty str, got {self.video!r}")
        if self.frame is not None and not _is_int(self.frame):
            raise TypeError(f"frame must be an int or None, got {self.frame!r}")
        image, masks = self.image, self.masks
        if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.float32 or 0 in image.shape:
            raise ValueError(
                f"{self.image_id}: image must be a non-empty (H, W) float32 array, got "
                f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}"
            )
        if not isinstance(masks, np.ndarray) or masks.ndim != 3 or masks.dtype != np.uint8:
            raise ValueError(
                f"{self.image_id}: masks must be an (n, H, W) uint8 array, got "
                f"{getattr(masks, 'shape', type(masks).__name__)} {getattr(masks, 'dtype', '')}"
            )
        if masks.shape[1:] != image.shape:
            raise ValueError(f"{self.image_id}: masks are {masks.shape[1:]} px but the image is {image.shape}")


# --- loading ---------------------------------------------------------------------------


def _shape_summary(folder: Path) -> str:
    """The labels and shape types found in a folder's labelme files, for error messages."""
    found: Counter = Counter()
    for path in labelme_files(folder):
        try:
            shapes = json.loads(path.read_text(encoding="utf-8")).get("shapes", [])
        except (OSError, ValueError, AttributeError):
            continue
        for shape in shapes if isinstance(shapes, list) else []:
            if isinstance(shape, dict):
                found[(str(shape.get("label")), str(shape.get("shape_type", "polygon")))] += 1
    if not found:
        return "the files hold no shapes at all"
    listed = ", ".join(f"{label!r} ({kind}) x{n}" for (label, kind), n in sorted(found.items()))
    return f"shapes found: {listed}"


def load_frames(
    folder: str | os.PathLike,
    *,
    video: str | None = None,
    label_width: int = 3,
    min_pixels: int = 5,
) -> list[LabelledFrame]:
    """Read every labelled frame of a folder.

    The folder is any kind :func:`~temtrack.sdk.groundtruth.iter_ground_truth` reads: a
    synthetic dataset (``dataset.json``, ``images/``, ``masks/``), labelme JSON files
    next to their images, or line labels (``NAME.png`` with ``NAME_dislocations.png``,
    each 8-connected line one dislocation).

    Parameters
    ----------
    folder : path
        The folder.
    video : str, optional
        Group key of every frame (see :func:`split_frames`); the folder's name by default.
    label_width : int
        Width in pixels of the masks drawn from labelme centrelines.
    min_pixels : int
        Masks with fewer pixels are dropped (stray specks in hand-drawn labels).

    Returns
    -------
    list of LabelledFrame
        In folder order. Frames without any label are kept (an image with no
        dislocation is a valid example) as long as one frame has labels.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        `folder` is missing or a file.
    LabelledDataError
        The folder holds no labelled frame, a synthetic dataset lacks its masks,
        labelme files hold no dislocation shape, no frame has any label, or a file is
        unreadable.

    Examples
    --------
    >>> frames = load_frames("../shared/data/real/twip-8.4um/labeled")  # doctest: +SKIP
    >>> len(frames), frames[0].video, frames[0].frame, frames[0].masks.shape  # doctest: +SKIP
    (59, 'labeled', 0, (15, 362, 700))
    """
    if video is not None and (not isinstance(video, str) or not video):
        raise TypeError(f"video must be a non-empty str or None, got {video!r}")
    if not _is_int(label_width) or label_width < 1:
        raise ValueError(f"label_width must be an int >= 1 (pixels), got {label_width!r}")
    if not _is_int(min_pixels) or min_pixels < 1:
        raise ValueError(f"min_pixels must be an int >= 1 (pixels), got {min_pixels!r}")
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"labelled-frame folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"labelled frames must be a folder, got the file {folder}")
    video = video if video is not None else (folder.resolve().name or str(folder))
    try:
        kind = folder_kind(folder)
    except GroundTruthError as exc:
        raise LabelledDataError(f"no labelled frames in {folder}: {exc}") from None
    if kind == "synthetic" and not (folder / "masks").is_dir():
        raise LabelledDataError(
            f"dataset folder without masks: {folder} has dataset.json but no masks/ folder "
            "(copy the whole dataset as 'tem-track synth' wrote it)"
        )

    frames = []
    try:
        for truth in iter_ground_truth(folder, label_width=label_width):
            masks = truth.masks
            if len(masks):
                masks = masks[masks.reshape(len(masks), -1).sum(axis=1) >= min_pixels]
            frames.append(LabelledFrame(
                video=video,
                frame=_frame_number(truth.image_id),
                image_id=truth.image_id,
                image=np.ascontiguousarray(truth.image, dtype=np.float32),
                masks=np.ascontiguousarray(masks, dtype=np.uint8),
            ))
    except FileNotFoundError as exc:
        if kind != "synthetic":
            raise
        # read_sample opens each sample's masks/NNNNNN.npz without checking it exists.
        raise LabelledDataError(
            f"dataset folder without masks: {folder} lacks the mask file {exc.filename}"
        ) from None
    except (GroundTruthError, DatasetError, LabelmeError) as exc:
        raise LabelledDataError(f"cannot load labelled frames from {folder}: {exc}") from None

    if not frames:
        raise LabelledDataError(f"no labelled frames in {folder} (the {kind} folder holds no image)")
    if not any(len(frame.masks) for frame in frames):
        if kind == "labelme":
            raise LabelledDataError(
                f"{folder}: none of its {len(frames)} labelme files has a dislocation shape "
                f"({', '.join(LINE_SHAPE_TYPES)}) of at least {min_pixels} px; {_shape_summary(folder)}"
            )
        raise LabelledDataError(
            f"{folder}: none of its {len(frames)} frames has a labelled dislocation of at least "
            f"{min_pixels} px (all labels are empty)"
        )
    return frames


# --- splitting -------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Training and validation frames, and how they were chosen.

    Attributes
    ----------
    train, val : list of LabelledFrame
        In the order of the frames given to :func:`split_frames`.
    rule : {"video", "time", "none"}
        ``"video"``: whole videos went to validation; ``"time"``: the latest frames of
        the one video did; ``"none"``: no validation (``val_fraction=0``).
    dropped : int
        Training frames left out because they are within ``gap`` frame numbers of the
        first validation frame (rule ``"time"`` only).
    """

    train: list
    val: list
    rule: str
    dropped: int


def split_frames(frames: Sequence[LabelledFrame], *, val_fraction: float = 0.2, gap: int = 5) -> Split:
    """Split frames into training and validation without leaking one video into both.

    Consecutive frames of a video are near-duplicates: a random split by frame would
    put almost the same image in both sets and overrate the model. So:

    - frames from two or more videos: whole videos go to validation, the last ones in
      sorted order of their names, until at least ``val_fraction`` of the frames are
      in validation; at least one video goes to each set;
    - frames from one video: the last ``ceil(val_fraction * n)`` frames in frame order
      go to validation (at least one, at least one left for training), and training
      frames within ``gap`` frame numbers of the first validation frame are dropped.

    Parameters
    ----------
    frames : sequence of LabelledFrame
        Not modified.
    val_fraction : float
        Fraction of the frames wanted in validation, in [0, 1); 0 puts every frame in
        training.
    gap : int
        Frame numbers (>= 0) kept free between training and validation in a
        single-video split.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        Bad arguments, fewer than two frames to split, or a gap that drops every
        training frame.
    LabelledDataError
        A single-video split of frames without frame numbers in their names.

    Examples
    --------
    >>> image, masks = np.zeros((2, 2), np.float32), np.zeros((0, 2, 2), np.uint8)
    >>> frames = [LabelledFrame("v", i, f"f{i}", image, masks) for i in range(0, 50, 5)]
    >>> split = split_frames(frames, val_fraction=0.2, gap=5)
    >>> split.rule, [f.frame for f in split.val], split.dropped, len(split.train)
    ('time', [40, 45], 1, 7)
    """
    frames = list(frames)
    if not all(isinstance(frame, LabelledFrame) for frame in frames):
        raise TypeError("frames must be LabelledFrame objects (see load_frames)")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if not _is_int(gap) or gap < 0:
        raise ValueError(f"gap must be an int >= 0 (frame numbers), got {gap!r}")
    if not frames:
        raise ValueError("frames is empty: nothing to split")
    if val_fraction == 0:
        return Split(train=frames, val=[], rule="none", dropped=0)
    if len(frames) < 2:
        raise ValueError(f"need at least 2 frames to split off a validation set, got {len(frames)}")

    counts = Counter(frame.video for frame in frames)
    if len(counts) >= 2:
        videos = sorted(counts)
        chosen: set[str] = set()
        for name in reversed(videos[1:]):
            chosen.add(name)
            if sum(counts[v] for v in chosen) >= val_fraction * len(frames):
                break
        return Split(
            train=[f for f in frames if f.video not in chosen],
            val=[f for f in frames if f.video in chosen],
            rule="video",
            dropped=0,
        )

    unnumbered = [f.image_id for f in frames if f.frame is None]
    if unnumbered:
        raise LabelledDataError(
            f"all frames come from the one video {frames[0].video!r}, so validation is split off by time, "
            f"which needs frame numbers in the image names (e.g. frame085.png); these have none: "
            f"{', '.join(unnumbered[:5])}{' ...' if len(unnumbered) > 5 else ''}"
        )
    ordered = sorted(frames, key=lambda f: (f.frame, f.image_id))
    # The small epsilon keeps 0.1 * 30 = 3.0000000000000004 at 3 frames.
    n_val = min(len(frames) - 1, max(1, math.ceil(val_fraction * len(frames) - 1e-9)))
    val = {id(f) for f in ordered[-n_val:]}
    first = ordered[-n_val].frame
    train = [f for f in frames if id(f) not in val and first - f.frame > gap]
    dropped = len(frames) - n_val - len(train)
    if not train:
        raise ValueError(
            f"gap={gap} drops every training frame (the {len(frames) - n_val} training frames are all "
            f"within {gap} frame numbers of the first validation frame {first}); lower gap or val_fraction"
        )
    return Split(train=train, val=[f for f in frames if id(f) in val], rule="time", dropped=dropped)


# --- datasets --------------------------------------------------------------------------


def _check_size(size) -> tuple[int, int]:
    if _is_int(size):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(v) and v >= 1 for v in size)):
        raise ValueError(f"size must be an int >= 1 or (height, width) of two such ints, got {size!r}")
    return int(size[0]), int(size[1])


class CropDataset(IterableDataset):
    """Endless (or ``length``-long) stream of random crops of labelled frames.

    Sample ``i`` is drawn with ``np.random.default_rng([seed, i])``: a frame chosen
    with probability proportional to its area, then a crop position uniformly. The
    same seed gives the same stream whatever the number of DataLoader workers (worker
    ``w`` of ``W`` yields samples ``w, w + W, w + 2W, ...``).

    A frame smaller than the crop along an axis is placed at a random offset in the
    crop, and the rest is filled with the frame's median intensity (masks with 0).
    A mask is kept when at least ``min_mask_pixels`` of its pixels lie in the crop;
    beyond ``max_masks`` the largest (in the crop) are kept, in frame order.

    Items are dicts (see the module docstring) with ``partial`` as given.

    Parameters
    ----------
    frames : sequence of LabelledFrame
        Source frames, any sizes; not modified (crops are copies).
    size : int or (int, int)
        Crop height and width in pixels.
    max_masks : int
        Number of mask channels (the model's N).
    seed : int
        Stream seed, >= 0.
    partial : bool
        Whether the labels are incomplete (True for real frames labelled in part).
    min_mask_pixels : int
        Pixels a mask needs inside the crop to count as a dislocation there.
    length : int, optional
        Number of samples; None for an endless stream.
    start : int
        Index of the first sample (to continue a stream after a restart).
    """

    def __init__(
        self,
        frames: Sequence[LabelledFrame],
        *,
        size: int | tuple[int, int],
        max_masks: int = 20,
        seed: int = 0,
        partial: bool = True,
        min_mask_pixels: int = 10,
        length: int | None = None,
        start: int = 0,
    ):
        super().__init__()
        frames = list(frames)
        if not frames:
            raise ValueError("frames is empty: a CropDataset needs at least one frame")
        for i, frame in enumerate(frames):
            if not isinstance(frame, LabelledFrame):
                raise TypeError(f"frames[{i}] must be a LabelledFrame (see load_frames), got {type(frame).__name__}")
        self.size = _check_size(size)
        if not _is_int(max_masks) or max_masks < 1:
            raise ValueError(f"max_masks must be an int >= 1, got {max_masks!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not isinstance(partial, (bool, np.bool_)):
            raise TypeError(f"partial must be a bool, got {partial!r}")
        if not _is_int(min_mask_pixels) or min_mask_pixels < 1:
            raise ValueError(f"min_mask_pixels must be an int >= 1, got {min_mask_pixels!r}")
        if length is not None and (not _is_int(length) or length < 0):
            raise ValueError(f"length must be an int >= 0 or None, got {length!r}")
        if not _is_int(start) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        self.frames = frames
        self.max_masks = int(max_masks)
        self.seed = int(seed)
        self.partial = bool(partial)
        self.min_mask_pixels = int(min_mask_pixels)
        self.length = None if length is None else int(length)
        self.start = int(start)
        areas = np.array([f.image.size for f in frames], np.float64)
        self._p = areas / areas.sum()
        self._fill = [np.float32(np.median(f.image)) for f in frames]

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless CropDataset has no length")
        return self.length

    def item(self, index: int) -> dict:
        """Draw sample ``index`` of the stream."""
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.choice(len(self.frames), p=self._p))
        frame = self.frames[k]
        (ch, cw), (fh, fw) = self.size, frame.image.shape
        # Per axis: an offset into the frame when it is larger, into the crop when smaller.
        src_y = int(rng.integers(0, fh - ch + 1)) if fh >= ch else 0
        dst_y = int(rng.integers(0, ch - fh + 1)) if fh < ch else 0
        src_x = int(rng.integers(0, fw - cw + 1)) if fw >= cw else 0
        dst_x = int(rng.integers(0, cw - fw + 1)) if fw < cw else 0
        h, w = min(ch, fh), min(cw, fw)
        source = (slice(src_y, src_y + h), slice(src_x, src_x + w))
        target = (slice(dst_y, dst_y + h), slice(dst_x, dst_x + w))

        image = np.full((ch, cw), self._fill[k], np.float32)
        image[target] = frame.image[source]
        inside = frame.masks[(slice(None), *source)]
        pixels = inside.sum(axis=(1, 2), dtype=np.int64)
        keep = np.flatnonzero(pixels >= self.min_mask_pixels)
        if len(keep) > self.max_masks:
            keep = np.sort(keep[np.argsort(-pixels[keep], kind="stable")[: self.max_masks]])
        masks = np.zeros((self.max_masks, ch, cw), np.float32)
        masks[(slice(0, len(keep)), *target)] = inside[keep]
        return {
            "image": torch.from_numpy(image[None]),
            "masks": torch.from_numpy(masks),
            "count": torch.tensor(len(keep), dtype=torch.int64),
            "index": torch.tensor(int(index), dtype=torch.int64),
            "partial": torch.tensor(self.partial),
        }

    def __iter__(self):
        return worker_items(self.item, start=self.start, length=self.length)
