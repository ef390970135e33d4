"""``nezha predict``: write a fine-tuned model's predictions for a data file (labels not needed)."""

from __future__ import annotations

import argparse

from nezha.train.finetune import predict_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True, help="the model/ folder written by nezha finetune")
    parser.add_argument("--input_file", required=True, help="data in the training data's format (labels optional)")
    parser.add_argument("--output_dir", required=True, help="where the predictions go")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    path = predict_folder(args.model_dir, args.input_file, args.output_dir, args.device)
    print(f"predictions written to {path}")
    return 0
