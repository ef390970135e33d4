"""NEZHA for PyTorch: functional relative attention, data preparation, pretraining, fine-tuning and conversion."""

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

__version__ = "0.1.0"

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
    "__version__",
]
