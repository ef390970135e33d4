"""Train a WordPiece ``vocab.txt`` with the Chinese-BERT conventions, on the ``tokenizers`` WordPiece trainer.

Layout (as Google's Chinese vocab): ``[PAD]``, ``[unused1]``..``[unusedN]`` (room for task tokens without
resizing), ``[UNK] [CLS] [SEP] [MASK]``, then single characters (by code point), learned words (in the order the
trainer learned them), ``##`` continuation pieces, and a ``##`` entry for every CJK character (whole-word-masking
tokenizers mark non-initial characters of a word with ``##``). Words are split exactly as
:class:`nezha.data.tokenization.NezhaTokenizer` splits them, so the vocab and the tokenizer agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from nezha.data.corpus import ReadStats, iter_lines
from nezha.data.tokenization import _CJK_RANGES, SPECIAL_TOKENS, configure_bert_pipeline


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _lines(paths: Sequence[Path], skip_invalid: bool, stats: ReadStats) -> Iterator[str]:
    for p in paths:
        for _, line in iter_lines(p, stats, skip_invalid):
            line = line.strip()
            if line:
                yield line


def train_vocab(
    paths: Sequence[str | os.PathLike],
    *,
    vocab_size: int = 21128,
    min_frequency: int = 2,
    do_lower_case: bool = True,
    num_unused: int = 99,
    limit_alphabet: int | None = None,
    cjk_continuation: bool = True,
    skip_invalid_lines: bool = False,
) -> list[str]:
    """The vocab as a list of tokens (id = position); see the module docstring for the layout."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    fixed_head = 1 + num_unused + 4
    if vocab_size <= fixed_head:
        raise ValueError(f"--vocab_size={vocab_size} leaves no room after {fixed_head} special/unused entries")
    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    configure_bert_pipeline(tok, do_lower_case)
    kwargs = {"limit_alphabet": limit_alphabet} if limit_alphabet else {}
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
        **kwargs,
    )
    stats = ReadStats()
    tok.train_from_iterator(_lines([Path(p) for p in paths], skip_invalid_lines, stats), trainer)
    learned = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if t not in SPECIAL_TOKENS]
    if not learned:
        raise ValueError(f"no text in {[str(p) for p in paths]}")

    def body(t: str) -> str:
        return t[2:] if t.startswith("##") else t

    singles = sorted((t for t in learned if len(t) == 1), key=ord)
    cont_singles = sorted((t for t in learned if t.startswith("##") and len(t) == 3), key=lambda t: ord(t[2]))
    have = set(learned)
    extra_cont = [f"##{c}" for c in singles if cjk_continuation and is_cjk(c) and f"##{c}" not in have]
    merges = [t for t in learned if len(body(t)) > 1]  # in the order learned
    room = vocab_size - fixed_head - len(singles) - len(cont_singles) - len(extra_cont)
    if room < 0:
        raise ValueError(
            f"--vocab_size={vocab_size} is too small for the {len(singles)} characters of the corpus (and their "
            "## forms); raise it or set --limit_alphabet"
        )
    merges = merges[:room]  # the latest-learned merges go first
    words = [t for t in merges if not t.startswith("##")]
    pieces = [t for t in merges if t.startswith("##")]
    head = ["[PAD]", *(f"[unused{i}]" for i in range(1, num_unused + 1)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = head + singles + words + cont_singles + pieces + extra_cont
    assert len(vocab) == len(set(vocab)), "duplicate vocab entries"
    return vocab
