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
