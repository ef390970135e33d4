"""Classification readers on the real files and on crafted bad input."""

from __future__ import annotations

import pytest

from nezha.data.tokenization import NezhaTokenizer
from nezha.tasks.classification.reader import (
    Columns,
    encode_examples,
    label_ids,
    label_list,
    read_examples,
    truncate_pair,
)


def test_read_chnsenticorp_lcqmc_xnli_real_files(shared_data):
    senti = read_examples(shared_data / "chnsenticorp" / "dev.tsv", "chnsenticorp")
    assert len(senti) == 1200 and senti[0].label == "1" and senti[0].text_b is None
    assert senti[0].guid.endswith("dev.tsv:2")  # line 1 is the header
    lcqmc = read_examples(shared_data / "lcqmc" / "dev.txt", "lcqmc")
    assert len(lcqmc) == 8802 and lcqmc[0].text_b == "初婚未育情况证明怎么开？" and label_list(lcqmc) == ["0", "1"]
    xnli = read_examples(shared_data / "xnli_zh" / "dev.tsv", "xnli")
    assert len(xnli) == 2490 and label_list(xnli) == ["contradiction", "entailment", "neutral"]


def test_read_lcqmc_without_header(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("我爱北京\t北京好\t1\n天安门\t中华\t0\n", encoding="utf-8")
    ex = read_examples(p, "lcqmc")
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("我爱北京", "北京好", "1"), ("天安门", "中华", "0")]


def test_read_generic_csv_jsonl_and_indices(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('review,stars\n"好,很好",5\n不好,1\n', encoding="utf-8")
    ex = read_examples(csv_path, "csv", Columns(text_a="review", label="stars"))
    assert ex[0].text_a == "好,很好" and ex[1].label == "1"
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"q": "一", "p": "二", "y": "yes"}\n\n{"q": "三", "p": "四", "y": "no"}\n', encoding="utf-8")
    ex = read_examples(jl, "jsonl", Columns(text_a="q", text_b="p", label="y"))
    assert [e.label for e in ex] == ["yes", "no"] and ex[1].guid.endswith(":3")
    tsv = tmp_path / "d.tsv"
    tsv.write_text("x\t1\tfoo\n", encoding="utf-8")
    ex = read_examples(tsv, "tsv", Columns(text_a="2", label="1", header=False))
    assert (ex[0].text_a, ex[0].label) == ("foo", "1")


def test_unknown_label_names_the_line(tmp_path):
    p = tmp_path / "dev.tsv"
    p.write_text("label\ttext_a\n1\t好\n2\t坏\n", encoding="utf-8")
    ex = read_examples(p, "chnsenticorp")
    with pytest.raises(ValueError, match=r"dev.tsv:3: label '2' is not in the label list \['0', '1'\]"):
        label_ids(ex, ["0", "1"])


def test_bad_rows_and_empty_files_are_errors(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("text_a\ttext_b\tlabel\n只有一列\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 3 tab-separated fields .* got 1"):
        read_examples(p, "lcqmc")
    p.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no examples"):
        read_examples(p, "lcqmc")
    p.write_text("label\ttext_a\n1\t \n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv:2: empty text"):
        read_examples(p, "chnsenticorp")
    j = tmp_path / "bad.jsonl"
    j.write_text('{"text_a": "好", "label": "1"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        read_examples(j, "jsonl")


def test_encode_pairs_truncates_longest_first(tiny_vocab):
    tok = NezhaTokenizer.from_file(tiny_vocab)
    assert truncate_pair(10, 3, 8) == (5, 3)
    ex = read_examples_from([("我爱北京天安门", "中华人民共和国")])
    (enc,) = encode_examples(tok, ex, max_seq_length=9)
    assert len(enc.input_ids) == 9 and enc.token_type_ids == [0] * 5 + [1] * 4
    assert enc.input_ids[0] == tok.cls_id and enc.input_ids[4] == tok.sep_id and enc.input_ids[-1] == tok.sep_id


def read_examples_from(pairs):
    from nezha.tasks.classification.reader import TextExample

    return [TextExample(f"x:{i}", a, b, "1") for i, (a, b) in enumerate(pairs)]
