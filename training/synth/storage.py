"""Synthetic datasets on disk: the writer (parallel, atomic, resumable).

Layout of a dataset folder (documented in the README)::

    DIR/dataset.json           what was generated: format, generator version, config, seed, n
    DIR/images/000000.png      8-bit grayscale image
    DIR/masks/000000.npz       "masks" (N, H, W) uint8 0/1, "ids" (N,), "pileups" (N,)
    DIR/labels/000000.json     sample seed, centrelines, and the full scene (every parameter)

A run writes into ``DIR.partial`` and renames it to ``DIR`` when every sample is
complete; each sample's label JSON is written last (atomically), so an interrupted run
is resumed by skipping the samples whose label exists. Files are byte-identical for
the same config and seed. An existing folder is replaced (``overwrite``) only if it is
empty or tem-track synth wrote it (:func:`check_replaceable`, shared with the video
writer), so a mistyped output folder never costs anyone their work.

The readers (:func:`~temtrack.sdk.groundtruth.read_header`,
:func:`~temtrack.sdk.groundtruth.read_sample`) live with every other ground-truth
reader in :mod:`temtrack.sdk.groundtruth`, so the SDK reads datasets without the
generator; :func:`regenerate` and :func:`config_of` stay here because they need it.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from temtrack.sdk.groundtruth import DATASET_FORMAT, DatasetError, read_header, sample_name
from temtrack.sdk.atomic import publish_folder, write_atomic

from .config import SynthConfig, validate_config
from .render import Sample, render_scene
from .scene import Scene, sample_scene

FORMAT = DATASET_FORMAT
FORMAT_VERSION = 1
# video.json of a synthetic video (training/synth/video.py) carries this format.
VIDEO_FORMAT = "tem-track-synth-video"
# What each kind of synth output folder holds; anything else in it is someone's.
DATASET_ENTRIES = frozenset({"dataset.json", "images", "masks", "labels"})
VIDEO_ENTRIES = frozenset({"video.json", "video.mp4", "ground_truth.parquet"})
# Files an operating system drops into any folder it shows; not worth refusing for.
_OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
# Keys every video.json has had, for videos written before VIDEO_FORMAT existed.
_VIDEO_KEYS = frozenset({"config", "seed", "settings", "frames", "fps", "scene"})


def synth_output_kind(folder: str | Path) -> str | None:
    """Which ``tem-track synth`` output ``folder`` is, judged by its marker file.

    Returns
    -------
    {"dataset", "video"} or None
        ``"dataset"``: a ``dataset.json`` of format ``tem-track-synth``; ``"video"``: a
        ``video.json`` of format ``tem-track-synth-video`` (or, written before that
        marker, one with every key a synthetic video's has); None otherwise.
    """
    folder = Path(folder)
    for name, kind in (("dataset.json", "dataset"), ("video.json", "video")):
        try:
            document = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(document, dict):
            continue
        if kind == "dataset" and document.get("format") == FORMAT:
            return kind
        if kind == "video" and (document.get("format") == VIDEO_FORMAT or (
                "format" not in document and _VIDEO_KEYS <= document.keys())):
            return kind
    return None


def check_replaceable(out: str | Path) -> bool:
    """Whether the existing ``out`` may be replaced by a synth output, or an error saying why not.

    ``--overwrite`` replaces only what ``tem-track synth`` wrote: an empty folder, or a
    synthetic dataset or video folder (:func:`synth_output_kind`) holding nothing but
    what the writer puts there, so that a mistyped ``--out`` never deletes someone's
    work.

    Parameters
    ----------
    out : path
        An existing path.

    Returns
    -------
    bool
        True when ``out`` is an empty folder (usable even without ``--overwrite``),
        False when it is a synth output.

    Raises
    ------
    FileExistsError
        ``out`` is a file, a folder that is not a synth output, or a synth output that
        also holds other files (named in the message). Nothing is touched.
    """
    out = Path(out)
    if not out.is_dir():
        raise FileExistsError(
            f"{out} is a file, not a folder tem-track synth wrote, so it is not replaced; choose another --out"
        )
    entries = sorted(p.name for p in out.iterdir() if p.name not in _OS_LITTER)
    if not entries:
        return True
    kind = synth_output_kind(out)
    if kind is None:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise FileExistsError(
            f"{out} does not look like a tem-track synth dataset (no dataset.json or video.json written by "
            f"tem-track synth; it holds {shown}), so it is not replaced even with --overwrite; "
            "choose another --out"
        )
    foreign = [name for name in entries if name not in (DATASET_ENTRIES if kind == "dataset" else VIDEO_ENTRIES)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{out} is a tem-track synth {kind} but also holds files tem-track synth did not write ({shown}), "
            "so it is not replaced even with --overwrite; move them out or choose another --out"
        )
    return False


def prepare_output(out: Path, *, overwrite: bool) -> bool:
    """Check an output folder before the work; returns whether publishing may replace it.

    A missing ``out`` is fine; an existing one needs ``overwrite`` (and must pass
    :func:`check_replaceable`), except an empty folder, which is used as it is.
    """
    if not out.exists() and not out.is_symlink():
        return False
    if out.name in ("", ".", ".."):
        raise ValueError(f"the output folder must be named, not {str(out)!r}: give --out a new folder's name")
    empty = check_replaceable(out)
    if not empty and not overwrite:
        raise FileExistsError(f"output folder {out} exists; choose another or pass overwrite (--overwrite)")
    return True


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of a dataset generated with ``seed`` (independent streams)."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),)).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] float image to uint8 (round half to even)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    # np.savez stamps the current time into the zip entries; fixed dates keep files
    # byte-identical between runs.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def labels_of(sample: Sample, *, image: str, seed: int) -> dict:
    """The label document of a sample: centrelines (x, y px, 0.01 px) and its scene."""
    return {
        "image": image,
        "seed": seed,
        "size": list(sample.scene.size),
        "dislocations": [
            {"id": int(i), "pileup": int(p), "points": np.round(c, 2).tolist()}
            for i, p, c in zip(sample.ids, sample.pileups, sample.centrelines)
        ],
        "scene": sample.scene.model_dump(mode="json"),
    }


def write_sample(root: Path, index: int, sample: Sample, *, seed: int, labelme: bool = False) -> None:
    """Write one sample's image, masks and labels under ``root`` (labels last).

    With ``labelme``, the centrelines are also written as ``images/NNNNNN.json`` beside
    the image, where labelme finds them (track ids as group ids).
    """
    name = sample_name(index)
    ok, png = cv2.imencode(".png", to_uint8(sample.image))
    if not ok:
        raise OSError(f"could not encode image {index}")
    write_atomic(root / "images" / f"{name}.png", png.tobytes())
    write_atomic(
        root / "masks" / f"{name}.npz",
        _npz_bytes({"masks": sample.masks, "ids": sample.ids, "pileups": sample.pileups}),
    )
    if labelme:
        from temtrack.sdk.labelme import write_labelme

        write_labelme(
            root / "images" / f"{name}.json",
            sample.centrelines,
            image_shape=sample.image.shape,
            image_path=f"{name}.png",
            group_ids=[int(i) for i in sample.ids],
            overwrite=True,
        )
    labels = labels_of(sample, image=f"images/{name}.png", seed=seed)
    write_atomic(root / "labels" / f"{name}.json", json.dumps(labels).encode())


@dataclass(frozen=True)
class _Job:
    config: SynthConfig
    seed: int
    root: Path
    backgrounds: str | None
    labelme: bool

    def __call__(self, index: int) -> int:
        seed = sample_seed(self.seed, index)
        scene = sample_scene(self.config, seed, backgrounds=self.backgrounds)
        sample = render_scene(scene, backgrounds=self.backgrounds)
        write_sample(self.root, index, sample, seed=seed, labelme=self.labelme)
        return index


def write_dataset(
    out: str | Path,
    config: SynthConfig,
    n: int,
    *,
    seed: int = 0,
    backgrounds: str | Path | None = None,
    workers: int = 1,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    labelme: bool = False,
) -> Path:
    """Generate ``n`` samples of ``config`` into the folder ``out``.

    Parameters
    ----------
    out : path
        Dataset folder; must not exist unless ``overwrite`` (replaced only once the new
        dataset is complete), or be an empty folder. ``overwrite`` replaces only a
        folder tem-track synth wrote (:func:`check_replaceable`).
    config : SynthConfig
    n : int
        Number of images (>= 1).
    seed : int
        Dataset seed; sample ``i`` uses ``sample_seed(seed, i)``.
    backgrounds : path, optional
        Folder of real background patches (for configs that use them).
    workers : int
        Processes generating in parallel.
    resume : bool
        Continue an interrupted run from ``out.partial`` (same config and seed).
    progress : bool
        Show a progress bar on a terminal.
    labelme : bool
        Also write each image's centrelines as labelme JSON beside it.
    """
    out = Path(out)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    replace = prepare_output(out, overwrite=overwrite)
    if backgrounds is not None:
        from .background import list_patch_folder

        backgrounds = str(Path(backgrounds).resolve())
        list_patch_folder(backgrounds)  # a missing or empty folder fails now, not after the first image
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": _generator(),
        "preset": config.name,
        "seed": int(seed),
        "n": n,
        "size": list(config.size),
        "backgrounds": backgrounds,
        "labelme": labelme,
        "config": config.model_dump(mode="json"),
    }
    partial = out.with_name(out.name + ".partial")
    done: set[int] = set()
    fresh = not (partial.exists() or partial.is_symlink())
    if not fresh:
        if synth_output_kind(partial) != "dataset":
            raise FileExistsError(
                f"{partial} exists but is not an interrupted tem-track synth run (no dataset.json written by "
                "tem-track synth); move it away or choose another --out"
            )
        if not resume:
            raise FileExistsError(
                f"{partial} holds an interrupted run; pass resume (--resume) to continue it or delete it"
            )
        previous = json.loads((partial / "dataset.json").read_text())
        if {k: previous.get(k) for k in header if k != "generator"} != {k: v for k, v in header.items() if k != "generator"}:
            raise DatasetError(f"{partial} was started with other settings; it cannot be resumed with these")
        done = {int(p.stem) for p in (partial / "labels").glob("*.json") if p.stem.isdigit()}
    else:
        for sub in ("images", "masks", "labels"):
            (partial / sub).mkdir(parents=True)
        write_atomic(partial / "dataset.json", json.dumps(header, indent=2).encode())

    todo = [i for i in range(n) if i not in done]
    job = _Job(config, int(seed), partial, backgrounds, labelme)
    bar = _progress(total=n, initial=n - len(todo), enabled=progress, desc=f"synth {config.name}")
    try:
        if workers == 1:
            for index in todo:
                job(index)
                bar.update()
        else:
            import multiprocessing
            import os

            from temtrack.sdk.pipeline import interrupts_ignored, worker_init

            # Workers leave Ctrl-C to this process and end when it dies.
            with interrupts_ignored():
                pool = multiprocessing.get_context("spawn").Pool(workers, worker_init, (os.getpid(),))
            with pool:
                for _ in pool.imap_unordered(job, todo, chunksize=4):
                    bar.update()
    except Exception:
        # A run that fails before its first sample (a bad config, unreadable patches)
        # leaves nothing to resume: remove the folder it made, so the next run does
        # not trip over it. An interrupted run (Ctrl-C) or one with samples stays.
        if fresh and not any((partial / "labels").glob("*.json")):
            shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        bar.close()
    if out.exists() or out.is_symlink():  # again: it may have changed during the run
        replace = prepare_output(out, overwrite=overwrite)
    return publish_folder(partial, out, overwrite=replace)


def _generator() -> str:
    from temtrack import __version__

    return f"tem-track {__version__}"


def _progress(*, total: int, initial: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not (enabled and sys.stderr.isatty()))


# --- the generator again ----------------------------------------------------------------


def regenerate(label_file: str | Path, *, backgrounds: str | Path | None = None) -> Sample:
    """Render a sample again from its label JSON alone (its scene), bit for bit."""
    path = Path(label_file)
    labels = json.loads(path.read_text())
    if "scene" not in labels:
        raise DatasetError(f"{path} holds no scene to regenerate from")
    return render_scene(Scene.model_validate(labels["scene"]), backgrounds=backgrounds)


def config_of(root: str | Path) -> SynthConfig:
    """The generator config a dataset folder was written with."""
    return validate_config(read_header(root)["config"])
