"""CPU inference latency of NEZHA-base (sequence classification): eager PyTorch vs ONNX Runtime vs int8 dynamic
quantization (ONNX Runtime ``quantize_dynamic`` and ``torch.ao`` dynamic quantization), same run.

Batch 1, sequence 128 by default. Variants are timed in interleaved rounds (each round times every variant) so
machine noise hits all of them alike; the figure is the median over rounds of the mean latency in a round.
Ratios are against eager PyTorch measured in the same run. Also reports each variant's largest logit difference
from eager fp32 and whether the predicted class agrees on a few real-length inputs.

    python benchmarks/bench_inference.py                      # writes benchmarks/results/bench_inference.json
    python benchmarks/bench_inference.py --seq 128 --rounds 5 --iters 20 --threads 2

Needs the onnx extra (onnx, onnxruntime, onnxscript). Weights are random (seeded): latency does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def build_model(preset: str):
    import nezha

    torch.manual_seed(0)
    cfg = nezha.NezhaConfig.preset(preset, num_labels=2)
    return nezha.NezhaForSequenceClassification(cfg).eval()


def make_inputs(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1, vocab, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }


def torch_runner(model):
    def run(inputs):
        with torch.inference_mode():
            return model(
                torch.from_numpy(inputs["input_ids"]),
                attention_mask=torch.from_numpy(inputs["attention_mask"]),
                token_type_ids=torch.from_numpy(inputs["token_type_ids"]),
            ).logits.numpy()

    return run


def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT worker threads spin by default, stealing the cores from the variant timed next in this process.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(["logits"], inputs)[0]


def time_rounds(runners: dict, inputs, rounds: int, iters: int) -> dict[str, list[float]]:
    for run in runners.values():  # warm-up: thread pools, allocator, lazy initialisation
        for _ in range(3):
            run(inputs)
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                run(inputs)
            per_round[name].append((time.perf_counter() - t0) / iters)
    return per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--output", default=str(RESULTS / "bench_inference.json"))
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nezha.convert.onnx_export import export_onnx

    torch.set_num_threads(args.threads)
    model = build_model(args.preset)
    workdir = Path(tempfile.mkdtemp(prefix="nezha-bench-"))
    fp32_path, int8_path = workdir / "model.onnx", workdir / "model.int8.onnx"
    t0 = time.perf_counter()
    export_report = export_onnx(model, fp32_path, "sequence_classification")
    export_s = time.perf_counter() - t0
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic advises pre-processing via a root warning
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)

    runners = {
        "torch_eager_fp32": torch_runner(model),
        "onnxruntime_fp32": ort_runner(fp32_path, args.threads),
        "onnxruntime_int8_dynamic": ort_runner(int8_path, args.threads),
    }
    try:  # torch.ao dynamic quantization is deprecated in favour of torchao; measured while it exists
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch_int8 = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        runners["torch_int8_dynamic"] = torch_runner(torch_int8.eval())
    except (AttributeError, ImportError, RuntimeError) as e:
        print(f"torch.ao dynamic quantization unavailable ({e}); skipped")
    cfg = model.config
    inputs = make_inputs(cfg.vocab_size, args.batch, args.seq)
    per_round = time_rounds(runners, inputs, args.rounds, args.iters)
    median = {name: statistics.median(v) for name, v in per_round.items()}
    base = median["torch_eager_fp32"]

    # Accuracy against eager fp32 on a few inputs (random weights: logits are near 0, so this is a numeric check).
    checks = [make_inputs(cfg.vocab_size, 4, args.seq, seed=s) for s in (1, 2)]
    refs = [runners["torch_eager_fp32"](x) for x in checks]
    accuracy = {}
    for name, run in runners.items():
        outs = [run(x) for x in checks]
        accuracy[name] = {
            "max_abs_logit_diff": float(max(np.abs(o - r).max() for o, r in zip(outs, refs))),
            "argmax_agreement": float(np.mean(np.concatenate([o.argmax(-1) == r.argmax(-1)
                                                              for o, r in zip(outs, refs)]))),
        }

    print(f"NEZHA-{args.preset} sequence classification, batch {args.batch}, seq {args.seq}, "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.iters} iterations")
    print(f"{'variant':28s} {'ms':>9s} {'vs eager':>9s} {'max|dlogit|':>12s}")
    for name, sec in median.items():
        print(f"{name:28s} {sec * 1e3:9.2f} {base / sec:8.2f}x {accuracy[name]['max_abs_logit_diff']:12.2e}")

    result = {
        "benchmark": "bench_inference",
        "model": f"NEZHA-{args.preset} (NezhaForSequenceClassification, random seeded weights)",
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "rounds": args.rounds,
        "iters": args.iters,
        "latency_ms_median": {k: v * 1e3 for k, v in median.items()},
        "latency_ms_per_round": {k: [x * 1e3 for x in v] for k, v in per_round.items()},
        "speedup_vs_torch_eager": {k: base / v for k, v in median.items()},
        "accuracy_vs_torch_eager": accuracy,
        "onnx_export_seconds": export_s,
        "onnx_export_check": export_report.max_abs_diff,
        "model_bytes": {"onnx_fp32": fp32_path.stat().st_size, "onnx_int8": int8_path.stat().st_size},
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                     "python": platform.python_version()},
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    for f in (fp32_path, int8_path):
        f.unlink(missing_ok=True)
    workdir.rmdir()


if __name__ == "__main__":
    main()
