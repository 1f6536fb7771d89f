"""Labelled lines matched to predicted splines one to one, by curve distance.

For frames where only some dislocations are labelled (real data), the thesis' metric
(:func:`temtrack.sdk.metrics.score_image`, which scores masks) says little; these
functions ask what a user asks: is each labelled line found, and how long is what was
found? Pure numpy/scipy on ``(n, 2)`` curves; no masks, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import distance_to_curve

__all__ = ["LENGTH_TOLERANCE", "SplineScore", "score_splines", "summarize_splines"]

#: A found line counts as drawn shorter (longer) than labelled when ``L_P / L_T`` is
#: below ``1 - LENGTH_TOLERANCE`` (above ``1 + LENGTH_TOLERANCE``).
LENGTH_TOLERANCE = 0.1


def _ratio(numerator: float, denominator: float, *, both_empty: bool) -> float:
    """numerator / denominator; when that is 0/0: 1.0 if prediction and truth are both empty,
    else 0.0 (the rule of every ratio in :mod:`temtrack.sdk.metrics`, which imports it)."""
    return float(numerator) / float(denominator) if denominator > 0 else 1.0 if both_empty else 0.0


@dataclass(frozen=True)
class SplineScore:
    """How many labelled lines a prediction found, line by line (see :func:`score_splines`).

    Attributes
    ----------
    n_true, n_pred : int
        Labelled lines and predicted dislocations in the image.
    n_found : int
        Labelled lines with a predicted spline along them (one prediction each).
    recall : float
        ``n_found / n_true`` (1.0 when both are 0, 0.0 when only ``n_true`` is).
    length_scores : tuple of float
        ``max(0, 1 - |L_P - L_T| / L_T)`` of each found line.
    distances : tuple of float
        Mean distance (px) from the matched prediction's points to its line.
    pairs : tuple of (int, int)
        ``(label index, prediction index)`` of each found line, in the order of
        ``length_scores``.
    length_ratios : tuple of float
        ``L_P / L_T`` of each found line, in the same order: which way its length is
        off, which the length score does not say (below 1: drawn shorter than
        labelled, in pieces or with ends cut off; above 1: run on beyond the label's
        ends).
    """

    n_true: int
    n_pred: int
    n_found: int
    recall: float
    length_scores: tuple
    distances: tuple
    pairs: tuple = ()
    length_ratios: tuple = ()

    def to_dict(self) -> dict:
        return {
            "n_true": self.n_true, "n_pred": self.n_pred, "n_found": self.n_found, "recall": self.recall,
            "length_scores": list(self.length_scores), "distances": list(self.distances),
            "pairs": [list(p) for p in self.pairs], "length_ratios": list(self.length_ratios),
        }


def _arc_length(curve: np.ndarray) -> float:
    return float(np.hypot(*np.diff(curve, axis=0).T).sum()) if len(curve) > 1 else 0.0


def score_splines(pred_curves, true_curves, *, max_distance: float = 5.0, min_coverage: float = 0.5) -> SplineScore:
    """Match predicted splines to labelled lines one to one, by curve distance.

    For frames where only some dislocations are labelled the thesis' metric reads
    nothing useful (it scores masks); this asks the question a user asks: is each
    labelled line found, and how long is what was found? The rule (after paper 6.4,
    which compares curves by their mean closest distance):

    - a prediction ``P`` *lies along* a labelled line ``L`` when the mean distance
      from ``P``'s points to ``L`` is at most ``max_distance`` px **and** at least
      ``min_coverage`` of ``L``'s points lie within ``max_distance`` of ``P``;
    - among such pairs, each label takes at most one prediction and each prediction
      serves at most one label, minimising the summed mean distance (Hungarian);
    - a found line scores ``max(0, 1 - |L_P - L_T| / L_T)`` from the arc lengths, and
      its ``L_P / L_T`` is kept too: the score alone does not say whether lines come
      out too short or too long, and a length series inherits that bias.

    Unlabelled lines are not penalised: precision is not defined on partial labels.

    Parameters
    ----------
    pred_curves, true_curves : sequence of (n, 2) array_like
        ``(x, y)`` points along each curve, equally spaced (e.g. a Dislocation's
        ``points``).
    max_distance : float
        px, > 0.
    min_coverage : float
        In (0, 1].

    Returns
    -------
    SplineScore

    Examples
    --------
    >>> line = np.column_stack([np.linspace(0, 100, 50), np.full(50, 10.0)])
    >>> s = score_splines([line[:40] + [0, 2]], [line, line + [0, 40]])
    >>> s.n_found, s.recall, round(s.length_scores[0], 2), round(s.length_ratios[0], 2)
    (1, 0.5, 0.8, 0.8)
    """
    from scipy.optimize import linear_sum_assignment

    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0 px, got {max_distance}")
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    preds = [np.asarray(c, float) for c in pred_curves]
    trues = [np.asarray(c, float) for c in true_curves]
    n_true, n_pred = len(trues), len(preds)
    cost = np.full((n_true, n_pred), np.inf)
    boxes_t = [(t.min(0) - max_distance, t.max(0) + max_distance) for t in trues]
    for i, t in enumerate(trues):
        low, high = boxes_t[i]
        for j, p in enumerate(preds):
            if (p.max(0) < low).any() or (p.min(0) > high).any():
                continue
            along = float(distance_to_curve(p, t).mean())
            if along > max_distance:
                continue
            covered = float((distance_to_curve(t, p) <= max_distance).mean())
            if covered >= min_coverage:
                cost[i, j] = along
    found_rows, found_cols = [], []
    if n_true and n_pred and np.isfinite(cost).any():
        finite = np.where(np.isfinite(cost), cost, 1e6)
        rows, cols = linear_sum_assignment(finite)
        keep = np.isfinite(cost[rows, cols])
        found_rows, found_cols = rows[keep], cols[keep]
    scores, distances, ratios = [], [], []
    for i, j in zip(found_rows, found_cols):
        true_length, pred_length = _arc_length(trues[i]), _arc_length(preds[j])
        scores.append(max(0.0, 1.0 - abs(pred_length - true_length) / max(true_length, 1e-9)))
        ratios.append(pred_length / max(true_length, 1e-9))
        distances.append(float(cost[i, j]))
    return SplineScore(
        n_true=n_true,
        n_pred=n_pred,
        n_found=len(scores),
        recall=_ratio(len(scores), n_true, both_empty=n_pred == 0),
        length_scores=tuple(scores),
        distances=tuple(distances),
        pairs=tuple((int(i), int(j)) for i, j in zip(found_rows, found_cols)),
        length_ratios=tuple(ratios),
    )


def summarize_splines(scores: Sequence[SplineScore]) -> dict:
    """Totals and means over images: ``spline_recall`` (found / labelled, pooled),
    ``spline_recall_mean`` (over images), ``matched_length_score`` (mean over found
    lines; None without any), ``matched_length_ratio`` (the median ``L_P / L_T`` of the
    found lines) with its ``matched_length_ratio_quartiles`` and ``matched_shorter`` /
    ``matched_longer`` (the share of found lines drawn more than 10 % shorter / longer
    than labelled; all None without found lines), ``matched_distance`` (px),
    ``true_per_frame`` and ``pred_per_frame``."""
    scores = list(scores)
    if not scores:
        raise ValueError("scores must hold at least one SplineScore, got an empty sequence")
    n_true, n_found = sum(s.n_true for s in scores), sum(s.n_found for s in scores)
    lengths = [v for s in scores for v in s.length_scores]
    ratios = np.array([v for s in scores for v in s.length_ratios])
    distances = [v for s in scores for v in s.distances]
    return {
        "n_true": n_true,
        "n_found": n_found,
        "spline_recall": _ratio(n_found, n_true, both_empty=sum(s.n_pred for s in scores) == 0),
        "spline_recall_mean": float(np.mean([s.recall for s in scores])),
        "matched_length_score": float(np.mean(lengths)) if lengths else None,
        "matched_length_ratio": float(np.median(ratios)) if len(ratios) else None,
        "matched_length_ratio_quartiles": [float(q) for q in np.quantile(ratios, [0.25, 0.75])] if len(ratios) else None,
        "matched_shorter": float(np.mean(ratios < 1 - LENGTH_TOLERANCE)) if len(ratios) else None,
        "matched_longer": float(np.mean(ratios > 1 + LENGTH_TOLERANCE)) if len(ratios) else None,
        "matched_distance": float(np.mean(distances)) if distances else None,
        "true_per_frame": float(np.mean([s.n_true for s in scores])),
        "pred_per_frame": float(np.mean([s.n_pred for s in scores])),
    }
