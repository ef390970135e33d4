"""The eager relative attention's band/region decomposition against the NEZHA formula written out in float64
(``dense_reference``: the ``(T, T, D)`` tensor of r_ij, as transformers' NezhaSelfAttention computes it)."""

from __future__ import annotations

import math

import pytest
import torch

import nezha.model.attention as attn
from nezha.model.attention import relative_attention
from nezha.model.kernels.check import dense_reference
from nezha.model.positions import relative_position_table


def _inputs(T, K, D=8, B=2, H=3, seed=0, mask="padding"):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    table = relative_position_table(K, D).double()
    m = None
    if mask == "padding":  # (B, 1, 1, T): the last row padded from T // 2 + 1 on
        keep = torch.ones(B, T, dtype=torch.float64)
        keep[-1, T // 2 + 1:] = 0
        m = ((1 - keep) * torch.finfo(torch.float32).min)[:, None, None, :]
    elif mask == "per_head":  # (B, H, 1, T): different keys dropped in every head
        m = torch.where(torch.rand(B, H, 1, T, generator=g) < 0.3, torch.finfo(torch.float32).min, 0.0).double()
        m[..., 0] = 0
    return q, k, v, table, m


def _check(q, k, v, table, mask, K, tol=1e-10):
    ours = relative_attention(q, k, v, table, mask, max_relative_position=K)
    ref = dense_reference(q, k, v, table, mask, max_relative_position=K)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((ours * g).sum(), (q, k, v)), torch.autograd.grad((ref * g).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    with torch.no_grad():  # the inference path (no autograd wrapper) computes the same
        torch.testing.assert_close(relative_attention(q, k, v, table, mask, max_relative_position=K), ours,
                                   rtol=0, atol=tol)


# K = 6: T < K, T = K, K + 1 (first clipped pairs), 2K - 2 and 2K - 1 (band writes interleave rows up to here),
# 2K, 2K + 1 and T >> K.
@pytest.mark.parametrize("T", [1, 2, 5, 6, 7, 10, 11, 12, 13, 40])
@pytest.mark.parametrize("recompute", [False, True], ids=["kept-probs", "recomputed-probs"])
def test_attention_matches_formula_around_K(T, recompute, monkeypatch):
    if recompute:
        monkeypatch.setattr(attn, "KEEP_PROBS_MAX_LENGTH", 0)
    _check(*_inputs(T, 6), 6)


@pytest.mark.parametrize("mask", [None, "padding", "per_head"])
def test_attention_masks(mask):
    _check(*_inputs(30, 4, mask=mask), 4)


@pytest.mark.parametrize("recompute", [False, True], ids=["kept-probs", "recomputed-probs"])
@pytest.mark.parametrize("T,K", [(70, 6), (70, 40), (100, 2), (33, 1)])
def test_attention_chunk_boundaries(T, K, recompute, monkeypatch):
    """Chunks of 16 queries: band views starting mid-sequence, a short last chunk, K beyond a chunk."""
    monkeypatch.setattr(attn, "CHUNK_ELEMENTS", 1)
    if recompute:
        monkeypatch.setattr(attn, "KEEP_PROBS_MAX_LENGTH", 0)
    _check(*_inputs(T, K, B=1, H=2), K)


def test_attention_large_head_dim_and_long_sequence():
    """The model's shape family (D = 64, K = 64) at a length with every region populated."""
    _check(*_inputs(300, 64, D=64, B=1, H=2), 64, tol=1e-9)


def test_attention_reads_head_split_views_and_returns_mergeable_heads():
    """Inputs as the model passes them (``(B, T, H, D)`` storage seen as ``(B, H, T, D)``) give the same result,
    and the output is stored so that merging the heads back is a view."""
    q, k, v, table, mask = _inputs(40, 6, H=1)  # H = 1: a per-row mask of shape (B, 1, 1, T) and one head
    _check(q, k, v, table, mask, 6)
    q, k, v, table, mask = _inputs(40, 6)
    views = [x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in (q, k, v)]
    assert not views[0].is_contiguous()
    _check(*views, table, mask, 6)
    out = relative_attention(*views, table, mask, max_relative_position=6)
    assert out.transpose(1, 2).is_contiguous()


def test_attention_half_inputs_follow_fp32():
    q, k, v, table, mask = (None if x is None else x.detach().float() for x in _inputs(50, 6))
    ref = relative_attention(q, k, v, table, mask, max_relative_position=6)
    out = relative_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), table, mask, max_relative_position=6)
    assert out.dtype == torch.bfloat16
    fp32_of_bf16 = relative_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), table, mask,
                                      max_relative_position=6)
    torch.testing.assert_close(out.float(), fp32_of_bf16, rtol=0, atol=1e-2)
    assert (out.float() - ref).abs().max() < 0.1


# ------------------------------------------------------------------------------------------------ dropout
def test_dropout_bits_round_trip():
    keep = torch.rand(3, 5, 21) < 0.5
    bits = attn._pack_bits(keep)
    assert bits.shape == (3, 5, 3) and bits.dtype == torch.uint8
    assert torch.equal(attn._unpack_bits(bits, 21), keep)


@pytest.mark.parametrize("recompute", [False, True], ids=["kept-probs", "recomputed-probs"])
def test_dropout_forward_backward_use_one_mask(recompute, monkeypatch):
    """The output and every gradient equal the dense formula with the mask the forward pass drew."""
    if recompute:
        monkeypatch.setattr(attn, "KEEP_PROBS_MAX_LENGTH", 0)
    monkeypatch.setattr(attn, "CHUNK_ELEMENTS", 1)  # two chunks: masks stay attached to their rows
    q, k, v, table, mask = _inputs(20, 3)
    p = 0.3
    drawn = []
    real = attn._dropout_keep

    def spy(shape, p_, seed, device):
        drawn.append(real(shape, p_, seed, device))
        return drawn[-1]

    monkeypatch.setattr(attn, "_dropout_keep", spy)
    ours = relative_attention(q, k, v, table, mask, max_relative_position=3, dropout_p=p)
    keep = torch.cat(drawn, 1).view(2, 3, 20, 20).double()
    ref = dense_reference(q, k, v, table, mask, max_relative_position=3, keep=keep, dropout_p=p)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((ours * g).sum(), (q, k, v)), torch.autograd.grad((ref * g).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_dropout_keeps_each_probability_independently():
    """Keep rate 1 - p overall, per query row and per key column; fresh masks each call; seeded by torch.manual_seed."""
    p = 0.1
    torch.manual_seed(0)
    keep = attn._dropout_keep(torch.Size([8, 256, 256]), p, None, torch.device("cpu")).double()
    n = keep.numel()
    assert abs(keep.mean().item() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)
    rows = keep.mean((0, 2))
    cols = keep.mean((0, 1))
    sd = math.sqrt(p * (1 - p) / (8 * 256))
    assert (rows - (1 - p)).abs().max() < 5 * sd and (cols - (1 - p)).abs().max() < 5 * sd
    # neighbouring elements are uncorrelated
    x = keep - keep.mean()
    assert abs((x[..., 1:] * x[..., :-1]).mean().item()) / x.var().item() < 0.01
    torch.manual_seed(0)
    again = attn._dropout_keep(torch.Size([8, 256, 256]), p, None, torch.device("cpu")).double()
    assert torch.equal(keep, again)
    assert not torch.equal(keep, attn._dropout_keep(torch.Size([8, 256, 256]), p, None, torch.device("cpu")))


@pytest.mark.parametrize("recompute", [False, True], ids=["kept-probs", "recomputed-probs"])
def test_attention_dropout_backward_is_consistent(recompute, monkeypatch):
    """With an explicit seed the mask is regenerated reproducibly: gradcheck proves forward and backward agree."""
    if recompute:
        monkeypatch.setattr(attn, "KEEP_PROBS_MAX_LENGTH", 0)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    table = relative_position_table(2, 4).double()
    fn = lambda q, k, v: attn._RelativeAttention.apply(q, k, v, table, None, 0.3, 1234, 2)
    assert torch.autograd.gradcheck(fn, (q, k, v))
    # and dropout really drops something: differs from the no-dropout output
    assert not torch.allclose(fn(q, k, v), relative_attention(q, k, v, table, None, max_relative_position=2))
