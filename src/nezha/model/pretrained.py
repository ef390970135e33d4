"""``from_pretrained`` folders: ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``).

Keys are those of transformers 4.x Nezha, so folders move both ways. Loading is strict where a mistake would give a
silently wrong model (missing backbone tensors, wrong shapes, a BERT checkpoint with absolute positions) and lenient
where fine-tuning expects it (a new task head is initialised and reported; another task's head is skipped and
reported).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nezha.io.atomic import atomic_write
from nezha.model.config import NezhaConfig

logger = logging.getLogger("nezha")

WEIGHTS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TIED_KEYS = ("cls.predictions.decoder.weight",)  # the MLM decoder shares the word-embedding matrix
# Buffers that some library versions saved; they are recomputed, never loaded.
_DERIVED_KEY_PARTS = ("relative_positions_encoding", "embeddings.token_type_ids", "position_ids")
# Parameters that belong to some task head; a checkpoint may have or lack them without being wrong.
_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "crf.", "nezha.pooler.", "pooler.")


@dataclass
class LoadReport:
    """What ``from_pretrained`` did besides loading matching tensors."""

    newly_initialized: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # "name (checkpoint shape) -> (model shape)", also in newly_*

    def __str__(self) -> str:
        parts = []
        if self.resized:
            parts.append(f"re-initialised at a new size: {', '.join(self.resized)}")
        if self.newly_initialized:
            parts.append(f"newly initialised (train them): {', '.join(self.newly_initialized)}")
        if self.unused:
            parts.append(f"not used by this model: {', '.join(self.unused)}")
        return "; ".join(parts) or "all tensors matched"


def read_state_dict(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Read ``model.safetensors`` (preferred) or ``pytorch_model.bin`` from a folder."""
    from safetensors.torch import load_file

    st, pt = directory / WEIGHTS_NAME, directory / TORCH_WEIGHTS_NAME
    if st.is_file():
        try:
            return load_file(str(st)), st
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
            raise ValueError(f"{st}: cannot read weights ({e}); the file is truncated or corrupt") from None
    if pt.is_file():
        try:
            sd = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{pt}: cannot read weights ({e}); the file is truncated or corrupt") from None
        if not isinstance(sd, dict):
            raise ValueError(f"{pt}: expected a state dict, got {type(sd).__name__}")
        return sd, pt
    raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME} or {TORCH_WEIGHTS_NAME} found")


def _normalize_keys(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Bridge the two layouts (bare encoder keys vs ``nezha.``-prefixed) and drop derived buffers and aliases."""
    is_base = not hasattr(model, "nezha")
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if any(part in key for part in _DERIVED_KEY_PARTS):
            continue
        if key.startswith("bert.") and "position_embeddings" not in key:
            key = "nezha." + key[len("bert."):]  # original-name checkpoints converted by other tools
        if is_base and key.startswith("nezha."):
            key = key[len("nezha."):]
        elif not is_base and key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = "nezha." + key
        if key == "cls.predictions.decoder.bias":
            out.setdefault("cls.predictions.bias", value)
            continue
        out[key] = value
    return out


def load_state_dict_strict(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, resizable: tuple[str, ...] = ()
) -> LoadReport:
    """Load ``sd`` into ``model``; raise one ValueError listing every real mismatch.

    Tensors under the ``resizable`` prefixes (a head whose label count the caller changed on purpose) keep the
    model's fresh initialisation when their shape differs, and are reported, instead of being an error.
    """
    bert_keys = [k for k in sd if "position_embeddings" in k]
    if bert_keys:
        raise ValueError(
            f"{source}: has absolute position embeddings ({bert_keys[0]}): this is a BERT checkpoint, "
            "not NEZHA (NEZHA uses relative positions only)"
        )
    sd = _normalize_keys(sd, model)
    expected = {k: v for k, v in model.state_dict().items() if k not in TIED_KEYS}
    for k in TIED_KEYS:
        sd.pop(k, None)
    report = LoadReport()
    errors = []
    missing = sorted(set(expected) - set(sd))
    for key in missing:
        if key.startswith(_HEAD_PREFIXES):
            report.newly_initialized.append(key)
        else:
            errors.append(f"missing: {key}")
    for key in sorted(set(sd) - set(expected)):
        if key.startswith(_HEAD_PREFIXES):
            report.unused.append(key)
        else:
            errors.append(f"unexpected: {key}")
    for key in sorted(set(sd) & set(expected)):
        got, want = tuple(sd[key].shape), tuple(expected[key].shape)
        if got == want:
            continue
        if key.startswith(resizable):
            report.resized.append(f"{key} {got} -> {want}")
            report.newly_initialized.append(key)
        else:
            errors.append(f"shape of {key}: checkpoint {got} vs model {want}")
    if errors:
        shown = "\n  ".join(errors[:30]) + (f"\n  ... and {len(errors) - 30} more" if len(errors) > 30 else "")
        raise ValueError(f"{source}: checkpoint does not fit the model config:\n  {shown}")
    usable = {k: v for k, v in sd.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    model.load_state_dict(usable, strict=False)
    if report.newly_initialized or report.unused:
        logger.info("%s: %s", source, report)
    return report


def _label_overrides(saved: NezhaConfig, overrides: dict, source: Path) -> dict:
    """Make ``num_labels``/``id2label`` overrides consistent: a new label count drops the folder's label names.

    ``NezhaConfig`` derives ``num_labels`` from ``id2label``, so without this the folder's names would silently win
    over an explicit ``num_labels`` (transformers' config does the same reset when ``num_labels`` is set).
    """
    num_labels, names = overrides.get("num_labels"), overrides.get("id2label")
    if num_labels is not None and names is not None and len(names) != num_labels:
        raise ValueError(f"{source}: from_pretrained got num_labels={num_labels} but id2label has {len(names)} labels")
    if num_labels is not None and names is None and num_labels != saved.num_labels:
        return {**overrides, "id2label": None}
    return overrides


def load_pretrained(cls, directory: Path, **config_overrides):
    """Build ``cls`` from a folder; a changed label count gets a new head of that size, with a warning."""
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder not found: {directory}")
    saved = NezhaConfig.from_json(directory / "config.json")
    config = dataclasses.replace(saved, **_label_overrides(saved, config_overrides, directory))
    sd, path = read_state_dict(directory)
    model = cls(config)
    relabelled = config.num_labels != saved.num_labels
    model.loading_report = load_state_dict_strict(model, sd, str(path), cls.head_prefixes if relabelled else ())
    if model.loading_report.resized:
        logger.warning(
            "%s: num_labels %d -> %d: the head is newly initialised at the new size (train it): %s",
            path, saved.num_labels, config.num_labels, ", ".join(model.loading_report.resized),
        )
    return model


def save_pretrained(model, directory, tokenizer_vocab=None) -> None:
    """Write ``config.json``, ``model.safetensors`` and optionally ``vocab.txt``; each file atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED_KEYS}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(sd, str(p), metadata={"format": "pt"}))
    model.config.to_json(directory / "config.json")
    if tokenizer_vocab is not None and Path(tokenizer_vocab).resolve() != (directory / "vocab.txt").resolve():
        atomic_write(directory / "vocab.txt", lambda p: shutil.copyfile(tokenizer_vocab, p))
