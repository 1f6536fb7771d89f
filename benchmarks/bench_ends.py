"""The line-end map, measured (issue 16's ablation): does learning it help, and does cutting lines at it help?

Two line-field models trained with the same config, seed and steps, one with
``extras = ["ends"]`` (a line-end map as a fourth output) and one without
(``examples/train/linefield_ablation_plain.toml`` and ``linefield_ablation_ends.toml``). Each model's fields are computed once per image; then each tracing
variant is scored on the same images:

- synthetic sets (``tem-track synth`` folders, e.g. 40 images per preset at seed 777001,
  never the held-out sets): the thesis' length score (section 3.4.3), spline recall and
  lines per image;
- the labelled TWIP frames (``../shared/data/real/twip-8.4um/labeled``; skipped when
  absent): spline recall, the length score of the found lines, lines per frame.

Variants: each model with the shipped tracing; the ends model with ``end_cut`` (traced
lines cut where the predicted line-end map peaks inside them) at several levels.

    tem-track train examples/train/linefield_ablation_plain.toml --out runs/ablation_plain
    tem-track train examples/train/linefield_ablation_ends.toml --out runs/ablation_ends
    for p in sd1 sd2 sd3; do tem-track synth --preset $p --n 40 --seed 777001 --out scratch/$p; done
    python benchmarks/bench_ends.py --model plain=runs/ablation_plain/best.pt --model ends=runs/ablation_ends/best.pt \\
        --synthetic scratch/sd1 scratch/sd2 scratch/sd3

Checkpoints need the training extra (torch); ONNX files run on onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

LABELLED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "twip-8.4um" / "labeled"
END_CUTS = (0.3, 0.5, 0.7)


def cached_fields(backend, folder: Path):
    """``(fields, true masks, labelled curves or None)`` of every image of ``folder``."""
    from temtrack.sdk.evaluate import _predict_at_frame_size
    from temtrack.sdk.groundtruth import iter_ground_truth

    return [(np.asarray(_predict_at_frame_size(backend, truth.image), np.float32), truth.masks)
            for truth in iter_ground_truth(folder)]


def score(cases, settings) -> dict:
    """Thesis length score, spline recall, length score of found lines, lines per image."""
    from temtrack.sdk.linefield import extract_lines, instance_masks
    from temtrack.sdk.metrics import score_image, summarize
    from temtrack.sdk.splinematch import summarize_splines

    scores, lines = [], 0
    for fields, masks in cases:
        found = extract_lines(fields, settings=settings)
        lines += len(found.dislocations)
        scores.append(score_image(instance_masks(found), masks, splines=True,
                                  pred_curves=[d.points for d in found.dislocations]))
    thesis, splines = summarize(scores), summarize_splines([s.splines for s in scores])
    return {"length score": thesis["length_score_mean"], "spline recall": splines["spline_recall"],
            "length, found": splines["matched_length_score"], "lines": lines / len(cases)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH (checkpoint or ONNX); repeat")
    parser.add_argument("--synthetic", nargs="*", type=Path, default=[], help="synthetic dataset folders")
    parser.add_argument("--real", type=Path, default=LABELLED, help="folder of labelled real frames")
    args = parser.parse_args(argv)

    from temtrack.sdk.evaluate import _resolve_backend
    from temtrack.sdk.linefield import LineFieldSettings

    sets = [(folder.name, folder) for folder in args.synthetic]
    if args.real.is_dir():
        sets.append(("TWIP", args.real))
    else:
        print(f"real frames skipped: {args.real} is absent (the real data lives in ../shared/data/real)", file=sys.stderr)
    rows = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        backend = _resolve_backend(path)
        if getattr(backend, "family", None) != "linefield":
            raise SystemExit(f"{path}: not a line-field model")
        for set_name, folder in sets:
            tic = time.perf_counter()
            cases = cached_fields(backend, folder)
            channels = cases[0][0].shape[0]
            print(f"{name} on {set_name}: {len(cases)} images, {channels} channels, fields in {time.perf_counter() - tic:.0f} s",
                  file=sys.stderr, flush=True)
            if channels > 3:
                peak = max(float(fields[3].max()) for fields, _ in cases)
                print(f"  line-end map: largest value over the {len(cases)} images {peak:.4f}", file=sys.stderr, flush=True)
            cuts = (0.0, *END_CUTS) if channels > 3 else (0.0,)
            for cut in cuts:
                result = score(cases, LineFieldSettings(end_cut=cut))
                rows.append((name, f"end_cut {cut}" if cut else "shipped tracing", set_name, result))
                print(f"  {rows[-1][1]:16s} " + "  ".join(f"{k} {v:.3f}" for k, v in result.items()), file=sys.stderr, flush=True)
    print("| model | tracing | set | length score | spline recall | length score, found | lines per image |")
    print("|---|---|---|---|---|---|---|")
    for name, variant, set_name, r in rows:
        print(f"| {name} | {variant} | {set_name} | {r['length score']:.3f} | {r['spline recall']:.3f} | "
              f"{r['length, found']:.3f} | {r['lines']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
