"""TIFF stacks: one file of ``(T, H, W[, S])`` frames, memory-mapped or read page by page,
with the pixel size and frame rate from ImageJ metadata or the resolution tags.

tifffile is imported when a TIFF is opened.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import SourceError, _Gray, _StackSource

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
    def __init__(self, path: Path, *, fps, pixel_size_nm, input_range=None):
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
            self._gray = _Gray(name, bits=bits, input_range=input_range)
            try:
                size_nm, size_source, file_fps = _calibration(self._tif)
            except Exception:  # a calibration that cannot be parsed is no calibration
                size_nm, size_source, file_fps = None, None, None
            first = self._first(n_frames)
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
                    "input_range": self._gray.record,
                },
                range_note=self._gray.note,
            )
        except BaseException as err:
            self._tif.close()
            if isinstance(err, SourceError) or not isinstance(err, Exception):
                raise
            raise SourceError(f"{name} cannot be read as a TIFF stack: {err}") from err

    def _raw(self, index):
        if self._frames_data is not None:
            raw = self._frames_data[index]
        else:
            try:
                raw = self._pages[index].asarray()
            except Exception as err:
                raise SourceError(f"{self.name}: frame {index} cannot be read (corrupt or truncated): {err}") from err
            if self._axes.endswith("SYX") and not self._axes.endswith("YXS"):
                raw = np.moveaxis(raw, 0, -1)
        return raw

    def _close(self):
        self._frames_data = self._pages = None
        self._tif.close()

