"""``nezha pretrain``: MLM + NSP pretraining; every flag is a field of :class:`nezha.train.pretrain.PretrainArgs`."""

from __future__ import annotations

import argparse
import sys

from nezha.settings import add_dataclass_arguments, dataclass_from_namespace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nezha.train.pretrain import PretrainArgs

    parser.epilog = (
        "Multi-GPU: torchrun --standalone --nproc_per_node=N -m nezha.cli pretrain ... ; see docs/pretrain.md. "
        "Exit status 143 after SIGTERM (checkpoint saved), 3 when the loss became NaN/inf."
    )
    add_dataclass_arguments(parser, PretrainArgs)


def run(args: argparse.Namespace) -> int:
    from nezha.train.loop import NonFiniteLossError
    from nezha.train.pretrain import PretrainArgs, pretrain

    settings = dataclass_from_namespace(PretrainArgs, args)
    try:
        result = pretrain(settings)
    except NonFiniteLossError as e:
        print(f"nezha pretrain: error: {e}", file=sys.stderr)
        return 3
    return 143 if result.stopped_by_signal else 0
