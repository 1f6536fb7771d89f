"""Splines on burnt-in overlays before and after the main job's overlay filter (issue 17).

    python benchmarks/annotation_report.py [--model default] [--fecral-every 24] [--twip-every 8]
        [--fecral-ranges 112-128,448-464,976-996] [--window 4] [--cost 64]

One pass per video with the filter on (:class:`temtrack.sdk.annotations.AnnotationSettings`):
a frame's splines *before* the filter are the ones it left whole plus the ones it dropped
or cut (``FrameResult.dropped``, ``FrameResult.cut``; the pieces of the cut ones are among
``FrameResult.dislocations``), so before and after come from the same model outputs.
Splines on the annotations are counted by the rule of ``real_data_report.py``
(``annotation_mask``, ``on_annotation``: at least half the points on the saturated pixels
of the fecral annotation boxes, white ones for the scale bar, its label and the cursor,
grown by 3 px). ``--fecral-ranges`` adds runs over consecutive fecral frames (each range its
own stream, as a run with ``start``/``end`` would be), e.g. around the clip starts 120, 456
and 984 whose first frames are blurred keyframes; ``--window`` sets
``AnnotationSettings.window`` (0 = each frame on its own, the filter before issue 17's
window). ``--cost N`` times the overlay masks alone on fecral frames 96 to 95 + N:
each frame on its own (the baseline) and with the window, as a ratio. Prints Markdown
tables; missing real data is skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data_report import ANNOTATIONS, annotation_mask, on_annotation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def measure(model: str, video: Path, every: int, *, boxes: bool, window: int = 4, start: int = 0, end=None) -> dict:
    """Splines per frame before/after, dropped ones, and (``boxes``) those on the annotations."""
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.annotations import AnnotationSettings
    from temtrack.sdk.sources import open_source

    analyzer = Analyzer(model, workers=0, batch_size=1, annotations=AnnotationSettings(window=window))
    before, after, masked, dropped_counts, cut_counts = [], [], [], [], []
    on_before = {name: 0 for name in [*ANNOTATIONS, "other"]}
    on_after = dict(on_before)
    left: dict = {}
    started = time.perf_counter()
    with open_source(video) as source:
        for result in analyzer.stream(source.frames(start=start, end=end, every=every), keep_images=boxes):
            # Before the filter: the records left whole, those dropped and those cut (the
            # pieces of the cut ones are among result.dislocations).
            pieces = {id(piece) for _, cut in result.cut for piece in cut}
            kept, dropped = result.dislocations, result.dropped
            dropped = (*dropped, *(record for record, _ in result.cut))
            before.append(len(kept) - len(pieces) + len(dropped))
            after.append(len(kept))
            masked.append(result.masked_pixels)
            dropped_counts.append(len(result.dropped))
            cut_counts.append(len(result.cut))
            if boxes:
                truth = annotation_mask(result.image)
                whole = tuple(record for record in kept if id(record) not in pieces)
                for records, counts in (((*whole, *dropped), on_before), (kept, on_after)):
                    for record in records:
                        hit = on_annotation(np.asarray(record.points), truth)
                        if hit:
                            counts[hit] += 1
                            if counts is on_after:
                                left[result.frame] = left.get(result.frame, 0) + 1
    report = {
        "frames": len(before),
        "splines_per_frame_before": float(np.mean(before)),
        "splines_per_frame_after": float(np.mean(after)),
        "dropped": int(np.sum(dropped_counts)),
        "cut": int(np.sum(cut_counts)),
        "masked_pixels_per_frame": float(np.mean(masked)),
        "frames_with_mask": int(np.count_nonzero(masked)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if boxes:
        report["on_annotations_before"] = on_before
        report["on_annotations_after"] = on_after
        report["frames_left_on_annotations"] = left
    return report


def cost(video: Path, n: int, window: int, start: int = 96) -> dict:
    """Seconds per frame of the overlay masks alone over ``n`` consecutive frames from
    ``start`` (96: a clip start, 117, and a dose text often partly found): each frame
    on its own (window 0, the baseline) and with ``window``, in this process."""
    from temtrack.sdk.annotations import AnnotationSettings, OverlayWindow
    from temtrack.sdk.sources import open_source

    with open_source(video) as source:
        images = [frame.image for frame in source.frames(start=start, end=start + n)]
    seconds = {}
    for size in (0, window):
        overlays = OverlayWindow(AnnotationSettings(window=size))
        started = time.perf_counter()
        for image in images:
            overlays.push(image)
        overlays.flush()
        seconds[size] = (time.perf_counter() - started) / len(images)
    return {"frames": len(images), "per_frame_s": seconds[0], "window_s": seconds[window],
            "ratio": seconds[window] / seconds[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model file or name (default: the bundled model)")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--fecral-every", type=int, default=24,
                        help="every N-th fecral frame (default 24: 49 frames; 0 skips it)")
    parser.add_argument("--twip-every", type=int, default=8, help="every N-th TWIP frame (default 8: 41 frames; 0 skips it)")
    parser.add_argument("--fecral-ranges", default="", help="also these consecutive fecral frames, e.g. "
                        "112-128,448-464 (first-last, each its own stream; '' for none)")
    parser.add_argument("--window", type=int, default=4, help="AnnotationSettings.window (default 4; 0 = per frame)")
    parser.add_argument("--cost", type=int, default=0, help="time the masks alone on N fecral frames (default 0: no)")
    parser.add_argument("--skip-sampled", action="store_true", help="only the ranges and the cost")
    args = parser.parse_args(argv)
    fecral, twip = args.real / "fecral-loops" / "video.mp4", args.real / "twip-8.4um" / "video.mp4"
    sampled = [("fecral", fecral, args.fecral_every, True, 0, None), ("twip", twip, args.twip_every, False, 0, None)]
    runs = [] if args.skip_sampled else [run for run in sampled if run[2] > 0]
    for part in filter(None, args.fecral_ranges.split(",")):
        first, last = (int(v) for v in part.split("-"))
        runs.append((f"fecral {first}-{last}", fecral, 1, True, first, last + 1))
    rows = []
    for name, path, every, boxes, start, end in runs:
        if not path.exists():
            print(f"skipped {name}: {path} is missing", file=sys.stderr)
            continue
        report = measure(args.model, path, every, boxes=boxes, window=args.window, start=start, end=end)
        print(name, report, file=sys.stderr)
        on = ("-", "-")
        if boxes:
            on = (sum(report["on_annotations_before"].values()), sum(report["on_annotations_after"].values()))
        rows.append(
            f"| {name} | {report['frames']} (every {every}) | {report['splines_per_frame_before']:.1f} "
            f"| {report['splines_per_frame_after']:.1f} | {report['dropped']} | {report['cut']} | {on[0]} | {on[1]} "
            f"| {report['masked_pixels_per_frame']:.0f} | {report['frames_with_mask']} |"
        )
    print("| video | frames | splines/frame before | after | dropped | cut | on annotations before | after "
          "| masked px/frame | frames with a mask |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.cost and fecral.exists():
        timing = cost(fecral, args.cost, args.window)
        print(f"\noverlay masks alone, fecral frames 96-{95 + timing['frames']}: {1000 * timing['per_frame_s']:.0f} ms/frame "
              f"each on its own, {1000 * timing['window_s']:.0f} ms/frame with window {args.window} "
              f"(ratio {timing['ratio']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
