"""Text-classification data: readers for LCQMC, ChnSentiCorp, XNLI-zh and generic TSV/CSV/JSONL, and encoding.

Every example remembers where it came from (``file:line``) so that a bad label or a malformed row is reported
by position. Readers never skip a row: a row that cannot be read is an error.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    path: str | os.PathLike, fmt: str, columns: Columns | None = None, with_labels: bool = True
) -> list[TextExample]:
    """Read every row of ``path``; ``with_labels=False`` allows files without a label column (prediction)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; choose from {FORMATS}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    columns = columns or PRESET_COLUMNS.get(fmt, Columns())
    if fmt == "jsonl":
        examples = _read_jsonl(path, columns, with_labels)
    else:
        examples = _read_delimited(path, fmt, columns, with_labels)
    if not examples:
        raise ValueError(f"{path}: no examples (empty file?)")
    aliases = _LABEL_ALIASES.get(fmt, {})
    if aliases:
        examples = [TextExample(e.guid, e.text_a, e.text_b, aliases.get(e.label, e.label)) for e in examples]
    return examples


def _read_delimited(path: Path, fmt: str, columns: Columns, with_labels: bool) -> list[TextExample]:
    delimiter = "," if fmt == "csv" else "\t"
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE))
    if not rows:
        return []
    names = [c for c in (columns.text_a, columns.text_b, columns.label if with_labels else None) if c]
    start = 0
    if fmt in _HEADERLESS_ORDER:
        header = [h.strip() for h in rows[0]]
        if set(_HEADERLESS_ORDER[fmt]) - {"label"} <= set(header):
            index = {n: header.index(n) for n in names if n in header}
            start = 1
        else:  # the original releases have no header line: fixed column order
            order = _HEADERLESS_ORDER[fmt]
            index = {n: order.index(n) for n in names if n in order}
    elif columns.header:
        header = [h.strip() for h in rows[0]]
        missing = [n for n in names if n not in header]
        if missing:
            raise ValueError(f"{path}:1: header {header} lacks column(s) {missing} (set the column options)")
        index = {n: header.index(n) for n in names}
        start = 1
    else:
        try:
            index = {n: int(n) for n in names}
        except ValueError:
            raise ValueError(f"{path}: without a header, columns must be 0-based indices, got {names}") from None
    if with_labels and columns.label and columns.label not in index:
        raise ValueError(f"{path}: no '{columns.label}' column for the labels")
    need = max(index.values()) + 1
    out = []
    for i, row in enumerate(rows[start:], start=start + 1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line (a trailing newline), not an example
        if len(row) < need:
            raise ValueError(f"{path}:{i}: expected at least {need} {fmt} columns, got {len(row)}")
        a = row[index[columns.text_a]]
        b = row[index[columns.text_b]] if columns.text_b and columns.text_b in index else None
        label = row[index[columns.label]].strip() if columns.label and columns.label in index else None
        out.append(_example(path, i, a, b, label, with_labels))
    return out


def _read_jsonl(path: Path, columns: Columns, with_labels: bool) -> list[TextExample]:
    out = []
    with open(path, encoding="utf-8-sig") as f:
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
