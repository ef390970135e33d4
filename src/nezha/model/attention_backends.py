"""The one place that chooses how relative attention runs: the eager path or the fused Triton kernel.

The eager path (``nezha.model.attention``) and the kernel (``nezha.model.kernels.triton_attention``) do not import
each other's dispatch; both read ``nezha.model.positions``, and only this module imports both.
"""

from __future__ import annotations

import functools

import torch

from nezha.model.attention import relative_attention as eager_relative_attention


@functools.cache
def _fused_kernel():
    """The fused kernel's entry point if it can run in this process, else None (checked once, not per call)."""
    from nezha.model import kernels

    if not kernels.is_available():
        return None
    from nezha.model.kernels.triton_attention import triton_relative_attention

    return triton_relative_attention


def _fused_backend(backend: str, q: torch.Tensor):
    """The fused Triton kernel when asked for (or on GPU under "auto") and usable here; else None (eager)."""
    if backend == "eager" or (backend == "auto" and not q.is_cuda):
        return None
    fused = _fused_kernel()
    if fused is None and backend == "triton":
        raise ValueError("attention_backend='triton' needs the triton extra (pip install "
                         "'nezha-pytorch[triton]') and a CUDA device (or TRITON_INTERPRET=1)")
    return fused


def relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    max_relative_position: int,
    dropout_p: float = 0.0,
    backend: str = "eager",
) -> torch.Tensor:
    """NEZHA relative self-attention on the chosen backend.

    Args:
        q, k, v, table, mask, max_relative_position, dropout_p: as :func:`nezha.model.attention.relative_attention`.
        backend: "eager" (memory-lean chunked path, any device), "triton" (fused GPU kernel) or "auto"
            (fused on CUDA when available, eager otherwise).

    Returns:
        ``(B, H, T, D)`` context vectors.
    """
    fused = _fused_backend(backend, q)
    if fused is not None:
        try:
            return fused(q, k, v, table, mask, max_relative_position=max_relative_position, dropout_p=dropout_p)
        except NotImplementedError:
            if backend == "triton":
                raise
    return eager_relative_attention(q, k, v, table, mask, max_relative_position=max_relative_position,
                                    dropout_p=dropout_p)
