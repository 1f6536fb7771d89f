"""Tiny microscope files written by the tests themselves: Gatan DM3/DM4, FEI/TIA SER,
Velox EMD and MRC, with known pixels, pixel sizes and frame times.

No library writes DM, SER or Velox EMD, so the writers here follow the layouts the
readers expect (RosettaSciIO's ``digitalmicrograph``, ``tia`` and ``emd`` readers, and
the published descriptions of the formats); the tests check every file with RosettaSciIO
as well, so a writer that drifted from the format fails there. MRC is written with
``mrcfile``. For tests anywhere in the project (``from _microscope_files import ...``;
tests/ is on the path). numpy, plus h5py / mrcfile for EMD / MRC.
"""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path

import numpy as np

# A frame's content: frame i of a stack is a gradient with a dark row at DARK_ROW + i, so
# order and orientation show in the pixels.
DARK_ROW = 5


def stack(n_frames: int = 5, height: int = 32, width: int = 48, dtype="uint16", *, top: int = 4000) -> np.ndarray:
    """``(T, H, W)`` frames with known values: a column gradient up to ``top``, the row
    ``DARK_ROW + i`` of frame i set to 0, pixel (0, 0) of frame i set to ``10 * i``."""
    cols = np.linspace(100, top, width)
    frames = np.empty((n_frames, height, width), dtype=np.float64)
    frames[:] = cols
    for i in range(n_frames):
        frames[i, (DARK_ROW + i) % height] = 0
        frames[i, 0, 0] = 10 * i
    return frames.astype(dtype)


# --- Gatan DigitalMicrograph (DM3, DM4) ------------------------------------------------

# numpy dtype -> (DM image DataType, encoding of the elements of the ImageData.Data tag)
_DM_TYPES = {
    "int16": (1, 2), "float32": (2, 6), "complex64": (3, 6), "uint8": (6, 10), "int32": (7, 3),
    "int8": (9, 9), "uint16": (10, 4), "uint32": (11, 5), "float64": (12, 7), "complex128": (13, 7),
    "bool": (14, 8),
}  # fmt: skip
_ENCODING_FORMAT = {2: "h", 3: "i", 4: "H", 5: "I", 6: "f", 7: "d", 8: "?", 9: "b", 10: "B", 11: "q", 12: "Q"}


class _DMWriter:
    """The DM tag tree: header fields and type descriptions big-endian, values little-endian."""

    def __init__(self, version: int):
        if version not in (3, 4):
            raise ValueError(f"DM version must be 3 or 4, got {version}")
        self.version = version
        self.size = ">Q" if version == 4 else ">l"  # lengths and counts

    def _name(self, kind: int, name: str) -> bytes:
        encoded = name.encode("latin-1")
        return bytes([kind]) + struct.pack(">h", len(encoded)) + encoded

    def data(self, name: str, infos: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + struct.pack(self.size, len(infos)) + b"".join(struct.pack(self.size, i) for i in infos) + payload
        size = struct.pack(">Q", len(body)) if self.version == 4 else b""
        return self._name(21, name) + size + body

    def group(self, name: str, children: list[bytes]) -> bytes:
        body = b"\x00\x01" + struct.pack(self.size, len(children)) + b"".join(children)
        size = struct.pack(">Q", len(body)) if self.version == 4 else b""
        return self._name(20, name) + size + body

    def value(self, name: str, value) -> bytes:
        """A tag of a Python value: dict -> group, str -> uint16 array, bool, int, float, ndarray."""
        if isinstance(value, dict):
            return self.group(name, [self.value(k, v) for k, v in value.items()])
        if isinstance(value, str):
            chars = np.array([ord(c) for c in value], "<u2")
            return self.data(name, [20, 4, len(chars)], chars.tobytes())
        if isinstance(value, (bool, np.bool_)):
            return self.data(name, [8], struct.pack("<?", bool(value)))
        if isinstance(value, (int, np.integer)):
            return self.data(name, [3], struct.pack("<i", int(value)))
        if isinstance(value, (float, np.floating)):
            return self.data(name, [7], struct.pack("<d", float(value)))
        raise TypeError(f"no DM tag for {type(value).__name__}")

    def floats(self, name: str, value: float) -> bytes:
        return self.data(name, [6], struct.pack("<f", value))

    def image(self, data: np.ndarray, *, scales, units, origins, tags: dict, name: str, rgb: bool = False) -> bytes:
        """One ``ImageList`` entry; ``scales``/``units``/``origins`` in numpy axis order.
        With ``rgb``, ``data`` is ``(..., H, W, 3|4)`` uint8, stored as DM's RGBA type."""
        if rgb:
            rgba = np.full((*data.shape[:-1], 4), 255, np.uint8)
            rgba[..., :3] = data[..., :3]
            shape, payload = data.shape[:-1], rgba[..., [2, 1, 0, 3]].tobytes()  # stored B, G, R, A
            data_type, encoding, count = 23, 5, int(np.prod(shape))
        else:
            dtype = np.dtype(data.dtype)
            data_type, encoding = _DM_TYPES[dtype.name]
            shape, count = data.shape, data.size * (2 if dtype.kind == "c" else 1)
            payload = np.ascontiguousarray(data).astype(dtype.newbyteorder("<")).tobytes()
        dims = [self.data("", [5], struct.pack("<I", n)) for n in shape[::-1]]  # X first
        calibrations = [
            self.group("", [self.floats("Origin", o), self.floats("Scale", s), self.value("Units", u)])
            for s, u, o in zip(scales[::-1], units[::-1], origins[::-1])
        ]
        brightness = self.group("Brightness", [self.floats("Origin", 0.0), self.floats("Scale", 1.0), self.value("Units", "Counts")])
        image_data = self.group(
            "ImageData",
            [
                self.group("Calibrations", [brightness, self.group("Dimension", calibrations), self.value("DisplayCalibratedUnits", True)]),
                self.data("Data", [20, encoding, count], payload),
                self.value("DataType", data_type),
                self.group("Dimensions", dims),
                self.value("PixelDepth", 4 if rgb else data.dtype.itemsize),
            ],
        )
        return self.group("", [image_data, self.value("ImageTags", tags), self.value("Name", name)])

    def file(self, images: list[bytes], *, thumbnails: int = 0) -> bytes:
        root = [self.value("ApplicationBounds", {"Top": 0})]
        root.append(self.group("ImageList", images))
        if thumbnails:
            root.append(self.group("Thumbnails", [self.value("", {"ImageIndex": i}) for i in range(thumbnails)]))
        body = b"\x01\x01" + struct.pack(self.size, len(root)) + b"".join(root)
        trailer = bytes(8 if self.version == 4 else 4)
        header = struct.pack(">l", self.version)
        header += struct.pack(">Q", len(body) + len(trailer)) if self.version == 4 else struct.pack(">l", len(body) + len(trailer))
        return header + struct.pack(">l", 1) + body + trailer


def filetime(seconds: float) -> float:
    """Seconds since 1970 as the Windows FILETIME Gatan writes in ``DataBar.Acquisition Time (OS)``."""
    return (seconds + 11644473600.0) * 1e7


def write_dm(
    path,
    data: np.ndarray,
    *,
    version: int = 4,
    pixel_size: float = 0.25,
    unit: str = "nm",
    frame_interval: float | None = None,
    time_unit: str = "s",
    tags: dict | None = None,
    thumbnail: bool = True,
    extra_images: list[np.ndarray] = (),
    rgb: bool = False,
) -> Path:
    """Write ``data`` (``(H, W)``, ``(T, H, W)`` or more axes) as a DM3/DM4 file.

    The two image axes get ``pixel_size`` in ``unit``; a frame axis gets
    ``frame_interval`` in ``time_unit`` (uncalibrated when None); other leading axes are
    uncalibrated. ``tags`` go under ``ImageTags``. With ``rgb``, ``data`` is colour
    ``(..., H, W, 3)`` uint8 (the last axis is not an image axis). With ``thumbnail`` a small thumbnail
    image comes first in the ``ImageList``, as in files DigitalMicrograph saves.
    """
    path = Path(path)
    writer = _DMWriter(version)
    ndim = data.ndim - (1 if rgb else 0)
    scales, units = [1.0] * ndim, [""] * ndim
    scales[-2:], units[-2:] = [pixel_size, pixel_size], [unit, unit]
    if ndim == 3 and frame_interval is not None:
        scales[0], units[0] = frame_interval, time_unit
    images = []
    if thumbnail:
        images.append(writer.image(np.zeros((8, 8), np.uint8), scales=[1, 1], units=["", ""], origins=[0, 0], tags={}, name="thumb"))
    images.append(writer.image(data, scales=scales, units=units, origins=[0.0] * ndim, tags=tags or {}, name=path.stem, rgb=rgb))
    for extra in extra_images:
        images.append(writer.image(extra, scales=[1.0] * extra.ndim, units=[""] * extra.ndim, origins=[0.0] * extra.ndim, tags={}, name="extra"))
    path.write_bytes(writer.file(images, thumbnails=1 if thumbnail else 0))
    return path


def write_dm_folder(
    root,
    frames: np.ndarray,
    *,
    fps: float = 4.0,
    start_s: float = 1.6e9,
    prefix: str = "In situ",
    skip: tuple[int, ...] = (),
    pixel_sizes: dict[int, float] | None = None,
    pixel_size: float = 0.25,
    unit: str = "nm",
    timestamps: bool = True,
) -> list[Path]:
    """Write ``frames`` as Gatan's in-situ recorder does: one DM4 per frame in
    ``Hour_HH/Minute_MM/Second_SS/<prefix>_Hour_HH_Minute_MM_Second_SS_Frame_FFFF.dm4``,
    frames numbered from 0 within each second, ``fps`` frames a second.

    Frame i is acquired at ``start_s + i / fps`` (``DataBar.Acquisition Time (OS)``, a
    FILETIME, when ``timestamps``). Frames whose index is in ``skip`` are not written (a
    gap); ``pixel_sizes`` gives some frames another pixel size. Returns the files written.
    """
    root = Path(root)
    per_second = round(fps)
    written = []
    for i, frame in enumerate(frames):
        if i in skip:
            continue
        second, number = divmod(i, per_second)
        hour, rest = divmod(second, 3600)
        minute, sec = divmod(rest, 60)
        folder = root / f"Hour_{hour:02d}" / f"Minute_{minute:02d}" / f"Second_{sec:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}_Hour_{hour:02d}_Minute_{minute:02d}_Second_{sec:02d}_Frame_{number:04d}.dm4"
        tags = {"DataBar": {"Acquisition Time (OS)": filetime(start_s + i / fps)}} if timestamps else {}
        size = (pixel_sizes or {}).get(i, pixel_size)
        written.append(write_dm(folder / name, frame, pixel_size=size, unit=unit, tags=tags))
    return written


# --- FEI / TIA SER ---------------------------------------------------------------------

_SER_TYPES = {"uint8": 1, "uint16": 2, "uint32": 3, "int8": 4, "int16": 5, "int32": 6, "float32": 7, "float64": 8, "complex64": 9, "complex128": 10}  # fmt: skip


def write_ser(
    path,
    frames: np.ndarray,
    *,
    pixel_size_m: float = 2.5e-10,
    frame_interval: float | None = None,
    times: list[int] | None = None,
    version: int = 0x0220,
    scan: tuple[int, int] | None = None,
    spectra: bool = False,
) -> Path:
    """Write ``(T, H, W)`` frames as a TIA series (``.ser``) of 2-D data elements.

    One dimension of ``T`` elements, calibrated ``frame_interval`` seconds per element
    when given (units "s"), else uncalibrated. Each element carries ``pixel_size_m``
    metres per pixel and a time tag (``times[i]`` seconds since 1970, 1 s resolution).
    Rows are stored bottom first, as TIA does. ``version`` 0x0210 has 4-byte offsets,
    0x0220 8-byte ones. ``scan=(ny, nx)`` describes the elements as a 2-D scan grid
    (a 4D-STEM-like series); ``spectra`` writes 1-D elements (a spectrum series) instead.
    """
    path = Path(path)
    frames = np.asarray(frames)
    n = len(frames)
    offset_format = "<Q" if version > 0x0210 else "<I"
    dims = [(ny, 0.0, 1.0, "", "") for ny in scan] if scan else [(n, 0.0, frame_interval or 1.0, "Time" if frame_interval else "", "s" if frame_interval else "")]
    data_type_id = 0x4120 if spectra else 0x4122
    header = struct.pack("<HHHIIII", 0x4949, 0x0197, version, data_type_id, 0x4152, n, n)
    dim_bytes = b""
    for size, offset, delta, description, units in dims:
        dim_bytes += struct.pack("<Iddi", size, offset, delta, 0)
        dim_bytes += struct.pack("<I", len(description)) + description.encode()
        dim_bytes += struct.pack("<I", len(units)) + units.encode()
    head_size = len(header) + struct.calcsize(offset_format) + 4 + len(dim_bytes)
    offsets_size = 2 * n * struct.calcsize(offset_format)
    position = head_size + offsets_size
    elements, data_offsets, tag_offsets = [], [], []
    code = _SER_TYPES[frames.dtype.name]
    for i, frame in enumerate(frames):
        if spectra:
            values = frame.reshape(-1)
            element = struct.pack("<ddIHI", 0.0, 1.0, 0, code, values.size) + values.astype(values.dtype.newbyteorder("<")).tobytes()
        else:
            height, width = frame.shape
            element = struct.pack("<ddIddIHII", 0.0, pixel_size_m, 0, 0.0, pixel_size_m, 0, code, width, height)
            element += np.ascontiguousarray(frame[::-1]).astype(frame.dtype.newbyteorder("<")).tobytes()
        tag = struct.pack("<HHI", 0x4152, 0, times[i] if times else 0)
        data_offsets.append(position)
        tag_offsets.append(position + len(element))
        elements.append(element + tag)
        position += len(element) + len(tag)
    out = header + struct.pack(offset_format, len(header) + struct.calcsize(offset_format) + 4 + len(dim_bytes))
    out += struct.pack("<I", len(dims)) + dim_bytes
    out += b"".join(struct.pack(offset_format, o) for o in data_offsets + tag_offsets)
    path.write_bytes(out + b"".join(elements))
    return path


# --- Velox EMD (HDF5) ------------------------------------------------------------------


def write_velox_emd(
    path,
    frames: np.ndarray,
    *,
    pixel_size_m: float = 2.5e-10,
    unit: str = "m",
    frame_time: float | None = None,
    timestamps_s: list[float] | None = None,
    detector: str = "BM-Ceta",
    datasets: int = 1,
    compound: bool = False,
) -> Path:
    """Write ``(T, H, W)`` frames as a Velox EMD: ``Data/Image/<uuid>/Data`` of shape
    ``(H, W, T)`` chunked one frame a chunk, and ``Metadata``, a ``(bytes, T)`` uint8
    array holding one JSON document per frame (null-padded).

    The JSON carries ``BinaryResult.PixelSize`` (``pixel_size_m`` in ``unit``),
    ``Scan.FrameTime`` when ``frame_time`` is given, and, per frame,
    ``CustomProperties["Detectors[<detector>].TimeStamp"]`` in microseconds when
    ``timestamps_s`` is given. ``datasets`` > 1 writes that many image datasets (the
    first holds ``frames``, the others a single frame); ``compound`` stores the frames
    as Velox's FFT/DPC compound (complex) dtype.
    """
    import h5py

    path = Path(path)
    frames = np.asarray(frames)
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": 11}).encode()]))
        images = f.create_group("Data").create_group("Image")
        for k in range(datasets):
            data = frames if k == 0 else frames[:1]
            group = images.create_group(uuid.UUID(int=k + 1).hex)
            stored = np.moveaxis(data, 0, -1)
            if compound and k == 0:
                dtype = np.dtype([("realFloat", "<f4"), ("imagFloat", "<f4")])
                packed = np.empty(stored.shape, dtype)
                packed["realFloat"], packed["imagFloat"] = stored, 0
                stored = packed
            group.create_dataset("Data", data=stored, chunks=(*stored.shape[:2], 1))
            documents = []
            for i in range(len(data)):
                meta = {
                    "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1600000000"}},
                    "BinaryResult": {
                        "PixelSize": {"width": repr(pixel_size_m), "height": repr(pixel_size_m)},
                        "PixelUnitX": unit,
                        "PixelUnitY": unit,
                        "Offset": {"x": "0", "y": "0"},
                        "DetectorIndex": "0",
                    },
                    "Detectors": {"Detector-0": {"DetectorName": detector if k == 0 else f"{detector}-{k}", "ExposureTime": "0.04"}},
                    "Scan": {"FrameTime": repr(frame_time)} if frame_time else {},
                    "CustomProperties": {},
                    "Optics": {"AccelerationVoltage": "300000"},
                    "Instrument": {"InstrumentClass": "Titan"},
                }
                if timestamps_s is not None:
                    meta["CustomProperties"][f"Detectors[{detector}].TimeStamp"] = {
                        "type": "double",
                        "value": repr(round(timestamps_s[i] * 1e6)),
                    }
                documents.append(json.dumps(meta).encode())
            width = max(len(d) for d in documents) + 16
            table = np.zeros((width, len(data)), np.uint8)
            for i, document in enumerate(documents):
                table[: len(document), i] = np.frombuffer(document, np.uint8)
            group.create_dataset("Metadata", data=table)
    return path


# --- MRC -------------------------------------------------------------------------------


def write_mrc(path, frames: np.ndarray, *, voxel_size_a: float | None = 2.5, image_stack: bool = True) -> Path:
    """Write ``frames`` as an MRC file with mrcfile; ``voxel_size_a`` in Ångström."""
    import mrcfile

    path = Path(path)
    with mrcfile.new(path, data=frames, overwrite=True) as mrc:
        if voxel_size_a is not None:
            mrc.voxel_size = voxel_size_a
        if image_stack and frames.ndim == 3:
            mrc.set_image_stack()
    return path


def write_big_mrc(path, n_frames: int, height: int, width: int) -> Path:
    """An int16 MRC stack written frame by frame (never whole in memory); frame i holds i."""
    import mrcfile

    path = Path(path)
    with mrcfile.new_mmap(path, shape=(n_frames, height, width), mrc_mode=1, overwrite=True) as mrc:
        mrc.set_image_stack()
        for i in range(n_frames):
            mrc.data[i] = i
    return path


def truncate(path, keep: float = 0.6) -> Path:
    """Cut ``path`` to ``keep`` of its size, as an interrupted copy leaves it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
