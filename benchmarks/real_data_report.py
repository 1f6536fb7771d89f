"""Line-field models side by side on real data (issue 17's report), in one command.

    python benchmarks/real_data_report.py --out OUT --model NAME=MODEL [--model ...]
        [--heldout HELDOUT] [--limit 100] [--fecral-every 12] [--figures DIR]

For each model (an ``.onnx`` export or a ``.pt`` checkpoint; ``default`` is the bundled
model):

- **TWIP, held-out frames**: the labelled frames of ``twip-8.4um/labeled`` that a
  fine-tuning run holds out (:func:`temtrack.training.labelled.split_frames` with its
  defaults: the last 20 % by frame number, 12 frames), and all 59 frames (unseen by the
  synthetic-only models). Spline-level recall of the labelled lines and the length score
  over the matched ones; labels are partial, so no precision.
- **fecral video**: every ``--fecral-every``-th frame: splines per frame, and splines on
  the burnt-in annotations (scale bar, its label, the dose text, the mouse cursor): at
  least half of a spline's points on their saturated pixels (grown by 3 px) inside the
  boxes of ``ANNOTATIONS`` (see ``annotation_mask``). There should be none. The video shows loops, not lines.
- **synthetic held-out sets** (``--heldout`` with ``sd1``, ``sd2``, ``sd3`` from
  ``tem-track synth --preset sdN --n 200 --seed 900001``): the thesis length metric.
- **pictures** (``--figures``): each model's splines on the four dislocation samples
  and a fecral frame, one row per model.

Reports are kept in ``OUT`` and reused when the command runs again (delete one to redo
it). ``OUT/summary.json`` gathers the figures; a Markdown table is printed. Missing real
data is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_card import PICTURES as CARD_PICTURES  # noqa: E402
from model_card import PRESETS, _figures, _read_frame, _report, heldout_reports  # noqa: E402

from temtrack.sdk.backends import get_backend  # noqa: E402
from temtrack.sdk.models import resolve_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Burnt-in annotations of the fecral video, (x0, y0, x1, y1) in frame pixels (1120 x 710):
# the scale bar with its label (bottom left), the dose text (bottom right) and the mouse
# cursor (top left, still in the first frames).
ANNOTATIONS = {
    "scale bar and label": (0, 600, 265, 692),
    "dose text": (880, 640, 1120, 710),
    "cursor": (28, 88, 72, 134),
}
PICTURES = tuple(p for p in CARD_PICTURES if not p[0].startswith("twip"))


def twip_heldout_folder(labelled: Path, where: Path) -> Path:
    """A line-label folder with the TWIP frames a fine-tuning run holds out (symlinks)."""
    from temtrack.training.labelled import load_frames, split_frames

    if where.exists():
        return where
    split = split_frames(load_frames(labelled))
    where.mkdir(parents=True)
    for frame in split.val:
        for path in labelled.glob(f"{frame.image_id}*.png"):
            (where / path.name).symlink_to(path.resolve())
    return where


def annotation_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of the burnt-in annotations in one fecral frame: inside the ``ANNOTATIONS``
    boxes, the saturated white pixels (the scale bar, its label, the cursor) and, in the
    dose text's box, the saturated black and white ones (black text, the white recording
    window behind it in some frames), grown by 3 px. (H, W) bool.

    Black is not counted in the scale bar's box: from frame 984 on the bar sits lower and
    a dark specimen loop at about (39, 625) lies in its box, clipped to black.
    """
    import cv2

    mask = np.zeros(image.shape, np.uint8)
    for name, (x0, y0, x1, y1) in ANNOTATIONS.items():
        box = image[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] = (box >= 0.92) | ((box <= 0.08) & (name == "dose text"))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))).astype(bool)


def on_annotation(points: np.ndarray, mask: np.ndarray, *, share: float = 0.5) -> str | None:
    """The annotation a spline lies on (at least ``share`` of its points on annotation
    pixels, see :func:`annotation_mask`), named by its box; None when it does not."""
    from temtrack.sdk.annotations import on_mask

    if not on_mask(points, mask, share=share):
        return None
    x, y = np.median(points[:, 0]), np.median(points[:, 1])
    for name, (x0, y0, x1, y1) in ANNOTATIONS.items():
        if x0 - 8 <= x <= x1 + 8 and y0 - 8 <= y <= y1 + 8:
            return name
    return "other"


def fecral(model: Path, video: Path, every: int, lines=None) -> dict:
    """Splines per frame on the fecral video, and those on its burnt-in annotations."""
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.sources import open_source

    analyzer = Analyzer(model, workers=0, batch_size=1, postprocess=lines)
    counts, on_text, frames_on_text = [], {name: 0 for name in [*ANNOTATIONS, "other"]}, set()
    started = time.perf_counter()
    with open_source(video) as source:
        for result in analyzer.stream(source.frames(every=every), keep_images=True):
            counts.append(len(result.dislocations))
            mask = annotation_mask(result.image)
            for d in result.dislocations:
                hit = on_annotation(np.asarray(d.points), mask)
                if hit:
                    on_text[hit] += 1
                    frames_on_text.add(result.frame)
    return {
        "frames": len(counts),
        "every": every,
        "splines_per_frame": float(np.mean(counts)) if counts else float("nan"),
        "splines_per_frame_median": float(np.median(counts)) if counts else float("nan"),
        "on_annotations": on_text,
        "frames_with_a_spline_on_an_annotation": len(frames_on_text),
        "seconds": round(time.perf_counter() - started, 1),
    }


def picture_rows(models: dict, real: Path, path: Path) -> None:
    """One row per model: its splines on each picture frame (frames scaled to 256 px high)."""
    import cv2

    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.overlay import draw_tracks

    images = []
    for label, source, index in PICTURES:
        if (real / source).exists():
            images.append((label, _read_frame(real / source, index)))
    rows = []
    for name, model in models.items():
        analyzer = Analyzer(model, workers=0, batch_size=1)
        tiles = []
        for label, image in images:
            (result,) = analyzer.stream([image])
            curves = [d.points for d in result.dislocations]
            drawn = draw_tracks(image, curves, list(range(len(curves))), labels=False)
            scale = 256 / drawn.shape[0]
            tile = cv2.resize(drawn, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.putText(tile, f"{name}: {len(curves)}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
            tiles.append(np.full((256, 4, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles[:-1], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows[:-1], axis=0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for reports and summary")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=MODEL", help="a model (repeatable)")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--heldout", type=Path, help="folder with the sd1, sd2, sd3 held-out sets")
    parser.add_argument("--limit", type=int, default=100, help="held-out images per preset (default 100)")
    parser.add_argument("--fecral-every", type=int, default=12, help="score every N-th fecral frame (default 12; 0: skip the video)")
    parser.add_argument("--figures", type=Path, help="write the picture grid here")
    parser.add_argument("--max-turn", type=float, default=None,
                        help="tracing's max_turn in degrees (default: LineFieldSettings' own; 180 = before issue 17)")
    args = parser.parse_args(argv)
    from temtrack.sdk.linefield import LineFieldSettings

    lines = LineFieldSettings() if args.max_turn is None else LineFieldSettings(max_turn=args.max_turn)
    # Reports traced with other settings are kept apart (``@turn180``), never mixed up.
    tag = "" if args.max_turn is None else f"@turn{args.max_turn:g}"

    models = dict(item.split("=", 1) for item in (args.model or ["shipped=default"]))
    models = {name: resolve_model(spec) for name, spec in models.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary["models"] = {n: str(p) for n, p in models.items()}
    backends = {name: get_backend(str(path)) for name, path in models.items()}

    labelled = args.real / "twip-8.4um" / "labeled"
    if labelled.is_dir():
        heldout = twip_heldout_folder(labelled, args.out / "_twip_heldout")
        for name, backend in backends.items():
            held = _report(args.out, f"twip_heldout_{name}{tag}", heldout, backend, None, lines)
            every = _report(args.out, f"twip_all_{name}{tag}", labelled, backend, None, lines)
            summary.setdefault("twip_heldout", {})[f"{name}{tag}"] = _figures(held)
            summary.setdefault("twip_all", {})[f"{name}{tag}"] = _figures(every)
    else:
        print(f"skipped TWIP: {labelled} is missing", file=sys.stderr)

    video = args.real / "fecral-loops" / "video.mp4"
    if args.fecral_every <= 0:
        pass
    elif video.exists():
        for name, model in models.items():
            key = f"{name}@{args.fecral_every}:pixels{tag}"
            if key not in summary.get("fecral", {}):
                summary.setdefault("fecral", {})[key] = fecral(model, video, args.fecral_every, lines)
                summary_path.write_text(json.dumps(summary, indent=2))
    else:
        print(f"skipped fecral: {video} is missing", file=sys.stderr)

    if args.heldout is not None:
        reports = heldout_reports(args.heldout, backends, args.out, args.limit, suffix=f"_{args.limit}{tag}",
                                  line_settings=lines)
        for (preset, name), report in reports.items():
            summary.setdefault("heldout", {}).setdefault(preset, {})[f"{name}{tag}"] = _figures(report)

    if args.figures is not None:
        picture_rows(models, args.real, args.figures / "real_pictures.png")
    summary_path.write_text(json.dumps(summary, indent=2))
    print(table(summary, [f"{name}{tag}" for name in models], args.fecral_every))
    return 0


def table(summary: dict, names: list, every: int) -> str:
    def cell(value, digits=3):
        return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"

    lines = [
        "| model | TWIP held-out recall | matched length | pred/frame | TWIP all-59 recall | matched length "
        "| fecral splines/frame | on annotations | sd1 | sd2 | sd3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        held = summary.get("twip_heldout", {}).get(name, {})
        every59 = summary.get("twip_all", {}).get(name, {})
        base, _, tag = name.partition("@")
        fec = summary.get("fecral", {}).get(f"{base}@{every}:pixels{'@' + tag if tag else ''}", {})
        synth = [summary.get("heldout", {}).get(p, {}).get(name, {}).get("length_score") for p in PRESETS]
        lines.append(
            f"| {name} | {cell(held.get('spline_recall'))} | {cell(held.get('spline_length_score'))} "
            f"| {cell(held.get('predicted_per_frame'), 1)} | {cell(every59.get('spline_recall'))} "
            f"| {cell(every59.get('spline_length_score'))} | {cell(fec.get('splines_per_frame'), 1)} "
            f"| {sum(fec.get('on_annotations', {}).values()) if fec else '-'} | "
            + " | ".join(cell(s) for s in synth) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
