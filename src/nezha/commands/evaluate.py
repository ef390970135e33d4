"""``nezha evaluate``: score a fine-tuned model folder on labelled data (metrics.json + predictions)."""

from __future__ import annotations

import argparse
import json

from nezha.commands.finetune import summary
from nezha.train.finetune import evaluate_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True, help="the model/ folder written by nezha finetune")
    parser.add_argument("--eval_file", required=True, help="labelled data in the training data's format")
    parser.add_argument("--output_dir", required=True, help="where metrics.json and the predictions go")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--max_eval_examples", type=int, default=0, help="only the first N examples (0: all)")


def run(args: argparse.Namespace) -> int:
    report = evaluate_folder(args.model_dir, args.eval_file, args.output_dir, args.device, args.max_eval_examples)
    print(json.dumps(summary(report), ensure_ascii=False))
    return 0
