"""Ground truth on disk: the readers of every label format tem-track knows.

Three kinds of folder hold images with their ground truth:

- a **synthetic dataset** as ``tem-track synth`` writes it (``dataset.json``,
  ``images/``, ``masks/``, ``labels/``; the writer is
  :mod:`temtrack.training.synth.storage`): :func:`read_header`, :func:`read_sample`;
- **labelme** JSON files, each next to the image its ``imagePath`` names:
  :func:`read_labelme`, and :func:`centrelines_to_masks` to draw the centrelines as
  masks (the writer is :func:`temtrack.sdk.labelme.write_labelme`);
- **line labels**: ``NAME.png`` with ``NAME_dislocations.png`` beside it, each
  8-connected component of the labels one dislocation (the format of the TWIP data in
  ``../shared/data/real``): :func:`line_label_files`, :func:`line_label_masks`.

:func:`folder_kind` tells the three apart and :func:`iter_ground_truth` reads any of
them as :class:`GroundTruth` (an image and one mask per dislocation), which evaluation
(:mod:`temtrack.sdk.evaluate`) and fine-tuning (:mod:`temtrack.training.labelled`)
consume.

Points are float64 arrays of shape ``(n, 2)`` with columns ``(x, y)`` (x = column,
y = row) in pixels, pixel centres at integer coordinates -- the convention used
everywhere in tem-track.

Needs numpy and OpenCV only. Must never import torch, ``temtrack.training`` or
``temtrack.export``: a stored synthetic sample is read as a plain
:class:`StoredSample`, its scene as the JSON dict the generator wrote.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "DATASET_FORMAT",
    "LINE_LABEL_SUFFIX",
    "LINE_SHAPE_TYPES",
    "DatasetError",
    "GroundTruth",
    "GroundTruthError",
    "LabelmeAnnotation",
    "LabelmeError",
    "StoredSample",
    "centrelines_to_masks",
    "count_images",
    "folder_kind",
    "iter_ground_truth",
    "labelme_files",
    "line_label_files",
    "line_label_masks",
    "read_header",
    "read_labelme",
    "read_sample",
    "sample_name",
    "unlabelled_images",
]

DATASET_FORMAT = "tem-track-synth"
LINE_LABEL_SUFFIX = "_dislocations"
LINE_SHAPE_TYPES = ("linestrip", "line", "polygon")
# JSON files of this format may sit in a labelme folder but are not annotations: the
# reports 'tem-track eval' writes (temtrack.sdk.evaluate.REPORT_FORMAT).
EVAL_REPORT_FORMAT = "tem-track-eval"
_SHIFT = 8  # cv2 fixed-point fraction bits: 1/256 px precision
_MAX_COORD = 2 ** (30 - _SHIFT)  # keeps shifted coordinates inside int32 with room to spare


class GroundTruthError(ValueError):
    """A folder cannot be read as ground truth: neither a synthetic dataset, nor labelme
    files, nor line labels; or a broken image."""


class DatasetError(ValueError):
    """A synthetic dataset folder is missing, incomplete or malformed."""


@dataclass(frozen=True)
class GroundTruth:
    """One image with its ground truth.

    Attributes
    ----------
    image_id : str
        Name of the image within its folder (sample number or labelme file stem).
    image : (H, W) ndarray of float32
        Intensities in [0, 1].
    masks : (N, H, W) ndarray of uint8
        One 0/1 mask per dislocation; N may be 0.
    """

    image_id: str
    image: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)


# --- synthetic datasets ------------------------------------------------------------


def sample_name(index: int) -> str:
    """File stem of sample ``index`` of a synthetic dataset.

    >>> sample_name(7)
    '000007'
    """
    return f"{index:06d}"


@dataclass(frozen=True)
class StoredSample:
    """One sample of a synthetic dataset as stored on disk.

    Attributes
    ----------
    image : (H, W) ndarray of float32
        The stored 8-bit PNG scaled to [0, 1].
    masks : (N, H, W) ndarray of uint8
        One 0/1 mask per dislocation.
    centrelines : list of (n, 2) ndarray of float64
        ``(x, y)`` pixels, as stored (rounded to 0.01 px).
    ids, pileups : (N,) ndarray of int
        Dislocation id and pile-up of each mask.
    scene : dict
        The scene JSON the generator wrote (every parameter); the generator's
        ``Scene.model_validate(scene)`` turns it back into a scene.
    """

    image: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    centrelines: list = field(repr=False)
    ids: np.ndarray
    pileups: np.ndarray
    scene: dict = field(repr=False)


def read_header(root: str | os.PathLike) -> dict:
    """The ``dataset.json`` of a synthetic dataset folder.

    Raises
    ------
    DatasetError
        ``root`` holds no ``dataset.json``, one that is not JSON, or one of another
        format.
    """
    root = Path(root)
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{root} is not a tem-track synthetic dataset (no dataset.json)")
    try:
        header = json.loads(path.read_bytes())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DatasetError(f"{path} is not valid JSON ({exc}); the dataset is damaged") from None
    found = header.get("format") if isinstance(header, dict) else type(header).__name__
    if found != DATASET_FORMAT:
        raise DatasetError(f"{path} is not a tem-track synthetic dataset (format {found!r})")
    return header


def read_sample(root: str | os.PathLike, index: int) -> StoredSample:
    """Read sample ``index`` of a synthetic dataset folder.

    Returns
    -------
    StoredSample
        The image is the stored 8-bit PNG scaled to [0, 1]; centrelines are the
        stored ones (rounded to 0.01 px).

    Raises
    ------
    FileNotFoundError
        The sample's mask file is missing.
    DatasetError
        The sample's label file or image is missing, or a file is damaged (the
        message names the file).
    """
    import zipfile

    root = Path(root)
    name = sample_name(index)
    label_path = root / "labels" / f"{name}.json"
    if not label_path.is_file():
        raise DatasetError(f"sample {index} of {root} is missing ({label_path})")
    try:
        labels = json.loads(label_path.read_bytes())
        image_path = root / labels["image"]
        centrelines = [np.asarray(d["points"], dtype=float).reshape(-1, 2) for d in labels["dislocations"]]
        scene = labels["scene"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{label_path} is not a sample's label file ({type(exc).__name__}: {exc}); the dataset is damaged"
        ) from None
    image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"cannot read image of sample {index}: {image_path}")
    mask_path = root / "masks" / f"{name}.npz"
    if not mask_path.is_file():  # FileNotFoundError, as before: training.labelled names it so
        raise FileNotFoundError(errno.ENOENT, f"the masks of sample {index} are missing", str(mask_path))
    try:
        with np.load(mask_path) as stored:
            masks, ids, pileups = stored["masks"], stored["ids"], stored["pileups"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        # numpy's own words for a damaged file ("pickled data ... allow_pickle") mislead.
        raise DatasetError(
            f"cannot read the masks of sample {index}: {mask_path} is not a mask archive "
            "written by tem-track synth; the dataset is damaged"
        ) from None
    return StoredSample(
        image=image.astype(np.float32) / np.float32(255.0),
        masks=masks,
        centrelines=centrelines,
        ids=ids,
        pileups=pileups,
        scene=scene,
    )


# --- labelme --------------------------------------------------------------------------


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


# --- line labels and folders ------------------------------------------------------------


def folder_kind(folder: str | os.PathLike) -> str:
    """Which ground truth a folder holds.

    Returns
    -------
    {"synthetic", "labelme", "lines"}
        A synthetic dataset (``dataset.json``), labelme JSON files, or line labels
        (``NAME.png`` with ``NAME_dislocations.png``), checked in that order.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        ``folder`` is missing or a file.
    GroundTruthError
        ``folder`` holds none of the three (a synthetic video's folder included).
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"data must be a folder (a synthetic dataset or labelme files), got the file {folder}")
    if (folder / "dataset.json").is_file():
        return "synthetic"
    if (folder / "video.json").is_file() and (folder / "ground_truth.parquet").is_file():
        raise GroundTruthError(
            f"{folder} is a synthetic video ('tem-track synth --video'), not images with labels: score images "
            "with a dataset from 'tem-track synth --out DIR' (without --video)"
        )
    if any(labelme_files(folder)):
        return "labelme"
    if line_label_files(folder):
        return "lines"
    raise GroundTruthError(
        f"{folder} holds neither a synthetic dataset (dataset.json, as 'tem-track synth' writes), "
        "nor labelme files (*.json next to their images), nor line labels (NAME.png with "
        "NAME_dislocations.png)"
    )


def line_label_files(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a folder: ``NAME.png`` with ``NAME_dislocations.png`` beside it, sorted."""
    folder = Path(folder)
    pairs = []
    for label in sorted(folder.glob(f"*{LINE_LABEL_SUFFIX}.png")):
        image = label.with_name(label.name[: -len(f"{LINE_LABEL_SUFFIX}.png")] + ".png")
        if image.is_file():
            pairs.append((image, label))
    return pairs


def line_label_masks(label: np.ndarray, *, min_pixels: int = 1) -> np.ndarray:
    """One mask per 8-connected component of a line-label image (nonzero = line).

    Parameters
    ----------
    label : (H, W) ndarray of uint8
        Hand-drawn dislocation lines, e.g. 255 on 0.
    min_pixels : int
        Components with fewer pixels are dropped.

    Returns
    -------
    (N, H, W) ndarray of uint8
        0/1 masks, in OpenCV's component order.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats((label > 0).view(np.uint8), connectivity=8)
    keep = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_pixels]
    masks = np.zeros((len(keep), *label.shape), np.uint8)
    for i, k in enumerate(keep):
        masks[i] = labels == k
    return masks


def labelme_files(folder: str | os.PathLike) -> list[Path]:
    """The labelme files of a folder, sorted: every ``*.json`` but the reports of
    ``tem-track eval`` (unreadable files are kept: :func:`read_labelme` says what is
    wrong with them)."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.glob("*.json")):
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            files.append(path)  # read_labelme reports what is wrong with it
            continue
        # Our own reports may sit in the folder; they are not annotations.
        if not (isinstance(head, dict) and head.get("format") == EVAL_REPORT_FORMAT):
            files.append(path)
    return files


def unlabelled_images(folder: str | os.PathLike, *, kind: str | None = None) -> list[Path]:
    """The images of a labelme or line-label folder that no label covers, sorted.

    :func:`iter_ground_truth` yields only labelled images; these are the ones it
    skips, so that a caller can say so. An image is labelled when a labelme file's
    ``imagePath`` names it (labelme folders) or ``NAME_dislocations.png`` lies beside it
    (line-label folders); label images (``*_dislocations.png``) and hidden files are
    not counted. A synthetic dataset has none.

    Parameters
    ----------
    folder : path
    kind : {"synthetic", "labelme", "lines"}, optional
        :func:`folder_kind`'s answer, where the caller has it already.

    Returns
    -------
    list of Path
        Image files (``.png``, ``.tif``, ``.jpg``, ...) directly in ``folder``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "b.png", "b_dislocations.png"):
    ...     _ = cv2.imwrite(str(folder / name), np.zeros((4, 4), np.uint8))
    >>> [p.name for p in unlabelled_images(folder)]
    ['a.png']
    """
    from .sources.base import IMAGE_SUFFIXES

    folder = Path(folder)
    kind = folder_kind(folder) if kind is None else kind
    if kind == "synthetic":
        return []
    if kind == "lines":
        labelled = {image.resolve() for image, _ in line_label_files(folder)}
    else:
        labelled = set()
        for path in labelme_files(folder):
            try:
                image_path = json.loads(path.read_bytes()).get("imagePath")
            except (OSError, ValueError, AttributeError):
                continue  # iter_ground_truth says what is wrong with it
            if isinstance(image_path, str) and image_path:
                labelled.add((path.parent / image_path).resolve())
    return [
        path for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        and not path.stem.endswith(LINE_LABEL_SUFFIX) and path.is_file() and path.resolve() not in labelled
    ]


def count_images(folder: str | os.PathLike, *, kind: str | None = None) -> int | None:
    """The number of images :func:`iter_ground_truth` will yield, without reading them
    (None when a dataset's ``dataset.json`` does not say); ``kind`` is
    :func:`folder_kind`'s answer where the caller has it already."""
    folder = Path(folder)
    kind = folder_kind(folder) if kind is None else kind
    if kind == "synthetic":
        try:
            return int(json.loads((folder / "dataset.json").read_text())["n"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if kind == "lines":
        return len(line_label_files(folder))
    return len(labelme_files(folder))


def _read_image(path: Path, shape: tuple[int, int], where: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise GroundTruthError(f"{where}: cannot read its image {path} (missing or not an image)")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255.0)
    elif image.dtype == np.uint16:
        image = image.astype(np.float32) / np.float32(65535.0)
    else:
        raise GroundTruthError(f"{where}: image {path} must be 8- or 16-bit, got dtype {image.dtype}")
    if image.shape != tuple(shape):
        raise GroundTruthError(
            f"{where}: image {path} is {image.shape[0]}x{image.shape[1]} px but the annotation says "
            f"{shape[0]}x{shape[1]} (imageHeight x imageWidth)"
        )
    return image


def iter_ground_truth(data: str | os.PathLike, *, label_width: int = 3) -> Iterator[GroundTruth]:
    """The images of a folder with their ground-truth masks, in folder order.

    Parameters
    ----------
    data : path
        A synthetic dataset folder, a folder of labelme JSON files with their images,
        or a folder of line labels: ``NAME.png`` with ``NAME_dislocations.png`` beside
        it, each 8-connected component of the labels one dislocation (the format of
        the TWIP data in ``../shared/data/real``).
    label_width : int
        Width in pixels of the masks drawn from labelme centrelines (ignored for
        synthetic datasets, whose masks are stored).

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        ``data`` is missing or a file.
    GroundTruthError
        ``data`` holds neither kind of ground truth, or an image is unreadable or of
        another size than its annotation.
    """
    folder = Path(data)
    kind = folder_kind(folder)
    if kind == "synthetic":
        header = read_header(folder)
        n = header.get("n")
        if not isinstance(n, int) or n < 0:
            raise GroundTruthError(f"{folder / 'dataset.json'}: 'n' must be the number of images, got {n!r}")
        for index in range(n):
            sample = read_sample(folder, index)
            yield GroundTruth(sample_name(index), sample.image, sample.masks)
        return

    if kind == "lines":
        for image_path, label_path in line_label_files(folder):
            label = cv2.imread(str(label_path), cv2.IMREAD_GRAYSCALE)
            if label is None:
                raise GroundTruthError(f"cannot read the line labels {label_path} (not an image)")
            image = _read_image(image_path, label.shape, label_path)
            yield GroundTruth(image_path.stem, image, line_label_masks(label))
        return

    for path in labelme_files(folder):
        annotation = read_labelme(path)
        if not annotation.image_path:
            raise GroundTruthError(f"{path}: no imagePath, so its image cannot be found")
        image = _read_image(path.parent / annotation.image_path, annotation.image_shape, path)
        if annotation.centrelines:
            masks = centrelines_to_masks(annotation.centrelines, annotation.image_shape, width=label_width)
        else:
            masks = np.zeros((0, *annotation.image_shape), np.uint8)
        yield GroundTruth(path.stem, image, masks)
