"""``nezha evaluate-cmrc DATA PRED [OUT]``: the official CMRC 2018 EM/F1 of a ``{id: answer}`` predictions file."""

from __future__ import annotations

import argparse
import json

from nezha.tasks.mrc.cmrc_metric import SEGMENTERS, evaluate_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="SQuAD-style CMRC 2018 JSON with reference answers (e.g. cmrc2018_dev.json)")
    parser.add_argument("pred", help="predictions JSON: {question id: answer text}")
    parser.add_argument("out", nargs="?", help="also write the result JSON here")
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="builtin",
                        help="English word tokenizer for F1: the built-in NLTK-equivalent one (default) or NLTK "
                             "itself (needs nltk and its punkt data)")


def run(args: argparse.Namespace) -> int:
    result = evaluate_files(args.data, args.pred, segmenter=args.segmenter)
    line = json.dumps(result.to_dict())
    print(line)
    if args.out:
        from nezha.io.atomic import atomic_write_text

        atomic_write_text(args.out, line + "\n")
    return 0
