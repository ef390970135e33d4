"""NEZHA functional relative attention, computed without any ``(T, T, D)`` tensor.

Shape legend: ``B`` batch, ``H`` heads, ``T`` query/key length, ``C`` a chunk of queries, ``D`` head size,
``K`` max relative distance, ``P = 2K + 1`` relative buckets.

The math (NEZHA paper, section 3.2; one table shared by keys, values, heads and layers)::

    bucket(i, j) = clip(j - i, -K, K) + K          r_ij = table[bucket(i, j)]
    s_ij  = (q_i . k_j + q_i . r_ij) / sqrt(D) + mask_j
    a_ij  = softmax_j(s_ij)
    out_i = sum_j a_ij v_j + sum_j a_ij r_ij

Per query row the keys fall into three regions: left (``j <= i - K``, bucket 0), right (``j >= i + K``, bucket 2K)
and the band (``|j - i| < K``). Outside the band the relative term is one of two constants per row
(``c_left(i) = q_i . r_0``, ``c_right(i) = q_i . r_2K``). Queries are processed in chunks of ``C`` rows; for a
chunk, most of each region is a rectangle of keys that are in it for every row, and the rest is a triangle of
about ``C^2 / 2`` entries next to the band:

- rectangles ride along in the matmuls: keys and values are stored once per call as ``(BH, T, D + 3)`` with two
  0/1 columns marking the rectangles' keys and a last column (the padding mask for keys, ones for values), and
  the chunk's queries as ``[q, c_left, c_right, 1]``, so ``q @ k.T`` arrives with the rectangles' constants and
  the mask already added, and ``a @ v`` with the rectangles' attention masses;
- the band's bias ``q @ table[band].T`` (``(.., C, 2K-1)``) is added along its diagonals through a strided view
  (each diagonal is a column of the view), and the triangles' constants by a multiply-add with a ``(C, ~C)``
  indicator inside a strip of keys;
- the value term is the band's diagonals (read through the same view) times their table rows plus each region's
  mass (rectangle + strip) times its row.

Every pass over the ``(C, T)`` scores is a matmul, a softmax or a contiguous in-place elementwise op on a strip;
no ``(C, T)`` index tensor, gather or scatter (``docs/attention.md`` has the profile). The band view works on a
buffer with ``K`` slack elements on either side: out-of-range band entries alias neighbouring rows or slack, are
masked to zero when read and add exactly zero when written.

The eager path is a custom autograd function that processes queries in chunks and keeps ``out`` and the
extended queries, keys and values for the backward pass (which runs the same steps on ``dO @ v.T`` and
``dS``), recomputing the probabilities there (as flash attention does) for sequences longer than
``KEEP_PROBS_MAX_LENGTH``. Activation memory therefore grows like ``T * D``, not ``T * T`` (plus one bit per
probability under dropout: the keep-mask is drawn once and saved packed), which is what lets training run on
sequences of thousands of tokens on a CPU.
"""

from __future__ import annotations

import functools
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
# Queries per chunk at most: the triangles cost ~C^2 per region against C * T for the rest, while every chunk
# pays a fixed number of op dispatches (64 is fastest for NEZHA-base at T = 512 on CPU: benchmarks/bench_model.py).
CHUNK_ROWS = 64
# While torch.compile traces, the chunk loop is unrolled into the graph: larger chunks keep it (and the compile
# time) small, and the generated code does not pay per-op dispatch.
COMPILED_CHUNK_ROWS = 256


def _chunk_size(batch_heads: int, length: int) -> int:
    cap = COMPILED_CHUNK_ROWS if torch.compiler.is_compiling() else CHUNK_ROWS
    return max(16, min(cap, CHUNK_ELEMENTS // max(1, batch_heads * length)))


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


class _Strip(NamedTuple):
    """Keys ``lo .. hi - 1`` where a clipped region's triangle meets the chunk: ``ind[r, j - lo]`` is 1 where key
    ``j`` is in the region for query row ``start + r``."""

    lo: int
    hi: int
    ind: torch.Tensor  # (C, hi - lo, 1)


class _Chunk(NamedTuple):
    """Where the relative terms of query rows ``start .. stop - 1`` live (see the module docstring).

    Keys ``0 .. left.lo - 1`` are in the left region for every row of the chunk and keys ``right.hi .. T - 1`` in
    the right one: those rectangles ride along in the matmuls as two extra key columns (``rectangles``). The rest
    of each region is a triangle inside the ``left``/``right`` strip. ``rows`` are the table rows the chunk needs:
    band buckets ``p_lo .. p_lo + width - 1`` (those with ``|j - i| < K`` and some key in range), then 0 and 2K.
    """

    start: int
    stop: int
    p_lo: int
    width: int
    groups: int  # interleaved row groups that make a band write touch each element at most once
    valid: torch.Tensor | None  # (C, width): band entry's key inside 0..T-1; None where all are
    left: _Strip
    right: _Strip
    rectangles: torch.Tensor  # (T, 2): key in the left / right region for every row
    rows: torch.Tensor  # (width + 2,) table rows: p_lo and width depend on T and K only, so every chunk's are alike


def _chunk(start: int, stop: int, length: int, K: int, dtype: torch.dtype, device: torch.device) -> _Chunk:
    p_lo, p_hi = max(1, K - length + 1), min(2 * K - 1, K + length - 1)
    width = max(0, p_hi - p_lo + 1)
    i = torch.arange(start, stop, device=device)[:, None]  # (C, 1)
    j = i + torch.arange(p_lo, p_lo + width, device=device) - K  # (C, width) band keys
    inside = (j >= 0) & (j < length)
    valid = None if start + p_lo - K >= 0 and stop - 1 + p_lo + width - 1 - K < length else inside.to(dtype)

    def clamp(x: int) -> int:
        return min(max(x, 0), length)

    keys = torch.arange(length, device=device)
    left_lo = clamp(start - K + 1)  # keys before: j <= start - K <= i - K for every row
    left_hi = max(left_lo, clamp(stop - K))  # keys from here on: j >= stop - K > i - K for every row
    right_lo, right_hi = clamp(start + K), clamp(stop - 1 + K)  # keys from right_hi on: j >= i + K for every row
    left = _Strip(left_lo, left_hi, (keys[left_lo:left_hi] <= i - K).to(dtype)[..., None])
    right = _Strip(right_lo, right_hi, (keys[right_lo:right_hi] >= i + K).to(dtype)[..., None])
    rectangles = torch.stack((keys < left_lo, keys >= right_hi), -1).to(dtype)
    rows = torch.cat((torch.arange(p_lo, p_lo + width, device=device), torch.tensor([0, 2 * K], device=device)))
    groups = (width - 1) // (length + 1) + 1 if width else 0
    return _Chunk(start, stop, p_lo, width, groups, valid, left, right, rectangles, rows)


_cached_chunk = functools.lru_cache(maxsize=512)(_chunk)


def _chunks(length: int, K: int, rows: int, dtype: torch.dtype, device: torch.device) -> list[_Chunk]:
    """The chunks of ``rows`` queries covering ``0 .. length - 1``; their index tensors are built once per shape
    (cached), except while torch.compile traces (it records them as constants)."""
    make = _chunk if torch.compiler.is_compiling() else _cached_chunk
    return [make(s, min(length, s + rows), length, K, dtype, device) for s in range(0, length, rows)]


def _extended(x: torch.Tensor, last: torch.Tensor | float, scale: float = 1.0) -> torch.Tensor:
    """``(B * H, T, D + 3)`` from ``(B, H, T, D)`` (any strides): ``x * scale``, two columns set per chunk (the
    region rectangles for keys and values, :func:`_set_rectangles`; the region constants for queries and output
    gradients) and ``last`` (the additive mask for keys, -D_i for output gradients, 1 otherwise).

    One copy per call, in the layout the chunks' matmuls read directly."""
    B, H, T, D = x.shape
    ext = x.new_empty(B, H, T, D + 3)
    ext[..., :D] = x
    if scale != 1.0:
        ext[..., :D].mul_(scale)
    if isinstance(last, torch.Tensor):
        ext[..., D + 2] = last  # (B|1, 1|H, T)
    else:
        ext[..., D + 2] = last
    return ext.view(B * H, T, D + 3)


def _set_rectangles(chunks: list[_Chunk], c: int, *extended: torch.Tensor) -> None:
    """Point the rectangle columns of the extended keys/values at chunk ``c``; after chunk ``c - 1`` only the keys
    that changed region are written."""
    ch, prev = chunks[c], chunks[c - 1] if c else None
    for ext in extended:
        D = ext.shape[-1] - 3
        if prev is None:
            ext[..., D:D + 2] = ch.rectangles
        else:
            ext[:, prev.left.lo:ch.left.lo, D] = 1.0
            ext[:, prev.right.hi:ch.right.hi, D + 1] = 0.0


def _buffer(batch_heads: int, rows: int, length: int, K: int, like: torch.Tensor) -> torch.Tensor:
    """Flat storage for one ``(BH, C, T)`` block with K zeroed elements on either side, so every band view
    (below) stays inside it and reads only finite values."""
    store = like.new_empty(batch_heads * rows * length + 2 * K)
    store[:K].zero_()
    store[store.numel() - K:].zero_()
    return store


def _block(store: torch.Tensor, batch_heads: int, rows: int, length: int, K: int) -> torch.Tensor:
    return store[K:K + batch_heads * rows * length].view(batch_heads, rows, length)  # (BH, C, T)


def _band(store: torch.Tensor, block: torch.Tensor, ch: _Chunk) -> torch.Tensor:
    """``(BH, C, width)`` view of ``block`` whose entry ``[b, r, p - p_lo]`` is ``block[b, r, j]`` with
    ``j = i + p - K``: the band's diagonals, as columns. Out-of-range keys alias neighbouring rows or the slack."""
    BH, C, T = block.shape
    return torch.as_strided(store, (BH, C, ch.width), (C * T, T + 1, 1), ch.start + ch.p_lo)  # store: offset 0


def _add_relative(store: torch.Tensor, block: torch.Tensor, rel: torch.Tensor, ch: _Chunk) -> None:
    """``block[b, r, j] += rel[b, r, bucket(i, j)]`` in place outside the rectangles (which the matmul filling
    ``block`` already covered), with ``rel`` ``(BH, C, width + 2)`` (the score bias ``q . table`` or its gradient's
    twin ``dO . table``): a strided add over the band's diagonals and, in each strip, the row's region constant
    times the 0/1 indicator. No ``(C, T)`` index, no gather."""
    if ch.width:
        band = _band(store, block, ch)
        # out-of-range entries add exactly 0 to whatever they alias; groups keep each write's elements distinct
        values = rel[..., :ch.width] if ch.valid is None else rel[..., :ch.width] * ch.valid
        for g in range(ch.groups):
            band[:, g::ch.groups].add_(values[:, g::ch.groups])
    for n, strip in enumerate((ch.left, ch.right)):
        if strip.hi > strip.lo:
            block[..., strip.lo:strip.hi].addcmul_(rel[..., ch.width + n, None], strip.ind[..., 0])


def _relative_term(store: torch.Tensor, block: torch.Tensor, rectangles: torch.Tensor, table_rows: torch.Tensor,
                   ch: _Chunk) -> torch.Tensor:
    """``sum_j block[b, r, j] * table[bucket(i, j)]``: ``(BH, C, D)``, the transpose of :func:`_add_relative`.

    The band's diagonals multiply their table rows directly from the strided view; each region's mass is its
    rectangle's sum (``rectangles`` ``(BH, C, 2)``, from the matmul with the extended keys or values) plus its
    strip (a batched matmul with the indicators)."""
    regions = []
    for n, strip in enumerate((ch.left, ch.right)):
        mass = rectangles[..., n]
        if strip.hi > strip.lo:  # (C, BH, w) @ (C, w, 1): each row's strip dotted with its indicator
            mass = mass + torch.bmm(block[..., strip.lo:strip.hi].transpose(0, 1), strip.ind).squeeze(-1).t()
        regions.append(mass)
    term = torch.matmul(torch.stack(regions, -1), table_rows[ch.width:])  # (BH, C, D)
    if ch.width:
        band = _band(store, block, ch)
        term.add_(torch.matmul(band if ch.valid is None else band * ch.valid, table_rows[:ch.width]))
    return term


def _probs(store, qx, kx, scaled_rows, ch, K):
    """Probabilities ``(BH, C, T)`` of one query chunk, computed in ``store`` (the scores, softmaxed in place).

    ``qx`` ``(BH, C, D + 3)`` are the chunk's rows of the extended queries, whose two middle columns get the
    region constants here; ``kx`` are the extended keys (scaled by 1/sqrt(D), rectangles set for ``ch``) and
    ``scaled_rows`` the chunk's table rows, scaled alike. One matmul gives ``q . k``, the region rectangles'
    constants and the padding mask. Deterministic, so the backward pass recomputes exactly the forward's
    probabilities.
    """
    BH, C, Dx = qx.shape
    T = kx.shape[1]
    rel = torch.matmul(qx[..., :Dx - 3], scaled_rows.t())  # (BH, C, width + 2): band terms, c_left, c_right
    qx[..., Dx - 3:Dx - 1] = rel[..., ch.width:]
    scores = _block(store, BH, C, T, K)
    torch.bmm(qx, kx.transpose(1, 2), out=scores)  # (BH, C, T)
    _add_relative(store, scores, rel, ch)
    return torch.ops.aten._softmax.out(scores, -1, False, out=scores)


def _forward_chunks(qx, kx, vx, table, dropout_p, seed, K, heads, rows, keep_probs=False):
    """Forward pass over query chunks of extended queries, keys and values (:func:`_extended`; keys scaled).
    Returns ``(out, kept, bits)``: ``out`` ``(B, H, T, D)`` stored as ``(B, T, H, D)`` (so merging the heads
    after is a view), each chunk's probabilities (before dropout) when ``keep_probs``, and its packed dropout
    masks."""
    BH, T, Dx = qx.shape
    B, H, D = BH // heads, heads, Dx - 3
    out = qx.new_empty(B, T, H, D).transpose(1, 2)
    kept, bits = [], []
    store = None
    chunks = _chunks(T, K, rows, qx.dtype, qx.device)
    table_rows = table.index_select(0, chunks[0].rows)  # (width + 2, D): the same rows for every chunk
    scaled_rows = table_rows * (1.0 / math.sqrt(D))
    for c, ch in enumerate(chunks):
        C = ch.stop - ch.start
        _set_rectangles(chunks, c, kx, vx)
        if store is None or keep_probs:  # one buffer for every chunk unless the chunks are kept
            store = _buffer(BH, min(rows, T), T, K, qx)
        probs = _probs(store, qx[:, ch.start:ch.stop], kx, scaled_rows, ch, K)
        if keep_probs:
            kept.append(probs.clone() if dropout_p > 0 else probs)
        if dropout_p > 0:
            keep = _dropout_keep(probs.shape, dropout_p, None if seed is None else seed + c, qx.device)
            bits.append(_pack_bits(keep))
            probs.mul_(keep).mul_(1.0 / (1.0 - dropout_p))
        ox = torch.bmm(probs, vx)  # (BH, C, D + 3): a @ v, the rectangles' masses, (the row sum)
        res = _relative_term(store, probs, ox[..., D:D + 2], table_rows, ch).add_(ox[..., :D])
        out[:, :, ch.start:ch.stop] = res.view(B, H, C, D)
    return out, kept, bits


def _extend_inputs(q, k, v, mask):
    """Extended queries, keys (scaled by 1/sqrt(D), with the mask) and values for :func:`_forward_chunks`."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return _extended(q, 1.0), _extended(k, 0.0 if mask is None else mask.squeeze(-2), scale), _extended(v, 1.0)


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


def _accumulate(total: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``total + a @ b`` in place; the first product starts the total (``beta=0`` ignores the uninitialised
    accumulator, no zero fill)."""
    if total is None:
        return a.new_empty(a.shape[0], a.shape[1], b.shape[2]).baddbmm_(a, b, beta=0)
    return total.baddbmm_(a, b)


class _RelativeAttention(torch.autograd.Function):
    """Chunked relative attention with recomputation in backward; see the module docstring.

    Inputs are ``(B, H, T, D)`` (any strides); ``seed`` None draws dropout from the global generator, an int
    reproducibly.
    """

    @staticmethod
    def forward(ctx, q, k, v, table, mask, dropout_p, seed, max_relative_position):
        qx, kx, vx = _extend_inputs(q, k, v, mask)
        B, H, T, _ = q.shape
        rows = _chunk_size(B * H, T)  # the backward pass uses the same chunks
        out, kept, bits = _forward_chunks(qx, kx, vx, table, dropout_p, seed, max_relative_position, H, rows,
                                          T <= KEEP_PROBS_MAX_LENGTH)
        ctx.save_for_backward(table, out, *kept, *bits)
        # Intermediates kept on ctx, not saved: backward rewrites their per-chunk columns (which every use sets
        # first), and saved tensors may not change.
        ctx.extended = (qx, kx, vx)
        ctx.params = (dropout_p, max_relative_position, len(kept), rows)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        table, out, *saved = ctx.saved_tensors
        qx, kx, vx = ctx.extended
        dropout_p, K, n_kept, rows = ctx.params
        kept, bits = saved[:n_kept], saved[n_kept:]
        B, H, T, D = grad_out.shape
        BH = B * H
        scale = 1.0 / math.sqrt(D)
        # D_i = sum_j dA_ij a_ij = dout_i . out_i (both value and relative terms included), as in flash attention.
        # Without dropout -D_i rides along in the dA matmul (against the values' column of ones); with it, it is
        # subtracted after the keep-mask.
        minus_delta = (grad_out * out).sum(-1).neg_()  # (B, H, T)
        gx = _extended(grad_out, 0.0 if dropout_p > 0 else minus_delta)
        minus_delta = minus_delta.reshape(BH, T, 1)
        dq = grad_out.new_empty(B, T, H, D).transpose(1, 2)  # stored as (B, T, H, D), like the forward's output
        dk = dv = None  # the first chunk's products, then accumulated
        grad_store = _buffer(BH, min(rows, T), T, K, gx)
        prob_store = None if kept else _buffer(BH, min(rows, T), T, K, gx)
        chunks = _chunks(T, K, rows, gx.dtype, gx.device)
        table_rows = table.index_select(0, chunks[0].rows)
        scaled_rows = table_rows * scale
        for c, ch in enumerate(chunks):
            C = ch.stop - ch.start
            _set_rectangles(chunks, c, kx, vx)
            qc = qx[:, ch.start:ch.stop]
            # recomputed (identical to the forward's) unless kept for short sequences
            probs = kept[c] if kept else _probs(prob_store, qc, kx, scaled_rows, ch, K)
            gc = gx[:, ch.start:ch.stop]  # (BH, C, D + 3): dO, its region constants, -D_i (or 0)
            rel = torch.matmul(gc[..., :D], table_rows.t())  # (BH, C, width + 2)
            gc[..., D:D + 2] = rel[..., ch.width:]
            dprobs = _block(grad_store, BH, C, T, K)
            torch.bmm(gc, vx.transpose(1, 2), out=dprobs)  # (BH, C, T)
            _add_relative(grad_store, dprobs, rel, ch)
            if dropout_p > 0:
                keep = _unpack_bits(bits[c], T).to(gx.dtype).mul_(1.0 / (1.0 - dropout_p))
                dv = _accumulate(dv, (probs * keep).transpose(1, 2), gc[..., :D])
                dprobs.mul_(keep).add_(minus_delta[:, ch.start:ch.stop])
            else:
                dv = _accumulate(dv, probs.transpose(1, 2), gc[..., :D])
            dscores = dprobs.mul_(probs)  # (BH, C, T)
            dx = torch.bmm(dscores, kx)  # (BH, C, D + 3): dS @ k, the rectangles' masses, (dS @ mask: unused)
            dqc = _relative_term(grad_store, dscores, dx[..., D:D + 2], scaled_rows, ch).add_(dx[..., :D])
            dq[:, :, ch.start:ch.stop] = dqc.view(B, H, C, D)
            dk = _accumulate(dk, dscores.transpose(1, 2), qc[..., :D])
        return dq, dk.mul_(scale).view(B, H, T, D), dv.view(B, H, T, D), None, None, None, None, None


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
        q, k, v: ``(B, H, T, D)`` projected queries, keys and values (any strides: head-split views are read
            as they are).
        table: ``(2K+1, D)`` relative position table from :func:`nezha.model.positions.relative_position_table`.
        mask: additive float mask ``(B, 1|H, 1, T)`` (0 to keep, a large negative to drop) or None.
        max_relative_position: K.
        dropout_p: attention-probability dropout (pass 0 in eval mode).

    Returns:
        ``(B, H, T, D)`` context vectors, stored as ``(B, T, H, D)`` so that merging the heads is a view.
    """
    # Half types run in fp32 here: the band/region arithmetic works in one dtype, and CPU half matmuls are slow.
    dtype = q.dtype
    work = _compute_dtype(dtype)
    q, k, v, table = (x.to(work) for x in (q, k, v, table))
    if mask is not None:
        mask = mask.to(work)
    with torch.autocast(device_type=q.device.type, enabled=False):
        if torch.compiler.is_exporting():
            return _whole_sequence(q, k, v, table, mask, max_relative_position).to(dtype)
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            out = _RelativeAttention.apply(q, k, v, table, mask, dropout_p, None, max_relative_position)
            return out.to(dtype)
        # Inference (and ONNX tracing): the same computation without the autograd wrapper.
        qx, kx, vx = _extend_inputs(q, k, v, mask)
        B, H, T, _ = q.shape
        out = _forward_chunks(qx, kx, vx, table, dropout_p, None, max_relative_position, H, _chunk_size(B * H, T))[0]
        return out.to(dtype)
