"""SQuAD/CMRC windows: targets, max-context, n-best across windows, exact character spans, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from nezha.data.tokenization import NezhaTokenizer
from nezha.tasks.mrc.reader import MrcExample, best_answers, make_features, read_squad


def _write(tmp_path, qas, context="我爱北京天安门。"):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}, ensure_ascii=False),
                 encoding="utf-8")
    return p


def test_answer_start_disagreeing_is_moved_and_named(tmp_path, caplog):
    p = _write(tmp_path, [{"id": "Q1", "question": "哪里", "answers": [{"text": "北京", "answer_start": 0}]},
                          {"id": "Q2", "question": "哪", "answers": [{"text": "上海", "answer_start": 1}]}])
    with caplog.at_level(logging.WARNING, logger="nezha"):
        ex = read_squad(p, for_training=True)
    assert [e.qid for e in ex] == ["Q1"] and (ex[0].answer_start, ex[0].answer_end) == (2, 4)
    assert "Q1" in caplog.text and "Q2" in caplog.text  # moved; not in the context
    assert len(read_squad(p)) == 2  # evaluation keeps every question


def test_bad_squad_files(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("{nope", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_squad(p)
    p.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="SQuAD-style"):
        read_squad(p)
    p = _write(tmp_path, [{"id": "Q1", "question": "a", "answers": []}, {"id": "Q1", "question": "b", "answers": []}])
    with pytest.raises(ValueError, match="Q1"):
        read_squad(p)


def test_windows_targets_and_exact_spans_on_real_cmrc(shared_data):
    tok = NezhaTokenizer.from_file(shared_data / "vocab" / "vocab.txt", do_lower_case=False)
    examples = read_squad(shared_data / "cmrc2018" / "cmrc2018_dev.json", for_training=True)[:60]
    feats = make_features(tok, examples, max_seq_length=128, doc_stride=48, max_query_length=32, for_training=True)
    assert len(feats) > len(examples)  # long contexts give several windows
    for f in feats:
        assert len(f.input_ids) <= 128
    # oracle logits at the targets give back exactly the training answers (those short enough to fit)
    starts, ends = [], []
    for f in feats:
        s, e = np.full(len(f.input_ids), -5.0), np.full(len(f.input_ids), -5.0)
        if f.start_position:
            s[f.start_position] = e[f.end_position] = 5.0
        starts.append(s)
        ends.append(e)
    preds, nbest = best_answers(examples, feats, starts, ends, n_best=5, max_answer_length=30)
    hits = 0
    for ex in examples:
        gold = ex.context[ex.answer_start:ex.answer_end]
        top = nbest[ex.qid][0]
        assert preds[ex.qid] == ex.context[top["start"]:top["end"]]
        assert sum(n["probability"] for n in nbest[ex.qid]) == pytest.approx(1.0)
        hits += preds[ex.qid] == gold
    assert hits >= 55


def test_best_answer_mixed_text_keeps_original_characters(tiny_vocab):
    tok = NezhaTokenizer.from_file(tiny_vocab)
    context = "我在北京 Playing 123 中国"
    ex = [MrcExample("q", "北京", context)]
    feats = make_features(tok, ex, max_seq_length=14, doc_stride=2, max_query_length=4)
    assert len(feats) > 1
    # score the span "Playing 123" in every window that holds it
    starts, ends = [], []
    for f in feats:
        s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        for i, off in enumerate(f.offsets):
            if off and context[off[0]:off[1]].lower() == "play":
                s[i] = 10
            if off and context[off[0]:off[1]] == "3":
                e[i] = 10
        starts.append(s)
        ends.append(e)
    preds, _ = best_answers(ex, feats, starts, ends, n_best=3, max_answer_length=10)
    assert preds["q"] == "Playing 123"
