"""The matched Dice loss of Algorithm 1 (skipped where torch is not installed).

The vectorised loss is checked against the loop-by-loop reference on random batches,
and both against hand-made cases with known answers.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")
pytest.importorskip("scipy")

from numpy.testing import assert_allclose  # noqa: E402

from temtrack.training.losses import (  # noqa: E402
    MATCHINGS,
    dice_loss_matrix,
    matched_dice_loss,
    reference_matched_dice_loss,
)

RTOL = 1e-5


def random_batch(seed, *, b=4, n=5, m=6, size=12, counts=(0, 2, 5, 5)):
    """pred (B, N, H, W) float64 in [0, 1]; target (B, M, H, W) with counts[k] real masks then padding."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand((b, n, size, size), generator=g, dtype=torch.float64)
    target = torch.rand((b, m, size, size), generator=g) > 0.75
    for k, c in enumerate(counts):
        target[k, c:] = False
        target[k, :c, 0, 0] = True  # every real mask has at least one pixel
    return pred, target, torch.tensor(counts)


def disjoint_masks(m, size=16):
    """(m, size, size) bool: m non-overlapping horizontal bands of different lengths."""
    masks = torch.zeros((m, size, size), dtype=torch.bool)
    for i in range(m):
        masks[i, i, : 3 + i] = True
    return masks


@pytest.mark.parametrize("matching", MATCHINGS)
@pytest.mark.parametrize("empty_weight", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(5, 6), (5, 5), (6, 3)], ids=["M>N", "M==N", "M<N"])
def test_vectorised_equals_reference(matching, empty_weight, shape):
    n, m = shape
    counts = (0, min(2, m), min(n, m), 1)
    for seed in range(3):
        pred, target, count = random_batch(seed, n=n, m=m, counts=counts)
        for given in (None, count):
            kwargs = dict(matching=matching, empty_weight=empty_weight)
            fast = matched_dice_loss(pred, target, given, **kwargs)
            slow = reference_matched_dice_loss(pred, target, given, **kwargs)
            assert_allclose(fast.item(), slow.item(), rtol=RTOL)


@pytest.mark.parametrize("matching", MATCHINGS)
def test_gradients_equal_reference(matching):
    pred, target, count = random_batch(7)
    grads = []
    for fn in (matched_dice_loss, reference_matched_dice_loss):
        p = pred.clone().requires_grad_(True)
        fn(p, target, count, matching=matching, empty_weight=0.2).backward()
        grads.append(p.grad)
    assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=RTOL, atol=1e-12)


def test_float32_matches_float64_reference():
    pred, target, count = random_batch(3)
    fast = matched_dice_loss(pred.float(), target, count)
    slow = reference_matched_dice_loss(pred, target, count)
    assert fast.dtype == torch.float32
    assert_allclose(fast.item(), slow.item(), rtol=RTOL)


@pytest.mark.parametrize("matching", MATCHINGS)
@pytest.mark.parametrize("seed", range(3))
def test_perfect_prediction_in_any_order_has_zero_loss(matching, seed):
    m, n = 4, 6
    masks = disjoint_masks(m)
    target = torch.zeros((2, 5, 16, 16), dtype=torch.bool)  # one padding mask
    target[:, :m] = masks
    pred = torch.zeros((2, n, 16, 16))
    g = torch.Generator().manual_seed(seed)
    for k in range(2):
        slots = torch.randperm(n, generator=g)[:m]
        pred[k, slots] = masks.float()
    loss = matched_dice_loss(pred, target, matching=matching, empty_weight=1.0)
    assert_allclose(loss.item(), 0.0, atol=1e-7)
    # Masks taken in their stored order would not match: the zero is the matching's doing.
    assert dice_loss_matrix(pred, target)[:, torch.arange(m), torch.arange(m)].mean() > 0.5


def test_greedy_is_order_dependent_and_hungarian_is_optimal():
    # Ground truth: GT0 = 10 px, GT1 = 2 px. p0 = GT0 + GT1 (12 px), p1 = 8 px of GT0.
    # Dice losses (eps = 1):  D[GT0, p0] = 1 - 21/23, D[GT0, p1] = 1 - 17/19,
    #                         D[GT1, p0] = 1 - 5/15,  D[GT1, p1] = 1 - 1/11.
    # Greedy (Algorithm 1) gives GT0 its best mask p0, which leaves GT1 with p1:
    # (2/23 + 10/11) / 2 = 0.498. The optimal matching is GT0-p1, GT1-p0:
    # (2/19 + 10/15) / 2 = 0.386. Greedy with the ground truth in the other order finds it.
    target = torch.zeros((1, 2, 1, 16), dtype=torch.bool)
    target[0, 0, 0, :10] = True
    target[0, 1, 0, 10:12] = True
    # No third, empty mask: D[GT1, empty] = 2/3 < D[GT1, p1] and greedy would take it.
    pred = torch.zeros((1, 2, 1, 16))
    pred[0, 0, 0, :12] = 1
    pred[0, 1, 0, :8] = 1
    greedy_expected = (2 / 23 + 10 / 11) / 2
    optimal = (2 / 19 + 10 / 15) / 2
    for fn in (matched_dice_loss, reference_matched_dice_loss):
        assert_allclose(fn(pred, target, matching="greedy").item(), greedy_expected, rtol=RTOL)
        assert_allclose(fn(pred, target, matching="hungarian").item(), optimal, rtol=RTOL)
        assert_allclose(fn(pred, target.flip(1), matching="greedy").item(), optimal, rtol=RTOL)


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_never_above_greedy(seed):
    pred, target, count = random_batch(seed, n=6, m=6, counts=(6, 4, 1, 0))
    greedy = matched_dice_loss(pred, target, count, matching="greedy")
    hungarian = matched_dice_loss(pred, target, count, matching="hungarian")
    assert hungarian.item() <= greedy.item() + 1e-12


def test_hand_computed_single_pair():
    target = torch.zeros((1, 1, 2, 2))
    target[0, 0, 0] = 1  # 2 px
    pred = torch.full((1, 1, 2, 2), 0.5)  # sum 2, intersection 1
    expected = 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert_allclose(matched_dice_loss(pred, target).item(), expected, rtol=RTOL)


@pytest.mark.parametrize("matching", MATCHINGS)
def test_gradients_finite_and_nonzero_for_matched_masks(matching):
    pred, target, count = random_batch(11, counts=(0, 2, 5, 3))
    p = pred.clone().requires_grad_(True)
    matched_dice_loss(p, target, count, matching=matching).backward()
    assert torch.isfinite(p.grad).all()
    # Images 1-3 have dislocations: the matched masks get gradient, the unmatched none
    # (empty_weight = 0), and image 0 (no dislocation) none.
    per_mask = p.grad.abs().flatten(2).sum(dim=2)
    assert (per_mask[0] == 0).all()
    for k, c in enumerate((0, 2, 5, 3)):
        assert int((per_mask[k] > 0).sum()) == c


def test_empty_images_finite_with_gradient_from_empty_term():
    pred = torch.rand((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    target = torch.zeros((2, 3, 8, 8), dtype=torch.bool)
    for w, expected in ((0.0, 0.0), (0.5, 0.5 * pred.mean().item())):
        p = pred.clone().requires_grad_(True)
        loss = matched_dice_loss(p, target, empty_weight=w)
        loss.backward()
        assert_allclose(loss.item(), expected, rtol=RTOL)
        assert torch.isfinite(p.grad).all()
        assert (p.grad.abs().sum() > 0) == (w > 0)
    # M = 0 (no target masks at all) is allowed too.
    assert matched_dice_loss(pred, torch.zeros((2, 0, 8, 8))).item() == 0.0


def test_empty_weight_pushes_only_unmatched_masks():
    masks = disjoint_masks(2)
    target = masks[None]
    pred = torch.zeros((1, 4, 16, 16))
    pred[0, :2] = masks.float()
    pred[0, 3] = 0.25  # a spurious unmatched mask
    loss = matched_dice_loss(pred, target, empty_weight=2.0)
    assert_allclose(loss.item(), 2.0 * (0 + 0.25) / 2, rtol=RTOL)


def test_target_count_ignores_padding_content():
    pred, target, _ = random_batch(5, counts=(3, 3, 3, 3))
    cut = torch.tensor([2, 3, 1, 0])
    trimmed = target.clone()
    for k, c in enumerate(cut.tolist()):
        trimmed[k, c:] = False
    assert_allclose(
        matched_dice_loss(pred, target, cut).item(), matched_dice_loss(pred, trimmed).item(), rtol=RTOL
    )


@pytest.mark.parametrize("fn", [matched_dice_loss, reference_matched_dice_loss])
def test_input_not_modified(fn):
    pred, target, count = random_batch(2)
    copies = pred.clone(), target.clone(), count.clone()
    p = pred.requires_grad_(True)
    fn(p, target, count, matching="greedy", empty_weight=0.5).backward()
    fn(p, target, count, matching="hungarian").backward()
    assert torch.equal(pred.detach(), copies[0])
    assert torch.equal(target, copies[1]) and torch.equal(count, copies[2])


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((torch.rand(2, 3, 4), torch.zeros(2, 1, 4, 4)), {}, "pred"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 4)), {}, "target"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 5, 4)), {}, "target"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(3, 1, 4, 4)), {}, "target"),
        ((torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.zeros(2, 1, 4, 4)), {}, "pred"),
        ((torch.rand(2, 3, 4, 4) * 3, torch.zeros(2, 1, 4, 4)), {}, "pred"),
        ((torch.rand(2, 3, 4, 4), torch.full((2, 1, 4, 4), 0.5)), {}, "target"),
        ((torch.rand(2, 3, 4, 4), torch.ones(2, 4, 4, 4)), {}, "N = 3"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 2, 4, 4), torch.tensor([1, 3])), {}, "target_count"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 2, 4, 4), torch.tensor([1.0, 1.0])), {}, "target_count"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 2, 4, 4), torch.tensor([1])), {}, "target_count"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 4, 4)), {"matching": "optimal"}, "matching"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 4, 4)), {"empty_weight": -1.0}, "empty_weight"),
        ((torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 4, 4)), {"eps": 0.0}, "eps"),
        ((torch.rand(0, 3, 4, 4), torch.zeros(0, 1, 4, 4)), {}, "B >= 1"),
    ],
)
@pytest.mark.parametrize("fn", [matched_dice_loss, reference_matched_dice_loss])
def test_bad_inputs_raise_value_error_naming_the_argument(fn, args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fn(*args, **kwargs)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        matched_dice_loss(torch.rand(1, 2, 4, 4), torch.zeros(1, 1, 4, 4), None, "hungarian")


def test_half_precision_is_computed_in_float32():
    pred = torch.full((1, 1, 256, 256), 1.0, dtype=torch.float16)
    target = torch.ones((1, 1, 256, 256), dtype=torch.bool)  # sums of 65536 overflow float16
    loss = matched_dice_loss(pred, target)
    assert loss.dtype == torch.float32
    assert_allclose(loss.item(), 0.0, atol=1e-6)


@pytest.mark.parametrize("matching", MATCHINGS)
def test_per_image_empty_weight(matching):
    """A (B,) weight equals computing each image alone with its own float weight."""
    pred, target, count = random_batch(7)
    weights = torch.tensor([0.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    expected = torch.stack(
        [
            matched_dice_loss(pred[k : k + 1], target[k : k + 1], count[k : k + 1], matching=matching,
                              empty_weight=float(weights[k]))
            for k in range(len(weights))
        ]
    ).mean()
    for fn in (matched_dice_loss, reference_matched_dice_loss):
        got = fn(pred, target, count, matching=matching, empty_weight=weights)
        assert_allclose(float(got), float(expected), rtol=RTOL)
    # a zero weight per image really drops the term: differs from a uniform weight
    uniform = matched_dice_loss(pred, target, count, matching=matching, empty_weight=0.5)
    assert abs(float(uniform) - float(expected)) > 1e-3


def test_per_image_empty_weight_checked():
    pred, target, count = random_batch(8)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        matched_dice_loss(pred, target, count, empty_weight=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        matched_dice_loss(pred, target, count, empty_weight=torch.tensor([0.0, -1.0, 0.0, 0.0]))
