"""Contact sheet: synthetic samples of each preset next to real TEM images, in one PNG.

Rows (4 images each, shown at 256 px):

1. ``sd1``, ``sd2``, ``sd3`` with their Perlin backgrounds;
2. ``sd3`` with real background patches (mode ``"patches"``), when a patch folder is
   given with ``--patches`` or can be built from ``--real`` into a temporary folder;
3. the four real ``dislocation-samples`` images, when present.

Images are generated at the presets' size (512 px) and shrunk to 256 px like the real
512 px samples, so line widths compare one to one.

Usage::

    python examples/contact_sheet.py [--real ../shared/data/real] [--out contact_sheet.png]
                                     [--patches DIR] [--seed 0]

The real data (default ``../shared/data/real`` next to the repository) is read in place:
never copy it, or the sheet made from it, into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from temtrack.training.synth import generate_sample, get_preset, validate_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "real"
TILE = 256
COLUMNS = 4
HEADER = 26
GAP = 4


def _tile(image: np.ndarray) -> np.ndarray:
    """A float [0, 1] or uint8 image as a TILE x TILE uint8 tile."""
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)


def _row(label: str, images: list[np.ndarray]) -> np.ndarray:
    width = COLUMNS * TILE + (COLUMNS - 1) * GAP
    row = np.full((HEADER + TILE, width), 255, np.uint8)
    cv2.putText(row, label, (6, HEADER - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1, cv2.LINE_AA)
    for index, image in enumerate(images[:COLUMNS]):
        x = index * (TILE + GAP)
        row[HEADER:, x : x + TILE] = _tile(image)
    return row


def _synthetic_row(label: str, config, seeds: list[int], backgrounds=None) -> np.ndarray:
    return _row(label, [generate_sample(config, seed, backgrounds=backgrounds).image for seed in seeds])


def _patches_config():
    base = get_preset("sd3")
    background = base.background.model_dump()
    background.update(mode="patches")
    return validate_config({**base.model_dump(), "name": "sd3-patches", "background": background})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real data folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("contact_sheet.png"), help="PNG to write (default: %(default)s)")
    parser.add_argument("--patches", type=Path, default=None, help="background patch folder (default: build one from --real)")
    parser.add_argument("--seed", type=int, default=0, help="first seed of each row (default: %(default)s)")
    args = parser.parse_args(argv)
    # Each row its own seeds: the background is drawn first from the seed, so equal seeds
    # would give every preset the same background.
    def seeds(row: int) -> list[int]:
        return [args.seed + 100 * row + column for column in range(COLUMNS)]

    rows = []
    for index, name in enumerate(("sd1", "sd2", "sd3")):
        rows.append(_synthetic_row(f"{name} (Perlin background), seeds {seeds(index)[0]}-{seeds(index)[-1]}", name, seeds(index)))
        print(f"row {name}: done")

    with tempfile.TemporaryDirectory(prefix="contact-sheet-") as scratch:
        patches = args.patches
        if patches is None:
            try:
                from temtrack.training.synth.patches import make_patch_folder

                patches = Path(scratch) / "patches"
                files = make_patch_folder(args.real, patches)
                print(f"built {len(files)} background patches from {args.real} in a temporary folder")
            except FileNotFoundError as exc:
                patches = None
                print(f"note: no real-patch row ({exc})")
        if patches is not None:
            label = f"sd3, real background patches, seeds {seeds(3)[0]}-{seeds(3)[-1]}"
            rows.append(_synthetic_row(label, _patches_config(), seeds(3), patches))
            print("row sd3 + patches: done")

    samples = sorted((args.real / "dislocation-samples").glob("sample*.png"))
    if samples:
        images = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in samples[:COLUMNS]]
        rows.append(_row("real: dislocation-samples " + ", ".join(p.stem for p in samples[:COLUMNS]), images))
        print("row real samples: done")
    else:
        print(f"note: no real sample row (no {args.real / 'dislocation-samples'}/sample*.png)")

    gap = np.full((GAP, rows[0].shape[1]), 255, np.uint8)
    sheet = np.vstack([part for row in rows for part in (row, gap)][:-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), sheet):
        print(f"error: cannot write {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}, {len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
