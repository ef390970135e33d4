"""Token classification with BIO tags (optional CRF): reading, windows, evaluation, predictions in the input format."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.tasks.common import TaskSettings, eval_batches, mask, pad
from nezha.tasks.ner.reader import (
    NerWindow,
    TaggedSentence,
    check_tags,
    collect_predictions,
    detect_format,
    make_windows,
    read_sentences,
    tag_list,
    write_predictions,
)

logger = logging.getLogger("nezha")


class NerTask:
    """The first piece of each word carries its tag; long sentences become several windows."""

    name = "ner"
    curve_keys = ("f1",)

    def __init__(self, s: TaskSettings, tokenizer: NezhaTokenizer, labels: list[str] | None = None):
        self.s, self.tok, self.labels = s, tokenizer, labels

    def _format(self, path: str) -> str:
        return detect_format(path) if self.s.data_format == "auto" else self.s.data_format

    def read(self, path: str, with_labels: bool = True, limit: int = 0, for_training: bool = False):
        sents = read_sentences(path, self._format(path), with_tags=with_labels)
        return sents[:limit] if limit else sents

    def fit_labels(self, train: Sequence[TaggedSentence]) -> list[str]:
        self.labels = self.labels or tag_list(train)
        self.check_labels(train)
        return self.labels

    def check_labels(self, sentences: Sequence[TaggedSentence]) -> None:
        """An unknown tag is an error naming ``file:line`` and the word (before any training or output)."""
        check_tags(sentences, self.labels)

    def features(self, sentences, with_labels: bool = True, for_training: bool = False) -> list[NerWindow]:
        if with_labels:
            check_tags(sentences, self.labels)
        windows, empty = make_windows(self.tok, sentences, self.labels if with_labels else None,
                                      self.s.max_seq_length)
        if empty:
            logger.warning("%d words produce no WordPiece token (e.g. control characters); they are predicted O "
                           "and still counted in the metrics", empty)
        return windows

    def collate(self, windows: Sequence[NerWindow]) -> dict[str, torch.Tensor]:
        rows = [w.input_ids for w in windows]
        return {"input_ids": pad(rows, self.tok.pad_id), "attention_mask": mask(rows),
                "labels": pad([w.labels for w in windows], -100),
                "label_mask": pad([w.label_mask for w in windows], 0)}

    def model_class(self, config):
        from nezha.model.crf import token_classifier_class

        return token_classifier_class(config)

    @torch.no_grad()
    def run_model(self, model, windows) -> list[list[int]]:
        from nezha.model.crf import argmax_decode

        out = []
        for batch in eval_batches(windows, self.s.eval_batch_size, self.collate, model):
            label_mask = batch.pop("label_mask")
            batch.pop("labels")
            logits = model(**batch).logits
            out.extend(model.decode(logits, label_mask) if hasattr(model, "crf") else argmax_decode(logits, label_mask))
        return out

    def evaluate(self, model, sentences, out_dir: Path | None, train=None) -> dict:
        from nezha.tasks.ner.metrics import ner_report

        windows = self.features(sentences)
        pred = collect_predictions(sentences, windows, self.run_model(model, windows), self.labels)
        gold = [s.tags for s in sentences]
        report = ner_report(gold, pred)
        report["baseline_all_o"] = ner_report(gold, [["O"] * len(g) for g in gold])
        if out_dir is not None:
            self.write_predictions(out_dir, sentences, pred)
        report["primary"] = report["f1"]
        return report

    def predict(self, model, sentences, out_dir: Path) -> Path:
        windows = self.features(sentences, with_labels=False)
        pred = collect_predictions(sentences, windows, self.run_model(model, windows), self.labels)
        return self.write_predictions(out_dir, sentences, pred)

    def write_predictions(self, out_dir: Path, sentences, pred) -> Path:
        """Predicted tags in the input's own format (BIO lines, TSV rows or JSONL spans)."""
        source = sentences[0].guid.rsplit(":", 1)[0]
        fmt = self._format(source)
        path = out_dir / f"predictions.{ {'bio': 'txt', 'tsv': 'tsv', 'jsonl': 'jsonl'}[fmt] }"
        write_predictions(path, sentences, pred, fmt)
        return path
