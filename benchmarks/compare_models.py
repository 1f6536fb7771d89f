"""Line-field models compared at the same number of drawn lines, not at the same threshold.

    python benchmarks/compare_models.py --model bundled=default --model other=runs/x/best.pt \\
        --data twip=../shared/data/real/twip-8.4um/labeled --data sd1=scratch/sd1 \\
        [--thresholds 0.5,0.55,0.6,0.65,0.7,0.75,0.8] [--out compare.json] [--cache DIR]

A model trained further or differently draws its centre map higher or lower, so at one
fixed threshold it may find more lines only because it draws more of them, or fewer
because it draws fewer. This script scores every model on every folder at each
threshold (``evaluate_thresholds``: each model runs once per image) and then reads each
model's curve at the number of predicted lines per frame that the first model (the
reference) draws at its own default threshold (``--reference-threshold``, 0.7): the
thesis' length score, spline recall and length score of the found lines, linearly
interpolated between the two thresholds that bracket that count (``-`` where the
model's thresholds do not reach it). Prints the whole grid and that table; ``--out``
keeps both as JSON. ``--cache DIR`` keeps each model's rows on each folder
(``NAME_DATA.json``, with the model file, folder and thresholds they were made with) and
reuses them when those match, so a model added later does not re-run the others.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from temtrack.sdk.evaluate import evaluate_thresholds

METRICS = (("length_score_mean", "length score"), ("spline_recall", "spline recall"),
           ("matched_length_score", "length, found"))


def _pairs(items: list[str], option: str) -> dict[str, str]:
    named = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"{option} takes NAME=PATH, got {item!r}")
        named[name] = value
    return named


def _model(path: str):
    from temtrack.sdk.backends import get_backend
    from temtrack.sdk.models import resolve_model

    return get_backend(str(resolve_model(path)))


def at_lines(rows: list[dict], lines: float) -> dict:
    """The metrics of ``rows`` (one per threshold) interpolated at ``lines`` predicted
    lines per frame; NaN outside their range."""
    order = sorted(rows, key=lambda row: row["pred_per_frame"])
    x = np.array([row["pred_per_frame"] for row in order])
    out = {}
    for key, _ in METRICS:
        y = np.array([row[key] for row in order], float)
        out[key] = float(np.interp(lines, x, y)) if x[0] <= lines <= x[-1] else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL (a file or a name from 'tem-track models'); the first is the reference")
    parser.add_argument("--data", action="append", required=True, help="NAME=FOLDER with ground truth (as tem-track eval reads)")
    parser.add_argument("--thresholds", default="0.5,0.55,0.6,0.65,0.7,0.75,0.8")
    parser.add_argument("--reference-threshold", type=float, default=0.7)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    models, folders = _pairs(args.model, "--model"), _pairs(args.data, "--data")
    thresholds = sorted({float(t) for t in args.thresholds.split(",")} | {args.reference_threshold})
    grid: dict[str, dict[str, list[dict]]] = {}
    for name, path in models.items():
        model = None
        grid[name] = {}
        for data, folder in folders.items():
            key = {"model": str(Path(path).resolve()) if Path(path).exists() else path,
                   "data": str(Path(folder).resolve()), "thresholds": thresholds}
            cached = args.cache / f"{name}_{data}.json" if args.cache else None
            if cached is not None and cached.is_file() and json.loads(cached.read_text())["key"] == key:
                grid[name][data] = json.loads(cached.read_text())["rows"]
            else:
                model = model or _model(path)
                reports = evaluate_thresholds(folder, model, thresholds, progress=False)
                grid[name][data] = [{"threshold": t, **{k: r.summary[k] for k, _ in METRICS}, "pred_per_frame": r.summary["pred_per_frame"]}
                                    for t, r in zip(thresholds, reports)]
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_text(json.dumps({"key": key, "rows": grid[name][data]}, indent=1))
            for row in grid[name][data]:
                print(f"{name:>12} {data:>8} t={row['threshold']:<5g} " + "  ".join(
                    f"{label} {row[key]:.3f}" for key, label in METRICS) + f"  lines/frame {row['pred_per_frame']:.1f}", flush=True)
    reference = next(iter(models))
    table = {}
    print(f"\nAt the lines per frame {reference} draws at threshold {args.reference_threshold:g}:")
    print("| model | " + " | ".join(f"{data}: {label}" for data in folders for _, label in METRICS) + " |")
    print("|---" * (1 + len(folders) * len(METRICS)) + "|")
    for name in models:
        cells, table[name] = [], {}
        for data in folders:
            target = next(r["pred_per_frame"] for r in grid[reference][data] if r["threshold"] == args.reference_threshold)
            values = at_lines(grid[name][data], target)
            table[name][data] = {"lines_per_frame": target, **values}
            cells += ["-" if np.isnan(values[key]) else f"{values[key]:.3f}" for key, _ in METRICS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"thresholds": thresholds, "grid": grid, "at_reference_lines": table}, indent=2, allow_nan=True))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
