"""The matched Dice loss of the multi-label U-Net++ (Govind thesis, section 3.3, Algorithm 1).

The network predicts N masks per image, one dislocation per mask, in no particular
order; the ground truth has one dislocation per mask too. Each ground-truth mask is
matched to one predicted mask (never the same one twice) and the loss of an image is the
mean Dice loss of the matched pairs.

``matched_dice_loss`` is the training implementation: the (B, M, N) matrix of Dice
losses comes from one batched matrix product, the matching runs on the detached matrix
(a loop over the M ground-truth masks at most, vectorised across the batch) and the
matched entries are gathered from the differentiable matrix.
``reference_matched_dice_loss`` follows Algorithm 1 line by line, with Python loops over
images and masks; it is the baseline of the tests and of ``benchmarks/bench_loss.py``.

Imports torch (and scipy for ``matching="hungarian"``): use it from training code only,
never from ``temtrack.sdk``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MATCHINGS = ("greedy", "hungarian")

__all__ = ["MATCHINGS", "dice_loss_matrix", "matched_dice_loss", "reference_matched_dice_loss"]


def _validate(pred, target, target_count, matching, empty_weight, eps):
    """Check the inputs of the public losses; returns (target as pred's dtype, real (B, M) bool)."""
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"pred must be a torch.Tensor, got {type(pred).__name__}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if pred.ndim != 4:
        raise ValueError(f"pred must have shape (B, N, H, W), got shape {tuple(pred.shape)}")
    if target.ndim != 4:
        raise ValueError(f"target must have shape (B, M, H, W), got shape {tuple(target.shape)}")
    if not pred.is_floating_point():
        raise ValueError(f"pred must be a floating-point tensor of probabilities, got dtype {pred.dtype}")
    if target.is_complex():
        raise ValueError(f"target must be bool, integer or floating point, got dtype {target.dtype}")
    b, n, h, w = pred.shape
    if target.shape[0] != b or target.shape[2:] != (h, w):
        raise ValueError(
            f"target must have shape (B, M, H, W) = ({b}, M, {h}, {w}) to match pred {tuple(pred.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.device != pred.device:
        raise ValueError(f"target is on {target.device} but pred is on {pred.device}; move both to one device")
    if b == 0:
        raise ValueError(f"pred must hold at least one image (B >= 1), got shape {tuple(pred.shape)}")
    if n == 0:
        raise ValueError("pred must hold at least one predicted mask (N >= 1), got N = 0")
    if matching not in MATCHINGS:
        raise ValueError(f"matching must be one of {', '.join(map(repr, MATCHINGS))}, got {matching!r}")
    if isinstance(empty_weight, torch.Tensor):
        if empty_weight.shape != (b,) or not empty_weight.is_floating_point():
            raise ValueError(
                f"empty_weight as a tensor must be a float tensor of shape (B,) = ({b},), got "
                f"dtype {empty_weight.dtype} and shape {tuple(empty_weight.shape)}"
            )
        if not bool((torch.isfinite(empty_weight) & (empty_weight >= 0)).all()):
            raise ValueError("empty_weight must hold finite numbers >= 0")
    elif isinstance(empty_weight, bool) or not isinstance(empty_weight, (int, float)) or not (
        math.isfinite(empty_weight) and empty_weight >= 0
    ):
        raise ValueError(f"empty_weight must be a finite number >= 0 or a (B,) tensor of them, got {empty_weight!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
        # eps = 0 makes the loss of an empty prediction against an empty mask 0/0.
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")

    with torch.no_grad():
        if pred.numel() and not bool(((pred >= 0) & (pred <= 1)).all()):
            raise ValueError(
                f"pred must hold probabilities in [0, 1] (apply sigmoid first), got values in "
                f"[{float(pred.min())}, {float(pred.max())}]"
            )
        if target.dtype != torch.bool and target.numel() and not bool(((target == 0) | (target == 1)).all()):
            raise ValueError("target must be binary masks (values 0 and 1 only), got other values")

    m = target.shape[1]
    if target_count is None:
        real = target.flatten(2).any(dim=2) if m else torch.zeros((b, 0), dtype=torch.bool, device=pred.device)
    else:
        if not isinstance(target_count, torch.Tensor):
            raise TypeError(f"target_count must be a torch.Tensor or None, got {type(target_count).__name__}")
        if target_count.shape != (b,):
            raise ValueError(f"target_count must have shape (B,) = ({b},), got {tuple(target_count.shape)}")
        if target_count.is_floating_point() or target_count.is_complex() or target_count.dtype == torch.bool:
            raise ValueError(f"target_count must be an integer tensor, got dtype {target_count.dtype}")
        count = target_count.to(device=pred.device, dtype=torch.int64)
        if b and (int(count.min()) < 0 or int(count.max()) > m):
            raise ValueError(
                f"target_count must lie in [0, M] = [0, {m}], got values in [{int(count.min())}, {int(count.max())}]"
            )
        real = torch.arange(m, device=pred.device)[None, :] < count[:, None]
    if b and m:
        most = int(real.sum(dim=1).max())
        if most > n:
            raise ValueError(
                f"target has an image with {most} dislocations but pred has only N = {n} masks; "
                "Algorithm 1 needs N >= the number of dislocations (raise N or drop masks)"
            )
    return real


def _working_dtype(pred):
    # Sums over up to 512 * 512 pixels overflow float16 (max 65504): 16-bit inputs are
    # computed in float32.
    return torch.float32 if pred.dtype in (torch.float16, torch.bfloat16) else pred.dtype


def dice_loss_matrix(pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss between every ground-truth and every predicted mask of each image.

    ``D[b, i, j] = 1 - (2 * sum(t_i * p_j) + eps) / (sum(t_i) + sum(p_j) + eps)``, eq. (3.1)
    of the thesis with probabilities in place of the binary prediction.

    Parameters
    ----------
    pred : (B, N, H, W) float tensor
        Predicted probabilities in [0, 1].
    target : (B, M, H, W) bool, integer or float tensor
        Binary ground-truth masks.
    eps : float, keyword-only
        Smoothing added to numerator and denominator (> 0): an empty prediction of an
        empty mask has loss 0.

    Returns
    -------
    (B, M, N) float tensor
        Differentiable with respect to ``pred``; float32 for 16-bit ``pred``, else pred's dtype.
    """
    dtype = _working_dtype(pred)
    p = pred.flatten(2).to(dtype)  # (B, N, P)
    t = target.flatten(2).to(dtype)  # (B, M, P)
    intersection = torch.bmm(t, p.transpose(1, 2))  # (B, M, N)
    denominator = t.sum(dim=2)[:, :, None] + p.sum(dim=2)[:, None, :] + eps
    return 1.0 - (2.0 * intersection + eps) / denominator


def _greedy_match(costs: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's matching on a detached (B, M, N) matrix: (B, M) int64 indices, (B, N) bool used."""
    b, m, n = costs.shape
    index = torch.zeros((b, m), dtype=torch.int64, device=costs.device)
    used = torch.zeros((b, n), dtype=torch.bool, device=costs.device)
    rows = torch.arange(b, device=costs.device)
    last = int(torch.nonzero(real.any(dim=0)).max()) + 1 if bool(real.any()) else 0
    for i in range(last):
        choice = costs[:, i, :].masked_fill(used, math.inf).argmin(dim=1)  # first minimum on ties
        index[:, i] = choice
        # Padding masks (not real) must not take a prediction away from later masks.
        used[rows, choice] |= real[:, i]
    return index, used


def _hungarian_match(costs: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-total-cost matching per image (scipy), same outputs as ``_greedy_match``."""
    from scipy.optimize import linear_sum_assignment

    b, m, n = costs.shape
    costs_np = costs.cpu().double().numpy()
    real_np = real.cpu().numpy()
    index = np.zeros((b, m), dtype=np.int64)
    used = np.zeros((b, n), dtype=bool)
    for k in range(b):
        rows = np.flatnonzero(real_np[k])
        if rows.size == 0:
            continue
        r, c = linear_sum_assignment(costs_np[k][rows])
        index[k, rows[r]] = c
        used[k, c] = True
    return torch.from_numpy(index).to(costs.device), torch.from_numpy(used).to(costs.device)


def _combine(matched, real, empty_terms, used, empty_weight):
    """Per-image loss from per-mask terms, then the batch mean (shared by both implementations).

    matched (B, M): Dice loss of each real mask with its match; empty_terms (B, N): the
    empty term of each predicted mask; used (B, N): whether a prediction was matched.
    """
    realf = real.to(matched.dtype)
    count = realf.sum(dim=1)
    # An image without dislocations has no Dice term: 0, as Algorithm 1 gives for M = 0.
    dice = (matched * realf).sum(dim=1) / count.clamp(min=1)
    free = (~used).to(matched.dtype)
    empty = (empty_terms * free).sum(dim=1) / free.sum(dim=1).clamp(min=1)
    if isinstance(empty_weight, torch.Tensor):
        empty_weight = empty_weight.to(device=empty.device, dtype=empty.dtype)
    return (dice + empty_weight * empty).mean()


def matched_dice_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    target_count: torch.Tensor | None = None,
    *,
    matching: str = "greedy",
    empty_weight: float | torch.Tensor = 0.0,
    eps: float = 1.0,
) -> torch.Tensor:
    """Matched Dice loss of Algorithm 1 (Govind thesis, section 3.3), vectorised.

    For each image, every real ground-truth mask ``i`` (in order) is matched to the
    not-yet-used predicted mask ``j`` with the lowest Dice loss ``D[i, j]`` (see
    `dice_loss_matrix`); the image loss is the mean of the matched ``D[i, j]`` plus
    ``empty_weight`` times the mean empty term of the predicted masks left unmatched; the
    batch loss is the mean over the B images.

    - Empty term of a predicted mask: its mean probability over the pixels (how much of
      the image it claims), in [0, 1]; linear, so it never saturates and always has a
      gradient. The thesis lets unmatched masks hold duplicates (``empty_weight=0``,
      the default); a positive weight pushes them towards empty.
    - Image without dislocations: no Dice term (0, as Algorithm 1 gives for M = 0) plus
      ``empty_weight`` times the mean empty term of all N predicted masks. It still
      counts as one image in the batch mean; the loss stays finite and differentiable
      (its gradient is 0 when ``empty_weight`` is 0).

    Parameters
    ----------
    pred : (B, N, H, W) float tensor
        Predicted probabilities in [0, 1] (after the sigmoid). Not modified.
    target : (B, M, H, W) bool, integer or float tensor
        Binary masks, one dislocation per mask, padded with empty masks. M may be
        smaller than, equal to or larger than N, but no image may hold more than N real
        masks. Not modified.
    target_count : (B,) integer tensor, optional
        Number of real masks per image (the first ``target_count[b]`` masks; the rest are
        padding, whatever they hold). If None, a mask is real when it has any pixel.
    matching : {"greedy", "hungarian"}, keyword-only
        ``"greedy"``: Algorithm 1 (depends on the order of the ground-truth masks).
        ``"hungarian"``: the matching with the lowest total Dice loss per image
        (``scipy.optimize.linear_sum_assignment`` on the detached matrix, on the CPU);
        its loss is never higher than the greedy one.
    empty_weight : float or (B,) float tensor, keyword-only
        Weight (>= 0) of the empty term of the unmatched predicted masks, for all images
        or per image (0 for partially labelled images, whose unmatched masks may hold
        real but unlabelled dislocations).
    eps : float, keyword-only
        Dice smoothing (> 0), added to numerator and denominator.

    Returns
    -------
    0-dim float tensor
        The batch loss, differentiable with respect to ``pred``; float32 for 16-bit
        ``pred``, else pred's dtype.

    Raises
    ------
    ValueError
        Wrong shapes or dtypes, probabilities outside [0, 1], non-binary target, an
        image with more real masks than N, an unknown ``matching``, bad weights.

    Examples
    --------
    >>> target = torch.zeros(1, 2, 4, 4)
    >>> target[0, 0, 0], target[0, 1, 3] = 1, 1
    >>> pred = target.flip(1)  # the right masks, in the other order
    >>> float(matched_dice_loss(pred, target))
    0.0
    """
    real = _validate(pred, target, target_count, matching, empty_weight, eps)
    costs = dice_loss_matrix(pred, target, eps=eps)  # (B, M, N)
    detached = costs.detach()
    if matching == "greedy":
        index, used = _greedy_match(detached, real)
    else:
        index, used = _hungarian_match(detached, real)
    matched = costs.gather(2, index[:, :, None]).squeeze(2)  # (B, M)
    empty_terms = pred.flatten(2).to(costs.dtype).mean(dim=2)  # (B, N)
    return _combine(matched, real, empty_terms, used, empty_weight)


def _pair_dice_loss(true_mask, pred_mask, eps):
    """DICELoss(true_mask, pred_mask) of Algorithm 1 for one pair of (H, W) masks."""
    intersection = (true_mask * pred_mask).sum()
    return 1.0 - (2.0 * intersection + eps) / (true_mask.sum() + pred_mask.sum() + eps)


def reference_matched_dice_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    target_count: torch.Tensor | None = None,
    *,
    matching: str = "greedy",
    empty_weight: float | torch.Tensor = 0.0,
    eps: float = 1.0,
) -> torch.Tensor:
    """Algorithm 1 written out with Python loops over images and masks.

    Same parameters, definitions and result as `matched_dice_loss` (see there); slow,
    kept as the obviously-correct baseline of the tests and the benchmark.
    """
    real = _validate(pred, target, target_count, matching, empty_weight, eps)
    dtype = _working_dtype(pred)
    b, n = pred.shape[:2]
    image_losses = []
    for k in range(b):
        true_masks = [target[k, i].to(dtype) for i in range(target.shape[1]) if bool(real[k, i])]
        all_pred = [pred[k, j].to(dtype) for j in range(n)]
        m = len(true_masks)
        avg_loss = torch.zeros((), dtype=dtype, device=pred.device)
        used = [False] * n
        if matching == "greedy":
            remaining = list(range(n))  # indices into all_pred of the masks still in pred_masks
            for i in range(m):
                loss_values = [_pair_dice_loss(true_masks[i], all_pred[j], eps) for j in remaining]
                idx = min(range(len(loss_values)), key=lambda q: float(loss_values[q].detach()))
                avg_loss = avg_loss + loss_values[idx] / m
                used[remaining[idx]] = True
                del remaining[idx]
        elif m:
            from scipy.optimize import linear_sum_assignment

            table = [[_pair_dice_loss(true_masks[i], all_pred[j], eps) for j in range(n)] for i in range(m)]
            rows, cols = linear_sum_assignment([[float(v.detach()) for v in row] for row in table])
            for i, j in zip(rows, cols):
                avg_loss = avg_loss + table[i][j] / m
                used[j] = True
        unused = [j for j in range(n) if not used[j]]
        empty = torch.zeros((), dtype=dtype, device=pred.device)
        for j in unused:
            empty = empty + all_pred[j].mean() / len(unused)
        weight = empty_weight[k] if isinstance(empty_weight, torch.Tensor) else empty_weight
        image_losses.append(avg_loss + weight * empty)
    return sum(image_losses) / b
