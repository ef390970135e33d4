"""Reading raw pretraining text: one sentence a line, a blank line between documents, strict UTF-8.

Lines are split on ``\\n`` only (as BERT's reader does), so U+2028 inside a line stays inside it. Problems are
reported with the file and line number; nothing is dropped silently.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
MAX_REPORTED = 5  # per kind of problem; the rest are counted


def expand_input_files(spec: str | Sequence[str], flag: str = "--input_file", folders: bool = False) -> list[Path]:
    """``a.txt,b.txt`` and globs (``data/*.txt``), in the given order, globs sorted; errors name what is missing.

    ``folders``: folders are accepted too (shard folders for ``nezha pretrain``); ``flag`` names the flag in errors.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    kind = "file or folder" if folders else "file"
    out: list[Path] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matches = sorted(glob.glob(part))
            if not matches:
                raise FileNotFoundError(f"{flag}: the pattern {part!r} matches no {kind}")
            out.extend(Path(m) for m in matches)
        else:
            p = Path(part)
            if not (p.is_file() or (folders and p.is_dir())):
                raise FileNotFoundError(f"{flag}: {part} does not exist or is not a {kind}")
            out.append(p)
    if not out:
        raise ValueError(f"{flag} names no {kind}")
    return out


@dataclass
class ReadStats:
    files: int = 0
    empty_files: int = 0
    lines: int = 0
    invalid_utf8_lines: int = 0
    documents: int = 0
    sentences: int = 0
    problems: list[str] = field(default_factory=list)

    def open_file(self, path: Path) -> bool:
        """Count a file about to be read; False (counted and reported) when it is empty, to be skipped."""
        self.files += 1
        if os.path.getsize(path) == 0:
            self.empty_files += 1
            self.report(self.empty_files, f"{path}: empty file, skipped")
            return False
        return True

    def report(self, kind_count: int, message: str) -> None:
        if kind_count <= MAX_REPORTED:
            log.warning(message)
            self.problems.append(message)


@dataclass(frozen=True)
class Document:
    """A document's non-empty lines (stripped) with where they came from, for messages."""

    file_index: int
    line_numbers: list[int]
    lines: list[str]


def iter_lines(path: Path, stats: ReadStats, skip_invalid: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, split on \\n only, decoded strictly (errors name file and line)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            stats.lines += 1
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                where = f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {e.start})"
                if not skip_invalid:
                    raise ValueError(f"{where}; fix the file or pass --skip_invalid_lines to skip such lines") from None
                stats.invalid_utf8_lines += 1
                stats.report(stats.invalid_utf8_lines, f"{where}: line skipped")


def read_documents(paths: Sequence[Path], *, stats: ReadStats | None = None) -> list[Document]:
    """Documents of all files in order; each file starts a new document (BERT's reader lets one run on)."""
    stats = stats if stats is not None else ReadStats()
    docs: list[Document] = []
    for fi, path in enumerate(paths):
        if not stats.open_file(path):
            continue
        cur_lines: list[str] = []
        cur_nums: list[int] = []

        def close(fi: int = fi) -> None:
            nonlocal cur_lines, cur_nums
            if cur_lines:
                docs.append(Document(fi, cur_nums, cur_lines))
                stats.documents += 1
                stats.sentences += len(cur_lines)
            cur_lines, cur_nums = [], []

        for lineno, line in iter_lines(path, stats):
            line = line.strip()
            if not line:
                close()
            else:
                cur_lines.append(line)
                cur_nums.append(lineno)
        close()
    return docs


def strip_pos_tags(line: str) -> list[str]:
    """Words of a ``word/POS`` tagged line (the People's Daily 1998 corpus): ``迈向/v  充满/v`` -> [迈向, 充满]."""
    return [tok.rsplit("/", 1)[0] for tok in line.split()]


# ----------------------------------------------------------------------------------------------------------------
# Streaming: the input cut into windows of whole documents, as raw bytes

# A line is blank (a document break) when ``str.strip`` leaves nothing, i.e. every character is whitespace to
# Python: these code points (str.isspace), as UTF-8 bytes, without the newline itself.
WHITESPACE = "\t\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"
_WS_BYTES = b"|".join(re.escape(c.encode("utf-8")) for c in WHITESPACE)
BLANK_LINES = re.compile(rb"\n(?:(?:" + _WS_BYTES + rb")*\n)+")  # a line end followed by one or more blank lines


@dataclass(frozen=True)
class Piece:
    """Whole lines of one file, ending at a document break (a blank line or the file's end)."""

    file_index: int
    first_line: int  # 1-based number of the piece's first line
    data: bytes


@dataclass(frozen=True)
class Window:
    """Consecutive pieces, about ``window_bytes`` of text: the unit that one worker turns into instances."""

    index: int
    pieces: tuple[Piece, ...]
    first_document: int  # reading-order index of its first document (counted only for --num_shards > 1)

    @property
    def nbytes(self) -> int:
        return sum(len(p.data) for p in self.pieces)


def iter_pieces(paths: Sequence[Path], block_bytes: int, stats: ReadStats) -> Iterator[Piece]:
    """Read files in blocks and cut each block at its last document break; a document longer than a block makes
    a longer piece. Empty files are counted and skipped."""
    for fi, path in enumerate(paths):
        if not stats.open_file(path):
            continue
        line = 1
        buf = b""
        with open(path, "rb") as f:
            while True:
                block = f.read(block_bytes)
                buf += block
                if not block:
                    cut = len(buf)
                else:
                    k = buf.rfind(b"\n\n")
                    if k < 0:  # whitespace-only separator lines: the slower search
                        k = max((m.start() for m in BLANK_LINES.finditer(buf)), default=-1)
                    if k < 0:
                        continue
                    cut = k + 1
                if cut:
                    yield Piece(fi, line, buf[:cut])
                    line += buf.count(b"\n", 0, cut)
                    buf = buf[cut:]
                if not block:
                    if buf:
                        yield Piece(fi, line, buf)
                    break


def count_documents(data: bytes) -> int:
    """Documents in whole lines of text: runs of non-blank lines (a line that is not UTF-8 is skipped, as read)."""
    n, blank_before = 0, True
    for raw in data.split(b"\n"):
        try:
            blank = not raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        n += blank_before and not blank
        blank_before = blank
    return n


def iter_windows(
    paths: Sequence[Path], window_bytes: int, stats: ReadStats, count_docs: bool = False
) -> Iterator[Window]:
    """Windows of whole documents of about ``window_bytes`` (a document is never cut). The input's tail, when
    smaller than half a window, joins the last window, so no window is tiny. With ``count_docs`` each window
    knows the reading-order index of its first document."""
    remaining = sum(os.path.getsize(p) for p in paths)
    pieces: list[Piece] = []
    size = docs_before = docs_here = 0
    index = 0
    for piece in iter_pieces(paths, max(1 << 16, window_bytes // 4), stats):
        pieces.append(piece)
        size += len(piece.data)
        remaining -= len(piece.data)
        docs_here += count_documents(piece.data) if count_docs else 0
        if size >= window_bytes and len(pieces) >= 2 and remaining >= window_bytes // 2:
            yield Window(index, tuple(pieces), docs_before)
            index += 1
            pieces, size, docs_before, docs_here = [], 0, docs_before + docs_here, 0
    if pieces:
        yield Window(index, tuple(pieces), docs_before)
