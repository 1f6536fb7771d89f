"""The figures and pictures of the model card (docs/model-card.md), in one command.

    python benchmarks/model_card.py --heldout HELDOUT --out OUT [--model NAME=MODEL ...]
        [--real ../shared/data/real] [--figures docs/model-card] [--quick]
    python benchmarks/model_card.py --beside FILE.jpg --model a=A.onnx --model b=B.onnx

- ``HELDOUT`` holds ``sd1``, ``sd2``, ``sd3``: synthetic sets from ``tem-track synth``
  with seeds never used in training, e.g.
  ``tem-track synth --preset sd1 --n 2000 --seed 900001 --out HELDOUT/sd1``.
- ``--model`` (repeatable; default ``shipped=default``, the bundled model): each model
  and the classical backend are scored on every held-out set with the length metric
  (thesis 3.4.3), and on the labelled TWIP frames (recall of the labelled dislocations
  and the length score over the matched ones; the labels are partial, so no precision).
- The first model also runs the main job on the TWIP video (speed, tracks, an overlay
  video), and draws its splines on the real samples (PNG pictures into ``--figures``).

Every evaluation report is kept in ``OUT`` (JSON, with its box plot) and reused when the
command is run again (delete a report to redo it), so an interrupted run resumes.
``OUT/summary.json`` gathers the figures; a Markdown table is printed.
Real data missing: those parts are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from temtrack.sdk.backends import get_backend
from temtrack.sdk.evaluate import evaluate, write_report
from temtrack.sdk.models import resolve_model

PRESETS = ("sd1", "sd2", "sd3")
REPO = Path(__file__).resolve().parents[1]
# Real frames drawn for the model card: (label, source, frame index or None for an image).
PICTURES = (
    ("sample1", "dislocation-samples/sample1.png", None),
    ("sample2", "dislocation-samples/sample2.png", None),
    ("sample3", "dislocation-samples/sample3.png", None),
    ("sample4", "dislocation-samples/sample4.png", None),
    ("twip-frame200", "twip-8.4um/video.mp4", 200),
    ("fecral-frame600", "fecral-loops/video.mp4", 600),
)


def _report(out: Path, name: str, data: Path, backend, limit: int | None, line_settings=None) -> dict:
    """Evaluate (or reuse) one report; return its dict."""
    path = out / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    if limit is not None:
        data = _subset(data, limit, out / f"_subset_{data.name}")
    report = evaluate(data, backend, line_settings=line_settings, progress=True)
    write_report(report, path)
    return json.loads(path.read_text())


def heldout_reports(heldout: Path, backends: dict, out: Path, limit: int | None, *, suffix: str = "",
                    line_settings=None) -> dict:
    """``{(preset, name): report}`` of every backend on every held-out set present."""
    reports = {}
    for preset in PRESETS:
        data = heldout / preset
        if not data.is_dir():
            print(f"skipped {preset}: {data} is missing", file=sys.stderr)
            continue
        for name, backend in backends.items():
            reports[preset, name] = _report(out, f"heldout_{preset}_{name}{suffix}", data, backend, limit, line_settings)
    return reports


def _subset(data: Path, n: int, where: Path) -> Path:
    """A synthetic dataset folder with its first ``n`` images (symlinks), for --quick."""
    if where.exists():
        return where
    meta = json.loads((data / "dataset.json").read_text())
    meta["n"] = n
    for sub in ("images", "masks", "labels"):
        if (data / sub).is_dir():
            (where / sub).mkdir(parents=True)
            for item in sorted((data / sub).iterdir())[:n]:
                (where / sub / item.name).symlink_to(item.resolve())
    (where / "dataset.json").write_text(json.dumps(meta))
    return where


def _matched_length(report: dict) -> float:
    """Mean length score over the matched ground-truth dislocations."""
    scores = [m["score"] for image in report["images"] for m in image["matches"] if m["pred_index"] >= 0]
    return float(np.mean(scores)) if scores else float("nan")


def _figures(report: dict) -> dict:
    s = report["summary"]
    return {
        "spline_recall": s.get("spline_recall"),
        "spline_length_score": s.get("matched_length_score"),
        "labelled_per_frame": s.get("true_per_frame"),
        "predicted_per_frame": s.get("pred_per_frame"),
        "images": s["n_images"],
        "dislocations": s["n_gt"],
        "length_score": s["length_score_mean"],
        "length_score_median": s["length_score_median"],
        "recall": s["dislocation_recall_pooled"],
        "precision": s["dislocation_precision_pooled"],
        "length_score_matched": _matched_length(report),
        "predicted": s["n_pred"],
        "seconds": report["seconds"],
    }


def box_plot(reports: dict, path: Path) -> None:
    """Length score against the number of dislocations per image, one panel per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for (_, name) in reports})
    fig, axes = plt.subplots(len(names), len(PRESETS), figsize=(5 * len(PRESETS), 3.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, preset in enumerate(PRESETS):
            axis = axes[row][col]
            report = reports.get((preset, name))
            if report is None:
                axis.set_visible(False)
                continue
            groups: dict[int, list] = {}
            for image in report["images"]:
                groups.setdefault(image["n_gt"], []).append(image["length_score"])
            counts = sorted(groups)
            axis.boxplot([groups[c] for c in counts], positions=range(len(counts)), widths=0.6)
            axis.set_xticks(range(len(counts)), [str(c) for c in counts], fontsize=7)
            axis.set_ylim(-0.02, 1.02)
            axis.set_title(f"{name} on {preset.upper()}-like: mean {report['summary']['length_score_mean']:.3f}",
                           fontsize=9)
            axis.set_xlabel("dislocations in the image")
            axis.set_ylabel("length score")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _read_frame(path: Path, index: int | None) -> np.ndarray:
    from temtrack.sdk.sources import open_source

    if index is None:
        import cv2

        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    with open_source(path) as source:
        for frame in source.frames(start=index, end=index + 1):
            return frame.image
    raise ValueError(f"{path} has no frame {index}")


def pictures(model: Path, real: Path, folder: Path) -> list[str]:
    """The model's splines drawn on real frames, side by side with the frame."""
    import cv2

    from temtrack.sdk.analyzer import Analyzer

    analyzer = Analyzer(model, workers=0, batch_size=1)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for label, source, index in PICTURES:
        path = real / source
        if not path.exists():
            print(f"skipped picture {label}: {path} is missing", file=sys.stderr)
            continue
        image = _read_frame(path, index)
        drawn, curves = _drawn(analyzer, image)
        plain = cv2.cvtColor(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        panel = _joined([plain, drawn])
        target = folder / f"{label}.jpg"
        cv2.imwrite(str(target), panel, [cv2.IMWRITE_JPEG_QUALITY, 85])
        written.append(f"{label}: {len(curves)} dislocations")
    return written


def _joined(panels: list, width: int = 1100, *, exact: bool = False) -> np.ndarray:
    """``panels`` (same height) side by side with 8 px white gaps, scaled down to
    ``width`` px when wider (and up to it with ``exact``, so that rows stack)."""
    import cv2

    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    row = np.concatenate([piece for panel in panels for piece in (gap, panel)][1:], axis=1)
    if row.shape[1] > width or exact:
        scale = width / row.shape[1]
        row = cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return row


def _drawn(analyzer, image: np.ndarray):
    """``image`` with the analyzer's splines drawn on it, one colour each, and the splines."""
    from temtrack.sdk.overlay import draw_tracks

    (result,) = analyzer.stream([image])
    curves = [d.points for d in result.dislocations]
    return draw_tracks(image, curves, list(range(len(curves))), labels=False), curves


#: The pictures drawn side by side for several models (``--beside``).
BESIDE = ("sample3", "fecral-frame600", "twip-frame200")


def beside(models: dict, real: Path, target: Path) -> list[str]:
    """One picture: a row per real frame of :data:`BESIDE`, each model's splines side by
    side in the order given (columns), 1100 px wide."""
    import cv2

    from temtrack.sdk.analyzer import Analyzer

    analyzers = {name: Analyzer(model, workers=0, batch_size=1) for name, model in models.items()}
    rows, written = [], []
    for label, source, index in PICTURES:
        if label not in BESIDE or not (real / source).exists():
            continue
        image = _read_frame(real / source, index)
        panels = []
        for name, analyzer in analyzers.items():
            drawn, curves = _drawn(analyzer, image)
            panels.append(drawn)
            written.append(f"{label}, {name}: {len(curves)} dislocations")
        rows += [np.full((8, 1100, 3), 255, np.uint8), _joined(panels, exact=True)]
    if not rows:
        return ["skipped the side-by-side picture: no real frame found"]
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), np.concatenate(rows[1:]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return written


def _along_border(table, shape, margin: float = 4.0, share: float = 0.8) -> list[int]:
    """Frames of the splines with at least ``share`` of their points within ``margin`` px
    of the frame's edge (one entry per such spline)."""
    height, width = shape
    frames = []
    for frame, xs, ys in zip(table.column("frame").to_pylist(), table.column("x").to_pylist(), table.column("y").to_pylist()):
        xs, ys = np.asarray(xs), np.asarray(ys)
        near = (xs < margin) | (ys < margin) | (xs > width - 1 - margin) | (ys > height - 1 - margin)
        if near.mean() >= share:
            frames.append(frame)
    return frames


def labelled_track_lifetimes(splines_path: Path, labelled: Path) -> dict:
    """How long the tracks that carry labelled dislocations last.

    In each labelled frame, each labelled line is matched to a predicted spline of that
    frame by :func:`temtrack.sdk.splinematch.score_splines`; the matched spline's track is
    followed through the whole video. Returns the lifetimes (frames) of those tracks and
    how many of the labelled frames the same track is matched in.
    """
    import cv2
    import pyarrow.parquet as pq

    from temtrack.sdk.groundtruth import line_label_files, line_label_masks
    from temtrack.sdk.postprocess import extract_dislocations
    from temtrack.sdk.splinematch import score_splines

    table = pq.read_table(splines_path, columns=["frame", "track_id", "x", "y"]).to_pandas()
    lifetime = table.groupby("track_id").frame.agg(lambda f: int(f.max() - f.min() + 1))
    matched_tracks, found, labelled_lines = [], 0, 0
    frames_of_track: dict[int, set] = {}
    files = line_label_files(labelled)
    for image_path, label_path in files:
        frame = int("".join(ch for ch in image_path.stem if ch.isdigit()))
        label = cv2.imread(str(label_path), cv2.IMREAD_GRAYSCALE)
        truth = [d.points for d in extract_dislocations(line_label_masks(label)).dislocations]
        rows = table[table.frame == frame]
        preds = [np.column_stack([x, y]) for x, y in zip(rows.x, rows.y)]
        score = score_splines(preds, truth)
        labelled_lines += len(truth)
        found += score.n_found
        for _, k in score.pairs:  # the same one-to-one matching as the spline recall
            track = int(rows.track_id.iloc[k])
            matched_tracks.append(track)
            frames_of_track.setdefault(track, set()).add(frame)
    lifetimes = np.array([lifetime[t] for t in matched_tracks if t in lifetime.index])
    n_frames = int(table.frame.max() + 1) if len(table) else 0
    return {
        "labelled_frames": len(files),
        "labelled_lines": labelled_lines,
        "found": found,
        "video_frames": n_frames,
        "matched_track_lifetime_median": float(np.median(lifetimes)) if len(lifetimes) else None,
        "matched_track_lifetime_quartiles": [float(q) for q in np.percentile(lifetimes, [25, 75])] if len(lifetimes) else None,
        "matched_tracks_over_half_the_video": float(np.mean(lifetimes >= n_frames / 2)) if len(lifetimes) else None,
        "labelled_frames_per_matched_track_median": float(np.median([len(v) for v in frames_of_track.values()]))
        if frames_of_track else None,
    }


def main_job(model: Path, video: Path, out: Path) -> dict:
    """The main job on a real video with an overlay: speed, tracks, splines along the border."""
    import pyarrow.parquet as pq

    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.sources import open_source

    analyzer = Analyzer(model)
    splines = out / "twip_splines.parquet"
    result = analyzer.run(video, splines, overlay=out / "twip_overlay.mp4", plots=out / "twip_plots", overwrite=True)
    table = pq.read_table(result.paths["splines"], columns=["frame", "track_id", "x", "y"])
    tracks = table.column("track_id").to_numpy()
    lengths = np.bincount(tracks[tracks >= 0]) if (tracks >= 0).any() else np.zeros(0)
    with open_source(video) as source:
        shape = next(iter(source.frames(end=1))).image.shape
    border = _along_border(table, shape)
    labelled = video.parent / "labeled"
    return {
        "splines_along_the_border": len(border),
        "frames_with_a_spline_along_the_border": len(set(border)),
        "labelled_tracks": labelled_track_lifetimes(result.paths["splines"], labelled) if labelled.is_dir() else None,
        "frames": result.frames,
        "seconds": result.seconds,
        "frames_per_s": result.fps,
        "dislocations": int(len(tracks)),
        "per_frame": float(len(tracks) / max(result.frames, 1)),
        "tracks": int(len(np.unique(tracks[tracks >= 0]))),
        "tracks_10_frames_or_more": int((lengths >= 10).sum()),
        "selection": analyzer.selection,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=Path, help="folder with sd1, sd2, sd3 held-out sets (required unless --pictures-only)")
    parser.add_argument("--out", type=Path, help="folder for reports, overlay and summary (required unless --pictures-only)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=MODEL",
                        help="a model to score (repeatable; default shipped=default)")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--figures", type=Path, help="write the model card's pictures here")
    parser.add_argument("--quick", action="store_true", help="100 held-out images per preset, no video run")
    parser.add_argument("--limit", type=int, help="score the first LIMIT held-out images per preset")
    parser.add_argument("--skip-video", action="store_true", help="no main-job run on the TWIP video")
    parser.add_argument("--no-classical", action="store_true",
                        help="score the models only (e.g. while the classical reports are made elsewhere)")
    parser.add_argument("--pictures-only", action="store_true",
                        help="with --figures: only redraw the pictures on real data (the first model)")
    parser.add_argument("--beside", type=Path, metavar="FILE.jpg",
                        help="only draw one picture of every --model's splines side by side "
                             "on a dislocation sample, FeCrAl and TWIP (nothing else is run)")
    args = parser.parse_args(argv)

    models = dict(item.split("=", 1) for item in (args.model or ["shipped=default"]))
    models = {name: resolve_model(spec) for name, spec in models.items()}
    if args.beside is not None:
        print("\n".join(beside(models, args.real, args.beside)))
        return 0
    if args.pictures_only:
        if args.figures is None:
            parser.error("--pictures-only needs --figures FOLDER")
        print("\n".join(pictures(next(iter(models.values())), args.real, args.figures)))
        return 0
    if args.heldout is None or args.out is None:
        parser.error("--heldout and --out are required (unless --pictures-only)")
    args.out.mkdir(parents=True, exist_ok=True)
    limit = 100 if args.quick else args.limit
    summary: dict = {"models": {n: str(p) for n, p in models.items()}, "heldout": {}, "twip": {}}
    # One backend each (one onnxruntime session per model), for every data set.
    backends = {name: get_backend(str(path)) for name, path in models.items()}
    if not args.no_classical:
        backends["classical"] = get_backend("classical")
    reports = heldout_reports(args.heldout, backends, args.out, limit)
    for (preset, name), report in reports.items():
        summary["heldout"].setdefault(preset, {})[name] = _figures(report)
    if reports:
        box_plot(reports, args.out / "length_score_by_count.png")

    labelled = args.real / "twip-8.4um" / "labeled"
    if labelled.is_dir():
        for name, backend in backends.items():
            report = _report(args.out, f"twip_{name}", labelled, backend, None)
            summary["twip"][name] = _figures(report)
    else:
        print(f"skipped the labelled TWIP frames: {labelled} is missing", file=sys.stderr)

    first = next(iter(models.values()))
    video = args.real / "twip-8.4um" / "video.mp4"
    if video.exists() and not (args.quick or args.skip_video):
        started = time.perf_counter()
        summary["twip_video"] = main_job(first, video, args.out)
        print(f"main job on {video}: {time.perf_counter() - started:.0f} s")
    if args.figures is not None:
        summary["pictures"] = pictures(first, args.real, args.figures)
        if reports:
            box_plot(reports, args.figures / "length_score_by_count.png")

    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))
    return 0


def table(summary: dict) -> str:
    lines = ["| data | backend | images | length score (mean) | recall | length score, matched | precision "
             "| spline recall | length score, found lines | labelled / predicted per frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(f"{p.upper()}-like held-out", n, f) for p, by in summary["heldout"].items() for n, f in by.items()]
    rows += [("TWIP labelled frames", n, f) for n, f in summary["twip"].items()]

    def cell(value):
        return "-" if value is None or value != value else f"{value:.3f}"

    for data, name, f in rows:
        precision = "(partial labels)" if data.startswith("TWIP") else cell(f["precision"])
        per_frame = "-" if f.get("labelled_per_frame") is None else f"{f['labelled_per_frame']:.1f} / {f['predicted_per_frame']:.1f}"
        lines.append(f"| {data} | {name} | {f['images']} | {cell(f['length_score'])} | {cell(f['recall'])} | "
                     f"{cell(f['length_score_matched'])} | {precision} | {cell(f.get('spline_recall'))} | "
                     f"{cell(f.get('spline_length_score'))} | {per_frame} |")
    video = summary.get("twip_video")
    if video:
        lines.append(f"\nTWIP video: {video['frames']} frames in {video['seconds']:.0f} s "
                     f"({video['frames_per_s']:.2f} frames/s), {video['per_frame']:.1f} dislocations per frame, "
                     f"{video['tracks']} tracks ({video['tracks_10_frames_or_more']} over >= 10 frames), "
                     f"{video['splines_along_the_border']} splines along the frame border")
        if video.get("labelled_tracks"):
            lines.append(f"tracks of labelled lines: {json.dumps(video['labelled_tracks'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
