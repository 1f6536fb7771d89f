"""What every frame source shares: :class:`Frame`, :class:`FrameSource`, the gray conversion.

:class:`FrameSource` is the stream the main job reads; :class:`_Gray` applies the one
conversion rule of :mod:`temtrack.sdk.sources`: colour to BT.601 luma, then one input
range ``(low, high)`` fixed for the whole source when it opens, from the ``input_range``
argument, the dtype, the declared bit depth, or the data of up to 16 frames sampled
over the whole source (only the first for an iterator); the package docstring states
the rule in full. :class:`FrameSource` notes the constant frames it yields.
``_StackSource`` is the base of the sources with random access (arrays, images, TIFF).
The suffix tables say which reader a path goes to. numpy only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "SUPPORTED",
    "TIFF_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameSource",
    "SourceError",
    "parse_input_range",
]

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".wmv", ".asf", ".flv", ".ogv", ".gif", ".mj2", ".mxf", ".3gp", ".dv", ".vob", ".nut",
    ".ivf", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc",
)  # fmt: skip
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORTED = (
    "video files FFmpeg decodes (.mp4, .avi, .mkv, .mov, ...), TIFF stacks (.tif, .tiff), "
    "microscope files (Gatan .dm3/.dm4 and folder trees of them, Velox .emd, FEI .ser/.emi, "
    ".mrc/.mrcs/.st/.ali; the [formats] extra), "
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


# Sources with random access fix their input range from this many frames, spread evenly
# over the whole source (first and last included), read when the source is opened.
_SAMPLED_FRAMES = 16
# Bit depths of cameras whose data come stored in 16-bit words (uint16 TIFF, PNG): the
# auto rule reads uint16 data whose sampled values all lie below 2**bits as that depth.
_DATA_BITS = (10, 12, 14)
# How many constant frame indices a source keeps to report (it counts them all).
_CONSTANT_KEPT = 20
_RANGE_HELP = "; allowed: None or 'auto', 'dtype', or a (low, high) pair of finite numbers with low < high"


def _input_range(value) -> str | tuple[float, float]:
    """The validated ``input_range`` argument: ``"auto"``, ``"dtype"`` or ``(low, high)`` floats."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value in ("auto", "dtype"):
            return value
        raise ValueError(f"input_range {value!r} is not a known rule{_RANGE_HELP}")
    if isinstance(value, (bytes, bytearray, dict)) or not hasattr(value, "__len__") or len(value) != 2:
        got = f"{type(value).__name__} {value!r}"
        raise ValueError(f"input_range must be a (low, high) pair or a rule, got {got}{_RANGE_HELP}")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)):
            raise ValueError(f"input_range bounds must be numbers, got {type(bound).__name__} {bound!r}{_RANGE_HELP}")
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        got = f"({low!r}, {high!r})"
        raise ValueError(f"input_range (low, high) must be finite with low < high, got {got}{_RANGE_HELP}")
    return low, high


def parse_input_range(text: str) -> str | tuple[float, float]:
    """An input range as written on a command line: ``auto``, ``dtype`` or ``LOW,HIGH``.

    Parameters
    ----------
    text : str
        ``"auto"``, ``"dtype"`` (either case) or two numbers separated by a comma.

    Returns
    -------
    str or (float, float)
        What ``open_source(..., input_range=)`` takes.

    Raises
    ------
    ValueError
        Anything else; the message says what is allowed.

    Examples
    --------
    >>> parse_input_range("0,1023"), parse_input_range("DTYPE")
    ((0.0, 1023.0), 'dtype')
    """
    word = str(text).strip()
    if word.casefold() in ("auto", "dtype"):
        return word.casefold()
    parts = word.split(",")
    allowed = "allowed: auto, dtype, or LOW,HIGH (two finite numbers, LOW < HIGH, e.g. 0,4095)"
    if len(parts) != 2:
        raise ValueError(f"input range {text!r} is not auto, dtype or LOW,HIGH; {allowed}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"input range {text!r}: LOW and HIGH must be numbers; {allowed}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"input range {text!r}: LOW and HIGH must be finite with LOW < HIGH; {allowed}")
    return low, high


def _sample_indices(n_frames: int, count: int = _SAMPLED_FRAMES) -> list[int]:
    """Up to ``count`` frame indices spread evenly over ``0 .. n_frames - 1``, ends included."""
    count = min(n_frames, count)
    return sorted({int(i) for i in np.linspace(0, n_frames - 1, count).round()})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Gray:
    """Turns the raw frames of one source into (H, W) float32 in [0, 1] (rule: package docstring).

    :meth:`settle` fixes the input range ``(low, high)`` once for the whole source; a
    frame is then mapped by ``(v - low) / (high - low)`` and clipped to [0, 1].
    ``record`` is what ``metadata["input_range"]`` holds and ``note`` the line for the
    user when the range was a guess from the data (None otherwise).
    """

    def __init__(self, name: str, *, bits: int | None = None, input_range=None):
        self.name, self.bits = name, bits
        self.rule = _input_range(input_range)
        self.low: float | None = None  # None until settled
        self.high: float | None = None
        self.record: dict | None = None
        self.note: str | None = None

    def settle(self, first, read=None, indices=(), *, stream: bool = False, decoded: bool = False) -> None:
        """Fix the input range from the rule, the dtype and, where they decide, the data.

        Parameters
        ----------
        first : ndarray
            Raw frame 0; validated here (a bad dtype or shape raises :class:`SourceError`).
        read : callable, optional
            ``read(index) -> raw frame`` of a source with random access; it is called for
            ``indices`` only when the data decide the range. Frames that cannot be read
            are skipped here: their error comes when they are reached.
        indices : sequence of int
            The further frames to sample (frame 0 is ``first``).
        stream : bool
            Only the first frame can be seen (a one-pass iterator): the note says so.
        decoded : bool
            Integers from a decoder that fills their dtype (a video): never sampled.
        """
        dtype = np.asarray(first).dtype
        stats = [self._stats(first, 0)]  # validates frame 0, whatever the rule
        kind, size = dtype.kind, dtype.itemsize
        rule = self.rule
        if isinstance(rule, tuple):
            return self._fix(*rule, "argument", 0)
        if kind == "b":
            return self._fix(0.0, 1.0, "dtype", 0)
        if rule == "dtype" or decoded:
            if kind in "ui":
                info = np.iinfo(dtype)
                return self._fix(info.min, info.max, "dtype", 0)
            return self._fix(0.0, 1.0, "dtype", 0)
        if kind == "u" and size <= 2 and self.bits and 0 < self.bits < 8 * size:
            return self._fix(0.0, 2.0**self.bits - 1, "bit_depth", 0)
        if kind == "u" and size == 1:
            return self._fix(0.0, 255.0, "dtype", 0)
        if read is not None:
            for index in indices:
                if index == 0:
                    continue
                try:
                    stats.append(self._stats(read(index), index))
                except SourceError:
                    continue
        n = len(stats)
        where = (
            "its first frame (an iterator: later frames cannot be seen in advance)"
            if stream
            else _plural(n, "sampled frame")
        )
        if kind == "u" and size == 2:
            top = max(s[2] for s in stats)
            bits = next((b for b in _DATA_BITS if top < 2**b), None)
            if bits is None:
                return self._fix(0.0, 65535.0, "dtype", n)
            self._fix(0.0, 2.0**bits - 1, "data", n)
            self.note = (
                f"{self.name}: uint16 values all below {2**bits} in {where}: read as {bits}-bit "
                f"(0-{2**bits - 1}); set --input-range to change"
            )
            return None
        finite = [s for s in stats if math.isfinite(s[0])]
        if not finite:  # nothing but NaN or infinities: the frame's conversion says so
            return self._fix(0.0, 1.0, "dtype", n)
        low, high = min(s[0] for s in finite), max(s[1] for s in finite)
        if low >= 0.0 and high <= 1.0:
            return self._fix(0.0, 1.0, "dtype", n)
        if low == high:
            self._fix(low, low + 1.0, "data", n)  # a constant input maps to 0
            self.note = (
                f"{self.name}: {dtype} data hold the single value {low:g} in {where}: mapped to 0; "
                "set --input-range LOW,HIGH to change"
            )
            return None
        self._fix(low, high, "data", n)
        self.note = (
            f"{self.name}: {dtype} data mapped from its range over {where}, {low:g} to {high:g}"
            f"{'' if stream else ' (values outside are clipped)'}; set --input-range LOW,HIGH to change"
        )
        return None

    def _fix(self, low, high, source: str, frames_sampled: int) -> None:
        self.low, self.high = float(low), float(high)
        self.record = {"low": self.low, "high": self.high, "source": source, "frames_sampled": int(frames_sampled)}
        self.note = None

    def _values(self, raw: np.ndarray, index: int) -> np.ndarray:
        """The frame validated, as gray in the units of its data: ``raw`` itself (or a view)
        when it is gray, the luma of colour as a new float32 array."""
        if raw.dtype.kind not in "biuf":
            raise SourceError(f"{self.name}: frame {index} has dtype {raw.dtype}; allowed: bool, integer or float")
        if raw.ndim == 3 and raw.shape[2] in (1, 2):  # gray, or gray + alpha
            raw = raw[..., 0]
        if raw.ndim == 3 and raw.shape[2] in (3, 4):
            values = raw[..., :3].astype(np.float32) @ _LUMA  # a new array: the input is never touched
        elif raw.ndim == 2:
            values = raw
        else:
            raise SourceError(
                f"{self.name}: frame {index} has shape {raw.shape}; allowed: (H, W) gray or (H, W, 3|4) colour"
            )
        if 0 in raw.shape[:2]:
            raise SourceError(f"{self.name}: frame {index} is empty, shape {raw.shape}")
        return values

    def _stats(self, raw, index: int) -> tuple[float, float, float]:
        """``(min, max)`` of the frame's gray values (finite ones; NaN when there are none)
        and the largest raw sample (alpha left out), which gives the bit depth of integers."""
        raw = np.asarray(raw)
        values = self._values(raw, index)
        if raw.dtype.kind == "b":
            return 0.0, 1.0, 1.0
        samples = raw[..., :3] if raw.ndim == 3 and raw.shape[2] in (3, 4) else raw
        top = float(samples.max())
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            values = values[np.isfinite(values)]
            if values.size == 0:
                return math.nan, math.nan, top
        return float(values.min()), float(values.max()), top

    def __call__(self, raw, index: int) -> np.ndarray:
        raw = np.asarray(raw)
        values = self._values(raw, index)
        if self.low is None:  # not settled by its source: the first frame converted decides
            self.settle(raw, stream=True)
        kind, size = raw.dtype.kind, raw.dtype.itemsize
        if kind == "f" and not np.isfinite(values).all():
            raise SourceError(f"{self.name}: frame {index} holds NaN or infinite values")
        low, span = self.low, self.high - self.low
        if kind == "b" or (kind == "u" and size <= 2):
            # 8- and 16-bit data in float32: exact, and half the memory of float64. Either a
            # new array (from integers) or the luma, already new: the input is not touched.
            out = values.astype(np.float32, copy=False)
            if low:
                out -= np.float32(low)
            if span != 1.0:
                out /= np.float32(span)
            return np.clip(out, 0.0, 1.0, out=out)
        values = values.astype(np.float64)
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
        ``"video"``, ``"tiff"``, ``"images"``, ``"array"``, ``"iterator"``, or for
        microscope files ``"dm"``, ``"dm_folder"``, ``"emd"``, ``"ser"``, ``"mrc"``.
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
        JSON-able facts about the input (format, codec, bit depth, dtype, ...), among
        them ``metadata["input_range"]``: ``{"low", "high", "source", "frames_sampled"}``,
        the raw values mapped to 0 and 1, where that range came from (``"dtype"``,
        ``"bit_depth"``, ``"data"`` or ``"argument"``) and how many frames were read to
        decide it (0 when the data were not needed).
    range_note : str or None
        One line for the user when the input range was read from the data (floats,
        signed or wide integers, uint16 holding fewer bits): the input, the range used,
        why, and how to change it. None when the range is unambiguous.
    n_constant_frames : int
        How many of the frames yielded so far (each index counted once) had all pixels
        equal after conversion: a blanked camera, a missing frame written as zeros, or
        data entirely outside the input range. :attr:`constant_frames` lists the first.

    A source is a context manager; :meth:`close` releases its files.
    """

    def __init__(self, *, name, kind, fps, n_frames, shape, pixel_size_nm, metadata, range_note=None):
        self.name, self.kind, self.fps, self.n_frames = name, kind, fps, n_frames
        self.shape, self.pixel_size_nm, self.metadata = shape, pixel_size_nm, metadata
        self.range_note = range_note
        self.n_constant_frames = 0
        self._constant_seen = bytearray()  # one byte per index up to the last constant one: counted once
        self._constant_first: list[int] = []
        self._closed = False

    @property
    def constant_frames(self) -> list[int]:
        """Indices of constant frames yielded so far, ascending: the first 20 found
        (:attr:`n_constant_frames` counts them all)."""
        return sorted(self._constant_first)

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
        return self._watch(self._frames(start, end, every))

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

    def _watch(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """``frames``, noting the constant ones."""
        try:
            for frame in frames:
                image = frame.image
                first = image.flat[0]
                if image.max() == first and image.min() == first:  # one pass for most frames
                    self._note_constant(frame.index)
                yield frame
        finally:
            frames.close()

    def _note_constant(self, index: int) -> None:
        seen = self._constant_seen
        if index >= len(seen):
            seen.extend(bytes(index + 1 - len(seen)))
        if not seen[index]:
            seen[index] = 1
            self.n_constant_frames += 1
            if len(self._constant_first) < _CONSTANT_KEPT:
                self._constant_first.append(index)

    def _frames(self, start: int, end: int | None, every: int) -> Iterator[Frame]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class _StackSource(FrameSource):
    """A source with random access to frame ``i`` (TIFF, images, arrays).

    A subclass sets ``self._gray`` and reads raw frames in :meth:`_raw`; it calls
    :meth:`_first` when opened, which fixes the input range from frames sampled over the
    whole source and returns frame 0 converted.
    """

    _gray: _Gray

    def _raw(self, index: int) -> np.ndarray:
        """Raw frame ``index`` as stored (colour in RGB order)."""
        raise NotImplementedError

    def _first(self, n_frames: int) -> np.ndarray:
        raw = self._raw(0)
        self._gray.settle(raw, self._raw, _sample_indices(n_frames))
        return self._gray(raw, 0)

    def _read(self, index: int) -> np.ndarray:
        return self._gray(self._raw(index), index)

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

