"""Fine-tuning and evaluation for text classification, sequence labelling (NER, optional CRF) and extractive
reading comprehension (SQuAD / CMRC 2018), on the shared training machinery (precision, DDP, LR schedule, progress,
metrics log and curves).

One process::

    nezha finetune --task classification --data_format chnsenticorp --train_file train.tsv --eval_file dev.tsv \\
        --model ./nezha-base --output_dir out/clf

Several GPUs: ``torchrun --nproc_per_node 8 -m nezha finetune ...`` (same flags; the batch size is per process).

The output folder holds ``model/`` (a ``from_pretrained`` folder with ``vocab.txt``; the task settings are kept in
``config.json`` under ``extra``), ``metrics.json`` (evaluation and the trivial baseline), the predictions
(``predictions.tsv``; NER in the input's format; ``predictions.json`` + ``nbest_predictions.json`` for MRC),
``confusion_matrix.png`` (classification), and the training log ``metrics.jsonl`` / ``metrics.png``.

Checkpoints (``--save_steps``, SIGTERM, ``--stop_at_step``) go to ``checkpoints/step-NNNNNNNN/`` through the same
:class:`~nezha.train.checkpoint.CheckpointManager` as pretraining: weights, optimizer, schedule, grad scaler, every
rank's RNG states and the data position. ``--resume auto|PATH`` continues one so that the remaining steps give the
same losses as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.io.atomic import atomic_write_text
from nezha.model.config import PRESETS, NezhaConfig
from nezha.settings import arg

logger = logging.getLogger("nezha")

TASKS = ("classification", "ner", "mrc")


@dataclass
class FinetuneArgs:
    """Settings of ``nezha finetune`` (each field is a flag)."""

    task: Literal["classification", "ner", "mrc"] = arg("classification", "which task head and data to use")
    output_dir: str = arg("", "folder for the model, predictions, metrics and curves")
    train_file: str = arg("", "training data")
    eval_file: str = arg("", "labelled data evaluated after training (and after each epoch)")
    model: str = arg("", "from_pretrained folder to start from (config.json + weights + vocab.txt)")
    from_scratch: bool = arg(False, "start from a randomly initialised model (with --preset and --vocab_file)")
    preset: str = arg("tiny", f"model size with --from_scratch: one of {sorted(PRESETS)}")
    vocab_file: str = arg("", "vocab.txt (default: the model folder's)")
    do_lower_case: bool = arg(True, "lower-case text before WordPiece (False for the original CMRC script)")
    data_format: str = arg("auto", "classification: lcqmc|chnsenticorp|xnli|tsv|csv|jsonl; ner: bio|tsv|jsonl; "
                                   "mrc: squad; auto picks from the task and file name")
    text_a_column: str = arg("text_a", "tsv/csv/jsonl: column (header name, or 0-based index without header)")
    text_b_column: str = arg("", "tsv/csv/jsonl: second-text column for sentence pairs")
    label_column: str = arg("label", "tsv/csv/jsonl: label column")
    header: bool = arg(True, "tsv/csv: the first line names the columns")
    labels: list[str] = arg([], "label list in id order (default: sorted labels of the training file)")
    use_crf: bool = arg(False, "ner: CRF layer on top of the token classifier")
    max_seq_length: int = arg(128, "tokens per sequence (windows for long NER sentences and MRC contexts)")
    doc_stride: int = arg(128, "mrc: tokens between window starts")
    max_query_length: int = arg(64, "mrc: question tokens kept")
    n_best_size: int = arg(20, "mrc: start/end candidates per window and answers in nbest_predictions.json")
    max_answer_length: int = arg(30, "mrc: longest answer in tokens")
    train_batch_size: int = arg(32, "examples per optimizer step per process")
    eval_batch_size: int = arg(64, "examples per forward pass when evaluating")
    num_train_epochs: float = arg(3.0, "passes over the training data")
    max_steps: int = arg(0, "stop after this many steps (overrides the epochs when > 0)")
    learning_rate: float = arg(3e-5, "peak learning rate")
    warmup_proportion: float = arg(0.1, "share of the steps with linear warm-up")
    weight_decay: float = arg(0.01, "decoupled weight decay (not on LayerNorm/bias)")
    optimizer: str = arg("adamw", "adamw or lamb")
    max_grad_norm: float = arg(1.0, "global-norm gradient clipping (0: off)")
    precision: str = arg("auto", "auto|fp32|bf16|fp16")
    device: str = arg("auto", "auto|cpu|cuda")
    seed: int = arg(42, "seed for initialisation, dropout and data order")
    logging_steps: int = arg(20, "log the training loss every this many steps")
    eval_every_epoch: bool = arg(True, "evaluate on --eval_file after each epoch (else only at the end)")
    max_train_examples: int = arg(0, "use only the first N training examples (0: all)")
    max_eval_examples: int = arg(0, "use only the first N evaluation examples (0: all)")
    # Model size overrides with --from_scratch, for quick experiments.
    num_hidden_layers: int = arg(0, "with --from_scratch: override the preset's layer count")
    hidden_size: int = arg(0, "with --from_scratch: override the preset's hidden size")
    # checkpoints
    save_steps: int = arg(0, "save a checkpoint under output_dir/checkpoints every this many steps (0: never; "
                             "SIGTERM and --stop_at_step still save one)")
    keep_checkpoints: int = arg(3, "keep the last this many checkpoints")
    resume: str = arg("never", "auto (the latest checkpoint in output_dir/checkpoints, if any), never, or a "
                               "checkpoint folder")
    stop_at_step: int | None = arg(None, "save a checkpoint and stop at this step (for time-limited jobs)")

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.task!r}")
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        if not self.train_file:
            raise ValueError("--train_file is required")
        if self.from_scratch == bool(self.model):
            raise ValueError("give either --model FOLDER or --from_scratch (with --preset and --vocab_file)")
        if self.from_scratch and not self.vocab_file:
            raise ValueError("--from_scratch needs --vocab_file")
        if self.from_scratch and self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.use_crf and self.task != "ner":
            raise ValueError("--use_crf applies to --task ner only")
        for name in ("max_seq_length", "train_batch_size", "eval_batch_size", "doc_stride", "max_query_length",
                     "n_best_size", "max_answer_length", "logging_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_proportion < 1:
            raise ValueError(f"--warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("--num_train_epochs or --max_steps must be positive")
        if self.save_steps < 0:
            raise ValueError(f"--save_steps must be >= 0, got {self.save_steps}")
        if self.keep_checkpoints <= 0:
            raise ValueError(f"--keep_checkpoints must be positive, got {self.keep_checkpoints}")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ValueError(f"--stop_at_step must be positive, got {self.stop_at_step}")


@dataclass
class EvalSettings:
    """What evaluation and prediction need besides the model; stored in ``config.extra["finetune"]``."""

    task: str
    data_format: str = "auto"
    max_seq_length: int = 128
    do_lower_case: bool = True
    doc_stride: int = 128
    max_query_length: int = 64
    n_best_size: int = 20
    max_answer_length: int = 30
    text_a_column: str = "text_a"
    text_b_column: str = ""
    label_column: str = "label"
    header: bool = True
    eval_batch_size: int = 64

    @classmethod
    def from_args(cls, a: FinetuneArgs) -> EvalSettings:
        return cls(**{k: getattr(a, k) for k in cls.__dataclass_fields__})


# ==================================================================================================== tasks
def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _mask(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)


class ClassificationTask:
    """Sentence and sentence-pair classification from the [CLS] vector."""

    name = "classification"

    def __init__(self, s: EvalSettings, tokenizer: NezhaTokenizer, labels: list[str] | None = None):
        self.s, self.tok, self.labels = s, tokenizer, labels

    def _format(self, path: str) -> str:
        if self.s.data_format != "auto":
            return self.s.data_format
        p = path.lower()
        return "jsonl" if p.endswith((".jsonl", ".json")) else "csv" if p.endswith(".csv") else "tsv"

    def read(self, path: str, with_labels: bool = True, limit: int = 0):
        from nezha.tasks.classification.reader import PRESET_COLUMNS, Columns, read_examples

        fmt = self._format(path)
        cols = PRESET_COLUMNS.get(fmt) or Columns(self.s.text_a_column, self.s.text_b_column or None,
                                                  self.s.label_column or None, self.s.header)
        examples = read_examples(path, fmt, cols, with_labels=with_labels)
        return examples[:limit] if limit else examples

    def fit_labels(self, train) -> list[str]:
        from nezha.tasks.classification.reader import label_list

        self.labels = self.labels or label_list(train)
        return self.labels

    def features(self, examples, with_labels: bool = True) -> list[dict]:
        from nezha.tasks.classification.reader import encode_examples, label_ids

        enc = encode_examples(self.tok, examples, self.s.max_seq_length)
        ids = label_ids(examples, self.labels) if with_labels else [0] * len(examples)
        return [{"input_ids": e.input_ids, "token_type_ids": e.token_type_ids, "label": y} for e, y in zip(enc, ids)]

    def collate(self, feats: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [f["input_ids"] for f in feats]
        return {"input_ids": _pad(rows, self.tok.pad_id), "attention_mask": _mask(rows),
                "token_type_ids": _pad([f["token_type_ids"] for f in feats], 0),
                "labels": torch.tensor([f["label"] for f in feats])}

    def model_class(self, config: NezhaConfig):
        from nezha.model.modeling import NezhaForSequenceClassification

        return NezhaForSequenceClassification

    @torch.no_grad()
    def run_model(self, model, feats) -> list[int]:
        preds = []
        for batch in _batches(feats, self.s.eval_batch_size, self.collate, model):
            batch.pop("labels")
            preds.extend(model(**batch).logits.argmax(-1).tolist())
        return preds

    def evaluate(self, model, examples, out_dir: Path | None, train=None) -> dict:
        from nezha.tasks.classification.metrics import classification_report, majority_baseline, plot_confusion_matrix
        from nezha.tasks.classification.reader import label_ids

        preds = self.run_model(model, self.features(examples))
        gold = label_ids(examples, self.labels)
        report = classification_report(gold, preds, self.labels)
        if train is not None:
            report["baseline_majority"] = majority_baseline(label_ids(train, self.labels), gold, self.labels)
        if out_dir is not None:
            plot_confusion_matrix(report["confusion_matrix"], self.labels, out_dir / "confusion_matrix.png")
            self.write_predictions(out_dir / "predictions.tsv", examples, preds)
        report["primary"] = report["accuracy"]
        return report

    def predict(self, model, examples, out_dir: Path) -> Path:
        preds = self.run_model(model, self.features(examples, with_labels=False))
        return self.write_predictions(out_dir / "predictions.tsv", examples, preds)

    def write_predictions(self, path: Path, examples, preds) -> Path:
        def clean(t):
            return (t or "").replace("\t", " ").replace("\n", " ")

        lines = ["guid\tprediction\tlabel\ttext_a\ttext_b"]
        lines += [f"{e.guid}\t{self.labels[p]}\t{e.label or ''}\t{clean(e.text_a)}\t{clean(e.text_b)}"
                  for e, p in zip(examples, preds)]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path


class NerTask:
    """Token classification with BIO tags; the first piece of each word carries its tag."""

    name = "ner"

    def __init__(self, s: EvalSettings, tokenizer: NezhaTokenizer, labels: list[str] | None = None):
        self.s, self.tok, self.labels = s, tokenizer, labels

    def _format(self, path: str) -> str:
        from nezha.tasks.ner.reader import detect_format

        return detect_format(path) if self.s.data_format == "auto" else self.s.data_format

    def read(self, path: str, with_labels: bool = True, limit: int = 0):
        from nezha.tasks.ner.reader import read_sentences

        sents = read_sentences(path, self._format(path), with_tags=with_labels)
        return sents[:limit] if limit else sents

    def fit_labels(self, train) -> list[str]:
        from nezha.tasks.ner.reader import check_tags, tag_list

        self.labels = self.labels or tag_list(train)
        check_tags(train, self.labels)
        return self.labels

    def features(self, sentences, with_labels: bool = True):
        from nezha.tasks.ner.reader import check_tags, make_windows

        if with_labels:
            check_tags(sentences, self.labels)
        windows, empty = make_windows(self.tok, sentences, self.labels if with_labels else None,
                                      self.s.max_seq_length)
        if empty:
            logger.warning("%d words produce no WordPiece token (e.g. control characters); they are predicted O "
                           "and still counted in the metrics", empty)
        return windows

    def collate(self, windows) -> dict[str, torch.Tensor]:
        rows = [w.input_ids for w in windows]
        return {"input_ids": _pad(rows, self.tok.pad_id), "attention_mask": _mask(rows),
                "labels": _pad([w.labels for w in windows], -100),
                "label_mask": _pad([w.label_mask for w in windows], 0)}

    def model_class(self, config: NezhaConfig):
        from nezha.model.crf import token_classifier_class

        return token_classifier_class(config)

    @torch.no_grad()
    def run_model(self, model, windows) -> list[list[int]]:
        from nezha.model.crf import argmax_decode

        out = []
        for batch in _batches(windows, self.s.eval_batch_size, self.collate, model):
            mask = batch.pop("label_mask")
            batch.pop("labels")
            logits = model(**batch).logits
            out.extend(model.decode(logits, mask) if hasattr(model, "crf") else argmax_decode(logits, mask))
        return out

    def evaluate(self, model, sentences, out_dir: Path | None, train=None) -> dict:
        from nezha.tasks.ner.metrics import ner_report
        from nezha.tasks.ner.reader import collect_predictions

        windows = self.features(sentences)
        pred = collect_predictions(sentences, windows, self.run_model(model, windows), self.labels)
        gold = [s.tags for s in sentences]
        report = ner_report(gold, pred)
        report["baseline_all_o"] = ner_report(gold, [["O"] * len(g) for g in gold])
        if out_dir is not None:
            self.write_predictions(out_dir, sentences, pred, sentences[0].guid)
        report["primary"] = report["f1"]
        return report

    def predict(self, model, sentences, out_dir: Path) -> Path:
        from nezha.tasks.ner.reader import collect_predictions

        windows = self.features(sentences, with_labels=False)
        pred = collect_predictions(sentences, windows, self.run_model(model, windows), self.labels)
        return self.write_predictions(out_dir, sentences, pred, sentences[0].guid)

    def write_predictions(self, out_dir: Path, sentences, pred, guid: str) -> Path:
        from nezha.tasks.ner.reader import write_predictions

        source = guid.rsplit(":", 1)[0]
        fmt = self._format(source)
        path = out_dir / f"predictions.{ {'bio': 'txt', 'tsv': 'tsv', 'jsonl': 'jsonl'}[fmt] }"
        write_predictions(path, sentences, pred, fmt)
        return path


class MrcTask:
    """Extractive QA: start/end logits per token, best span over all windows of a context."""

    name = "mrc"

    def __init__(self, s: EvalSettings, tokenizer: NezhaTokenizer, labels=None):
        self.s, self.tok, self.labels = s, tokenizer, None

    def read(self, path: str, with_labels: bool = True, limit: int = 0, for_training: bool = False):
        from nezha.tasks.mrc.reader import read_squad

        ex = read_squad(path, for_training=for_training)
        return ex[:limit] if limit else ex

    def fit_labels(self, train):
        return None

    def features(self, examples, for_training: bool = False):
        from nezha.tasks.mrc.reader import make_features

        return make_features(self.tok, examples, self.s.max_seq_length, self.s.doc_stride, self.s.max_query_length,
                             for_training=for_training)

    def collate(self, feats) -> dict[str, torch.Tensor]:
        rows = [f.input_ids for f in feats]
        return {"input_ids": _pad(rows, self.tok.pad_id), "attention_mask": _mask(rows),
                "token_type_ids": _pad([f.token_type_ids for f in feats], 0),
                "start_positions": torch.tensor([f.start_position for f in feats]),
                "end_positions": torch.tensor([f.end_position for f in feats])}

    def model_class(self, config: NezhaConfig):
        from nezha.model.modeling import NezhaForQuestionAnswering

        return NezhaForQuestionAnswering

    @torch.no_grad()
    def answers(self, model, examples):
        from nezha.tasks.mrc.reader import best_answers

        feats = self.features(examples)
        starts, ends = [], []
        for batch in _batches(feats, self.s.eval_batch_size, self.collate, model):
            batch.pop("start_positions")
            batch.pop("end_positions")
            out = model(**batch)
            starts.extend(out.start_logits.float().cpu().numpy())
            ends.extend(out.end_logits.float().cpu().numpy())
        return best_answers(examples, feats, starts, ends, self.s.n_best_size, self.s.max_answer_length)

    def evaluate(self, model, examples, out_dir: Path | None, train=None) -> dict:
        from nezha.tasks.mrc.cmrc_metric import evaluate as cmrc_evaluate

        preds, nbest = self.answers(model, examples)
        dataset = {"data": [{"paragraphs": [{"qas": [{"id": e.qid, "answers": e.answers}]} for e in examples]}]}
        result = cmrc_evaluate(dataset, preds)
        report = {k.lower(): v for k, v in result.to_dict().items() if k != "FILE"}
        report.update(em=result.em, f1=result.f1, average=result.average)
        if train is not None:
            # trivial baseline: the first characters of the context, as many as the median training answer
            lengths = sorted(len(e.context[e.answer_start:e.answer_end]) for e in train)
            n = lengths[len(lengths) // 2]
            base = cmrc_evaluate(dataset, {e.qid: e.context[:n] for e in examples})
            report["baseline_context_prefix"] = {"chars": n, "em": base.em, "f1": base.f1}
        if out_dir is not None:
            self.write_predictions(out_dir, preds, nbest)
        report["primary"] = result.f1
        return report

    def predict(self, model, examples, out_dir: Path) -> Path:
        preds, nbest = self.answers(model, examples)
        return self.write_predictions(out_dir, preds, nbest)

    def write_predictions(self, out_dir: Path, preds, nbest) -> Path:
        atomic_write_text(out_dir / "predictions.json", json.dumps(preds, ensure_ascii=False, indent=1) + "\n")
        atomic_write_text(out_dir / "nbest_predictions.json", json.dumps(nbest, ensure_ascii=False, indent=1) + "\n")
        return out_dir / "predictions.json"


TASK_CLASSES = {"classification": ClassificationTask, "ner": NerTask, "mrc": MrcTask}


def _batches(feats, size: int, collate, model):
    """Evaluation batches on the model's device (callers run under ``torch.no_grad``)."""
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(feats), size):
        yield {k: v.to(device) for k, v in collate(feats[i:i + size]).items()}


# ==================================================================================================== model I/O
def load_for_eval(model_dir: str | os.PathLike, device: str = "auto"):
    """A fine-tuned folder -> (task object, model in eval mode). The task settings come from ``config.json``."""
    model_dir = Path(model_dir)
    config = NezhaConfig.from_json(model_dir / "config.json")
    raw = config.extra.get("finetune")
    if not raw:
        raise ValueError(f"{model_dir}: not a fine-tuned folder (config.json has no extra.finetune settings); "
                         "run `nezha finetune` first")
    settings = EvalSettings(**raw)
    vocab = model_dir / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{model_dir}: no vocab.txt")
    tokenizer = NezhaTokenizer.from_file(vocab, do_lower_case=settings.do_lower_case)
    labels = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else None
    task = TASK_CLASSES[settings.task](settings, tokenizer, labels)
    model = task.model_class(config).from_pretrained(model_dir)
    dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    return task, model.to(dev).eval()


def _build_model(args: FinetuneArgs, task, labels: list[str] | None, tokenizer: NezhaTokenizer):
    label_kw = {} if labels is None else {"num_labels": len(labels), "id2label": dict(enumerate(labels))}
    extra = {"finetune": asdict(EvalSettings.from_args(args))}
    if args.use_crf:
        extra["use_crf"] = True
    if args.from_scratch:
        sizes = {k: v for k, v in (("num_hidden_layers", args.num_hidden_layers), ("hidden_size", args.hidden_size))
                 if v}
        if "hidden_size" in sizes:
            sizes["intermediate_size"] = 4 * sizes["hidden_size"]
        config = NezhaConfig.preset(args.preset, vocab_size=len(tokenizer), extra=extra, **sizes, **label_kw)
        return task.model_class(config)(config)
    config = NezhaConfig.from_json(Path(args.model) / "config.json")
    if config.vocab_size < len(tokenizer):
        raise ValueError(f"{args.model}: vocab_size {config.vocab_size} is smaller than the vocab file "
                         f"({len(tokenizer)} tokens)")
    merged = {**{k: v for k, v in config.extra.items() if k not in ("finetune", "use_crf")}, **extra}
    cls = task.model_class(NezhaConfig.from_dict({**config.to_dict(), "extra": merged}))
    return cls.from_pretrained(args.model, extra=merged, **label_kw)


# ==================================================================================================== training
def finetune(args: FinetuneArgs) -> dict:
    """Train (or resume), evaluate, write everything to ``args.output_dir``; returns the final metrics.

    ``metrics["finished"]`` is False when the run stopped early (SIGTERM or ``--stop_at_step``): then a checkpoint
    was saved and neither the model nor the evaluation was written; ``metrics["stopped_by_signal"]`` says which.
    """
    from nezha.train.checkpoint import CheckpointManager
    from nezha.train.distributed import EpochSampler, barrier, cleanup, init_distributed, wrap_model
    from nezha.train.loop import Precision, ProgressBar, StopSignal, check_finite_weights, train_step
    from nezha.train.optim import build_optimizer
    from nezha.train.run_log import MetricsLogger
    from nezha.train.schedule import LRSchedule

    out = Path(args.output_dir)
    info = init_distributed(args.device)
    try:
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        vocab = args.vocab_file or str(Path(args.model) / "vocab.txt")
        tokenizer = NezhaTokenizer.from_file(vocab, do_lower_case=args.do_lower_case)
        settings = EvalSettings.from_args(args)
        task = TASK_CLASSES[args.task](settings, tokenizer, list(args.labels) or None)
        if args.task == "mrc":
            train = task.read(args.train_file, limit=args.max_train_examples, for_training=True)
        else:
            train = task.read(args.train_file, limit=args.max_train_examples)
        labels = task.fit_labels(train)
        evalset = task.read(args.eval_file, limit=args.max_eval_examples) if args.eval_file else None
        train_feats = task.features(train, for_training=True) if args.task == "mrc" else task.features(train)
        logger.info("%s: %d training examples -> %d sequences%s", args.task, len(train), len(train_feats),
                    f"; labels {labels}" if labels else "")

        model = _build_model(args, task, labels, tokenizer)
        engine = wrap_model(model, info, "ddp")
        precision = Precision.resolve(args.precision, info.device)
        scaler = precision.grad_scaler()
        optimizer = build_optimizer(model, args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay)
        sampler = EpochSampler(len(train_feats), batch_size=args.train_batch_size, accum=1, rank=info.rank,
                               world_size=info.world_size, seed=args.seed)
        total = args.max_steps or max(1, math.ceil(args.num_train_epochs * sampler.steps_per_epoch))
        schedule = LRSchedule(optimizer, warmup=int(args.warmup_proportion * total), total=total,
                              peak=args.learning_rate)
        stateful = {"schedule": schedule, "scaler": scaler}
        # What a checkpoint must share with this run to continue it exactly (the manager adds the world size; a
        # different model size fails on the weights' shapes).
        layout = {"task": args.task, "labels": labels, "use_crf": args.use_crf, "max_seq_length": args.max_seq_length,
                  "train_sequences": len(train_feats), "train_batch_size": args.train_batch_size, "seed": args.seed,
                  "total_steps": total}
        manager = CheckpointManager(out / "checkpoints", info, keep=args.keep_checkpoints)
        resume_from = manager.resolve(args.resume)
        start, running, seen = 0, 0.0, 0
        if resume_from is not None:
            meta = manager.load(resume_from, engine, optimizer, stateful, expect=layout)
            start = int(meta["step"])
            running, seen = float(meta["loss_window"][0]), int(meta["loss_window"][1])
            if info.is_main:
                logger.info("resumed from %s at step %d of %d", resume_from, start, total)
        elif info.is_main and manager.latest() is not None:
            logger.warning("%s holds checkpoints of an earlier run; starting afresh (--resume auto would continue "
                           "the latest)", manager.directory)
        end = min(total, args.stop_at_step or total)

        log = MetricsLogger(out, enabled=info.is_main, tensorboard=False,
                            resume_step=start if resume_from is not None else None)
        history = [{k: v for k, v in r.items() if k != "split"} for r in log.records if r["split"] == "eval"]
        bar = ProgressBar(total, initial=start, enabled=info.is_main, desc=f"finetune {args.task}")

        uses_label_mask = hasattr(model, "crf")

        def loss_fn(engine_module, batch):
            if not uses_label_mask:
                batch.pop("label_mask", None)  # the plain token classifier ignores -100 labels by itself
            batch = {k: v.to(info.device) for k, v in batch.items()}
            loss = engine_module(**batch).loss
            return loss, {"loss": loss.detach()}

        def save(s: int) -> Path:
            check_finite_weights(engine, s)  # never write a checkpoint that would resume into garbage
            epoch, in_epoch = sampler.position(s)
            # The partly filled logging window rides along, so the first loss logged after resume is the same too.
            return manager.save(s, engine, optimizer, stateful,
                                meta={**layout, "epoch": epoch, "step_in_epoch": in_epoch,
                                      "loss_window": [running, seen]})

        step, stopped = start, False
        with StopSignal() as stop:
            while step < end:
                if _stop_requested(stop, info):  # every rank stops at the same step
                    stopped = True
                    break
                engine.train()
                lr = schedule.apply()
                mbs = [task.collate([train_feats[i] for i in idx]) for idx, _ in sampler.micro_batches(step)]
                res = train_step(engine, mbs, loss_fn, optimizer, scaler, precision,
                                 max_grad_norm=args.max_grad_norm, step=step)
                schedule.step()
                step += 1
                running += res.stats["loss"]
                seen += 1
                bar.update(1, loss=res.stats["loss"], lr=lr)
                if step % args.logging_steps == 0 or step == total:
                    log.log(step, "train", loss=running / seen, lr=lr, grad_norm=res.grad_norm)
                    running, seen = 0.0, 0
                epoch_end = step % sampler.steps_per_epoch == 0
                if evalset is not None and args.eval_every_epoch and epoch_end and step != total and info.is_main:
                    rep = task.evaluate(model, evalset, None)
                    log.log(step, "eval", **_scalars(rep))
                    history.append({"step": step, **_scalars(rep)})
                    bar.write(f"step {step}: eval {_scalars(rep)}")
                if args.save_steps and step % args.save_steps == 0 and step < end:
                    save(step)
        bar.close()
        finished = step >= total
        if not finished:  # SIGTERM or --stop_at_step
            path = save(step)
            if info.is_main:
                why = "stop signal received" if stopped else f"--stop_at_step {args.stop_at_step}"
                logger.info("%s: saved %s at step %d of %d; continue with --resume auto", why, path, step, total)

        metrics: dict = {"task": args.task, "steps": total, "step": step, "finished": finished,
                         "stopped_by_signal": stopped, "train_examples": len(train),
                         "train_sequences": len(train_feats)}
        if info.is_main:
            if finished:
                model.save_pretrained(out / "model", tokenizer_vocab=vocab)
            if finished and evalset is not None:
                rep = task.evaluate(model, evalset, out, train=train)
                log.log(total, "eval", **_scalars(rep))
                metrics["eval"] = rep
                metrics["eval_file"] = args.eval_file
                metrics["history"] = history
            log.write_csv()
            acc_keys = {"classification": ("accuracy", "macro_f1"), "ner": ("f1",), "mrc": ()}[args.task]
            log.plot(out / "training_curves.png", keys=("loss",), acc_keys=acc_keys)
            log.close()
            atomic_write_text(out / "metrics.json", json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")
            atomic_write_text(out / "finetune_args.json", json.dumps(asdict(args), ensure_ascii=False, indent=2)
                              + "\n")
        barrier()
        return metrics
    finally:
        cleanup()


def _stop_requested(stop, info) -> bool:
    """Whether any rank got a stop signal (one small all-reduce per step when there are several processes)."""
    if not info.distributed:
        return stop.requested
    from nezha.train.distributed import all_reduce_sum

    flag = torch.tensor([float(stop.requested)], device=info.device)
    return all_reduce_sum(flag).item() > 0


def _scalars(report: dict) -> dict[str, float]:
    return {k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("total", "skip")}


# ==================================================================================================== eval/predict
def evaluate_folder(model_dir: str, data_file: str, output_dir: str, device: str = "auto", limit: int = 0) -> dict:
    """Score a fine-tuned folder on labelled data; writes predictions and ``metrics.json`` to ``output_dir``."""
    task, model = load_for_eval(model_dir, device)
    data = task.read(data_file, limit=limit)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = task.evaluate(model, data, out)
    report["eval_file"] = data_file
    atomic_write_text(out / "metrics.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return report


def predict_folder(model_dir: str, data_file: str, output_dir: str, device: str = "auto") -> Path:
    """Write predictions for (possibly unlabelled) data."""
    task, model = load_for_eval(model_dir, device)
    data = task.read(data_file, with_labels=False)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return task.predict(model, data, out)
