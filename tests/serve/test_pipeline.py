"""nezha.inference.pipeline against `nezha predict` on the same inputs (real data, tiny models), and fill-mask
against transformers' FillMaskPipeline over the same weights."""

from __future__ import annotations

import json
import re

import pytest

from nezha.cli import main
from nezha.inference import InputError, pipeline


def _read_lines(path, n, start=1):
    return [line for line in path.read_text(encoding="utf-8").split("\n")[start:] if line.strip()][:n]


def test_classification_equals_nezha_predict(models, shared_data, tmp_path):
    rows = _read_lines(shared_data / "chnsenticorp/dev.tsv", 24)
    data = tmp_path / "in.tsv"
    data.write_text("label\ttext_a\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert main(["predict", "--model_dir", str(models["classification"]), "--input_file", str(data),
                 "--output_dir", str(tmp_path / "out"), "--device", "cpu"]) == 0
    expected = [line.split("\t")[1] for line in _read_lines(tmp_path / "out/predictions.tsv", 100)]
    texts = [r.split("\t", 1)[1] for r in rows]
    got = pipeline(models["classification"], device="cpu", batch_size=5)(texts)
    assert [g["label"] for g in got] == expected
    for g in got:
        assert g["probabilities"][g["label"]] == g["score"] == max(g["probabilities"].values())
        assert sum(g["probabilities"].values()) == pytest.approx(1.0)


def test_ner_equals_nezha_predict_on_long_texts(models, shared_data, tmp_path):
    """Sentences far beyond the 32-token window (several windows each) keep every character."""
    sents = shared_data.joinpath("people_daily_ner/example.dev").read_text(encoding="utf-8").split("\n\n")[:40]
    texts = ["".join(line.split()[0] for line in s.split("\n") if line.strip()) for s in sents]
    texts = [t for t in texts if t][:12] + ["".join(texts[:6]), "张三 和 李四\t在北京。"]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert main(["predict", "--model_dir", str(models["ner"]), "--input_file", str(data), "--output_dir",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    expected = [json.loads(line)["entities"] for line in _read_lines(tmp_path / "out/predictions.jsonl", 100, 0)]
    ner = pipeline(models["ner"], device="cpu", batch_size=7)
    got = ner(texts)
    assert max(len(t) for t in texts) > 200
    assert [[{k: e[k] for k in ("start", "end", "label")} for e in g["entities"]] for g in got] == expected
    for t, g in zip(texts, got):
        for e in g["entities"]:
            assert t[e["start"]:e["end"]] == e["text"]
    assert ner(texts[0]) == got[0]  # one string gives one answer, the same as in a list


def test_mrc_equals_nezha_predict_on_long_contexts(models, shared_data, tmp_path):
    dev = json.loads((shared_data / "cmrc2018/cmrc2018_dev.json").read_text(encoding="utf-8"))
    paras = [p for a in dev["data"][:4] for p in a["paragraphs"]]
    squad = {"data": [{"paragraphs": [{"context": p["context"], "qas": [
        {"id": q["id"], "question": q["question"], "answers": []} for q in p["qas"][:3]]} for p in paras]}]}
    data = tmp_path / "in.json"
    data.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    assert main(["predict", "--model_dir", str(models["mrc"]), "--input_file", str(data), "--output_dir",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    nbest = json.loads((tmp_path / "out/nbest_predictions.json").read_text(encoding="utf-8"))
    pairs = [(q["id"], {"question": q["question"], "context": p["context"]})
             for p in squad["data"][0]["paragraphs"] for q in p["qas"]]
    got = pipeline(models["mrc"], device="cpu")([x for _, x in pairs])
    assert max(len(x["context"]) for _, x in pairs) > 300  # many 64-token windows per context
    for (qid, x), g in zip(pairs, got):
        best = nbest[qid][0]
        assert (g["text"], g["start"], g["end"]) == (best["text"], best["start"], best["end"])
        assert g["score"] == pytest.approx(best["probability"], abs=1e-5)
        assert x["context"][g["start"]:g["end"]] == g["text"]


def test_fill_mask_equals_transformers(models, chinese_vocab):
    pytest.importorskip("transformers", reason="transformers 4.44.2 (test dependency) provides the reference")
    from transformers import BertTokenizerFast, FillMaskPipeline
    from transformers.models.deprecated.nezha.modeling_nezha import NezhaForMaskedLM

    texts = ["今天天气很[MASK]。", "北京是中国的[MASK]都。"]
    ref = FillMaskPipeline(model=NezhaForMaskedLM.from_pretrained(models["fill-mask"]).eval(),
                           tokenizer=BertTokenizerFast(str(chinese_vocab)), top_k=4)
    got = pipeline(models["fill-mask"], device="cpu", top_k=4)(texts)
    for text, g in zip(texts, got):
        expected = ref(text)
        (m,) = g["masks"]
        assert text[m["start"]:m["end"]] == "[MASK]"
        assert [c["token"] for c in m["candidates"]] == [e["token_str"].replace(" ", "") for e in expected]
        assert [c["score"] for c in m["candidates"]] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_fill_mask_every_mask(models):
    (got,) = pipeline(models["fill-mask"], device="cpu", top_k=2)(["[MASK]天[MASK]气"])
    assert [(m["start"], m["end"]) for m in got["masks"]] == [(0, 6), (7, 13)]
    assert all(len(m["candidates"]) == 2 for m in got["masks"])


def test_pipeline_is_deterministic_and_batch_independent(models):
    clf = pipeline(models["classification"], device="cpu", batch_size=3)
    texts = ["这家酒店很干净", "服务太差了，再也不来", "一般", "房间很大，早餐丰富，交通方便"] * 2
    first = clf(texts)
    assert clf(texts) == first
    alone = [clf(t) for t in texts]
    assert [a["label"] for a in alone] == [f["label"] for f in first]
    for a, f in zip(alone, first):
        assert a["score"] == pytest.approx(f["score"], abs=1e-5)


@pytest.mark.parametrize(("task", "bad", "message"), [
    ("classification", "", "input 0: text is empty"),
    ("classification", 3, "input 0: text must be a string, got int"),
    ("ner", "   ", "input 0: text is empty"),
    ("mrc", {"context": "北京"}, "input 0: missing field(s) ['question']"),
    ("mrc", {"question": "", "context": "北京"}, "input 0: question is empty"),
    ("fill-mask", "没有遮盖", "input 0: text has no [MASK] token to fill"),
])
def test_bad_input_is_named(models, task, bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        pipeline(models[task], device="cpu")([bad])


def test_onnx_backend_matches_torch(models, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra provides ONNX Runtime")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    onnx = tmp_path / "clf.onnx"
    assert main(["export-onnx", str(models["classification"]), "--task", "sequence_classification",
                 "--output", str(onnx)]) == 0
    texts = ["这家酒店很干净", "服务太差了，再也不来", "房间很大，早餐丰富，交通方便。" * 5]
    ref = pipeline(models["classification"], device="cpu")(texts)
    for int8, tol in ((False, 1e-4), (True, 0.05)):
        got = pipeline(models["classification"], backend="onnx", onnx_file=onnx, int8=int8)(texts)
        for g, r in zip(got, ref):
            assert g["probabilities"] == pytest.approx(r["probabilities"], abs=tol)
    with pytest.raises(FileNotFoundError, match="nezha export-onnx"):
        pipeline(models["classification"], backend="onnx")
