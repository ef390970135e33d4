"""Eager vs torch.compile on CPU: NezhaModel forward+backward, fp32, no dropout, tiny and base, seq 128 and 512.

Each (preset, sequence length) cell runs in its own subprocess: compile once (its time is reported), then
``--repeats`` rounds that each time one eager and one compiled step back to back, so machine noise hits both
alike. Reports the median seconds per step of each mode, the spread (min..max) and the ratio eager / compiled
(above 1: compiling helps).

    python benchmarks/bench_compile.py                 # writes benchmarks/results/bench_compile.json
    python benchmarks/bench_compile.py --cells tiny:128 base:512 --repeats 5
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
CELLS = ("tiny:128", "tiny:512", "base:128", "base:512")
BATCH = {("tiny", 128): 16, ("tiny", 512): 4, ("base", 128): 4, ("base", 512): 1}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def run_cell(preset: str, seq: int, repeats: int) -> dict:
    import torch
    import torch._dynamo as dynamo

    import nezha

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    torch.manual_seed(0)
    cfg = nezha.NezhaConfig.preset(preset, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = nezha.NezhaModel(cfg).train()
    batch = BATCH.get((preset, seq), 1)
    ids = torch.randint(1, cfg.vocab_size, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq * 3 // 4:] = 0
    compiled = torch.compile(model)
    graphs = dynamo.explain(model)(ids, attention_mask=mask)
    dynamo.reset()

    def step(m) -> float:
        t0 = time.perf_counter()
        m(ids, attention_mask=mask).last_hidden_state.square().mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    step(compiled)
    compile_s = time.perf_counter() - t0
    step(compiled)
    step(model)
    eager, comp = [], []
    for _ in range(repeats):
        eager.append(step(model))
        comp.append(step(compiled))
    return {
        "preset": preset, "seq": seq, "batch": batch, "repeats": repeats, "threads": torch.get_num_threads(),
        "graph_breaks": graphs.graph_break_count, "first_compiled_step_s": compile_s,
        "eager_s_median": _median(eager), "eager_s_min": min(eager), "eager_s_max": max(eager),
        "compiled_s_median": _median(comp), "compiled_s_min": min(comp), "compiled_s_max": max(comp),
        "eager_over_compiled": _median(eager) / _median(comp),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", nargs="+", default=list(CELLS), help="preset:seq pairs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", default=str(RESULTS / "bench_compile.json"))
    ap.add_argument("--_cell", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._cell:
        preset, seq, repeats = args._cell
        print(json.dumps(run_cell(preset, int(seq), int(repeats))))
        return
    results = []
    print("preset seq  batch  eager s (min..max)      compiled s (min..max)   eager/compiled  compile s  breaks")
    for cell in args.cells:
        preset, seq = cell.split(":")
        cmd = [sys.executable, __file__, "--_cell", preset, seq, str(args.repeats)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        r = json.loads(proc.stdout.splitlines()[-1])
        results.append(r)
        print(f"{preset:6s} {r['seq']:<4d} {r['batch']:5d}  {r['eager_s_median']:6.3f} ({r['eager_s_min']:.3f}.."
              f"{r['eager_s_max']:.3f})  {r['compiled_s_median']:6.3f} ({r['compiled_s_min']:.3f}.."
              f"{r['compiled_s_max']:.3f})  {r['eager_over_compiled']:13.2f}x {r['first_compiled_step_s']:10.1f} "
              f"{r['graph_breaks']:7d}", flush=True)
    meta = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "argv": sys.argv[1:],
            "loadavg_at_end": os.getloadavg()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
