"""`nezha prepare` against the original create_pretraining_data.py: whole processes, same corpus, same flags.

Every measurement is a fresh process timed from its start to its exit (interpreter start, imports, reading,
tokenizing, writing: everything), with wall time, CPU time (user + system, of the process and its workers) and
peak RSS (the largest single process) from ``wait4``. Runs of the compared programs are interleaved (one of each,
then again) and the speed-up of each round is ours vs theirs in that round; the median and the range are reported,
with the load average around the runs (the machine may be shared).

Programs:
- ``original``: the REAL NEZHA-TensorFlow ``utils/create_pretraining_data.py`` (give ``--original_script`` and a
  Python with TensorFlow, ``--original_python``; only its ``import tensorflow as tf`` changed to
  ``import tensorflow.compat.v1 as tf`` for TF 2). It writes TFRecord and has no whole word masking.
- ``baseline``: ``baseline_create_pretraining_data.py``, a pure-Python port of the same algorithm that writes its
  TFRecord at native speed (the stand-in when TensorFlow is not installed).
- ours: ``python -m nezha prepare`` writing shards or TFRecord, static or whole word masking.

Corpus: the CLUE sample of ``../shared/data/pretrain_corpus`` (2,500 documents, 2 MB), optionally repeated
(``--repeat 5``). The seed's flags: ``--do_lower_case=True --max_seq_length=128 --max_predictions_per_seq=20
--masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=5``. Statistics (instances, masked fraction, 80/10/10,
NSP random-next) are read back from every program's TFRecord output.

Workers and memory: ``--scale_mb 50`` makes a corpus of that size from the sample's documents (shuffled
copies), times 1 and 2 workers (interleaved) and checks that the shards are byte-identical; ``--memory_mb 50,500``
records peak RSS per process on generated corpora of those sizes.

    .venv/bin/python benchmarks/bench_prepare.py --original_script /tmp/orig/create_pretraining_data.py \\
        --original_python /tmp/tfenv/bin/python --repeats 5 --repeat 1 --output benchmarks/results/bench_prepare.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NEZHA_SHARED_DATA", REPO.parent / "shared" / "data"))
CLUE = DATA / "pretrain_corpus" / "CLUECorpusSmall_bert_sampled.txt"
VOCAB = DATA / "vocab" / "vocab.txt"
FLAGS = ["--do_lower_case=True", "--max_seq_length=128", "--max_predictions_per_seq=20", "--masked_lm_prob=0.15",
         "--random_seed=12345", "--dupe_factor=5"]


ENV: dict[str, str] | None = None  # the programs' environment (see bytecode_env); None: this process's


def bytecode_env(cache: Path) -> dict[str, str]:
    """This environment with Python's bytecode cache on, in ``cache``, for every program timed.

    An installed package has its .pyc files (pip compiles them); the TensorFlow the original imports has them. A
    source checkout run with PYTHONDONTWRITEBYTECODE=1 (as this machine's shells are) recompiles ours at every start
    (~0.03 s). With a writable cache and one untimed warm-up round, each program starts as installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def run_process(cmd: list[str], cwd: Path | None = None) -> dict:
    """One whole process: wall seconds, CPU seconds (with its reaped workers), peak RSS of its largest process
    (MB), load average before/after. Output goes to files so that ``wait4`` reaps the child and gets its usage."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fo, stderr=fe, env=ENV)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
            "load": [round(load0, 2), round(os.getloadavg()[0], 2)], "stdout": out, "stderr": err}


def tfrecord_stats(paths: list[Path]) -> dict:
    """Instances, masked fraction, [MASK]/random/kept shares and NSP random-next of a pretraining TFRecord."""
    from nezha.data.tfrecord import TFRecordInstances

    data = TFRecordInstances(paths)
    n = len(data)
    tot = {"instances": n, "tokens": 0, "masked": 0, "mask": 0, "kept": 0, "random_next": 0}
    for start in range(0, n, 8192):
        b = data.get_batch(np.arange(start, min(n, start + 8192)))
        rows = np.repeat(np.arange(len(b["lengths"])), b["num_masked"])
        w = b["masked_lm_weights"] > 0
        shown = b["input_ids"][rows, b["masked_lm_positions"][w]]
        labels = b["masked_lm_ids"][w]
        tot["tokens"] += int(b["lengths"].sum())
        tot["masked"] += int(w.sum())
        tot["mask"] += int((shown == 103).sum())
        tot["kept"] += int((shown == labels).sum())
        tot["random_next"] += int(b["next_sentence_labels"].sum())
    m = max(tot["masked"], 1)
    return {"instances": n, "masked_fraction": tot["masked"] / max(tot["tokens"], 1),
            "mask_share": tot["mask"] / m, "kept_share": tot["kept"] / m,
            "random_share": (m - tot["mask"] - tot["kept"]) / m, "random_next_fraction": tot["random_next"] / max(n, 1)}


def make_corpus(path: Path, repeat: int = 1, target_mb: float = 0.0, seed: int = 0) -> dict:
    """The CLUE sample repeated ``repeat`` times, or its documents shuffled and repeated up to ``target_mb``."""
    text = CLUE.read_text(encoding="utf-8")
    if not target_mb:
        path.write_text(text * repeat, encoding="utf-8")
    else:
        docs = [d.strip("\n") + "\n" for d in text.split("\n\n") if d.strip()]
        rng = random.Random(seed)
        target = int(target_mb * (1 << 20))
        size = 0
        with open(path, "w", encoding="utf-8") as f:
            while size < target:
                rng.shuffle(docs)
                for d in docs:
                    f.write(d + "\n")
                    size += len(d.encode("utf-8")) + 1
                    if size >= target:
                        break
    return {"path": str(path), "bytes": path.stat().st_size}


def ours_cmd(corpus: Path, out: Path, fmt: str, wwm: bool, workers: int = 1, extra: tuple = ()) -> list[str]:
    return [sys.executable, "-m", "nezha", "prepare", f"--input_file={corpus}", f"--output_file={out}",
            f"--vocab_file={VOCAB}", *FLAGS, f"--output_format={fmt}", f"--do_whole_word_mask={wwm}",
            f"--num_workers={workers}", *extra]


def median_range(xs: list[float]) -> dict:
    return {"median": float(np.median(xs)), "min": float(min(xs)), "max": float(max(xs)), "n": len(xs)}


def compare(a: argparse.Namespace, tmp: Path, corpus: Path) -> dict:
    """Interleaved rounds of every program on one corpus; speed-ups paired per round."""
    programs: dict[str, tuple[list[str], Path | None, Path]] = {}
    if a.original_script:
        script = Path(a.original_script).resolve()
        out = tmp / "original.tfrecord"
        programs["original"] = ([a.original_python, str(script), f"--input_file={corpus}", f"--output_file={out}",
                                 f"--vocab_file={VOCAB}", *FLAGS], script.parent, out)
    if a.baseline:
        out = tmp / "baseline.tfrecord"
        programs["baseline"] = ([sys.executable, str(REPO / "benchmarks/baseline_create_pretraining_data.py"),
                                 f"--input_file={corpus}", f"--output_file={out}", f"--vocab_file={VOCAB}", *FLAGS],
                                None, out)
    for fmt in ("shards", "tfrecord"):
        for wwm in (False, True):
            out = tmp / (f"ours_{fmt}_{'wwm' if wwm else 'static'}" + (".tfrecord" if fmt == "tfrecord" else ""))
            programs[f"ours,{fmt},{'wwm' if wwm else 'static'}"] = (ours_cmd(corpus, out, fmt, wwm), None, out)
    runs: dict[str, list[dict]] = {k: [] for k in programs}
    if a.bytecode_cache:
        for cmd, cwd, _ in programs.values():  # warm-up: every program's bytecode cached before the timed rounds
            run_process(cmd, cwd)
    for r in range(a.repeats):
        for name, (cmd, cwd, _) in programs.items():
            res = run_process(cmd, cwd)
            runs[name].append({k: v for k, v in res.items() if k not in ("stdout", "stderr")})
            print(f"round {r} {name}: wall {res['wall_s']:.2f}s cpu {res['cpu_s']:.2f}s "
                  f"rss {res['peak_rss_mb']:.0f}MB load {res['load']}", flush=True)
    result: dict = {"corpus_bytes": corpus.stat().st_size, "runs": runs, "stats": {}, "speedup": {}}
    for name, (_, _, out) in programs.items():
        if out.suffix == ".tfrecord":
            result["stats"][name] = tfrecord_stats([out])
        else:
            result["stats"][name] = json.loads((out / "index.json").read_text(encoding="utf-8"))["summary"]["instances"]
    for ref in ("original", "baseline"):
        if ref not in runs:
            continue
        for name in programs:
            if name.startswith("ours"):
                result["speedup"][f"{name} vs {ref}"] = {
                    m: median_range([x[m] / y[m] for x, y in zip(runs[ref], runs[name])]) for m in ("wall_s", "cpu_s")
                }
    return result


def shard_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("shard-*.npy")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def scaling(a: argparse.Namespace, tmp: Path) -> dict:
    corpus = tmp / "scale.txt"
    info = make_corpus(corpus, target_mb=a.scale_mb)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    digests = {}
    for r in range(a.scale_repeats):
        for w in (1, 2):
            out = tmp / f"scale_w{w}"
            res = run_process(ours_cmd(corpus, out, "shards", False, w))
            runs[w].append({k: v for k, v in res.items() if k not in ("stdout", "stderr")})
            digests[w] = shard_digest(out)
            print(f"scale {a.scale_mb}MB round {r} workers={w}: wall {res['wall_s']:.2f}s cpu {res['cpu_s']:.2f}s "
                  f"rss {res['peak_rss_mb']:.0f}MB load {res['load']}", flush=True)
    return {"corpus_bytes": info["bytes"], "runs": runs, "identical_output": digests[1] == digests[2],
            "speedup_2_vs_1": median_range([x["wall_s"] / y["wall_s"] for x, y in zip(runs[1], runs[2])])}


def memory(a: argparse.Namespace, tmp: Path) -> dict:
    out: dict = {}
    for mb in [float(x) for x in a.memory_mb.split(",") if x]:
        corpus = tmp / f"mem_{mb:g}.txt"
        info = make_corpus(corpus, target_mb=mb, seed=1)
        for w in (1, 2):
            res = run_process(ours_cmd(corpus, tmp / "mem_out", "shards", False, w))
            out[f"{mb:g}MB,workers={w}"] = {"corpus_bytes": info["bytes"],
                                            **{k: v for k, v in res.items() if k not in ("stdout", "stderr")}}
            print(f"memory {mb:g}MB workers={w}: peak RSS {res['peak_rss_mb']:.0f}MB, wall {res['wall_s']:.1f}s",
                  flush=True)
        corpus.unlink()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--original_script", default="", help="path of the original create_pretraining_data.py")
    p.add_argument("--original_python", default="python", help="a Python that has TensorFlow")
    p.add_argument("--baseline", type=lambda s: s.lower() == "true", default=True, help="also time the baseline")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    p.add_argument("--repeat", default="1", help="corpora: the CLUE sample repeated this many times (e.g. 1,5)")
    p.add_argument("--scale_mb", type=float, default=0, help="worker scaling on a generated corpus of this size")
    p.add_argument("--scale_repeats", type=int, default=3)
    p.add_argument("--memory_mb", default="", help="peak RSS on generated corpora of these sizes (e.g. 50,500)")
    p.add_argument("--bytecode_cache", type=lambda s: s.lower() == "true", default=True,
                   help="run every program with a bytecode cache and an untimed warm-up round (see bytecode_env); "
                        "False: as this shell's environment has it")
    p.add_argument("--output", default=str(REPO / "benchmarks/results/bench_prepare.json"))
    a = p.parse_args()
    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "flags": FLAGS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "corpora": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        global ENV
        ENV = bytecode_env(tmp / "pycache") if a.bytecode_cache else None
        results["bytecode_cache"] = a.bytecode_cache
        for k in [int(x) for x in a.repeat.split(",") if x]:
            corpus = tmp / f"clue_x{k}.txt"
            make_corpus(corpus, repeat=k)
            results["corpora"][f"clue_x{k}"] = compare(a, tmp, corpus)
        if a.scale_mb:
            results["scaling"] = scaling(a, tmp)
        if a.memory_mb:
            results["memory"] = memory(a, tmp)
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for name, c in results["corpora"].items():
        for k, v in c["speedup"].items():
            print(f"{name} {k}: wall {v['wall_s']['median']:.1f}x ({v['wall_s']['min']:.1f}-{v['wall_s']['max']:.1f}), "
                  f"cpu {v['cpu_s']['median']:.1f}x")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
