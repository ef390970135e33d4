"""Sequence-labelling data: People's Daily style BIO files (one ``char TAG`` per line, blank line between
sentences), UER-style TSV and JSONL spans; alignment of word labels to WordPiece tokens through offsets.

A sentence is a list of *words* (one character each in the Chinese NER corpora) with one tag each. Each word's
first WordPiece carries its label; later pieces are ignored (-100). Sentences longer than the model's window are cut
into several windows at word boundaries, so every word gets a prediction and counts in the metrics.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nezha.tasks.common import text_lines
from nezha.tasks.ner.metrics import bio_errors

logger = logging.getLogger("nezha")

FORMATS = ("bio", "tsv", "jsonl")
IGNORE = -100


@dataclass(frozen=True)
class TaggedSentence:
    guid: str  # "file:line" of the sentence's first line
    words: list[str]
    tags: list[str] | None  # None when reading unlabelled text for prediction
    text: str | None = None  # the JSONL text the words came from (characters), to write spans back


def detect_format(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    return "bio"


def read_sentences(path: str | os.PathLike, fmt: str = "auto", with_tags: bool = True) -> list[TaggedSentence]:
    """Read every sentence; malformed lines are errors naming ``file:line``; I- without B- is a counted warning."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown NER format {fmt!r}; choose from {FORMATS}")
    reader = {"bio": _read_bio, "tsv": _read_tsv, "jsonl": _read_jsonl}[fmt]
    sentences = reader(path, with_tags)
    if not sentences:
        raise ValueError(f"{path}: no sentences (empty file?)")
    if with_tags:
        bad = [(s.guid, pos, msg) for s in sentences for pos, msg in bio_errors(s.tags or [])]
        if bad:
            shown = "; ".join(f"{g} word {p}: {m}" for g, p, m in bad[:5])
            logger.warning(
                "%s: %d malformed BIO tag(s), kept as written (strict scoring ignores them): %s%s",
                path,
                len(bad),
                shown,
                " ..." if len(bad) > 5 else "",
            )
    return sentences


def _read_bio(path: Path, with_tags: bool) -> list[TaggedSentence]:
    out: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    with text_lines(path) as f:
        for i, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                if words:
                    out.append(TaggedSentence(f"{path}:{start}", words, tags if with_tags else None))
                words, tags = [], []
                continue
            parts = line.split()
            if with_tags and len(parts) != 2:
                raise ValueError(f"{path}:{i}: expected 'WORD TAG', got {line!r}")
            if not words:
                start = i
            words.append(parts[0])
            tags.append(parts[-1] if with_tags else "O")
    if words:
        out.append(TaggedSentence(f"{path}:{start}", words, tags if with_tags else None))
    return out


def _read_tsv(path: Path, with_tags: bool) -> list[TaggedSentence]:
    out = []
    lines = text_lines(path).read().split("\n")
    start = 1 if lines and lines[0].split("\t")[0] == "text_a" else 0
    for i, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) > 2 or (with_tags and len(cols) != 2):
            raise ValueError(f"{path}:{i}: expected 2 tab-separated fields (text_a, label), got {len(cols)}")
        words = cols[0].split()
        tags = cols[1].split() if len(cols) > 1 else None
        if with_tags:
            if tags is None or len(tags) != len(words):
                raise ValueError(f"{path}:{i}: {len(words)} words but {0 if tags is None else len(tags)} tags")
        out.append(TaggedSentence(f"{path}:{i}", words, tags if with_tags else None))
    return out


def _read_jsonl(path: Path, with_tags: bool) -> list[TaggedSentence]:
    """``{"text": ..., "entities": [{"start": s, "end": e, "label": L}, ...]}`` (end exclusive) or ``[s, e, L]``."""
    out = []
    with text_lines(path) as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            guid = f"{path}:{i}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{guid}: not valid JSON ({e})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"]:
                raise ValueError(f"{guid}: expected an object with a non-empty 'text'")
            text = obj["text"]
            tags = None
            if with_tags:
                spans = obj.get("entities", obj.get("spans"))
                if spans is None:
                    raise ValueError(f"{guid}: no 'entities' list")
                tags = spans_to_tags(text, spans, guid)
            out.append(TaggedSentence(guid, list(text), tags, text))
    return out


def spans_to_tags(text: str, spans: Sequence, guid: str) -> list[str]:
    tags = ["O"] * len(text)
    for span in spans:
        if isinstance(span, dict):
            s, e, label = span.get("start"), span.get("end"), span.get("label")
        elif isinstance(span, (list, tuple)) and len(span) == 3:
            s, e, label = span
        else:
            raise ValueError(f"{guid}: entity {span!r} is not {{start, end, label}}")
        if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(text)) or not label:
            raise ValueError(f"{guid}: entity {span!r} is outside the text (length {len(text)}) or unlabelled")
        if any(t != "O" for t in tags[s:e]):
            raise ValueError(f"{guid}: entity {span!r} overlaps another entity")
        tags[s] = f"B-{label}"
        for k in range(s + 1, e):
            tags[k] = f"I-{label}"
    return tags


def tags_to_spans(tags: Sequence[str]) -> list[dict]:
    """Strict IOB2 entities as ``{"start", "end", "label"}`` (end exclusive); stray I- tags start no entity."""
    spans = []
    cur = None
    for i, tag in enumerate([*tags, "O"]):
        if cur and not (tag.startswith("I-") and tag[2:] == cur["label"]):
            cur["end"] = i
            spans.append(cur)
            cur = None
        if tag.startswith("B-"):
            cur = {"start": i, "end": None, "label": tag[2:]}
    return spans


def tag_list(sentences: Sequence[TaggedSentence]) -> list[str]:
    """``O`` first, then B-/I- tags grouped by type (B before I)."""
    seen = {t for s in sentences for t in (s.tags or [])}
    types = sorted({t[2:] for t in seen if t != "O"})
    out = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I") if f"{p}-{t}" in seen or p == "B"]
    extra = sorted(seen - set(out))
    return out + extra


def check_tags(sentences: Sequence[TaggedSentence], labels: Sequence[str]) -> None:
    known = set(labels)
    for s in sentences:
        for k, t in enumerate(s.tags or []):
            if t not in known:
                raise ValueError(
                    f"{s.guid} word {k} ({s.words[k]!r}): tag {t!r} is not in the label list {list(labels)}"
                )


# ---------------------------------------------------------------------------------------------------- alignment
@dataclass(frozen=True)
class NerWindow:
    sentence: int  # index into the sentence list
    first_word: int  # words [first_word, first_word + len(word_ids)) of the sentence are labelled here
    input_ids: list[int]
    labels: list[int]  # per token: tag id at each word's first piece, IGNORE elsewhere
    label_mask: list[int]  # 1 at each word's first piece
    word_ids: list[int]  # the sentence word index of each labelled position, in order


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """Token ids of each word, found by encoding the words joined with spaces and mapping offsets back."""
    text_parts, starts = [], []
    pos = 0
    for w in words:
        starts.append(pos)
        text_parts.append(w)
        pos += len(w) + 1
    enc = tokenizer.encode(" ".join(text_parts))
    pieces: list[list[int]] = [[] for _ in words]
    w = 0
    for tid, (s, _e) in zip(enc.ids, enc.offsets):
        while w + 1 < len(words) and starts[w + 1] <= s:
            w += 1
        pieces[w].append(tid)
    return pieces


def make_windows(
    tokenizer, sentences: Sequence[TaggedSentence], labels: Sequence[str] | None, max_seq_length: int
) -> tuple[list[NerWindow], int]:
    """Windows of at most ``max_seq_length`` tokens (with [CLS]/[SEP]); returns them and the number of words that
    produce no token (e.g. control characters), which get no window position and are predicted ``O``."""
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must be at least 3, got {max_seq_length}")
    index = {t: i for i, t in enumerate(labels)} if labels is not None else None
    budget = max_seq_length - 2
    windows, empty = [], 0
    for si, sent in enumerate(sentences):
        pieces = word_pieces(tokenizer, sent.words)
        w = 0
        while w < len(sent.words):
            ids, labs, mask, wids = [tokenizer.cls_id], [IGNORE], [0], []
            first = w
            while w < len(sent.words):
                p = pieces[w]
                if not p:
                    empty += 1
                    w += 1
                    continue
                if len(ids) - 1 + len(p) > budget:
                    if len(ids) == 1:
                        p = p[:budget]  # one word longer than the window: keep its first pieces
                    else:
                        break
                tag = index[sent.tags[w]] if index is not None and sent.tags is not None else 0
                ids.extend(p)
                labs.extend([tag] + [IGNORE] * (len(p) - 1))
                mask.extend([1] + [0] * (len(p) - 1))
                wids.append(w)
                w += 1
            ids.append(tokenizer.sep_id)
            labs.append(IGNORE)
            mask.append(0)
            if wids:
                windows.append(NerWindow(si, first, ids, labs, mask, wids))
    return windows, empty


def collect_predictions(
    sentences: Sequence[TaggedSentence],
    windows: Sequence[NerWindow],
    predicted: Sequence[Sequence[int]],
    labels: Sequence[str],
) -> list[list[str]]:
    """Per-sentence tag strings for every word (``O`` for words with no token)."""
    out = [["O"] * len(s.words) for s in sentences]
    for win, pred in zip(windows, predicted):
        for w, p in zip(win.word_ids, pred):
            out[win.sentence][w] = labels[p]
    return out


def write_predictions(
    path: str | os.PathLike, sentences: Sequence[TaggedSentence], predicted: Sequence[Sequence[str]], fmt: str
) -> None:
    """Write predicted tags in the input's format (BIO lines, TSV rows, or JSONL with entity spans)."""
    from nezha.io.atomic import atomic_write_text

    if fmt == "bio":
        text = "".join("".join(f"{w} {t}\n" for w, t in zip(s.words, p)) + "\n" for s, p in zip(sentences, predicted))
    elif fmt == "tsv":
        text = "text_a\tlabel\n" + "".join(
            f"{' '.join(s.words)}\t{' '.join(p)}\n" for s, p in zip(sentences, predicted)
        )
    else:
        text = "".join(
            json.dumps(
                {"text": s.text if s.text is not None else "".join(s.words), "entities": tags_to_spans(p)},
                ensure_ascii=False,
            )
            + "\n"
            for s, p in zip(sentences, predicted)
        )
    atomic_write_text(path, text)
