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

The tasks (reading, features, evaluation, predictions) live in :mod:`nezha.tasks`; this module is the task-agnostic
driver: read data, build the model, the optimizer and schedule, resume, loop, then save and evaluate.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.io.atomic import atomic_write_text
from nezha.model.config import PRESETS, NezhaConfig
from nezha.settings import arg
from nezha.tasks.common import Task, TaskSettings
from nezha.tasks.finetuned import make_task

logger = logging.getLogger("nezha")


@dataclass(kw_only=True)
class FinetuneArgs(TaskSettings):
    """Settings of ``nezha finetune`` (each field is a flag); the inherited :class:`TaskSettings` go with the model."""

    output_dir: str = arg(help="folder for the model, predictions, metrics and curves")
    train_file: str = arg(help="training data")
    eval_file: str = arg("", "labelled data evaluated after training (and after each epoch)")
    model: str = arg("", "from_pretrained folder to start from (config.json + weights + vocab.txt)")
    from_scratch: bool = arg(False, "start from a randomly initialised model (with --preset and --vocab_file)")
    preset: str = arg("tiny", f"model size with --from_scratch: one of {sorted(PRESETS)}")
    vocab_file: str = arg("", "vocab.txt (default: the model folder's)")
    labels: list[str] = arg([], "label list in id order (default: sorted labels of the training file)")
    use_crf: bool = arg(False, "ner: CRF layer on top of the token classifier")
    train_batch_size: int = arg(32, "examples per optimizer step per process")
    num_train_epochs: float = arg(3.0, "passes over the training data")
    max_steps: int = arg(0, "stop after this many steps (overrides the epochs when > 0)")
    learning_rate: float = arg(3e-5, "peak learning rate")
    warmup_proportion: float = arg(0.1, "share of the steps with linear warm-up")
    weight_decay: float = arg(0.01, "decoupled weight decay (not on LayerNorm/bias)")
    optimizer: Literal["adamw", "adam", "lamb", "lamb_textbook"] = arg(
        "adamw", "adamw (torch), adam (the original scripts' AdamWeightDecay: no bias correction), lamb (NEZHA's), "
                 "lamb_textbook")
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
        super().__post_init__()
        if self.from_scratch == bool(self.model):
            raise ValueError("give either --model FOLDER or --from_scratch (with --preset and --vocab_file)")
        if self.from_scratch and not self.vocab_file:
            raise ValueError("--from_scratch needs --vocab_file")
        if self.from_scratch and self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.use_crf and self.task != "ner":
            raise ValueError("--use_crf applies to --task ner only")
        for name in ("train_batch_size", "logging_steps"):
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


# ==================================================================================================== driver
def finetune(args: FinetuneArgs) -> dict:
    """Train (or resume), evaluate, write everything to ``args.output_dir``; returns the final metrics.

    ``metrics["finished"]`` is False when the run stopped early (SIGTERM or ``--stop_at_step``): then a checkpoint
    was saved and neither the model nor the evaluation was written; ``metrics["stopped_by_signal"]`` says which.
    All data is read and checked before anything is written, so bad input leaves ``output_dir`` untouched.
    """
    from nezha.train.distributed import barrier, cleanup, init_distributed
    from nezha.train.loop import ProgressBar
    from nezha.train.run_log import MetricsLogger

    out = Path(args.output_dir)
    info = init_distributed(args.device)
    try:
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        data = _read_data(args)
        model = _build_model(args, data.task, data.tokenizer)
        run = _setup_training(args, model, info, len(data.train_feats), data.task.labels)
        progress = _resume(args, run, info)
        log = MetricsLogger(out, enabled=info.is_main, tensorboard=False,
                            resume_step=progress.step if progress.resumed else None)
        history = [{k: v for k, v in r.items() if k != "split"} for r in log.records if r["split"] == "eval"]
        bar = ProgressBar(run.total, initial=progress.step, enabled=info.is_main, desc=f"finetune {args.task}")
        _train(args, run, data, progress, log, bar, history, info)
        bar.close()
        metrics = _finish(args, run, data, progress, log, history, info)
        barrier()
        return metrics
    finally:
        cleanup()


@dataclass
class _Data:
    task: Task
    tokenizer: NezhaTokenizer
    vocab: str
    train: list
    train_feats: list
    evalset: list | None


@dataclass
class _Run:
    model: torch.nn.Module
    engine: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    precision: Any
    stateful: dict  # schedule and grad scaler, saved in checkpoints
    sampler: Any
    total: int  # steps of the whole run
    end: int  # steps of this process's run (--stop_at_step)
    manager: Any
    layout: dict  # what a checkpoint must share with this run to continue it exactly


@dataclass
class _Progress:
    step: int = 0
    running: float = 0.0  # training loss summed over the current logging window
    seen: int = 0  # steps in the current logging window
    resumed: bool = False
    stopped: bool = False  # by a signal


def _read_data(args: FinetuneArgs) -> _Data:
    """Tokenizer, task, training features and the evaluation set; eval labels are checked now, not after training."""
    vocab = args.vocab_file or str(Path(args.model) / "vocab.txt")
    tokenizer = NezhaTokenizer.from_file(vocab, do_lower_case=args.do_lower_case)
    task = make_task(TaskSettings.of(args), tokenizer, list(args.labels) or None)
    train = task.read(args.train_file, limit=args.max_train_examples, for_training=True)
    labels = task.fit_labels(train)
    evalset = None
    if args.eval_file:
        evalset = task.read(args.eval_file, limit=args.max_eval_examples)
        task.check_labels(evalset)
    train_feats = task.features(train, for_training=True)
    logger.info("%s: %d training examples -> %d sequences%s", args.task, len(train), len(train_feats),
                f"; labels {labels}" if labels else "")
    return _Data(task, tokenizer, vocab, train, train_feats, evalset)


def _build_model(args: FinetuneArgs, task: Task, tokenizer: NezhaTokenizer) -> torch.nn.Module:
    """The task model from ``--model`` or ``--from_scratch``, with the labels and task settings in its config."""
    labels = task.labels
    label_kw = {} if labels is None else {"num_labels": len(labels), "id2label": dict(enumerate(labels))}
    extra = {"finetune": asdict(TaskSettings.of(args))}
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


def _setup_training(args: FinetuneArgs, model: torch.nn.Module, info, num_sequences: int,
                    labels: list[str] | None) -> _Run:
    """Engine (DDP), precision, optimizer, data order, LR schedule and the checkpoint manager."""
    from nezha.train.checkpoint import CheckpointManager
    from nezha.train.distributed import EpochSampler, wrap_model
    from nezha.train.loop import Precision
    from nezha.train.optim import build_optimizer
    from nezha.train.schedule import LRSchedule

    engine = wrap_model(model, info, "ddp")
    precision = Precision.resolve(args.precision, info.device)
    optimizer = build_optimizer(model, args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay)
    sampler = EpochSampler(num_sequences, batch_size=args.train_batch_size, accum=1, rank=info.rank,
                           world_size=info.world_size, seed=args.seed)
    total = args.max_steps or max(1, math.ceil(args.num_train_epochs * sampler.steps_per_epoch))
    schedule = LRSchedule(optimizer, warmup=int(args.warmup_proportion * total), total=total, peak=args.learning_rate)
    # The manager adds the world size; a different model size fails on the weights' shapes.
    layout = {"task": args.task, "labels": labels, "use_crf": args.use_crf, "max_seq_length": args.max_seq_length,
              "train_sequences": num_sequences, "train_batch_size": args.train_batch_size, "seed": args.seed,
              "total_steps": total}
    return _Run(model, engine, optimizer, precision, {"schedule": schedule, "scaler": precision.grad_scaler()},
                sampler, total, min(total, args.stop_at_step or total),
                CheckpointManager(Path(args.output_dir) / "checkpoints", info, keep=args.keep_checkpoints), layout)


def _resume(args: FinetuneArgs, run: _Run, info) -> _Progress:
    """Load ``--resume``'s checkpoint (weights, optimizer, schedule, RNG, logging window) or start at step 0."""
    resume_from = run.manager.resolve(args.resume)
    if resume_from is None:
        if info.is_main and run.manager.latest() is not None:
            logger.warning("%s holds checkpoints of an earlier run; starting afresh (--resume auto would continue "
                           "the latest)", run.manager.directory)
        return _Progress()
    meta = run.manager.load(resume_from, run.engine, run.optimizer, run.stateful, expect=run.layout)
    if info.is_main:
        logger.info("resumed from %s at step %d of %d", resume_from, int(meta["step"]), run.total)
    running, seen = meta["loss_window"]
    return _Progress(int(meta["step"]), float(running), int(seen), resumed=True)


def _train(args: FinetuneArgs, run: _Run, data: _Data, p: _Progress, log, bar, history: list, info) -> None:
    """Steps until ``run.end`` or a stop signal (every rank stops at the same step); logs, evaluates each epoch,
    saves every ``--save_steps``."""
    from nezha.train.loop import StopSignal, train_step

    accepted = set(inspect.signature(run.model.forward).parameters)  # e.g. label_mask only with a CRF

    def loss_fn(engine_module, batch):
        loss = engine_module(**{k: v.to(info.device) for k, v in batch.items() if k in accepted}).loss
        return loss, {"loss": loss.detach()}

    schedule, sampler = run.stateful["schedule"], run.sampler
    with StopSignal() as stop:
        while p.step < run.end:
            if _stop_requested(stop, info):
                p.stopped = True
                break
            run.engine.train()
            lr = schedule.apply()
            mbs = [data.task.collate([data.train_feats[i] for i in idx]) for idx, _ in sampler.micro_batches(p.step)]
            res = train_step(run.engine, mbs, loss_fn, run.optimizer, run.stateful["scaler"], run.precision,
                             max_grad_norm=args.max_grad_norm, step=p.step)
            schedule.step()
            p.step += 1
            p.running += res.stats["loss"]
            p.seen += 1
            bar.update(1, loss=res.stats["loss"], lr=lr)
            if p.step % args.logging_steps == 0 or p.step == run.total:
                log.log(p.step, "train", loss=p.running / p.seen, lr=lr, grad_norm=res.grad_norm)
                p.running, p.seen = 0.0, 0
            epoch_end = p.step % sampler.steps_per_epoch == 0 and p.step != run.total
            if data.evalset is not None and args.eval_every_epoch and epoch_end and info.is_main:
                rep = _scalars(data.task.evaluate(run.model, data.evalset, None))
                log.log(p.step, "eval", **rep)
                history.append({"step": p.step, **rep})
                bar.write(f"step {p.step}: eval {rep}")
            if args.save_steps and p.step % args.save_steps == 0 and p.step < run.end:
                _save(run, p)


def _save(run: _Run, p: _Progress) -> Path:
    from nezha.train.loop import check_finite_weights

    check_finite_weights(run.engine, p.step)  # never write a checkpoint that would resume into garbage
    epoch, in_epoch = run.sampler.position(p.step)
    # The partly filled logging window rides along, so the first loss logged after resume is the same too.
    return run.manager.save(p.step, run.engine, run.optimizer, run.stateful,
                            meta={**run.layout, "epoch": epoch, "step_in_epoch": in_epoch,
                                  "loss_window": [p.running, p.seen]})


def _finish(args: FinetuneArgs, run: _Run, data: _Data, p: _Progress, log, history: list, info) -> dict:
    """A checkpoint when stopped early; otherwise the model folder and the final evaluation. Then the metrics,
    curves and settings files (main process)."""
    out = Path(args.output_dir)
    finished = p.step >= run.total
    if not finished:  # SIGTERM or --stop_at_step
        path = _save(run, p)
        if info.is_main:
            why = "stop signal received" if p.stopped else f"--stop_at_step {args.stop_at_step}"
            logger.info("%s: saved %s at step %d of %d; continue with --resume auto", why, path, p.step, run.total)
    metrics: dict = {"task": args.task, "steps": run.total, "step": p.step, "finished": finished,
                     "stopped_by_signal": p.stopped, "train_examples": len(data.train),
                     "train_sequences": len(data.train_feats)}
    if not info.is_main:
        return metrics
    if finished:
        run.model.save_pretrained(out / "model", tokenizer_vocab=data.vocab)
    if finished and data.evalset is not None:
        rep = data.task.evaluate(run.model, data.evalset, out, train=data.train)
        log.log(run.total, "eval", **_scalars(rep))
        metrics.update(eval=rep, eval_file=args.eval_file, history=history)
    log.write_csv()
    log.plot(out / "training_curves.png", keys=("loss",), acc_keys=data.task.curve_keys)
    log.close()
    atomic_write_text(out / "metrics.json", json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(out / "finetune_args.json", json.dumps(asdict(args), ensure_ascii=False, indent=2) + "\n")
    return metrics


def _stop_requested(stop, info) -> bool:
    """Whether any rank got a stop signal (one small all-reduce per step when there are several processes)."""
    if not info.distributed:
        return stop.requested
    from nezha.train.distributed import all_reduce

    flag = torch.tensor([float(stop.requested)], device=info.device)
    return all_reduce(flag, "sum").item() > 0


def _scalars(report: dict) -> dict[str, float]:
    return {k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("total", "skip")}
