"""What every frame source shares: :class:`Frame`, :class:`FrameSource`, the gray conversion.

:class:`FrameSource` is the stream the main job reads; :class:`_Gray` applies the one
conversion rule of :mod:`temtrack.sdk.sources` (colour to BT.601 luma, integers by
their bit depth, floats by the first frame's range); ``_StackSource`` is the base of
the sources with random access (arrays, images, TIFF). The suffix tables say which
reader a path goes to. numpy only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "SUPPORTED", "TIFF_SUFFIXES", "VIDEO_SUFFIXES", "Frame", "FrameSource", "SourceError"]

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".wmv", ".asf", ".flv", ".ogv", ".gif", ".mj2", ".mxf", ".3gp", ".dv", ".vob", ".nut",
    ".ivf", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc",
)  # fmt: skip
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORTED = (
    "video files FFmpeg decodes (.mp4, .avi, .mkv, .mov, ...), TIFF stacks (.tif, .tiff), "
    "image files, folders of images or glob patterns (.png, .jpg, .jpeg, .bmp, .tif, .tiff), "
    "numpy arrays (T, H, W), (T, H, W, 3) or (H, W), and iterables of 2-D arrays"
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, RGB order


class SourceError(ValueError):
    """A frame source that cannot be read: corrupt, truncated or empty, unsupported, bad data.

    The message names the file (or ``"<array>"``, ``"<iterator>"``) and the problem.
    """


@dataclass(frozen=True)
class Frame:
    """One frame of a source.

    Attributes
    ----------
    index : int
        0-based index of the frame in the source.
    time_s : float
        Seconds from the first frame: from the container's timestamps for videos,
        ``index / fps`` for other sources when the frame rate is known, NaN otherwise.
    image : (H, W) ndarray of float32 in [0, 1]
        A fresh array owned by the caller.
    """

    index: int
    time_s: float
    image: np.ndarray


def _positive(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number or None, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def _count(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _natural_key(path: Path):
    """Sort key in which embedded numbers compare as numbers: frame2 < frame10."""
    # re.split with a group alternates text and digits, so the types line up position by position.
    parts = re.split(r"(\d+)", str(path).casefold())  # the whole path: a glob may span folders
    return [int(part) if i % 2 else part for i, part in enumerate(parts)], str(path)


class _Gray:
    """Turns the raw frames of one source into (H, W) float32 in [0, 1] (rule: module docstring)."""

    def __init__(self, name: str, *, bits: int | None = None):
        self.name, self.bits = name, bits
        self.mapping: tuple[float, float] | None = None  # (low, span) of float data, from the first frame

    def __call__(self, raw, index: int, *, bits: int | None = None, bgr: bool = False) -> np.ndarray:
        raw = np.asarray(raw)
        if raw.dtype.kind not in "biuf":
            raise SourceError(f"{self.name}: frame {index} has dtype {raw.dtype}; allowed: bool, integer or float")
        if raw.ndim == 3 and raw.shape[2] in (1, 2):  # gray, or gray + alpha
            raw = raw[..., 0]
        if raw.ndim == 3 and raw.shape[2] in (3, 4):
            rgb = raw[..., 2::-1] if bgr else raw[..., :3]
            gray = rgb.astype(np.float32) @ _LUMA  # a new array: the input is never touched
        elif raw.ndim == 2:
            gray = None
        else:
            raise SourceError(
                f"{self.name}: frame {index} has shape {raw.shape}; allowed: (H, W) gray or (H, W, 3|4) colour"
            )
        if 0 in raw.shape[:2]:
            raise SourceError(f"{self.name}: frame {index} is empty, shape {raw.shape}")
        kind, size = raw.dtype.kind, raw.dtype.itemsize
        if kind == "b":
            return raw.astype(np.float32) if gray is None else gray
        if kind == "u" and size <= 2:
            bits = bits or self.bits
            top = 2 ** (bits if bits and 0 < bits <= 8 * size else 8 * size) - 1
            out = raw.astype(np.float32) if gray is None else gray
            out /= np.float32(top)
            return np.minimum(out, 1.0, out=out)
        values = raw.astype(np.float64) if gray is None else gray.astype(np.float64)
        if kind == "f" and not np.isfinite(values).all():
            raise SourceError(f"{self.name}: frame {index} holds NaN or infinite values")
        if self.mapping is None:
            low, high = float(values.min()), float(values.max())
            if low >= 0.0 and high <= 1.0:
                self.mapping = (0.0, 1.0)
            else:
                self.mapping = (low, (high - low) or 1.0)  # a constant frame maps to 0
        low, span = self.mapping
        values -= low
        values /= span
        return np.clip(values, 0.0, 1.0).astype(np.float32)


class FrameSource:
    """A stream of gray frames from one input; open it with :func:`open_source`.

    Attributes
    ----------
    name : str
        The file, folder or pattern, or ``"<array>"`` / ``"<iterator>"``.
    kind : str
        ``"video"``, ``"tiff"``, ``"images"``, ``"array"`` or ``"iterator"``.
    fps : float or None
        Frames per second: the ``fps`` argument, else the video stream's average rate
        or the TIFF's ImageJ frame interval; None when unknown.
    n_frames : int or None
        Number of frames: exact for TIFF stacks, images and arrays; for videos the
        container's frame count, or duration * rate when it has none
        (``metadata["frames_exact"]`` says which); None when unknown (iterators).
    shape : (int, int)
        ``(H, W)`` of every frame, in pixels.
    pixel_size_nm : float or None
        nm per pixel: the ``pixel_size_nm`` argument, else the file's calibration
        (``metadata["pixel_size_source"]`` says where it came from).
    metadata : dict
        JSON-able facts about the input (format, codec, bit depth, dtype, ...).

    A source is a context manager; :meth:`close` releases its files.
    """

    def __init__(self, *, name, kind, fps, n_frames, shape, pixel_size_nm, metadata):
        self.name, self.kind, self.fps, self.n_frames = name, kind, fps, n_frames
        self.shape, self.pixel_size_nm, self.metadata = shape, pixel_size_nm, metadata
        self._closed = False

    def frames(self, *, start: int = 0, end: int | None = None, every: int = 1) -> Iterator[Frame]:
        """Yield the frames ``start <= index < end``, every ``every``-th one.

        Parameters
        ----------
        start : int
            First frame index (>= 0). For videos the decoder seeks to the keyframe
            before ``start`` and decodes forward, so the frames and pixels are those a
            full pass gives from ``start`` on.
        end : int, optional
            Stop before this index (>= ``start``); the end of the source by default.
        every : int
            Yield indices ``start, start + every, ...`` (>= 1). Videos still decode
            the frames in between (they depend on each other) but convert only these.

        Yields
        ------
        Frame
            One at a time, in index order.

        Raises
        ------
        ValueError, TypeError
            At the call: a bad argument, or the source is closed.
        SourceError
            At the call, when a one-pass iterator is read a second time. While
            iterating: a frame cannot be decoded or holds bad data (the message names
            the frame index reached), or a video ends short of the frame count its
            container declares.
        """
        start = _count(start, "start", minimum=0)
        every = _count(every, "every", minimum=1)
        if end is not None:
            end = _count(end, "end", minimum=start)
        self._check_open()
        return self._frames(start, end, every)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        """Release the files held open; later reads raise :class:`ValueError`."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.kind} {self.name!r} shape={self.shape} "
            f"n_frames={self.n_frames} fps={self.fps}>"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"frame source {self.name} is closed")

    def _time(self, index: int) -> float:
        return index / self.fps if self.fps else math.nan

    def _frames(self, start: int, end: int | None, every: int) -> Iterator[Frame]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class _StackSource(FrameSource):
    """A source with random access to frame ``i`` (TIFF, images, arrays)."""

    def _read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _frames(self, start, end, every):
        stop = self.n_frames if end is None else min(end, self.n_frames)
        for index in range(start, stop, every):
            self._check_open()
            image = self._read(index)
            if image.shape != self.shape:
                raise SourceError(f"{self._where(index)}: frame {index} has shape {image.shape}, frame 0 {self.shape}")
            yield Frame(index, self._time(index), image)

    def _where(self, index: int) -> str:
        return self.name

