"""Masked-LM target selection: BERT's static masking, whole word masking (WWM) and n-gram (span) masking.

What WWM changes and what it does not: WWM changes only *which positions are masked together*: when one piece
of a word is chosen, every piece of that word is masked (a Chinese word of several characters, or a WordPiece word
``play ##ing``). It does not change the targets: each masked WordPiece is still predicted on its own, with its own
label, and the 80% ``[MASK]`` / 10% random / 10% unchanged decision is made per piece, as in Google's WWM release.
The token ids of an instance are the same with WWM on or off.

Words come from a segmenter (``rjieba``/``jieba``) or from gold boundaries (``pre_segmented`` text, words
separated by spaces); the grouping is expressed as a ``unit_starts`` flag per token (True where a masking unit
begins), computed once per sentence by :func:`word_unit_starts`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MASK_PROB = 0.8  # of the chosen positions: replaced by [MASK]
KEEP_PROB_OF_REST = 0.5  # of the remaining 20%: half kept unchanged, half replaced by a random vocab id


@dataclass(frozen=True)
class MaskingConfig:
    """How targets are chosen; every option an argument (no globals), so selection is a pure function of rng."""

    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    vocab_size: int = 21128
    mask_id: int = 103
    max_ngram: int = 1  # > 1: n-gram masking over units, n drawn with probability proportional to 1/n

    def __post_init__(self):
        if not 0.0 < self.masked_lm_prob <= 1.0:
            raise ValueError(f"masked_lm_prob={self.masked_lm_prob}: must be in (0, 1]")
        if self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq={self.max_predictions_per_seq}: must be >= 1")
        if self.max_ngram < 1:
            raise ValueError(f"max_ngram={self.max_ngram}: must be >= 1")


@dataclass(frozen=True)
class MaskedLmResult:
    """The masked instance: ids with replacements, sorted target positions and their original ids."""

    input_ids: list[int]
    positions: list[int]
    labels: list[int]
    num_mask_token: int  # how many positions got [MASK]
    num_random: int  # how many got a random id
    num_in_multi_piece_units: int  # how many positions belong to a unit of more than one piece (WWM share)


def word_unit_starts(
    offsets: Sequence[tuple[int, int]],
    word_starts: np.ndarray,
    is_continuation: Sequence[bool],
) -> np.ndarray:
    """Flag the tokens that begin a whole-word masking unit.

    Args:
        offsets: (T,) character spans of the sentence's tokens.
        word_starts: (W,) sorted character offsets where the segmenter's words begin.
        is_continuation: (T,) True for ``##`` WordPiece continuations.
    Returns:
        (T,) bool: token i joins the unit of token i-1 when both start inside the same segmenter word or token i is
        a ``##`` piece; so a unit always covers whole segmenter words and whole WordPiece words.
    """
    T = len(offsets)
    out = np.ones(T, dtype=bool)
    if T <= 1:
        return out
    starts = np.fromiter((s for s, _ in offsets), dtype=np.int64, count=T)
    word = np.searchsorted(word_starts, starts, side="right")  # (T,) segmenter word index of each token
    cont = np.asarray(is_continuation, dtype=bool)
    out[1:] = ~((word[1:] == word[:-1]) | cont[1:])
    return out


def num_to_predict(num_tokens: int, cfg: MaskingConfig) -> int:
    """BERT's budget: round(len * prob), at least 1, at most max_predictions_per_seq (len includes [CLS]/[SEP])."""
    return min(cfg.max_predictions_per_seq, max(1, int(round(num_tokens * cfg.masked_lm_prob))))


def candidate_units(special: Sequence[bool], unit_starts: Sequence[bool]) -> list[tuple[int, int]]:
    """Half-open position ranges of the masking units of an instance; special tokens are never candidates."""
    units: list[tuple[int, int]] = []
    start = -1
    for i, (sp, us) in enumerate(zip(special, unit_starts)):
        if sp:
            if start >= 0:
                units.append((start, i))
            start = -1
        elif us or start < 0:
            if start >= 0:
                units.append((start, i))
            start = i
    if start >= 0:
        units.append((start, len(special)))
    return units


def _ngram_weights(max_ngram: int) -> list[float]:
    w = [1.0 / n for n in range(1, max_ngram + 1)]
    total = sum(w)
    return [x / total for x in w]


def create_masked_lm_predictions(
    input_ids: Sequence[int],
    units: Sequence[tuple[int, int]],
    cfg: MaskingConfig,
    rng: random.Random,
) -> MaskedLmResult:
    """Choose and replace masked-LM targets, BERT's algorithm.

    Units are visited in a uniformly random order (a lazily drawn permutation, the same distribution as BERT's
    full shuffle); a unit is taken if it fits the remaining budget, else skipped. Each taken position is replaced
    by [MASK] with p=0.8, kept with p=0.1, or replaced by a uniformly random vocab id with p=0.1.
    With ``max_ngram > 1`` a visited unit starts a span of n consecutive units (n ~ 1/n), shortened until it fits
    and does not overlap earlier spans; spans never cross [SEP] because units are split at special tokens.
    """
    budget = num_to_predict(len(input_ids), cfg)
    out = list(input_ids)
    chosen: list[int] = []
    n_mask = n_random = n_multi = 0
    n_units = len(units)
    if cfg.max_ngram == 1 and all(e - s == 1 for s, e in units):
        # Every unit is one token (static masking): a uniform sample of positions, no permutation needed.
        picks = [units[k][0] for k in rng.sample(range(n_units), min(budget, n_units))]
        spans = [(p, p + 1) for p in picks]
    else:
        spans = _choose_spans(units, budget, cfg.max_ngram, rng)
    for s, e in spans:
        multi = e - s > 1
        for pos in range(s, e):
            chosen.append(pos)
            n_multi += multi
            if rng.random() < MASK_PROB:
                out[pos] = cfg.mask_id
                n_mask += 1
            elif rng.random() >= KEEP_PROB_OF_REST:
                out[pos] = rng.randrange(cfg.vocab_size)
                n_random += 1
    chosen.sort()
    return MaskedLmResult(out, chosen, [input_ids[p] for p in chosen], n_mask, n_random, n_multi)


def _choose_spans(
    units: Sequence[tuple[int, int]], budget: int, max_ngram: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Greedy selection over a lazily permuted unit order; returns chosen position ranges."""
    n_units = len(units)
    order = list(range(n_units))
    covered = [False] * n_units
    weights = _ngram_weights(max_ngram) if max_ngram > 1 else None
    spans: list[tuple[int, int]] = []
    taken = 0
    for k in range(n_units):
        if taken >= budget:
            break
        j = k + int(rng.random() * (n_units - k))  # partial Fisher-Yates step
        order[k], order[j] = order[j], order[k]
        u = order[k]
        if covered[u]:
            continue
        n = 1
        if weights is not None:
            n = rng.choices(range(1, max_ngram + 1), weights)[0]
        while n >= 1:
            last = u + n - 1
            # consecutive units only (no gap, i.e. no special token between them), none covered, within budget
            ok = last < n_units and all(
                not covered[v] and (v == u or units[v][0] == units[v - 1][1]) for v in range(u, last + 1)
            )
            size = units[last][1] - units[u][0] if last < n_units else budget + 1
            if ok and taken + size <= budget:
                break
            n -= 1
        if n < 1:
            continue
        for v in range(u, u + n):
            covered[v] = True
        spans.append((units[u][0], units[u + n - 1][1]))
        taken += spans[-1][1] - spans[-1][0]
    return spans


@dataclass
class MaskedBatch:
    """Vectorized masking result for a batch of instances (see :func:`mask_batch`)."""

    input_ids: np.ndarray  # (N, L) int32 with replacements
    positions: np.ndarray  # (N, M) int32 sorted, 0-padded
    labels: np.ndarray  # (N, M) int32 original ids, 0-padded
    num_masked: np.ndarray  # (N,) int32
    num_mask_token: int
    num_random: int
    num_in_multi_piece_units: int


def mask_batch(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    candidates: np.ndarray,
    unit_starts: np.ndarray,
    cfg: MaskingConfig,
    rng: np.random.Generator,
) -> MaskedBatch:
    """:func:`create_masked_lm_predictions` for N instances at once (``max_ngram == 1``), same distribution.

    Args:
        input_ids: (N, L) int32, 0-padded, [CLS]/[SEP] included.
        lengths: (N,) real lengths.
        candidates: (N, L) bool, positions that may be masked (not special, not padding).
        unit_starts: (N, L) bool, True where a masking unit begins (all True: static masking). A unit is a run of
            candidates; it also begins after a position that is not a candidate.
    """
    if cfg.max_ngram != 1:
        raise ValueError("mask_batch handles max_ngram == 1; use create_masked_lm_predictions for n-grams")
    if not ((unit_starts | ~candidates).all()):
        return mask_units(input_ids, lengths, FlagUnits(candidates, unit_starts), cfg, rng)
    n, L = input_ids.shape
    M = cfg.max_predictions_per_seq
    budget = np.minimum(M, np.maximum(1, np.rint(lengths * cfg.masked_lm_prob).astype(np.int64)))  # (N,)
    chosen = _choose_positions(candidates, budget, M, rng)
    rows, cols = np.nonzero(chosen)  # row-major: positions ascending within a row
    out, n_mask, n_random = _replace(input_ids, rows, cols, cfg, rng)
    counts = chosen.sum(1)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.zeros((n, M), np.int32)
    labels = np.zeros((n, M), np.int32)
    positions[rows, rank] = cols
    labels[rows, rank] = input_ids[rows, cols]
    return MaskedBatch(out, positions, labels, counts.astype(np.int32), n_mask, n_random, 0)


class Units(Protocol):
    """The masking units of N instances: ``count[i]`` units in row i, unit q of a row found by :meth:`at`."""

    count: np.ndarray  # (N,) int64

    def at(self, rows: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first position, number of positions) of unit ``q[k]`` of row ``rows[k]``, for each k."""
        ...


class FlagUnits:
    """Units given as (N, L) flags: runs of candidate positions, split where a unit starts."""

    def __init__(self, candidates: np.ndarray, unit_starts: np.ndarray):
        n, L = candidates.shape
        after = np.zeros_like(candidates)
        after[:, 1:] = candidates[:, :-1]  # the previous position is a candidate
        begins = candidates & (unit_starts | ~after)
        nxt = np.zeros_like(candidates)
        nxt[:, :-1] = candidates[:, 1:] & ~begins[:, 1:]  # the next position continues the unit
        first = np.flatnonzero(begins)
        self.starts = first % L
        self.lengths = np.flatnonzero(candidates & ~nxt) + 1 - first
        self.count = begins.sum(1, dtype=np.int64)
        self.offsets = np.cumsum(self.count) - self.count

    def at(self, rows: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.offsets[rows] + q
        return self.starts[k], self.lengths[k]


def mask_units(
    input_ids: np.ndarray, lengths: np.ndarray, units: Units, cfg: MaskingConfig, rng: np.random.Generator
) -> MaskedBatch:
    """Whole word masking of N instances: BERT's greedy over each row's units in random order (see
    :func:`choose_units`), then the 80/10/10 replacement of every position of the chosen units."""
    n, L = input_ids.shape
    M = cfg.max_predictions_per_seq
    budget = np.minimum(M, np.maximum(1, np.rint(np.asarray(lengths) * cfg.masked_lm_prob).astype(np.int64)))
    rows, starts, sizes = choose_units(units, budget, rng)
    # every position of the chosen units, sorted by row then position
    first = np.cumsum(sizes) - sizes
    flat = np.repeat(rows * L + starts - first, sizes) + np.arange(int(sizes.sum()))
    flat.sort()
    rows, cols = np.divmod(flat, L)
    out, n_mask, n_random = _replace(input_ids, rows, cols, cfg, rng)
    counts = np.bincount(rows, minlength=n)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.zeros((n, M), np.int32)
    labels = np.zeros((n, M), np.int32)
    positions[rows, rank] = cols
    labels[rows, rank] = input_ids[rows, cols]
    multi = int(sizes[sizes > 1].sum())
    return MaskedBatch(out, positions, labels, counts.astype(np.int32), n_mask, n_random, multi)


def choose_units(units: Units, budget: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """BERT's greedy: visit a row's units in uniformly random order, take a unit if it fits the remaining budget,
    stop when the budget is reached or the units run out. Returns the chosen units' (rows, first positions,
    sizes), in the order chosen.

    The order is a partial Fisher-Yates shuffle of each row's unit numbers: one vectorised step per visit, over the
    rows still filling, so the work follows the units visited (about budget / mean unit size) rather than the
    row length.
    """
    n = len(budget)
    count = np.asarray(units.count, np.int64)
    width = int(count.max(initial=0))
    perm = np.broadcast_to(np.arange(width, dtype=np.int32), (n, width)).copy().reshape(-1)  # (N * width,)
    act = np.flatnonzero((count > 0) & (budget > 0))
    c, base, left = count[act], act * width, budget[act]
    chosen: list[tuple[np.ndarray, ...]] = []
    r = 0
    while len(act):
        j = np.minimum(r + (rng.random(len(act)) * (c - r)).astype(np.int64), c - 1)  # uniform in [r, c)
        q = perm[base + j]
        perm[base + j] = perm[base + r]  # position r is final: only the displaced number needs keeping
        start, size = units.at(act, q)
        ok = size <= left
        chosen.append((act[ok], start[ok], size[ok]))
        left = left - np.where(ok, size, 0)
        r += 1
        live = (left > 0) & (c > r)
        act, c, base, left = act[live], c[live], base[live], left[live]
    if not chosen:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return tuple(np.concatenate(parts).astype(np.int64) for parts in zip(*chosen))


def mask_ngram_batch(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    candidates: np.ndarray,
    unit_starts: np.ndarray,
    cfg: MaskingConfig,
    rng: random.Random,
) -> MaskedBatch:
    """n-gram (span) masking of N instances, one at a time (the greedy over spans does not vectorize): the
    arrays of :func:`mask_batch`, each row through :func:`create_masked_lm_predictions`."""
    n, M = len(lengths), cfg.max_predictions_per_seq
    out = input_ids.copy()
    positions, labels = np.zeros((n, M), np.int32), np.zeros((n, M), np.int32)
    num_masked = np.zeros(n, np.int32)
    n_mask = n_random = n_multi = 0
    for i in range(n):
        k = int(lengths[i])
        units = candidate_units((~candidates[i, :k]).tolist(), unit_starts[i, :k].tolist())
        res = create_masked_lm_predictions(input_ids[i, :k].tolist(), units, cfg, rng)
        out[i, :k] = res.input_ids
        c = len(res.positions)
        positions[i, :c], labels[i, :c], num_masked[i] = res.positions, res.labels, c
        n_mask, n_random = n_mask + res.num_mask_token, n_random + res.num_random
        n_multi += res.num_in_multi_piece_units
    return MaskedBatch(out, positions, labels, num_masked, n_mask, n_random, n_multi)


def _floyd(n_cand: np.ndarray, k: np.ndarray, max_k: int, rng: np.random.Generator) -> np.ndarray:
    """(K, N) int32: a uniformly random subset of ``k[i]`` of the ranks ``0 .. n_cand[i]-1`` per row, -1 padded.

    Visiting single-position units in random order and taking the first ``k`` gives a uniform subset: drawn here by
    Floyd's algorithm (one vectorized step per pick, at most ``max_k``) instead of sorting a key per position.
    """
    n = len(n_cand)
    picks = np.full((max(1, max_k), n), -1, np.int32)
    for s in range(int(k.max(initial=0))):
        j = n_cand - k + s  # draw t in [0, j]; take t, or j when t is taken already
        t = np.minimum((rng.random(n, dtype=np.float32) * (j + 1)).astype(np.int32), j)  # (float32 may round up)
        taken = (picks[:s] == t).any(0)
        picks[s] = np.where(s < k, np.where(taken, j, t), -1)
    return picks


def _choose_positions(candidates: np.ndarray, budget: np.ndarray, max_k: int, rng: np.random.Generator) -> np.ndarray:
    """(N, L) bool: a uniformly random subset of ``min(budget, #candidates)`` candidate positions per row."""
    n, L = candidates.shape
    n_cand = candidates.sum(1, dtype=np.int32)  # (N,)
    picks = _floyd(n_cand, np.minimum(budget, n_cand).astype(np.int32), max_k, rng)
    rows, cols = np.nonzero(candidates)  # candidate positions, row-major: rank r of row i at first[i] + r
    first = np.cumsum(n_cand, dtype=np.int64) - n_cand
    c, r = np.nonzero(picks >= 0)
    chosen = np.zeros((n, L), dtype=bool)
    chosen[r, cols[first[r] + picks[c, r]]] = True
    return chosen


def mask_pairs(
    input_ids: np.ndarray, len_a: np.ndarray, lengths: np.ndarray, cfg: MaskingConfig, rng: np.random.Generator
) -> MaskedBatch:
    """:func:`mask_batch` with static masking for rows laid out as ``[CLS] A [SEP] B [SEP]``, without (N, L) masks.

    The candidates of a row are A's and B's positions, so the k-th candidate sits at ``k + 1`` (in A) or ``k + 2``
    (in B): the uniform subset of candidates is drawn as ranks (Floyd) and mapped to positions directly.
    """
    if cfg.max_ngram != 1:
        raise ValueError("mask_pairs handles max_ngram == 1; use create_masked_lm_predictions for n-grams")
    n, L = input_ids.shape
    M = cfg.max_predictions_per_seq
    lengths = np.asarray(lengths, np.int32)
    budget = np.minimum(M, np.maximum(1, np.rint(lengths * cfg.masked_lm_prob))).astype(np.int32)  # (N,)
    n_cand = lengths - 3
    k = np.minimum(budget, n_cand)
    picks = _floyd(n_cand, k, M, rng)[:M].T  # (N, M) ranks
    pos = np.where(picks >= 0, picks + 1 + (picks >= np.asarray(len_a)[:, None]), L)
    pos.sort(axis=1)  # (N, M) ascending, unused = L
    rows, slot = np.nonzero(pos < L)
    cols = pos[rows, slot]
    out, n_mask, n_random = _replace(input_ids, rows, cols, cfg, rng)
    positions = np.where(pos < L, pos, 0).astype(np.int32)
    labels = np.zeros((n, M), np.int32)
    labels[rows, slot] = input_ids[rows, cols]
    return MaskedBatch(out, positions, labels, k.astype(np.int32), n_mask, n_random, 0)


def _replace(input_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, cfg: MaskingConfig, rng: np.random.Generator):
    """BERT's 80% [MASK] / 10% random id / 10% unchanged at the chosen positions: (new ids, #[MASK], #random).

    One uniform per position decides (below 0.8: [MASK]; from 0.9: a random id), the same probabilities as BERT's
    two draws; random ids are drawn only for the positions that get one."""
    u = rng.random(len(rows), dtype=np.float32)
    to_mask = u < MASK_PROB
    to_random = u >= MASK_PROB + (1 - MASK_PROB) * KEEP_PROB_OF_REST
    random_ids = rng.integers(0, cfg.vocab_size, int(to_random.sum()), dtype=np.int32)
    out = input_ids.copy()
    out[rows[to_mask], cols[to_mask]] = cfg.mask_id
    out[rows[to_random], cols[to_random]] = random_ids
    return out, int(to_mask.sum()), len(random_ids)
