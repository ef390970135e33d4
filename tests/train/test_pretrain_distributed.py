"""Two CPU processes (torchrun, gloo) train exactly like one process with twice the batch, with DDP and FSDP2."""

import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from nezha.train.pretrain import PretrainArgs, pretrain
from nezha.train.run_log import read_metrics


def _losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"}


def _lrs(out):
    return {r["step"]: r["lr"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_rank_with_double_batch(strategy, pd_shards, tiny_config_file, tmp_path):
    # The two ranks give half the rate and scale it by the world size (the original's horovod rule).
    common = ["--input_dir", str(pd_shards), "--bert_config_file", str(tiny_config_file), "--num_train_steps", "3",
              "--num_warmup_steps", "1", "--learning_rate", "2.5e-3", "--scale_lr_with_world_size", "--dropout", "0",
              "--log_every", "1",
              "--save_checkpoints_steps", "100", "--seed", "5", "--device", "cpu", "--progress=False",
              "--tensorboard=False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nezha.cli",
         "pretrain", *common, "--train_batch_size", "4", "--distributed", strategy, "--output_dir", str(two)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = tmp_path / "one"
    pretrain(PretrainArgs(input_dir=[str(pd_shards)], output_dir=str(one), bert_config_file=str(tiny_config_file),
                          num_train_steps=3, num_warmup_steps=1, learning_rate=5e-3, dropout=0.0, log_every=1,
                          save_checkpoints_steps=100, seed=5, device="cpu", progress=False, tensorboard=False,
                          train_batch_size=8))
    l1, l2 = _losses(one), _losses(two)
    assert l1.keys() == l2.keys() == {1, 2, 3}
    for s in l1:
        assert l2[s] == pytest.approx(l1[s], rel=1e-5, abs=1e-6)
    assert _lrs(two) == pytest.approx(_lrs(one)) and max(_lrs(two).values()) == pytest.approx(5e-3)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    import torch

    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
