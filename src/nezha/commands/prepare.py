"""``nezha prepare``: pretraining instances from raw text, accepting the original script's flags verbatim.

    nezha prepare --input_file=a.txt,b.txt --output_file=data/ --vocab_file=vocab.txt --do_lower_case=True \\
        --max_seq_length=128 --max_predictions_per_seq=20 --masked_lm_prob=0.15 --random_seed=12345 \\
        --dupe_factor=5 --short_seq_prob=0.1 --do_whole_word_mask=True --num_workers=4

Every flag is a field of :class:`nezha.data.pretraining.PrepareArgs` (help text, default, validation), so
``--config settings.json`` sets any of them too.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

# No linear algebra here: without this, importing numpy starts OpenBLAS's thread pool, whose spinning threads cost
# ~0.05 s of CPU per run (a seventh of a 2 MB corpus's whole run). Set before numpy is first imported; a value the
# user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from nezha.data.pretraining import PrepareArgs, prepare  # noqa: E402
from nezha.settings import add_dataclass_arguments, dataclass_from_namespace  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, PrepareArgs)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse: by default it returns large freed blocks to the system and maps
    large new ones afresh, so each batch's arrays fault their pages in again (~5,500 page faults per 8,192
    instances written as TFRecord; a third of that writer's time on this VM). Peak memory is unchanged."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20)  # blocks up to 256 MB come from the heap, which ...
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)  # ... is not trimmed back until 1 GB of it is free
    except (OSError, AttributeError):  # not glibc: its own allocator's defaults
        pass


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def run(args: argparse.Namespace) -> int:
    pargs = dataclass_from_namespace(PrepareArgs, args)
    keep_freed_memory()
    s = prepare(pargs)
    print(
        f"documents {s['documents']:,} (one-sentence {s['one_sentence_documents']:,}), "
        f"sentences {s['sentences']:,}, corpus tokens {s['corpus_tokens']:,}\n"
        f"instances {s['instances']:,}, tokens {s['tokens']:,}, masked fraction {s['masked_fraction']:.4f} "
        f"([MASK] {s['mask_token_share']:.3f} / random {s['random_token_share']:.3f} / kept {s['kept_share']:.3f})\n"
        f"NSP random-next {s['random_next_fraction']:.3f}, WWM share {s['wwm_share']:.3f}, "
        f"budget capped {s['budget_capped_fraction']:.3f}\n"
        f"skipped: empty files {s['empty_files']}, invalid UTF-8 lines {s['invalid_utf8_lines_skipped']}, "
        f"long lines split {s['long_lines_split']}; {s['seconds']:.1f}s "
        f"({s['instances'] / max(s['seconds'], 1e-9):,.0f} instances/s)\n"
        f"wrote {pargs.output_file} ({pargs.output_format})"
    )
    return 0
