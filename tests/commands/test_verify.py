"""``nezha verify``: MD5 lists in md5sum format and per-tensor CRC checks of TF checkpoints."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from nezha.cli import main
from nezha.commands.verify import md5_file, parse_md5_list, verify_md5

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf_nezha_tiny"


@pytest.fixture()
def download(tmp_path) -> Path:
    """A copy of the fixture checkpoint, as a user's download folder."""
    for f in FIXTURE.glob("model.*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_md5_file_streams_in_chunks(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(bytes(range(256)) * 5000)
    assert md5_file(f, chunk=1000) == hashlib.md5(f.read_bytes()).hexdigest()


def test_verify_ok(download, capsys):
    assert main(["verify", str(download), "--md5", str(download / "model.md5")]) == 0
    out = capsys.readouterr().out
    assert "model.ckpt-7.index: OK" in out and "model.ckpt-7.data-00000-of-00001: OK" in out


def test_truncated_file_fails_with_a_clear_message(download, capsys):
    data = download / "model.ckpt-7.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-1])
    assert main(["verify", str(download), "--md5", str(download / "model.md5")]) == 2
    captured = capsys.readouterr()
    assert "model.ckpt-7.data-00000-of-00001: FAILED" in captured.out
    assert "does not match its MD5" in captured.err and "fetch it again" in captured.err


def test_missing_file_is_reported(download, capsys):
    (download / "model.ckpt-7.index").unlink()
    results = {r.name: r.status for r in verify_md5(download, download / "model.md5")}
    assert results == {"model.ckpt-7.index": "MISSING", "model.ckpt-7.data-00000-of-00001": "OK"}
    assert main(["verify", str(download), "--md5", str(download / "model.md5")]) == 2
    assert "is missing" in capsys.readouterr().err


def test_md5_list_formats(tmp_path):
    lst = tmp_path / "list.md5"
    lst.write_text(
        "# published checksums\n"
        "D41D8CD98F00B204E9800998ECF8427E  empty.txt\n"
        "d41d8cd98f00b204e9800998ecf8427e *nezha/empty two.txt\n\n",
        encoding="utf-8",
    )
    assert parse_md5_list(lst) == [("d41d8cd98f00b204e9800998ecf8427e", "empty.txt"),
                                   ("d41d8cd98f00b204e9800998ecf8427e", "nezha/empty two.txt")]
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "empty two.txt").write_bytes(b"")  # listed under a folder, found flattened
    assert [r.status for r in verify_md5(tmp_path, lst)] == ["OK", "OK"]
    lst.write_text("not a checksum line\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.md5:1: not an md5sum line"):
        parse_md5_list(lst)


def test_crc_check_of_a_tf_checkpoint(download, capsys):
    assert main(["verify", str(download), "--tf_checkpoint", "model.ckpt-7"]) == 0
    assert "145 tensors in 1 shard(s), all checksums OK" in capsys.readouterr().out
    data = download / "model.ckpt-7.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    assert main(["verify", str(download), "--tf_checkpoint", "model.ckpt-7"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
