"""Raw strings in, task answers out: classification, NER, reading comprehension and fill-mask.

Each pipeline turns inputs into model rows exactly as fine-tuning and ``nezha predict`` do (the same encoders,
windows and span recovery from ``nezha.tasks``), runs them in length-sorted batches, and returns JSON-ready dicts
in input order. Nothing is sampled and ties are broken by position, so the same inputs give the same answers.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.inference.runtime import pad_batch


class InputError(ValueError):
    """An input the pipeline cannot answer; ``index`` is its position in the request."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"input {index}: {reason}")
        self.index, self.reason = index, reason


def _text(item: Any, index: int, what: str = "text") -> str:
    if not isinstance(item, str):
        raise InputError(index, f"{what} must be a string, got {type(item).__name__}")
    if not item.strip():
        raise InputError(index, f"{what} is empty")
    return item


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


class Pipeline(abc.ABC):
    """Shared batching; subclasses encode inputs and decode outputs."""

    task = ""
    per_token = True  # outputs have a sequence axis (cut to each row's length)

    def __init__(self, runner, tokenizer: NezhaTokenizer, settings: dict, labels: list[str] | None,
                 batch_size: int):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.runner, self.tok, self.settings, self.labels = runner, tokenizer, settings, labels
        self.batch_size = batch_size

    def __call__(self, inputs):
        """One input gives one answer; a list gives a list of answers in the same order."""
        if self._is_single(inputs):
            return self.predict([inputs])[0]
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"expected one input or a list of inputs, got {type(inputs).__name__}")
        return self.predict(list(inputs))

    def _is_single(self, inputs) -> bool:
        return isinstance(inputs, str)

    def check(self, items: Sequence) -> list:
        """Validate every input (raising :class:`InputError` for the first bad one) before any model work."""
        return [self._check(item, i) for i, item in enumerate(items)]

    def _check(self, item, index: int):
        return _text(item, index)

    @abc.abstractmethod
    def predict(self, items: Sequence) -> list[dict]:
        """Answers for a list of inputs, in order."""

    def info(self) -> dict:
        """What a client needs to know: the task, its labels and the limits the model was set up with."""
        return {"task": self.task, "labels": self.labels, "backend": self.runner.name,
                "max_seq_length": self.settings.get("max_seq_length")}

    def _forward(self, rows: list[list[int]], types: list[list[int]] | None = None) -> list[dict[str, np.ndarray]]:
        """Outputs per row (per-token outputs cut to the row's length), from batches of similar lengths."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: list[dict[str, np.ndarray]] = [{} for _ in rows]
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            batch = pad_batch([rows[i] for i in idx], self.tok.pad_id, [types[i] for i in idx] if types else None)
            res = self.runner.run(batch)
            for b, i in enumerate(idx):
                n = len(rows[i])
                out[i] = {k: v[b, :n] if self.per_token else v[b] for k, v in res.items()}
        return out


class ClassificationPipeline(Pipeline):
    """A label with probabilities per text (or per ``(text_a, text_b)`` pair), as ``nezha predict`` labels it."""

    task = "classification"
    per_token = False

    def _check(self, item, index: int):
        from nezha.tasks.classification.reader import TextExample

        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise InputError(index, f"a sentence pair must have 2 texts, got {len(item)}")
            return TextExample(f"input {index}", _text(item[0], index, "text_a"), _text(item[1], index, "text_b"))
        return TextExample(f"input {index}", _text(item, index))

    def predict(self, items: Sequence) -> list[dict]:
        from nezha.tasks.classification.reader import encode_examples

        examples = self.check(items)
        if not examples:
            return []
        enc = encode_examples(self.tok, examples, self.settings["max_seq_length"])
        outs = self._forward([e.input_ids for e in enc], [e.token_type_ids for e in enc])
        results = []
        for o in outs:
            p = _softmax(o["logits"])
            best = int(np.argmax(p))
            results.append({"label": self.labels[best], "score": float(p[best]),
                            "probabilities": {lab: float(v) for lab, v in zip(self.labels, p)}})
        return results


class NerPipeline(Pipeline):
    """Entities as character spans of the input; long texts are cut into windows as in fine-tuning (nothing dropped)."""

    task = "ner"

    def __init__(self, *args, crf=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.crf = crf  # the CRF layer of a --use_crf model (Viterbi over the labelled positions), else argmax

    def predict(self, items: Sequence) -> list[dict]:
        from nezha.tasks.ner.reader import TaggedSentence, collect_predictions, make_windows, tags_to_spans

        texts = self.check(items)
        if not texts:
            return []
        # One word per character, as the JSONL reader makes them: spans index the original string.
        sentences = [TaggedSentence(f"input {i}", list(t), None, t) for i, t in enumerate(texts)]
        windows, _ = make_windows(self.tok, sentences, None, self.settings["max_seq_length"])
        outs = self._forward([w.input_ids for w in windows])
        predicted = [self._decode(o["logits"], np.asarray(w.label_mask, dtype=bool)) for o, w in zip(outs, windows)]
        tags = collect_predictions(sentences, windows, predicted, self.labels)
        results = []
        for text, t in zip(texts, tags):
            spans = tags_to_spans(t)
            results.append({"entities": [{"text": text[s["start"]:s["end"]], "label": s["label"],
                                          "start": s["start"], "end": s["end"]} for s in spans]})
        return results

    def _decode(self, logits: np.ndarray, label_mask: np.ndarray) -> list[int]:
        """Tag ids of the labelled positions of one window, ``logits`` ``(T, N)``."""
        if self.crf is None:
            return logits[label_mask].argmax(-1).tolist()
        emissions = torch.from_numpy(logits[label_mask][None])  # (1, L, N)
        return self.crf.decode(emissions, torch.ones(emissions.shape[:2], dtype=torch.bool))[0]


class MrcPipeline(Pipeline):
    """The best answer span in the context for each ``{"question", "context"}`` (contexts of any length)."""

    task = "mrc"

    def _is_single(self, inputs) -> bool:
        return isinstance(inputs, dict) or (isinstance(inputs, tuple) and len(inputs) == 2
                                            and all(isinstance(x, str) for x in inputs))

    def _check(self, item, index: int):
        from nezha.tasks.mrc.reader import MrcExample

        if isinstance(item, dict):
            missing = [k for k in ("question", "context") if k not in item]
            if missing:
                raise InputError(index, f"missing field(s) {missing}; expected {{'question': ..., 'context': ...}}")
            q, c = item["question"], item["context"]
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            q, c = item
        else:
            raise InputError(index, f"expected {{'question': ..., 'context': ...}}, got {type(item).__name__}")
        return MrcExample(str(index), _text(q, index, "question"), _text(c, index, "context"))

    def predict(self, items: Sequence) -> list[dict]:
        from nezha.tasks.mrc.reader import best_answers, make_features

        examples = self.check(items)
        if not examples:
            return []
        s = self.settings
        feats = make_features(self.tok, examples, s["max_seq_length"], s["doc_stride"], s["max_query_length"])
        outs = self._forward([f.input_ids for f in feats], [f.token_type_ids for f in feats])
        _, nbest = best_answers(examples, feats, [o["start_logits"] for o in outs], [o["end_logits"] for o in outs],
                                s["n_best_size"], s["max_answer_length"])
        return [{"text": b["text"], "start": b["start"], "end": b["end"], "score": b["probability"]}
                for b in (nbest[e.qid][0] for e in examples)]

    def info(self) -> dict:
        return {**super().info(), "doc_stride": self.settings["doc_stride"],
                "max_query_length": self.settings["max_query_length"]}


class FillMaskPipeline(Pipeline):
    """The ``top_k`` most likely tokens for each ``[MASK]`` in a text (a pretrained MLM model)."""

    task = "fill-mask"

    def __init__(self, *args, top_k: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        if top_k <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.top_k = top_k

    def _check(self, item, index: int):
        text = _text(item, index)
        if "[MASK]" not in text:
            raise InputError(index, "text has no [MASK] token to fill")
        return text

    def predict(self, items: Sequence) -> list[dict]:
        texts = self.check(items)
        if not texts:
            return []
        budget = self.settings["max_seq_length"] - 2
        rows, masks = [], []
        for i, enc in enumerate(self.tok.encode_batch(texts)):
            where = [k for k, t in enumerate(enc.ids) if t == self.tok.mask_id]
            if where[-1] >= budget:
                raise InputError(i, f"a [MASK] lies beyond the model's {budget} tokens")
            rows.append([self.tok.cls_id, *enc.ids[:budget], self.tok.sep_id])
            masks.append([(k + 1, enc.offsets[k]) for k in where])
        outs = self._forward(rows)
        results = []
        for o, ms in zip(outs, masks):
            found = []
            for pos, (start, end) in ms:
                p = _softmax(o["logits"][pos])
                top = np.argsort(-p, kind="stable")[: self.top_k]
                tokens = self.tok.convert_ids_to_tokens(top.tolist())
                found.append({"start": start, "end": end,
                              "candidates": [{"token": t, "score": float(p[k])} for t, k in zip(tokens, top)]})
            results.append({"masks": found})
        return results

    def info(self) -> dict:
        return {**super().info(), "top_k": self.top_k}


PIPELINES: dict[str, type[Pipeline]] = {"classification": ClassificationPipeline, "ner": NerPipeline,
                                        "mrc": MrcPipeline, "fill-mask": FillMaskPipeline}
