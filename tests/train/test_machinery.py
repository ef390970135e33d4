import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from nezha.train.checkpoint import CheckpointManager
from nezha.train.distributed import DistInfo, wrap_model
from nezha.train.loop import NonFiniteLossError, Precision, train_step
from nezha.train.run_log import MetricsLogger, read_metrics
from nezha.train.schedule import LRSchedule


def _tiny_setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    wrapped = wrap_model(model, DistInfo())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return wrapped, opt


def _loss_fn(engine, batch):
    x, y = batch
    loss = ((engine(x).squeeze(-1) - y) ** 2).mean()
    return loss / 2, {"loss": loss.detach() / 2}


def test_train_step_accumulation_equals_one_big_batch():
    x, y = torch.randn(8, 4), torch.randn(8)
    a, opt_a = _tiny_setup()
    b, opt_b = _tiny_setup()
    prec = Precision.resolve("fp32", torch.device("cpu"))
    train_step(a, [(x[:4], y[:4]), (x[4:], y[4:])], _loss_fn, opt_a, prec.grad_scaler(), prec, max_grad_norm=0.1)
    full = lambda e, bt: (((e(bt[0]).squeeze(-1) - bt[1]) ** 2).mean(), {})
    train_step(b, [(x, y)], full, opt_b, prec.grad_scaler(), prec, max_grad_norm=0.1)
    for pa, pb in zip(a.module.parameters(), b.module.parameters()):
        torch.testing.assert_close(pa, pb)


def test_train_step_raises_on_nan_before_updating_weights():
    model, opt = _tiny_setup()
    before = [p.detach().clone() for p in model.module.parameters()]
    prec = Precision.resolve("fp32", torch.device("cpu"))
    x = torch.randn(2, 4)
    x[0, 0] = math.nan
    with pytest.raises(NonFiniteLossError, match="step 41"):
        train_step(model, [(x, torch.zeros(2))], _loss_fn, opt, prec.grad_scaler(), prec, step=41)
    for p, b in zip(model.module.parameters(), before):
        torch.testing.assert_close(p.detach(), b)


def test_precision_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        Precision.resolve("fp16", torch.device("cpu"))


def test_checkpoint_manager_roundtrip_keeps_last_k(tmp_path):
    model, opt = _tiny_setup()
    sched = LRSchedule(opt, warmup=2, total=10, peak=1e-2)
    prec = Precision.resolve("fp32", torch.device("cpu"))
    mgr = CheckpointManager(tmp_path / "ck", DistInfo(), keep=2)
    x, y = torch.randn(4, 4), torch.randn(4)
    for step in range(4):
        sched.apply()
        train_step(model, [(x, y)], _loss_fn, opt, prec.grad_scaler(), prec, step=step)
        sched.step()
        mgr.save(step + 1, model, opt, {"schedule": sched}, meta={"global_batch": 4})
    assert [p.name for p in mgr.checkpoints()] == ["step-00000003", "step-00000004"]
    rand_after = torch.rand(3)
    model2, opt2 = _tiny_setup(seed=1)
    sched2 = LRSchedule(opt2, warmup=2, total=10, peak=1e-2)
    meta = mgr.load(mgr.latest(), model2, opt2, {"schedule": sched2}, expect={"global_batch": 4})
    assert meta["step"] == 4 and sched2.step_count == 4
    torch.testing.assert_close(torch.rand(3), rand_after)  # RNG restored to the saved point
    for pa, pb in zip(model.module.parameters(), model2.module.parameters()):
        torch.testing.assert_close(pa, pb)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(ValueError, match="global_batch: checkpoint 4 vs this run 8"):
        mgr.load(mgr.latest(), model2, opt2, {"schedule": sched2}, expect={"global_batch": 8})


class _Crash(BaseException):
    """A kill at one exact point of a checkpoint swap (a BaseException, so no cleanup handler swallows it)."""


def _resave_step_with_crash(tmp_path, monkeypatch, module, name, crashes) -> CheckpointManager:
    """Save step 5 ("old"), then re-save it ("new") with ``module.name`` raising where ``crashes(path)``."""
    model, opt = _tiny_setup()
    mgr = CheckpointManager(tmp_path / "ck", DistInfo(), keep=2)
    mgr.save(5, model, opt, meta={"version": "old"})
    real = getattr(module, name)

    def crashing(path, *args, **kwargs):
        if crashes(Path(path)):
            raise _Crash
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, crashing)
    with pytest.raises(_Crash):
        mgr.save(5, model, opt, meta={"version": "new"})
    monkeypatch.undo()
    return mgr


def _load_version(mgr: CheckpointManager) -> str:
    model, opt = _tiny_setup(seed=1)
    return mgr.load(mgr.resolve("auto"), model, opt)["version"]


def test_checkpoint_resave_killed_before_the_new_folder_is_in_place_keeps_the_old_one(tmp_path, monkeypatch):
    mgr = _resave_step_with_crash(tmp_path, monkeypatch, os, "replace", lambda p: p.name.startswith(".tmp-step"))
    assert [p.name for p in mgr.checkpoints()] == ["step-00000005"]
    assert _load_version(mgr) == "old"
    assert sorted(p.name for p in mgr.directory.iterdir() if not p.name.startswith(".tmp-")) == ["step-00000005"]


def test_checkpoint_resave_killed_before_the_old_folder_is_deleted_keeps_the_new_one(tmp_path, monkeypatch):
    mgr = _resave_step_with_crash(tmp_path, monkeypatch, shutil, "rmtree", lambda p: p.name != ".tmp-step-00000005")
    assert _load_version(mgr) == "new"
    assert sorted(p.name for p in mgr.directory.iterdir()) == ["step-00000005"]


def test_checkpoint_resave_of_the_same_step_replaces_it(tmp_path):
    model, opt = _tiny_setup()
    mgr = CheckpointManager(tmp_path / "ck", DistInfo(), keep=2)
    mgr.save(5, model, opt, meta={"version": "old"})
    mgr.save(5, model, opt, meta={"version": "new"})
    assert _load_version(mgr) == "new"
    assert sorted(p.name for p in mgr.directory.iterdir()) == ["step-00000005"]


def test_metrics_logger_resume_cuts_log_and_writes_csv_and_plot(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for s in range(1, 6):
        log.log(s, loss=1.0 / s, mlm_acc=0.1 * s)
    log.log(5, "eval", loss=0.3, mlm_acc=0.4)
    log.close()
    log = MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    log.log(4, loss=0.2)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    paths = log.write_csv()
    assert (tmp_path / "metrics_train.csv").read_text().splitlines()[0] == "step,loss,mlm_acc"
    assert paths and log.plot().stat().st_size > 1000
    log.close()
