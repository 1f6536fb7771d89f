"""Atomic files and folders: outputs that appear whole or not at all.

- :func:`write_atomic` and :class:`PendingFile`: one file, written under a temporary
  sibling name and renamed.
- :func:`new_partial_folder` and :func:`publish_folder`: the same for a folder.
- :class:`Transaction`: several staged files and folders swapped in together, and all
  rolled back when one fails, so a failed ``--overwrite`` leaves the old outputs as they
  were, byte for byte, never a mix of old and new.
- :class:`OutputLock`: one run at a time per output (a lock file holding the PID).

A long job writes into temporary siblings and publishes them with renames when
complete, so a crash never leaves a half-written output under the final name, and an
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
        stage_file(pending.tmp, content, fsync=fsync)
        return pending.publish()
    except BaseException:
        pending.discard()
        raise


def stage_file(tmp: str | Path, content, *, fsync: bool = False) -> Path:
    """Write ``content`` (as :func:`write_atomic` takes it) to the new file ``tmp``.

    An error while writing names the destination: an ``OSError`` without a file name
    (pyarrow's, for a full disk) gets ``tmp``'s final name, i.e. its folder.
    """
    tmp = Path(tmp)
    try:
        if callable(content):
            content(tmp)
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            return tmp
        # os.open honours the umask (unlike mkstemp); O_EXCL never reuses a stray file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        return tmp
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno or _errno_of(error), error.strerror or str(error), str(tmp.parent)) from error
        raise


def _errno_of(error: OSError) -> int | None:
    """The errno an OSError without one states in its text (pyarrow's), or None."""
    import errno

    text = str(error).casefold()
    for code, words in ((errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"),
                        (errno.EROFS, "read-only file system"), (errno.EDQUOT, "quota exceeded")):
        if words in text:
            return code
    return None


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Transaction:
    """Staged files and folders swapped in under their final names together, or not at all.

    Stage each output under a temporary sibling name (``PendingFile(path).tmp``,
    :func:`new_partial_folder`), :meth:`add` it, then :meth:`commit`. The commit moves
    every existing final path aside, renames the staged ones in, and deletes the old
    ones only when all renames succeeded; any failure renames everything back, so the
    old outputs survive byte for byte. Renames within one folder need no free space.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.txt").write_text("old a")
    >>> outputs = Transaction()
    >>> for name in ("a.txt", "b.txt"):
    ...     pending = PendingFile(folder / name)
    ...     _ = pending.tmp.write_text("new")
    ...     outputs.add(pending.tmp, pending.path)
    >>> outputs.commit()
    >>> sorted((p.name, p.read_text()) for p in folder.iterdir())
    [('a.txt', 'new'), ('b.txt', 'new')]
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []

    def add(self, staged: str | Path, final: str | Path) -> None:
        """Stage ``staged`` (a file or folder beside ``final``) to become ``final``."""
        self._staged.append((Path(staged), Path(final)))

    @property
    def finals(self) -> list[Path]:
        return [final for _, final in self._staged]

    def commit(self) -> None:
        """Swap every staged path in; on any error restore the old ones and re-raise."""
        done: list[tuple[Path, Path, Path | None, bool]] = []  # staged, final, aside, renamed in
        try:
            for staged, final in self._staged:
                aside = None
                if final.exists() or final.is_symlink():
                    aside = final.with_name(f".{final.name}.{secrets.token_hex(6)}.old")
                    os.replace(final, aside)
                done.append((staged, final, aside, False))
                os.replace(staged, final)
                done[-1] = (staged, final, aside, True)
        except BaseException:
            for staged, final, aside, renamed in reversed(done):
                if renamed:
                    os.replace(final, staged)  # discarded below, with the rest
                if aside is not None:
                    os.replace(aside, final)
            self.discard()
            raise
        for _, _, aside, _ in done:
            if aside is not None:
                _remove(aside)
        self._staged = []

    def discard(self) -> None:
        """Remove every staged path that was not committed; the finals stay as they are."""
        for staged, _ in self._staged:
            _remove(staged)
        self._staged = []


class OutputLock:
    """A lock file that lets one process at a time write an output.

    The file (``path``) holds the PID and host of its owner. A lock whose owner on this
    host is no longer running is stale and taken over.

    Parameters
    ----------
    path : path
        The lock file, e.g. ``.splines.parquet.lock`` beside the output.
    what : str
        The output, named in the refusal.

    Raises
    ------
    FileExistsError
        At :meth:`acquire`: another live process holds the lock (the message gives its PID).
    """

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = Path(path), what
        self._held = False

    def acquire(self) -> "OutputLock":
        import socket

        mine = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    pid, host = owner
                    where = "" if host == socket.gethostname() else f" on {host}"
                    raise FileExistsError(
                        f"another tem-track run (PID {pid}{where}) is writing {self.what}; wait for it to end or stop it "
                        f"(its lock: {self.path})"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(mine)
            self._held = True
            return self
        raise FileExistsError(f"cannot take the lock {self.path} for {self.what}")

    def _owner(self) -> tuple[int, str] | None:
        """``(pid, host)`` of a live owner, None when the lock is stale or unreadable."""
        import socket

        try:
            pid_text, _, host = self.path.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host and host != socket.gethostname():
            return pid, host  # cannot check another machine's processes: assume it lives
        if pid == os.getpid():
            return pid, host  # another run in this very process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # exists, owned by someone else
        return pid, host

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class ChunkFolder:
    """A long run's results stored in chunks, as it goes, in a hidden folder beside its output.

    The folder holds ``run.json`` (the run's metadata) and, per chunk, its files and a
    JSON marker written last: a chunk counts once its marker exists, so an interrupted
    run keeps every complete chunk and ``resume`` continues after the last. The files
    of a chunk are named ``NAME.*`` or ``NAME_*`` after its marker ``NAME.json``.

    Parameters
    ----------
    folder : path
    metadata : dict
        Written to ``run.json``; on resume, its values under ``keys`` must equal the
        stored ones.
    overwrite, resume : bool
        What to do with a folder left by an interrupted run: continue it (``resume``),
        start over (``overwrite``), or refuse (neither).
    keys : tuple of str
        Metadata that must match for a resume.

    Raises
    ------
    FileExistsError
        A folder exists and neither ``resume`` nor ``overwrite`` is given.
    ValueError
        ``resume`` with an unreadable ``run.json`` or other values under ``keys``.
    """

    def __init__(self, folder, metadata: dict, *, overwrite: bool, resume: bool, keys=("settings", "input")):
        import json

        self.folder = Path(folder)
        self.chunks: list[dict] = []
        if self.folder.exists() and resume:
            self._open(metadata, keys)
            return
        if self.folder.exists():
            if not overwrite:
                raise FileExistsError(
                    f"an interrupted run left {self.folder}; pass --resume to continue it or --overwrite to start over"
                )
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_atomic(self.folder / "run.json", json.dumps(metadata, indent=2, default=str))

    def _open(self, metadata: dict, keys) -> None:
        import json

        try:
            stored = json.loads((self.folder / "run.json").read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot resume: {self.folder}/run.json is unreadable ({error}); use --overwrite") from None
        for key in keys:
            was, now = (json.dumps(m.get(key), sort_keys=True, default=str) for m in (stored, metadata))
            if was != now:
                raise ValueError(
                    f"cannot resume {self.folder}: it was started with another {key} "
                    f"({json.dumps(stored.get(key), default=str)[:300]}); use the same options, or --overwrite"
                )
        self.chunks = [json.loads(path.read_text()) for path in sorted(self.folder.glob("chunk-*.json"))]
        # Leftovers of a chunk that was being written when the run stopped (its files
        # without a marker, and the hidden temporary files of write_atomic).
        known = {chunk["name"] for chunk in self.chunks}
        for leftover in self.folder.glob("*.parquet*"):
            if leftover.name.split(".")[0].split("_")[0] not in known:
                leftover.unlink()

    @property
    def next_name(self) -> str:
        """The name of the chunk to write next."""
        return f"chunk-{len(self.chunks):06d}"

    def commit(self, marker: dict) -> None:
        """Make the chunk ``marker["name"]`` count, once its files are written."""
        import json

        write_atomic(self.folder / f"{marker['name']}.json", json.dumps(marker))
        self.chunks.append(marker)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
