"""Optional fused attention kernels (the ``triton`` extra).

This package imports without triton; :func:`is_available` says whether the fused kernel can run here. The kernel
itself is ``nezha.model.kernels.triton_attention.triton_relative_attention`` (imports triton); this package never
imports it, so the dispatcher in ``nezha.model.attention_backends`` is the one module that reaches both paths.
"""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def is_available() -> bool:
    """Whether :func:`triton_relative_attention` can run: triton importable and a CUDA device (or interpreter mode)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return interpreting() or torch.cuda.is_available()


def unsupported_reason(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float = 0.0
) -> str | None:
    """Why the fused kernel cannot take these inputs (a dispatcher then falls back to eager), or None if it can."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        return f"q, k, v must share one (B, H, T, D) shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"q, k, v must share one of float32/float16/bfloat16, got {q.dtype}, {k.dtype}, {v.dtype}"
    D = q.shape[-1]
    if D < 16 or D > 256 or D & (D - 1):
        return f"head size must be a power of two in [16, 256], got {D}"
    if mask is not None and (mask.dim() != 4 or mask.shape[1:3] != (1, 1) or mask.shape[-1] != q.shape[2]
                             or mask.shape[0] not in (1, q.shape[0])):
        return f"mask must be an additive (B, 1, 1, T) key-padding mask, got {tuple(mask.shape)}"
    if not 0.0 <= dropout_p < 1.0:
        return f"dropout_p must be in [0, 1), got {dropout_p}"
    if not is_available():
        return "triton is not installed or there is no CUDA device (install the 'triton' extra)"
    if not (q.is_cuda or interpreting()):
        return f"the fused kernel needs CUDA tensors, got device {q.device}"
    return None


__all__ = ["interpreting", "is_available", "unsupported_reason"]
