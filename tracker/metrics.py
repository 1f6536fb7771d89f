"""Identity metrics of a tracking against ground truth: IDF1 and ID switches.

For the case where every detection already carries its ground-truth id (or -1 for a
false positive), as when a linker is fed ground-truth curves with drops and spurious
curves added: detections need no spatial matching, only the identities are scored.
Missed detections never reach the linker and are not counted.

- IDF1 (Ristani et al. 2016): ground-truth and predicted tracks are paired one to one
  (``scipy.optimize.linear_sum_assignment``) so that the number of detections they
  share (IDTP) is largest; ``IDF1 = 2 IDTP / (gt detections + predicted detections)``.
- ID switches (CLEAR-MOT, Bernardin & Stiefelhagen 2008): a ground-truth track whose
  predicted id differs from the one it had when last detected; counted per 1000
  ground-truth track-frames (detections with a ground-truth id).

numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["TrackingScores", "tracking_scores"]


@dataclass(frozen=True)
class TrackingScores:
    """Identity scores of one tracking.

    Attributes
    ----------
    idf1, idp, idr : float
        ID F1, precision ``IDTP / predicted detections`` and recall
        ``IDTP / ground-truth detections``, in [0, 1] (NaN with no detections).
    idtp : int
        Detections whose predicted track is paired with their ground-truth track.
    id_switches : int
        CLEAR-MOT identity switches.
    switches_per_1000 : float
        ``1000 * id_switches / gt_detections``.
    gt_detections, predicted_detections, gt_tracks, predicted_tracks : int
    """

    idf1: float
    idp: float
    idr: float
    idtp: int
    id_switches: int
    switches_per_1000: float
    gt_detections: int
    predicted_detections: int
    gt_tracks: int
    predicted_tracks: int

    def to_dict(self) -> dict:
        return asdict(self)


def _ids(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per detection), got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def tracking_scores(frame, gt_id, pred_id) -> TrackingScores:
    """IDF1 and ID switches of predicted track ids against ground-truth ids.

    Parameters
    ----------
    frame : (D,) array_like of int
        Frame number of each detection.
    gt_id : (D,) array_like of int
        Ground-truth track id of each detection, or -1 for a false positive (which
        then counts as a predicted detection that cannot be right).
    pred_id : (D,) array_like of int
        Track id the linker gave each detection (>= 0).

    Returns
    -------
    TrackingScores

    Examples
    --------
    Two tracks whose ids swap halfway: one switch each, and half the detections
    of each ground-truth track keep the predicted track it is paired with.

    >>> s = tracking_scores([0, 0, 1, 1, 2, 2, 3, 3], [0, 1] * 4, [5, 6, 5, 6, 6, 5, 6, 5])
    >>> s.id_switches, s.idf1
    (2, 0.5)
    """
    frame, gt, pred = _ids("frame", frame), _ids("gt_id", gt_id), _ids("pred_id", pred_id)
    if not (len(frame) == len(gt) == len(pred)):
        raise ValueError(f"frame, gt_id and pred_id need one value per detection; got lengths {len(frame)}, {len(gt)}, {len(pred)}")
    if (gt < -1).any():
        raise ValueError(f"gt_id must be >= 0, or -1 for a false positive; got {int(gt.min())}")
    if (pred < 0).any():
        raise ValueError(f"pred_id must be >= 0, got {int(pred.min())}")
    _unique_per_frame("gt_id", frame[gt >= 0], gt[gt >= 0])
    _unique_per_frame("pred_id", frame, pred)

    real = gt >= 0
    n_gt, n_pred = int(real.sum()), len(pred)
    gt_tracks, gt_index = np.unique(gt[real], return_inverse=True)
    pred_tracks, pred_index = np.unique(pred, return_inverse=True)
    idtp = 0
    if n_gt:
        from scipy.optimize import linear_sum_assignment
        from scipy.sparse import coo_matrix

        shared = coo_matrix(
            (np.ones(n_gt), (gt_index, pred_index[real])), shape=(len(gt_tracks), len(pred_tracks))
        ).toarray()
        rows, cols = linear_sum_assignment(shared, maximize=True)
        idtp = int(shared[rows, cols].sum())

    switches = _switches(frame[real], gt[real], pred[real])
    nan = float("nan")
    return TrackingScores(
        idf1=2.0 * idtp / (n_gt + n_pred) if n_gt + n_pred else nan,
        idp=idtp / n_pred if n_pred else nan,
        idr=idtp / n_gt if n_gt else nan,
        idtp=idtp,
        id_switches=switches,
        switches_per_1000=1000.0 * switches / n_gt if n_gt else nan,
        gt_detections=n_gt,
        predicted_detections=n_pred,
        gt_tracks=len(gt_tracks),
        predicted_tracks=len(pred_tracks),
    )


def _unique_per_frame(name: str, frame: np.ndarray, ids: np.ndarray) -> None:
    if not len(ids):
        return
    pairs = np.unique(np.column_stack([frame, ids]), axis=0)
    if len(pairs) != len(ids):
        raise ValueError(f"{name} repeats within a frame: each track can hold at most one detection per frame")


def _switches(frame: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> int:
    """CLEAR-MOT switches: per ground-truth track in frame order, changes of predicted id."""
    if not len(gt):
        return 0
    order = np.lexsort((frame, gt))
    gt, pred = gt[order], pred[order]
    same_track = gt[1:] == gt[:-1]
    return int(np.count_nonzero(same_track & (pred[1:] != pred[:-1])))
