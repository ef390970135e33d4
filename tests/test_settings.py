"""The settings builder: one dataclass gives a command its arguments, ``--config FILE`` and the checks of both."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Literal

import pytest

from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace, dataclass_from_settings


@dataclasses.dataclass(kw_only=True)
class _Args:
    data: str = arg(help="a data file", positional=True)
    out: str | None = arg(None, "an output file", positional=True)
    corpus: str = arg(help="a required flag")
    lr: float = arg(1e-3, "learning rate")
    steps: int = arg(10, "steps")
    use_x: bool = arg(False, "a switch")
    inputs: list[str] = arg([], "paths")
    mode: Literal["fast", "slow"] = arg("fast", "how")
    limit: int | None = arg(None, "an optional number")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prog")
    add_dataclass_arguments(p, _Args)
    return p


def _parse(argv: list[str]) -> _Args:
    return dataclass_from_namespace(_Args, _parser().parse_args(argv))


def _config(tmp_path, content: str, name: str = "run.json"):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def test_args_flags_override_config_file_which_overrides_defaults(tmp_path):
    cfg = _config(tmp_path, json.dumps({"lr": 0.5, "steps": 3, "inputs": "a", "corpus": "c.txt"}))
    a = _parse(["d.json", "--config", cfg, "--steps", "7", "--use_x=True"])
    assert (a.lr, a.steps, a.use_x, a.inputs, a.corpus) == (0.5, 7, True, ["a"], "c.txt")
    a = _parse(["d.json", "--corpus", "c.txt"])
    assert (a.lr, a.steps, a.use_x, a.inputs, a.mode, a.limit, a.out) == (1e-3, 10, False, [], "fast", None, None)


def test_args_positionals_keep_their_order_and_the_optional_one_may_be_left_out():
    assert (_parse(["d.json", "o.json", "--corpus", "c"]).out) == "o.json"
    a = _parse(["--corpus", "c", "d.json"])
    assert (a.data, a.out) == ("d.json", None)
    with pytest.raises(SystemExit):  # a required positional is required on the command line
        _parser().parse_args(["--corpus", "c"])


def test_args_bool_flag_alone_or_with_a_value():
    assert _parse(["d", "--corpus", "c", "--use_x"]).use_x is True
    assert _parse(["d", "--corpus", "c", "--use_x=False"]).use_x is False
    with pytest.raises(SystemExit):
        _parser().parse_args(["d", "--corpus", "c", "--use_x=maybe"])


def test_args_lists_literals_and_optionals_from_flags():
    a = _parse(["d", "--corpus", "c", "--inputs", "x", "y", "--mode", "slow", "--limit", "3"])
    assert (a.inputs, a.mode, a.limit) == (["x", "y"], "slow", 3)
    with pytest.raises(SystemExit):
        _parser().parse_args(["d", "--corpus", "c", "--mode", "medium"])


def test_args_required_flag_may_come_from_the_file_only(tmp_path):
    cfg = _config(tmp_path, json.dumps({"corpus": "c.txt"}))
    assert _parse(["d", "--config", cfg]).corpus == "c.txt"
    with pytest.raises(ValueError, match=r"^missing required setting\(s\) --corpus \(give them as arguments or in"):
        _parse(["d"])
    empty = _config(tmp_path, "{}", "empty.json")
    with pytest.raises(ValueError, match=r"empty\.json: missing required setting\(s\) --corpus"):
        _parse(["d", "--config", empty])


def test_args_help_shows_defaults_choices_and_what_is_required(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: prog [-h] [--config FILE]" in text and "DATA [OUT]" in text
    assert "required (here or in the --config file): --corpus CORPUS a required flag" in text
    assert "learning rate (default: 0.001)" in text and "--mode {fast,slow}" in text
    assert "--use_x [BOOL]" in text


def test_args_unknown_setting_in_file_is_named_with_a_suggestion(tmp_path):
    cfg = _config(tmp_path, json.dumps({"corpus": "c", "setps": 5}))
    with pytest.raises(ValueError, match=r"run\.json: unknown setting\(s\) 'setps' \(did you mean 'steps'\?\)"):
        _parse(["d", "--config", cfg])


@pytest.mark.parametrize(("settings", "message"), [
    ({"steps": "7"}, r"run\.json: steps: expected an integer, got '7'"),
    ({"steps": True}, r"run\.json: steps: expected an integer, got True"),
    ({"lr": "fast"}, r"run\.json: lr: expected a number, got 'fast'"),
    ({"use_x": "maybe"}, r"run\.json: use_x: expected True or False, got 'maybe'"),
    ({"use_x": 1}, r"run\.json: use_x: expected true or false, got 1"),
    ({"mode": "medium"}, r"run\.json: mode: expected one of \['fast', 'slow'\], got 'medium'"),
    ({"inputs": {"a": 1}}, r"run\.json: inputs: expected a list \(of a string\), got \{'a': 1\}"),
    ({"inputs": ["a", 2]}, r"run\.json: inputs\[1\]: expected a string, got 2"),
    ({"steps": None}, r"run\.json: steps: expected an integer, got null"),
])
def test_args_wrongly_typed_value_in_file_is_named(tmp_path, settings, message):
    cfg = _config(tmp_path, json.dumps({"corpus": "c", **settings}))
    with pytest.raises(ValueError, match=message):
        _parse(["d", "--config", cfg])


def test_args_file_values_are_converted_where_unambiguous(tmp_path):
    cfg = _config(tmp_path, json.dumps({"corpus": "c", "lr": 1, "use_x": "True", "limit": None}))
    a = _parse(["d", "--config", cfg])
    assert (a.lr, type(a.lr), a.use_x, a.limit) == (1.0, float, True, None)


@pytest.mark.parametrize(("content", "message"), [
    ('{"lr": 0.5,\n "steps": }', r"run\.json:2: not valid JSON \(Expecting value, column 11\)"),
    ("", r"run\.json:1: not valid JSON"),
    ("[1, 2]", r"run\.json: expected a mapping of setting names to values, got list"),
    ('"lr"', r"run\.json: expected a mapping of setting names to values, got str"),
])
def test_args_bad_settings_file_is_named_with_its_line(tmp_path, content, message):
    cfg = _config(tmp_path, content)
    with pytest.raises(ValueError, match=message):
        _parse(["d", "--config", cfg])


def test_args_settings_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_bytes(b'{"corpus": "c",\n "lr": "\xff"}')
    with pytest.raises(ValueError, match=r"run\.json:2: not valid UTF-8 \(byte 0xff\)"):
        _parse(["d", "--config", str(cfg)])


def test_args_missing_settings_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--config: file not found: .*nope\.json"):
        _parse(["d", "--config", str(tmp_path / "nope.json")])


def test_args_yaml_file(tmp_path):
    pytest.importorskip("yaml")
    a = _parse(["d", "--config", _config(tmp_path, "corpus: c\nlr: 0.25\nuse_x: true\n", "run.yaml")])
    assert a.lr == 0.25 and a.use_x is True
    bad = _config(tmp_path, "corpus: c\nlr: [0.25\n", "bad.yaml")
    with pytest.raises(ValueError, match=r"bad\.yaml:3: not valid YAML"):
        _parse(["d", "--config", bad])


def test_dataclass_from_settings_checks_names_and_types():
    assert dataclass_from_settings(_Args, {"data": "d", "corpus": "c", "steps": 2}, source="stored").steps == 2
    with pytest.raises(ValueError, match=r"stored: steps: expected an integer, got 2\.5"):
        dataclass_from_settings(_Args, {"data": "d", "corpus": "c", "steps": 2.5}, source="stored")
    with pytest.raises(ValueError, match=r"stored: missing required setting\(s\) DATA"):
        dataclass_from_settings(_Args, {"corpus": "c"}, source="stored")
