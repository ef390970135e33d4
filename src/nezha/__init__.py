"""NEZHA for PyTorch: functional relative attention, data preparation, pretraining, fine-tuning and conversion."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Imported on first use, so that `nezha prepare` and `nezha vocab` start without loading torch.
_LAZY = {
    "PRESETS": "nezha.config",
    "NezhaConfig": "nezha.config",
    "NezhaModel": "nezha.modeling",
    "NezhaPreTrainedModel": "nezha.modeling",
    "NezhaForPreTraining": "nezha.modeling",
    "NezhaForMaskedLM": "nezha.modeling",
    "NezhaForSequenceClassification": "nezha.modeling",
    "NezhaForTokenClassification": "nezha.modeling",
    "NezhaForQuestionAnswering": "nezha.modeling",
    "NezhaTokenizer": "nezha.tokenization",
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
]

if TYPE_CHECKING:
    from nezha.config import PRESETS, NezhaConfig
    from nezha.modeling import (
        NezhaForMaskedLM,
        NezhaForPreTraining,
        NezhaForQuestionAnswering,
        NezhaForSequenceClassification,
        NezhaForTokenClassification,
        NezhaModel,
        NezhaPreTrainedModel,
    )
    from nezha.tokenization import NezhaTokenizer


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nezha' has no attribute {name!r}")
