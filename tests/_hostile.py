"""The hostile-input catalogue's machinery: one :class:`Case` per hostile input or fault.

A case prepares a folder (``setup``), runs one ``tem-track`` command in it (in this
process, through :func:`temtrack.cli.main`, with the folder as working directory), and
asserts three things:

- the exit code;
- the message: a regular expression searched in stderr + stdout, which must also hold
  no ``Traceback``;
- nothing was lost: every file that existed after ``setup`` is byte-for-byte the same
  afterwards, except the ones the case names in ``changes`` (an output it may replace).

``check`` may assert more (what was written, what the metadata says). The case lists
themselves live in ``test_hostile.py`` and the modules it gathers.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FRAMES = 10


@dataclass(frozen=True)
class Case:
    """One catalogue entry.

    Attributes
    ----------
    name : str
        Short id, shown by pytest.
    kind : str
        What main did before: "data loss", "silent", "traceback", "crash", "hang",
        or "clear" for inputs that already gave a clear error (kept as regressions).
    argv : callable
        ``argv(folder, video) -> list`` of the command's arguments (``video`` is the
        shared short synthetic video, copied into the folder as ``v.mp4``).
    code : int
        Expected exit status.
    message : str
        Regular expression expected in stderr + stdout (case-insensitive).
    setup : callable, optional
        ``setup(folder)`` run before the snapshot (files that must survive).
    changes : tuple of str
        Files (relative to the folder) the command may change or remove.
    check : callable, optional
        ``check(folder, output)`` for further assertions.
    patch : callable, optional
        ``patch(monkeypatch, folder)`` to simulate a fault (a full disk, ...).
    """

    name: str
    kind: str
    argv: Callable
    code: int
    message: str
    setup: Callable | None = None
    changes: tuple = ()
    check: Callable | None = None
    patch: Callable | None = None
    marks: tuple = field(default=())


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every regular file under ``folder``."""
    hashes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def assert_nothing_lost(before: dict, after: dict, changes: tuple) -> None:
    """Every file of ``before`` is in ``after`` unchanged, unless named in ``changes``."""
    lost = [name for name, digest in before.items() if name not in changes and after.get(name) != digest]
    assert not lost, f"files changed or lost: {lost}"


def assert_message(output: str, pattern: str) -> None:
    assert "Traceback" not in output, output
    assert re.search(pattern, output, re.IGNORECASE | re.DOTALL), f"{pattern!r} not in:\n{output}"


# A main job made slow (0.3 s per frame) so that a signal reaches it mid-run; run as
# ``python -c SLOW_MAIN ARGS...``.
SLOW_MAIN = """
import pathlib, sys, time
from temtrack.sdk.backends import classical
real = classical.ClassicalBackend.predict_packed
calls = 0
def slow(self, frames):
    global calls
    time.sleep(0.3 * len(frames))
    calls += 1
    pathlib.Path(".predicted").write_text(str(calls))  # how far the run is, for the tests to wait on
    return real(self, frames)
classical.ClassicalBackend.predict_packed = slow
from temtrack.cli import main
sys.exit(main(sys.argv[1:]))
"""


class DyingBackend:
    """The classical backend, except that the process running it kills itself (as the
    out-of-memory killer would) on frames ``size`` px wide."""

    name = "dying"
    input_size = None
    threshold = None

    def __init__(self, size: int):
        self.size = size

    def predict_packed(self, frames):
        import signal

        from temtrack.sdk.backends.classical import ClassicalBackend

        if frames.shape[-1] == self.size:
            os.kill(os.getpid(), signal.SIGKILL)
        return ClassicalBackend().predict_packed(frames)

    def predict(self, frames):
        return self.predict_packed(frames)

    def describe(self) -> dict:
        return {"backend": self.name, "size": self.size}


def children(pid: int) -> list[int]:
    """PIDs of the live (not zombie) processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] not in "ZX":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in "ZX"
