"""The on-disk format of pretraining instances: memory-mapped ``.npy`` arrays per shard plus one ``index.json``.

A dataset is a directory::

    index.json                         # format, lengths, vocab fingerprint, shard list, stats; written LAST
    shard-00000.input_ids.npy          # (N, L) int32, 0-padded
    shard-00000.segment_ids.npy        # (N, L) int8
    shard-00000.lengths.npy            # (N,) int32, real tokens incl. [CLS]/[SEP]
    shard-00000.masked_lm_positions.npy  # (N, M) int32, 0-padded
    shard-00000.masked_lm_ids.npy      # (N, M) int32, 0-padded
    shard-00000.num_masked.npy         # (N,) int32
    shard-00000.next_sentence_labels.npy  # (N,) int8, 1 = B is a random segment (BERT convention)

Fixed-width arrays let the trainer read any batch with one fancy-index per field and no parsing; ``np.load(...,
mmap_mode="r")`` keeps memory flat whatever the corpus size. Every file is written under a temporary name and
renamed; ``index.json`` names only finished shards and is written after them, so an interrupted run never leaves
a dataset that looks complete.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nezha.io.atomic import atomic_write, atomic_write_text

FORMAT = "nezha-pretraining-shards"
FORMAT_VERSION = 1
FIELDS = {
    "input_ids": np.int32,
    "segment_ids": np.int8,
    "lengths": np.int32,
    "masked_lm_positions": np.int32,
    "masked_lm_ids": np.int32,
    "num_masked": np.int32,
    "next_sentence_labels": np.int8,
}


@dataclass(frozen=True)
class Instance:
    """One pretraining example before padding (token ids already include [CLS] and [SEP])."""

    input_ids: Sequence[int]
    segment_ids: Sequence[int]
    masked_lm_positions: Sequence[int]
    masked_lm_ids: Sequence[int]
    is_random_next: bool


def instances_to_arrays(instances: Sequence[Instance], max_seq_length: int, max_predictions: int) -> dict:
    """Pad a list of instances into the fixed-width arrays of one shard."""
    n = len(instances)
    arrays = {
        "input_ids": np.zeros((n, max_seq_length), np.int32),
        "segment_ids": np.zeros((n, max_seq_length), np.int8),
        "lengths": np.zeros(n, np.int32),
        "masked_lm_positions": np.zeros((n, max_predictions), np.int32),
        "masked_lm_ids": np.zeros((n, max_predictions), np.int32),
        "num_masked": np.zeros(n, np.int32),
        "next_sentence_labels": np.zeros(n, np.int8),
    }
    for i, inst in enumerate(instances):
        L, M = len(inst.input_ids), len(inst.masked_lm_positions)
        if L > max_seq_length or M > max_predictions or len(inst.segment_ids) != L or len(inst.masked_lm_ids) != M:
            raise ValueError(
                f"instance {i}: {L} tokens / {M} predictions do not fit ({max_seq_length}, {max_predictions})"
            )
        arrays["input_ids"][i, :L] = inst.input_ids
        arrays["segment_ids"][i, :L] = inst.segment_ids
        arrays["lengths"][i] = L
        arrays["masked_lm_positions"][i, :M] = inst.masked_lm_positions
        arrays["masked_lm_ids"][i, :M] = inst.masked_lm_ids
        arrays["num_masked"][i] = M
        arrays["next_sentence_labels"][i] = int(inst.is_random_next)
    return arrays


def write_shard(directory: str | os.PathLike, name: str, arrays: dict[str, np.ndarray]) -> dict:
    """Write one shard's arrays atomically; returns its index entry."""
    directory = Path(directory)
    n = len(arrays["lengths"])
    for field, dtype in FIELDS.items():
        arr = np.ascontiguousarray(arrays[field], dtype=dtype)
        if len(arr) != n:
            raise ValueError(f"shard {name}: field {field} has {len(arr)} rows, expected {n}")
        atomic_write(directory / f"{name}.{field}.npy", lambda p, a=arr: _save_npy(p, a))
    # Recorded so that readers can check ids against a model's vocab_size without scanning every shard.
    max_id = max(int(np.max(arrays[f], initial=0)) for f in ("input_ids", "masked_lm_ids"))
    return {"name": name, "num_instances": int(n), "max_token_id": max_id}


class ShardWriter:
    """One shard written as its rows are made: each field's ``.npy`` grows under a temporary name; ``close``
    fixes the row count in the headers, syncs and renames; ``abort`` removes everything."""

    def __init__(self, directory: str | os.PathLike, name: str, max_seq_length: int, max_predictions: int):
        self.directory, self.name = Path(directory), name
        self.widths = {"input_ids": max_seq_length, "segment_ids": max_seq_length,
                       "masked_lm_positions": max_predictions, "masked_lm_ids": max_predictions}
        self.num_instances = 0
        self.max_token_id = 0
        self._tmp = {f: self.directory / f".{name}.{f}.npy.{os.getpid()}.tmp" for f in FIELDS}
        self._files = {}
        try:
            for f, path in self._tmp.items():
                self._files[f] = open(path, "wb")
                self._header(f)
        except BaseException:
            self.abort()
            raise

    def _header(self, field: str) -> None:
        """A version-1.0 header padded to a fixed size, so it can be rewritten in place with the final row count."""
        shape = (self.num_instances, self.widths[field]) if field in self.widths else (self.num_instances,)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(FIELDS[field])), "fortran_order": False,
                  "shape": shape}
        f = self._files[field]
        f.seek(0)
        text = repr(header).encode("latin1")
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10) + text.ljust(_HEADER_BYTES - 11) + b"\n")
        f.seek(0, os.SEEK_END)

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["lengths"])
        for field, dtype in FIELDS.items():
            arr = np.ascontiguousarray(arrays[field], dtype=dtype)
            if len(arr) != n or arr.shape[1:] != ((self.widths[field],) if field in self.widths else ()):
                raise ValueError(f"shard {self.name}: field {field} has shape {arr.shape}, expected ({n}, ...)")
            self._files[field].write(memoryview(arr).cast("B"))
        for f in self._files.values():
            _start_writeback(f)
        self.num_instances += n
        ids = [arrays[f] for f in ("input_ids", "masked_lm_ids")]
        self.max_token_id = max(self.max_token_id, *(int(np.max(a, initial=0)) for a in ids))

    def close(self) -> dict:
        """Finish the shard atomically; returns its index entry."""
        try:
            for field, f in self._files.items():
                self._header(field)
                f.flush()
                os.fsync(f.fileno())
                f.close()
            for field, tmp in self._tmp.items():
                os.replace(tmp, self.directory / f"{self.name}.{field}.npy")
        except BaseException:
            self.abort()
            raise
        return {"name": self.name, "num_instances": self.num_instances, "max_token_id": self.max_token_id}

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)


_HEADER_BYTES = 128  # magic, version, length, dict, padding: a multiple of 64 as numpy writes it


def _start_writeback(f) -> None:
    """Hand what was written so far to the disk now, without waiting: the page cache would otherwise hold it until
    ``close`` syncs, which then waits for all of it (on a 50 MB corpus, 0.4-0.7 s of a one-worker run spent
    waiting). On Linux, POSIX_FADV_DONTNEED starts writeback of dirty pages (and drops pages already written)."""
    if hasattr(os, "posix_fadvise"):
        f.flush()
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _save_npy(path: Path, array: np.ndarray) -> None:
    # Through an open file: given a path, np.save appends ".npy" to a temporary name that lacks it.
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_index(
    directory: str | os.PathLike,
    shards: Iterable[dict],
    *,
    max_seq_length: int,
    max_predictions_per_seq: int,
    vocab_size: int,
    metadata: dict | None = None,
) -> None:
    """Write ``index.json`` last: it is what makes the dataset complete."""
    shards = list(shards)
    index = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "max_seq_length": max_seq_length,
        "max_predictions_per_seq": max_predictions_per_seq,
        "vocab_size": vocab_size,
        "num_instances": sum(s["num_instances"] for s in shards),
        "shards": shards,
        **(metadata or {}),
    }
    atomic_write_text(Path(directory) / "index.json", json.dumps(index, indent=2, ensure_ascii=False) + "\n")


class PretrainingShards:
    """Random access over every instance of one or more shard directories, memory-mapped."""

    def __init__(self, directories: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(directories, (str, os.PathLike)):
            directories = [directories]
        self.arrays: list[dict[str, np.ndarray]] = []
        self.index: dict = {}
        self._shard_entries: list[dict] = []
        for d in directories:
            self._open(Path(d))
        if not self.arrays:
            raise ValueError(f"no instances in {[str(d) for d in directories]}")
        sizes = [len(a["lengths"]) for a in self.arrays]
        self.offsets = np.cumsum([0, *sizes])

    def _open(self, directory: Path) -> None:
        index_path = directory / "index.json"
        if not directory.is_dir():
            raise FileNotFoundError(f"pretraining data folder not found: {directory}")
        if not index_path.is_file():
            raise ValueError(
                f"{directory}: no index.json, so the data is incomplete (was `nezha prepare` interrupted?)"
            )
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{index_path}: corrupt index ({e})") from None
        if index.get("format") != FORMAT:
            raise ValueError(f"{index_path}: not a {FORMAT} index")
        if self.index:
            for key in ("max_seq_length", "max_predictions_per_seq", "vocab_size"):
                if index[key] != self.index[key]:
                    raise ValueError(f"{directory}: {key}={index[key]} differs from {self.index[key]} in other folders")
            theirs, ours = index.get("vocab_sha256"), self.index.get("vocab_sha256")
            if theirs and ours and theirs != ours:
                raise ValueError(f"{directory}: made with another vocab.txt than the other folders (vocab_sha256)")
        else:
            self.index = index
        self._shard_entries.extend(index["shards"])
        for shard in index["shards"]:
            arrays = {}
            for field, dtype in FIELDS.items():
                path = directory / f"{shard['name']}.{field}.npy"
                try:
                    arr = np.load(path, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise ValueError(f"{path}: cannot read shard array ({e})") from None
                if arr.dtype != dtype or len(arr) != shard["num_instances"]:
                    raise ValueError(
                        f"{path}: expected {shard['num_instances']} rows of {np.dtype(dtype).name}, "
                        f"got {len(arr)} of {arr.dtype}: the shard is corrupt"
                    )
                arrays[field] = arr
            if shard["num_instances"]:
                self.arrays.append(arrays)

    @property
    def max_seq_length(self) -> int:
        return int(self.index["max_seq_length"])

    @property
    def vocab_size(self) -> int:
        return int(self.index["vocab_size"])

    @property
    def vocab_sha256(self) -> str | None:
        """Fingerprint of the vocab.txt the data was tokenized with (``nezha prepare`` records it)."""
        return self.index.get("vocab_sha256")

    @property
    def vocab_source(self) -> str | None:
        """The --vocab_file that ``nezha prepare`` was given, for messages."""
        return (self.index.get("args") or {}).get("vocab_file")

    @property
    def max_token_id(self) -> int | None:
        """Largest id in inputs and MLM targets, from the index; None for data written without it."""
        ids = [s.get("max_token_id") for s in self._shard_entries]
        return None if not ids or None in ids else max(ids)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get_batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Gather instances by global index into padded arrays (also ``input_mask`` and ``masked_lm_weights``)."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"instance index out of range [0, {len(self)})")
        which = np.searchsorted(self.offsets, indices, side="right") - 1
        out = {f: np.empty((len(indices), *self.arrays[0][f].shape[1:]), dtype) for f, dtype in FIELDS.items()}
        for s in np.unique(which):
            rows = np.nonzero(which == s)[0]
            local = indices[rows] - self.offsets[s]
            for f in FIELDS:
                out[f][rows] = self.arrays[s][f][local]
        L, M = out["input_ids"].shape[1], out["masked_lm_positions"].shape[1]
        out["input_mask"] = (np.arange(L)[None, :] < out["lengths"][:, None]).astype(np.int8)
        out["masked_lm_weights"] = (np.arange(M)[None, :] < out["num_masked"][:, None]).astype(np.float32)
        return out
