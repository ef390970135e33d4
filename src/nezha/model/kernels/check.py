"""Correctness checks of the fused kernel against the eager path, shared by the tests and benchmarks/gpu_check.sh.

Each case runs the fused kernel in the test dtype and two references: the eager path (or, with dropout, a dense
formula that uses the kernel's own keep-mask) in float64, and the same reference in the test dtype. The kernel
passes when its error against float64 is within a small multiple of what the reference itself loses in that dtype.

Run ``python -m nezha.model.kernels.check --suite interpret`` (with ``TRITON_INTERPRET=1``) or ``--suite gpu``;
it prints one JSON object per case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import asdict, dataclass, field

import torch

from nezha.model.attention import relative_attention
from nezha.model.positions import relative_buckets, relative_position_table


@dataclass(frozen=True)
class Case:
    """One comparison: shapes, padding, dropout and tile sizes (None: the kernel's defaults)."""

    name: str
    batch: int
    heads: int
    length: int
    head_dim: int
    max_relative_position: int
    masked: bool = True
    broadcast_mask: bool = False
    dropout_p: float = 0.0
    blocks: tuple[int, int] | None = None
    dtype: str | None = None  # overrides the suite's dtype


@dataclass
class CaseResult:
    case: Case
    dtype: str
    errors: dict[str, float] = field(default_factory=dict)  # kernel vs float64 reference, max abs
    baseline: dict[str, float] = field(default_factory=dict)  # reference in the test dtype vs float64
    scale: dict[str, float] = field(default_factory=dict)  # max abs of the float64 reference


# Interpreter suite: fp32, small shapes; 16-wide tiles where the loops over left/right tiles must be exercised.
INTERPRET_CASES = (
    Case("T1", 1, 1, 1, 16, 4, masked=False),
    Case("T5_mask", 2, 1, 5, 16, 2),
    Case("T63_K4_D32_mask", 2, 2, 63, 32, 4),
    Case("T65_K4_tiles16_mask", 2, 1, 65, 16, 4, blocks=(16, 16)),
    Case("T65_K80_D32", 1, 2, 65, 32, 80, masked=False),
    Case("T130_K8_D32_bcastmask", 2, 1, 130, 32, 8, broadcast_mask=True),
    Case("T45_K3_dropout_tiles16", 2, 1, 45, 16, 3, dropout_p=0.25, blocks=(16, 16)),
    Case("T70_K8_bf16", 2, 1, 70, 32, 8, dtype="bfloat16"),
)

# GPU suite: BERT-base head size, NEZHA's K = 64, the lengths the issue names.
GPU_CASES = (
    Case("T1", 2, 4, 1, 64, 64),
    Case("T63", 2, 4, 63, 64, 64),
    Case("T65", 2, 4, 65, 64, 64),
    Case("T511", 2, 4, 511, 64, 64),
    Case("T1000", 2, 4, 1000, 64, 64),
    Case("T4096", 1, 4, 4096, 64, 64),
    Case("T300_K16_D32", 2, 2, 300, 32, 16, broadcast_mask=True),
    Case("T257_dropout", 2, 2, 257, 64, 64, dropout_p=0.1),
)


def dense_reference(q, k, v, table, mask, *, max_relative_position, keep=None, dropout_p=0.0):
    """The textbook formula with explicit ``(T, T, D)`` relative vectors; ``keep (B, H, T, T)`` applies dropout."""
    T, D = q.shape[2], q.shape[3]
    buckets = relative_buckets(torch.arange(T, device=q.device), T, max_relative_position)  # (T, T)
    rel = table.to(q.dtype)[buckets]  # (T, T, D)
    scores = (q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rel)) / math.sqrt(D)  # (B, H, T, T)
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    probs = scores.softmax(-1)
    if keep is not None:
        probs = probs * keep.to(probs.dtype) / (1.0 - dropout_p)
    return probs @ v + torch.einsum("bhij,ijd->bhid", probs, rel)


def _inputs(case: Case, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    B, H, T, D = case.batch, case.heads, case.length, case.head_dim
    # (B, T, H, D) transposed to (B, H, T, D), as the model's projections produce them (a strided view).
    q, k, v = (torch.randn(B, T, H, D, generator=gen, dtype=torch.float64).transpose(1, 2) for _ in range(3))
    grad = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64)
    mask = None
    if case.masked or case.broadcast_mask:
        rows = 1 if case.broadcast_mask else B
        lengths = torch.randint(1, T + 1, (rows,), generator=gen)
        lengths[0] = max(1, T - T // 3)  # at least one row really padded when T > 2
        keep = torch.arange(T)[None, :] < lengths[:, None]  # (rows, T)
        mask = (~keep).double()[:, None, None, :] * torch.finfo(torch.float32).min  # (rows, 1, 1, T)
    move = lambda t: None if t is None else t.to(device)
    return move(q), move(k), move(v), move(grad), move(mask)


def _grads(fn, q, k, v, grad, dtype):
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    dq, dk, dv = torch.autograd.grad(out, leaves, grad.to(out.dtype))
    return {"out": out, "dq": dq, "dk": dk, "dv": dv}


def run_case(case: Case, dtype: torch.dtype, device: str | torch.device, seed: int = 0) -> CaseResult:
    """Fused kernel vs references for one case; see the module docstring."""
    from nezha.model.kernels.triton_attention import dropout_keep_mask, triton_relative_attention

    device = torch.device(device)
    K = case.max_relative_position
    q, k, v, grad, mask = _inputs(case, device, seed)
    table = relative_position_table(K, case.head_dim).to(device)
    blocks = None if case.blocks is None else {name: case.blocks for name in ("fwd", "dkdv", "dq")}
    drop_seed = 1234 + seed

    def fused(q_, k_, v_):
        m = None if mask is None else mask.float()
        return triton_relative_attention(
            q_, k_, v_, table, m, max_relative_position=K, dropout_p=case.dropout_p, seed=drop_seed, _blocks=blocks
        )

    if case.dropout_p > 0:
        keep = dropout_keep_mask(case.batch * case.heads, case.length, case.dropout_p, drop_seed, device)
        keep = keep.view(case.batch, case.heads, case.length, case.length)

        def reference(q_, k_, v_):
            return dense_reference(
                q_, k_, v_, table, mask, max_relative_position=K, keep=keep, dropout_p=case.dropout_p
            )
    else:

        def reference(q_, k_, v_):
            m = None if mask is None else mask.to(torch.float64 if q_.dtype == torch.float64 else torch.float32)
            return relative_attention(q_, k_, v_, table.to(q_.dtype), m, max_relative_position=K)

    exact = _grads(reference, q, k, v, grad, torch.float64)
    low = _grads(reference, q, k, v, grad, dtype)
    got = _grads(fused, q, k, v, grad, dtype)
    result = CaseResult(case, str(dtype).removeprefix("torch."))
    for name, ref in exact.items():
        result.errors[name] = (got[name].double() - ref).abs().max().item()
        result.baseline[name] = (low[name].double() - ref).abs().max().item()
        result.scale[name] = ref.abs().max().item()
        if not math.isfinite(result.errors[name]):
            result.errors[name] = float("inf")
    return result


def model_equivalence(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """A small NezhaModel run with attention_backend "triton" vs "eager": relative max error of the hidden states
    and of every parameter gradient (worst one), and how many fused launches the triton run made."""
    import nezha.model.kernels.triton_attention as ta
    from nezha import NezhaConfig, NezhaModel

    cfg = NezhaConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                      max_relative_position=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (2, 37), generator=gen).to(device)
    attention_mask = torch.ones(2, 37, dtype=torch.long)
    attention_mask[1, 29:] = 0
    attention_mask = attention_mask.to(device)
    # A random projection as the loss (a squared LayerNorm output would be ~constant, its gradients noise).
    weight = torch.randn(2, 37, 64, generator=gen).to(device)
    runs, launches = {}, [0]
    launch = ta._launch

    def counted(*a, **kw):
        launches[0] += 1
        return launch(*a, **kw)

    for backend in ("eager", "triton"):
        torch.manual_seed(0)
        model = NezhaModel(dataclasses.replace(cfg, attention_backend=backend)).to(device, dtype)
        ta._launch = counted
        try:
            hidden = model(ids, attention_mask).last_hidden_state
            (hidden.float() * weight).sum().backward()
        finally:
            ta._launch = launch
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        runs[backend] = (hidden.detach().float(), grads)
    (h0, g0), (h1, g1) = runs["eager"], runs["triton"]
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    # Key biases get no gradient in exact arithmetic (softmax is shift-invariant), only rounding noise: skipped.
    grad_errors = {n: rel(g1[n], g0[n]) for n in g0 if not n.endswith("key.bias")}
    worst = max(grad_errors, key=grad_errors.get)
    return {
        "hidden_rel_err": rel(h1, h0),
        "worst_grad_rel_err": grad_errors[worst],
        "worst_grad": worst,
        "fused_launches": float(launches[0]),
    }


def self_check_statistics(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """The first-use guard (``run_self_check``) passes the kernel as is and rejects one with a broken band term."""
    import nezha.model.kernels.triton_attention as ta

    device = torch.device(device)
    result = {"as_is": ta.run_self_check(device, torch.float32, 16)}
    band_tables = ta.band_tables
    ta.band_tables = lambda *a: tuple(t * 0.5 for t in band_tables(*a))  # wrong U and rotations
    try:
        result["broken_band"] = ta.run_self_check(device, torch.float32, 16)
    finally:
        ta.band_tables = band_tables
    return result


def dropout_statistics(device: str | torch.device = "cpu", dropout_p: float = 0.25) -> dict[str, float]:
    """Keep rate of the kernels' dropout mask, and how seeds change it: the dense comparison cannot see these."""
    from nezha.model.kernels.triton_attention import dropout_keep_mask, triton_relative_attention

    a = dropout_keep_mask(2, 96, dropout_p, seed=7, device=device)
    b = dropout_keep_mask(2, 96, dropout_p, seed=8, device=device)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=gen).to(device) for _ in range(3))
    table = relative_position_table(4, 16).to(device)

    def run(p: float, seed: int) -> torch.Tensor:
        return triton_relative_attention(q, k, v, table, None, max_relative_position=4, dropout_p=p, seed=seed)

    plain, first, again = run(0.0, 0), run(dropout_p, 3), run(dropout_p, 3)
    return {
        "keep_rate": a.float().mean().item(),
        "seed_agreement": (a == b).float().mean().item(),
        "same_seed_max_diff": (first - again).abs().max().item(),
        "dropout_vs_plain_max_diff": (first - plain).abs().max().item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("interpret", "gpu"), default="interpret")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="default: float32 for the interpreter suite, bfloat16 for the GPU suite")
    parser.add_argument("--only", default=None, help="run only the case with this name")
    args = parser.parse_args(argv)
    cases = INTERPRET_CASES if args.suite == "interpret" else GPU_CASES
    dtype = getattr(torch, args.dtype or ("float32" if args.suite == "interpret" else "bfloat16"))
    device = "cpu" if args.suite == "interpret" else "cuda"
    for case in cases:
        if args.only and case.name != args.only:
            continue
        res = run_case(case, getattr(torch, case.dtype) if case.dtype else dtype, device)
        record = {"case": asdict(res.case), "dtype": res.dtype, "errors": res.errors, "baseline": res.baseline,
                  "scale": res.scale}
        print(json.dumps(record), flush=True)
    if not args.only:
        print(json.dumps({"dropout_statistics": dropout_statistics(device)}), flush=True)
        print(json.dumps({"model_equivalence": model_equivalence(device, dtype)}), flush=True)
        print(json.dumps({"self_check": self_check_statistics(device)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
