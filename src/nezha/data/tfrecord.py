"""TFRecord files of ``tf.train.Example`` written and read without TensorFlow.

Framing (TensorFlow's ``record_writer``): for each record ``uint64 length`` (little-endian), ``uint32
masked_crc32c(length bytes)``, the data, ``uint32 masked_crc32c(data)``, where ``masked(c) = ((c >> 15) | (c <<
17)) + 0xa282ead8`` (mod 2^32) over CRC-32C (Castagnoli).

``tf.train.Example`` is a tiny protobuf schema, encoded here by hand::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }      # entries: { string key = 1; Feature value = 2; }
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

The pretraining features are BERT's (``input_ids, input_mask, segment_ids, masked_lm_positions, masked_lm_ids,
masked_lm_weights, next_sentence_labels``), so files written here feed the original TF input pipeline and files
made by the original ``create_pretraining_data.py`` feed ``nezha pretrain`` through :class:`TFRecordInstances`.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np

from nezha.io.crc32c import _MASK_DELTA, crc32c_spans, masked_crc32c
from nezha.io.crc32c import _TABLE as _CRC_TABLE

log = logging.getLogger(__name__)

# The map order TensorFlow's serializer (2.21) gives these keys; used so our files are byte-identical to TF's.
PRETRAINING_FEATURE_ORDER = (
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "input_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
_FLOAT_FEATURES = {"masked_lm_weights"}


def frame_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# ---------------------------------------------------------------------------------------------------------------
# Protobuf wire format


def _varint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def varints_rows(values: np.ndarray) -> list[bytes]:
    """Packed varint payloads of each row of an (N, K) integer array, vectorized."""
    v = np.ascontiguousarray(values).astype(np.int64).view(np.uint64)  # (N, K), negatives as two's complement
    n, k = v.shape
    top = int(v.max(initial=0))
    G = max(1, (top.bit_length() + 6) // 7)  # bytes of the longest varint (10 for negatives)
    nbytes = np.ones(v.shape, np.int64)
    for j in range(1, G):
        nbytes += v >= np.uint64(1 << (7 * j))
    byte = np.empty((n, k, G), np.uint8)
    for j in range(G):
        byte[..., j] = ((v >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        byte[..., j] |= np.where(j < nbytes - 1, 0x80, 0).astype(np.uint8)
    keep = np.arange(G) < nbytes[..., None]  # (N, K, G)
    flat = byte[keep].tobytes()
    row_len = nbytes.sum(1)
    ends = np.cumsum(row_len)
    return [flat[e - r : e] for e, r in zip(ends.tolist(), row_len.tolist())]


def encode_feature(kind: str, values) -> bytes:
    """One ``Feature`` message: kind is ``int64``, ``float`` or ``bytes``."""
    if kind == "int64":
        packed = varints_rows(np.asarray(values, dtype=np.int64).reshape(1, -1))[0] if len(values) else b""
        return _ld(3, _ld(1, packed) if packed else b"")
    if kind == "float":
        packed = np.asarray(values, dtype="<f4").tobytes()
        return _ld(2, _ld(1, packed) if packed else b"")
    if kind == "bytes":
        return _ld(1, b"".join(_ld(1, bytes(v)) for v in values))
    raise ValueError(f"unknown feature kind {kind!r}")


def encode_example(features: Sequence[tuple[str, str, Sequence]]) -> bytes:
    """A serialized ``tf.train.Example`` from (name, kind, values) in the given map order."""
    entries = b"".join(
        _ld(1, _ld(1, name.encode("utf-8")) + _ld(2, encode_feature(kind, values))) for name, kind, values in features
    )
    return _ld(1, entries)


def _read_varint(b, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        x = b[i]
        i += 1
        result |= (x & 0x7F) << shift
        if x < 0x80:
            return result, i
        shift += 7


def _fields(b, start: int, end: int):
    """Yield (field number, wire type, value or (payload start, payload end)) of one message."""
    i = start
    while i < end:
        key, i = _read_varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = _read_varint(b, i)
            yield field, wire, (i, i + n)
            i += n
        elif wire == 0:
            v, i = _read_varint(b, i)
            yield field, wire, v
        elif wire == 5:
            yield field, wire, (i, i + 4)
            i += 4
        elif wire == 1:
            yield field, wire, (i, i + 8)
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if i != end:
        raise ValueError("truncated protobuf message")


def decode_varints(buf: np.ndarray) -> np.ndarray:
    """All varints in a uint8 buffer as int64 (vectorized)."""
    if len(buf) == 0:
        return np.zeros(0, np.int64)
    ends = buf < 0x80
    if not ends[-1]:
        raise ValueError("truncated varint")
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    group = np.cumsum(np.concatenate([[0], ends[:-1]]))  # varint index of each byte
    pos = np.arange(len(buf)) - starts[group]
    parts = (buf & 0x7F).astype(np.uint64) << (pos.astype(np.uint64) * np.uint64(7))
    return np.add.reduceat(parts, starts).view(np.int64)


def _feature_spans(b, start: int, end: int) -> list[tuple[str, int, int, int]]:
    """(name, kind field 1/2/3, payload start, payload end) of each feature of an Example, in wire order."""
    out = []
    for f, w, span in _fields(b, start, end):  # Example
        if f != 1 or w != 2:
            continue
        for f2, w2, entry in _fields(b, *span):  # Features: map entries
            if f2 != 1 or w2 != 2:
                continue
            name, value = None, None
            for f4, w4, s4 in _fields(b, *entry):
                if f4 == 1 and w4 == 2:
                    name = bytes(b[s4[0] : s4[1]]).decode("utf-8")
                elif f4 == 2 and w4 == 2:
                    value = s4
            if name is None:
                raise ValueError("feature map entry without a key")
            kind, ps, pe = 3, 0, 0  # an empty Feature reads as an empty int64 list
            if value is not None:
                for f5, w5, s5 in _fields(b, *value):
                    if w5 == 2 and f5 in (1, 2, 3):
                        kind, ps, pe = f5, s5[0], s5[1]
            out.append((name, kind, ps, pe))
    return out


def _list_values(b, kind: int, ps: int, pe: int):
    """Values of a BytesList (1), FloatList (2) or Int64List (3) message body; packed or not."""
    if kind == 1:
        return [bytes(b[s:e]) for f, w, (s, e) in _fields(b, ps, pe) if f == 1]
    chunks, loose = [], []
    for f, w, v in _fields(b, ps, pe):
        if f != 1:
            continue
        if w == 2:
            chunks.append(
                np.frombuffer(b[v[0] : v[1]], np.uint8) if kind == 3 else np.frombuffer(b[v[0] : v[1]], "<f4")
            )
        elif kind == 3 and w == 0:
            loose.append(np.array([v], np.uint64).view(np.int64))
        elif kind == 2 and w == 5:
            loose.append(np.frombuffer(b[v[0] : v[1]], "<f4"))
    if kind == 3:
        vals = [decode_varints(c) for c in chunks] + loose
        return np.concatenate(vals) if vals else np.zeros(0, np.int64)
    vals = chunks + loose
    return np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)


def decode_example(data: bytes) -> list[tuple[str, str, object]]:
    """A serialized ``tf.train.Example`` as (name, kind, values) in wire order; int64 -> int64 array,
    float -> float32 array, bytes -> list of bytes."""
    b = memoryview(data)
    kinds = {1: "bytes", 2: "float", 3: "int64"}
    return [(name, kinds[k], _list_values(b, k, ps, pe)) for name, k, ps, pe in _feature_spans(b, 0, len(b))]


# ---------------------------------------------------------------------------------------------------------------
# Files


class TFRecordWriter:
    """Append framed records to a file written atomically (temp name, renamed on close)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._f = open(self._tmp, "wb")

    def write(self, data: bytes) -> None:
        self._f.write(frame_record(data))

    def write_framed(self, framed) -> None:
        """Append records that are framed already (see :func:`pretraining_records`)."""
        self._f.write(framed)

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_records(path: str | os.PathLike, verify: bool = True):
    """Yield each record's data; raises ValueError naming the file and record on a bad checksum or truncation."""
    yield from TFRecordFile(path, verify=verify)


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class TFRecordFile:
    """Random access to the records of one TFRecord file (memory-mapped; offsets found by one walk over the headers).

    The walk reads 8 bytes per record and checks only that the file is not cut short; the checksums of a record's
    length and data are verified when the record is read (the first record's length checksum at once, so a file
    that is not a TFRecord is refused when opened).
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TFRecord file not found: {self.path}")
        self.verify = verify
        size = self.path.stat().st_size
        self._f = open(self.path, "rb")
        self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        offsets = []
        pos, unpack, append = 0, _U64.unpack_from, offsets.append
        while pos < size:
            if pos + 12 > size:
                raise ValueError(f"{self.path}: record {len(offsets)} at byte {pos}: truncated header")
            if pos == 0 and verify:
                self._check_header(0, 0)
            end = pos + 16 + unpack(self._mm, pos)[0]
            if end > size:
                raise ValueError(f"{self.path}: record {len(offsets)} at byte {pos}: truncated (file cut short?)")
            append(pos + 12)
            pos = end
        self.offsets = np.asarray(offsets, np.int64)
        self.lengths = np.diff(np.append(self.offsets, size + 12)) - 16

    def _check_header(self, i: int, pos: int) -> None:
        header = self._mm[pos : pos + 8]
        if _U32.unpack_from(self._mm, pos + 8)[0] != masked_crc32c(header):
            raise ValueError(f"{self.path}: record {i} at byte {pos}: bad length checksum (not a TFRecord?)")

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> bytes:
        o, n = int(self.offsets[i]), int(self.lengths[i])
        data = self._mm[o : o + n]
        if self.verify:
            self._check_header(i, o - 12)
            if _U32.unpack_from(self._mm, o + n)[0] != masked_crc32c(data):
                raise ValueError(f"{self.path}: record {i}: bad data checksum (corrupt file)")
        return data

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def records(self, indices: Sequence[int]) -> list[bytes]:
        """Several records at once (the per-record work of ``self[i]`` without its call overhead)."""
        mm, offsets, lengths, verify = self._mm, self.offsets, self.lengths, self.verify
        crc, u32 = masked_crc32c, _U32.unpack_from
        out = []
        for i in np.asarray(indices, np.int64).tolist():
            o, n = int(offsets[i]), int(lengths[i])
            data = mm[o : o + n]
            if verify and (u32(mm, o - 4)[0] != crc(mm[o - 12 : o - 4]) or u32(mm, o + n)[0] != crc(data)):
                self[i]  # raises with the message naming the bad checksum
            out.append(data)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Pretraining instances
#
# Every record has the same structure; only the varints of token ids (and the lengths that depend on them) differ
# in size between rows. The records of a batch are laid out as the rows of one (N, width) byte matrix, each field
# in its own columns, and the used bytes are kept in one boolean compaction (``matrix[keep]``). That compaction
# costs per byte of the matrix and per *run* of used bytes (about half of its time here goes to the ~19 runs a
# row), so a field of varints is laid out densely, two columns per value (see :class:`_Varints`).

Part = Union[bytes, np.ndarray, tuple[np.ndarray, np.ndarray], "_Varints"]
# a constant; (N, w) values below 256, all used; (N, w) bytes and which are used; a field of varints


@functools.cache
def _varint_table(size: int) -> np.ndarray:
    """Encodings of 0 .. size-1 (size <= 2^21): (size,) uint32 whose little-endian bytes are the varint (up to 3
    bytes) and, in the fourth byte, its length."""
    v = np.arange(size, dtype=np.int64)
    nbytes = _varint_sizes(v)
    return (_varint_bytes(v, nbytes)[:, :3].astype(np.int64) @ (1 << np.arange(0, 24, 8)) | nbytes << 24).astype("<u4")


@functools.cache
def _pair_table(size: int) -> np.ndarray:
    """(size,) little-endian uint16: the first two bytes of the varint of each value below ``size`` (<= 2^21)."""
    return (_varint_table(size) & 0xFFFF).astype("<u2")


def _varint_sizes(v: np.ndarray) -> np.ndarray:
    """Bytes of the varint of each non-negative value (any shape), int64."""
    n = np.ones(v.shape, np.int64)
    for j in range(1, (int(np.max(v, initial=0)).bit_length() + 6) // 7):
        n += v >= (1 << (7 * j))
    return n


def _varint_bytes(v: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(..., G) uint8, G >= 3: the varint bytes of each value, zeros past its size."""
    G = max(3, int(sizes.max(initial=1)))
    out = np.empty((*v.shape, G), np.uint8)
    for j in range(G):
        out[..., j] = ((v >> (7 * j)) & 0x7F) | np.where(j < sizes - 1, 0x80, 0)
    return out


class _Length:
    """A length per row (an int64 array, or an int when the same in every row) and bounds ``lo <= values <= hi``:
    the nested lengths of an Example add up without a numpy reduction at each step."""

    __slots__ = ("values", "lo", "hi")

    def __init__(self, values: np.ndarray | int, lo: int | None = None, hi: int | None = None):
        if isinstance(values, int):
            lo = hi = values
        elif lo is None:
            lo, hi = int(values.min()), int(values.max())
        self.values, self.lo, self.hi = values, lo, hi

    def __add__(self, other: _Length | int) -> _Length:
        if isinstance(other, _Length):
            return _Length(self.values + other.values, self.lo + other.lo, self.hi + other.hi)
        return _Length(self.values + other, self.lo + other, self.hi + other)

    __radd__ = __add__

    def with_varint(self) -> _Length:
        """Each length plus the size of its varint."""
        a, b = len(_varint(self.lo)), len(_varint(self.hi))
        if a == b:
            return self + a
        return _Length(self.values + _varint_sizes(self.values), self.lo + a, self.hi + b)

    def field(self) -> Part:
        """The varint of each row's length: constant bytes when the bounds meet."""
        if self.lo == self.hi:
            return _varint(self.lo)
        values = np.asarray(self.values)
        if self.hi < 1 << 21:
            enc = _varint_table(1 << max(10, self.hi.bit_length())).take(values, mode="clip").view(np.uint8)
            enc, sizes = enc.reshape(-1, 4), enc[3::4]
        else:
            sizes = _varint_sizes(values)
            enc = _varint_bytes(values, sizes)
        data = enc[:, : len(_varint(self.hi))]
        if len(_varint(self.lo)) == data.shape[1]:
            return data
        return data, np.arange(data.shape[1]) < sizes[:, None]


def _used_pattern(t: np.ndarray, e: np.ndarray, k: int, width: int) -> np.ndarray:
    """The columns :class:`_Varints` uses besides its nonzero bytes, for rows of k values and e extension slots whose
    slots from t on are zeros: the first column of each slot before t, then one column per trailing zero value."""
    c = np.arange(width)
    return ((c < 2 * t) & (c % 2 == 0)) | ((c >= 2 * t) & (c < t + k + e))


@functools.cache
def _used_table(k: int, slots: int, extra: int) -> np.ndarray:
    """:func:`_used_pattern` for every t <= slots and e <= extra, in row t * (extra + 1) + e."""
    t, e = np.arange(slots + 1)[:, None, None], np.arange(extra + 1)[None, :, None]
    return _used_pattern(t, e, k, 2 * slots).reshape(-1, 2 * slots)


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """(N,) int64: the true entries in each row of an (N, w) bool matrix (eight at a time when w is a multiple of 8:
    numpy's row sums cost per row, an einsum over 8-byte lanes does not)."""
    n, w = mask.shape
    if w % 8 or w >= 2048 or not mask.flags.c_contiguous:
        return mask.sum(1, dtype=np.int64)
    lanes = np.einsum("ij->i", mask.view(np.uint64))  # each byte lane counts at most w / 8 < 256
    if w < 256:  # the sum of the eight lanes fits in the top one
        return ((lanes * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)
    return lanes.view(np.uint8).reshape(n, 8).sum(1, dtype=np.int64)


class _Varints:
    """The packed varints of each row of non-negative integers (N, K), laid out for :func:`_compact`.

    Two-byte slots: each value's varint takes (size + 1) // 2 of them, its first two bytes and then, for the few
    values of three bytes or more, extension slots inserted after it; rows are filled up with zero slots to a common
    count (a multiple of 8). Two columns per slot; the second is unused where it is 0, which it is only after a
    varint's last byte. A row's trailing zero values (the padding) use one column each, contiguously, so that they
    make one run of the compaction. ``sizes``: each row's bytes.
    """

    def __init__(self, values: np.ndarray, top: int):
        v = np.asarray(values)
        n, k = v.shape
        if top < 1 << 21:
            pairs = None
            low = _pair_table(1 << max(10, top.bit_length())).take(v, mode="clip")  # (N, K) first two bytes
        else:
            v = v.astype(np.int64)
            sizes = _varint_sizes(v)
            enc = _varint_bytes(v, sizes)
            if enc.shape[-1] % 2:
                enc = np.concatenate([enc, np.zeros((n, k, 1), np.uint8)], axis=-1)
            pairs = np.ascontiguousarray(enc).view("<u2")  # (N, K, P): each varint's bytes two by two
            low = np.ascontiguousarray(pairs[..., 0])
        if top < 1 << 14:
            ext_at, ext = np.zeros(0, np.intp), np.zeros(0, "<u2")
        elif pairs is None:  # one extension slot for each value of three bytes: its third byte
            ext_at = np.flatnonzero(low >= 0x8000)
            ext = (np.ravel(v)[ext_at] >> 14).astype("<u2")
        else:  # slot p of each value that has a byte 2p, in the order of p
            at = [np.flatnonzero(sizes.reshape(-1) > 2 * p) for p in range(1, pairs.shape[-1])]
            ext = np.concatenate([pairs.reshape(-1, pairs.shape[-1])[a, p] for p, a in enumerate(at, 1)])
            order = np.argsort(np.concatenate(at), kind="stable")  # by position, a value's slots in order of p
            ext_at, ext = np.concatenate(at)[order], ext[order]
        e = np.bincount(ext_at // k, minlength=n) if k else np.zeros(n, np.int64)  # extension slots per row
        E = int(e.max(initial=0))
        S = -(-(k + E) // 8) * 8
        self.low, self.k, self.e, self.E, self.width = low, k, e, E, 2 * S
        # The index after each row's last nonzero slot: extension slots follow nonzero values, so all come before it.
        self.t = _tails(low != 0) + e
        self.sizes = k + e + _row_counts(low >= 0x100)  # one column per value and slot, and the nonzero second ones
        if E:  # the rows with extension slots: each after its value (and its earlier ones), then zero slots up to S
            rows = np.flatnonzero(e)
            r = np.searchsorted(rows, ext_at // k)
            first = np.cumsum(e[rows]) - e[rows]
            col = ext_at % k + 1 + np.arange(len(ext_at)) - first[r]
            place = np.arange(S) < (k + e[rows])[:, None]
            place[r, col] = False
            self.rows = rows
            self.row_slots = np.zeros((len(rows), S), "<u2")
            self.row_slots[place] = low[rows].reshape(-1)
            self.row_slots[r, col] = ext
            self.sizes += np.bincount(ext_at // k, ext >= 0x100, minlength=n).astype(np.int64)

    def write(self, data: np.ndarray, used: np.ndarray) -> None:
        """Fill (N, width) views of the matrix and of its used mask."""
        k, S, E = self.k, self.width // 2, self.E
        data[:, : 2 * k] = self.low.view(np.uint8)
        data[:, 2 * k :] = 0
        if E:
            data[self.rows] = self.row_slots.view(np.uint8)
        if (S + 1) * (E + 1) * S <= 1 << 21:
            pattern = _used_table(k, S, E)[self.t * (E + 1) + self.e]
        else:
            pattern = _used_pattern(self.t[:, None], self.e[:, None], k, 2 * S)
        np.bitwise_or(pattern, data != 0, out=used)


def _tails(nonzero: np.ndarray) -> np.ndarray:
    """(N,) int64: the index after the last true entry of each row (0 for none)."""
    k = nonzero.shape[1]
    if k < 256:
        return (nonzero * np.arange(1, k + 1, dtype=np.uint8)).max(1, initial=0).astype(np.int64)
    return np.where(nonzero.any(1), k - np.argmax(nonzero[:, ::-1], axis=1), 0)


def _field(values: np.ndarray, top: int) -> tuple[Part, np.ndarray | int]:
    """An integer feature's payload (values below ``top`` + 1) and its size in bytes (an int when fixed)."""
    k = values.shape[1]
    if top < 0x80:
        return values, k
    f = _Varints(values, top)
    return f, f.sizes


@functools.cache
def _prefix_table(width: int, dtype: str) -> np.ndarray:
    """(width + 1, width): row i has ones in its first i columns (clipped lookups give any length's row)."""
    return (np.arange(width + 1)[:, None] > np.arange(width)[None, :]).astype(dtype)


def _masked_header_crcs(lengths: np.ndarray) -> np.ndarray:
    """(N,) uint32: the masked CRC32C of each length as 8 little-endian bytes; one byte-wise table step per byte,
    vectorised over the range of the lengths (or the distinct lengths when that range is wide)."""
    lo, hi = int(lengths.min()), int(lengths.max())
    if hi - lo <= 4 * len(lengths):
        values, index = np.arange(lo, hi + 1, dtype=np.uint64), lengths - lo
    else:
        values, index = np.unique(lengths, return_inverse=True)
        values = values.astype(np.uint64)
    reg = np.full(len(values), 0xFFFFFFFF, np.uint32)
    for j in range(8):
        byte = ((values >> np.uint64(8 * j)) & np.uint64(0xFF)).astype(np.uint32)
        reg = _CRC_TABLE[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    crc = (reg ^ np.uint32(0xFFFFFFFF)).astype(np.uint64)
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
    return masked.astype(np.uint32)[np.asarray(index).reshape(-1)]


def pretraining_records(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Framed TFRecord records of BERT's pretraining Examples for shard-layout arrays, built for all rows at once.

    Returns (buf, ends): the records back to back as uint8 (N records) and the end offset of each. The data
    checksums are computed per record in C; the length checksums vectorised.
    """
    ids = np.asarray(arrays["input_ids"])
    n, L = ids.shape
    M = arrays["masked_lm_positions"].shape[1]
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    lengths = np.asarray(arrays["lengths"])
    num_masked = np.asarray(arrays["num_masked"])
    cols = {
        "input_ids": ids,
        "segment_ids": np.asarray(arrays["segment_ids"]),
        "masked_lm_positions": np.asarray(arrays["masked_lm_positions"]),
        "masked_lm_ids": np.asarray(arrays["masked_lm_ids"]),
        "next_sentence_labels": np.asarray(arrays["next_sentence_labels"]).reshape(n, 1),
    }
    tops = {"input_mask": 1}
    for name, c in cols.items():
        # Signed integers seen as unsigned: a negative one is above the largest signed value (one pass, not two).
        unsigned = c.view(c.dtype.str.replace("i", "u")) if c.dtype.kind == "i" else c
        tops[name] = int(unsigned.max(initial=0))
        if tops[name] > (np.iinfo(c.dtype).max if c.dtype.kind == "i" else tops[name]) or c.dtype.kind not in "iub":
            raise ValueError("pretraining features must be non-negative ids, positions and labels")
    cols["input_mask"] = _prefix_table(L, "u1").take(lengths, axis=0, mode="clip")  # (a row per length: no compare)
    parts: list[Part] = []  # in record order, after the frame header
    features_len = _Length(0)
    for name in PRETRAINING_FEATURE_ORDER:
        if name in _FLOAT_FEATURES:
            payload, size = _prefix_table(M, "<f4").take(num_masked, axis=0, mode="clip").view(np.uint8), 4 * M
        else:
            payload, size = _field(cols[name], tops[name])
        size = _Length(size)
        list_len = 1 + size.with_varint()
        body_len = 1 + list_len.with_varint()
        key = name.encode("utf-8")
        entry_len = 2 + len(key) + 1 + body_len.with_varint()
        features_len = features_len + 1 + entry_len.with_varint()
        kind = b"\x12" if name in _FLOAT_FEATURES else b"\x1a"
        parts += [b"\x0a", entry_len.field(), b"\x0a" + bytes([len(key)]) + key + b"\x12", body_len.field(), kind,
                  list_len.field(), b"\x0a", size.field(), payload]
    data_len = np.broadcast_to((1 + features_len.with_varint()).values, (n,)).astype(np.int64)
    header = np.empty((n, 12), np.uint8)
    header[:, :8] = data_len.astype("<u8").view(np.uint8).reshape(n, 8)
    header[:, 8:] = _masked_header_crcs(data_len).astype("<u4").view(np.uint8).reshape(n, 4)
    buf = _compact(n, [header, b"\x0a", features_len.field(), *parts, b"\0\0\0\0"])  # (data checksum)
    ends = np.cumsum(data_len + 16)
    _fill_data_checksums(buf, ends, data_len)
    return buf, ends


def _compact(n: int, parts: Sequence[Part]) -> np.ndarray:
    """The used bytes of ``parts``, row after row: the parts side by side in one (N, width) matrix (adjacent
    constants merged), then one boolean compaction (none when every byte is used)."""
    merged: list[Part] = []
    for p in parts:
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    widths = [len(p) if isinstance(p, bytes) else p[0].shape[1] if isinstance(p, tuple) else
              p.width if isinstance(p, _Varints) else p.shape[1] for p in merged]
    matrix = np.empty((n, sum(widths)), np.uint8)
    keep = np.ones(matrix.shape, bool) if any(isinstance(p, (tuple, _Varints)) for p in merged) else None
    template = np.zeros(matrix.shape[1], np.uint8)  # the constants, written with one broadcast
    at = 0
    for p, w in zip(merged, widths):
        if isinstance(p, bytes):
            template[at : at + w] = np.frombuffer(p, np.uint8)
        at += w
    matrix[...] = template
    at = 0
    for p, w in zip(merged, widths):
        if isinstance(p, bytes):
            pass
        elif w <= 4 and not isinstance(p, (tuple, _Varints)):  # column by column: numpy loops over rows, not bytes
            for j in range(w):
                matrix[:, at + j] = p[:, j]
        elif isinstance(p, tuple):
            matrix[:, at : at + w] = p[0]
            keep[:, at : at + w] = p[1]
        elif isinstance(p, _Varints):
            p.write(matrix[:, at : at + w], keep[:, at : at + w])
        else:
            np.copyto(matrix[:, at : at + w], p, casting="unsafe")
        at += w
    return matrix[keep] if keep is not None else matrix.reshape(-1)


def _fill_data_checksums(buf: np.ndarray, ends: np.ndarray, data_len: np.ndarray) -> None:
    """Write each record's masked CRC32C of its data into its last 4 bytes."""
    crc = crc32c_spans(buf.tobytes(), ends - 4 - data_len, ends - 4).astype(np.uint64)
    masked_crc = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
    buf[(ends - 4)[:, None] + np.arange(4)] = masked_crc.astype("<u4").view(np.uint8).reshape(-1, 4)


def pretraining_examples(arrays: dict[str, np.ndarray]) -> list[bytes]:
    """Serialized Examples, BERT's features, from shard-layout arrays (see nezha.data.shards)."""
    buf, ends = pretraining_records(arrays)
    data = buf.tobytes()
    return [data[e - n + 12 : e - 4] for e, n in zip(ends.tolist(), np.diff(np.concatenate([[0], ends])).tolist())]


# Records are built this many at a time: the temporaries of :func:`pretraining_records` (~4.5 KB a record) then
# fit in memory the process has touched already, instead of faulting in ~36 MB for a batch of 8,192 (~2,000 page
# faults fewer on the 2 MB sample; numpy's per-call overhead is the same at this size).
RECORDS_PER_CALL = 2048


def write_pretraining_records(arrays: dict[str, np.ndarray], writes: Sequence, first_index: int = 0,
                              chunk: int = RECORDS_PER_CALL) -> int:
    """Framed records of the instances in ``arrays`` to ``writes`` round-robin (see :func:`write_round_robin`),
    ``chunk`` records at a time; returns how many were written."""
    n = len(arrays["lengths"])
    for start in range(0, n, chunk):
        buf, ends = pretraining_records({k: v[start : start + chunk] for k, v in arrays.items()})
        write_round_robin(buf, ends, writes, first_index + start)
    return n


def write_instances_tfrecord(
    arrays: dict[str, np.ndarray], outputs: Sequence[str | os.PathLike], chunk: int = RECORDS_PER_CALL
) -> None:
    """Write instances round-robin over ``outputs`` (as the original script does), each file atomically."""
    if not outputs:
        raise ValueError("--output_file names no file")
    writers = [TFRecordWriter(p) for p in outputs]
    try:
        write_pretraining_records(arrays, [w.write_framed for w in writers], chunk=chunk)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        w.close()


def write_round_robin(buf: np.ndarray, ends: np.ndarray, writes: Sequence, first_index: int = 0) -> None:
    """Framed records ``buf`` (ending at ``ends``) to ``writes[(first_index + i) % len(writes)]``, in order."""
    k = len(writes)
    if k == 1:
        writes[0](memoryview(buf))
        return
    view = memoryview(buf)
    starts = np.concatenate([[0], ends[:-1]]).tolist()
    for p in range(k):
        rows = range((p - first_index) % k, len(ends), k)
        writes[p](b"".join(view[starts[i] : int(ends[i])] for i in rows))


# ---------------------------------------------------------------------------------------------------------------
# Vectorised decode of the pretraining layout
#
# Every record of a pretraining file has the same shape: Example{features: Features{7 map entries}}, each entry
# {key, Feature{Int64List|FloatList{packed values}}}. Walking that structure for all records of a batch at once (one
# numpy op per protobuf field, whatever the batch size) and decoding all varints of a feature in one go is ~50x
# faster than a Python walk per record. Records in any other layout fall back to the generic decoder.

_KEY_BY_LENGTH = {len(name): name for name in PRETRAINING_FEATURE_ORDER}  # the 7 names have distinct lengths
assert len(_KEY_BY_LENGTH) == len(PRETRAINING_FEATURE_ORDER)


def _read_varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint at each position of ``pos`` (int64) and the position after it; reads are clipped to ``buf``."""
    b = buf.take(pos, mode="clip").astype(np.int64)
    value, more, end = b & 0x7F, b >= 0x80, pos + 1
    shift = 7
    while more.any():
        if shift > 56:
            raise ValueError("varint longer than 9 bytes")
        b = buf.take(end, mode="clip").astype(np.int64)
        value = np.where(more, value | ((b & 0x7F) << shift), value)
        end = np.where(more, end + 1, end)
        more &= b >= 0x80
        shift += 7
    return value, end


def _gather(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated bytes of the spans ``[starts, ends)`` and each span's offset in the result."""
    lens = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
    idx = np.arange(int(lens.sum())) + np.repeat(starts - offsets, lens)
    return buf[idx], offsets


def decode_pretraining_batch(records: Sequence[bytes]) -> dict[str, np.ndarray] | None:
    """BERT pretraining Examples (the 7 features, packed) -> ``{name: (N, width) array}``, vectorised over records.

    int64 features come back as int64, ``masked_lm_weights`` as float32. Returns None when the records are laid out
    otherwise (other or extra features, unpacked lists, feature order or widths varying between records): use
    :func:`decode_example` then.
    """
    n = len(records)
    if n == 0:
        return None
    lens = np.fromiter(map(len, records), np.int64, n)
    buf = np.frombuffer(b"".join(records), np.uint8)
    ends = np.cumsum(lens)
    starts = ends - lens
    ok = buf.take(starts, mode="clip") == 0x0A  # Example.features
    body_len, pos = _read_varints(buf, starts + 1)
    ok &= pos + body_len == ends
    k = len(PRETRAINING_FEATURE_ORDER)
    key_len, key_pos, kinds = np.zeros((n, k), np.int64), np.zeros((n, k), np.int64), np.zeros((n, k), np.int64)
    spans = np.zeros((n, k, 2), np.int64)
    for j in range(k):
        ok &= buf.take(pos, mode="clip") == 0x0A  # map entry
        entry_len, pos = _read_varints(buf, pos + 1)
        entry_end = pos + entry_len
        ok &= buf.take(pos, mode="clip") == 0x0A  # key
        key_len[:, j], key_pos[:, j] = buf.take(pos + 1, mode="clip"), pos + 2
        pos = pos + 2 + key_len[:, j]
        ok &= buf.take(pos, mode="clip") == 0x12  # value: Feature
        feature_len, pos = _read_varints(buf, pos + 1)
        ok &= pos + feature_len == entry_end
        kinds[:, j] = buf.take(pos, mode="clip")  # 0x12 FloatList, 0x1A Int64List
        list_len, pos = _read_varints(buf, pos + 1)
        ok &= (pos + list_len == entry_end) & (buf.take(pos, mode="clip") == 0x0A)  # packed values
        payload_len, pos = _read_varints(buf, pos + 1)
        ok &= pos + payload_len == entry_end
        spans[:, j, 0], spans[:, j, 1] = pos, entry_end
        pos = entry_end
    # One map order for all records (TensorFlow's serializer always writes the same one).
    if not (ok & (pos == ends)).all() or (key_len != key_len[0]).any():
        return None
    names = [_KEY_BY_LENGTH.get(int(length)) for length in key_len[0]]
    if None in names or len(set(names)) != k:
        return None
    keys, _ = _gather(buf, key_pos.ravel(), (key_pos + key_len).ravel())
    is_float = np.array([name in _FLOAT_FEATURES for name in names])
    if keys.tobytes() != "".join(names).encode("ascii") * n or (kinds != np.where(is_float, 0x12, 0x1A)).any():
        return None
    ints = _decode_int_payloads(buf, spans[:, ~is_float])
    floats = _decode_float_payloads(buf, spans[:, is_float])
    if ints is None or floats is None:
        return None
    int_names = [name for name, f in zip(names, is_float) if not f]
    float_names = [name for name, f in zip(names, is_float) if f]
    return {**dict(zip(int_names, ints)), **dict(zip(float_names, floats))}


def _decode_int_payloads(buf: np.ndarray, spans: np.ndarray) -> list[np.ndarray] | None:
    """(N, C, 2) spans of packed varints -> C arrays (N, width_c); None if a column's width varies between rows."""
    n, c = spans.shape[:2]
    starts, ends = spans[..., 0].ravel(), spans[..., 1].ravel()  # record-major: record 0's C payloads first
    if (ends <= starts).any():
        return None
    data, offsets = _gather(buf, starts, ends)
    if (data[offsets + (ends - starts) - 1] >= 0x80).any():
        return None  # a payload whose last varint runs on
    counts = np.add.reduceat((data < 0x80).astype(np.int64), offsets).reshape(n, c)
    if (counts != counts[0]).any():
        return None
    values = decode_varints(data).reshape(n, -1)
    return np.split(values, np.cumsum(counts[0])[:-1], axis=1)


def _decode_float_payloads(buf: np.ndarray, spans: np.ndarray) -> list[np.ndarray] | None:
    """(N, C, 2) spans of packed little-endian floats -> C arrays (N, width_c) float32."""
    n, c = spans.shape[:2]
    widths = spans[..., 1] - spans[..., 0]
    if (widths != widths[0]).any() or (widths[0] % 4).any():
        return None
    data, _ = _gather(buf, spans[..., 0].ravel(), spans[..., 1].ravel())
    values = data.view("<f4").reshape(n, -1).astype(np.float32)
    return np.split(values, np.cumsum(widths[0] // 4)[:-1], axis=1)


class TFRecordInstances:
    """Pretraining instances from TFRecord files (e.g. made by the original script), with the read interface of
    :class:`nezha.data.shards.PretrainingShards`: ``len()``, ``get_batch(indices)``, ``max_seq_length``,
    ``vocab_size`` (None: TFRecords do not record it)."""

    vocab_size = None

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], verify: bool = True):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.files = [TFRecordFile(p, verify=verify) for p in paths]
        sizes = [len(f) for f in self.files]
        self.offsets = np.cumsum([0, *sizes])
        if self.offsets[-1] == 0:
            raise ValueError(f"no records in {[str(p) for p in paths]}")
        first = self._decode([self._record(0)], 0)
        self.max_seq_length = int(first["input_ids"].shape[1])
        self.max_predictions_per_seq = int(first["masked_lm_positions"].shape[1])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _record(self, i: int) -> bytes:
        f = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.files[f][i - int(self.offsets[f])]

    def _records(self, indices: np.ndarray) -> list[bytes]:
        """Records by global index, in order, reading each file's share in one call."""
        which = np.searchsorted(self.offsets, indices, side="right") - 1
        out: list[bytes] = [b""] * len(indices)
        for f in np.unique(which).tolist():
            rows = np.flatnonzero(which == f)
            for r, rec in zip(rows.tolist(), self.files[f].records(indices[rows] - self.offsets[f])):
                out[r] = rec
        return out

    def _decode(self, records: list[bytes], first_index: int) -> dict[str, np.ndarray]:
        fast = decode_pretraining_batch(records)
        if fast is not None:
            return fast
        cols: dict[str, list] = {}
        for k, data in enumerate(records):
            feats = {name: values for name, _, values in decode_example(data)}
            missing = [f for f in PRETRAINING_FEATURE_ORDER if f not in feats]
            if missing:
                raise ValueError(f"record {first_index + k}: missing feature(s) {missing}: not pretraining data")
            for name in PRETRAINING_FEATURE_ORDER:
                cols.setdefault(name, []).append(feats[name])
        out = {}
        for name, rows in cols.items():
            try:
                out[name] = np.stack(rows)
            except ValueError:
                raise ValueError(f"records {first_index}..: feature {name} has rows of different lengths") from None
        return out

    def get_batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The same keys and dtypes as ``PretrainingShards.get_batch``."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"instance index out of range [0, {len(self)})")
        n = len(indices)
        L, M = self.max_seq_length, self.max_predictions_per_seq
        if n == 0:
            return {k: v[:0] for k, v in self.get_batch([0]).items()}
        c = self._decode(self._records(indices), int(indices[0]))
        if c["input_ids"].shape[1] != L or c["masked_lm_positions"].shape[1] != M:
            raise ValueError(f"records differ in max_seq_length/max_predictions_per_seq from the first ({L}, {M})")
        weights = c["masked_lm_weights"].astype(np.float32)
        return {
            "input_ids": c["input_ids"].astype(np.int32),
            "segment_ids": c["segment_ids"].astype(np.int8),
            "lengths": c["input_mask"].sum(1).astype(np.int32),
            "masked_lm_positions": c["masked_lm_positions"].astype(np.int32),
            "masked_lm_ids": c["masked_lm_ids"].astype(np.int32),
            "num_masked": (weights > 0).sum(1).astype(np.int32),
            "next_sentence_labels": c["next_sentence_labels"].reshape(n).astype(np.int8),
            "input_mask": c["input_mask"].astype(np.int8),
            "masked_lm_weights": weights,
        }
