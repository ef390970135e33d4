"""End-to-end smoke test: CMRC-style reading comprehension, predictions.json + nbest, official metric."""

from __future__ import annotations

import json

from nezha.cli import main


def test_finetune_mrc_end_to_end(shared_data, tmp_path, capsys):
    data = json.loads((shared_data / "cmrc2018" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    train, test = tmp_path / "train.json", tmp_path / "test.json"
    train.write_text(json.dumps({"data": data["data"][:3]}, ensure_ascii=False), encoding="utf-8")
    test.write_text(json.dumps({"data": data["data"][3:5]}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["finetune", "--task", "mrc", "--train_file", str(train), "--eval_file", str(test),
                 "--vocab_file", str(shared_data / "vocab" / "vocab.txt"), "--do_lower_case", "False",
                 "--output_dir", str(out), "--from_scratch", "--preset", "tiny", "--num_hidden_layers", "1",
                 "--hidden_size", "32", "--max_seq_length", "96", "--doc_stride", "48", "--max_query_length", "24",
                 "--train_batch_size", "8", "--max_steps", "2", "--n_best_size", "5"]) == 0
    preds = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    nbest = json.loads((out / "nbest_predictions.json").read_text(encoding="utf-8"))
    contexts = {q["id"]: p["context"] for a in data["data"][3:5] for p in a["paragraphs"] for q in p["qas"]}
    assert set(preds) == set(contexts) == set(nbest)
    for qid, text in preds.items():
        top = nbest[qid][0]
        assert text == top["text"] == contexts[qid][top["start"]:top["end"]]  # an exact span of the context
    capsys.readouterr()
    assert main(["evaluate-cmrc", str(test), str(out / "predictions.json"), str(tmp_path / "cmrc.json")]) == 0
    official = json.loads((tmp_path / "cmrc.json").read_text(encoding="utf-8"))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["eval"]
    assert official["F1"] == f"{metrics['f1']:.3f}" and official["EM"] == f"{metrics['em']:.3f}"
    assert official["TOTAL"] == len(contexts) and official["SKIP"] == 0
