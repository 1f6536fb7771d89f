"""Atomic files and folders: outputs that appear whole or not at all (``write_atomic``, ``PendingFile``).

A long job writes into a temporary sibling folder and publishes it with one rename when
complete, so a crash never leaves a half-written folder under the final name, and an
existing output is replaced only once its successor is complete (and only when asked).
Standard library only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path


class PendingFile:
    """A file written under a temporary sibling name and published by one rename.

    For writers that keep a file open across many calls (a video encoder):
    :func:`write_atomic` is the one-call form. Nothing is created until something
    writes to :attr:`tmp`.

    Parameters
    ----------
    path : path
        The final file; its folder must exist.

    Attributes
    ----------
    path : Path
        The final file.
    tmp : Path
        The temporary sibling to write: ``.NAME.<random>.tmp`` in the same folder (so
        the rename is atomic), hidden, and ending in ``.tmp`` (give writers that go by
        the suffix their format explicitly).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> pending = PendingFile(folder / "out.txt")
    >>> _ = pending.tmp.write_text("done")
    >>> pending.publish().read_text(), sorted(p.name for p in folder.iterdir())
    ('done', ['out.txt'])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")

    def publish(self, *, fsync: bool = False) -> Path:
        """Rename :attr:`tmp` to :attr:`path` (replacing it); returns :attr:`path`.

        With ``fsync`` the file is flushed to disk first, so that after a power cut
        ``path`` holds the old content or the new, never an empty file.
        """
        if fsync:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Remove :attr:`tmp` if it exists; :attr:`path` is left as it was."""
        self.tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, content, *, fsync: bool = False) -> Path:
    """Write one file via a temporary sibling, then rename (atomic on one file system).

    Every atomic write of a single file in tem-track goes through here (or through
    :class:`PendingFile`, which this uses).

    Parameters
    ----------
    path : path
        Destination; its folder must exist.
    content : bytes, str or callable
        The bytes to write, text to write as UTF-8, or a writer ``write(tmp)`` that
        writes the content to the temporary path ``tmp`` (it ends in ``.tmp``: give
        savefig-like writers their format explicitly). A writer may raise to cancel.
    fsync : bool
        Flush the file to disk before the rename, so that after a power cut ``path``
        holds the old content or the new, never an empty file.

    Returns
    -------
    Path
        ``path``. On any error the temporary file is removed and ``path`` is left as
        it was.
    """
    if isinstance(content, str):
        content = content.encode("utf-8")
    if not (isinstance(content, (bytes, bytearray, memoryview)) or callable(content)):
        raise TypeError(f"content must be bytes, str or a callable write(tmp), got {type(content).__name__}")
    pending = PendingFile(path)
    try:
        if callable(content):
            content(pending.tmp)
            return pending.publish(fsync=fsync)
        # os.open honours the umask (unlike mkstemp); O_EXCL never reuses a stray file.
        fd = os.open(pending.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        return pending.publish()
    except BaseException:
        pending.discard()
        raise


def new_partial_folder(path: str | Path) -> Path:
    """A fresh, empty temporary folder beside ``path`` (same file system, so renames are atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the output is an ordinary folder
    return partial


def publish_folder(partial: str | Path, path: str | Path, *, overwrite: bool) -> Path:
    """Rename the complete folder ``partial`` to ``path``.

    An existing ``path`` raises :class:`FileExistsError` unless ``overwrite``; then it is
    moved aside, replaced, and deleted only after the rename succeeded (restored if not).
    """
    partial, path = Path(partial), Path(path)
    if not path.exists() and not path.is_symlink():
        os.replace(partial, path)
        return path
    if not overwrite:
        raise FileExistsError(f"output {path} already exists; pass overwrite (--overwrite) to replace it")
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, aside / path.name)
    try:
        os.replace(partial, path)
    except BaseException:
        os.replace(aside / path.name, path)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    return path
