"""TFRecord without TensorFlow, checked against files written by real TensorFlow (tests/fixtures/tfrecord)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nezha.data import tfrecord
from nezha.data.tfrecord import (
    TFRecordFile,
    TFRecordInstances,
    TFRecordWriter,
    decode_example,
    decode_pretraining_batch,
    encode_example,
    frame_record,
    pretraining_examples,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tfrecord"


def _fixture_arrays() -> dict[str, np.ndarray]:
    inst = json.loads((FIXTURES / "pretraining.json").read_text())
    return {
        "input_ids": np.array([i["input_ids"] for i in inst], np.int32),
        "segment_ids": np.array([i["segment_ids"] for i in inst], np.int8),
        "lengths": np.array([sum(i["input_mask"]) for i in inst], np.int32),
        "masked_lm_positions": np.array([i["masked_lm_positions"] for i in inst], np.int32),
        "masked_lm_ids": np.array([i["masked_lm_ids"] for i in inst], np.int32),
        "num_masked": np.array([int(sum(i["masked_lm_weights"])) for i in inst], np.int32),
        "next_sentence_labels": np.array([i["next_sentence_labels"][0] for i in inst], np.int8),
        "input_mask": np.array([i["input_mask"] for i in inst], np.int8),
        "masked_lm_weights": np.array([i["masked_lm_weights"] for i in inst], np.float32),
    }


def test_tensorflow_fixture_reads_as_the_instances_it_was_made_from():
    data = TFRecordInstances(FIXTURES / "pretraining.tfrecord")
    want = _fixture_arrays()
    assert len(data) == 12 and data.max_seq_length == 16 and data.vocab_size is None
    got = data.get_batch(np.arange(12))
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert got[k].dtype == v.dtype, k
    sub = data.get_batch([5, 0])
    np.testing.assert_array_equal(sub["input_ids"], want["input_ids"][[5, 0]])


def test_reader_batches_have_the_shard_reader_keys_and_dtypes():
    from nezha.data.shards import PretrainingShards

    shard_like = _fixture_arrays()
    got = TFRecordInstances(FIXTURES / "pretraining.tfrecord").get_batch([1, 2])
    expected_keys = {"input_ids", "segment_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_masked",
                     "next_sentence_labels", "input_mask", "masked_lm_weights"}
    assert set(got) == expected_keys and hasattr(PretrainingShards, "get_batch")
    assert {k: v.dtype for k, v in got.items()} == {k: shard_like[k].dtype for k in expected_keys}


def test_tensorflow_fixture_rewritten_byte_identically():
    raw = (FIXTURES / "pretraining.tfrecord").read_bytes()
    ours = b"".join(frame_record(r) for r in pretraining_examples(_fixture_arrays()))
    assert ours == raw
    # and through the generic decoder/encoder, record by record
    records = TFRecordFile(FIXTURES / "pretraining.tfrecord")
    again = b"".join(frame_record(encode_example(decode_example(r))) for r in records)
    assert again == raw


def test_generic_examples_round_trip_every_feature_kind():
    raw = (FIXTURES / "generic.tfrecord").read_bytes()
    want = json.loads((FIXTURES / "generic.json").read_text())
    records = list(TFRecordFile(FIXTURES / "generic.tfrecord"))
    for rec, ex in zip(records, want, strict=True):
        got = {n: (k, v) for n, k, v in decode_example(rec)}  # TF writes the map in its own order
        assert {n: k for n, (k, _) in got.items()} == {n: k for n, k, _ in ex}
        for name, _, expected in ex:
            kind, values = got[name]
            if kind == "bytes":
                assert [v.hex() for v in values] == expected
            elif kind == "float":
                np.testing.assert_array_equal(values, np.array(expected, np.float32))
            else:
                assert values.tolist() == expected
    assert b"".join(frame_record(encode_example(decode_example(r))) for r in records) == raw


def test_writer_output_reads_back_and_is_atomic(tmp_path):
    arrays = _fixture_arrays()
    path = tmp_path / "out.tfrecord"
    tfrecord.write_instances_tfrecord(arrays, [path])
    assert path.read_bytes() == (FIXTURES / "pretraining.tfrecord").read_bytes()
    with pytest.raises(RuntimeError), TFRecordWriter(tmp_path / "half.tfrecord") as w:
        w.write(b"x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == [path]


def test_corrupt_and_truncated_files_are_named(tmp_path):
    raw = bytearray((FIXTURES / "pretraining.tfrecord").read_bytes())
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=r"cut\.tfrecord: record 11 .*truncated"):
        TFRecordInstances(cut)
    raw[40] ^= 0xFF
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad\.tfrecord: record 0: bad data checksum"):
        TFRecordInstances(bad)
    txt = tmp_path / "text.tfrecord"
    txt.write_text("this is not a tfrecord file at all\n")
    with pytest.raises(ValueError, match="bad length checksum"):
        TFRecordInstances(txt)


# ---------------------------------------------------------------------------------------------------------------
# The vectorised decoder of the pretraining layout


def _generic(records):
    rows = [{name: values for name, _, values in decode_example(r)} for r in records]
    return {name: np.stack([r[name] for r in rows]) for name in rows[0]}


def _random_arrays(n: int, seq: int = 16, max_pred: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, seq + 1, n)
    ids = rng.integers(0, 21128, (n, seq))  # 1-, 2- and 3-byte varints
    ids[np.arange(seq)[None, :] >= lengths[:, None]] = 0
    return {"input_ids": ids.astype(np.int32), "segment_ids": rng.integers(0, 2, (n, seq)).astype(np.int8),
            "lengths": lengths.astype(np.int32), "masked_lm_positions": rng.integers(0, seq, (n, max_pred)),
            "masked_lm_ids": rng.integers(0, 2**20, (n, max_pred)), "num_masked": rng.integers(0, max_pred + 1, n),
            "next_sentence_labels": rng.integers(0, 2, n).astype(np.int8)}


@pytest.mark.parametrize("source", ["tensorflow", "random"])
def test_vectorised_decode_equals_the_generic_decoder(source):
    if source == "tensorflow":
        records = list(TFRecordFile(FIXTURES / "pretraining.tfrecord"))
    else:
        records = pretraining_examples(_random_arrays(50))
    fast = decode_pretraining_batch(records)
    slow = _generic(records)
    assert fast is not None and fast.keys() == slow.keys()
    for name in slow:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
        assert fast[name].dtype == slow[name].dtype, name


def test_vectorised_decode_declines_other_layouts_and_the_reader_falls_back(tmp_path):
    records = list(TFRecordFile(FIXTURES / "pretraining.tfrecord"))
    extra = [encode_example([*decode_example(r), ("extra", "int64", [7])]) for r in records]
    assert decode_pretraining_batch(extra) is None
    path = tmp_path / "extra.tfrecord"
    with TFRecordWriter(path) as w:
        for r in extra:
            w.write(r)
    got = TFRecordInstances(path).get_batch(np.arange(12))
    np.testing.assert_array_equal(got["input_ids"], _fixture_arrays()["input_ids"])
    # one record with a shorter input_ids: neither decoder stacks it silently
    short = decode_example(records[1])
    short = [(n, k, v[:-1] if n == "input_ids" else v) for n, k, v in short]
    mixed = [records[0], encode_example(short)]
    assert decode_pretraining_batch(mixed) is None
    path = tmp_path / "mixed.tfrecord"
    with TFRecordWriter(path) as w:
        for r in mixed:
            w.write(r)
    with pytest.raises(ValueError, match="input_ids has rows of different lengths"):
        TFRecordInstances(path).get_batch([0, 1])


# ---------------------------------------------------------------------------------------------------------------
# The batch writer against the per-record encoder, and TensorFlow's framing checks

VARINT_EDGES = np.array([0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**35, 2**49, 2**56,
                         2**63 - 1], np.int64)


def _edge_arrays(n: int, L: int, M: int, top: int, seed: int) -> dict[str, np.ndarray]:
    """Random instances whose ids (below ``top``) include every varint size boundary, with padding, rows that are
    all zeros, rows without zeros and zeros inside rows."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, L + 1, n)
    ids = rng.integers(0, top, (n, L), dtype=np.int64)
    edges = VARINT_EDGES[VARINT_EDGES < top]
    pick = rng.random((n, L)) < 0.2
    ids[pick] = rng.choice(edges, int(pick.sum()))
    ids[np.arange(L)[None, :] >= lengths[:, None]] = 0  # padding
    ids[0] = 0
    ids[-1] = rng.integers(1, max(top, 2), L)
    ids[rng.random((n, L)) < 0.05] = 0
    return {"input_ids": ids, "segment_ids": rng.integers(0, 2, (n, L)).astype(np.int8), "lengths": lengths,
            "masked_lm_positions": rng.integers(0, L, (n, M)), "masked_lm_ids": rng.choice(edges, (n, M)),
            "num_masked": rng.integers(0, M + 1, n), "next_sentence_labels": rng.integers(0, 2, n).astype(np.int8)}


def _per_record(arrays: dict[str, np.ndarray]) -> bytes:
    """The same records through the generic encoder, one Example at a time (the byte-exact reference)."""
    L, M = arrays["input_ids"].shape[1], arrays["masked_lm_positions"].shape[1]
    out = []
    for i in range(len(arrays["lengths"])):
        feats = {
            "input_mask": ("int64", (np.arange(L) < arrays["lengths"][i]).astype(int).tolist()),
            "segment_ids": ("int64", arrays["segment_ids"][i].tolist()),
            "masked_lm_positions": ("int64", arrays["masked_lm_positions"][i].tolist()),
            "masked_lm_ids": ("int64", arrays["masked_lm_ids"][i].tolist()),
            "input_ids": ("int64", arrays["input_ids"][i].tolist()),
            "masked_lm_weights": ("float", (np.arange(M) < arrays["num_masked"][i]).astype(float).tolist()),
            "next_sentence_labels": ("int64", [int(arrays["next_sentence_labels"][i])]),
        }
        out.append(frame_record(encode_example([(k, kind, v) for k, (kind, v) in feats.items()])))
    return b"".join(out)


@pytest.mark.parametrize(
    "n, L, M, top",
    [(1, 5, 1, 2), (40, 16, 4, 128), (60, 128, 20, 21128), (50, 200, 7, 2**21), (30, 40, 5, 2**63 - 1),
     (12, 4000, 3, 2**21)],  # the last: 3-byte varints of lengths in some rows only
)
def test_batch_records_equal_the_per_record_encoder_at_varint_edges(n, L, M, top):
    arrays = _edge_arrays(n, L, M, top, seed=n + L)
    buf, ends = tfrecord.pretraining_records(arrays)
    want = _per_record(arrays)
    assert buf.tobytes() == want
    assert ends[-1] == len(want)
    assert [r for r in pretraining_examples(arrays)] == list(iter_framed(want))


def iter_framed(raw: bytes):
    pos = 0
    while pos < len(raw):
        n = int.from_bytes(raw[pos : pos + 8], "little")
        yield raw[pos + 12 : pos + 12 + n]
        pos += n + 16


def _masked_reference(crc: int) -> int:
    """TensorFlow's crc32c::Mask, written out: rotate right by 15 bits, add 0xa282ead8 (mod 2^32)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_written_files_pass_tensorflows_record_checks(tmp_path):
    """Each record: uint64 length, masked CRC32C of those 8 bytes, data, masked CRC32C of the data; checked here with
    the numpy CRC (not the C one the writer used) and ending exactly at the end of the file."""
    from nezha.io.crc32c import _crc32c_fallback

    arrays = _edge_arrays(300, 128, 20, 21128, seed=7)
    paths = [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"]
    tfrecord.write_instances_tfrecord(arrays, paths, chunk=64)
    count = 0
    for path in paths:
        raw = path.read_bytes()
        pos = 0
        while pos < len(raw):
            length = raw[pos : pos + 8]
            assert int.from_bytes(raw[pos + 8 : pos + 12], "little") == _masked_reference(_crc32c_fallback(length))
            n = int.from_bytes(length, "little")
            data = raw[pos + 12 : pos + 12 + n]
            assert len(data) == n
            stored = int.from_bytes(raw[pos + 12 + n : pos + 16 + n], "little")
            assert stored == _masked_reference(_crc32c_fallback(data))
            pos += 16 + n
            count += 1
        assert pos == len(raw)
    assert count == 300
    assert len(TFRecordInstances(paths)) == 300
