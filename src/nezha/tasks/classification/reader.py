"""Text-classification data: readers for LCQMC, ChnSentiCorp, XNLI-zh and generic TSV/CSV/JSONL, and encoding.

Every example remembers where it came from (``file:line``) so that a bad label or a malformed row is reported
by position. Readers never skip a row silently: a row that cannot be read is an error (rows with the wrong number
of fields may be skipped on request, with a counted warning).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nezha.tasks.common import text_lines

logger = logging.getLogger("nezha")

FORMATS = ("lcqmc", "chnsenticorp", "xnli", "tsv", "csv", "jsonl")
# XNLI releases spell one label two ways; the data's own label_map.json maps both to one id.
_LABEL_ALIASES = {"xnli": {"contradictory": "contradiction"}}


@dataclass(frozen=True)
class TextExample:
    guid: str  # "file:line", for error messages and prediction files
    text_a: str
    text_b: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Columns:
    """Where the fields are: header names (or 0-based indices as strings when the file has no header)."""

    text_a: str = "text_a"
    text_b: str | None = None
    label: str | None = "label"
    header: bool = True


# Column layouts of the named formats. A header line, when present, is recognised and skipped.
PRESET_COLUMNS = {
    "lcqmc": Columns("text_a", "text_b", "label"),
    "chnsenticorp": Columns("text_a", None, "label"),
    "xnli": Columns("text_a", "text_b", "label"),
}
_HEADERLESS_ORDER = {
    "lcqmc": ["text_a", "text_b", "label"],
    "chnsenticorp": ["label", "text_a"],
    "xnli": ["text_a", "text_b", "label"],
}


def read_examples(
    path: str | os.PathLike,
    fmt: str,
    columns: Columns | None = None,
    with_labels: bool = True,
    skip_bad_rows: bool = False,
) -> list[TextExample]:
    """Read every row of ``path``; ``with_labels=False`` allows files without a label column (prediction).

    A TSV/CSV row with the wrong number of fields (a stray tab or comma inside a text, a missing field) is an error
    naming ``file:line``, or, with ``skip_bad_rows``, left out with one counted warning: taking its fields by
    position would turn a piece of text into a new label.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; choose from {FORMATS}")
    path = Path(path)
    columns = columns or PRESET_COLUMNS.get(fmt, Columns())
    if fmt == "jsonl":
        examples = _read_jsonl(path, columns, with_labels)
    else:
        examples = _read_delimited(path, fmt, columns, with_labels, skip_bad_rows)
    if not examples:
        raise ValueError(f"{path}: no examples (empty file?)")
    aliases = _LABEL_ALIASES.get(fmt, {})
    if aliases:
        examples = [TextExample(e.guid, e.text_a, e.text_b, aliases.get(e.label, e.label)) for e in examples]
    return examples


def _read_delimited(path: Path, fmt: str, columns: Columns, with_labels: bool,
                    skip_bad_rows: bool) -> list[TextExample]:
    delimiter = "," if fmt == "csv" else "\t"
    reader = csv.reader(text_lines(path, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
    rows = [(reader.line_num, row) for row in reader if row and not (len(row) == 1 and not row[0].strip())]
    if not rows:  # blank lines (a trailing newline) are not examples
        return []
    names = [c for c in (columns.text_a, columns.text_b, columns.label if with_labels else None) if c]
    first = [h.strip() for h in rows[0][1]]
    if fmt in _HEADERLESS_ORDER and set(_HEADERLESS_ORDER[fmt]) - {"label"} <= set(first):
        index = {n: first.index(n) for n in names if n in first}
        rows, layout = rows[1:], first
    elif fmt in _HEADERLESS_ORDER:  # the original releases have no header line: fixed column order
        order = _HEADERLESS_ORDER[fmt]
        index = {n: order.index(n) for n in names if n in order}
        layout = order if with_labels else None
    elif columns.header:
        missing = [n for n in names if n not in first]
        if missing:
            raise ValueError(f"{path}:1: header {first} lacks column(s) {missing} (set the column options)")
        index = {n: first.index(n) for n in names}
        rows, layout = rows[1:], first
    else:
        try:
            index = {n: int(n) for n in names}
        except ValueError:
            raise ValueError(f"{path}: without a header, columns must be 0-based indices, got {names}") from None
        layout = None
    if with_labels and columns.label and columns.label not in index:
        raise ValueError(f"{path}: no '{columns.label}' column for the labels")
    if not rows:
        return []
    # Without a header (or a fixed layout), the first row sets the width every row must have.
    width = len(layout) if layout else max(len(rows[0][1]), max(index.values()) + 1)
    what = f"({', '.join(layout)})" if layout else f"(as on line {rows[0][0]})"
    sep = "comma" if fmt == "csv" else "tab"
    out, bad = [], []
    for line, row in rows:
        if len(row) != width:
            if not skip_bad_rows:
                raise ValueError(f"{path}:{line}: expected {width} {sep}-separated fields {what}, got {len(row)} "
                                 "(a stray delimiter inside a text, or a missing field?)")
            bad.append(line)
            continue
        a = row[index[columns.text_a]]
        b = row[index[columns.text_b]] if columns.text_b and columns.text_b in index else None
        label = row[index[columns.label]].strip() if columns.label and columns.label in index else None
        out.append(_example(path, line, a, b, label, with_labels))
    if bad:
        logger.warning("%s: skipped %d row(s) without %d %s-separated fields %s: lines %s%s", path, len(bad), width,
                       sep, what, ", ".join(map(str, bad[:10])), " ..." if len(bad) > 10 else "")
    return out


def _read_jsonl(path: Path, columns: Columns, with_labels: bool) -> list[TextExample]:
    out = []
    with text_lines(path) as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e})") from None
            if not isinstance(obj, dict) or columns.text_a not in obj:
                raise ValueError(f"{path}:{i}: expected an object with a {columns.text_a!r} field")
            label = obj.get(columns.label) if columns.label else None
            b = obj.get(columns.text_b) if columns.text_b else None
            out.append(
                _example(
                    path,
                    i,
                    str(obj[columns.text_a]),
                    None if b is None else str(b),
                    None if label is None else str(label),
                    with_labels,
                )
            )
    return out


def _example(path: Path, line: int, a: str, b: str | None, label: str | None, with_labels: bool) -> TextExample:
    guid = f"{path}:{line}"
    if not a.strip():
        raise ValueError(f"{guid}: empty text")
    if with_labels and (label is None or label == ""):
        raise ValueError(f"{guid}: missing label")
    return TextExample(guid, a, b, label)


def label_list(examples: Sequence[TextExample]) -> list[str]:
    """Sorted distinct labels (numerically when all are integers, so "10" follows "9")."""
    labels = {e.label for e in examples if e.label is not None}
    if not labels:
        raise ValueError("no labels found")
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_ids(examples: Sequence[TextExample], labels: Sequence[str]) -> list[int]:
    """Map labels to ids; a label outside ``labels`` is an error naming the example."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = []
    for e in examples:
        if e.label not in index:
            raise ValueError(f"{e.guid}: label {e.label!r} is not in the label list {list(labels)}")
        out.append(index[e.label])
    return out


# ---------------------------------------------------------------------------------------------------- encoding
def truncate_pair(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """Lengths after removing tokens one at a time from the longer side (BERT's truncate_seq_pair)."""
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int]


def encode_examples(tokenizer, examples: Sequence[TextExample], max_seq_length: int) -> list[Encoded]:
    """``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``, longest-first truncation to ``max_seq_length``."""
    if max_seq_length < 4:
        raise ValueError(f"max_seq_length must be at least 4, got {max_seq_length}")
    enc_a = tokenizer.encode_batch([e.text_a for e in examples])
    pairs = [i for i, e in enumerate(examples) if e.text_b is not None]
    enc_b = dict(zip(pairs, tokenizer.encode_batch([examples[i].text_b for i in pairs])))
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    out = []
    for i in range(len(examples)):
        a = enc_a[i].ids
        if i in enc_b:
            b = enc_b[i].ids
            na, nb = truncate_pair(len(a), len(b), max_seq_length - 3)
            ids = [cls, *a[:na], sep, *b[:nb], sep]
            types = [0] * (na + 2) + [1] * (nb + 1)
        else:
            a = a[: max_seq_length - 2]
            ids = [cls, *a, sep]
            types = [0] * len(ids)
        out.append(Encoded(ids, types))
    return out
