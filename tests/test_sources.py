"""Frame sources: videos, TIFF stacks, image folders, globs, arrays and iterators."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import cv2
import numpy as np
import pytest
import tifffile

from temtrack.sdk.sources import Frame, FrameSource, SourceError, open_source
from temtrack.training.synth import resolve_config
from temtrack.training.synth.video import VideoSettings, iter_video, write_video

SEED = 5
SYNTH = dict(frames=20)  # write_video's mp4: 15 fps, one keyframe


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A write_video folder (video.mp4 + ground truth) shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("synth") / "video"
    write_video(folder, resolve_config("sd1", size=128), SEED, VideoSettings(**SYNTH), progress=False)
    return folder / "video.mp4"


def encode(path, n=30, *, shape=(48, 64), rate=15, gop=5, bframes=2, offset=0, fmt=None, options=None, bits=8):
    """A small H.264 video of a moving pattern, with keyframes every `gop` frames and B-frames.

    ``offset`` shifts every timestamp (the first pts is then not 0), ``options`` are muxer
    options (e.g. faststart), ``bits=10`` encodes yuv420p10le.
    """
    import av

    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=Fraction(rate))
        stream.height, stream.width = shape
        stream.pix_fmt = "yuv420p10le" if bits > 8 else "yuv420p"
        stream.options = {"crf": "18", "g": str(gop), "bf": str(bframes), "sc_threshold": "0"}
        for i in range(n):
            level = (np.sin(xx / 4.0 + yy / 7.0 + i / 3.0) + 1.0) * 0.4 + 0.1
            if bits > 8:
                frame = av.VideoFrame.from_ndarray(np.round(level * 65535).astype(np.uint16), format="gray16le")
            else:
                frame = av.VideoFrame.from_ndarray(np.round(level * 255).astype(np.uint8), format="gray")
            frame.pts, frame.time_base = i + offset, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def same_frames(got, want):
    assert [f.index for f in got] == [f.index for f in want]
    for a, b in zip(got, want):
        assert a.time_s == b.time_s or (math.isnan(a.time_s) and math.isnan(b.time_s))
        np.testing.assert_array_equal(a.image, b.image)


# --- videos ---------------------------------------------------------------------------


def test_import_does_not_load_av_or_tifffile():
    code = "import sys, temtrack.sdk.sources; print('av' in sys.modules, 'tifffile' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_synthetic_video_round_trip(synthetic):
    truth = list(iter_video(resolve_config("sd1", size=128), SEED, VideoSettings(**SYNTH)))
    with open_source(synthetic) as source:
        assert (source.kind, source.name, source.shape) == ("video", str(synthetic), (128, 128))
        assert source.fps == 15.0 and source.n_frames == 20 and source.pixel_size_nm is None
        assert source.metadata["codec"] == "h264" and source.metadata["frames_exact"] is True
        frames = list(source)
    assert [f.index for f in frames] == list(range(20))
    for frame, want in zip(frames, truth):
        assert isinstance(frame, Frame)
        assert frame.image.dtype == np.float32 and frame.image.shape == (128, 128)
        assert 0.0 <= frame.image.min() and frame.image.max() <= 1.0
        assert np.abs(frame.image - want.image).mean() < 3 / 255  # H.264 at crf 18
        assert frame.time_s == pytest.approx(frame.index / 15.0, abs=1e-6)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("gop.mp4", {}),
        ("offset.mkv", {"offset": 7, "fmt": "matroska"}),  # ms timestamps, first pts not 0
        ("offset.ts", {"offset": 7, "fmt": "mpegts"}),  # imprecise seeks
        ("offset.mp4", {"offset": 7}),
    ],
)
def test_resume_gives_the_frames_of_a_full_pass(tmp_path, name, kwargs):
    path = encode(tmp_path / name, **kwargs)
    with open_source(path) as source:
        full = list(source.frames())
        assert [f.index for f in full] == list(range(30))
        assert full[0].time_s == 0.0
        for start in range(0, 32):
            same_frames(list(source.frames(start=start)), full[start:])
        same_frames(list(source.frames(start=7, end=23, every=4)), [full[i] for i in (7, 11, 15, 19)])


def test_resume_single_keyframe_video(synthetic):
    with open_source(synthetic) as source:
        full = list(source.frames())
        for start in (1, 9, 19):
            same_frames(list(source.frames(start=start)), full[start:])


def test_start_end_every(synthetic):
    with open_source(synthetic) as source:
        assert [f.index for f in source.frames(start=3, end=12, every=4)] == [3, 7, 11]
        assert [f.index for f in source.frames(end=2)] == [0, 1]
        assert [f.index for f in source.frames(start=18, every=5)] == [18]
        assert list(source.frames(start=25)) == []
        assert list(source.frames(start=4, end=4)) == []
    stack = np.arange(10 * 4 * 5, dtype=np.uint8).reshape(10, 4, 5)
    with open_source(stack) as source:
        assert [f.index for f in source.frames(start=1, every=3)] == [1, 4, 7]
        assert [f.index for f in source.frames(start=8, end=100)] == [8, 9]


def test_frames_arguments_are_validated(synthetic):
    with open_source(synthetic) as source:
        with pytest.raises(ValueError, match="start"):
            source.frames(start=-1)
        with pytest.raises(ValueError, match="every"):
            source.frames(every=0)
        with pytest.raises(ValueError, match="end"):
            source.frames(start=5, end=2)
        with pytest.raises(TypeError, match="start"):
            source.frames(start=1.5)
    with pytest.raises(ValueError, match="closed"):
        source.frames()


def test_fps_argument_sets_times_not_indices(synthetic):
    with open_source(synthetic, fps=30.0, pixel_size_nm=0.5) as source:
        frames = list(source.frames(end=4))
        assert source.fps == 30.0 and source.pixel_size_nm == 0.5
        assert source.metadata["fps_source"] == "argument"
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.time_s for f in frames] == [i / 30.0 for i in range(4)]


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2.0, ValueError), (math.nan, ValueError),
                                          (math.inf, ValueError), ("10", TypeError), (True, TypeError)])
def test_fps_and_pixel_size_are_validated(value, error):
    with pytest.raises(error, match="fps"):
        open_source(np.zeros((2, 3, 3)), fps=value)
    with pytest.raises(error, match="pixel_size_nm"):
        open_source(np.zeros((2, 3, 3)), pixel_size_nm=value)


def test_ten_bit_video_decodes_to_sixteen_bit_levels(tmp_path):
    path = encode(tmp_path / "ten.mkv", n=3, fmt="matroska", bits=10, gop=1, bframes=0)
    with open_source(path) as source:
        assert source.metadata["bit_depth"] == 10
        image = next(iter(source)).image
    # The pattern spans 0.1-0.9; an 8-bit path would show steps of 1/255.
    assert 0.05 < image.min() < 0.15 and 0.85 < image.max() < 0.95
    assert len(np.unique(image)) > 256


# --- video errors ----------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        open_source(tmp_path / "nothere.mp4")


def test_truncated_video_is_reported(tmp_path, synthetic):
    data = synthetic.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])  # write_video puts the index (moov) last: it is lost
    with pytest.raises(SourceError, match=r"half\.mp4 cannot be decoded.*truncated or corrupt"):
        open_source(half)


def test_video_failing_midway_names_the_frame_reached(tmp_path):
    # With the index first (faststart) a cut file opens, and decoding fails where the data ends.
    data = encode(tmp_path / "whole.mp4", options={"movflags": "+faststart"}).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with open_source(cut) as source:
        assert source.n_frames == 30
        seen = []
        with pytest.raises(SourceError, match=r"cut\.mp4.*after frame \d+.*truncated or corrupt") as info:
            for frame in source:
                seen.append(frame.index)
    assert 0 < len(seen) < 30 and f"after frame {seen[-1]}" in str(info.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(SourceError, match=r"noise\.mp4 cannot be decoded"):
        open_source(path)


def test_empty_video(tmp_path):
    import av

    path = tmp_path / "empty.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(SourceError, match=r"empty\.avi contains no frames"):
        open_source(path)


@pytest.mark.parametrize("name, content", [("notes.txt", "hello\n" * 5000), ("run.json", '{"a": 1}')])
def test_unsupported_format_lists_what_is(tmp_path, name, content):
    # A long .txt is a "video" to FFmpeg's tty (ANSI art) demuxer: it must still be refused.
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SourceError, match=rf"{name}: unsupported format.*supported: video files.*TIFF"):
        open_source(path)


def test_a_broken_gatan_file_is_a_clear_error(tmp_path):
    path = tmp_path / "scan.dm4"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(SourceError, match=r"scan\.dm4 cannot be read"):
        open_source(path)


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="source must be"):
        open_source(42)
    with pytest.raises(TypeError, match="iterator"):
        open_source(["a.png", "b.png"])


# --- TIFF ---------------------------------------------------------------------------------


def test_sixteen_bit_imagej_tiff_with_pixel_size(tmp_path):
    stack = (np.arange(4 * 6 * 7).reshape(4, 6, 7) * 300).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "nm", "axes": "TYX", "finterval": 0.5})
    original = stack.copy()
    with open_source(path) as source:
        assert (source.kind, source.n_frames, source.shape) == ("tiff", 4, (6, 7))
        assert source.pixel_size_nm == pytest.approx(0.25)
        assert source.fps == pytest.approx(2.0)
        assert source.metadata["pixel_size_source"] == "imagej" and source.metadata["bit_depth"] == 16
        frames = list(source)
        same_frames(list(source.frames(start=2)), frames[2:])
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0, 1.5]
    for frame, raw in zip(frames, stack):
        np.testing.assert_allclose(frame.image, raw / 65535.0, atol=1e-7)
    np.testing.assert_array_equal(stack, original)
    with open_source(path, pixel_size_nm=2.0, fps=10.0) as source:  # arguments win
        assert source.pixel_size_nm == 2.0 and source.fps == 10.0


@pytest.mark.parametrize("unit, resolution, expected", [("um", 500.0, 2.0), ("micron", 100.0, 10.0)])
def test_imagej_micron_units(tmp_path, unit, resolution, expected):
    path = tmp_path / "um.tif"
    tifffile.imwrite(path, np.zeros((2, 4, 4), np.uint16), imagej=True, resolution=(resolution, resolution),
                     metadata={"unit": unit})
    with open_source(path) as source:
        assert source.pixel_size_nm == pytest.approx(expected)


def test_resolution_tag_pixel_size_only_when_plausible(tmp_path):
    calibrated, screen = tmp_path / "cm.tif", tmp_path / "dpi.tif"
    tifffile.imwrite(calibrated, np.zeros((2, 4, 4), np.uint8), resolution=(1e6, 1e6), resolutionunit="CENTIMETER")
    tifffile.imwrite(screen, np.zeros((2, 4, 4), np.uint8), resolution=(72.0, 72.0), resolutionunit="INCH")
    with open_source(calibrated) as source:
        assert source.pixel_size_nm == pytest.approx(10.0)  # 1e6 px/cm
        assert source.metadata["pixel_size_source"] == "resolution_tag"
    with open_source(screen) as source:
        assert source.pixel_size_nm is None and source.fps is None


def test_compressed_and_colour_tiff(tmp_path):
    rgb = np.zeros((3, 5, 6, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    rgb[1, ..., 1] = 255  # red + green
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", compression="zlib")
    with open_source(path) as source:
        assert source.metadata["access"] == "pages" and source.shape == (5, 6)
        images = [f.image for f in source]
        same_frames(list(source.frames(start=1)), list(source.frames())[1:])
    np.testing.assert_allclose(images[0], 0.299, atol=1e-6)
    np.testing.assert_allclose(images[1], 0.299 + 0.587, atol=1e-6)


def test_single_page_tiff_and_twelve_bit_rule(tmp_path):
    path = tmp_path / "one.tif"
    image = np.full((4, 5), 4095, np.uint16)
    tifffile.imwrite(path, image)
    with open_source(path) as source:
        assert source.n_frames == 1
        # BitsPerSample 16 but every value below 2**12: read as 12-bit data (the data rule).
        assert next(iter(source)).image.max() == 1.0
        assert source.metadata["input_range"] == {"low": 0.0, "high": 4095.0, "source": "data", "frames_sampled": 1}
    with open_source(path, input_range="dtype") as source:  # the full uint16 range, as before issue 18
        assert next(iter(source)).image.max() == pytest.approx(4095 / 65535)
    from temtrack.sdk.sources.base import _Gray

    # BitsPerSample 12 (packed 12-bit cameras): full scale is 4095, larger values clip.
    np.testing.assert_allclose(_Gray("x", bits=12)(np.array([[0, 4095, 5000]], np.uint16), 0), [[0.0, 1.0, 1.0]])


def test_corrupt_tiff(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\0" + np.random.default_rng(1).bytes(200))
    with pytest.raises(SourceError, match=r"bad\.tif"):
        open_source(path)


# --- images, folders and globs --------------------------------------------------------------


def write_frames(folder, names, *, shape=(6, 8)):
    folder.mkdir(exist_ok=True)
    for value, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full(shape, 10 * value, np.uint8))


def test_folder_in_natural_order(tmp_path):
    names = ["frame1.png", "frame2.png", "frame10.png", "frame11.png"]
    write_frames(tmp_path / "run", names)
    (tmp_path / "run" / "notes.txt").write_text("ignored")
    with open_source(tmp_path / "run", fps=4.0) as source:
        assert (source.kind, source.n_frames, source.shape) == ("images", 4, (6, 8))
        frames = list(source)
    assert [round(float(f.image[0, 0]) * 255) for f in frames] == [0, 10, 20, 30]  # written in that order
    assert [f.time_s for f in frames] == [0.0, 0.25, 0.5, 0.75]
    assert source.metadata["first_file"] == "frame1.png" and source.metadata["last_file"] == "frame11.png"


def test_glob_pattern(tmp_path):
    write_frames(tmp_path, ["a_3.png", "a_20.png", "b_1.png"])
    with open_source(str(tmp_path / "a_*.png")) as source:
        assert source.n_frames == 2 and source.kind == "images"
        assert [round(float(f.image[0, 0]) * 255) for f in source] == [0, 10]
    with pytest.raises(FileNotFoundError, match="no files match"):
        open_source(str(tmp_path / "z_*.png"))


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="contains no frames"):
        open_source(tmp_path / "empty")


def test_colour_png_is_read_as_bgr(tmp_path):
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), image)
    with open_source(tmp_path / "red.png") as source:
        np.testing.assert_allclose(next(iter(source)).image, 0.299, atol=1e-6)


def test_sixteen_bit_png_and_size_mismatch(tmp_path):
    cv2.imwrite(str(tmp_path / "a1.png"), np.full((4, 5), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "a2.png"), np.zeros((5, 5), np.uint16))
    with open_source(tmp_path) as source:
        frames = source.frames()
        assert next(frames).image.max() == 1.0
        with pytest.raises(SourceError, match=r"a2\.png.*shape"):
            next(frames)


def test_corrupt_image_in_folder(tmp_path):
    write_frames(tmp_path, ["f1.png"])
    (tmp_path / "f2.png").write_bytes(b"not a png")
    with open_source(tmp_path) as source:
        with pytest.raises(SourceError, match=r"f2\.png cannot be decoded"):
            list(source)


# --- arrays and iterators ---------------------------------------------------------------------


def test_array_stack_single_frame_and_dtypes():
    stack = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    with open_source(stack, fps=2.0) as source:
        assert (source.kind, source.name, source.n_frames, source.shape) == ("array", "<array>", 3, (4, 5))
        frames = list(source)
    np.testing.assert_allclose(frames[2].image, stack[2] / 255.0, atol=1e-7)
    assert [f.time_s for f in frames] == [0.0, 0.5, 1.0]
    with open_source(np.ones((4, 5), bool)) as source:  # a single frame; bool -> 0/1
        (frame,) = list(source)
        assert frame.image.dtype == np.float32 and (frame.image == 1.0).all() and math.isnan(frame.time_s)
    with open_source(np.full((2, 3, 3), 65535, np.uint16)) as source:
        assert all((f.image == 1.0).all() for f in source)


def test_float_arrays_keep_brightness_changes():
    inside = np.stack([np.full((3, 3), 0.2), np.full((3, 3), 0.7)]).astype(np.float64)
    with open_source(inside) as source:
        assert [float(f.image[0, 0]) for f in source] == pytest.approx([0.2, 0.7])
    # Out of [0, 1]: mapped by the (min, max) over the sampled frames = (100, 400), for every frame.
    counts = np.stack([np.array([[100.0, 300.0]]), np.array([[200.0, 400.0]])])
    with open_source(counts) as source:
        images = [f.image for f in source]
        same_frames(list(source.frames(start=1)), list(source.frames())[1:])  # resume keeps the mapping
    np.testing.assert_allclose(images[0], [[0.0, 2 / 3]], atol=1e-7)
    np.testing.assert_allclose(images[1], [[1 / 3, 1.0]], atol=1e-7)  # brighter: kept
    # A one-pass iterator shows only its first frame in advance: (100, 300), later values clip.
    with open_source(iter(counts)) as source:
        images = [f.image for f in source]
    np.testing.assert_allclose(images[0], [[0.0, 1.0]])
    np.testing.assert_allclose(images[1], [[0.5, 1.0]])  # brighter, and clipped above frame 0's max


def test_nan_in_float_input():
    stack = np.zeros((3, 4, 4), np.float32)
    stack[1, 2, 2] = np.nan
    with open_source(stack) as source:
        with pytest.raises(SourceError, match=r"<array>: frame 1 holds NaN"):
            list(source)
    with pytest.raises(SourceError, match="frame 0 holds NaN"):
        open_source(np.full((2, 2), np.inf))


def test_colour_array_is_rgb():
    rgb = np.zeros((2, 3, 4, 3), np.uint8)
    rgb[0, ..., 0] = 255
    rgb[1, ..., 2] = 255
    with open_source(rgb) as source:
        assert source.shape == (3, 4)
        red, blue = [f.image for f in source]
    np.testing.assert_allclose(red, 0.299, atol=1e-6)
    np.testing.assert_allclose(blue, 0.114, atol=1e-6)


@pytest.mark.parametrize(
    "array, error, match",
    [
        (np.zeros((2, 3, 4, 5, 6)), SourceError, "not a frame stack"),
        (np.zeros((2, 3, 4, 7)), SourceError, "not a frame stack"),
        (np.zeros(5), SourceError, "not a frame stack"),
        (np.zeros((0, 4, 4)), SourceError, "contains no frames"),
        (np.zeros((2, 0, 4)), SourceError, "empty"),
        (np.zeros((2, 3, 3), complex), TypeError, "complex"),
        (np.array([["a", "b"]]), TypeError, "dtype"),
    ],
)
def test_bad_arrays(array, error, match):
    with pytest.raises(error, match=match):
        open_source(array)


def test_generator_keeps_its_first_frame():
    def camera():
        for value in range(5):
            yield np.full((3, 4), value * 50, np.uint8)

    with open_source(camera()) as source:
        assert (source.kind, source.n_frames, source.shape, source.fps) == ("iterator", None, (3, 4), None)
        frames = list(source)
        assert [f.index for f in frames] == [0, 1, 2, 3, 4]
        assert [round(float(f.image[0, 0]) * 255) for f in frames] == [0, 50, 100, 150, 200]
        assert all(math.isnan(f.time_s) for f in frames)
        with pytest.raises(SourceError, match="already been read"):
            source.frames()
    with open_source(camera(), fps=5.0) as source:
        assert [(f.index, f.time_s) for f in source.frames(start=1, every=2)] == [(1, 0.2), (3, 0.6)]


def test_iterator_errors():
    with pytest.raises(SourceError, match="<iterator> contains no frames"):
        open_source(iter([]))
    frames = iter([np.zeros((3, 4)), np.zeros((3, 5))])
    with open_source(frames) as source:
        with pytest.raises(SourceError, match=r"<iterator>: frame 1 has shape \(3, 5\)"):
            list(source)


def test_list_is_read_anew_each_pass():
    frames = [np.full((2, 2), v, np.uint8) for v in (0, 255, 0)]
    with open_source(frames) as source:
        assert source.n_frames == 3
        first, second = list(source), list(source)
    same_frames(first, second)


def test_inputs_are_not_modified():
    stack = np.random.default_rng(2).random((3, 5, 5)).astype(np.float32)
    items = [np.random.default_rng(3).integers(0, 255, (5, 5, 3), dtype=np.uint8) for _ in range(2)]
    copies = stack.copy(), [item.copy() for item in items]
    with open_source(stack) as source:
        for frame in source:
            frame.image[:] = 7.0  # the caller owns the frame: writing to it must not reach the input
    with open_source(iter(items)) as source:
        for frame in source:
            frame.image[:] = 7.0
    np.testing.assert_array_equal(stack, copies[0])
    for item, copy in zip(items, copies[1]):
        np.testing.assert_array_equal(item, copy)


def test_frame_source_api():
    with open_source(np.zeros((2, 3, 3))) as source:
        assert isinstance(source, FrameSource) and "array" in repr(source)
        assert source.metadata["dtype"] == "float64"


def test_late_seeks_retry_further_back(tmp_path, monkeypatch):
    # MPEG-TS seeks land on the keyframe *after* the target: the source retries further
    # back (here 0.4 s = 6 frames > one GOP) instead of decoding from the start.
    from temtrack.sdk.sources import video as sources

    monkeypatch.setattr(sources, "_SEEK_BACK_S", (0, Fraction(2, 5)))
    passes = []
    real_pass = sources._VideoSource._pass

    def counting(self, *args, seek_s):
        passes.append(seek_s)
        return real_pass(self, *args, seek_s=seek_s)

    monkeypatch.setattr(sources._VideoSource, "_pass", counting)
    with open_source(encode(tmp_path / "late.ts", fmt="mpegts", offset=3)) as source:
        full = list(source.frames())
        passes.clear()
        same_frames(list(source.frames(start=20)), full[20:])
    assert len(passes) == 2 and passes[1] is not None  # the second, earlier seek was enough


def test_path_pattern_and_empty_path(tmp_path):
    write_frames(tmp_path, ["x1.png", "x2.png"])
    with open_source(tmp_path / "x*.png") as source:  # a Path may hold a pattern too
        assert source.n_frames == 2
    with pytest.raises(TypeError, match="non-empty"):
        open_source("")


# --- input range (issue 18) -------------------------------------------------------------------


def input_range(source):
    return source.metadata["input_range"]


def test_float_tiff_with_a_dim_first_frame_is_mapped_by_all_frames(tmp_path):
    # Frame 0 spans 0-0.1, frames 1-4 span 0-10: the old frame-0 rule clipped them to white.
    ramp = np.linspace(0.0, 1.0, 6 * 7, dtype=np.float32).reshape(6, 7)
    stack = np.stack([ramp * 0.1] + [ramp * 10.0] * 4)
    path = tmp_path / "floats.tif"
    tifffile.imwrite(path, stack)
    with open_source(path) as source:
        images = [f.image for f in source]
    assert input_range(source) == {"low": 0.0, "high": 10.0, "source": "data", "frames_sampled": 5}
    np.testing.assert_allclose(images[1], ramp, atol=1e-6)  # not clipped
    np.testing.assert_allclose(images[0], ramp * 0.01, atol=1e-6)  # dim, as recorded
    assert source.range_note == (
        f"{path}: float32 data mapped from its range over 5 sampled frames, 0 to 10 "
        "(values outside are clipped); set --input-range LOW,HIGH to change"
    )


@pytest.mark.parametrize("top, bits", [(1000, 10), (4000, 12), (16000, 14)])
def test_uint16_tiff_holding_fewer_bits_is_read_at_their_depth(tmp_path, top, bits):
    stack = np.zeros((3, 4, 5), np.uint16)
    stack[2, 0, 0] = top  # the last frame is sampled too
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    with open_source(path) as source:
        last = list(source)[-1].image
        assert source.metadata["bit_depth"] == 16
        assert input_range(source) == {"low": 0.0, "high": 2.0**bits - 1, "source": "data", "frames_sampled": 3}
        assert source.range_note == (
            f"{path}: uint16 values all below {2**bits} in 3 sampled frames: read as {bits}-bit "
            f"(0-{2**bits - 1}); set --input-range to change"
        )
    assert last[0, 0] == pytest.approx(top / (2**bits - 1))
    with open_source(path, input_range="dtype") as source:  # the dtype's range: the old mapping
        assert list(source)[-1].image[0, 0] == pytest.approx(top / 65535)
        assert input_range(source) == {"low": 0.0, "high": 65535.0, "source": "dtype", "frames_sampled": 0}
        assert source.range_note is None


def test_full_range_uint16_and_uint8_need_no_note(tmp_path):
    stack = np.zeros((2, 3, 3), np.uint16)
    stack[1, 1, 1] = 40000
    with open_source(stack) as source:
        assert input_range(source) == {"low": 0.0, "high": 65535.0, "source": "dtype", "frames_sampled": 2}
        assert source.range_note is None
    with open_source(np.zeros((2, 3, 3), np.uint8)) as source:
        assert input_range(source) == {"low": 0.0, "high": 255.0, "source": "dtype", "frames_sampled": 0}
        assert source.range_note is None


def test_declared_bit_depth_wins_over_the_data():
    from temtrack.sdk.sources.base import _Gray

    gray = _Gray("x.tif", bits=12)
    gray.settle(np.array([[0, 100]], np.uint16))  # values below 1024, but the file says 12 bits
    assert gray.record == {"low": 0.0, "high": 4095.0, "source": "bit_depth", "frames_sampled": 0}
    assert gray.note is None


def test_input_range_argument_maps_and_clips():
    stack = np.array([[[40, 50, 100, 150, 200]]], np.uint8)
    with open_source(stack, input_range=(50, 150)) as source:
        (frame,) = list(source)
        assert input_range(source) == {"low": 50.0, "high": 150.0, "source": "argument", "frames_sampled": 0}
        assert source.range_note is None
    np.testing.assert_allclose(frame.image, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-7)


def test_signed_integers_by_data_or_by_dtype():
    stack = np.array([[[-100, 0]], [[0, 300]]], np.int16)
    with open_source(stack) as source:
        images = [f.image for f in source]
        assert input_range(source) == {"low": -100.0, "high": 300.0, "source": "data", "frames_sampled": 2}
        assert "<array>: int16 data mapped from its range over 2 sampled frames, -100 to 300" in source.range_note
    np.testing.assert_allclose(images[1], [[0.25, 1.0]], atol=1e-7)
    with open_source(stack, input_range="dtype") as source:
        assert input_range(source)["low"] == -32768.0 and input_range(source)["high"] == 32767.0
        assert next(iter(source)).image[0, 1] == pytest.approx(32768 / 65535)


def test_sixteen_frames_are_sampled_over_the_whole_source():
    stack = np.zeros((40, 2, 2), np.float32)
    stack[39, 0, 0] = 8.0  # the last frame is always sampled
    stack[1, 0, 0] = 100.0  # frame 1 of 40 is not: later values outside the range clip
    with open_source(stack) as source:
        assert input_range(source) == {"low": 0.0, "high": 8.0, "source": "data", "frames_sampled": 16}
        assert "over 16 sampled frames, 0 to 8" in source.range_note
        assert next(iter(source.frames(start=1))).image[0, 0] == 1.0


def test_one_pass_iterator_says_only_its_first_frame_was_seen():
    frames = [np.array([[0, 500]], np.uint16), np.array([[0, 4000]], np.uint16)]
    with open_source(iter(frames)) as source:
        images = [f.image for f in source]
        assert input_range(source) == {"low": 0.0, "high": 1023.0, "source": "data", "frames_sampled": 1}
        assert "<iterator>: uint16 values all below 1024 in its first frame (an iterator" in source.range_note
    assert images[1][0, 1] == 1.0  # later, brighter frames clip: hence the note
    with open_source(frames) as source:  # a list has random access: both frames are sampled
        assert input_range(source)["high"] == 4095.0 and input_range(source)["frames_sampled"] == 2


def test_constant_float_input_maps_to_zero_with_a_note():
    with open_source(np.full((2, 3, 3), 7.5)) as source:
        assert all((f.image == 0.0).all() for f in source)
        assert input_range(source) == {"low": 7.5, "high": 8.5, "source": "data", "frames_sampled": 2}
        assert "single value 7.5" in source.range_note


def test_unreadable_frames_are_left_out_of_the_sample(tmp_path):
    cv2.imwrite(str(tmp_path / "f1.png"), np.full((4, 5), 900, np.uint16))
    (tmp_path / "f2.png").write_bytes(b"not a png")  # its error comes when it is reached
    with open_source(tmp_path) as source:
        assert input_range(source) == {"low": 0.0, "high": 1023.0, "source": "data", "frames_sampled": 1}
        frames = source.frames()
        assert next(frames).image.max() == pytest.approx(900 / 1023)
        with pytest.raises(SourceError, match=r"f2\.png cannot be decoded"):
            next(frames)


def test_video_range_is_its_decoded_dtype(synthetic):
    with open_source(synthetic) as source:
        assert input_range(source) == {"low": 0.0, "high": 255.0, "source": "dtype", "frames_sampled": 0}
        assert source.range_note is None
        full = next(iter(source)).image
    with open_source(synthetic, input_range=(0, 127.5)) as source:
        half = next(iter(source)).image
        assert input_range(source)["source"] == "argument"
    np.testing.assert_allclose(half, np.minimum(full * 2, 1.0), atol=1e-6)


@pytest.mark.parametrize("value", [5, "bright", "", (1, 1), (2, 1), (0, math.inf), (math.nan, 1), ("0", 1),
                                   (0, 1, 2), (True, 2), {"low": 0, "high": 1}])
def test_bad_input_range_is_refused(value):
    with pytest.raises(ValueError, match="input_range"):
        open_source(np.zeros((2, 3, 3)), input_range=value)


def test_parse_input_range():
    from temtrack.sdk.sources import parse_input_range

    assert parse_input_range("auto") == "auto" and parse_input_range(" DType ") == "dtype"
    assert parse_input_range("0,1023") == (0.0, 1023.0) and parse_input_range("-3.5, 1e3") == (-3.5, 1000.0)
    for text in ("5", "a,b", "1,1", "2,1", "0,inf", "1,2,3", ""):
        with pytest.raises(ValueError, match=r"input range .*allowed: auto, dtype, or LOW,HIGH"):
            parse_input_range(text)


# --- constant frames and special files (issue 18) ---------------------------------------------


def test_constant_frames_are_noted_once():
    stack = np.random.default_rng(4).integers(0, 255, (6, 4, 4), dtype=np.uint8)
    stack[[0, 3]] = 0  # blanked
    stack[4] = 255  # saturated
    with open_source(stack) as source:
        assert source.constant_frames == [] and source.n_constant_frames == 0  # nothing yielded yet
        list(source.frames(start=1))
        assert source.constant_frames == [3, 4] and source.n_constant_frames == 2
        list(source)  # a second pass counts each index once
        assert source.constant_frames == [0, 3, 4] and source.n_constant_frames == 3


def test_constant_frames_keep_twenty_indices_and_count_all():
    with open_source(np.zeros((25, 2, 2), np.uint8)) as source:
        list(source)
        assert source.constant_frames == list(range(20)) and source.n_constant_frames == 25


def test_constant_frames_of_a_video(tmp_path):
    import av

    path = tmp_path / "black.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=10)  # lossless: black stays exactly black
        stream.width, stream.height, stream.pix_fmt = 16, 16, "gray"
        for value in (0, 0, 90):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16), value, np.uint8), format="gray")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with open_source(path) as source:
        assert len(list(source)) == 3
        assert source.constant_frames == [0, 1, 2] and source.n_constant_frames == 3


def _open_with_timeout(path, seconds=10.0):
    """What open_source(path) raised, run in a thread: a regression that blocks on a FIFO
    fails the test instead of hanging the suite."""
    import os
    import threading

    outcome = {}

    def target():
        try:
            outcome["source"] = open_source(path)
        except BaseException as err:  # handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:  # let the blocked reader go: open the write end, without blocking, and close it
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        pytest.fail(f"open_source({path}) still blocked after {seconds} s")
    if "source" in outcome:
        outcome["source"].close()
    return outcome.get("error")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_before_it_is_opened(tmp_path):
    import os

    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    error = _open_with_timeout(fifo)
    assert isinstance(error, SourceError), error
    assert str(error) == (
        f"{fifo} is a FIFO (named pipe), not a regular file; "
        "tem-track reads video files, TIFF stacks, image files or folders"
    )


def test_character_device_is_refused():
    from pathlib import Path

    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    with pytest.raises(SourceError, match=r"/dev/null is a character device, not a regular file"):
        open_source("/dev/null")


def test_symlink_to_a_regular_file_is_read(tmp_path):
    stack = np.zeros((2, 4, 5), np.uint8)
    tifffile.imwrite(tmp_path / "real.tif", stack, photometric="minisblack")
    link = tmp_path / "link.tif"
    try:
        link.symlink_to(tmp_path / "real.tif")
    except OSError:
        pytest.skip("symlinks not allowed here")
    with open_source(link) as source:
        assert source.n_frames == 2
