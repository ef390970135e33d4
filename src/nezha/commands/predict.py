"""``nezha predict``: write a fine-tuned model's predictions for a data file (labels not needed)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace
from nezha.tasks.finetuned import ModelFolderArgs


@dataclass(kw_only=True)
class PredictArgs(ModelFolderArgs):
    """Settings of ``nezha predict``; how the data is read comes from the model folder's config.json."""

    input_file: str = arg(help="data in the training data's format (labels optional)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, PredictArgs)


def run(args: argparse.Namespace) -> int:
    from nezha.tasks.finetuned import predict_folder

    a = dataclass_from_namespace(PredictArgs, args)
    path = predict_folder(a.model_dir, a.input_file, a.output_dir, a.device)
    print(f"predictions written to {path}")
    return 0
