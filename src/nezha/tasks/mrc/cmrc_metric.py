"""The CMRC 2018 reading-comprehension metric, giving the official evaluation script's numbers.

The official script (``cmrc2018_evaluate.py``, v5/v6) scores each question as follows:

* **F1**: both the prediction and each reference are lower-cased, stripped and cut by *mixed segmentation*:
  characters in U+4E00..U+9FA5 become one segment each, the listed punctuation is dropped, and every other run of
  characters (Latin words, digits, spaces, other symbols) goes through NLTK's English word tokenizer. F1 comes from
  the longest common *contiguous* run of segments (not a bag of tokens); the best reference counts.
* **EM**: 1 when the prediction equals some reference after lower-casing, stripping and deleting the listed
  punctuation (whitespace inside is kept).
* Questions missing from the predictions count as 0 and are reported as ``SKIP``; ``TOTAL`` is every question, so
  the denominators never shrink. ``AVERAGE = (EM + F1) / 2``; the three scores are strings with 3 decimals.

Two quirks of the official code are kept on purpose: ``'……'`` is in its punctuation list but characters are compared
one at a time, so a lone ``…`` is never removed; and punctuation is removed *inside* runs without splitting them
(``ω-force`` becomes the single word ``ωforce``).

NLTK without its ``punkt`` data cannot run ``word_tokenize``, and that data cannot be fetched at run time here, so
this module carries its own implementation of NLTK's word tokenizer (the improved Treebank rules of NLTK 3.x,
checked against ``nltk.tokenize.NLTKWordTokenizer`` in the tests). ``word_tokenize`` also cuts a run into sentences
with Punkt first; that only changes tokens when a period followed by a space ends a sentence inside a single
non-Chinese run (``"learning. machine"``): Punkt then splits the period off. Runs are lower-cased before
tokenizing, and Punkt keeps periods after initials, numbers and known abbreviations followed by a lower-case word,
so we treat each run as one sentence; ``segmenter="nltk"`` uses NLTK itself where it and its data are installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nezha.io.text import read_utf8

logger = logging.getLogger("nezha")

# The official punctuation list, in its order. "……" is two characters and so never matches a single character.
CMRC_PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)
_PUNCT = frozenset(p for p in CMRC_PUNCTUATION if len(p) == 1)
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # the official range (CJK Unified Ideographs without later additions)


# ------------------------------------------------------------------------------------ English word tokenizer
def _rules(*pairs: tuple[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(p), r) for p, r in pairs]


_CLOSERS = "\\]\\)}>\"'"  # characters that may follow a sentence-final period
# Applied in order; each inserts spaces around what becomes a token of its own (or rewrites quotes),
# and the result is split on whitespace. Together they are NLTK 3.x's NLTKWordTokenizer.
_OPENING_QUOTES = _rules(
    (r"([«“‘„]|`+)", r" \1 "),
    (r'^"', "``"),
    (r"(``)", r" \1 "),
    (r"([ ([{<])(\"|'')", r"\1 `` "),
    (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 "),  # opening single quote, not a clitic
)
_PUNCTUATION = _rules(
    (r"([^.])(\.)([" + _CLOSERS + "»”’ ]*+)\\s*$", r"\1 \2 \3 "),  # the period ending the text
    (r"([:,])([^\d])", r" \1 \2"),  # commas and colons, except inside numbers (3,000 / 10:30)
    (r"([:,])$", r" \1 "),
    (r"\.{2,}", r" \g<0> "),  # ellipses
    (r"[;@#$%&]", r" \g<0> "),
    (r"[\u2012-\u2015]", r" \g<0> "),  # figure, en and em dashes, horizontal bar
    (r"([^.])(\.)([" + _CLOSERS + r"]*)\s*$", r"\1 \2\3 "),
    (r"[?!]", r" \g<0> "),
    (r"([^'])' ", r"\1 ' "),
    (r"\*", r" \g<0> "),
    (r"[\][(){}<>]", r" \g<0> "),  # brackets
    (r"--", r" -- "),
)
_CLOSING_QUOTES = _rules(
    (r"([»”’])", r" \1 "),
    (r"''", " '' "),
    (r'"', " '' "),
    (r"\s+", " "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),  # clitics: John's, I'm, he'd, and a closing '
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
)
# Words that the Penn Treebank writes as two tokens (cannot -> can not, gonna -> gon na).
_CONTRACTIONS = _rules(
    *((rf"(?i)\b({a})({b})\b", r" \1 \2 ") for a, b in (
        ("can", "not"), ("d", "'ye"), ("gim", "me"), ("gon", "na"), ("got", "ta"), ("lem", "me"), ("more", "'n"),
    )),
    (r"(?i)\b(wan)(na)(?=\s)", r" \1 \2 "),
    (r"(?i) ('t)(is)\b", r" \1 \2 "),
    (r"(?i) ('t)(was)\b", r" \1 \2 "),
)


def english_word_tokenize(text: str) -> list[str]:
    """Tokenize one sentence the way ``nltk.tokenize.NLTKWordTokenizer().tokenize`` does (quotes become `` and '')."""
    for pattern, repl in _OPENING_QUOTES:
        text = pattern.sub(repl, text)
    for pattern, repl in _PUNCTUATION:
        text = pattern.sub(repl, text)
    text = f" {text} "
    for pattern, repl in _CLOSING_QUOTES:
        text = pattern.sub(repl, text)
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    return text.split()


def _nltk_word_tokenize() -> Callable[[str], list[str]]:
    try:
        import nltk
    except ImportError:
        raise ValueError("segmenter 'nltk' needs the nltk package (pip install nltk)") from None
    try:
        nltk.word_tokenize("a. b")
    except LookupError:
        raise ValueError("segmenter 'nltk' needs NLTK's punkt data (nltk.download('punkt_tab'))") from None
    return nltk.word_tokenize


SEGMENTERS = ("builtin", "nltk")


# ------------------------------------------------------------------------------------ segmentation and scores
def mixed_segmentation(text: str, remove_punctuation: bool = True,
                       word_tokenize: Callable[[str], list[str]] = english_word_tokenize) -> list[str]:
    """Chinese characters one by one, other runs as English words; listed punctuation dropped (or kept as segments)."""
    text = text.lower().strip()
    segments: list[str] = []
    run = ""
    for ch in text:
        if remove_punctuation and ch in _PUNCT:
            continue  # dropped without ending the current run
        if _CJK.match(ch) or ch in _PUNCT:
            if run:
                segments.extend(word_tokenize(run))
                run = ""
            segments.append(ch)
        else:
            run += ch
    if run:
        segments.extend(word_tokenize(run))
    return segments


def strip_punctuation(text: str) -> str:
    """Lower-case, strip, then delete the listed punctuation (the official EM normalisation)."""
    return "".join(ch for ch in text.lower().strip() if ch not in _PUNCT)


def longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest contiguous run of segments shared by ``a`` and ``b``."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def f1_score(answers: Iterable[str], prediction: str,
             word_tokenize: Callable[[str], list[str]] = english_word_tokenize) -> float:
    """Best F1 over the references (0.0 when nothing is shared)."""
    pred = mixed_segmentation(prediction, word_tokenize=word_tokenize)
    best = 0.0
    for answer in answers:
        ref = mixed_segmentation(answer, word_tokenize=word_tokenize)
        common = longest_common_run(ref, pred)
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact_match(answers: Iterable[str], prediction: str) -> int:
    pred = strip_punctuation(prediction)
    return int(any(strip_punctuation(a) == pred for a in answers))


# ------------------------------------------------------------------------------------ files
@dataclass
class CmrcResult:
    f1: float  # percent
    em: float  # percent
    total: int
    skip: int
    file: str = ""
    skipped_ids: list[str] = field(default_factory=list)

    @property
    def average(self) -> float:
        return (self.em + self.f1) * 0.5

    def to_dict(self) -> dict:
        """The official output: the same keys, order and formatting."""
        return {"AVERAGE": f"{self.average:.3f}", "F1": f"{self.f1:.3f}", "EM": f"{self.em:.3f}",
                "TOTAL": self.total, "SKIP": self.skip, "FILE": self.file}


def iter_questions(dataset: dict | list, source: str = "dataset") -> Iterable[tuple[str, list[str]]]:
    """Yield ``(id, reference texts)`` from SQuAD-style or original-style CMRC JSON, as the official v6 script."""
    articles = dataset["data"] if isinstance(dataset, dict) and "data" in dataset else dataset
    if not isinstance(articles, list):
        raise ValueError(f"{source}: expected a SQuAD-style object with a 'data' list")
    for a, article in enumerate(articles):
        paragraphs = article["paragraphs"] if "paragraphs" in article else [article]
        for paragraph in paragraphs:
            for q in paragraph.get("qas", []):
                qid = q.get("id", q.get("query_id"))
                if qid is None:
                    raise ValueError(f"{source}: a question in article {a} has no 'id'")
                answers = [x["text"] if isinstance(x, dict) else x for x in q.get("answers", [])]
                if not answers:
                    raise ValueError(f"{source}: question {qid} has no reference answers")
                yield str(qid), [str(x) for x in answers]


def evaluate(dataset: dict | list, predictions: dict, source: str = "dataset",
             segmenter: str = "builtin") -> CmrcResult:
    """Score ``predictions`` (``{id: answer}``) against every question of ``dataset``."""
    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {segmenter!r}")
    tokenize = english_word_tokenize if segmenter == "builtin" else _nltk_word_tokenize()
    f1 = em = 0.0
    total = 0
    skipped: list[str] = []
    non_string = 0
    for qid, answers in iter_questions(dataset, source):
        total += 1
        if qid not in predictions:
            skipped.append(qid)
            continue
        pred = predictions[qid]
        if not isinstance(pred, str):
            non_string += 1  # the official script scores str(value); so do we, but say so
        pred = str(pred)
        f1 += f1_score(answers, pred, tokenize)
        em += exact_match(answers, pred)
    if total == 0:
        raise ValueError(f"{source}: no questions found")
    for qid in skipped[:20]:
        logger.warning("Unanswered question: %s", qid)
    if len(skipped) > 20:
        logger.warning("... and %d more unanswered questions", len(skipped) - 20)
    if non_string:
        logger.warning("%d predictions were not strings and were scored as str(value)", non_string)
    return CmrcResult(100.0 * f1 / total, 100.0 * em / total, total, len(skipped), skipped_ids=skipped)


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    text = read_utf8(path, f"{what} file")
    if not text.strip():
        raise ValueError(f"{path}: {what} file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: {what} file is not valid JSON ({e})") from None


def evaluate_files(data_file: str | os.PathLike, prediction_file: str | os.PathLike,
                   segmenter: str = "builtin") -> CmrcResult:
    """Read the dataset and a ``{id: answer}`` JSON file and score them; FILE is the prediction path as given."""
    dataset = _load_json(Path(data_file), "dataset")
    predictions = _load_json(Path(prediction_file), "prediction")
    if not isinstance(predictions, dict):
        raise ValueError(
            f"{prediction_file}: predictions must be a JSON object {{question id: answer text}}, "
            f"got {type(predictions).__name__}"
        )
    result = evaluate(dataset, predictions, source=str(data_file), segmenter=segmenter)
    result.file = str(prediction_file)
    known = {qid for qid, _ in iter_questions(dataset, str(data_file))}
    extra = [k for k in predictions if k not in known]
    if extra:
        logger.warning("%s: %d predictions have ids not in the dataset (ignored), e.g. %s",
                       prediction_file, len(extra), extra[0])
    return result
