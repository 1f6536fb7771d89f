"""Catalogue cases of the main job's inputs: the range of pixel values, constant frames,
and paths that are not files (issue 18).

Every case runs in a fresh folder holding ``v.mp4`` (see :mod:`test_hostile`); the
stacks are written from its first frames, so they hold dislocations to find. ``B``
below is ``--backend classical --quiet --workers 0`` (fast, no model). The CLI contract
these cases pin: ``--input-range {auto,dtype,LOW,HIGH}``; the source's ``range_note``
printed to stderr as it is; constant frames warned after the run on a line starting
``warning:`` (or ``tem-track: warning:``) that says "constant".

The classical backend on a 4096 x 4096 frame is not here: through the CLI it takes
minutes, so :mod:`test_postprocess` covers it on the masks that made OpenCV raise.
"""

from __future__ import annotations

import os
import threading

import numpy as np
from _hostile import Case

B = ["--backend", "classical", "--quiet", "--workers", "0"]
RUN = ["--out", "s.parquet", *B]


# --- setups -------------------------------------------------------------------------------


def _frames(folder, n: int = 5) -> np.ndarray:
    """The first ``n`` frames of the case's ``v.mp4``, (n, H, W) float32, each stretched to [0, 1]."""
    from temtrack.sdk.sources import open_source

    with open_source(folder / "v.mp4") as source:
        frames = np.stack([f.image for f in source.frames(end=n)])
    low = frames.min(axis=(1, 2), keepdims=True)
    high = frames.max(axis=(1, 2), keepdims=True)
    return (frames - low) / (high - low)


def _tiff(name: str, make):
    def setup(folder):
        import tifffile

        tifffile.imwrite(folder / name, make(_frames(folder)), photometric="minisblack")

    return setup


def _dim_first_frame(frames):
    """Floats whose frame 0 spans 0-0.1 and frames 1-4 span 0-10: frame 0 alone would
    clip the others to white."""
    return np.concatenate([frames[:1] * 0.1, frames[1:] * 10.0]).astype(np.float32)


def _ten_bit(frames):
    """10-bit camera data (0-1023) in a uint16 TIFF that declares 16 bits per sample."""
    return np.round(frames * 1023).astype(np.uint16)


def _blank(frames):
    return np.zeros((3, *frames.shape[1:]), np.uint8)


def _some_blank(frames):
    """Frames 1 and 3 missing, written as zeros."""
    stack = np.round(frames * 255).astype(np.uint8)
    stack[[1, 3]] = 0
    return stack


def _fifo(name: str, seconds: float = 20.0):
    """A FIFO ``name``, and a watchdog: should the run block opening it (the bug), the
    watchdog opens its write end after ``seconds`` and closes it, so the reader sees an
    empty file and the case fails on its message instead of hanging the suite."""

    def setup(folder):
        path = folder / name
        os.mkfifo(path)

        def unblock():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting (the fix), or the folder is gone
                pass

        watchdog = threading.Timer(seconds, unblock)
        watchdog.daemon = True
        watchdog.start()

    return setup


# --- checks -------------------------------------------------------------------------------


def _input_range(folder) -> dict:
    from temtrack.sdk.results import read_metadata

    return read_metadata(folder / "s.parquet")["input"]["metadata"]["input_range"]


def _range_is(expected: dict, *, found: bool | None = None):
    """The run recorded ``expected`` as its input range; with ``found``, whether it found
    any dislocation."""

    def check(folder, output):
        assert _input_range(folder) == expected
        if found is not None:
            import pandas as pd

            rows = len(pd.read_parquet(folder / "s.parquet"))
            assert (rows > 0) == found, f"{rows} spline rows"

    return check


# --- cases --------------------------------------------------------------------------------

_FIFO = [] if not hasattr(os, "mkfifo") else [
    Case("input-is-a-fifo", "hang", lambda f, v: ["x.mp4", *RUN], 2,
         r"x\.mp4 is a FIFO \(named pipe\), not a regular file; tem-track reads video files",
         setup=_fifo("x.mp4")),
]

CASES = [
    # --- silent: the range of pixel values --------------------------------------------------
    # The float range over frames sampled from the whole stack (0-10), not frame 0's (0-0.1).
    Case("float-stack-dim-first-frame", "silent", lambda f, v: ["floats.tif", *RUN], 0,
         r"floats\.tif: float32 data mapped from its range over 5 sampled frames, 0 to 10\b.*"
         r"set --input-range LOW,HIGH to change",
         setup=_tiff("floats.tif", _dim_first_frame),
         check=_range_is({"low": 0.0, "high": 10.0, "source": "data", "frames_sampled": 5})),
    # Divided by 65535 these frames are black and nothing is found.
    Case("ten-bit-in-uint16-tiff", "silent", lambda f, v: ["ten.tif", *RUN], 0,
         r"ten\.tif: uint16 values all below 1024 in 5 sampled frames: read as 10-bit \(0-1023\)",
         setup=_tiff("ten.tif", _ten_bit),
         check=_range_is({"low": 0.0, "high": 1023.0, "source": "data", "frames_sampled": 5}, found=True)),
    Case("ten-bit-in-uint16-tiff-read-by-dtype", "regression",
         lambda f, v: ["ten.tif", *RUN, "--input-range", "dtype"], 0, r"5 frames",
         setup=_tiff("ten.tif", _ten_bit),
         check=_range_is({"low": 0.0, "high": 65535.0, "source": "dtype", "frames_sampled": 0})),
    Case("ten-bit-in-uint16-tiff-given-range", "regression",
         lambda f, v: ["ten.tif", *RUN, "--input-range", "0,1023"], 0, r"5 frames",
         setup=_tiff("ten.tif", _ten_bit),
         check=_range_is({"low": 0.0, "high": 1023.0, "source": "argument", "frames_sampled": 0}, found=True)),
    Case("input-range-one-number", "traceback", lambda f, v: ["v.mp4", *RUN, "--input-range", "5"], 2,
         r"input.range[^\n]*(LOW,HIGH[^\n]*'5'|'5'[^\n]*LOW,HIGH)", check=lambda f, o: _absent(f, "s.parquet")),
    Case("input-range-reversed", "traceback", lambda f, v: ["v.mp4", *RUN, "--input-range", "10,2"], 2,
         r"input.range[^\n]*LOW[^\n]*HIGH", check=lambda f, o: _absent(f, "s.parquet")),
    # --- silent: constant frames ------------------------------------------------------------
    Case("all-frames-blank", "silent", lambda f, v: ["blank.tif", *RUN], 0,
         r"(?m)^(tem-track: )?warning:[^\n]*(\b3\b[^\n]*constant|constant[^\n]*\b3\b)",
         setup=_tiff("blank.tif", _blank)),
    Case("missing-frames-written-as-zeros", "silent", lambda f, v: ["gaps.tif", *RUN], 0,
         r"(?m)^(tem-track: )?warning:[^\n]*constant",
         setup=_tiff("gaps.tif", _some_blank),
         check=lambda f, o: _constant_frames_named(o, [1, 3])),
    # --- hang: not a file -------------------------------------------------------------------
    *_FIFO,
]


def _absent(folder, name):
    assert not (folder / name).exists(), f"{name} was written"


def _constant_frames_named(output, indices):
    """The constant-frames warning names ``indices``, in order."""
    import re

    line = next(line for line in output.splitlines() if re.match(r"(tem-track: )?warning:.*constant", line))
    assert re.search(r"\b" + r"\b\D+\b".join(map(str, indices)) + r"\b", line), line
