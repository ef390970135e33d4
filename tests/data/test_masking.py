"""Masked-LM selection: budget, special tokens, whole words, n-grams, vectorized batch vs per-instance."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nezha.data.masking import (
    MaskingConfig,
    candidate_units,
    create_masked_lm_predictions,
    mask_batch,
    num_to_predict,
    word_unit_starts,
)

CFG = MaskingConfig(masked_lm_prob=0.15, max_predictions_per_seq=20, vocab_size=1000, mask_id=3)


def test_word_unit_starts_groups_segmenter_words_and_wordpieces():
    # text "北京大学play ##ing" -> tokens 北 京 大 学 play ##ing with words [北京][大学][playing]
    offsets = [(0, 1), (1, 2), (2, 3), (3, 4), (5, 9), (9, 12)]
    starts = word_unit_starts(offsets, np.array([0, 2, 5]), [False, False, False, False, False, True])
    assert starts.tolist() == [True, False, True, False, True, False]


def test_candidate_units_split_at_special_tokens():
    special = [True, False, False, True, False, False, True]
    starts = [True, True, False, True, True, True, True]
    assert candidate_units(special, starts) == [(1, 3), (4, 5), (5, 6)]


def test_num_to_predict_rounds_and_caps():
    assert num_to_predict(128, CFG) == 19
    assert num_to_predict(5, CFG) == 1
    assert num_to_predict(200, CFG) == 20


def test_masking_never_touches_specials_and_respects_budget():
    ids = [1] + list(range(10, 60)) + [2] + list(range(60, 100)) + [2]
    special = [i in (0, 51, 92) for i in range(len(ids))]
    units = candidate_units(special, [True] * len(ids))
    for seed in range(50):
        r = create_masked_lm_predictions(ids, units, CFG, random.Random(seed))
        assert len(r.positions) == num_to_predict(len(ids), CFG)
        assert r.positions == sorted(set(r.positions)) and not any(special[p] for p in r.positions)
        assert r.labels == [ids[p] for p in r.positions]
        changed = [i for i in range(len(ids)) if r.input_ids[i] != ids[i]]
        assert set(changed) <= set(r.positions)


def test_wwm_masks_all_pieces_of_a_word():
    ids = list(range(100, 180))
    special = [i in (0, 40, 79) for i in range(80)]
    starts = [i % 3 == 0 for i in range(80)]  # words of 3 pieces (cut at specials)
    units = candidate_units(special, starts)
    for seed in range(50):
        r = create_masked_lm_predictions(ids, units, CFG, random.Random(seed))
        chosen = set(r.positions)
        for s, e in units:
            assert not (chosen & set(range(s, e))) or set(range(s, e)) <= chosen


def test_ngram_masking_spans_consecutive_units_within_a_segment():
    cfg = MaskingConfig(masked_lm_prob=0.3, max_predictions_per_seq=30, vocab_size=1000, mask_id=3, max_ngram=3)
    ids = list(range(100, 200))
    special = [i in (0, 50, 99) for i in range(100)]
    units = candidate_units(special, [True] * 100)
    lengths = []
    for seed in range(30):
        r = create_masked_lm_predictions(ids, units, cfg, random.Random(seed))
        assert len(r.positions) <= num_to_predict(100, cfg) and not any(special[p] for p in r.positions)
        runs, prev = [], None
        for p in r.positions:
            if prev is not None and p == prev + 1:
                runs[-1] += 1
            else:
                runs.append(1)
            prev = p
        lengths += runs
    assert max(lengths) >= 3  # spans exist (adjacent spans can merge into longer runs)


def _batch(n=400, L=64, word=1, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, L + 1, n)
    pos = np.arange(L)[None, :]
    ids = np.where(pos < lengths[:, None], rng.integers(5, 1000, (n, L)), 0).astype(np.int32)
    sep = lengths // 2
    cand = (pos > 0) & (pos < lengths[:, None] - 1) & (pos != sep[:, None])
    ids[np.arange(n), 0] = 1
    ids[np.arange(n), sep] = 2
    ids[np.arange(n), lengths - 1] = 2
    starts = (pos % word == 0) | (pos == sep[:, None] + 1) | (pos == 1)
    return ids, lengths, cand, starts


def test_mask_batch_budget_split_and_specials():
    ids, lengths, cand, starts = _batch()
    m = mask_batch(ids, lengths, cand, starts, CFG, np.random.default_rng(1))
    budget = np.minimum(20, np.maximum(1, np.rint(lengths * 0.15)))
    np.testing.assert_array_equal(m.num_masked, np.minimum(budget, cand.sum(1)))
    for i in range(len(ids)):
        k = m.num_masked[i]
        p = m.positions[i, :k]
        assert (np.diff(p) > 0).all() and cand[i, p].all()
        np.testing.assert_array_equal(m.labels[i, :k], ids[i, p])
        untouched = np.ones(ids.shape[1], bool)
        untouched[p] = False
        np.testing.assert_array_equal(m.input_ids[i, untouched], ids[i, untouched])
    total = m.num_masked.sum()
    assert abs(m.num_mask_token / total - 0.8) < 0.03 and abs(m.num_random / total - 0.1) < 0.02


@pytest.mark.parametrize("word", [2, 3])
def test_mask_batch_whole_words_and_same_budget_as_reference(word):
    ids, lengths, cand, starts = _batch(word=word)
    m = mask_batch(ids, lengths, cand, starts, CFG, np.random.default_rng(2))
    ref_counts = []
    for i in range(len(ids)):
        n = lengths[i]
        units = candidate_units((~cand[i, :n]).tolist(), starts[i, :n].tolist())
        chosen = set(m.positions[i, : m.num_masked[i]].tolist())
        for s, e in units:
            assert not (chosen & set(range(s, e))) or set(range(s, e)) <= chosen, (i, s, e)
        ref = create_masked_lm_predictions(ids[i, :n].tolist(), units, CFG, random.Random(i))
        ref_counts.append(len(ref.positions))
    # the greedy fill reaches the same number of targets on average as the per-instance reference
    assert abs(np.mean(ref_counts) - m.num_masked.mean()) < 0.3
    assert m.num_in_multi_piece_units > 0.5 * m.num_masked.sum()


def test_mask_batch_is_deterministic_for_a_seed():
    ids, lengths, cand, starts = _batch(word=2)
    a = mask_batch(ids, lengths, cand, starts, CFG, np.random.default_rng(7))
    b = mask_batch(ids, lengths, cand, starts, CFG, np.random.default_rng(7))
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.positions, b.positions)


def _units_of_one_row(sizes: list[int], specials: tuple[int, ...] = ()) -> tuple[np.ndarray, ...]:
    """One row [CLS] units... [SEP] with the given unit sizes; extra [SEP]s before the units listed in specials."""
    ids, cand, starts = [1], [False], [False]
    for k, size in enumerate(sizes):
        if k in specials:
            ids, cand, starts = ids + [2], cand + [False], starts + [False]
        ids += list(range(10 + len(ids), 10 + len(ids) + size))
        cand += [True] * size
        starts += [True] + [False] * (size - 1)
    ids, cand, starts = ids + [2], cand + [False], starts + [False]
    return np.array([ids], np.int32), np.array([len(ids)]), np.array([cand]), np.array([starts])


def test_mask_batch_whole_words_follow_berts_greedy_in_distribution():
    """How often each unit is chosen, and how many positions are, match the per-instance reference (BERT's shuffle
    and take-if-it-fits) within sampling error: units of 1-4 pieces, a budget that units of 3 and 4 often overrun."""
    sizes = [1, 2, 3, 1, 4, 2, 1, 1, 3, 2, 2, 1, 4, 1, 2, 3, 1, 2, 1, 1]
    ids, lengths, cand, starts = _units_of_one_row(sizes, specials=(10,))
    cfg = MaskingConfig(masked_lm_prob=0.15, max_predictions_per_seq=5, vocab_size=1000, mask_id=3)
    units = candidate_units((~cand[0]).tolist(), starts[0].tolist())
    trials = 6000
    m = mask_batch(np.repeat(ids, trials, 0), np.repeat(lengths, trials), np.repeat(cand, trials, 0),
                   np.repeat(starts, trials, 0), cfg, np.random.default_rng(0))
    first = np.array([s for s, _ in units])
    chosen = np.zeros((trials, len(units)))
    for i in range(trials):
        chosen[i] = np.isin(first, m.positions[i, : m.num_masked[i]])
    ref = np.zeros((trials, len(units)))
    ref_counts = []
    for i in range(trials):
        r = create_masked_lm_predictions(ids[0].tolist(), units, cfg, random.Random(i))
        ref[i] = np.isin(first, r.positions)
        ref_counts.append(len(r.positions))
    p, q = chosen.mean(0), ref.mean(0)
    se = np.sqrt((p * (1 - p) + q * (1 - q)) / trials) + 1e-9
    assert (np.abs(p - q) < 4.5 * se).all(), np.round(np.stack([p, q]), 3)
    assert abs(m.num_masked.mean() - np.mean(ref_counts)) < 0.05
    # longer units are chosen less often (they overrun the budget): the greedy, not a uniform pick of units
    assert p[np.array(sizes) == 4].mean() < p[np.array(sizes) == 1].mean() - 0.1


def test_flag_units_are_the_reference_units():
    from nezha.data.masking import FlagUnits

    ids, lengths, cand, starts = _batch(n=50, word=3)
    units = FlagUnits(cand, starts)
    for i in range(len(ids)):
        want = candidate_units((~cand[i]).tolist(), starts[i].tolist())
        q = np.arange(units.count[i])
        s, size = units.at(np.full(len(q), i), q)
        assert list(zip(s.tolist(), (s + size).tolist())) == want
