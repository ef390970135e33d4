"""NER readers (BIO, TSV, JSONL spans), offset alignment, windows and writing predictions back."""

from __future__ import annotations

import logging

import pytest

from nezha.data.tokenization import NezhaTokenizer
from nezha.tasks.ner.reader import (
    IGNORE,
    TaggedSentence,
    check_tags,
    collect_predictions,
    make_windows,
    read_sentences,
    spans_to_tags,
    tag_list,
    tags_to_spans,
    word_pieces,
    write_predictions,
)


def test_read_people_daily_bio_and_tsv_agree(shared_data):
    bio = read_sentences(shared_data / "people_daily_ner" / "example.dev")
    tsv = read_sentences(shared_data / "people_daily_ner" / "uer_msra_ner_tsv" / "dev.tsv")
    assert len(bio) == len(tsv) == 2318
    assert sum(len(s.words) for s in bio) == 109870
    assert [(s.words, s.tags) for s in bio[:50]] == [(s.words, s.tags) for s in tsv[:50]]
    assert tag_list(bio) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_i_without_b_is_a_counted_warning_naming_the_line(tmp_path, caplog):
    p = tmp_path / "d.txt"
    p.write_text("我 O\n爱 I-LOC\n\n北 B-LOC\n京 I-LOC\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="nezha"):
        sents = read_sentences(p)
    assert len(sents) == 2 and sents[0].tags == ["O", "I-LOC"]  # kept, not dropped
    assert "1 malformed BIO" in caplog.text and "d.txt:1 word 1" in caplog.text


def test_bad_lines_unknown_tags_and_empty_files(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("我 O\n爱\n", encoding="utf-8")
    with pytest.raises(ValueError, match="d.txt:2: expected 'WORD TAG'"):
        read_sentences(p)
    p.write_text("我 O\n爱 B-MISC\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.txt:1 word 1 \('爱'\): tag 'B-MISC' is not in the label list"):
        check_tags(read_sentences(p), ["O", "B-PER", "I-PER"])
    p.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no sentences"):
        read_sentences(p)


def test_jsonl_spans_roundtrip(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "我爱北京天安门", "entities": [{"start": 2, "end": 4, "label": "LOC"}, [4, 7, "LOC"]]}\n',
                 encoding="utf-8")
    (s,) = read_sentences(p)
    assert s.tags == ["O", "O", "B-LOC", "I-LOC", "B-LOC", "I-LOC", "I-LOC"]
    assert tags_to_spans(s.tags) == [{"start": 2, "end": 4, "label": "LOC"}, {"start": 4, "end": 7, "label": "LOC"}]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags("北京", [[0, 2, "LOC"], [1, 2, "LOC"]], "x:1")
    with pytest.raises(ValueError, match="outside the text"):
        spans_to_tags("北京", [[0, 3, "LOC"]], "x:1")


def test_alignment_labels_first_piece_only_and_windows_cover_every_word(tiny_vocab):
    tok = NezhaTokenizer.from_file(tiny_vocab)
    words = ["我", "playing", "北", "京", "\x00", "人"]
    assert [len(p) for p in word_pieces(tok, words)] == [1, 2, 1, 1, 0, 1]  # play ##ing; a control char: none
    sent = TaggedSentence("x:1", words, ["O", "B-PER", "B-LOC", "I-LOC", "O", "O"])
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    windows, empty = make_windows(tok, [sent], labels, max_seq_length=5)  # 3 tokens per window
    assert empty == 1
    assert [w.word_ids for w in windows] == [[0, 1], [2, 3, 5]]
    assert windows[0].labels == [IGNORE, 0, 3, IGNORE, IGNORE]
    assert windows[0].label_mask == [0, 1, 1, 0, 0]
    pred = collect_predictions([sent], windows, [[0, 3], [1, 2, 0]], labels)
    assert pred == [["O", "B-PER", "B-LOC", "I-LOC", "O", "O"]]


def test_write_predictions_in_the_input_format(tmp_path):
    sents = [TaggedSentence("x:1", ["北", "京"], ["B-LOC", "I-LOC"])]
    write_predictions(tmp_path / "p.txt", sents, [["B-LOC", "I-LOC"]], "bio")
    assert read_sentences(tmp_path / "p.txt")[0].tags == ["B-LOC", "I-LOC"]
    write_predictions(tmp_path / "p.jsonl", sents, [["B-LOC", "I-LOC"]], "jsonl")
    assert read_sentences(tmp_path / "p.jsonl")[0].tags == ["B-LOC", "I-LOC"]
    write_predictions(tmp_path / "p.tsv", sents, [["B-LOC", "O"]], "tsv")
    assert read_sentences(tmp_path / "p.tsv")[0].tags == ["B-LOC", "O"]
