"""ONNX export: onnxruntime outputs equal PyTorch's within 1e-4 at sequence lengths other than the example's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nezha import NezhaConfig, NezhaForSequenceClassification, NezhaForTokenClassification
from nezha.cli import main

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the onnx extra) is not installed")
pytest.importorskip("onnxscript", reason="onnxscript (the onnx extra, needed by torch.onnx.export) is not installed")

from nezha.convert.onnx_export import export_onnx  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf_nezha_tiny"


def tiny_model(cls, seed=0):
    cfg = NezhaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_relative_position=5, num_labels=3)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _run_both(model, session, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[-1, T // 2:] = 0
    types = (torch.rand(B, T, generator=g) > 0.5).long()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                   "token_type_ids": types.numpy()})[0]
    return got, ref


@pytest.mark.parametrize(
    "cls,task", [(NezhaForSequenceClassification, "sequence_classification"),
                 (NezhaForTokenClassification, "token_classification")],
)
def test_onnx_matches_pytorch_at_two_sequence_lengths(cls, task, tmp_path):
    model = tiny_model(cls)
    path = tmp_path / f"{task}.onnx"
    report = export_onnx(model, path, task)  # example inputs are 2 x 16
    assert path.is_file() and len(report.max_abs_diff) == 2
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # lengths below and above the example and the relative window (K = 5), other batch sizes
    for B, T, seed in [(1, 9, 1), (3, 70, 2)]:
        got, ref = _run_both(model, session, B, T, seed)
        assert got.shape == ref.shape == ((B, 3) if task == "sequence_classification" else (B, T, 3))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_export_attention_equals_the_eager_chunked_path(monkeypatch):
    from nezha.model import attention
    from nezha.model.positions import relative_position_table

    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 64)  # many small chunks on the eager side
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g) for _ in range(3))
    table = relative_position_table(6, 8)
    mask = torch.zeros(2, 1, 1, 50)
    mask[1, ..., 30:] = torch.finfo(torch.float32).min
    with torch.no_grad():
        eager = attention.relative_attention(q, k, v, table, mask, max_relative_position=6)
        exported = attention._whole_sequence(q, k, v, table, mask, 6)
    torch.testing.assert_close(exported, eager, rtol=0, atol=1e-5)


def test_wrong_model_for_task_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="needs a NezhaForTokenClassification"):
        export_onnx(tiny_model(NezhaForSequenceClassification), tmp_path / "x.onnx", "token_classification")
    with pytest.raises(ValueError, match="unknown task"):
        export_onnx(tiny_model(NezhaForSequenceClassification), tmp_path / "x.onnx", "summarization")


def test_cli_exports_a_converted_checkpoint(tmp_path, capsys):
    folder = tmp_path / "nezha-tiny"
    assert main(["convert", "--tf_checkpoint", str(FIXTURE / "model.ckpt-7"), "--bert_config",
                 str(FIXTURE / "bert_config.json"), "--vocab", str(FIXTURE / "vocab.txt"),
                 "--output", str(folder)]) == 0
    out = tmp_path / "base.onnx"
    assert main(["export-onnx", str(folder), "--task", "base", "--output", str(out)]) == 0
    assert "max |ORT - PyTorch|" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert session.get_inputs()[0].shape == ["batch", "sequence"]
