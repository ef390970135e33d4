"""Entity-level (strict seqeval) and token-level NER metrics, with boundary errors."""

from __future__ import annotations

import pytest

from nezha.tasks.ner.metrics import bio_errors, entity_report, ner_report, token_report


def test_entity_report_exact_match_is_perfect():
    tags = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"]]
    rep = entity_report(tags, tags)
    assert (rep["precision"], rep["recall"], rep["f1"]) == (1.0, 1.0, 1.0)
    assert rep["per_type"]["LOC"]["support"] == 1


def test_entity_report_boundary_errors_count_as_wrong():
    gold = [["B-PER", "I-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "I-ORG", "B-LOC"]]
    # PER too short, ORG too long: both wrong; LOC right -> P 1/3, R 1/3
    rep = entity_report(gold, pred)
    assert rep["precision"] == pytest.approx(1 / 3) and rep["recall"] == pytest.approx(1 / 3)
    assert rep["per_type"]["PER"]["f1"] == 0.0 and rep["per_type"]["LOC"]["f1"] == 1.0


def test_entity_report_strict_mode_ignores_i_without_b():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]  # lenient (conlleval) scoring would accept this PER
    rep = entity_report(gold, pred)
    assert rep["precision"] == 1.0 and rep["recall"] == 0.5


def test_entity_report_wrong_type_is_wrong():
    rep = entity_report([["B-PER", "I-PER"]], [["B-ORG", "I-ORG"]])
    assert rep["f1"] == 0.0 and rep["per_type"]["ORG"]["support"] == 0


def test_token_report_counts_non_o_tags():
    gold = [["B-PER", "I-PER", "O", "O"], ["B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-LOC"]]
    rep = token_report(gold, pred)  # tp 2 (B-PER, B-LOC); predicted non-O 3; gold non-O 3
    assert rep["precision"] == pytest.approx(2 / 3) and rep["recall"] == pytest.approx(2 / 3)
    assert rep["accuracy"] == pytest.approx(3 / 5)


def test_ner_report_all_o_baseline_scores_zero_entities():
    gold = [["B-PER", "I-PER", "O"], ["O", "B-LOC"]]
    rep = ner_report(gold, [["O"] * 3, ["O"] * 2])
    assert rep["entity"]["f1"] == 0.0 and rep["token"]["accuracy"] == pytest.approx(2 / 5)
    assert rep["num_sentences"] == 2 and rep["num_tokens"] == 5


def test_bio_errors_name_the_position():
    assert bio_errors(["O", "I-PER", "B-LOC", "I-LOC", "I-PER"]) == [
        (1, "I-PER follows O (I- without B-)"), (4, "I-PER follows I-LOC (I- without B-)")]
    assert bio_errors(["B-PER", "I-PER"]) == []
    assert bio_errors(["PER"])[0][0] == 0


def test_ner_metrics_reject_length_mismatches():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1"):
        ner_report([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="no sentences"):
        ner_report([], [])
