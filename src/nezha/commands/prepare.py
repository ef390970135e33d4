"""``nezha prepare``: pretraining instances from raw text, accepting the original script's flags verbatim.

    nezha prepare --input_file=a.txt,b.txt --output_file=data/ --vocab_file=vocab.txt --do_lower_case=True \\
        --max_seq_length=128 --max_predictions_per_seq=20 --masked_lm_prob=0.15 --random_seed=12345 \\
        --dupe_factor=5 --short_seq_prob=0.1 --do_whole_word_mask=True --num_workers=4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from nezha.data.pretraining import SEGMENTERS, PrepareArgs, prepare
from nezha.settings import str2bool

log = logging.getLogger(__name__)

_HELP = {
    "input_file": "input text files, comma-separated, globs allowed; one sentence a line, blank line between documents",
    "output_file": "output: a folder (shards) or comma-separated .tfrecord files (tfrecord)",
    "vocab_file": "the vocab.txt of the model",
    "do_lower_case": "lower-case and strip accents (True for the Chinese BERT/NEZHA vocab)",
    "max_seq_length": "maximum tokens per instance, [CLS]/[SEP] included",
    "max_predictions_per_seq": "maximum masked positions per instance",
    "masked_lm_prob": "share of tokens to mask",
    "random_seed": "seed; the output depends on it and the input only (not on --num_workers)",
    "dupe_factor": "how many times each document is used, with different masks",
    "short_seq_prob": "probability of a shorter random target length",
    "do_whole_word_mask": "mask all pieces of a word together (words from --segmenter or --pre_segmented)",
    "segmenter": "Chinese word segmenter for whole word masking: auto (rjieba if installed, else jieba), rjieba, jieba",
    "pre_segmented": "input words are already separated by spaces (gold segmentation): use them as the words",
    "max_ngram": "n-gram (span) masking: spans of up to this many words/pieces, n drawn with p ~ 1/n (1 = off)",
    "output_format": "shards (memory-mapped, what `nezha pretrain` reads fastest) or tfrecord (the original format)",
    "instances_per_shard": "instances per shard file (shards format)",
    "num_workers": "worker processes",
    "num_shards": "split the input's documents into this many parts (one per machine) ...",
    "shard_index": "... and make part number SHARD_INDEX (0-based)",
    "skip_invalid_lines": "skip (and count) lines that are not valid UTF-8 instead of stopping",
    "progress": "show progress bars",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(PrepareArgs):
        kwargs: dict = {"help": _HELP[f.name], "dest": f.name}
        required = f.default is dataclasses.MISSING
        if f.type in ("bool", bool):
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        elif f.type in ("int", int):
            kwargs["type"] = int
        elif f.type in ("float", float):
            kwargs["type"] = float
        if f.name == "segmenter":
            kwargs["choices"] = SEGMENTERS
        elif f.name == "output_format":
            kwargs["choices"] = ("shards", "tfrecord")
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            kwargs["help"] += f" (default: {f.default})"
        parser.add_argument(f"--{f.name}", **kwargs)
    parser.add_argument("--summary_json", default=None, help="also write the summary to this JSON file")


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(PrepareArgs)}
    pargs = PrepareArgs(**{k: v for k, v in vars(args).items() if k in names})
    summary = prepare(pargs)
    lines = [
        f"documents {summary['documents']:,} (one-sentence {summary['one_sentence_documents']:,}), "
        f"sentences {summary['sentences']:,}, corpus tokens {summary['corpus_tokens']:,}",
        f"instances {summary['instances']:,}, tokens {summary['tokens']:,}, masked fraction "
        f"{summary['masked_fraction']:.4f} ([MASK] {summary['mask_token_share']:.3f} / random "
        f"{summary['random_token_share']:.3f} / kept {summary['kept_share']:.3f})",
        f"NSP random-next {summary['random_next_fraction']:.3f}, WWM share {summary['wwm_share']:.3f}, "
        f"budget capped {summary['budget_capped_fraction']:.3f}",
        f"skipped: empty files {summary['empty_files']}, invalid UTF-8 lines {summary['invalid_utf8_lines_skipped']}, "
        f"long lines split {summary['long_lines_split']}; {summary['seconds']:.1f}s "
        f"({summary['instances'] / max(summary['seconds'], 1e-9):,.0f} instances/s)",
        f"wrote {pargs.output_file} ({pargs.output_format})",
    ]
    print("\n".join(lines))
    if args.summary_json:
        from nezha.io.atomic import atomic_write_text

        atomic_write_text(args.summary_json, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0
