"""Output folders appear whole: publish_folder and its users."""

from __future__ import annotations

import os

import pytest

from temtrack.sdk.outputs import new_partial_folder, publish_folder


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
