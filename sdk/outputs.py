"""Output files and folders that appear whole or not at all.

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


def write_atomic(path: str | Path, content, *, fsync: bool = False) -> Path:
    """Write one file via a temporary sibling, then rename (atomic on one file system).

    Parameters
    ----------
    path : path
        Destination; its folder must exist.
    content : bytes, str or callable
        The bytes to write, text to write as UTF-8, or a writer ``write(tmp)`` that
        writes the content to the temporary path ``tmp`` (it ends in ``.tmp``: give
        savefig-like writers their format explicitly).
    fsync : bool
        Flush the file to disk before the rename, so that after a power cut ``path``
        holds the old content or the new, never an empty file.

    Returns
    -------
    Path
        ``path``. On any error the temporary file is removed and ``path`` is left as
        it was.
    """
    path = Path(path)
    if isinstance(content, str):
        content = content.encode("utf-8")
    if not (isinstance(content, (bytes, bytearray, memoryview)) or callable(content)):
        raise TypeError(f"content must be bytes, str or a callable write(tmp), got {type(content).__name__}")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        if callable(content):
            content(tmp)
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            # os.open honours the umask (unlike mkstemp); O_EXCL never reuses a stray file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                if fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
