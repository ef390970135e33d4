"""Baseline for bench_prepare.py: a plain single-process, pure-Python port of BERT's create_pretraining_data.

Written from the algorithm's description (not a copy): a Python BasicTokenizer + greedy longest-match WordPiece,
one ``random.Random`` threaded through reading, pairing and masking, instances kept as lists of token strings,
then padded into the original features and written as TFRecord at native speed (nezha's vectorized writer with C
checksums, in place of the TensorFlow C++ writer the original uses).
Whole word masking follows Google's WWM: non-initial pieces of a word (jieba words for Chinese) are grouped with
the word's first piece; each piece is still predicted on its own.

    python benchmarks/baseline_create_pretraining_data.py --input_file=corpus.txt --output_file=out.tfrecord \\
        --vocab_file=vocab.txt --do_whole_word_mask=True
"""

from __future__ import annotations

import argparse
import random
import time
import unicodedata


# -- tokenizer --------------------------------------------------------------------------------------------------
def load_vocab(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        tokens = f.read().split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return {t: i for i, t in enumerate(tokens)}


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


class FullTokenizer:
    def __init__(self, vocab_file, do_lower_case=True):
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {v: k for k, v in self.vocab.items()}
        self.do_lower_case = do_lower_case

    def basic(self, text):
        out = []
        for c in text:
            cp = ord(c)
            if cp == 0 or cp == 0xFFFD or is_control(c):
                continue
            if is_whitespace(c):
                out.append(" ")
            elif is_cjk(cp):
                out.append(" " + c + " ")
            else:
                out.append(c)
        words = []
        for w in "".join(out).split():
            if self.do_lower_case:
                w = w.lower()
                w = "".join(c for c in unicodedata.normalize("NFD", w) if unicodedata.category(c) != "Mn")
            cur = []
            for c in w:
                if is_punctuation(c):
                    if cur:
                        words.append("".join(cur))
                        cur = []
                    words.append(c)
                else:
                    cur.append(c)
            if cur:
                words.append("".join(cur))
        return words

    def wordpiece(self, word):
        if len(word) > 100:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            cur = None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                if sub in self.vocab:
                    cur = sub
                    break
                end -= 1
            if cur is None:
                return ["[UNK]"]
            pieces.append(cur)
            start = end
        return pieces

    def tokenize(self, text):
        return [p for w in self.basic(text) for p in self.wordpiece(w)]


# -- instances --------------------------------------------------------------------------------------------------
def read_documents(input_files, tokenizer, wwm, rng):
    import jieba

    docs = [[]]
    for path in input_files:
        with open(path, encoding="utf-8", newline="\n") as f:
            for line in f:
                line = line.strip()
                if not line:
                    docs.append([])
                    continue
                if wwm:
                    # each word's non-initial pieces marked for grouping, as ("piece", starts_word)
                    toks = []
                    for word in jieba.lcut(line):
                        pieces = tokenizer.tokenize(word)
                        toks += [(p, k == 0 and not p.startswith("##")) for k, p in enumerate(pieces)]
                else:
                    toks = [(p, not p.startswith("##")) for p in tokenizer.tokenize(line)]
                if toks:
                    docs[-1].append(toks)
    docs = [d for d in docs if d]
    rng.shuffle(docs)
    return docs


def truncate_seq_pair(a, b, max_num_tokens, rng):
    while len(a) + len(b) > max_num_tokens:
        trunc = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, wwm, rng):
    cand = []
    for i, (tok, starts_word) in enumerate(tokens):
        if tok in ("[CLS]", "[SEP]"):
            continue
        if wwm and cand and not starts_word:
            cand[-1].append(i)
        else:
            cand.append([i])
    rng.shuffle(cand)
    output = [t for t, _ in tokens]
    n_pred = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked, covered = [], set()
    for index_set in cand:
        if len(masked) >= n_pred:
            break
        if len(masked) + len(index_set) > n_pred:
            continue
        if any(i in covered for i in index_set):
            continue
        for i in index_set:
            covered.add(i)
            if rng.random() < 0.8:
                rep = "[MASK]"
            elif rng.random() < 0.5:
                rep = tokens[i][0]
            else:
                rep = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output[i] = rep
            masked.append((i, tokens[i][0]))
    masked.sort()
    return output, [i for i, _ in masked], [t for _, t in masked]


def create_instances_from_document(docs, di, max_seq_length, short_seq_prob, mlm_prob, max_pred, vocab_words, wwm, rng):
    document = docs[di]
    max_num_tokens = max_seq_length - 3
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                b = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b = target - len(a)
                    for _ in range(10):
                        rdi = rng.randint(0, len(docs) - 1)
                        if rdi != di:
                            break
                    rdoc = docs[rdi]
                    for j in range(rng.randint(0, len(rdoc) - 1), len(rdoc)):
                        b.extend(rdoc[j])
                        if len(b) >= target_b:
                            break
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    b = [t for s in chunk[a_end:] for t in s]
                truncate_seq_pair(a, b, max_num_tokens, rng)
                tokens = [("[CLS]", True), *a, ("[SEP]", True), *b, ("[SEP]", True)]
                segment_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                out, pos, labels = create_masked_lm_predictions(tokens, mlm_prob, max_pred, vocab_words, wwm, rng)
                instances.append((out, segment_ids, is_random_next, pos, labels))
            chunk, length = [], 0
        i += 1
    return instances


# -- TFRecord output (native speed) ----------------------------------------------------------------------------
def write_instances(instances, tokenizer, max_seq_length, max_pred, path):
    """Pad the instances into the original features and write them with nezha's vectorized TFRecord writer (C
    checksums), standing in for TensorFlow's C++ writer that the original uses: a pure-Python writer would make
    this baseline several seconds slower than the original and overstate every speed-up measured against it."""
    from nezha.data.shards import Instance, instances_to_arrays
    from nezha.data.tfrecord import write_instances_tfrecord

    vocab = tokenizer.vocab
    with_ids = [
        Instance(input_ids=[vocab[t] for t in tokens], segment_ids=segment_ids, masked_lm_positions=pos,
                 masked_lm_ids=[vocab[t] for t in labels], is_random_next=is_random_next)
        for tokens, segment_ids, is_random_next, pos, labels in instances
    ]
    arrays = instances_to_arrays(with_ids, max_seq_length, max_pred)
    write_instances_tfrecord(arrays, [path])


def main(argv=None):
    def b(s):
        return s.lower() in ("true", "1", "yes")

    p = argparse.ArgumentParser()
    p.add_argument("--input_file", required=True)
    p.add_argument("--output_file", required=True)
    p.add_argument("--vocab_file", required=True)
    p.add_argument("--do_lower_case", type=b, default=True)
    p.add_argument("--do_whole_word_mask", type=b, default=False)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--random_seed", type=int, default=12345)
    p.add_argument("--dupe_factor", type=int, default=10)
    p.add_argument("--masked_lm_prob", type=float, default=0.15)
    p.add_argument("--short_seq_prob", type=float, default=0.1)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    tokenizer = FullTokenizer(a.vocab_file, a.do_lower_case)
    rng = random.Random(a.random_seed)
    docs = read_documents(a.input_file.split(","), tokenizer, a.do_whole_word_mask, rng)
    vocab_words = list(tokenizer.vocab.keys())
    instances = []
    for _ in range(a.dupe_factor):
        for di in range(len(docs)):
            instances += create_instances_from_document(
                docs, di, a.max_seq_length, a.short_seq_prob, a.masked_lm_prob, a.max_predictions_per_seq,
                vocab_words, a.do_whole_word_mask, rng,
            )
    rng.shuffle(instances)
    write_instances(instances, tokenizer, a.max_seq_length, a.max_predictions_per_seq, a.output_file)
    seconds = time.perf_counter() - t0
    print(f"baseline: {len(instances)} instances in {seconds:.1f}s ({len(instances) / seconds:.0f}/s)")
    return len(instances), seconds


if __name__ == "__main__":
    main()
