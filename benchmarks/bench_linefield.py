"""Line-field family: post-processing time per frame and training data rate, each
against the multi-label baseline measured side by side in this process.

    python benchmarks/bench_linefield.py [--frames 12] [--real 12] [--items 24] [--size 512] [--ceiling 20]

1. **Post-processing** of one 512 x 512 frame on one core: line tracing
   (:func:`temtrack.sdk.linefield.extract_lines`) of perfect fields (the generator's
   targets) against mask post-processing
   (:func:`temtrack.sdk.postprocess.extract_dislocations`) of the same frame's true
   masks, SD2- and SD3-like frames with about 15 dislocations. Issue 16's budget: at
   most 10 ms per frame per core. And (``--real N``, the first N labelled TWIP frames of
   ``../shared/data/real/``; skipped with the reason when absent) the tracing of the
   bundled model's fields on real frames, 700 x 362 px with about 180 lines each,
   computed once before the timing.
2. **Training data rate** per core at ``--size`` px with augmentation: the line-field
   stream (:class:`temtrack.training.linefield.LineFieldDataset`: render, dihedral
   moves, targets, photometric augmentation) against the multi-label stream
   (``SyntheticDataset`` + ``AugmentedDataset``, N = 20 float masks). Issue 16's target:
   at least 40 items/s per core. Also the generator alone (render only), the floor both
   streams share.

3. **Ceiling and ablation** (``--ceiling N``, N images per preset, seeds 5000...): the
   thesis' metric when the network is perfect, for the routes from a semantic prediction
   to instances: the union of the true masks as one mask through
   ``extract_dislocations`` (issue 16's baseline); perfect line fields traced by
   ``extract_lines`` reading the direction channels (``direction_sigma=0``); the same
   with the direction from the centre map's Hessian (the default since stop 31: what a
   centre-only model would give); and without joining segment ends
   (``link_distance=0``: no pairing at crossings or gaps).

4. **A trained model** (``--model MODEL.onnx --validation N``): its thesis length
   score, precision and predictions per frame on N validation images per preset (the
   training validation seeds, never the held-out sets or real frames), for several
   tracing thresholds, and the ablations of 3. on its own predictions (direction from
   its direction channels; no joins). How the tracing defaults were chosen.

Prints a table with ratios; timings are the median of the items or frames, in one
process (one core).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _median_ms(function, items) -> float:
    times = []
    for item in items:
        tic = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def postprocess_rows(frames: int, real: int = 0) -> list[tuple]:
    from temtrack.sdk.linefield import LineFieldSettings, extract_lines
    from temtrack.sdk.postprocess import extract_dislocations
    from temtrack.training.synth import generate_sample
    from temtrack.training.synth.targets import line_targets

    cases, seed = [], 7000
    while len(cases) < frames:
        sample = generate_sample("sd3" if len(cases) % 2 else "sd2", seed=seed)
        seed += 1
        if not 10 <= len(sample.centrelines) <= 20:
            continue
        t = line_targets(sample.centrelines, sample.image.shape)
        cases.append((np.concatenate([t.centre[None], t.direction]), sample.masks))
    extract_lines(cases[0][0]), extract_dislocations(cases[0][1])  # imports out of the timing
    channels = LineFieldSettings(direction_sigma=0)
    lines = _median_ms(lambda c: extract_lines(c[0]), cases)
    read = _median_ms(lambda c: extract_lines(c[0], settings=channels), cases)
    masks = _median_ms(lambda c: extract_dislocations(c[1]), cases)
    count = statistics.mean(len(extract_lines(c[0]).dislocations) for c in cases)
    rows = [
        ("post-process, mask baseline (ms/frame)", masks, 1.0),
        (f"post-process, line fields (ms/frame, {count:.0f} lines)", lines, masks / lines),
        ("  the same, direction from the channels, not the Hessian", read, masks / read),
    ]
    if real > 0:
        rows += real_rows(real, masks)
    return rows


def real_rows(frames: int, baseline: float) -> list[tuple]:
    """The tracing of the bundled model's fields on the first ``frames`` labelled TWIP frames."""
    import sys
    from pathlib import Path

    from temtrack.sdk.backends import get_backend
    from temtrack.sdk.groundtruth import iter_ground_truth
    from temtrack.sdk.linefield import extract_lines
    from temtrack.sdk.models import resolve_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_tracing_real import LABELLED as folder

    if not folder.is_dir():
        print(f"real frames: skipped, {folder} is absent")
        return []
    backend = get_backend(str(resolve_model("default")))
    fields = []
    for truth in iter_ground_truth(folder):
        if len(fields) == frames:
            break
        fields.append(np.asarray(backend.predict(truth.image[None])[0], np.float32))
    timed = _median_ms(extract_lines, fields)
    count = statistics.mean(len(extract_lines(f).dislocations) for f in fields)
    return [(f"  real TWIP frames, bundled model (ms/frame, {count:.0f} lines)", timed, baseline / timed)]


def stream_rows(items: int, size: int) -> list[tuple]:
    import torch

    from temtrack.training.augment import AugmentedDataset
    from temtrack.training.datasets import SyntheticDataset
    from temtrack.training.linefield import LineFieldDataset
    from temtrack.training.synth import generate_sample

    torch.set_num_threads(1)
    indices = list(range(items))
    presets = ("sd1", "sd2", "sd3")
    render = _median_ms(lambda i: generate_sample(presets[i % 3], seed=i, size=size), indices)
    multilabel = [AugmentedDataset(SyntheticDataset(p, size=size, max_masks=20), seed=1) for p in presets]
    baseline = _median_ms(lambda i: multilabel[i % 3].transform(multilabel[i % 3].dataset.item(i)), indices)
    linefield = [LineFieldDataset(p, size=size) for p in presets]
    lines = _median_ms(lambda i: linefield[i % 3].item(i), indices)
    return [
        (f"data, multi-label stream ({size} px, items/s/core)", 1000 / baseline, 1.0),
        (f"data, line-field stream ({size} px, items/s/core)", 1000 / lines, baseline / lines),
        (f"data, generator alone ({size} px, items/s/core)", 1000 / render, baseline / render),
    ]


def ceiling_rows(n: int) -> list[tuple]:
    from temtrack.sdk.linefield import LineFieldSettings, extract_lines, instance_masks
    from temtrack.sdk.metrics import score_image, summarize
    from temtrack.sdk.postprocess import extract_dislocations
    from temtrack.training.synth import generate_sample
    from temtrack.training.synth.targets import line_targets

    channels = LineFieldSettings(direction_sigma=0)  # the direction channels, not the Hessian
    no_joins = LineFieldSettings(direction_sigma=0, link_distance=0)
    rows = []
    for preset in ("sd1", "sd2", "sd3"):
        scores: dict[str, list] = {"union": [], "fields": [], "hessian": [], "no_joins": []}
        for seed in range(5000, 5000 + n):
            sample = generate_sample(preset, seed=seed)
            t = line_targets(sample.centrelines, sample.image.shape)
            fields = np.concatenate([t.centre[None], t.direction])
            union = extract_dislocations(sample.masks.max(axis=0, keepdims=True))
            for name, frame in (
                ("union", union),
                ("fields", extract_lines(fields, settings=channels)),
                ("hessian", extract_lines(fields)),
                ("no_joins", extract_lines(fields, settings=no_joins)),
            ):
                scores[name].append(score_image(instance_masks(frame), sample.masks))
        means = {name: summarize(s)["length_score_mean"] for name, s in scores.items()}
        base = max(means["union"], 1e-9)
        rows.append((f"ceiling {preset}, union of masks (length score)", means["union"], 1.0))
        rows.append((f"ceiling {preset}, perfect line fields, direction channels", means["fields"], means["fields"] / base))
        rows.append((f"ceiling {preset}, centre only (Hessian direction, default)", means["hessian"], means["hessian"] / base))
        rows.append((f"ceiling {preset}, line fields without joins", means["no_joins"], means["no_joins"] / base))
    return rows


THRESHOLDS = ((0.5, 0.25, 10.0), (0.5, 0.25, 30.0), (0.7, 0.35, 20.0), (0.7, 0.35, 30.0), (0.8, 0.5, 30.0))


def model_rows(model: str, n: int) -> list[tuple]:
    from temtrack.sdk.backends.onnx import OnnxBackend
    from temtrack.sdk.linefield import LineFieldSettings, extract_lines, instance_masks
    from temtrack.sdk.metrics import score_image, summarize
    from temtrack.training.synth import generate_sample
    from temtrack.training.synth.storage import sample_seed

    backend = OnnxBackend(model)
    items = []
    for k, preset in enumerate(("sd1", "sd2", "sd3")):
        for i in range(n):
            sample = generate_sample(preset, seed=sample_seed(1_000_003 + 104729 * k, i))
            items.append((preset, backend.predict(sample.image[None])[0], sample.masks))
    variants = [(f"high {h} low {lo} min_length {m:g}", LineFieldSettings(high=h, low=lo, min_length=m))
                for h, lo, m in THRESHOLDS]
    variants += [("defaults, direction from the channels", LineFieldSettings(direction_sigma=0)),
                 ("defaults, no joins", LineFieldSettings(link_distance=0))]
    rows, baseline = [], {}
    for name, settings in variants:  # ratios against the first variant
        per: dict[str, list] = {}
        for preset, fields, masks in items:
            per.setdefault(preset, []).append(score_image(instance_masks(extract_lines(fields, settings=settings)), masks))
        for preset, scores in per.items():
            summary = summarize(scores)
            for label, value in (("length score", summary["length_score_mean"]),
                                 ("precision", summary["dislocation_precision_pooled"]),
                                 ("predicted per image", summary["n_pred"] / len(scores))):
                base = baseline.setdefault((preset, label), value)
                rows.append((f"model {preset}, {name}: {label}", value, value / max(base, 1e-9)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12, help="frames for the post-processing timing (default 12; 0 skips it)")
    parser.add_argument("--items", type=int, default=24, help="items for the data-rate timing (default 24; 0 skips it)")
    parser.add_argument("--real", type=int, default=12, help="labelled TWIP frames for the real-frame tracing timing (default 12; 0 skips it)")
    parser.add_argument("--size", type=int, default=512, help="training image size (default 512)")
    parser.add_argument("--ceiling", type=int, default=0, help="images per preset for the ceiling (default 0: skip)")
    parser.add_argument("--model", help="a line-field ONNX model to score on validation images")
    parser.add_argument("--validation", type=int, default=8, help="validation images per preset for --model (default 8)")
    parser.add_argument("--only-model", action="store_true", help="with --model: skip the other measurements")
    args = parser.parse_args(argv)
    rows = []
    if not args.only_model:  # 0 frames or items skips that part
        rows += postprocess_rows(args.frames, args.real) if args.frames > 0 else []
        rows += stream_rows(args.items, args.size) if args.items > 0 else []
    if args.ceiling and not args.only_model:
        rows += ceiling_rows(args.ceiling)
    if args.model:
        rows += model_rows(args.model, args.validation)
    if not rows:
        print("nothing to measure (--frames 0 and --items 0)")
        return 0
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':{width}}  {'value':>8}  {'vs baseline':>11}")
    for name, value, ratio in rows:
        print(f"{name:{width}}  {value:8.3g}  {ratio:10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
