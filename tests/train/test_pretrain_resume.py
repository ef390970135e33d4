"""SIGKILL mid-run then resume gives the same loss curve as an uninterrupted run; SIGTERM saves and exits."""

import json
import signal

import pytest

from nezha.train.pretrain import PretrainArgs, pretrain


def _settings(pd_shards, tiny_config_file, out, **kw):
    # dropout stays on (0.1): the resumed run must restore every RNG to match.
    s = dict(input_dir=[str(pd_shards)], output_dir=str(out), bert_config_file=str(tiny_config_file),
             train_batch_size=8, num_train_steps=1000, num_warmup_steps=2, learning_rate=3e-3, log_every=1,
             save_checkpoints_steps=3, keep_checkpoints=2, seed=11, device="cpu", progress=False, tensorboard=False)
    s.update(kw)
    return s


def test_sigkill_then_resume_repeats_the_uninterrupted_loss_curve(pd_shards, tiny_config_file, pretrain_child,
                                                                  tmp_path, train_losses):
    reference = tmp_path / "reference"
    pretrain(PretrainArgs(**_settings(pd_shards, tiny_config_file, reference, stop_at_step=9)))
    ref = train_losses(reference)
    assert sorted(ref) == list(range(1, 10))

    killed = tmp_path / "killed"
    resumed_from = pretrain_child(_settings(pd_shards, tiny_config_file, killed)).kill_after(5)
    result = pretrain(PretrainArgs(**_settings(pd_shards, tiny_config_file, killed, stop_at_step=9)))
    assert result.step == 9
    got = train_losses(killed)
    assert sorted(got) == list(range(1, 10))  # the log was cut back to the checkpoint, no duplicates
    for s in range(resumed_from + 1, 10):
        assert got[s] == pytest.approx(ref[s], rel=1e-6), f"step {s} (resumed from {resumed_from})"


def test_sigterm_saves_a_checkpoint_and_exits(pd_shards, tiny_config_file, pretrain_child, tmp_path):
    out = tmp_path / "term"
    child = pretrain_child(_settings(pd_shards, tiny_config_file, out, save_checkpoints_steps=1000))
    child.wait_for_step(2)
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(timeout=120) == 143
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_signal"] and summary["step"] >= 2
    assert (out / "checkpoints" / f"step-{summary['step']:08d}" / "meta.json").is_file()
