"""Catalogue cases of the main job's outputs and runs: overwrite, outputs that are
inputs, full disks, permissions, locks, frame ranges, workers, broken models.

``$B`` below is ``--backend classical --quiet --workers 0`` (fast, no model).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket

from _hostile import Case

from temtrack.cli import main
from temtrack.sdk.results import output_paths, read_metadata

B = ["--backend", "classical", "--quiet", "--workers", "0", "--no-summary"]
TABLES = ("s.parquet", "s_tracks.parquet", "s_pairs.parquet")


def _earlier_run(folder, *extra):
    """A complete earlier run into s.parquet (the outputs a failed overwrite must keep)."""
    assert main(["v.mp4", "--out", "s.parquet", *B, "--end", "4", *extra]) == 0


def _earlier_run_with_pictures(folder):
    """An earlier run with every output: tables, overlay, plots and summary."""
    assert main(["v.mp4", "--out", "s.parquet", *B[:-1], "--end", "4", "--overlay", "o.mp4", "--plots", "plots"]) == 0


def _no_temporary_files(folder, output):
    stray = [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not stray, stray


def _kept_for_resume(folder, output):
    """The failed run's frames stay in the partial folder, and --resume completes it."""
    _no_temporary_files(folder, output)
    partial = output_paths(folder / "s.parquet")["partial"]
    assert sorted(partial.glob("chunk-*.json")), "the finished frames were not kept"
    assert main(["v.mp4", "--out", "s.parquet", *B, "--resume", "--overwrite"]) == 0
    assert read_metadata(folder / "s.parquet")["frames_processed"] == 10
    assert not partial.exists()


def _full_disk_at(call: int):
    """Patch the table writer so that its ``call``-th final file fills the disk after
    writing part of it (the file stays behind, as on a real full disk)."""

    def patch(monkeypatch, folder):
        import temtrack.sdk.results as results

        real = results.stage_file
        calls = []

        def stage_file(tmp, content, **options):
            calls.append(tmp)
            if len(calls) == call:
                with open(tmp, "wb") as handle:
                    handle.write(b"PAR1 half a table")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            return real(tmp, content, **options)

        monkeypatch.setattr(results, "stage_file", stage_file)

    return patch


def _rename_fails_for(fragment: str):
    """Patch the commit's renames: moving a staged file whose name holds ``fragment``
    into place fails (after the earlier outputs were already swapped in)."""

    def patch(monkeypatch, folder):
        import temtrack.sdk.atomic as atomic

        real = os.replace

        def replace(src, dst):
            if fragment in os.path.basename(os.fspath(src)) and os.fspath(src).endswith((".tmp", ".partial")):
                raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(dst))
            return real(src, dst)

        monkeypatch.setattr(atomic.os, "replace", replace)

    return patch


def _no_write_permission(name: str):
    """Simulate a folder this user cannot write to (the suite may run as root, which
    ignores permission bits)."""

    def patch(monkeypatch, folder):
        real = os.access

        def access(path, mode, **kwargs):
            if os.path.abspath(path) == str(folder / name) and mode & os.W_OK:
                return False
            return real(path, mode, **kwargs)

        monkeypatch.setattr(os, "access", access)

    return patch


def _permission_denied_on_mkdir(monkeypatch, folder):
    """A folder whose creation is refused late (an immutable parent, an ACL)."""
    from pathlib import Path

    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name.endswith(".partial"):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def _lock_held_by(pid: int):
    def setup(folder):
        (folder / ".s.parquet.lock").write_text(f"{pid} {socket.gethostname()}\n")

    return setup


def _nan_model(folder):
    from _onnx_models import dark_line_model

    dark_line_model(folder / "nan.onnx", size=(96, 96), k=float("nan"), output="logits")


def _replaced(folder, output):
    """The earlier outputs were replaced by a complete run of all 10 frames."""
    assert read_metadata(folder / "s.parquet")["frames_processed"] == 10
    assert (folder / "plots" / "plots.json").is_file()
    _no_temporary_files(folder, output)


def _absent(*names):
    """A check that none of ``names`` (relative to the folder) exists afterwards."""

    def check(folder, output):
        present = [name for name in names if (folder / name).exists()]
        assert not present, f"written although the command failed: {present}"

    return check


def _thesis(name):
    def setup(folder):
        (folder / name).mkdir()
        (folder / name / "thesis.tex").write_text("\\chapter{Years of work}")

    return setup


CASES = [
    # --- data loss ---------------------------------------------------------------------
    Case("overwrite-disk-full-while-staging", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--overwrite"], 1, r"no space left on the device.*: s_pairs\.parquet\n",
         setup=_earlier_run, patch=_full_disk_at(2), check=_kept_for_resume),
    Case("overwrite-rename-fails-midway", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B[:-1], "--overwrite", "--plots", "plots", "--overlay", "o.mp4"], 1,
         r"input/output error", setup=_earlier_run_with_pictures, patch=_rename_fails_for(".o.mp4."),
         check=_no_temporary_files),
    Case("overwrite-everything-succeeds", "regression",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B[:-1], "--overwrite", "--plots", "plots", "--overlay", "o.mp4"], 0,
         r"10 frames", setup=_earlier_run_with_pictures,
         changes=(*TABLES, "s_summary.html", "o.mp4", "plots/pair_distances_01.png", "plots/positions_01.png",
                  "plots/plots.json"),
         check=_replaced),
    Case("summary-would-replace-a-foreign-page", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B[:-1], "--overwrite"], 2,
         r"s_summary\.html exists and is not a summary tem-track wrote",
         setup=lambda f: (f / "s_summary.html").write_text("<html>my lab notebook</html>")),
    Case("out-is-a-folder", "data loss", lambda f, v: ["v.mp4", "--out", "results", *B, "--overwrite"], 2,
         r"results is a folder", setup=_thesis("results")),
    Case("out-is-the-input", "data loss", lambda f, v: ["v.mp4", "--out", "v.mp4", *B, "--overwrite"], 2,
         r"out v\.mp4 is the input; tem-track never writes over its input"),
    Case("overlay-is-the-input", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--overlay", "v.mp4", "--overwrite"], 2,
         r"overlay v\.mp4 is the input; tem-track never writes over its input"),
    Case("overlay-is-someone-elses-video", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--overlay", "talk.mp4", "--overwrite"], 2,
         r"talk\.mp4 exists and is not an overlay tem-track wrote", setup=lambda f: shutil.copy(f / "v.mp4", f / "talk.mp4")),
    Case("overlay-same-as-out", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--overlay", "s.parquet"], 2, r"name the same file"),
    Case("plots-into-a-thesis-folder", "data loss",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--plots", "thesis", "--overwrite"], 2,
         r"thesis holds files tem-track did not write", setup=_thesis("thesis")),
    Case("plots-into-the-input-folder", "data loss",
         lambda f, v: ["frames", "--out", "s.parquet", *B, "--plots", "frames", "--overwrite"], 2,
         r"plots frames is the input; tem-track never writes over its input",
         setup=lambda f: (f / "frames").mkdir() or shutil.copy(f / "v.mp4", f / "frames" / "keep.mp4")),
    # --- silent ------------------------------------------------------------------------
    Case("start-past-the-end", "silent", lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--start", "50"], 2,
         r"start 50 is past the end of .*v\.mp4, which has 10 frames",
         check=_absent(".s.parquet.partial", "s.parquet")),
    Case("workers-1000", "silent", lambda f, v: ["v.mp4", "--out", "s.parquet", "--backend", "classical", "--quiet",
                                                 "--workers", "1000", "--end", "3"], 0,
         rf"warning: workers 1000 is more than the {os.cpu_count()} CPU cores here; using {os.cpu_count()}"),
    Case("out-ends-in-a-slash", "silent", lambda f, v: ["v.mp4", "--out", "o/ts/", *B], 2, r"ends in '/'",
         check=_absent("o/ts")),
    Case("model-returns-nan", "silent", lambda f, v: ["v.mp4", "--out", "s.parquet", "--model", "nan.onnx", "--quiet",
                                                      "--workers", "0"], 2,
         r"model returned NaN or infinite values.*frame 0", setup=_nan_model,
         check=_absent("s.parquet")),
    # --- tracebacks --------------------------------------------------------------------
    Case("read-only-output-folder", "traceback", lambda f, v: ["v.mp4", "--out", "ro/s.parquet", *B], 1,
         r"permission denied.*ro", setup=lambda f: (f / "ro").mkdir(), patch=_no_write_permission("ro")),
    Case("permission-refused-late", "traceback", lambda f, v: ["v.mp4", "--out", "s.parquet", *B], 1,
         r"operation not permitted.*s\.parquet\.partial", patch=_permission_denied_on_mkdir),
    Case("overlay-is-a-folder", "traceback",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--overlay", "ov"], 2, r"overlay ov is a folder",
         setup=lambda f: (f / "ov").mkdir()),
    Case("plots-is-a-file", "traceback",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--plots", "notes.txt"], 2, r"plots notes\.txt is a file",
         setup=lambda f: (f / "notes.txt").write_text("my notes")),
    # --- two runs on one output ----------------------------------------------------------
    Case("second-run-on-the-same-output", "clear",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B], 2, r"another tem-track run \(PID 1\) is writing .*s\.parquet",
         setup=_lock_held_by(1)),
    Case("stale-lock-is-taken-over", "regression",
         lambda f, v: ["v.mp4", "--out", "s.parquet", *B, "--end", "3"], 0, r"3 frames",
         setup=_lock_held_by(2**22 + 12345), changes=(".s.parquet.lock",),
         check=_absent(".s.parquet.lock")),
]
