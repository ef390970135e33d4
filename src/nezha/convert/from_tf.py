"""Released TensorFlow NEZHA checkpoints -> ``from_pretrained`` folders, without TensorFlow.

One declarative key table (TF variable -> our state-dict key, and whether the kernel is transposed) plus one
strict function: every tensor of the checkpoint is either mapped, or a known optimizer/training state that is
skipped and reported; anything else, any missing model tensor and any shape that does not fit the config is an
error listing all of them, raised before a byte is written.

The original code's ``"hidden_act": "gelu"`` is the tanh approximation (NEZHA-TensorFlow ``modeling.py``
``gelu``), which our config calls ``gelu_new``; the converter writes that unless told otherwise, so converted
models compute what the released weights were trained with.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nezha.convert.tf_checkpoint import TFCheckpoint
from nezha.model.config import NezhaConfig

# (TF variable, our NezhaForPreTraining key, transpose). ``{i}`` is a layer index. TF dense kernels are stored
# (in, out); torch Linear weights are (out, in). ``cls/seq_relationship/output_weights`` is already (2, E).
TF_TO_NEZHA: tuple[tuple[str, str, bool], ...] = (
    ("bert/embeddings/word_embeddings", "nezha.embeddings.word_embeddings.weight", False),
    ("bert/embeddings/token_type_embeddings", "nezha.embeddings.token_type_embeddings.weight", False),
    ("bert/embeddings/LayerNorm/gamma", "nezha.embeddings.LayerNorm.weight", False),
    ("bert/embeddings/LayerNorm/beta", "nezha.embeddings.LayerNorm.bias", False),
    *(
        (f"bert/encoder/layer_{{i}}/attention/self/{p}/kernel", f"nezha.encoder.layer.{{i}}.attention.self.{p}.weight",
         True)
        for p in ("query", "key", "value")
    ),
    *(
        (f"bert/encoder/layer_{{i}}/attention/self/{p}/bias", f"nezha.encoder.layer.{{i}}.attention.self.{p}.bias",
         False)
        for p in ("query", "key", "value")
    ),
    ("bert/encoder/layer_{i}/attention/output/dense/kernel", "nezha.encoder.layer.{i}.attention.output.dense.weight",
     True),
    ("bert/encoder/layer_{i}/attention/output/dense/bias", "nezha.encoder.layer.{i}.attention.output.dense.bias",
     False),
    ("bert/encoder/layer_{i}/attention/output/LayerNorm/gamma",
     "nezha.encoder.layer.{i}.attention.output.LayerNorm.weight", False),
    ("bert/encoder/layer_{i}/attention/output/LayerNorm/beta",
     "nezha.encoder.layer.{i}.attention.output.LayerNorm.bias", False),
    ("bert/encoder/layer_{i}/intermediate/dense/kernel", "nezha.encoder.layer.{i}.intermediate.dense.weight", True),
    ("bert/encoder/layer_{i}/intermediate/dense/bias", "nezha.encoder.layer.{i}.intermediate.dense.bias", False),
    ("bert/encoder/layer_{i}/output/dense/kernel", "nezha.encoder.layer.{i}.output.dense.weight", True),
    ("bert/encoder/layer_{i}/output/dense/bias", "nezha.encoder.layer.{i}.output.dense.bias", False),
    ("bert/encoder/layer_{i}/output/LayerNorm/gamma", "nezha.encoder.layer.{i}.output.LayerNorm.weight", False),
    ("bert/encoder/layer_{i}/output/LayerNorm/beta", "nezha.encoder.layer.{i}.output.LayerNorm.bias", False),
    ("bert/pooler/dense/kernel", "nezha.pooler.dense.weight", True),
    ("bert/pooler/dense/bias", "nezha.pooler.dense.bias", False),
    ("cls/predictions/transform/dense/kernel", "cls.predictions.transform.dense.weight", True),
    ("cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias", False),
    ("cls/predictions/transform/LayerNorm/gamma", "cls.predictions.transform.LayerNorm.weight", False),
    ("cls/predictions/transform/LayerNorm/beta", "cls.predictions.transform.LayerNorm.bias", False),
    ("cls/predictions/output_bias", "cls.predictions.bias", False),
    ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", False),
    ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", False),
)

# Training state that released checkpoints carry besides the model (slots make them ~3x the model size).
SKIPPED_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("adam slots", re.compile(r"/(adam_m|adam_v)$")),
    ("lamb slots", re.compile(r"/(lamb_m|lamb_v)$")),
    ("optimizer state", re.compile(r"(^|/)(AdamWeightDecayOptimizer|LAMBOptimizer|LAMB|Adam|Momentum)(_\d+)?(/|$)")),
    ("optimizer state", re.compile(r"^(beta1_power|beta2_power)(_\d+)?$")),
    ("global_step", re.compile(r"^global_step$")),
    ("fp16 loss scale", re.compile(r"(^|/)(loss_scale|good_steps|bad_steps|current_loss_scale)$")),
)

_COMPILED = [(re.compile("^" + re.escape(tf).replace(r"\{i\}", r"(\d+)") + "$"), ours, t) for tf, ours, t in
             TF_TO_NEZHA]


def map_tf_name(name: str) -> tuple[str, bool] | None:
    """Our key for a TF variable name and whether to transpose it, or None when the table has no row for it."""
    for pattern, ours, transpose in _COMPILED:
        m = pattern.match(name)
        if m:
            return (ours.replace("{i}", m.group(1)) if m.groups() else ours), transpose
    return None


def skip_reason(name: str) -> str | None:
    """Why a TF variable is not part of the model (optimizer slot, step counter, loss scale), or None."""
    for reason, pattern in SKIPPED_PATTERNS:
        if pattern.search(name):
            return reason
    return None


@dataclass
class ConversionReport:
    """What a conversion did: how many tensors went where."""

    mapped: int = 0
    parameters: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    checkpoint: str = ""
    output: str = ""

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return (f"converted {self.mapped} tensors ({self.parameters:,} parameters) from {self.checkpoint} "
                f"to {self.output}; skipped: {skipped}")


def _expected_shapes(config: NezhaConfig) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of NezhaForPreTraining for ``config``, built on the meta device (no memory)."""
    from nezha.model.modeling import NezhaForPreTraining
    from nezha.model.pretrained import TIED_KEYS

    with torch.device("meta"):
        model = NezhaForPreTraining(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in TIED_KEYS}


def plan_conversion(
    names_shapes: dict[str, tuple[int, ...]], config: NezhaConfig, source: str = "checkpoint"
) -> tuple[dict[str, tuple[str, bool]], dict[str, int]]:
    """Decide every tensor's fate from names and shapes only. Returns ``(tf name -> (key, transpose), skipped)``.

    Raises one ValueError listing every unmapped TF tensor, missing model tensor and shape mismatch.
    """
    bert = sorted(n for n in names_shapes if "position_embeddings" in n)
    if bert:
        raise ValueError(
            f"{source}: has absolute position embeddings ({bert[0]}): this is a BERT checkpoint, not NEZHA "
            "(NEZHA uses relative positions only; convert it with a BERT converter)"
        )
    expected = _expected_shapes(config)
    plan: dict[str, tuple[str, bool]] = {}
    seen: set[str] = set()  # model keys some TF tensor claimed, fitting or not
    skipped: Counter[str] = Counter()
    errors: list[str] = []
    for name, shape in sorted(names_shapes.items()):
        reason = skip_reason(name)
        if reason:
            skipped[reason] += 1
            continue
        mapped = map_tf_name(name)
        if mapped is None:
            errors.append(f"unmapped: {name} {list(shape)}")
            continue
        key, transpose = mapped
        if key not in expected:
            errors.append(f"not in a {config.num_hidden_layers}-layer model: {name} {list(shape)}")
            continue
        seen.add(key)
        got = tuple(reversed(shape)) if transpose else tuple(shape)
        if got != expected[key]:
            want = tuple(reversed(expected[key])) if transpose else expected[key]
            errors.append(f"shape of {name}: checkpoint {list(shape)} vs config {list(want)}")
            continue
        plan[name] = (key, transpose)
    errors += [f"missing from checkpoint: {_tf_name_of(k)}" for k in sorted(expected) if k not in seen]
    if errors:
        shown = "\n  ".join(errors[:40]) + (f"\n  ... and {len(errors) - 40} more" if len(errors) > 40 else "")
        raise ValueError(f"{source} does not fit the config ({len(errors)} problem(s)):\n  {shown}")
    return plan, dict(skipped)


def _tf_name_of(key: str) -> str:
    """The TF variable a state-dict key comes from (for error messages)."""
    m = re.search(r"\.layer\.(\d+)\.", key)
    for tf, ours, _ in TF_TO_NEZHA:
        if m and ours.replace("{i}", m.group(1)) == key:
            return tf.replace("{i}", m.group(1))
        if ours == key:
            return tf
    return key


def read_bert_config(path: str | os.PathLike, hidden_act: str | None = None) -> NezhaConfig:
    """The release's ``bert_config.json``, with the original code's meaning of ``gelu`` (tanh approximation)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--bert_config: {path} not found")
    config = NezhaConfig.from_json(path)
    if hidden_act is None and config.hidden_act == "gelu":
        hidden_act = "gelu_new"
    return dataclasses.replace(config, hidden_act=hidden_act) if hidden_act else config


def convert_tf_checkpoint(
    tf_checkpoint: str | os.PathLike,
    bert_config: str | os.PathLike,
    output: str | os.PathLike,
    vocab: str | os.PathLike | None = None,
    *,
    hidden_act: str | None = None,
    verify: bool = True,
) -> ConversionReport:
    """Convert a TF NEZHA checkpoint to a folder that ``NezhaForPreTraining.from_pretrained`` loads.

    Everything is checked (names, shapes, shards, checksums, vocab size) before the folder is written; each
    output file is written atomically.
    """
    from nezha.data.tokenization import load_vocab
    from nezha.model.modeling import NezhaForPreTraining
    from nezha.model.pretrained import load_state_dict_strict

    config = read_bert_config(bert_config, hidden_act)
    if vocab is not None:
        vocab = Path(vocab)
        if not vocab.is_file():
            raise FileNotFoundError(f"--vocab: {vocab} not found")
        n = len(load_vocab(vocab))
        if n != config.vocab_size:
            raise ValueError(f"{vocab}: {n} tokens but {bert_config} says vocab_size {config.vocab_size}")
    ckpt = TFCheckpoint(tf_checkpoint)
    plan, skipped = plan_conversion(ckpt.shapes(), config, source=f"checkpoint {ckpt.prefix}")

    from tqdm import tqdm

    state: dict[str, torch.Tensor] = {}
    for name, (key, transpose) in tqdm(plan.items(), desc="reading tensors", unit="tensor", leave=False):
        arr = ckpt.read(name, verify=verify)
        if arr.dtype.kind != "f":
            raise ValueError(f"checkpoint {ckpt.prefix}: {name} has dtype {arr.dtype}, expected a float tensor")
        arr = np.ascontiguousarray(arr.T if transpose else arr, dtype=np.float32)
        state[key] = torch.from_numpy(arr)

    model = NezhaForPreTraining(config)
    load_state_dict_strict(model, state, f"checkpoint {ckpt.prefix}")
    model.save_pretrained(output, tokenizer_vocab=vocab)
    report = ConversionReport(
        mapped=len(state),
        parameters=sum(int(t.numel()) for t in state.values()),
        skipped=skipped,
        checkpoint=str(ckpt.prefix),
        output=str(output),
    )
    return report
