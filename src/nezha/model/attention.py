"""NEZHA functional relative attention, computed without any ``(T, T, D)`` tensor.

Shape legend: ``B`` batch, ``H`` heads, ``T`` query/key length, ``C`` a chunk of queries, ``D`` head size,
``K`` max relative distance, ``P = 2K + 1`` relative buckets.

The math (NEZHA paper, section 3.2; one table shared by keys, values, heads and layers)::

    bucket(i, j) = clip(j - i, -K, K) + K          r_ij = table[bucket(i, j)]
    s_ij  = (q_i . k_j + q_i . r_ij) / sqrt(D) + mask_j
    a_ij  = softmax_j(s_ij)
    out_i = sum_j a_ij v_j + sum_j a_ij r_ij

Per query row the keys fall into three regions: left (``j <= i - K``, bucket 0), right (``j >= i + K``, bucket 2K)
and the band (``|j - i| < K``). Outside the band the relative term is one of two constants per row, so:

- the score bias ``q_i . r_ij`` is ``q @ table[rows].T`` (``(.., C, 2K+1)``) added along the band's diagonals
  through a strided view (each diagonal is a column of the view) plus ``c_left(i) * left_ij + c_right(i) *
  right_ij`` for the clipped regions (two in-place multiply-adds with 0/1 region indicators);
- the value term is ``mass @ table[rows]``, where ``mass`` is the band's diagonals read through the same view and
  the two regions' attention masses from one more batched matmul.

Every pass over the ``(C, T)`` scores is a matmul, a softmax or a contiguous in-place elementwise op; no ``(C, T)``
index tensor, gather or scatter (``docs/attention.md`` has the profile). The band view works on a buffer with
``K`` slack elements on either side: out-of-range band entries alias neighbouring rows or slack, are masked to
zero when read and add exactly zero when written.

The eager path is a custom autograd function that processes queries in chunks and saves ``q, k, v, out`` for
the backward pass, recomputing the probabilities there (as flash attention does) for sequences longer than
``KEEP_PROBS_MAX_LENGTH``. Activation memory therefore grows like ``T * D``, not ``T * T`` (plus one bit per
probability under dropout: the keep-mask is drawn once and saved packed), which is what lets training run on
sequences of thousands of tokens on a CPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from nezha.model.positions import relative_buckets

# Elements of one (B, H, C, T) score block; bounds the transient memory of a chunk (~32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23
# Up to this length the backward pass reuses the forward's probabilities instead of recomputing them: there they
# cost at most about a quarter of a layer's other saved activations (H * T^2 vs ~18 * T * H * D per sequence), and
# skipping the recomputation is worth more. Longer sequences recompute, so memory stays linear in T.
KEEP_PROBS_MAX_LENGTH = 256


def _chunk_size(batch_heads: int, length: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(1, batch_heads * length))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types compute in fp32 on the eager path (softmax and accumulation need it; the GPU uses the kernel)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _dropout_keep(shape: torch.Size, p: float, seed: int | None, device: torch.device) -> torch.Tensor:
    """Bernoulli(1 - p) keep-mask: from the global generator (``seed`` None: no host sync, compile-clean), or
    reproducibly from an explicit ``seed``."""
    gen = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    return torch.rand(shape, generator=gen, device=device) >= p


_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def _pack_bits(keep: torch.Tensor) -> torch.Tensor:
    """``(.., T)`` bool -> ``(.., ceil(T / 8))`` uint8: the backward pass's copy of the dropout mask, 1 bit each."""
    pad = -keep.shape[-1] % 8
    keep = torch.nn.functional.pad(keep.to(torch.uint8), (0, pad))
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=keep.device)
    return (keep.unflatten(-1, (-1, 8)) * weights).sum(-1, dtype=torch.uint8)


def _unpack_bits(bits: torch.Tensor, length: int) -> torch.Tensor:
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    return (bits.unsqueeze(-1) & weights).ne(0).flatten(-2)[..., :length]


class _Regions(NamedTuple):
    """Where the relative terms of query rows ``start .. start + C - 1`` live (see the module docstring).

    ``rows`` are the table rows the chunk needs, band buckets ``p_lo .. p_lo + width - 1`` (those with
    ``|j - i| < K`` and some key in range) then, when the sequence has clipped regions, buckets 0 and 2K.
    """

    start: int
    p_lo: int
    width: int
    groups: int  # interleaved row groups that make a band write touch each element at most once
    valid: torch.Tensor  # (C, width): band entry's key inside 0..T-1
    sides: torch.Tensor | None  # (2, C, T): key j in the left (j <= i - K) / right (j >= i + K) region
    rows: torch.Tensor  # (width [+ 2],) table rows


def _regions(start: int, rows: int, length: int, K: int, dtype: torch.dtype, device: torch.device) -> _Regions:
    p_lo, p_hi = max(1, K - length + 1), min(2 * K - 1, K + length - 1)
    width = max(0, p_hi - p_lo + 1)
    i = torch.arange(start, start + rows, device=device)[:, None]  # (C, 1)
    j = i + torch.arange(p_lo, p_lo + width, device=device) - K  # (C, width) band keys
    valid = ((j >= 0) & (j < length)).to(dtype)
    table_rows = torch.arange(p_lo, p_lo + width, device=device)
    sides = None
    if length > K:  # otherwise no pair is K or more apart
        keys = torch.arange(length, device=device)
        sides = torch.stack((keys <= i - K, keys >= i + K)).to(dtype)  # (2, C, T)
        table_rows = torch.cat((table_rows, torch.tensor([0, 2 * K], device=device)))
    groups = (width - 1) // (length + 1) + 1 if width else 0
    return _Regions(start, p_lo, width, groups, valid, sides, table_rows)


def _buffer(batch_heads: int, rows: int, length: int, K: int, like: torch.Tensor) -> torch.Tensor:
    """Flat storage for one ``(BH, C, T)`` block with K zeroed elements on either side, so every band view
    (below) stays inside it and reads only finite values."""
    store = like.new_empty(batch_heads * rows * length + 2 * K)
    store[:K].zero_()
    store[store.numel() - K:].zero_()
    return store


def _block(store: torch.Tensor, batch_heads: int, rows: int, length: int, K: int) -> torch.Tensor:
    return store[K:K + batch_heads * rows * length].view(batch_heads, rows, length)  # (BH, C, T)


def _band(store: torch.Tensor, block: torch.Tensor, reg: _Regions) -> torch.Tensor:
    """``(BH, C, width)`` view of ``block`` whose entry ``[b, r, p - p_lo]`` is ``block[b, r, j]`` with
    ``j = i + p - K``: the band's diagonals, as columns. Out-of-range keys alias neighbouring rows or the slack."""
    BH, C, T = block.shape
    return torch.as_strided(store, (BH, C, reg.width), (C * T, T + 1, 1), reg.start + reg.p_lo)  # store: offset 0


def _add_relative(store: torch.Tensor, block: torch.Tensor, rel: torch.Tensor, reg: _Regions) -> None:
    """``block[b, r, j] += rel[b, r, bucket(i, j)]`` in place, with ``rel`` ``(BH, C, len(rows))`` (the score
    bias ``q . table`` or its gradient's twin ``dO . table``): a strided add over the band's diagonals, and a
    per-row constant times a 0/1 region indicator for each clipped region. No ``(C, T)`` index, no gather."""
    if reg.width:
        band = _band(store, block, reg)
        # out-of-range entries add exactly 0 to whatever they alias; groups keep each write's elements distinct
        values = rel[..., :reg.width] * reg.valid
        for g in range(reg.groups):
            band[:, g::reg.groups].add_(values[:, g::reg.groups])
    if reg.sides is not None:  # per row: c_left on the left region, c_right on the right one
        block.addcmul_(rel[..., reg.width, None], reg.sides[0]).addcmul_(rel[..., reg.width + 1, None], reg.sides[1])


def _relative_mass(store: torch.Tensor, block: torch.Tensor, reg: _Regions) -> torch.Tensor:
    """``mass[b, r, n] = sum of block[b, r, j] over the keys j in bucket rows[n]``: ``(BH, C, len(rows))``,
    the transpose of :func:`_add_relative`."""
    parts = [_band(store, block, reg) * reg.valid] if reg.width else []
    if reg.sides is not None:
        parts.append(torch.bmm(block.transpose(0, 1), reg.sides.permute(1, 2, 0)).transpose(0, 1))  # (BH, C, 2)
    return torch.cat(parts, -1)


def _probs(store, qs, k, table_rows, mask, reg, K):
    """Probabilities ``(BH, C, T)`` of one query chunk, computed in ``store`` (the scores, softmaxed in place).

    Deterministic, so the backward pass recomputes exactly the forward's probabilities without saving them.
    """
    BH, C, _ = qs.shape
    T = k.shape[1]
    scores = _block(store, BH, C, T, K)
    torch.bmm(qs, k.transpose(1, 2), out=scores)  # (BH, C, T)
    _add_relative(store, scores, torch.matmul(qs, table_rows.t()), reg)
    if mask is not None:
        scores.view(mask.shape[0], -1, C, T).add_(mask)  # (B, 1|H, 1, T) broadcast
    return torch.ops.aten._softmax.out(scores, -1, False, out=scores)


def _forward_chunks(q, k, v, table, mask, dropout_p, seed, K, keep_probs=False):
    """Forward pass over query chunks of ``(BH, T, D)`` inputs. Returns ``(out (BH, T, D), kept, bits)``:
    each chunk's probabilities (before dropout) when ``keep_probs``, and its packed dropout mask."""
    BH, T, D = q.shape
    chunk = _chunk_size(BH, T)
    out = torch.empty_like(q)
    kept, bits = [], []
    store = None
    for c, start in enumerate(range(0, T, chunk)):
        end = min(T, start + chunk)
        reg = _regions(start, end - start, T, K, q.dtype, q.device)
        rows = table.index_select(0, reg.rows)  # (width [+ 2], D)
        if store is None or keep_probs:  # one buffer for every chunk unless the chunks are kept
            store = _buffer(BH, min(chunk, T), T, K, q)
        probs = _probs(store, q[:, start:end] * (1.0 / math.sqrt(D)), k, rows, mask, reg, K)
        if keep_probs:
            kept.append(probs.clone() if dropout_p > 0 else probs)
        if dropout_p > 0:
            keep = _dropout_keep(probs.shape, dropout_p, None if seed is None else seed + c, q.device)
            bits.append(_pack_bits(keep))
            probs.mul_(keep).mul_(1.0 / (1.0 - dropout_p))
        out[:, start:end] = torch.bmm(probs, v) + torch.matmul(_relative_mass(store, probs, reg), rows)
    return out, kept, bits


def _whole_sequence(q, k, v, table, mask, max_relative_position):
    """All queries in one block, no in-place writes or strided views: the form graph exporters (ONNX,
    torch.export) can trace with symbolic sequence lengths. Memory is ``B * H * T * T`` scores, still never a
    ``(T, T, D)`` tensor."""
    T, D = q.shape[-2], q.shape[-1]
    table = table.to(q.dtype)
    buckets = relative_buckets(torch.arange(T, device=q.device), T, max_relative_position)  # (T, T)
    qs = q * (1.0 / math.sqrt(D))
    scores = torch.gather(torch.matmul(qs, table.t()), -1, buckets.expand(*q.shape[:-2], T, T))  # (B, H, T, T)
    scores = scores + torch.matmul(qs, k.transpose(-1, -2))
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    mass = probs.new_zeros(*probs.shape[:-1], table.shape[0]).scatter_add(-1, buckets.expand(probs.shape), probs)
    return torch.matmul(probs, v) + torch.matmul(mass, table)


class _RelativeAttention(torch.autograd.Function):
    """Chunked relative attention with recomputation in backward; see the module docstring.

    Inputs are ``(B, H, T, D)``; ``seed`` None draws dropout from the global generator, an int reproducibly.
    """

    @staticmethod
    def forward(ctx, q, k, v, table, mask, dropout_p, seed, max_relative_position):
        B, H, T, D = q.shape
        q3, k3, v3 = (x.reshape(B * H, T, D) for x in (q, k, v))
        keep = T <= KEEP_PROBS_MAX_LENGTH
        out, kept, bits = _forward_chunks(q3, k3, v3, table, mask, dropout_p, seed, max_relative_position, keep)
        ctx.save_for_backward(q3, k3, v3, table, mask, out, *kept, *bits)
        ctx.params = (dropout_p, max_relative_position, len(kept))
        return out.view(B, H, T, D)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, table, mask, out, *saved = ctx.saved_tensors
        dropout_p, K, n_kept = ctx.params
        kept, bits = saved[:n_kept], saved[n_kept:]
        BH, T, D = q.shape
        scale = 1.0 / math.sqrt(D)
        g_all = grad_out.reshape(BH, T, D)
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        # D_i = sum_j dA_ij a_ij = dout_i . out_i (both value and relative terms included), as in flash attention.
        delta = (g_all * out).sum(-1, keepdim=True)  # (BH, T, 1)
        chunk = _chunk_size(BH, T)
        rows_max = min(chunk, T)
        grad_store = _buffer(BH, rows_max, T, K, q)
        prob_store = None if kept else _buffer(BH, rows_max, T, K, q)
        for c, start in enumerate(range(0, T, chunk)):
            end = min(T, start + chunk)
            reg = _regions(start, end - start, T, K, q.dtype, q.device)
            rows = table.index_select(0, reg.rows)
            qs = q[:, start:end] * scale
            # recomputed (identical to the forward's) unless kept for short sequences
            probs = kept[c] if kept else _probs(prob_store, qs, k, rows, mask, reg, K)
            g = g_all[:, start:end]  # (BH, C, D)
            dprobs = _block(grad_store, BH, end - start, T, K)
            torch.bmm(g, v.transpose(1, 2), out=dprobs)  # (BH, C, T)
            _add_relative(grad_store, dprobs, torch.matmul(g, rows.t()), reg)
            if dropout_p > 0:
                keep = _unpack_bits(bits[c], T).to(q.dtype).mul_(1.0 / (1.0 - dropout_p))
                dv.baddbmm_((probs * keep).transpose(1, 2), g)
                dprobs.mul_(keep)
            else:
                dv.baddbmm_(probs.transpose(1, 2), g)
            dscores = dprobs.sub_(delta[:, start:end]).mul_(probs)  # (BH, C, T)
            dqs = torch.bmm(dscores, k) + torch.matmul(_relative_mass(grad_store, dscores, reg), rows)
            dq[:, start:end] = dqs * scale
            dk.baddbmm_(dscores.transpose(1, 2), qs)
        shape = grad_out.shape
        return dq.view(shape), dk.view(shape), dv.view(shape), None, None, None, None, None


def relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    max_relative_position: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """NEZHA relative self-attention, eager path (any device; the fused kernel's reference).

    Args:
        q, k, v: ``(B, H, T, D)`` projected queries, keys and values.
        table: ``(2K+1, D)`` relative position table from :func:`nezha.model.positions.relative_position_table`.
        mask: additive float mask ``(B, 1, 1, T)`` (0 to keep, a large negative to drop) or None.
        max_relative_position: K.
        dropout_p: attention-probability dropout (pass 0 in eval mode).

    Returns:
        ``(B, H, T, D)`` context vectors.
    """
    # Half types run in fp32 here: the band/region arithmetic works in one dtype, and CPU half matmuls are slow.
    dtype = q.dtype
    work = _compute_dtype(dtype)
    # Head-split projections arrive as strided views; batched matmuls over contiguous heads are markedly faster.
    q, k, v = (x.to(work).contiguous() for x in (q, k, v))
    table = table.to(work)
    if mask is not None:
        mask = mask.to(work)
    with torch.autocast(device_type=q.device.type, enabled=False):
        if torch.compiler.is_exporting():
            return _whole_sequence(q, k, v, table, mask, max_relative_position).to(dtype)
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            out = _RelativeAttention.apply(q, k, v, table, mask, dropout_p, None, max_relative_position)
            return out.to(dtype)
        # Inference (and ONNX tracing): the same computation without the autograd wrapper.
        B, H, T, D = q.shape
        q3, k3, v3 = (x.view(B * H, T, D) for x in (q, k, v))
        out = _forward_chunks(q3, k3, v3, table, mask, dropout_p, None, max_relative_position)[0]
        return out.view(B, H, T, D).to(dtype)
