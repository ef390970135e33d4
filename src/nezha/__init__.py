"""NEZHA for PyTorch: functional relative attention, data preparation, pretraining, fine-tuning and conversion."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Imported on first use, so that `nezha prepare` and `nezha vocab` start without loading torch.
_LAZY = {
    "PRESETS": "nezha.model.config",
    "NezhaConfig": "nezha.model.config",
    "NezhaModel": "nezha.model.modeling",
    "NezhaPreTrainedModel": "nezha.model.modeling",
    "NezhaForPreTraining": "nezha.model.modeling",
    "NezhaForMaskedLM": "nezha.model.modeling",
    "NezhaForSequenceClassification": "nezha.model.modeling",
    "NezhaForTokenClassification": "nezha.model.modeling",
    "NezhaForQuestionAnswering": "nezha.model.modeling",
    "NezhaTokenizer": "nezha.data.tokenization",
    "pipeline": "nezha.inference",
}

__all__ = [
    "PRESETS",
    "NezhaConfig",
    "NezhaForMaskedLM",
    "NezhaForPreTraining",
    "NezhaForQuestionAnswering",
    "NezhaForSequenceClassification",
    "NezhaForTokenClassification",
    "NezhaModel",
    "NezhaPreTrainedModel",
    "NezhaTokenizer",
    "__version__",
    "pipeline",
]

if TYPE_CHECKING:
    from nezha.data.tokenization import NezhaTokenizer
    from nezha.inference import pipeline
    from nezha.model.config import PRESETS, NezhaConfig
    from nezha.model.modeling import (
        NezhaForMaskedLM,
        NezhaForPreTraining,
        NezhaForQuestionAnswering,
        NezhaForSequenceClassification,
        NezhaForTokenClassification,
        NezhaModel,
        NezhaPreTrainedModel,
    )


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nezha' has no attribute {name!r}")
