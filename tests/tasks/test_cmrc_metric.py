"""The CMRC 2018 metric against hand-computed values on the real dev set, and the tokenizer against NLTK."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from nezha.cli import main
from nezha.tasks.mrc.cmrc_metric import (
    english_word_tokenize,
    evaluate,
    evaluate_files,
    exact_match,
    f1_score,
    longest_common_run,
    mixed_segmentation,
    strip_punctuation,
)

REPO = Path(__file__).resolve().parents[2]

# id -> (prediction, EM, F1), each worked out by hand from the references in cmrc2018_dev.json.
CASES = {
    # exact; "-" is dropped inside the run, so "ω-force" is the one segment "ωforce"
    "DEV_0_QUERY_0": ("光荣和ω-force", 1, 1.0),
    # partial: vs 村雨城 LCS 3, P 3/5, R 1 -> 0.75; vs 任天堂游戏谜之村雨城 P 1, R 1/2 -> 2/3; max 0.75
    "DEV_0_QUERY_1": ("谜之村雨城", 0, 0.75),
    # 「」 removed for both scores, "&" is an English-tokenizer segment of its own
    "DEV_0_QUERY_2": ("战史演武&争霸演武", 1, 1.0),
    # punctuation differences do not matter for EM; F1 1 as well
    "DEV_1_QUERY_2": ("依照角色行当的身份性格情绪以及环境配合相应的锣鼓点", 1, 1.0),
    # wrong answer
    "DEV_1_QUERY_1": ("打击乐", 0, 0.0),
    # digits: "364.6" is one word; pred 全 长 364.6 公 里 vs 364.6 公 里: P 3/5 R 1 -> 0.75
    "DEV_2_QUERY_0": ("全长364.6公里", 0, 0.75),
    # English: reference words henry / a. / walsh; pred walsh: P 1, R 1/3 -> 0.5
    "DEV_32_QUERY_3": ("Walsh", 0, 0.5),
    # case and surrounding blanks ignored; matches the third reference "M-Touch"
    "DEV_64_QUERY_3": ("  m-touch ", 1, 1.0),
    # punctuation only: no segments at all -> F1 0, and "" matches no reference
    "DEV_75_QUERY_2": ("，。", 0, 0.0),
}


@pytest.fixture(scope="module")
def dev_path(shared_data) -> Path:
    return shared_data / "cmrc2018" / "cmrc2018_dev.json"


@pytest.fixture(scope="module")
def dev(dev_path) -> dict:
    return json.loads(dev_path.read_text(encoding="utf-8"))


def _refs(dev: dict, qid: str) -> list[str]:
    for article in dev["data"]:
        for para in article["paragraphs"]:
            for q in para["qas"]:
                if q["id"] == qid:
                    return [a["text"] for a in q["answers"]]
    raise KeyError(qid)


@pytest.mark.parametrize("qid", sorted(CASES))
def test_cmrc_scores_match_hand_computed_values(dev, qid):
    pred, em, f1 = CASES[qid]
    refs = _refs(dev, qid)
    assert exact_match(refs, pred) == em
    assert f1_score(refs, pred) == pytest.approx(f1)


def test_cmrc_evaluate_totals_count_missing_questions(dev_path, tmp_path):
    preds = {qid: p for qid, (p, _, _) in CASES.items()}
    preds["DEV_2_QUERY_2"] = 1903  # not a string: scored as "1903" vs 1903 年: P 1, R 1/2 -> 2/3
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    result = evaluate_files(dev_path, path)
    total = 3219  # every dev question, answered or not
    em_sum = sum(em for _, em, _ in CASES.values())
    f1_sum = sum(f1 for _, _, f1 in CASES.values()) + 2 / 3
    out = result.to_dict()
    assert list(out) == ["AVERAGE", "F1", "EM", "TOTAL", "SKIP", "FILE"]
    assert out["TOTAL"] == total and out["SKIP"] == total - len(preds)
    assert out["EM"] == f"{100 * em_sum / total:.3f}"
    assert out["F1"] == f"{100 * f1_sum / total:.3f}"
    assert out["AVERAGE"] == f"{(100 * em_sum / total + 100 * f1_sum / total) / 2:.3f}"
    assert out["FILE"] == str(path)


def test_cmrc_perfect_predictions_score_100(dev):
    preds = {}
    for article in dev["data"][:40]:
        for para in article["paragraphs"]:
            for q in para["qas"]:
                preds[q["id"]] = q["answers"][-1]["text"]
    sub = {"data": dev["data"][:40]}
    result = evaluate(sub, preds)
    assert (result.em, result.f1, result.skip) == (100.0, 100.0, 0)


def test_mixed_segmentation_splits_chinese_and_keeps_english_words():
    assert mixed_segmentation("NEZHA模型于2019年发布, by Huawei.") == \
        ["nezha", "模", "型", "于", "2019", "年", "发", "布", ",", "by", "huawei", "."]
    # listed punctuation is dropped without ending the run; the lone "…" is not in the list (only "……" is)
    assert mixed_segmentation("ω-force…好") == ["ωforce…", "好"]
    assert mixed_segmentation("《三体》", remove_punctuation=False) == ["《", "三", "体", "》"]
    assert strip_punctuation(" 《三体》… ") == "三体…"


def test_longest_common_run_is_contiguous():
    assert longest_common_run(list("abcde"), list("xbcdy")) == 3
    assert longest_common_run(list("abc"), list("cba")) == 1  # a bag-of-tokens overlap would say 3
    assert longest_common_run([], list("abc")) == 0


def test_english_word_tokenize_examples():
    assert english_word_tokenize('he said "can\'t stop" (1,000 $5.5)...') == \
        ["he", "said", "``", "ca", "n't", "stop", "''", "(", "1,000", "$", "5.5", ")", "..."]
    assert english_word_tokenize("the U.S. army.") == ["the", "U.S.", "army", "."]


def test_english_word_tokenize_matches_nltk(dev):
    nltk_tok = pytest.importorskip("nltk.tokenize").NLTKWordTokenizer()
    runs = set()
    for article in dev["data"][:300]:
        for para in article["paragraphs"]:
            runs.update(_runs(para["context"]))
            for q in para["qas"]:
                for a in q["answers"]:
                    runs.update(_runs(a["text"]))
    rng = random.Random(0)
    pieces = list("ab Z.,:;'\"`?!()[]<>{}-*@#$%&«»“”‘’„—…09\t") + ["can", "not", "gon", "na", "'s", "n't", "'t", "is"]
    runs.update("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(3000))
    diff = [r for r in runs if nltk_tok.tokenize(r) != english_word_tokenize(r)]
    assert not diff, diff[:5]


def _runs(text: str) -> list[str]:
    import re

    return [r for r in re.split(r"[\u4e00-\u9fa5]+", text.lower()) if r.strip()]


def test_cmrc_bad_prediction_files(dev_path, tmp_path):
    data = dev_path
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        evaluate_files(data, bad)
    bad.write_text('["a", "b"]', encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        evaluate_files(data, bad)
    bad.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        evaluate_files(data, bad)
    with pytest.raises(FileNotFoundError):
        evaluate_files(data, tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no questions"):
        evaluate({"data": []}, {})
    with pytest.raises(ValueError, match="Q1 has no reference"):
        evaluate({"data": [{"paragraphs": [{"qas": [{"id": "Q1", "answers": []}]}]}]}, {})


def test_cmrc_cli_and_script_write_the_official_json(dev_path, tmp_path, capsys):
    data = dev_path
    pred = tmp_path / "predictions.json"
    pred.write_text(json.dumps({"DEV_0_QUERY_0": "光荣和ω-force"}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "metric.json"
    assert main(["evaluate-cmrc", str(data), str(pred), str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["EM"] == "%.3f" % (100 / 3219) and printed["SKIP"] == 3218
    assert main(["evaluate-cmrc", str(data), str(tmp_path / "nope.json")]) == 2
    out2 = tmp_path / "metric2.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "cmrc2018_evaluate.py"), str(data), str(pred),
                           str(out2)], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == json.loads(out2.read_text(encoding="utf-8")) == printed
