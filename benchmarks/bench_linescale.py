"""Line width and ``--scale auto``: how much a magnification the model was not trained at
costs, and how much the automatic scale wins back.

1. **Widths** (:func:`temtrack.sdk.linescale.line_sigma`, the Gaussian sigma of the
   strongest elongated dark ridges): generator images of the presets the bundled model
   trained on, the labelled TWIP frames, the four dislocation samples and the FeCrAl
   video (a video of loops, which must keep scale 1), with the scale
   :func:`~temtrack.sdk.linescale.choose_scale` picks for each real input.
2. **Other magnifications**: the labelled TWIP frames resampled by a zoom (cubic up,
   area down), as a microscope at another magnification or a camera with other pixels
   would show them, run through the main job (:class:`~temtrack.sdk.Analyzer`, the
   bundled model) at their own size and with ``scale="auto"``; spline recall, length
   score of the found lines and lines per frame, scored in the labels' own pixels
   (``tem-track eval``'s rule), with the ratio of auto to own size.
3. **Bright lines**: the same frames inverted (as dark field would show them) with
   ``--lines dark`` (the default) and ``--lines bright``.

    python benchmarks/bench_linescale.py                 # every 3rd labelled frame
    python benchmarks/bench_linescale.py --step 1 --zooms 0.5 1 2
    python benchmarks/bench_linescale.py --picture docs/model-card-linefield/scale-auto.jpg

Needs the real data (``../shared/data/real``; parts skipped with a reason when absent)
and the runtime (onnxruntime); the generator rows need the training extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
LABELLED = REAL / "twip-8.4um" / "labeled"


def zoomed(image: np.ndarray, zoom: float) -> np.ndarray:
    """``image`` resampled by ``zoom`` (cubic up, area down), gray in [0, 1]."""
    import cv2

    if zoom == 1:
        return image
    method = cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=method), 0, 1).astype(np.float32)


def width_rows(presets: list[str], n: int, fecral_every: int) -> list[tuple]:
    """``(input, sigma summary, chosen scale and why)`` per input."""
    from temtrack.sdk.linescale import FRAMES, choose_scale, line_sigma

    rows = []

    def summary(sigmas):
        values = np.array([s for s in sigmas if s is not None])
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        return f"{q50:.2f} ({q25:.2f}-{q75:.2f}, {len(values)} images)"

    try:
        from temtrack.training.synth import generate_sample
    except ImportError as error:
        print(f"generator rows skipped: {error} (install the training extra)", file=sys.stderr)
    else:
        for preset in presets:
            sigmas = [line_sigma(generate_sample(preset, seed=60_000 + k).image) for k in range(n)]
            rows.append((f"generator {preset}", summary(sigmas), ""))
    if LABELLED.is_dir():
        images = [truth.image for truth in _labelled(1)]
        spread = [images[int(i)] for i in np.linspace(0, len(images) - 1, FRAMES).round()]
        rows.append(("TWIP, labelled frames", summary([line_sigma(i) for i in images]), choose_scale(spread).reason))
    samples = sorted((REAL / "dislocation-samples").glob("sample*.png"))
    if samples:
        import cv2

        images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255 for p in samples]
        rows.append(("dislocation samples", summary([line_sigma(i) for i in images]), choose_scale(images).reason))
    video = REAL / "fecral-loops" / "video.mp4"
    if video.exists():
        from temtrack.sdk.sources import open_source

        with open_source(video) as source:
            images = [frame.image for frame in source.frames(every=fecral_every)]
        spread = [images[int(i)] for i in np.linspace(0, len(images) - 1, FRAMES).round()]
        rows.append((f"FeCrAl, every {fecral_every}th frame", summary([line_sigma(i) for i in images]),
                     choose_scale(spread).reason))
    return rows


def _labelled(step: int):
    from temtrack.sdk.groundtruth import iter_ground_truth

    return [truth for k, truth in enumerate(iter_ground_truth(LABELLED)) if k % step == 0]


def _labels(truths) -> list:
    """The labelled lines of each frame, as ``tem-track eval`` reads them."""
    from temtrack.sdk.postprocess import PostprocessSettings, extract_dislocations

    return [[d.points for d in extract_dislocations(t.masks, settings=PostprocessSettings()).dislocations] for t in truths]


def _scores(splines, labels, zoom: float = 1.0) -> dict:
    """``summarize_splines`` of a run's splines table against ``labels`` (frame k = label
    list k), the points divided by ``zoom`` into the labels' pixels."""
    from temtrack.sdk.splinematch import score_splines, summarize_splines

    per_frame = []
    for frame, truth_curves in enumerate(labels):
        rows = splines[splines.frame == frame]
        per_frame.append(score_splines([np.column_stack([x, y]) / zoom for x, y in zip(rows.x, rows.y)], truth_curves))
    return summarize_splines(per_frame)


def zoom_rows(zooms: list[float], step: int) -> list[tuple]:
    """Per zoom: the auto scale, and spline recall / length score / lines per frame at
    the frames' own size and with ``scale="auto"``."""
    from temtrack.sdk.analyzer import Analyzer, InputNotice
    from temtrack.sdk.results import read_metadata

    truths = _labelled(step)
    labels = _labels(truths)
    own, auto = Analyzer(workers=0, scale=None), Analyzer(workers=0, scale="auto")
    rows = []
    for zoom in zooms:
        stack = np.stack([zoomed(t.image, zoom) for t in truths])
        scores = {}
        for name, analyzer in (("own size", own), ("auto", auto)):
            tic = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
                warnings.simplefilter("ignore", InputNotice)
                out = Path(folder) / "splines.parquet"
                splines = analyzer.run(stack, out, progress=False, summary=False).splines.copy()
                choice = read_metadata(out).get("scale_choice", {}).get("reason", "")
            scores[name] = (_scores(splines, labels, zoom), choice, time.perf_counter() - tic)
        (base, _, base_s), (mine, chosen, mine_s) = scores["own size"], scores["auto"]
        rows.append((zoom, chosen, base, mine, base_s, mine_s))
        print(f"zoom {zoom:g} done", file=sys.stderr, flush=True)
    return rows


def inverted_rows(step: int) -> list[tuple]:
    """The labelled TWIP frames inverted (a stand-in for dark field, where lines are
    bright): spline recall, length score and lines per frame with ``lines="dark"`` (the
    default) and ``lines="bright"``."""
    from temtrack.sdk.analyzer import Analyzer

    truths = _labelled(step)
    labels = _labels(truths)
    stack = 1.0 - np.stack([t.image for t in truths])
    return [(lines, _scores(Analyzer(workers=0, lines=lines).run(stack, progress=False).splines, labels))
            for lines in ("dark", "bright")]


def picture(target: Path, zoom: float = 2.0) -> str:
    """One labelled TWIP frame resampled by ``zoom``: the splines at the frames' own size
    (left) and with ``scale="auto"`` (right), one colour each, 1100 px wide."""
    import cv2

    from temtrack.sdk.analyzer import Analyzer, InputNotice
    from temtrack.sdk.overlay import draw_tracks

    truths = _labelled(1)
    image = zoomed(truths[len(truths) // 2].image, zoom)
    panels, counts = [], []
    for scale in (None, "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputNotice)
            splines = Analyzer(workers=0, scale=scale).run(image[None], progress=False).splines
        curves = [np.column_stack([x, y]) for x, y in zip(splines.x, splines.y)]
        panels.append(draw_tracks(image, curves, list(range(len(curves))), labels=False, thickness=3))
        counts.append(len(curves))
    gap = np.full((image.shape[0], 16, 3), 255, np.uint8)
    row = np.concatenate([panels[0], gap, panels[1]], axis=1)
    row = cv2.resize(row, None, fx=1100 / row.shape[1], fy=1100 / row.shape[1], interpolation=cv2.INTER_AREA)
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), row, [cv2.IMWRITE_JPEG_QUALITY, 85])
    from temtrack.sdk.linescale import choose_scale

    return (f"wrote {target}: {counts[0]} splines at the frame's own size, {counts[1]} with scale='auto' "
            f"({choose_scale([image]).reason})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=3, help="every STEP-th labelled TWIP frame (default 3: 20 frames)")
    parser.add_argument("--zooms", type=float, nargs="*", default=[0.5, 0.71, 1.0, 1.41, 2.0, 3.0])
    parser.add_argument("--presets", nargs="*", default=["sd1", "sd2", "sd3"])
    parser.add_argument("--images", type=int, default=40, help="generator images per preset (default 40)")
    parser.add_argument("--fecral-every", type=int, default=49, help="FeCrAl frames for the widths (default every 49th)")
    parser.add_argument("--picture", type=Path, help="only draw a labelled TWIP frame at 2x, own size beside auto, here")
    args = parser.parse_args(argv)
    if args.picture is not None:
        if not LABELLED.is_dir():
            print(f"picture skipped: {LABELLED} is absent", file=sys.stderr)
            return 0
        print(picture(args.picture))
        return 0

    print("| input | line sigma, px: median (quartiles) | --scale auto |")
    print("|---|---|---|")
    for name, sigma, reason in width_rows(args.presets, args.images, args.fecral_every):
        print(f"| {name} | {sigma} | {reason} |")
    if not LABELLED.is_dir():
        print(f"\nzoom rows skipped: {LABELLED} is absent (the real data lives in ../shared/data/real)", file=sys.stderr)
        return 0
    print()
    print("| zoom | --scale auto | spline recall: own size | auto | ratio | length score, found: own size | auto "
          "| lines / frame: own size | auto | seconds: own size | auto |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for zoom, chosen, base, mine, base_s, mine_s in zoom_rows(args.zooms, args.step):
        ratio = mine["spline_recall"] / base["spline_recall"] if base["spline_recall"] else float("nan")
        print(f"| {zoom:g} | {chosen} | {base['spline_recall']:.3f} | {mine['spline_recall']:.3f} | {ratio:.2f} "
              f"| {base['matched_length_score']:.3f} | {mine['matched_length_score']:.3f} "
              f"| {base['pred_per_frame']:.1f} | {mine['pred_per_frame']:.1f} | {base_s:.0f} | {mine_s:.0f} |")
    print()
    print("| TWIP frames inverted (bright lines) | spline recall | length score, found | lines / frame |")
    print("|---|---|---|---|")
    for lines, total in inverted_rows(args.step):
        print(f"| --lines {lines} | {total['spline_recall']:.3f} | {total['matched_length_score']:.3f} "
              f"| {total['pred_per_frame']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
