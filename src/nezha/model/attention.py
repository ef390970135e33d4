"""NEZHA functional relative attention, computed without any ``(T, T, D)`` tensor.

Shape legend: ``B`` batch, ``H`` heads, ``T`` query/key length, ``C`` a chunk of queries, ``D`` head size,
``K`` max relative distance, ``P = 2K + 1`` relative buckets.

The math (NEZHA paper, section 3.2; one table shared by keys, values, heads and layers)::

    bucket(i, j) = clip(j - i, -K, K) + K          r_ij = table[bucket(i, j)]
    s_ij  = (q_i . k_j + q_i . r_ij) / sqrt(D) + mask_j
    a_ij  = softmax_j(s_ij)
    out_i = sum_j a_ij v_j + sum_j a_ij r_ij

Two observations keep this cheap. The key term ``q_i . r_ij`` is a gather from ``q @ table.T`` (``(.., T, P)``),
and the value term is ``mass @ table`` where ``mass[i, p]`` is the attention probability that query ``i`` puts on
bucket ``p`` (a scatter-add of ``a`` into ``P`` bins). Neither needs ``(T, T, D)`` memory.

On top of that the eager path is a custom autograd function that processes queries in chunks and saves only
``q, k, v, out`` and the log-sum-exp per query for the backward pass, recomputing the probabilities there
(as flash attention does). Activation memory therefore grows like ``T * D``, not ``T * T``, which is what lets
training run on sequences of thousands of tokens on a CPU.
"""

from __future__ import annotations

import math

import torch

from nezha.model.positions import relative_buckets

# Elements of one (B, H, C, T) score block; bounds the transient memory of a chunk (~32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23
# Up to this length the backward pass reuses the forward's probabilities instead of recomputing them: there they
# cost at most about a quarter of a layer's other saved activations (H * T^2 vs ~18 * T * H * D per sequence), and
# skipping the recomputation is worth more. Longer sequences recompute, so memory stays linear in T.
KEEP_PROBS_MAX_LENGTH = 256


def _chunk_size(batch: int, heads: int, length: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(1, batch * heads * length))


def _dropout_keep(shape: torch.Size, p: float, seed: int, device: torch.device) -> torch.Tensor:
    """A dropout keep-mask that the backward pass can regenerate from ``seed`` instead of storing it."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return torch.rand(shape, generator=gen, device=device) >= p


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax and gradient accumulation run in fp32 for half types, in the input precision otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _probs(qs, k, table, mask, buckets):
    """Probabilities ``(B, H, C, T)`` of one query chunk, in the accumulation dtype.

    Deterministic, so the backward pass recomputes exactly the forward's probabilities without saving them.
    The relative bias is gathered into a fresh buffer that ``q @ k.T`` then accumulates into (one pass and
    one large allocation fewer than adding two score tensors).
    """
    B, H, C, D = qs.shape
    T = k.shape[-2]
    rel = torch.matmul(qs, table.t())  # (B, H, C, P)
    scores = torch.gather(rel, -1, buckets.expand(B, H, C, T))  # (B, H, C, T)
    scores = torch.baddbmm(
        scores.view(B * H, C, T), qs.reshape(B * H, C, D), k.reshape(B * H, T, D).transpose(1, 2)
    ).view(B, H, C, T)
    scores = scores.to(_acc_dtype(qs.dtype))
    if mask is not None:
        scores = scores + mask  # (B, 1, 1, T) broadcast
    return torch.softmax(scores, dim=-1)


def _bucket_mass(weights: torch.Tensor, buckets: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Sum ``weights[..., i, j]`` into bins ``buckets[i, j]``: ``(B, H, C, T) -> (B, H, C, P)``."""
    out = weights.new_zeros(*weights.shape[:-1], num_buckets)
    return out.scatter_add_(-1, buckets.expand(weights.shape), weights)


def _forward_chunks(q, k, v, table, mask, dropout_p, seed, max_relative_position, keep_probs=False):
    """Forward pass over query chunks. Returns ``(out (B, H, T, D), chunk, kept)``, ``kept`` holding each chunk's
    probabilities (before dropout) when ``keep_probs``."""
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D)
    table = table.to(q.dtype)
    P = table.shape[0]
    chunk = _chunk_size(B, H, T)
    out = torch.empty_like(q)
    positions = torch.arange(T, device=q.device)
    kept = []
    for c, start in enumerate(range(0, T, chunk)):
        end = min(T, start + chunk)
        buckets = relative_buckets(positions[start:end], T, max_relative_position)  # (C, T)
        probs = _probs(q[:, :, start:end] * scale, k, table, mask, buckets)
        if keep_probs:
            kept.append(probs)
        if dropout_p > 0:
            probs = probs * _dropout_keep(probs.shape, dropout_p, seed + c, q.device) / (1.0 - dropout_p)
        probs = probs.to(q.dtype)
        out[:, :, start:end] = torch.matmul(probs, v) + torch.matmul(_bucket_mass(probs, buckets, P), table)
    return out, chunk, kept


def _whole_sequence(q, k, v, table, mask, max_relative_position):
    """All queries in one block, no in-place writes: the form graph exporters (ONNX, torch.export) can trace
    with symbolic sequence lengths. Memory is ``B * H * T * T`` scores, still never a ``(T, T, D)`` tensor."""
    T, D = q.shape[-2], q.shape[-1]
    table = table.to(q.dtype)
    buckets = relative_buckets(torch.arange(T, device=q.device), T, max_relative_position)  # (T, T)
    probs = _probs(q * (1.0 / math.sqrt(D)), k, table, mask, buckets).to(q.dtype)  # (B, H, T, T)
    return torch.matmul(probs, v) + torch.matmul(_bucket_mass(probs, buckets, table.shape[0]), table)


class _RelativeAttention(torch.autograd.Function):
    """Chunked relative attention with recomputation in backward; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, table, mask, dropout_p, seed, max_relative_position):
        keep = q.shape[-2] <= KEEP_PROBS_MAX_LENGTH
        out, chunk, kept = _forward_chunks(q, k, v, table, mask, dropout_p, seed, max_relative_position, keep)
        ctx.save_for_backward(q, k, v, table.to(q.dtype), mask, out)
        ctx.params = (dropout_p, seed, max_relative_position, chunk)
        ctx.kept = kept  # internal buffers, never modified in place by anyone else
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, table, mask, out = ctx.saved_tensors
        dropout_p, seed, max_relative_position, chunk = ctx.params
        B, H, T, D = q.shape
        scale = 1.0 / math.sqrt(D)
        P = table.shape[0]
        grad_out = grad_out.to(q.dtype)
        dq = torch.empty_like(q)
        acc = _acc_dtype(q.dtype)
        dk = torch.zeros_like(q, dtype=acc)
        dv = torch.zeros_like(q, dtype=acc)
        positions = torch.arange(T, device=q.device)
        # D_i = sum_j dA_ij a_ij = dout_i . out_i (both value and relative terms included), as in flash attention.
        delta = (grad_out.to(acc) * out.to(acc)).sum(-1, keepdim=True)  # (B, H, T, 1)
        for c, start in enumerate(range(0, T, chunk)):
            end = min(T, start + chunk)
            buckets = relative_buckets(positions[start:end], T, max_relative_position)
            qs = q[:, :, start:end] * scale
            # recomputed (identical to the forward's) unless kept for short sequences
            probs = ctx.kept[c] if ctx.kept else _probs(qs, k, table, mask, buckets)
            g = grad_out[:, :, start:end]  # (B, H, C, D)
            dprobs = torch.gather(torch.matmul(g, table.t()), -1, buckets.expand(probs.shape))  # (B, H, C, T)
            dprobs += torch.matmul(g, v.transpose(-1, -2))
            dprobs = dprobs.to(acc)
            if dropout_p > 0:
                keep = _dropout_keep(probs.shape, dropout_p, seed + c, q.device) / (1.0 - dropout_p)
                dv += torch.matmul((probs * keep).to(q.dtype).transpose(-1, -2), g).to(acc)
                dprobs *= keep
            else:
                dv += torch.matmul(probs.to(q.dtype).transpose(-1, -2), g).to(acc)
            dscores = dprobs.sub_(delta[:, :, start:end]).mul_(probs).to(q.dtype)  # (B, H, C, T)
            dqs = torch.matmul(dscores, k) + torch.matmul(_bucket_mass(dscores, buckets, P), table)
            dq[:, :, start:end] = dqs * scale
            dk += torch.matmul(dscores.transpose(-1, -2), qs).to(acc)
        ctx.kept = None
        return dq, dk.to(q.dtype), dv.to(q.dtype), None, None, None, None, None


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
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
    # Head-split projections arrive as strided views; batched matmuls over contiguous heads are markedly faster.
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if mask is not None:
        mask = mask.to(_acc_dtype(q.dtype))
    with torch.autocast(device_type=q.device.type, enabled=False):
        if torch.compiler.is_exporting():
            return _whole_sequence(q, k, v, table, mask, max_relative_position)
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            return _RelativeAttention.apply(q, k, v, table, mask, dropout_p, seed, max_relative_position)
        # Inference (and ONNX tracing): the same computation without the autograd wrapper.
        return _forward_chunks(q, k, v, table, mask, dropout_p, seed, max_relative_position)[0]
