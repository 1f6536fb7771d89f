"""Post-processing speed and fidelity: masks -> splines.

    python benchmarks/bench_postprocess.py [--frames 20] [--fidelity 60]

Speed: frames of 20 masks at 512x512 (float probabilities), about 12 of them holding a
synthetic dislocation and the rest empty, post-processed on one core by
``extract_dislocations`` and, in the same run, by the straightforward approach
(threshold, connected components and Lee skeleton on every full-size mask, empty ones
included, then the same centreline and spline code). Prints medians and the ratio
against the 10 ms target.

Fidelity: every ground-truth mask of ``--fidelity`` images per preset (sd1, sd2, sd3 at
512 px) post-processed alone; the recovered spline that overlaps the mask most is
compared with the exact centreline: symmetric Hausdorff distance without the last 3 px
at each end, and relative length error. Targets: within 1.5 px and 3 % for at least
98 % of dislocations. Reported for all dislocations and for those whose mask can tell
where the line runs (a centreline that folds back onto itself within its line width,
as at the cusps of some "sharp turn" shapes, draws a blob no skeleton can unfold).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from temtrack.sdk.geometry import arc_length, hausdorff_distance
from temtrack.sdk.postprocess import PostprocessSettings, _make_dislocation, binarize, extract_dislocations
from temtrack.sdk.skeleton import component_paths, skeleton_mosaic
from temtrack.training.synth import generate_sample

TARGET_MS = 10.0
TARGET_SPEEDUP = 10.0


def probability_frame(seed: int, n_masks: int = 20, want=(10, 14)) -> np.ndarray | None:
    """(20, 512, 512) float32: blurred ground-truth masks as probabilities, padded with empty masks."""
    sample = generate_sample("sd2", seed=seed)
    if not want[0] <= len(sample.masks) <= want[1]:
        return None
    probs = np.zeros((n_masks, *sample.image.shape), np.float32)
    for k, mask in enumerate(sample.masks[:n_masks]):
        # A soft halo around the mask, as a network's sigmoid output has.
        probs[k] = np.maximum(cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 1.0), 0.95 * mask)
    return probs


def straightforward(masks: np.ndarray, settings: PostprocessSettings) -> list:
    """Every mask at full size: components, Lee skeleton and spline, no crops, no skipping."""
    binary = binarize(masks, threshold=settings.threshold)
    out = []
    for index in range(len(binary)):
        full = binary[index].view(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(full, connectivity=8)
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < settings.min_pixels:
                continue
            component = np.pad(labels == label, 1)
            for path, closed in component_paths(skeleton_mosaic([component])[0], settings.spur_length):
                out.append(_make_dislocation(path, closed, component, (-1, -1), 1.0, index, 0, settings, single=True))
    return out


def bench_speed(n_frames: int) -> None:
    cv2.setNumThreads(1)
    frames, seed = [], 0
    while len(frames) < n_frames:
        frame = probability_frame(seed)
        seed += 1
        if frame is not None:
            frames.append(frame)
    settings = PostprocessSettings()
    extract_dislocations(frames[0])  # warm-up (imports)
    straightforward(frames[0][:2], settings)
    ours, ours_uint8, naive, counts = [], [], [], []
    for frame in frames:
        start = time.perf_counter()
        result = extract_dislocations(frame, settings=settings)
        ours.append(time.perf_counter() - start)
        thresholded = (frame > settings.threshold).view(np.uint8)  # as a model with the threshold in its graph gives
        start = time.perf_counter()
        extract_dislocations(thresholded, settings=settings)
        ours_uint8.append(time.perf_counter() - start)
        start = time.perf_counter()
        straightforward(frame, settings)
        naive.append(time.perf_counter() - start)
        counts.append(len(result.dislocations))
    ours_ms, naive_ms = 1e3 * statistics.median(ours), 1e3 * statistics.median(naive)
    print(f"speed: {len(frames)} frames of 20 masks 512x512, {statistics.mean(counts):.1f} dislocations/frame, one core")
    print(f"  extract_dislocations  median {ours_ms:7.2f} ms   (target <= {TARGET_MS:.0f} ms: {TARGET_MS / ours_ms:.2f}x margin)")
    uint8_ms = 1e3 * statistics.median(ours_uint8)
    print(f"  ... from uint8 masks  median {uint8_ms:7.2f} ms   ({TARGET_MS / uint8_ms:.2f}x margin)")
    print(f"  straightforward       median {naive_ms:7.2f} ms")
    print(f"  speed-up              {naive_ms / ours_ms:7.1f}x   (uint8: {naive_ms / uint8_ms:.1f}x; target >= {TARGET_SPEEDUP:.0f}x)")


def folds_back(centreline: np.ndarray, width: float) -> bool:
    """True when the centreline comes within its line width of itself at an arc distance
    of more than 3 widths: the mask then merges the two passes."""
    step = np.hypot(*np.diff(centreline, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(step)])
    points = centreline[:: max(1, int(len(centreline) / 400))]
    along = arc[:: max(1, int(len(centreline) / 400))]
    gap = np.hypot(points[:, None, 0] - points[None, :, 0], points[:, None, 1] - points[None, :, 1])
    apart = np.abs(along[:, None] - along[None, :]) > 3 * width + 2
    return bool(np.any((gap < width + 1) & apart))


def bench_fidelity(n_images: int) -> None:
    rows = []
    for preset in ("sd1", "sd2", "sd3"):
        for seed in range(n_images):
            sample = generate_sample(preset, seed=seed)
            for mask, centreline in zip(sample.masks, sample.centrelines):
                length = arc_length(centreline)
                width = mask.sum() / max(length, 1.0)
                frame = extract_dislocations(mask[None])
                pieces = frame.dislocations
                if not pieces:
                    rows.append((preset, np.inf, np.inf, folds_back(centreline, width), 0))
                    continue
                best = max(pieces, key=lambda d: d.n_pixels)
                rows.append((
                    preset,
                    hausdorff_distance(best.points, centreline, exclude_ends=3.0),
                    abs(best.length / length - 1.0),
                    folds_back(centreline, width),
                    len(pieces),
                ))
    print(f"fidelity: ground-truth masks of {n_images} images per preset at 512 px")
    for label, keep in (("all", lambda r: True), ("mask resolves the line", lambda r: not r[3])):
        chosen = [r for r in rows if keep(r)]
        ok_h = np.array([r[1] <= 1.5 for r in chosen])
        ok_l = np.array([r[2] <= 0.03 for r in chosen])
        both = ok_h & ok_l
        one = np.array([r[4] == 1 for r in chosen])
        print(
            f"  {label:24s} n={len(chosen):5d}  Hausdorff<=1.5px {ok_h.mean():6.1%}  length<=3% {ok_l.mean():6.1%}"
            f"  both {both.mean():6.1%} (target 98%)  one piece {one.mean():6.1%}"
        )
    for preset in ("sd1", "sd2", "sd3"):
        chosen = [r for r in rows if r[0] == preset and np.isfinite(r[1])]
        print(
            f"  {preset}: median Hausdorff {np.median([r[1] for r in chosen]):.2f} px,"
            f" median |length error| {np.median([r[2] for r in chosen]):.2%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames for the speed test")
    parser.add_argument("--fidelity", type=int, default=60, help="images per preset for the fidelity test (0: skip)")
    args = parser.parse_args()
    bench_speed(args.frames)
    if args.fidelity:
        bench_fidelity(args.fidelity)


if __name__ == "__main__":
    main()
