"""`nezha prepare` in windows: reading at document breaks, output independent of workers, vectorized pairing and
masking against the one-at-a-time reference, the batch TFRecord writer against the generic encoder."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from nezha.data import pretraining
from nezha.data.corpus import WHITESPACE, ReadStats, count_documents, iter_windows, read_documents
from nezha.data.masking import MaskingConfig, mask_batch, mask_pairs
from nezha.data.pretraining import PrepareArgs, pair_corpus, pair_document, prepare
from nezha.data.tfrecord import encode_example, frame_record, pretraining_records


@pytest.fixture(scope="module")
def clue(shared_data) -> Path:
    return shared_data / "pretrain_corpus/CLUECorpusSmall_bert_sampled.txt"


def _args(inp, out, vocab, **kw) -> PrepareArgs:
    base = dict(input_file=str(inp), output_file=str(out), vocab_file=str(vocab), dupe_factor=2, progress=False)
    return PrepareArgs(**{**base, **kw})


def test_whitespace_is_what_str_strip_removes():
    assert sorted(WHITESPACE + "\n") == [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]


def test_windows_cut_the_input_at_document_breaks(clue):
    raw = clue.read_bytes()
    lines = raw.split(b"\n")
    windows = list(iter_windows([clue], 300_000, ReadStats(), count_docs=True))
    assert len(windows) >= 4 and b"".join(p.data for w in windows for p in w.pieces) == raw
    docs = 0
    for w in windows:
        assert w.first_document == docs
        for p in w.pieces:
            assert p.data.split(b"\n", 1)[0] == lines[p.first_line - 1]  # line numbers hold
            assert p.first_line == 1 or not lines[p.first_line - 1].strip()  # a piece starts at a blank line
        docs += sum(count_documents(p.data) for p in w.pieces)
    assert docs == 2500 == len(read_documents([clue]))
    assert windows[-1].nbytes >= 150_000  # the tail joins the last window instead of making a tiny one


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("fmt", ["shards", "tfrecord"])
def test_output_is_byte_identical_for_any_number_of_workers(clue, chinese_vocab, tmp_path, fmt):
    digests = []
    for w in (1, 2):
        if fmt == "shards":
            out = tmp_path / f"w{w}"
            s = prepare(_args(clue, out, chinese_vocab, num_workers=w, window_mb=1, dupe_factor=1))
            digests.append(_digest(out.glob("shard-*.npy")))
        else:
            outs = [tmp_path / f"w{w}_{k}.tfrecord" for k in range(3)]
            s = prepare(_args(clue, ",".join(map(str, outs)), chinese_vocab, num_workers=w, window_mb=1,
                              dupe_factor=1, output_format="tfrecord", do_whole_word_mask=True))
            digests.append([_digest([o]) for o in outs])
        assert s["windows"] == 2 and s["documents"] == 2500 and s["window_bytes"] == 1 << 20
    assert digests[0] == digests[1]


def test_default_window_follows_the_input_size_only():
    """--window_mb 0 (the default): a 24th of the input, 2 to 8 MB; --num_workers plays no part."""
    mb = 1 << 20
    assert pretraining.window_size(0, 2 * mb) == 2 * mb  # the 2 MB sample: one window, as before
    assert pretraining.window_size(0, 47 * mb) == 2 * mb  # the sample x 25: ~20 windows, two workers finish together
    assert pretraining.window_size(0, 120 * mb) == 5 * mb
    assert pretraining.window_size(0, 5000 * mb) == 8 * mb  # memory per worker stays bounded
    assert pretraining.window_size(3, 5000 * mb) == 3 * mb
    with pytest.raises(ValueError, match="window_mb"):
        PrepareArgs(input_file="a", output_file="b", vocab_file="c", window_mb=-1)


def test_invalid_utf8_in_a_later_window_names_its_line(clue, chinese_vocab, tmp_path):
    raw = clue.read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(raw + b"\n\xff broken\n\n" + raw[:300_000])
    line = raw.count(b"\n") + 2
    with pytest.raises(ValueError, match=rf"bad\.txt:{line}: invalid UTF-8"):
        prepare(_args(bad, tmp_path / "o", chinese_vocab, window_mb=1, dupe_factor=1))


def test_documents_split_across_machines_over_several_windows(clue, chinese_vocab, tmp_path):
    parts = [prepare(_args(clue, tmp_path / f"s{k}", chinese_vocab, window_mb=1, dupe_factor=1, num_shards=3,
                           shard_index=k)) for k in range(3)]
    assert sum(p["documents"] for p in parts) == 2500
    assert all(p["documents"] + p["documents_in_other_shards"] == 2500 for p in parts)


def test_vectorized_pairing_matches_the_reference_per_document(clue, chinese_vocab):
    """pair_corpus (all documents at once) against pair_document (BERT's loop, one document at a time): same
    distribution of pair counts, NSP labels and lengths, and every pair inside its documents' sentences."""
    args = _args(clue, "unused", chinese_vocab)
    tok = pretraining.original_tokenizer(chinese_vocab, True)
    docs = read_documents([clue])
    corpus = pretraining.tokenize_corpus(docs, [clue], tok, args, {"problems": []})
    rounds = 4
    fast = pair_corpus(corpus, rounds=rounds, max_seq_length=128, short_seq_prob=0.1, rng=np.random.default_rng(0))
    ref = np.array([p for r in range(rounds) for d in range(corpus.num_documents) for p in pair_document(
        corpus, d, max_seq_length=128, short_seq_prob=0.1, rng=pretraining.document_rng(7, r, d))])
    assert abs(len(fast) / len(ref) - 1) < 0.01
    assert abs(fast[:, 4].mean() - ref[:, 4].mean()) < 0.01
    for P in (fast, ref):
        la, lb = P[:, 1] - P[:, 0], P[:, 3] - P[:, 2]
        assert (la >= 1).all() and (lb >= 1).all() and (la + lb <= 125).all()
    flen, rlen = (P[:, 1] - P[:, 0] + P[:, 3] - P[:, 2] for P in (fast, ref))
    assert abs(flen.mean() - rlen.mean()) < 1.0
    # A lies in one document; a B that is not random continues it
    doc_of = np.searchsorted(corpus.sentence_offsets[corpus.document_offsets], fast[:, 0], side="right") - 1
    ends = corpus.sentence_offsets[corpus.document_offsets[doc_of + 1]]
    assert (fast[:, 1] <= ends).all()
    same = fast[:, 4] == 0
    assert (fast[same, 2] >= fast[same, 1]).all() and (fast[same, 3] <= ends[same]).all()


def test_mask_pairs_is_static_masking_of_the_pair_layout():
    """mask_pairs (ranks drawn by Floyd's algorithm) against mask_batch on the same rows: budgets, the 80/10/10
    split and uniform positions over A and B, never [CLS]/[SEP]."""
    rng = np.random.default_rng(0)
    n, L = 20000, 64
    la = rng.integers(1, 30, n)
    lb = rng.integers(1, L - 2 - la)
    lengths = la + lb + 3
    pos = np.arange(L)[None, :]
    cand = (pos >= 1) & (pos < lengths[:, None] - 1) & (pos != la[:, None] + 1)
    ids = np.where(pos < lengths[:, None], rng.integers(1000, 2000, (n, L)), 0).astype(np.int32)
    cfg = MaskingConfig(max_predictions_per_seq=10, vocab_size=21128)
    a = mask_pairs(ids, la, lengths, cfg, np.random.default_rng(1))
    b = mask_batch(ids, lengths, cand, np.ones((n, L), bool), cfg, np.random.default_rng(2))
    np.testing.assert_array_equal(a.num_masked, b.num_masked)
    rows = np.repeat(np.arange(n), a.num_masked)
    chosen = a.positions[np.arange(cfg.max_predictions_per_seq)[None, :] < a.num_masked[:, None]]
    assert cand[rows, chosen].all()
    assert (np.diff(a.positions, axis=1)[np.arange(1, 10)[None, :] < a.num_masked[:, None]] > 0).all()
    np.testing.assert_array_equal(a.labels[a.positions > 0], ids[rows, chosen])
    for m in (a, b):
        total = m.num_masked.sum()
        assert abs(m.num_mask_token / total - 0.8) < 0.01 and abs(m.num_random / total - 0.1) < 0.01
    # uniform over candidates: the share of picks in A is A's share of the candidates
    in_a = (chosen <= la[rows]).mean()
    expected = (la / (la + lb))[rows].mean()
    assert abs(in_a - expected) < 0.01


def test_batch_records_equal_the_generic_encoder():
    rng = np.random.default_rng(3)
    n, L, M = 300, 200, 7  # positions up to 199: two-byte varints too
    lengths = rng.integers(5, L + 1, n)
    ids = np.where(np.arange(L)[None, :] < lengths[:, None], rng.integers(0, 2**20, (n, L)), 0)
    arrays = {"input_ids": ids, "segment_ids": rng.integers(0, 2, (n, L)).astype(np.int8), "lengths": lengths,
              "masked_lm_positions": rng.integers(0, L, (n, M)), "masked_lm_ids": rng.integers(0, 21128, (n, M)),
              "num_masked": rng.integers(0, M + 1, n), "next_sentence_labels": rng.integers(0, 2, n)}
    buf, ends = pretraining_records(arrays)
    expected = []
    for i in range(n):
        feats = {
            "input_mask": ("int64", (np.arange(L) < lengths[i]).astype(int).tolist()),
            "segment_ids": ("int64", arrays["segment_ids"][i].tolist()),
            "masked_lm_positions": ("int64", arrays["masked_lm_positions"][i].tolist()),
            "masked_lm_ids": ("int64", arrays["masked_lm_ids"][i].tolist()),
            "input_ids": ("int64", ids[i].tolist()),
            "masked_lm_weights": ("float", (np.arange(M) < arrays["num_masked"][i]).astype(float).tolist()),
            "next_sentence_labels": ("int64", [int(arrays["next_sentence_labels"][i])]),
        }
        expected.append(frame_record(encode_example([(k, kind, v) for k, (kind, v) in feats.items()])))
    assert buf.tobytes() == b"".join(expected)
    assert ends.tolist() == np.cumsum([len(e) for e in expected]).tolist()


def test_giant_document_does_not_break_windows(chinese_vocab, tmp_path):
    """A document longer than a window (no blank line for MBs) makes a longer window; nothing is lost."""
    rnd = random.Random(0)
    big = "\n".join("".join(rnd.choice("北京上海天气很好我们去公园散步") for _ in range(60)) for _ in range(40_000))
    inp = tmp_path / "big.txt"
    inp.write_text(big + "\n\n今天天气很好。\n\n我们去公园。\n", encoding="utf-8")
    s = prepare(_args(inp, tmp_path / "o", chinese_vocab, window_mb=1, dupe_factor=1))
    assert s["documents"] == 3 and s["sentences"] == 40_002 and s["windows"] == 1
