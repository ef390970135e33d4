"""End-to-end pretraining: CLI run -> checkpoints -> exported model -> resume; bad input; NaN handling."""

import json
import shutil

import numpy as np
import pytest

from nezha.cli import main
from nezha.model.modeling import NezhaForPreTraining
from nezha.train.pretrain import PretrainArgs, open_pretraining_data, pretrain
from nezha.train.run_log import read_metrics


def _args(pd_shards, tiny_config_file, out, **kw):
    base = dict(input_dir=[str(pd_shards)], output_dir=str(out), bert_config_file=str(tiny_config_file),
                train_batch_size=8, num_train_steps=4, num_warmup_steps=1, learning_rate=5e-3, log_every=1,
                save_checkpoints_steps=2, progress=False, tensorboard=False, seed=3)
    base.update(kw)
    return PretrainArgs(**base)


def test_pretrain_cli_trains_exports_and_resumes(pd_shards, tiny_config_file, chinese_vocab, tmp_path, train_losses):
    out = tmp_path / "run"
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train_batch_size": 8, "num_warmup_steps": 1, "learning_rate": 5e-3}))
    common = ["pretrain", "--config", str(cfg), "--input_dir", str(pd_shards), "--output_dir", str(out),
              "--bert_config_file", str(tiny_config_file), "--vocab_file", str(chinese_vocab), "--num_train_steps",
              "5", "--save_checkpoints_steps", "2", "--log_every", "1", "--eval_fraction", "0.2", "--eval_every",
              "2", "--progress=False", "--tensorboard=False"]
    assert main([*common, "--stop_at_step", "3"]) == 0
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-00000002", "step-00000003"]
    assert not (out / "model.safetensors").exists()  # not finished yet
    saved = json.loads((out / "args.json").read_text())
    assert saved["train_batch_size"] == 8 and saved["learning_rate"] == 5e-3 and saved["stop_at_step"] == 3
    assert main(common) == 0  # resumes at step 3
    assert sorted(train_losses(out)) == [1, 2, 3, 4, 5]
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.png", "metrics_train.csv",
                 "metrics_eval.csv", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 5 and 0 < summary["baseline"]["unigram_mlm_acc"] < 1
    model = NezhaForPreTraining.from_pretrained(out)
    assert model.config.hidden_size == 32 and not model.loading_report.newly_initialized


def test_pretrain_gradient_accumulation_matches_full_batch(pd_shards, tiny_config_file, tmp_path, train_losses):
    kw = dict(num_train_steps=2, dropout=0.0, save_checkpoints_steps=100)
    pretrain(_args(pd_shards, tiny_config_file, tmp_path / "a", **kw))
    pretrain(_args(pd_shards, tiny_config_file, tmp_path / "b", gradient_accumulation_steps=2, **kw))
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert a.keys() == b.keys() == {1, 2}
    for s in a:
        assert a[s] == pytest.approx(b[s], rel=1e-5)


def test_pretrain_bf16_autocast_on_cpu(pd_shards, tiny_config_file, tmp_path):
    result = pretrain(_args(pd_shards, tiny_config_file, tmp_path / "bf16", num_train_steps=2, precision="bf16"))
    assert result.finished and 9 < result.train["loss"] < 12  # ~ln(21128) + ln(2) at init


def test_pretrain_continues_from_pretrained_folder(pd_shards, tiny_config_file, tmp_path):
    first = pretrain(_args(pd_shards, tiny_config_file, tmp_path / "first", num_train_steps=2))
    assert first.finished
    second = pretrain(_args(pd_shards, tiny_config_file, tmp_path / "second", num_train_steps=2, bert_config_file=None,
                            init_checkpoint=str(tmp_path / "first")))
    assert second.finished and second.step == 2


# ---------------------------------------------------------------------------------------------------- bad input
def _run_cli(pd_shards, tiny_config_file, out, *extra, data=None):
    return main(["pretrain", "--input_dir", str(data or pd_shards), "--output_dir", str(out), "--bert_config_file",
                 str(tiny_config_file), "--train_batch_size", "4", "--num_train_steps", "2", "--num_warmup_steps", "1",
                 "--progress=False", "--tensorboard=False", *extra])


def test_pretrain_empty_shard_folder_is_a_clear_error(pd_shards, tiny_config_file, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run_cli(pd_shards, tiny_config_file, tmp_path / "o", data=empty) == 2
    assert "no index.json" in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_pretrain_corrupt_shard_is_a_clear_error(pd_shards, tiny_config_file, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(pd_shards, bad)
    victim = bad / "shard-00001.input_ids.npy"
    victim.write_bytes(victim.read_bytes()[:200])
    assert _run_cli(pd_shards, tiny_config_file, tmp_path / "o", data=bad) == 2
    assert "shard-00001.input_ids.npy" in capsys.readouterr().err


def test_pretrain_ids_beyond_vocab_size_refused_before_training(pd_shards, tmp_path, capsys):
    small = tmp_path / "small_config.json"
    small.write_text(json.dumps({"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 64}))
    assert _run_cli(pd_shards, small, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "vocab_size 1000" in err and "token id" in err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_pretrain_resume_with_other_model_size_or_world_size_refused(pd_shards, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run_cli(pd_shards, tiny_config_file, out, "--stop_at_step", "1") == 0
    bigger = tmp_path / "bigger.json"
    bigger.write_text(json.dumps({**json.loads(tiny_config_file.read_text()), "hidden_size": 64}))
    assert _run_cli(pd_shards, bigger, out) == 2
    assert "does not fit the model config" in capsys.readouterr().err
    meta_path = out / "checkpoints" / "step-00000001" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "world_size": 2}))
    assert _run_cli(pd_shards, tiny_config_file, out) == 2
    assert "world_size: checkpoint 2 vs this run 1" in capsys.readouterr().err


def test_pretrain_nonfinite_loss_stops_without_checkpoint(pd_shards, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "nan"
    rc = _run_cli(pd_shards, tiny_config_file, out, "--optimizer", "adamw", "--learning_rate", "1e30",
                  "--max_grad_norm", "0", "--save_checkpoints_steps", "1", "--num_train_steps", "4",
                  "--num_warmup_steps", "0")  # no lr-0 first step: the first update already overflows
    assert rc == 3
    err = capsys.readouterr().err
    assert "non-finite" in err and "step" in err
    ckpts = out / "checkpoints"
    assert not ckpts.exists() or not any(p.name.startswith("step-") for p in ckpts.iterdir())
    errors = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "error"]
    assert errors and errors[0]["step"] >= 1


# ---------------------------------------------------------------------------------------------------- data
def test_open_pretraining_data_rejects_mixed_kinds(pd_shards, tmp_path):
    (tmp_path / "x.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match="mix of .tfrecord"):
        open_pretraining_data([str(pd_shards), str(tmp_path / "x.tfrecord")])
    with pytest.raises(FileNotFoundError, match="--input_dir: .*missing.tfrecord does not exist"):
        open_pretraining_data([str(tmp_path / "missing.tfrecord")])
    assert len(open_pretraining_data(f"{pd_shards},{pd_shards}")) == 2 * len(open_pretraining_data([str(pd_shards)]))


def test_pretrain_on_tfrecords_equals_pretrain_on_shards(pd_shards, tiny_config_file, tmp_path, train_losses):
    from nezha.data import tfrecord

    shards = open_pretraining_data([str(pd_shards)])
    batch = shards.get_batch(np.arange(len(shards)))
    path = tmp_path / "data.tfrecord"
    tfrecord.write_instances_tfrecord(batch, [path])
    data = open_pretraining_data(str(path))
    got = data.get_batch(np.arange(len(data)))
    for k in ("input_ids", "segment_ids", "masked_lm_ids", "masked_lm_positions", "next_sentence_labels",
              "lengths", "num_masked"):
        np.testing.assert_array_equal(got[k], batch[k])
    kw = dict(num_train_steps=2, save_checkpoints_steps=100)
    pretrain(_args(pd_shards, tiny_config_file, tmp_path / "shards", **kw))
    pretrain(_args(path, tiny_config_file, tmp_path / "tf", **kw))
    assert train_losses(tmp_path / "tf") == pytest.approx(train_losses(tmp_path / "shards"), rel=1e-6)


def _tfrecord_copy(pd_shards, path):
    from nezha.data import tfrecord

    shards = open_pretraining_data([str(pd_shards)])
    tfrecord.write_instances_tfrecord(shards.get_batch(np.arange(len(shards))), [path])
    return path


def test_pretrain_tfrecord_ids_beyond_vocab_size_refused_at_the_first_batch(pd_shards, tmp_path, capsys):
    # TFRecords do not record their largest id: nothing scans them up front, the first batch is checked instead.
    small = tmp_path / "small_config.json"
    small.write_text(json.dumps({"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 64}))
    data = _tfrecord_copy(pd_shards, tmp_path / "data.tfrecord")
    assert _run_cli(pd_shards, small, tmp_path / "o", data=data) == 2
    err = capsys.readouterr().err
    assert "data.tfrecord: token id" in err and "batch of step 1" in err and "vocab_size 1000" in err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_unigram_baseline_reads_a_bounded_sample(pd_shards):
    from nezha.train.pretrain import unigram_baseline

    data = open_pretraining_data([str(pd_shards)])
    read = []

    class Counting:
        def __len__(self):
            return 10**7  # as if huge: only the sample may be read

        def get_batch(self, idx):
            read.append(len(idx))
            return data.get_batch(np.asarray(idx) % len(data))

    base = unigram_baseline(Counting(), sample=500)
    assert sum(read) == 500 and 0 < base["unigram_mlm_acc"] < 1


def _with_vocab_fingerprint(pd_shards, tmp_path, vocab_file):
    from nezha.data.pretraining import vocab_fingerprint
    from nezha.data.tokenization import load_vocab

    folder = tmp_path / "shards"
    shutil.copytree(pd_shards, folder)
    index = json.loads((folder / "index.json").read_text())
    index.update(vocab_sha256=vocab_fingerprint(load_vocab(vocab_file)), args={"vocab_file": str(vocab_file)})
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_pretrain_data_made_with_another_vocab_refused_before_step_one(pd_shards, tiny_config_file, chinese_vocab,
                                                                       tmp_path, capsys):
    other = tmp_path / "other_vocab.txt"
    other.write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "的", "一"]))
    data = _with_vocab_fingerprint(pd_shards, tmp_path, chinese_vocab)
    assert _run_cli(pd_shards, tiny_config_file, tmp_path / "o", "--vocab_file", str(other), data=data) == 2
    err = capsys.readouterr().err
    assert str(chinese_vocab) in err and str(other) in err and "--allow_vocab_mismatch" in err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
    assert _run_cli(pd_shards, tiny_config_file, tmp_path / "same", "--vocab_file", str(chinese_vocab),
                    data=data) == 0
    assert _run_cli(pd_shards, tiny_config_file, tmp_path / "forced", "--vocab_file", str(other),
                    "--allow_vocab_mismatch", data=data) == 0


def test_check_vocab_uses_the_init_checkpoint_folders_vocab(pd_shards, chinese_vocab, tmp_path):
    from nezha.train.pretrain import check_vocab

    data = open_pretraining_data([str(_with_vocab_fingerprint(pd_shards, tmp_path, chinese_vocab))])
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    args = PretrainArgs(input_dir=["x"], output_dir="o", init_checkpoint=str(folder))
    with pytest.raises(ValueError, match=r"differs from the model's .*model/vocab\.txt"):
        check_vocab(args, data, "shards")
    shutil.copy(chinese_vocab, folder / "vocab.txt")
    check_vocab(args, data, "shards")
