"""The ``nezha`` command line: one console script, subcommands mapped to importable modules.

Each subcommand lives in ``nezha.commands.<name>`` and exposes ``add_arguments(parser)`` and ``run(args) -> int``,
so tests call the same code paths and ``--help`` stays cheap (modules are imported only for the command run).
Every command's arguments come from one settings dataclass (:mod:`nezha.settings`), so each also reads
``--config FILE``. Errors a user can fix (bad flag values, missing files, malformed data) print one line naming
the file; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import nezha
from nezha.errors import UserError

# name -> (module under nezha.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "build a small NEZHA, run it on real Chinese text and show what it computes"),
    "vocab": ("vocab", "train a WordPiece vocab.txt from a corpus (Chinese-BERT conventions)"),
    "prepare": ("prepare", "make pretraining instances (NSP pairs, static/whole-word masking) from raw text"),
    "pretrain": ("pretrain", "pretrain NEZHA (MLM + NSP) on one or many devices (torchrun)"),
    "finetune": ("finetune", "fine-tune on classification, NER or reading comprehension"),
    "evaluate": ("evaluate", "evaluate a fine-tuned model on labelled data"),
    "predict": ("predict", "write predictions of a fine-tuned model"),
    "evaluate-cmrc": ("evaluate_cmrc", "official CMRC 2018 EM/F1 of a predictions file"),
    "convert": ("convert", "convert a released TensorFlow NEZHA checkpoint (no TensorFlow needed)"),
    "verify": ("verify", "check downloaded checkpoint files against an MD5 list"),
    "export-onnx": ("export_onnx", "export a model to ONNX with dynamic batch and sequence axes"),
    "serve": ("serve", "HTTP JSON API and a try-it web page for a model, with dynamic batching"),
    "quickstart": ("quickstart", "the whole workflow on embedded Chinese data, with a report"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported (``nezha prepare`` never loads torch)."""
    parser = argparse.ArgumentParser(prog="nezha", description=nezha.__doc__)
    parser.add_argument("--version", action="version", version=f"nezha {nezha.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        p.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(f"nezha.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    module = importlib.import_module(f"nezha.commands.{args._module}")
    # Commands that run other commands (quickstart) call back through this entry point instead of importing
    # nezha.cli, which imports them.
    args._main = main
    try:
        return int(module.run(args) or 0)
    except (UserError, ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"nezha {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nezha {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: Exception) -> str:
    """The message of ``e`` on one line; an operating-system error as ``FILE: reason`` (not ``[Errno 17] ...``)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e).replace("\n", " ")


if __name__ == "__main__":
    sys.exit(main())
