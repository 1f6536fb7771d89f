"""Microscope files read by ``temtrack.sdk.sources.microscope``: Gatan DM3/DM4 stacks and
folder trees, Velox EMD, TIA SER and MRC, on files the tests write (``_microscope_files``).

One base class of checks runs for every format (pixels, order, calibration, times, one
image, truncation, complex data, the arguments, bounded memory, agreement of the
fixture with RosettaSciIO); the cases only a format has follow it. Gray values are
exact: the fixtures hold uint16 below 4096, read as 12-bit (0-4095).
"""

from __future__ import annotations

import gc
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from _microscope_files import (
    DARK_ROW,
    filetime,
    stack,
    truncate,
    write_big_mrc,
    write_dm,
    write_dm_folder,
    write_mrc,
    write_ser,
    write_velox_emd,
)
from temtrack.sdk.sources import FrameSource, SourceError
from temtrack.sdk.sources.microscope import MICROSCOPE_SUFFIXES, is_dm_folder, open_microscope

T0 = 1.6e9  # seconds since 1970 of frame 0 in the fixtures with timestamps


def gray12(raw) -> np.ndarray:
    """What the reader gives for uint16 data below 4096: float32, / 4095."""
    return np.asarray(raw).astype(np.float32) / np.float32(4095)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def read_all(path, **kwargs) -> tuple[FrameSource, list]:
    with open_microscope(path, **kwargs) as source:
        return source, list(source)


# --- the checks every format passes --------------------------------------------------


class FormatCase:
    """A format: how to write it, and what its reader reports for the default fixture
    (pixel size 0.25 nm; frames 0.25 s apart where the format records times)."""

    fmt: str
    suffix: str
    needs: tuple[str, ...] = ("rsciio",)
    fps: float | None = 4.0
    fps_source: str | None
    frame_times = "fps"
    unit: str
    big_frames = 1000

    @pytest.fixture(autouse=True)
    def _libraries(self):
        for module in self.needs:
            pytest.importorskip(module, reason=f"the formats extra ({module}) is not installed")

    def write(self, path: Path, frames: np.ndarray) -> Path:
        raise NotImplementedError

    def write_image(self, path: Path, image: np.ndarray) -> Path:
        return self.write(path, image[None])

    def write_complex(self, path: Path) -> Path:
        return self.write(path, stack(3).astype(np.complex64))

    def file_of(self, path: Path) -> Path:
        """The file of ``path`` to damage (a folder's first file)."""
        return path

    def rsciio_read(self, path: Path) -> tuple[np.ndarray, dict]:
        """RosettaSciIO's ``(data, x axis)`` of the fixture."""
        raise NotImplementedError

    def target(self, tmp_path: Path, name: str = "s") -> Path:
        return tmp_path / f"{name}{self.suffix}"

    def test_frames_values_order_and_times(self, tmp_path):
        frames = stack(5)
        source, got = read_all(self.write(self.target(tmp_path), frames))
        assert isinstance(source, FrameSource)
        assert (source.kind, source.metadata["format"]) == (self.fmt, self.fmt)
        assert (source.n_frames, source.shape) == (5, (32, 48))
        assert [f.index for f in got] == [0, 1, 2, 3, 4]
        for frame, raw in zip(got, frames):
            assert frame.image.dtype == np.float32
            np.testing.assert_array_equal(frame.image, gray12(raw))
        assert [int(np.argmin(f.image[:, 20])) for f in got] == [DARK_ROW + i for i in range(5)]  # order, orientation
        assert source.metadata["input_range"] == {"low": 0.0, "high": 4095.0, "source": "data", "frames_sampled": 5}
        assert source.metadata["fps_source"] == self.fps_source
        if self.fps is None:
            assert source.fps is None and all(math.isnan(f.time_s) for f in got)
            assert source.metadata["frame_times"] is None
        else:
            assert source.fps == pytest.approx(self.fps, rel=1e-6)
            assert [f.time_s for f in got] == pytest.approx([i / self.fps for i in range(5)], abs=1e-5)
            assert source.metadata["frame_times"] == self.frame_times

    def test_pixel_size_in_nm(self, tmp_path):
        source, _ = read_all(self.write(self.target(tmp_path), stack(2)))
        assert source.pixel_size_nm == pytest.approx(0.25, rel=1e-6)
        assert source.metadata["pixel_size_source"] == self.fmt.split("_")[0]
        assert source.metadata["pixel_size_unit"] == self.unit

    def test_one_image_is_a_one_frame_source_without_warning(self, tmp_path):
        image = stack(1)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            source, got = read_all(self.write_image(self.target(tmp_path), image))
        assert source.n_frames == 1 and len(got) == 1 and source.fps is None
        np.testing.assert_array_equal(got[0].image, gray12(image))

    @pytest.mark.parametrize("keep", [0.05, 0.6, 0.97])
    def test_truncated_file_is_an_error_naming_it(self, tmp_path, keep):
        path = self.write(self.target(tmp_path), stack(5))
        damaged = truncate(self.file_of(path), keep)
        with pytest.raises(SourceError, match=re.escape(str(damaged)) + r".*cannot be read \(truncated or corrupt\)"):
            read_all(path)

    def test_complex_data_are_refused(self, tmp_path):
        path = self.write_complex(self.target(tmp_path))
        with pytest.raises(SourceError, match=r"holds complex data .*export the amplitude or the phase"):
            read_all(path)

    def test_arguments_override_the_file(self, tmp_path):
        frames = stack(3)
        source, got = read_all(self.write(self.target(tmp_path), frames), fps=10.0, pixel_size_nm=1.5, input_range=(0, 8000))
        assert (source.fps, source.pixel_size_nm) == (10.0, 1.5)
        assert [f.time_s for f in got] == pytest.approx([0.0, 0.1, 0.2])
        meta = source.metadata
        assert (meta["fps_source"], meta["pixel_size_source"], meta["frame_times"]) == ("argument", "argument", "fps")
        assert meta["input_range"] == {"low": 0.0, "high": 8000.0, "source": "argument", "frames_sampled": 0}
        np.testing.assert_array_equal(got[2].image, frames[2].astype(np.float32) / np.float32(8000))

    def test_bad_arguments(self, tmp_path):
        path = self.write(self.target(tmp_path), stack(2))
        with pytest.raises(ValueError, match="fps must be positive"):
            open_microscope(path, fps=-1.0)
        with pytest.raises(ValueError, match="input_range"):
            open_microscope(path, input_range=(5, 1))
        with pytest.raises(FileNotFoundError, match="not found"):
            open_microscope(tmp_path / f"missing{self.suffix}")

    @pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
    def test_memory_stays_bounded(self, tmp_path):
        """A long file is read a frame at a time: opening it and reading a few frames
        does not bring the file into memory."""
        read_all(self.write(self.target(tmp_path, "warm"), stack(2)))  # libraries imported, caches warm
        path = self.write_big(self.target(tmp_path, "big"))
        size = path.stat().st_size
        assert size > 30e6
        gc.collect()
        before = rss_bytes()
        with open_microscope(path) as source:
            assert source.n_frames == self.big_frames
            frames = list(source.frames(end=5)) + list(source.frames(start=self.big_frames - 1))
            grown = rss_bytes() - before  # while open: a memory map's pages count once touched
        assert [f.index for f in frames] == [0, 1, 2, 3, 4, self.big_frames - 1]
        assert round(float(frames[-1].image[0, 1]) * 65535) == (self.big_frames - 1) % 4096  # the last frame
        assert grown < size / 4, f"reading 6 frames grew memory by {grown / 1e6:.1f} MB of a {size / 1e6:.1f} MB file"

    def write_big(self, path: Path) -> Path:
        frames = np.empty((self.big_frames, 128, 128), np.uint16)
        frames[:] = (np.arange(self.big_frames) % 4096)[:, None, None]
        frames[:, 0, 0] = 65535  # full range: 0-65535, so the test reads the values back
        return self.write(path, frames)

    def test_fixture_agrees_with_rosettasciio(self, tmp_path):
        frames = stack(4)
        data, x_axis = self.rsciio_read(self.write(self.target(tmp_path), frames))
        np.testing.assert_array_equal(np.asarray(data).reshape(frames.shape), frames)
        scale = float(x_axis["scale"]) * {"nm": 1.0, "Å": 0.1}[x_axis["units"]]
        assert scale == pytest.approx(0.25, rel=1e-6)


class TestDM4(FormatCase):
    fmt, suffix, fps_source, unit = "dm", ".dm4", "dm", "nm"
    version = 4

    def write(self, path, frames):
        return write_dm(path, frames, version=self.version, frame_interval=0.25)

    def write_image(self, path, image):
        return write_dm(path, image, version=self.version)

    def rsciio_read(self, path):
        import rsciio.digitalmicrograph

        (dataset,) = rsciio.digitalmicrograph.file_reader(str(path))
        return dataset["data"], dataset["axes"][-1]


class TestDM3(TestDM4):
    suffix, version = ".dm3", 3


class TestDMFolder(FormatCase):
    fmt, suffix, fps_source, unit = "dm_folder", "", "dm_folder_timestamps", "nm"
    frame_times = "timestamps"

    def write(self, path, frames):
        write_dm_folder(path, frames, fps=4.0, start_s=T0)
        return path

    def write_complex(self, path):
        write_dm_folder(path, stack(3).astype(np.complex64))
        return path

    def file_of(self, path):
        return min(path.rglob("*.dm4"))

    def rsciio_read(self, path):
        import rsciio.digitalmicrograph

        files = sorted(path.rglob("*.dm4"))
        datasets = [rsciio.digitalmicrograph.file_reader(str(f))[0] for f in files]
        return np.stack([d["data"] for d in datasets]), datasets[0]["axes"][-1]

    def test_memory_stays_bounded(self, tmp_path):
        pytest.skip("a folder is read one file per frame by construction; 1000 files would only slow the suite")


class TestSER(FormatCase):
    fmt, suffix, fps_source, unit = "ser", ".ser", "ser", "m"
    needs = ()

    def write(self, path, frames):
        return write_ser(path, frames, frame_interval=0.25)

    def rsciio_read(self, path):
        pytest.importorskip("rsciio")
        import rsciio.tia

        (dataset,) = rsciio.tia.file_reader(str(path))
        return dataset["data"], dataset["axes"][-1]


class TestVeloxEMD(FormatCase):
    fmt, suffix, fps_source, unit = "emd", ".emd", "emd_timestamps", "m"
    needs = ("h5py",)
    frame_times = "timestamps"

    def write(self, path, frames):
        return write_velox_emd(path, frames, timestamps_s=[T0 + 0.25 * i for i in range(len(frames))])

    def write_complex(self, path):
        return write_velox_emd(path, stack(3).astype(np.float32), compound=True)

    def rsciio_read(self, path):
        pytest.importorskip("rsciio")
        import rsciio.emd

        (dataset,) = rsciio.emd.file_reader(str(path))
        return dataset["data"], dataset["axes"][-1]


class TestMRC(FormatCase):
    fmt, suffix, fps_source, unit = "mrc", ".mrc", None, "Å"
    needs = ("mrcfile",)
    fps = None
    big_frames = 2000

    def write(self, path, frames):
        return write_mrc(path, frames)

    def write_image(self, path, image):
        return write_mrc(path, image)

    def write_big(self, path):
        path = write_big_mrc(path, self.big_frames, 128, 128)
        import mrcfile

        with mrcfile.open(path, mode="r+") as mrc:  # full range, as the base class's frames
            mrc.data[:, 0, 0] = -1
            mrc.data[:, 0, 1] = np.arange(self.big_frames) % 4096
        return path

    def test_memory_stays_bounded(self, tmp_path):
        # int16 frames: -1 .. 4095 mapped from the sampled data; check the values directly
        path = self.write_big(self.target(tmp_path, "big"))
        read_all(write_mrc(self.target(tmp_path, "warm"), stack(2)))
        size = path.stat().st_size
        gc.collect()
        before = rss_bytes()
        with open_microscope(path) as source:
            assert source.n_frames == self.big_frames and source.metadata["access"] == "read"
            low, high = source.metadata["input_range"]["low"], source.metadata["input_range"]["high"]
            frames = list(source.frames(end=5)) + list(source.frames(start=self.big_frames - 1))
            grown = rss_bytes() - before
        last = float(frames[-1].image[0, 1]) * (high - low) + low
        assert round(last) == (self.big_frames - 1) % 4096
        assert grown < size / 4, f"reading 6 frames grew memory by {grown / 1e6:.1f} MB of a {size / 1e6:.1f} MB file"

    def rsciio_read(self, path):
        import mrcfile

        with mrcfile.open(path) as mrc:
            return mrc.data.copy(), {"scale": float(mrc.voxel_size.x), "units": "Å"}


# --- Gatan DM files ---------------------------------------------------------------------

needs_rsciio = pytest.mark.skipif(
    __import__("importlib").util.find_spec("rsciio") is None, reason="the formats extra (rsciio) is not installed"
)


@needs_rsciio
@pytest.mark.parametrize(
    ("unit", "scale", "nm"),
    [("µm", 0.0005, 0.5), ("um", 0.002, 2.0), ("Å", 2.5, 0.25), ("pm", 250.0, 0.25), ("1/nm", 0.1, None), ("", 1.0, None)],
)
def test_dm_pixel_size_units(tmp_path, unit, scale, nm):
    source, _ = read_all(write_dm(tmp_path / "s.dm4", stack(2), pixel_size=scale, unit=unit))
    if nm is None:
        assert source.pixel_size_nm is None and source.metadata["pixel_size_source"] is None
    else:
        assert source.pixel_size_nm == pytest.approx(nm, rel=1e-6)
    assert source.metadata["pixel_size_unit"] == (unit or None)


@needs_rsciio
def test_dm_time_axis_in_ms_and_uncalibrated(tmp_path):
    source, got = read_all(write_dm(tmp_path / "ms.dm4", stack(3), frame_interval=40.0, time_unit="ms"))
    assert source.fps == pytest.approx(25.0) and got[2].time_s == pytest.approx(0.08)
    source, got = read_all(write_dm(tmp_path / "none.dm4", stack(3)))
    assert source.fps is None and source.metadata["fps_source"] is None and math.isnan(got[1].time_s)


@needs_rsciio
def test_dm_reads_the_image_not_the_thumbnail_or_smaller_images(tmp_path):
    frames = stack(3)
    path = write_dm(tmp_path / "s.dm4", frames, thumbnail=True, extra_images=[np.ones((8, 8), np.uint8)])
    source, got = read_all(path)
    assert source.n_frames == 3 and source.metadata["images_in_file"] == 2
    np.testing.assert_array_equal(got[1].image, gray12(frames[1]))


@needs_rsciio
def test_dm_colour_image_is_read_as_luma(tmp_path):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    source, got = read_all(write_dm(tmp_path / "rgb.dm4", rgb, rgb=True))
    assert source.shape == (16, 24) and source.metadata["dtype"] == "uint8 RGBA"
    np.testing.assert_allclose(got[0].image, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, rtol=1e-6)


@needs_rsciio
def test_dm_float_data_in_unit_range_are_kept(tmp_path):
    frames = (stack(3) / 4000.0).astype(np.float32)
    source, got = read_all(write_dm(tmp_path / "f.dm4", frames))
    assert source.metadata["input_range"]["source"] == "dtype"
    np.testing.assert_array_equal(got[2].image, frames[2])


@needs_rsciio
@pytest.mark.parametrize(
    ("shape", "tags", "match"),
    [
        ((3, 4, 32, 48), {}, r"holds a 4-D dataset \(e.g. a 4D-STEM scan"),
        ((2, 3, 4, 8, 8), {}, r"holds a 5-D dataset"),
        ((100,), {}, r"holds 1-D data \(a spectrum or a profile\), shape \(100,\)"),
        ((4, 5, 64), {"Meta Data": {"Format": "Spectrum image", "Signal": "EELS"}}, r"holds a spectrum image"),
    ],
)
def test_dm_data_that_are_not_images_are_refused(tmp_path, shape, tags, match):
    path = write_dm(tmp_path / "x.dm4", np.zeros(shape, np.float32), tags=tags)
    with pytest.raises(SourceError, match=re.escape(str(path)) + " " + match):
        open_microscope(path)


@needs_rsciio
def test_not_a_dm_file(tmp_path):
    path = tmp_path / "x.dm4"
    path.write_bytes(b"\x00\x00\x00\x07" + bytes(100))
    with pytest.raises(SourceError, match=re.escape(str(path)) + " cannot be read as a Gatan DM3/DM4 file"):
        open_microscope(path)


# --- folder trees of DM files -----------------------------------------------------------


@needs_rsciio
def test_dm_folder_without_timestamps_counts_frames_per_second(tmp_path):
    write_dm_folder(tmp_path / "run", stack(10), fps=4.0, timestamps=False)
    source, got = read_all(tmp_path / "run")
    assert source.fps == 4.0 and source.metadata["fps_source"] == "dm_folder_names"
    assert source.metadata["frame_times"] == "fps" and got[9].time_s == pytest.approx(2.25)
    assert source.metadata["first_file"] == "Hour_00/Minute_00/Second_00/In situ_Hour_00_Minute_00_Second_00_Frame_0000.dm4"


@needs_rsciio
def test_dm_folder_times_come_from_each_file(tmp_path):
    """Uneven frame times are kept: each frame's time is its own timestamp."""
    folder = tmp_path / "uneven"
    folder.mkdir()
    times = [0.0, 0.1, 0.35, 0.4]
    for i, t in enumerate(times):
        write_dm(folder / f"frame_{i}.dm4", stack(4)[i], tags={"DataBar": {"Acquisition Time (OS)": filetime(T0 + t)}})
    source, got = read_all(folder)
    assert [f.time_s for f in got] == pytest.approx(times, abs=1e-5)
    assert source.fps == pytest.approx(3 / 0.4) and source.metadata["fps_source"] == "dm_folder_timestamps"


@needs_rsciio
def test_flat_dm_folder_in_natural_order(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    frames = stack(12)
    for i in (11, 0, 10, 2, 1, 9, 3, 8, 4, 7, 5, 6):  # written out of order
        write_dm(folder / f"frame{i}.dm3", frames[i], version=3)
    (folder / ".frame99.dm3").write_bytes(b"hidden: ignored")
    source, got = read_all(folder)
    assert source.n_frames == 12 and source.metadata["last_file"] == "frame11.dm3"
    assert [int(np.argmin(f.image[:, 20])) for f in got] == [(DARK_ROW + i) % 32 for i in range(12)]


@needs_rsciio
@pytest.mark.parametrize(
    ("skip", "after", "before"),
    [
        ((5,), "Second_01_Frame_0000.dm4", "Second_01_Frame_0002.dm4"),  # a frame within a second
        ((4, 5, 6, 7), "Second_00_Frame_0003.dm4", "Second_02_Frame_0000.dm4"),  # a whole second
        ((4,), "Second_00_Frame_0003.dm4", "Second_01_Frame_0001.dm4"),  # the first frame of a second
    ],
)
def test_dm_folder_gap_warns_and_reads_on(tmp_path, skip, after, before):
    frames = stack(12)
    write_dm_folder(tmp_path / "run", frames, fps=4.0, start_s=T0, skip=skip)
    with pytest.warns(UserWarning, match=rf"run: frames missing from the numbering between .*{after} and .*{before}") as caught:
        source, got = read_all(tmp_path / "run")
    assert "read as consecutive frames; time_s comes from the files' timestamps" in str(caught[0].message)
    kept = [i for i in range(12) if i not in skip]
    assert [f.index for f in got] == list(range(len(kept)))
    assert [f.time_s for f in got] == pytest.approx([i / 4.0 for i in kept], abs=1e-5)  # the gap shows in time
    for frame, i in zip(got, kept):
        np.testing.assert_array_equal(frame.image, gray12(frames[i]))
    assert source.metadata["n_gaps"] == 1 and source.metadata["gaps"][0]["after"].endswith(after)


@needs_rsciio
def test_flat_dm_folder_gap_in_a_running_number(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in (1, 2, 4, 5):
        write_dm(folder / f"img_{i:03d}.dm4", stack(6)[i])
    with pytest.warns(UserWarning, match="between img_002.dm4 and img_004.dm4"):
        _, got = read_all(folder)
    assert len(got) == 4


@needs_rsciio
def test_dm_folder_mixed_pixel_sizes_warn_once_and_keep_the_first(tmp_path):
    write_dm_folder(tmp_path / "run", stack(10), pixel_sizes={6: 0.5, 7: 0.5})
    with pytest.warns(UserWarning) as caught:
        source, _ = read_all(tmp_path / "run")
    messages = [str(w.message) for w in caught if "pixel size" in str(w.message)]
    assert len(messages) == 1
    assert re.search(r"Second_01_Frame_000[23]\.dm4 has pixel size 0\.5 nm, but the first file .*Frame_0000\.dm4 has 0\.25 nm", messages[0])
    assert source.pixel_size_nm == pytest.approx(0.25)


@needs_rsciio
def test_dm_folder_file_holding_a_stack_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    write_dm(folder / "a_0.dm4", stack(1)[0])
    write_dm(folder / "a_1.dm4", stack(3))
    with pytest.raises(SourceError, match=r"a_1.dm4 holds 3 frames, but the files of a folder sequence must hold one"):
        read_all(folder)


@needs_rsciio
def test_dm_folder_frame_of_another_shape_names_the_file(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for i in range(3):
        write_dm(folder / f"a_{i}.dm4", stack(3)[i])
    write_dm(folder / "a_3.dm4", np.zeros((16, 16), np.uint16))
    with pytest.raises(SourceError, match=r"a_3.dm4: frame 3 has shape \(16, 16\), frame 0 \(32, 48\)"):
        read_all(folder)


def test_is_dm_folder(tmp_path):
    deep = tmp_path / "run" / "Hour_00" / "Minute_00" / "Second_00"
    deep.mkdir(parents=True)
    assert not is_dm_folder(tmp_path / "run")
    (deep / "._x_Frame_0000.dm4").write_bytes(b"")  # a macOS resource fork: ignored
    assert not is_dm_folder(tmp_path / "run")
    (deep / "x_Frame_0000.dm4").write_bytes(b"")
    assert is_dm_folder(tmp_path / "run") and is_dm_folder(deep)
    assert not is_dm_folder(deep / "x_Frame_0000.dm4") and not is_dm_folder(tmp_path / "missing")
    (tmp_path / "run" / "Hour_00" / "preview.png").write_bytes(b"")  # images below the top do not count
    assert is_dm_folder(tmp_path / "run")
    (tmp_path / "run" / "frame.tif").write_bytes(b"")
    assert not is_dm_folder(tmp_path / "run")


def test_folder_without_dm_files_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(SourceError, match="is not a folder of Gatan DM files"):
        open_microscope(tmp_path)


# --- Velox EMD --------------------------------------------------------------------------

needs_h5py = pytest.mark.skipif(
    __import__("importlib").util.find_spec("h5py") is None, reason="the formats extra (h5py) is not installed"
)


@needs_h5py
def test_emd_uneven_timestamps_are_the_frame_times(tmp_path):
    times = [0.0, 0.25, 0.75, 1.0, 1.5]
    source, got = read_all(write_velox_emd(tmp_path / "s.emd", stack(5), timestamps_s=[T0 + t for t in times]))
    assert [f.time_s for f in got] == pytest.approx(times, abs=1e-5)
    assert source.metadata["frame_times_s"] == pytest.approx(times, abs=1e-5)
    assert source.fps == pytest.approx(4 / 1.5)


@needs_h5py
def test_emd_frame_time_without_timestamps(tmp_path):
    source, got = read_all(write_velox_emd(tmp_path / "s.emd", stack(3), frame_time=0.5))
    assert source.fps == 2.0 and source.metadata["fps_source"] == "emd" and source.metadata["frame_times"] == "fps"
    assert "frame_times_s" not in source.metadata and got[2].time_s == 1.0
    source, got = read_all(write_velox_emd(tmp_path / "n.emd", stack(3)))
    assert source.fps is None and source.metadata["fps_source"] is None and math.isnan(got[1].time_s)


@needs_h5py
def test_emd_pixel_size_in_nm_units(tmp_path):
    source, _ = read_all(write_velox_emd(tmp_path / "s.emd", stack(2), pixel_size_m=0.4, unit="nm"))
    assert source.pixel_size_nm == pytest.approx(0.4) and source.metadata["pixel_size_unit"] == "nm"


@needs_h5py
def test_emd_with_several_detectors_reads_the_longest_and_says_so(tmp_path):
    frames = stack(4)
    path = write_velox_emd(tmp_path / "s.emd", frames, datasets=3, detector="HAADF")
    with pytest.warns(UserWarning, match=r"holds 3 image datasets \(HAADF, HAADF-1, HAADF-2\); reading HAADF \(4 frames\)"):
        source, got = read_all(path)
    assert source.n_frames == 4 and source.metadata["detector"] == "HAADF"
    np.testing.assert_array_equal(got[3].image, gray12(frames[3]))


@needs_h5py
def test_emd_that_is_not_velox_nor_readable(tmp_path):
    import h5py

    path = tmp_path / "other.emd"
    with h5py.File(path, "w") as f:
        f.create_group("nothing")
    pytest.importorskip("rsciio")
    with pytest.raises(SourceError, match=re.escape(str(path)) + " cannot be read as EMD"):
        open_microscope(path)


# --- TIA SER ----------------------------------------------------------------------------


def test_ser_with_four_byte_offsets(tmp_path):
    frames = stack(3)
    source, got = read_all(write_ser(tmp_path / "old.ser", frames, version=0x0210))
    assert source.metadata["series_version"] == 0x0210
    np.testing.assert_array_equal(got[2].image, gray12(frames[2]))


def test_ser_frame_rate_from_time_tags_only_over_a_long_series(tmp_path):
    source, got = read_all(write_ser(tmp_path / "long.ser", stack(11), times=[100 + 2 * i for i in range(11)]))
    assert source.fps == pytest.approx(0.5) and source.metadata["fps_source"] == "ser_time_tags"
    assert got[3].time_s == pytest.approx(6.0)
    source, _ = read_all(write_ser(tmp_path / "short.ser", stack(5), times=[100, 100, 101, 101, 102]))
    assert source.fps is None  # whole seconds over 2 s say too little


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spectra": True}, r"holds spectra \(1-D data elements\)"),
        ({"scan": (2, 3)}, r"holds a 2-D scan of images \(e.g. 4D-STEM"),
    ],
)
def test_ser_that_is_not_a_series_of_images_is_refused(tmp_path, kwargs, match):
    path = write_ser(tmp_path / "x.ser", stack(6), **kwargs)
    with pytest.raises(SourceError, match=re.escape(str(path)) + " " + match):
        open_microscope(path)


def test_ser_signature_is_checked(tmp_path):
    path = tmp_path / "x.ser"
    path.write_bytes(bytes(200))
    with pytest.raises(SourceError, match="is not a TIA series file"):
        open_microscope(path)


def test_emi_reads_its_one_ser_file(tmp_path):
    frames = stack(3)
    write_ser(tmp_path / "acq_1.ser", frames)
    (tmp_path / "acq.emi").write_bytes(b"<ObjectInfo></ObjectInfo>")
    source, got = read_all(tmp_path / "acq.emi")
    assert source.name == str(tmp_path / "acq_1.ser") and len(got) == 3
    write_ser(tmp_path / "acq_2.ser", frames)
    with pytest.raises(SourceError, match=r"has 2 data files \(acq_1.ser, acq_2.ser\); open the .ser file"):
        open_microscope(tmp_path / "acq.emi")
    (tmp_path / "lone.emi").write_bytes(b"")
    with pytest.raises(SourceError, match=r"no data file lone_1.ser beside this .emi file"):
        open_microscope(tmp_path / "lone.emi")


# --- MRC --------------------------------------------------------------------------------

needs_mrcfile = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mrcfile") is None, reason="the formats extra (mrcfile) is not installed"
)


@needs_mrcfile
@pytest.mark.parametrize("suffix", [".mrcs", ".st", ".ali"])
def test_mrc_suffixes(tmp_path, suffix):
    frames = stack(3)
    source, got = read_all(write_mrc(tmp_path / f"s{suffix}", frames))
    assert source.kind == "mrc" and len(got) == 3
    np.testing.assert_array_equal(got[1].image, gray12(frames[1]))


@needs_mrcfile
def test_mrc_volume_and_uncalibrated(tmp_path):
    source, _ = read_all(write_mrc(tmp_path / "v.mrc", stack(3), voxel_size_a=None, image_stack=False))
    assert source.metadata["mrc_kind"] == "volume" and source.pixel_size_nm is None
    assert source.metadata["pixel_size_source"] is None


@needs_mrcfile
def test_mrc_stack_of_volumes_is_refused(tmp_path):
    path = write_mrc(tmp_path / "v4.mrc", np.zeros((2, 3, 8, 8), np.int16))
    with pytest.raises(SourceError, match=re.escape(str(path)) + r" holds a 4-D dataset \(a stack of volumes\)"):
        open_microscope(path)


@needs_mrcfile
def test_mrc_with_a_non_standard_header_is_read_with_a_warning(tmp_path):
    frames = stack(3)
    path = write_mrc(tmp_path / "odd.mrc", frames)
    data = bytearray(path.read_bytes())
    data[208:212] = b"XXXX"  # the map ID some writers get wrong
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"odd.mrc: the MRC header does not follow the standard .*read anyway"):
        _, got = read_all(path)
    np.testing.assert_array_equal(got[2].image, gray12(frames[2]))


# --- every format -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "module", "package"),
    [(".dm4", "rsciio.digitalmicrograph", "RosettaSciIO"), (".dm3", "rsciio.digitalmicrograph", "RosettaSciIO"),
     (".emd", "h5py", "h5py"), (".mrc", "mrcfile", "mrcfile")],
)  # fmt: skip
def test_missing_library_says_how_to_install_it(tmp_path, monkeypatch, suffix, module, package):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(bytes(100))
    monkeypatch.setitem(sys.modules, module, None)  # the import fails as when not installed
    with pytest.raises(ModuleNotFoundError, match=re.escape(f"reading {suffix} files needs {package}: pip install 'tem-track[formats]'")):
        open_microscope(path)


def test_unknown_suffix_lists_the_formats(tmp_path):
    path = tmp_path / "x.xyz"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"\.xyz is not a microscope format; allowed: \.dm3, \.dm4, \.emd"):
        open_microscope(path)
    assert MICROSCOPE_SUFFIXES == (".dm3", ".dm4", ".emd", ".ser", ".emi", ".mrc", ".mrcs", ".st", ".ali")


def test_import_loads_no_format_library():
    code = (
        "import sys, temtrack.sdk.sources.microscope\n"
        "print(sorted(m for m in ('rsciio', 'h5py', 'mrcfile', 'dask') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _real_files() -> list[Path]:
    """Microscope files shipped with RosettaSciIO's tests or in the team's real data."""
    roots = []
    try:
        import rsciio

        roots.append(Path(rsciio.__file__).parent / "tests" / "data")
    except ImportError:
        pass
    roots.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real")
    found = []
    for root in roots:
        if root.is_dir():
            found += [p for p in sorted(root.rglob("*")) if p.suffix.lower() in MICROSCOPE_SUFFIXES and p.is_file()]
    return found[:60]


@pytest.mark.parametrize("path", _real_files() or [None], ids=lambda p: p.name if p else "none")
def test_real_files_open_or_are_refused_clearly(path):
    if path is None:
        pytest.skip("no real microscope files here (RosettaSciIO's wheel ships no test data)")
    try:
        with open_microscope(path) as source:
            frame = next(iter(source))
    except SourceError as err:  # spectra, 4D-STEM, complex: refused with the file's name
        assert str(path) in str(err)
        return
    assert frame.image.dtype == np.float32 and np.isfinite(frame.image).all()


def test_main_job_reads_a_dm4_stack_with_its_calibration(tmp_path):
    """A synthetic pile-up video saved as a DM4 stack (16-bit, 0.5 nm/px, 0.1 s per frame)
    runs through ``tem-track`` like the video itself, and the outputs are in nm and s."""
    import pandas as pd

    from temtrack.cli import main
    from temtrack.sdk.results import read_metadata
    from temtrack.sdk.sources import open_source
    from temtrack.training.synth import resolve_config
    from temtrack.training.synth.video import VideoSettings, write_video

    video, _ = write_video(tmp_path / "v", resolve_config("sd1", size=96), 3, VideoSettings(frames=6), progress=False)
    with open_source(video) as source:
        frames = np.stack([(f.image * 65535).round().astype(np.uint16) for f in source.frames()])
    dm4 = write_dm(tmp_path / "stack.dm4", frames, pixel_size=0.5, unit="nm", frame_interval=0.1)
    common = ["--backend", "classical", "--quiet", "--workers", "0", "--no-summary"]
    assert main([str(dm4), "--out", str(tmp_path / "dm.parquet"), *common]) == 0
    assert main([str(video), "--out", str(tmp_path / "mp4.parquet"), *common]) == 0
    from_dm, from_video = pd.read_parquet(tmp_path / "dm.parquet"), pd.read_parquet(tmp_path / "mp4.parquet")
    assert len(from_dm) == len(from_video) > 0  # the same frames, the same dislocations
    np.testing.assert_allclose(from_dm.length_nm, from_dm.length_px * 0.5)
    np.testing.assert_allclose(from_dm.time_s, from_dm.frame * 0.1, atol=1e-9)
    meta = read_metadata(tmp_path / "dm.parquet")
    assert meta["pixel_size_nm"] == pytest.approx(0.5) and meta["fps"] == pytest.approx(10.0)
    assert meta["input"]["kind"] == "dm" and meta["input"]["metadata"]["pixel_size_source"] == "dm"
