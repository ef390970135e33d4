"""``nezha vocab``: train a WordPiece vocab.txt from text files (Chinese-BERT layout; see nezha.data.vocab).

nezha vocab --input_file=corpus/*.txt --output_file=vocab.txt --vocab_size=21128 --do_lower_case=True
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace


@dataclass(kw_only=True)
class VocabSettings:
    """What ``nezha vocab`` reads, learns and writes."""

    input_file: str = arg(help="text files, comma-separated, globs allowed")
    output_file: str = arg(help="the vocab.txt to write")
    vocab_size: int = arg(21128, "entries in total")
    min_frequency: int = arg(2, "least count of a learned word")
    do_lower_case: bool = arg(True, "lower-case and strip accents, as the tokenizer will")
    num_unused: int = arg(99, "[unusedN] placeholders")
    limit_alphabet: int | None = arg(None, "keep only this many most frequent characters")
    cjk_continuation: bool = arg(True, "add ##X for every CJK character X")
    skip_invalid_lines: bool = arg(False, "skip lines that are not UTF-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, VocabSettings)


def run(args: argparse.Namespace) -> int:
    from nezha.data.corpus import expand_input_files
    from nezha.data.tokenization import load_vocab
    from nezha.data.vocab import train_vocab
    from nezha.io.atomic import atomic_write_text

    s = dataclass_from_namespace(VocabSettings, args)
    paths = expand_input_files(s.input_file)
    vocab = train_vocab(
        paths,
        vocab_size=s.vocab_size,
        min_frequency=s.min_frequency,
        do_lower_case=s.do_lower_case,
        num_unused=s.num_unused,
        limit_alphabet=s.limit_alphabet,
        cjk_continuation=s.cjk_continuation,
        skip_invalid_lines=s.skip_invalid_lines,
    )
    if any("\n" in t for t in vocab):
        raise ValueError("a learned token contains a newline; cannot write vocab.txt")
    atomic_write_text(s.output_file, "".join(t + "\n" for t in vocab))
    assert len(load_vocab(s.output_file)) == len(vocab)
    n_cjk = sum(1 for t in vocab if len(t) == 1 and 0x3400 <= ord(t) <= 0x9FFF)
    print(
        f"wrote {s.output_file}: {len(vocab):,} entries ({n_cjk:,} CJK characters, "
        f"{sum(t.startswith('##') for t in vocab):,} ## pieces)"
    )
    return 0
