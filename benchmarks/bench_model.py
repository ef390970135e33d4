"""Forward+backward time and peak memory of NEZHA-base: ours vs transformers 4.44.2 Nezha, same run.

Also measures plain BERT-base with SDPA attention (no relative terms): the ceiling for any NEZHA implementation.
Each (implementation, sequence length) cell runs in its own subprocess so peak memory is measured cleanly
(peak RSS reset through /proc/self/clear_refs before the timed steps, so the figure is the activation + gradient
peak on top of the loaded model). Every repeat runs all three implementations back to back, so machine noise
hits all sides alike; the table reports the median over repeats (of each repeat's fastest step) and the spread
(min..max), and ratios against BERT-SDPA from the medians.

    python benchmarks/bench_model.py                     # seq 128 and 512, writes benchmarks/results/bench_model.json
    python benchmarks/bench_model.py --seq 512 --repeats 5 --steps 2
    python benchmarks/bench_model.py --profile           # torch.profiler table: one base layer, seq 512, batch 4
    python benchmarks/bench_model.py --attention         # the attention function alone vs SDPA, fwd+bwd
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nezha.io.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ("nezha", "hf_nezha", "hf_bert_sdpa")
BATCH_FOR_SEQ = {128: 16, 512: 4, 1024: 2, 2048: 1}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _build(impl: str):
    import torch

    torch.manual_seed(0)
    if impl == "nezha":
        import nezha

        cfg = nezha.NezhaConfig.preset("base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return nezha.NezhaModel(cfg)
    if impl == "hf_nezha":
        from transformers.models.deprecated.nezha import NezhaConfig, NezhaModel

        return NezhaModel(NezhaConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    if impl == "hf_bert_sdpa":
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=21128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        cfg._attn_implementation = "sdpa"
        return BertModel(cfg)
    raise ValueError(impl)


def run_cell(impl: str, seq: int, batch: int, steps: int) -> dict:
    """Time ``steps`` fwd+bwd passes after one warm-up; report mean seconds/step and peak extra RSS."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    model = _build(impl).train()
    ids = torch.randint(1, 21128, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq * 3 // 4:] = 0  # some padding, as in real batches

    def step():
        out = model(input_ids=ids, attention_mask=mask)
        out.last_hidden_state.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter: the peak is over every step
    base_rss = _rss_kib("VmRSS")  # model and inputs only
    step()  # warm-up: allocator, thread pools, lazy inits
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = _rss_kib("VmHWM")
    return {
        "impl": impl, "seq": seq, "batch": batch, "steps": steps,
        "sec_per_step": min(times), "mean_sec_per_step": sum(times) / len(times),
        "peak_extra_mib": (peak - base_rss) / 1024, "peak_total_mib": peak / 1024, "threads": torch.get_num_threads(),
    }


def profile_layer(seq: int = 512, batch: int = 4, top: int = 15) -> str:
    """Where the time of one NEZHA-base layer's forward+backward goes (fp32, no dropout), as a profiler table."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import nezha
    from nezha.model.modeling import NezhaLayer
    from nezha.model.positions import relative_position_table

    torch.manual_seed(0)
    cfg = nezha.NezhaConfig.preset("base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    layer = NezhaLayer(cfg)
    x = torch.randn(batch, seq, cfg.hidden_size, requires_grad=True)
    mask = torch.zeros(batch, 1, 1, seq)
    mask[-1, ..., seq * 3 // 4:] = torch.finfo(torch.float32).min
    table = relative_position_table(cfg.max_relative_position, cfg.head_dim)

    def step():
        layer(x, mask, table).square().mean().backward()

    step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=32)


def time_attention(seq: int = 512, batch: int = 4, repeats: int = 7) -> dict:
    """Forward+backward of the attention function alone, NEZHA-base heads, against SDPA with the same mask (no
    relative terms), alternating calls; inputs are head-split views as the models pass them."""
    import torch
    import torch.nn.functional as F

    from nezha.model.attention import relative_attention
    from nezha.model.positions import relative_position_table

    torch.manual_seed(0)
    H, D, K = 12, 64, 64
    q, k, v = (torch.randn(batch, seq, H, D).transpose(1, 2).requires_grad_() for _ in range(3))
    table = relative_position_table(K, D)
    mask = torch.zeros(batch, 1, 1, seq)
    mask[-1, ..., seq * 3 // 4:] = torch.finfo(torch.float32).min
    grad = torch.randn(batch, H, seq, D)
    fns = {
        "nezha": lambda: relative_attention(q, k, v, table, mask, max_relative_position=K),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(repeats + 1):  # the first round warms up
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn().backward(grad)
            if rep:
                times[name].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(times["nezha"], times["sdpa"]))
    return {"seq": seq, "batch": batch, "threads": torch.get_num_threads(),
            "ms": {n: {"median": 1e3 * _median(t), "min": 1e3 * min(t), "max": 1e3 * max(t)} for n, t in times.items()},
            "ratio_median": _median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1]}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per cell after one warm-up (fastest is kept)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved subprocess repeats per cell")
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--output", default=str(RESULTS / "bench_model.json"))
    ap.add_argument("--profile", action="store_true", help="print the profile of one base layer and exit")
    ap.add_argument("--attention", action="store_true",
                    help="time the attention function alone against SDPA (fwd+bwd, each --seq) and exit")
    ap.add_argument("--_cell", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile:
        print(profile_layer())
        return
    if args.attention:
        results = []
        for seq in args.seq:
            res = time_attention(seq, BATCH_FOR_SEQ.get(seq, 1), max(args.repeats, 3))
            ms = res["ms"]
            print(f"seq {seq} batch {res['batch']}: nezha {ms['nezha']['median']:.1f} ms "
                  f"({ms['nezha']['min']:.1f}..{ms['nezha']['max']:.1f}), SDPA {ms['sdpa']['median']:.1f} ms "
                  f"({ms['sdpa']['min']:.1f}..{ms['sdpa']['max']:.1f}): {res['ratio_median']:.2f}x "
                  f"({res['ratio_min']:.2f}..{res['ratio_max']:.2f}) per alternating pair")
            results.append(res)
        out = RESULTS / "bench_attention_cpu.json"
        meta = {"cpu_count": os.cpu_count(), "argv": sys.argv[1:], "loadavg_at_end": os.getloadavg()}
        atomic_write_text(out, json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"wrote {out}")
        return
    if args._cell:
        impl, seq, batch, steps = args._cell
        print(json.dumps(run_cell(impl, int(seq), int(batch), int(steps))))
        return

    runs: dict[tuple[str, int], list[dict]] = {}
    for rep in range(args.repeats):
        for seq in args.seq:
            for impl in args.impls:
                batch = BATCH_FOR_SEQ.get(seq, 1)
                cmd = [sys.executable, __file__, "--_cell", impl, str(seq), str(batch), str(args.steps)]
                proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
                res = json.loads(proc.stdout.splitlines()[-1])
                print(f"[rep {rep}] {impl:13s} seq {seq:5d} batch {batch:3d}: {res['sec_per_step']:.3f} s/step, "
                      f"peak +{res['peak_extra_mib']:.0f} MiB", flush=True)
                runs.setdefault((impl, seq), []).append(res)

    summary = []
    print("\nmedian over repeats (min..max); peak MiB = activation/gradient peak above the built model")
    print("seq  impl           s/step (min..max)        peak MiB (min..max)    time vs BERT-SDPA  memory vs BERT-SDPA")
    for seq in args.seq:
        cells = {}
        for impl in args.impls:
            rs = runs[(impl, seq)]
            t = [r["sec_per_step"] for r in rs]
            m = [r["peak_extra_mib"] for r in rs]
            cells[impl] = {
                "impl": impl, "seq": seq, "batch": rs[0]["batch"], "steps": args.steps, "repeats": len(rs),
                "threads": rs[0]["threads"], "sec_per_step_median": _median(t), "sec_per_step_min": min(t),
                "sec_per_step_max": max(t), "sec_per_step_runs": t, "peak_extra_mib_median": _median(m),
                "peak_extra_mib_min": min(m), "peak_extra_mib_max": max(m),
                "peak_total_mib_median": _median([r["peak_total_mib"] for r in rs]),
            }
        ceiling = cells.get("hf_bert_sdpa")
        for impl, c in cells.items():
            if ceiling:
                c["time_vs_bert_sdpa"] = c["sec_per_step_median"] / ceiling["sec_per_step_median"]
                c["memory_vs_bert_sdpa"] = c["peak_extra_mib_median"] / ceiling["peak_extra_mib_median"]
            summary.append(c)
            print(f"{seq:<4d} {impl:13s} {c['sec_per_step_median']:6.3f} ({c['sec_per_step_min']:.3f}.."
                  f"{c['sec_per_step_max']:.3f})  {c['peak_extra_mib_median']:7.0f} ({c['peak_extra_mib_min']:.0f}.."
                  f"{c['peak_extra_mib_max']:.0f})  {c.get('time_vs_bert_sdpa', float('nan')):17.3f}x "
                  f"{c.get('memory_vs_bert_sdpa', float('nan')):19.3f}x")
    meta = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "argv": sys.argv[1:],
            "loadavg_at_end": os.getloadavg()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps({"meta": meta, "results": summary}, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
