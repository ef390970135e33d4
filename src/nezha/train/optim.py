"""Optimizers of the original NEZHA ``optimization.py`` (LAMB, AdamWeightDecay), textbook LAMB and AdamW.

Per parameter ``w`` with (clipped) gradient ``g``; ``wd`` is 0 in the update for LayerNorm and bias parameters;
``t`` counts applied steps (a skipped fp16 step does not count), so ``t = global_step + 1`` as in the original:

    m = β1·m + (1-β1)·g            v = β2·v + (1-β2)·g²            m̂ = m / (1-β1^t)     v̂ = v / (1-β2^t)

``lamb`` (the original ``LAMBOptimizer.apply_gradients``)::

    u = m̂ / (√v̂ + ε) + wd·w
    r = ‖w‖ / ‖m̂ / √(v̂ + ε) + wd₀·w‖     (ε inside the root; wd₀ = 0.01 for EVERY parameter, LayerNorm and bias too)
    r = 1 when ‖w‖ = 0 or ‖g‖ = 0, then clipped to [0, 10];   w = w - lr·r·u

``lamb_textbook`` (You et al. 2019, and the version this package shipped before): ``r = ‖w‖ / ‖u‖`` (1 when either is
0), clipped to [0, 10]. With small gradients (v̂ ≪ ε) the two ratios differ by up to ~10×, so a learning rate tuned
for one does not carry over to the other.

``adam`` (the original ``AdamWeightDecayOptimizer``, Google BERT's): NO bias correction, ``u = m / (√v + ε) + wd·w``,
``w = w - lr·u``. ``adamw`` is ``torch.optim.AdamW`` (bias-corrected, decoupled decay ``w -= lr·wd·w``).

With ``grad_prenorm`` LAMB first divides the gradients by max(1, global‖g‖ / max_grad_norm), NVIDIA's
"pre-normalization". The implementations use ``torch._foreach`` ops over cache-sized buckets of tensors, so one
step is a handful of kernel launches per bucket instead of several per tensor.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# Parameter-name fragments that get no weight decay in the update (as the original: LayerNorm and bias).
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


def _check_hyperparameters(label: str, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(f"{label}: lr ({lr}), eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ValueError(f"{label}: betas must be in [0, 1), got {betas}")


class _ForeachOptimizer(torch.optim.Optimizer):
    """Shared step loop: per group, collect gradients and Adam moments, then ``_update`` bucket by bucket."""

    def _prepare(self, group: dict) -> tuple[list, list, list, list, float]:
        params = [p for p in group["params"] if p.grad is not None]
        grads, exp_avgs, exp_avg_sqs = [], [], []
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        # All params of a group share the step count (they are created and stepped together).
        t = float(self.state[params[0]]["step"]) if params else 0.0
        return params, grads, exp_avgs, exp_avg_sqs, t

    def _grads_hook(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return grads

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._before_step()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, t = self._prepare(group)
            if not params:
                continue
            grads = self._grads_hook(grads)
            beta1, beta2 = group["betas"]
            for idx in _buckets(params):
                g = [grads[i] for i in idx]
                m, v = [exp_avgs[i] for i in idx], [exp_avg_sqs[i] for i in idx]
                torch._foreach_lerp_(m, g, 1.0 - beta1)
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
                self._update([params[i] for i in idx], g, m, v, group, t)
        return loss

    def _before_step(self) -> None:
        pass

    def _update(self, params, grads, exp_avgs, exp_avg_sqs, group: dict, t: float) -> None:
        raise NotImplementedError


class Lamb(_ForeachOptimizer):
    """LAMB with bias correction and trust ratio clipped to [0, ``max_trust_ratio``]; see the module docstring.

    ``trust="original"`` is NEZHA's ``LAMBOptimizer``; there ``ratio_weight_decay`` (default: ``weight_decay``) is the
    decay inside the trust-ratio norm, for every group, while each group's ``weight_decay`` is the decay in the update
    (0 for LayerNorm/bias). ``trust="textbook"`` is ‖w‖/‖u‖.
    """

    TRUST = ("original", "textbook")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_trust_ratio: float = 10.0,
        trust: str = "original",
        ratio_weight_decay: float | None = None,
        grad_prenorm: bool = False,
        max_grad_norm: float = 1.0,
    ):
        _check_hyperparameters("LAMB", lr, betas, eps, weight_decay)
        if trust not in self.TRUST:
            raise ValueError(f"LAMB: trust must be one of {self.TRUST}, got {trust!r}")
        ratio_wd = weight_decay if ratio_weight_decay is None else ratio_weight_decay
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust_ratio=max_trust_ratio,
                        trust=trust, ratio_weight_decay=ratio_wd)
        super().__init__(params, defaults)
        self.grad_prenorm = grad_prenorm
        self.max_grad_norm = max_grad_norm
        self._prescale: torch.Tensor | None = None

    def _before_step(self) -> None:
        self._prescale = None
        if self.grad_prenorm:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                self._prescale = torch.clamp(norm / self.max_grad_norm, min=1.0)

    def _grads_hook(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return grads if self._prescale is None else torch._foreach_div(grads, self._prescale)

    @staticmethod
    def _update(params, grads, exp_avgs, exp_avg_sqs, group: dict, t: float) -> None:
        beta1, beta2 = group["betas"]
        eps, wd = group["eps"], group["weight_decay"]
        m_hat = torch._foreach_div(exp_avgs, 1.0 - beta1**t)
        v_hat = torch._foreach_div(exp_avg_sqs, 1.0 - beta2**t)
        denom = torch._foreach_sqrt(v_hat)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(m_hat, denom)  # m̂ / (√v̂ + ε)
        if wd:
            torch._foreach_add_(update, params, alpha=wd)
        w_norm = torch.stack(torch._foreach_norm(params))  # (P,)
        ones = torch.ones_like(w_norm)
        if group["trust"] == "original":
            torch._foreach_add_(v_hat, eps)
            torch._foreach_sqrt_(v_hat)
            direction = torch._foreach_div(m_hat, v_hat)  # m̂ / √(v̂ + ε)
            if group["ratio_weight_decay"]:
                torch._foreach_add_(direction, params, alpha=group["ratio_weight_decay"])
            d_norm = torch.stack(torch._foreach_norm(direction))
            g_norm = torch.stack(torch._foreach_norm(grads))
            # ‖w‖ / 0 is inf and then clipped to the maximum, as in TF.
            ratio = torch.where((w_norm > 0) & (g_norm > 0), w_norm / d_norm, ones)
        else:
            u_norm = torch.stack(torch._foreach_norm(update))
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, ones)
        ratio = ratio.clamp(0.0, group["max_trust_ratio"])
        torch._foreach_mul_(update, list((ratio * -group["lr"]).to(params[0].dtype).unbind(0)))
        torch._foreach_add_(params, update)


class AdamWeightDecay(_ForeachOptimizer):
    """Google BERT's / NEZHA's ``AdamWeightDecayOptimizer``: Adam moments without bias correction, decay in the
    update (``u = m/(√v+ε) + wd·w``, ``w -= lr·u``); see the module docstring."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01):
        _check_hyperparameters("adam", lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _update(params, grads, exp_avgs, exp_avg_sqs, group: dict, t: float) -> None:
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(exp_avgs, denom)
        if group["weight_decay"]:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
        torch._foreach_add_(params, update, alpha=-group["lr"])


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


OPTIMIZERS = ("lamb", "lamb_textbook", "adam", "adamw")


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
    """One of :data:`OPTIMIZERS` over :func:`param_groups` (LayerNorm and biases undecayed in the update)."""
    groups = param_groups(model, weight_decay)
    if grad_prenorm and not name.startswith("lamb"):
        raise ValueError(f"--lamb_grad_prenorm applies to LAMB only, not --optimizer {name} (use --max_grad_norm)")
    if name in ("lamb", "lamb_textbook"):
        return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    trust="original" if name == "lamb" else "textbook", grad_prenorm=grad_prenorm,
                    max_grad_norm=max_grad_norm)
    if name == "adam":
        return AdamWeightDecay(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")

