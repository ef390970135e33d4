"""fp16 as the original NEZHA run: TF's ExponentialUpdateLossScaleManager(2**32, incr_every_n_steps=1000,
decr_every_n_nan_or_inf=2, decr_ratio=0.5), and an overflow step that moves neither global_step nor the schedule
(optimization.py: ``new_global_step = cond(all_are_finite, global_step + 1, global_step)``).

On CPU an overflow is simulated by injecting inf into the loss (so into every gradient) on chosen steps.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import nezha.train.pretrain as pretrain_module
from nezha.train.distributed import DistInfo, wrap_model
from nezha.train.loop import DynamicLossScaler, Precision, train_step
from nezha.train.optim import build_optimizer
from nezha.train.pretrain import PretrainArgs, pretrain
from nezha.train.run_log import read_metrics
from nezha.train.schedule import lr_at


def tf_loss_scale_manager(history: list[bool], init=2.0**32, incr_every=1000, decr_every=2) -> list[float]:
    """TF contrib ExponentialUpdateLossScaleManager.update_loss_scale, written out: the scale after each step."""
    scale, good, bad, out = init, 0, 0, []
    for finite in history:
        if finite:
            if good + 1 >= incr_every:
                if math.isfinite(scale * 2):
                    scale *= 2
                good, bad = 0, 0
            else:
                good += 1
        elif bad + 1 >= decr_every:
            scale, good, bad = max(1.0, scale * 0.5), 0, 0
        else:
            bad, good = bad + 1, 0
        out.append(scale)
    return out


def test_loss_scaler_follows_the_original_manager():
    # two overflows per halving (not necessarily in a row), x2 after 1000 finite steps in a row, never below 1
    history = [False, False, True, False, True, False] + [True] * 1000 + [False] * 70 + [True] * 3
    scaler = DynamicLossScaler()
    got = []
    for finite in history:
        scaler.update(finite)
        got.append(scaler.get_scale())
    assert got == tf_loss_scale_manager(history)
    assert got[1] == 2.0**31 and got[5] == 2.0**30 and got[1005] == 2.0**31 and got[-1] == 1.0


def test_loss_scaler_defaults_and_state_round_trip():
    scaler = Precision("fp16", "cuda").grad_scaler()
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**32
    scaler.update(False)
    again = DynamicLossScaler()
    again.load_state_dict(scaler.state_dict())
    again.update(False)
    assert again.get_scale() == 2.0**31  # the pending overflow was carried over
    assert not Precision("bf16", "cpu").grad_scaler().is_enabled()


def test_overflow_skips_the_update_and_the_optimizer_step_count():
    torch.manual_seed(0)
    model = wrap_model(nn.Linear(4, 2), DistInfo(), "ddp")
    opt = build_optimizer(model.module, "lamb", lr=0.1)
    scaler = DynamicLossScaler(init_scale=8.0)
    x = torch.randn(3, 4)

    def loss_fn(engine, poison):
        loss = engine(x).pow(2).mean()
        return loss * (math.inf if poison else 1.0), {}

    prec = Precision("fp32", "cpu")
    assert not train_step(model, [False], loss_fn, opt, scaler, prec).skipped
    before = [p.detach().clone() for p in model.module.parameters()]
    out = train_step(model, [True], loss_fn, opt, scaler, prec)
    assert out.skipped and not math.isfinite(out.grad_norm)
    for p, b in zip(model.module.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert {float(s["step"]) for s in opt.state.values()} == {1.0}
    assert scaler.get_scale() == 8.0  # the first overflow since the last change: not yet halved


def test_pretrain_fp16_overflow_moves_neither_global_step_nor_schedule(pd_shards, tiny_config_file, tmp_path,
                                                                       monkeypatch):
    # fp16 autocast runs on CPU in this torch; the trainer refuses it only because it is pointless there.
    monkeypatch.setattr(Precision, "resolve", classmethod(lambda cls, name, device: cls(name, device.type)))
    calls = {"n": 0}
    real_sums = pretrain_module.pretraining_sums

    def poisoned_sums(engine, mb):
        calls["n"] += 1
        mlm, nsp, stats = real_sums(engine, mb)
        return (mlm * math.inf if calls["n"] in (1, 3) else mlm), nsp, stats  # draws 1 and 3 overflow

    monkeypatch.setattr(pretrain_module, "pretraining_sums", poisoned_sums)
    out = tmp_path / "fp16"
    result = pretrain(PretrainArgs(
        input_dir=[str(pd_shards)], output_dir=str(out), bert_config_file=str(tiny_config_file), train_batch_size=8,
        num_train_steps=4, num_warmup_steps=2, learning_rate=1e-3, log_every=1, save_checkpoints_steps=100,
        progress=False, tensorboard=False, precision="fp16", loss_scale_init=4.0, device="cpu",
    ))
    assert result.finished and result.step == 4 and calls["n"] == 6
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    # the update of global step s (1-based) used lr_at(s - 1): skipped draws did not move the schedule
    assert [r["lr"] for r in train] == pytest.approx([lr_at(s, warmup=2, total=4, peak=1e-3) for s in range(4)])
    assert train[-1]["loss_scale"] == 2.0 and train[-1]["skipped_steps"] == 2.0
    ckpt = Path(out) / "checkpoints" / "step-00000004"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["step"] == 4 and meta["batches_drawn"] == 6
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {4.0}  # LAMB's t = global_step
    assert state["schedule"]["step_count"] == 4
