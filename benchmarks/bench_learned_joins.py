"""A learned join rule for the line-field tracing, against the present one (issue 16).

    python benchmarks/bench_learned_joins.py [--train 120] [--synthetic scratch/sd1 scratch/sd3]

The tracing cuts the ridges at junctions and joins segment ends by a geometric rule
(``linefield._links``: within ``link_distance`` px and ``link_angle`` degrees). Could a
rule learned from examples join better where lines cross or touch? Every pair of segment
ends within 24 px is a candidate, described by 18 numbers (:data:`FEATURES`: the gap, the
bend and lateral offset over 10 px and 25 px chords, the present join cost, whether each
end points away, the segments' lengths and mean centre values, the centre map along the
gap, the ends' own turn, whether it is each end's cheapest candidate, how many
candidates compete). A pair is a true join when both segments lie on the same true line
(60 % of their pixels within 3 px of it and no other) and face each other along it
across the gap; pairs with no segment on a true (or labelled) line are not judged.

A logistic regression (standardised features, L2, SciPy's L-BFGS) is fitted on
generator images (``--train`` of them, ``sd1/2/3_mixed`` presets, the bundled model's
fields), and on the labelled TWIP frames before ``--split`` (in time). The tracing then
joins greedily by probability, at least ``p``, each end once, no rings (the present
rule's bookkeeping). Printed: spline recall / length score of the found lines / lines
per frame on all labelled TWIP frames and on those from ``--split`` on (never trained
on), and the thesis length score on ``--synthetic`` folders. Needs the real data in
``../shared/data/real`` (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tracing_real import LABELLED, fields_of, load_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Largest gap (px) of a candidate join.
REACH = 24.0
#: Arc (px) of the longer chord at each end.
LONG_REACH = 25
FEATURES = ("gap", "bend", "offset", "backwards", "cost", "log shorter length", "log longer length",
            "lower score", "higher score", "centre min along gap", "centre mean along gap", "bend, 25 px",
            "offset, 25 px", "sharper end turn", "cheapest for a", "cheapest for b", "competing candidates",
            "touching")


def segments_of(fields: np.ndarray, settings):
    """The centre map and the tracing's segments (before any join) of one frame's fields."""
    from temtrack.sdk import linefield as lf

    centre, direction = lf.split_fields(np.asarray(fields, np.float32))
    direction = lf.traced_direction(centre, direction, settings)
    skeleton = lf.ridges(centre, direction, high=settings.high, low=settings.low)
    return centre, lf._segments_along(lf._segments(skeleton), direction)


def _long_out(paths: list) -> np.ndarray:
    """(2 n, 2) outward unit chords over LONG_REACH px at each end (zero for one pixel)."""
    out = np.zeros((len(paths), 2, 2))
    for k, path in enumerate(paths):
        xy = path[:, ::-1].astype(float)
        reach = min(LONG_REACH, len(xy) - 1)
        for end, (tip, inner) in enumerate(((xy[0], xy[reach]), (xy[-1], xy[-1 - reach]))):
            norm = np.hypot(*(tip - inner))
            if norm > 0:
                out[k, end] = (tip - inner) / norm
    return out.reshape(-1, 2)


def candidates(centre: np.ndarray, segments: list) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs (n, 2) of end rows 2 k + e, features (n, len(FEATURES)))``."""
    from scipy.ndimage import map_coordinates
    from scipy.spatial import cKDTree

    from temtrack.sdk import linefield as lf

    empty = np.zeros((0, 2), int), np.zeros((0, len(FEATURES)))
    if len(segments) < 2:
        return empty
    tips = np.concatenate([s.ends for s in segments])
    out = np.concatenate([s.out for s in segments])
    pairs = cKDTree(tips).query_pairs(REACH, output_type="ndarray")
    pairs = pairs[pairs[:, 0] // 2 != pairs[:, 1] // 2] if len(pairs) else pairs
    if not len(pairs):
        return empty
    i, j = pairs[:, 0], pairs[:, 1]
    gap = tips[j] - tips[i]
    distance = np.hypot(gap[:, 0], gap[:, 1])

    def bend_offset(a, b):
        lateral = 0.5 * (np.abs(lf._cross(a, gap)) + np.abs(lf._cross(b, gap)))
        return 180.0 - lf._angles(a, b), np.degrees(np.arctan2(lateral, np.maximum(distance, 1.0)))

    bend, offset = bend_offset(out[i], out[j])
    long_out = _long_out([s.path for s in segments])
    bend_long, offset_long = bend_offset(long_out[i], long_out[j])
    turn = lf._angles(out, long_out)
    backwards = ((out[i] * gap).sum(1) < 0) | ((out[j] * gap).sum(1) > 0)
    cost = lf._join_cost(out[i], out[j], gap)
    cost = np.where(np.isfinite(cost), cost, 180.0)
    length = np.array([len(s.path) for s in segments], float)
    score = np.array([centre[s.path[:, 0], s.path[:, 1]].mean() for s in segments])
    t = np.linspace(0.0, 1.0, 9)[1:-1]
    x = tips[i][:, None, 0] + gap[:, None, 0] * t
    y = tips[i][:, None, 1] + gap[:, None, 1] * t
    along = map_coordinates(centre, [y.ravel(), x.ravel()], order=1, mode="nearest").reshape(x.shape)
    at_tips = np.minimum(centre[tips[i][:, 1].astype(int), tips[i][:, 0].astype(int)],
                         centre[tips[j][:, 1].astype(int), tips[j][:, 0].astype(int)])
    best = np.full(len(tips), np.inf)
    np.minimum.at(best, i, cost)
    np.minimum.at(best, j, cost)
    competing = np.zeros(len(tips))
    np.add.at(competing, i, cost <= 60)
    np.add.at(competing, j, cost <= 60)
    la, lb, sa, sb = length[i // 2], length[j // 2], score[i // 2], score[j // 2]
    features = np.column_stack([
        distance, bend, offset, backwards, cost, np.log(np.minimum(la, lb)), np.log(np.maximum(la, lb)),
        np.minimum(sa, sb), np.maximum(sa, sb), np.minimum(along.min(1), at_tips), along.mean(1), bend_long,
        offset_long, np.maximum(turn[i], turn[j]), cost <= best[i], cost <= best[j], competing[i] + competing[j],
        distance < 1.5,
    ]).astype(float)
    return pairs, features


def true_joins(pairs: np.ndarray, segments: list, curves: list) -> tuple[np.ndarray, np.ndarray]:
    """1 for the pairs that continue one true line across the gap, and which pairs are judged."""
    from scipy.spatial import cKDTree

    from temtrack.tracker.geometry import arc_length, resample

    lines = [np.asarray(c, float) for c in curves if len(c) >= 2]
    dense = [resample(c, max(int(arc_length(c) * 2), 2)) for c in lines]
    trees = [cKDTree(d) for d in dense]
    arcs = [np.linspace(0.0, arc_length(c), len(d)) for c, d in zip(lines, dense)]
    owner = np.full(len(segments), -1)
    for k, segment in enumerate(segments):
        xy = segment.path[:, ::-1].astype(float)
        if not trees:
            break
        distance = np.stack([tree.query(xy)[0] for tree in trees], 1)
        ranked = np.sort(distance, 1)
        clear = (ranked[:, 0] <= 3.0) & ((ranked[:, 1] > 3.0) if len(trees) > 1 else True)
        votes = np.bincount(distance.argmin(1)[clear], minlength=len(trees))
        if clear.any() and votes.max() >= 0.6 * len(xy):
            owner[k] = votes.argmax()
    tips = np.concatenate([s.ends for s in segments])
    joined = np.zeros(len(pairs))
    for n, (a, b) in enumerate(pairs.tolist()):
        line = owner[a // 2]
        if line < 0 or line != owner[b // 2]:
            continue
        (da, pa), (db, pb) = trees[line].query(tips[a]), trees[line].query(tips[b])
        if da > 3.5 or db > 3.5:
            continue
        arc = arcs[line]
        if abs(arc[pa] - arc[pb]) > 1.5 * np.hypot(*(tips[b] - tips[a])) + 5:
            continue
        body_a = arc[trees[line].query(segments[a // 2].path[:, ::-1].astype(float))[1]].mean()
        body_b = arc[trees[line].query(segments[b // 2].path[:, ::-1].astype(float))[1]].mean()
        sign = 1.0 if body_b >= body_a else -1.0
        if sign * (arc[pa] - body_a) >= -1 and sign * (body_b - arc[pb]) >= -1 and sign * (arc[pb] - arc[pa]) >= -2:
            joined[n] = 1
    judged = (owner[pairs[:, 0] // 2] >= 0) | (owner[pairs[:, 1] // 2] >= 0)
    return joined, judged


class Logistic:
    """L2-regularised logistic regression on standardised features (SciPy's L-BFGS)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, l2: float = 1.0):
        from scipy.optimize import minimize
        from scipy.special import expit, log_expit

        self.mean, self.scale = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
        z = np.column_stack([(x - self.mean) / self.scale, np.ones(len(x))])

        def loss(w):
            margin = z @ w
            value = -(y * log_expit(margin) + (1 - y) * log_expit(-margin)).sum() + 0.5 * l2 * (w[:-1] @ w[:-1])
            grad = z.T @ (expit(margin) - y) + l2 * np.append(w[:-1], 0.0)
            return value, grad

        self.w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x

    def probability(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(((x - self.mean) / self.scale) @ self.w[:-1] + self.w[-1])


def learned_links(rule: Logistic, level: float, centre_of: dict):
    """A replacement for ``linefield._links``: joins by the rule's probability, at least ``level``."""
    from temtrack.sdk import linefield as lf

    def links(segments, settings):
        pairs, features = candidates(centre_of["centre"], segments)
        if not len(pairs):
            return []
        p = rule.probability(features)
        keep = np.flatnonzero(p >= level)
        return lf.joins_in_order(pairs[keep[np.argsort(-p[keep], kind="stable")]], len(segments))

    return links


def examples(cases, settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and labels of the judged candidate pairs of ``(fields, curves)`` cases, and each pair's case."""
    xs, ys, owners = [], [], []
    for k, (fields, curves) in enumerate(cases):
        centre, segments = segments_of(fields, settings)
        pairs, features = candidates(centre, segments)
        if not len(pairs):
            continue
        joined, judged = true_joins(pairs, segments, curves)
        xs.append(features[judged])
        ys.append(joined[judged])
        owners.append(np.full(int(judged.sum()), k))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(owners)


def synthetic_cases(backend, n: int, seed: int) -> list:
    """``n`` generator images (sd1/2/3_mixed in turn) as ``(fields, centrelines)``."""
    from temtrack.training.synth import generate_sample
    from temtrack.training.synth.config import load_config

    patches = REPO / "patches"
    cases = []
    for k in range(n):
        preset = load_config(REPO / "examples" / "train" / "presets" / f"sd{k % 3 + 1}_mixed.json")
        sample = generate_sample(preset, seed=seed + k, backgrounds=patches if patches.is_dir() else None)
        cases.append((fields_of(backend, sample.image), [c for c in sample.centrelines if len(c) >= 2]))
    return cases


def traced(cases, settings, links, centre_of) -> tuple[list, int]:
    """Each case traced with ``links`` in place of the present join rule (None: the present rule)."""
    from temtrack.sdk import linefield as lf

    present, frames = lf._links, []
    lf._links = links or present
    try:
        for fields in cases:
            fields = np.asarray(fields, np.float32)
            centre_of["centre"] = fields[0]
            frames.append(lf.extract_lines(fields, settings=settings))
    finally:
        lf._links = present
    return frames


def spline_row(frames, curves) -> str:
    from temtrack.sdk.splinematch import score_splines, summarize_splines

    summary = summarize_splines([score_splines([d.points for d in f.dislocations], c) for f, c in zip(frames, curves)])
    lines = np.mean([len(f.dislocations) for f in frames])
    return f"{summary['spline_recall']:.3f} / {summary['matched_length_score']:.3f} / {lines:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="line-field model (default: the bundled one)")
    parser.add_argument("--train", type=int, default=120, help="generator images to learn from (default 120)")
    parser.add_argument("--seed", type=int, default=610000, help="their first seed (default 610000)")
    parser.add_argument("--split", type=int, default=43, help="TWIP frames before this one train the TWIP rule (default 43)")
    parser.add_argument("--synthetic", nargs="*", type=Path, default=[], help="synthetic folders to score (thesis metric)")
    args = parser.parse_args(argv)
    if not LABELLED.is_dir():
        print(f"skipped: no labelled TWIP frames at {LABELLED.resolve()}")
        return 0
    from temtrack.sdk.groundtruth import iter_ground_truth
    from temtrack.sdk.linefield import LineFieldSettings, instance_masks
    from temtrack.sdk.metrics import score_image

    settings = LineFieldSettings()
    frames, backend = load_frames(args.model, LABELLED, 1)
    twip = [(fields_of(backend, image), curves) for image, curves in frames]
    synthetic = synthetic_cases(backend, args.train, args.seed)
    x, y, _ = examples(synthetic, settings)
    xt, yt, owner = examples(twip, settings)
    rules = {"synthetic": Logistic(x, y), "TWIP before the split": Logistic(xt[owner < args.split], yt[owner < args.split])}
    print(f"candidate joins judged: {len(y)} synthetic ({y.mean():.3f} true), {len(yt)} TWIP ({yt.mean():.3f} true)")
    for name, rule in rules.items():
        weights = sorted(zip(FEATURES, rule.w[:-1]), key=lambda t: -abs(t[1]))[:5]
        print(f"  {name} rule, largest weights: " + ", ".join(f"{f} {w:+.2f}" for f, w in weights))
    centre_of: dict = {}
    variants = [("present rule", None, None)]
    variants += [(f"learned on synthetic, p >= {p}", "synthetic", p) for p in (0.15, 0.3)]
    variants += [(f"learned on TWIP frames < {args.split}, p >= {p}", "TWIP before the split", p) for p in (0.1, 0.2)]
    # Each synthetic image's fields once, for every variant.
    synthetic_sets = []
    for folder in args.synthetic:
        truths = list(iter_ground_truth(folder))
        synthetic_sets.append((folder, truths, [fields_of(backend, t.image) for t in truths]))
    held = slice(args.split, None)
    print("\n| join rule | TWIP, all: spline recall / length score, found / lines per frame | TWIP from frame "
          f"{args.split} (held out) | " + " | ".join(f"{f.name}: thesis length score" for f, _, _ in synthetic_sets) + " |")
    print("|---|---|---|" + "---|" * len(synthetic_sets))
    for label, name, level in variants:
        links = None if name is None else learned_links(rules[name], level, centre_of)
        found = traced([f for f, _ in twip], settings, links, centre_of)
        row = [label, spline_row(found, [c for _, c in twip]), spline_row(found[held], [c for _, c in twip][held])]
        for _, truths, fields in synthetic_sets:
            scored = traced(fields, settings, links, centre_of)
            row.append(f"{np.mean([score_image(instance_masks(f), t.masks).length_score for f, t in zip(scored, truths)]):.3f}")
        print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
