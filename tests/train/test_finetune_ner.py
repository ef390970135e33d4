"""End-to-end smoke test: NER with a CRF on People's Daily sentences, predictions written in the input format."""

from __future__ import annotations

import json

from nezha.cli import main
from nezha.tasks.ner.reader import read_sentences

TINY = ["--from_scratch", "--preset", "tiny", "--num_hidden_layers", "1", "--hidden_size", "32",
        "--max_seq_length", "32", "--train_batch_size", "8", "--max_steps", "3", "--learning_rate", "1e-3"]


def test_finetune_ner_crf_end_to_end(shared_data, tmp_path):
    blocks = (shared_data / "people_daily_ner" / "example.dev").read_text(encoding="utf-8").split("\n\n")
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("\n\n".join(blocks[:16]) + "\n", encoding="utf-8")
    test.write_text("\n\n".join(blocks[16:24]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["finetune", "--task", "ner", "--use_crf", "--train_file", str(train), "--eval_file", str(test),
                 "--vocab_file", str(shared_data / "vocab" / "vocab.txt"), "--output_dir", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["eval"]
    gold = read_sentences(test)
    assert metrics["num_tokens"] == sum(len(s.words) for s in gold)  # long sentences are windowed, not cut
    assert {"entity", "token", "baseline_all_o"} <= set(metrics)
    pred = read_sentences(out / "predictions.txt")
    assert [s.words for s in pred] == [s.words for s in gold]
    config = json.loads((out / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["extra"]["use_crf"] is True and config["id2label"]["0"] == "O"
    assert main(["evaluate", "--model_dir", str(out / "model"), "--eval_file", str(test),
                 "--output_dir", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert again["entity"] == metrics["entity"]
