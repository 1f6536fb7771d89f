"""Overlay videos and snapshots: tracked curves drawn in colour over the gray frames.

For a quick look at a run, not for measurement: each curve is drawn anti-aliased with
sub-pixel precision in its track's colour (:func:`track_colour`), optionally with its
id written near its first point. :func:`draw_tracks` draws one frame (usable for PNG
snapshots with ``cv2.imwrite``); :class:`OverlayWriter` encodes such frames into an
H.264 mp4 that appears under its final name only when complete.

Curves are ``(n, 2)`` arrays of ``(x, y)`` in pixels, ``x`` = column and ``y`` = row,
pixel centres at integer coordinates. Needs numpy and OpenCV; PyAV is imported only
when a writer is created.
"""

from __future__ import annotations

import colorsys
import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .atomic import PendingFile

__all__ = ["OverlayWriter", "draw_tracks", "is_overlay", "track_colour"]

OVERLAY_COMMENT = "tem-track overlay"

UNTRACKED = -1
_UNTRACKED_COLOUR = (200, 200, 200)  # light gray: visible on dark and bright frames alike
_GOLDEN = 0.618033988749895  # successive ids' hues are as far apart as they can be, for ever
_SHIFT = 4  # cv2 fractional bits: points are drawn to 1/16 px
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.35


def track_colour(track_id) -> tuple[int, int, int]:
    """The fixed colour of a track, as OpenCV's ``(b, g, r)``, each 0-255.

    Hues step by the golden ratio from one id to the next, so neighbouring ids get
    clearly different colours and any id has one; brightness alternates over three
    levels to separate ids whose hues come close. ``-1`` (untracked) is light gray.

    >>> track_colour(-1)
    (200, 200, 200)
    >>> track_colour(0) != track_colour(1)
    True
    """
    if isinstance(track_id, bool) or not isinstance(track_id, (int, np.integer)):
        raise TypeError(f"track_id must be an int, got {type(track_id).__name__} {track_id!r}")
    track_id = int(track_id)
    if track_id < UNTRACKED:
        raise ValueError(f"track_id must be >= 0, or -1 for untracked, got {track_id}")
    if track_id == UNTRACKED:
        return _UNTRACKED_COLOUR
    hue = (track_id * _GOLDEN) % 1.0
    value = (1.0, 0.8, 0.9)[track_id % 3]
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(blue * 255), round(green * 255), round(red * 255)


def _check_curves(curves, track_ids) -> tuple[list[np.ndarray], list[int]]:
    curves = list(curves)
    track_ids = [int(t) for t in np.asarray(track_ids, dtype=np.int64).reshape(-1)] if len(curves) else []
    if len(track_ids) != len(curves):
        raise ValueError(f"track_ids must have one id per curve: {len(curves)} curves, {len(track_ids)} ids")
    checked = []
    for i, curve in enumerate(curves):
        points = np.asarray(curve, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise ValueError(f"curves[{i}] must be an (n, 2) array of (x, y) px with n >= 1, got shape {points.shape}")
        if not np.isfinite(points).all():
            raise ValueError(f"curves[{i}] holds NaN or infinite coordinates")
        checked.append(points)
    return checked, track_ids


def _to_bgr(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image.copy()  # already BGR: draw on a copy, never on the caller's frame
    if image.ndim != 2:
        raise ValueError(
            f"image must be (H, W) gray (float in [0, 1] or uint8) or (H, W, 3) uint8 BGR, got shape {image.shape}"
        )
    if image.dtype == np.uint8:
        gray = image
    elif image.dtype.kind in "fb":
        values = image.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError("image holds NaN or infinite values")
        gray = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise TypeError(f"image must be float in [0, 1], bool or uint8, got dtype {image.dtype}")
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def draw_tracks(image, curves, track_ids, *, labels: bool = True, thickness: int = 2) -> np.ndarray:
    """Draw curves in their tracks' colours over a frame.

    Parameters
    ----------
    image : (H, W) ndarray of float in [0, 1] (clipped), bool or uint8, or (H, W, 3) uint8 BGR
        The frame; not modified.
    curves : sequence of (n, 2) array_like of float
        ``(x, y)`` px of each curve, ``n >= 1`` (one point is drawn as a dot).
    track_ids : sequence of int
        One id per curve; ``-1`` marks an untracked curve (drawn light gray, no label).
    labels : bool
        Write each tracked curve's id in small text next to its first point.
    thickness : int
        Line width in px (>= 1). The default 2 keeps the colour after H.264's 4:2:0
        chroma subsampling, which halves the colour resolution of a 1 px line.

    Returns
    -------
    (H, W, 3) ndarray of uint8
        A new BGR image (OpenCV order, ready for ``cv2.imwrite``).

    Examples
    --------
    >>> import numpy as np
    >>> out = draw_tracks(np.zeros((20, 30)), [np.array([[2.0, 10.0], [27.0, 10.0]])], [3], labels=False)
    >>> out.shape, tuple(int(v) for v in out[10, 15]) == track_colour(3)
    ((20, 30, 3), True)
    """
    if isinstance(thickness, bool) or not isinstance(thickness, (int, np.integer)) or thickness < 1:
        raise ValueError(f"thickness must be an int >= 1, got {thickness!r}")
    canvas = _to_bgr(image)
    curves, track_ids = _check_curves(curves, track_ids)
    height, width = canvas.shape[:2]
    # Labels after all lines, so no line crosses a number.
    for points, track in zip(curves, track_ids):
        colour = track_colour(track)
        fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
        if len(fixed) == 1:
            centre = (int(fixed[0, 0]), int(fixed[0, 1]))
            cv2.circle(canvas, centre, int(thickness) << _SHIFT, colour, -1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(canvas, [fixed.reshape(-1, 1, 2)], False, colour, int(thickness), cv2.LINE_AA, _SHIFT)
    if labels:
        for points, track in zip(curves, track_ids):
            if track == UNTRACKED:
                continue
            text = str(track)
            (text_width, text_height), _ = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
            x = int(np.clip(round(points[0, 0]) + 3, 0, max(width - text_width, 0)))
            y = int(np.clip(round(points[0, 1]) - 3, text_height, max(height - 1, text_height)))
            # A dark outline under the coloured text keeps it readable on bright frames.
            cv2.putText(canvas, text, (x, y), _FONT, _FONT_SCALE, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(canvas, text, (x, y), _FONT, _FONT_SCALE, track_colour(track), 1, cv2.LINE_AA)
    return canvas


def is_overlay(path) -> bool:
    """Whether ``path`` is an overlay video written by :class:`OverlayWriter` (its
    container comment says so): the only kind of file an overlay may replace."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == OVERLAY_COMMENT
    except Exception:
        return False


class OverlayWriter:
    """Write overlay frames into an H.264 mp4 that appears only when complete.

    Frames are encoded (yuv420p, through PyAV) into a temporary file beside ``path``,
    renamed to ``path`` by :meth:`close` (or the end of a ``with`` block); an exception
    inside the ``with`` block, or :meth:`abort`, removes it instead. Odd heights or
    widths are padded by one black row or column, since 4:2:0 needs even sizes.

    Parameters
    ----------
    path : path
        Output ``.mp4`` file.
    fps : float
        Frames per second (> 0).
    shape : (int, int)
        ``(H, W)`` of every frame in px.
    overwrite : bool
        Replace an existing ``path`` (only once the new video is complete); otherwise
        an existing ``path`` raises :class:`FileExistsError`.
    crf : int
        H.264 quality, 0 (lossless) to 51; lower is better and larger.

    Examples
    --------
    >>> with OverlayWriter("overlay.mp4", fps=15, shape=(128, 128)) as writer:  # doctest: +SKIP
    ...     for frame, curves, ids in results:
    ...         writer.write(frame.image, curves, ids)
    """

    def __init__(self, path, *, fps: float, shape, overwrite: bool = False, crf: int = 20):
        import av

        self.path = Path(path)
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
            raise TypeError(f"fps must be a positive number, got {type(fps).__name__} {fps!r}")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive and finite, got {fps!r}")
        shape = tuple(shape)
        if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape):
            raise ValueError(f"shape must be (H, W) of ints, got {shape!r}")
        if min(shape) < 1:
            raise ValueError(f"shape must be positive, got {shape!r}")
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an int from 0 to 51, got {crf!r}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"output {self.path} already exists; pass overwrite=True to replace it")
        self.fps, self.shape, self.overwrite, self.crf = float(fps), (int(shape[0]), int(shape[1])), overwrite, int(crf)
        self.frames_written = 0
        self._state = "open"  # then "closed" (published) or "aborted" (removed)
        self._rate = Fraction(self.fps).limit_denominator(1001)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = PendingFile(self.path)
        self._container = None
        try:
            # The suffix of the temporary name says nothing: name the muxer.
            self._container = av.open(str(self._partial.tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
            self._container.metadata["comment"] = OVERLAY_COMMENT  # tells is_overlay that the file is ours
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            height, width = self.shape
            self._stream.height, self._stream.width = height + height % 2, width + width % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
        except BaseException:
            self.abort()
            raise

    def write(self, image, curves, track_ids, *, labels: bool = True, thickness: int = 2) -> None:
        """Draw ``curves`` over ``image`` (see :func:`draw_tracks`) and append it as the next frame.

        ``image`` must have the writer's ``shape``.
        """
        import av

        if self._state != "open":
            raise ValueError(f"overlay writer for {self.path} is {self._state}")
        if np.shape(image)[:2] != self.shape:
            raise ValueError(f"image must have the writer's shape {self.shape}, got {np.shape(image)}")
        canvas = draw_tracks(image, curves, track_ids, labels=labels, thickness=thickness)
        height, width = self.shape
        if height % 2 or width % 2:
            canvas = cv2.copyMakeBorder(canvas, 0, height % 2, 0, width % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self._rate
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def stage(self) -> Path:
        """Finish the video under its temporary name and return that name, for the caller
        to publish (e.g. with a :class:`~temtrack.sdk.atomic.Transaction`, which then
        owns the file). :meth:`abort` still removes it until then."""
        if self._state != "open":
            raise ValueError(f"overlay writer for {self.path} is {self._state}")
        if not self.frames_written:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; nothing was saved")
        try:
            self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
            self._container.close()
            self._container = None
        except BaseException:
            self.abort()
            raise
        self._state = "staged"
        return self._partial.tmp

    def close(self) -> Path:
        """Finish the video and move it to ``path``; returns ``path``.

        Raises
        ------
        ValueError
            No frame was written (the temporary file is removed).
        FileExistsError
            ``path`` appeared meanwhile and ``overwrite`` is False.
        """
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise ValueError(f"overlay writer for {self.path} was aborted; nothing was saved")
        if self._state == "open":
            self.stage()  # finish the video (or abort: no frames)
        try:
            if self.path.exists() and not self.overwrite:
                raise FileExistsError(f"output {self.path} already exists; pass overwrite=True to replace it")
            self._partial.publish()
            self._partial, self._state = None, "closed"
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary file; ``path`` is left as it was."""
        if self._state == "closed":
            return
        self._state = "aborted"  # a staged file is removed too
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # the file is deleted next: a failed trailer does not matter
                pass
        if self._partial is not None:
            self._partial.discard()
            self._partial = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"<OverlayWriter {self.path} shape={self.shape} fps={self.fps} frames={self.frames_written}>"
