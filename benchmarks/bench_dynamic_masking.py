"""Pretraining from text with masks drawn every epoch: is the data pipeline ever the bottleneck?

On the CLUECorpusSmall sample in /work/shared/data (2,500 documents, 2 MB, real Chinese text), Chinese vocab:

* cache build: reading, tokenising, rjieba word segmentation and cutting into instances, once per (files, vocab,
  settings) — characters per second, and the time to reopen the cache;
* dynamic masking: instances per CPU-second of ``DynamicMaskedText.get_batch`` (gather + masks) on random batches,
  for token, whole-word and n-gram (3) masking, MLM-only and MLM+NSP, batch 32 and 256;
* training: sequences per second of a full optimizer step (forward, backward, AdamW) of the tiny and base models
  on the same batches, here on the CPU (threads as given by OMP_NUM_THREADS / torch default).

``data_cpu_share_of_training_cpu``: CPU time spent masking per CPU time spent training the same sequences (whole
word masking, batch 32) — the part of a step the prefetch thread adds, at most.

    .venv/bin/python benchmarks/bench_dynamic_masking.py [--seq 128] [--base_steps 2]

Writes benchmarks/results/bench_dynamic_masking.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NEZHA_SHARED_DATA", "/work/shared/data"))
CORPUS = DATA / "pretrain_corpus" / "CLUECorpusSmall_bert_sampled.txt"
VOCAB = DATA / "vocab" / "vocab.txt"


def cpu_time(fn, repeats: int) -> float:
    """CPU seconds per call (process time: unaffected by other processes on a shared machine)."""
    fn()
    t0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t0) / repeats


def masking_rates(data, batches: tuple[int, ...], repeats: int) -> dict[str, float]:
    out = {}
    rng = np.random.default_rng(0)
    for b in batches:
        calls = iter(enumerate(rng.choice(len(data), b, replace=False) for _ in range(repeats + 1)))

        def one(calls=calls):
            epoch, idx = next(calls)
            data.get_batch(idx, epoch=epoch)

        out[f"batch{b}_instances_per_cpu_s"] = b / cpu_time(one, repeats)
    return out


def training_rate(preset: str, data, batch: int, steps: int) -> dict[str, float]:
    """Sequences per wall second and per CPU second (all threads) of full optimizer steps (MLM-only loss on the
    masked positions); CPU seconds are what a shared machine does not inflate."""
    import torch

    from nezha.model.config import NezhaConfig
    from nezha.model.modeling import NezhaForPreTraining
    from nezha.train.pretrain import batch_to_tensors, pretraining_sums

    torch.manual_seed(0)
    model = NezhaForPreTraining(NezhaConfig.preset(preset, vocab_size=data.vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [batch_to_tensors(data.get_batch(np.arange(i * batch, (i + 1) * batch) % len(data), epoch=1),
                                torch.device("cpu"), nsp=False) for i in range(steps + 1)]

    def step(mb):
        mlm_sum, _, stats = pretraining_sums(model, mb)
        (mlm_sum / stats["masked"].clamp(min=1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])
    t0, c0 = time.perf_counter(), time.process_time()
    for mb in batches[1:]:
        step(mb)
    dt, dc = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
    return {"batch": batch, "step_s": dt, "seq_per_s": batch / dt, "step_cpu_s": dc, "seq_per_cpu_s": batch / dc,
            "params": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--tiny_steps", type=int, default=5)
    ap.add_argument("--base_steps", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_dynamic_masking.json"))
    args = ap.parse_args(argv)

    import torch

    from nezha.data.dynamic import TextDataSettings, open_text_data
    from nezha.io.atomic import atomic_write_text

    t_start = time.perf_counter()
    res: dict = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "corpus": str(CORPUS), "corpus_chars": len(CORPUS.read_text(encoding="utf-8")), "seq_len": args.seq,
                 "max_predictions": 20, "pipelines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in {
            "mlm_wwm": dict(nsp=False),
            "mlm_token": dict(nsp=False, do_whole_word_mask=False),
            "mlm_ngram3": dict(nsp=False, max_ngram=3),
            "nsp_wwm": dict(nsp=True),
        }.items():
            settings = TextDataSettings(vocab_file=str(VOCAB), max_seq_length=args.seq, **kw)
            cache = Path(tmp) / name
            t0, c0 = time.perf_counter(), time.process_time()
            data = open_text_data([CORPUS], settings, cache)
            build_wall, build_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            data = open_text_data([CORPUS], settings, cache)
            reopen = time.perf_counter() - t0
            row = {"instances": len(data), "tokens": data.index["tokens"], "cache_build_wall_s": build_wall,
                   "cache_build_cpu_s": build_cpu, "chars_per_cpu_s": res["corpus_chars"] / build_cpu,
                   "cache_reopen_s": reopen,
                   **masking_rates(data, (32, 256), args.repeats if kw.get("max_ngram", 1) == 1 else 5)}
            res["pipelines"][name] = row
            print(name, json.dumps(row), flush=True)
            if name == "mlm_wwm":
                train_data = data
        res["training"] = {"tiny": training_rate("tiny", train_data, 32, args.tiny_steps),
                           "base": training_rate("base", train_data, 8, args.base_steps)}
        print(json.dumps(res["training"]), flush=True)
    wwm = res["pipelines"]["mlm_wwm"]["batch32_instances_per_cpu_s"]
    # CPU-seconds of masking per CPU-second of training: the share of the training cores the pipeline costs
    res["data_cpu_share_of_training_cpu"] = {k: v["seq_per_cpu_s"] / wwm for k, v in res["training"].items()}
    res["bench_seconds"] = time.perf_counter() - t_start
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["data_cpu_share_of_training_cpu"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
