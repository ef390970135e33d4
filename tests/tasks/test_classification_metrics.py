"""Classification metrics on confusion matrices worked out by hand."""

from __future__ import annotations

import pytest

from nezha.tasks.classification.metrics import (
    classification_report,
    confusion_matrix,
    majority_baseline,
    plot_confusion_matrix,
)


def test_confusion_matrix_counts_gold_rows_and_predicted_columns():
    assert confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_classification_report_three_classes_by_hand():
    # cm = [[1,1,0],[0,1,0],[1,0,2]]
    # class 0: P 1/2 R 1/2 F 1/2; class 1: P 1/2 R 1 F 2/3; class 2: P 1 R 2/3 F 4/5
    rep = classification_report([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert rep["per_class"]["b"]["f1"] == pytest.approx(2 / 3)
    assert rep["per_class"]["c"]["f1"] == pytest.approx(0.8)
    assert rep["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert rep["macro_precision"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert rep["num_examples"] == 6


def test_classification_report_absent_class_left_out_of_macro_and_zero_division_is_zero():
    # binary data with a third label never seen nor predicted; everything predicted as 0
    rep = classification_report([0, 0, 0, 1], [0, 0, 0, 0], ["neg", "pos", "other"])
    assert rep["per_class"]["pos"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    f1_neg = 2 * 0.75 * 1 / 1.75
    assert rep["macro_f1"] == pytest.approx(f1_neg / 2)
    assert rep["accuracy"] == 0.75


def test_majority_baseline_predicts_the_most_frequent_training_class():
    rep = majority_baseline([1, 1, 0], [0, 1, 1, 1], ["0", "1"])
    assert rep["accuracy"] == 0.75 and rep["confusion_matrix"] == [[0, 1], [0, 3]]


def test_classification_metrics_reject_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="3 gold labels but 2"):
        classification_report([0, 1, 1], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        classification_report([], [], ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 2], [0, 1], 2)


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    path = tmp_path / "cm.png"
    plot_confusion_matrix([[5, 1], [2, 7]], ["负面", "pos"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
