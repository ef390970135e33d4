"""BERT WordPiece tokenization for Chinese NEZHA, on the Rust ``tokenizers`` library.

Behaviour matches ``transformers.BertTokenizer`` (basic tokenizer + WordPiece): CJK characters become one token
each, punctuation is split off, ``do_lower_case`` lower-cases and strips accents, unknown words become ``[UNK]``.
Every token carries ``(start, end)`` character offsets into the original text, which NER and reading comprehension
need to map predictions back.

The Rust ``BertNormalizer``/``BertPreTokenizer`` alone differ from the Python ``BasicTokenizer`` on ~750 code
points (unassigned ones, which Python removes as ``Cn``; punctuation and marks newer than the Rust tables; the
first 256 characters of CJK extension E, outside the Rust CJK range; and Python's NFC, which maps CJK
compatibility ideographs when lower-casing is off). So the pipeline is rebuilt from ``Replace``/``NFC``/
``Lowercase``/``NFD``/``Split`` steps whose character classes come from this interpreter's ``unicodedata``, the
tables ``BertTokenizer`` uses: ids and offsets are equal on every one of the 1,112,064 code points and on the
People's Daily, review and CMRC 2018 corpora (tests/data/test_tokenization.py). U+2028/U+2029 are whitespace to Rust
and separators to Python's ``str.split``: both split there, so the vocab's U+2028 entries (ids 343 and 13502)
are unreachable on either side, as in BERT.

:meth:`NezhaTokenizer.encode_text` is the fast path for pretraining data: characters BERT isolates and no
normalization changes map straight to ids, and only the runs between them go through Rust.

The original Google BERT / NEZHA ``FullTokenizer`` (what ``create_pretraining_data.py`` uses, and so
``nezha prepare``) differs from BertTokenizer in two settings, both constructor options: ``[SEP]`` typed in the
text is split like any text (``split_special_tokens=True``) and words of up to 200 characters are split into pieces
(``max_input_chars_per_word=200``). In both modes this pipeline, like BertTokenizer, NFC-normalizes and drops
every ``C*`` character, which the original does not (it drops only ``Cc``/``Cf``).
"""

from __future__ import annotations

import functools
import os
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# WordPiece turns a longer word into one [UNK]: transformers.BertTokenizer's cap, and that of the original
# Google BERT / NEZHA-TensorFlow tokenization.py (which create_pretraining_data.py uses).
BERT_TOKENIZER_MAX_CHARS_PER_WORD = 100
ORIGINAL_MAX_CHARS_PER_WORD = 200


def load_vocab(path: str | os.PathLike) -> list[str]:
    """Read ``vocab.txt`` one token per line.

    Splits on ``\\n`` only: the Chinese BERT vocabulary has entries containing U+2028 (LINE SEPARATOR), which
    ``str.splitlines()`` would treat as a line break, shifting every later id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocab file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: vocab is not UTF-8 ({e})") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t.rstrip("\r") for t in tokens]
    if not tokens:
        raise ValueError(f"{path}: vocab is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f"{path}: vocab lacks the special token(s) {missing}; is this a BERT/NEZHA vocab.txt?")
    return tokens


# Python BasicTokenizer's CJK blocks (_is_chinese_char): each such character becomes its own word.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_KIND_BITS = {
    "remove": 1,
    "whitespace": 2,
    "punctuation": 4,
    "nonspacing_mark": 8,
    "cjk": 16,
    "combining": 32,
    "unstable": 64,
}


def _cache_dir() -> Path:
    root = os.environ.get("NEZHA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nezha"
    )
    return Path(root)


@functools.cache
def _python_char_kinds() -> np.ndarray:
    """(0x110000,) uint8 bit flags per code point, as Python's BasicTokenizer classifies it (see _KIND_BITS).

    Classifying 1.1M code points takes ~0.4 s, so the table is cached on disk per Unicode database version
    (``$NEZHA_CACHE``, else ``~/.cache/nezha``); an unusable cache is simply recomputed.
    """
    path = _cache_dir() / f"bert_char_kinds-unicode{unicodedata.unidata_version}-v3.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (sys.maxunicode + 1,) and cached.dtype == np.uint8:
            return cached
    except (OSError, ValueError):
        pass
    out = _compute_char_kinds()
    try:
        from nezha.io.atomic import atomic_write

        def save(p: Path) -> None:
            with open(p, "wb") as f:
                np.save(f, out, allow_pickle=False)

        atomic_write(path, save)
    except OSError:
        pass
    return out


def _compute_char_kinds() -> np.ndarray:
    # map() keeps the 1.1M-code-point loop in C (~0.1 s instead of ~0.5 s for a Python loop)
    cats = list(map(unicodedata.category, map(chr, range(sys.maxunicode + 1))))
    flag = {c: 1 if c[0] == "C" else 4 if c[0] == "P" else 8 if c == "Mn" else 2 if c == "Zs" else 0 for c in set(cats)}
    out = np.frombuffer(bytes(map(flag.__getitem__, cats)), dtype=np.uint8).copy()
    # may compose with the character before it under NFC: category M*, or a non-zero combining class
    combining_class = np.fromiter(map(unicodedata.combining, map(chr, range(sys.maxunicode + 1))), np.int32)
    marks = np.fromiter((c[0] == "M" for c in cats), bool, len(cats))
    out[(combining_class != 0) | marks] |= 32
    out[0xFFFD] = 1  # _clean_text drops U+FFFD too
    for ch in " \t\n\r":
        out[ord(ch)] = 2
    for lo, hi in ((33, 47), (58, 64), (91, 96), (123, 126)):  # all non-alphanumeric ASCII is punctuation to BERT
        out[lo : hi + 1] = 4
    for lo, hi in _CJK_RANGES:
        out[lo : hi + 1] |= 16
    # isolated characters some normalization step changes (NFC, NFD, lower-case): never mapped directly
    for cp in np.flatnonzero((out & (4 | 16)) != 0).tolist():
        c = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if unicodedata.normalize("NFD", c) != c or unicodedata.normalize("NFC", c) != c or c.lower() != c:
            out[cp] |= 64
    out[0xD800:0xE000] = 0  # surrogates cannot reach Rust
    return out


@functools.cache
def _kind_runs() -> tuple[np.ndarray, np.ndarray]:
    """The kinds table as runs of code points with equal flags: (first code point of each run, then 0x110000;
    each run's flags). Some 10^4 runs, so a character class is found from them, not from 1.1M code points."""
    kinds = _python_char_kinds()
    starts = np.concatenate([[0], np.flatnonzero(kinds[1:] != kinds[:-1]) + 1])
    return np.append(starts, len(kinds)), kinds[starts]


@functools.cache
def python_char_class(*kinds: str) -> str:
    """An Oniguruma character class of the code points that Python's BasicTokenizer treats as any of ``kinds``.

    Built from this interpreter's ``unicodedata``, i.e. the same tables ``transformers.BertTokenizer`` uses here.
    Kinds: ``remove`` (category ``C*`` except tab/newline/CR, and U+FFFD), ``whitespace`` (``Zs`` and
    space/tab/newline/CR), ``punctuation`` (ASCII symbols and ``P*``), ``nonspacing_mark`` (``Mn``, dropped by
    accent stripping), ``cjk`` (the CJK blocks BERT splits per character).
    """
    bits = sum(_KIND_BITS[k] for k in kinds)
    bounds, flags = _kind_runs()
    member = (flags & bits) != 0  # per run
    edges = np.flatnonzero(np.diff(np.concatenate([[False], member, [False]]).astype(np.int8)))
    parts = []
    for a, b in zip(bounds[edges[0::2]].tolist(), (bounds[edges[1::2]] - 1).tolist()):
        parts.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "[" + "".join(parts) + "]"


def configure_bert_pipeline(tok, do_lower_case: bool) -> None:
    """Give a ``tokenizers.Tokenizer`` BertTokenizer's normalization and word splitting.

    BasicTokenizer's steps, each with the character classes of Python's ``unicodedata`` rather than the Rust
    crate's older tables: drop control characters; whitespace to spaces; NFC; (lower-case, NFD, drop ``Mn``);
    split on whitespace; isolate punctuation and CJK characters.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers

    steps = [
        normalizers.Replace(Regex(python_char_class("remove")), ""),
        normalizers.Replace(Regex(python_char_class("whitespace")), " "),
        normalizers.NFC(),
    ]
    if do_lower_case:
        mark = Regex(python_char_class("nonspacing_mark"))
        steps += [normalizers.Lowercase(), normalizers.NFD(), normalizers.Replace(mark, "")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(python_char_class("punctuation", "cjk")), behavior="isolated"),
        ]
    )


def build_rust_tokenizer(
    vocab: dict[str, int],
    do_lower_case: bool,
    *,
    split_special_tokens: bool = False,
    max_input_chars_per_word: int = BERT_TOKENIZER_MAX_CHARS_PER_WORD,
):
    """The ``tokenizers.Tokenizer`` equal to ``BertTokenizer(vocab, do_lower_case)`` (see configure_bert_pipeline).

    ``split_special_tokens=True`` treats ``[SEP]`` typed in the text as plain text (``[``, ``sep``, ``]``), as the
    original ``FullTokenizer`` does; otherwise it stays one special token, as in ``BertTokenizer``.
    """
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=max_input_chars_per_word))
    configure_bert_pipeline(tok, do_lower_case)
    if not split_special_tokens:  # BertTokenizer's added-token split keeps them whole
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS if t in vocab])
    return tok


@dataclass(frozen=True)
class Encoded:
    """One text's WordPiece tokens (no special tokens added), ids and character offsets into the text."""

    tokens: list[str]
    ids: list[int]
    offsets: list[tuple[int, int]]


class NezhaTokenizer:
    """WordPiece tokenizer from a ``vocab.txt``; see the module docstring.

    The defaults are ``transformers.BertTokenizer``'s. The original Google BERT / NEZHA ``FullTokenizer`` differs
    in two settings (``nezha prepare`` uses its values): ``split_special_tokens=True`` (``[SEP]`` in the text is
    punctuation and letters, never the special id) and ``max_input_chars_per_word=200`` (BertTokenizer: 100).
    """

    def __init__(
        self,
        vocab: list[str],
        do_lower_case: bool = True,
        source: str = "vocab",
        *,
        split_special_tokens: bool = False,
        max_input_chars_per_word: int = BERT_TOKENIZER_MAX_CHARS_PER_WORD,
    ):
        self.vocab_list = list(vocab)
        self.vocab = {tok: i for i, tok in enumerate(self.vocab_list)}  # duplicates: the last id wins, as BERT's
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"{source}: vocab lacks the special token(s) {missing}")
        if max_input_chars_per_word < 1:
            raise ValueError(f"max_input_chars_per_word must be >= 1, got {max_input_chars_per_word}")
        self.do_lower_case = do_lower_case
        self.source = source
        self.split_special_tokens = split_special_tokens
        self.max_input_chars_per_word = max_input_chars_per_word
        self._tok = build_rust_tokenizer(
            self.vocab,
            do_lower_case,
            split_special_tokens=split_special_tokens,
            max_input_chars_per_word=max_input_chars_per_word,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, do_lower_case: bool = True, **options) -> NezhaTokenizer:
        """Load ``vocab.txt``; ``options`` are the keyword-only constructor settings."""
        return cls(load_vocab(path), do_lower_case=do_lower_case, source=str(path), **options)

    def __len__(self) -> int:
        return len(self.vocab_list)

    def __getstate__(self) -> dict:
        # The Rust object is rebuilt in worker processes rather than pickled.
        return {
            "vocab_list": self.vocab_list,
            "do_lower_case": self.do_lower_case,
            "source": self.source,
            "split_special_tokens": self.split_special_tokens,
            "max_input_chars_per_word": self.max_input_chars_per_word,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["vocab_list"],
            state["do_lower_case"],
            state["source"],
            split_special_tokens=state["split_special_tokens"],
            max_input_chars_per_word=state["max_input_chars_per_word"],
        )

    @property
    def pad_id(self) -> int:
        return self.vocab["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self.vocab["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.vocab["[MASK]"]

    def encode(self, text: str) -> Encoded:
        enc = self._tok.encode(text, add_special_tokens=False)
        return Encoded(list(enc.tokens), list(enc.ids), [tuple(o) for o in enc.offsets])

    def encode_batch(self, texts: list[str]) -> list[Encoded]:
        return [
            Encoded(list(e.tokens), list(e.ids), [tuple(o) for o in e.offsets])
            for e in self._tok.encode_batch(texts, add_special_tokens=False)
        ]

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids only: the fast path for pretraining data."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_ids_offsets_batch(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Ids and character offsets (for whole word masking), without building token strings."""
        return [(e.ids, e.offsets) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Many texts at once into flat arrays, for pretraining data (same ids and offsets as :meth:`encode`).

        Returns ids (T,) int32, starts (T,) and ends (T,) int64 character offsets into each token's own text, and
        lengths (N,) tokens per text. See :meth:`encode_text` for how; texts containing a special token's spelling
        take the full pipeline (unless ``split_special_tokens``: then ``[SEP]`` is ordinary text).
        """
        sep = "\n"  # whitespace: never part of a token
        big = sep.join(texts) + sep
        text_starts = np.concatenate([[0], np.cumsum([len(t) + 1 for t in texts])[:-1]]).astype(np.int64)
        special = [] if self.split_special_tokens else [
            i for i, t in enumerate(texts) if "[" in t and any(sp in t for sp in SPECIAL_TOKENS)
        ]
        whole = [(int(text_starts[i]), int(text_starts[i]) + len(texts[i])) for i in special]
        ids, pos, end = self.encode_text(big, whole_spans=whole)
        text_of_tok = np.searchsorted(text_starts, pos, side="right") - 1
        lengths = np.bincount(text_of_tok, minlength=len(texts)).astype(np.int64)
        base = text_starts[text_of_tok]
        return ids, pos - base, end - base, lengths

    def encode_text(
        self, text: str, whole_spans: Sequence[tuple[int, int]] = ()
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All tokens of one long text (e.g. many lines joined by ``\\n``): ids (T,) int32, starts and ends (T,)
        int64 character offsets into ``text``. Tokens never cross whitespace, so this equals encoding each line.

        Most Chinese text is characters that BERT isolates and that no normalization step changes (CJK ideographs,
        most punctuation): those map straight to ids through a per-code-point table. Only the runs between them
        (Latin words, digits, anything else) go through the Rust pipeline, each distinct run once. ``whole_spans``:
        character ranges (whitespace-bounded) that take the full pipeline (text spelling a special token).
        """
        direct, combining, space = self._direct_tables()
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (C,)
        ids_at = direct[cps]  # (C,) id, or -1
        fast = ids_at >= 0
        fast[:-1] &= ~combining[cps[1:]]  # a following combining mark may compose with it (NFC): not fast
        for a, b in whole_spans:
            fast[a:b] = False
        other = ~fast & ~space[cps]
        # runs of `other` characters (whitespace ends a run: runs never cross lines)
        edges = np.flatnonzero(np.diff(np.concatenate([[False], other, [False]]).astype(np.int8)))
        run_start, run_end = edges[0::2], edges[1::2]
        runs = [text[a:b] for a, b in zip(run_start.tolist(), run_end.tolist())]
        unique = dict.fromkeys(runs)
        for k, r in enumerate(unique):
            unique[r] = k
        encs = self._tok.encode_batch(list(unique), add_special_tokens=False)
        # the tokens of distinct run k are u_ids[u_first[k] : u_first[k] + u_count[k]], offsets relative to the run
        u_count = np.fromiter((len(e.ids) for e in encs), np.int64, len(encs))
        u_ids = np.fromiter((i for e in encs for i in e.ids), np.int32, int(u_count.sum()))
        u_offs = np.fromiter((o for e in encs for s in e.offsets for o in s), np.int64, 2 * len(u_ids)).reshape(-1, 2)
        u_first = np.cumsum(u_count) - u_count
        run_kind = np.fromiter(map(unique.__getitem__, runs), np.int64, len(runs))  # (R,) distinct run of each run
        per_run = u_count[run_kind]  # (R,) tokens of each run
        # (T_runs,) index into the distinct runs' tokens: u_first[kind] + 0..count-1 for each run, in run order
        rank = np.arange(int(per_run.sum())) - np.repeat(np.cumsum(per_run) - per_run, per_run)
        src = np.repeat(u_first[run_kind], per_run) + rank
        run_pos = np.repeat(run_start, per_run) + u_offs[src, 0]  # (T_runs,) first character of each run token
        run_end = np.repeat(run_start, per_run) + u_offs[src, 1]
        if (np.diff(run_pos) <= 0).any():  # tokens sharing a character (e.g. a Hangul syllable split into jamo)
            fast_pos = np.flatnonzero(fast)
            pos = np.concatenate([fast_pos, run_pos])
            order = np.argsort(pos, kind="stable")  # tokens of one run keep their order
            end = np.concatenate([fast_pos + 1, run_end])
            return np.concatenate([ids_at[fast_pos], u_ids[src]]).astype(np.int32)[order], pos[order], end[order]
        # every token marked at its first character (starts are distinct here), so text order needs no sort
        id_at = np.where(fast, ids_at, -1)  # (C,) int32
        id_at[run_pos] = u_ids[src]
        len_at = fast.astype(np.int32)  # (C,) characters of the token starting here
        len_at[run_pos] = run_end - run_pos
        pos = np.flatnonzero(id_at >= 0)
        return id_at[pos], pos, pos + len_at[pos]

    def _direct_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(direct id per code point or -1, is-combining-mark, is-whitespace) tables, built once per tokenizer."""
        if getattr(self, "_direct", None) is None:
            kinds = _python_char_kinds()
            # isolated by BERT (punctuation, CJK), not removed (unassigned code points in the CJK blocks are), and
            # left alone by every normalization step (NFC, lower-case, NFD, mark removal; no combining mark)
            isolated = ((kinds & (_KIND_BITS["punctuation"] | _KIND_BITS["cjk"])) != 0) & (
                (kinds & (_KIND_BITS["remove"] | _KIND_BITS["unstable"] | _KIND_BITS["combining"])) == 0
            )
            direct = np.where(isolated, np.int32(self.unk_id), np.int32(-1))
            # single-character vocab entries (the dict holds each token's last id, as BERT's vocab dict)
            single = [(ord(t), i) for t, i in self.vocab.items() if len(t) == 1]
            cp = np.fromiter((c for c, _ in single), np.int64, len(single))
            tid = np.fromiter((i for _, i in single), np.int32, len(single))
            hit = isolated[cp]
            direct[cp[hit]] = tid[hit]
            combining = (kinds & _KIND_BITS["combining"]) != 0
            space = (kinds & _KIND_BITS["whitespace"]) != 0
            self._direct = (direct, combining, space)
        return self._direct

    def tokenize(self, text: str) -> list[str]:
        return self.encode(text).tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        unk = self.unk_id
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.vocab_list[i] for i in ids]

    def save_vocabulary(self, path: str | os.PathLike) -> None:
        from nezha.io.atomic import atomic_write_text

        atomic_write_text(path, "".join(t + "\n" for t in self.vocab_list))
