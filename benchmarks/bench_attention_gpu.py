"""GPU attention benchmark: fused Triton relative attention vs the eager path, SDPA-flash and transformers Nezha.

Times forward+backward in bf16 at BERT-base heads (H=12, D=64, K=64) for several sequence lengths with a constant
number of tokens per step, then one full NezhaForPreTraining step (bf16 autocast, seq 128) per attention backend
with its MFU. Every cell catches its own failure (out of memory included) and the run goes on. Results go to
benchmarks/results/gpu_check.json and a markdown table beside it. Run through benchmarks/gpu_check.sh.

    python benchmarks/bench_attention_gpu.py                 # on a CUDA machine
    python benchmarks/bench_attention_gpu.py --cpu-smoke     # tiny sizes on CPU (Triton interpreter): finds bugs

Attention cells:
- ``*_core``: q, k, v -> out only (the SDPA-flash ceiling has no relative terms and no mask);
- ``*_module``: the whole self-attention (Q/K/V projections + attention) from hidden states, which is how
  transformers' NezhaSelfAttention can be timed.
TFLOP/s for core cells count 4*B*H*T^2*D per forward and 2.5x that for the backward (FlashAttention's convention).
MFU counts 6 * (non-embedding parameters) * tokens + 6 * V * E * masked positions (the tied decoder) +
12 * layers * T^2 * E * B (attention), over the step time and the peak (--peak-tflops, dense bf16).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU under the Triton interpreter")
    p.add_argument("--seqs", default="128,512,2048,8192", help="comma-separated sequence lengths")
    p.add_argument("--tokens", type=int, default=16384, help="tokens per step; batch = tokens // seq")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--max-relative-position", type=int, default=64)
    p.add_argument("--cells", default="all", help="comma-separated cell names (default: all)")
    p.add_argument("--min-time", type=float, default=0.4, help="seconds of timed repeats per cell")
    p.add_argument("--budget", type=float, default=150.0, help="seconds for the attention table; later cells skip")
    p.add_argument("--model-preset", default="base")
    p.add_argument("--model-seq", type=int, default=128)
    p.add_argument("--model-tokens", type=int, default=16384, help="tokens per pretraining step")
    p.add_argument("--model-steps", type=int, default=10)
    p.add_argument("--max-predictions", type=int, default=20, help="masked positions per sequence")
    p.add_argument("--pretrain-rows", default=None,
                   help="pretraining step variants: backend names, '+compile' for torch.compile "
                        "(default eager,triton,triton+compile; eager,triton with --cpu-smoke)")
    p.add_argument("--total-budget", type=float, default=300.0,
                   help="seconds for the whole run; a pretraining row that would start later is skipped")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989; H200: 989)")
    p.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    args = p.parse_args(argv)
    if not args.cpu_smoke:
        args.pretrain_rows = args.pretrain_rows or "eager,triton,triton+compile"
    if args.cpu_smoke:
        args.seqs, args.tokens, args.heads, args.head_dim, args.max_relative_position = "16,40", 80, 2, 16, 4
        args.min_time, args.model_preset, args.model_seq, args.model_tokens = 0.0, "tiny", 24, 48
        args.model_steps, args.max_predictions = 1, 3
        args.pretrain_rows = args.pretrain_rows or "eager,triton"
        if args.out == str(RESULTS / "gpu_check.json"):
            args.out = str(RESULTS / "gpu_check_cpu_smoke.json")
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------------------------------


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, min_time: float, warmup: int = 2) -> dict:
    """Mean seconds per call after ``warmup`` calls; repeats until ``min_time`` has passed (3 to 50 calls)."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    reps = max(3, min(50, math.ceil(min_time / max(first, 1e-6)))) if min_time > 0 else 1
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    seconds = (time.perf_counter() - t0) / reps
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else None
    return {"ms": seconds * 1e3, "reps": reps, "peak_extra_mib": peak}


def _cleanup(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _LaunchCounter:
    """Counts fused-kernel launches, so a result says which backend really ran."""

    def __init__(self):
        self.count = 0
        self._orig = None

    def __enter__(self):
        try:
            import nezha.model.kernels.triton_attention as ta
        except ImportError:
            return self
        self._mod, self._orig = ta, ta._launch

        def counted(*a, **kw):
            self.count += 1
            return self._orig(*a, **kw)

        ta._launch = counted
        return self

    def __exit__(self, *exc):
        if self._orig is not None:
            self._mod._launch = self._orig


# ----------------------------------------------------------------------------------------------------------------------
# Attention cells
# ----------------------------------------------------------------------------------------------------------------------

CELLS = (
    "triton_core", "triton_core_mask", "triton_core_dropout", "eager_core", "sdpa_flash_core",
    "triton_module", "eager_module", "sdpa_module", "hf_nezha_module",
)


def _sdpa_backends(device):
    from torch.nn.attention import SDPBackend

    return [SDPBackend.FLASH_ATTENTION] if device.type == "cuda" else [SDPBackend.MATH]


def _hf_self_attention(args, seq, device, dtype):
    """transformers 4.44.2 NezhaSelfAttention with its (T, T, D) relative buffer built directly at length ``seq``."""
    import torch
    from transformers.models.deprecated.nezha.configuration_nezha import NezhaConfig as HFConfig
    from transformers.models.deprecated.nezha.modeling_nezha import NezhaSelfAttention as HFSelfAttention

    from nezha.model.positions import relative_buckets, relative_position_table

    hidden = args.heads * args.head_dim
    cfg = HFConfig(hidden_size=hidden, num_attention_heads=args.heads, max_position_embeddings=8,
                   max_relative_position=args.max_relative_position, attention_probs_dropout_prob=0.0)
    module = HFSelfAttention(cfg)
    # The module builds a (max_position_embeddings, max_position_embeddings, D) buffer through a one-hot matmul
    # on the CPU (minutes at 8192); the same buffer, gathered on the device, keeps the timing about attention.
    module = module.to(device=device, dtype=dtype)
    table = relative_position_table(args.max_relative_position, args.head_dim).to(device=device, dtype=dtype)
    buckets = relative_buckets(torch.arange(seq, device=device), seq, args.max_relative_position)
    module.relative_positions_encoding.positions_encoding = table[buckets]  # (T, T, D)
    return module


class _SdpaSelfAttention:
    """Q/K/V projections + SDPA (flash on CUDA): the no-relative-terms ceiling at module level."""

    def __init__(self, hidden, heads, device, dtype):
        import torch

        self.heads = heads
        self.proj = [torch.nn.Linear(hidden, hidden).to(device=device, dtype=dtype) for _ in range(3)]

    def __call__(self, x):
        import torch.nn.functional as F
        from torch.nn.attention import sdpa_kernel

        B, T, E = x.shape
        q, k, v = (p(x).view(B, T, self.heads, E // self.heads).transpose(1, 2) for p in self.proj)
        with sdpa_kernel(_sdpa_backends(x.device)):
            out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(B, T, E)

    def parameters(self):
        return [p for lin in self.proj for p in lin.parameters()]


def _attention_cell(name: str, args, seq: int, device, dtype) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    from nezha.model.attention import relative_attention
    from nezha.model.config import NezhaConfig
    from nezha.model.kernels.triton_attention import triton_relative_attention
    from nezha.model.positions import relative_position_table

    B, H, D, K = max(1, args.tokens // seq), args.heads, args.head_dim, args.max_relative_position
    torch.manual_seed(0)
    table = relative_position_table(K, D).to(device)
    info = {"batch": B, "seq": seq}
    if "_core" in name:
        qkv = [torch.randn(B, H, seq, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
        grad = torch.randn(B, H, seq, D, device=device, dtype=dtype)
        mask = None
        if name == "triton_core_mask":
            mask = torch.zeros(B, 1, 1, seq, device=device)
            mask[: B // 2 + 1, ..., seq - seq // 8:] = torch.finfo(torch.float32).min  # pad 1/8 of half the rows
        dropout = 0.1 if name == "triton_core_dropout" else 0.0
        if name.startswith("triton"):
            fn = lambda q, k, v: triton_relative_attention(q, k, v, table, mask, max_relative_position=K,
                                                            dropout_p=dropout)
        elif name == "eager_core":
            fn = lambda q, k, v: relative_attention(q, k, v, table, mask, max_relative_position=K)
        else:
            def fn(q, k, v):
                with sdpa_kernel(_sdpa_backends(device)):
                    return F.scaled_dot_product_attention(q, k, v)

        def step():
            out = fn(*qkv)
            torch.autograd.grad(out, qkv, grad)

        flops = 3.5 * 4 * B * H * seq * seq * D
    else:
        E = H * D
        x = torch.randn(B, seq, E, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(B, seq, E, device=device, dtype=dtype)
        if name in ("triton_module", "eager_module"):
            from nezha.model.modeling import NezhaSelfAttention

            cfg = NezhaConfig(hidden_size=E, num_attention_heads=H, max_relative_position=K,
                              attention_probs_dropout_prob=0.0,
                              attention_backend="triton" if name == "triton_module" else "eager")
            module = NezhaSelfAttention(cfg).to(device=device, dtype=dtype)
            call = lambda: module(x, None, table)
        elif name == "sdpa_module":
            module = _SdpaSelfAttention(E, H, device, dtype)
            call = lambda: module(x)
        else:
            module = _hf_self_attention(args, seq, device, dtype)
            call = lambda: module(x)[0]
        params = list(module.parameters())

        def step():
            out = call()
            torch.autograd.grad(out, [x, *params], grad)

        flops = None
    with _LaunchCounter() as launches:
        timing = _time(step, device, args.min_time)
    info.update(timing)
    info["fused_kernel_launches"] = launches.count
    if flops is not None:
        info["tflops"] = flops / (timing["ms"] / 1e3) / 1e12
    return info


def run_attention_table(args, device, dtype) -> dict:
    cells = CELLS if args.cells == "all" else tuple(args.cells.split(","))
    results: dict[str, dict[str, dict]] = {}
    start = time.perf_counter()
    for seq in [int(s) for s in args.seqs.split(",")]:
        row = results.setdefault(str(seq), {})
        for name in cells:
            if time.perf_counter() - start > args.budget:
                row[name] = {"status": "skipped (time budget)"}
                continue
            t0 = time.perf_counter()
            try:
                row[name] = {"status": "ok", **_attention_cell(name, args, seq, device, dtype)}
            except Exception as exc:  # one failing cell (OOM, a missing package, a compile error) must not stop the run
                status = "OOM" if _is_oom(exc) else f"error: {type(exc).__name__}: {str(exc)[:300]}"
                row[name] = {"status": status}
                if status != "OOM":
                    traceback.print_exc(limit=3)
            row[name]["wall_s"] = time.perf_counter() - t0
            _cleanup(device)
            cell = row[name]
            shown = f"{cell['ms']:.3f} ms" if "ms" in cell else cell["status"]
            print(f"[attention] seq {seq:5d} {name:22s} {shown}", flush=True)
        _ratios(row)
    return results


def _ratios(row: dict) -> None:
    """Speed ratios within one sequence length (>1 means the first is faster than the second)."""
    def ratio(a, b):
        if "ms" in row.get(a, {}) and "ms" in row.get(b, {}):
            return row[b]["ms"] / row[a]["ms"]
        return None

    row["ratios"] = {
        "triton_vs_sdpa_flash_core": ratio("triton_core", "sdpa_flash_core"),
        "triton_vs_eager_core": ratio("triton_core", "eager_core"),
        "triton_vs_hf_nezha_module": ratio("triton_module", "hf_nezha_module"),
        "triton_vs_sdpa_module": ratio("triton_module", "sdpa_module"),
        "triton_vs_eager_module": ratio("triton_module", "eager_module"),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Full pretraining step
# ----------------------------------------------------------------------------------------------------------------------


def run_pretraining_step(args, device, row: str) -> dict:
    """One NezhaForPreTraining step per call; ``row`` is a backend name, "+compile" adds torch.compile."""
    import torch

    from nezha import NezhaConfig, NezhaForPreTraining

    backend, compiled = row.removesuffix("+compile"), row.endswith("+compile")
    torch.manual_seed(0)
    cfg = NezhaConfig.preset(args.model_preset, attention_backend=backend)
    model = NezhaForPreTraining(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    T, B, M = args.model_seq, max(1, args.model_tokens // args.model_seq), args.max_predictions
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    attention_mask = torch.ones(B, T, dtype=torch.long, device=device)
    attention_mask[: B // 4, T - T // 4:] = 0  # some padded rows, as in real batches
    token_types = (torch.arange(T, device=device) >= T // 2).long().expand(B, T)
    positions = torch.stack([torch.randperm(T - 1, device=device)[:M] + 1 for _ in range(B)]).sort(-1).values
    labels = torch.randint(0, cfg.vocab_size, (B, M), device=device)
    nsp = torch.randint(0, 2, (B,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = forward(ids, attention_mask, token_types, labels=labels, next_sentence_label=nsp,
                          masked_positions=positions)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with _LaunchCounter() as launches:
        timing = _time(step, device, min_time=0.0 if args.cpu_smoke else 1.0, warmup=3)
    embed = {id(model.nezha.embeddings.word_embeddings.weight), id(model.nezha.embeddings.token_type_embeddings.weight)}
    params = {id(p): p.numel() for p in model.parameters()}
    n_all = sum(params.values())
    n_dense = sum(n for i, n in params.items() if i not in embed)
    E, L = cfg.hidden_size, cfg.num_hidden_layers
    attn_flops = 12 * L * T * T * E * B
    flops = 6 * n_dense * B * T + 6 * cfg.vocab_size * E * B * M + attn_flops
    seconds = timing["ms"] / 1e3
    return {
        "status": "ok", "backend": backend, "compiled": compiled, "batch": B, "seq": T, **timing,
        "tokens_per_s": B * T / seconds,
        "fused_kernel_launches": launches.count,
        "params_all": n_all, "params_non_embedding": n_dense,
        "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "mfu_all_params": (6 * n_all * B * T + attn_flops) / seconds / (args.peak_tflops * 1e12),
        "peak_tflops": args.peak_tflops,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device']}", "",
             f"torch {report['torch']}, triton {report['triton']}, transformers {report['transformers']}; "
             f"bf16, H={report['args']['heads']}, D={report['args']['head_dim']}, "
             f"K={report['args']['max_relative_position']}, {report['args']['tokens']} tokens per step.", "",
             "## Attention forward+backward (ms; lower is better)", ""]
    table = report["attention"]
    cells = [c for c in CELLS if any(c in row for row in table.values())]
    lines.append("| seq | batch | " + " | ".join(cells) + " |")
    lines.append("|---" * (len(cells) + 2) + "|")
    for seq, row in table.items():
        batch = next((v["batch"] for v in row.values() if isinstance(v, dict) and "batch" in v), "")
        vals = [f"{row[c]['ms']:.2f}" if "ms" in row.get(c, {}) else row.get(c, {}).get("status", "")[:20]
                for c in cells]
        lines.append(f"| {seq} | {batch} | " + " | ".join(vals) + " |")
    lines += ["", "## Ratios (speed of the fused kernel over the other; > 1 is faster)", "",
              "| seq | vs SDPA-flash (core) | vs eager (core) | vs HF Nezha (module) | vs SDPA (module) |",
              "|---|---|---|---|---|"]
    fmt = lambda x: "" if x is None else f"{x:.2f}"
    for seq, row in table.items():
        r = row.get("ratios", {})
        lines.append(f"| {seq} | {fmt(r.get('triton_vs_sdpa_flash_core'))} | {fmt(r.get('triton_vs_eager_core'))} | "
                     f"{fmt(r.get('triton_vs_hf_nezha_module'))} | {fmt(r.get('triton_vs_sdpa_module'))} |")
    lines += ["", "## Pretraining step (NezhaForPreTraining, bf16 autocast)", "",
              "| backend | batch x seq | ms/step | tokens/s | MFU | MFU (all params) | fused launches |",
              "|---|---|---|---|---|---|---|"]
    for name, r in report["pretraining"].items():
        if r.get("status") != "ok":
            lines.append(f"| {name} | | {r.get('status', '')[:40]} | | | | |")
            continue
        lines.append(f"| {name} | {r['batch']}x{r['seq']} | {r['ms']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{100 * r['mfu']:.1f}% | {100 * r['mfu_all_params']:.1f}% | {r['fused_kernel_launches']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        import transformers

        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    from nezha.io.atomic import atomic_write_text

    if args.cpu_smoke:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke for the CPU check", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    dtype = torch.bfloat16
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (Triton interpreter smoke run)",
        "torch": torch.__version__, "triton": triton_version, "transformers": hf_version,
        "args": vars(args), "attention": {}, "pretraining": {},
    }
    t0 = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section, so a run stopped by its time limit still leaves results
        try:
            from nezha.model.kernels.triton_attention import autotune_choices

            report["autotune"] = autotune_choices()
        except ImportError:
            pass
        report["wall_s"] = time.perf_counter() - t0
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), markdown(report))

    report["attention"] = run_attention_table(args, device, dtype)
    save()
    # Seconds each row needs beyond the attention table, roughly (compilation dominates the compiled row).
    need = {"eager": 20.0, "triton": 40.0}
    for row in args.pretrain_rows.split(","):
        if time.perf_counter() - t0 + need.get(row, 120.0) > args.total_budget and not args.cpu_smoke:
            report["pretraining"][row] = {"status": "skipped (time budget)"}
            continue
        try:
            report["pretraining"][row] = run_pretraining_step(args, device, row)
        except Exception as exc:
            report["pretraining"][row] = {"status": "OOM" if _is_oom(exc) else f"error: {exc!s:.300}"}
            traceback.print_exc(limit=3)
        _cleanup(device)
        print(f"[pretraining] {row}: {json.dumps(report['pretraining'][row])}", flush=True)
        save()
    print(markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
