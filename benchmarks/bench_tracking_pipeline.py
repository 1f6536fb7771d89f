"""Tracking on the model's own output: identity accuracy of the main job on synthetic videos.

    python benchmarks/bench_tracking_pipeline.py [--model default] [--videos 2] [--frames 150]
        [--size 512] [--seed 11] [--out DIR] [--curve key=value ...] [--curve-b key=value ...]

``bench_tracking.py`` links the generator's exact centrelines (with lines dropped and
spurious curves added at random); this runs the whole main job instead, as a user
would: ``--videos`` synthetic videos of ``bench_tracking.py``'s hard case (1-3 pile-ups of
5-15 dislocations, half of the spacings 5-9 px; ``tem-track synth --video``, seeds
``--seed``, ``--seed + 1``, ...) go through the model, the line tracing and the curve linker
(:class:`temtrack.sdk.analyzer.Analyzer`). Each frame's splines are matched one to one to
that frame's ground-truth centrelines by the spline-recall rule
(:func:`temtrack.sdk.splinematch.score_splines`: mean distance at most 5 px, half of the
line covered); the ground-truth id of each matched spline then scores its track id.

Printed per video and pooled: the share of splines matched to a true line, and, over the
matched splines only, IDF1 and ID switches per 1000 matched detections
(:func:`temtrack.tracker.tracking_scores`): how consistently a true dislocation keeps
one track id in what the model finds. Splines matched to no line (pieces, run-ons,
texture) are left out of the identity scores; the first figure says how many they are.

The linking is replayed from the main job's splines table with the linker's default
settings (the tracks the main job wrote) and, with ``--curve-b key=value``, with other
settings side by side (``--curve`` changes the first run's): the same splines, so the
difference is the linker's alone. Videos and splines are kept in ``--out`` (default: a
temporary folder) and reused when the command runs again.

``--real SPLINES.parquet`` also relinks a real run's splines table with each setting (e.g.
``tem-track ../shared/data/real/twip-8.4um/video.mp4 --out twip.parquet``) and prints how long
the tracks of the labelled dislocations last (``model_card.labelled_track_lifetimes``,
labelled frames from ``--labelled``): there is no ground truth of identities on a real
video, so longer is not necessarily better; the synthetic scores say whether it is right.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tracking import bench_config, parse_options  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def make_inputs(model: str, out: Path, videos: int, frames: int, size: int, seed: int) -> list[tuple[Path, Path]]:
    """``(ground_truth.parquet, splines.parquet)`` of each video, made when missing."""
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.training.synth import write_video
    from temtrack.training.synth.video import VideoSettings

    analyzer = None
    pairs = []
    for k in range(videos):
        folder = out / f"video_{seed + k}"
        splines = out / f"splines_{seed + k}.parquet"
        if not (folder / "ground_truth.parquet").exists():
            write_video(folder, bench_config(size), seed + k, VideoSettings(frames=frames), progress=False)
        if not splines.exists():
            analyzer = analyzer or Analyzer(model)
            analyzer.run(folder / "video.mp4", splines, overwrite=True)
        pairs.append((folder / "ground_truth.parquet", splines))
    return pairs


def scores(truth_path: Path, splines_path: Path, options: dict) -> dict:
    """Matched share, IDF1 and switches of the splines of one video, linked with ``options``."""
    import pandas as pd

    from temtrack.sdk.splinematch import score_splines
    from temtrack.tracker import make_linker, tracking_scores

    truth = pd.read_parquet(truth_path, columns=["frame", "track_id", "x", "y"])
    truth = truth[truth.x.map(len) >= 2]
    by_frame = dict(tuple(truth.groupby("frame")))
    splines = pd.read_parquet(splines_path, columns=["frame", "x", "y"])
    linker = make_linker("curve", **options)
    frames, true_ids, track_ids = [], [], []
    for frame, group in splines.groupby("frame", sort=True):
        curves = [np.column_stack([x, y]) for x, y in zip(group.x, group.y)]
        ids = linker.step(int(frame), curves)
        lines = by_frame.get(frame, truth.iloc[:0])
        matched = np.full(len(curves), -1)
        for i, j in score_splines(curves, [np.column_stack([x, y]) for x, y in zip(lines.x, lines.y)]).pairs:
            matched[j] = int(lines.track_id.iloc[i])
        frames.append(np.full(len(curves), frame))
        true_ids.append(matched)
        track_ids.append(ids)
    frame, true_id, track_id = (np.concatenate(v) for v in (frames, true_ids, track_ids))
    real = true_id >= 0
    result = tracking_scores(frame[real], true_id[real], track_id[real])
    return {
        "splines": int(len(frame)),
        "matched": float(real.mean()) if len(frame) else 0.0,
        "idf1": result.idf1,
        "switches_per_1000": 1000.0 * result.id_switches / max(int(real.sum()), 1),
        "switches": result.id_switches,
        "n_matched": int(real.sum()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="the model the main job runs (default: the bundled one)")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, help="folder for the videos and splines (kept, reused)")
    parser.add_argument("--curve", nargs="*", default=[], metavar="KEY=VALUE", help="settings of the first linking")
    parser.add_argument("--curve-b", nargs="*", default=None, metavar="KEY=VALUE", help="settings linked side by side")
    parser.add_argument("--real", type=Path, metavar="SPLINES.parquet", help="a real run's splines table to relink")
    parser.add_argument("--labelled", type=Path, default=REAL / "twip-8.4um" / "labeled",
                        help="labelled frames of that video (default: the TWIP ones)")
    args = parser.parse_args(argv)
    if args.videos < 1 or args.frames < 2:
        parser.error("--videos must be at least 1 and --frames at least 2")
    runs = {"curve " + " ".join(args.curve) if args.curve else "curve (defaults)": parse_options(args.curve)}
    if args.curve_b is not None:
        runs["curve " + " ".join(args.curve_b)] = parse_options(args.curve_b)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        inputs = make_inputs(args.model, out, args.videos, args.frames, args.size, args.seed)
        print(f"{args.videos} videos of {args.frames} frames at {args.size} px, seeds {args.seed}-{args.seed + args.videos - 1}, model {args.model}")
        print("| linking | video | splines | matched to a true line | IDF1 (matched) | ID switches per 1000 |")
        print("|---|---|---|---|---|---|")
        for name, options in runs.items():
            pooled = {"n_matched": 0, "switches": 0, "idf1_weighted": 0.0, "splines": 0}
            for k, (truth, splines) in enumerate(inputs):
                s = scores(truth, splines, options)
                print(f"| {name} | {args.seed + k} | {s['splines']} | {s['matched']:.2f} | {s['idf1']:.3f} | {s['switches_per_1000']:.1f} |")
                pooled["n_matched"] += s["n_matched"]
                pooled["switches"] += s["switches"]
                pooled["idf1_weighted"] += s["idf1"] * s["n_matched"]
                pooled["splines"] += s["splines"]
            n = max(pooled["n_matched"], 1)
            print(
                f"| {name} | all | {pooled['splines']} | {pooled['n_matched'] / max(pooled['splines'], 1):.2f} | "
                f"{pooled['idf1_weighted'] / n:.3f} (weighted) | {1000.0 * pooled['switches'] / n:.1f} |"
            )
        if args.real:
            print(f"\ntracks of the labelled dislocations, {args.real} relinked:")
            for name, options in runs.items():
                print(f"  {name}: {real_lifetimes(args.real, args.labelled, options, out)}")


def real_lifetimes(splines_path: Path, labelled: Path, options: dict, out: Path) -> dict:
    """``labelled_track_lifetimes`` of a real run's splines relinked with ``options``."""
    import pandas as pd

    from model_card import labelled_track_lifetimes
    from temtrack.tracker import make_linker

    table = pd.read_parquet(splines_path, columns=["frame", "x", "y"])
    linker = make_linker("curve", **options)
    ids = [linker.step(int(frame), [np.column_stack([x, y]) for x, y in zip(g.x, g.y)]) for frame, g in table.groupby("frame", sort=True)]
    table = table.sort_values("frame", kind="stable").assign(track_id=np.concatenate(ids))
    relinked = out / "relinked.parquet"
    table.to_parquet(relinked)
    result = labelled_track_lifetimes(relinked, labelled)
    keys = ("matched_track_lifetime_median", "matched_track_lifetime_quartiles", "matched_tracks_over_half_the_video")
    return {"tracks": int(table.track_id.nunique()), **{k: result[k] for k in keys}}


if __name__ == "__main__":
    main()
