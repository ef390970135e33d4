"""Every ``nezha`` command takes its arguments from one settings dataclass: the original flag names and defaults,
``--config FILE`` everywhere, and a ``--help`` that does not load torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from nezha.cli import COMMANDS, build_parser, main
from nezha.commands.convert import ConvertSettings
from nezha.commands.demo import DemoSettings
from nezha.commands.evaluate_cmrc import EvaluateCmrcSettings
from nezha.commands.export_onnx import ExportOnnxSettings, Task
from nezha.commands.quickstart import QuickstartSettings
from nezha.commands.verify import VerifySettings
from nezha.commands.vocab import VocabSettings
from nezha.settings import dataclass_from_namespace


def _subparser(command: str):
    return build_parser(command)._subparsers._group_actions[0].choices[command]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reads_a_config_file(command):
    assert "--config" in _subparser(command)._option_string_actions


# The minimal arguments and the settings they give, as the commands' hand-written argparse parsers had them
# before the settings dataclasses (flag names and defaults users' scripts rely on).
ORIGINAL_DEFAULTS = [
    (VocabSettings, ["vocab", "--input_file", "c.txt", "--output_file", "v.txt"],
     dict(input_file="c.txt", output_file="v.txt", vocab_size=21128, min_frequency=2, do_lower_case=True,
          num_unused=99, limit_alphabet=None, cjk_continuation=True, skip_invalid_lines=False)),
    (ConvertSettings, ["convert", "--tf_checkpoint", "m.ckpt", "--bert_config", "b.json", "--output", "o"],
     dict(tf_checkpoint="m.ckpt", bert_config="b.json", vocab=None, output="o", hidden_act=None, no_verify=False)),
    (ExportOnnxSettings, ["export-onnx", "m", "--task", "base", "--output", "m.onnx"],
     dict(model_dir="m", task="base", output="m.onnx", opset=18, atol=1e-4)),
    (VerifySettings, ["verify", "d", "--md5", "m.md5"], dict(dir="d", md5="m.md5", tf_checkpoint=None)),
    (EvaluateCmrcSettings, ["evaluate-cmrc", "d.json", "p.json"],
     dict(data="d.json", pred="p.json", out=None, segmenter="builtin")),
    (DemoSettings, ["demo"], dict(seconds=45.0, corpus=None, seed=0)),
    (QuickstartSettings, ["quickstart"], dict(output_dir="quickstart-out", fast=False, seed=12345)),
]


@pytest.mark.parametrize(("cls", "argv", "expected"), ORIGINAL_DEFAULTS, ids=lambda x: getattr(x, "__name__", ""))
def test_flag_names_and_defaults_are_the_original_ones(cls, argv, expected):
    settings = dataclass_from_namespace(cls, build_parser(argv[0]).parse_args(argv))
    assert vars(settings) == expected


@pytest.mark.parametrize(("argv", "field", "value"), [
    (["vocab", "--input_file", "c", "--output_file", "v", "--skip_invalid_lines"], "skip_invalid_lines", True),
    (["vocab", "--input_file", "c", "--output_file", "v", "--do_lower_case=False"], "do_lower_case", False),
    (["convert", "--tf_checkpoint", "m", "--bert_config", "b", "--output", "o", "--no_verify"], "no_verify", True),
    (["quickstart", "--fast"], "fast", True),
    (["evaluate-cmrc", "d.json", "p.json", "o.json", "--segmenter", "nltk"], "out", "o.json"),
])
def test_original_switches_and_positionals_still_parse(argv, field, value):
    settings_cls = next(c for c, a, _ in ORIGINAL_DEFAULTS if a[0] == argv[0])
    assert getattr(dataclass_from_namespace(settings_cls, build_parser(argv[0]).parse_args(argv)), field) == value


def test_export_onnx_choices_are_the_exporters_heads():
    pytest.importorskip("onnx")
    from nezha.convert.onnx_export import TASKS

    assert set(typing.get_args(Task)) == set(TASKS)


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in
                                   ("vocab", "prepare", "convert", "verify", "export-onnx", "evaluate-cmrc", "demo",
                                    "quickstart"))])
def test_help_does_not_import_torch(argv):
    code = (f"import sys\nfrom nezha.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
    assert "usage: nezha" in proc.stdout


def test_vocab_from_a_config_file_with_a_flag_overriding_it(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("中华人民共和国成立了。\n北京是中国的首都。\nhello world playing\n" * 50, encoding="utf-8")
    cfg = tmp_path / "vocab.json"
    cfg.write_text(json.dumps({"input_file": str(corpus), "output_file": str(tmp_path / "v.txt"),
                               "vocab_size": 50, "num_unused": 3}), encoding="utf-8")
    assert main(["vocab", "--config", str(cfg), "--vocab_size", "200"]) == 0
    vocab = (tmp_path / "v.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[unused1]", "[unused2]", "[unused3]", "[UNK]"]  # num_unused from the file
    assert 50 < len(vocab) <= 200  # vocab_size from the flag
    assert f"wrote {tmp_path / 'v.txt'}" in capsys.readouterr().out


def test_evaluate_cmrc_positionals_with_settings_from_a_file(tmp_path, capsys):
    data = tmp_path / "dev.json"
    data.write_text(json.dumps({"data": [{"paragraphs": [{"context": "北京是首都", "qas": [
        {"id": "Q1", "question": "首都?", "answers": [{"text": "北京", "answer_start": 0}]}]}]}]},
        ensure_ascii=False), encoding="utf-8")
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"Q1": "北京"}, ensure_ascii=False), encoding="utf-8")
    cfg = tmp_path / "cmrc.json"
    cfg.write_text(json.dumps({"segmenter": "builtin", "out": str(tmp_path / "from-config.json")}), encoding="utf-8")
    assert main(["evaluate-cmrc", str(data), str(pred), "--config", str(cfg)]) == 0
    result = json.loads((tmp_path / "from-config.json").read_text(encoding="utf-8"))
    assert result["EM"] == result["F1"] == "100.000"
    assert json.loads(capsys.readouterr().out) == result


def test_pretrain_args_json_is_a_config_file_for_the_next_run(tmp_path):
    from nezha.settings import save_settings
    from nezha.train.pretrain import PretrainArgs

    saved = PretrainArgs(input_dir=["shards"], output_dir="run", max_seq_length=128, optimizer="adamw")
    save_settings(saved, tmp_path / "args.json")  # what every pretraining run writes
    argv = ["pretrain", "--config", str(tmp_path / "args.json"), "--num_train_steps", "7"]
    loaded = dataclass_from_namespace(PretrainArgs, build_parser("pretrain").parse_args(argv))
    assert loaded == dataclasses.replace(saved, num_train_steps=7)
