"""Image files as frames: a folder, a glob pattern or one file (png, jpg, bmp, tif).

Files are read one at a time in natural order (``frame2`` before ``frame10``): OpenCV
for the common formats, tifffile for TIFF images. Both are imported when read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .base import IMAGE_SUFFIXES, TIFF_SUFFIXES, SourceError, _Gray, _natural_key, _StackSource
from .tiff import _frames_last, _tiff_calibration, _tiff_layout


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
    def __init__(self, files: list[Path], name: str, *, fps, pixel_size_nm, input_range=None):
        # The first file's declared bit depth (TIFF BitsPerSample) holds for the sequence.
        raw, bits, _ = _read_image(files[0])
        self._files, self._gray = files, _Gray(name, bits=bits, input_range=input_range)
        first = self._first(len(files))
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
                "input_range": self._gray.record,
            },
            range_note=self._gray.note,
        )

    def _raw(self, index):
        raw, _, bgr = _read_image(self._files[index])
        if bgr and raw.ndim == 3 and raw.shape[2] in (3, 4):
            raw = raw[..., 2::-1]  # OpenCV's BGR(A) to RGB, alpha dropped
        return raw

    def _where(self, index):
        return str(self._files[index])


def _image_files(paths: Iterable[Path]) -> list[Path]:
    files = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=_natural_key)

