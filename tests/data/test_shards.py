"""The pretraining shard format: write -> read round trip, and incomplete or corrupt data is refused."""

from __future__ import annotations

import numpy as np
import pytest

from nezha.data import shards


def _instances():
    return [
        shards.Instance([101, 5, 6, 102, 7, 102], [0, 0, 0, 0, 1, 1], [1, 4], [9, 8], False),
        shards.Instance([101, 3, 102, 4, 102], [0, 0, 0, 1, 1], [3], [11], True),
        shards.Instance([101, 2, 102, 2, 2, 2, 102], [0, 0, 0, 1, 1, 1, 1], [], [], False),
    ]


def _write(tmp_path, instances, split_at=2):
    parts = [instances[:split_at], instances[split_at:]]
    entries = [shards.write_shard(tmp_path, f"shard-{i:05d}", shards.instances_to_arrays(p, 8, 3))
               for i, p in enumerate(parts)]
    shards.write_index(tmp_path, entries, max_seq_length=8, max_predictions_per_seq=3, vocab_size=200)


def test_round_trip_across_shards(tmp_path):
    inst = _instances()
    _write(tmp_path, inst)
    data = shards.PretrainingShards(tmp_path)
    assert len(data) == 3 and data.max_seq_length == 8 and data.vocab_size == 200
    batch = data.get_batch([2, 0, 1])
    for row, i in enumerate([2, 0, 1]):
        L, M = len(inst[i].input_ids), len(inst[i].masked_lm_positions)
        assert batch["input_ids"][row, :L].tolist() == list(inst[i].input_ids)
        assert batch["input_ids"][row, L:].sum() == 0
        assert batch["input_mask"][row].sum() == L
        assert batch["masked_lm_positions"][row, :M].tolist() == list(inst[i].masked_lm_positions)
        assert batch["masked_lm_weights"][row].tolist() == [1.0] * M + [0.0] * (3 - M)
        assert batch["next_sentence_labels"][row] == int(inst[i].is_random_next)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_missing_index_means_incomplete(tmp_path):
    shards.write_shard(tmp_path, "shard-00000", shards.instances_to_arrays(_instances(), 8, 3))
    with pytest.raises(ValueError, match="incomplete"):
        shards.PretrainingShards(tmp_path)


def test_truncated_array_is_reported(tmp_path):
    _write(tmp_path, _instances())
    f = tmp_path / "shard-00000.input_ids.npy"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match="shard-00000.input_ids.npy"):
        shards.PretrainingShards(tmp_path)


def test_instance_too_long_is_an_error():
    long = shards.Instance(list(range(10)), [0] * 10, [], [], False)
    with pytest.raises(ValueError, match="do not fit"):
        shards.instances_to_arrays([long], 8, 3)


def test_out_of_range_index(tmp_path):
    _write(tmp_path, _instances())
    with pytest.raises(IndexError):
        shards.PretrainingShards(tmp_path).get_batch(np.array([3]))


def test_index_records_the_largest_token_id(tmp_path):
    _write(tmp_path, _instances())
    assert shards.PretrainingShards(tmp_path).max_token_id == 102  # [SEP]; targets 9, 8, 11 are smaller


def test_folders_made_with_different_vocabs_are_not_mixed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, sha in ((a, "1" * 64), (b, "2" * 64)):
        folder.mkdir()
        entry = shards.write_shard(folder, "shard-00000", shards.instances_to_arrays(_instances(), 8, 3))
        shards.write_index(folder, [entry], max_seq_length=8, max_predictions_per_seq=3, vocab_size=200,
                           metadata={"vocab_sha256": sha, "args": {"vocab_file": f"{folder.name}/vocab.txt"}})
    data = shards.PretrainingShards(a)
    assert data.vocab_sha256 == "1" * 64 and data.vocab_source == "a/vocab.txt"
    with pytest.raises(ValueError, match=r"b: made with another vocab.txt"):
        shards.PretrainingShards([a, b])
