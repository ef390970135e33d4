"""Task settings are declared once (FinetuneArgs extends them) and stored with the model under the old keys."""

from __future__ import annotations

import dataclasses

import pytest

from nezha.tasks.common import TaskSettings
from nezha.train.finetune import FinetuneArgs

# config.json extra.finetune as written before the task settings had their own class (a CMRC model folder).
OLD_STORED = {"task": "mrc", "data_format": "auto", "max_seq_length": 512, "do_lower_case": False, "doc_stride": 128,
              "max_query_length": 64, "n_best_size": 20, "max_answer_length": 30, "text_a_column": "text_a",
              "text_b_column": "", "label_column": "label", "header": True, "eval_batch_size": 64}


def test_folders_written_before_still_load():
    s = TaskSettings.from_stored(OLD_STORED, "config.json extra.finetune")
    assert dataclasses.asdict(s) == {**OLD_STORED, "skip_bad_rows": False}


def test_finetune_args_inherit_every_task_setting_with_its_default():
    args = FinetuneArgs(task="ner", output_dir="o", train_file="t", from_scratch=True, vocab_file="v",
                        max_seq_length=256)
    assert dataclasses.asdict(TaskSettings.of(args)) == {**dataclasses.asdict(TaskSettings(task="ner")),
                                                         "max_seq_length": 256}


def test_stored_settings_with_an_unknown_key_name_it():
    with pytest.raises(ValueError, match="config.json extra.finetune: unknown setting.*'max_seq_len'"):
        TaskSettings.from_stored({**OLD_STORED, "max_seq_len": 1}, "config.json extra.finetune")
