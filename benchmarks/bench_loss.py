"""Matched Dice loss speed: vectorised vs loop-by-loop Algorithm 1, forward + backward on CPU.

    python benchmarks/bench_loss.py [--size 256] [--large] [--repeats 3] [--threads 1]

A batch of 16 images with N = 20 predicted masks and 0 to 20 dislocations per image
(M = 20 target masks, zero-padded): thin random line segments as ground truth, the
prediction a noisy copy of them in shuffled mask slots plus low-level noise in the spare
slots. Times ``matched_dice_loss`` and ``reference_matched_dice_loss`` (forward and
backward) in the same process, for greedy and hungarian matching, and prints the median
times and the ratio against the 10x target. ``--large`` adds 512x512. Also prints the
two matchings' losses on the batch (how much lower the optimal matching is).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from temtrack.training.losses import matched_dice_loss, reference_matched_dice_loss

TARGET_SPEEDUP = 10.0


def make_batch(size: int, *, batch: int = 16, n: int = 20, seed: int = 0):
    """pred (B, N, size, size) float32 in [0, 1], target (B, N, size, size) bool, count (B,) int64."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(0, n + 1, (batch,), generator=g)
    count[0], count[1] = 0, n  # always one empty and one full image
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    target = torch.zeros((batch, n, size, size), dtype=torch.bool)
    pred = 0.15 * torch.rand((batch, n, size, size), generator=g)
    for k in range(batch):
        slots = torch.randperm(n, generator=g)
        for i in range(int(count[k])):
            x0, y0 = (torch.rand(2, generator=g) * size).tolist()
            angle = float(torch.rand((), generator=g)) * 3.1416
            length = size * (0.2 + 0.5 * float(torch.rand((), generator=g)))
            dx, dy = torch.cos(torch.tensor(angle)).item(), torch.sin(torch.tensor(angle)).item()
            along = (xx - x0) * dx + (yy - y0) * dy
            across = (-(xx - x0) * dy + (yy - y0) * dx).abs()
            mask = (across < 2.0) & (along.abs() < length / 2)
            target[k, i] = mask
            noisy = 0.8 * mask.float() + 0.2 * torch.rand((size, size), generator=g)
            pred[k, slots[i]] = torch.maximum(pred[k, slots[i]], noisy)
    return pred.clamp(0, 1), target, count


def time_loss(fn, pred, target, count, matching, repeats):
    times, value = [], None
    for _ in range(repeats):
        p = pred.clone().requires_grad_(True)
        start = time.perf_counter()
        loss = fn(p, target, count, matching=matching)
        loss.backward()
        times.append(time.perf_counter() - start)
        value = loss.item()
    return statistics.median(times), value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--large", action="store_true", help="also run 512x512")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the vectorised loss (median)")
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sizes = [args.size] + ([512] if args.large and args.size != 512 else [])
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 16, N = M = 20, forward + backward")
    for size in sizes:
        pred, target, count = make_batch(size)
        print(f"\n{size}x{size}, dislocations per image: {count.tolist()}")
        losses = {}
        for matching in ("greedy", "hungarian"):
            fast, value = time_loss(matched_dice_loss, pred, target, count, matching, args.repeats)
            slow, ref_value = time_loss(reference_matched_dice_loss, pred, target, count, matching, args.reference_repeats)
            losses[matching] = value
            ratio = slow / fast
            verdict = "ok" if ratio >= TARGET_SPEEDUP else "BELOW TARGET"
            print(
                f"  {matching:9s} vectorised {fast * 1e3:8.1f} ms   reference {slow * 1e3:9.1f} ms   "
                f"ratio {ratio:6.1f}x (target >= {TARGET_SPEEDUP:.0f}x: {verdict})   "
                f"loss {value:.6f} vs {ref_value:.6f}"
            )
        gap = losses["greedy"] - losses["hungarian"]
        print(f"  greedy - hungarian loss on this batch: {gap:.2e} ({gap / losses['hungarian']:.2%} of hungarian)")


if __name__ == "__main__":
    main()
