"""Uneven illumination and ``--flatten``: what vignetting costs the bundled model, and
what evening out the illumination before the model wins back or costs.

Every row is ``tem-track eval``'s scoring (:func:`temtrack.sdk.evaluate.evaluate`), with
the illumination as it is (``flatten=None``) and evened out (``flatten="auto"``, the
default, :data:`temtrack.sdk.illumination.DEFAULT_SIGMA` px), side by side:

1. **The labelled TWIP frames** as recorded, and under a strong vignetting (the far
   corner at 0.27 of the brightest point, as dark as the dislocation samples' corners;
   centred, and off centre as a converged beam lights a frame): thesis length score,
   spline recall, length score of the found lines and lines per frame, and which
   labelled lines the switch gains and loses (with McNemar's exact p-value: is the
   difference more than the tracing's line-by-line noise?).
2. **Generator images** of the presets the bundled model was trained on (thesis length
   score): the switch must not cost anything where the illumination is even.
3. **Lines per frame** on the four dislocation samples and on the FeCrAl video (a video
   of loops: fewer lines are better).

    python benchmarks/bench_illumination.py                  # about 12 min on 2 cores
    python benchmarks/bench_illumination.py --images 0 --fecral-every 0   # TWIP only

Needs the real data (``../shared/data/real``; parts skipped with a reason when absent),
the runtime (onnxruntime) and, for the generator rows and the vignetting, the training
extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
LABELLED = REAL / "twip-8.4um" / "labeled"
#: The vignettings: (name, centre as fractions (y, x) of the frame, fall-off to the far corner).
LIGHTING = (("as recorded", None, 0.0), ("vignetted, centred", (0.5, 0.5), 0.73), ("vignetted, off centre", (0.35, 0.3), 0.73))
MODES = ((None, "as it is"), ("auto", "evened out"))


def _model():
    from temtrack.sdk.backends import get_backend
    from temtrack.sdk.models import resolve_model

    return get_backend(str(resolve_model("default")))


def _lit_folder(target: Path, centre, strength: float) -> Path:
    """The labelled TWIP frames under a vignetting, as a line-label folder in ``target``."""
    import cv2

    from temtrack.sdk.groundtruth import line_label_files
    from temtrack.training.augment import _vignette

    target.mkdir(parents=True)
    for image_path, label_path in line_label_files(LABELLED):
        image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        lit = image * _vignette(image.shape, np.array(centre), strength)
        cv2.imwrite(str(target / image_path.name), np.round(np.clip(lit, 0, 1) * 255).astype(np.uint8))
        (target / label_path.name).write_bytes(label_path.read_bytes())
    return target


def _found_flags(report) -> np.ndarray:
    """One flag per labelled line of every image: found or not."""
    flags = []
    for image in report.images:
        found = np.zeros(image.score.splines.n_true, bool)
        found[[label for label, _ in image.score.splines.pairs]] = True
        flags.append(found)
    return np.concatenate(flags) if flags else np.zeros(0, bool)


def _row(report) -> str:
    s = report.summary
    return (f"{s['length_score_mean']:.3f} / {s['spline_recall']:.3f} / {s['matched_length_score']:.3f} / "
            f"{s['pred_per_frame']:.1f}")


def twip_rows(model) -> list[str]:
    from scipy.stats import binomtest

    from temtrack.sdk.evaluate import evaluate

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, centre, strength in LIGHTING:
            folder = LABELLED if centre is None else _lit_folder(Path(scratch) / name.replace(" ", "_"), centre, strength)
            reports = {mode: evaluate(folder, model, flatten=mode, progress=False) for mode, _ in MODES}
            off, on = (_found_flags(reports[mode]) for mode, _ in MODES)
            gained, lost = int((on & ~off).sum()), int((off & ~on).sum())
            p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
            rows.append(f"| {name} | {_row(reports[None])} | {_row(reports['auto'])} | +{gained} / -{lost} (p = {p:.3f}) |")
            print(f"TWIP {name} done", file=sys.stderr, flush=True)
    return rows


def generator_rows(model, presets: list[str], n: int) -> list[str]:
    from temtrack.sdk.evaluate import evaluate
    from temtrack.training.synth import resolve_config
    from temtrack.training.synth.storage import write_dataset

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for preset in presets:
            folder = write_dataset(Path(scratch) / preset, resolve_config(preset), n, seed=61_000, progress=False)
            scores = [evaluate(folder, model, flatten=mode, progress=False).summary for mode, _ in MODES]
            rows.append(f"| {preset} ({n}) | " + " | ".join(
                f"{s['length_score_mean']:.3f} / {s['spline_recall']:.3f} / {s['pred_per_frame']:.1f}" for s in scores) + " |")
            print(f"generator {preset} done", file=sys.stderr, flush=True)
    return rows


def count_rows(model, fecral_every: int) -> list[str]:
    from temtrack.sdk.illumination import DEFAULT_SIGMA, flatten
    from temtrack.sdk.linefield import extract_lines

    def counts(images):
        return [[len(extract_lines(model.predict((i if mode is None else flatten(i, sigma=DEFAULT_SIGMA))[None])[0]).dislocations)
                 for i in images] for mode, _ in MODES]

    rows = []
    samples = sorted((REAL / "dislocation-samples").glob("sample*.png"))
    if samples:
        import cv2

        off, on = counts([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255 for p in samples])
        rows.append(f"| dislocation samples 1-4 | {', '.join(map(str, off))} | {', '.join(map(str, on))} |")
    video = REAL / "fecral-loops" / "video.mp4"
    if fecral_every and video.exists():
        from temtrack.sdk.sources import open_source

        with open_source(video) as source:
            images = [frame.image for frame in source.frames(every=fecral_every)]
        off, on = counts(images)
        rows.append(f"| FeCrAl, every {fecral_every}th frame ({len(images)}) | {np.mean(off):.1f} | {np.mean(on):.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["sd1", "sd2", "sd3"])
    parser.add_argument("--images", type=int, default=40, help="generator images per preset (default 40; 0: none)")
    parser.add_argument("--fecral-every", type=int, default=24, help="FeCrAl frames (default every 24th; 0: none)")
    args = parser.parse_args(argv)
    tic = time.perf_counter()
    model = _model()
    if LABELLED.is_dir():
        print("TWIP, 59 labelled frames (thesis length score / spline recall / length score of the found lines / "
              "lines per frame)\n")
        print("| illumination | as it is | evened out | labelled lines gained / lost |\n|---|---|---|---|")
        print("\n".join(twip_rows(model)), flush=True)
    else:
        print(f"TWIP rows skipped: {LABELLED} is absent", file=sys.stderr)
    if args.images:
        print("\nGenerator images (thesis length score / spline recall / lines per image)\n")
        print("| preset | as it is | evened out |\n|---|---|---|")
        print("\n".join(generator_rows(model, args.presets, args.images)), flush=True)
    rows = count_rows(model, args.fecral_every)
    if rows:
        print("\nLines per frame\n\n| frames | as it is | evened out |\n|---|---|---|")
        print("\n".join(rows))
    print(f"\n{time.perf_counter() - tic:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
