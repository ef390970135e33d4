"""Atomic writes: the final file gets the mode a plain ``open()`` would give, without touching the process umask."""

from __future__ import annotations

import os
import stat

import pytest

from nezha.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002], ids=oct)
def test_atomic_write_mode_equals_open_and_never_changes_the_umask(umask, tmp_path, monkeypatch):
    """The umask is process-wide: changing it even briefly races with other threads creating files."""
    previous = os.umask(umask)
    try:
        with open(tmp_path / "reference.txt", "w", encoding="utf-8") as f:
            f.write("x")

        def no_umask(mask):
            raise AssertionError(f"os.umask({mask:#o}) called: the umask is process-wide and racy")

        monkeypatch.setattr(os, "umask", no_umask)
        atomic_write_text(tmp_path / "a.txt", "你好")
        atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
        monkeypatch.undo()
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "你好"
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "reference.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "sub" / "b.bin") == 0o666 & ~umask


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old", encoding="utf-8")

    def half_then_fail(p):
        p.write_text("ne", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "vocab.txt"
    target.write_text("old", encoding="utf-8")
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]
