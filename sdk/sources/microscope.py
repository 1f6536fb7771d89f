"""Microscope files as frames: Gatan DM3/DM4 (a stack, or a folder tree of one frame per
file as Gatan's in-situ recorder writes it), Velox EMD, FEI/TIA SER and MRC stacks.

Every reader is a :class:`FrameSource` with random access that reads one frame when it
is asked for (a slice of a memory map made for that read: DM stacks through
RosettaSciIO; one HDF5 slice: EMD; one file read: SER, MRC; one file: DM folders), so
memory stays bounded however long the recording. The pixel size and the frame times
come from the file:

- pixel size: the spatial calibration of the image axes (x), converted to nm from nm,
  µm, Å, pm, mm or m; ``metadata["pixel_size_source"]`` is ``"dm"``, ``"emd"``,
  ``"ser"`` or ``"mrc"`` and ``metadata["pixel_size_unit"]`` the unit the file used. A
  calibration in another unit (1/nm for diffraction, none at all) gives no pixel size.
- frame times, first found wins: the ``fps`` argument (``time_s = index / fps``);
  per-frame timestamps (a DM folder's ``DataBar.Acquisition Time (OS)``, Velox's
  per-frame ``Detectors[...].TimeStamp``): ``time_s`` is the frame's own time since
  frame 0, ``fps`` is ``(n - 1) / (t_last - t_0)``; the frame axis calibration (DM
  stacks in s or ms, a SER series in s, Velox ``Scan.FrameTime``); the frames counted
  per ``Second_NN`` folder of a Gatan tree; SER time tags (1 s resolution, used only
  over 10 s or more). ``metadata["fps_source"]`` says which and
  ``metadata["frame_times"]`` whether ``time_s`` comes from ``"timestamps"`` or the
  ``"fps"``; ``metadata["frame_times_s"]`` lists the times when the file holds at most
  500 frames and they cost no extra file per frame to read (Velox).

What a scientist gets for the awkward cases:

- one image (not a stack) is a 1-frame source, without a warning;
- a folder of DM files is one video in the natural order of the paths relative to it
  (``Hour_00/Minute_00/Second_09`` before ``Second_10``; ``Frame_2`` before
  ``Frame_10``); frames missing from Gatan's numbering (or from a plain running number)
  give a warning naming where, and reading goes on with consecutive frame indices
  (``time_s`` from the files' timestamps keeps the gap in time); a file whose pixel size
  differs from the first file's gives a warning naming it and its size, and the first
  file's size is used; a file of another shape is a :class:`SourceError` when reached;
- a SourceError for: a truncated or corrupt file ("cannot be read (truncated or
  corrupt)"), data that are not a series of 2-D images (spectra, spectrum images,
  4-D datasets such as 4D-STEM scans, stacks of volumes), complex data (FFTs, exit
  waves); a file with several images (Velox's detectors) is read from the one with the
  most frames, with a warning listing them.

MRC frames are the file's rows as stored (no flip for the bottom-left origin some
viewers use); SER frames are flipped to top-row-first, as RosettaSciIO reads them.

Libraries, each imported when a file of its kind is opened (the ``formats`` extra):
RosettaSciIO for DM and non-Velox EMD, h5py for Velox EMD, mrcfile for MRC. SER is
parsed here with numpy, because RosettaSciIO's TIA reader loads the whole series.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import struct
import warnings
from pathlib import Path
from statistics import median
from typing import NamedTuple

import numpy as np

from .base import (
    IMAGE_SUFFIXES,
    FrameSource,
    SourceError,
    _Gray,
    _input_range,
    _natural_key,
    _positive,
    _StackSource,
)

__all__ = ["MICROSCOPE_SUFFIXES", "is_dm_folder", "open_microscope"]

DM_SUFFIXES = (".dm3", ".dm4")
MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali")
MICROSCOPE_SUFFIXES = (*DM_SUFFIXES, ".emd", ".ser", ".emi", *MRC_SUFFIXES)

_INSTALL = "pip install 'tem-track[formats]'"
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0, "nanometres": 1.0,
    "um": 1e3, "\u00b5m": 1e3, "\u03bcm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "\u00e5": 0.1, "\u212b": 0.1, "angstrom": 0.1, "angstroms": 0.1,
    "pm": 1e-3, "mm": 1e6, "m": 1e9, "meter": 1e9, "meters": 1e9, "metre": 1e9, "metres": 1e9,
}  # fmt: skip
_S_PER_UNIT = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "\u00b5s": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0}  # fmt: skip
# Pixel sizes outside this window (nm/px) are not a microscope's image calibration.
_PLAUSIBLE_NM = (1e-4, 1e5)
# A file holding at most this many frames lists their times in metadata["frame_times_s"].
_FRAME_TIMES_KEPT = 500
# Colour DM images cannot be read lazily by RosettaSciIO; up to this size they are read whole.
_EAGER_BYTES = 256 * 2**20
# Windows FILETIME (100 ns ticks since 1601) of the Unix epoch, in seconds.
_FILETIME_EPOCH_S = 11644473600.0
_GATAN_NAME = re.compile(r"Hour_(\d+)_Minute_(\d+)_Second_(\d+)_Frame_(\d+)", re.IGNORECASE)
_GAPS_KEPT = 20


def _library(module: str, package: str, suffix: str):
    """``module`` imported, or ModuleNotFoundError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"reading {suffix} files needs {package}: {_INSTALL}", name=err.name) from err


def _unit(text) -> str:
    return str(text or "").strip()


def _length_nm(scale, unit) -> float | None:
    """``scale`` in ``unit`` as nm, or None when it is not a plausible length per pixel."""
    factor = _NM_PER_UNIT.get(_unit(unit).casefold())
    try:
        value = float(scale) * factor if factor else math.nan
    except (TypeError, ValueError):
        return None
    return value if _PLAUSIBLE_NM[0] <= value <= _PLAUSIBLE_NM[1] else None


def _interval_s(scale, unit) -> float | None:
    """A frame interval in seconds, or None when ``unit`` is no time unit."""
    factor = _S_PER_UNIT.get(_unit(unit).casefold())
    try:
        value = float(scale) * factor if factor else math.nan
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


class _Calibration(NamedTuple):
    """What a file says of its pixels and frames (None where it says nothing)."""

    pixel_size_nm: float | None = None
    pixel_size_unit: str | None = None
    fps: float | None = None
    fps_source: str | None = None


def _not_images(name: str, shape, what: str) -> SourceError:
    return SourceError(
        f"{name} holds {what}, shape {tuple(int(n) for n in shape)}, not a series of 2-D images; "
        "tem-track reads one image or a (frames, height, width) stack"
    )


def _check_dtype(dtype, name: str) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind == "c" or (dtype.names and len(dtype.names) == 2 and "imag" in dtype.names[1].lower()):
        raise SourceError(
            f"{name} holds complex data ({dtype}: e.g. an FFT or a reconstructed exit wave); "
            "tem-track reads real-valued images: export the amplitude or the phase (e.g. as TIFF)"
        )


class _MicroscopeSource(_StackSource):
    """A stack from a microscope file; a subclass reads raw frames in :meth:`_raw` and may
    give absolute per-frame timestamps (seconds) through :meth:`_stamp`."""

    _timestamps = False  # True when time_s comes from the frames' own timestamps
    _t0: float | None = None

    def _stamp(self, index: int) -> float | None:
        return None

    def _time(self, index: int) -> float:
        if self._timestamps:
            stamp = self._stamp(index)
            if stamp is not None:
                return stamp - self._t0
        return super()._time(index)

    def _setup(
        self,
        *,
        name: str,
        fmt: str,
        n_frames: int,
        fps,
        pixel_size_nm,
        calibration: _Calibration,
        input_range,
        metadata: dict,
        timestamps: tuple[float | None, float | None] = (None, None),
    ) -> None:
        """Fix the input range, the times and the calibration, then initialise the source.

        ``timestamps`` are the absolute times of the first and last frames when the file
        has per-frame times; they give the frame rate unless ``fps`` is given.
        """
        if n_frames < 1:
            raise SourceError(f"{name} contains no frames")
        self.name = name
        self._gray = _Gray(name, input_range=input_range)
        first = self._first(n_frames)
        t0, t_last = timestamps
        file_fps, fps_source = calibration.fps, calibration.fps_source
        self._t0 = t0
        self._timestamps = fps is None and t0 is not None
        if n_frames > 1 and t0 is not None and t_last is not None and t_last > t0:
            file_fps, fps_source = (n_frames - 1) / (t_last - t0), f"{fmt}_timestamps"
        if fps is not None:
            fps_source = "argument"
        elif file_fps is None:
            fps_source = None
        super().__init__(
            name=name,
            kind=fmt,
            fps=fps or file_fps,
            n_frames=n_frames,
            shape=first.shape,
            pixel_size_nm=pixel_size_nm or calibration.pixel_size_nm,
            metadata={
                "format": fmt,
                **metadata,
                "pixel_size_source": "argument" if pixel_size_nm else fmt.split("_")[0] if calibration.pixel_size_nm else None,
                "pixel_size_unit": calibration.pixel_size_unit,
                "fps_source": fps_source,
                "frame_times": "timestamps" if self._timestamps else "fps" if (fps or file_fps) else None,
                "input_range": self._gray.record,
            },
            range_note=self._gray.note,
        )


# --- RosettaSciIO datasets (DM stacks, non-Velox EMD) -----------------------------------


def _frames_layout(name: str, shape, axes) -> tuple[int, dict | None]:
    """``(number of frames, the frame axis or None)`` of a dataset, or SourceError when it
    is not one image or a stack of images. ``axes`` are RosettaSciIO's axis dicts."""
    shape = tuple(int(n) for n in shape)
    known = len(axes) == len(shape) and all("navigate" in axis for axis in axes)
    navigate = [bool(axis["navigate"]) for axis in axes] if known else None
    if len(shape) < 2:
        raise _not_images(name, shape, "1-D data (a spectrum or a profile)")
    if len(shape) == 2:
        return 1, None
    if navigate is not None and navigate[-2:] != [False, False]:
        what = "a spectrum image (a spectrum at every scan position)" if navigate[-1] is False else "data with no image axes"
        raise _not_images(name, shape, what)
    if len(shape) == 3:
        return shape[0], axes[0] if navigate is not None else None
    raise _not_images(
        name, shape, f"a {len(shape)}-D dataset (e.g. a 4D-STEM scan: an image at every scan position, or a stack of volumes)"
    )


def _rsciio_calibration(axes, n_frames: int, time_axis, fmt: str) -> _Calibration:
    x = axes[-1] if axes else {}
    size_nm = _length_nm(x.get("scale"), x.get("units"))
    unit = _unit(x.get("units")) or None
    interval = _interval_s(time_axis.get("scale"), time_axis.get("units")) if time_axis and n_frames > 1 else None
    return _Calibration(size_nm, unit, 1.0 / interval if interval else None, fmt if interval else None)


def _largest(datasets: list[dict], name: str) -> tuple[dict, int]:
    images = [d for d in datasets if np.ndim(d["data"]) >= 1]
    if not images:
        raise SourceError(f"{name} contains no frames: no image data in the file")
    best = max(range(len(images)), key=lambda i: (int(np.prod(np.shape(images[i]["data"]))), -i))
    return images[best], len(images)


def _rgb(data):
    """Colour DM data (fields R, G, B, A) as ``(..., 3)`` RGB; other data unchanged."""
    if getattr(data, "dtype", None) is not None and data.dtype.names and {"R", "G", "B"} <= set(data.dtype.names):
        return np.stack([np.asarray(data["R"]), np.asarray(data["G"]), np.asarray(data["B"])], axis=-1)
    return data


def _read_dm(path: Path, name: str) -> list[dict]:
    """RosettaSciIO's datasets of a DM3/DM4 file, lazily (memory-mapped) where it can."""
    reader = _library("rsciio.digitalmicrograph", "RosettaSciIO", path.suffix.lower())
    try:
        try:
            return reader.file_reader(str(path), lazy=True)
        except ValueError as err:
            if "RGB" not in str(err):
                raise
            if path.stat().st_size > _EAGER_BYTES:
                raise SourceError(
                    f"{name} holds colour (RGB) data larger than {_EAGER_BYTES // 2**20} MiB, which cannot be read "
                    "frame by frame; export it as TIFF"
                ) from err
            return reader.file_reader(str(path), lazy=False)
    except (SourceError, FileNotFoundError, PermissionError):
        raise
    except NotImplementedError as err:  # a DM version other than 3 or 4, an unknown data type
        raise SourceError(f"{name} cannot be read as a Gatan DM3/DM4 file: {err}") from err
    except Exception as err:
        raise SourceError(f"{name} cannot be read (truncated or corrupt): {type(err).__name__}: {err}") from err


def _dm_image_tags(dataset: dict) -> dict:
    try:
        return dataset["original_metadata"]["ImageList"]["TagGroup0"]
    except (KeyError, TypeError):
        return {}


def _check_dm_images(dataset: dict, name: str) -> None:
    """SourceError for DM spectra and spectrum images: RosettaSciIO leaves their axes as
    an image stack's and marks them only in the tags."""
    tags = _dm_image_tags(dataset).get("ImageTags", {})
    meta = tags.get("Meta Data", {}) if isinstance(tags, dict) else {}
    spectral = isinstance(meta, dict) and meta.get("Format") in ("Spectrum image", "Spectrum")
    if spectral or (isinstance(tags, dict) and "spim" in tags):
        shape = np.shape(dataset["data"])
        raise _not_images(name, shape, "a spectrum image (a spectrum at every scan position)" if len(shape) > 1 else "a spectrum")


def _check_dm_data_in_file(dataset: dict, path: Path, name: str) -> None:
    """SourceError when the image data run past the end of the file (a cut copy)."""
    data = _dm_image_tags(dataset).get("ImageData", {}).get("Data")
    if not (isinstance(data, dict) and "offset" in data and "size_bytes" in data):
        return
    end, size = data["offset"] + data["size_bytes"], path.stat().st_size
    if end > size:
        raise SourceError(
            f"{name} cannot be read (truncated or corrupt): its image data end at byte {end}, "
            f"past the end of the file ({size} bytes)"
        )


class _DatasetSource(_MicroscopeSource):
    """One RosettaSciIO dataset (``data`` a dask or numpy array): a DM file, a non-Velox EMD."""

    def __init__(self, path: Path, datasets: list[dict], fmt: str, *, fps, pixel_size_nm, input_range):
        name = str(path)
        dataset, n_images = _largest(datasets, name)
        data = dataset["data"]
        _check_dtype(data.dtype, name)
        axes = list(dataset.get("axes") or [])
        n_frames, time_axis = _frames_layout(name, data.shape, axes)
        self._data, self._stacked = data, data.ndim == 3
        self._setup(
            name=name,
            fmt=fmt,
            n_frames=n_frames,
            fps=fps,
            pixel_size_nm=pixel_size_nm,
            calibration=_rsciio_calibration(axes, n_frames, time_axis, fmt),
            input_range=input_range,
            metadata={
                "dtype": "uint8 RGBA" if data.dtype.names else str(data.dtype),
                "data_shape": [int(n) for n in data.shape],
                "images_in_file": n_images,
                "access": "lazy" if hasattr(data, "dask") else "memory",
            },
        )

    def _raw(self, index):
        try:
            frame = self._data[index] if self._stacked else self._data
            if hasattr(frame, "compute"):
                frame = frame.compute(scheduler="synchronous")  # in the caller's thread: no pool
            return _rgb(np.asarray(frame))
        except SourceError:
            raise
        except Exception as err:
            raise SourceError(f"{self.name}: frame {index} cannot be read (truncated or corrupt): {err}") from err

    def _close(self):
        self._data = None


def _open_dm(path: Path, *, fps, pixel_size_nm, input_range) -> FrameSource:
    name = str(path)
    datasets = _read_dm(path, name)
    dataset, _ = _largest(datasets, name)
    _check_dm_data_in_file(dataset, path, name)
    _check_dm_images(dataset, name)
    return _DatasetSource(path, datasets, "dm", fps=fps, pixel_size_nm=pixel_size_nm, input_range=input_range)


# --- a folder tree of one DM file per frame ---------------------------------------------


def _walk_files(folder: Path):
    """Every non-hidden file under ``folder`` (hidden folders skipped), in no order."""
    for where, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            if not file.startswith("."):  # also macOS "._x.dm4" resource forks
                yield Path(where, file)


def _dm_files(folder: Path) -> list[Path]:
    files = [p for p in _walk_files(folder) if p.suffix.lower() in DM_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.relative_to(folder)))


def is_dm_folder(path) -> bool:
    """Whether ``path`` is a folder of Gatan DM files to read as one video.

    True for a folder that holds .dm3/.dm4 files, directly or in subfolders (Gatan's
    in-situ recorder writes ``Hour_00/Minute_00/Second_00/..._Frame_0000.dm4``), and no
    image files (.png, .jpg, .tif, ...) directly in it; such images make it a folder of
    images. Hidden files and folders are ignored.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool

    Examples
    --------
    >>> from pathlib import Path
    >>> second = Path("run", "Hour_00", "Minute_00", "Second_00")
    >>> second.mkdir(parents=True)
    >>> _ = (second / "run_Hour_00_Minute_00_Second_00_Frame_0000.dm4").write_bytes(b"")
    >>> is_dm_folder("run"), is_dm_folder(second.parent)
    (True, True)
    >>> _ = Path("run", "preview.png").write_bytes(b"")
    >>> is_dm_folder("run")
    False
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    try:
        if any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir() if not p.name.startswith(".")):
            return False
        return any(p.suffix.lower() in DM_SUFFIXES for p in _walk_files(folder))
    except OSError:
        return False


def _number_gaps(relative: list[str]) -> list[tuple[str, str]]:
    """``(file before, file after)`` around each gap in the frame numbering of ``relative``
    (paths in reading order): Gatan's ``Hour/Minute/Second/Frame`` names, else a running
    number at the end of the file names. Frames missing at the end of a second cannot be
    seen in Gatan's names (the count per second varies) and are not reported."""
    names = [Path(r).name for r in relative]
    gatan = [_GATAN_NAME.search(n) for n in names]
    gaps = []
    if all(gatan):
        keys = [(3600 * int(m[1]) + 60 * int(m[2]) + int(m[3]), int(m[4])) for m in gatan]
        for i in range(1, len(keys)):
            (s0, f0), (s1, f1) = keys[i - 1], keys[i]
            if (s1 == s0 and f1 != f0 + 1) or (s1 > s0 and (s1 > s0 + 1 or f1 != 0)):
                gaps.append((relative[i - 1], relative[i]))
        return gaps
    numbers = [re.findall(r"\d+", Path(n).stem) for n in names]
    if not all(numbers):
        return gaps
    last = [int(n[-1]) for n in numbers]
    if len(set(last)) != len(last):  # not one running number (several folders, several series)
        return gaps
    for i in range(1, len(last)):
        if last[i] > last[i - 1] + 1:
            gaps.append((relative[i - 1], relative[i]))
    return gaps


def _fps_from_names(relative: list[str]) -> float | None:
    """Frames per second of a Gatan tree: the median count of frames per ``Second_NN``,
    the last (partial) second left out; None without Gatan's names or two seconds."""
    matches = [_GATAN_NAME.search(Path(r).name) for r in relative]
    if not matches or not all(matches):
        return None
    counts: dict[int, int] = {}
    for m in matches:
        second = 3600 * int(m[1]) + 60 * int(m[2]) + int(m[3])
        counts[second] = counts.get(second, 0) + 1
    full = [counts[s] for s in sorted(counts)[:-1]]
    return float(median(full)) if full else None


class _DMFrame(NamedTuple):
    raw: np.ndarray
    pixel_size_nm: float | None
    unit: str | None
    stamp_s: float | None


def _dm_frame(path: Path) -> _DMFrame:
    """The single image of one DM file of a sequence, its calibration and timestamp."""
    name = str(path)
    datasets = _read_dm(path, name)
    dataset, _ = _largest(datasets, name)
    _check_dm_data_in_file(dataset, path, name)
    _check_dm_images(dataset, name)
    data = dataset["data"]
    _check_dtype(data.dtype, name)
    axes = list(dataset.get("axes") or [])
    n_frames, _ = _frames_layout(name, data.shape, axes)
    if n_frames != 1:
        raise SourceError(
            f"{name} holds {n_frames} frames, but the files of a folder sequence must hold one each; open it on its own"
        )
    try:
        raw = data.compute(scheduler="synchronous") if hasattr(data, "compute") else data
        raw = _rgb(np.asarray(raw).reshape(data.shape[-2:]))
    except Exception as err:
        raise SourceError(f"{name} cannot be read (truncated or corrupt): {err}") from err
    x = axes[-1] if axes else {}
    return _DMFrame(raw, _length_nm(x.get("scale"), x.get("units")), _unit(x.get("units")) or None, _dm_stamp(dataset))


def _dm_stamp(dataset: dict) -> float | None:
    """When the frame was acquired (seconds since 1970), from ``DataBar.Acquisition Time
    (OS)``: a Windows FILETIME, 100 ns ticks since 1601, stored as a double."""
    tags = _dm_image_tags(dataset).get("ImageTags", {})
    bar = next((v for k, v in tags.items() if k.casefold() == "databar"), None) if isinstance(tags, dict) else None
    try:
        ticks = float(bar["Acquisition Time (OS)"])
    except (KeyError, TypeError, ValueError):
        return None
    return ticks * 1e-7 - _FILETIME_EPOCH_S if math.isfinite(ticks) and ticks > 0 else None


class _DMFolderSource(_MicroscopeSource):
    """A folder tree of DM files, one frame each, read one file per frame."""

    def __init__(self, folder: Path, *, fps, pixel_size_nm, input_range):
        name = str(folder)
        files = _dm_files(folder)
        if not files:
            raise SourceError(f"{name} contains no frames: no .dm3/.dm4 files in the folder or its subfolders")
        self.name, self._files, self._root = name, files, folder
        self._stamps: dict[int, float | None] = {}
        self._mixed_warned = False
        first = _dm_frame(files[0])
        self._reference_nm = first.pixel_size_nm
        self._first_frame: _DMFrame | None = first
        self._stamps[0] = first.stamp_s
        last_stamp = self._stamp(len(files) - 1)
        relative = [p.relative_to(folder).as_posix() for p in files]
        calibration = _Calibration(first.pixel_size_nm, first.unit)
        names_fps = _fps_from_names(relative)
        if names_fps:
            calibration = calibration._replace(fps=names_fps, fps_source="dm_folder_names")
        gaps = _number_gaps(relative)
        self._setup(
            name=name,
            fmt="dm_folder",
            n_frames=len(files),
            fps=fps,
            pixel_size_nm=pixel_size_nm,
            calibration=calibration,
            input_range=input_range,
            metadata={
                "files": len(files),
                "first_file": relative[0],
                "last_file": relative[-1],
                "dtype": str(first.raw.dtype),
                "access": "one_file_per_frame",
                "n_gaps": len(gaps),
                "gaps": [{"after": a, "before": b} for a, b in gaps[:_GAPS_KEPT]],
            },
            timestamps=(first.stamp_s, last_stamp),
        )
        if gaps:
            after, before = gaps[0]
            more = f" (and {len(gaps) - 1} more gaps)" if len(gaps) > 1 else ""
            times = "; time_s comes from the files' timestamps, so the gap shows in the times" if self._timestamps else ""
            warnings.warn(
                f"{name}: frames missing from the numbering between {after} and {before}{more}; "
                f"the {len(files)} files present are read as consecutive frames{times}",
                stacklevel=3,
            )

    def _stamp(self, index):
        if index not in self._stamps:
            self._raw(index)
        return self._stamps.get(index)

    def _raw(self, index):
        if index == 0 and self._first_frame is not None:
            frame, self._first_frame = self._first_frame, None  # read at open: used once
        else:
            frame = _dm_frame(self._files[index])
        if len(self._stamps) > 64:  # times are asked for the frames being read: keep a few
            self._stamps = {0: self._stamps.get(0)}
        self._stamps[index] = frame.stamp_s
        self._check_pixel_size(index, frame.pixel_size_nm)
        return frame.raw

    def _check_pixel_size(self, index: int, size: float | None) -> None:
        first = self._reference_nm
        if self._mixed_warned or first is None or (size is not None and math.isclose(size, first, rel_tol=1e-5)):
            return
        self._mixed_warned = True  # once: the first file found to differ
        where = self._files[index].relative_to(self._root).as_posix()
        warnings.warn(
            f"{self.name}: {where} has pixel size {'none' if size is None else f'{size:g} nm'}, but the first file "
            f"{self._files[0].relative_to(self._root).as_posix()} has {first:g} nm; the first file's size is used "
            "for all frames",
            stacklevel=2,
        )

    def _where(self, index):
        return str(self._files[index])

    def _close(self):
        self._first_frame = None


# --- Velox EMD ----------------------------------------------------------------------------


def _is_velox(h5) -> bool:
    try:
        version = json.loads(bytes(h5["Version"][0]).decode("utf-8"))
        return version.get("format") in ("Velox", "DevelopersKit")
    except Exception:
        return False


def _velox_timestamp(meta: dict) -> float | None:
    """A frame's ``Detectors[<name>].TimeStamp`` (microseconds) in seconds, or None."""
    properties = meta.get("CustomProperties")
    if not isinstance(properties, dict):
        return None
    for key, value in properties.items():
        if key.startswith("Detectors[") and key.endswith("].TimeStamp"):
            try:
                stamp = float(value["value"] if isinstance(value, dict) else value) * 1e-6
            except (KeyError, TypeError, ValueError):
                return None
            return stamp if math.isfinite(stamp) and stamp > 0 else None
    return None


def _velox_detector(meta: dict, key: str) -> str:
    result = meta.get("BinaryResult", {})
    if result.get("Detector"):
        return str(result["Detector"])
    detector = meta.get("Detectors", {}).get(f"Detector-{result.get('DetectorIndex')}", {})
    return str(detector.get("DetectorName") or key)


class _VeloxSource(_MicroscopeSource):
    """A Velox EMD image dataset ``Data/Image/<id>/Data`` of shape (H, W, T), read one
    HDF5 slice per frame, with one JSON metadata document per frame."""

    def __init__(self, path: Path, h5, *, fps, pixel_size_nm, input_range):
        name = str(path)
        self.name, self._h5 = name, h5
        group = h5.get("Data/Image")
        keys = [k for k in (group.keys() if group is not None else ()) if "Data" in group[k]]
        if not keys:
            spectra = any(k in h5.get("Data", {}) for k in ("Spectrum", "SpectrumImage", "SpectrumStream"))
            raise SourceError(f"{name} contains no frames: no image data{' (it holds spectra only)' if spectra else ''}")
        sizes = []
        for key in keys:
            data = group[key]["Data"]
            if data.ndim != 3:
                raise _not_images(name, data.shape, f"a {data.ndim}-D Velox dataset")
            sizes.append(int(data.shape[2]))
        best = max(range(len(keys)), key=lambda i: (sizes[i], -i))
        self._data = group[keys[best]]["Data"]
        self._meta_table = group[keys[best]].get("Metadata")
        _check_dtype(self._data.dtype, name)
        n_frames = sizes[best]
        meta = self._meta(0) or {}
        if len(keys) > 1:
            labels = [_velox_detector(self._meta(0, group[k].get("Metadata")) or {}, k) for k in keys]
            warnings.warn(
                f"{name} holds {len(keys)} image datasets ({', '.join(labels)}); reading {labels[best]} "
                f"({n_frames} frames), the one with the most frames",
                stacklevel=3,
            )
        result = meta.get("BinaryResult", {})
        unit = _unit(result.get("PixelUnitX")) or None
        size_nm = _length_nm(result.get("PixelSize", {}).get("width"), unit)
        calibration = _Calibration(size_nm, unit)
        frame_time = _interval_s(meta.get("Scan", {}).get("FrameTime"), "s")
        if frame_time and n_frames > 1:
            calibration = calibration._replace(fps=1.0 / frame_time, fps_source="emd")
        times = None
        self._stamps: dict[int, float | None] = {0: _velox_timestamp(meta)}
        if self._stamps[0] is not None and n_frames <= _FRAME_TIMES_KEPT:
            self._stamps.update({i: _velox_timestamp(self._meta(i) or {}) for i in range(1, n_frames)})
            if all(s is not None for s in self._stamps.values()):
                times = [self._stamps[i] - self._stamps[0] for i in range(n_frames)]
        self._setup(
            name=name,
            fmt="emd",
            n_frames=n_frames,
            fps=fps,
            pixel_size_nm=pixel_size_nm,
            calibration=calibration,
            input_range=input_range,
            metadata={
                "dtype": str(self._data.dtype),
                "data_shape": [int(n) for n in self._data.shape],
                "dataset": f"Data/Image/{keys[best]}",
                "detector": _velox_detector(meta, keys[best]),
                "images_in_file": len(keys),
                "access": "hdf5",
                **({"frame_times_s": times} if times is not None and fps is None else {}),
            },
            timestamps=(self._stamps[0], self._stamp(n_frames - 1)),
        )

    def _meta(self, index: int, table=None) -> dict | None:
        table = self._meta_table if table is None else table
        if table is None or table.ndim != 2 or index >= table.shape[1]:
            return None
        try:
            return json.loads(bytes(table[:, index]).rstrip(b"\0").decode("utf-8"))
        except Exception:  # metadata that cannot be parsed are no metadata
            return None

    def _stamp(self, index):
        if index not in self._stamps:
            if len(self._stamps) > 64:
                self._stamps = {0: self._stamps.get(0)}
            self._stamps[index] = _velox_timestamp(self._meta(index) or {})
        return self._stamps[index]

    def _raw(self, index):
        try:
            return self._data[:, :, index]
        except Exception as err:
            raise SourceError(f"{self.name}: frame {index} cannot be read (truncated or corrupt): {err}") from err

    def _close(self):
        self._data = self._meta_table = None
        self._h5.close()


def _open_emd(path: Path, *, fps, pixel_size_nm, input_range) -> FrameSource:
    h5py = _library("h5py", "h5py", ".emd")
    name = str(path)
    try:
        h5 = h5py.File(path, "r")
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as err:
        raise SourceError(f"{name} cannot be read (truncated or corrupt): {err}") from err
    if _is_velox(h5):
        try:
            return _VeloxSource(path, h5, fps=fps, pixel_size_nm=pixel_size_nm, input_range=input_range)
        except BaseException as err:
            h5.close()
            if isinstance(err, (SourceError, ModuleNotFoundError)) or not isinstance(err, Exception):
                raise
            raise SourceError(f"{name} cannot be read (truncated or corrupt): {type(err).__name__}: {err}") from err
    h5.close()
    reader = _library("rsciio.emd", "RosettaSciIO", ".emd")
    try:
        datasets = reader.file_reader(str(path), lazy=True)
    except Exception as err:
        raise SourceError(f"{name} cannot be read as EMD (Velox or NCEM): {type(err).__name__}: {err}") from err
    return _DatasetSource(path, datasets, "emd", fps=fps, pixel_size_nm=pixel_size_nm, input_range=input_range)


# --- FEI / TIA SER ------------------------------------------------------------------------

_SER_DTYPES = {1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4", 7: "<f4", 8: "<f8", 9: "<c8", 10: "<c16"}  # fmt: skip
_SER_IMAGE, _SER_SPECTRUM = 0x4122, 0x4120
_SER_ELEMENT = struct.Struct("<ddIddIHII")  # offset, delta, element (x), the same (y), type, width, height
# SER time tags count whole seconds: a frame rate from them needs a long series.
_SER_TAG_SPAN_S = 10


class _SerSource(_MicroscopeSource):
    """A TIA series of 2-D data elements, each read from its offset when asked for."""

    def __init__(self, path: Path, *, fps, pixel_size_nm, input_range):
        name = str(path)
        self.name = name
        self._file = open(path, "rb")
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            order, series_id, version, data_type, tag_type, total, valid = struct.unpack(
                "<HHHIIII", self._read_at(0, 22, "the header")
            )
            if order != 0x4949 or series_id != 0x0197:
                raise SourceError(f"{name} is not a TIA series file (.ser): no SER signature")
            offset_format = "<Q" if version > 0x0210 else "<I"
            step = struct.calcsize(offset_format)
            (array_offset,) = struct.unpack(offset_format, self._read_at(22, step, "the header"))
            (n_dims,) = struct.unpack("<I", self._read_at(22 + step, 4, "the header"))
            position, dims = 26 + step, []
            for _ in range(n_dims):
                size, _, delta, _ = struct.unpack("<Iddi", self._read_at(position, 24, "the dimensions"))
                (length,) = struct.unpack("<I", self._read_at(position + 24, 4, "the dimensions"))
                position += 28 + length
                (length,) = struct.unpack("<I", self._read_at(position, 4, "the dimensions"))
                units = self._read_at(position + 4, length, "the dimensions").decode("latin-1", "replace")
                position += 4 + length
                dims.append((int(size), float(delta), units))
            if data_type == _SER_SPECTRUM:
                raise _not_images(name, [d[0] for d in dims], "spectra (1-D data elements)")
            if data_type != _SER_IMAGE:
                raise SourceError(f"{name}: SER data type {data_type:#x} is neither images (0x4122) nor spectra (0x4120)")
            if valid == 0 or valid > total:
                raise SourceError(f"{name} contains no frames ({valid} valid elements of {total})")
            table = np.frombuffer(self._read_at(array_offset, 2 * total * step, "the offset table"), offset_format)
            self._offsets, self._tags = table[:valid].astype(np.int64), table[total : total + valid].astype(np.int64)
            self._tag_type = tag_type
            _, delta_x, _, _, _, _, code, width, height = _SER_ELEMENT.unpack(
                self._read_at(int(self._offsets[0]), _SER_ELEMENT.size, "data element 0")
            )
            if code not in _SER_DTYPES:
                raise SourceError(f"{name}: data element 0 has data type {code}, which SER does not define (corrupt?)")
            self._dtype, self._frame_shape = np.dtype(_SER_DTYPES[code]), (int(height), int(width))
            scan = [d[0] for d in dims if d[0] > 1]
            if len(scan) > 1:
                raise _not_images(
                    name, (*scan, height, width), "a 2-D scan of images (e.g. 4D-STEM: an image at every scan position)"
                )
            _check_dtype(self._dtype, name)
            self._nbytes = int(height) * int(width) * self._dtype.itemsize
            end = int(self._offsets.max()) + _SER_ELEMENT.size + self._nbytes
            if end > self._size:
                raise SourceError(
                    f"{name} cannot be read (truncated or corrupt): its data elements end at byte {end}, "
                    f"past the end of the file ({self._size} bytes)"
                )
            calibration = _Calibration(_length_nm(delta_x, "m"), "m")
            interval = _interval_s(dims[0][1], dims[0][2]) if len(dims) == 1 and valid > 1 else None
            if interval:
                calibration = calibration._replace(fps=1.0 / interval, fps_source="ser")
            elif valid > 1:
                span = self._tag_time(valid - 1) - self._tag_time(0)
                if span >= _SER_TAG_SPAN_S:
                    calibration = calibration._replace(fps=(valid - 1) / span, fps_source="ser_time_tags")
            self._setup(
                name=name,
                fmt="ser",
                n_frames=int(valid),
                fps=fps,
                pixel_size_nm=pixel_size_nm,
                calibration=calibration,
                input_range=input_range,
                metadata={
                    "dtype": str(self._dtype),
                    "series_version": int(version),
                    "elements_valid": int(valid),
                    "elements_total": int(total),
                    "access": "per_frame_read",
                },
            )
        except BaseException as err:
            self._file.close()
            if isinstance(err, SourceError) or not isinstance(err, Exception):
                raise
            raise SourceError(f"{name} cannot be read (truncated or corrupt): {type(err).__name__}: {err}") from err

    def _read_at(self, position: int, size: int, what: str) -> bytes:
        self._file.seek(position)
        data = self._file.read(size)
        if len(data) < size:
            raise SourceError(f"{self.name} cannot be read (truncated or corrupt): {what} ends past the end of the file")
        return data

    def _tag_time(self, index: int) -> int:
        """Seconds since 1970 from element ``index``'s time tag (0 when there is none)."""
        if self._tag_type not in (0x4152, 0x4142):
            return 0
        try:
            return struct.unpack("<HHI", self._read_at(int(self._tags[index]), 8, "a time tag"))[2]
        except SourceError:
            return 0

    def _raw(self, index):
        offset = int(self._offsets[index])
        *_, code, width, height = _SER_ELEMENT.unpack(self._read_at(offset, _SER_ELEMENT.size, f"data element {index}"))
        if _SER_DTYPES.get(code) != self._dtype.str or (height, width) != self._frame_shape:
            raise SourceError(
                f"{self.name}: frame {index} is {height}x{width} of type {code}, frame 0 "
                f"{self._frame_shape[0]}x{self._frame_shape[1]} of {self._dtype}; a series holds one kind (corrupt?)"
            )
        data = self._read_at(offset + _SER_ELEMENT.size, self._nbytes, f"data element {index}")
        return np.frombuffer(data, self._dtype).reshape(self._frame_shape)[::-1]  # TIA stores the bottom row first

    def _close(self):
        self._file.close()


def _ser_of_emi(path: Path) -> Path:
    """The one data file (``<name>_1.ser``) of a TIA ``.emi`` file."""
    import glob

    found = sorted(path.parent.glob(f"{glob.escape(path.stem)}_*.ser"), key=_natural_key)
    found = [p for p in found if re.fullmatch(r"_\d+", p.stem[len(path.stem) :])]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceError(f"{path}: no data file {path.stem}_1.ser beside this .emi file; TIA keeps the frames there")
    listed = ", ".join(p.name for p in found)
    raise SourceError(f"{path} has {len(found)} data files ({listed}); open the .ser file to read")


# --- MRC ----------------------------------------------------------------------------------


class _MrcSource(_MicroscopeSource):
    """An MRC image, stack or volume, one frame read from the file when asked for.

    The header is parsed by mrcfile; frames are read with plain file reads rather than a
    memory map, whose touched pages would stay in the process's memory for a whole pass.
    """

    def __init__(self, path: Path, mrc, *, fps, pixel_size_nm, input_range):
        utils = importlib.import_module("mrcfile.utils")
        name = str(path)
        self.name = name
        header = mrc.header
        try:
            dtype, shape = np.dtype(utils.data_dtype_from_header(header)), utils.data_shape_from_header(header)
        except Exception as err:  # an unknown mode
            raise SourceError(f"{name} cannot be read as MRC: {err}") from err
        _check_dtype(dtype, name)
        if len(shape) == 4:
            raise _not_images(name, shape, "a 4-D dataset (a stack of volumes)")
        self._offset = int(header.nbytes) + int(header.nsymbt)  # data follow the extended header
        self._dtype, self._frame_shape = dtype, tuple(int(n) for n in shape[-2:])
        self._frame_bytes = self._frame_shape[0] * self._frame_shape[1] * dtype.itemsize
        n_frames = int(shape[0]) if len(shape) == 3 else 1
        end, size = self._offset + n_frames * self._frame_bytes, path.stat().st_size
        if end > size:
            raise SourceError(
                f"{name} cannot be read (truncated or corrupt): its data end at byte {end}, "
                f"past the end of the file ({size} bytes)"
            )
        try:
            size_a = float(mrc.voxel_size.x)
        except Exception:  # a header that cannot say is no calibration
            size_a = 0.0
        size_nm = _length_nm(size_a, "Å") if size_a > 0 else None
        ispg = int(header.ispg)
        kind = "image" if len(shape) == 2 else "image_stack" if ispg == 0 else "volume"
        self._file = open(path, "rb")
        try:
            self._setup(
                name=name,
                fmt="mrc",
                n_frames=n_frames,
                fps=fps,
                pixel_size_nm=pixel_size_nm,
                calibration=_Calibration(size_nm, "Å" if size_nm else None),
                input_range=input_range,
                metadata={
                    "dtype": str(dtype),
                    "data_shape": [int(n) for n in shape],
                    "mrc_mode": int(header.mode),
                    "mrc_kind": kind,
                    "access": "read",
                },
            )
        except BaseException:
            self._file.close()
            raise

    def _raw(self, index):
        self._file.seek(self._offset + index * self._frame_bytes)
        data = self._file.read(self._frame_bytes)
        if len(data) < self._frame_bytes:
            raise SourceError(f"{self.name}: frame {index} cannot be read (truncated or corrupt): the file ends inside it")
        return np.frombuffer(data, self._dtype).reshape(self._frame_shape)

    def _close(self):
        self._file.close()


def _open_mrc(path: Path, *, fps, pixel_size_nm, input_range) -> FrameSource:
    mrcfile = _library("mrcfile", "mrcfile", path.suffix.lower())
    name = str(path)
    try:
        mrc = mrcfile.open(path, mode="r", permissive=False, header_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as strict:
        # A header that breaks the standard but says where the data are (some writers'
        # map ID or machine stamp): read permissively and say so. A file too short for
        # its header is an error either way; one too short for its data, below.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                mrc = mrcfile.open(path, mode="r", permissive=True, header_only=True)
            except Exception:
                mrc = None
        if mrc is None or mrc.header is None:
            if mrc is not None:
                mrc.close()
            raise SourceError(f"{name} cannot be read (truncated or corrupt): {strict}") from strict
        warnings.warn(
            f"{name}: the MRC header does not follow the standard ({strict}); its data were read anyway", stacklevel=3
        )
    try:
        return _MrcSource(path, mrc, fps=fps, pixel_size_nm=pixel_size_nm, input_range=input_range)
    except SourceError:
        raise
    except Exception as err:
        raise SourceError(f"{name} cannot be read as MRC: {type(err).__name__}: {err}") from err
    finally:
        mrc.close()  # the header is all it was opened for


# --- entry point --------------------------------------------------------------------------


def open_microscope(path, *, fps=None, pixel_size_nm=None, input_range=None) -> FrameSource:
    """Open a microscope file, or a folder tree of DM files, as a frame source.

    Parameters
    ----------
    path : str or os.PathLike
        - a Gatan ``.dm3``/``.dm4`` file: one image or a ``(frames, H, W)`` stack;
        - a folder holding ``.dm3``/``.dm4`` files, one frame each, directly or in
          subfolders (:func:`is_dm_folder`), read in natural order of their paths;
        - a Velox ``.emd`` file (or another EMD variant RosettaSciIO reads);
        - a TIA ``.ser`` series of images (or its ``.emi``, when it has one ``.ser``);
        - an ``.mrc``, ``.mrcs``, ``.st`` or ``.ali`` image, stack or volume.
    fps : float, optional
        Frames per second (> 0); overrides the file's times: ``time_s = index / fps``.
    pixel_size_nm : float, optional
        nm per pixel (> 0); overrides the file's calibration.
    input_range : {None, "auto", "dtype"} or (float, float), optional
        The raw values mapped to 0 and 1, as for :func:`~temtrack.sdk.sources.open_source`.

    Returns
    -------
    FrameSource
        ``kind`` and ``metadata["format"]`` are ``"dm"``, ``"dm_folder"``, ``"emd"``,
        ``"ser"`` or ``"mrc"``; its first frame has been read. The module docstring says
        where the pixel size and the times come from.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModuleNotFoundError
        The library the format needs is not installed; the message says how to get it.
    SourceError
        The file cannot be read (truncated, corrupt), holds no series of 2-D images
        (spectra, a 4D-STEM scan, ...) or complex data, or is no microscope format.
    ValueError, TypeError
        A bad ``fps``, ``pixel_size_nm`` or ``input_range``.
    """
    options = {
        "fps": _positive(fps, "fps"),
        "pixel_size_nm": _positive(pixel_size_nm, "pixel_size_nm"),
        "input_range": _input_range(input_range),
    }
    text = os.fspath(path)
    if isinstance(text, bytes) or not text:
        raise TypeError(f"path must be a non-empty str or os.PathLike of str, got {path!r}")
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"frame source {path} not found")
    if path.is_dir():
        if not is_dm_folder(path):
            raise SourceError(
                f"{path} is not a folder of Gatan DM files: it needs .dm3/.dm4 files (in it or its subfolders) "
                "and no image files directly in it"
            )
        return _DMFolderSource(path, **options)
    suffix = path.suffix.lower()
    if suffix in DM_SUFFIXES:
        return _open_dm(path, **options)
    if suffix == ".emd":
        return _open_emd(path, **options)
    if suffix == ".ser":
        return _SerSource(path, **options)
    if suffix == ".emi":
        return _SerSource(_ser_of_emi(path), **options)
    if suffix in MRC_SUFFIXES:
        return _open_mrc(path, **options)
    raise SourceError(f"{path}: {suffix or 'no suffix'} is not a microscope format; allowed: {', '.join(MICROSCOPE_SUFFIXES)}")
