"""Reading a user's text file: UTF-8 (a byte-order mark allowed), and an error naming ``file:line`` when it is not."""

from __future__ import annotations

import os
from pathlib import Path


def decode_utf8(data: bytes, path: str | os.PathLike, what: str = "") -> str:
    """``data`` (the bytes of ``path``) as text; invalid UTF-8 is a ValueError naming the file, line and byte
    (and ``what`` the file is, e.g. "dataset file")."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        subject = f"{what} is " if what else ""
        byte = data[e.start]
        raise ValueError(f"{path}:{line}: {subject}not valid UTF-8 (byte {byte:#04x}); save it as UTF-8") from None


def read_utf8(path: str | os.PathLike, what: str = "") -> str:
    """The whole file as text (see :func:`decode_utf8`)."""
    return decode_utf8(Path(path).read_bytes(), path, what)
