"""Tiny fine-tuned models made once per session (a few training steps on the real data), and real server processes
on 127.0.0.1 (any free port) that the tests call over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="nezha serve needs the serve extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="nezha serve needs the serve extra (fastapi, uvicorn)")

TRAIN = ["--from_scratch", "--preset", "tiny", "--num_hidden_layers", "1", "--hidden_size", "32", "--max_steps", "3",
         "--train_batch_size", "8", "--logging_steps", "1", "--device", "cpu", "--eval_every_epoch", "False"]


def _finetune(out: Path, vocab: Path, *args: str) -> Path:
    from nezha.cli import main

    assert main(["finetune", *args, *TRAIN, "--vocab_file", str(vocab), "--output_dir", str(out)]) == 0
    return out / "model"


@pytest.fixture(scope="session")
def models(tmp_path_factory, shared_data, chinese_vocab) -> dict[str, Path]:
    """task -> model folder: classification (ChnSentiCorp), NER (People's Daily), MRC (CMRC 2018), fill-mask."""
    import torch

    from nezha.model.config import NezhaConfig
    from nezha.model.modeling import NezhaForPreTraining

    root = tmp_path_factory.mktemp("models")
    d = shared_data
    out = {
        "classification": _finetune(root / "clf", chinese_vocab, "--task", "classification", "--data_format",
                                    "chnsenticorp", "--train_file", str(d / "chnsenticorp/dev.tsv"),
                                    "--max_train_examples", "32", "--max_seq_length", "64"),
        "ner": _finetune(root / "ner", chinese_vocab, "--task", "ner", "--train_file",
                         str(d / "people_daily_ner/example.dev"), "--max_train_examples", "32",
                         "--max_seq_length", "32"),
        "mrc": _finetune(root / "mrc", chinese_vocab, "--task", "mrc", "--train_file",
                         str(d / "cmrc2018/cmrc2018_trial.json"), "--max_train_examples", "16", "--max_seq_length",
                         "64", "--doc_stride", "32", "--max_query_length", "16"),
    }
    torch.manual_seed(0)  # a pretraining-head folder, as `nezha pretrain` saves them
    cfg = NezhaConfig.preset("tiny", vocab_size=21128, num_hidden_layers=1, hidden_size=32, intermediate_size=128)
    NezhaForPreTraining(cfg).save_pretrained(root / "mlm", tokenizer_vocab=chinese_vocab)
    out["fill-mask"] = root / "mlm"
    return out


class Server:
    """``nezha serve`` in a child process; ``url`` once it listens."""

    def __init__(self, model_dir: Path, *flags: str, timeout: float = 90):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "nezha", "serve", str(model_dir), "--port", "0",
                                      "--device", "cpu", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("nezha serve exited before listening:\n" + "".join(self.lines))
            self.lines.append(line)
            if " at http://127.0.0.1:" in line:
                self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nezha serve did not start:\n" + "".join(self.lines))
        # keep draining the output so the child never blocks on a full pipe
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data and r.getheader("content-type", "").startswith(
                "application/json") else {"raw": data.decode("utf-8", "replace")}
        finally:
            conn.close()

    def predict(self, payload) -> tuple[int, dict]:
        return self.request("POST", "/predict", json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                            {"Content-Type": "application/json"})

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def servers(models):
    """task -> a running server (started on first use, stopped at the end of the session)."""
    started: dict[str, Server] = {}
    flags = {"classification": ["--max_inputs", "8", "--max_chars", "300", "--max_body_kb", "16"],
             "ner": ["--max_chars", "0"]}

    class Lazy(dict):
        def __missing__(self, task):
            started[task] = Server(models[task], *flags.get(task, []))
            self[task] = started[task]
            return started[task]

    yield Lazy()
    for s in started.values():
        s.stop()


@pytest.fixture()
def start_server(models):
    """``start_server(task, *flags)``: a server of its own for one test, stopped after it."""
    made: list[Server] = []

    def start(task: str, *flags: str) -> Server:
        made.append(Server(models[task], *flags))
        return made[-1]

    yield start
    for s in made:
        s.stop()
