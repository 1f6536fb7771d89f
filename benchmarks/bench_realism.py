"""Realism of the generator presets: distances of their images to real TEM frames.

    python benchmarks/bench_realism.py [--presets sd1 sd3_real ...] [--n 48] [--size 512]
        [--repeats 1] [--real ../shared/data/real] [--frames MY_FRAMES ...] [--backgrounds patches]
        [--json OUT]

For each preset (all built-in presets by default; a JSON config file is accepted too)
it renders ``--n`` images and computes the statistics of
:mod:`temtrack.training.synth.realism` (power spectrum, gray levels, local contrast,
noise, vignetting, cross-line depth and width of the dislocations). The real sets are
read from ``--real``: the TWIP labelled frames with their line labels, the four
dislocation samples, and ``--fecral-frames`` frames sampled evenly from the FeCrAl
video; a set that is absent is skipped with the reason. ``--frames`` adds your own frames (a
folder of images or a video), to check a preset against your microscope. It prints one table of
distances per real set and one against all real frames pooled (rows: presets,
columns: statistics; 0 = alike), and for every preset ``X_real`` whose thesis preset
``X`` was run too, the ratio of its distance to ``X``'s (the issue's target: <= 0.5).
``--repeats R`` renders R independent sets per preset and adds the mean and range of
the pooled distances and ratios over them, and the noise floor: the distance between a
preset's own repeats, below which two sets cannot be told apart with ``--n`` images.
Presets whose background uses real patches are skipped without ``--backgrounds``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from temtrack.training.synth import (
    get_preset,
    load_config,
    preset_names,
    render_scene,
    sample_scene,
)
from temtrack.training.synth.realism import (
    STATISTICS,
    RealismStats,
    image_statistics,
    load_image_folder,
    load_labelled_folder,
    load_video_frames,
    pool_statistics,
    realism_distances,
)

SHORT = {
    "spectrum": "spectrum",
    "intensity": "gray",
    "local_contrast": "contrast",
    "noise": "noise",
    "vignetting": "vignet",
    "line_depth": "depth",
    "line_fwhm": "fwhm",
}


def real_sets(root: Path, *, fecral_frames: int) -> dict[str, RealismStats]:
    """Statistics of each real set under ``root`` that is present (absent ones are reported)."""
    sets: dict[str, RealismStats] = {}
    loaders = {
        "twip": (root / "twip-8.4um" / "labeled", _labelled),
        "samples": (root / "dislocation-samples", lambda p: image_statistics(load_image_folder(p))),
        "fecral": (
            root / "fecral-loops" / "video.mp4",
            lambda p: image_statistics(load_video_frames(p, count=fecral_frames)),
        ),
    }
    for name, (path, load) in loaders.items():
        if not path.exists():
            print(f"skipping real set {name}: {path} not found", file=sys.stderr)
            continue
        start = time.perf_counter()
        sets[name] = load(path)
        print(f"real set {name}: {sets[name].n_images} images ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return sets


def _labelled(path) -> RealismStats:
    images, lines = load_labelled_folder(path)
    return image_statistics(images, lines=lines)


def synthetic_set(config, *, n: int, seed: int, backgrounds) -> RealismStats:
    """Statistics of ``n`` images of ``config`` (seeds ``seed`` .. ``seed + n - 1``)."""
    images, lines = [], []
    for k in range(n):
        sample = render_scene(sample_scene(config, seed + k, backgrounds=backgrounds), backgrounds=backgrounds)
        images.append(sample.image)
        lines.append(sample.centrelines)
    return image_statistics(images, lines=lines)


def _load_preset(name: str, size: int):
    config = load_config(name) if name.endswith(".json") else get_preset(name)
    label = Path(name).stem if name.endswith(".json") else name
    return label, config.with_size(size)


def _table(title: str, rows: dict[str, dict[str, float]], *, fmt: str = "{:8.3f}") -> str:
    lines = [title, f"{'preset':<16}" + "".join(f"{SHORT[s]:>9}" for s in STATISTICS)]
    for name, values in rows.items():
        cells = "".join(" " + (fmt.format(values[s]) if math.isfinite(values[s]) else f"{'-':>8}") for s in STATISTICS)
        lines.append(f"{name:<16}{cells}")
    return "\n".join(lines)


def ratios(distances: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``distance(X_real) / distance(X)`` per statistic for every pair that was run."""
    out = {}
    for name, values in distances.items():
        base = name[: -len("_real")] if name.endswith("_real") else None
        if base in distances:
            out[name] = {
                s: (values[s] / distances[base][s] if distances[base][s] > 0 else float("nan")) for s in STATISTICS
            }
    return out


def _spread(repeats: dict[str, list[RealismStats]], pooled: RealismStats) -> dict[str, dict[str, list[str]]]:
    """Mean and range, over the repeats, of each preset's distance to the pooled real
    frames, and of each ``X_real``'s ratio to ``X`` (repeat r against repeat r)."""
    per = {name: [realism_distances(stats, pooled) for stats in sets] for name, sets in repeats.items()}

    def cell(values) -> str:
        values = [v for v in values if math.isfinite(v)]
        return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})" if values else "-"

    distances = {name: [cell([d[s] for d in runs]) for s in STATISTICS] for name, runs in per.items()}
    n = len(next(iter(repeats.values())))
    by_repeat = [ratios({name: runs[r] for name, runs in per.items()}) for r in range(n)]
    ratios_ = {name: [cell([rows[name][s] for rows in by_repeat]) for s in STATISTICS] for name in by_repeat[0]}
    # The noise floor: one preset's repeats against each other (no real frame involved).
    floor = {
        name: [cell([realism_distances(a, b)[s] for a, b in zip(sets[:-1], sets[1:])]) for s in STATISTICS]
        for name, sets in repeats.items()
    }
    return {
        f"distance to real set 'pooled', mean (range) over {n} repeats": distances,
        f"ratio new / thesis preset, pooled, mean (range) over {n} repeats (target <= 0.5)": ratios_,
        "noise floor: distance between a preset's own repeats, mean (range)": floor,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=None, help="preset names or JSON configs (default: all built-in)")
    parser.add_argument("--n", type=int, default=48, help="images per preset")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=Path("../shared/data/real"))
    parser.add_argument("--fecral-frames", type=int, default=30)
    parser.add_argument("--backgrounds", type=Path, default=None, help="real patch folder, for presets that use patches")
    parser.add_argument("--repeats", type=int, default=1,
                        help="independent sets of --n images per preset (seeds follow on); with 2 or more, "
                        "also the spread of the pooled distances and ratios over them")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--frames", type=Path, action="append", default=[], metavar="DIR_OR_VIDEO",
                        help="your own real frames (a folder of images of one bit depth, or a video); "
                        "repeatable; compared beside the shared sets")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print(f"error: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
        return 2

    real = real_sets(args.real, fecral_frames=args.fecral_frames)
    for path in args.frames:
        # A user's folder with no image or with mixed bit depths is an error naming it.
        try:
            frames = load_video_frames(path, count=args.fecral_frames) if path.is_file() else load_image_folder(path)
        except (ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        real[path.stem or str(path)] = image_statistics(frames)
    if not real:
        print(f"no real set found under {args.real}: nothing to compare with", file=sys.stderr)
        return 1
    real["pooled"] = pool_statistics(list(real.values()))

    synthetic: dict[str, RealismStats] = {}
    repeats: dict[str, list[RealismStats]] = {}
    for name in args.presets or preset_names():
        label, config = _load_preset(name, args.size)
        if config.background.mode != "perlin" and args.backgrounds is None:
            print(f"skipping preset {label}: its backgrounds use real patches, give --backgrounds DIR", file=sys.stderr)
            continue
        start = time.perf_counter()
        repeats[label] = [
            synthetic_set(config, n=args.n, seed=args.seed + r * args.n, backgrounds=args.backgrounds)
            for r in range(args.repeats)
        ]
        synthetic[label] = repeats[label][0]
        print(f"preset {label}: {args.repeats} x {args.n} images ({time.perf_counter() - start:.1f} s)", file=sys.stderr)

    distances = {
        block: {name: realism_distances(stats, reference) for name, stats in synthetic.items()}
        for block, reference in real.items()
    }
    for block, rows in distances.items():
        print(_table(f"\ndistance to real set {block!r} ({real[block].n_images} images; 0 = alike)", rows))
    ratio = {block: ratios(rows) for block, rows in distances.items()}
    for block, rows in ratio.items():
        if rows:
            print(_table(f"\nratio new / thesis preset, real set {block!r} (target <= 0.5)", rows, fmt="{:8.2f}"))
    spread = _spread(repeats, real["pooled"]) if args.repeats > 1 else {}
    for title, rows in spread.items():
        print(f"\n{title}")
        print(f"{'preset':<16}" + "".join(f"{SHORT[s]:>21}" for s in STATISTICS))
        for name, cells in rows.items():
            print(f"{name:<16}" + "".join(f"{cell:>21}" for cell in cells))
    summary = {**{f"real:{k}": v.summary() for k, v in real.items()}, **{k: v.summary() for k, v in synthetic.items()}}
    keys = list(next(iter(summary.values())))
    print("\ntypical values (medians; vignetting: edge ring / centre)")
    print(f"{'set':<16}" + "".join(f"{k[:14]:>15}" for k in keys))
    for name, values in summary.items():
        print(f"{name:<16}" + "".join(f"{values[k]:15.4f}" for k in keys))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"settings": {k: str(v) for k, v in vars(args).items()}, "distances": distances, "ratios": ratio,
                 "spread": spread, "summary": summary},
                indent=1,
                allow_nan=True,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
