"""Bad input to the task readers and to ``nezha finetune/evaluate/predict``: one clear error naming the file (and
line, or question id), exit status 2 from the command line, and nothing written to the output folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nezha.cli import main
from nezha.tasks.classification.reader import Columns, label_list, read_examples
from nezha.tasks.mrc.reader import read_squad
from nezha.tasks.ner.reader import read_sentences

TINY = ["--from_scratch", "--preset", "tiny", "--num_hidden_layers", "1", "--hidden_size", "32",
        "--max_seq_length", "32", "--train_batch_size", "8", "--max_steps", "1", "--device", "cpu"]


def _lcqmc_with_stray_tab(shared_data: Path, tmp_path: Path) -> Path:
    """Six real LCQMC rows (with header); row 4's second question gets a tab inside, as a careless export does."""
    lines = (shared_data / "lcqmc" / "dev.txt").read_text(encoding="utf-8").split("\n")[:7]
    a, b, label = lines[3].split("\t")
    lines[3] = f"{a}\t{b[:2]}\t{b[2:]}\t{label}"
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- readers
def test_lcqmc_row_with_stray_tab_is_an_error_not_a_new_label(shared_data, tmp_path):
    path = _lcqmc_with_stray_tab(shared_data, tmp_path)
    with pytest.raises(ValueError, match=r"train.txt:4: expected 3 tab-separated fields \(text_a, text_b, label\), "
                                         r"got 4"):
        read_examples(path, "lcqmc")


def test_skip_bad_rows_leaves_them_out_with_a_counted_warning(shared_data, tmp_path, caplog):
    path = _lcqmc_with_stray_tab(shared_data, tmp_path)
    with caplog.at_level(logging.WARNING, logger="nezha"):
        examples = read_examples(path, "lcqmc", skip_bad_rows=True)
    assert len(examples) == 5 and label_list(examples) == ["0", "1"]
    assert "train.txt: skipped 1 row(s)" in caplog.text and "lines 4" in caplog.text


@pytest.mark.parametrize(("fmt", "text", "columns", "message"), [
    ("lcqmc", "我爱北京\t北京好\t1\n天安门\t中华\t门\t0\n", None,
     r"d:2: expected 3 tab-separated fields \(text_a, text_b, label\), got 4"),
    ("chnsenticorp", "label\ttext_a\n1\t好\t坏\n", None,
     r"d:2: expected 2 tab-separated fields \(label, text_a\), got 3"),
    ("xnli", "text_a\ttext_b\tlabel\n他说\t她说\tneutral\n甲\tneutral\n", None, r"d:3: expected 3 .*got 2"),
    ("csv", "text_a,label\n好,很好,1\n", None, r"d:2: expected 2 comma-separated fields \(text_a, label\), got 3"),
    ("tsv", "x\t1\tfoo\ny\t0\n", Columns(text_a="2", label="1", header=False),
     r"d:2: expected 3 tab-separated fields \(as on line 1\), got 2"),
])
def test_classification_rows_with_the_wrong_number_of_fields_name_file_and_line(tmp_path, fmt, text, columns,
                                                                                 message):
    path = tmp_path / "d"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_examples(path, fmt, columns)


def test_ner_tsv_row_with_a_stray_tab_is_an_error(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text_a\tlabel\n我 爱\tO O\n北 京\tB-LOC I-LOC\tO\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.tsv:3: expected 2 tab-separated fields \(text_a, label\), got 3"):
        read_sentences(path)


def _readers():
    return {
        "d.tsv": lambda p: read_examples(p, "chnsenticorp"),
        "d.csv": lambda p: read_examples(p, "csv"),
        "d.jsonl": lambda p: read_examples(p, "jsonl"),
        "d.txt": lambda p: read_sentences(p),
        "n.tsv": lambda p: read_sentences(p),
        "n.jsonl": lambda p: read_sentences(p),
        "d.json": lambda p: read_squad(p),
    }


@pytest.mark.parametrize("name", list(_readers()))
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes("label\ttext_a\n1\t好\n".encode() + b"1\t\xb2\xbb\xba\xc3\n")  # GBK bytes on line 3
    with pytest.raises(ValueError, match=rf"{name}:3: not valid UTF-8 \(byte 0xb2\)"):
        _readers()[name](path)


@pytest.mark.parametrize("name", list(_readers()))
def test_empty_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{name}: (no examples|no sentences|empty file)"):
        _readers()[name](path)


@pytest.mark.parametrize(("name", "read"), [("d.jsonl", lambda p: read_examples(p, "jsonl")),
                                            ("n.jsonl", lambda p: read_sentences(p))])
def test_bad_json_line_names_file_and_line(tmp_path, name, read):
    path = tmp_path / name
    path.write_text('{"text_a": "好", "text": "好", "label": "1", "entities": []}\n{"text_a": "坏",\n',
                    encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{name}:2: not valid JSON"):
        read(path)


def _squad(tmp_path: Path, answer: dict) -> Path:
    qa = {"id": "TRAIN_7_QUERY_1", "question": "哪里", "answers": [answer]}
    path = tmp_path / "cmrc.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "我爱北京天安门。", "qas": [qa]}]}]},
                               ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(("answer", "message"), [
    ({"answer_start": 2}, "answer 0 has no 'text' string"),
    ({"text": "北京", "answer_start": "2"}, "answer 0 has answer_start '2', expected an integer"),
    ({"text": "北京"}, "answer 0 has no 'answer_start'"),
])
def test_mrc_answer_without_text_or_integer_start_names_file_and_question(tmp_path, answer, message):
    path = _squad(tmp_path, answer)
    with pytest.raises(ValueError, match=rf"cmrc.json: question TRAIN_7_QUERY_1: {message}"):
        read_squad(path, for_training=True)


def test_mrc_evaluation_needs_only_the_answer_text(tmp_path):
    (ex,) = read_squad(_squad(tmp_path, {"text": "北京"}))
    assert ex.answers == ["北京"]


# ---------------------------------------------------------------------------------------------------- commands
def _finetune(shared_data: Path, train: Path, out: Path, *extra: str) -> int:
    return main(["finetune", "--task", "classification", "--train_file", str(train), "--output_dir", str(out),
                 "--vocab_file", str(shared_data / "vocab" / "vocab.txt"), *TINY, *extra])


def test_finetune_on_a_bad_row_exits_2_naming_file_and_line_and_writes_nothing(shared_data, tmp_path, capsys):
    train = _lcqmc_with_stray_tab(shared_data, tmp_path)
    out = tmp_path / "out"
    assert _finetune(shared_data, train, out, "--data_format", "lcqmc") == 2
    assert "train.txt:4: expected 3 tab-separated fields" in capsys.readouterr().err
    assert not out.exists()
    assert _finetune(shared_data, train, out, "--data_format", "lcqmc", "--skip_bad_rows") == 0
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["train_examples"] == 5


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_finetune_checks_eval_labels_before_training(shared_data, tmp_path, capsys, task):
    if task == "classification":
        train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
        train.write_text("label\ttext_a\n0\t不好\n1\t很好\n", encoding="utf-8")
        dev.write_text("label\ttext_a\n1\t好\n2\t一般\n", encoding="utf-8")
        flags, where = ["--data_format", "chnsenticorp"], "dev.tsv:3: label '2'"
    else:
        train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
        train.write_text("北 B-LOC\n京 I-LOC\n好 O\n", encoding="utf-8")
        dev.write_text("小 B-PER\n明 I-PER\n", encoding="utf-8")
        flags, where = [], "dev.txt:1 word 0 ('小'): tag 'B-PER'"
    out = tmp_path / "out"
    rc = main(["finetune", "--task", task, "--train_file", str(train), "--eval_file", str(dev), *flags,
               "--output_dir", str(out), "--vocab_file", str(shared_data / "vocab" / "vocab.txt"), *TINY])
    assert rc == 2 and where in capsys.readouterr().err
    assert not out.exists()  # no model/, no metrics: the run stopped before training


@pytest.fixture(scope="module")
def senti_model(shared_data, tmp_path_factory) -> Path:
    """A fine-tuned ChnSentiCorp folder (one step of a tiny model: only the file handling is under test)."""
    root = tmp_path_factory.mktemp("senti")
    lines = (shared_data / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").split("\n")
    (root / "train.tsv").write_text("\n".join(lines[:9]) + "\n", encoding="utf-8")
    assert _finetune(shared_data, root / "train.tsv", root / "out", "--data_format", "chnsenticorp") == 0
    return root / "out" / "model"


def test_evaluate_unknown_label_exits_2_and_writes_nothing(senti_model, tmp_path, capsys):
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\ttext_a\n1\t好\npositive\t很好\n", encoding="utf-8")
    out = tmp_path / "ev"
    assert main(["evaluate", "--model_dir", str(senti_model), "--eval_file", str(dev), "--output_dir", str(out)]) == 2
    assert "dev.tsv:3: label 'positive' is not in the label list ['0', '1']" in capsys.readouterr().err
    assert not out.exists()


def test_predict_invalid_utf8_exits_2_naming_file_and_line(senti_model, tmp_path, capsys):
    data = tmp_path / "gbk.tsv"
    data.write_bytes(b"label\ttext_a\n" + "1\t不好\n".encode("gbk"))
    out = tmp_path / "pr"
    assert main(["predict", "--model_dir", str(senti_model), "--input_file", str(data), "--output_dir", str(out)]) == 2
    assert "gbk.tsv:2: not valid UTF-8" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_and_predict_settings_come_from_a_config_file_too(senti_model, tmp_path, capsys):
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\ttext_a\n1\t好\n0\t不好\n", encoding="utf-8")
    cfg = tmp_path / "eval.json"
    cfg.write_text(json.dumps({"model_dir": str(senti_model), "eval_file": str(dev), "device": "cpu"}))
    assert main(["evaluate", "--config", str(cfg), "--output_dir", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))["num_examples"] == 2
    assert main(["predict", "--model_dir", str(senti_model), "--output_dir", str(tmp_path / "pr")]) == 2
    assert "missing required setting(s) --input_file" in capsys.readouterr().err
