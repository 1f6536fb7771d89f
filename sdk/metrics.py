"""How well predicted masks find the dislocations of one image.

The headline number is the length metric of Govind's thesis (section 3.4.3): every
ground-truth dislocation is paired with the predicted mask that overlaps it best (Dice,
in ground-truth order, as in the thesis' Algorithm 1), and scores
``1 - |L_P - L_T| / L_T`` from the lengths of the splines fitted to both, 0 when it found
no partner. Prediction and ground truth go through the same post-processing
(:func:`~temtrack.sdk.postprocess.extract_dislocations`), so their lengths are measured
the same way. Beside it: pixel Dice/IoU/precision/recall of the union of the masks,
per-dislocation precision and recall, the count error after de-duplication, and the
mean distance between matched centrelines.

Pure numpy on top of the post-processing; no torch, no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import curve_distance
from .postprocess import FrameDislocations, PostprocessSettings, check_masks, extract_dislocations, threshold_masks
from .splinematch import SplineScore, _ratio, score_splines, summarize_splines

__all__ = [
    "ImageScore",
    "Match",
    "MULTIPLE_RULES",
    "SplineScore",
    "dice_matrix",
    "score_image",
    "score_splines",
    "summarize",
    "summarize_splines",
]

# "exclude": masks holding several dislocations are filtered out before matching (thesis
# 3.4.3 step 6); "zero": they take part in matching and score 0 when chosen.
MULTIPLE_RULES = ("exclude", "zero")

# float32 adds 0/1 products exactly up to 2**24; beyond that the counts need float64.
_FLOAT32_EXACT = 2**24


@dataclass(frozen=True)
class Match:
    """What became of one ground-truth dislocation.

    Attributes
    ----------
    gt_index : int
        Its ground-truth mask.
    pred_index : int
        The predicted mask matched to it, or -1 when none reached ``min_dice``.
    dice : float
        Dice score of the two binarised masks (0.0 when unmatched).
    gt_length : float
        ``L_T``: arc length of its spline in pixels (the sum over the pieces when the
        post-processing splits the ground-truth mask, e.g. a line that leaves the image
        and comes back).
    pred_length : float
        ``L_P``: arc length of the matched mask's spline in pixels (summed over its
        pieces when it holds several); NaN when unmatched.
    score : float
        ``max(0, 1 - |L_P - L_T| / L_T)``; 0 when unmatched or when the matched mask
        holds several dislocations.
    distance : float
        Mean closest distance between the matched centrelines in pixels
        (:func:`~temtrack.sdk.geometry.curve_distance`, both directions averaged; the
        closest pair of pieces when either side has several); NaN when unmatched.
    multiple : bool
        The matched predicted mask holds more than one dislocation.
    """

    gt_index: int
    pred_index: int
    dice: float
    gt_length: float
    pred_length: float
    score: float
    distance: float
    multiple: bool

    @property
    def matched(self) -> bool:
        return self.pred_index >= 0

    def to_dict(self) -> dict:
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ImageScore:
    """The scores of one image (see :func:`score_image` for the definitions).

    Attributes
    ----------
    length_score : float
        The thesis' length metric of the image, in [0, 1].
    n_gt : int
        Ground-truth dislocations scored: masks in which the post-processing finds at
        least one dislocation.
    n_gt_ignored : int
        Ground-truth masks too small to hold a dislocation (under
        ``PostprocessSettings.min_pixels``), left out of every count.
    n_pred : int
        Predicted dislocations after de-duplication across masks (what the pipeline
        would output).
    n_pred_masks : int
        Predicted masks holding at least one dislocation.
    n_pred_multiple : int
        Predicted masks holding more than one dislocation.
    n_matched : int
        Ground-truth dislocations matched to a predicted mask.
    n_pred_matched : int
        Of the ``n_pred`` predicted dislocations, those that come (directly or through
        merged duplicates) from a matched mask.
    dislocation_precision, dislocation_recall : float
        ``n_pred_matched / n_pred`` and ``n_matched / n_gt``.
    count_error : int
        ``n_pred - n_gt``.
    centreline_distance : float
        Mean of ``Match.distance`` over the matches, in pixels; NaN without matches.
    pixel_dice, pixel_iou, pixel_precision, pixel_recall : float
        Of the union of the binarised predicted masks against the union of the
        ground-truth masks.
    matches : tuple of Match
        One per scored ground-truth dislocation, in ground-truth order.
    splines : SplineScore or None
        The spline-level matching of :func:`score_splines` (``splines=True``).
    """

    length_score: float
    n_gt: int
    n_gt_ignored: int
    n_pred: int
    n_pred_masks: int
    n_pred_multiple: int
    n_matched: int
    n_pred_matched: int
    dislocation_precision: float
    dislocation_recall: float
    count_error: int
    centreline_distance: float
    pixel_dice: float
    pixel_iou: float
    pixel_precision: float
    pixel_recall: float
    matches: tuple
    splines: "SplineScore | None" = None

    def to_dict(self) -> dict:
        """Plain JSON-ready values (NaN becomes None)."""
        out = {}
        for key, value in self.__dict__.items():
            if key == "matches":
                out[key] = [m.to_dict() for m in value]
            elif key == "splines":
                out[key] = None if value is None else value.to_dict()
            else:
                out[key] = _json_float(value) if isinstance(value, float) else value
        return out


def _json_float(value: float):
    return None if math.isnan(value) else float(value)


def _dice_binary(true_binary: np.ndarray, pred_binary: np.ndarray) -> np.ndarray:
    n_true, n_pred = len(true_binary), len(pred_binary)
    dice = np.zeros((n_true, n_pred))
    if n_true == 0 or n_pred == 0:
        return dice
    a, b = true_binary.reshape(n_true, -1), pred_binary.reshape(n_pred, -1)
    # Lines cover a few percent of an image: keep only the pixels some mask holds, then
    # one BLAS product gives every intersection (20 masks at 512 x 512: ~2 ms).
    pixels = np.flatnonzero(a.any(axis=0) | b.any(axis=0))
    dtype = np.float32 if len(pixels) <= _FLOAT32_EXACT else np.float64
    a = (a[:, pixels] != 0).astype(dtype)  # uint8 masks may hold 255 for a line
    b = (b[:, pixels] != 0).astype(dtype)
    intersection = (a @ b.T).astype(np.float64)
    sizes = a.sum(axis=1, dtype=np.float64)[:, None] + b.sum(axis=1, dtype=np.float64)[None, :]
    np.divide(2.0 * intersection, sizes, out=dice, where=sizes > 0)
    return dice


def dice_matrix(true_masks: np.ndarray, pred_masks: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Dice score of every pair of ground-truth and predicted masks.

    Parameters
    ----------
    true_masks : (N_gt, H, W) ndarray of float, uint8 or bool
        Ground-truth masks; float values are probabilities in [0, 1]. Not modified.
    pred_masks : (N_pred, H, W) ndarray of float, uint8 or bool
        Predicted masks, same ``(H, W)``. Not modified.
    threshold : float
        Probabilities above it count as dislocation; uint8/bool masks count nonzero.

    Returns
    -------
    (N_gt, N_pred) ndarray of float64
        ``2 |A & B| / (|A| + |B|)`` in [0, 1]; 0 where both masks are empty.

    Examples
    --------
    >>> a = np.zeros((1, 4, 4), np.uint8); a[0, 1, :] = 1
    >>> b = np.zeros((2, 4, 4), np.uint8); b[0, 1, :2] = 1; b[1, 3, :] = 1
    >>> dice_matrix(a, b).round(3).tolist()
    [[0.667, 0.0]]
    """
    true_masks = check_masks(true_masks, "true_masks")
    pred_masks = check_masks(pred_masks, "pred_masks")
    _check_same_size(true_masks, pred_masks)
    return _dice_binary(threshold_masks(true_masks, threshold), threshold_masks(pred_masks, threshold))


def _check_same_size(true_masks: np.ndarray, pred_masks: np.ndarray) -> None:
    if true_masks.shape[1:] != pred_masks.shape[1:]:
        raise ValueError(
            "pred_masks and true_masks must cover the same image size (H, W); "
            f"got pred_masks of shape {pred_masks.shape} and true_masks of shape {true_masks.shape}"
        )


def _pieces_by_mask(frame: FrameDislocations) -> dict[int, list]:
    pieces: dict[int, list] = {}
    for d in frame.candidates:
        pieces.setdefault(d.mask_index, []).append(d)
    return pieces


def _pieces_distance(a: list, b: list) -> float:
    return min(curve_distance(p.points, q.points) for p in a for q in b)


def _matched_outputs(frame: FrameDislocations, matched_masks: set[int]) -> int:
    """How many final dislocations come from a matched mask, directly or through merges."""
    parent: dict = {}

    def find(key):
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for merge in frame.merges:
        parent[find(merge.dropped)] = find(merge.kept)
    good = {find(d.key) for d in frame.candidates if d.mask_index in matched_masks}
    return sum(1 for d in frame.dislocations if find(d.key) in good)


def score_image(
    pred_masks: np.ndarray,
    true_masks: np.ndarray,
    *,
    settings: PostprocessSettings | None = None,
    min_dice: float = 0.1,
    multiple: str = "exclude",
    splines: bool = False,
    pred_curves=None,
) -> ImageScore:
    """Score one image's predicted masks against its ground-truth masks.

    **Length metric** (thesis section 3.4.3). Both stacks go through
    :func:`~temtrack.sdk.postprocess.extract_dislocations` with the same ``settings``.
    Predicted masks in which it finds no dislocation (empty, or only specks under
    ``min_pixels``) are not candidates; with ``multiple="exclude"`` (the thesis, step
    6) neither are masks holding more than one dislocation. Then, for each ground-truth
    mask in order (the thesis' Algorithm 1), the remaining candidate with the highest
    Dice score against it (on the binarised masks) is its match if that Dice is at least
    ``min_dice``, and is removed from the candidates. A ground-truth dislocation scores

        ``max(0, 1 - |L_P - L_T| / L_T)``

    with ``L_P`` and ``L_T`` the spline arc lengths of the matched and the true mask;
    0 when unmatched, and 0 when the matched mask holds several dislocations (only
    possible with ``multiple="zero"``). The floor at 0 is ours: the thesis does not say
    what a prediction longer than ``2 L_T`` scores. When the post-processing splits a
    ground-truth mask into several pieces (a line leaving the image and coming back),
    ``L_T`` is their total. Ground-truth masks holding no dislocation after
    post-processing (a few pixels at the border) are not scored (``n_gt_ignored``).
    The image's score is the mean over its ground-truth dislocations; an image without
    any scores 1.0 if nothing is predicted either, else 0.0.

    **Per dislocation.** Recall is ``n_matched / n_gt``. Precision counts the
    dislocations the pipeline would output, i.e. after duplicates across masks are
    merged (``n_pred``): one is a true positive when it comes, directly or through
    merged duplicates, from a matched mask. Counting masks instead would punish a
    model for predicting one dislocation in two masks, which the thesis allows
    (section 3.3: duplicates are filtered in post-processing).

    **Pixels.** Dice, IoU, precision and recall of the union of the binarised
    predicted masks against the union of the ground-truth masks.

    Any ratio whose denominator is 0 is 1.0 when prediction and ground truth are both
    empty and 0.0 otherwise.

    Parameters
    ----------
    pred_masks : (N_pred, H, W) ndarray of float, uint8 or bool
        Predicted masks: probabilities in [0, 1], or binary (nonzero = dislocation).
        ``N_pred`` may be 0. Not modified.
    true_masks : (N_gt, H, W) ndarray of float, uint8 or bool
        Ground-truth masks, one dislocation each, same ``(H, W)``. Not modified.
    settings : PostprocessSettings, optional
        Post-processing for both stacks (threshold, ``min_pixels``, ...); the defaults
        follow the thesis.
    min_dice : float
        Smallest Dice score of a match, in (0, 1] (thesis: 0.1).
    multiple : {"exclude", "zero"}
        Predicted masks holding several dislocations: left out of matching (thesis),
        or matched and scored 0.
    splines : bool
        Also match the predicted dislocations to the ground-truth ones line by line
        (:func:`score_splines`, for partially labelled frames) into ``.splines``.
    pred_curves : sequence of (n, 2) array_like, optional
        The predicted dislocations' ``(x, y)`` points for ``splines``, when the model
        gave them itself (a line-field model's splines, whose masks are only drawn from
        them); default: the dislocations post-processing finds in ``pred_masks``.

    Returns
    -------
    ImageScore

    Raises
    ------
    TypeError
        A stack is not an ndarray, or not of float, uint8 or bool dtype.
    ValueError
        A stack is not 3-D, holds NaN or probabilities outside [0, 1], the two differ
        in ``(H, W)``, or ``min_dice``/``multiple`` is out of range.

    Examples
    --------
    >>> import cv2
    >>> truth = np.zeros((2, 64, 64), np.uint8)
    >>> _ = cv2.line(truth[0], (5, 10), (55, 10), 1, 3)
    >>> _ = cv2.line(truth[1], (5, 40), (55, 40), 1, 3)
    >>> pred = truth[::-1].copy(); pred[0, :, 32:] = 0  # masks swapped, second line ends at x = 30
    >>> score = score_image(pred, truth)
    >>> [(m.pred_index, round(m.score, 2)) for m in score.matches], round(score.length_score, 2)
    ([(1, 1.0), (0, 0.5)], 0.75)
    """
    pred_masks = check_masks(pred_masks, "pred_masks")
    true_masks = check_masks(true_masks, "true_masks")
    _check_same_size(true_masks, pred_masks)
    if isinstance(min_dice, bool) or not isinstance(min_dice, (int, float, np.floating)) or not 0.0 < min_dice <= 1.0:
        raise ValueError(f"min_dice must be a number in (0, 1], got {min_dice!r}")
    if multiple not in MULTIPLE_RULES:
        raise ValueError(f"multiple must be one of {', '.join(MULTIPLE_RULES)}; got {multiple!r}")
    if settings is None:
        settings = PostprocessSettings()
    elif not isinstance(settings, PostprocessSettings):
        raise TypeError(f"settings must be a PostprocessSettings or None, got {type(settings).__name__}")

    pred_binary = threshold_masks(pred_masks, settings.threshold)
    true_binary = threshold_masks(true_masks, settings.threshold)
    pred_frame = extract_dislocations(pred_masks, settings=settings)
    true_frame = extract_dislocations(true_masks, settings=settings)
    dice = _dice_binary(true_binary, pred_binary)

    pred_pieces, true_pieces = _pieces_by_mask(pred_frame), _pieces_by_mask(true_frame)
    available = np.array(
        [m.n_dislocations == 1 or (m.n_dislocations > 1 and multiple == "zero") for m in pred_frame.masks], bool
    )
    n_pred_masks = sum(m.n_dislocations > 0 for m in pred_frame.masks)
    n_pred_multiple = sum(m.multiple for m in pred_frame.masks)
    scored = [i for i in range(len(true_masks)) if sum(d.length for d in true_pieces.get(i, ())) > 0]

    matches = []
    for i in scored:
        gt_length = float(sum(d.length for d in true_pieces[i]))
        row = np.where(available, dice[i], -1.0)
        j = int(np.argmax(row)) if len(row) else -1
        if j < 0 or row[j] < min_dice:
            matches.append(Match(i, -1, 0.0, gt_length, math.nan, 0.0, math.nan, False))
            continue
        available[j] = False
        is_multiple = bool(pred_frame.masks[j].multiple)
        pred_length = float(sum(d.length for d in pred_pieces[j]))
        score = 0.0 if is_multiple else max(0.0, 1.0 - abs(pred_length - gt_length) / gt_length)
        distance = _pieces_distance(pred_pieces[j], true_pieces[i])
        matches.append(Match(i, j, float(dice[i, j]), gt_length, pred_length, score, distance, is_multiple))

    n_gt, n_pred = len(scored), len(pred_frame.dislocations)
    matched = [m for m in matches if m.matched]
    n_pred_matched = _matched_outputs(pred_frame, {m.pred_index for m in matched})
    no_dislocations = n_gt == 0 and n_pred == 0
    if n_gt:
        length_score = float(np.mean([m.score for m in matches]))
    else:
        length_score = 1.0 if n_pred == 0 else 0.0

    pred_union, true_union = pred_binary.any(axis=0), true_binary.any(axis=0)
    tp = int(np.count_nonzero(pred_union & true_union))
    n_pred_pixels, n_true_pixels = int(np.count_nonzero(pred_union)), int(np.count_nonzero(true_union))
    no_pixels = n_pred_pixels == 0 and n_true_pixels == 0
    return ImageScore(
        length_score=length_score,
        n_gt=n_gt,
        n_gt_ignored=len(true_masks) - n_gt,
        n_pred=n_pred,
        n_pred_masks=int(n_pred_masks),
        n_pred_multiple=int(n_pred_multiple),
        n_matched=len(matched),
        n_pred_matched=n_pred_matched,
        dislocation_precision=_ratio(n_pred_matched, n_pred, both_empty=no_dislocations),
        dislocation_recall=_ratio(len(matched), n_gt, both_empty=no_dislocations),
        count_error=n_pred - n_gt,
        centreline_distance=float(np.mean([m.distance for m in matched])) if matched else math.nan,
        pixel_dice=_ratio(2 * tp, n_pred_pixels + n_true_pixels, both_empty=no_pixels),
        pixel_iou=_ratio(tp, n_pred_pixels + n_true_pixels - tp, both_empty=no_pixels),
        pixel_precision=_ratio(tp, n_pred_pixels, both_empty=no_pixels),
        pixel_recall=_ratio(tp, n_true_pixels, both_empty=no_pixels),
        matches=tuple(matches),
        splines=score_splines(
            [d.points for d in pred_frame.dislocations] if pred_curves is None else pred_curves,
            [d.points for d in true_frame.dislocations],
        )
        if splines
        else None,
    )


_PER_IMAGE = (
    "length_score",
    "pixel_dice",
    "pixel_iou",
    "pixel_precision",
    "pixel_recall",
    "dislocation_precision",
    "dislocation_recall",
    "count_error",
)


def summarize(scores: Sequence[ImageScore]) -> dict:
    """Aggregate the scores of many images.

    Parameters
    ----------
    scores : sequence of ImageScore
        At least one.

    Returns
    -------
    dict
        ``n_images``, ``n_gt``, ``n_pred``, ``n_matched`` (totals); ``<metric>_mean``
        and ``<metric>_median`` over images for the length score, the pixel metrics,
        dislocation precision and recall and the count error; ``count_error_abs_mean``;
        ``length_score_pooled`` (mean over all ground-truth dislocations of all
        images, so images with many dislocations weigh more; None without any),
        ``dislocation_precision_pooled`` and ``dislocation_recall_pooled`` (ratios of
        the summed counts, with :func:`score_image`'s rule for 0/0) and
        ``centreline_distance_mean`` (px, over all matches; None without any). Plain
        ints, floats and None, ready for JSON.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("scores must hold at least one ImageScore, got an empty sequence")
    for i, s in enumerate(scores):
        if not isinstance(s, ImageScore):
            raise TypeError(f"scores[{i}] must be an ImageScore, got {type(s).__name__}")
    out: dict = {
        "n_images": len(scores),
        "n_gt": sum(s.n_gt for s in scores),
        "n_pred": sum(s.n_pred for s in scores),
        "n_matched": sum(s.n_matched for s in scores),
    }
    for name in _PER_IMAGE:
        values = np.array([getattr(s, name) for s in scores], float)
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_median"] = float(np.median(values))
    out["count_error_abs_mean"] = float(np.mean([abs(s.count_error) for s in scores]))
    per_dislocation = [m.score for s in scores for m in s.matches]
    out["length_score_pooled"] = float(np.mean(per_dislocation)) if per_dislocation else None
    both_empty = out["n_gt"] == 0 and out["n_pred"] == 0
    out["dislocation_precision_pooled"] = _ratio(sum(s.n_pred_matched for s in scores), out["n_pred"], both_empty=both_empty)
    out["dislocation_recall_pooled"] = _ratio(out["n_matched"], out["n_gt"], both_empty=both_empty)
    distances = [m.distance for s in scores for m in s.matches if m.matched]
    out["centreline_distance_mean"] = float(np.mean(distances)) if distances else None
    return out
