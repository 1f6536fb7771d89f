"""Where a line-field model loses the labelled lines of real frames, and what the tracing can do about it.

On every other labelled TWIP frame (``../shared/data/real/twip-8.4um/labeled``; skipped
when absent) the model's fields are computed once; then:

1. **coverage**: how much of each labelled line the thinned ridges pass within 3 px of,
   and, for the lines not found although the ridges cover at least 90 % of them, whether
   they were cut into pieces (no single spline covers half of the line) or covered by a
   spline that runs on beyond the label (its mean distance to the line over 5 px).
   Then the found lines: how many come out shorter than their label, and where the
   rest of the label lies (on another predicted spline, on a ridge that no spline kept,
   only on a faint ridge, or on nothing);
2. **tracing variants** (spline recall as ``tem-track eval`` computes it, the length score
   of the found lines, and lines per frame): the defaults, the direction read from the
   model's channels instead of the centre map's Hessian, other thresholds, cuts, join
   angles and reaches of the end directions and turns (``END_REACH``, ``TURN_REACH``), the
   previous join rule (judged by the gap's own direction), the previous end directions
   (the field's axis instead of the traced chord) and no end trimming, ridges from a thresholded and
   skeletonised centre map instead of non-maximum suppression, fields averaged over four
   flips of the frame, and the frame scaled before the model.

    python benchmarks/bench_tracing_real.py                      # the bundled model
    python benchmarks/bench_tracing_real.py --model more.onnx --quick
    python benchmarks/bench_tracing_real.py --step 1                # all 59 frames
    python benchmarks/bench_tracing_real.py --data scratch/sd1 --step 1 --quick   # a synthetic set

Needs the real data and the runtime (onnxruntime); no torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

LABELLED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "twip-8.4um" / "labeled"


def load_frames(model: str, folder: Path, step: int):
    """``(image, labelled curves)`` of every ``step``-th labelled frame, and a fields function."""
    from temtrack.sdk.backends import get_backend
    from temtrack.sdk.groundtruth import iter_ground_truth
    from temtrack.sdk.models import resolve_model
    from temtrack.sdk.postprocess import PostprocessSettings, extract_dislocations

    backend = get_backend(str(resolve_model(model)) if not Path(model).exists() else model)
    frames = []
    for k, truth in enumerate(iter_ground_truth(folder)):
        if k % step == 0:
            curves = [d.points for d in extract_dislocations(truth.masks, settings=PostprocessSettings()).dislocations]
            frames.append((truth.image, curves))
    return frames, backend


def fields_of(backend, image: np.ndarray, *, scale: float = 1.0, flips: bool = False) -> np.ndarray:
    """The model's fields at the frame's size: plain, with the frame scaled, or averaged over four flips."""
    import cv2

    def predict(frame):
        return np.asarray(backend.predict(frame[None])[0], np.float32)

    if flips:
        total = predict(image)
        for axes, flip_sin in (((1,), True), ((0,), True), ((0, 1), False)):
            fields = np.flip(predict(np.ascontiguousarray(np.flip(image, axes))), tuple(a + 1 for a in axes)).copy()
            if flip_sin:  # a mirror turns theta into -theta: sin 2 theta changes sign
                fields[2] *= -1
            total += fields
        return total / 4
    if scale == 1.0:
        return predict(image)
    height, width = image.shape
    small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in predict(small)])


def gap_direction_cost(out_a, out_b, gap):
    """The previous join rule: the gap's own direction must continue both ends."""
    from temtrack.sdk import linefield

    touching = np.hypot(gap[:, 0], gap[:, 1]) < 1.5
    return np.where(touching, 180.0 - linefield._angles(out_a, out_b),
                    np.maximum(linefield._angles(out_a, gap), linefield._angles(-out_b, gap)))


def field_end_segment(path, direction, reach=6):
    """The previous end directions: the predicted field's axis over the last ``reach``
    pixels, its sense from the path (instead of the chord of the traced path)."""
    from temtrack.sdk import linefield

    xy = path[:, ::-1].astype(float)
    ends, out = np.empty((2, 2)), np.empty((2, 2))
    for k, (tip, inner, piece) in enumerate(
        ((xy[0], xy[min(reach, len(xy) - 1)], path[:reach]), (xy[-1], xy[max(len(xy) - 1 - reach, 0)], path[-reach:]))
    ):
        axis = np.array(linefield._axis(direction, piece))
        if np.hypot(*(tip - inner)) > 0:
            axis = axis if axis @ (tip - inner) >= 0 else -axis
        ends[k], out[k] = tip, axis
    return linefield._Segment(path, ends, out)


def field_end_segments(paths, direction):
    """:func:`field_end_segment` of every path (what the tracing calls)."""
    return [field_end_segment(path, direction) for path in paths]


def thresholded_ridges(centre, direction, *, high=0.5, low=0.25):
    """Ridges as the skeleton of the hysteresis mask of the centre map (no suppression)."""
    import cv2
    from skimage.morphology import skeletonize

    count, labels = cv2.connectedComponents((centre > low).view(np.uint8), connectivity=8)
    strong = np.zeros(count, bool)
    strong[np.unique(labels[(centre > high) & (labels > 0)])] = True
    return skeletonize(strong[labels])


def score(cases, settings) -> dict:
    from temtrack.sdk.linefield import extract_lines
    from temtrack.sdk.splinematch import score_splines, summarize_splines

    scores, lines = [], 0
    for fields, curves in cases:
        found = extract_lines(fields, settings=settings)
        lines += len(found.dislocations)
        scores.append(score_splines([d.points for d in found.dislocations], curves))
    summary = summarize_splines(scores)
    return {"spline recall": summary["spline_recall"], "length score, found": summary["matched_length_score"],
            "lines per frame": lines / len(cases)}


def traced_frames(cases, settings) -> list[dict]:
    """Each frame traced once for :func:`coverage` and :func:`found_lengths`: the
    distance to the nearest ridge pixel (``away``; ``faint``: of the ridges at hysteresis
    0.2 / 0.15), the predicted splines and their matches to the labelled lines."""
    from scipy.ndimage import distance_transform_edt

    from temtrack.sdk.linefield import extract_lines, ridges, split_fields, traced_direction
    from temtrack.sdk.splinematch import score_splines

    frames = []
    for fields, curves in cases:
        centre, direction = split_fields(fields)
        direction = traced_direction(centre, direction, settings)
        preds = [d.points for d in extract_lines(fields, settings=settings).dislocations]
        frames.append({
            "away": distance_transform_edt(~ridges(centre, direction, high=settings.high, low=settings.low)),
            "faint": distance_transform_edt(~ridges(centre, direction, high=0.2, low=0.15)),
            "preds": preds,
            "pairs": score_splines(preds, curves).pairs,
        })
    return frames


def _pixels(curve: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels nearest the points of ``curve``, clipped to ``shape``."""
    height, width = shape
    pts = np.clip(np.round(curve).astype(int), 0, [width - 1, height - 1])
    return pts[:, 1], pts[:, 0]


def coverage(cases, traced) -> dict:
    """How much of the labelled lines the ridges cover, and why covered lines are missed."""
    from temtrack.sdk.geometry import distance_to_curve

    shares, pieces, runs_on, best_shares, near_shares = [], 0, 0, [], []
    for (_, curves), frame in zip(cases, traced):
        away, preds = frame["away"], frame["preds"]
        found = {i for i, _ in frame["pairs"]}
        for i, curve in enumerate(curves):
            share = float((away[_pixels(curve, away.shape)] <= 3).mean())
            shares.append(share)
            if i in found or share < 0.9:
                continue
            best, best_near = 0.0, 0.0
            for p in preds:
                covered = float((distance_to_curve(curve, p) <= 5).mean())
                if covered > best:
                    best, best_near = covered, float((distance_to_curve(p, curve) <= 5).mean())
            if best >= 0.5:
                runs_on += 1
                near_shares.append(best_near)
            else:
                pieces += 1
                best_shares.append(best)
    shares = np.array(shares)
    return {
        "labelled lines": len(shares),
        "ridge coverage, mean": float(shares.mean()),
        "lines covered >= 90 %": float((shares >= 0.9).mean()),
        "lines covered >= 70 %": float((shares >= 0.7).mean()),
        "missed though covered >= 90 %: in pieces": pieces,
        "  their best piece covers (median)": float(np.median(best_shares)) if best_shares else float("nan"),
        "missed though covered >= 90 %: run on beyond the label": runs_on,
        "  share of that spline near the label (median)": float(np.median(near_shares)) if near_shares else float("nan"),
    }


def found_lengths(cases, traced) -> dict:
    """Why the found lines are shorter or longer than their labels: the ratio of the
    matched spline's length to the label's, and where the rest of each found label lies
    (its points, 200 per label, not within 5 px of the matched spline): within 3 px of
    another predicted spline, within 2 px of a ridge pixel that no spline kept, of a
    ridge at much lower thresholds (hysteresis 0.2 / 0.15), or of nothing."""
    from temtrack.sdk.geometry import arc_length, distance_to_curve, resample

    ratios, where = [], {"matched spline": 0, "another spline": 0, "a ridge no spline kept": 0, "a faint ridge only": 0,
                         "nothing": 0}
    for (_, curves), frame in zip(cases, traced):
        preds = frame["preds"]
        for i, j in frame["pairs"]:
            label = resample(curves[i], 200)
            ratios.append(arc_length(preds[j]) / arc_length(curves[i]))
            rest = distance_to_curve(label, preds[j]) > 5
            where["matched spline"] += int((~rest).sum())
            others = np.zeros(len(label), bool)
            for k, other in enumerate(preds):
                if k != j:
                    others |= distance_to_curve(label, other) <= 3
            pixels = _pixels(label, frame["away"].shape)
            for name, hit in (("another spline", others), ("a ridge no spline kept", frame["away"][pixels] <= 2),
                              ("a faint ridge only", frame["faint"][pixels] <= 2)):
                where[name] += int((rest & hit).sum())
                rest &= ~hit
            where["nothing"] += int(rest.sum())
    ratios, total = np.array(ratios), sum(where.values())
    short = ratios < 1
    out = {
        "found lines": len(ratios),
        "found lines shorter than the label": float(short.mean()) if len(ratios) else float("nan"),
        "  length / label length, median": float(np.median(ratios)) if len(ratios) else float("nan"),
        "  length score lost to shorter lines (per found line)": float((1 - ratios[short]).sum() / max(len(ratios), 1)),
        "  length score lost to longer lines (per found line)": float(np.minimum(ratios[~short] - 1, 1).sum() / max(len(ratios), 1)),
    }
    out.update({f"found labels' points on {name}": count / max(total, 1) for name, count in where.items()})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a line-field model (default: the bundled one)")
    parser.add_argument("--data", type=Path, default=LABELLED, help="folder of labelled frames")
    parser.add_argument("--step", type=int, default=2, help="every STEP-th labelled frame (default 2: 30 of 59)")
    parser.add_argument("--quick", action="store_true", help="defaults, the min_score and direction rows and coverage only")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the real data lives in ../shared/data/real)")
        return 0

    from temtrack.sdk import linefield
    from temtrack.sdk.linefield import LineFieldSettings

    tic = time.perf_counter()
    frames, backend = load_frames(args.model, args.data, args.step)
    plain = [(fields_of(backend, image), curves) for image, curves in frames]
    print(f"{len(frames)} frames, fields in {time.perf_counter() - tic:.1f} s", file=sys.stderr)
    defaults = LineFieldSettings()
    traced = traced_frames(plain, defaults)
    for name, value in {**coverage(plain, traced), **found_lengths(plain, traced)}.items():
        print(f"{name:58s} {value:.3f}" if isinstance(value, float) else f"{name:58s} {value}")
    variants = [("defaults", plain, {}, None)]
    # The mean-score rule (min_score): with --data scratch/sdK (synthetic sets) and
    # --quick these rows are the synthetic side of its choice.
    variants += [(f"min_score {v:g}", plain, {"min_score": v}, None) for v in (0.0, 0.65, 0.7) if v != defaults.min_score]
    # Where the suppression reads the line's direction: the centre map's Hessian (the
    # default, direction_sigma 1.5) or the model's direction channels (0).
    variants += [
        ("direction from the model's channels", plain, {"direction_sigma": 0.0}, None),
        *((f"direction_sigma {v:g}", plain, {"direction_sigma": v}, None) for v in (1.0, 2.0)),
    ]
    if not args.quick:
        variants += [
            ("high 0.5", plain, {"high": 0.5}, None),
            ("high 0.5, max_turn 40", plain, {"high": 0.5, "max_turn": 40.0}, None),
            ("max_turn 70", plain, {"max_turn": 70.0}, None),
            ("max_turn 180 (no cuts)", plain, {"max_turn": 180.0}, None),
            ("link_distance 16", plain, {"link_distance": 16.0}, None),
            ("link_distance 24", plain, {"link_distance": 24.0}, None),
            ("min_length 20", plain, {"min_length": 20.0}, None),
            ("link_angle 30", plain, {"link_angle": 30.0}, None),
            ("link_angle 45", plain, {"link_angle": 45.0}, None),
            ("END_REACH 7 (end direction over 7 px)", plain, {}, ("END_REACH", 7)),
            ("END_REACH 14", plain, {}, ("END_REACH", 14)),
            ("TURN_REACH 4 (turns measured over 8 px)", plain, {}, ("TURN_REACH", 4)),
            ("TURN_REACH 9", plain, {}, ("TURN_REACH", 9)),
            ("joins by the gap's direction (previous rule)", plain, {}, ("_join_cost", gap_direction_cost)),
            ("end directions from the field (previous rule)", plain, {}, ("_segments_along", field_end_segments)),
            ("no end trimming (trim 0)", plain, {"trim": 0.0}, None),
            ("both previous rules, channels (stop 25's tracing)", plain, {"trim": 0.0, "direction_sigma": 0.0},
             ("_segments_along", field_end_segments)),
            ("ridges: thresholded + skeletonised, no NMS", plain, {}, ("ridges", thresholded_ridges)),
            ("fields averaged over 4 flips", [(fields_of(backend, i, flips=True), c) for i, c in frames], {}, None),
            ("frame scaled 0.75", [(fields_of(backend, i, scale=0.75), c) for i, c in frames], {}, None),
            ("frame scaled 1.5", [(fields_of(backend, i, scale=1.5), c) for i, c in frames], {}, None),
        ]
    print(f"\n{'tracing':48s} {'spline recall':>14s} {'length, found':>14s} {'lines/frame':>12s}")
    for name, cases, options, patch in variants:
        saved = None
        if patch is not None:
            saved = getattr(linefield, patch[0])
            setattr(linefield, patch[0], patch[1])
        try:
            result = score(cases, LineFieldSettings(**options))
        finally:
            if saved is not None:
                setattr(linefield, patch[0], saved)
        print(f"{name:48s} {result['spline recall']:14.3f} {result['length score, found']:14.3f} {result['lines per frame']:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
