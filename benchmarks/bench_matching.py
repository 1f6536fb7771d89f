"""Greedy (Algorithm 1) against optimal (Hungarian) matching on a trained model's output.

Why the default is greedy, in numbers: on batches of the training stream, how often the
two matchings differ per image, by how much the loss differs, and what each costs (the
Hungarian one runs ``linear_sum_assignment`` on the CPU for every image).

    python benchmarks/bench_matching.py runs/cpu/best.pt --batches 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from temtrack.training.checkpoint import load_model
from temtrack.training.config import validate_train_config
from temtrack.training.losses import matched_dice_loss
from temtrack.training.train import training_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    model, _, state = load_model(args.checkpoint)
    config = validate_train_config(state["config"])
    stream = iter(training_stream(config, [], start=10_000_000))  # items no training run reached
    per_image = {"greedy": [], "hungarian": []}
    seconds = {"greedy": 0.0, "hungarian": 0.0}
    for _ in range(args.batches):
        items = [next(stream) for _ in range(args.batch_size)]
        x = torch.stack([i["image"] for i in items])
        target = torch.stack([i["masks"] for i in items])
        count = torch.stack([i["count"] for i in items])
        with torch.no_grad():
            probabilities = torch.sigmoid(model(x))
        for matching in per_image:
            tic = time.perf_counter()
            matched_dice_loss(probabilities, target, count, matching=matching)
            seconds[matching] += time.perf_counter() - tic
            per_image[matching] += [
                float(matched_dice_loss(probabilities[k : k + 1], target[k : k + 1], count[k : k + 1], matching=matching))
                for k in range(len(items))
            ]
    greedy, hungarian = np.array(per_image["greedy"]), np.array(per_image["hungarian"])
    gap = greedy - hungarian
    n = len(greedy)
    print(f"{n} images from the training stream of {args.checkpoint} (step {state['step']})")
    print(f"mean loss           greedy {greedy.mean():.4f}   hungarian {hungarian.mean():.4f}")
    print(f"images that differ  {np.mean(gap > 1e-4):.1%} (gap > 1e-4); largest gap {gap.max():.4f}; mean gap {gap.mean():.5f}")
    print(
        f"time per batch      greedy {1e3 * seconds['greedy'] / args.batches:.1f} ms   "
        f"hungarian {1e3 * seconds['hungarian'] / args.batches:.1f} ms   "
        f"ratio {seconds['hungarian'] / seconds['greedy']:.2f}x"
    )


if __name__ == "__main__":
    main()
