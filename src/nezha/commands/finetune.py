"""``nezha finetune``: fine-tune on classification, NER or reading comprehension; see nezha.train.finetune
and nezha.tasks (one package per task)."""

from __future__ import annotations

import argparse
import json
import sys

from nezha.settings import add_dataclass_arguments, dataclass_from_namespace
from nezha.train.finetune import FinetuneArgs, finetune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Checkpoints: --save_steps N writes output_dir/checkpoints/step-*/, --resume auto continues the latest; see "
        "docs/finetune.md. Exit status 143 after SIGTERM (checkpoint saved), 3 when the loss became NaN/inf."
    )
    add_dataclass_arguments(parser, FinetuneArgs)


def run(args: argparse.Namespace) -> int:
    from nezha.train.loop import NonFiniteLossError

    try:
        metrics = finetune(dataclass_from_namespace(FinetuneArgs, args))
    except NonFiniteLossError as e:
        print(f"nezha finetune: error: {e}", file=sys.stderr)
        return 3
    if "eval" in metrics:
        print(json.dumps(summary(metrics["eval"]), ensure_ascii=False))
    return 143 if metrics.get("stopped_by_signal") else 0


def summary(report: dict) -> dict:
    """The headline numbers of an evaluation report and its trivial baseline."""
    keys = ("accuracy", "macro_f1", "f1", "em", "average", "precision", "recall")
    out = {k: round(v, 4) for k, v in report.items() if k in keys and isinstance(v, float)}
    for k, v in report.items():
        if k.startswith("baseline") and isinstance(v, dict):
            out[k] = {m: round(x, 4) for m, x in v.items() if m in keys and isinstance(x, float)}
    if "entity" in report:
        out["token_f1"] = round(report["token"]["f1"], 4)
    return out
