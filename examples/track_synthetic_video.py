"""The main job on a synthetic in-situ video, with pictures of what comes out.

    python examples/track_synthetic_video.py --out track_example

writes into the folder ``track_example/``: a synthetic pile-up video (``video/``), the three
tables (``splines.parquet``, ``splines_tracks.parquet``, ``splines_pairs.parquet``), an
overlay video with every spline in its track's colour, the pair-distance and position
plots, and ``snapshot.png`` (one frame with its tracked splines).

The backend here is a stand-in for a perfect model: it returns the generator's own
masks for each frame, so the pictures show what tracking and the series make of exact
segmentations, not the quality of a model. It also shows how to plug in your own
runtime: anything with ``name``, ``input_size``, ``threshold``, ``predict`` and
``describe`` works as ``Analyzer(backend=...)``. To use the bundled model instead, use
``Analyzer()`` (or ``Analyzer("model.onnx")`` for your own; ``tem-track models`` lists them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from temtrack import Analyzer
from temtrack.sdk.overlay import draw_tracks
from temtrack.training.synth import iter_video, resolve_config
from temtrack.training.synth.video import VideoSettings, write_video


class GeneratorMasks:
    """The generator's masks of each frame, in frame order (a perfect model)."""

    name = "generator-masks"
    input_size = None  # any frame size
    threshold = None  # masks come thresholded

    def __init__(self, config, seed, settings):
        self._frames = iter_video(config, seed, settings)

    def predict(self, frames):
        return [next(self._frames).masks for _ in frames]

    def describe(self):
        return {"name": self.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("track_example"))
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    config, settings = resolve_config("sd1", size=384), VideoSettings(frames=args.frames, fps=15.0)
    video, _ = write_video(args.out / "video", config, args.seed, settings, overwrite=True)
    analyzer = Analyzer(backend=GeneratorMasks(config, args.seed, settings))
    result = analyzer.run(
        video,
        args.out / "splines.parquet",
        pixel_size_nm=0.5,
        overlay=args.out / "overlay.mp4",
        plots=args.out / "plots",
        overwrite=True,
    )
    print(f"{result.frames} frames, {result.splines.track_id.nunique()} tracks, "
          f"{len(result.pairs)} pair distances; wrote {', '.join(str(p) for p in result.paths.values())}")

    # One frame with its tracked splines, as a PNG.
    middle = args.frames // 2
    frame = next(f for f in iter_video(config, args.seed, settings) if f.index == middle)
    rows = result.splines[result.splines.frame == middle]
    curves = [np.column_stack([x, y]) for x, y in zip(rows.x, rows.y)]
    cv2.imwrite(str(args.out / "snapshot.png"), draw_tracks(frame.image, curves, rows.track_id.to_numpy()))
    print(f"wrote {args.out / 'snapshot.png'}")


if __name__ == "__main__":
    main()
