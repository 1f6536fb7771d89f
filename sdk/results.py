"""The main job's output files, written so that nothing is lost.

A run writes three Parquet tables (the schema is documented in the README):

- ``OUT`` (e.g. ``splines.parquet``): one row per dislocation per frame;
- ``OUT_tracks.parquet``: one row per track per frame (positions, velocities, ...);
- ``OUT_pairs.parquet``: one row per pair of neighbouring tracks per frame.

While the run goes, frames are stored in chunks inside a hidden folder beside the
output, ``.OUT.partial/``: each chunk is three small Parquet files written to a
temporary name and renamed, then a JSON marker that makes it count. When the run
completes, the chunks are streamed into the final files under temporary names, which
are then swapped in together (:class:`~temtrack.sdk.atomic.Transaction`: any failure
leaves earlier outputs as they were, and the chunks for ``resume``), and the folder is
removed. Existing outputs are replaced only when asked, and only when they are
tem-track's own (:func:`check_replaceable`). An interrupted run leaves complete
chunks behind; ``resume`` replays them (the tracker state is rebuilt from the stored
curves, which gives the same ids as an uninterrupted run) and continues after the last
complete frame. The folder also records the settings of the run; resuming with other
settings is refused.

pyarrow is imported lazily. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from .atomic import ChunkFolder, PendingFile, Transaction, stage_file, write_atomic

__all__ = ["RunWriter", "SPLINES_COLUMNS", "check_replaceable", "output_paths", "summary_path", "read_metadata", "splines_frame", "splines_table"]

METADATA_KEY = b"temtrack"
# Column -> (pyarrow type name, description); the README's schema table is this.
SPLINES_COLUMNS = {
    "frame": ("int64", "frame index in the video (0-based)"),
    "time_s": ("float64", "seconds from the first frame (NaN when the source has no timing)"),
    "track_id": ("int64", "persistent id of the dislocation across frames"),
    "x": ("list<float32>", "spline points, column px in the original frame (n points, equally spaced)"),
    "y": ("list<float32>", "spline points, row px in the original frame"),
    "length_px": ("float64", "spline length, px"),
    "length_nm": ("float64", "spline length, nm (null without a pixel size)"),
    "mean_curvature": ("float64", "mean unsigned curvature, 1/px"),
    "max_curvature": ("float64", "largest curvature, 1/px"),
    "centroid_x": ("float64", "mean of the points, px"),
    "centroid_y": ("float64", "mean of the points, px"),
    "score": ("float32", "mean mask probability over its pixels (1 for thresholded masks)"),
    "mask_index": ("int32", "model output mask it came from"),
    "n_pixels": ("int32", "mask pixels it owns (model resolution)"),
    "closed": ("bool", "a loop"),
    "multiple": ("bool", "its mask held several dislocations"),
    "at_edge": ("bool", "an end within 2 px of the frame border: cut by the field of view"),
}


def _types():
    import pyarrow as pa

    named = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
        "list<float32>": pa.list_(pa.float32()),
    }
    return pa.schema([(name, named[kind]) for name, (kind, _) in SPLINES_COLUMNS.items()])


def _stem(out: Path) -> str:
    """``OUT``'s name without ``.parquet``: the start of every file written beside it."""
    return out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name


def summary_path(out: str | Path) -> Path:
    """``OUT_summary.html`` beside the splines file ``out`` (``splines.parquet`` ->
    ``splines_summary.html``)."""
    out = Path(out)
    return out.with_name(f"{_stem(out)}_summary.html")


def output_paths(out: str | Path) -> dict[str, Path]:
    """The files of a run writing ``out``: ``splines``, ``tracks``, ``pairs`` and the
    hidden ``partial`` folder."""
    out = Path(out)
    stem = _stem(out)
    return {
        "splines": out,
        "tracks": out.with_name(f"{stem}_tracks.parquet"),
        "pairs": out.with_name(f"{stem}_pairs.parquet"),
        "partial": out.with_name(f".{out.name}.partial"),
    }


def read_metadata(path: str | Path) -> dict:
    """The run description stored in an output file's key-value metadata."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} holds no tem-track metadata; is it a tem-track output?")
    return json.loads(meta[METADATA_KEY])


def splines_table(rows: list, pixel_size_nm: float | None):
    """The splines table (pyarrow) of ``(frame, time_s, track_id, DislocationRecord)`` rows."""
    import pyarrow as pa

    records = [r[3] for r in rows]
    columns = {
        "frame": [r[0] for r in rows],
        "time_s": [r[1] for r in rows],
        "track_id": [r[2] for r in rows],
        "x": [d.points[:, 0] for d in records],
        "y": [d.points[:, 1] for d in records],
        "length_px": [d.length_px for d in records],
        "length_nm": [None if pixel_size_nm is None else d.length_px * pixel_size_nm for d in records],
        "mean_curvature": [d.mean_curvature for d in records],
        "max_curvature": [d.max_curvature for d in records],
        "centroid_x": [d.centroid[0] for d in records],
        "centroid_y": [d.centroid[1] for d in records],
    }
    for name in ("score", "mask_index", "n_pixels", "closed", "multiple", "at_edge"):
        columns[name] = [getattr(d, name) for d in records]
    return pa.table(columns, schema=_types())


def splines_frame(results: list, pixel_size_nm: float | None):
    """The splines table (pandas) of :class:`~temtrack.sdk.pipeline.FrameResult` s."""
    rows = [(r.frame, r.time_s, track, d) for r in results for d, track in zip(r.dislocations, r.track_ids.tolist())]
    return splines_table(rows, pixel_size_nm).to_pandas()


def _write_atomic_table(table, path: Path) -> None:
    import pyarrow.parquet as pq

    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


class RunWriter:
    """Chunked, resumable, atomic writer of one run's three tables.

    Parameters
    ----------
    out : path
        The splines file; the tracks and pairs files go beside it (:func:`output_paths`).
    metadata : dict
        JSON-able description of the run (version, model, settings, input, ...),
        stored in every file. Its ``"settings"`` entry must match to resume.
    overwrite : bool
        Replace existing outputs (only once the new ones are complete).
    resume : bool
        Continue an interrupted run from its partial folder.
    chunk_frames : int
        Frames per chunk: what an interruption can lose at most.

    Raises
    ------
    FileExistsError
        Outputs exist and not ``overwrite``; or a partial run exists and neither
        ``resume`` nor ``overwrite`` is given.
    ValueError
        ``resume`` with a partial run made with other settings or input.
    """

    def __init__(self, out, *, metadata: dict, overwrite: bool = False, resume: bool = False, chunk_frames: int = 200):
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.paths = output_paths(out)
        self.metadata = metadata
        self.chunk_frames = chunk_frames
        self.overwrite = overwrite
        partial = self.paths["partial"]
        existing = [p for k, p in self.paths.items() if k != "partial" and (p.exists() or p.is_symlink())]
        if existing and not overwrite:
            raise FileExistsError(f"output {', '.join(map(str, existing))} already exists; pass --overwrite to replace it")
        for path in existing:
            check_replaceable(path, "output")
        self._folder = ChunkFolder(partial, metadata, overwrite=overwrite, resume=resume)
        self.chunks = self._folder.chunks
        self._rows: dict[str, list] = {"splines": [], "tracks": [], "pairs": []}
        self._frames: list[tuple[int, float]] = []  # (frame, time_s) buffered for the next chunk

    @property
    def resumed_frames(self) -> int:
        """Frames already stored by an interrupted run."""
        return sum(chunk["n_frames"] for chunk in self.chunks)

    @property
    def next_frame(self) -> int | None:
        """First frame index after the stored ones (None when nothing is stored)."""
        return self.chunks[-1]["last_frame"] + 1 if self.chunks else None

    def stored_frames(self) -> Iterator[tuple[int, float, list, np.ndarray]]:
        """``(frame, time_s, curves, track_ids)`` of every stored frame, in order,
        including frames without dislocations; chunk by chunk (bounded memory)."""
        import pyarrow.parquet as pq

        partial = self.paths["partial"]
        for chunk in self.chunks:
            table = pq.read_table(partial / f"{chunk['name']}_splines.parquet", columns=["frame", "track_id", "x", "y"])
            frames = table.column("frame").to_numpy()
            ids = table.column("track_id").to_numpy()
            xs, ys = table.column("x").to_pylist(), table.column("y").to_pylist()
            rows: dict[int, list] = {}
            for row, frame in enumerate(frames.tolist()):
                rows.setdefault(frame, []).append(row)
            for frame, time_s in zip(chunk["frames"], chunk["times"]):
                picked = rows.get(frame, [])
                curves = [np.column_stack([xs[i], ys[i]]).astype(np.float32) for i in picked]
                yield frame, float("nan") if time_s is None else time_s, curves, ids[picked].astype(np.int64)

    def add(self, result) -> None:
        """Store one :class:`~temtrack.sdk.pipeline.FrameResult`."""
        rows = self._rows["splines"]
        for record, track in zip(result.dislocations, result.track_ids.tolist()):
            rows.append((result.frame, result.time_s, track, record))
        for name in ("tracks", "pairs"):
            frame_rows = getattr(result, name)
            if frame_rows is not None:  # empty frames too: they carry the column types
                self._rows[name].append(frame_rows)
        self._frames.append((result.frame, result.time_s))
        if len(self._frames) >= self.chunk_frames:
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames as one complete chunk."""
        import pandas as pd
        import pyarrow as pa

        frames = self._frames
        if not frames:
            return
        partial = self.paths["partial"]
        name = self._folder.next_name
        for table_name in ("tracks", "pairs"):
            parts = self._rows[table_name]
            if parts:
                table = pa.Table.from_pandas(pd.concat(parts, ignore_index=True), preserve_index=False)
                _write_atomic_table(table, partial / f"{name}_{table_name}.parquet")
        _write_atomic_table(splines_table(self._rows["splines"], self.metadata.get("pixel_size_nm")), partial / f"{name}_splines.parquet")
        marker = {
            "name": name,
            "n_frames": len(frames),
            "first_frame": frames[0][0],
            "last_frame": frames[-1][0],
            "frames": [f for f, _ in frames],
            "times": [None if t is None or t != t else t for _, t in frames],
        }
        self._folder.commit(marker)  # the chunk counts from here on
        self._rows = {"splines": [], "tracks": [], "pairs": []}
        self._frames = []

    def finish(self) -> dict[str, Path]:
        """Flush, write the final files and swap them in together, remove the partial folder.

        Returns the output paths (``splines``, ``tracks``, ``pairs``). On any error the
        earlier outputs are left as they were and the chunks stay for ``resume``.
        """
        outputs = Transaction()
        try:
            self.stage(outputs)
            outputs.commit()
        except BaseException:
            outputs.discard()
            raise
        return self.cleanup()

    def stage(self, outputs: Transaction) -> dict[str, Path]:
        """Flush, then write the three final files under temporary names into ``outputs``
        (a :class:`~temtrack.sdk.atomic.Transaction` the caller commits, then calls
        :meth:`cleanup`). Returns the temporary file of each table, by name."""
        import pyarrow.parquet as pq

        self.flush()
        partial = self.paths["partial"]
        meta = {METADATA_KEY: json.dumps({**self.metadata, "frames_processed": self.resumed_frames}, default=str).encode()}
        staged = {}
        for table_name in ("tracks", "pairs", "splines"):
            files = [partial / f"{c['name']}_{table_name}.parquet" for c in self.chunks]
            files = [f for f in files if f.exists()]
            target = self.paths[table_name]
            if target.exists() and not self.overwrite:
                raise FileExistsError(f"output {target} appeared during the run; pass --overwrite to replace it")
            schema = _types() if table_name == "splines" else _common_schema(files)
            schema = schema.with_metadata(meta)

            def write(tmp, files=files, schema=schema):
                with pq.ParquetWriter(tmp, schema) as writer:
                    for file in files:
                        table = pq.read_table(file)
                        if table.num_rows:
                            writer.write_table(table.cast(schema))

            pending = PendingFile(target)
            outputs.add(pending.tmp, target)  # first, so that a failed write is discarded too
            try:
                staged[table_name] = stage_file(pending.tmp, write)
            except OSError as error:
                if error.filename is not None and Path(error.filename) in (pending.tmp, pending.tmp.parent):
                    error.filename = str(target)  # name the output, not its temporary file
                raise
        return staged

    def cleanup(self) -> dict[str, Path]:
        """Remove the partial folder (after the outputs were committed); the output paths."""
        self._folder.remove()
        return {k: v for k, v in self.paths.items() if k != "partial"}


def check_replaceable(path: Path, what: str) -> None:
    """Refuse to replace ``path`` unless it is a tem-track table (its metadata says so).

    Raises
    ------
    FileExistsError
        ``path`` is a folder, or a file without tem-track metadata (not ours to replace).
    """
    if path.is_dir():
        raise FileExistsError(f"{what} {path} is a folder; give a file name, e.g. {path / 'splines.parquet'}")
    try:
        read_metadata(path)
    except Exception:
        raise FileExistsError(
            f"{what} {path} exists and is not a tem-track output (no tem-track metadata), so --overwrite does not "
            "replace it; choose another --out"
        ) from None


def _common_schema(files: list[Path]):
    """The schema of the first chunk with rows (series columns are the tracker's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with_rows = [file for file in files if pq.read_metadata(file).num_rows]
    for file in with_rows or files:
        return pa.schema([f.with_nullable(True) for f in pq.read_schema(file)], metadata=None)
    return pa.schema([])
