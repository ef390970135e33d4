"""NEZHA relative attention as one flash-attention-style Triton kernel (forward and backward).

Shape legend: ``B`` batch, ``H`` heads, ``T`` sequence length, ``D`` head size, ``K`` max relative distance,
``BM``/``BN`` query/key tile sizes.

The math (docs/attention.md has the derivation). With ``r_ij = table[clip(j - i, -K, K) + K]`` NEZHA computes
``softmax_j((q_i.k_j + q_i.r_ij) / sqrt(D) + mask_j)`` and ``out_i = sum_j a_ij (v_j + r_ij)``. Per query the keys
fall into three regions:

- left ``j <= i - K`` and right ``j >= i + K``: ``r_ij`` is the constant row ``table[0]`` / ``table[2K]``, so the
  score bias is one scalar per query and the value term needs only the probability mass of the region;
- band ``|j - i| < K``: ``table[j - i + K] = M(phi_i) U_j`` per pair of dims, a rotation by ``phi_i = (K - i) w``
  of ``U_j = (sin j w, cos j w)`` -- RoPE in disguise. The score bias is ``q'_i . U_j`` with the rotated query
  ``q'_i = M(phi_i)^T q_i``, and the value term is ``M(phi_i) sum_j a_ij U_j``: ``U`` rides along as extra value
  columns and is rotated back once per query.

Each program owns one query tile (forward, dq) or one key tile (dk, dv) and streams the other side in three loops
(band tiles, then the fully-left and fully-right tiles, which need no ``U`` work) with an online softmax in the
exp2 domain. Nothing of size ``(B, H, T, T)`` is ever stored: the forward saves the output, a base-2 log-sum-exp
per query and the rotated queries ``q'``; the backward (dq kernel first, which also writes the rotated output
gradients, then dk/dv) recomputes the probabilities tile by tile. Attention dropout regenerates its keep-mask from
a Philox seed and the element's ``(b, h, i, j)`` offset, so the backward pass sees the same mask.

Precision: matmuls take the input dtype (bf16/fp16 on tensor cores, fp32 as exact IEEE), softmax statistics and
accumulators are fp32. ``U`` and the rotations are computed in float64 on the host from the fp32 frequencies the
table uses, so the reconstructed band rows match ``table`` to fp32 rounding at any sequence length.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
import triton
import triton.language as tl

from nezha.model.attention import relative_attention as eager_relative_attention
from nezha.model.kernels import interpreting, unsupported_reason
from nezha.model.positions import relative_position_table

LOG2E = 1.4426950408889634

# Tile sizes used under the interpreter (and with NEZHA_TRITON_AUTOTUNE=0 on a GPU, where FIXED_GPU_BLOCKS apply).
INTERPRET_BLOCKS = {"fwd": (32, 32), "dkdv": (32, 32), "dq": (32, 32)}
# Small fixed tiles: lowest register and shared-memory pressure, so they compile for every dtype and head size.
FIXED_GPU_BLOCKS = {"fwd": (64, 64, 4, 2), "dkdv": (64, 64, 4, 2), "dq": (64, 64, 4, 2)}  # BM, BN, warps, stages


def autotune_choices() -> dict[str, dict[str, str]]:
    """The tile configurations the autotuner picked so far, per kernel and tuning key (for benchmark reports)."""
    return {name: {str(k): str(v) for k, v in getattr(tuned, "cache", {}).items()}
            for name, tuned in (("fwd", _fwd_tuned), ("dkdv", _dkdv_tuned), ("dq", _dq_tuned))}


# --------------------------------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------------------------------


@triton.jit
def _keep_mask(seed, bh, T, rows, cols, dropout_p):
    """Dropout keep-mask for queries ``rows`` x keys ``cols`` (broadcastable 2D): same bits in forward and backward."""
    offsets = (bh.to(tl.int64) * T + rows) * T + cols
    return tl.rand(seed, offsets) >= dropout_p


@triton.jit
def _mm(a, b, DOT_PREC: tl.constexpr):
    """``a @ b`` with fp32 accumulation. "upcast" runs bf16 operands as fp32: the interpreter's bf16 dot is wrong,
    and products of bf16 values are exact in fp32, so the result matches the tensor-core one."""
    if DOT_PREC == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def _swap_pairs(x, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """``x[:, d ^ 1]`` for a register tile ``(BLOCK, D)``: split into even/odd dims and join them swapped."""
    even, odd = tl.split(tl.reshape(x, (BLOCK, HEAD_DIM // 2, 2)))
    return tl.reshape(tl.join(odd, even), (BLOCK, HEAD_DIM))


@triton.jit
def _load_rows(base, stride_t, offs_t, T, HEAD_DIM: tl.constexpr, SWAP: tl.constexpr):
    """Rows ``offs_t`` of a ``(T, D)`` slice (dims pair-swapped when SWAP); rows past ``T`` read as zero."""
    offs_d = tl.arange(0, HEAD_DIM)
    if SWAP:
        offs_d = offs_d ^ 1
    return tl.load(base + offs_t[:, None] * stride_t + offs_d[None, :], mask=(offs_t < T)[:, None], other=0.0)


@triton.jit
def _rotate(base, stride_t, x, offs_t, T, Cos, Sin, HEAD_DIM: tl.constexpr):
    """``M(phi_i)^T x_i`` for the rows ``x`` (BM, D) loaded from ``base``: the query-side half of the band trick."""
    x_sw = _load_rows(base, stride_t, offs_t, T, HEAD_DIM, True).to(tl.float32)
    cs = _load_rows(Cos, HEAD_DIM, offs_t, T, HEAD_DIM, False)
    sn = _load_rows(Sin, HEAD_DIM, offs_t, T, HEAD_DIM, False)
    return (cs * x.to(tl.float32) + sn * x_sw).to(x.dtype)


@triton.jit
def _rotate_back(acc, offs_t, T, Cos, Sin, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """``M(phi_i) acc_i`` for fp32 register rows: turns sums of ``U_j`` into sums of ``table[j - i + K]``."""
    cs = _load_rows(Cos, HEAD_DIM, offs_t, T, HEAD_DIM, False)
    sn = _load_rows(Sin, HEAD_DIM, offs_t, T, HEAD_DIM, False)
    return cs * acc - sn * _swap_pairs(acc, BLOCK, HEAD_DIM)


# --------------------------------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_tiles(
    acc_v, acc_u, l_i, m_i, mass_l, mass_r,
    q, q_rot, c_left, c_right, offs_m,
    k_base, skt, v_base, svt, mask_base, U,
    lo, hi, T, K, qk_scale, seed, bh, dropout_p,
    REGION: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Key tiles ``lo..hi`` of one region (0 left, 1 band, 2 right) folded into the online-softmax state."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < T
        k = _load_rows(k_base, skt, offs_n, T, HEAD_DIM, False)
        v = _load_rows(v_base, svt, offs_n, T, HEAD_DIM, False)
        s = _mm(q, tl.trans(k), DOT_PREC) * qk_scale  # (BM, BN), log2 units
        if REGION == 1:
            u = _load_rows(U, HEAD_DIM, offs_n, T, HEAD_DIM, False)
            rel = offs_n[None, :] - offs_m[:, None]  # j - i
            in_band = (rel > -K) & (rel < K)
            is_left = rel <= -K
            s_rel = _mm(q_rot, tl.trans(u), DOT_PREC) * qk_scale
            s += tl.where(in_band, s_rel, tl.where(is_left, c_left[:, None], c_right[:, None]))
        elif REGION == 0:
            s += c_left[:, None]
        else:
            s += c_right[:, None]
        if HAS_MASK:
            s += tl.load(mask_base + offs_n, mask=n_valid, other=0.0)[None, :]
        s = tl.where(n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows whose keys so far are all -inf
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            keep = _keep_mask(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p)
            p = tl.where(keep, p / (1.0 - dropout_p), 0.0)
        acc_v = acc_v * alpha[:, None] + _mm(p.to(v.dtype), v, DOT_PREC)
        if REGION == 1:
            acc_u = acc_u * alpha[:, None] + _mm(tl.where(in_band, p, 0.0).to(u.dtype), u, DOT_PREC)
            mass_l = mass_l * alpha + tl.sum(tl.where(is_left, p, 0.0), 1)
            mass_r = mass_r * alpha + tl.sum(tl.where(rel >= K, p, 0.0), 1)
        elif REGION == 0:
            mass_l = mass_l * alpha + tl.sum(p, 1)
            mass_r = mass_r * alpha
        else:
            mass_l = mass_l * alpha
            mass_r = mass_r * alpha + tl.sum(p, 1)
        m_i = m_new
    return acc_v, acc_u, l_i, m_i, mass_l, mass_r


@triton.jit(do_not_specialize=["T", "K", "seed"])
def _fwd_kernel(
    Q, Kt, V, Out, Lse, QRot, Mask, U, Cos, Sin, Ends,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot, smb,
    H, T, K, sm_scale, seed, dropout_p,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = Q + b * sqb + h * sqh
    k_base = Kt + b * skb + h * skh
    v_base = V + b * svb + h * svh
    mask_base = Mask + b * smb
    qk_scale = sm_scale * 1.4426950408889634

    q = _load_rows(q_base, sqt, offs_m, T, HEAD_DIM, False)  # (BM, D)
    q_rot = _rotate(q_base, sqt, q, offs_m, T, Cos, Sin, HEAD_DIM)
    t_left = tl.load(Ends + offs_d)
    t_right = tl.load(Ends + HEAD_DIM + offs_d)
    c_left = tl.sum(q.to(tl.float32) * t_left[None, :], 1) * qk_scale  # (BM,)
    c_right = tl.sum(q.to(tl.float32) * t_right[None, :], 1) * qk_scale

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    mass_l = tl.zeros([BLOCK_M], tl.float32)
    mass_r = tl.zeros([BLOCK_M], tl.float32)
    acc_v = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    acc_u = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # Band keys of this query tile lie in (start_m - K, start_m + BM - 1 + K); tiles before are left, after right.
    band_lo = (tl.maximum(start_m - K + 1, 0) // BLOCK_N) * BLOCK_N
    band_hi = tl.cdiv(tl.minimum(start_m + BLOCK_M - 1 + K, T), BLOCK_N) * BLOCK_N
    acc_v, acc_u, l_i, m_i, mass_l, mass_r = _fwd_tiles(
        acc_v, acc_u, l_i, m_i, mass_l, mass_r, q, q_rot, c_left, c_right, offs_m,
        k_base, skt, v_base, svt, mask_base, U, band_lo, band_hi, T, K, qk_scale, seed, bh, dropout_p,
        1, BLOCK_N, HEAD_DIM, HAS_MASK, DROPOUT, DOT_PREC,
    )
    # acc_u is only touched by band tiles: rescale it once at the end instead of in every later tile.
    m_band = m_i
    acc_v, acc_u, l_i, m_i, mass_l, mass_r = _fwd_tiles(
        acc_v, acc_u, l_i, m_i, mass_l, mass_r, q, q_rot, c_left, c_right, offs_m,
        k_base, skt, v_base, svt, mask_base, U, 0, band_lo, T, K, qk_scale, seed, bh, dropout_p,
        0, BLOCK_N, HEAD_DIM, HAS_MASK, DROPOUT, DOT_PREC,
    )
    acc_v, acc_u, l_i, m_i, mass_l, mass_r = _fwd_tiles(
        acc_v, acc_u, l_i, m_i, mass_l, mass_r, q, q_rot, c_left, c_right, offs_m,
        k_base, skt, v_base, svt, mask_base, U, band_hi, T, T, K, qk_scale, seed, bh, dropout_p,
        2, BLOCK_N, HEAD_DIM, HAS_MASK, DROPOUT, DOT_PREC,
    )
    m_ref = tl.where(m_i == float("-inf"), 0.0, m_i)
    band_scale = tl.where(m_band == float("-inf"), 0.0, tl.exp2(m_band - m_ref))
    acc_u = acc_u * band_scale[:, None]

    out = acc_v + _rotate_back(acc_u, offs_m, T, Cos, Sin, BLOCK_M, HEAD_DIM)
    out += mass_l[:, None] * t_left[None, :] + mass_r[:, None] * t_right[None, :]
    out = out / l_i[:, None]
    m_valid = offs_m < T
    o_ptrs = Out + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_valid[:, None])
    tl.store(Lse + bh.to(tl.int64) * T + offs_m, m_ref + tl.log2(l_i), mask=m_valid)
    # The rotated queries, saved for the dk/dv kernel (which would otherwise rebuild them in every band tile).
    rows = bh.to(tl.int64) * T + offs_m
    tl.store(QRot + rows[:, None] * HEAD_DIM + offs_d[None, :], q_rot, mask=m_valid[:, None])


# --------------------------------------------------------------------------------------------------------------------
# Backward: dk, dv (one program per key tile)
# --------------------------------------------------------------------------------------------------------------------


@triton.jit
def _dkdv_tiles(
    dk, dv, k, v, u, offs_n, mask_add,
    q_base, sqt, do_base, sdt, lse_base, delta_base, qrot_base, dorot_base, t_left, t_right,
    lo, hi, T, K, qk_scale, seed, bh, dropout_p,
    REGION: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr,
    DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Query tiles ``lo..hi`` of one region (0: keys left of the queries, 1 band, 2 right) into dk, dv."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_valid = offs_m < T
        q = _load_rows(q_base, sqt, offs_m, T, HEAD_DIM, False)  # (BM, D)
        do = _load_rows(do_base, sdt, offs_m, T, HEAD_DIM, False)
        lse = tl.load(lse_base + offs_m, mask=m_valid, other=float("inf"))  # padded queries get p = 0
        delta = tl.load(delta_base + offs_m, mask=m_valid, other=0.0)
        s = _mm(k, tl.trans(q), DOT_PREC) * qk_scale  # (BN, BM)
        dp = _mm(v, tl.trans(do), DOT_PREC)  # (BN, BM)
        if REGION == 1:
            q_rot = _load_rows(qrot_base, HEAD_DIM, offs_m, T, HEAD_DIM, False)
            do_rot = _load_rows(dorot_base, HEAD_DIM, offs_m, T, HEAD_DIM, False)
            rel = offs_n[:, None] - offs_m[None, :]  # j - i
            in_band = (rel > -K) & (rel < K)
            is_left = rel <= -K
            c_left = tl.sum(q.to(tl.float32) * t_left[None, :], 1) * qk_scale
            c_right = tl.sum(q.to(tl.float32) * t_right[None, :], 1) * qk_scale
            g_left = tl.sum(do.to(tl.float32) * t_left[None, :], 1)
            g_right = tl.sum(do.to(tl.float32) * t_right[None, :], 1)
            s_rel = _mm(u, tl.trans(q_rot), DOT_PREC) * qk_scale
            s += tl.where(in_band, s_rel, tl.where(is_left, c_left[None, :], c_right[None, :]))
            dp_rel = _mm(u, tl.trans(do_rot), DOT_PREC)
            dp += tl.where(in_band, dp_rel, tl.where(is_left, g_left[None, :], g_right[None, :]))
        elif REGION == 0:
            s += (tl.sum(q.to(tl.float32) * t_left[None, :], 1) * qk_scale)[None, :]
            dp += tl.sum(do.to(tl.float32) * t_left[None, :], 1)[None, :]
        else:
            s += (tl.sum(q.to(tl.float32) * t_right[None, :], 1) * qk_scale)[None, :]
            dp += tl.sum(do.to(tl.float32) * t_right[None, :], 1)[None, :]
        p = tl.exp2(s + mask_add[:, None] - lse[None, :])  # (BN, BM) probabilities a_ij, transposed
        if DROPOUT:
            keep = _keep_mask(seed, bh, T, offs_m[None, :], offs_n[:, None], dropout_p)
            dv += _mm(tl.where(keep, p / (1.0 - dropout_p), 0.0).to(do.dtype), do, DOT_PREC)
            dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        else:
            dv += _mm(p.to(do.dtype), do, DOT_PREC)
        ds = p * (dp - delta[None, :])
        dk += _mm(ds.to(q.dtype), q, DOT_PREC)
    return dk, dv


@triton.jit(do_not_specialize=["T", "K", "seed"])
def _dkdv_kernel(
    Q, Kt, V, DO, DK, DV, Lse, Delta, QRot, DORot, Mask, U, Ends,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sgb, sgh, sgt, smb,
    H, T, K, sm_scale, seed, dropout_p,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    n_valid = offs_n < T
    qk_scale = sm_scale * 1.4426950408889634
    k = _load_rows(Kt + b * skb + h * skh, skt, offs_n, T, HEAD_DIM, False)  # (BN, D)
    v = _load_rows(V + b * svb + h * svh, svt, offs_n, T, HEAD_DIM, False)
    u = _load_rows(U, HEAD_DIM, offs_n, T, HEAD_DIM, False)
    if HAS_MASK:
        mask_add = tl.load(Mask + b * smb + offs_n, mask=n_valid, other=0.0)
    else:
        mask_add = tl.zeros([BLOCK_N], tl.float32)
    t_left = tl.load(Ends + offs_d)
    t_right = tl.load(Ends + HEAD_DIM + offs_d)
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh
    lse_base = Lse + bh.to(tl.int64) * T
    delta_base = Delta + bh.to(tl.int64) * T
    qrot_base = QRot + bh.to(tl.int64) * T * HEAD_DIM
    dorot_base = DORot + bh.to(tl.int64) * T * HEAD_DIM
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)

    # Queries that see this key tile in their band lie in (start_n - K, start_n + BN - 1 + K); earlier queries see
    # it on their right, later ones on their left.
    band_lo = (tl.maximum(start_n - K + 1, 0) // BLOCK_M) * BLOCK_M
    band_hi = tl.cdiv(tl.minimum(start_n + BLOCK_N - 1 + K, T), BLOCK_M) * BLOCK_M
    dk, dv = _dkdv_tiles(
        dk, dv, k, v, u, offs_n, mask_add, q_base, sqt, do_base, sdt, lse_base, delta_base, qrot_base, dorot_base,
        t_left, t_right, band_lo, band_hi, T, K, qk_scale, seed, bh, dropout_p,
        1, BLOCK_M, HEAD_DIM, DROPOUT, DOT_PREC,
    )
    dk, dv = _dkdv_tiles(
        dk, dv, k, v, u, offs_n, mask_add, q_base, sqt, do_base, sdt, lse_base, delta_base, qrot_base, dorot_base,
        t_left, t_right, 0, band_lo, T, K, qk_scale, seed, bh, dropout_p,
        2, BLOCK_M, HEAD_DIM, DROPOUT, DOT_PREC,
    )
    dk, dv = _dkdv_tiles(
        dk, dv, k, v, u, offs_n, mask_add, q_base, sqt, do_base, sdt, lse_base, delta_base, qrot_base, dorot_base,
        t_left, t_right, band_hi, T, T, K, qk_scale, seed, bh, dropout_p,
        0, BLOCK_M, HEAD_DIM, DROPOUT, DOT_PREC,
    )
    dk *= sm_scale
    g_rows = b * sgb + h * sgh + offs_n[:, None] * sgt + offs_d[None, :]
    tl.store(DK + g_rows, dk.to(DK.dtype.element_ty), mask=n_valid[:, None])
    tl.store(DV + g_rows, dv.to(DV.dtype.element_ty), mask=n_valid[:, None])


# --------------------------------------------------------------------------------------------------------------------
# Backward: dq (one program per query tile)
# --------------------------------------------------------------------------------------------------------------------


@triton.jit
def _dq_tiles(
    dq, dq_u, ds_l, ds_r,
    q, q_rot, do, do_rot, c_left, c_right, g_left, g_right, lse, delta, offs_m,
    k_base, skt, v_base, svt, mask_base, U,
    lo, hi, T, K, qk_scale, seed, bh, dropout_p,
    REGION: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """Key tiles ``lo..hi`` of one region into dq (key part), dq_u (band, unrotated) and the clipped ds masses."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < T
        k = _load_rows(k_base, skt, offs_n, T, HEAD_DIM, False)
        v = _load_rows(v_base, svt, offs_n, T, HEAD_DIM, False)
        s = _mm(q, tl.trans(k), DOT_PREC) * qk_scale  # (BM, BN)
        dp = _mm(do, tl.trans(v), DOT_PREC)
        if REGION == 1:
            u = _load_rows(U, HEAD_DIM, offs_n, T, HEAD_DIM, False)
            rel = offs_n[None, :] - offs_m[:, None]
            in_band = (rel > -K) & (rel < K)
            is_left = rel <= -K
            s_rel = _mm(q_rot, tl.trans(u), DOT_PREC) * qk_scale
            s += tl.where(in_band, s_rel, tl.where(is_left, c_left[:, None], c_right[:, None]))
            dp_rel = _mm(do_rot, tl.trans(u), DOT_PREC)
            dp += tl.where(in_band, dp_rel, tl.where(is_left, g_left[:, None], g_right[:, None]))
        elif REGION == 0:
            s += c_left[:, None]
            dp += g_left[:, None]
        else:
            s += c_right[:, None]
            dp += g_right[:, None]
        if HAS_MASK:
            s += tl.load(mask_base + offs_n, mask=n_valid, other=0.0)[None, :]
        s = tl.where(n_valid[None, :], s, float("-inf"))
        p = tl.exp2(s - lse[:, None])
        if DROPOUT:
            keep = _keep_mask(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p)
            dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        ds = p * (dp - delta[:, None])  # (BM, BN) dL/ds_ij
        dq += _mm(ds.to(k.dtype), k, DOT_PREC)
        if REGION == 1:
            dq_u += _mm(tl.where(in_band, ds, 0.0).to(u.dtype), u, DOT_PREC)
            ds_l += tl.sum(tl.where(is_left, ds, 0.0), 1)
            ds_r += tl.sum(tl.where(rel >= K, ds, 0.0), 1)
        elif REGION == 0:
            ds_l += tl.sum(ds, 1)
        else:
            ds_r += tl.sum(ds, 1)
    return dq, dq_u, ds_l, ds_r


@triton.jit(do_not_specialize=["T", "K", "seed"])
def _dq_kernel(
    Q, Kt, V, DO, DQ, Lse, Delta, DORot, Mask, U, Cos, Sin, Ends,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sgb, sgh, sgt, smb,
    H, T, K, sm_scale, seed, dropout_p,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_valid = offs_m < T
    qk_scale = sm_scale * 1.4426950408889634
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh
    q = _load_rows(q_base, sqt, offs_m, T, HEAD_DIM, False)
    do = _load_rows(do_base, sdt, offs_m, T, HEAD_DIM, False)
    q_rot = _rotate(q_base, sqt, q, offs_m, T, Cos, Sin, HEAD_DIM)
    do_rot = _rotate(do_base, sdt, do, offs_m, T, Cos, Sin, HEAD_DIM)
    t_left = tl.load(Ends + offs_d)
    t_right = tl.load(Ends + HEAD_DIM + offs_d)
    c_left = tl.sum(q.to(tl.float32) * t_left[None, :], 1) * qk_scale
    c_right = tl.sum(q.to(tl.float32) * t_right[None, :], 1) * qk_scale
    g_left = tl.sum(do.to(tl.float32) * t_left[None, :], 1)
    g_right = tl.sum(do.to(tl.float32) * t_right[None, :], 1)
    lse = tl.load(Lse + bh.to(tl.int64) * T + offs_m, mask=m_valid, other=0.0)
    delta = tl.load(Delta + bh.to(tl.int64) * T + offs_m, mask=m_valid, other=0.0)
    k_base = Kt + b * skb + h * skh
    v_base = V + b * svb + h * svh
    mask_base = Mask + b * smb

    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    dq_u = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    ds_l = tl.zeros([BLOCK_M], tl.float32)
    ds_r = tl.zeros([BLOCK_M], tl.float32)
    band_lo = (tl.maximum(start_m - K + 1, 0) // BLOCK_N) * BLOCK_N
    band_hi = tl.cdiv(tl.minimum(start_m + BLOCK_M - 1 + K, T), BLOCK_N) * BLOCK_N
    dq, dq_u, ds_l, ds_r = _dq_tiles(
        dq, dq_u, ds_l, ds_r, q, q_rot, do, do_rot, c_left, c_right, g_left, g_right, lse, delta, offs_m,
        k_base, skt, v_base, svt, mask_base, U, band_lo, band_hi, T, K, qk_scale, seed, bh, dropout_p,
        1, BLOCK_N, HEAD_DIM, HAS_MASK, DROPOUT, DOT_PREC,
    )
    dq, dq_u, ds_l, ds_r = _dq_tiles(
        dq, dq_u, ds_l, ds_r, q, q_rot, do, do_rot, c_left, c_right, g_left, g_right, lse, delta, offs_m,
        k_base, skt, v_base, svt, mask_base, U, 0, band_lo, T, K, qk_scale, seed, bh, dropout_p,
        0, BLOCK_N, HEAD_DIM, HAS_MASK, DROPOUT, DOT_PREC,
    )
    dq, dq_u, ds_l, ds_r = _dq_tiles(
        dq, dq_u, ds_l, ds_r, q, q_rot, do, do_rot, c_left, c_right, g_left, g_right, lse, delta, offs_m,
        k_base, skt, v_base, svt, mask_base, U, band_hi, T, T, K, qk_scale, seed, bh, dropout_p,
        2, BLOCK_N, HEAD_DIM, HAS_MASK, DROPOUT, DOT_PREC,
    )
    dq += _rotate_back(dq_u, offs_m, T, Cos, Sin, BLOCK_M, HEAD_DIM)
    dq += ds_l[:, None] * t_left[None, :] + ds_r[:, None] * t_right[None, :]
    dq *= sm_scale
    g_ptrs = DQ + b * sgb + h * sgh + offs_m[:, None] * sgt + offs_d[None, :]
    tl.store(g_ptrs, dq.to(DQ.dtype.element_ty), mask=m_valid[:, None])
    rows = bh.to(tl.int64) * T + offs_m  # the rotated output gradients, for the dk/dv kernel that runs next
    tl.store(DORot + rows[:, None] * HEAD_DIM + offs_d[None, :], do_rot, mask=m_valid[:, None])


@triton.jit
def _dropout_keep_kernel(Out, T, seed, dropout_p, BLOCK: tl.constexpr):
    """Writes the kernels' keep-mask ``(B*H, T, T)`` so tests can build a dense reference with the same mask."""
    bh = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    for start_n in range(0, T, BLOCK):
        offs_n = start_n + tl.arange(0, BLOCK)
        keep = _keep_mask(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p)
        ptrs = Out + (bh.to(tl.int64) * T + offs_m[:, None]) * T + offs_n[None, :]
        tl.store(ptrs, keep.to(tl.int8), mask=(offs_m[:, None] < T) & (offs_n[None, :] < T))


# --------------------------------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------------------------------


def _gpu_configs(shapes):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


_TUNE_KEY = ["T", "HEAD_DIM", "HAS_MASK", "DROPOUT", "DOT_PREC"]
# Two fp32 accumulators (values and band U) per row: 128-row tiles want 8 warps to stay clear of spills.
_fwd_tuned = triton.autotune(_gpu_configs([(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)]), key=_TUNE_KEY)(
    _fwd_kernel
)
_dkdv_tuned = triton.autotune(_gpu_configs([(64, 128, 8, 3), (32, 128, 8, 3), (64, 64, 4, 3)]), key=_TUNE_KEY)(
    _dkdv_kernel
)
_dq_tuned = triton.autotune(_gpu_configs([(128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3)]), key=_TUNE_KEY)(
    _dq_kernel
)


def _launch(name: str, kernel, tuned, tile_dim: int, T: int, BH: int, args: tuple, flags: dict, blocks):
    """Run one kernel: fixed tiles under the interpreter (or when asked), autotuned tiles on a GPU."""
    if blocks is None and not interpreting() and os.environ.get("NEZHA_TRITON_AUTOTUNE", "1") != "0":
        grid = lambda meta: (triton.cdiv(T, meta["BLOCK_M" if tile_dim == 0 else "BLOCK_N"]), BH)
        tuned[grid](*args, **flags)
        return
    if blocks is not None:
        bm, bn, warps, stages = (*blocks[name], 4, 2)[:4]
    elif interpreting():
        bm, bn, warps, stages = (*INTERPRET_BLOCKS[name], 4, 2)
    else:
        bm, bn, warps, stages = FIXED_GPU_BLOCKS[name]
    grid = (triton.cdiv(T, bm if tile_dim == 0 else bn), BH)
    kernel[grid](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)


# --------------------------------------------------------------------------------------------------------------------
# Host side: the band tables, autograd and the public function
# --------------------------------------------------------------------------------------------------------------------

_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
_CHECKED_TABLES: set[tuple] = set()


def band_tables(
    length: int, head_dim: int, max_relative_position: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U (T, D)`` in ``dtype`` and the query rotations ``cos, sin (T, D)`` in fp32 (see the module docstring).

    ``U[j, 2m:2m+2] = (sin j w_m, cos j w_m)``; row ``i`` of ``cos``/``sin`` holds ``(cos phi, cos phi)`` and
    ``(-sin phi, sin phi)`` with ``phi = (K - i) w_m``, so that ``q' = cos * q + sin * q[..., d ^ 1]``.
    Computed in float64 from the same fp32 frequencies as the table; cached per device and grown by doubling.
    """
    key = (head_dim, max_relative_position, str(device), dtype)
    cached = _TABLES.get(key)
    if cached is None or cached[0].shape[0] < length:
        capacity = max(256, 1 << (length - 1).bit_length())
        omega = torch.exp(torch.arange(0, head_dim, 2, dtype=torch.float32) * (-math.log(10000.0) / head_dim))
        omega = omega.double()  # (D/2,)
        pos = torch.arange(capacity, dtype=torch.float64)[:, None]  # (Tc, 1)
        theta = pos * omega
        phi = (max_relative_position - pos) * omega
        u = torch.stack([theta.sin(), theta.cos()], dim=-1).reshape(capacity, head_dim)
        cos = torch.stack([phi.cos(), phi.cos()], dim=-1).reshape(capacity, head_dim)
        sin = torch.stack([-phi.sin(), phi.sin()], dim=-1).reshape(capacity, head_dim)
        cached = (u.to(device=device, dtype=dtype), cos.float().to(device), sin.float().to(device))
        _TABLES[key] = cached
    return tuple(t[:length] for t in cached)


def _check_table(table: torch.Tensor, max_relative_position: int, head_dim: int) -> None:
    """The band trick holds only for NEZHA's fixed sinusoid table: check it once per table tensor."""
    if table.shape != (2 * max_relative_position + 1, head_dim):
        raise NotImplementedError(
            f"table must be (2K+1, D) = ({2 * max_relative_position + 1}, {head_dim}), got {tuple(table.shape)}"
        )
    key = (table.data_ptr(), table._version, str(table.device), max_relative_position, head_dim)
    if key in _CHECKED_TABLES:
        return
    expected = relative_position_table(max_relative_position, head_dim).to(table.device)
    if not torch.allclose(table.float(), expected, atol=1e-2 if table.dtype != torch.float32 else 1e-6):
        raise NotImplementedError(
            "the fused kernel needs NEZHA's sinusoid table from nezha.model.positions.relative_position_table"
        )
    _CHECKED_TABLES.add(key)


def _dot_precision(dtype: torch.dtype) -> str:
    """Exact IEEE products for fp32 inputs; tensor cores for half types (fp32-emulated under the interpreter)."""
    if dtype == torch.float32:
        return "ieee"
    return "upcast" if interpreting() and dtype == torch.bfloat16 else "tf32"


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _dense_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _FusedRelativeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, table, mask, max_relative_position, dropout_p, seed, blocks):
        B, H, T, D = q.shape
        q, k, v = _dense_last(q), _dense_last(k), _dense_last(v)
        u, cos, sin = band_tables(T, D, max_relative_position, q.device, q.dtype)
        ends = torch.stack([table[0], table[-1]]).float().contiguous()  # (2, D)
        mask_bt = q.new_zeros(1, dtype=torch.float32) if mask is None else mask
        smb = 0 if mask is None or mask.shape[0] == 1 else mask.stride(0)  # a batch-1 mask broadcasts
        out = torch.empty_like(q)
        lse = torch.empty(B * H, T, device=q.device, dtype=torch.float32)
        q_rot = torch.empty(B * H, T, D, device=q.device, dtype=q.dtype)  # M(phi_i)^T q_i, kept for backward
        flags = dict(
            HEAD_DIM=D, HAS_MASK=mask is not None, DROPOUT=dropout_p > 0,
            DOT_PREC=_dot_precision(q.dtype),
        )
        args = (
            q, k, v, out, lse, q_rot, mask_bt, u, cos, sin, ends,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out), smb,
            H, T, max_relative_position, 1.0 / math.sqrt(D), seed, dropout_p,
        )
        _launch("fwd", _fwd_kernel, _fwd_tuned, 0, T, B * H, args, flags, blocks)
        ctx.save_for_backward(q, k, v, out, lse, q_rot, mask_bt, ends)
        ctx.params = (max_relative_position, dropout_p, seed, blocks, smb, flags)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, q_rot, mask_bt, ends = ctx.saved_tensors
        max_relative_position, dropout_p, seed, blocks, smb, flags = ctx.params
        B, H, T, D = q.shape
        do = _dense_last(grad_out.to(q.dtype))
        delta = (do.float() * out.float()).sum(-1).reshape(B * H, T)  # D_i = dout_i . out_i
        u, cos, sin = band_tables(T, D, max_relative_position, q.device, q.dtype)
        # Gradients are written contiguous (B, H, T, D): one stride set serves dq, dk and dv.
        dq, dk, dv = (torch.empty(q.shape, device=q.device, dtype=q.dtype) for _ in range(3))
        common = (*_strides(do), *_strides(dq), smb, H, T, max_relative_position, 1.0 / math.sqrt(D), seed, dropout_p)
        head = (*_strides(q), *_strides(k), *_strides(v))
        do_rot = torch.empty_like(q_rot)  # written by the dq kernel, read by the dk/dv kernel
        dq_args = (q, k, v, do, dq, lse, delta, do_rot, mask_bt, u, cos, sin, ends, *head, *common)
        _launch("dq", _dq_kernel, _dq_tuned, 0, T, B * H, dq_args, flags, blocks)
        dkdv_args = (q, k, v, do, dk, dv, lse, delta, q_rot, do_rot, mask_bt, u, ends, *head, *common)
        _launch("dkdv", _dkdv_kernel, _dkdv_tuned, 1, T, B * H, dkdv_args, flags, blocks)
        return dq, dk, dv, None, None, None, None, None, None


@torch.compiler.disable  # the kernels do their own fusion; compiled models call them as one opaque op
def triton_relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    max_relative_position: int,
    dropout_p: float = 0.0,
    seed: int | None = None,
    _blocks: dict | None = None,
) -> torch.Tensor:
    """Fused NEZHA relative self-attention; same contract as :func:`nezha.model.attention.relative_attention`.

    Args:
        q, k, v: ``(B, H, T, D)`` projected queries, keys and values (fp32, fp16 or bf16; D a power of two >= 16).
        table: ``(2K+1, D)`` table from :func:`nezha.model.positions.relative_position_table` (checked once per tensor).
        mask: additive float key-padding mask ``(B, 1, 1, T)`` (0 keep, large negative drop) or None.
        max_relative_position: K.
        dropout_p: attention-probability dropout (0 in eval mode).
        seed: Philox seed for dropout; drawn from torch's generator when None.
        _blocks: tile sizes per kernel (``{"fwd": (BM, BN), "dkdv": ..., "dq": ...}``), for tests.

    Returns:
        ``(B, H, T, D)`` context vectors in the input dtype.
    """
    reason = unsupported_reason(q, k, v, mask, dropout_p)
    if reason is not None:  # NotImplementedError: a dispatcher in "auto" mode falls back to the eager path
        raise NotImplementedError(f"triton_relative_attention: {reason}")
    B, H, T, D = q.shape
    _check_table(table, max_relative_position, D)
    failure = self_check(q.device, q.dtype, D)
    if failure is not None:
        raise NotImplementedError(f"triton_relative_attention: {failure}")
    if dropout_p > 0 and seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    try:
        return _apply(q, k, v, table, mask, max_relative_position, dropout_p, seed or 0, _blocks)
    except Exception as exc:
        if type(exc).__module__.startswith("triton"):  # compilation or resources: let the caller fall back
            raise NotImplementedError(f"triton_relative_attention: the kernel failed here: {exc}") from exc
        raise


def _apply(q, k, v, table, mask, max_relative_position, dropout_p, seed, blocks):
    T = q.shape[2]
    if mask is not None:
        # (B or 1, T) in log2 units; clamped so that finfo.min stays finite and all-padding rows stay uniform
        mask = (mask.to(torch.float32).reshape(mask.shape[0], T) * LOG2E).clamp_min(torch.finfo(torch.float32).min)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _FusedRelativeAttention.apply(
            q, k, v, table, mask, max_relative_position, float(dropout_p), seed, blocks
        )


_SELF_CHECKS: dict[tuple, str | None] = {}


def self_check(device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    """None if the kernels, compiled here, agree with the eager path on a small problem; else why not.

    Runs once per (device, dtype, head size) on first use on a GPU, so that a Triton or driver version the kernel
    was never tested with falls back to eager (under ``attention_backend="auto"``) instead of training on wrong
    numbers. Skipped under the interpreter (the test suite checks it there) and with NEZHA_TRITON_SELF_CHECK=0.
    """
    if interpreting() or os.environ.get("NEZHA_TRITON_SELF_CHECK", "1") == "0":
        return None
    key = (str(device), dtype, head_dim)
    if key not in _SELF_CHECKS:
        _SELF_CHECKS[key] = run_self_check(device, dtype, head_dim)
        if _SELF_CHECKS[key] is not None:
            warnings.warn(f"fused relative attention disabled on {device} for {dtype}: {_SELF_CHECKS[key]}",
                          stacklevel=3)
    return _SELF_CHECKS[key]


def run_self_check(device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    """Forward and q/k/v gradients of the kernel vs the eager path in fp32: B=2, H=1, T=200, K=16, padding."""
    gen = torch.Generator().manual_seed(0)
    B, H, T, K = 2, 1, 200, 16
    q, k, v, grad = (torch.randn(B, H, T, head_dim, generator=gen).to(device) for _ in range(4))
    mask = torch.zeros(B, 1, 1, T, device=device)
    mask[1, ..., T - 57:] = torch.finfo(torch.float32).min
    table = relative_position_table(K, head_dim).to(device)
    leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
    try:
        with torch.enable_grad():
            out = _apply(*leaves, table, mask, K, 0.0, 0, None)
            got = (out, *torch.autograd.grad(out, leaves, grad.to(dtype)))
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:
        return f"the kernel failed ({type(exc).__name__}: {str(exc)[:500]})"
    leaves = [t.requires_grad_(True) for t in (q, k, v)]
    with torch.enable_grad():
        ref_out = eager_relative_attention(*leaves, table, mask, max_relative_position=K)
        ref = (ref_out, *torch.autograd.grad(ref_out, leaves, grad))
    limit = 1e-3 if dtype == torch.float32 else 5e-2  # of the largest reference value; catches wrong, not rounding
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        err = (a.float() - b).abs().max().item()
        if not err <= limit * b.abs().max().item():  # also catches NaN
            return f"self-check mismatch in {name}: max error {err:.3g} (values up to {b.abs().max().item():.3g})"
    return None


def dropout_keep_mask(batch_heads: int, length: int, dropout_p: float, seed: int, device="cpu") -> torch.Tensor:
    """The keep-mask ``(B*H, T, T)`` (bool) the kernels draw for ``seed``: for tests against a dense reference."""
    out = torch.empty(batch_heads, length, length, dtype=torch.int8, device=device)
    block = 32
    _dropout_keep_kernel[(triton.cdiv(length, block), batch_heads)](out, length, seed, dropout_p, BLOCK=block)
    return out.bool()
