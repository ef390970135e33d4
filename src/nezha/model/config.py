"""Model configuration: one typed dataclass that reads and writes both NEZHA config dialects.

The original TensorFlow release ships a ``bert_config.json`` (with ``use_relative_position``); HuggingFace
folders ship a ``config.json`` full of library bookkeeping keys. Both load here; anything else is a typo and is
rejected by name, because a silently ignored ``num_hiden_layers`` trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nezha.io.text import read_utf8

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh", "silu", "swish")
ATTENTION_BACKENDS = ("auto", "eager", "triton")

# Keys that HuggingFace or the original release write but that mean nothing to an encoder; accepted and dropped.
_IGNORED_KEYS = frozenset(
    {
        # HuggingFace PretrainedConfig bookkeeping
        "architectures", "model_type", "torch_dtype", "transformers_version", "_name_or_path", "use_cache",
        "bos_token_id", "eos_token_id", "sep_token_id", "is_decoder", "add_cross_attention", "tie_word_embeddings",
        "output_attentions", "output_hidden_states", "return_dict", "gradient_checkpointing", "position_embedding_type",
        "chunk_size_feed_forward", "pruned_heads", "problem_type", "finetuning_task", "tokenizer_class",
        "return_dict_in_generate", "torchscript", "layer_norm_epsilon", "use_bfloat16", "tf_legacy_loss",
        "is_encoder_decoder", "tie_encoder_decoder", "cross_attention_hidden_size", "decoder_start_token_id",
        "task_specific_params", "prefix", "classifier_dropout_prob",
        # generation defaults that transformers serialises into every config.json
        "bad_words_ids", "begin_suppress_tokens", "diversity_penalty", "do_sample", "early_stopping",
        "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "forced_bos_token_id",
        "forced_eos_token_id", "length_penalty", "max_length", "min_length", "no_repeat_ngram_size",
        "num_beam_groups", "num_beams", "num_return_sequences", "output_scores", "remove_invalid_values",
        "repetition_penalty", "suppress_tokens", "temperature", "top_k", "top_p", "typical_p",
        # original Chinese BERT / NEZHA bert_config.json
        "directionality", "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
        "pooler_size_per_head", "pooler_type",
    }
)


@dataclass
class NezhaConfig:
    """Hyper-parameters of a NEZHA encoder; defaults are NEZHA-base."""

    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    # Kept for checkpoint compatibility only: NEZHA has no absolute positions, so this caps nothing.
    max_position_embeddings: int = 512
    max_relative_position: int = 64
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Fine-tuning heads
    classifier_dropout: float | None = None
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    # "auto": fused kernel on GPU when available, memory-lean eager path otherwise.
    attention_backend: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # task-specific settings (e.g. use_crf)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _field_types()[f.name])
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_relative_position", "type_vocab_size", "num_labels")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"config: {name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"config: hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"config: head size hidden_size/num_attention_heads must be even, got {self.head_dim}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config: hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"config: attention_backend {self.attention_backend!r} is not one of {ATTENTION_BACKENDS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"config: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if sorted(self.id2label) != list(range(len(self.id2label))):
                raise ValueError("config: id2label keys must be 0..n-1")
            self.num_labels = len(self.id2label)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def label2id(self) -> dict[str, int]:
        labels = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        return {v: k for k, v in labels.items()}

    # ------------------------------------------------------------------ (de)serialization
    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> NezhaConfig:
        """Build from either dialect; unknown keys raise a ValueError naming them and the source."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in raw.items():
            if key == "use_relative_position":
                if value is not True:
                    raise ValueError(
                        f"{source}: use_relative_position={value!r}: this is a BERT config, not NEZHA "
                        "(NEZHA needs relative positions)"
                    )
            elif key == "label2id":
                continue  # derived from id2label
            elif key == "layer_norm_epsilon":
                kwargs.setdefault("layer_norm_eps", value)
            elif key in known:
                kwargs[key] = value
            elif key not in _IGNORED_KEYS:
                unknown.append(key)
        if unknown:
            raise ValueError(f"{source}: unknown config key(s) {sorted(unknown)}; known keys: {sorted(known)}")
        if isinstance(kwargs.get("id2label"), dict):
            try:
                kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
            except ValueError as e:
                raise ValueError(f"{source}: id2label keys must be integers ({e})") from None
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> NezhaConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        text = read_utf8(path)
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> NezhaConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """HuggingFace-compatible dict (loads in transformers 4.x NezhaModel and in the original code)."""
        out = dataclasses.asdict(self)
        if not out["extra"]:
            out.pop("extra")
        if out["id2label"] is None:
            out.pop("id2label")
        else:
            out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
            out["label2id"] = self.label2id
        if out["classifier_dropout"] is None:
            out.pop("classifier_dropout")
        out["model_type"] = "nezha"
        out["use_relative_position"] = True
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        from nezha.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


PRESETS: dict[str, dict[str, Any]] = {
    "base": {},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
    # Small configurations for tests, demos and CPU experiments.
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(NezhaConfig)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Reject ill-typed values (``"12"`` for an int, ``True`` for a float) with the key's name."""
    if _matches(value, hint):
        return
    raise ValueError(f"config: {name} must be {_hint_name(hint)}, got {value!r} ({type(value).__name__})")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
