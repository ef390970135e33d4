"""Output objects index like transformers 4.44.2's ``ModelOutput``, so code ported from transformers runs unchanged.

The reference is transformers' real classes: for the same field values, ``keys()``, ``to_tuple()``, ``out[i]``,
``out[a:b]``, ``out["name"]``, ``in`` and ``len`` must agree.
"""

from __future__ import annotations

import pytest
import torch

import nezha
from nezha.model import modeling

tf_outputs = pytest.importorskip("transformers.modeling_outputs", reason="transformers 4.44.2 is the reference")


def _hf_pretraining_output():
    from transformers.models.deprecated.nezha.modeling_nezha import NezhaForPreTrainingOutput

    return NezhaForPreTrainingOutput


# ours, transformers' class, and the field names both share
PAIRS = {
    "base": (modeling.NezhaModelOutput, lambda: tf_outputs.BaseModelOutputWithPooling,
             ("last_hidden_state", "pooler_output", "hidden_states")),
    "masked_lm": (modeling.MaskedLMOutput, lambda: tf_outputs.MaskedLMOutput, ("loss", "logits", "hidden_states")),
    "sequence_classification": (modeling.SequenceClassifierOutput, lambda: tf_outputs.SequenceClassifierOutput,
                                ("loss", "logits", "hidden_states")),
    "token_classification": (modeling.TokenClassifierOutput, lambda: tf_outputs.TokenClassifierOutput,
                             ("loss", "logits", "hidden_states")),
    "question_answering": (modeling.QuestionAnsweringOutput, lambda: tf_outputs.QuestionAnsweringModelOutput,
                           ("loss", "start_logits", "end_logits", "hidden_states")),
    "pretraining": (modeling.NezhaForPreTrainingOutput, _hf_pretraining_output,
                    ("loss", "prediction_logits", "seq_relationship_logits", "hidden_states")),
}
REQUIRED = {"last_hidden_state", "logits", "start_logits", "end_logits", "prediction_logits",
            "seq_relationship_logits"}


def _values(names, with_optional):
    """Distinct tensors per field; optional fields are None unless ``with_optional``."""
    vals = {}
    for i, name in enumerate(names):
        if name in REQUIRED or with_optional:
            vals[name] = (torch.full((2,), float(i)),) * 2 if name == "hidden_states" else torch.full((2,), float(i))
        else:
            vals[name] = None
    return vals


def _same(a, b) -> bool:
    return a is b


@pytest.mark.parametrize("with_optional", [False, True], ids=["required_only", "all_fields"])
@pytest.mark.parametrize("kind", list(PAIRS))
def test_output_indexing_agrees_with_transformers(kind, with_optional):
    ours_cls, ref_cls, names = PAIRS[kind]
    vals = _values(names, with_optional)
    ours, ref = ours_cls(**vals), ref_cls()(**vals)
    assert list(ours.keys()) == list(ref.keys())
    assert len(ours.to_tuple()) == len(ref.to_tuple())
    assert all(map(_same, ours.to_tuple(), ref.to_tuple()))
    assert len(ours) == len(ref)
    assert list(ours) == list(ref)  # iterating yields keys, as for a dict
    for i in range(-len(ref), len(ref)):
        assert ours[i] is ref[i]
    assert all(map(_same, ours[:2], ref[:2]))
    for name in names:
        assert (name in ours) == (name in ref)
        assert getattr(ours, name) is getattr(ref, name)
        if name in ref:
            assert ours[name] is ref[name]
        else:
            with pytest.raises(KeyError):
                ours[name]
    assert list(dict(ours)) == list(dict(ref))
    with pytest.raises(IndexError):
        ours[len(ref)]


def test_pretraining_output_keeps_transformers_positions_before_its_extra_losses():
    ours_cls, ref_cls, names = PAIRS["pretraining"]
    vals = _values(names, with_optional=True)
    mlm, nsp = torch.zeros(()), torch.ones(())
    ours, ref = ours_cls(**vals, mlm_loss=mlm, nsp_loss=nsp), ref_cls()(**vals)
    assert all(map(_same, ours.to_tuple()[: len(ref)], ref.to_tuple()))
    assert ours.to_tuple()[len(ref):] == (mlm, nsp)


def _tiny(**kw):
    return nezha.NezhaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=37, max_relative_position=5, num_labels=3,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def test_model_output_ported_transformers_code_runs():
    torch.manual_seed(0)
    model = nezha.NezhaForSequenceClassification(_tiny()).eval()
    ids = torch.randint(1, 97, (2, 6))
    out = model(ids, labels=torch.tensor([0, 2]))
    loss, logits = out[:2]
    assert loss is out.loss and logits is out["logits"]
    assert out[0] is out.loss
    no_labels = model(ids)
    assert no_labels[0] is no_labels.logits and "loss" not in no_labels
    torch.testing.assert_close(no_labels[0], logits)


def test_model_output_indexing_survives_torch_compile():
    torch.manual_seed(0)
    model = nezha.NezhaForTokenClassification(_tiny()).eval()
    ids = torch.randint(1, 97, (2, 6))

    def first(x):
        return model(x)[0]

    compiled = torch.compile(first, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids), model(ids).logits, rtol=0, atol=0)
