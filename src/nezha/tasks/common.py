"""What the three fine-tuning tasks share: their settings, reading a data file as text, padding and eval batches.

``TaskSettings`` is everything evaluation and prediction need besides the weights. ``nezha finetune``'s settings
extend it (:class:`nezha.train.finetune.FinetuneArgs`), and a fine-tuned folder stores it in
``config.json`` under ``extra["finetune"]``, so ``nezha evaluate``/``predict`` read data the way training did.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from nezha.io.text import read_utf8
from nezha.settings import arg, dataclass_from_settings

TASKS = ("classification", "ner", "mrc")


@dataclass
class TaskSettings:
    """How a task reads and windows its data; stored with the model (``config.extra["finetune"]``)."""

    task: Literal["classification", "ner", "mrc"] = arg("classification", "which task head and data to use")
    data_format: str = arg("auto", "classification: lcqmc|chnsenticorp|xnli|tsv|csv|jsonl; ner: bio|tsv|jsonl; "
                                   "mrc: squad; auto picks from the task and file name")
    max_seq_length: int = arg(128, "tokens per sequence (windows for long NER sentences and MRC contexts)")
    do_lower_case: bool = arg(True, "lower-case text before WordPiece (False for the original CMRC script)")
    doc_stride: int = arg(128, "mrc: tokens between window starts")
    max_query_length: int = arg(64, "mrc: question tokens kept")
    n_best_size: int = arg(20, "mrc: start/end candidates per window and answers in nbest_predictions.json")
    max_answer_length: int = arg(30, "mrc: longest answer in tokens")
    text_a_column: str = arg("text_a", "tsv/csv/jsonl: column (header name, or 0-based index without header)")
    text_b_column: str = arg("", "tsv/csv/jsonl: second-text column for sentence pairs")
    label_column: str = arg("label", "tsv/csv/jsonl: label column")
    header: bool = arg(True, "tsv/csv: the first line names the columns")
    skip_bad_rows: bool = arg(False, "classification: skip rows with the wrong number of fields (a counted "
                                     "warning) instead of stopping with an error")
    eval_batch_size: int = arg(64, "examples per forward pass when evaluating")

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.task!r}")
        for name in ("max_seq_length", "eval_batch_size", "doc_stride", "max_query_length", "n_best_size",
                     "max_answer_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def of(cls, settings: Any) -> TaskSettings:
        """The task settings part of a larger settings object (e.g. ``FinetuneArgs``)."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_stored(cls, stored: dict, source: str) -> TaskSettings:
        """Settings saved by ``nezha finetune`` (older folders lack newer keys, which keep their defaults)."""
        return dataclass_from_settings(cls, stored, source=source)


class Task(Protocol):
    """The interface the fine-tuning driver and ``evaluate``/``predict`` use; one class per task."""

    name: str
    curve_keys: tuple[str, ...]  # evaluation metrics plotted beside the training loss
    labels: list[str] | None

    def read(self, path: str, with_labels: bool = True, limit: int = 0, for_training: bool = False) -> list: ...
    def fit_labels(self, train: list) -> list[str] | None: ...
    def check_labels(self, examples: list) -> None: ...
    def features(self, examples: list, with_labels: bool = True, for_training: bool = False) -> list: ...
    def collate(self, feats: Sequence) -> dict[str, torch.Tensor]: ...
    def model_class(self, config) -> type: ...
    def evaluate(self, model, examples: list, out_dir: Path | None, train: list | None = None) -> dict: ...
    def predict(self, model, examples: list, out_dir: Path) -> Path: ...


# ---------------------------------------------------------------------------------------------------- files
def read_text(path: str | os.PathLike) -> str:
    """A data file's text (UTF-8, optional BOM); invalid UTF-8 is an error naming ``file:line``, not a bare
    ``UnicodeDecodeError`` without the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return read_utf8(path)


def text_lines(path: str | os.PathLike, newline: str | None = None) -> io.StringIO:
    """:func:`read_text` as a file object; ``newline`` as for ``open`` (``""`` for the csv module)."""
    return io.StringIO(read_text(path), newline=newline)


# ---------------------------------------------------------------------------------------------------- batches
def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad integer rows to the longest: ``(B, T)`` int64 (``.numpy()`` gives the same array, uncopied)."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def mask(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """1 over each row's own tokens, 0 over the padding: ``(B, T)`` int64."""
    lengths = np.array([len(r) for r in rows])
    return torch.from_numpy((np.arange(lengths.max()) < lengths[:, None]).astype(np.int64))


def eval_batches(feats: Sequence, size: int, collate: Callable[[Sequence], dict[str, torch.Tensor]],
                 model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Evaluation batches on the model's device, model in eval mode (callers run under ``torch.no_grad``)."""
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(feats), size):
        yield {k: v.to(device) for k, v in collate(feats[i:i + size]).items()}
