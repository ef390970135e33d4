"""Optimizers: LAMB (as NEZHA/BERT large-batch pretraining uses it) and AdamW, plus decay/no-decay param groups.

LAMB (You et al. 2019, the variant of the original NEZHA ``optimization.py``), per parameter ``w`` with gradient ``g``:

    m = β1·m + (1-β1)·g            v = β2·v + (1-β2)·g²
    u = (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε) + wd·w        (wd = 0 for LayerNorm and bias parameters)
    r = clip(‖w‖ / ‖u‖, 0, 10), or 1 when ‖w‖ = 0 or ‖u‖ = 0     (the per-parameter trust ratio)
    w = w - lr·r·u

With ``grad_prenorm`` the gradients are first divided by max(1, global‖g‖ / max_grad_norm), NVIDIA's
"pre-normalization" (the same as global-norm clipping before the moments). The implementation uses ``torch._foreach``
ops, so one step is a handful of kernel launches per param group instead of several per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# Parameter-name fragments that get no weight decay (as the original: LayerNorm and bias).
NO_DECAY = ("LayerNorm", "layer_norm", "bias")


def param_groups(model: nn.Module, weight_decay: float, no_decay: Iterable[str] = NO_DECAY) -> list[dict]:
    """Two groups: decayed weights and the LayerNorm/bias parameters (weight_decay 0).

    Tied parameters (the MLM decoder shares the word embeddings) appear once, as ``named_parameters`` dedups them.
    Each group keeps the parameter names (``names``) for logging and tests.
    """
    no_decay = tuple(no_decay)
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if any(nd in name for nd in no_decay) else decay).append((name, p))
    groups = []
    for items, wd in ((decay, weight_decay), (plain, 0.0)):
        if items:
            groups.append({"params": [p for _, p in items], "names": [n for n, _ in items], "weight_decay": wd})
    return groups


class Lamb(torch.optim.Optimizer):
    """LAMB with bias correction and trust ratio clipped to [0, ``max_trust_ratio``]; see the module docstring."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_trust_ratio: float = 10.0,
        grad_prenorm: bool = False,
        max_grad_norm: float = 1.0,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"LAMB: lr ({lr}), eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"LAMB: betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust_ratio=max_trust_ratio)
        super().__init__(params, defaults)
        self.grad_prenorm = grad_prenorm
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        prescale = None
        if self.grad_prenorm:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                prescale = torch.clamp(norm / self.max_grad_norm, min=1.0)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads, exp_avgs, exp_avg_sqs = [], [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if p.grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            # All params of a group share the step count (they are created and stepped together).
            step_t = self.state[params[0]]["step"]
            for p in params:
                self.state[p]["step"] += 1
            t = float(step_t)
            if prescale is not None:
                grads = torch._foreach_div(grads, prescale)
            for idx in _buckets(params):
                self._update([params[i] for i in idx], [grads[i] for i in idx], [exp_avgs[i] for i in idx],
                             [exp_avg_sqs[i] for i in idx], group, t)
        return loss


    @staticmethod
    def _update(params, grads, exp_avgs, exp_avg_sqs, group: dict, t: float) -> None:
        beta1, beta2 = group["betas"]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(exp_avgs, denom)
        torch._foreach_div_(update, bc1)
        if group["weight_decay"]:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
        w_norm = torch.stack(torch._foreach_norm(params))  # (P,)
        u_norm = torch.stack(torch._foreach_norm(update))  # (P,)
        ratio = torch.where(
            (w_norm > 0) & (u_norm > 0),
            (w_norm / u_norm).clamp(0.0, group["max_trust_ratio"]),
            torch.ones_like(w_norm),
        )
        torch._foreach_mul_(update, list((ratio * -group["lr"]).to(params[0].dtype).unbind(0)))
        torch._foreach_add_(params, update)


# On CPU, op-by-op over all tensors streams every state array from memory once per op; updating cache-sized groups
# of tensors keeps them hot across the ~15 ops. GPUs gain from few large launches instead, so they get one bucket.
_CPU_BUCKET_ELEMENTS = 1 << 17


def _buckets(params: list[torch.Tensor]) -> list[list[int]]:
    if not params or params[0].device.type != "cpu":
        return [list(range(len(params)))]
    out: list[list[int]] = [[]]
    size = 0
    for i, p in enumerate(params):
        if out[-1] and size + p.numel() > _CPU_BUCKET_ELEMENTS:
            out.append([])
            size = 0
        out[-1].append(i)
        size += p.numel()
    return out


OPTIMIZERS = ("lamb", "adamw")


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    grad_prenorm: bool = False,
    max_grad_norm: float = 1.0,
) -> torch.optim.Optimizer:
    """LAMB or AdamW over :func:`param_groups` (LayerNorm and biases undecayed). ``foreach`` kernels either way."""
    groups = param_groups(model, weight_decay)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    grad_prenorm=grad_prenorm, max_grad_norm=max_grad_norm)
    if name == "adamw":
        if grad_prenorm:
            raise ValueError("--lamb_grad_prenorm applies to LAMB only (AdamW uses --max_grad_norm clipping)")
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
