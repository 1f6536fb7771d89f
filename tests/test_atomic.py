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
