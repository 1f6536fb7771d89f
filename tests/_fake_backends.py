"""Fake line-field backends for tests of what a model is shown."""

from __future__ import annotations

import numpy as np


class RecordingBackend:
    """A line-field 'model' that finds nothing and keeps the frames it is given (and
    their sizes)."""

    name = "recording"
    family = "linefield"
    input_size = None
    threshold = None

    def __init__(self):
        self.frames, self.shapes = [], []

    def predict(self, frames):
        for frame in frames:
            self.frames.append(np.array(frame))
            self.shapes.append(frame.shape)
        return [np.zeros((3, *f.shape), np.float32) for f in frames]

    def describe(self):
        return {"name": self.name}
