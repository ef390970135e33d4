"""Pretraining straight from text: tokenise and segment once (cached), draw masks anew every epoch.

``nezha prepare`` fixes each instance's masks when it writes shards (``dupe_factor`` copies with different masks).
Here the expensive part — tokenising, segmenting words for whole word masking, and cutting the corpus into
instances — runs once and is cached as memory-mapped arrays (:func:`open_text_data`); what is left per batch is
drawing the masks, which :func:`nezha.data.masking.mask_batch` does for a whole batch in a few vectorised numpy
operations (n-gram masking goes through the per-instance :func:`create_masked_lm_predictions`).

Masks are a pure function of ``(seed, epoch, the batch's instance indices)``: a different epoch gives new masks,
the same step of a resumed run gives the same masks, whatever ran before. Evaluation reads epoch 0: fixed masks.

Input: plain text (one sentence or paragraph a line, a blank line between documents), or the text column(s) of a
TSV file with a header or of a JSONL file, one row a document (so fine-tuning files work as they are). Lines are
cut into sentences after 。！？!? so that paragraph lines give NSP its sentence pairs.

Instances: with NSP, BERT's ``[CLS] A [SEP] B [SEP]`` pairs (:func:`nezha.data.pretraining.pair_document`); without,
``[CLS] text [SEP]`` filled with whole consecutive sentences up to the length, crossing documents with a ``[SEP]``
between them (RoBERTa's FULL-SENTENCES), so short rows do not waste the sequence on padding.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nezha.data.corpus import Document, ReadStats, iter_lines, read_documents
from nezha.data.masking import MaskingConfig, mask_batch, mask_ngram_batch
from nezha.data.pretraining import (
    PrepareArgs,
    TokenizedCorpus,
    build_pair_arrays,
    document_rng,
    load_segmenter,
    original_tokenizer,
    pair_document,
    shuffle_documents,
    tokenize_corpus,
    vocab_fingerprint,
)
from nezha.data.tokenization import NezhaTokenizer
from nezha.io.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

CACHE_FORMAT = "nezha-text-instances"
CACHE_VERSION = 1
TEXT_SUFFIXES = (".txt", ".tsv", ".jsonl")
_SENTENCE = re.compile(r"[^。！？!?]*(?:[。！？!?]+[”’」』）)\]\"']*)?")
_ARRAYS = {"input_ids": np.int32, "segment_ids": np.int8, "lengths": np.int32, "candidates": np.bool_,
           "unit_starts": np.bool_, "next_sentence_labels": np.int8}


@dataclass(frozen=True)
class TextDataSettings:
    """How text becomes instances (cached) and how masks are drawn (every epoch)."""

    vocab_file: str
    do_lower_case: bool = True
    max_seq_length: int = 128
    nsp: bool = True  # [CLS] A [SEP] B [SEP] pairs with random next segments; False: packed single segments
    short_seq_prob: float = 0.1
    text_column: str = ""  # TSV/JSONL: column name(s), comma-separated; "" = text_a[,text_b] / "text"
    do_whole_word_mask: bool = True
    segmenter: str = "auto"
    pre_segmented: bool = False
    max_ngram: int = 1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    seed: int = 12345  # instance layout (document order, pairs) and masks
    num_workers: int = 1

    def prepare_args(self, input_file: str) -> PrepareArgs:
        """The same settings as ``nezha prepare`` sees them: validated there, used by its tokenizer."""
        return PrepareArgs(
            input_file=input_file, output_file="", vocab_file=self.vocab_file, do_lower_case=self.do_lower_case,
            max_seq_length=self.max_seq_length, max_predictions_per_seq=self.max_predictions_per_seq,
            masked_lm_prob=self.masked_lm_prob, random_seed=self.seed, short_seq_prob=self.short_seq_prob,
            do_whole_word_mask=self.do_whole_word_mask, segmenter=self.segmenter, pre_segmented=self.pre_segmented,
            max_ngram=self.max_ngram, num_workers=self.num_workers, progress=False,
        )

    def layout_key(self) -> dict:
        """What the cached instances depend on (masking settings are not: masks are drawn per batch)."""
        keep = ("do_lower_case", "max_seq_length", "nsp", "short_seq_prob", "text_column", "do_whole_word_mask",
                "pre_segmented", "seed")
        return {k: v for k, v in asdict(self).items() if k in keep}


def is_text_input(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TEXT_SUFFIXES


# ---------------------------------------------------------------------------------------------------- reading
def split_sentences(line: str) -> list[str]:
    """Cut a paragraph after sentence-final punctuation (a closing quote stays with its sentence)."""
    return [s for s in (p.strip() for p in _SENTENCE.findall(line)) if s]


def _columns(spec: str, suffix: str) -> list[str]:
    if spec:
        return [c.strip() for c in spec.split(",") if c.strip()]
    return ["text"] if suffix == ".jsonl" else ["text_a", "text_b"]


def read_rows(path: Path, spec: str, file_index: int) -> list[Document]:
    """One document per TSV/JSONL row: the named columns' text (a missing default ``text_b`` is fine)."""
    wanted = _columns(spec, path.suffix.lower())
    stats = ReadStats()
    docs: list[Document] = []
    if path.suffix.lower() == ".jsonl":
        for lineno, line in iter_lines(path, stats):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or wanted[0] not in row:
                raise ValueError(f"{path}:{lineno}: no {wanted[0]!r} field (choose one with --text_column)")
            texts = [str(row[c]) for c in wanted if isinstance(row.get(c), str)]
            _add_row(docs, file_index, lineno, texts)
        return docs
    lines = iter_lines(path, stats)
    header = next(lines, None)
    if header is None:
        raise ValueError(f"{path}: empty file (a TSV needs a header row naming its columns)")
    names = header[1].rstrip("\r\n").split("\t")
    missing = [c for c in wanted if c not in names and not (c == "text_b" and not spec)]
    if missing:
        raise ValueError(f"{path}:1: no column {missing[0]!r} in the header {names} (choose with --text_column)")
    cols = [names.index(c) for c in wanted if c in names]
    for lineno, line in lines:
        fields = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE))
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(names):
            raise ValueError(f"{path}:{lineno}: {len(fields)} fields, the header has {len(names)}")
        _add_row(docs, file_index, lineno, [fields[c] for c in cols])
    return docs


def _add_row(docs: list[Document], file_index: int, lineno: int, texts: Sequence[str]) -> None:
    sentences = [s for t in texts for s in split_sentences(t)]
    if sentences:
        docs.append(Document(file_index, [lineno] * len(sentences), sentences))


def read_text_documents(paths: Sequence[Path], text_column: str) -> list[Document]:
    """Documents of plain text files (blank-line separated) and TSV/JSONL rows, lines cut into sentences."""
    docs: list[Document] = []
    for fi, path in enumerate(paths):
        if path.suffix.lower() in (".tsv", ".jsonl"):
            docs += read_rows(path, text_column, fi)
            continue
        for d in read_documents([path]):
            pairs = [(n, s) for n, line in zip(d.line_numbers, d.lines) for s in split_sentences(line)]
            docs.append(Document(fi, [n for n, _ in pairs], [s for _, s in pairs]))
    return docs


# ---------------------------------------------------------------------------------------------------- instances
def pack_sentences(corpus: TokenizedCorpus, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ranges of the separator-joined document stream for single-segment instances (FULL-SENTENCES).

    The stream is every document's tokens followed by one separator slot; ranges hold whole consecutive sentences
    (the separator counted with a document's last sentence) up to ``max_tokens``; a longer sentence is cut into
    pieces of ``max_tokens``. Returns ranges (N, 2) into the stream, and the stream's (T + D,) index into
    ``corpus.ids`` (-1 for a separator).
    """
    so, do = corpus.sentence_offsets, corpus.document_offsets
    n_sent = len(so) - 1
    doc_of_sentence = np.repeat(np.arange(len(do) - 1), np.diff(do))  # (S,)
    last_in_doc = np.zeros(n_sent, bool)
    last_in_doc[do[1:] - 1] = True
    lens = np.diff(so) + last_in_doc  # (S,) stream length of each sentence
    # stream -> corpus token index: corpus tokens shifted by the separators before them
    source = np.full(int(lens.sum()), -1, np.int64)
    tok_doc = np.repeat(doc_of_sentence, np.diff(so))  # (T,)
    source[np.arange(len(corpus.ids)) + tok_doc] = np.arange(len(corpus.ids))
    ranges: list[tuple[int, int]] = []
    start = cur = 0
    for n in lens.tolist():
        if cur + n > max_tokens and cur:
            ranges.append((start, start + cur))
            start, cur = start + cur, 0
        while n > max_tokens:
            ranges.append((start, start + max_tokens))
            start, n = start + max_tokens, n - max_tokens
        cur += n
    if cur:
        ranges.append((start, start + cur))
    return np.asarray(ranges, np.int64).reshape(-1, 2), source


def build_packed_arrays(corpus: TokenizedCorpus, max_seq_length: int, cls_id: int, sep_id: int) -> dict:
    """``[CLS] sentences [SEP]`` instances (segment 0 only), with ``[SEP]`` where a document ends inside one."""
    ranges, source = pack_sentences(corpus, max_seq_length - 2)
    a0, a1 = ranges[:, :1], ranges[:, 1:]  # (N, 1)
    body = np.where(source[a1 - 1] < 0, a1 - a0 - 1, a1 - a0)  # a trailing document separator is the final [SEP]
    pos = np.arange(max_seq_length)[None, :]  # (1, L)
    inside = (pos >= 1) & (pos <= body)
    src = np.where(inside, source[np.minimum(a0 + pos - 1, len(source) - 1)], -1)  # (N, L)
    sep_inside = inside & (src < 0)
    cand = inside & ~sep_inside
    ids = np.where(cand, corpus.ids[np.maximum(src, 0)], 0).astype(np.int32)
    ids[sep_inside] = sep_id
    length = body[:, 0] + 2
    ids[:, 0] = cls_id
    ids[np.arange(len(ids)), length - 1] = sep_id
    starts = np.where(cand, corpus.unit_starts[np.maximum(src, 0)], False) | (pos == 1)
    starts[:, 1:] |= sep_inside[:, :-1]  # a unit never continues across a document boundary
    return {"input_ids": ids, "segment_ids": np.zeros(ids.shape, np.int8), "lengths": length.astype(np.int32),
            "candidates": cand, "unit_starts": starts, "next_sentence_labels": np.zeros(len(ids), np.int8)}


def build_instances(corpus: TokenizedCorpus, settings: TextDataSettings, cls_id: int, sep_id: int) -> dict:
    """The instance arrays of a tokenised corpus: documents shuffled by the seed, then paired or packed."""
    corpus = shuffle_documents(corpus, settings.seed)
    if not settings.nsp:
        return build_packed_arrays(corpus, settings.max_seq_length, cls_id, sep_id)
    if corpus.num_documents < 2:
        raise ValueError(f"{corpus.num_documents} document(s) with text: NSP needs at least 2 (use --nsp False)")
    pairs = [p for d in range(corpus.num_documents)
             for p in pair_document(corpus, d, max_seq_length=settings.max_seq_length,
                                    short_seq_prob=settings.short_seq_prob, rng=document_rng(settings.seed, 0, d))]
    return build_pair_arrays(corpus, pairs, settings.max_seq_length, cls_id, sep_id)


# ---------------------------------------------------------------------------------------------------- the cache
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(paths: Sequence[Path], vocab_sha256: str, settings: TextDataSettings, segmenter: str | None) -> str:
    """Hex digest of everything the instances depend on: file contents, vocabulary, settings, segmenter."""
    key = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "files": [file_sha256(p) for p in paths],
           "vocab_sha256": vocab_sha256, "settings": settings.layout_key(), "segmenter": segmenter}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _segmenter_name(settings: TextDataSettings) -> str | None:
    if not settings.do_whole_word_mask:
        return None
    if settings.pre_segmented:
        return "whitespace"
    return load_segmenter(settings.segmenter)[0]


def cache_folder(paths: Sequence[Path], settings: TextDataSettings, cache_root: Path, vocab: Sequence[str]) -> Path:
    """Where the instances of ``paths`` under ``settings`` are cached: ``cache_root/<cache_key>``."""
    return cache_root / cache_key(paths, vocab_fingerprint(vocab), settings, _segmenter_name(settings))


def build_cache(paths: Sequence[Path], settings: TextDataSettings, folder: Path, tokenizer: NezhaTokenizer) -> None:
    """Tokenise, segment and cut ``paths`` into instances, written to ``folder`` (arrays atomically, index last)."""
    prep = settings.prepare_args(",".join(map(str, paths)))
    docs = read_text_documents(paths, settings.text_column)
    stats: dict = {"problems": []}
    corpus = tokenize_corpus(docs, paths, tokenizer, prep, stats)
    if not len(corpus.ids):
        raise ValueError(f"{', '.join(map(str, paths))}: no text to pretrain on")
    arrays = build_instances(corpus, settings, tokenizer.cls_id, tokenizer.sep_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name, dtype in _ARRAYS.items():
        arr = np.ascontiguousarray(arrays[name], dtype=dtype)
        atomic_write(folder / f"{name}.npy", lambda p, a=arr: _save_npy(p, a))
    index = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "num_instances": int(len(arrays["lengths"])),
             "max_seq_length": settings.max_seq_length, "vocab_size": len(tokenizer),
             "vocab_sha256": vocab_fingerprint(tokenizer.vocab_list), "vocab_file": settings.vocab_file,
             "files": [str(p) for p in paths], "settings": asdict(settings), "documents": corpus.num_documents,
             "tokens": int(len(corpus.ids)), "segmenter": stats.get("segmenter"),
             "max_token_id": int(arrays["input_ids"].max(initial=0))}
    atomic_write_text(folder / "index.json", json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    log.info("text instances cached in %s: %d documents, %d tokens, %d instances", folder, index["documents"],
             index["tokens"], index["num_instances"])


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


# ---------------------------------------------------------------------------------------------------- the dataset
class DynamicMaskedText:
    """Cached text instances with masks drawn per batch; the dataset interface of shards and TFRecords.

    ``get_batch(indices, epoch)`` returns the same fields as :class:`nezha.data.shards.PretrainingShards`.
    """

    masks_per_epoch = True  # the trainer passes the epoch to get_batch

    def __init__(self, folder: Path, settings: TextDataSettings, mask_id: int):
        self.folder = folder
        self.index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        self.arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        self.settings = settings
        self.masking = MaskingConfig(masked_lm_prob=settings.masked_lm_prob,
                                     max_predictions_per_seq=settings.max_predictions_per_seq,
                                     vocab_size=self.vocab_size, mask_id=mask_id, max_ngram=settings.max_ngram)

    @property
    def max_seq_length(self) -> int:
        return int(self.index["max_seq_length"])

    @property
    def vocab_size(self) -> int:
        return int(self.index["vocab_size"])

    @property
    def vocab_sha256(self) -> str:
        return self.index["vocab_sha256"]

    @property
    def vocab_source(self) -> str:
        return self.index["vocab_file"]

    @property
    def max_token_id(self) -> int:
        """Inputs' largest id, or the vocabulary's last (a random replacement may draw any id)."""
        return max(int(self.index["max_token_id"]), self.vocab_size - 1)

    def __len__(self) -> int:
        return int(self.index["num_instances"])

    def batch_rng(self, indices: np.ndarray, epoch: int) -> np.random.Generator:
        """The masks' generator: a pure function of (seed, epoch, the batch's indices)."""
        return np.random.default_rng([self.settings.seed, epoch, zlib.crc32(indices.tobytes())])

    def get_batch(self, indices: Sequence[int], epoch: int = 0) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"instance index out of range [0, {len(self)})")
        rows = {name: np.asarray(a[indices]) for name, a in self.arrays.items()}
        rng = self.batch_rng(indices, epoch)
        inputs = rows["input_ids"], rows["lengths"], rows["candidates"], rows["unit_starts"], self.masking
        if self.masking.max_ngram == 1:
            m = mask_batch(*inputs, rng)
        else:
            m = mask_ngram_batch(*inputs, random.Random(int(rng.integers(2**63))))
        ids, positions, labels, num = m.input_ids, m.positions, m.labels, m.num_masked
        L, M = ids.shape[1], positions.shape[1]
        return {"input_ids": ids, "segment_ids": rows["segment_ids"], "lengths": rows["lengths"],
                "masked_lm_positions": positions, "masked_lm_ids": labels, "num_masked": num,
                "next_sentence_labels": rows["next_sentence_labels"],
                "input_mask": (np.arange(L)[None, :] < rows["lengths"][:, None]).astype(np.int8),
                "masked_lm_weights": (np.arange(M)[None, :] < num[:, None]).astype(np.float32)}


def open_text_data(paths: Sequence[Path], settings: TextDataSettings, cache_root: Path,
                   build: bool = True) -> DynamicMaskedText:
    """The dataset of text files ``paths``; its cache is built first unless present (``build=False``: another
    process builds it, and a missing one is an error)."""
    tokenizer = original_tokenizer(settings.vocab_file, settings.do_lower_case)
    folder = cache_folder(paths, settings, cache_root, tokenizer.vocab_list)
    if not (folder / "index.json").is_file():
        if not build:
            raise ValueError(f"{folder}: the text cache is incomplete (is --data_cache_dir on a shared file system?)")
        build_cache(paths, settings, folder, tokenizer)
    return DynamicMaskedText(folder, settings, tokenizer.mask_id)
