"""End-to-end smoke test: nezha finetune -> evaluate -> predict for classification (tiny model, a few steps)."""

from __future__ import annotations

import json

import pytest

from nezha.cli import main

TINY = ["--from_scratch", "--preset", "tiny", "--num_hidden_layers", "1", "--hidden_size", "32",
        "--max_seq_length", "32", "--train_batch_size", "8", "--eval_batch_size", "16", "--max_steps", "3",
        "--learning_rate", "1e-3", "--logging_steps", "1"]


def test_finetune_classification_end_to_end(shared_data, tmp_path, capsys):
    src = (shared_data / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").split("\n")
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("\n".join(src[:25]) + "\n", encoding="utf-8")
    dev.write_text("\n".join([src[0], *src[25:37]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["finetune", "--task", "classification", "--data_format", "chnsenticorp", "--train_file", str(train),
                 "--eval_file", str(dev), "--vocab_file", str(shared_data / "vocab" / "vocab.txt"),
                 "--output_dir", str(out), *TINY]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "accuracy" in printed and "baseline_majority" in printed
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["eval"]["num_examples"] == 12 and metrics["steps"] == 3
    assert sum(map(sum, metrics["eval"]["confusion_matrix"])) == 12
    for name in ("confusion_matrix.png", "training_curves.png", "predictions.tsv", "model/config.json",
                 "model/vocab.txt", "model/model.safetensors", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert len((out / "predictions.tsv").read_text(encoding="utf-8").splitlines()) == 13
    # the saved folder evaluates to the same numbers, and predicts on data
    assert main(["evaluate", "--model_dir", str(out / "model"), "--eval_file", str(dev),
                 "--output_dir", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert again["accuracy"] == pytest.approx(metrics["eval"]["accuracy"])
    assert main(["predict", "--model_dir", str(out / "model"), "--input_file", str(dev),
                 "--output_dir", str(tmp_path / "pr")]) == 0
    assert (tmp_path / "pr" / "predictions.tsv").is_file()


def test_finetune_rejects_unknown_eval_label(shared_data, tmp_path, capsys):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    train.write_text("label\ttext_a\n0\t不好\n1\t很好\n", encoding="utf-8")
    dev.write_text("label\ttext_a\n2\t一般\n", encoding="utf-8")
    rc = main(["finetune", "--task", "classification", "--data_format", "chnsenticorp", "--train_file", str(train),
               "--eval_file", str(dev), "--vocab_file", str(shared_data / "vocab" / "vocab.txt"),
               "--output_dir", str(tmp_path / "o"), *TINY])
    assert rc == 2
    assert "dev.tsv:2: label '2' is not in the label list" in capsys.readouterr().err
