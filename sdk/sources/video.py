"""Video files decoded by FFmpeg through PyAV, with exact frame indices for seeking.

PyAV is imported when a video is opened.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from .base import SUPPORTED, VIDEO_SUFFIXES, Frame, FrameSource, SourceError, _Gray

# A full pass may end this many frames short of a declared count without being called
# truncated: edit lists legitimately hide a frame or two that the sample table counts.
_DECLARED_SLACK = 2
# How far before the wanted frame (s) successive seeks aim when one lands too late.
_SEEK_BACK_S = (0, 2, 10, 60)


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

    def __init__(self, path: Path, *, fps, pixel_size_nm, input_range=None):
        import av

        self._path, self._live = path, set()
        self._gray = _Gray(str(path), input_range=input_range)
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
            # FFmpeg expands the luma plane to the full range of uint8 or uint16.
            self._format = "gray16le" if bits > 8 else "gray"
            try:
                first = next(iter(container.decode(stream)), None)
            except av.FFmpegError as err:
                raise SourceError(f"{path} cannot be decoded: the video is truncated or corrupt ({err})") from err
            if first is None:
                raise SourceError(f"{path} contains no frames")
            self._gray.settle(first.to_ndarray(format=self._format), decoded=True)
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
                "input_range": self._gray.record,
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
            range_note=self._gray.note,
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
                yield Frame(index, time_s, self._gray(frame.to_ndarray(format=self._format), index))
        finally:
            container.close()
            self._live.discard(container)
        if dropped:
            warnings.warn(
                f"{self.name}: {dropped} frame(s) fell in the time slot of an earlier frame "
                "(variable frame rate?) and were skipped",
                RuntimeWarning,
                stacklevel=4,  # _pass, _frames, FrameSource._watch, the caller
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

