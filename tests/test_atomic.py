"""Output folders appear whole: publish_folder and its users."""

from __future__ import annotations

import os

import pytest

from temtrack.sdk.atomic import new_partial_folder, publish_folder, write_atomic


def _folder_with(path, text):
    partial = new_partial_folder(path)
    (partial / "a.txt").write_text(text)
    return partial


def test_publish_new_refuse_and_replace(tmp_path):
    out = tmp_path / "out"
    publish_folder(_folder_with(out, "one"), out, overwrite=False)
    assert (out / "a.txt").read_text() == "one"
    second = _folder_with(out, "two")
    with pytest.raises(FileExistsError, match="already exists"):
        publish_folder(second, out, overwrite=False)
    assert (out / "a.txt").read_text() == "one" and second.exists()
    publish_folder(second, out, overwrite=True)
    assert (out / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left aside


def test_failed_replace_restores_the_old_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    publish_folder(_folder_with(out, "old"), out, overwrite=False)
    partial = _folder_with(out, "new")
    real_replace = os.replace

    def failing(src, dst):
        if os.fspath(src) == os.fspath(partial):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        publish_folder(partial, out, overwrite=True)
    assert (out / "a.txt").read_text() == "old"


def test_partial_folder_has_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        assert new_partial_folder(tmp_path / "x").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(umask)


@pytest.mark.parametrize("fsync", [False, True])
def test_write_atomic_takes_bytes_text_or_a_writer(tmp_path, fsync):
    write_atomic(tmp_path / "b.bin", b"\x00\x01", fsync=fsync)
    write_atomic(tmp_path / "t.txt", "µm\n", fsync=fsync)
    write_atomic(tmp_path / "w.txt", lambda tmp: tmp.write_text("w"), fsync=fsync)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_bytes() == "µm\n".encode()
    assert (tmp_path / "w.txt").read_text() == "w"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "t.txt", "w.txt"]  # no temporary left


def test_write_atomic_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    with pytest.raises(TypeError, match="content must be"):
        write_atomic(path, 3)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_atomic_honours_the_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        assert write_atomic(tmp_path / "a", b"x").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)


def _staged(folder, name, text, outputs):
    from temtrack.sdk.atomic import PendingFile

    pending = PendingFile(folder / name)
    pending.tmp.write_text(text)
    outputs.add(pending.tmp, pending.path)


def test_transaction_swaps_files_and_folders_together(tmp_path):
    from temtrack.sdk.atomic import Transaction

    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "p.png").write_text("old plot")
    outputs = Transaction()
    _staged(tmp_path, "a.txt", "new a", outputs)
    _staged(tmp_path, "b.txt", "new b", outputs)
    folder = new_partial_folder(tmp_path / "plots")
    (folder / "q.png").write_text("new plot")
    outputs.add(folder, tmp_path / "plots")
    outputs.commit()
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "b.txt").read_text() == "new b"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["q.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "plots"]  # nothing aside


@pytest.mark.parametrize("failing", ["a.txt", "b.txt", "c.txt"])
def test_failed_commit_restores_every_old_output(tmp_path, monkeypatch, failing):
    from temtrack.sdk.atomic import Transaction

    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(f"old {name}")
    outputs = Transaction()
    for name in ("a.txt", "b.txt", "c.txt"):
        _staged(tmp_path, name, "new", outputs)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(os.fspath(src)).startswith(f".{failing}.") and os.fspath(src).endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        outputs.commit()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {n: f"old {n}" for n in ("a.txt", "b.txt", "c.txt")}


def test_lock_refuses_a_live_owner_and_takes_over_a_stale_one(tmp_path):
    import socket
    import subprocess
    import sys

    from temtrack.sdk.atomic import OutputLock

    lock = tmp_path / ".out.lock"
    with OutputLock(lock, "out"):
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(FileExistsError, match=f"PID {os.getpid()}"):
            OutputLock(lock, "out").acquire()
    assert not lock.exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{gone.stdout.strip()} {socket.gethostname()}\n")  # its owner has ended
    with OutputLock(lock, "out"):
        assert lock.read_text().split()[0] == str(os.getpid())
