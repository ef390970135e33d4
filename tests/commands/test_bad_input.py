"""Every ``nezha`` command on malformed input: exit status 2 and one line ``nezha CMD: error: ...`` that names
the file (and line where there is one), no traceback, and no output file left behind half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nezha.cli import COMMANDS, build_parser, main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf_nezha_tiny"
CKPT_DATA = "model.ckpt-7.data-00000-of-00001"
CKPT_INDEX = "model.ckpt-7.index"


def run_failing(argv: list[str], capsys) -> str:
    """Run ``nezha ARGV``, check that it failed as a user error should, and return the error line."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"nezha {argv[0]}: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.fixture()
def not_utf8(tmp_path) -> Path:
    """UTF-8 on line 1, GBK on line 2 (a common mistake with Chinese text)."""
    return _write(tmp_path / "gbk.txt", "第一行\n".encode() + "第二行\n".encode("gbk"))


@pytest.fixture()
def empty(tmp_path) -> Path:
    return _write(tmp_path / "empty.txt", b"")


@pytest.fixture()
def download(tmp_path) -> Path:
    """A copy of the tiny TF checkpoint, as a user's download folder."""
    folder = tmp_path / "download"
    folder.mkdir()
    for f in FIXTURE.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


# ---------------------------------------------------------------------------------------------------- --config
def positionals(command: str) -> list[str]:
    """Placeholders for the command's required positional arguments (those cannot come from the file)."""
    parser = build_parser(command)._subparsers._group_actions[0].choices[command]
    return ["." for a in parser._actions if not a.option_strings and a.required]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("content", "expected"), [
    ('{"seed": 1,\n "x": }', ["settings.json:2: not valid JSON"]),
    ('{"seeed": 1}', ["settings.json: unknown setting(s) 'seeed'"]),
    ('["seed", 1]', ["settings.json: expected a mapping", "got list"]),
    (b'{"seed": "\xff"}', ["settings.json:1: not valid UTF-8"]),
], ids=["bad-json", "typo", "not-a-mapping", "not-utf8"])
def test_bad_config_file(command, content, expected, tmp_path, capsys):
    cfg = _write(tmp_path / "settings.json", content)
    line = run_failing([command, *positionals(command), "--config", str(cfg)], capsys)
    assert all(e in line for e in expected), line
    assert str(cfg) in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_config_file(command, tmp_path, capsys):
    line = run_failing([command, *positionals(command), "--config", str(tmp_path / "nope.json")], capsys)
    assert f"--config: file not found: {tmp_path / 'nope.json'}" in line


@pytest.mark.parametrize(("argv", "expected"), [
    (["vocab", "--input_file", "c.txt", "--output_file", "v.txt", "--vocab_size", "big"],
     "argument --vocab_size: invalid int value: 'big'"),
    (["vocab", "--input_file", "c.txt", "--output_file", "v.txt", "--do_lower_case=maybe"],
     "argument --do_lower_case: expected True or False, got 'maybe'"),
    (["convert", "--tf_checkpoint", "m", "--bert_config", "b", "--output", "o", "--hidden_act", "gelu2"],
     "argument --hidden_act: invalid choice: 'gelu2'"),
    (["export-onnx", "m", "--task", "base", "--output", "m.onnx", "--opset", "eighteen"],
     "argument --opset: invalid int value: 'eighteen'"),
    (["export-onnx", "m", "--task", "masked-lm", "--output", "m.onnx"], "argument --task: invalid choice"),
    (["evaluate-cmrc", "d.json", "p.json", "--segmenter", "jieba"], "argument --segmenter: invalid choice"),
    (["demo", "--seconds", "1m"], "argument --seconds: invalid float value: '1m'"),
    (["quickstart", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["pretrain", "--train_batch_size", "32.5"], "argument --train_batch_size: invalid int value: '32.5'"),
    (["vocab", "--output_file", "v.txt"], "missing required setting(s) --input_file"),
    (["export-onnx", "--task", "base", "--output", "m.onnx"], "the following arguments are required: MODEL_DIR"),
    (["verify", "."], "give --md5 FILE and/or --tf_checkpoint PREFIX"),
])
def test_wrong_flag_values(argv, expected, capsys):
    assert expected in run_failing(argv, capsys)


def test_wrongly_typed_value_in_config_file(tmp_path, capsys):
    cfg = _write(tmp_path / "vocab.json", json.dumps({"input_file": "c.txt", "output_file": "v.txt",
                                                      "vocab_size": "big"}))
    line = run_failing(["vocab", "--config", str(cfg)], capsys)
    assert f"{cfg}: vocab_size: expected an integer, got 'big'" in line
    assert not (tmp_path / "v.txt").exists()


# ---------------------------------------------------------------------------------------------------- vocab
def test_vocab_bad_input_files(tmp_path, empty, not_utf8, capsys):
    out = tmp_path / "vocab.txt"
    common = ["vocab", "--output_file", str(out)]
    missing = tmp_path / "nope.txt"
    assert f"{missing} does not exist" in run_failing([*common, "--input_file", str(missing)], capsys)
    assert str(empty) in run_failing([*common, "--input_file", str(empty)], capsys)
    assert f"{not_utf8}:2: invalid UTF-8" in run_failing([*common, "--input_file", str(not_utf8)], capsys)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- evaluate-cmrc
def test_evaluate_cmrc_bad_input_files(tmp_path, empty, not_utf8, capsys):
    pred = _write(tmp_path / "pred.json", json.dumps({"Q1": "北京"}))
    data = _write(tmp_path / "dev.json", json.dumps({"data": [{"paragraphs": [{"context": "北京", "qas": [
        {"id": "Q1", "answers": [{"text": "北京"}]}]}]}]}))
    bad_json = _write(tmp_path / "bad.json", '{"data": [\n  {"paragraphs": }]}')
    out = tmp_path / "result.json"
    cases = [
        ([tmp_path / "nope.json", pred], str(tmp_path / "nope.json")),
        ([data, tmp_path / "nope.json"], str(tmp_path / "nope.json")),
        ([empty, pred], f"{empty}: dataset file is empty"),
        ([data, empty], f"{empty}: prediction file is empty"),
        ([bad_json, pred], f"{bad_json}: dataset file is not valid JSON"),
        ([not_utf8, pred], f"{not_utf8}:2: dataset file is not valid UTF-8"),
        ([data, not_utf8], f"{not_utf8}:2: prediction file is not valid UTF-8"),
        ([data, _write(tmp_path / "list.json", "[]")], "list.json: predictions must be a JSON object"),
    ]
    for (d, p), expected in cases:
        assert expected in run_failing(["evaluate-cmrc", str(d), str(p), str(out)], capsys)
    assert "line 2" in run_failing(["evaluate-cmrc", str(bad_json), str(pred)], capsys)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- convert
def _convert(download: Path, out: Path, *extra: str) -> list[str]:
    return ["convert", "--tf_checkpoint", str(download / "model.ckpt-7"), "--bert_config",
            str(download / "bert_config.json"), "--vocab", str(download / "vocab.txt"), "--output", str(out), *extra]


def test_convert_missing_checkpoint(download, tmp_path, capsys):
    (download / CKPT_INDEX).unlink()
    assert f"{download / CKPT_INDEX} not found" in run_failing(_convert(download, tmp_path / "out"), capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda d: _write(d / CKPT_DATA, (d / CKPT_DATA).read_bytes()[:500]), f"{CKPT_DATA}: truncated"),
    (lambda d: _write(d / CKPT_INDEX, (d / CKPT_INDEX).read_bytes()[:100]), f"{CKPT_INDEX}: not a TensorFlow"),
    (lambda d: _write(d / CKPT_INDEX, b"garbage"), f"{CKPT_INDEX}: too short"),
    (lambda d: _write(d / "bert_config.json", '{"hidden_size": 32,\n'), "bert_config.json: not valid JSON"),
    (lambda d: (d / "bert_config.json").unlink(), "bert_config.json"),
    (lambda d: (d / "vocab.txt").unlink(), "vocab.txt"),
], ids=["truncated-data", "truncated-index", "garbage-index", "bad-config", "missing-config", "missing-vocab"])
def test_convert_damaged_download(download, tmp_path, capsys, damage, expected):
    damage(download)
    assert expected in run_failing(_convert(download, tmp_path / "out"), capsys)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- verify
def test_verify_bad_inputs(download, tmp_path, empty, not_utf8, capsys):
    md5 = str(download / "model.md5")
    assert f"{tmp_path / 'nope'} is not a folder" in run_failing(["verify", str(tmp_path / "nope"), "--md5", md5],
                                                                capsys)
    assert f"{tmp_path / 'nope.md5'} not found" in run_failing(
        ["verify", str(download), "--md5", str(tmp_path / "nope.md5")], capsys)
    assert f"{empty}: no checksums" in run_failing(["verify", str(download), "--md5", str(empty)], capsys)
    assert f"{not_utf8}:1: not an md5sum line" in run_failing(["verify", str(download), "--md5", str(not_utf8)],
                                                             capsys)
    gbk = _write(tmp_path / "gbk.md5", (FIXTURE / "model.md5").read_bytes() + "# 校验和\n".encode("gbk"))
    assert f"{gbk}:3: not valid UTF-8" in run_failing(["verify", str(download), "--md5", str(gbk)], capsys)


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda d: _write(d / CKPT_DATA, (d / CKPT_DATA).read_bytes()[:500]), f"{CKPT_DATA}: truncated"),
    (lambda d: _write(d / CKPT_INDEX, b"garbage"), f"{CKPT_INDEX}: too short"),
    (lambda d: (d / CKPT_INDEX).unlink(), f"{CKPT_INDEX} not found"),
], ids=["truncated-data", "garbage-index", "missing-index"])
def test_verify_damaged_checkpoint(download, capsys, damage, expected):
    damage(download)
    assert expected in run_failing(["verify", str(download), "--tf_checkpoint", "model.ckpt-7"], capsys)


# ---------------------------------------------------------------------------------------------------- export-onnx
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from nezha.convert.from_tf import convert_tf_checkpoint

    out = tmp_path_factory.mktemp("model") / "nezha-tiny"
    convert_tf_checkpoint(FIXTURE / "model.ckpt-7", FIXTURE / "bert_config.json", out, FIXTURE / "vocab.txt")
    return out


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda m: _write(m / "model.safetensors", (m / "model.safetensors").read_bytes()[:300]),
     "model.safetensors: cannot read weights"),
    (lambda m: _write(m / "model.safetensors", b"garbage"), "model.safetensors: cannot read weights"),
    (lambda m: _write(m / "config.json", '{"hidden_size": 32,\n "x": }'), "config.json: not valid JSON"),
    (lambda m: (m / "config.json").unlink(), "config.json"),
], ids=["truncated-weights", "garbage-weights", "bad-config", "missing-config"])
def test_export_onnx_damaged_model_folder(model_dir, tmp_path, capsys, damage, expected):
    pytest.importorskip("onnxscript")
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    damage(folder)
    out = tmp_path / "model.onnx"
    line = run_failing(["export-onnx", str(folder), "--task", "base", "--output", str(out)], capsys)
    assert str(folder) in line and expected in line
    assert not out.exists()


def test_export_onnx_missing_model_folder(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    line = run_failing(["export-onnx", str(tmp_path / "nope"), "--task", "base", "--output", str(tmp_path / "m.onnx")],
                       capsys)
    assert str(tmp_path / "nope") in line


# ---------------------------------------------------------------------------------------------------- demo, quickstart
def test_demo_bad_corpus(tmp_path, empty, not_utf8, capsys):
    assert str(tmp_path / "nope.txt") in run_failing(["demo", "--corpus", str(tmp_path / "nope.txt")], capsys)
    assert f"{empty}: 0 sentences" in run_failing(["demo", "--corpus", str(empty)], capsys)
    assert f"{not_utf8}:2: not valid UTF-8" in run_failing(["demo", "--corpus", str(not_utf8)], capsys)
    untagged = _write(tmp_path / "plain.txt", "这不是词性标注的语料。\n")
    assert f"{untagged}:1: token" in run_failing(["demo", "--corpus", str(untagged)], capsys)
    few = _write(tmp_path / "few.txt", "人民/n 日报/n 发表/v 社论/n 迎接/v 新年/t\n" * 10)
    assert f"{few}: 10 sentences" in run_failing(["demo", "--corpus", str(few)], capsys)


def test_quickstart_output_dir_that_is_a_file(empty, capsys):
    assert f"--output_dir {empty} exists and is not a folder" in run_failing(
        ["quickstart", "--fast", "--output_dir", str(empty)], capsys)


# ---------------------------------------------------------------------------------------------------- pretrain
def test_pretrain_missing_empty_or_garbage_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert str(tmp_path / "nope") in run_failing(
        ["pretrain", "--input_dir", str(tmp_path / "nope"), "--output_dir", str(out)], capsys)
    (tmp_path / "shards").mkdir()
    assert f"{tmp_path / 'shards'}: no index.json" in run_failing(
        ["pretrain", "--input_dir", str(tmp_path / "shards"), "--output_dir", str(out)], capsys)
    garbage = _write(tmp_path / "data.tfrecord", b"garbage")
    assert f"{garbage}: record 0 at byte 0: truncated header" in run_failing(
        ["pretrain", "--input_dir", str(garbage), "--output_dir", str(out)], capsys)
    assert not out.exists()
