"""TFRecord pretraining data: decode rate per core and `nezha pretrain` start-up, against the old Python decoder.

Generates BERT-layout TFRecord sets at seq 128 / 20 predictions (random ids over the 21,128-token Chinese vocab, 64
to 128 real tokens): 100k records in a temporary folder, and 2M records in ``--big_dir`` (made once, then reused).
Then, in this run:

* decode rate: records per CPU-second (one thread) of ``TFRecordInstances.get_batch`` on random batches (32 and 256),
  and of the generic per-record decoder that ``get_batch`` used before (``decode_example`` + stacking);
* start-up: wall time from launching ``nezha pretrain`` (tiny preset, CPU) to its first logged step, for both sizes.
  The old trainer decoded every record for the largest id and 200k for the unigram baseline before step 1; its
  start-up is estimated as today's plus that decoding at the old rate measured here (running it on 2M records
  would take minutes).

    .venv/bin/python benchmarks/bench_data_loading.py [--big_dir /tmp/nezha_bench_tfrecord_2m]

Writes benchmarks/results/bench_data_loading.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEQ, PRED, VOCAB = 128, 20, 21128


def make_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """Shard-layout arrays of ``n`` random pretraining instances."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(64, SEQ + 1, n)
    real = np.arange(SEQ)[None, :] < lengths[:, None]
    ids = np.where(real, rng.integers(100, VOCAB, (n, SEQ)), 0).astype(np.int32)
    segments = (real & (np.arange(SEQ)[None, :] > (lengths // 2)[:, None])).astype(np.int8)
    num_masked = rng.integers(8, PRED + 1, n)
    filled = np.arange(PRED)[None, :] < num_masked[:, None]
    positions = np.where(filled, np.sort(rng.integers(1, 63, (n, PRED)), 1), 0).astype(np.int32)
    return {"input_ids": ids, "segment_ids": segments, "lengths": lengths.astype(np.int32),
            "masked_lm_positions": positions,
            "masked_lm_ids": np.where(filled, rng.integers(100, VOCAB, (n, PRED)), 0).astype(np.int32),
            "num_masked": num_masked.astype(np.int32), "next_sentence_labels": rng.integers(0, 2, n).astype(np.int8)}


def make_set(folder: Path, n: int, files: int) -> list[Path]:
    """``n`` records in ``files`` TFRecord files (reused when a finished set is already there)."""
    from nezha.data.tfrecord import write_instances_tfrecord

    paths = [folder / f"part-{i:03d}.tfrecord" for i in range(files)]
    done = folder / "DONE"
    if done.is_file() and done.read_text() == str(n):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // files)
    for i, path in enumerate(paths):
        write_instances_tfrecord(make_arrays(min(per, n - i * per), seed=i), [path])
    done.write_text(str(n))
    return paths


def old_decode(data, indices: np.ndarray) -> dict[str, np.ndarray]:
    """What get_batch did before: one Python protobuf walk per record, then stacking."""
    from nezha.data.tfrecord import decode_example

    cols: dict[str, list] = {}
    for i in indices.tolist():
        for name, _, values in decode_example(data._record(i)):
            cols.setdefault(name, []).append(values)
    return {name: np.stack(rows) for name, rows in cols.items()}


def cpu_rate(fn, batches: list[np.ndarray]) -> float:
    """Records per CPU-second of ``fn(batch)`` over ``batches``."""
    t = time.process_time()
    for b in batches:
        fn(b)
    return sum(len(b) for b in batches) / (time.process_time() - t)


def decode_rates(paths: list[Path], rng: np.random.Generator) -> dict[str, float]:
    from nezha.data.tfrecord import TFRecordInstances

    data = TFRecordInstances(paths)
    out = {}
    for bs in (32, 256):
        batches = [rng.choice(len(data), bs, replace=False) for _ in range(max(1, 40_000 // bs))]
        out[f"new_batch{bs}_records_per_cpu_s"] = cpu_rate(data.get_batch, batches)
    batches = [rng.choice(len(data), 32, replace=False) for _ in range(60)]
    out["old_records_per_cpu_s"] = cpu_rate(lambda b: old_decode(data, b), batches)
    return out


def startup(paths: list[Path], work: Path) -> float:
    """Seconds from launching `nezha pretrain` to its first logged training step."""
    out = work / "run"
    cmd = [sys.executable, "-m", "nezha.cli", "pretrain", "--input_dir", ",".join(map(str, paths)),
           "--output_dir", str(out), "--preset", "tiny", "--train_batch_size", "32", "--num_train_steps", "1000",
           "--num_warmup_steps", "0", "--log_every", "1", "--device", "cpu", "--progress=False",
           "--tensorboard=False", "--resume", "never"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    try:
        while not (metrics.is_file() and '"train"' in metrics.read_text()):
            if proc.poll() is not None:
                raise RuntimeError(f"nezha pretrain ended early: {proc.stderr.read()[-2000:]}")
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--big_dir", default="/tmp/nezha_bench_tfrecord_2m", help="where the 2M-record set is kept")
    p.add_argument("--big", type=int, default=2_000_000)
    p.add_argument("--small", type=int, default=100_000)
    p.add_argument("--output", default=str(REPO / "benchmarks/results/bench_data_loading.json"))
    a = p.parse_args()
    from nezha.io.atomic import atomic_write_text

    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                     "seq_len": SEQ, "max_predictions": PRED, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        sets = {a.small: make_set(Path(tmp) / "small", a.small, 2), a.big: make_set(Path(a.big_dir), a.big, 8)}
        results["generate_s"] = time.perf_counter() - t
        for n, paths in sets.items():
            rates = decode_rates(paths, rng)
            up = startup(paths, Path(tempfile.mkdtemp(dir=tmp)))
            # old start-up: the same, plus every record decoded for the largest id and min(n, 200k) for the baseline
            old_up = up + (n + min(n, 200_000)) / rates["old_records_per_cpu_s"]
            entry = {**rates, "startup_s": up, "old_startup_estimated_s": old_up,
                     "bytes": sum(p.stat().st_size for p in paths)}
            entry["decode_speedup"] = entry["new_batch32_records_per_cpu_s"] / rates["old_records_per_cpu_s"]
            entry["startup_speedup_vs_old_estimate"] = old_up / up
            results["sets"][str(n)] = entry
            print(f"{n:>9,} records: decode {entry['new_batch32_records_per_cpu_s']:,.0f}/s per core at batch 32, "
                  f"{entry['new_batch256_records_per_cpu_s']:,.0f}/s at 256 (old {rates['old_records_per_cpu_s']:,.0f}"
                  f"/s: x{entry['decode_speedup']:.1f}); start-up to step 1 {up:.1f} s (old, estimated, "
                  f"{old_up:.0f} s: x{entry['startup_speedup_vs_old_estimate']:.0f})", flush=True)
    results["bench_seconds"] = time.perf_counter() - t_start
    atomic_write_text(Path(a.output), json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.output} ({results['bench_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
