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


def write_atomic(path: str | Path, write) -> Path:
    """Write one file via a temporary sibling, then rename (atomic on one file system).

    ``write(tmp)`` writes the content to the temporary path ``tmp`` (it ends in
    ``.tmp``: give savefig-like writers their format explicitly). On any error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write(tmp)
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
