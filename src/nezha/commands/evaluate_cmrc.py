"""``nezha evaluate-cmrc DATA PRED [OUT]``: the official CMRC 2018 EM/F1 of a ``{id: answer}`` predictions file."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace
from nezha.tasks.mrc.cmrc_metric import SEGMENTERS, evaluate_files


@dataclass(kw_only=True)
class EvaluateCmrcSettings:
    """The original ``cmrc2018_evaluate.py DATA PRED [OUT]`` arguments, plus the word segmenter."""

    data: str = arg(help="SQuAD-style CMRC 2018 JSON with reference answers (e.g. cmrc2018_dev.json)",
                    positional=True)
    pred: str = arg(help="predictions JSON: {question id: answer text}", positional=True)
    out: str | None = arg(None, "also write the result JSON here", positional=True)
    segmenter: Literal[SEGMENTERS] = arg(  # the choices are the metric's segmenters
        "builtin", "English word tokenizer for F1: the built-in NLTK-equivalent one or NLTK itself (needs nltk and "
                   "its punkt data)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, EvaluateCmrcSettings)


def run(args: argparse.Namespace) -> int:
    s = dataclass_from_namespace(EvaluateCmrcSettings, args)
    result = evaluate_files(s.data, s.pred, segmenter=s.segmenter)
    line = json.dumps(result.to_dict())
    print(line)
    if s.out:
        from nezha.io.atomic import atomic_write_text

        atomic_write_text(s.out, line + "\n")
    return 0
