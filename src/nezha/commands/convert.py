"""``nezha convert --tf_checkpoint PATH/model.ckpt-N --bert_config ... --vocab ... --output DIR``.

Converts a released TensorFlow NEZHA checkpoint into a ``from_pretrained`` folder (``config.json``,
``model.safetensors``, ``vocab.txt``) without TensorFlow. See docs/convert.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from nezha.model.config import ACTIVATIONS
from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace


@dataclass(kw_only=True)
class ConvertSettings:
    """Which released checkpoint to convert, and where to."""

    tf_checkpoint: str = arg(help="checkpoint prefix, e.g. PATH/model.ckpt-900000 (the .index suffix is accepted)")
    bert_config: str = arg(help="the release's bert_config.json")
    vocab: str | None = arg(None, "the release's vocab.txt (copied into the output folder; size checked)")
    output: str = arg(help="folder to write")
    hidden_act: Literal[ACTIVATIONS] | None = arg(  # the choices are the model's activations
        None, "override the activation; by default the original code's 'gelu' (tanh approximation) is written as "
              "'gelu_new'")
    no_verify: bool = arg(False, "skip the per-tensor CRC32C check (faster)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, ConvertSettings)


def run(args: argparse.Namespace) -> int:
    from nezha.convert.from_tf import convert_tf_checkpoint

    s = dataclass_from_namespace(ConvertSettings, args)
    report = convert_tf_checkpoint(
        s.tf_checkpoint, s.bert_config, s.output, s.vocab, hidden_act=s.hidden_act, verify=not s.no_verify,
    )
    print(report)
    if s.vocab is None:
        print("note: no --vocab given; copy the release's vocab.txt into the folder before fine-tuning")
    return 0
