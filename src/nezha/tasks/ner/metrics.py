"""Sequence-labelling metrics: strict entity-level P/R/F1 per type (seqeval, IOB2) and token-level P/R/F1.

Entity level is what NER papers report: an entity counts only when its type and both boundaries are right. In
seqeval's strict IOB2 mode an ``I-`` tag without a preceding ``B-``/``I-`` of its type starts no entity, so a
boundary error costs both a false positive and a false negative. The original NEZHA scripts reported token-level
micro P/R/F over the non-``O`` tags; it is computed as well so results can be compared with theirs.
"""

from __future__ import annotations

from collections.abc import Sequence


def bio_errors(tags: Sequence[str]) -> list[tuple[int, str]]:
    """Positions where ``tags`` break IOB2: ``I-X`` not preceded by ``B-X`` or ``I-X``, or a malformed tag."""
    errors = []
    prev = "O"
    for i, tag in enumerate(tags):
        if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
            errors.append((i, f"tag {tag!r} is not O, B-TYPE or I-TYPE"))
        elif tag.startswith("I-") and prev[2:] != tag[2:]:
            errors.append((i, f"{tag} follows {prev} (I- without B-)"))
        prev = tag
    return errors


def entity_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict:
    """Strict IOB2 entity scores: micro P/R/F1 and per type, as a JSON-ready dict."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    _check_lengths(y_true, y_pred)
    true, pred = [list(s) for s in y_true], [list(s) for s in y_pred]
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    per_type = classification_report(true, pred, output_dict=True, **kw)
    types = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                 "support": int(v["support"])}
             for k, v in per_type.items() if not k.endswith("avg")}
    return {
        "precision": float(precision_score(true, pred, **kw)),
        "recall": float(recall_score(true, pred, **kw)),
        "f1": float(f1_score(true, pred, **kw)),
        "per_type": types,
    }


def token_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]], outside: str = "O") -> dict:
    """Token-level micro P/R/F1 over the non-``O`` tags (the original scripts' metric) and token accuracy."""
    _check_lengths(y_true, y_pred)
    tp = n_pred = n_gold = correct = total = 0
    for t_seq, p_seq in zip(y_true, y_pred):
        for t, p in zip(t_seq, p_seq):
            total += 1
            correct += t == p
            n_pred += p != outside
            n_gold += t != outside
            tp += t == p and p != outside
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": correct / total if total else 0.0}


def ner_report(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level (strict) and token-level scores, with the counts they were computed on."""
    entity = entity_report(y_true, y_pred)
    return {
        "entity": entity,
        "token": token_report(y_true, y_pred),
        "f1": entity["f1"],
        "num_sentences": len(y_true),
        "num_tokens": sum(len(s) for s in y_true),
    }


def _check_lengths(y_true, y_pred) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold sentences but {len(y_pred)} predicted")
    if not y_true:
        raise ValueError("no sentences to score")
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted")
