"""Reading raw pretraining text: one sentence a line, a blank line between documents, strict UTF-8.

Lines are split on ``\\n`` only (as BERT's reader does), so U+2028 inside a line stays inside it. Problems are
reported with the file and line number; nothing is dropped silently.
"""

from __future__ import annotations

import glob
import logging
import os
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
    skipped_documents: int = 0  # not in this --shard_index
    problems: list[str] = field(default_factory=list)

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


def read_documents(
    paths: Sequence[Path],
    *,
    skip_invalid_lines: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    stats: ReadStats | None = None,
) -> list[Document]:
    """Documents of all files in order; each file starts a new document (BERT's reader lets one run on).

    With ``num_shards > 1`` only documents ``j`` with ``j % num_shards == shard_index`` (in reading order) are kept,
    so machines can split one corpus without coordination.
    """
    stats = stats if stats is not None else ReadStats()
    docs: list[Document] = []
    doc_counter = 0
    for fi, path in enumerate(paths):
        stats.files += 1
        if os.path.getsize(path) == 0:
            stats.empty_files += 1
            stats.report(stats.empty_files, f"{path}: empty file, skipped")
            continue
        cur_lines: list[str] = []
        cur_nums: list[int] = []

        def close(fi: int = fi) -> None:
            nonlocal doc_counter, cur_lines, cur_nums
            if cur_lines:
                if doc_counter % num_shards == shard_index:
                    docs.append(Document(fi, cur_nums, cur_lines))
                    stats.documents += 1
                    stats.sentences += len(cur_lines)
                else:
                    stats.skipped_documents += 1
                doc_counter += 1
            cur_lines, cur_nums = [], []

        for lineno, line in iter_lines(path, stats, skip_invalid_lines):
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
