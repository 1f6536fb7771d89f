"""Write dislocation centrelines as `labelme <https://github.com/wkentaro/labelme>`_ annotations.

Scientists correct predictions or draw ground truth in labelme; this module writes
centrelines as its JSON files, and :func:`temtrack.sdk.groundtruth.read_labelme`
reads them back (with every other label format). Points are float64 arrays of shape
``(n, 2)`` with columns ``(x, y)`` (x = column, y = row) in pixels, pixel centres at
integer coordinates -- the convention used everywhere in tem-track.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .groundtruth import _check_centrelines, _check_shape, _is_int, _short
from .atomic import write_atomic

__all__ = ["write_labelme"]

LABELME_VERSION = "5.5.0"


def write_labelme(path, centrelines, *, image_shape, image_path=None, labels: str | Sequence[str] = "dislocation",
                  group_ids: Sequence[int | None] | None = None, overwrite: bool = False) -> Path:
    """Write centrelines as labelme-5 ``linestrip`` shapes, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.json``; its folder must exist.
    centrelines : sequence of array_like
        Each of shape ``(n, 2)``, ``n >= 2``, finite ``(x, y)`` pixels. Written with full
        float precision, so :func:`~temtrack.sdk.groundtruth.read_labelme` returns them exactly.
    image_shape : tuple of int
        ``(height, width)`` of the image in pixels.
    image_path : str or os.PathLike, optional
        labelme ``imagePath``, relative to the JSON file; labelme needs it to show the image.
    labels : str or sequence of str
        One label for all centrelines, or one per centreline.
    group_ids : sequence of int or None, optional
        One labelme ``group_id`` per centreline (e.g. track ids); None writes nulls.
    overwrite : bool
        Replace an existing file instead of raising FileExistsError.

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    FileExistsError
        `path` exists and `overwrite` is False.
    """
    path = Path(path)
    lines = _check_centrelines(centrelines, "centrelines", min_points=2)
    height, img_width = _check_shape(image_shape, "image_shape")
    labels = [labels] * len(lines) if isinstance(labels, str) else list(labels)
    if len(labels) != len(lines) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be a str or {len(lines)} strs (one per centreline), got {_short(labels)}")
    group_ids = [None] * len(lines) if group_ids is None else list(group_ids)
    if len(group_ids) != len(lines) or not all(g is None or _is_int(g) for g in group_ids):
        raise ValueError(f"group_ids must be None or {len(lines)} ints/None, got {_short(group_ids)}")
    if image_path is not None:
        image_path = os.fspath(image_path)
    if path.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "labelme file exists (pass overwrite=True to replace it)", str(path))
    shapes = [{"label": label, "points": [[float(x), float(y)] for x, y in line],
               "group_id": None if g is None else int(g), "description": "", "shape_type": "linestrip",
               "flags": {}, "mask": None} for line, label, g in zip(lines, labels, group_ids)]
    document = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path,
                "imageData": None, "imageHeight": height, "imageWidth": img_width}
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(path, text, fsync=True)
    return path
