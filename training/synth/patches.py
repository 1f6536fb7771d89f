"""Build a folder of real background patches (crops without dislocations) from real TEM data.

The generator's background mode ``"patches"`` (or ``"mixed"``) blends two real
background images from a folder (thesis 2.1.2, :func:`.background.patch_background`).
This module makes such a folder from the real data the project keeps outside the
repository (``../shared/data/real``; see its README). That data is not ours to
redistribute: it is read from the path the user gives and never copied into the
repository, and neither is the folder made from it.

Sources (each optional, at least one needed):

- ``twip-8.4um/labeled``: frames with hand-labelled dislocations and slip traces.
  The labels, dilated by :data:`FORBIDDEN_MARGIN` px, give a forbidden mask; windows
  with no forbidden pixel are found with an integral image. The authors labelled only
  the moving dislocations, so strong unlabelled dark lines (:func:`dark_line_mask`) are
  forbidden too, windows with more than :data:`TWIP_MAX_LINE_FRACTION` line-like
  pixels are rejected, and the rest are ranked by line-likeness and variance. These
  frames are dense with dislocations: only a dark region at the top right of the later
  frames qualifies, so this source gives few patches, of ``size * 5 // 8`` px or less.
- ``dislocation-samples``: unlabelled; the crop boxes of :data:`SAMPLE_BOXES` were
  picked by eye.
- ``fecral-loops/video.mp4``: the frames :data:`FECRAL_FRAMES` decoded with PyAV; crops
  avoid the burnt-in scale bar and text at the bottom and a decorated dislocation line
  (:data:`FECRAL_AVOID`, found by eye). Its dark dots (dislocation loops) are kept as
  background texture; the flattest, least line-like windows are taken.

Patches are 8-bit grayscale PNGs ``<source>_<index>.png`` (source ``twip``, ``samples``
or ``fecral``) with a ``patches.json`` provenance file (source file, frame, box).

Usage::

    tem-track patches --real ../shared/data/real --out DIR

(or ``python -m temtrack.training.synth.patches``, the same command line).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from temtrack.sdk.atomic import new_partial_folder, publish_folder

__all__ = [
    "FECRAL_AVOID",
    "FECRAL_FRAMES",
    "FORBIDDEN_MARGIN",
    "SAMPLE_BOXES",
    "PatchSource",
    "dark_line_mask",
    "line_map",
    "make_patch_folder",
    "main",
    "twip_forbidden",
]

#: Default location of the real data, relative to the repository root.
DEFAULT_REAL_ROOT = Path("../shared/data/real")

#: Name of the provenance file written next to the patches.
PROVENANCE = "patches.json"

#: Margin (px) around every labelled dislocation / slip trace pixel that a twip crop
#: must avoid. Generous: the labels are 1-3 px wide hand-drawn lines.
FORBIDDEN_MARGIN = 15

#: How many labelled twip frames are used (spread over the video; neighbouring frames
#: are nearly identical) and how many crops each gives at most.
TWIP_FRAME_COUNT = 12
TWIP_CROPS_PER_FRAME = 3
TWIP_MIN_FRAME_GAP = 60

# Crop boxes (x, y, w, h) of dislocation-samples/sampleN.png (512 x 512) that hold no
# dislocation. PICKED BY EYE on the images: they stay clear of the pile-ups and of the
# faint lines at the left edges of sample1 and sample4; they do contain spots, slip
# trace edges and vignetting, which belong to a background.
SAMPLE_BOXES: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "sample1.png": ((0, 0, 256, 176), (256, 0, 256, 226), (300, 405, 212, 107)),
    "sample2.png": ((0, 0, 256, 240), (256, 0, 256, 232), (270, 410, 242, 102)),
    "sample3.png": ((0, 40, 256, 256), (150, 40, 256, 256), (0, 380, 110, 132)),
    "sample4.png": ((60, 0, 220, 228), (280, 0, 232, 225), (150, 410, 256, 102)),
}

#: Frames of fecral-loops/video.mp4 (1176 frames) that give crops. Frame 0 and its
#: neighbours show a mouse cursor at the top left; the magnification changes during the
#: video, so frames are spread over all of it.
FECRAL_FRAMES = (150, 350, 550, 750, 950, 1150)
FECRAL_CROPS_PER_FRAME = 3
#: Rows at and below this one hold the scale bar and the dose text (1120 x 710 frames;
#: found by looking at frames 0, 300, 600, 1150).
FECRAL_TEXT_TOP = 600
#: Boxes (x, y, w, h) no fecral crop may touch, PICKED BY EYE: a long dislocation line
#: decorated with loops runs from about (550, 200) to (800, 430) through the whole video.
FECRAL_AVOID: tuple[tuple[int, int, int, int], ...] = ((520, 170, 300, 280),)


@dataclass(frozen=True)
class PatchSource:
    """Where one patch comes from: ``source`` file (relative to the real-data root),
    ``frame`` index for videos and labelled frames (None for still images) and the
    crop ``box`` ``(x, y, w, h)`` in that image."""

    source: str
    frame: int | None
    box: tuple[int, int, int, int]


# --- scoring -----------------------------------------------------------------------

#: Ridge strength (relative contrast units, see :func:`line_map`) above which a pixel
#: counts as part of a dark line.
LINE_THRESHOLD = 0.2
#: Threshold and smallest extent (bounding-box diagonal, px) of the ridge components
#: that :func:`dark_line_mask` reports as long dark lines.
LONG_LINE_THRESHOLD = 0.35
LONG_LINE_LENGTH = 40
#: A twip crop is kept only when at most this share of its pixels is line-like.
TWIP_MAX_LINE_FRACTION = 0.012


def _ridge(relative: np.ndarray, sigma: float) -> np.ndarray:
    smooth = cv2.GaussianBlur(relative, (0, 0), sigma)
    dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
    half_trace = (dxx + dyy) / 2.0
    root = np.sqrt(((dxx - dyy) / 2.0) ** 2 + dxy**2)
    big, small = half_trace + root, half_trace - root  # big >= small
    # A dark line: strong positive curvature across it, little along it.
    return np.clip(big - np.abs(small), 0.0, None) * np.float32(sigma**2)


def line_map(image: np.ndarray) -> np.ndarray:
    """Dark line-likeness per pixel (float32, >= 0).

    Hessian ridge strength at two scales (sigma 1.5 and 3 px) of the image divided by
    its local mean (bright-field contrast is multiplicative, so faint lines in dark
    regions count as much as in bright ones). Round dark dots, where both curvatures are
    large, score low.
    """
    img = image.astype(np.float32) + np.float32(1.0)
    relative = img / cv2.GaussianBlur(img, (0, 0), 20.0) - np.float32(1.0)
    return np.maximum(_ridge(relative, 1.5), _ridge(relative, 3.0))


def dark_line_mask(image: np.ndarray, lines: np.ndarray | None = None) -> np.ndarray:
    """Pixels of long dark line-like structures (bool): unlabelled dislocations, traces.

    Connected components of ``line_map > LONG_LINE_THRESHOLD`` whose bounding box has a
    diagonal of at least :data:`LONG_LINE_LENGTH` px. Catches the strong lines; faint or
    dotted ones can escape it, which is why crops are also ranked by line-likeness.
    """
    lines = line_map(image) if lines is None else lines
    binary = (lines > LONG_LINE_THRESHOLD).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    keep = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) >= LONG_LINE_LENGTH
    keep[0] = False
    return keep[labels]


def _window_sums(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of ``values`` over every ``h x w`` window; entry [y, x] is the window at (x, y)."""
    integral = cv2.integral(values.astype(np.float64))
    return integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]


def _window_stats(image: np.ndarray, lines: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per window: (share of line-like pixels, score to minimise).

    The score adds the line share (scaled to its median over windows) and half the
    relative standard deviation (scaled likewise): few lines first, then low variance.
    """
    img = image.astype(np.float64) / 255.0
    fraction = _window_sums(lines > LINE_THRESHOLD, h, w) / (h * w)
    mean = _window_sums(img, h, w) / (h * w)
    var = np.clip(_window_sums(img * img, h, w) / (h * w) - mean**2, 0.0, None)
    spread = np.sqrt(var) / np.maximum(mean, 1e-3)
    score = fraction / max(float(np.median(fraction)), 1e-4) + 0.5 * spread / max(float(np.median(spread)), 1e-6)
    return fraction, score


def _pick_windows(
    scores: np.ndarray,
    valid: np.ndarray,
    h: int,
    w: int,
    count: int,
    *,
    max_overlap: float = 0.2,
    taken: list[tuple[int, int, int, int]] = (),
    stride: int = 4,
) -> list[tuple[int, int, int, int]]:
    """Greedily take up to ``count`` valid windows with the lowest scores, each
    overlapping earlier choices (and the boxes ``taken``) by at most ``max_overlap`` of
    its area."""
    ys, xs = np.nonzero(valid[::stride, ::stride])
    ys, xs = ys * stride, xs * stride
    order = np.argsort(scores[ys, xs], kind="stable")
    chosen: list[tuple[int, int, int, int]] = []
    for index in order:
        x, y = int(xs[index]), int(ys[index])
        if all(
            max(0, min(x + w, cx + cw) - max(x, cx)) * max(0, min(y + h, cy + ch) - max(y, cy)) <= max_overlap * w * h
            for cx, cy, cw, ch in (*taken, *chosen)
        ):
            chosen.append((x, y, w, h))
            if len(chosen) == count:
                break
    return chosen


# --- sources -----------------------------------------------------------------------


def _read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


def _twip_frames(labeled: Path) -> list[int]:
    frames = sorted(
        int(p.name[5:8])
        for p in labeled.glob("frame[0-9][0-9][0-9]_dislocations.png")
        if (labeled / f"frame{p.name[5:8]}.png").is_file()
    )
    if len(frames) <= TWIP_FRAME_COUNT:
        return frames
    targets = np.linspace(frames[0], frames[-1], TWIP_FRAME_COUNT)
    picked = []
    for target in targets:
        nearest = min((f for f in frames if f not in picked), key=lambda f: abs(f - target))
        picked.append(nearest)
    return sorted(picked)


def twip_forbidden(labeled: Path, frame: int, margin: int = FORBIDDEN_MARGIN) -> np.ndarray:
    """Labelled dislocations and slip traces of a twip frame, dilated by ``margin`` px (bool)."""
    forbidden = None
    for suffix in ("dislocations", "slip_traces"):
        path = labeled / f"frame{frame:03d}_{suffix}.png"
        if not path.is_file():
            continue
        label = _read_gray(path) > 0
        forbidden = label if forbidden is None else forbidden | label
    if forbidden is None:
        raise FileNotFoundError(f"no label image for frame {frame:03d} in {labeled}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    return cv2.dilate(forbidden.astype(np.uint8), kernel) > 0


def _twip_crops(root: Path, size: int) -> list[tuple[np.ndarray, PatchSource]]:
    labeled = root / "twip-8.4um" / "labeled"
    out = []
    # Boxes of earlier frames: nearby frames are nearly identical, so a region is taken
    # again only from a frame at least TWIP_MIN_FRAME_GAP frames later.
    history: list[tuple[int, tuple[int, int, int, int]]] = []
    for frame in _twip_frames(labeled):
        taken = [box for when, box in history if frame - when < TWIP_MIN_FRAME_GAP]
        image = _read_gray(labeled / f"frame{frame:03d}.png")
        forbidden = twip_forbidden(labeled, frame)
        if forbidden.shape != image.shape:
            raise ValueError(f"label and frame {frame:03d} of {labeled} differ in size")
        lines = line_map(image)
        # Unlabelled strong lines are forbidden too (the authors labelled moving ones only).
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))
        forbidden = forbidden | (cv2.dilate(dark_line_mask(image, lines).astype(np.uint8), kernel) > 0)
        boxes: list[tuple[int, int, int, int]] = []
        for side in (size, size * 3 // 4, size * 5 // 8, size // 2):
            h, w = min(side, image.shape[0]), min(side, image.shape[1])
            valid = _window_sums(forbidden, h, w) < 0.5
            if not valid.any():
                continue
            fraction, score = _window_stats(image, lines, h, w)
            valid &= fraction <= TWIP_MAX_LINE_FRACTION
            if valid.any():
                boxes += _pick_windows(
                    score, valid, h, w, TWIP_CROPS_PER_FRAME - len(boxes), max_overlap=0.3, taken=taken + boxes
                )
            if len(boxes) >= TWIP_CROPS_PER_FRAME:
                break
        history.extend((frame, box) for box in boxes)
        source = f"twip-8.4um/labeled/frame{frame:03d}.png"
        for x, y, bw, bh in boxes:
            out.append((image[y : y + bh, x : x + bw], PatchSource(source, frame, (x, y, bw, bh))))
    return out


def _sample_crops(root: Path) -> list[tuple[np.ndarray, PatchSource]]:
    folder = root / "dislocation-samples"
    out = []
    for name, boxes in SAMPLE_BOXES.items():
        path = folder / name
        if not path.is_file():
            warnings.warn(f"real background source {path} is missing: skipped", stacklevel=3)
            continue
        image = _read_gray(path)
        for x, y, w, h in boxes:
            crop = image[y : y + h, x : x + w]
            if crop.shape != (h, w):
                raise ValueError(f"box {(x, y, w, h)} lies outside {path} ({image.shape[1]}x{image.shape[0]})")
            out.append((crop, PatchSource(f"dislocation-samples/{name}", None, (x, y, w, h))))
    return out


def _fecral_crops(root: Path, size: int) -> list[tuple[np.ndarray, PatchSource]]:
    import av  # lazily: only this source needs PyAV

    path = root / "fecral-loops" / "video.mp4"
    wanted = set(FECRAL_FRAMES)
    frames: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="gray")
            if index >= max(wanted):
                break
    if not frames:
        raise ValueError(f"{path} has none of the frames {sorted(wanted)}")
    out = []
    for index, image in sorted(frames.items()):
        usable = image[: min(FECRAL_TEXT_TOP, image.shape[0])]
        h, w = min(size, usable.shape[0]), min(size, usable.shape[1])
        avoid = np.zeros(usable.shape, bool)
        for x, y, bw, bh in FECRAL_AVOID:
            avoid[y : y + bh, x : x + bw] = True
        valid = _window_sums(avoid, h, w) < 0.5
        lines = line_map(usable)
        _, score = _window_stats(usable, lines, h, w)
        boxes = _pick_windows(score, valid, h, w, FECRAL_CROPS_PER_FRAME, max_overlap=0.0)
        for x, y, bw, bh in boxes:
            out.append((usable[y : y + bh, x : x + bw], PatchSource("fecral-loops/video.mp4", index, (x, y, bw, bh))))
    return out


_SOURCES = {
    # short name: (files that must exist, relative to the root)
    "twip": ("twip-8.4um/labeled",),
    "samples": ("dislocation-samples",),
    "fecral": ("fecral-loops/video.mp4",),
}


def _present(root: Path) -> dict[str, bool]:
    present = {}
    labeled = root / "twip-8.4um" / "labeled"
    present["twip"] = labeled.is_dir() and any(labeled.glob("frame[0-9][0-9][0-9]_dislocations.png"))
    present["samples"] = any((root / "dislocation-samples" / name).is_file() for name in SAMPLE_BOXES)
    present["fecral"] = (root / "fecral-loops" / "video.mp4").is_file()
    return present


# --- folder ------------------------------------------------------------------------


def make_patch_folder(
    real_root: str | Path, out_dir: str | Path, *, size: int = 256, overwrite: bool = False
) -> list[Path]:
    """Crop background patches without dislocations from the real data into ``out_dir``.

    Parameters
    ----------
    real_root : path
        The real-data folder (``../shared/data/real`` in the project's layout) with
        ``twip-8.4um/labeled``, ``dislocation-samples`` and/or ``fecral-loops/video.mp4``.
        A missing source is skipped with a warning; at least one must be present.
    out_dir : path
        Folder to create. It is written atomically (a temporary sibling folder renamed
        into place). An existing non-empty folder is an error unless ``overwrite``.
    size : int
        Side of the crops from the videos; twip crops shrink to as little as
        ``size // 2`` when no window of ``size`` px avoids the labels.
    overwrite : bool
        Replace an existing folder made by this function (one with ``patches.json``).

    Returns
    -------
    list of Path
        The PNG files written, sorted by name; ``out_dir / "patches.json"`` records their
        source file, frame and box.
    """
    root = Path(real_root)
    out_dir = Path(out_dir)
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    if not root.is_dir():
        raise FileNotFoundError(f"real data folder not found: {root}")
    present = _present(root)
    if not any(present.values()):
        expected = ", ".join(str(root / p) for paths in _SOURCES.values() for p in paths)
        raise FileNotFoundError(f"no real background source found in {root}; expected any of: {expected}")
    _check_target(out_dir, overwrite)

    crops: list[tuple[str, np.ndarray, PatchSource]] = []
    for name, builder in (
        ("twip", lambda: _twip_crops(root, size)),
        ("samples", lambda: _sample_crops(root)),
        ("fecral", lambda: _fecral_crops(root, size)),
    ):
        if not present[name]:
            warnings.warn(f"real background source {root / _SOURCES[name][0]} is missing: skipped", stacklevel=2)
            continue
        try:
            crops.extend((name, crop, source) for crop, source in builder())
        except ImportError as exc:
            warnings.warn(f"cannot read background source {name!r} ({exc}): skipped", stacklevel=2)
    if not crops:
        raise FileNotFoundError(f"the real data in {root} gave no background patch")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_partial_folder(out_dir)
    try:
        records = []
        counters: dict[str, int] = {}
        for name, crop, source in crops:
            index = counters.get(name, 0)
            counters[name] = index + 1
            file = f"{name}_{index:03d}.png"
            if not cv2.imwrite(str(tmp / file), np.ascontiguousarray(crop, dtype=np.uint8)):
                raise OSError(f"cannot write {tmp / file}")
            records.append({"file": file, **asdict(source), "box": list(source.box)})
        provenance = {
            "generator": "temtrack.training.synth.patches",
            "real_root": str(root.resolve()),
            "size": size,
            "forbidden_margin": FORBIDDEN_MARGIN,
            "note": "Crops of third-party TEM data: do not redistribute.",
            "counts": counters,
            "patches": records,
        }
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        _replace(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out_dir / record["file"] for record in records)


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    if not (out_dir / PROVENANCE).is_file():
        raise FileExistsError(
            f"{out_dir} is not a patch folder made by this tool (no {PROVENANCE}); refusing to replace it"
        )


def _replace(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    # Checked again at the end: the folder may have appeared while the crops were cut.
    _check_target(out_dir, overwrite)
    publish_folder(tmp, out_dir, overwrite=True)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m temtrack.training.synth.patches",
        description="Crop real background patches (no dislocations) for the generator's 'patches' mode.",
    )
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL_ROOT, help="real data folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="folder to create")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing patch folder")
    args = parser.parse_args(argv)
    try:
        files = make_patch_folder(args.real, args.out, size=args.size, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for path in files:
        counts[path.name.rsplit("_", 1)[0]] = counts.get(path.name.rsplit("_", 1)[0], 0) + 1
    summary = ", ".join(f"{name}: {count}" for name, count in counts.items())
    print(f"wrote {len(files)} patches to {args.out} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
