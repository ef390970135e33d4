"""Read TensorFlow (V2 "tensor bundle") checkpoints with numpy only: no TensorFlow, no protobuf.

A checkpoint ``PREFIX`` (e.g. ``model.ckpt-900000``) is

* ``PREFIX.index``: an SSTable (the LevelDB table format): data blocks of prefix-compressed ``key -> value``
  entries with restart points, an index block pointing at them, and a fixed 48-byte footer ending in a magic
  number. Each block is followed by a 1-byte compression type and a masked CRC32C. The key ``""`` holds a
  ``BundleHeaderProto`` (number of shards, endianness); every other key is a tensor name whose value is a
  ``BundleEntryProto`` (dtype, shape, shard id, offset, size, masked CRC32C of the tensor's bytes).
* ``PREFIX.data-0000i-of-0000N``: the raw little-endian tensor bytes, addressed by (shard id, offset, size).
  A string tensor is ``[varint64 length]*n [masked crc32c of the lengths] [bytes]*n``.

The two protobuf messages are tiny, so they are decoded here by hand. Everything that can be checked is checked
(footer magic, block CRCs, shard presence and sizes before any tensor is read, each tensor's CRC32C when it is
read), so a truncated download fails with a message naming the file instead of giving a half-loaded model.

CRC32C comes from :mod:`nezha.io.crc32c`.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nezha.io.crc32c import crc32c, masked

__all__ = [
    "CheckpointError",
    "TFCheckpoint",
    "TensorEntry",
    "list_variables",
    "load_checkpoint",
    "resolve_prefix",
]


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt, or in a form this reader does not handle."""


# ---------------------------------------------------------------------------------------------------- protobuf
def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("malformed varint")


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode one protobuf message into ``(field number, value)`` pairs (varints as int, others as bytes)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field_no, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = bytes(buf[pos : pos + 8]), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos : pos + n]), pos + n
        elif wire == 5:
            value, pos = bytes(buf[pos : pos + 4]), pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointError("truncated protobuf message")
        out.append((field_no, value))
    return out


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# DataType enum of tensorflow/core/framework/types.proto -> (name, numpy dtype or None for special handling)
_DTYPES: dict[int, tuple[str, str | None]] = {
    1: ("float32", "<f4"),
    2: ("float64", "<f8"),
    3: ("int32", "<i4"),
    4: ("uint8", "u1"),
    5: ("int16", "<i2"),
    6: ("int8", "i1"),
    7: ("string", None),
    8: ("complex64", "<c8"),
    9: ("int64", "<i8"),
    10: ("bool", "?"),
    14: ("bfloat16", None),
    17: ("uint16", "<u2"),
    18: ("complex128", "<c16"),
    19: ("float16", "<f2"),
    22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's ``BundleEntryProto``: where its bytes are and how to check them."""

    name: str
    dtype: str  # "float32", "bfloat16", "string", ...
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool = False  # a partitioned variable: the bytes live under per-slice keys

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field_no, value in _fields(buf):
        if field_no == 2:  # repeated Dim dim
            size = 0
            for f, v in _fields(value):  # type: ignore[arg-type]
                if f == 1:
                    size = _int64(v)  # type: ignore[arg-type]
            dims.append(size)
        elif field_no == 3 and value:
            raise CheckpointError("tensor with unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    dtype = 0
    shape: tuple[int, ...] = ()
    shard_id = offset = size = crc = 0
    sliced = False
    for field_no, value in _fields(buf):
        if field_no == 1:
            dtype = value  # type: ignore[assignment]
        elif field_no == 2:
            shape = _parse_shape(value)  # type: ignore[arg-type]
        elif field_no == 3:
            shard_id = value  # type: ignore[assignment]
        elif field_no == 4:
            offset = value  # type: ignore[assignment]
        elif field_no == 5:
            size = value  # type: ignore[assignment]
        elif field_no == 6:
            crc = struct.unpack("<I", value)[0]  # type: ignore[arg-type]
        elif field_no == 7:
            sliced = True
    if dtype not in _DTYPES:
        raise CheckpointError(f"tensor {name!r} has TensorFlow dtype enum {dtype}, which this reader does not handle")
    return TensorEntry(name, _DTYPES[dtype][0], shape, shard_id, offset, size, crc, sliced)


# ---------------------------------------------------------------------------------------------------- SSTable
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
_TRAILER_SIZE = 5  # compression type + masked crc32c


def snappy_decompress(buf: bytes) -> bytes:
    """Decompress a raw Snappy block (TensorFlow's table writer can compress index blocks this way)."""
    n, pos = _varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(buf[pos : pos + extra], "little")
                pos += extra
            length += 1
            out += buf[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(buf[pos : pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise CheckpointError("corrupt snappy block (bad copy offset)")
        for _ in range(length):  # copies may overlap their own output
            out.append(out[-offset])
    if len(out) != n:
        raise CheckpointError(f"corrupt snappy block: expected {n} bytes, got {len(out)}")
    return bytes(out)


def _read_block(data: bytes, handle: tuple[int, int], path: Path) -> bytes:
    offset, size = handle
    if offset + size + _TRAILER_SIZE > len(data):
        raise CheckpointError(f"{path}: truncated (a block ends past the end of the file)")
    block = data[offset : offset + size]
    kind = data[offset + size]
    stored = struct.unpack("<I", data[offset + size + 1 : offset + size + 5])[0]
    if masked(crc32c(data[offset : offset + size + 1])) != stored:
        raise CheckpointError(f"{path}: corrupt (block checksum mismatch at offset {offset})")
    if kind == 0:
        return block
    if kind == 1:
        return snappy_decompress(block)
    raise CheckpointError(f"{path}: unknown block compression type {kind}")


def _block_entries(block: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    """Entries of one block: ``shared, non_shared, value_len`` varints, key suffix, value; restarts at the end."""
    if len(block) < 4:
        raise CheckpointError(f"{path}: corrupt block (too short)")
    num_restarts = struct.unpack("<I", block[-4:])[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise CheckpointError(f"{path}: corrupt block (bad restart count)")
    out = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise CheckpointError(f"{path}: corrupt block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        out.append((key, block[pos : pos + value_len]))
        pos += value_len
    return out


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All ``(key, value)`` pairs of an SSTable file, in key order."""
    data = path.read_bytes()
    if len(data) < _FOOTER_SIZE:
        raise CheckpointError(f"{path}: too short to be a checkpoint index ({len(data)} bytes)")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (bad magic number; truncated or wrong file)")
    pos = 0
    _meta_off, pos = _varint(footer, pos)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    out = []
    for _, handle in _block_entries(_read_block(data, (index_off, index_size), path), path):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        out.extend(_block_entries(_read_block(data, (off, size), path), path))
    return out


# ---------------------------------------------------------------------------------------------------- checkpoint
_DATA_RE = re.compile(r"\.data-\d{5}-of-\d{5}$")


def resolve_prefix(path: str | os.PathLike) -> Path:
    """Turn what a user passes (``model.ckpt-N``, ``model.ckpt-N.index``, a ``.data-*`` file) into the prefix.

    A folder or a ``.meta`` file gets an error that names the prefix to use instead.
    """
    p = Path(path)
    s = str(p)
    if s.endswith(".index"):
        p = Path(s[: -len(".index")])
    elif _DATA_RE.search(s):
        p = Path(_DATA_RE.sub("", s))
    elif s.endswith(".meta"):
        prefix = s[: -len(".meta")]
        raise CheckpointError(
            f"{s} is the graph file (.meta), which holds no weights: pass the checkpoint prefix {prefix}"
        )
    if p.is_dir():
        found = sorted(str(f)[: -len(".index")] for f in p.glob("*.index"))
        hint = f": pass the prefix, e.g. {found[-1]}" if found else " and the folder has no *.index file"
        raise CheckpointError(f"{p} is a folder; a TensorFlow checkpoint is named by its prefix{hint}")
    index = Path(str(p) + ".index")
    if not index.is_file():
        near = sorted(str(f)[: -len(".index")] for f in p.parent.glob("*.index")) if p.parent.is_dir() else []
        hint = f" (checkpoints in that folder: {', '.join(near)})" if near else ""
        raise FileNotFoundError(f"checkpoint index {index} not found{hint}")
    return p


class TFCheckpoint:
    """A TensorFlow V2 checkpoint opened for reading.

    Opening parses the index and checks that every data shard exists and is long enough for the tensors it holds,
    so a missing or truncated shard fails before anything is read. ``read`` checks each tensor's CRC32C.
    """

    def __init__(self, path: str | os.PathLike):
        self.prefix = resolve_prefix(path)
        self.index_path = Path(str(self.prefix) + ".index")
        pairs = read_table(self.index_path)
        if not pairs or pairs[0][0] != b"":
            raise CheckpointError(f"{self.index_path}: no bundle header; not a V2 (tensor bundle) checkpoint")
        self.num_shards = 1
        for field_no, value in _fields(pairs[0][1]):
            if field_no == 1:
                self.num_shards = value  # type: ignore[assignment]
            elif field_no == 2:
                self.big_endian = bool(value)
        self.big_endian = getattr(self, "big_endian", False)
        self.entries: dict[str, TensorEntry] = {}
        for key, value in pairs[1:]:
            name = key.decode("utf-8", errors="replace")
            if "\x00" in name:  # per-slice keys of partitioned variables; reported through the full entry
                continue
            self.entries[name] = _parse_entry(name, value)
        self.shard_paths = [
            Path(f"{self.prefix}.data-{i:05d}-of-{self.num_shards:05d}") for i in range(self.num_shards)
        ]
        self._check_shards()

    def _check_shards(self) -> None:
        missing = [str(p) for p in self.shard_paths if not p.is_file()]
        if missing:
            raise CheckpointError(
                f"checkpoint {self.prefix}: missing data shard(s) {', '.join(missing)} "
                f"(the index lists {self.num_shards} shard(s)); download them next to the .index file"
            )
        needed = [0] * self.num_shards
        for e in self.entries.values():
            if e.shard_id >= self.num_shards:
                raise CheckpointError(f"{self.index_path}: tensor {e.name!r} is in shard {e.shard_id} of "
                                      f"{self.num_shards}; the index is corrupt")
            needed[e.shard_id] = max(needed[e.shard_id], e.offset + e.size)
        for path, need in zip(self.shard_paths, needed):
            have = path.stat().st_size
            if have < need:
                raise CheckpointError(
                    f"{path}: truncated ({have} bytes, the index needs at least {need}); download it again"
                )

    # ------------------------------------------------------------------ queries
    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: e.shape for n, e in self.entries.items()}

    # ------------------------------------------------------------------ reading
    def _raw(self, entry: TensorEntry) -> bytes:
        path = self.shard_paths[entry.shard_id]
        with open(path, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise CheckpointError(f"{path}: truncated while reading {entry.name!r}; download it again")
        return raw

    def read(self, name: str, *, verify: bool = True) -> np.ndarray:
        """The tensor ``name`` as a numpy array (bfloat16 widened exactly to float32; strings as object array
        of bytes). Raises :class:`CheckpointError` on a checksum mismatch."""
        if name not in self.entries:
            raise KeyError(f"{name!r} is not in checkpoint {self.prefix}")
        entry = self.entries[name]
        if entry.sliced:
            raise CheckpointError(f"{name!r} is a partitioned (sliced) variable; this reader does not join slices")
        raw = self._raw(entry)
        if entry.dtype == "string":
            return self._decode_strings(entry, raw, verify)
        if verify and masked(crc32c(raw)) != entry.crc32c:
            raise CheckpointError(
                f"{self.shard_paths[entry.shard_id]}: checksum mismatch for tensor {name!r}; "
                "the file is corrupt, download it again"
            )
        return self._decode_numeric(entry, raw)

    def _decode_numeric(self, entry: TensorEntry, raw: bytes) -> np.ndarray:
        order = ">" if self.big_endian else "<"
        if entry.dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype=f"{order}u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            np_dtype = np.dtype(_DTYPES[_enum(entry.dtype)][1])
            if np_dtype.byteorder in "<>":
                np_dtype = np_dtype.newbyteorder(order)
            arr = np.frombuffer(raw, dtype=np_dtype)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.size != entry.num_elements:
            raise CheckpointError(
                f"tensor {entry.name!r}: {arr.size} elements stored for shape {entry.shape}; the index is corrupt"
            )
        return arr.reshape(entry.shape).copy()

    def _decode_strings(self, entry: TensorEntry, raw: bytes, verify: bool) -> np.ndarray:
        n = entry.num_elements
        lengths = []
        pos = 0
        crc = 0
        for _ in range(n):
            length, pos = _varint(raw, pos)
            lengths.append(length)
            # TensorFlow checksums each length as a uint32 (uint64 above 4 GiB), not the varint bytes.
            crc = crc32c(struct.pack("<I" if length <= 0xFFFFFFFF else "<Q", length), crc)
        stored = raw[pos : pos + 4]
        if verify and struct.unpack("<I", stored)[0] != masked(crc):
            raise CheckpointError(f"tensor {entry.name!r}: string-length checksum mismatch; the file is corrupt")
        crc = crc32c(stored, crc)
        pos += 4
        items = []
        for length in lengths:
            items.append(raw[pos : pos + length])
            pos += length
        if pos != len(raw):
            raise CheckpointError(f"tensor {entry.name!r}: string data size mismatch; the file is corrupt")
        if verify and masked(crc32c(raw[pos - sum(lengths) : pos], crc)) != entry.crc32c:
            raise CheckpointError(f"tensor {entry.name!r}: checksum mismatch; the file is corrupt")
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return arr.reshape(entry.shape)

    def verify(self, names: list[str] | None = None) -> None:
        """Read and checksum every tensor (or ``names``); raises on the first mismatch."""
        for name in names if names is not None else self.names():
            if not self.entries[name].sliced:
                self.read(name)


def _enum(dtype_name: str) -> int:
    for k, (n, _) in _DTYPES.items():
        if n == dtype_name:
            return k
    raise KeyError(dtype_name)


def list_variables(path: str | os.PathLike) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every tensor, like ``tf.train.list_variables``."""
    return sorted(TFCheckpoint(path).shapes().items())


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, checksummed, as numpy arrays."""
    ckpt = TFCheckpoint(path)
    return {name: ckpt.read(name, verify=verify) for name in ckpt.names()}
