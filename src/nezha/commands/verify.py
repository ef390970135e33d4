"""``nezha verify DIR --md5 FILE``: check downloaded files against an MD5 list (``md5sum`` format).

Optionally (``--tf_checkpoint``) also reads every tensor of a TensorFlow checkpoint and checks its CRC32C, which
catches corruption even without an MD5 list.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nezha.errors import UserError
from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace

_LINE = re.compile(r"^\\?([0-9a-fA-F]{32}) [ *](.+)$")


@dataclass(frozen=True)
class Md5Result:
    name: str
    status: str  # "OK", "FAILED", "MISSING"
    expected: str
    actual: str | None = None
    size: int | None = None


def parse_md5_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(hash, file name)`` pairs from ``md5sum`` output (``<hash>  <name>`` or ``<hash> *<name>``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--md5: {path} not found")
    out = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x}); "
                             "is this the MD5 list?") from None
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line.rstrip("\r"))
        if not m:
            raise ValueError(f"{path}:{lineno}: not an md5sum line ('<32 hex digits>  <file name>'): {line[:80]!r}")
        out.append((m.group(1).lower(), m.group(2)))
    if not out:
        raise ValueError(f"{path}: no checksums in the file")
    return out


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file, streamed in 1 MiB chunks (released checkpoints are GBs)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_md5(directory: str | os.PathLike, md5_list: str | os.PathLike) -> list[Md5Result]:
    """Check every listed file under ``directory`` (names are taken relative to it; folders in names are ignored
    when the file is not found at its listed path, since releases list ``model/xxx`` but users flatten)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a folder")
    results = []
    for expected, name in parse_md5_list(md5_list):
        path = directory / name
        if not path.is_file() and (directory / Path(name).name).is_file():
            path = directory / Path(name).name
        if not path.is_file():
            results.append(Md5Result(name, "MISSING", expected))
            continue
        actual = md5_file(path)
        status = "OK" if actual == expected else "FAILED"
        results.append(Md5Result(name, status, expected, actual, path.stat().st_size))
    return results


@dataclass(kw_only=True)
class VerifySettings:
    """Which downloaded files to check, and against what (at least one of ``md5`` and ``tf_checkpoint``)."""

    dir: str = arg(help="folder with the downloaded files", positional=True)
    md5: str | None = arg(None, "MD5 list in md5sum format ('<hash>  <file name>' per line)")
    tf_checkpoint: str | None = arg(None, "also read every tensor of this TF checkpoint (prefix, relative to DIR "
                                          "or absolute) and check its CRC32C")

    def __post_init__(self) -> None:
        if not self.md5 and not self.tf_checkpoint:
            raise UserError("give --md5 FILE and/or --tf_checkpoint PREFIX")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, VerifySettings)


def run(args: argparse.Namespace) -> int:
    s = dataclass_from_namespace(VerifySettings, args)
    bad = []
    if s.md5:
        for r in verify_md5(s.dir, s.md5):
            if r.status == "OK":
                print(f"{r.name}: OK")
            elif r.status == "MISSING":
                print(f"{r.name}: MISSING")
                bad.append(f"{r.name} is missing")
            else:
                print(f"{r.name}: FAILED (expected {r.expected}, got {r.actual}, {r.size:,} bytes)")
                bad.append(f"{r.name} does not match its MD5 (truncated or corrupted download; fetch it again)")
    if s.tf_checkpoint:
        from nezha.convert.tf_checkpoint import TFCheckpoint

        prefix = Path(s.tf_checkpoint)
        if not prefix.is_absolute() and not Path(str(prefix) + ".index").exists():
            prefix = Path(s.dir) / prefix
        ckpt = TFCheckpoint(prefix)
        ckpt.verify()
        print(f"{ckpt.prefix}: {len(ckpt)} tensors in {ckpt.num_shards} shard(s), all checksums OK")
    if bad:
        raise UserError(f"{len(bad)} file(s) failed: " + "; ".join(bad))
    return 0
