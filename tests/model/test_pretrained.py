"""``from_pretrained`` with another label count: a new head of the asked size, the encoder loaded, and a warning.

transformers 4.44.2 (``ignore_mismatched_sizes=True``) is the reference: ``num_labels`` wins over the folder's label
names and the mismatched head is initialised fresh with a warning that names it and both shapes.
"""

from __future__ import annotations

import logging

import pytest
import torch

import nezha
from nezha.model.pretrained import load_state_dict_strict, read_state_dict

CLASSES = [nezha.NezhaForSequenceClassification, nezha.NezhaForTokenClassification]


def _config(**kw) -> nezha.NezhaConfig:
    return nezha.NezhaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=37, max_relative_position=5, **kw)


def _saved(cls, tmp_path, **kw):
    torch.manual_seed(0)
    model = cls(_config(**kw))
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize("labels", [{"id2label": {0: "neg", 1: "pos"}}, {"num_labels": 2}], ids=["named", "counted"])
@pytest.mark.parametrize("cls", CLASSES)
def test_num_labels_override_builds_a_new_head_and_warns(cls, labels, tmp_path, caplog):
    old = _saved(cls, tmp_path, **labels)
    with caplog.at_level(logging.WARNING, logger="nezha"):
        model = cls.from_pretrained(tmp_path, num_labels=3)
    assert model.config.num_labels == 3 and model.num_labels == 3
    assert model.classifier.weight.shape == (3, 32) and model.classifier.bias.shape == (3,)
    assert torch.count_nonzero(model.classifier.bias) == 0  # freshly initialised, not copied
    assert model.config.id2label is None  # the folder's two names no longer describe the head
    for name, value in old.nezha.state_dict().items():
        torch.testing.assert_close(model.nezha.state_dict()[name], value, rtol=0, atol=0, msg=name)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "classifier.weight" in warning and "(2, 32)" in warning and "(3, 32)" in warning
    assert "num_labels 2 -> 3" in warning
    assert {"classifier.weight", "classifier.bias"} <= set(model.loading_report.newly_initialized)
    ids = torch.randint(1, 97, (2, 5))
    assert model(ids).logits.shape[-1] == 3


def test_id2label_override_of_another_length_resizes_the_head(tmp_path, caplog):
    _saved(nezha.NezhaForSequenceClassification, tmp_path, id2label={0: "neg", 1: "pos"})
    names = {0: "a", 1: "b", 2: "c"}
    with caplog.at_level(logging.WARNING, logger="nezha"):
        model = nezha.NezhaForSequenceClassification.from_pretrained(tmp_path, id2label=names)
    assert model.config.id2label == names and model.classifier.out_features == 3
    assert "classifier.weight" in caplog.text


def test_num_labels_and_id2label_that_disagree_are_an_error(tmp_path):
    _saved(nezha.NezhaForSequenceClassification, tmp_path, id2label={0: "neg", 1: "pos"})
    with pytest.raises(ValueError, match=r"num_labels=3 but id2label has 2 labels"):
        nezha.NezhaForSequenceClassification.from_pretrained(tmp_path, num_labels=3, id2label={0: "a", 1: "b"})


def test_same_label_count_loads_the_head_without_warning(tmp_path, caplog):
    old = _saved(nezha.NezhaForSequenceClassification, tmp_path, id2label={0: "neg", 1: "pos"})
    with caplog.at_level(logging.WARNING, logger="nezha"):
        model = nezha.NezhaForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    torch.testing.assert_close(model.classifier.weight, old.classifier.weight, rtol=0, atol=0)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_head_of_another_size_is_still_an_error_without_a_label_override(tmp_path):
    """Resuming a checkpoint must never re-initialise a head silently: only an explicit label change resizes."""
    _saved(nezha.NezhaForSequenceClassification, tmp_path, num_labels=2)
    sd, _ = read_state_dict(tmp_path)
    with pytest.raises(ValueError, match=r"shape of classifier.weight: checkpoint \(2, 32\) vs model \(3, 32\)"):
        load_state_dict_strict(nezha.NezhaForSequenceClassification(_config(num_labels=3)), sd, "ckpt")
