"""Forward+backward time and peak memory of NEZHA-base: ours vs transformers 4.44.2 Nezha, same run.

Also measures plain BERT-base with SDPA attention (no relative terms): the ceiling for any NEZHA implementation.
Each (implementation, sequence length) cell runs in its own subprocess so peak memory is measured cleanly
(peak RSS reset through /proc/self/clear_refs before the timed steps, so the figure is the activation + gradient
peak on top of the loaded model). Cells are interleaved across repeats so machine noise hits all sides alike.

    python benchmarks/bench_model.py                     # seq 128 and 512, writes benchmarks/results/bench_model.json
    python benchmarks/bench_model.py --seq 512 --repeats 3 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved subprocess repeats per cell (min is kept)")
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--output", default=str(RESULTS / "bench_model.json"))
    ap.add_argument("--_cell", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._cell:
        impl, seq, batch, steps = args._cell
        print(json.dumps(run_cell(impl, int(seq), int(batch), int(steps))))
        return

    cells: dict[tuple[str, int], dict] = {}
    for rep in range(args.repeats):
        for seq in args.seq:
            for impl in args.impls:
                batch = BATCH_FOR_SEQ.get(seq, 1)
                cmd = [sys.executable, __file__, "--_cell", impl, str(seq), str(batch), str(args.steps)]
                proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
                res = json.loads(proc.stdout.splitlines()[-1])
                print(f"[rep {rep}] {impl:13s} seq {seq:5d} batch {batch:3d}: {res['sec_per_step']:.3f} s/step, "
                      f"peak +{res['peak_extra_mib']:.0f} MiB", flush=True)
                best = cells.get((impl, seq))
                if best is None:
                    cells[(impl, seq)] = res
                else:
                    best["sec_per_step"] = min(best["sec_per_step"], res["sec_per_step"])
                    best["peak_extra_mib"] = min(best["peak_extra_mib"], res["peak_extra_mib"])
                    best["peak_total_mib"] = min(best["peak_total_mib"], res["peak_total_mib"])

    summary = []
    print("\npeak MiB = activation/gradient peak above the built model; total = whole-process peak RSS")
    print("seq  impl           s/step  peak MiB  total MiB  speed vs HF Nezha  memory vs HF Nezha")
    for seq in args.seq:
        ref = cells.get(("hf_nezha", seq))
        for impl in args.impls:
            c = cells[(impl, seq)]
            row = dict(c)
            if ref:
                row["speedup_vs_hf_nezha"] = ref["sec_per_step"] / c["sec_per_step"]
                row["memory_ratio_vs_hf_nezha"] = c["peak_extra_mib"] / ref["peak_extra_mib"]
            summary.append(row)
            print(f"{seq:<4d} {impl:13s} {c['sec_per_step']:7.3f} {c['peak_extra_mib']:9.0f} "
                  f"{c['peak_total_mib']:10.0f} "
                  f"{row.get('speedup_vs_hf_nezha', float('nan')):18.2f}x "
                  f"{row.get('memory_ratio_vs_hf_nezha', float('nan')):18.2f}x")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "argv": sys.argv[1:]}
    out.write_text(json.dumps({"meta": meta, "results": summary}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
