"""Serving throughput and latency of ``nezha serve`` on CPU: dynamic batching vs one request per forward pass.

Starts each server in turn on 127.0.0.1 (a free port; nothing else is contacted), sends one-text requests with
real ChnSentiCorp reviews from 1, 8 and 32 concurrent clients (keep-alive connections), and reports throughput,
p50/p99 latency, failed requests and the server's resident memory before, during and after the run. Every level
is bounded in requests and in time.

    python benchmarks/bench_serve.py                  # writes benchmarks/results/bench_serve.json
    python benchmarks/bench_serve.py --model_dir out/clf/model --requests 600 --max_seconds 60

Without ``--model_dir`` it makes a NEZHA classifier of ``--preset`` size (default small: 4 layers, hidden 256; one
training step, since latency does not depend on the weights) with ``nezha finetune``.
Needs the serve extra and ../shared/data.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("NEZHA_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_model(root: Path, preset: str) -> Path:
    from nezha.cli import main

    code = main(["finetune", "--task", "classification", "--data_format", "chnsenticorp", "--train_file",
                 str(DATA / "chnsenticorp/dev.tsv"), "--max_train_examples", "32", "--from_scratch", "--preset",
                 preset, "--vocab_file", str(DATA / "vocab/vocab.txt"), "--max_seq_length", "128", "--max_steps", "1",
                 "--train_batch_size", "8", "--device", "cpu", "--eval_every_epoch", "False",
                 "--output_dir", str(root / "clf")])
    if code:
        raise SystemExit(f"nezha finetune failed ({code})")
    return root / "clf" / "model"


def start_server(model_dir: Path, flags: list[str], threads: int) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nezha", "serve", str(model_dir), "--host", "127.0.0.1",
                             "--port", "0", "--device", "cpu", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if " at http://127.0.0.1:" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(line.split("127.0.0.1:")[1].split("/")[0])
    raise SystemExit(f"server did not start (exit {proc.wait()})")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(port: int, texts: list[str], concurrency: int, requests: int, max_seconds: float) -> dict:
    """``requests`` one-text requests from ``concurrency`` clients (stopping early at ``max_seconds``)."""
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = json.dumps({"texts": [texts[i % len(texts)]]}, ensure_ascii=False).encode()
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and len(json.loads(data)["predictions"]) == 1
            except (OSError, http.client.HTTPException, ValueError) as e:
                ok, data = False, str(e).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t0
            with lock:
                (latencies if ok else failures).append(dt if ok else data[:100].decode("utf-8", "replace"))
        conn.close()

    workers = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")
    return {"concurrency": concurrency, "requests": len(lat) + len(failures), "failed": len(failures),
            "failures_sample": failures[:3], "seconds": round(wall, 2),
            "throughput_rps": round(len(lat) / wall, 1), "p50_ms": round(pick(0.50), 1),
            "p99_ms": round(pick(0.99), 1), "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None}


def run_mode(name: str, model_dir: Path, flags: list[str], texts: list[str], args) -> dict:
    proc, port = start_server(model_dir, flags, args.threads)
    try:
        # warm-up at the highest concurrency: allocator pools reach their steady size before memory is sampled
        load(port, texts, max(args.concurrency), 4 * max(args.concurrency), 30)
        mem = [rss_mib(proc.pid)]
        levels = []
        # the highest level runs twice: buffers for the largest batches are allocated once, then memory stays flat
        for c in [*args.concurrency, max(args.concurrency)]:
            n = args.requests if c > 1 else max(1, args.requests // 3)
            levels.append(load(port, texts, c, n, args.max_seconds))
            mem.append(rss_mib(proc.pid))
            print(f"{name:>9} c={c:<3} {levels[-1]['throughput_rps']:7.1f} req/s  p50 {levels[-1]['p50_ms']:7.1f} ms"
                  f"  p99 {levels[-1]['p99_ms']:7.1f} ms  failed {levels[-1]['failed']}  rss {mem[-1]:.0f} MiB",
                  flush=True)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/info")
        batches = json.loads(conn.getresponse().read())["batching"]["batches_run"]
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {"flags": flags, "levels": levels[:-1], "repeat_of_highest_level": levels[-1],
            "rss_mib_after_warmup_and_each_level": [round(m, 1) for m in mem],
            "rss_growth_mib": round(mem[-1] - mem[0], 1), "rss_growth_over_repeat_mib": round(mem[-1] - mem[-2], 1),
            "forward_passes": batches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", help="a classification model folder (default: a fresh tiny one)")
    p.add_argument("--preset", default="small", help="model size made without --model_dir (small: 4 layers, 256)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=600, help="requests per level (a third at concurrency 1)")
    p.add_argument("--max_seconds", type=float, default=60, help="time limit per level")
    p.add_argument("--max_batch", type=int, default=32)
    p.add_argument("--max_wait_ms", type=float, default=5)
    p.add_argument("--threads", type=int, default=2, help="OMP threads of the server")
    p.add_argument("--output", default=str(RESULTS / "bench_serve.json"))
    args = p.parse_args()

    texts = [line.split("\t", 1)[1] for line in (DATA / "chnsenticorp/dev.tsv").read_text(encoding="utf-8")
             .split("\n")[1:] if "\t" in line]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else make_model(Path(tmp), args.preset)
        modes = {
            "dynamic": run_mode("dynamic", model_dir, ["--max_batch", str(args.max_batch), "--max_wait_ms",
                                                       str(args.max_wait_ms)], texts, args),
            "batch1": run_mode("batch1", model_dir, ["--max_batch", "1", "--max_wait_ms", "0"], texts, args),
        }
    top = max(args.concurrency)
    dyn = next(lv for lv in modes["dynamic"]["levels"] if lv["concurrency"] == top)
    one = next(lv for lv in modes["batch1"]["levels"] if lv["concurrency"] == top)
    summary = {"concurrency": top, "throughput_ratio": round(dyn["throughput_rps"] / one["throughput_rps"], 2),
               "p99_ratio": round(dyn["p99_ms"] / one["p99_ms"], 2),
               "failed": sum(lv["failed"] for m in modes.values()
                             for lv in [*m["levels"], m["repeat_of_highest_level"]]),
               "rss_growth_mib": {k: m["rss_growth_mib"] for k, m in modes.items()},
               "rss_growth_over_repeat_mib": {k: m["rss_growth_over_repeat_mib"] for k, m in modes.items()}}
    summary["target_met"] = (summary["throughput_ratio"] >= 2 and summary["p99_ratio"] <= 2
                             and summary["failed"] == 0)
    result = {"benchmark": "bench_serve", "command": " ".join(["python", "benchmarks/bench_serve.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "model": args.model_dir or f"NEZHA preset {args.preset!r} sequence classification (random weights)",
              "texts": "ChnSentiCorp dev reviews, one per request, max_seq_length 128",
              "settings": {k: v for k, v in vars(args).items() if k != "output"}, "modes": modes, "summary": summary}
    from nezha.io.atomic import atomic_write_text

    atomic_write_text(args.output, json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
