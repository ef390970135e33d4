"""``nezha vocab``: train a WordPiece vocab.txt from text files (Chinese-BERT layout; see nezha.data.vocab).

nezha vocab --input_file=corpus/*.txt --output_file=vocab.txt --vocab_size=21128 --do_lower_case=True
"""

from __future__ import annotations

import argparse

from nezha.settings import str2bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input_file", required=True, help="text files, comma-separated, globs allowed")
    parser.add_argument("--output_file", required=True, help="the vocab.txt to write")
    parser.add_argument("--vocab_size", type=int, default=21128, help="entries in total (default: 21128)")
    parser.add_argument("--min_frequency", type=int, default=2, help="least count of a learned word (default: 2)")
    parser.add_argument(
        "--do_lower_case",
        type=str2bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="lower-case and strip accents, as the tokenizer will (default: True)",
    )
    parser.add_argument("--num_unused", type=int, default=99, help="[unusedN] placeholders (default: 99)")
    parser.add_argument("--limit_alphabet", type=int, default=None, help="keep only this many most frequent characters")
    parser.add_argument(
        "--cjk_continuation",
        type=str2bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="add ##X for every CJK character X (default: True)",
    )
    parser.add_argument("--skip_invalid_lines", action="store_true", help="skip lines that are not UTF-8")


def run(args: argparse.Namespace) -> int:
    from nezha.data.corpus import expand_input_files
    from nezha.data.tokenization import load_vocab
    from nezha.data.vocab import train_vocab
    from nezha.io.atomic import atomic_write_text

    paths = expand_input_files(args.input_file)
    vocab = train_vocab(
        paths,
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        do_lower_case=args.do_lower_case,
        num_unused=args.num_unused,
        limit_alphabet=args.limit_alphabet,
        cjk_continuation=args.cjk_continuation,
        skip_invalid_lines=args.skip_invalid_lines,
    )
    if any("\n" in t for t in vocab):
        raise ValueError("a learned token contains a newline; cannot write vocab.txt")
    atomic_write_text(args.output_file, "".join(t + "\n" for t in vocab))
    assert len(load_vocab(args.output_file)) == len(vocab)
    n_cjk = sum(1 for t in vocab if len(t) == 1 and 0x3400 <= ord(t) <= 0x9FFF)
    print(
        f"wrote {args.output_file}: {len(vocab):,} entries ({n_cjk:,} CJK characters, "
        f"{sum(t.startswith('##') for t in vocab):,} ## pieces)"
    )
    return 0
