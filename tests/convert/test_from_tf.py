"""TF NEZHA checkpoint -> our folder, checked against the tensors TensorFlow wrote, a numpy forward pass of the
original TF model, and transformers 4.44.2 NezhaForPreTraining loaded from the converted folder."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nezha import NezhaForPreTraining
from nezha.cli import main
from nezha.convert.from_tf import TF_TO_NEZHA, convert_tf_checkpoint, map_tf_name, plan_conversion, skip_reason
from nezha.convert.tf_checkpoint import CheckpointError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf_nezha_tiny"
PREFIX = FIXTURE / "model.ckpt-7"
CONFIG = FIXTURE / "bert_config.json"
VOCAB = FIXTURE / "vocab.txt"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted")
    report = convert_tf_checkpoint(PREFIX, CONFIG, out, VOCAB)
    assert report.mapped == 45
    assert report.skipped == {"lamb slots": 90, "adam slots": 6, "global_step": 1, "fp16 loss scale": 3}
    return out


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected.npz") as f:
        return {k: f[k] for k in f.files}


def _inputs(vocab_size: int, B: int = 3, T: int = 13):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 6:] = 1
    return ids, mask, types


# ------------------------------------------------------------------------------------------------ tensors
def test_convert_reproduces_every_tensor(converted, expected):
    from safetensors.numpy import load_file

    ours = load_file(str(converted / "model.safetensors"))
    model_names = [n for n in expected if skip_reason(n) is None]
    assert len(model_names) == 45
    for name in model_names:
        key, transpose = map_tf_name(name)
        want = expected[name].T if transpose else expected[name]
        np.testing.assert_array_equal(ours[key], want, err_msg=name)
    assert len(ours) == len(model_names)  # nothing else (the tied decoder weight is not stored)
    assert (converted / "vocab.txt").read_bytes() == VOCAB.read_bytes()
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["hidden_act"] == "gelu_new"  # the original code's "gelu" is the tanh approximation
    assert cfg["max_relative_position"] == 5


def test_key_table_covers_every_model_parameter():
    from nezha.model.config import NezhaConfig

    cfg = NezhaConfig.from_json(CONFIG)
    keys = {k for k in NezhaForPreTraining(cfg).state_dict() if k != "cls.predictions.decoder.weight"}
    table = {ours.replace("{i}", str(i)) for _, ours, _ in TF_TO_NEZHA for i in range(cfg.num_hidden_layers)}
    assert keys == table


# ------------------------------------------------------------------------------------------------ outputs
def _layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu_tanh(x):  # NEZHA-TensorFlow modeling.py gelu
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def numpy_nezha(w: dict[str, np.ndarray], ids, mask, types, heads: int, K: int):
    """The original TF computation, written directly on the TF variables (kernels (in, out)), in float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/token_type_embeddings"][types]
    x = _layer_norm(x, w["bert/embeddings/LayerNorm/gamma"], w["bert/embeddings/LayerNorm/beta"])
    B, T, E = x.shape
    D = E // heads
    pos = np.arange(2 * K + 1)[:, None]
    inv = np.exp(np.arange(0, D, 2) * -(math.log(10000.0) / D))
    table = np.zeros((2 * K + 1, D))
    table[:, 0::2], table[:, 1::2] = np.sin(pos * inv), np.cos(pos * inv)
    idx = np.arange(T)
    r = table[np.clip(idx[None, :] - idx[:, None], -K, K) + K]  # (T, T, D)
    add_mask = (1.0 - mask[:, None, None, :]) * -10000.0
    n_layers = len({k.split("/")[2] for k in w if k.startswith("bert/encoder/")})
    for i in range(n_layers):
        p = f"bert/encoder/layer_{i}/"

        def dense(h, name, p=p):
            return h @ w[p + name + "/kernel"] + w[p + name + "/bias"]

        q, k, v = (dense(x, f"attention/self/{n}").reshape(B, T, heads, D).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        s = (q @ k.transpose(0, 1, 3, 2) + np.einsum("bhid,ijd->bhij", q, r)) / math.sqrt(D) + add_mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v + np.einsum("bhij,ijd->bhid", a, r)).transpose(0, 2, 1, 3).reshape(B, T, E)
        x = _layer_norm(dense(ctx, "attention/output/dense") + x, w[p + "attention/output/LayerNorm/gamma"],
                        w[p + "attention/output/LayerNorm/beta"])
        h = _gelu_tanh(dense(x, "intermediate/dense"))
        x = _layer_norm(dense(h, "output/dense") + x, w[p + "output/LayerNorm/gamma"], w[p + "output/LayerNorm/beta"])
    pooled = np.tanh(x[:, 0] @ w["bert/pooler/dense/kernel"] + w["bert/pooler/dense/bias"])
    t = _gelu_tanh(x @ w["cls/predictions/transform/dense/kernel"] + w["cls/predictions/transform/dense/bias"])
    t = _layer_norm(t, w["cls/predictions/transform/LayerNorm/gamma"], w["cls/predictions/transform/LayerNorm/beta"])
    mlm = t @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]
    nsp = pooled @ w["cls/seq_relationship/output_weights"].T + w["cls/seq_relationship/output_bias"]
    return x, mlm, nsp


def test_converted_model_computes_the_original_tf_model(converted, expected):
    cfg = json.loads(CONFIG.read_text())
    model = NezhaForPreTraining.from_pretrained(converted).eval()
    ids, mask, types = _inputs(cfg["vocab_size"])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    x, mlm, nsp = numpy_nezha(expected, ids.numpy(), mask.numpy(), types.numpy(),
                              cfg["num_attention_heads"], cfg["max_relative_position"])
    real = mask.bool().numpy()  # padded positions differ only by the mask constant (-1e4 in TF, finfo.min here)
    np.testing.assert_allclose(out.hidden_states[-1].numpy()[real], x[real], atol=1e-4)
    np.testing.assert_allclose(out.prediction_logits.numpy()[real], mlm[real], atol=1e-4)
    np.testing.assert_allclose(out.seq_relationship_logits.numpy(), nsp, atol=1e-4)


def test_converted_folder_loads_in_transformers_with_the_same_outputs(converted):
    pytest.importorskip("transformers", reason="transformers 4.44.2 (test dependency) provides the reference Nezha")
    from transformers.models.deprecated.nezha.modeling_nezha import NezhaForPreTraining as HFNezha

    ref = HFNezha.from_pretrained(converted).eval()
    ours = NezhaForPreTraining.from_pretrained(converted).eval()
    assert ours.loading_report.newly_initialized == []
    ids, mask, types = _inputs(ours.config.vocab_size)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        b = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    torch.testing.assert_close(a.prediction_logits, b.prediction_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.seq_relationship_logits, b.seq_relationship_logits, rtol=0, atol=1e-5)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input
def _config_with(tmp_path: Path, **changes) -> Path:
    cfg = json.loads(CONFIG.read_text())
    cfg.update(changes)
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_checkpoint_of_another_size_lists_every_mismatch(tmp_path):
    with pytest.raises(ValueError, match="does not fit the config") as e:
        convert_tf_checkpoint(PREFIX, _config_with(tmp_path, hidden_size=64), tmp_path / "out")
    msg = str(e.value)
    assert "shape of bert/embeddings/word_embeddings: checkpoint [57, 32] vs config [57, 64]" in msg
    assert "bert/encoder/layer_1/attention/self/query/kernel" in msg
    assert not (tmp_path / "out").exists()


def test_checkpoint_with_more_layers_than_the_config(tmp_path):
    with pytest.raises(ValueError, match="not in a 1-layer model: bert/encoder/layer_1/"):
        convert_tf_checkpoint(PREFIX, _config_with(tmp_path, num_hidden_layers=1), tmp_path / "out")


def test_config_with_more_layers_lists_missing_tensors(tmp_path):
    with pytest.raises(ValueError, match="missing from checkpoint: bert/encoder/layer_2/attention/self/query/kernel"):
        convert_tf_checkpoint(PREFIX, _config_with(tmp_path, num_hidden_layers=3), tmp_path / "out")


def test_bert_checkpoint_is_recognised(tmp_path):
    bert = Path(__file__).resolve().parents[1] / "fixtures" / "tf_bert_tiny"
    with pytest.raises(ValueError, match="position_embeddings.*BERT checkpoint, not NEZHA"):
        convert_tf_checkpoint(bert / "model.ckpt-100", CONFIG, tmp_path / "out")
    with pytest.raises(ValueError, match="BERT config, not NEZHA"):
        convert_tf_checkpoint(bert / "model.ckpt-100", bert / "bert_config.json", tmp_path / "out")


def test_unknown_tensor_is_listed():
    from nezha.model.config import NezhaConfig

    cfg = NezhaConfig.from_json(CONFIG)
    from nezha.convert.tf_checkpoint import TFCheckpoint

    shapes = TFCheckpoint(PREFIX).shapes()
    shapes["bert/encoder/layer_0/attention/self/query/weight_scale"] = (32,)
    shapes["output_weights"] = (3, 32)
    with pytest.raises(ValueError, match=r"2 problem\(s\)") as e:
        plan_conversion(shapes, cfg)
    assert "unmapped: bert/encoder/layer_0/attention/self/query/weight_scale [32]" in str(e.value)
    assert "unmapped: output_weights [3, 32]" in str(e.value)


def test_missing_data_shard_writes_nothing(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(FIXTURE / "model.ckpt-7.index", ckpt)
    with pytest.raises(CheckpointError, match="missing data shard"):
        convert_tf_checkpoint(ckpt / "model.ckpt-7", CONFIG, tmp_path / "out", VOCAB)
    assert not (tmp_path / "out").exists()


def test_corrupt_tensor_writes_nothing(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in FIXTURE.glob("model.ckpt-7.*"):
        shutil.copy(f, ckpt)
    data = ckpt / "model.ckpt-7.data-00000-of-00001"
    from nezha.convert.tf_checkpoint import TFCheckpoint

    entry = TFCheckpoint(ckpt / "model.ckpt-7").entries["cls/predictions/transform/dense/kernel"]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 40] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch.*transform/dense/kernel"):
        convert_tf_checkpoint(ckpt / "model.ckpt-7", CONFIG, tmp_path / "out", VOCAB)
    assert not (tmp_path / "out").exists()


def test_vocab_of_another_size_is_an_error(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="5 tokens but .* vocab_size 57"):
        convert_tf_checkpoint(PREFIX, CONFIG, tmp_path / "out", vocab)


def test_optimizer_state_names_are_skipped_and_model_names_are_not():
    for name in ["bert/encoder/layer_3/output/dense/kernel/adam_m", "cls/predictions/output_bias/lamb_v",
                 "global_step", "loss_scale", "good_steps", "bad_steps", "beta1_power",
                 "bert/pooler/dense/kernel/AdamWeightDecayOptimizer", "bert/pooler/dense/bias/Adam_1"]:
        assert skip_reason(name) is not None, name
    for name in ["bert/embeddings/word_embeddings", "cls/seq_relationship/output_weights",
                 "bert/encoder/layer_11/attention/output/LayerNorm/beta"]:
        assert skip_reason(name) is None, name
        assert map_tf_name(name) is not None, name
    assert map_tf_name("bert/encoder/layer_11/attention/self/key/kernel") == (
        "nezha.encoder.layer.11.attention.self.key.weight", True)
    assert map_tf_name("cls/seq_relationship/output_weights") == ("cls.seq_relationship.weight", False)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_convert_and_helpful_errors(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["convert", "--tf_checkpoint", str(PREFIX) + ".index", "--bert_config", str(CONFIG),
            "--vocab", str(VOCAB), "--output", str(out)]
    assert main(argv) == 0
    assert "converted 45 tensors" in capsys.readouterr().out
    assert NezhaForPreTraining.from_pretrained(out).config.num_hidden_layers == 2
    assert main(["convert", "--tf_checkpoint", str(FIXTURE), "--bert_config", str(CONFIG), "--output",
                 str(tmp_path / "x")]) == 2
    assert "pass the prefix, e.g." in capsys.readouterr().err
