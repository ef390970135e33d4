"""The TensorFlow checkpoint reader against checkpoints written by real TensorFlow (tests/fixtures, made by
tests/fixtures/make_tf_checkpoint.py); TensorFlow itself is not needed here."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from nezha.convert import tf_checkpoint as tfc
from nezha.convert.tf_checkpoint import CheckpointError, TFCheckpoint, resolve_prefix
from nezha.io import crc32c as crc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NEZHA = FIXTURES / "tf_nezha_tiny" / "model.ckpt-7"
DTYPES = FIXTURES / "tf_dtypes" / "model.ckpt-3"


def _copy(src_prefix: Path, tmp_path: Path) -> Path:
    for f in src_prefix.parent.glob(src_prefix.name + ".*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / src_prefix.name


def _crc32c_bitwise(data: bytes) -> int:
    """CRC32C from its definition, bit by bit: the reference for the table/numpy implementations."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ CRC32C
def test_crc32c_known_vector():
    assert crc.crc32c(b"123456789") == 0xE3069283
    assert crc._crc32c_fallback(b"123456789") == 0xE3069283
    assert crc.crc32c(b"") == 0


@pytest.mark.parametrize("n", [1, 7, 8191, 8192, 20_003, 300_001])
def test_crc32c_numpy_fallback_matches_the_definition(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    # the bitwise reference is slow: check long inputs through their head, tail and a continued CRC
    head, tail = data[:5000], data[-3000:]
    assert crc._crc32c_fallback(head) == _crc32c_bitwise(head)
    assert crc._crc32c_fallback(tail) == _crc32c_bitwise(tail)
    whole = crc._crc32c_fallback(data)
    assert crc._crc32c_fallback(data[n // 3 :], crc._crc32c_fallback(data[: n // 3])) == whole
    assert crc.crc32c(data) == whole  # the C extension when installed, the same code otherwise
    if n <= 20_003:
        assert whole == _crc32c_bitwise(data)


# ------------------------------------------------------------------------------------------------ reading
def test_reader_reproduces_every_tensor_of_the_nezha_fixture():
    ckpt = TFCheckpoint(NEZHA)
    expected = np.load(NEZHA.parent / "expected.npz")
    assert ckpt.num_shards == 1
    assert sorted(ckpt.names()) == sorted(expected.files)
    for name in ckpt.names():
        got = ckpt.read(name)
        assert got.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got, expected[name], err_msg=name)


def test_reader_handles_every_dtype_across_two_shards():
    ckpt = TFCheckpoint(DTYPES)
    expected = np.load(DTYPES.parent / "expected.npz")
    assert ckpt.num_shards == 2
    assert {e.shard_id for e in ckpt.entries.values()} == {0, 1}
    assert ckpt.entries["bfloat16/vector"].dtype == "bfloat16"
    assert ckpt.entries["float16/matrix"].dtype == "float16"
    for name in expected.files:
        got = ckpt.read(name)
        if got.dtype == object:
            got = np.asarray(got, dtype=bytes)
        assert got.shape == expected[name].shape, name
        np.testing.assert_array_equal(got, expected[name], err_msg=name)
    assert ckpt.read("string/vector")[1].decode("utf-8") == "中文"
    assert ckpt.read("float32/empty").shape == (0, 3)


def test_index_blocks_are_uncompressed_in_tensorflow_output():
    data = (NEZHA.parent / "model.ckpt-7.index").read_bytes()
    footer = data[-48:]
    pos = 0
    for _ in range(2):
        _, pos = tfc._varint(footer, pos)
    off, pos = tfc._varint(footer, pos)
    size, _ = tfc._varint(footer, pos)
    assert data[off + size] == 0  # compression type byte of the index block: none


def test_snappy_decompress_literals_and_overlapping_copies():
    # "abcd" literal, then copy(len 8, offset 4) with a 1-byte offset, then "!" literal
    block = bytes([13, 3 << 2]) + b"abcd" + bytes([0b000_100_01, 4]) + bytes([0]) + b"!"
    assert tfc.snappy_decompress(block) == b"abcdabcdabcd!"
    with pytest.raises(CheckpointError, match="snappy"):
        tfc.snappy_decompress(bytes([20, 3 << 2]) + b"abcd")


def test_list_variables_gives_names_and_shapes():
    variables = dict(tfc.list_variables(NEZHA))
    assert variables["bert/encoder/layer_1/intermediate/dense/kernel"] == (32, 37)
    assert variables["global_step"] == ()


# ------------------------------------------------------------------------------------------------ naming
def test_prefix_accepts_index_and_data_file_names():
    assert resolve_prefix(str(NEZHA) + ".index") == NEZHA
    assert resolve_prefix(str(NEZHA) + ".data-00000-of-00001") == NEZHA
    assert resolve_prefix(NEZHA) == NEZHA


def test_prefix_folder_and_meta_get_a_message_naming_the_prefix():
    with pytest.raises(CheckpointError, match=r"is a folder.*model\.ckpt-7"):
        resolve_prefix(NEZHA.parent)
    with pytest.raises(CheckpointError, match=r"\.meta.*holds no weights.*model\.ckpt-7"):
        resolve_prefix(str(NEZHA) + ".meta")
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt-8\.index not found.*model\.ckpt-7"):
        resolve_prefix(NEZHA.parent / "model.ckpt-8")


# ------------------------------------------------------------------------------------------------ damage
def test_missing_shard_is_an_error_at_open(tmp_path):
    prefix = _copy(DTYPES, tmp_path)
    (tmp_path / "model.ckpt-3.data-00001-of-00002").unlink()
    with pytest.raises(CheckpointError, match=r"missing data shard.*data-00001-of-00002.*2 shard"):
        TFCheckpoint(prefix)


def test_truncated_shard_is_an_error_at_open(tmp_path):
    prefix = _copy(NEZHA, tmp_path)
    data = tmp_path / "model.ckpt-7.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        TFCheckpoint(prefix)


def test_flipped_byte_fails_the_tensor_checksum(tmp_path):
    prefix = _copy(NEZHA, tmp_path)
    ckpt = TFCheckpoint(prefix)
    entry = ckpt.entries["bert/encoder/layer_0/attention/self/query/kernel"]
    data = tmp_path / "model.ckpt-7.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 17] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch.*query/kernel"):
        ckpt.read(entry.name)
    ckpt.read("bert/embeddings/word_embeddings")  # other tensors are intact
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.verify()


def test_corrupt_string_tensor_is_detected(tmp_path):
    prefix = _copy(DTYPES, tmp_path)
    ckpt = TFCheckpoint(prefix)
    entry = ckpt.entries["string/vector"]
    data = ckpt.shard_paths[entry.shard_id]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + entry.size - 2] ^= 0x20  # inside "abc..." string bytes
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.read("string/vector")


def test_damaged_index_is_an_error(tmp_path):
    prefix = _copy(NEZHA, tmp_path)
    index = tmp_path / "model.ckpt-7.index"
    good = index.read_bytes()
    index.write_bytes(good[:-10])
    with pytest.raises(CheckpointError, match="bad magic"):
        TFCheckpoint(prefix)
    damaged = bytearray(good)
    damaged[40] ^= 0xFF
    index.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="checksum"):
        TFCheckpoint(prefix)


def test_fixture_md5_list_matches_files():
    lines = (NEZHA.parent / "model.md5").read_text().splitlines()
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.md5((NEZHA.parent / name).read_bytes()).hexdigest() == digest
