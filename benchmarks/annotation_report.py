"""Splines on burnt-in overlays before and after the main job's overlay filter (issue 17).

    python benchmarks/annotation_report.py [--model default] [--fecral-every 24] [--twip-every 8]

One pass per video with the filter on (:class:`temtrack.sdk.annotations.AnnotationSettings`):
a frame's splines *before* the filter are the ones it kept plus the ones it dropped
(``FrameResult.dislocations`` + ``FrameResult.dropped``; the filter only removes), so
before and after come from the same model outputs. Splines on the annotations are
counted by the rule of ``real_data_report.py`` (``annotation_mask``, ``on_annotation``:
at least half the points on saturated pixels inside the fecral annotation boxes, grown
by 3 px). Prints a Markdown table; missing real data is skipped with a message.
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


def measure(model: str, video: Path, every: int, *, boxes: bool) -> dict:
    """Splines per frame before/after, dropped ones, and (``boxes``) those on the annotations."""
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.sources import open_source

    analyzer = Analyzer(model, workers=0, batch_size=1)
    before, after, masked = [], [], []
    on_before = {name: 0 for name in [*ANNOTATIONS, "other"]}
    on_after = dict(on_before)
    started = time.perf_counter()
    with open_source(video) as source:
        for result in analyzer.stream(source.frames(every=every), keep_images=boxes):
            kept, dropped = result.dislocations, result.dropped
            before.append(len(kept) + len(dropped))
            after.append(len(kept))
            masked.append(result.masked_pixels)
            if boxes:
                truth = annotation_mask(result.image)
                for records, counts in (((*kept, *dropped), on_before), (kept, on_after)):
                    for record in records:
                        hit = on_annotation(np.asarray(record.points), truth)
                        if hit:
                            counts[hit] += 1
    report = {
        "frames": len(before),
        "splines_per_frame_before": float(np.mean(before)),
        "splines_per_frame_after": float(np.mean(after)),
        "dropped": int(np.sum(before) - np.sum(after)),
        "masked_pixels_per_frame": float(np.mean(masked)),
        "frames_with_mask": int(np.count_nonzero(masked)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if boxes:
        report["on_annotations_before"] = on_before
        report["on_annotations_after"] = on_after
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model file or name (default: the bundled model)")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--fecral-every", type=int, default=24, help="every N-th fecral frame (default 24: 49 frames)")
    parser.add_argument("--twip-every", type=int, default=8, help="every N-th TWIP frame (default 8: 41 frames)")
    args = parser.parse_args(argv)
    rows = []
    for name, path, every, boxes in (
        ("fecral", args.real / "fecral-loops" / "video.mp4", args.fecral_every, True),
        ("twip", args.real / "twip-8.4um" / "video.mp4", args.twip_every, False),
    ):
        if not path.exists():
            print(f"skipped {name}: {path} is missing", file=sys.stderr)
            continue
        report = measure(args.model, path, every, boxes=boxes)
        print(name, report, file=sys.stderr)
        on = ("-", "-")
        if boxes:
            on = (sum(report["on_annotations_before"].values()), sum(report["on_annotations_after"].values()))
        rows.append(
            f"| {name} | {report['frames']} (every {every}) | {report['splines_per_frame_before']:.1f} "
            f"| {report['splines_per_frame_after']:.1f} | {report['dropped']} | {on[0]} | {on[1]} "
            f"| {report['masked_pixels_per_frame']:.0f} | {report['frames_with_mask']} |"
        )
    print("| video | frames | splines/frame before | after | dropped | on annotations before | after "
          "| masked px/frame | frames with a mask |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
