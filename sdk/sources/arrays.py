"""Frames already in memory: a numpy array, or any iterable of arrays (a live camera)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Frame, FrameSource, SourceError, _Gray, _sample_indices, _StackSource


def _check_dtype(dtype, name: str) -> None:
    if np.dtype(dtype).kind not in "biuf":
        raise TypeError(f"{name} has dtype {dtype}; allowed: bool, integer or float")


class _ArraySource(_StackSource):
    def __init__(self, array: np.ndarray, *, fps, pixel_size_nm, input_range=None):
        _check_dtype(array.dtype, "the array source")
        if array.ndim == 2:
            stack = array[None]
        elif array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3, 4)):
            stack = array
        else:
            raise SourceError(
                f"<array>: shape {array.shape} is not a frame stack; allowed: (T, H, W), (T, H, W, 3|4) or (H, W)"
            )
        if len(stack) == 0:
            raise SourceError(f"<array> contains no frames (shape {array.shape})")
        self._stack, self._gray = stack, _Gray("<array>", input_range=input_range)  # a view: only read
        first = self._first(len(stack))
        super().__init__(
            name="<array>",
            kind="array",
            fps=fps,
            n_frames=len(stack),
            shape=first.shape,
            pixel_size_nm=pixel_size_nm,
            metadata={
                "format": "array",
                "dtype": str(array.dtype),
                "array_shape": list(array.shape),
                "pixel_size_source": "argument" if pixel_size_nm else None,
                "input_range": self._gray.record,
            },
            range_note=self._gray.note,
        )

    def _raw(self, index):
        return self._stack[index]

    def _close(self):
        self._stack = None


class _IterableSource(FrameSource):
    """A live stream (an iterator, read once) or a re-iterable collection of frames."""

    def __init__(self, iterable, *, fps, pixel_size_nm, input_range=None):
        # An iterator returns itself from iter(): it can be read once, from where it is.
        iterator = iter(iterable)
        self._once = iterator is iterable
        self._iterable = None if self._once else iterable
        self._iterator = iterator if self._once else None  # a collection is re-read on each pass
        self._gray = _Gray("<iterator>", input_range=input_range)
        try:
            raw = next(iterator)
        except StopIteration:
            raise SourceError("<iterator> contains no frames") from None
        if isinstance(raw, (str, bytes)) or np.asarray(raw).dtype.kind not in "biuf":
            raise TypeError(f"<iterator> must yield 2-D (or colour 3-D) numeric arrays, got {type(raw).__name__}")
        if isinstance(iterable, Sequence):  # a list: the input range from frames over all of it
            self._gray.settle(raw, iterable.__getitem__, _sample_indices(len(iterable)))
        else:  # only the first frame can be seen in advance
            self._gray.settle(raw, stream=True)
        # Converted now (a copy): a camera may refill the same buffer for its next frame.
        self._first = self._gray(raw, 0)
        self._started = False
        shape = self._first.shape
        n_frames = None
        if not self._once:
            self._first = None  # each pass reads the collection from its start
            n_frames = len(iterable) if hasattr(iterable, "__len__") else None
        super().__init__(
            name="<iterator>",
            kind="iterator",
            fps=fps,
            n_frames=n_frames,
            shape=shape,
            pixel_size_nm=pixel_size_nm,
            metadata={
                "format": "iterator",
                "dtype": str(np.asarray(raw).dtype),
                "reiterable": not self._once,
                "pixel_size_source": "argument" if pixel_size_nm else None,
                "input_range": self._gray.record,
            },
            range_note=self._gray.note,
        )

    def _frames(self, start, end, every):
        if not self._once:
            return self._iterate(None, iter(self._iterable), start, end, every)
        if self._started:
            raise SourceError("<iterator> is a one-pass iterator and has already been read; open it again")
        self._started = True
        first, self._first = self._first, None  # held only until its pass starts
        return self._iterate(first, self._iterator, start, end, every)

    def _iterate(self, image, rest, start, end, every):
        """Frames of one pass; ``image`` is frame 0 already converted, or None to read it from ``rest``."""
        index = 0
        while end is None or index < end:
            self._check_open()
            wanted = index >= start and (index - start) % every == 0
            if image is None:
                try:
                    raw = next(rest)
                except StopIteration:
                    return
                # Frames that are not wanted are read (the stream moves on) but not converted.
                image = self._gray(raw, index) if wanted else None
            if wanted:
                if image.shape != self.shape:
                    raise SourceError(f"<iterator>: frame {index} has shape {image.shape}, frame 0 {self.shape}")
                yield Frame(index, self._time(index), image)
            image = None
            index += 1

    def _close(self):
        self._iterator = self._iterable = None

