"""Sentence and sentence-pair classification from the [CLS] vector: reading, features, evaluation, predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.io.atomic import atomic_write_text
from nezha.tasks.classification.reader import (
    PRESET_COLUMNS,
    Columns,
    TextExample,
    encode_examples,
    label_ids,
    label_list,
    read_examples,
)
from nezha.tasks.common import TaskSettings, eval_batches, mask, pad


class ClassificationTask:
    """One label per example (``--data_format`` lcqmc/chnsenticorp/xnli or generic tsv/csv/jsonl columns)."""

    name = "classification"
    curve_keys = ("accuracy", "macro_f1")

    def __init__(self, s: TaskSettings, tokenizer: NezhaTokenizer, labels: list[str] | None = None):
        self.s, self.tok, self.labels = s, tokenizer, labels

    def _format(self, path: str) -> str:
        if self.s.data_format != "auto":
            return self.s.data_format
        p = path.lower()
        return "jsonl" if p.endswith((".jsonl", ".json")) else "csv" if p.endswith(".csv") else "tsv"

    def read(self, path: str, with_labels: bool = True, limit: int = 0, for_training: bool = False):
        fmt = self._format(path)
        cols = PRESET_COLUMNS.get(fmt) or Columns(self.s.text_a_column, self.s.text_b_column or None,
                                                  self.s.label_column or None, self.s.header)
        examples = read_examples(path, fmt, cols, with_labels=with_labels, skip_bad_rows=self.s.skip_bad_rows)
        return examples[:limit] if limit else examples

    def fit_labels(self, train: Sequence[TextExample]) -> list[str]:
        self.labels = self.labels or label_list(train)
        self.check_labels(train)
        return self.labels

    def check_labels(self, examples: Sequence[TextExample]) -> None:
        """A label outside the model's list is an error naming ``file:line`` (before any training or output)."""
        label_ids(examples, self.labels)

    def features(self, examples, with_labels: bool = True, for_training: bool = False) -> list[dict]:
        enc = encode_examples(self.tok, examples, self.s.max_seq_length)
        ids = label_ids(examples, self.labels) if with_labels else [0] * len(examples)
        return [{"input_ids": e.input_ids, "token_type_ids": e.token_type_ids, "label": y} for e, y in zip(enc, ids)]

    def collate(self, feats: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [f["input_ids"] for f in feats]
        return {"input_ids": pad(rows, self.tok.pad_id), "attention_mask": mask(rows),
                "token_type_ids": pad([f["token_type_ids"] for f in feats], 0),
                "labels": torch.tensor([f["label"] for f in feats])}

    def model_class(self, config):
        from nezha.model.modeling import NezhaForSequenceClassification

        return NezhaForSequenceClassification

    @torch.no_grad()
    def run_model(self, model, feats) -> list[int]:
        preds = []
        for batch in eval_batches(feats, self.s.eval_batch_size, self.collate, model):
            batch.pop("labels")
            preds.extend(model(**batch).logits.argmax(-1).tolist())
        return preds

    def evaluate(self, model, examples, out_dir: Path | None, train=None) -> dict:
        from nezha.tasks.classification.metrics import classification_report, majority_baseline, plot_confusion_matrix

        preds = self.run_model(model, self.features(examples))
        gold = label_ids(examples, self.labels)
        report = classification_report(gold, preds, self.labels)
        if train is not None:
            report["baseline_majority"] = majority_baseline(label_ids(train, self.labels), gold, self.labels)
        if out_dir is not None:
            plot_confusion_matrix(report["confusion_matrix"], self.labels, out_dir / "confusion_matrix.png")
            self.write_predictions(out_dir / "predictions.tsv", examples, preds)
        report["primary"] = report["accuracy"]
        return report

    def predict(self, model, examples, out_dir: Path) -> Path:
        preds = self.run_model(model, self.features(examples, with_labels=False))
        return self.write_predictions(out_dir / "predictions.tsv", examples, preds)

    def write_predictions(self, path: Path, examples, preds) -> Path:
        def clean(t):
            return (t or "").replace("\t", " ").replace("\n", " ")

        lines = ["guid\tprediction\tlabel\ttext_a\ttext_b"]
        lines += [f"{e.guid}\t{self.labels[p]}\t{e.label or ''}\t{clean(e.text_a)}\t{clean(e.text_b)}"
                  for e, p in zip(examples, preds)]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path
