"""The relative-position leaf: clipped distance buckets and the fixed sinusoid table."""

import math

import pytest
import torch

from nezha.model.positions import relative_buckets, relative_position_table


def test_relative_buckets_clip_and_shift():
    b = relative_buckets(torch.arange(4), 6, 2)
    assert b.tolist() == [
        [2, 3, 4, 4, 4, 4],
        [1, 2, 3, 4, 4, 4],
        [0, 1, 2, 3, 4, 4],
        [0, 0, 1, 2, 3, 4],
    ]


def test_relative_table_is_the_sinusoid():
    t = relative_position_table(3, 6).double()
    p, m = 5, 1
    assert t.shape == (7, 6)
    assert t[p, 2 * m].item() == pytest.approx(math.sin(p / 10000 ** (2 * m / 6)), abs=1e-6)
    assert t[p, 2 * m + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * m / 6)), abs=1e-6)
