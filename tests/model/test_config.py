"""NezhaConfig: both config dialects, presets, and clear errors for typos and wrong types."""

from __future__ import annotations

import json

import pytest

from nezha.model.config import NezhaConfig

ORIGINAL_BASE = {  # bert_config.json of the released NEZHA-base
    "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 512,
    "max_relative_position": 64, "num_attention_heads": 12, "num_hidden_layers": 12, "type_vocab_size": 2,
    "vocab_size": 21128, "use_relative_position": True, "directionality": "bidi",
    "pooler_type": "first_token_transform",
}


def test_reads_original_bert_config(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(ORIGINAL_BASE))
    cfg = NezhaConfig.from_json(path)
    assert cfg == NezhaConfig.preset("base")


def test_reads_transformers_config_json():
    pytest.importorskip("transformers")
    from transformers.models.deprecated.nezha.configuration_nezha import NezhaConfig as HFConfig

    raw = HFConfig(num_hidden_layers=3, id2label={0: "neg", 1: "pos"}).to_dict()
    cfg = NezhaConfig.from_dict(raw)
    assert cfg.num_hidden_layers == 3 and cfg.id2label == {0: "neg", 1: "pos"} and cfg.num_labels == 2


def test_round_trip_through_json(tmp_path):
    cfg = NezhaConfig.preset("large", id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    cfg.to_json(tmp_path / "config.json")
    assert NezhaConfig.from_json(tmp_path) == cfg


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="num_hiden_layers"):
        NezhaConfig.from_dict({"num_hiden_layers": 3})


@pytest.mark.parametrize("key,value", [("hidden_size", "768"), ("num_hidden_layers", 2.5),
                                       ("hidden_dropout_prob", True), ("hidden_act", 3)])
def test_ill_typed_value_is_named(key, value):
    with pytest.raises(ValueError, match=key):
        NezhaConfig.from_dict({key: value})


def test_invariants_are_checked():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        NezhaConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="hidden_act"):
        NezhaConfig(hidden_act="gelu2")
    with pytest.raises(ValueError, match="unknown preset"):
        NezhaConfig.preset("huge")


def test_plain_bert_config_is_rejected():
    with pytest.raises(ValueError, match="relative positions"):
        NezhaConfig.from_dict({**ORIGINAL_BASE, "use_relative_position": False})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        NezhaConfig.from_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        NezhaConfig.from_json(bad)


def test_config_json_with_invalid_utf8_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"hidden_size": 768, "name": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"config\.json:1: not valid UTF-8"):
        NezhaConfig.from_json(path)
