"""Model correctness: parity with transformers 4.44.2 Nezha for every head, long sequences, clear input errors
(the attention function itself is tested against the formula in test_attention.py)."""

from __future__ import annotations

import pytest
import torch

import nezha
from nezha.model.config import NezhaConfig

HEADS = {
    "base": nezha.NezhaModel,
    "pretraining": nezha.NezhaForPreTraining,
    "masked_lm": nezha.NezhaForMaskedLM,
    "sequence_classification": nezha.NezhaForSequenceClassification,
    "token_classification": nezha.NezhaForTokenClassification,
    "question_answering": nezha.NezhaForQuestionAnswering,
}


def tiny_config(**kw) -> NezhaConfig:
    base = dict(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_relative_position=5, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=3,
    )
    base.update(kw)
    return NezhaConfig(**base)


# ------------------------------------------------------------------------------------------------ transformers parity
hf = pytest.importorskip("transformers", reason="transformers 4.44.2 (test dependency) provides the reference Nezha")


def _hf_classes():
    from transformers.models.deprecated.nezha import modeling_nezha as m

    return {
        "base": m.NezhaModel,
        "pretraining": m.NezhaForPreTraining,
        "masked_lm": m.NezhaForMaskedLM,
        "sequence_classification": m.NezhaForSequenceClassification,
        "token_classification": m.NezhaForTokenClassification,
        "question_answering": m.NezhaForQuestionAnswering,
    }


def _hf_config(cfg: NezhaConfig):
    from transformers.models.deprecated.nezha.configuration_nezha import NezhaConfig as HFConfig

    d = cfg.to_dict()
    d["classifier_dropout"] = None
    return HFConfig(**{k: v for k, v in d.items() if k not in ("attention_backend", "model_type")})


def _inputs(cfg, B=3, T=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


def _labels(task, cfg, ids):
    B, T = ids.shape
    g = torch.Generator().manual_seed(1)
    if task == "pretraining":
        labels = torch.full_like(ids, -100)
        labels[:, 2] = ids[:, 2]
        labels[:, 3] = ids[:, 3]
        return {"labels": labels, "next_sentence_label": torch.tensor([0, 1, 0])[:B]}
    if task == "masked_lm":
        labels = torch.full_like(ids, -100)
        labels[:, 1] = ids[:, 1]
        return {"labels": labels}
    if task == "sequence_classification":
        return {"labels": torch.randint(0, cfg.num_labels, (B,), generator=g)}
    if task == "token_classification":
        return {"labels": torch.randint(0, cfg.num_labels, (B, T), generator=g)}
    if task == "question_answering":
        return {"start_positions": torch.tensor([1, 2, 3])[:B], "end_positions": torch.tensor([2, 5, 3])[:B]}
    return {}


def _outputs(task, out):
    """Comparable tensors from either library's output object."""
    names = {
        "base": ["last_hidden_state", "pooler_output"],
        "pretraining": ["prediction_logits", "seq_relationship_logits", "loss"],
        "masked_lm": ["logits", "loss"],
        "sequence_classification": ["logits", "loss"],
        "token_classification": ["logits", "loss"],
        "question_answering": ["start_logits", "end_logits", "loss"],
    }[task]
    return [getattr(out, n) for n in names]


@pytest.mark.parametrize("task", list(HEADS))
@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_parity_with_transformers(task, direction, tmp_path):
    cfg = tiny_config(num_labels=2 if task == "question_answering" else 3)
    torch.manual_seed(0)
    if direction == "hf_to_ours":
        ref = _hf_classes()[task](_hf_config(cfg)).eval()
        ref.save_pretrained(tmp_path)
        ours = HEADS[task].from_pretrained(tmp_path).eval()
        assert ours.loading_report.newly_initialized == []
    else:
        ours = HEADS[task](cfg).eval()
        with torch.no_grad():  # non-trivial LayerNorm and bias values
            for name, p in ours.named_parameters():
                if name.endswith("bias") or "LayerNorm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        ours.save_pretrained(tmp_path)
        ref = _hf_classes()[task].from_pretrained(tmp_path).eval()
    ids, mask, types = _inputs(cfg)
    kw = _labels(task, cfg, ids)
    out_ours = ours(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, **kw)
    out_ref = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, **kw)
    for a, b in zip(_outputs(task, out_ours), _outputs(task, out_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for a, b in zip(out_ours.hidden_states, out_ref.hidden_states):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # gradients of one backward pass, parameter by parameter
    loss_ours = out_ours.loss if task != "base" else out_ours.last_hidden_state.square().mean()
    loss_ref = out_ref.loss if task != "base" else out_ref.last_hidden_state.square().mean()
    loss_ours.backward()
    loss_ref.backward()
    ref_params = dict(ref.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        if p.grad is None:
            continue
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=0, atol=1e-5, msg=name)
        checked += 1
    assert checked > 10


def test_state_dict_keys_match_transformers():
    cfg = tiny_config()
    for task, cls in HEADS.items():
        ours = set(cls(cfg).state_dict())
        ref = set(_hf_classes()[task](_hf_config(cfg)).state_dict())
        # transformers also lists the tied decoder bias alias; everything else is identical
        assert ours - ref == set(), task
        assert ref - ours <= {"cls.predictions.decoder.bias"}, task


# ------------------------------------------------------------------------------------------------ long sequences
@pytest.mark.parametrize("T", [1024, 2048])
def test_long_sequences_forward_backward(T):
    cfg = tiny_config(max_position_embeddings=512, max_relative_position=64, hidden_size=64)
    model = nezha.NezhaForMaskedLM(cfg)
    ids = torch.randint(1, cfg.vocab_size, (1, T))
    labels = torch.where(torch.rand(1, T) < 0.15, ids, torch.full_like(ids, -100))
    out = model(ids, labels=labels)
    out.loss.backward()
    assert out.logits.shape == (1, T, cfg.vocab_size)
    assert torch.isfinite(model.nezha.embeddings.word_embeddings.weight.grad).all()


def test_padding_does_not_change_real_tokens():
    cfg = tiny_config()
    model = nezha.NezhaModel(cfg).eval()
    ids = torch.randint(1, cfg.vocab_size, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], 1).long()
    a = model(ids).last_hidden_state
    b = model(padded, attention_mask=mask).last_hidden_state[:, :6]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input
def test_input_ids_out_of_vocab_is_a_clear_error():
    model = nezha.NezhaModel(tiny_config())
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 2, 97]]))


def test_mask_of_wrong_shape_is_a_clear_error():
    model = nezha.NezhaModel(tiny_config())
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="token_type_ids"):
        model(torch.tensor([[1, 2, 3]]), token_type_ids=torch.tensor([[0, 1, 2]]))


def test_checkpoint_of_another_shape_lists_tensors(tmp_path):
    nezha.NezhaModel(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="shape of embeddings.word_embeddings.weight"):
        from nezha.model.pretrained import load_state_dict_strict, read_state_dict

        sd, _ = read_state_dict(tmp_path)
        load_state_dict_strict(nezha.NezhaModel(tiny_config(vocab_size=50)), sd, "ckpt")


def test_bert_checkpoint_is_recognised(tmp_path):
    from nezha.model.pretrained import load_state_dict_strict

    sd = nezha.NezhaModel(tiny_config()).state_dict()
    sd["embeddings.position_embeddings.weight"] = torch.zeros(64, 32)
    with pytest.raises(ValueError, match="BERT checkpoint"):
        load_state_dict_strict(nezha.NezhaModel(tiny_config()), sd, "ckpt")


def test_new_head_is_reported_not_an_error(tmp_path):
    nezha.NezhaForPreTraining(tiny_config()).save_pretrained(tmp_path)
    model = nezha.NezhaForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert model.loading_report.newly_initialized == ["classifier.bias", "classifier.weight"]
    assert any(k.startswith("cls.") for k in model.loading_report.unused)


def test_missing_backbone_tensor_is_an_error(tmp_path):
    from nezha.model.pretrained import load_state_dict_strict

    sd = nezha.NezhaModel(tiny_config()).state_dict()
    del sd["encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match="missing: encoder.layer.1.output.dense.weight"):
        load_state_dict_strict(nezha.NezhaModel(tiny_config()), sd, "ckpt")


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    nezha.NezhaModel(tiny_config()).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        nezha.NezhaModel.from_pretrained(tmp_path)


def test_save_load_round_trip_is_exact(tmp_path):
    model = nezha.NezhaForPreTraining(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    again = nezha.NezhaForPreTraining.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 97, (2, 8))
    torch.testing.assert_close(model(ids).prediction_logits, again(ids).prediction_logits, rtol=0, atol=0)
    assert again.cls.predictions.decoder.weight is again.nezha.embeddings.word_embeddings.weight


def test_pytorch_bin_loads_with_weights_only(tmp_path):
    model = nezha.NezhaModel(tiny_config())
    model.config.to_json(tmp_path / "config.json")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    again = nezha.NezhaModel.from_pretrained(tmp_path)
    torch.testing.assert_close(again.state_dict()["pooler.dense.weight"], model.state_dict()["pooler.dense.weight"])


def test_masked_positions_give_the_same_logits():
    cfg = tiny_config()
    model = nezha.NezhaForPreTraining(cfg).eval()
    ids = torch.randint(1, 97, (2, 8))
    pos = torch.tensor([[1, 3], [0, 7]])
    full = model(ids).prediction_logits
    sub = model(ids, masked_positions=pos).prediction_logits
    torch.testing.assert_close(sub, torch.stack([full[0, [1, 3]], full[1, [0, 7]]]))
