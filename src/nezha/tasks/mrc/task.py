"""Extractive reading comprehension (SQuAD v1 / CMRC 2018): windows, best spans, official metric, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.io.atomic import atomic_write_text
from nezha.tasks.common import TaskSettings, eval_batches, mask, pad
from nezha.tasks.mrc.reader import MrcExample, MrcFeature, best_answers, make_features, read_squad


class MrcTask:
    """Start/end logits per token; the best span over all windows of a context."""

    name = "mrc"
    curve_keys = ()

    def __init__(self, s: TaskSettings, tokenizer: NezhaTokenizer, labels: list[str] | None = None):
        self.s, self.tok, self.labels = s, tokenizer, None

    def read(self, path: str, with_labels: bool = True, limit: int = 0, for_training: bool = False):
        ex = read_squad(path, for_training=for_training)
        return ex[:limit] if limit else ex

    def fit_labels(self, train) -> None:
        return None

    def check_labels(self, examples) -> None:
        """Answers are spans of the context: there is no label list to check against."""

    def features(self, examples, with_labels: bool = True, for_training: bool = False) -> list[MrcFeature]:
        return make_features(self.tok, examples, self.s.max_seq_length, self.s.doc_stride, self.s.max_query_length,
                             for_training=for_training)

    def collate(self, feats) -> dict[str, torch.Tensor]:
        rows = [f.input_ids for f in feats]
        return {"input_ids": pad(rows, self.tok.pad_id), "attention_mask": mask(rows),
                "token_type_ids": pad([f.token_type_ids for f in feats], 0),
                "start_positions": torch.tensor([f.start_position for f in feats]),
                "end_positions": torch.tensor([f.end_position for f in feats])}

    def model_class(self, config):
        from nezha.model.modeling import NezhaForQuestionAnswering

        return NezhaForQuestionAnswering

    @torch.no_grad()
    def answers(self, model, examples: list[MrcExample]):
        feats = self.features(examples)
        starts, ends = [], []
        for batch in eval_batches(feats, self.s.eval_batch_size, self.collate, model):
            batch.pop("start_positions")
            batch.pop("end_positions")
            out = model(**batch)
            starts.extend(out.start_logits.float().cpu().numpy())
            ends.extend(out.end_logits.float().cpu().numpy())
        return best_answers(examples, feats, starts, ends, self.s.n_best_size, self.s.max_answer_length)

    def evaluate(self, model, examples, out_dir: Path | None, train=None) -> dict:
        from nezha.tasks.mrc.cmrc_metric import evaluate as cmrc_evaluate

        preds, nbest = self.answers(model, examples)
        dataset = {"data": [{"paragraphs": [{"qas": [{"id": e.qid, "answers": e.answers}]} for e in examples]}]}
        result = cmrc_evaluate(dataset, preds)
        report = {k.lower(): v for k, v in result.to_dict().items() if k != "FILE"}
        report.update(em=result.em, f1=result.f1, average=result.average)
        if train is not None:
            # trivial baseline: the first characters of the context, as many as the median training answer
            lengths = sorted(len(e.context[e.answer_start:e.answer_end]) for e in train)
            n = lengths[len(lengths) // 2]
            base = cmrc_evaluate(dataset, {e.qid: e.context[:n] for e in examples})
            report["baseline_context_prefix"] = {"chars": n, "em": base.em, "f1": base.f1}
        if out_dir is not None:
            self.write_predictions(out_dir, preds, nbest)
        report["primary"] = result.f1
        return report

    def predict(self, model, examples, out_dir: Path) -> Path:
        preds, nbest = self.answers(model, examples)
        return self.write_predictions(out_dir, preds, nbest)

    def write_predictions(self, out_dir: Path, preds, nbest) -> Path:
        atomic_write_text(out_dir / "predictions.json", json.dumps(preds, ensure_ascii=False, indent=1) + "\n")
        atomic_write_text(out_dir / "nbest_predictions.json", json.dumps(nbest, ensure_ascii=False, indent=1) + "\n")
        return out_dir / "predictions.json"
