"""Fine-tuning checkpoints: stop + resume repeats the uninterrupted loss log, SIGTERM saves and exits, a checkpoint
of another run layout is refused before any step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nezha.train.finetune import FinetuneArgs, finetune


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy shared machine does not stall them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def senti_train(shared_data, tmp_path_factory) -> Path:
    """160 real ChnSentiCorp reviews: 10 steps of 16 per epoch, so 16 steps cross an epoch boundary."""
    lines = (shared_data / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").split("\n")
    path = tmp_path_factory.mktemp("senti") / "train.tsv"
    path.write_text("\n".join(lines[:161]) + "\n", encoding="utf-8")
    return path


def _settings(shared_data, train: Path, out: Path, **kw) -> dict:
    # preset tiny with dropout 0.1 on: a resumed run matches only if every RNG state is restored.
    s = dict(task="classification", data_format="chnsenticorp", train_file=str(train), output_dir=str(out),
             from_scratch=True, preset="tiny", num_hidden_layers=1, hidden_size=32,
             vocab_file=str(shared_data / "vocab" / "vocab.txt"), max_seq_length=32, train_batch_size=16,
             max_steps=16, learning_rate=2e-3, logging_steps=2, device="cpu", seed=7)
    s.update(kw)
    return s


def _checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))


def test_finetune_stop_then_resume_repeats_the_uninterrupted_loss_log(shared_data, senti_train, tmp_path, train_losses):
    ref_dir = tmp_path / "reference"
    done = finetune(FinetuneArgs(**_settings(shared_data, senti_train, ref_dir)))
    assert done["finished"] and done["step"] == 16
    ref = train_losses(ref_dir)
    assert sorted(ref) == list(range(2, 17, 2))
    assert not (ref_dir / "checkpoints").exists()  # checkpoints are opt-in

    out = tmp_path / "stopped"
    # checkpoints at 3 and 6 (odd step 3: the logging window is half full), then stop at 8 with a checkpoint
    part = finetune(FinetuneArgs(**_settings(shared_data, senti_train, out, save_steps=3, keep_checkpoints=3,
                                             stop_at_step=8)))
    assert not part["finished"] and not part["stopped_by_signal"] and part["step"] == 8
    assert _checkpoints(out) == ["step-00000003", "step-00000006", "step-00000008"]
    assert not (out / "model").exists()
    meta = json.loads((out / "checkpoints" / "step-00000008" / "meta.json").read_text())
    assert (meta["step"], meta["epoch"], meta["step_in_epoch"], meta["task"]) == (8, 0, 8, "classification")

    resumed = finetune(FinetuneArgs(**_settings(shared_data, senti_train, out, save_steps=3, keep_checkpoints=3,
                                                resume="auto")))
    assert resumed["finished"] and resumed["step"] == 16
    got = train_losses(out)
    assert sorted(got) == sorted(ref)  # the log was cut back to the checkpoint: no duplicates
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=1e-6), f"step {s}"
    a = load_file(str(ref_dir / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() <= 1e-5 * (1 + a[k].abs().max().item()), k
    assert _checkpoints(out) == ["step-00000009", "step-00000012", "step-00000015"]  # keep-last-3

    # From an explicit folder, mid-window (step 3) and across the epoch boundary at step 10.
    again = tmp_path / "again"
    finetune(FinetuneArgs(**_settings(shared_data, senti_train, again, save_steps=3, stop_at_step=4)))
    finetune(FinetuneArgs(**_settings(shared_data, senti_train, again,
                                      resume=str(again / "checkpoints" / "step-00000003"))))
    got = train_losses(again)
    assert sorted(got) == sorted(ref)
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=1e-6), f"step {s} (resumed from 3)"


def test_finetune_refuses_a_checkpoint_of_another_run_before_any_step(shared_data, senti_train, tmp_path):
    out = tmp_path / "run"
    finetune(FinetuneArgs(**_settings(shared_data, senti_train, out, stop_at_step=2)))
    ckpt = out / "checkpoints" / "step-00000002"
    log_before = (out / "metrics.jsonl").read_text()

    def resume(**kw):
        with pytest.raises(ValueError) as e:
            finetune(FinetuneArgs(**_settings(shared_data, senti_train, out, resume=str(ckpt), **kw)))
        assert (out / "metrics.jsonl").read_text() == log_before  # nothing was trained or logged
        assert _checkpoints(out) == ["step-00000002"]
        return str(e.value)

    ner = tmp_path / "ner.txt"
    ner.write_text("张 B-PER\n三 I-PER\n好 O\n\n北 B-LOC\n京 I-LOC\n大 O\n\n" * 8, encoding="utf-8")
    assert "task: checkpoint 'classification' vs this run 'ner'" in resume(task="ner", data_format="bio",
                                                                          train_file=str(ner))
    assert "does not fit the model config" in resume(hidden_size=64)
    assert "train_batch_size: checkpoint 16 vs this run 8" in resume(train_batch_size=8)
    meta_path = ckpt / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "world_size": 2}))
    assert "world_size: checkpoint 2 vs this run 1" in resume()


def test_finetune_sigterm_saves_a_checkpoint_and_exits(shared_data, senti_train, tmp_path, train_losses):
    out = tmp_path / "term"
    cfg = tmp_path / "term.json"
    cfg.write_text(json.dumps(_settings(shared_data, senti_train, out, max_steps=100000, logging_steps=1)))
    proc = subprocess.Popen([sys.executable, "-m", "nezha.cli", "finetune", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.time()
    while not (out / "metrics.jsonl").is_file() or not train_losses(out):
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()[-2000:]}")
        assert time.time() - t0 < 120, "run too slow"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, proc.stderr.read()[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by_signal"] and not metrics["finished"] and metrics["step"] >= 1
    assert _checkpoints(out) == [f"step-{metrics['step']:08d}"]
    assert not (out / "model").exists()
