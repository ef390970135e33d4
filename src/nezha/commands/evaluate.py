"""``nezha evaluate``: score a fine-tuned model folder on labelled data (metrics.json + predictions)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace
from nezha.tasks.finetuned import ModelFolderArgs


@dataclass(kw_only=True)
class EvaluateArgs(ModelFolderArgs):
    """Settings of ``nezha evaluate``; how the data is read comes from the model folder's config.json."""

    eval_file: str = arg(help="labelled data in the training data's format")
    max_eval_examples: int = arg(0, "only the first N examples (0: all)")

    def __post_init__(self) -> None:
        if self.max_eval_examples < 0:
            raise ValueError(f"--max_eval_examples must be >= 0, got {self.max_eval_examples}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, EvaluateArgs)


def run(args: argparse.Namespace) -> int:
    from nezha.commands.finetune import summary
    from nezha.tasks.finetuned import evaluate_folder

    a = dataclass_from_namespace(EvaluateArgs, args)
    report = evaluate_folder(a.model_dir, a.eval_file, a.output_dir, a.device, a.max_eval_examples)
    print(json.dumps(summary(report), ensure_ascii=False))
    return 0
