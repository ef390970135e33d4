import math

import pytest
import torch
from torch import nn

from nezha.model.config import NezhaConfig
from nezha.model.modeling import NezhaForPreTraining
from nezha.train.optim import Lamb, build_optimizer, param_groups


def _reference_lamb_step(params, grads, states, *, lr, wd, b1=0.9, b2=0.999, eps=1e-6, prenorm=False):
    """One LAMB step written per tensor, straight from the formulas (NEZHA optimization.py + trust clip 10)."""
    if prenorm:
        gnorm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        grads = [g / max(1.0, gnorm) for g in grads]
    for i, (w, g) in enumerate(zip(params, grads)):
        st = states[i]
        st["t"] += 1
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        m_hat = st["m"] / (1 - b1 ** st["t"])
        v_hat = st["v"] / (1 - b2 ** st["t"])
        u = m_hat / (v_hat.sqrt() + eps) + wd[i] * w
        wn, un = float(w.norm()), float(u.norm())
        ratio = min(max(wn / un, 0.0), 10.0) if wn > 0 and un > 0 else 1.0
        params[i] = w - lr * ratio * u
    return params


@pytest.mark.parametrize("prenorm", [False, True])
def test_lamb_matches_per_tensor_reference(prenorm):
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2), (4,)]
    weights = [torch.randn(s, dtype=torch.float64) for s in shapes]
    weights[3].zero_()  # ||w|| = 0 -> trust ratio 1
    params = [nn.Parameter(w.clone()) for w in weights]
    wd = [0.01, 0.0, 0.01, 0.0]
    opt = Lamb(
        [
            {"params": [params[0], params[2]], "weight_decay": 0.01},
            {"params": [params[1], params[3]], "weight_decay": 0.0},
        ],
        lr=0.05, grad_prenorm=prenorm, max_grad_norm=1.0,
    )
    ref = [w.clone() for w in weights]
    states = [{"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w)} for w in weights]
    for _ in range(5):
        grads = [torch.randn(s, dtype=torch.float64) * 3 for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        ref = _reference_lamb_step(ref, grads, states, lr=0.05, wd=wd, prenorm=prenorm)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-10, atol=1e-12)


def test_lamb_trust_ratio_is_clipped_at_ten():
    # Tiny update relative to a large weight: ratio ||w||/||u|| >> 10, so the step is lr * 10 * u.
    w = nn.Parameter(torch.full((4,), 100.0, dtype=torch.float64))
    opt = Lamb([w], lr=0.1, weight_decay=0.0)
    w.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    # first step: m_hat = g, v_hat = g^2 -> u = 1/(1+1e-6) per element
    torch.testing.assert_close(w.detach(), torch.full((4,), 100.0 - 0.1 * 10 / (1 + 1e-6), dtype=torch.float64))


def test_param_groups_exclude_layernorm_and_bias_from_decay():
    model = NezhaForPreTraining(NezhaConfig.preset("tiny", vocab_size=50))
    decay, plain = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all("LayerNorm" not in n and not n.endswith("bias") for n in decay["names"])
    assert all("LayerNorm" in n or n.endswith("bias") for n in plain["names"])
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(plain["params"]) == n_unique  # tied decoder weight counted once


def test_build_optimizer_adamw_and_unknown_name():
    model = nn.Linear(3, 2)
    assert isinstance(build_optimizer(model, "adamw", lr=1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "sgd", lr=1e-3)
