"""BERT/NEZHA pretraining instances (``create_pretraining_data``), parallel and reproducible.

The algorithm is BERT's: documents are shuffled; for each of ``dupe_factor`` rounds, every document is cut into
chunks of about a target length (``short_seq_prob`` of the time a random shorter one), each chunk is split into
sentence A and B, where B is, with probability 0.5 (always for a one-sentence chunk), a run of sentences from
another random document (and the unused sentences of the chunk are put back); the pair is truncated at random
front/back to ``max_seq_length - 3`` tokens, framed as ``[CLS] A [SEP] B [SEP]``, and masked (see
:mod:`nezha.data.masking`); all instances are shuffled at the end.

Reproducible whatever the number of workers: BERT threads one ``random.Random`` through everything, which
serialises the work. Here each (round, document) gets its own ``random.Random`` seeded from
``(random_seed, round, document)``, documents are shuffled with ``Random(random_seed)`` and instances with a
NumPy generator seeded by ``random_seed``, so the output depends on the seed and the corpus only.

Phase 1 tokenizes (and segments, for whole word masking) sentences in chunks; phase 2 makes instances from
documents in chunks; both run on ``num_workers`` processes and concatenate results in chunk order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from nezha.data.corpus import Document, ReadStats, expand_input_files, read_documents
from nezha.data.masking import (
    MaskingConfig,
    candidate_units,
    create_masked_lm_predictions,
    mask_batch,
)
from nezha.data.tokenization import ORIGINAL_MAX_CHARS_PER_WORD, NezhaTokenizer, load_vocab
from nezha.io.atomic import atomic_write_text
from nezha.settings import arg

log = logging.getLogger(__name__)

Segmenter = Literal["auto", "rjieba", "jieba"]
OutputFormat = Literal["shards", "tfrecord"]
LONG_SENTENCE_FACTOR = 16  # sentences longer than this x max_seq_length tokens are split (see split_long)
SENTENCES_PER_TASK = 2000
DOCUMENTS_PER_TASK = 200


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
    output_format: OutputFormat = arg("shards", "shards (memory-mapped, what `nezha pretrain` reads fastest) or "
                                                "tfrecord (the original format)")
    instances_per_shard: int = arg(100_000, "instances per shard file (shards format)")
    num_workers: int = arg(1, "worker processes")
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
        if self.num_workers < 1 or self.instances_per_shard < 1:
            raise ValueError("--num_workers and --instances_per_shard must be >= 1")
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
# Phase 1: sentences -> token ids and masking-unit flags


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


def _segmenter(name: str) -> tuple[str, Callable[[str], list[int]]]:
    """(resolved name, function text -> sorted word start offsets)."""
    if name in ("auto", "rjieba"):
        try:
            import rjieba

            return "rjieba", lambda text: [s for _, s, _ in rjieba.tokenize(text)]
        except ImportError:
            if name == "rjieba":
                raise ValueError("--segmenter=rjieba: the rjieba package is not installed") from None
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return "jieba", lambda text: [s for _, s, _ in jieba.tokenize(text)]


_WORD = re.compile(r"\S+")


def _whitespace_word_starts(text: str) -> list[int]:
    return [m.start() for m in _WORD.finditer(text)]


@dataclass
class _Phase1:
    tokenizer: NezhaTokenizer
    wwm: bool
    pre_segmented: bool
    segmenter: str
    is_continuation: np.ndarray  # (V,) bool: vocab entry starts with ##
    _segment: Callable[[str], list[int]] | None = None

    def __call__(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokenize a chunk of sentences: (ids (T,), lengths (S,), unit_starts (T,))."""
        ids, starts, _, lengths = self.tokenizer.encode_flat(sentences)
        if not self.wwm:
            return ids, lengths, np.ones(len(ids), bool)
        if self._segment is None:
            self._segment = _whitespace_word_starts if self.pre_segmented else _segmenter(self.segmenter)[1]
        # Word index of every token, for all sentences at once: sentence k's characters sit at base[k] onwards.
        base = np.concatenate([[0], np.cumsum([len(t) + 1 for t in sentences])[:-1]]).astype(np.int64)
        word_starts = np.fromiter(
            (base[k] + w for k, t in enumerate(sentences) if t for w in self._segment(t)), dtype=np.int64
        )
        sentence = np.repeat(np.arange(len(sentences)), lengths)  # (T,)
        word = np.searchsorted(word_starts, base[sentence] + starts, side="right")  # (T,)
        units = np.ones(len(ids), bool)
        # same as word_unit_starts per sentence: join the previous token's unit inside one word or for a ## piece
        join = ((word[1:] == word[:-1]) & (sentence[1:] == sentence[:-1])) | self.is_continuation[ids[1:]]
        units[1:] = ~join
        return ids, lengths, units


def split_long(lengths: np.ndarray, limit: int) -> np.ndarray:
    """Sentence lengths after cutting sentences longer than ``limit`` into pieces of ``limit`` tokens.

    Returns (S',) lengths over the same flat token array (pieces are consecutive), so one giant line (a file
    without line breaks) becomes many sentences instead of one that truncation would throw away almost entirely.
    """
    out = []
    for n in lengths.tolist():
        while n > limit:
            out.append(limit)
            n -= limit
        out.append(n)
    return np.asarray(out, dtype=np.int64)


def _init_worker(state) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER_STATE
    _WORKER_STATE = state


def _call_worker(task):
    return _WORKER_STATE(task)


def _map(fn, tasks: list, num_workers: int) -> Iterator:
    """Ordered map over tasks, in-process or on a pool of ``num_workers`` processes (fork where available)."""
    if num_workers <= 1 or len(tasks) <= 1:
        yield from (fn(t) for t in tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(min(num_workers, len(tasks)), initializer=_init_worker, initargs=(fn,)) as pool:
        yield from pool.imap(_call_worker, tasks)


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or None, dynamic_ncols=True, leave=False)


def tokenize_corpus(
    docs: Sequence[Document],
    paths: Sequence[Path],
    tokenizer: NezhaTokenizer,
    args: PrepareArgs,
    stats: dict,
) -> TokenizedCorpus:
    """Phase 1: every document's sentences to ids (empty-token sentences and documents dropped, as BERT does)."""
    sentences = [line for d in docs for line in d.lines]
    is_cont = np.array([t.startswith("##") for t in tokenizer.vocab_list], dtype=bool)
    stats["segmenter"] = None
    if args.do_whole_word_mask:
        stats["segmenter"] = "whitespace (--pre_segmented)" if args.pre_segmented else _segmenter(args.segmenter)[0]
    fn = _Phase1(tokenizer, args.do_whole_word_mask, args.pre_segmented, args.segmenter, is_cont)
    tasks = [sentences[i : i + SENTENCES_PER_TASK] for i in range(0, len(sentences), SENTENCES_PER_TASK)]
    ids_parts, len_parts, unit_parts = [], [], []
    n_tokens = 0
    t0 = time.perf_counter()
    with _progress(len(sentences), "tokenize", "sent", args.progress) as bar:
        for ids, lengths, units in _map(fn, tasks, args.num_workers):
            ids_parts.append(ids)
            len_parts.append(lengths)
            unit_parts.append(units)
            n_tokens += len(ids)
            bar.update(len(lengths))
            bar.set_postfix(tokens_per_s=f"{n_tokens / max(time.perf_counter() - t0, 1e-9):,.0f}")
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
    units = np.concatenate(unit_parts) if unit_parts else np.zeros(0, bool)
    lengths = np.concatenate(len_parts) if len_parts else np.zeros(0, np.int64)

    # Per document: drop sentences without tokens, split giant ones, drop documents left empty.
    limit = LONG_SENTENCE_FACTOR * args.max_seq_length
    sent_lengths: list[np.ndarray] = []
    doc_sizes: list[int] = []
    long_lines = 0
    k = 0
    for d in docs:
        dl = lengths[k : k + len(d.lines)]
        for j in np.nonzero(dl > limit)[0].tolist():
            long_lines += 1
            if long_lines <= 5:
                msg = (
                    f"{paths[d.file_index]}:{d.line_numbers[j]}: a line of {int(dl[j]):,} tokens (one sentence a "
                    f"line expected); split into pieces of {limit} tokens"
                )
                log.warning(msg)
                stats["problems"].append(msg)
        k += len(d.lines)
        dl = split_long(dl[dl > 0], limit)
        if len(dl):
            sent_lengths.append(dl)
            doc_sizes.append(len(dl))
    stats["long_lines_split"] = long_lines
    stats["empty_token_sentences"] = int((lengths == 0).sum())
    sl = np.concatenate(sent_lengths) if sent_lengths else np.zeros(0, np.int64)
    return TokenizedCorpus(
        ids=ids,
        unit_starts=units,
        sentence_offsets=np.concatenate([[0], np.cumsum(sl)]).astype(np.int64),
        document_offsets=np.concatenate([[0], np.cumsum(doc_sizes)]).astype(np.int64),
    )


# ----------------------------------------------------------------------------------------------------------------
# Phase 2: documents -> instances


@dataclass(frozen=True)
class TrainingInstance:
    """One instance before padding; ``input_ids`` include [CLS]/[SEP] and the masked replacements."""

    input_ids: list[int]
    segment_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]
    is_random_next: bool


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


def create_instances_from_document(
    corpus: TokenizedCorpus,
    document_index: int,
    *,
    max_seq_length: int,
    short_seq_prob: float,
    masking: MaskingConfig,
    cls_id: int,
    sep_id: int,
    rng: random.Random,
    stats: InstanceStats | None = None,
) -> list[TrainingInstance]:
    """One document's instances, one at a time with one ``random.Random`` (the reference path; n-gram masking)."""
    pairs = pair_document(corpus, document_index, max_seq_length=max_seq_length, short_seq_prob=short_seq_prob, rng=rng)
    return [
        _make_instance(corpus, (a0, a1), (b0, b1), rnd, masking, cls_id, sep_id, rng, stats)
        for a0, a1, b0, b1, rnd in pairs
    ]


def build_pair_arrays(
    corpus: TokenizedCorpus, pairs: Sequence[Pair], max_seq_length: int, cls_id: int, sep_id: int
) -> dict[str, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` for many pairs at once, gathered from the flat corpus arrays.

    Returns input_ids (N, L) int32, segment_ids (N, L) int8, lengths (N,), candidates (N, L) bool (maskable),
    unit_starts (N, L) bool (a truncated segment's first token always begins a unit), next_sentence_labels (N,).
    """
    P = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    a0, a1, b0, b1 = (P[:, k : k + 1] for k in range(4))  # (N, 1) each
    la, lb = a1 - a0, b1 - b0
    pos = np.arange(max_seq_length)[None, :]  # (1, L)
    in_a = (pos >= 1) & (pos <= la)
    in_b = (pos >= la + 2) & (pos < la + 2 + lb)
    src = np.where(in_a, a0 + pos - 1, np.where(in_b, b0 + pos - la - 2, 0))  # (N, L) flat token index
    cand = in_a | in_b
    ids = np.where(cand, corpus.ids[src], 0).astype(np.int32)
    n = len(P)
    rows = np.arange(n)
    length = (la + lb + 3)[:, 0]
    ids[:, 0] = cls_id
    ids[rows, la[:, 0] + 1] = sep_id
    ids[rows, length - 1] = sep_id
    starts = np.where(cand, corpus.unit_starts[src], False)
    starts |= (pos == 1) | (pos == la + 2)
    return {
        "input_ids": ids,
        "segment_ids": ((pos >= la + 2) & (pos < la + lb + 3)).astype(np.int8),
        "lengths": length.astype(np.int32),
        "candidates": cand,
        "unit_starts": starts,
        "next_sentence_labels": P[:, 4].astype(np.int8),
    }


def _make_instance(corpus, a, b, is_random_next, masking, cls_id, sep_id, rng, stats) -> TrainingInstance:
    la, lb = a[1] - a[0], b[1] - b[0]
    assert la >= 1 and lb >= 1, (a, b)
    ids = [cls_id, *corpus.ids[a[0] : a[1]].tolist(), sep_id, *corpus.ids[b[0] : b[1]].tolist(), sep_id]
    special = [True] + [False] * la + [True] + [False] * lb + [True]
    ua = corpus.unit_starts[a[0] : a[1]]
    ub = corpus.unit_starts[b[0] : b[1]]
    if ua.all() and ub.all():
        units = [(p, p + 1) for p in range(1, la + 1)] + [(p, p + 1) for p in range(la + 2, la + lb + 2)]
    else:
        # a truncated segment may begin inside a word: its first token begins a unit
        starts = [True, True, *ua[1:].tolist(), True, True, *ub[1:].tolist(), True]
        units = candidate_units(special, starts)
    res = create_masked_lm_predictions(ids, units, masking, rng)
    if stats is not None:
        stats.instances += 1
        stats.tokens += len(ids)
        stats.masked += len(res.positions)
        stats.mask_token += res.num_mask_token
        stats.random_token += res.num_random
        stats.multi_piece_masked += res.num_in_multi_piece_units
        stats.random_next += is_random_next
        stats.budget_capped += int(round(len(ids) * masking.masked_lm_prob)) > masking.max_predictions_per_seq
    return TrainingInstance(
        input_ids=res.input_ids,
        segment_ids=[0] * (la + 2) + [1] * (lb + 1),
        masked_lm_positions=res.positions,
        masked_lm_ids=res.labels,
        is_random_next=is_random_next,
    )


@dataclass
class InstanceArrays:
    """A batch of instances padded to fixed width, the layout of :mod:`nezha.data.shards`."""

    arrays: dict[str, np.ndarray]
    stats: InstanceStats = field(default_factory=InstanceStats)

    def __len__(self) -> int:
        return len(self.arrays["lengths"])


def instances_to_arrays(instances: Sequence[TrainingInstance], max_seq_length: int, max_predictions: int) -> dict:
    """Pad instances into the shard arrays (same fields and dtypes as nezha.data.shards.FIELDS)."""
    from nezha.data import shards

    return shards.instances_to_arrays(
        [
            shards.Instance(i.input_ids, i.segment_ids, i.masked_lm_positions, i.masked_lm_ids, i.is_random_next)
            for i in instances
        ],
        max_seq_length,
        max_predictions,
    )


@dataclass
class _Phase2:
    corpus: TokenizedCorpus
    args: PrepareArgs
    masking: MaskingConfig
    cls_id: int
    sep_id: int

    def __call__(self, task: tuple[int, int, int]) -> InstanceArrays:
        round_index, d0, d1 = task
        args = self.args
        stats = InstanceStats()
        if self.masking.max_ngram > 1:  # n-gram spans: the per-instance path
            out: list[TrainingInstance] = []
            for d in range(d0, d1):
                out += create_instances_from_document(
                    self.corpus,
                    d,
                    max_seq_length=args.max_seq_length,
                    short_seq_prob=args.short_seq_prob,
                    masking=self.masking,
                    cls_id=self.cls_id,
                    sep_id=self.sep_id,
                    rng=document_rng(args.random_seed, round_index, d),
                    stats=stats,
                )
            return InstanceArrays(instances_to_arrays(out, args.max_seq_length, args.max_predictions_per_seq), stats)
        pairs: list[Pair] = []
        for d in range(d0, d1):
            pairs += pair_document(
                self.corpus,
                d,
                max_seq_length=args.max_seq_length,
                short_seq_prob=args.short_seq_prob,
                rng=document_rng(args.random_seed, round_index, d),
            )
        built = build_pair_arrays(self.corpus, pairs, args.max_seq_length, self.cls_id, self.sep_id)
        rng = np.random.default_rng([args.random_seed, round_index, d0])  # fixed chunks: independent of workers
        m = mask_batch(
            built["input_ids"], built["lengths"], built["candidates"], built["unit_starts"], self.masking, rng
        )
        n = len(pairs)
        stats.instances = n
        stats.tokens = int(built["lengths"].sum())
        stats.masked = int(m.num_masked.sum())
        stats.mask_token, stats.random_token = m.num_mask_token, m.num_random
        stats.multi_piece_masked = m.num_in_multi_piece_units
        stats.random_next = int(built["next_sentence_labels"].sum())
        stats.budget_capped = int(
            (np.rint(built["lengths"] * self.masking.masked_lm_prob) > self.masking.max_predictions_per_seq).sum()
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
        return InstanceArrays(arrays, stats)


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


def create_instance_arrays(
    corpus: TokenizedCorpus, args: PrepareArgs, tokenizer: NezhaTokenizer
) -> tuple[dict[str, np.ndarray], InstanceStats]:
    """Phase 2 over all rounds and documents, then BERT's final shuffle of all instances."""
    if corpus.num_documents < 2:
        raise ValueError(
            f"--input_file={args.input_file}: {corpus.num_documents} document(s) with text; random next sentences "
            "need at least 2 (separate documents with a blank line)"
        )
    corpus = shuffle_documents(corpus, args.random_seed)
    masking = args.masking_config(len(tokenizer), tokenizer.mask_id)
    fn = _Phase2(corpus, args, masking, tokenizer.cls_id, tokenizer.sep_id)
    D = corpus.num_documents
    tasks = [
        (r, d, min(d + DOCUMENTS_PER_TASK, D)) for r in range(args.dupe_factor) for d in range(0, D, DOCUMENTS_PER_TASK)
    ]
    parts: list[dict[str, np.ndarray]] = []
    stats = InstanceStats()
    t0 = time.perf_counter()
    with _progress(D * args.dupe_factor, "instances", "doc", args.progress) as bar:
        for (_, d0, d1), res in zip(tasks, _map(fn, tasks, args.num_workers)):
            parts.append(res.arrays)
            stats.add(res.stats)
            bar.update(d1 - d0)
            bar.set_postfix(
                instances=stats.instances, tokens_per_s=f"{stats.tokens / max(time.perf_counter() - t0, 1e-9):,.0f}"
            )
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    perm = np.random.default_rng(args.random_seed).permutation(len(arrays["lengths"]))
    return {k: v[perm] for k, v in arrays.items()}, stats


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


def vocab_fingerprint(vocab: Sequence[str]) -> str:
    return hashlib.sha256("".join(t + "\n" for t in vocab).encode("utf-8")).hexdigest()


def prepare(args: PrepareArgs) -> dict:
    """Run ``nezha prepare``: read, tokenize, make instances, write; returns the summary (also in index.json)."""
    t0 = time.perf_counter()
    tokenizer = original_tokenizer(args.vocab_file, args.do_lower_case)
    paths = expand_input_files(args.input_file)
    read_stats = ReadStats()
    docs = read_documents(
        paths,
        skip_invalid_lines=args.skip_invalid_lines,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        stats=read_stats,
    )
    stats: dict = {"problems": read_stats.problems}
    t_read = time.perf_counter()
    corpus = tokenize_corpus(docs, paths, tokenizer, args, stats)
    sentences_per_doc = np.diff(corpus.document_offsets)
    t_tok = time.perf_counter()
    arrays, inst_stats = create_instance_arrays(corpus, args, tokenizer)
    t_inst = time.perf_counter()
    summary = {
        "input_files": [str(p) for p in paths],
        "documents": corpus.num_documents,
        "one_sentence_documents": int((sentences_per_doc == 1).sum()),
        "sentences": int(len(corpus.sentence_offsets) - 1),
        "corpus_tokens": int(len(corpus.ids)),
        "empty_files": read_stats.empty_files,
        "invalid_utf8_lines_skipped": read_stats.invalid_utf8_lines,
        "documents_in_other_shards": read_stats.skipped_documents,
        **{k: v for k, v in stats.items() if k != "problems"},
        **summarize(inst_stats),
        "seconds": 0.0,
        "seconds_by_phase": {"read": t_read - t0, "tokenize": t_tok - t_read, "instances": t_inst - t_tok},
        "problems": stats["problems"],
    }
    _write(arrays, args, tokenizer, summary, t0)
    summary["seconds_by_phase"]["write"] = time.perf_counter() - t_inst
    if args.summary_json:
        atomic_write_text(args.summary_json, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


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


def _write(arrays: dict, args: PrepareArgs, tokenizer: NezhaTokenizer, summary: dict, t0: float) -> None:
    if args.output_format == "tfrecord":
        from nezha.data.tfrecord import write_instances_tfrecord

        outputs = [p.strip() for p in args.output_file.split(",") if p.strip()]
        write_instances_tfrecord(arrays, outputs)
        summary["seconds"] = time.perf_counter() - t0
        return
    from nezha.data import shards

    out = Path(args.output_file)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output_file={out}: exists and is not a folder (shards output is a folder)")
    out.mkdir(parents=True, exist_ok=True)
    # An older dataset here stops looking complete before any of its files is replaced.
    (out / "index.json").unlink(missing_ok=True)
    for old in out.glob("shard-*.npy"):
        old.unlink()
    n = len(arrays["lengths"])
    entries = []
    for s, start in enumerate(range(0, max(n, 1), args.instances_per_shard)):
        part = {k: v[start : start + args.instances_per_shard] for k, v in arrays.items()}
        entries.append(shards.write_shard(out, f"shard-{s:05d}", part))
    summary["seconds"] = time.perf_counter() - t0
    shards.write_index(
        out,
        entries,
        max_seq_length=args.max_seq_length,
        max_predictions_per_seq=args.max_predictions_per_seq,
        vocab_size=len(tokenizer),
        metadata={
            "vocab_sha256": vocab_fingerprint(tokenizer.vocab_list),
            "args": asdict(args),
            "summary": summary,
        },
    )
