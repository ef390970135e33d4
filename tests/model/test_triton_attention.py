"""The fused Triton relative-attention kernel against the eager path (forward and q/k/v gradients).

On CPU the kernels run in Triton's interpreter. ``TRITON_INTERPRET`` must be set before triton is imported and
it changes every kernel defined afterwards, so the interpreter checks run in one subprocess
(``python -m nezha.model.kernels.check --suite interpret``) and this process keeps triton in its normal mode for the
GPU tests. Everything skips with a reason when triton is not installed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from nezha.model.kernels import unsupported_reason
from nezha.model.kernels.check import GPU_CASES, INTERPRET_CASES, run_case
from nezha.model.positions import relative_position_table

triton = pytest.importorskip(
    "triton", reason="triton is not installed (optional extra: pip install 'nezha-pytorch[triton]')")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def interpreter_results() -> dict[str, dict]:
    """All interpreter cases, computed once in a subprocess with TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "nezha.model.kernels.check", "--suite", "interpret"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["case"]["name"] if "case" in r else next(iter(r)): r for r in records}


@pytest.mark.parametrize("case", INTERPRET_CASES, ids=lambda c: c.name)
def test_triton_attention_matches_eager_in_interpreter(interpreter_results, case):
    record = interpreter_results[case.name]
    # Within 2x the eager path's own error in the same dtype, plus a sliver of the values' magnitude.
    rtol = 1e-5 if record["dtype"] == "float32" else 2e-3
    for name, err in record["errors"].items():
        limit = 2 * record["baseline"][name] + rtol * max(1.0, record["scale"][name])
        assert err <= limit, f"{case.name} {name}: error {err:.3g} > {limit:.3g} ({record})"


def test_triton_attention_dropout_mask_rate_and_seeding(interpreter_results):
    stats = interpreter_results["dropout_statistics"]["dropout_statistics"]
    assert abs(stats["keep_rate"] - 0.75) < 0.02  # 18k draws at p = 0.25
    assert stats["seed_agreement"] < 0.8  # another seed gives another mask (two independent masks agree ~62%)
    assert stats["same_seed_max_diff"] == 0.0
    assert stats["dropout_vs_plain_max_diff"] > 1e-2


def test_triton_backend_model_matches_eager_backend(interpreter_results):
    """NezhaModel with attention_backend="triton" vs "eager" (fp32, padding): hidden states and all gradients."""
    got = interpreter_results["model_equivalence"]["model_equivalence"]
    assert got["fused_launches"] > 0  # the dispatcher really ran the fused kernel
    assert got["hidden_rel_err"] < 1e-5
    assert got["worst_grad_rel_err"] < 1e-4, got


def test_triton_self_check_accepts_the_kernel_and_rejects_a_broken_one(interpreter_results):
    got = interpreter_results["self_check"]["self_check"]
    assert got["as_is"] is None
    assert "mismatch" in got["broken_band"]


def test_band_tables_reconstruct_the_table_at_long_lengths():
    """M(phi_i) U_j == table[j - i + K] for |j - i| < K: the identity the band tiles rely on, at T = 8192."""
    from nezha.model.kernels.triton_attention import band_tables

    K, D, T = 64, 64, 8192
    u, cos, sin = band_tables(T, D, K, torch.device("cpu"), torch.float32)
    table = relative_position_table(K, D).double()
    i = torch.tensor([0, 1, 700, 4095, 8191])
    offsets = torch.arange(-K + 1, K)
    for row in i.tolist():
        j = (row + offsets).clamp(0, T - 1)
        swap = torch.arange(D) ^ 1
        # out_d = cos_d * u_d - sin_d * u_{d^1}  (the kernel's _rotate_back)
        rebuilt = cos[row].double() * u[j].double() - sin[row].double() * u[j][:, swap].double()
        # Against the exact rows (float64 sines of the table's fp32 frequencies): fp32 rounding only.
        omega = torch.exp(torch.arange(0, D, 2, dtype=torch.float32) * (-math.log(10000.0) / D)).double()
        angle = (j - row + K).double()[:, None] * omega  # (P', D/2)
        exact = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(-1, D)
        assert (rebuilt - exact).abs().max().item() < 1e-6
        # Against the fp32 table itself, which rounds p * w to fp32 before the sine (|p w| <= 2K).
        assert (rebuilt - table[j - row + K]).abs().max().item() < 1e-5


def test_triton_attention_rejects_unsupported_inputs():
    q = torch.zeros(1, 2, 8, 48)
    assert "power of two" in unsupported_reason(q, q, q, None)
    q = torch.zeros(1, 2, 8, 16)
    assert "share one" in unsupported_reason(q, q[:, :1], q, None)
    assert "mask" in unsupported_reason(q, q, q, torch.zeros(1, 1, 8, 8))
    assert "dropout_p" in unsupported_reason(q, q, q, None, dropout_p=1.0)
    assert "float32" in unsupported_reason(q.double(), q.double(), q.double(), None)


def test_triton_attention_rejects_a_foreign_table():
    from nezha.model.kernels.triton_attention import _check_table

    with pytest.raises(NotImplementedError, match="sinusoid table"):
        _check_table(torch.randn(9, 16), 4, 16)
    with pytest.raises(NotImplementedError, match=r"\(2K\+1, D\)"):
        _check_table(torch.randn(8, 16), 4, 16)
    _check_table(relative_position_table(4, 16), 4, 16)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.name)
def test_triton_attention_matches_eager_on_gpu_bf16(case):
    res = run_case(case, torch.bfloat16, "cuda")
    for name, err in res.errors.items():
        limit = 2 * res.baseline[name] + 2e-3 * max(1.0, res.scale[name])
        assert err <= limit, f"{case.name} {name}: error {err:.3g} > {limit:.3g} (eager bf16: {res.baseline[name]:.3g})"


@pytest.mark.gpu
@cuda
def test_triton_backend_model_matches_eager_backend_on_gpu():
    from nezha.model.kernels.check import model_equivalence

    got = model_equivalence("cuda", torch.float32)
    assert got["fused_launches"] > 0
    assert got["hidden_rel_err"] < 1e-4
    assert got["worst_grad_rel_err"] < 1e-3, got


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("case", [c for c in GPU_CASES if c.length in (65, 511)], ids=lambda c: c.name)
def test_triton_attention_matches_eager_on_gpu_fp32(case):
    res = run_case(case, torch.float32, "cuda")
    for name, err in res.errors.items():
        limit = 2 * res.baseline[name] + 1e-5 * max(1.0, res.scale[name])
        assert err <= limit, f"{case.name} {name}: error {err:.3g} > {limit:.3g}"
