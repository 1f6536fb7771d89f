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
- the gray values are then mapped by one input range ``(low, high)``, fixed for the whole
  source when it is opened (so brightness changes over time are kept): ``(v - low) /
  (high - low)``, clipped to [0, 1]. ``bool`` is always 0 or 1 (unless a range is given).
  The ``input_range`` argument chooses the range:

  - ``(low, high)``: that range, in the units of the data (for videos 0-255, or 0-65535
    when decoded to 16 bits);
  - ``"dtype"``: integers by their dtype's full range (uint8 0-255, uint16 0-65535, int16
    -32768-32767, ...; a declared bit depth is ignored), floats as they are;
  - ``"auto"`` (the default, also ``None``): uint8 by 0-255; uint16 by ``2**bits - 1``
    when the source declares a depth ``bits`` below 16 (TIFF ``BitsPerSample``, e.g. 12
    for packed 12-bit data); other uint16 by the data: when every sampled value lies
    below ``2**10``, ``2**12`` or ``2**14`` (10, 12 or 14-bit cameras stored in 16-bit
    words), by the smallest of these, else 0-65535; floats and signed or wider
    integers are used as they are when every sampled frame lies within [0, 1], else
    mapped from the ``(min, max)`` over the sampled frames (a constant input maps to 0).
    Videos are 8-bit or full-range 16-bit: 0-255 or 0-65535, never sampled.

  Sampled frames: up to 16 spread evenly over the whole source, first and last
  included, for sources with random access (arrays, lists, TIFF stacks, image files);
  only the first frame for iterators (a live camera), whose later frames cannot be
  seen in advance. Frames that cannot be read, and NaN or infinite values, are left
  out of the sample; a frame holding NaN or infinite values raises
  :class:`SourceError` when it is converted. The range used is recorded in
  ``metadata["input_range"]``; :attr:`FrameSource.range_note` is a line for the user
  when it was read from the data.

The first frame is read when the source is opened (it gives the shape and proves the
file decodes), and with it the frames sampled for the input range. PyAV and tifffile
are imported only when a source of theirs is opened; OpenCV only when image files are
read. Paths that are neither regular files nor folders (a FIFO, a socket, a device) are
refused before they are opened: reading them could block forever.

Frames whose pixels are all equal after conversion (a blanked camera, a missing frame
written as zeros) are noted, not refused: :attr:`FrameSource.constant_frames` and
:attr:`FrameSource.n_constant_frames` tell how many were yielded.

The readers live in the modules of this package, one per kind of input:
:mod:`~temtrack.sdk.sources.base` (:class:`Frame`, :class:`FrameSource`, the gray
conversion), :mod:`~temtrack.sdk.sources.arrays`, :mod:`~temtrack.sdk.sources.images`,
:mod:`~temtrack.sdk.sources.tiff`, :mod:`~temtrack.sdk.sources.video` and
:mod:`~temtrack.sdk.sources.microscope`; this module picks one (:func:`open_source`).
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

import numpy as np

from .arrays import _ArraySource, _IterableSource
from .base import (
    IMAGE_SUFFIXES,
    SUPPORTED,
    TIFF_SUFFIXES,
    VIDEO_SUFFIXES,
    Frame,
    FrameSource,
    SourceError,
    _input_range,
    _positive,
    parse_input_range,
)
from .images import _image_files, _ImageSource
from .microscope import MICROSCOPE_SUFFIXES, is_dm_folder, open_microscope
from .tiff import _TiffSource
from .video import _VideoSource

__all__ = [
    "IMAGE_SUFFIXES",
    "SUPPORTED",
    "TIFF_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameSource",
    "SourceError",
    "open_source",
    "parse_input_range",
]

def _is_pattern(text: str) -> bool:
    return any(char in text for char in "*?[")


def open_source(
    source,
    *,
    fps: float | None = None,
    pixel_size_nm: float | None = None,
    input_range: str | tuple[float, float] | None = None,
) -> FrameSource:
    """Open frames from a video, TIFF stack, images, array or iterable.

    Parameters
    ----------
    source : path, str, ndarray or iterable
        - a video file FFmpeg decodes (.mp4, .avi, .mkv, .mov, ...), read through PyAV;
        - a microscope file: Gatan .dm3/.dm4 (a stack, an image, or a folder tree of
          one file per frame as the in-situ recorder writes it), Velox .emd, FEI
          .ser/.emi, .mrc/.mrcs/.st/.ali, read frame by frame with the pixel size and
          frame times from the file (:mod:`~temtrack.sdk.sources.microscope`; needs the
          ``[formats]`` extra);
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
    input_range : {None, "auto", "dtype"} or (float, float), optional
        The raw values mapped to 0 and 1 (rule: module docstring): ``"auto"`` (None)
        from the dtype, the declared bit depth or the data; ``"dtype"`` the dtype's full
        range; ``(low, high)`` that range, in the data's units (finite, low < high).
        :func:`parse_input_range` reads it from a command-line word.

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
        unsupported format (the message lists what is supported), a bad array shape, or
        a path that is not a regular file or folder (a FIFO, socket or device).
    TypeError
        ``source`` is of no supported type, or an array of a non-numeric dtype.
    ValueError
        A bad ``fps``, ``pixel_size_nm`` or ``input_range``.

    Examples
    --------
    >>> import numpy as np
    >>> with open_source(np.zeros((3, 4, 5), np.uint8), fps=10.0) as source:
    ...     [(f.index, f.time_s, f.image.shape) for f in source.frames(start=1)]
    [(1, 0.1, (4, 5)), (2, 0.2, (4, 5))]
    >>> counts = np.array([[[0, 900]], [[0, 1000]]], np.uint16)  # 10-bit data in 16-bit words
    >>> with open_source(counts) as source:
    ...     source.metadata["input_range"], [float(f.image.max()) for f in source]
    ({'low': 0.0, 'high': 1023.0, 'source': 'data', 'frames_sampled': 2}, [0.8797..., 0.9775...])
    """
    fps = _positive(fps, "fps")
    pixel_size_nm = _positive(pixel_size_nm, "pixel_size_nm")
    options = {"fps": fps, "pixel_size_nm": pixel_size_nm, "input_range": _input_range(input_range)}
    if isinstance(source, np.ndarray):
        return _ArraySource(source, **options)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source, **options)
    if isinstance(source, (bytes, bytearray)) or not hasattr(source, "__iter__"):
        raise TypeError(
            f"source must be a path, a glob pattern, an ndarray or an iterable of arrays, got {type(source).__name__}"
        )
    return _IterableSource(source, **options)


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _refuse_special(path: Path) -> None:
    """Raise SourceError for a path that is neither a regular file nor a folder; it is not opened."""
    mode = os.stat(path).st_mode  # follows symlinks: a link to a regular file is fine
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    what = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
    raise SourceError(
        f"{path} is {what}, not a regular file; tem-track reads video files, TIFF stacks, image files or folders"
    )


def _open_path(source, *, fps, pixel_size_nm, input_range) -> FrameSource:
    options = {"fps": fps, "pixel_size_nm": pixel_size_nm, "input_range": input_range}
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
    _refuse_special(path)  # before anything opens it: reading a FIFO blocks until a writer comes
    if path.is_dir():
        if is_dm_folder(path):  # Gatan's in-situ recorder: one .dm4 per frame, in a folder tree
            return open_microscope(path, **options)
        files = _image_files(path.iterdir())
        if not files:
            raise SourceError(f"{path} contains no frames: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return _ImageSource(files, str(path), **options)
    suffix = path.suffix.lower()
    if suffix in MICROSCOPE_SUFFIXES:
        return open_microscope(path, **options)
    if suffix in TIFF_SUFFIXES:
        return _TiffSource(path, **options)
    if suffix in IMAGE_SUFFIXES:
        return _ImageSource([path], str(path), **options)
    return _VideoSource(path, **options)
