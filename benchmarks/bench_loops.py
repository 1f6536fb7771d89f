"""Benchmark of the classical loop detector and tracker (issue 21).

Synthetic part (``training/synth/loops.py``, frames in memory, no H.264): detection F1
at ellipse IoU >= 0.5, median size (major axis) error, D recovery for tracks of >= 50
frames, IDF1, and F1 under Poisson, salt-and-pepper and Gaussian noise. Real part
(``../shared/data/real/fecral-loops/video.mp4``, skipped when absent): loops per frame,
tracks, lifetimes, size trend, D_eff against size, and a picture with the ellipses.

    python benchmarks/bench_loops.py --synthetic --seeds 20
    python benchmarks/bench_loops.py --synthetic --seeds 20 --option pair_lobes=false   # the detector before issue 21's lobe pairing
    python benchmarks/bench_loops.py --fecral --picture /tmp/loops/fecral.png     # frames 461-805 + speed
    python benchmarks/bench_loops.py --fecral --all --speed-frames 0             # all 1176 frames: memory
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from temtrack.sdk.loops import LoopSettings, detect_loops, track_loops
from temtrack.tracker.loops import ESTIMATORS, LoopLinkSettings, link_loops, size_over_time, track_summary
from temtrack.tracker.metrics import tracking_scores
from temtrack.training.synth.loops import LoopVideoSettings, iter_loop_video

FECRAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "fecral-loops" / "video.mp4"
# Noise levels: Shen used skimage.util.random_noise "up to quite significant" levels
# without stating them; these are ours (image in [0, 1]): Poisson with 30 counts at full
# scale (SNR ~4 at mid gray), 5 % of pixels salt or pepper (skimage's default amount),
# Gaussian of SD 0.1 (variance 0.01, skimage's default).
NOISES = {
    "poisson_30": lambda im, rng: rng.poisson(im * 30.0) / 30.0,  # 30 counts at full scale
    "salt_pepper_0.05": lambda im, rng: np.where(rng.random(im.shape) < 0.05, (rng.random(im.shape) < 0.5).astype(np.float32), im),
    "gaussian_0.1": lambda im, rng: im + rng.normal(0, 0.1, im.shape),  # var 0.01
}


def ellipse_mask(x, y, major, minor, angle, box):
    x0, y0, w, h = box
    canvas = np.zeros((h, w), np.uint8)
    cv2.ellipse(canvas, (int(round((x - x0) * 16)), int(round((y - y0) * 16))),
                (int(round(major * 8)), int(round(minor * 8))), angle, 0, 360, 1, -1, cv2.LINE_8, 4)
    return canvas.astype(bool)


def ellipse_iou(a, b) -> float:
    reach = max(a[2], b[2]) / 2 + 2
    x0, y0 = int(min(a[0], b[0]) - reach), int(min(a[1], b[1]) - reach)
    w = int(max(a[0], b[0]) + reach) - x0 + 1
    h = int(max(a[1], b[1]) + reach) - y0 + 1
    ma, mb = ellipse_mask(*a, (x0, y0, w, h)), ellipse_mask(*b, (x0, y0, w, h))
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 0.0


def match(det: pd.DataFrame, truth: dict, iou_min=0.5):
    """Pairs (det index, truth index, iou) with IoU >= iou_min, one to one (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    if len(det) == 0 or len(truth["x"]) == 0:
        return []
    dist = np.hypot(det.x.values[:, None] - truth["x"][None], det.y.values[:, None] - truth["y"][None])
    cost = np.ones(dist.shape)
    for i, j in zip(*np.nonzero(dist < 20)):
        d = det.iloc[i]
        cost[i, j] = 1 - ellipse_iou((d.x, d.y, d.major, d.minor, d.angle),
                                     (truth["x"][j], truth["y"][j], truth["major"][j], truth["minor"][j], truth["angle"][j]))
    rows, cols = linear_sum_assignment(cost)
    return [(i, j, 1 - cost[i, j]) for i, j in zip(rows, cols) if 1 - cost[i, j] >= iou_min]


def run_synthetic(seed: int, vs: LoopVideoSettings, settings: LoopSettings, noise=None):
    rng = np.random.default_rng([seed, 99])
    tp = fp = fn = 0
    size_err, dets, truths = [], [], []
    t_detect = 0.0
    for frame in iter_loop_video(vs, seed):
        image = frame.image if noise is None else np.clip(NOISES[noise](frame.image, rng), 0, 1).astype(np.float32)
        t = time.perf_counter()
        det = detect_loops(image, settings=settings)
        t_detect += time.perf_counter() - t
        pairs = match(det, frame.truth)
        tp += len(pairs)
        fp += len(det) - len(pairs)
        fn += len(frame.truth["x"]) - len(pairs)
        gt_of = np.full(len(det), -1)
        off_x, off_y = np.full(len(det), np.nan), np.full(len(det), np.nan)  # localisation error, px
        for i, j, _ in pairs:
            size_err.append(abs(det.major.iloc[i] - frame.truth["major"][j]))
            gt_of[i] = frame.truth["loop_id"][j]
            off_x[i], off_y[i] = det.x.iloc[i] - frame.truth["x"][j], det.y.iloc[i] - frame.truth["y"][j]
        det = det.assign(frame=frame.index, gt_id=gt_of, off_x=off_x, off_y=off_y)
        dets.append(det)
        truths.append(pd.DataFrame({k: frame.truth[k] for k in ("frame", "loop_id", "D", "motion")}))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return dict(f1=f1, tp=tp, fp=fp, fn=fn, precision=tp / max(tp + fp, 1), recall=tp / max(tp + fn, 1),
                median_size_error_px=float(np.median(size_err)) if size_err else float("nan"),
                ms_per_frame=1000 * t_detect / vs.frames), pd.concat(dets, ignore_index=True), pd.concat(truths, ignore_index=True)


def tracking(dets: pd.DataFrame, truth: pd.DataFrame, link: LoopLinkSettings):
    linked = link_loops(dets, settings=link)
    scores = tracking_scores(linked.frame, linked.gt_id, linked.track_id)
    # IDF1 over all ground truth: missed detections count against it too.
    idf1 = 2 * scores.idtp / (len(truth) + scores.predicted_detections)
    rows = []
    known = truth.drop_duplicates("loop_id").set_index("loop_id")
    noises: dict = {}  # per track: the same for every estimator
    for estimator in ESTIMATORS:
        summary = track_summary(linked, settings=LoopLinkSettings(**{**link.to_dict(), "min_length": 50, "estimator": estimator}))
        for _, tr in summary.dropna(subset=["D_2d"]).iterrows():
            ids = linked.gt_id[linked.track_id == tr.track_id]
            top = ids.mode().iloc[0]
            if top < 0 or (ids == top).mean() < 0.9:
                continue  # not one loop: no known D to compare with
            k = known.loc[top]
            axis = "1d" if k.motion == "1d" else "2d"
            est, low, high = tr[f"D_{axis}"], tr[f"D_{axis}_low"], tr[f"D_{axis}_high"]
            steps = tr.detections - 1
            dims = 2 if axis == "2d" else 1
            # The track's own localisation noise (sigma² per axis, from the known
            # positions), and the spread of D from the mean squared step less a sigma²
            # known exactly: sqrt((2 (D + sigma²)² + sigma⁴) / (dims N)) / D.
            if tr.track_id not in noises:
                mine = (linked.track_id == tr.track_id) & (linked.gt_id == top)
                # About the track's own mean: a constant offset (a bean's asymmetric
                # lobes) moves every position alike and leaves the steps unchanged.
                off_x, off_y = linked.off_x[mine], linked.off_y[mine]
                noises[tr.track_id] = float(np.nanmean(np.concatenate([off_x - np.nanmean(off_x), off_y - np.nanmean(off_y)]) ** 2))
            noise = noises[tr.track_id]
            with_noise = np.sqrt((2 * (k.D + noise) ** 2 + noise**2) / (dims * steps)) / k.D
            rows.append(dict(estimator=estimator, D=k.D, motion=k.motion, est=est, ratio=est / k.D, covered=low <= k.D <= high,
                             n=tr.detections, floor=np.sqrt(1 / (dims * steps)), noise=noise, floor_noise=with_noise,
                             clean=bool((ids == top).all())))
    return idf1, scores, pd.DataFrame(rows)


def d_report(d: pd.DataFrame):
    """D recovery per estimator: median |error|, share within 10 %, within the
    statistical floor of a track of its length (sqrt(1 / (dims * steps)): no unbiased
    estimator's spread is smaller) and within twice that."""
    d = d.assign(error=abs(d.ratio - 1), decade=np.floor(np.log10(d.D)).astype(int))
    print("D recovery, tracks >= 50 frames matched to one loop (known D against the estimate on that track's axis):")
    for estimator, part in d.groupby("estimator"):
        print(f"  {estimator}: n={len(part)}  median ratio {part.ratio.median():.3f}  median |error| {part.error.median():.3f}  "
              f"within 10 %: {np.mean(part.error <= 0.1):.2f}  within 25 %: {np.mean(part.error <= 0.25):.2f}  "
              f"within the floor: {np.mean(part.error <= part.floor):.2f}  within 2x floor: {np.mean(part.error <= 2 * part.floor):.2f}  "
              f"95 % interval covers the truth: {part.covered.mean():.2f}")
        print(part.groupby(["decade", "motion"]).agg(count=("ratio", "size"), median_ratio=("ratio", "median"),
                                                      median_error=("error", "median"),
                                                      within_10=("error", lambda e: np.mean(e <= 0.1))).round(3).to_string())
        # Tracks that carry a detection of another loop (up to 10 % allowed above) against clean ones.
        print(part.groupby(["clean", "motion"]).agg(count=("ratio", "size"), median_ratio=("ratio", "median"),
                                                     median_error=("error", "median"),
                                                     interval_covers=("covered", "mean")).round(3).to_string())
    from scipy.stats import norm

    once = d[d.estimator == d.estimator.iloc[0]]
    print(f"  localisation noise sigma (per axis, px): median {np.sqrt(once.noise.median()):.3f}; "
          f"share within 10 % expected with each track's own length and noise, sigma known exactly "
          f"(Gaussian): {np.mean(2 * norm.cdf(0.1 / once.floor_noise) - 1):.2f}, by decade of D: "
          + ", ".join(f"{10.0 ** k:g}: {np.mean(2 * norm.cdf(0.1 / g.floor_noise) - 1):.2f}"
                      for k, g in once.groupby(np.floor(np.log10(once.D)).astype(int))))
    print(f"  statistical floor for the median track ({int(d.n.median())} detections): "
          f"{100 * np.sqrt(1 / (2 * (d.n.median() - 1))):.0f} % in 2-D, {100 * np.sqrt(1 / (d.n.median() - 1)):.0f} % in 1-D; "
          f"share within 10 % expected from the floor alone (2-D, Gaussian): "
          f"{2 * __import__('scipy.stats').stats.norm.cdf(0.1 / np.sqrt(1 / (2 * (d.n.median() - 1)))) - 1:.2f}")


def synthetic(seeds: int, frames: int, options: dict | None = None):
    options = options or {}
    settings, link = LoopSettings.from_dict(options), LoopLinkSettings()
    vs = LoopVideoSettings(frames=frames)
    report, all_d = {}, []
    for seed in range(seeds):
        clean, dets, truth = run_synthetic(seed, vs, settings)
        idf1, scores, d = tracking(dets, truth, link)
        all_d.append(d)
        report[f"seed{seed}"] = {**clean, "idf1_all_gt": idf1, "idf1_detected": scores.idf1, "id_switches": scores.id_switches,
                                 "idtp": scores.idtp, "gt": len(truth), "predicted": scores.predicted_detections}
        short = LoopVideoSettings(frames=20)
        for median in ("auto",):  # the default: a median filter on frames with impulse noise
            base, _, _ = run_synthetic(seed, short, LoopSettings.from_dict({**options, "median": median}))
            report[f"seed{seed}"][f"f1_clean_median{median}"] = round(base["f1"], 3)
            for noise in NOISES:
                res, _, _ = run_synthetic(seed, short, LoopSettings.from_dict({**options, "median": median}), noise=noise)
                report[f"seed{seed}"][f"f1_{noise}_median{median}"] = round(res["f1"], 3)
                # The drop against the same frames without noise, same settings.
                report[f"seed{seed}"][f"drop_{noise}_median{median}"] = round(1 - res["f1"] / base["f1"], 3)
        print(json.dumps(report[f"seed{seed}"], indent=1), flush=True)
    d_report(pd.concat(all_d, ignore_index=True))
    total = {k: sum(r[k] for r in report.values()) for k in ("tp", "fp", "fn", "idtp", "gt", "predicted")}
    idf1 = [report[s]["idf1_all_gt"] for s in report]
    print(f"pooled over {len(report)} videos: F1 {2 * total['tp'] / (2 * total['tp'] + total['fp'] + total['fn']):.3f}, "
          f"IDF1 {2 * total['idtp'] / (total['gt'] + total['predicted']):.3f}; IDF1 per video: min {min(idf1):.3f}, "
          f"median {np.median(idf1):.3f}, {sum(v >= 0.95 for v in idf1)} of {len(idf1)} at least 0.95")
    keys = [k for k in report["seed0"] if k.startswith(("f1_", "drop_"))]
    print("mean over seeds: " + ", ".join(f"{k} {np.mean([report[s][k] for s in report]):.3f}"
                                         for k in ["f1", "median_size_error_px", "idf1_all_gt", *keys]))


class RssSampler:
    """Resident memory of this process (VmRSS, MiB) sampled every ``period`` s in a thread."""

    def __init__(self, period=0.5):
        import threading

        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _run(self):
        began = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - began, self.rss_mib()))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> str:
        rss = np.array([r for _, r in self.samples])
        if len(rss) < 8:
            return f"peak {rss.max():.0f} MiB ({len(rss)} samples)"
        quarter = len(rss) // 4
        first, last = np.median(rss[quarter:2 * quarter]), np.median(rss[-quarter:])
        return (f"peak {rss.max():.0f} MiB; median of the second quarter of the run {first:.0f} MiB, of the last quarter "
                f"{last:.0f} MiB ({last - first:+.0f} MiB: {'flat' if abs(last - first) < 50 else 'GROWING'}; {len(rss)} samples)")


def speed_against_main_job(start, frames):
    """Frames/s of the loop job and of the dislocation main job (bundled model, CPU,
    default workers) on the same frames, in this process, both writing their tables."""
    import tempfile

    from temtrack.sdk.analyzer import Analyzer

    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        track_loops(FECRAL, Path(folder) / "loops.parquet", start=start, end=start + frames)
        loops_fps = frames / (time.perf_counter() - t)
        analyzer = Analyzer()  # the bundled model, as 'tem-track VIDEO' uses it
        t = time.perf_counter()
        analyzer.run(FECRAL, Path(folder) / "splines.parquet", start=start, end=start + frames, progress=False)
        main_fps = frames / (time.perf_counter() - t)
    print(f"  speed on frames {start}-{start + frames - 1}: loops {loops_fps:.2f} frames/s, dislocation main job "
          f"{main_fps:.2f} frames/s (model loaded before timing); ratio loops / main = {loops_fps / main_fps:.2f}")


def fecral(start, end, every, picture, speed_frames):
    import tempfile

    if not FECRAL.exists():
        print(f"skipped: {FECRAL} not found")
        return
    # No hand exclude box: burnt-in text and white labels are rejected by the detector's
    # rules (and by temtrack.sdk.annotations when it is installed).
    with tempfile.TemporaryDirectory() as folder, RssSampler() as memory:
        t = time.perf_counter()
        result = track_loops(FECRAL, Path(folder) / "loops.parquet", start=start, end=end, every=every)
        elapsed = time.perf_counter() - t
    loops, tracks = result.loops, result.tracks
    n_frames = result.metadata["frames_processed"]
    per = loops.groupby("frame").size()
    print(f"fecral frames {start}-{(end or 1176) - 1} every {every}: {n_frames} frames in {elapsed:.0f} s "
          f"({n_frames / elapsed:.2f} frames/s, tables written)")
    print(f"  memory (RSS): {memory.report()}")
    print(f"  loops per frame: median {per.median():.0f}, mean {per.mean():.1f} (min {per.min()}, max {per.max()}); "
          f"{len(loops)} detections")
    long = tracks[tracks.detections >= 10]
    print(f"  tracks: {len(tracks)}; lifetime (frames): mean {tracks.lifetime.mean():.1f}, median {tracks.lifetime.median():.0f}; "
          f"tracks with >= 10 detections: {len(long)} (mean lifetime {long.lifetime.mean():.1f}); "
          f"Shen: 741 defects, mean lifetime 54 frames")
    sizes = size_over_time(loops)
    slope, offset = np.polyfit(sizes.frame, sizes["median"], 1)
    print(f"  size (major axis, px) against frame: median {sizes['median'].head(20).median():.1f} in the first 20 frames, "
          f"{sizes['median'].tail(20).median():.1f} in the last 20; least-squares trend {slope * 100:+.2f} px per 100 frames")
    for lo in range(start, (end or 1176), 50):
        part = sizes[(sizes.frame >= lo) & (sizes.frame < lo + 50)]
        if len(part):
            print(f"    frames {lo}-{lo + 49}: median size {part['median'].median():.1f} px "
                  f"(quartiles {part.q1.median():.1f}-{part.q3.median():.1f}), {part['count'].mean():.0f} loops per frame")
    good = tracks.dropna(subset=["D_2d"])
    if len(good):
        good = good.assign(bin=pd.cut(good.median_major, [0, 8, 10, 12, 15, 20, 40]))
        table = good.groupby("bin", observed=True).D_2d.agg(["count", "median", "mean", "sem"])
        print(f"  D_eff 2-D (px^2 per video frame, frames every {every}) against median size, tracks >= "
              f"{LoopLinkSettings().min_length} detections:")
        print(table.round(4).to_string())
        rho = good[["median_major", "D_2d"]].corr(method="spearman").iloc[0, 1]
        print(f"  Spearman correlation of D_eff with size: {rho:+.2f} over {len(good)} tracks")
    hits = annotation_hits(loops)
    print(f"  loops on the burnt-in annotations (at least half of the ellipse on their saturated pixels, "
          f"real_data_report.py's rule): {sum(hits.values())} in {len(per)} frames ({hits})")
    if picture:
        middle = start + ((end or 1176) - start) // 2 // every * every
        draw(loops, picture, sorted({start, middle}))
    if speed_frames:
        speed_against_main_job(start, speed_frames)


def annotation_hits(loops) -> dict:
    """Loops on fecral's burnt-in scale bar, label, dose text or cursor, per annotation:
    at least half of the ellipse's points on the annotations' saturated pixels
    (``real_data_report.annotation_mask`` / ``on_annotation``, the rule the dislocation
    benchmarks count splines by), frame by frame."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_data_report import ANNOTATIONS, annotation_mask, on_annotation

    from temtrack.sdk.loops import ellipse_curve
    from temtrack.sdk.sources import open_source

    hits = {name: 0 for name in [*ANNOTATIONS, "other"]}
    where = []
    by_frame = dict(tuple(loops.groupby("frame")))
    with open_source(FECRAL) as source:
        for frame in source.frames(start=int(loops.frame.min()), end=int(loops.frame.max()) + 1):
            rows = by_frame.get(frame.index)
            if rows is None:
                continue
            mask = annotation_mask(frame.image)
            for r in rows.itertuples():
                name = on_annotation(ellipse_curve(r.x, r.y, r.major, r.minor, r.angle), mask)
                if name:
                    hits[name] += 1
                    where.append(f"frame {frame.index} at ({r.x:.0f}, {r.y:.0f}), {r.major:.1f} px")
    if where:
        print(f"  loops on the annotations: {'; '.join(where[:10])}{' ...' if len(where) > 10 else ''}")
    return hits


def draw(loops, path, frames):
    """Frames with each loop's ellipse and track id in its track's colour (as --overlay)."""
    from temtrack.sdk.loops import ellipse_curve
    from temtrack.sdk.overlay import draw_tracks
    from temtrack.sdk.sources import open_source

    tiles = []
    with open_source(FECRAL) as source:
        for index in frames:
            frame = next(source.frames(start=index, end=index + 1))
            rows = loops[loops.frame == index]
            curves = [ellipse_curve(r.x, r.y, r.major, r.minor, r.angle) for r in rows.itertuples()]
            image = draw_tracks(frame.image, curves, rows.track_id.tolist(), thickness=1)
            cv2.putText(image, f"frame {index}: {len(rows)} loops", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
            tiles.append(image)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(tiles))
    print(f"  picture: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="with --synthetic: a LoopSettings option (JSON value), e.g. pair_lobes=false; repeatable")
    parser.add_argument("--fecral", action="store_true")
    parser.add_argument("--start", type=int, default=461)
    parser.add_argument("--end", type=int, default=806)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--all", action="store_true", help="with --fecral: every frame of the video (0-1175)")
    parser.add_argument("--picture", default=None)
    parser.add_argument("--speed-frames", type=int, default=40,
                        help="with --fecral: frames timed for loops and the dislocation main job side by side (0: none)")
    args = parser.parse_args()
    if args.synthetic:
        synthetic(args.seeds, args.frames, {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)})
    if args.fecral:
        start, end = (0, None) if args.all else (args.start, args.end)
        fecral(start, end, args.every, args.picture, args.speed_frames)


if __name__ == "__main__":
    main()
