"""The reference for `nezha prepare`'s tokenization: the original FullTokenizer of Google BERT / NEZHA-TensorFlow."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest

from nezha.data.tokenization import load_vocab


@pytest.fixture(scope="session")
def original_full_tokenizer(chinese_vocab) -> Callable[[bool], Callable[[str], list[str]]]:
    """do_lower_case -> the original FullTokenizer's ``tokenize``: BasicTokenizer with nothing kept whole, then
    WordPiece with max_input_chars_per_word=200.

    transformers' BasicTokenizer/WordpieceTokenizer are the original's Python code plus two changes that tests keep
    away from (see ``original_applies``): NFC first, and removal of every ``C*`` character (the original: Cc/Cf).
    ``BertTokenizer`` itself cannot serve: it keeps its special tokens whole whatever never_split says.
    """
    transformers_bert = pytest.importorskip("transformers.models.bert.tokenization_bert")
    vocab = {t: i for i, t in enumerate(load_vocab(chinese_vocab))}
    wordpiece = transformers_bert.WordpieceTokenizer(vocab, unk_token="[UNK]", max_input_chars_per_word=200)

    def make(do_lower_case: bool) -> Callable[[str], list[str]]:
        basic = transformers_bert.BasicTokenizer(do_lower_case=do_lower_case, never_split=None)
        return lambda text: [p for w in basic.tokenize(text) for p in wordpiece.tokenize(w)]

    return make


def original_applies(text: str) -> bool:
    """True where the reference above is exactly the original (no NFC change, no Cn/Co/Cs character)."""
    return unicodedata.normalize("NFC", text) == text and not any(
        unicodedata.category(c) in ("Cn", "Co", "Cs") for c in text)


@pytest.fixture(scope="session")
def original_text_filter() -> Callable[[str], bool]:
    return original_applies


SPECIAL_STRINGS = ("[SEP]", "[MASK]", "[CLS]", "[UNK]", "[PAD]")


@pytest.fixture(scope="session")
def inject_special_strings() -> Callable[[list[str]], list[str]]:
    """Each special token's spelling typed into real text: at the start, mid-text, next to Latin letters, at the end."""

    def inject(texts: list[str]) -> list[str]:
        out = []
        for k, t in enumerate(texts):
            sp = SPECIAL_STRINGS[k % len(SPECIAL_STRINGS)]
            mid = len(t) // 2
            out.append(f"{sp}{t[:mid]}{sp}{t[mid:]} x{sp.lower()}y {sp}")
        return out

    return inject
