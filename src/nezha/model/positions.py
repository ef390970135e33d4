"""NEZHA's functional relative positions: the fixed sinusoid table and the clipped-distance buckets.

A leaf module (torch only): the eager attention, the fused kernels, the model and the tests all read it, and it reads
none of them.
"""

from __future__ import annotations

import math

import torch


def relative_position_table(max_relative_position: int, head_dim: int) -> torch.Tensor:
    """The fixed sinusoid table ``(2K+1, D)``: row p has sin(p * w_m) in dim 2m and cos(p * w_m) in dim 2m+1.

    Computed exactly as the reference implementations do (fp32, ``exp(-2m * ln(10000) / D)``) so that
    converted checkpoints give bit-identical hidden states.
    """
    num_buckets = 2 * max_relative_position + 1
    position = torch.arange(num_buckets, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    div_term = torch.exp(torch.arange(0, head_dim, 2, dtype=torch.float32) * (-math.log(10000.0) / head_dim))
    table = torch.zeros(num_buckets, head_dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table  # (P, D)


def relative_buckets(query_positions: torch.Tensor, key_length: int, max_relative_position: int) -> torch.Tensor:
    """``clip(j - i, -K, K) + K`` for queries ``i`` in ``query_positions`` and keys ``j`` in ``0..key_length-1``."""
    keys = torch.arange(key_length, device=query_positions.device)
    distance = keys[None, :] - query_positions[:, None]  # (C, T)
    return distance.clamp(-max_relative_position, max_relative_position) + max_relative_position
