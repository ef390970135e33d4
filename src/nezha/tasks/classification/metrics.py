"""Classification metrics: accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix (+ PNG).

Every example counts: predictions are compared position by position, so a dropped example would be a length
mismatch and raises instead of quietly shrinking a denominator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int  # gold examples of this class


def _check(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("no examples to score")
    for name, ys in (("gold", y_true), ("predicted", y_pred)):
        bad = [y for y in ys if not 0 <= y < num_labels]
        if bad:
            raise ValueError(f"{name} label id {bad[0]} is outside 0..{num_labels - 1}")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> list[list[int]]:
    """``cm[i][j]`` = examples of gold class ``i`` predicted as ``j``."""
    _check(y_true, y_pred, num_labels)
    cm = [[0] * num_labels for _ in range(num_labels)]
    for t, p in zip(y_true, y_pred):
        cm[t][p] += 1
    return cm


def scores_from_confusion(cm: list[list[int]]) -> list[ClassScores]:
    """Per-class scores; a ratio with a zero denominator is 0 (as scikit-learn's ``zero_division=0``)."""
    n = len(cm)
    out = []
    for k in range(n):
        tp = cm[k][k]
        predicted = sum(cm[i][k] for i in range(n))
        support = sum(cm[k])
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out.append(ClassScores(p, r, f, support))
    return out


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class scores as a JSON-ready dict.

    Macro averages run over the classes that occur in the gold labels or the predictions (scikit-learn's default
    label set), so a class absent from a small evaluation set does not pull the average to 0.
    """
    cm = confusion_matrix(y_true, y_pred, len(labels))
    per_class = scores_from_confusion(cm)
    present = [k for k in range(len(labels)) if per_class[k].support or any(cm[i][k] for i in range(len(labels)))]
    correct = sum(cm[k][k] for k in range(len(labels)))
    macro = {m: sum(getattr(per_class[k], m) for k in present) / len(present) for m in ("precision", "recall", "f1")}
    return {
        "accuracy": correct / len(y_true),
        "macro_f1": macro["f1"],
        "macro_precision": macro["precision"],
        "macro_recall": macro["recall"],
        "num_examples": len(y_true),
        "per_class": {labels[k]: asdict(per_class[k]) for k in range(len(labels))},
        "labels": list(labels),
        "confusion_matrix": cm,
    }


def majority_baseline(y_train: Sequence[int], y_eval: Sequence[int], labels: Sequence[str]) -> dict:
    """The report of always predicting the most frequent training class (ties: the smaller id)."""
    if not y_train:
        raise ValueError("no training labels for the majority baseline")
    counts = [0] * len(labels)
    for y in y_train:
        counts[y] += 1
    majority = max(range(len(labels)), key=lambda k: (counts[k], -k))
    return classification_report(y_eval, [majority] * len(y_eval), labels)


def plot_confusion_matrix(cm: list[list[int]], labels: Sequence[str], path: str | os.PathLike,
                          title: str = "confusion matrix") -> None:
    """Write the matrix as a PNG heat map with counts in the cells (rows: gold, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nezha.io.atomic import atomic_write

    n = len(labels)
    size = max(3.5, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        _draw_confusion(fig, ax, cm, labels, title)
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)


def _draw_confusion(fig, ax, cm, labels, title) -> None:
    import warnings

    n = len(labels)
    with warnings.catch_warnings():
        # Label names may be Chinese; without a CJK font they show as boxes, which is no reason to warn per glyph.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(n), labels=[str(x) for x in labels], rotation=45, ha="right")
        ax.set_yticks(range(n), labels=[str(x) for x in labels])
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(title)
        top = max((max(row) for row in cm), default=0)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center",
                        color="white" if cm[i][j] > top / 2 else "black")
        fig.tight_layout()
