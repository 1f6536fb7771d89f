"""Frame sources: every input the main job reads, as one stream of gray frames.

:func:`open_source` takes a video file (anything FFmpeg decodes, through PyAV), a TIFF
stack, a folder or glob pattern of images, a numpy array or any iterable of 2-D arrays
(a live camera), and returns a :class:`FrameSource` whose :meth:`FrameSource.frames`
yields :class:`Frame` objects: ``(H, W)`` float32 images in ``[0, 1]`` with their
0-based index and time in seconds. Frames stream: memory does not grow with the
length of the input, and ``frames(start=k)`` gives exactly the frames a full pass
gives from ``k`` on, so an interrupted run can resume.

Conversion to gray float32 in [0, 1] (the same rule for every kind of source):

- colour ``(H, W, 3)`` or ``(H, W, 4)`` becomes luma ``0.299 R + 0.587 G + 0.114 B``
  (ITU-R BT.601, as OpenCV and FFmpeg; alpha is dropped). Arrays, iterables and TIFF
  files are taken as RGB, images read with OpenCV (png, jpg, bmp) as BGR; videos are
  decoded straight to FFmpeg's ``gray`` (or ``gray16le`` when the stream has more than
  8 bits per sample), which is the luma plane expanded to full range;
- ``uint8`` and ``uint16`` are divided by ``2**bits - 1``, where ``bits`` is the
  source's declared bit depth (TIFF ``BitsPerSample``, e.g. 12 for packed 12-bit data)
  and otherwise the dtype's own (255, 65535); values above are clipped to 1;
- ``bool`` becomes 0 or 1;
- float data (and signed or wider integers) are used as they are when the first frame
  lies within [0, 1]; otherwise they are mapped linearly by the ``(min, max)`` of the
  source's first frame, fixed for the whole source so that brightness changes over
  time are kept (later values outside that range are clipped). NaN or infinite values
  raise :class:`SourceError`.

The first frame is read when the source is opened (it gives the shape, fixes the float
mapping and proves the file decodes). PyAV and tifffile are imported only when a source
of theirs is opened; OpenCV only when image files are read.
"""

from __future__ import annotations

import glob
import math
import os
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = ["Frame", "FrameSource", "SourceError", "open_source"]

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".wmv", ".asf", ".flv", ".ogv", ".gif", ".mj2", ".mxf", ".3gp", ".dv", ".vob", ".nut",
    ".ivf", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc",
)  # fmt: skip
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_GATAN_SUFFIXES = (".dm3", ".dm4")
SUPPORTED = (
    "video files FFmpeg decodes (.mp4, .avi, .mkv, .mov, ...), TIFF stacks (.tif, .tiff), "
    "image files, folders of images or glob patterns (.png, .jpg, .jpeg, .bmp, .tif, .tiff), "
    "numpy arrays (T, H, W), (T, H, W, 3) or (H, W), and iterables of 2-D arrays"
)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, RGB order
# Pixel sizes outside this window (nm/px) in a TIFF resolution tag are screen or print
# defaults (72 dpi = 352778 nm/px), not a microscope's calibration.
_PLAUSIBLE_NM = (1e-3, 1e4)
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0, "nanometres": 1.0,
    "um": 1e3, "\u00b5m": 1e3, "\u03bcm": 1e3, "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3,
    "micrometer": 1e3, "micrometers": 1e3, "micrometre": 1e3, "micrometres": 1e3,
    "pm": 1e-3, "\u00e5": 0.1, "\\u00e5": 0.1, "angstrom": 0.1, "angstroms": 0.1, "mm": 1e6,
}  # fmt: skip
_NM_PER_RESOLUTION_UNIT = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}  # inch, cm, and tifffile's mm, um
# A full pass may end this many frames short of a declared count without being called
# truncated: edit lists legitimately hide a frame or two that the sample table counts.
_DECLARED_SLACK = 2
# How far before the wanted frame (s) successive seeks aim when one lands too late.
_SEEK_BACK_S = (0, 2, 10, 60)


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


# --- arrays and iterables ------------------------------------------------------------


def _check_dtype(dtype, name: str) -> None:
    if np.dtype(dtype).kind not in "biuf":
        raise TypeError(f"{name} has dtype {dtype}; allowed: bool, integer or float")


class _ArraySource(_StackSource):
    def __init__(self, array: np.ndarray, *, fps, pixel_size_nm):
        _check_dtype(array.dtype, "the array source")
        if array.ndim == 2:
            stack = array[None]
        elif array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3, 4)):
            stack = array
        else:
            raise SourceError(
                f"<array>: shape {array.shape} is not a frame stack; allowed: (T, H, W), (T, H, W, 3|4) or (H, W)"
            )
        if len(stack) == 0:
            raise SourceError(f"<array> contains no frames (shape {array.shape})")
        self._stack, self._gray = stack, _Gray("<array>")  # a view: the caller's array is only read
        first = self._gray(stack[0], 0)
        super().__init__(
            name="<array>",
            kind="array",
            fps=fps,
            n_frames=len(stack),
            shape=first.shape,
            pixel_size_nm=pixel_size_nm,
            metadata={
                "format": "array",
                "dtype": str(array.dtype),
                "array_shape": list(array.shape),
                "pixel_size_source": "argument" if pixel_size_nm else None,
            },
        )

    def _read(self, index):
        return self._gray(self._stack[index], index)

    def _close(self):
        self._stack = None


class _IterableSource(FrameSource):
    """A live stream (an iterator, read once) or a re-iterable collection of frames."""

    def __init__(self, iterable, *, fps, pixel_size_nm):
        # An iterator returns itself from iter(): it can be read once, from where it is.
        iterator = iter(iterable)
        self._once = iterator is iterable
        self._iterable = None if self._once else iterable
        self._iterator = iterator if self._once else None  # a collection is re-read on each pass
        self._gray = _Gray("<iterator>")
        try:
            raw = next(iterator)
        except StopIteration:
            raise SourceError("<iterator> contains no frames") from None
        if isinstance(raw, (str, bytes)) or np.asarray(raw).dtype.kind not in "biuf":
            raise TypeError(f"<iterator> must yield 2-D (or colour 3-D) numeric arrays, got {type(raw).__name__}")
        # Converted now (a copy): a camera may refill the same buffer for its next frame.
        self._first = self._gray(raw, 0)
        self._started = False
        shape = self._first.shape
        n_frames = None
        if not self._once:
            self._first = None  # each pass reads the collection from its start
            n_frames = len(iterable) if hasattr(iterable, "__len__") else None
        super().__init__(
            name="<iterator>",
            kind="iterator",
            fps=fps,
            n_frames=n_frames,
            shape=shape,
            pixel_size_nm=pixel_size_nm,
            metadata={
                "format": "iterator",
                "dtype": str(np.asarray(raw).dtype),
                "reiterable": not self._once,
                "pixel_size_source": "argument" if pixel_size_nm else None,
            },
        )

    def _frames(self, start, end, every):
        if not self._once:
            return self._iterate(None, iter(self._iterable), start, end, every)
        if self._started:
            raise SourceError("<iterator> is a one-pass iterator and has already been read; open it again")
        self._started = True
        first, self._first = self._first, None  # held only until its pass starts
        return self._iterate(first, self._iterator, start, end, every)

    def _iterate(self, image, rest, start, end, every):
        """Frames of one pass; ``image`` is frame 0 already converted, or None to read it from ``rest``."""
        index = 0
        while end is None or index < end:
            self._check_open()
            wanted = index >= start and (index - start) % every == 0
            if image is None:
                try:
                    raw = next(rest)
                except StopIteration:
                    return
                # Frames that are not wanted are read (the stream moves on) but not converted.
                image = self._gray(raw, index) if wanted else None
            if wanted:
                if image.shape != self.shape:
                    raise SourceError(f"<iterator>: frame {index} has shape {image.shape}, frame 0 {self.shape}")
                yield Frame(index, self._time(index), image)
            image = None
            index += 1

    def _close(self):
        self._iterator = self._iterable = None


# --- images ---------------------------------------------------------------------------


def _read_tiff_image(path: Path) -> tuple[np.ndarray, int | None]:
    """One image from a TIFF file of a sequence, with its BitsPerSample."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            frames = _tiff_layout(series, str(path))[0]
            if frames != 1:
                raise SourceError(
                    f"{path} holds {frames} frames, but files in an image sequence must hold one; open it on its own"
                )
            image = series.asarray()
            bits = int(series.keyframe.bitspersample)
    except (SourceError, FileNotFoundError):
        raise
    except Exception as err:
        raise SourceError(f"{path} cannot be read as a TIFF image (corrupt or unsupported): {err}") from err
    return _frames_last(image, series.axes)[0], bits


def _read_image(path: Path) -> tuple[np.ndarray, int | None, bool]:
    """``(raw image, bit depth or None, is BGR)`` of one image file."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        return (*_read_tiff_image(path), False)
    import cv2

    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    # fromfile + imdecode, not imread: imread cannot open non-ASCII paths on Windows.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise SourceError(f"{path} cannot be decoded as an image (corrupt, empty or not {path.suffix})")
    return image, None, True


class _ImageSource(_StackSource):
    def __init__(self, files: list[Path], name: str, *, fps, pixel_size_nm):
        self._files, self._gray = files, _Gray(name)
        raw, bits, bgr = _read_image(files[0])
        first = self._gray(raw, 0, bits=bits, bgr=bgr)
        size_nm, size_source = None, None
        if files[0].suffix.lower() in TIFF_SUFFIXES:
            size_nm, size_source, _ = _tiff_calibration(files[0])
        super().__init__(
            name=name,
            kind="images",
            fps=fps,
            n_frames=len(files),
            shape=first.shape,
            pixel_size_nm=pixel_size_nm or size_nm,
            metadata={
                "format": "images",
                "files": len(files),
                "first_file": files[0].name,
                "last_file": files[-1].name,
                "dtype": str(raw.dtype),
                "bit_depth": bits or 8 * raw.dtype.itemsize,
                "channels": 1 if raw.ndim == 2 else int(raw.shape[2]),
                "pixel_size_source": "argument" if pixel_size_nm else size_source,
            },
        )

    def _read(self, index):
        raw, bits, bgr = _read_image(self._files[index])
        return self._gray(raw, index, bits=bits, bgr=bgr)

    def _where(self, index):
        return str(self._files[index])


def _image_files(paths: Iterable[Path]) -> list[Path]:
    files = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=_natural_key)


# --- TIFF stacks ------------------------------------------------------------------------


def _tiff_layout(series, name: str) -> tuple[int, tuple[int, ...]]:
    """``(number of frames, raw frame shape)`` of a TIFF series; leading axes are time."""
    axes, shape = series.axes, tuple(series.shape)
    inner = "YXS" if axes.endswith("YXS") else "SYX" if axes.endswith("SYX") and shape[-3] in (3, 4) else "YX"
    if not axes.endswith(inner):
        raise SourceError(f"{name}: TIFF axes {axes!r} shape {shape} do not end in image axes YX or YXS")
    leading = shape[: len(shape) - len(inner)]
    if sum(n > 1 for n in leading) > 1:
        raise SourceError(
            f"{name}: TIFF axes {axes!r} shape {shape} hold more than one of time, depth or channels; "
            "allowed: one frame axis before YX (e.g. TYX); export a single time series"
        )
    return math.prod(leading), shape[len(leading):]


def _frames_last(frames: np.ndarray, axes: str) -> np.ndarray:
    """``frames`` as ``(T, H, W[, S])``: leading axes flattened, planar samples moved last."""
    if axes.endswith("SYX") and not axes.endswith("YXS"):
        frames = np.moveaxis(frames, -3, -1)
    lead = frames.ndim - (3 if axes.endswith(("YXS", "SYX")) else 2)
    return frames.reshape((-1, *frames.shape[lead:]))


def _tiff_calibration(path) -> tuple[float | None, str | None, float | None]:
    """``(pixel size nm or None, where it came from, fps or None)`` of a TIFF file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return _calibration(tif)
    except Exception:  # a calibration that cannot be parsed is no calibration
        return None, None, None


def _calibration(tif) -> tuple[float | None, str | None, float | None]:
    page = tif.pages.first
    tag = page.tags.get("XResolution")
    per_unit = None
    if tag is not None:
        numerator, denominator = tag.value
        per_unit = numerator / denominator if numerator and denominator else None  # pixels per unit
    imagej = tif.imagej_metadata or {}
    fps = None
    interval = imagej.get("finterval")
    if isinstance(interval, (int, float)) and interval > 0 and math.isfinite(interval):
        fps = 1.0 / interval
    elif isinstance(imagej.get("fps"), (int, float)) and imagej["fps"] > 0:
        fps = float(imagej["fps"])
    if not per_unit:
        return None, None, fps
    unit = str(imagej.get("unit", "")).strip().casefold()
    if unit in _NM_PER_UNIT:
        return _NM_PER_UNIT[unit] / per_unit, "imagej", fps
    try:
        resolution_unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2
    except (TypeError, ValueError):
        resolution_unit = 1
    if resolution_unit in _NM_PER_RESOLUTION_UNIT:
        size = _NM_PER_RESOLUTION_UNIT[resolution_unit] / per_unit
        if _PLAUSIBLE_NM[0] <= size <= _PLAUSIBLE_NM[1]:
            return size, "resolution_tag", fps
    return None, None, fps


class _TiffSource(_StackSource):
    def __init__(self, path: Path, *, fps, pixel_size_nm):
        import tifffile

        self.name = name = str(path)
        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as err:
            raise SourceError(f"{name} cannot be read as TIFF (corrupt, truncated or not a TIFF): {err}") from err
        try:
            series = self._tif.series[0] if self._tif.series else None
            if series is None or series.size == 0:
                raise SourceError(f"{name} contains no frames")
            n_frames, frame_shape = _tiff_layout(series, name)
            self._axes = series.axes
            if series.dtype.kind not in "biuf":
                raise SourceError(f"{name}: TIFF data of dtype {series.dtype}; allowed: bool, integer or float")
            self._frames_data, access = None, "pages"
            try:
                # Uncompressed contiguous data: the OS pages frames in on demand.
                data = tifffile.memmap(path, series=0, mode="r")
                self._frames_data, access = _frames_last(data, series.axes), "memmap"
            except Exception:
                pages = series.pages
                if len(pages) != n_frames or pages[0] is None or tuple(pages[0].shape) != frame_shape:
                    # A layout that is neither contiguous nor one page per frame (rare,
                    # e.g. tiled volumes): read whole, the only way tifffile offers.
                    self._frames_data, access = _frames_last(series.asarray(), series.axes), "memory"
            self._pages = series.pages if access == "pages" else None
            bits = int(series.keyframe.bitspersample)
            self._gray = _Gray(name, bits=bits)
            try:
                size_nm, size_source, file_fps = _calibration(self._tif)
            except Exception:  # a calibration that cannot be parsed is no calibration
                size_nm, size_source, file_fps = None, None, None
            first = self._read(0)
            compression = getattr(series.keyframe, "compression", None)
            super().__init__(
                name=name,
                kind="tiff",
                fps=fps or file_fps,
                n_frames=n_frames,
                shape=first.shape,
                pixel_size_nm=pixel_size_nm or size_nm,
                metadata={
                    "format": "tiff",
                    "axes": series.axes,
                    "tiff_shape": [int(n) for n in series.shape],
                    "dtype": str(series.dtype),
                    "bit_depth": bits,
                    "imagej": bool(self._tif.is_imagej),
                    "compression": getattr(compression, "name", str(compression)),
                    "access": access,
                    "fps_source": "argument" if fps else "imagej" if file_fps else None,
                    "pixel_size_source": "argument" if pixel_size_nm else size_source,
                },
            )
        except BaseException as err:
            self._tif.close()
            if isinstance(err, SourceError) or not isinstance(err, Exception):
                raise
            raise SourceError(f"{name} cannot be read as a TIFF stack: {err}") from err

    def _read(self, index):
        if self._frames_data is not None:
            raw = self._frames_data[index]
        else:
            try:
                raw = self._pages[index].asarray()
            except Exception as err:
                raise SourceError(f"{self.name}: frame {index} cannot be read (corrupt or truncated): {err}") from err
            if self._axes.endswith("SYX") and not self._axes.endswith("YXS"):
                raw = np.moveaxis(raw, 0, -1)
        return self._gray(raw, index)

    def _close(self):
        self._frames_data = self._pages = None
        self._tif.close()


# --- videos -----------------------------------------------------------------------------


class _SeekMissed(Exception):
    """A seek that did not land at or before the wanted frame."""


def _video_error(path: Path, err: Exception, *, known: bool) -> SourceError:
    if not known:
        return SourceError(f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; supported: {SUPPORTED}")
    return SourceError(f"{path} cannot be decoded: the video is truncated or corrupt ({err})")


class _VideoSource(FrameSource):
    """A video decoded by PyAV; frame indices come from the timestamps.

    Frame ``i`` is the frame whose presentation time is nearest ``i / rate`` after the
    first frame, ``rate`` being the stream's average frame rate: the index of a frame
    does not depend on where decoding started, which is what makes seeking exact. In a
    variable-rate stream a frame falling in the slot of the one before is dropped (with
    a warning, as FFmpeg's constant-rate output does); a stream without a rate or
    timestamps is counted frame by frame and read from its start on every pass.
    """

    def __init__(self, path: Path, *, fps, pixel_size_nm):
        import av

        self._path, self._live = path, set()
        known = path.suffix.lower() in VIDEO_SUFFIXES
        try:
            container = av.open(str(path))
        except av.FFmpegError as err:
            if isinstance(err, av.error.EOFError) and known:
                raise SourceError(f"{path} contains no frames (it ends before its first frame)") from err
            raise _video_error(path, err, known=known) from err
        try:
            # FFmpeg's "tty" demuxer shows text files as ANSI-art video: never what was meant.
            if container.format.name == "tty":
                raise SourceError(f"{path}: unsupported format {path.suffix!r}; supported: {SUPPORTED}")
            if not container.streams.video:
                if not known:
                    raise SourceError(f"{path}: unsupported format {path.suffix!r}; supported: {SUPPORTED}")
                raise SourceError(
                    f"{path} contains no frames: it has no video stream "
                    "(an empty recording, or a truncated or corrupt file)"
                )
            stream = container.streams.video[0]
            rate = next((r for r in (stream.average_rate, stream.guessed_rate) if r and r > 0), None)
            self._rate = Fraction(rate) if rate else None
            self._time_base = Fraction(stream.time_base) if stream.time_base else None
            pix_fmt = stream.codec_context.pix_fmt
            try:
                bits = max(c.bits for c in av.VideoFormat(pix_fmt).components) if pix_fmt else 8
            except (ValueError, TypeError):
                bits = 8
            self._format = "gray16le" if bits > 8 else "gray"
            self._scale = np.float32(65535.0 if bits > 8 else 255.0)
            try:
                first = next(iter(container.decode(stream)), None)
            except av.FFmpegError as err:
                raise SourceError(f"{path} cannot be decoded: the video is truncated or corrupt ({err})") from err
            if first is None:
                raise SourceError(f"{path} contains no frames")
            self._pts0 = first.pts if first.pts is not None and self._time_base else None
            declared = int(stream.frames or 0)
            if declared > 0:
                n_frames, exact = declared, True
            else:
                duration = None
                if stream.duration and self._time_base:
                    duration = float(stream.duration * self._time_base)
                elif container.duration:
                    duration = container.duration / 1e6  # AV_TIME_BASE
                n_frames = round(duration * float(self._rate)) if duration and self._rate else None
                exact = False
            self._declared = declared
            codec = stream.codec_context
            metadata = {
                "format": container.format.name,
                "codec": codec.name,
                "pix_fmt": pix_fmt,
                "bit_depth": int(bits),
                "stream_rate": float(self._rate) if self._rate else None,
                "time_base": str(self._time_base) if self._time_base else None,
                "start_time_s": float(self._pts0 * self._time_base) if self._pts0 is not None else None,
                "frames_declared": declared or None,
                "frames_exact": exact,
                "fps_source": "argument" if fps else "stream" if self._rate else None,
                "pixel_size_source": "argument" if pixel_size_nm else None,
            }
        finally:
            container.close()
        self._fps_given = fps is not None
        super().__init__(
            name=str(path),
            kind="video",
            fps=fps if fps is not None else (float(self._rate) if self._rate else None),
            n_frames=n_frames,
            shape=(int(first.height), int(first.width)),
            pixel_size_nm=pixel_size_nm,
            metadata=metadata,
        )

    def _open(self):
        import av

        try:
            container = av.open(str(self._path))
        except FileNotFoundError:
            raise FileNotFoundError(f"video file {self._path} not found (it was removed after opening)") from None
        except av.FFmpegError as err:
            raise _video_error(self._path, err, known=True) from err
        self._live.add(container)
        return container

    def _locate(self, frame, previous: int | None) -> tuple[int, float] | None:
        """``(index, time_s)`` of a decoded frame, or None when it falls in an earlier slot."""
        offset = None
        if self._pts0 is not None and frame.pts is not None:
            offset = (frame.pts - self._pts0) * self._time_base  # exact Fraction seconds
        if offset is not None and self._rate is not None:
            # Round half up in exact arithmetic: float error must not move a frame at x.5.
            index = math.floor(offset * self._rate + Fraction(1, 2))
        else:
            index = 0 if previous is None else previous + 1
        if index < 0 or (previous is not None and index <= previous):
            return None
        if self._fps_given or offset is None:
            return index, self._time(index)
        return index, float(offset)

    def _frames(self, start, end, every):
        if start > 0 and self._rate is not None and self._pts0 is not None:
            # Seek half a frame early, so rounding of the stored timestamps cannot put
            # frame `start` before the target; when the seek lands past `start` or finds
            # no frame (some demuxers, e.g. MPEG-TS, land on the keyframe *after* the
            # target) retry further back. Nothing has been yielded when a seek misses.
            for back_s in _SEEK_BACK_S:
                seconds = (Fraction(start) - Fraction(1, 2)) / self._rate - back_s
                if seconds <= 0:
                    break
                try:
                    yield from self._pass(start, end, every, seek_s=seconds)
                    return
                except _SeekMissed:
                    continue
        yield from self._pass(start, end, every, seek_s=None)

    def _pass(self, start, end, every, *, seek_s: Fraction | None) -> Iterator[Frame]:
        """One decoding pass from the keyframe before ``seek_s`` seconds, or from the start."""
        import av

        seek = seek_s is not None
        container = self._open()
        try:
            stream = container.streams.video[0]
            # Slice threads only: with frame threads (PyAV "FRAME"/"AUTO") a packet that fails
            # to decode ends the stream silently instead of raising, hiding truncation.
            stream.thread_type = "SLICE"
            if seek:
                try:
                    target = math.floor(self._pts0 + seek_s / self._time_base)
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                except av.FFmpegError as err:
                    raise _SeekMissed from err
            decoded = container.decode(stream)
            previous, dropped = None, 0
            while True:
                self._check_open()
                try:
                    frame = next(decoded)
                except StopIteration:
                    if seek and previous is None:
                        raise _SeekMissed from None  # e.g. MPEG-TS seeks near the end find nothing
                    break
                except av.FFmpegError as err:
                    reached = "before its first frame" if previous is None else f"after frame {previous}"
                    raise SourceError(
                        f"{self.name}: decoding failed {reached}; the video is truncated or corrupt ({err})"
                    ) from err
                located = self._locate(frame, previous)
                if seek and previous is None and (frame.pts is None or (located and located[0] > start)):
                    raise _SeekMissed
                if located is None:
                    dropped += previous is not None  # frames before the first one are seek leftovers
                    continue
                index, time_s = located
                previous = index
                if end is not None and index >= end:
                    return
                if index < start or (index - start) % every:
                    continue
                image = frame.to_ndarray(format=self._format).astype(np.float32)
                image /= self._scale
                yield Frame(index, time_s, image)
        finally:
            container.close()
            self._live.discard(container)
        if dropped:
            warnings.warn(
                f"{self.name}: {dropped} frame(s) fell in the time slot of an earlier frame "
                "(variable frame rate?) and were skipped",
                RuntimeWarning,
                stacklevel=3,
            )
        if self._declared and previous is not None and previous + 1 < self._declared - _DECLARED_SLACK:
            raise SourceError(
                f"{self.name}: the video ends after frame {previous} but its container declares "
                f"{self._declared} frames; the file is truncated or corrupt"
            )

    def _close(self):
        for container in list(self._live):
            container.close()
        self._live.clear()


# --- the entry point ----------------------------------------------------------------------


def _is_pattern(text: str) -> bool:
    return any(char in text for char in "*?[")


def open_source(source, *, fps: float | None = None, pixel_size_nm: float | None = None) -> FrameSource:
    """Open frames from a video, TIFF stack, images, array or iterable.

    Parameters
    ----------
    source : path, str, ndarray or iterable
        - a video file FFmpeg decodes (.mp4, .avi, .mkv, .mov, ...), read through PyAV;
        - a TIFF stack or multi-page TIFF (.tif, .tiff): ``(T, H, W)``, ``(H, W)`` or
          colour ``(T, H, W, 3|4)``, read page by page or memory-mapped;
        - a folder of images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in natural order
          (``frame2`` before ``frame10``), or one image file;
        - a glob pattern (a string with ``*``, ``?`` or ``[`` that is not an existing path);
        - an ndarray ``(T, H, W)``, ``(T, H, W, 3|4)`` (RGB) or a single ``(H, W)``; a
          3-D array is always ``(T, H, W)``: pass one colour image as ``image[None]``;
        - any iterable of ``(H, W)`` or ``(H, W, 3|4)`` arrays. An iterator (a live
          camera, a generator) is read once, from where it is; its first frame is read
          now and yielded first. A collection (a list) is read anew on every pass.
    fps : float, optional
        Frames per second (> 0); overrides the file's rate. For videos the frame
        indices still come from the stream's own rate; ``time_s`` becomes ``index / fps``.
    pixel_size_nm : float, optional
        nm per pixel (> 0); overrides the file's calibration (TIFF ImageJ ``unit`` and
        ``XResolution``, or ``XResolution`` with ``ResolutionUnit`` inch or cm when it
        gives 0.001-10000 nm/px).

    Returns
    -------
    FrameSource
        Use it as a context manager; its first frame has been read.

    Raises
    ------
    FileNotFoundError
        ``source`` is a path that does not exist, or a pattern that matches nothing.
    SourceError
        The input cannot be read: corrupt, truncated, empty ("contains no frames"),
        unsupported format (the message lists what is supported) or a bad array shape.
    TypeError
        ``source`` is of no supported type, or an array of a non-numeric dtype.

    Examples
    --------
    >>> import numpy as np
    >>> with open_source(np.zeros((3, 4, 5), np.uint8), fps=10.0) as source:
    ...     [(f.index, f.time_s, f.image.shape) for f in source.frames(start=1)]
    [(1, 0.1, (4, 5)), (2, 0.2, (4, 5))]
    """
    fps = _positive(fps, "fps")
    pixel_size_nm = _positive(pixel_size_nm, "pixel_size_nm")
    options = {"fps": fps, "pixel_size_nm": pixel_size_nm}
    if isinstance(source, np.ndarray):
        return _ArraySource(source, **options)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source, **options)
    if isinstance(source, (bytes, bytearray)) or not hasattr(source, "__iter__"):
        raise TypeError(
            f"source must be a path, a glob pattern, an ndarray or an iterable of arrays, got {type(source).__name__}"
        )
    return _IterableSource(source, **options)


def _open_path(source, *, fps, pixel_size_nm) -> FrameSource:
    options = {"fps": fps, "pixel_size_nm": pixel_size_nm}
    text = os.fspath(source)
    if isinstance(text, bytes) or not text:
        raise TypeError(f"source path must be a non-empty str or os.PathLike of str, got {source!r}")
    path = Path(text)
    if not path.exists():
        if _is_pattern(text):
            matches = [Path(p) for p in glob.glob(text)]
            if not matches:
                raise FileNotFoundError(f"no files match the pattern {text!r}")
            files = _image_files(matches)
            if not files:
                raise SourceError(
                    f"{text} contains no frames: none of its {len(matches)} match(es) is an image "
                    f"({', '.join(IMAGE_SUFFIXES)})"
                )
            return _ImageSource(files, text, **options)
        raise FileNotFoundError(f"frame source {text} not found")
    if path.is_dir():
        files = _image_files(path.iterdir())
        if not files:
            raise SourceError(f"{path} contains no frames: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return _ImageSource(files, str(path), **options)
    suffix = path.suffix.lower()
    if suffix in _GATAN_SUFFIXES:
        raise SourceError(
            f"{path}: Gatan {suffix} files are not supported yet; export the stack as TIFF "
            f"(e.g. from DigitalMicrograph or with RosettaSciIO). Supported: {SUPPORTED}"
        )
    if suffix in TIFF_SUFFIXES:
        return _TiffSource(path, **options)
    if suffix in IMAGE_SUFFIXES:
        return _ImageSource([path], str(path), **options)
    return _VideoSource(path, **options)
