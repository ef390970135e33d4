"""``nezha convert --tf_checkpoint PATH/model.ckpt-N --bert_config ... --vocab ... --output DIR``.

Converts a released TensorFlow NEZHA checkpoint into a ``from_pretrained`` folder (``config.json``,
``model.safetensors``, ``vocab.txt``) without TensorFlow. See docs/convert.md.
"""

from __future__ import annotations

import argparse

from nezha.model.config import ACTIVATIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tf_checkpoint", required=True,
                        help="checkpoint prefix, e.g. PATH/model.ckpt-900000 (the .index suffix is accepted)")
    parser.add_argument("--bert_config", required=True, help="the release's bert_config.json")
    parser.add_argument("--vocab", help="the release's vocab.txt (copied into the output folder; size checked)")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--hidden_act", choices=ACTIVATIONS, default=None,
                        help="override the activation; by default the original code's 'gelu' (tanh approximation) "
                             "is written as 'gelu_new'")
    parser.add_argument("--no_verify", action="store_true", help="skip the per-tensor CRC32C check (faster)")


def run(args: argparse.Namespace) -> int:
    from nezha.convert.from_tf import convert_tf_checkpoint

    report = convert_tf_checkpoint(
        args.tf_checkpoint, args.bert_config, args.output, args.vocab,
        hidden_act=args.hidden_act, verify=not args.no_verify,
    )
    print(report)
    if args.vocab is None:
        print("note: no --vocab given; copy the release's vocab.txt into the folder before fine-tuning")
    return 0
