"""BERT WordPiece tokenization for Chinese NEZHA, on the Rust ``tokenizers`` library.

Behaviour matches ``transformers.BertTokenizer`` (basic tokenizer + WordPiece): CJK characters become one token
each, punctuation is split off, ``do_lower_case`` lower-cases and strips accents, unknown words become ``[UNK]``.
Every token carries ``(start, end)`` character offsets into the original text, which NER and reading comprehension
need to map predictions back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_vocab(path: str | os.PathLike) -> list[str]:
    """Read ``vocab.txt`` one token per line.

    Splits on ``\\n`` only: the Chinese BERT vocabulary has entries containing U+2028 (LINE SEPARATOR), which
    ``str.splitlines()`` would treat as a line break, shifting every later id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocab file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: vocab is not UTF-8 ({e})") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t.rstrip("\r") for t in tokens]
    if not tokens:
        raise ValueError(f"{path}: vocab is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f"{path}: vocab lacks the special token(s) {missing}; is this a BERT/NEZHA vocab.txt?")
    return tokens


@dataclass(frozen=True)
class Encoded:
    """One text's WordPiece tokens (no special tokens added), ids and character offsets into the text."""

    tokens: list[str]
    ids: list[int]
    offsets: list[tuple[int, int]]


class NezhaTokenizer:
    """WordPiece tokenizer from a ``vocab.txt``; see the module docstring."""

    def __init__(self, vocab: list[str], do_lower_case: bool = True, source: str = "vocab"):
        from tokenizers import BertWordPieceTokenizer

        self.vocab_list = list(vocab)
        self.vocab = {tok: i for i, tok in enumerate(self.vocab_list)}  # duplicates: the last id wins, as BERT's
        self.do_lower_case = do_lower_case
        self.source = source
        self._tok = BertWordPieceTokenizer(
            self.vocab, lowercase=do_lower_case, strip_accents=do_lower_case, clean_text=True,
            handle_chinese_chars=True,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, do_lower_case: bool = True) -> NezhaTokenizer:
        return cls(load_vocab(path), do_lower_case=do_lower_case, source=str(path))

    def __len__(self) -> int:
        return len(self.vocab_list)

    @property
    def pad_id(self) -> int:
        return self.vocab["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self.vocab["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.vocab["[MASK]"]

    def encode(self, text: str) -> Encoded:
        enc = self._tok.encode(text, add_special_tokens=False)
        return Encoded(list(enc.tokens), list(enc.ids), [tuple(o) for o in enc.offsets])

    def encode_batch(self, texts: list[str]) -> list[Encoded]:
        return [
            Encoded(list(e.tokens), list(e.ids), [tuple(o) for o in e.offsets])
            for e in self._tok.encode_batch(texts, add_special_tokens=False)
        ]

    def tokenize(self, text: str) -> list[str]:
        return self.encode(text).tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        unk = self.unk_id
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.vocab_list[i] for i in ids]

    def save_vocabulary(self, path: str | os.PathLike) -> None:
        from nezha.io import atomic_write_text

        atomic_write_text(path, "".join(t + "\n" for t in self.vocab_list))
