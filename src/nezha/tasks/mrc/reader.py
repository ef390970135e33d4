"""Extractive reading comprehension (SQuAD v1 JSON, CMRC 2018): sliding windows and answer-span recovery.

A context longer than the window is cut into overlapping windows (``doc_stride`` tokens apart); each window is
``[CLS] question [SEP] context-window [SEP]``. Every context token keeps its character span in the original context,
so a predicted token span maps back to an exact substring of the context (mixed Chinese, English and digits keep
their original case and spacing). Among the windows sharing a token, the one where it has the most context on
both sides is the one allowed to start an answer there (as in BERT's ``run_squad``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nezha.tasks.common import read_text

logger = logging.getLogger("nezha")


@dataclass
class MrcExample:
    qid: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)  # every reference text (for the metric)
    answer_start: int | None = None  # the training answer's character span in the context
    answer_end: int | None = None  # exclusive


def read_squad(path: str | os.PathLike, for_training: bool = False) -> list[MrcExample]:
    """Read SQuAD-style JSON. For training, the first reference whose ``answer_start`` agrees with the context
    is the target; one that disagrees is moved to the nearest occurrence of its text (counted warning, ids named);
    a question none of whose answers occur in the context cannot be trained on and is reported by id.

    An answer without a ``text`` string, or (for training) without an integer ``answer_start``, is an error naming
    the file and the question id."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: expected SQuAD-style JSON {{'data': [{{'paragraphs': [...]}}]}}")
    examples, moved, unusable = [], [], []
    seen: set[str] = set()
    for article in data["data"]:
        for para in article.get("paragraphs", []):
            context = para.get("context")
            if not isinstance(context, str) or not context:
                raise ValueError(f"{path}: a paragraph has no context")
            for q in para.get("qas", []):
                qid = str(q.get("id", ""))
                if not qid or qid in seen:
                    raise ValueError(f"{path}: question id {qid!r} is missing or repeated")
                seen.add(qid)
                answers = _answers(q.get("answers", []), f"{path}: question {qid}", for_training)
                ex = MrcExample(qid, str(q.get("question", "")), context, [a[0] for a in answers])
                if for_training:
                    span = _training_span(context, answers)
                    if span is None:
                        unusable.append(qid)
                        continue
                    ex.answer_start, ex.answer_end, was_moved = span
                    if was_moved:
                        moved.append(qid)
                examples.append(ex)
    if moved:
        logger.warning(
            "%s: %d answers had an answer_start that disagrees with the context and were moved to the "
            "nearest occurrence of their text: %s%s",
            path,
            len(moved),
            ", ".join(moved[:10]),
            " ..." if len(moved) > 10 else "",
        )
    if unusable:
        logger.warning(
            "%s: %d questions have no answer text in their context and are not trained on: %s%s",
            path,
            len(unusable),
            ", ".join(unusable[:10]),
            " ..." if len(unusable) > 10 else "",
        )
    if not examples:
        raise ValueError(f"{path}: no usable questions")
    return examples


def _answers(raw: object, where: str, for_training: bool) -> list[tuple[str, int | None]]:
    """``(text, answer_start)`` of each reference answer. A plain string is an answer text without a position
    (scoring needs only the text); training needs the position, which SQuAD and CMRC 2018 always give."""
    if not isinstance(raw, list):
        raise ValueError(f"{where}: 'answers' must be a list, got {type(raw).__name__}")
    out = []
    for k, a in enumerate(raw):
        text, start = (a.get("text"), a.get("answer_start")) if isinstance(a, dict) else (a, None)
        if not isinstance(text, str):
            raise ValueError(f"{where}: answer {k} has no 'text' string (got {a!r})")
        # -1 (position unknown) occurs in the CMRC 2018 dev set: such an answer is found by its text.
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            raise ValueError(f"{where}: answer {k} has answer_start {start!r}, expected an integer character offset")
        if for_training and start is None:
            raise ValueError(f"{where}: answer {k} has no 'answer_start' (needed for training)")
        out.append((text, start))
    return out


def _training_span(context: str, answers: list[tuple[str, int | None]]) -> tuple[int, int, bool] | None:
    for text, start in answers:
        if text and start is not None and start >= 0 and context[start : start + len(text)] == text:
            return start, start + len(text), False
    for text, start in answers:
        if not text:
            continue
        hits = [i for i in _find_all(context, text)]
        if hits:
            best = min(hits, key=lambda i: abs(i - (start or 0)))
            return best, best + len(text), True
    return None


def _find_all(s: str, sub: str):
    i = s.find(sub)
    while i >= 0:
        yield i
        i = s.find(sub, i + 1)


@dataclass
class MrcFeature:
    example: int  # index into the example list
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # character span in the context per token; None outside the context
    max_context: list[bool]  # this window is the best one for this context token
    start_position: int = 0  # training target (0, the [CLS], when the answer is not inside this window)
    end_position: int = 0


def make_features(
    tokenizer,
    examples: Sequence[MrcExample],
    max_seq_length: int = 512,
    doc_stride: int = 128,
    max_query_length: int = 64,
    for_training: bool = False,
) -> list[MrcFeature]:
    """Sliding windows over each context. For training, windows not containing the answer target [CLS]."""
    questions = tokenizer.encode_batch([e.question for e in examples])
    contexts = tokenizer.encode_batch([e.context for e in examples])
    features = []
    for ei, (ex, q, c) in enumerate(zip(examples, questions, contexts)):
        q_ids = q.ids[:max_query_length]
        max_doc = max_seq_length - len(q_ids) - 3
        if max_doc < 1:
            raise ValueError(
                f"max_seq_length {max_seq_length} leaves no room for the context after a "
                f"{len(q_ids)}-token question (lower --max_query_length)"
            )
        n = len(c.ids)
        starts = []
        s = 0
        while True:
            length = min(n - s, max_doc)
            starts.append((s, length))
            if s + length >= n:
                break
            s += min(length, doc_stride)
        tok_start = tok_end = None
        if for_training and ex.answer_start is not None:
            inside = [i for i, (a, b) in enumerate(c.offsets) if a < ex.answer_end and b > ex.answer_start]
            if inside:
                tok_start, tok_end = inside[0], inside[-1]
        for s, length in starts:
            ids = [tokenizer.cls_id, *q_ids, tokenizer.sep_id, *c.ids[s : s + length], tokenizer.sep_id]
            types = [0] * (len(q_ids) + 2) + [1] * (length + 1)
            head = len(q_ids) + 2
            offsets: list[tuple[int, int] | None] = [None] * head + list(c.offsets[s : s + length]) + [None]
            max_ctx = [False] * head + [_is_max_context(starts, s, p) for p in range(s, s + length)] + [False]
            sp = ep = 0
            if tok_start is not None and s <= tok_start and tok_end < s + length:
                sp, ep = head + tok_start - s, head + tok_end - s
            features.append(MrcFeature(ei, ids, types, offsets, max_ctx, sp, ep))
    return features


def _is_max_context(windows: list[tuple[int, int]], current: int, pos: int) -> bool:
    best, best_start = None, None
    for s, length in windows:
        if not s <= pos < s + length:
            continue
        score = min(pos - s, s + length - 1 - pos) + 0.01 * length
        if best is None or score > best:
            best, best_start = score, s
    return best_start == current


def best_answers(
    examples: Sequence[MrcExample],
    features: Sequence[MrcFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Best answer per question across all its windows, and the n-best list with probabilities.

    Returns ``({id: text}, {id: [{text, probability, start_logit, end_logit, start, end}]})``; ``start``/``end`` are
    character offsets in the context (end exclusive), and ``text == context[start:end]``.
    """
    by_example: dict[int, list[int]] = {}
    for fi, f in enumerate(features):
        by_example.setdefault(f.example, []).append(fi)
    predictions, nbest = {}, {}
    for ei, ex in enumerate(examples):
        cands = []
        for fi in by_example.get(ei, []):
            f = features[fi]
            sl, el = np.asarray(start_logits[fi], dtype=np.float64), np.asarray(end_logits[fi], dtype=np.float64)
            k = min(n_best, len(f.input_ids))
            top_s = np.argsort(-sl[: len(f.input_ids)], kind="stable")[:k]
            top_e = np.argsort(-el[: len(f.input_ids)], kind="stable")[:k]
            for s in top_s:
                if f.offsets[s] is None or not f.max_context[s]:
                    continue
                for e in top_e:
                    if f.offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    cands.append((float(sl[s] + el[e]), float(sl[s]), float(el[e]), f.offsets[s][0], f.offsets[e][1]))
        cands.sort(key=lambda c: -c[0])
        chosen, texts = [], set()
        for c in cands:
            text = ex.context[c[3] : c[4]]
            if text in texts:
                continue
            texts.add(text)
            chosen.append((c, text))
            if len(chosen) >= n_best:
                break
        if not chosen:
            predictions[ex.qid] = ""
            nbest[ex.qid] = [
                {"text": "", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0, "start": 0, "end": 0}
            ]
            continue
        top = chosen[0][0][0]
        weights = [math.exp(c[0] - top) for c, _ in chosen]
        z = sum(weights)
        nbest[ex.qid] = [
            {"text": t, "probability": w / z, "start_logit": c[1], "end_logit": c[2], "start": c[3], "end": c[4]}
            for (c, t), w in zip(chosen, weights)
        ]
        predictions[ex.qid] = chosen[0][1]
    return predictions, nbest
