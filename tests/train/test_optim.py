"""Optimizers against references written out from the original NEZHA-TensorFlow ``optimization.py``.

The numpy functions below restate ``LAMBOptimizer.apply_gradients`` and ``AdamWeightDecayOptimizer.apply_gradients``
line by line (per tensor, float64), not our implementation: t = global_step + 1; trust ratio
‖w‖ / ‖m̂/√(v̂+ε) + wd·w‖ with wd·w for every parameter; decay in the update only for names matching none of
LayerNorm|layer_norm|bias (``re.search``); AdamWeightDecay without bias correction.
"""

import re

import numpy as np
import pytest
import torch
from torch import nn

from nezha.model.config import NezhaConfig
from nezha.model.modeling import NezhaForPreTraining
from nezha.train.optim import AdamWeightDecay, Lamb, build_optimizer, param_groups

EXCLUDE = ["LayerNorm", "layer_norm", "bias"]
B1, B2, EPS, WD = 0.9, 0.999, 1e-6, 0.01


def _use_decay(name: str) -> bool:
    return not any(re.search(r, name) for r in EXCLUDE)


def ref_lamb_original(w, g, m, v, global_step, name, lr):
    t = global_step + 1
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    mm = m / (1 - B1**t)
    vv = v / (1 - B2**t)
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    g_norm_hat = np.linalg.norm(mm / np.sqrt(vv + EPS) + WD * w)
    trust = (w_norm / g_norm_hat if g_norm > 0 else 1.0) if w_norm > 0 else 1.0
    trust = np.clip(trust, 0, 10.0)
    update = mm / (np.sqrt(vv) + EPS)
    if _use_decay(name):
        update = update + WD * w
    return w - trust * lr * update, m, v


def ref_lamb_textbook(w, g, m, v, global_step, name, lr):
    t = global_step + 1
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    update = (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS)
    if _use_decay(name):
        update = update + WD * w
    w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(update)
    trust = np.clip(w_norm / u_norm, 0, 10.0) if w_norm > 0 and u_norm > 0 else 1.0
    return w - trust * lr * update, m, v


def ref_adam_weight_decay(w, g, m, v, global_step, name, lr):
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    update = m / (np.sqrt(v) + EPS)
    if _use_decay(name):
        update = update + WD * w
    return w - lr * update, m, v


REFERENCES = {"lamb": ref_lamb_original, "lamb_textbook": ref_lamb_textbook, "adam": ref_adam_weight_decay}


class _Block(nn.Module):
    """Parameters named like the model's: a dense weight and bias, a LayerNorm, and a weight that starts at 0."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(6, 5)
        self.LayerNorm = nn.LayerNorm(5)
        self.zero = nn.Parameter(torch.zeros(4, 3))


def _run(name: str, grad_scale: float, steps: int, dtype=torch.float64, lr: float = 0.01, zero_grad_at=None):
    """Run our optimizer and the reference on the same gradients; returns (ours, reference, initial) per name."""
    torch.manual_seed(0)
    model = _Block().to(dtype)
    with torch.no_grad():
        model.LayerNorm.weight.add_(torch.randn(5, dtype=dtype) * 0.1)
        model.LayerNorm.bias.add_(torch.randn(5, dtype=dtype) * 0.1)
    names = [n for n, _ in model.named_parameters()]
    init = {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}
    ref = {n: [init[n].copy(), np.zeros_like(init[n]), np.zeros_like(init[n])] for n in names}
    opt = build_optimizer(model, name, lr=lr, weight_decay=WD, eps=EPS)
    rng = np.random.default_rng(1)
    for step in range(steps):
        grads = {n: rng.standard_normal(init[n].shape) * grad_scale for n in names}
        if zero_grad_at is not None and step == zero_grad_at:
            grads["dense.weight"][:] = 0.0
        for n, p in model.named_parameters():
            p.grad = torch.from_numpy(grads[n]).to(dtype)
        opt.step()
        for n in names:
            w, m, v = ref[n]
            ref[n] = list(REFERENCES[name](w, grads[n], m, v, step, n, lr))
    ours = {n: p.detach().double().numpy() for n, p in model.named_parameters()}
    return ours, {n: r[0] for n, r in ref.items()}, init


@pytest.mark.parametrize("name", ["lamb", "lamb_textbook", "adam"])
@pytest.mark.parametrize("grad_scale", [1e-4, 1e-2])
def test_optimizer_matches_the_original_formulas(name, grad_scale):
    ours, ref, init = _run(name, grad_scale, steps=6)
    for n in ref:
        np.testing.assert_allclose(ours[n] - init[n], ref[n] - init[n], rtol=1e-5, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("name", ["lamb", "lamb_textbook", "adam"])
def test_optimizer_in_float32_matches_the_float64_reference(name):
    ours, ref, init = _run(name, 1e-4, steps=4, dtype=torch.float32)
    for n in ref:
        np.testing.assert_allclose(ours[n], ref[n], rtol=1e-5, atol=1e-6, err_msg=n)


@pytest.mark.parametrize("name", ["lamb", "lamb_textbook"])
def test_lamb_zero_norm_weight_and_zero_gradient_get_trust_one(name):
    # "zero" starts at 0 (‖w‖ = 0) and "dense.weight" gets an all-zero gradient at step 2 (‖g‖ = 0).
    ours, ref, init = _run(name, 1e-2, steps=4, zero_grad_at=2)
    assert not init["zero"].any()
    for n in ref:
        np.testing.assert_allclose(ours[n] - init[n], ref[n] - init[n], rtol=1e-5, atol=1e-12, err_msg=n)


def test_original_and_textbook_lamb_differ_with_small_gradients():
    # With v̂ << ε the original's ratio (ε inside the root) is far from ‖w‖/‖u‖: the step sizes differ a lot.
    original, _, init = _run("lamb", 1e-4, steps=1)
    textbook, _, _ = _run("lamb_textbook", 1e-4, steps=1)
    d_orig = np.linalg.norm(original["dense.weight"] - init["dense.weight"])
    d_text = np.linalg.norm(textbook["dense.weight"] - init["dense.weight"])
    assert d_orig > 2 * d_text


def test_original_lamb_puts_weight_decay_in_the_ratio_of_layernorm_too():
    # One LayerNorm weight, first step: u = m̂/(√v̂+ε) (no decay), ratio = ‖w‖ / ‖m̂/√(v̂+ε) + 0.01·w‖.
    w0 = torch.full((4,), 2.0, dtype=torch.float64)
    g = torch.full((4,), 1e-3, dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    opt = Lamb([{"params": [w], "weight_decay": 0.0}], lr=0.1, weight_decay=0.01)
    w.grad = g.clone()
    opt.step()
    direction = g / torch.sqrt(g * g + 1e-6) + 0.01 * w0
    ratio = min(float(w0.norm() / direction.norm()), 10.0)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * ratio * g / (g.abs() + 1e-6))


def test_adam_weight_decay_has_no_bias_correction():
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = AdamWeightDecay([w], lr=1.0, weight_decay=0.0)
    w.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    # m = 0.1, v = 0.001: u = 0.1 / (√0.001 + 1e-6) ≈ 3.16 (bias-corrected Adam would step by ≈ 1)
    torch.testing.assert_close(w.detach(), torch.full((3,), -0.1 / (0.001**0.5 + 1e-6), dtype=torch.float64))


def test_param_groups_exclude_layernorm_and_bias_from_decay():
    model = NezhaForPreTraining(NezhaConfig.preset("tiny", vocab_size=50))
    decay, plain = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(_use_decay(n) for n in decay["names"])
    assert not any(_use_decay(n) for n in plain["names"])
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(plain["params"]) == n_unique  # tied decoder weight counted once


def test_build_optimizer_names():
    model = nn.Linear(3, 2)
    assert isinstance(build_optimizer(model, "adamw", lr=1e-3), torch.optim.AdamW)
    assert isinstance(build_optimizer(model, "adam", lr=1e-3), AdamWeightDecay)
    assert build_optimizer(model, "lamb", lr=1e-3).param_groups[0]["trust"] == "original"
    assert build_optimizer(model, "lamb_textbook", lr=1e-3).param_groups[0]["trust"] == "textbook"
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "sgd", lr=1e-3)
    with pytest.raises(ValueError, match="applies to LAMB only"):
        build_optimizer(model, "adam", lr=1e-3, grad_prenorm=True)


def test_lamb_grad_prenorm_divides_by_the_global_norm():
    # Prenormalised gradients g / max(1, ‖g‖): the same step as the reference given those gradients.
    a, b = nn.Parameter(torch.ones(3, dtype=torch.float64)), nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Lamb([a], lr=0.1, weight_decay=0.0, grad_prenorm=True, max_grad_norm=1.0)
    ref = Lamb([b], lr=0.1, weight_decay=0.0)
    g = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    a.grad, b.grad = g.clone(), g / 5.0
    opt.step()
    ref.step()
    torch.testing.assert_close(a.detach(), b.detach())
