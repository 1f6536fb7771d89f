"""Read and write `labelme <https://github.com/wkentaro/labelme>`_ annotations of dislocations.

Scientists correct predictions or draw ground truth in labelme; this module turns
its JSON files into centrelines and back. Points are float64 arrays of shape
``(n, 2)`` with columns ``(x, y)`` (x = column, y = row) in pixels, pixel centres at
integer coordinates -- the convention used everywhere in tem-track.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["LabelmeAnnotation", "LabelmeError", "centrelines_to_masks", "read_labelme", "write_labelme"]

LINE_SHAPE_TYPES = ("linestrip", "line", "polygon")
LABELME_VERSION = "5.5.0"
_SHIFT = 8  # cv2 fixed-point fraction bits: 1/256 px precision
_MAX_COORD = 2 ** (30 - _SHIFT)  # keeps shifted coordinates inside int32 with room to spare


class LabelmeError(ValueError):
    """A labelme file is unreadable or malformed (message names the file and the problem)."""


@dataclass(frozen=True)
class LabelmeAnnotation:
    """Line-like shapes of one labelme file.

    `path` is the file read; `image_path` is labelme's ``imagePath`` (relative to the
    JSON file); `image_shape` is ``(height, width)`` in pixels. `centrelines` holds one
    float64 ``(n, 2)`` array of ``(x, y)`` pixels (``n >= 2``) per shape, with its
    `labels` and labelme `group_ids` (tem-track writes track ids there) alongside.
    """

    path: Path | None
    image_path: str | None
    image_shape: tuple[int, int]
    centrelines: list[np.ndarray]
    labels: list[str]
    group_ids: list[int | None]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_shape(shape, name: str) -> tuple[int, int]:
    if not (isinstance(shape, (Sequence, np.ndarray)) and len(shape) == 2
            and all(_is_int(v) and v > 0 for v in shape)):
        raise ValueError(f"{name} must be (height, width) with two positive ints, got {_short(shape)}")
    return int(shape[0]), int(shape[1])


def _check_centrelines(centrelines, name: str, min_points: int) -> list[np.ndarray]:
    if isinstance(centrelines, np.ndarray) and centrelines.ndim == 2:
        raise ValueError(f"{name} must be a sequence of (n, 2) arrays, got one array of shape {centrelines.shape}")
    lines = []
    for i, line in enumerate(centrelines):
        try:
            arr = np.asarray(line, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}[{i}] must be a numeric (n, 2) array, got {_short(line)}") from exc
        if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < min_points:
            raise ValueError(f"{name}[{i}] must have shape (n, 2) with n >= {min_points}, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}[{i}] contains non-finite coordinates")
        lines.append(arr)
    return lines


def _read_points(shape: dict, where: str) -> np.ndarray:
    if "points" not in shape:
        raise LabelmeError(f"{where} has no 'points'")
    raw = shape["points"]
    if not (isinstance(raw, list) and all(
            isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in raw)):
        raise LabelmeError(f"{where}: 'points' must be a list of [x, y] number pairs, got {_short(raw)}")
    try:
        pts = np.array([[float(x), float(y)] for x, y in raw], dtype=np.float64).reshape(-1, 2)
    except OverflowError:  # an integer too large for a float
        pts = np.full((1, 2), np.inf)
    if not np.isfinite(pts).all():
        raise LabelmeError(f"{where}: 'points' contains non-finite coordinates")
    return pts


def _principal_axis(pts: np.ndarray) -> np.ndarray:
    centre = pts.mean(axis=0)
    offsets = pts - centre
    _, vectors = np.linalg.eigh(offsets.T @ offsets)
    axis = vectors[:, -1]  # eigh sorts eigenvalues ascending: the last vector is the major axis
    t = offsets @ axis
    ends = centre + np.outer([t.min(), t.max()], axis)
    # Start at the end nearer the first annotated point so the result does not depend on the eigenvector's sign.
    return ends[::-1] if t[0] - t.min() > t.max() - t[0] else ends


def read_labelme(path, *, labels: Iterable[str] | str | None = None,
                 polygon_as: str = "centreline") -> LabelmeAnnotation:
    """Read the dislocation centrelines of a labelme JSON file.

    Shapes of type ``"linestrip"``, ``"line"`` and ``"polygon"`` are dislocations;
    rectangles, circles, points and masks are ignored (their points are still validated).

    Parameters
    ----------
    path : str or os.PathLike
        labelme ``.json`` file.
    labels : iterable of str or str, optional
        Keep only shapes with these labels (case-insensitive); a single str is one label.
        None (default) keeps every line-like shape.
    polygon_as : {"centreline", "outline"}
        ``"centreline"`` (default): a polygon's points were placed along the dislocation,
        so they are taken as an open line and the closing edge is dropped (as is a last
        point repeating the first). ``"outline"``: a polygon outlines a filled region;
        its centreline is the 2-point segment of its principal axis (PCA of the points)
        between the extreme projections of the points, starting at the end nearer the
        first point.

    Returns
    -------
    LabelmeAnnotation
        Centrelines are float64 ``(n, 2)`` arrays of ``(x, y)`` pixels, in file order.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    LabelmeError
        Not JSON; no ``shapes`` list; ``imageHeight``/``imageWidth`` not positive ints;
        a shape without ``points``, with malformed or non-finite points, or line-like
        with fewer than 2 points.
    """
    if polygon_as not in ("centreline", "outline"):
        raise ValueError(f"polygon_as must be 'centreline' or 'outline', got {polygon_as!r}")
    wanted = None
    if labels is not None:
        labels = [labels] if isinstance(labels, str) else list(labels)
        if not all(isinstance(label, str) for label in labels):
            raise TypeError(f"labels must be None, a str or an iterable of str, got {_short(labels)}")
        wanted = {label.casefold() for label in labels}
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "labelme file not found", str(path)) from None
    try:
        data = json.loads(raw)  # bytes: json detects UTF-8 (with or without BOM), UTF-16 and UTF-32
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelmeError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise LabelmeError(f"{path}: missing 'shapes' list")
    for key in ("imageHeight", "imageWidth"):
        if not (_is_int(data.get(key)) and data[key] > 0):
            raise LabelmeError(f"{path}: {key!r} must be a positive int, got {_short(data.get(key))}")
    image_path = data.get("imagePath")
    if image_path is not None and not isinstance(image_path, str):
        raise LabelmeError(f"{path}: 'imagePath' must be a string or null, got {_short(image_path)}")

    centrelines, names, group_ids = [], [], []
    for i, shape in enumerate(data["shapes"]):
        where = f"{path}: shapes[{i}]"
        if not isinstance(shape, dict):
            raise LabelmeError(f"{where} must be an object, got {_short(shape)}")
        pts = _read_points(shape, where)
        shape_type = shape.get("shape_type", "polygon")  # labelme's own default
        if shape_type not in LINE_SHAPE_TYPES:
            continue
        label, group_id = shape.get("label"), shape.get("group_id")
        if not isinstance(label, str):
            raise LabelmeError(f"{where}: 'label' must be a string, got {_short(label)}")
        if group_id is not None and not _is_int(group_id):
            raise LabelmeError(f"{where}: 'group_id' must be an int or null, got {_short(group_id)}")
        if len(pts) < 2:
            raise LabelmeError(f"{where} ({shape_type} {label!r}) has {len(pts)} point(s); lines need at least 2")
        if wanted is not None and label.casefold() not in wanted:
            continue
        if shape_type == "polygon":
            if polygon_as == "outline":
                pts = _principal_axis(pts)
            elif len(pts) > 2 and np.array_equal(pts[0], pts[-1]):
                pts = pts[:-1]
        centrelines.append(pts)
        names.append(label)
        group_ids.append(group_id)
    return LabelmeAnnotation(path=path, image_path=image_path,
                             image_shape=(data["imageHeight"], data["imageWidth"]),
                             centrelines=centrelines, labels=names, group_ids=group_ids)


def centrelines_to_masks(centrelines, shape, *, width: int = 3) -> np.ndarray:
    """Rasterise centrelines, one binary mask each.

    Each line is drawn 8-connected with ``cv2.polylines`` at 1/256 px precision, then
    widened by a disc of diameter `width` (cv2's own ``thickness`` does not give the
    requested width in pixels). Parts outside the image are clipped.

    Parameters
    ----------
    centrelines : sequence of array_like
        Each of shape ``(n, 2)``, ``n >= 1``, columns ``(x, y)`` in pixels. Not modified.
    shape : tuple of int
        ``(height, width)`` of the image in pixels.
    width : int
        Line width in pixels, >= 1. Even widths reach half a pixel further towards +x/+y.

    Returns
    -------
    ndarray
        uint8 array of shape ``(N, height, width)`` with values 0 and 1.

    Examples
    --------
    >>> masks = centrelines_to_masks([np.array([[1.0, 2.0], [4.0, 2.0]])], (4, 6), width=1)
    >>> masks.shape, masks.dtype
    ((1, 4, 6), dtype('uint8'))
    >>> masks[0, 2]
    array([0, 1, 1, 1, 1, 0], dtype=uint8)
    """
    lines = _check_centrelines(centrelines, "centrelines", min_points=1)
    height, img_width = _check_shape(shape, "shape")
    if not _is_int(width) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {_short(width)}")
    offsets = np.arange(width) - (width - 1) / 2
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= (width / 2) ** 2).astype(np.uint8)
    pad = width  # draw on a padded canvas so lines just outside the image still widen into it
    masks = np.zeros((len(lines), height, img_width), np.uint8)
    for i, line in enumerate(lines):
        if np.abs(line).max() >= _MAX_COORD:
            raise ValueError(f"centrelines[{i}] has coordinates beyond +-{_MAX_COORD} px")
        fixed = np.round((line + pad) * (1 << _SHIFT)).astype(np.int32)
        if len(fixed) == 1:
            fixed = np.repeat(fixed, 2, axis=0)  # cv2 draws nothing for a one-point polyline
        canvas = np.zeros((height + 2 * pad, img_width + 2 * pad), np.uint8)
        cv2.polylines(canvas, [fixed.reshape(-1, 1, 2)], False, 1, thickness=1, lineType=cv2.LINE_8, shift=_SHIFT)
        if width > 1:
            canvas = cv2.dilate(canvas, disc)
        masks[i] = canvas[pad:pad + height, pad:pad + img_width]
    return masks


def write_labelme(path, centrelines, *, image_shape, image_path=None, labels: str | Sequence[str] = "dislocation",
                  group_ids: Sequence[int | None] | None = None, overwrite: bool = False) -> Path:
    """Write centrelines as labelme-5 ``linestrip`` shapes, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.json``; its folder must exist.
    centrelines : sequence of array_like
        Each of shape ``(n, 2)``, ``n >= 2``, finite ``(x, y)`` pixels. Written with full
        float precision, so :func:`read_labelme` returns them exactly.
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
    # Temporary file in the same folder so os.replace is atomic; os.open honours the umask, unlike mkstemp.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
