"""BERT/NEZHA pretraining instances (``create_pretraining_data``), streamed, parallel and reproducible.

The algorithm is BERT's: for each of ``dupe_factor`` rounds, every document is cut into chunks of about a target
length (``short_seq_prob`` of the time a random shorter one), each chunk is split into sentence A and B, where B
is, with probability 0.5 (always for a one-sentence chunk), a run of sentences from another random document (and
the unused sentences of the chunk are put back); the pair is truncated at random front/back to
``max_seq_length - 3`` tokens, framed as ``[CLS] A [SEP] B [SEP]``, and masked (see :mod:`nezha.data.masking`);
all instances are shuffled at the end. (BERT also shuffles the documents first: with the final shuffle and a
uniformly drawn random document that only changes the order, so it is left out.)

Streaming: the input is read in windows of whole documents (``--window_mb``, see
:func:`nezha.data.corpus.iter_windows`). A window is the unit of work: it is decoded, tokenized (and segmented),
paired, shuffled, masked and written on its own, so memory is bounded by the window size whatever the corpus
size, and windows run on ``--num_workers`` processes. Random next documents and the final shuffle are drawn
within a window; a corpus that fits in one window gets BERT's global behaviour.

Reproducible whatever the number of workers: each window has its own generator,
``numpy.random.default_rng([random_seed, window])``, and its own output files (shards ``shard-WWWWW-SSS``;
TFRecord parts appended in window order), so the output depends on the seed and the corpus only. Everything
within a window is vectorized over all its documents and instances: no Python loop per sentence or instance.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from nezha.data import shards, tfrecord
from nezha.data.corpus import WHITESPACE, Document, Piece, ReadStats, Window, expand_input_files, iter_windows
from nezha.data.masking import MaskingConfig, mask_ngram_batch, mask_pairs, mask_units
from nezha.data.tokenization import ORIGINAL_MAX_CHARS_PER_WORD, NezhaTokenizer, load_vocab
from nezha.io.atomic import atomic_write_text
from nezha.settings import arg

log = logging.getLogger(__name__)

Segmenter = Literal["auto", "rjieba", "jieba"]
OutputFormat = Literal["auto", "shards", "tfrecord"]
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".record")
LONG_SENTENCE_FACTOR = 16  # sentences longer than this x max_seq_length tokens are split (see split_long)


def output_format_for(output_file: str) -> str:
    """``tfrecord`` when every comma-separated output path has a TFRecord suffix (as the original script's users
    name them), else ``shards``."""
    paths = [p.strip() for p in output_file.split(",") if p.strip()]
    return "tfrecord" if paths and all(p.lower().endswith(TFRECORD_SUFFIXES) for p in paths) else "shards"


@dataclass(frozen=True)
class PrepareArgs:
    """Settings of ``nezha prepare``, one flag each; names and defaults are the original script's flags.

    Each setting is validated once: the masking ones by :class:`MaskingConfig`, the rest here.
    """

    input_file: str = arg(help="input text files, comma-separated, globs allowed; one sentence a line, blank line "
                               "between documents")
    output_file: str = arg(help="output: a folder (shards) or comma-separated .tfrecord files (tfrecord)")
    vocab_file: str = arg(help="the vocab.txt of the model")
    do_lower_case: bool = arg(True, "lower-case and strip accents (True for the Chinese BERT/NEZHA vocab)")
    max_seq_length: int = arg(128, "maximum tokens per instance, [CLS]/[SEP] included")
    max_predictions_per_seq: int = arg(20, "maximum masked positions per instance")
    masked_lm_prob: float = arg(0.15, "share of tokens to mask")
    random_seed: int = arg(12345, "seed; the output depends on it and the input only (not on --num_workers)")
    dupe_factor: int = arg(10, "how many times each document is used, with different masks (the original's "
                               "default; its README uses 5)")
    short_seq_prob: float = arg(0.1, "probability of a shorter random target length")
    do_whole_word_mask: bool = arg(False, "mask all pieces of a word together (words from --segmenter or "
                                          "--pre_segmented)")
    segmenter: Segmenter = arg("auto", "Chinese word segmenter for whole word masking: auto (rjieba if installed, "
                                       "else jieba), rjieba, jieba")
    pre_segmented: bool = arg(False, "input words are already separated by spaces (gold segmentation): use them "
                                     "as the words")
    max_ngram: int = arg(1, "n-gram (span) masking: spans of up to this many words/pieces, n drawn with p ~ 1/n "
                            "(1 = off)")
    output_format: OutputFormat = arg("auto", "shards (memory-mapped, what `nezha pretrain` reads fastest) or "
                                              "tfrecord (the original format); auto: tfrecord when every "
                                              "--output_file ends in .tfrecord, .tfrecords or .record, else shards")
    instances_per_shard: int = arg(100_000, "instances per shard file (shards format)")
    num_workers: int = arg(1, "worker processes (each takes whole windows)")
    window_mb: int = arg(0, "documents are processed in windows of about this many MB of text: memory per worker "
                            "grows with it; random next sentences and the final shuffle are drawn within a window. "
                            "0: chosen from the input's size (a 24th of it, 2 to 8 MB)")
    num_shards: int = arg(1, "split the input's documents into this many parts (one per machine) ...")
    shard_index: int = arg(0, "... and make part number SHARD_INDEX (0-based)")
    skip_invalid_lines: bool = arg(False, "skip (and count) lines that are not valid UTF-8 instead of stopping")
    progress: bool = arg(True, "show progress bars")
    summary_json: str = arg("", "also write the summary to this JSON file")

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError(f"--max_seq_length={self.max_seq_length}: needs at least 5 ([CLS] A [SEP] B [SEP])")
        # the vocab's size and [MASK] id are known later; the masking settings are checked now
        self.masking_config(MaskingConfig.vocab_size, MaskingConfig.mask_id)
        if self.max_predictions_per_seq > self.max_seq_length - 3:
            raise ValueError(
                f"--max_predictions_per_seq={self.max_predictions_per_seq} is more than the "
                f"{self.max_seq_length - 3} maskable tokens of --max_seq_length={self.max_seq_length}"
            )
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"--short_seq_prob={self.short_seq_prob}: must be in [0, 1]")
        if self.dupe_factor < 1:
            raise ValueError(f"--dupe_factor={self.dupe_factor}: must be >= 1")
        for name, choices in (("segmenter", Segmenter), ("output_format", OutputFormat)):
            if getattr(self, name) not in get_args(choices):  # a --config file bypasses argparse's choices
                raise ValueError(f"--{name}={getattr(self, name)}: expected one of {', '.join(get_args(choices))}")
        if self.output_format == "auto":  # resolved once, so everything after sees shards or tfrecord
            object.__setattr__(self, "output_format", output_format_for(self.output_file))
        if self.num_workers < 1 or self.instances_per_shard < 1 or self.window_mb < 0:
            raise ValueError("--num_workers and --instances_per_shard must be >= 1, --window_mb >= 0")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard_index={self.shard_index} must be in [0, --num_shards={self.num_shards})")
        if self.pre_segmented and not self.do_whole_word_mask:
            log.warning("--pre_segmented has no effect without --do_whole_word_mask")

    def masking_config(self, vocab_size: int, mask_id: int) -> MaskingConfig:
        """These settings as a MaskingConfig, which validates them."""
        return MaskingConfig(
            masked_lm_prob=self.masked_lm_prob,
            max_predictions_per_seq=self.max_predictions_per_seq,
            vocab_size=vocab_size,
            mask_id=mask_id,
            max_ngram=self.max_ngram,
        )


# ----------------------------------------------------------------------------------------------------------------
# Phase 1: a window's text -> token ids, masking units, sentences and documents


@dataclass
class TokenizedCorpus:
    """All sentences' tokens in flat arrays; documents are runs of sentences."""

    ids: np.ndarray  # (T,) int32
    unit_starts: np.ndarray  # (T,) bool, True where a masking unit (word) begins; all True without WWM
    sentence_offsets: np.ndarray  # (S+1,) int64 into ids
    document_offsets: np.ndarray  # (D+1,) int64 into sentences

    @property
    def num_documents(self) -> int:
        return len(self.document_offsets) - 1

    @functools.cached_property
    def offsets_lists(self) -> tuple[list[int], list[int]]:
        """(sentence_offsets, document_offsets) as Python lists: indexing them is ~5x faster than NumPy scalars."""
        return self.sentence_offsets.tolist(), self.document_offsets.tolist()

    @functools.cached_property
    def unit_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit of each token (T,), first token of each unit and then T (U+1,)): the masking units, found once."""
        starts = self.unit_starts.copy()
        starts[:1] = True
        first = np.flatnonzero(starts)
        return np.cumsum(starts, dtype=np.int64) - 1, np.append(first, len(starts))


@dataclass(frozen=True)
class Lines:
    """Lines of text joined by ``\\n``, with the document of each line (-1: none, a blank line) and where each line
    comes from (for messages)."""

    text: str
    doc: np.ndarray  # (n_lines,) int64
    file: np.ndarray  # (n_lines,) int64 index into the input files, -1 for a separator line
    number: np.ndarray  # (n_lines,) int64 1-based line number in its file

    def where(self, k: int, paths: Sequence[Path]) -> str:
        return f"{paths[int(self.file[k])]}:{int(self.number[k])}"


def load_segmenter(name: str) -> tuple[str, Callable[[str], np.ndarray]]:
    """(resolved name, function text -> sorted character offsets where words begin).

    The text may be many lines joined by ``\\n``: jieba never joins characters across whitespace, so the words are
    those of each line. Long texts are cut at line ends into ~1M-character parts (the word lists stay small).
    """
    if name in ("auto", "rjieba"):
        try:
            import rjieba

            return "rjieba", functools.partial(_word_starts, rjieba.cut)
        except ImportError:
            if name == "rjieba":
                raise ValueError("--segmenter=rjieba: the rjieba package is not installed") from None
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return "jieba", functools.partial(_word_starts, lambda text: list(jieba.cut(text)))


def word_segmenter(args: PrepareArgs) -> tuple[str | None, Callable[[str], np.ndarray] | None]:
    """(name, word starts function) for whole word masking under ``args``; (None, None) without it."""
    if not args.do_whole_word_mask:
        return None, None
    if args.pre_segmented:
        return "whitespace (--pre_segmented)", _whitespace_word_starts
    return load_segmenter(args.segmenter)


def _word_starts(cut: Callable[[str], list[str]], text: str, part: int = 1 << 20) -> np.ndarray:
    out, a = [], 0
    while a < len(text):
        b = text.find("\n", a + part)
        b = len(text) if b < 0 else b + 1
        words = cut(text[a:b])
        sizes = np.fromiter(map(len, words), np.int64, len(words))
        if sizes.sum() != b - a:  # the words must tile the text
            raise RuntimeError("the segmenter's words do not cover its input text")
        out.append(a + np.cumsum(sizes) - sizes)
        a = b
    return np.concatenate(out) if out else np.zeros(0, np.int64)


@functools.cache
def _is_space() -> np.ndarray:
    """(0x110000,) bool: the code points ``str.isspace`` (and so ``str.strip``) treats as whitespace."""
    out = np.zeros(sys.maxunicode + 1, bool)
    out[[ord(c) for c in WHITESPACE + "\n"]] = True
    return out


def _whitespace_word_starts(text: str) -> np.ndarray:
    """Where the words of pre-segmented text begin: after whitespace (``\\S+`` runs)."""
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    word = ~_is_space()[cps]
    return np.flatnonzero(word & ~np.concatenate([[False], word[:-1]]))


def split_long(lengths: np.ndarray, limit: int) -> np.ndarray:
    """Sentence lengths after cutting sentences longer than ``limit`` into pieces of ``limit`` tokens.

    Returns (S',) lengths over the same flat token array (pieces are consecutive), so one giant line (a file
    without line breaks) becomes many sentences instead of one that truncation would throw away almost entirely.
    """
    lengths = np.asarray(lengths, np.int64)
    pieces = np.maximum(1, -(-lengths // limit))
    out = np.full(int(pieces.sum()), limit, np.int64)
    out[np.cumsum(pieces) - 1] = lengths - (pieces - 1) * limit
    return out


def _line_starts(text: str) -> np.ndarray:
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return np.concatenate([[0], np.flatnonzero(cps == 10) + 1]).astype(np.int64)


def tokenize_lines(
    lines: Lines,
    paths: Sequence[Path],
    tokenizer: NezhaTokenizer,
    args: PrepareArgs,
    stats: dict,
    segment: Callable[[str], np.ndarray] | None = None,
) -> TokenizedCorpus:
    """Phase 1: every line of a document is a sentence; lines without tokens are dropped, giant lines split,
    documents left empty dropped (as BERT does). ``segment``: word starts for whole word masking."""
    ids, tok_start, _ = tokenizer.encode_text(lines.text)
    line_start = _line_starts(lines.text)
    tok_line = np.searchsorted(line_start, tok_start, side="right") - 1  # (T,)
    line_len = np.bincount(tok_line, minlength=len(line_start))  # (n_lines,)
    content = lines.doc >= 0
    if line_len[~content].any():
        raise AssertionError("tokens on a line outside any document")
    units = np.ones(len(ids), bool)
    if args.do_whole_word_mask and len(ids):
        word = np.searchsorted(segment(lines.text), tok_start, side="right")  # (T,) word of each token
        # a token joins the previous token's unit inside one word (same line) or when it is a ## piece
        join = ((word[1:] == word[:-1]) & (tok_line[1:] == tok_line[:-1])) | _continuation_table(tokenizer)[ids[1:]]
        units[1:] = ~join
    limit = LONG_SENTENCE_FACTOR * args.max_seq_length
    long_lines = np.flatnonzero(line_len > limit)
    for k in long_lines.tolist():
        stats["problems"].append(
            ("long", f"{lines.where(k, paths)}: a line of {int(line_len[k]):,} tokens (one sentence a line "
                     f"expected); split into pieces of {limit} tokens")
        )
    stats["long_lines_split"] = stats.get("long_lines_split", 0) + len(long_lines)
    stats["empty_token_sentences"] = stats.get("empty_token_sentences", 0) + int((content & (line_len == 0)).sum())
    keep = content & (line_len > 0)
    kept = line_len[keep]
    sent_len = split_long(kept, limit)
    sent_doc = np.repeat(lines.doc[keep], np.maximum(1, -(-kept // limit)))
    new_doc = np.concatenate([[True], sent_doc[1:] != sent_doc[:-1]]) if len(sent_doc) else np.zeros(0, bool)
    return TokenizedCorpus(
        ids=ids,
        unit_starts=units,
        sentence_offsets=np.concatenate([[0], np.cumsum(sent_len)]).astype(np.int64),
        document_offsets=np.concatenate([np.flatnonzero(new_doc), [len(sent_doc)]]).astype(np.int64),
    )


def _continuation_table(tokenizer: NezhaTokenizer) -> np.ndarray:
    """(V,) bool: the vocab entry is a ``##`` piece."""
    if getattr(tokenizer, "_is_continuation", None) is None:
        tokenizer._is_continuation = np.array([t.startswith("##") for t in tokenizer.vocab_list], dtype=bool)
    return tokenizer._is_continuation


def tokenize_corpus(
    docs: Sequence[Document],
    paths: Sequence[Path],
    tokenizer: NezhaTokenizer,
    args: PrepareArgs,
    stats: dict,
) -> TokenizedCorpus:
    """Phase 1 for documents read into memory: every document's sentences to ids (empty-token sentences and
    documents dropped, as BERT does)."""
    stats["segmenter"], segment = word_segmenter(args)
    texts, doc, file, number = [], [], [], []
    for k, d in enumerate(docs):
        if k:
            texts.append("")  # a separator line between documents
            doc.append([-1])
            file.append([-1])
            number.append([0])
        texts += [t.replace("\n", " ") for t in d.lines]
        doc.append(np.full(len(d.lines), k))
        file.append(np.full(len(d.lines), d.file_index))
        number.append(d.line_numbers)
    cat = (lambda parts: np.concatenate(parts).astype(np.int64)) if docs else (lambda parts: np.zeros(0, np.int64))
    lines = Lines("\n".join(texts), cat(doc), cat(file), cat(number))
    if not docs:
        return TokenizedCorpus(np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(1, np.int64), np.zeros(1, np.int64))
    return tokenize_lines(lines, paths, tokenizer, args, stats, segment)


def read_window(window: Window, paths: Sequence[Path], args: PrepareArgs, stats: dict) -> Lines:
    """A window's pieces decoded (strict UTF-8; errors name file and line) and joined, with each line's document.

    A blank line (whitespace only, as ``str.strip`` sees it) ends a document, and so does each piece's end. With
    ``--num_shards`` the documents of other shards are blanked out (their lines stay, so line numbers hold).
    """
    texts, files, numbers = [], [], []
    for piece in window.pieces:
        try:
            text, number = piece.data.decode("utf-8"), None
        except UnicodeDecodeError as e:
            text, number = _decode_lines(piece, paths[piece.file_index], e, args.skip_invalid_lines, stats)
        if number is None and text.endswith("\n"):
            text = text[:-1]
        n = text.count("\n") + 1 if number is None else len(number)
        if n == 0:
            continue
        if texts:
            texts.append("")
            files.append(np.full(1, -1))
            numbers.append(np.zeros(1, np.int64))
        texts.append(text)
        files.append(np.full(n, piece.file_index))
        numbers.append(np.arange(piece.first_line, piece.first_line + n) if number is None else number)
    text = "\n".join(texts)
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    line_of_char = np.cumsum(cps == 10, dtype=np.int32)  # (C,) line of each character
    n_lines = int(line_of_char[-1]) + 1 if len(cps) else 1
    blank = np.bincount(line_of_char[~_is_space()[cps]], minlength=n_lines) == 0  # (n_lines,)
    starts_doc = ~blank & np.concatenate([[True], blank[:-1]])
    doc = np.where(blank, -1, np.cumsum(starts_doc) - 1)
    if args.num_shards > 1:
        other = (doc >= 0) & ((window.first_document + doc) % args.num_shards != args.shard_index)
        stats["documents_in_other_shards"] = stats.get("documents_in_other_shards", 0) + int((starts_doc & other).sum())
        if other.any():
            cps = cps.copy()
            cps[other[line_of_char] & (cps != 10)] = 32  # blank those documents out, keeping the line structure
            text = cps.tobytes().decode("utf-32-le")
            doc[other] = -1
    return Lines(text, doc, np.concatenate(files).astype(np.int64), np.concatenate(numbers).astype(np.int64))


def _decode_lines(piece: Piece, path: Path, error: UnicodeDecodeError, skip: bool, stats: dict):
    """A piece with invalid UTF-8: the first bad line is an error, or (``skip``) every bad line is dropped."""
    if not skip:
        line_start = piece.data.rfind(b"\n", 0, error.start) + 1
        line = piece.first_line + piece.data.count(b"\n", 0, line_start)
        raise ValueError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{piece.data[error.start]:02x} at byte offset "
            f"{error.start - line_start}); fix the file or pass --skip_invalid_lines to skip such lines"
        )
    kept, numbers = [], []
    for i, raw in enumerate(piece.data.split(b"\n")):
        try:
            kept.append(raw.decode("utf-8"))
            numbers.append(piece.first_line + i)
        except UnicodeDecodeError as e:
            stats["invalid_utf8_lines"] = stats.get("invalid_utf8_lines", 0) + 1
            stats["problems"].append(
                ("invalid", f"{path}:{piece.first_line + i}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                            f"offset {e.start}): line skipped")
            )
    if piece.data.endswith(b"\n"):  # the empty remainder after the last newline is not a line
        kept.pop()
        numbers.pop()
    return "\n".join(kept), np.asarray(numbers, np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Phase 2: documents -> instances


@dataclass
class InstanceStats:
    instances: int = 0
    tokens: int = 0
    masked: int = 0
    mask_token: int = 0
    random_token: int = 0
    multi_piece_masked: int = 0
    random_next: int = 0
    budget_capped: int = 0  # instances whose 15% budget was cut by max_predictions_per_seq

    def add(self, other: InstanceStats) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def document_rng(seed: int, round_index: int, document_index: int) -> random.Random:
    """The generator for one (dupe round, document): independent of which process makes it."""
    return random.Random((seed << 48) ^ (round_index << 32) ^ document_index)


def truncate_seq_pair(
    a: tuple[int, int], b: tuple[int, int], max_num_tokens: int, rng: random.Random
) -> tuple[tuple[int, int], tuple[int, int]]:
    """BERT's truncation on half-open token ranges, in O(1) rng calls.

    BERT drops one token at a time from the longer segment (B on a tie), from the front or the back with
    probability 1/2 each. Which segment loses how many tokens follows from the lengths alone (the longer one down
    to the shorter, then alternately B, A, ...); the number of front drops of each is then Binomial(k, 1/2),
    drawn as the popcount of ``k`` random bits.
    """
    (a0, a1), (b0, b1) = a, b
    la, lb = a1 - a0, b1 - b0
    excess = la + lb - max_num_tokens
    if excess <= 0:
        return a, b
    first = min(excess, abs(la - lb))
    rest = excess - first
    ka = (first if la > lb else 0) + rest // 2
    kb = (first if lb > la else 0) + (rest + 1) // 2
    fa = rng.getrandbits(ka).bit_count() if ka else 0
    fb = rng.getrandbits(kb).bit_count() if kb else 0
    return (a0 + fa, a1 - (ka - fa)), (b0 + fb, b1 - (kb - fb))


Pair = tuple[int, int, int, int, bool]  # (a_start, a_end, b_start, b_end, is_random_next): token ranges


def pair_document(
    corpus: TokenizedCorpus,
    document_index: int,
    *,
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
) -> list[Pair]:
    """BERT's ``create_instances_from_document`` up to (and including) truncation, on token ranges.

    Chunks of sentences up to a target length; A = the first ``a_end`` sentences; B = the rest, or (p=0.5, always
    for a one-sentence chunk) sentences of another random document, the chunk's unused sentences put back.
    """
    so, do = corpus.offsets_lists
    first, last = do[document_index], do[document_index + 1]
    n_docs = corpus.num_documents
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    pairs: list[Pair] = []
    chunk_start = first  # sentences [chunk_start, i] form the current chunk
    current_length = 0
    i = first
    while i < last:
        current_length += so[i + 1] - so[i]
        if i == last - 1 or current_length >= target_seq_length:
            n_chunk = i + 1 - chunk_start
            a_end = chunk_start + (rng.randint(1, n_chunk - 1) if n_chunk >= 2 else 1)
            a = (so[chunk_start], so[a_end])
            if n_chunk == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - (a[1] - a[0])
                for _ in range(10):
                    random_document = rng.randint(0, n_docs - 1)
                    if random_document != document_index:
                        break
                r0, r1 = do[random_document], do[random_document + 1]
                j = rng.randint(r0, r1 - 1)
                b_start = so[j]
                while True:
                    j += 1
                    if j == r1 or so[j] - b_start >= target_b_length:
                        break
                b = (b_start, so[j])
                i -= i + 1 - a_end  # put the chunk's unused sentences back
            else:
                is_random_next = False
                b = (so[a_end], so[i + 1])
            a, b = truncate_seq_pair(a, b, max_num_tokens, rng)
            pairs.append((a[0], a[1], b[0], b[1], is_random_next))
            chunk_start = i + 1
            current_length = 0
        i += 1
    return pairs


def pair_corpus(
    corpus: TokenizedCorpus, *, rounds: int, max_seq_length: int, short_seq_prob: float, rng: np.random.Generator
) -> np.ndarray:
    """:func:`pair_document` for every (round, document) at once: (N, 5) int64 rows (a0, a1, b0, b1,
    is_random_next) of token ranges, truncated.

    Each (round, document) is a stream; one vectorized step makes the next chunk of every live stream: its end is
    the first sentence where the chunk reaches the target length (a ``searchsorted`` on the sentence offsets), A
    ends at a random sentence, B is the rest or (p=0.5, always for one sentence) a run from another random
    document, which puts the chunk's unused sentences back. Steps = the most chunks of one document.
    """
    so, do = corpus.sentence_offsets, corpus.document_offsets
    D = corpus.num_documents
    max_num_tokens = max_seq_length - 3
    doc = np.tile(np.arange(D, dtype=np.int64), rounds)  # (K,) the streams' documents
    target = np.full(len(doc), max_num_tokens, np.int64)
    short = rng.random(len(doc)) < short_seq_prob
    target[short] = rng.integers(2, max_num_tokens + 1, int(short.sum()))
    start, last = do[doc], do[doc + 1]  # next chunk's first sentence; the document's end
    out = []
    while len(doc):
        n = len(doc)
        end = np.minimum(np.searchsorted(so, so[start] + target, side="left"), last)  # chunk: sentences [start, end)
        n_chunk = end - start
        u = rng.random((2, n))
        a_end = start + np.where(n_chunk >= 2, 1 + (u[0] * (n_chunk - 1)).astype(np.int64), 1)
        is_random = (n_chunk == 1) | (u[1] < 0.5)
        a0, a1 = so[start], so[a_end]
        b0, b1 = a1.copy(), so[end]
        r = np.flatnonzero(is_random)
        if len(r):
            other = rng.integers(0, D - 1, len(r))
            other += other >= doc[r]  # uniform over the other documents
            r0, r1 = do[other], do[other + 1]
            j = r0 + (rng.random(len(r)) * (r1 - r0)).astype(np.int64)  # B starts at a random sentence ...
            target_b = target[r] - (a1[r] - a0[r])
            e = np.clip(np.searchsorted(so, so[j] + target_b, side="left"), j + 1, r1)  # ... and runs to its target
            b0[r], b1[r] = so[j], so[e]
        out.append(np.stack([a0, a1, b0, b1, is_random.astype(np.int64)], axis=1))
        nxt = np.where(is_random, a_end, end)  # a random B puts the chunk's unused sentences back
        alive = nxt < last
        doc, target, start, last = doc[alive], target[alive], nxt[alive], last[alive]
    pairs = np.concatenate(out) if out else np.zeros((0, 5), np.int64)
    return truncate_pairs(pairs, max_num_tokens, rng)


def truncate_pairs(pairs: np.ndarray, max_num_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`truncate_seq_pair` for (N, 5) pair rows: which side loses how many tokens follows from the lengths;
    the front drops of each side are Binomial(k, 1/2)."""
    P = pairs.copy()
    la, lb = P[:, 1] - P[:, 0], P[:, 3] - P[:, 2]
    excess = np.maximum(la + lb - max_num_tokens, 0)
    first = np.minimum(excess, np.abs(la - lb))  # the longer side down to the shorter (B on a tie) ...
    rest = excess - first  # ... then alternately B, A, ...
    ka = np.where(la > lb, first, 0) + rest // 2
    kb = np.where(lb > la, first, 0) + (rest + 1) // 2
    fa, fb = rng.binomial(ka, 0.5), rng.binomial(kb, 0.5)
    P[:, 0] += fa
    P[:, 1] -= ka - fa
    P[:, 2] += fb
    P[:, 3] -= kb - fb
    return P


def build_pair_arrays(
    corpus: TokenizedCorpus,
    pairs: Sequence[Pair] | np.ndarray,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    units: bool = True,
) -> dict[str, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` for many pairs at once, gathered from the flat corpus arrays.

    Returns input_ids (N, L) int32, segment_ids (N, L) int8, lengths (N,) int32, len_a (N,), next_sentence_labels
    (N,) int8 and, with ``units``, candidates (N, L) bool (maskable) and unit_starts (N, L) bool (a truncated
    segment's first token always begins a unit).
    """
    P = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    a0, a1, b0, b1 = (P[:, k : k + 1] for k in range(4))  # (N, 1) each
    la, lb = (a1 - a0).astype(np.int32), (b1 - b0).astype(np.int32)
    length = la + lb + 3
    pos = np.arange(max_seq_length, dtype=np.int32)[None, :]  # (1, L)
    in_b = pos >= la + 2
    # (N, L) flat token index: A's tokens at positions 1..la, B's from la+2 (other positions fixed below)
    src = np.where(in_b, (b0 - la - 2).astype(np.int32), (a0 - 1).astype(np.int32)) + pos
    real = pos < length  # (N, L)
    ids = corpus.ids.take(src, mode="clip") if len(corpus.ids) else np.zeros(src.shape, np.int32)  # (padding: any)
    ids *= real
    n = len(P)
    rows = np.arange(n)
    ids[:, 0] = cls_id
    ids[rows, la[:, 0] + 1] = sep_id
    ids[rows, length[:, 0] - 1] = sep_id
    out = {
        "input_ids": ids.astype(np.int32, copy=False),
        "segment_ids": (in_b & real).astype(np.int8),
        "lengths": length[:, 0].astype(np.int32),
        "len_a": la[:, 0],
        "next_sentence_labels": P[:, 4].astype(np.int8),
    }
    if units:
        cand = real & (pos != 0) & (pos != la + 1) & (pos != length - 1)
        starts = corpus.unit_starts.take(src, mode="clip") & cand if len(corpus.ids) else cand
        starts |= (pos == 1) | (pos == la + 2)
        out["candidates"], out["unit_starts"] = cand, starts
    return out


class PairUnits:
    """The whole-word masking units of instances ``[CLS] A [SEP] B [SEP]`` made from pair rows (see
    :func:`build_pair_arrays`), read from the corpus's units (:attr:`TokenizedCorpus.unit_index`, found once per
    corpus) instead of from per-position flags: a segment's units are the corpus units it overlaps, cut to the
    segment (so a truncated segment's first token begins a unit). Implements :class:`nezha.data.masking.Units`."""

    def __init__(self, corpus: TokenizedCorpus, pairs: np.ndarray):
        P = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
        self.a0, self.a1, self.b0, self.b1 = P[:, 0], P[:, 1], P[:, 2], P[:, 3]
        self.unit_of, self.unit_first = corpus.unit_index
        self.count_a = self._count(self.a0, self.a1)
        self.count = self.count_a + self._count(self.b0, self.b1)

    def _count(self, s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
        if not len(self.unit_of):
            return np.zeros(len(s0), np.int64)
        last = np.maximum(s1 - 1, 0)
        return np.where(s1 > s0, self.unit_of[last] - self.unit_of[np.minimum(s0, last)] + 1, 0)

    def at(self, rows: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        in_b = q >= self.count_a[rows]
        s0 = np.where(in_b, self.b0[rows], self.a0[rows])
        s1 = np.where(in_b, self.b1[rows], self.a1[rows])
        u = self.unit_of[s0] + np.where(in_b, q - self.count_a[rows], q)
        start = np.maximum(self.unit_first[u], s0)
        size = np.minimum(self.unit_first[u + 1], s1) - start
        at_pos = np.where(in_b, self.a1[rows] - self.a0[rows] + 2, 1)  # where the segment begins in the row
        return start - s0 + at_pos, size


def shuffle_documents(corpus: TokenizedCorpus, seed: int) -> TokenizedCorpus:
    """BERT shuffles the document list once before the dupe rounds; same here with ``Random(seed)``."""
    order = list(range(corpus.num_documents))
    random.Random(seed).shuffle(order)
    so, do = corpus.sentence_offsets, corpus.document_offsets
    tok_ranges = [(int(so[do[d]]), int(so[do[d + 1]])) for d in order]
    sent_lens = [np.diff(so[do[d] : do[d + 1] + 1]) for d in order]
    if not order:
        return corpus
    ids = np.concatenate([corpus.ids[a:b] for a, b in tok_ranges])
    units = np.concatenate([corpus.unit_starts[a:b] for a, b in tok_ranges])
    sl = np.concatenate(sent_lens)
    return TokenizedCorpus(
        ids=ids,
        unit_starts=units,
        sentence_offsets=np.concatenate([[0], np.cumsum(sl)]).astype(np.int64),
        document_offsets=np.concatenate([[0], np.cumsum([len(x) for x in sent_lens])]).astype(np.int64),
    )




# ----------------------------------------------------------------------------------------------------------------
# One window: text -> tokens -> pairs -> masked instances, written as they are made

BATCH = 8192  # instances built and masked at a time: bounds the (N, L) arrays of a window


def window_instances(
    corpus: TokenizedCorpus,
    args: PrepareArgs,
    tokenizer: NezhaTokenizer,
    window_index: int = 0,
    where: str = "",
) -> Iterator[tuple[dict[str, np.ndarray], InstanceStats]]:
    """The instances of one window's corpus, already in their final (shuffled) order, in batches of shard-layout
    arrays with their statistics. The generator is ``default_rng([random_seed, window_index])``."""
    _check_documents(corpus, args, where)
    rng = np.random.default_rng([args.random_seed, window_index])
    masking = args.masking_config(len(tokenizer), tokenizer.mask_id)
    pairs = pair_corpus(corpus, rounds=args.dupe_factor, max_seq_length=args.max_seq_length,
                        short_seq_prob=args.short_seq_prob, rng=rng)
    pairs = pairs[rng.permutation(len(pairs))]  # BERT's final shuffle of all instances
    py_rng = random.Random((args.random_seed << 32) ^ window_index) if masking.max_ngram > 1 else None
    for b in range(0, len(pairs), BATCH):
        built = build_pair_arrays(corpus, pairs[b : b + BATCH], args.max_seq_length, tokenizer.cls_id,
                                  tokenizer.sep_id, units=py_rng is not None)
        if py_rng is not None:
            m = mask_ngram_batch(built["input_ids"], built["lengths"], built["candidates"], built["unit_starts"],
                                 masking, py_rng)
        elif args.do_whole_word_mask:
            m = mask_units(built["input_ids"], built["lengths"], PairUnits(corpus, pairs[b : b + BATCH]), masking,
                           rng)
        else:
            m = mask_pairs(built["input_ids"], built["len_a"], built["lengths"], masking, rng)
        stats = InstanceStats(
            instances=len(built["lengths"]),
            tokens=int(built["lengths"].sum()),
            masked=int(m.num_masked.sum()),
            mask_token=m.num_mask_token,
            random_token=m.num_random,
            multi_piece_masked=m.num_in_multi_piece_units,
            random_next=int(built["next_sentence_labels"].sum()),
            budget_capped=int((np.rint(built["lengths"] * masking.masked_lm_prob) > masking.max_predictions_per_seq)
                              .sum()),
        )
        arrays = {
            "input_ids": m.input_ids,
            "segment_ids": built["segment_ids"],
            "lengths": built["lengths"],
            "masked_lm_positions": m.positions,
            "masked_lm_ids": m.labels,
            "num_masked": m.num_masked,
            "next_sentence_labels": built["next_sentence_labels"],
        }
        yield arrays, stats


def _check_documents(corpus: TokenizedCorpus, args: PrepareArgs, where: str) -> None:
    if corpus.num_documents < 2:
        raise ValueError(
            f"{where or '--input_file=' + args.input_file}: {corpus.num_documents} document(s) with text; random "
            "next sentences need at least 2 (separate documents with a blank line)"
        )


def create_instance_arrays(
    corpus: TokenizedCorpus, args: PrepareArgs, tokenizer: NezhaTokenizer, window_index: int = 0
) -> tuple[dict[str, np.ndarray], InstanceStats]:
    """All instances of one window in memory (what ``nezha prepare`` writes for that window)."""
    parts, stats = [], InstanceStats()
    for arrays, s in window_instances(corpus, args, tokenizer, window_index):
        parts.append(arrays)
        stats.add(s)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, stats


@dataclass
class _WindowJob:
    """Turns one window into written instances; runs in the main process or in a worker (state given at fork)."""

    tokenizer: NezhaTokenizer
    args: PrepareArgs
    paths: list[Path]
    segment: Callable[[str], np.ndarray] | None
    out: _Output

    def __call__(self, window: Window) -> dict:
        t0 = time.perf_counter()
        stats: dict = {"problems": []}
        lines = read_window(window, self.paths, self.args, stats)
        t1 = time.perf_counter()
        corpus = tokenize_lines(lines, self.paths, self.tokenizer, self.args, stats, self.segment)
        t2 = time.perf_counter()
        where = f"{self.paths[window.pieces[0].file_index]}:{window.pieces[0].first_line}.." if window.index else ""
        _check_documents(corpus, self.args, where)  # before anything is written
        sink = self.out.sink(window.index)
        inst = InstanceStats()
        t_write = 0.0
        try:
            for arrays, s in window_instances(corpus, self.args, self.tokenizer, window.index, where):
                inst.add(s)
                tw = time.perf_counter()
                sink.write(arrays)
                t_write += time.perf_counter() - tw
            tw = time.perf_counter()
            written = sink.close()
            t_write += time.perf_counter() - tw
        except BaseException:
            sink.abort()
            raise
        t3 = time.perf_counter()
        sentences_per_doc = np.diff(corpus.document_offsets)
        return {
            "window": window.index,
            "bytes": window.nbytes,
            "written": written,
            "instances": inst,
            "counts": {
                "documents": corpus.num_documents,
                "one_sentence_documents": int((sentences_per_doc == 1).sum()),
                "sentences": int(len(corpus.sentence_offsets) - 1),
                "corpus_tokens": int(len(corpus.ids)),
                "long_lines_split": stats.get("long_lines_split", 0),
                "empty_token_sentences": stats.get("empty_token_sentences", 0),
                "invalid_utf8_lines_skipped": stats.get("invalid_utf8_lines", 0),
                "documents_in_other_shards": stats.get("documents_in_other_shards", 0),
            },
            "problems": stats["problems"],
            "seconds": {"read": t1 - t0, "tokenize": t2 - t1, "instances": t3 - t2 - t_write, "write": t_write},
        }


# ----------------------------------------------------------------------------------------------------------------
# Output: shards written by each window's job; TFRecord parts per window appended in window order by the main process


class _ShardSink:
    """A window's instances as shards ``shard-WWWWW-SSS`` of at most ``instances_per_shard`` each."""

    def __init__(self, folder: Path, window: int, args: PrepareArgs):
        self.folder, self.window, self.args = folder, window, args
        self.entries: list[dict] = []
        self.writer: shards.ShardWriter | None = None

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        n, at = len(arrays["lengths"]), 0
        while at < n:
            if self.writer is None:
                name = f"shard-{self.window:05d}-{len(self.entries):03d}"
                self.writer = shards.ShardWriter(self.folder, name, self.args.max_seq_length,
                                                 self.args.max_predictions_per_seq)
            take = min(n - at, self.args.instances_per_shard - self.writer.num_instances)
            self.writer.write({k: v[at : at + take] for k, v in arrays.items()})
            at += take
            if self.writer.num_instances == self.args.instances_per_shard:
                self.entries.append(self.writer.close())
                self.writer = None

    def close(self) -> list[dict]:
        if self.writer is not None:
            self.entries.append(self.writer.close())
            self.writer = None
        return self.entries

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        for e in self.entries:
            for f in shards.FIELDS:
                (self.folder / f"{e['name']}.{f}.npy").unlink(missing_ok=True)


class _TFRecordSink:
    """A window's records in one part file per output file; local record i goes to part i % len(outputs)."""

    def __init__(self, parts: list[Path]):
        self.parts = parts
        self.files = [open(p, "wb") for p in parts]
        self.count = 0

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        self.count += tfrecord.write_pretraining_records(arrays, [f.write for f in self.files], self.count)

    def close(self) -> dict:
        for f in self.files:
            f.close()
        return {"parts": [str(p) for p in self.parts], "instances": self.count}

    def abort(self) -> None:
        for f, p in zip(self.files, self.parts):
            f.close()
            p.unlink(missing_ok=True)


@dataclass
class _Output:
    """Where instances go: a shard folder, or TFRecord files (written round robin, as the original script)."""

    args: PrepareArgs

    def __post_init__(self):
        self.tfrecord = self.args.output_format == "tfrecord"
        self.token = f"{os.getpid()}"
        self.started_output = False
        if self.tfrecord:
            self.outputs = [Path(p.strip()) for p in self.args.output_file.split(",") if p.strip()]
            if not self.outputs:
                raise ValueError("--output_file names no file")
            self.tmp = [p.with_name(f".{p.name}.{self.token}.tmp") for p in self.outputs]
            self.written = 0
            self.started = [False] * len(self.outputs)
        else:
            self.folder = Path(self.args.output_file)
            if self.folder.exists() and not self.folder.is_dir():
                raise NotADirectoryError(
                    f"--output_file={self.folder}: exists and is not a folder (shards output is a folder)"
                )
            self.entries: list[dict] = []

    def start(self) -> None:
        """Before any window is written: an older dataset in the folder stops looking complete, then goes."""
        if self.started_output:
            return
        self.started_output = True
        if self.tfrecord:
            for p in self.outputs:
                p.parent.mkdir(parents=True, exist_ok=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "index.json").unlink(missing_ok=True)
        for old in self.folder.glob("shard-*.npy"):
            old.unlink()

    def sink(self, window: int):
        self.start()
        if self.tfrecord:
            return _TFRecordSink([p.with_name(f".{p.name}.{self.token}.{window:05d}.part") for p in self.outputs])
        return _ShardSink(self.folder, window, self.args)

    def add(self, written) -> None:
        """A finished window's output, in window order."""
        if not self.tfrecord:
            self.entries += written
            return
        k = len(self.outputs)
        for p, part in enumerate(map(Path, written["parts"])):
            target = (self.written + p) % k  # the window's record i is the run's record written + i
            if not self.started[target]:
                os.replace(part, self.tmp[target])  # a file's first part becomes the file
                self.started[target] = True
                continue
            with open(part, "rb") as src, open(self.tmp[target], "ab") as dst:
                _append(src, dst)
            part.unlink()
        self.written += written["instances"]

    def finish(self, metadata: dict, vocab_size: int) -> None:
        if self.tfrecord:
            for tmp, final in zip(self.tmp, self.outputs):
                with open(tmp, "ab") as f:  # (created empty when no record went to it)
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            return
        shards.write_index(
            self.folder,
            self.entries,
            max_seq_length=self.args.max_seq_length,
            max_predictions_per_seq=self.args.max_predictions_per_seq,
            vocab_size=vocab_size,
            metadata=metadata,
        )

    def abort(self) -> None:
        if self.tfrecord:
            for p in self.outputs:
                for junk in p.parent.glob(f".{p.name}.{self.token}.*"):
                    junk.unlink(missing_ok=True)
        else:
            for e in self.entries:
                for f in shards.FIELDS:
                    (self.folder / f"{e['name']}.{f}.npy").unlink(missing_ok=True)


def _append(src, dst) -> None:
    """Copy a whole file's bytes to the end of another, in the kernel where it can."""
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30):
            pass
    except (AttributeError, OSError):
        import shutil

        shutil.copyfileobj(src, dst, 1 << 22)


# ----------------------------------------------------------------------------------------------------------------
# Workers


def _init_worker(job) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER_JOB
    _WORKER_JOB = job


def _call_worker(window):
    return _WORKER_JOB(window)


def _run_windows(job: _WindowJob, windows: Iterator[Window], num_workers: int) -> Iterator[dict]:
    """Results in window order: in this process, or on ``num_workers`` processes with at most two windows per
    worker in flight (so memory is bounded whatever the corpus size). A corpus of one window stays in-process."""
    first = next(windows, None)
    second = next(windows, None) if first is not None else None
    if first is None:
        return
    if num_workers <= 1 or second is None:
        yield job(first)
        if second is not None:
            yield job(second)
            for w in windows:
                yield job(w)
        return
    import itertools
    import multiprocessing

    job.out.start()  # before workers write into it
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(job,)) as pool:
        pending: deque = deque()
        for w in itertools.chain([first, second], windows):
            pending.append(pool.apply_async(_call_worker, (w,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ----------------------------------------------------------------------------------------------------------------
# The whole command


def summarize(stats: InstanceStats) -> dict:
    n, m = max(stats.instances, 1), max(stats.masked, 1)
    return {
        "instances": stats.instances,
        "tokens": stats.tokens,
        "masked": stats.masked,
        "masked_fraction": stats.masked / max(stats.tokens, 1),
        "mask_token_share": stats.mask_token / m,
        "random_token_share": stats.random_token / m,
        "kept_share": (stats.masked - stats.mask_token - stats.random_token) / m,
        "random_next_fraction": stats.random_next / n,
        "wwm_share": stats.multi_piece_masked / m,
        "budget_capped_fraction": stats.budget_capped / n,
    }


WINDOWS_PER_INPUT = 24  # the default window: a 24th of the input, ...
MIN_WINDOW_MB, MAX_WINDOW_MB = 2, 8  # ... within these bounds


def window_size(window_mb: int, input_bytes: int) -> int:
    """Bytes per window: ``--window_mb``, or (0) from the input's size alone, never from ``--num_workers``, so the
    output stays the same for any number of workers. About 24 windows let two or more workers finish together
    (five 10 MB windows on two workers leave one idle for a window's time); windows stay 2 to 8 MB, so a small
    corpus is one window (BERT's corpus-wide random next sentences and shuffle) and memory stays bounded."""
    if window_mb:
        return window_mb << 20
    return min(MAX_WINDOW_MB << 20, max(MIN_WINDOW_MB << 20, input_bytes // WINDOWS_PER_INPUT))


def vocab_fingerprint(vocab: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(t + "\n" for t in vocab).encode("utf-8")).hexdigest()


def prepare(args: PrepareArgs) -> dict:
    """Run ``nezha prepare``: read, tokenize, make instances, write; returns the summary (also in index.json)."""
    t0 = time.perf_counter()
    tokenizer = original_tokenizer(args.vocab_file, args.do_lower_case)
    paths = expand_input_files(args.input_file)
    segmenter, segment = word_segmenter(args)
    tokenizer._direct_tables()  # tables built once, before any worker forks
    _continuation_table(tokenizer)
    out = _Output(args)
    job = _WindowJob(tokenizer, args, paths, segment, out)
    read_stats = ReadStats()
    input_bytes = sum(os.path.getsize(p) for p in paths)
    window_bytes = window_size(args.window_mb, input_bytes)
    windows = iter_windows(paths, window_bytes, read_stats, count_docs=args.num_shards > 1)
    counts: dict[str, int] = {}
    seconds = {"read": 0.0, "tokenize": 0.0, "instances": 0.0, "write": 0.0}
    inst = InstanceStats()
    reported: dict[str, int] = {}
    n_windows = 0
    bar = _progress(input_bytes, args.progress)
    try:
        for res in _run_windows(job, windows, args.num_workers):
            out.add(res["written"])
            n_windows += 1
            inst.add(res["instances"])
            for k, v in res["counts"].items():
                counts[k] = counts.get(k, 0) + v
            for k, v in res["seconds"].items():
                seconds[k] += v
            for kind, message in res["problems"]:
                reported[kind] = reported.get(kind, 0) + 1
                read_stats.report(reported[kind], message)
            if bar is not None:
                bar.update(res["bytes"])
                bar.set_postfix(instances=inst.instances)
        if not n_windows:
            raise ValueError(f"--input_file={args.input_file}: 0 document(s) with text; random next sentences need "
                             "at least 2 (separate documents with a blank line)")
    except BaseException:
        out.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = {
        "input_files": [str(p) for p in paths],
        "documents": counts["documents"],
        "one_sentence_documents": counts["one_sentence_documents"],
        "sentences": counts["sentences"],
        "corpus_tokens": counts["corpus_tokens"],
        "empty_files": read_stats.empty_files,
        "invalid_utf8_lines_skipped": counts["invalid_utf8_lines_skipped"],
        "documents_in_other_shards": counts["documents_in_other_shards"],
        "segmenter": segmenter,
        "long_lines_split": counts["long_lines_split"],
        "empty_token_sentences": counts["empty_token_sentences"],
        **summarize(inst),
        "windows": n_windows,
        "window_bytes": window_bytes,
        "seconds": time.perf_counter() - t0,
        "seconds_by_phase": seconds,  # summed over windows (over workers: more than the wall time)
        "problems": read_stats.problems,
    }
    metadata = {"vocab_sha256": vocab_fingerprint(tokenizer.vocab_list), "args": asdict(args), "summary": summary}
    try:
        out.finish(metadata, len(tokenizer))
    except BaseException:
        out.abort()
        raise
    summary["seconds"] = time.perf_counter() - t0
    if args.summary_json:
        import json

        atomic_write_text(args.summary_json, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _progress(total_bytes: int, enabled: bool):
    """A progress bar over input bytes, only on a terminal (tqdm is not even imported otherwise)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total_bytes, desc="prepare", unit="B", unit_scale=True, dynamic_ncols=True, leave=False)


def original_tokenizer(vocab_file: str | os.PathLike, do_lower_case: bool) -> NezhaTokenizer:
    """The original ``create_pretraining_data.py``'s ``FullTokenizer``: ``[SEP]``/``[MASK]`` typed in the text are
    ordinary text (``[``, ``sep``, ``]``), never special ids or targets; words of up to 200 characters are split
    into pieces (BertTokenizer: 100)."""
    return NezhaTokenizer(
        load_vocab(vocab_file),
        do_lower_case=do_lower_case,
        source=str(vocab_file),
        split_special_tokens=True,
        max_input_chars_per_word=ORIGINAL_MAX_CHARS_PER_WORD,
    )
