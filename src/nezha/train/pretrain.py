"""NEZHA pretraining (masked LM + next sentence prediction) on one process or many (torchrun, DDP or FSDP2).

One machine, one process::

    nezha pretrain --input_dir data/shards --output_dir runs/tiny --preset tiny --vocab_file vocab.txt \\
        --train_batch_size 32 --num_train_steps 1000 --num_warmup_steps 100 --learning_rate 1e-3

One node with 8 GPUs (global batch = 8 × train_batch_size)::

    torchrun --standalone --nproc_per_node=8 -m nezha.cli pretrain --input_dir data/shards --output_dir runs/base ...

Several nodes: ``torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=HOST:29500 -m nezha.cli pretrain ...`` with ``--output_dir`` on a shared file system.

The data is read from ``nezha prepare`` shard folders, original-format TFRecord files, or text (.txt, or the text
column of .tsv/.jsonl files), which is tokenised once into a cache and masked anew every epoch
(:mod:`nezha.data.dynamic`; continued pretraining: ``--input_dir corpus.txt --init_checkpoint nezha-base/``).
Losses are normalised by the global number of masked tokens (and sequences) of each optimizer step, so results do
not depend on how a global batch is split over ranks and micro-batches: 2 ranks × batch b train exactly like 1 rank
× batch 2b (text data: with other masks, which are drawn per micro-batch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from nezha.data.corpus import expand_input_files
from nezha.data.dynamic import TextDataSettings, is_text_input, open_text_data
from nezha.io.atomic import atomic_write_text
from nezha.model.config import PRESETS, NezhaConfig
from nezha.settings import arg, save_settings
from nezha.train.checkpoint import CheckpointManager, _full_state_dicts
from nezha.train.distributed import (
    DistInfo,
    EpochSampler,
    WrappedModel,
    all_reduce,
    barrier,
    cleanup,
    init_distributed,
    wrap_model,
)
from nezha.train.loop import (
    DynamicLossScaler,
    NonFiniteLossError,
    Precision,
    ProgressBar,
    StopSignal,
    Throughput,
    check_finite_weights,
    train_step,
)
from nezha.train.optim import build_optimizer
from nezha.train.run_log import MetricsLogger
from nezha.train.schedule import LRSchedule

logger = logging.getLogger("nezha")

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")


@dataclass
class PretrainArgs:
    """Settings of one pretraining run; each field is a ``nezha pretrain`` flag (original names where one existed)."""

    # data
    input_dir: list[str] = arg([], "shard folders from `nezha prepare`, .tfrecord files, or text files (.txt, "
                                   ".tsv, .jsonl: masked anew every epoch); globs and commas ok")
    output_dir: str = arg("", "run folder: args.json, checkpoints/, metrics, final model (config.json, ...)")
    eval_dir: list[str] = arg([], "held-out shard folders / TFRecords for periodic evaluation")
    eval_fraction: float = arg(0.0, "hold out this fraction of --input_dir for evaluation (when no --eval_dir)")
    max_seq_length: int | None = arg(None, "text: instance length (default 128); shards: if given, must equal theirs")
    max_predictions_per_seq: int | None = arg(None, "text: masked positions per instance at most (default 20); "
                                              "shards: if given, must equal theirs")
    # text input (masks drawn per epoch; shards and TFRecords carry their own)
    nsp: bool = arg(True, "next sentence prediction: [CLS] A [SEP] B [SEP] pairs, half with a random B; False: "
                    "MLM only, sentences packed into [CLS] ... [SEP] (for shards: the NSP loss is left out)")
    text_column: str = arg("", "TSV/JSONL column(s) holding the text, comma-separated (default: text_a,text_b / "
                           "text); one row is one document")
    do_lower_case: bool = arg(True, "text: lower-case and strip accents (True for the Chinese vocab)")
    do_whole_word_mask: bool = arg(True, "text: mask all pieces of a word together (words from --segmenter, or "
                                   "spaces with --pre_segmented)")
    segmenter: Literal["auto", "rjieba", "jieba"] = arg("auto", "text: word segmenter for whole word masking")
    pre_segmented: bool = arg(False, "text: words are separated by spaces (gold boundaries)")
    max_ngram: int = arg(1, "text: n-gram masking, spans of up to this many words, n with p ~ 1/n (1 = off)")
    masked_lm_prob: float = arg(0.15, "text: share of tokens to mask")
    short_seq_prob: float = arg(0.1, "text with NSP: probability of a shorter random target length")
    data_cache_dir: str = arg("", "text: where the tokenised instances are cached, keyed by file hash, vocab and "
                              "settings (default OUTPUT_DIR/data-cache; share it between runs)")
    tokenize_workers: int = arg(1, "text: processes tokenising and segmenting when the cache is built")
    # model
    preset: str = arg("base", f"model size when training from scratch: {sorted(PRESETS)}")
    bert_config_file: str | None = arg(None, "bert_config.json / config.json of the model to train from scratch")
    init_checkpoint: str | None = arg(None, "from_pretrained folder to continue pretraining from")
    vocab_file: str | None = arg(None, "vocab.txt (sets vocab_size from scratch; copied into the final model)")
    allow_vocab_mismatch: bool = arg(
        False, "train even when the shards were made with another vocab.txt than --vocab_file / the checkpoint's"
    )
    dropout: float | None = arg(None, "override hidden and attention dropout")
    # optimization
    train_batch_size: int = arg(32, "sequences per process per optimizer step (global batch = this × processes)")
    gradient_accumulation_steps: int = arg(1, "split each process's batch into this many micro-batches")
    num_train_steps: int = arg(100000, "optimizer steps of the whole run (sets the lr schedule)")
    num_warmup_steps: int = arg(10000, "linear warmup steps")
    learning_rate: float = arg(1e-4, "peak learning rate (per process with --scale_lr_with_world_size)")
    scale_lr_with_world_size: bool = arg(
        False, "multiply --learning_rate by the number of processes, as the original run_pretraining.py does under "
        "horovod (lr * hvd.size())"
    )
    lr_end: float = arg(0.0, "learning rate at the end of the decay")
    lr_power: float = arg(1.0, "polynomial decay power (1 = linear, as the original)")
    optimizer: Literal["lamb", "lamb_textbook", "adam", "adamw"] = arg(
        "lamb", "lamb: the original's LAMB; lamb_textbook: trust ratio ||w||/||u||; adam: the original's "
        "AdamWeightDecay (no bias correction); adamw: torch AdamW"
    )
    weight_decay: float = arg(0.01, "weight decay (in the update not on LayerNorm and bias)")
    adam_beta1: float = arg(0.9, "β1")
    adam_beta2: float = arg(0.999, "β2")
    adam_epsilon: float = arg(1e-6, "ε")
    lamb_grad_prenorm: bool = arg(False, "NVIDIA-style gradient pre-normalization inside LAMB")
    max_grad_norm: float = arg(1.0, "global gradient-norm clipping (0 disables)")
    # execution
    precision: Literal["auto", "fp32", "bf16", "fp16"] = arg("auto", "auto: bf16 on a GPU that has it, else fp32")
    loss_scale_init: float = arg(2.0**32, "fp16: initial dynamic loss scale (x2 after 1000 good steps, x0.5 after 2 "
                                 "overflows, as the original)")
    compile: bool = arg(False, "torch.compile the model")
    distributed: Literal["ddp", "fsdp"] = arg("ddp", "multi-process strategy: ddp or fsdp (FSDP2 fully_shard)")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "device")
    seed: int = arg(12345, "seed of the model init, data order and dropout")
    max_skipped_steps: int = arg(100, "fp16: stop after this many consecutive overflow-skipped steps (from 2^32 the "
                                 "scale needs 2 overflows per halving)")
    # checkpoints and logging
    save_checkpoints_steps: int = arg(1000, "save a checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = arg(3, "keep the last this many checkpoints")
    resume: str = arg("auto", "auto (latest checkpoint in output_dir if any), never, or a checkpoint folder")
    stop_at_step: int | None = arg(None, "save a checkpoint and stop at this step (for time-limited jobs)")
    log_every: int = arg(10, "log metrics every this many steps")
    eval_every: int = arg(0, "evaluate every this many steps (0: only at the end)")
    max_eval_batches: int = arg(50, "evaluate on at most this many batches per process")
    tensorboard: bool = arg(True, "also log to TensorBoard when it is installed")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self) -> None:
        if not self.input_dir:
            raise ValueError("--input_dir is required (shard folders, .tfrecord files or text files)")
        if not self.output_dir:
            raise ValueError("--output_dir is required")
        if self.bert_config_file and self.init_checkpoint:
            raise ValueError("give --bert_config_file (from scratch) or --init_checkpoint (continue), not both")
        if not self.bert_config_file and not self.init_checkpoint and self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        positive = ("train_batch_size", "gradient_accumulation_steps", "num_train_steps", "save_checkpoints_steps",
                    "keep_checkpoints", "log_every", "max_eval_batches", "max_skipped_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.train_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"--train_batch_size ({self.train_batch_size}) must be a multiple of --gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps})"
            )
        for name in ("num_warmup_steps", "eval_every", "learning_rate", "weight_decay", "lr_end", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ValueError(f"--stop_at_step must be positive, got {self.stop_at_step}")
        if self.tokenize_workers <= 0:
            raise ValueError(f"--tokenize_workers must be positive, got {self.tokenize_workers}")

    def model_vocab_file(self) -> str | None:
        """--vocab_file, else the vocab.txt of the --init_checkpoint folder when it has one."""
        if self.vocab_file:
            return self.vocab_file
        if self.init_checkpoint and (Path(self.init_checkpoint) / "vocab.txt").is_file():
            return str(Path(self.init_checkpoint) / "vocab.txt")
        return None

    def text_settings(self) -> TextDataSettings:
        """How text input becomes instances and masks (validated by ``nezha prepare``'s settings)."""
        vocab = self.model_vocab_file()
        if not vocab:
            raise ValueError("text input needs --vocab_file (or an --init_checkpoint folder with vocab.txt)")
        settings = TextDataSettings(
            vocab_file=vocab, do_lower_case=self.do_lower_case, max_seq_length=self.max_seq_length or 128,
            nsp=self.nsp, short_seq_prob=self.short_seq_prob, text_column=self.text_column,
            do_whole_word_mask=self.do_whole_word_mask, segmenter=self.segmenter, pre_segmented=self.pre_segmented,
            max_ngram=self.max_ngram, masked_lm_prob=self.masked_lm_prob,
            max_predictions_per_seq=self.max_predictions_per_seq or 20, seed=self.seed,
            num_workers=self.tokenize_workers)
        settings.prepare_args("-")  # the checks of `nezha prepare`: lengths, masking probabilities
        return settings


@dataclass
class PretrainResult:
    step: int  # global step reached
    finished: bool  # reached num_train_steps (the final model was exported)
    stopped_by_signal: bool
    train: dict[str, float]  # last logged training metrics
    eval: dict[str, float] | None
    baseline: dict[str, float]  # unigram MLM baseline of the data: accuracy and loss
    output_dir: Path


# ---------------------------------------------------------------------------------------------------- data
def open_pretraining_data(paths: list[str] | str, text: TextDataSettings | None = None,
                          cache_root: Path | None = None, build_cache: bool = True):
    """Open shard folders (``nezha prepare``), original TFRecord files or text files, chosen by suffix.

    All return an object with ``len()``, ``get_batch(indices) -> dict of numpy arrays`` and ``max_seq_length``;
    text data (``masks_per_epoch``) takes ``get_batch(indices, epoch)``. Text needs ``text`` settings and a
    ``cache_root``; ``build_cache=False`` expects another process to have built the cache.
    """
    entries = [paths] if isinstance(paths, str) else list(paths)
    parts = [p for entry in entries for p in str(entry).split(",")]
    paths = expand_input_files(parts, flag="--input_dir", folders=True)
    is_text = [is_text_input(p) for p in paths]
    if all(is_text):
        if text is None or cache_root is None:
            raise ValueError(f"{paths[0]}: text input needs text settings and a cache folder")
        return open_text_data(paths, text, cache_root, build=build_cache)
    if any(is_text):
        raise ValueError("mix of text files and shard folders / TFRecords in one data list; use one kind")
    is_tf = [p.suffix in TFRECORD_SUFFIXES for p in paths]
    if all(is_tf):
        from nezha.data.tfrecord import TFRecordInstances

        return TFRecordInstances(paths)
    if any(is_tf):
        raise ValueError("mix of .tfrecord files and shard folders in one data list; convert one kind to the other")
    from nezha.data.shards import PretrainingShards

    return PretrainingShards(paths)


def unigram_baseline(data, sample: int = 10_000, seed: int = 0) -> dict[str, float]:
    """MLM accuracy and loss of always predicting the data's masked-token frequencies (no context).

    Accuracy: the most frequent target's share. Loss: the entropy of the target distribution (nats), the best
    cross-entropy a context-free predictor can reach. Estimated on at most ``sample`` random instances (~150k
    masked tokens), so start-up does not grow with the data.
    """
    n = len(data)
    idx = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    counts: dict[int, int] = {}
    for i in range(0, len(idx), 16384):
        b = data.get_batch(idx[i:i + 16384])
        ids = b["masked_lm_ids"][b["masked_lm_weights"] > 0]
        u, c = np.unique(ids, return_counts=True)
        for k, v in zip(u.tolist(), c.tolist()):
            counts[k] = counts.get(k, 0) + v
    total = sum(counts.values())
    if not total:
        return {"unigram_mlm_acc": 0.0, "unigram_mlm_loss": 0.0}
    p = np.array(list(counts.values()), dtype=np.float64) / total
    return {"unigram_mlm_acc": float(p.max()), "unigram_mlm_loss": float(-(p * np.log(p)).sum())}


def check_batch_ids(batch: dict[str, np.ndarray], vocab_size: int, source: str, where: str) -> None:
    """Refuse a batch with token ids the model has no embedding for (data that does not record its largest id)."""
    top = max(int(batch["input_ids"].max(initial=0)), int(batch["masked_lm_ids"].max(initial=0)))
    if top >= vocab_size:
        raise ValueError(
            f"{source}: token id {top} in {where} >= the model's vocab_size {vocab_size}: the data was made with a "
            "larger vocab.txt than this model's (check --vocab_file / --bert_config_file / --init_checkpoint)"
        )


def batch_to_tensors(batch: dict[str, np.ndarray], device: torch.device, real: bool = True,
                     nsp: bool = True) -> dict[str, torch.Tensor]:
    """Model inputs from a ``get_batch`` dict; targets of unused prediction slots are -100.

    ``real=False`` marks a placeholder micro-batch (an epoch's last step had fewer instances than processes): it
    runs forward/backward so collectives line up, with all its weights 0. ``nsp=False`` weights the NSP loss 0.
    """
    pin = device.type == "cuda"

    def t(x, dtype=torch.long):
        x = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
        return x.pin_memory().to(device, non_blocking=True) if pin else x

    weights = batch["masked_lm_weights"] * (1.0 if real else 0.0)
    labels = np.where(weights > 0, batch["masked_lm_ids"], -100)
    nsp_on, nsp = nsp, batch["next_sentence_labels"].astype(np.int64)
    return {
        "input_ids": t(batch["input_ids"]),
        "token_type_ids": t(batch["segment_ids"]),
        "attention_mask": t(batch["input_mask"]),
        "masked_positions": t(batch["masked_lm_positions"]),
        "labels": t(labels),
        "next_sentence_label": t(nsp),
        "nsp_weight": t(np.full(len(nsp), 1.0 if real and nsp_on else 0.0, np.float32), torch.float32),
    }


def pretraining_sums(engine, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Forward one micro-batch; returns summed MLM loss, summed NSP loss and detached counts (nothing averaged)."""
    out = engine(
        input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], token_type_ids=mb["token_type_ids"],
        masked_positions=mb["masked_positions"],
    )
    logits = out.prediction_logits.float()  # (B, M, V): the vocab projection ran on masked positions only
    labels = mb["labels"]
    mlm_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="sum")
    nsp_logits = out.seq_relationship_logits.float()  # (B, 2)
    w = mb["nsp_weight"]
    nsp_sum = (F.cross_entropy(nsp_logits, mb["next_sentence_label"], reduction="none") * w).sum()
    with torch.no_grad():
        mask = labels != -100
        stats = {
            "mlm_loss_sum": mlm_sum.detach(),
            "mlm_correct": ((logits.argmax(-1) == labels) & mask).sum().float(),
            "masked": mask.sum().float(),
            "nsp_loss_sum": nsp_sum.detach(),
            "nsp_correct": ((nsp_logits.argmax(-1) == mb["next_sentence_label"]).float() * w).sum(),
            "seqs": w.sum(),
        }
    return mlm_sum, nsp_sum, stats


def _summarize(sums: dict[str, float]) -> dict[str, float]:
    masked, seqs = max(sums.get("masked", 0.0), 1.0), max(sums.get("seqs", 0.0), 1.0)
    mlm, nsp = sums["mlm_loss_sum"] / masked, sums["nsp_loss_sum"] / seqs
    return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "mlm_acc": sums["mlm_correct"] / masked,
            "nsp_acc": sums["nsp_correct"] / seqs}


_STAT_KEYS = ("mlm_loss_sum", "mlm_correct", "masked", "nsp_loss_sum", "nsp_correct", "seqs")


def _reduce_stats(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    t = torch.tensor([sums.get(k, 0.0) for k in _STAT_KEYS], dtype=torch.float64, device=device)
    all_reduce(t, "sum")
    return dict(zip(_STAT_KEYS, t.tolist()))


@torch.no_grad()
def evaluate(model: WrappedModel, data, indices: np.ndarray, info: DistInfo, precision: Precision,
             batch_size: int, max_batches: int, nsp: bool = True) -> dict[str, float]:
    """MLM/NSP loss and accuracy on ``indices`` (split over ranks), summed exactly over all of them.

    Text data is masked as in epoch 0, so every evaluation of a run sees the same masks."""
    model.eval()
    mine = np.array_split(indices, info.world_size)[info.rank][: batch_size * max_batches]
    sums = dict.fromkeys(_STAT_KEYS, 0.0)
    n_batches = -(-len(mine) // batch_size)
    # Every rank runs the same number of forwards (FSDP all-gathers in forward); extra ones are weight-0.
    n_batches = int(all_reduce(torch.tensor([float(n_batches)], device=info.device), "max").item())
    for b in range(n_batches):
        idx = mine[b * batch_size:(b + 1) * batch_size]
        real = len(idx) > 0
        raw = data.get_batch(idx if real else indices[:1])
        if getattr(data, "max_token_id", None) is None:
            check_batch_ids(raw, model.module.config.vocab_size, "evaluation data", f"evaluation batch {b + 1}")
        batch = batch_to_tensors(raw, info.device, real, nsp)
        with precision.autocast():
            _, _, stats = pretraining_sums(model.engine, batch)
        for k, v in stats.items():
            sums[k] += float(v)
    model.train()
    return _summarize(_reduce_stats(sums, info.device))


# ---------------------------------------------------------------------------------------------------- model
def build_config(args: PretrainArgs, data) -> NezhaConfig:
    """The model config from --init_checkpoint, --bert_config_file or --preset (+ --vocab_file, --dropout)."""
    from nezha.data.tokenization import load_vocab

    n_vocab = len(load_vocab(args.vocab_file)) if args.vocab_file else None
    if args.init_checkpoint:
        config = NezhaConfig.from_json(Path(args.init_checkpoint) / "config.json")
    elif args.bert_config_file:
        config = NezhaConfig.from_json(args.bert_config_file)
    else:
        vocab_size = n_vocab if n_vocab is not None else getattr(data, "vocab_size", None)
        config = NezhaConfig.preset(args.preset, **({"vocab_size": int(vocab_size)} if vocab_size else {}))
    if args.dropout is not None:
        config = dataclasses.replace(
            config, hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout
        )
    if n_vocab is not None and n_vocab > config.vocab_size:
        raise ValueError(
            f"--vocab_file {args.vocab_file} has {n_vocab} tokens but the model's vocab_size is {config.vocab_size}"
        )
    return config


def check_data(args: PretrainArgs, data, config: NezhaConfig, source: str) -> None:
    """Refuse data the model cannot train on, before any step: lengths and ids beyond the vocabulary."""
    L = int(data.max_seq_length)
    if args.max_seq_length is not None and args.max_seq_length != L:
        raise ValueError(f"--max_seq_length {args.max_seq_length} differs from the data's {L} ({source})")
    M = int(data.get_batch([0])["masked_lm_positions"].shape[1])
    if args.max_predictions_per_seq is not None and args.max_predictions_per_seq != M:
        raise ValueError(f"--max_predictions_per_seq {args.max_predictions_per_seq} differs from the data's {M}")
    max_id = getattr(data, "max_token_id", None)  # recorded by `nezha prepare`; other data is checked per batch
    if max_id is not None and max_id >= config.vocab_size:
        raise ValueError(
            f"{source}: token id {max_id} >= the model's vocab_size {config.vocab_size}: the data was made with a "
            "larger vocab.txt than this model's (check --vocab_file / --bert_config_file / --init_checkpoint)"
        )
    check_vocab(args, data, source)


def check_vocab(args: PretrainArgs, data, source: str) -> None:
    """Refuse shards tokenized with another vocab.txt than the model's (--vocab_file, else --init_checkpoint's).

    ``nezha prepare`` records the vocab's sha256 in index.json; same-size vocabularies with other tokens would train
    without any error but learn garbage. ``--allow_vocab_mismatch`` skips the check.
    """
    recorded = getattr(data, "vocab_sha256", None)
    vocab_file = args.model_vocab_file()
    if recorded is None or vocab_file is None or args.allow_vocab_mismatch:
        return
    from nezha.data.pretraining import vocab_fingerprint
    from nezha.data.tokenization import load_vocab

    if vocab_fingerprint(load_vocab(vocab_file)) != recorded:
        made_with = data.vocab_source or "a vocab.txt"
        raise ValueError(
            f"{source}: the data was made with {made_with} (sha256 {recorded[:12]}...), which differs from the "
            f"model's {vocab_file}: the token ids would mean other tokens. Use the same vocab.txt, or pass "
            "--allow_vocab_mismatch to train anyway"
        )


# ---------------------------------------------------------------------------------------------------- training
def pretrain(args: PretrainArgs) -> PretrainResult:
    """Run (or resume) pretraining as ``args`` says; see the module docstring. Call under torchrun for many ranks."""
    info = init_distributed(args.device)
    try:
        run = _setup(args, info)
        progress = _train(run)
        return _finish(run, progress)
    finally:
        cleanup()


@dataclass
class _Run:
    """What a run holds from set-up to the end: data, model, optimizer state and where to write."""

    args: PretrainArgs
    info: DistInfo
    out_dir: Path
    precision: Precision
    data: object  # PretrainingShards or TFRecordInstances
    pool: np.ndarray  # training instance indices
    eval_data: object | None
    eval_idx: np.ndarray
    model: WrappedModel
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: DynamicLossScaler
    sampler: EpochSampler
    manager: CheckpointManager
    layout: dict  # batch layout that a resume must match
    start: int  # global step to start from (0, or the resumed checkpoint's)
    start_drawn: int  # steps' worth of batches read before start (more than start when fp16 skipped updates)
    resumed: bool
    baseline: dict[str, float]
    metrics: MetricsLogger | None = None  # opened when the loop starts
    bar: ProgressBar | None = None

    @property
    def end(self) -> int:
        return min(self.args.num_train_steps, self.args.stop_at_step or self.args.num_train_steps)

    def load_step(self, drawn: int) -> list[tuple[dict[str, np.ndarray], bool]]:
        """This rank's micro-batches of the ``drawn``-th step's worth of data, as numpy arrays (prefetch thread).

        Text data draws the masks of the step's epoch, so a resumed run reads exactly what it would have read.
        Data that does not record its largest token id (TFRecords) is checked here, batch by batch.
        """
        epoch = {"epoch": self.sampler.position(drawn)[0]} if getattr(self.data, "masks_per_epoch", False) else {}
        out = [(self.data.get_batch(idx, **epoch), real) for idx, real in self.sampler.micro_batches(drawn)]
        if getattr(self.data, "max_token_id", None) is None:
            for batch, _ in out:
                check_batch_ids(batch, self.model.module.config.vocab_size, ", ".join(map(str, self.args.input_dir)),
                                f"the batch of step {drawn + 1}")
        return out

    def save(self, step: int, drawn: int) -> None:
        # Never write a checkpoint that would resume into garbage (e.g. an update that overflowed the weights).
        check_finite_weights(self.model, step)
        epoch, in_epoch = self.sampler.position(drawn)
        self.manager.save(step, self.model, self.optimizer, {"schedule": self.schedule, "scaler": self.scaler},
                          meta={**self.layout, "epoch": epoch, "step_in_epoch": in_epoch, "batches_drawn": drawn})


@dataclass
class _Progress:
    """Where the loop is and what it last measured."""

    step: int  # global step: updates applied (an fp16 overflow skips the update and does not count, as the original)
    drawn: int  # steps' worth of batches read: the data position
    stopped: bool = False
    skipped_in_row: int = 0
    skipped_total: int = 0
    window: dict[str, float] = dataclasses.field(default_factory=dict)  # stats summed since the last log
    last_train: dict[str, float] = dataclasses.field(default_factory=dict)
    last_eval: dict[str, float] | None = None


def _open_datasets(args: PretrainArgs, info: DistInfo) -> tuple[object, np.ndarray, object | None, np.ndarray]:
    """Training data and instance pool, and evaluation data and indices (--eval_dir, or held out by --eval_fraction).

    Text caches are built by the main process while the others wait, then opened by the others (the main process
    keeps what it opened, so the corpus is hashed once).
    """
    def open_data(paths: list[str]):
        files = expand_input_files([p for entry in paths for p in str(entry).split(",")], flag="--input_dir",
                                   folders=True)
        if not all(is_text_input(p) for p in files):
            return open_pretraining_data(paths)
        text = args.text_settings()
        cache = Path(args.data_cache_dir or Path(args.output_dir) / "data-cache")
        opened = open_pretraining_data(paths, text, cache) if info.is_main else None
        barrier()
        return opened if opened is not None else open_pretraining_data(paths, text, cache, build_cache=False)

    data = open_data(args.input_dir)
    pool = np.arange(len(data))
    if args.eval_dir:
        eval_data = open_data(args.eval_dir)
        return data, pool, eval_data, np.arange(len(eval_data))
    if args.eval_fraction > 0:
        perm = np.random.default_rng([args.seed, 999]).permutation(len(data))
        n_eval = max(1, int(round(len(data) * args.eval_fraction)))
        return data, np.sort(perm[n_eval:]), data, np.sort(perm[:n_eval])
    return data, pool, None, np.zeros(0, np.int64)


def _build_model(args: PretrainArgs, config: NezhaConfig, info: DistInfo) -> WrappedModel:
    """The model from --init_checkpoint or ``config``, identical on every rank, wrapped for DDP/FSDP."""
    from nezha.model.modeling import NezhaForPreTraining

    # The same seed on every rank: identical initial weights (DDP would broadcast them anyway, FSDP would not).
    torch.manual_seed(args.seed)
    if args.init_checkpoint:
        overrides = {}
        if args.dropout is not None:
            overrides = {"hidden_dropout_prob": args.dropout, "attention_probs_dropout_prob": args.dropout}
        model = NezhaForPreTraining.from_pretrained(args.init_checkpoint, **overrides)
    else:
        model = NezhaForPreTraining(config)
    blocks = tuple(model.nezha.encoder.layer) if args.distributed == "fsdp" else ()
    return wrap_model(model, info, args.distributed, compile=args.compile, fsdp_blocks=blocks)


def _setup(args: PretrainArgs, info: DistInfo) -> _Run:
    """Open and check the data, build model, optimizer, schedule and scaler, and resume when a checkpoint exists."""
    precision = Precision.resolve(args.precision, info.device)
    data, pool, eval_data, eval_idx = _open_datasets(args, info)
    config = build_config(args, data)
    check_data(args, data, config, ", ".join(map(str, args.input_dir)))
    if eval_data is not None and eval_data is not data:
        check_data(dataclasses.replace(args, max_seq_length=None, max_predictions_per_seq=None), eval_data, config,
                   ", ".join(map(str, args.eval_dir)))
    sampler = EpochSampler(pool, batch_size=args.train_batch_size, accum=args.gradient_accumulation_steps,
                           rank=info.rank, world_size=info.world_size, seed=args.seed)
    model = _build_model(args, config, info)
    optimizer = build_optimizer(
        model.module, args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, grad_prenorm=args.lamb_grad_prenorm,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else 1.0,
    )
    peak = args.learning_rate * (info.world_size if args.scale_lr_with_world_size else 1)
    schedule = LRSchedule(optimizer, warmup=args.num_warmup_steps, total=args.num_train_steps, peak=peak,
                          floor=args.lr_end, power=args.lr_power)
    layout = {"global_batch": sampler.global_batch, "train_batch_size": args.train_batch_size,
              "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed,
              "num_train_instances": int(len(pool))}
    run = _Run(args, info, Path(args.output_dir), precision, data, pool, eval_data, eval_idx, model, optimizer,
               schedule, precision.grad_scaler(init_scale=args.loss_scale_init), sampler,
               CheckpointManager(Path(args.output_dir) / "checkpoints", info, keep=args.keep_checkpoints), layout,
               start=0, start_drawn=0, resumed=False, baseline={})
    _resume(run)
    run.baseline = unigram_baseline(data) if info.is_main else {}
    if info.is_main:
        _log_start(run)
    return run


def _resume(run: _Run) -> None:
    """Continue from the checkpoint --resume names (if any); otherwise seed dropout per rank."""
    resume_from = run.manager.resolve(run.args.resume)
    if resume_from is None:
        torch.manual_seed(run.args.seed + run.info.rank)  # dropout differs per rank, reproducibly
        return
    stateful = {"schedule": run.schedule, "scaler": run.scaler}
    meta = run.manager.load(resume_from, run.model, run.optimizer, stateful, expect=run.layout)
    run.start, run.resumed = int(meta["step"]), True
    run.start_drawn = int(meta.get("batches_drawn", run.start))
    if run.info.is_main:
        logger.info("resumed from %s at step %d", resume_from, run.start)


def _log_start(run: _Run) -> None:
    """Write args.json and say what is about to be trained (main process)."""
    args = run.args
    run.out_dir.mkdir(parents=True, exist_ok=True)
    save_settings(args, run.out_dir / "args.json")
    config = run.model.module.config
    n_params = sum(p.numel() for p in run.model.module.parameters())
    logger.info(
        "pretraining %s params (hidden %d, layers %d) on %d instances x %d tokens; %d process(es), global batch "
        "%d, precision %s, optimizer %s, peak lr %g; unigram baseline: MLM acc %.4f, loss %.3f",
        f"{n_params:,}", config.hidden_size, config.num_hidden_layers, len(run.pool), run.data.max_seq_length,
        run.info.world_size, run.sampler.global_batch, run.precision.name, args.optimizer, run.schedule.peak,
        run.baseline["unigram_mlm_acc"], run.baseline["unigram_mlm_loss"],
    )


def _train(run: _Run) -> _Progress:
    """The step loop: prefetch the next step's batches while this one trains; log, evaluate and save on schedule."""
    args, info = run.args, run.info
    progress = _Progress(step=run.start, drawn=run.start_drawn)
    run.metrics = MetricsLogger(run.out_dir, enabled=info.is_main, tensorboard=args.tensorboard,
                                resume_step=run.start if run.resumed else None)
    run.bar = ProgressBar(args.num_train_steps, initial=run.start, enabled=info.is_main and args.progress)
    meter = Throughput()
    try:
        with StopSignal() as stop, ThreadPoolExecutor(1) as prefetch:
            pending = prefetch.submit(run.load_step, progress.drawn) if progress.step < run.end else None
            run.model.train()
            while progress.step < run.end:
                raw = pending.result() if pending is not None else run.load_step(progress.drawn)
                last = progress.step + 1 >= run.end  # unless this step overflows and is skipped
                pending = None if last else prefetch.submit(run.load_step, progress.drawn + 1)
                result, lr, real_seqs = _train_one_step(run, progress, raw, stop.requested)
                if result is None:
                    break
                meter.add(real_seqs, real_seqs * int(run.data.max_seq_length))
                if not result.skipped:
                    _after_step(run, progress, result, lr, meter)
            if pending is not None:
                pending.cancel()
        if progress.step > run.start or progress.stopped:
            if progress.stopped:
                logger.info("stop signal received: saving a checkpoint at step %d and exiting", progress.step)
            run.save(progress.step, progress.drawn)
    except NonFiniteLossError as e:
        run.metrics.log(e.step, "error", nonfinite=1.0, **{k: v for k, v in e.stats.items() if isinstance(v, float)})
        run.metrics.close()
        run.bar.close()
        raise
    run.bar.close()
    return progress


def _train_one_step(run: _Run, progress: _Progress, raw: list, stop_requested: bool):
    """One optimizer step on ``raw`` micro-batches; returns (StepOutput, lr, real sequences on this rank), or
    (None, 0, 0) when any rank got a stop signal (then nothing was trained)."""
    info = run.info
    micro = [batch_to_tensors(b, info.device, real, run.args.nsp) for b, real in raw]
    # Global counts of this step: every rank normalises by the same totals (DDP then averages gradients, hence the
    # factor world_size). The stop flag rides along so all ranks stop at the same step.
    real_seqs = sum(len(b["lengths"]) for b, real in raw if real)
    counts = torch.tensor(
        [float(sum(int(b["num_masked"].sum()) for b, real in raw if real)), float(real_seqs), float(stop_requested)],
        dtype=torch.float64, device=info.device,
    )
    all_reduce(counts, "sum")
    n_masked, n_seqs, stop_votes = max(counts[0].item(), 1.0), max(counts[1].item(), 1.0), counts[2].item()
    if stop_votes > 0:
        progress.stopped = True
        return None, 0.0, 0
    scale = float(info.world_size)

    def loss_fn(engine, mb):
        mlm_sum, nsp_sum, stats = pretraining_sums(engine, mb)
        return (mlm_sum / n_masked + nsp_sum / n_seqs) * scale, stats

    lr = run.schedule.apply()
    result = train_step(run.model, micro, loss_fn, run.optimizer, run.scaler, run.precision,
                        max_grad_norm=run.args.max_grad_norm, step=progress.step + 1)
    progress.drawn += 1
    if result.skipped:  # as the original: neither the global step nor the schedule moves; the data does
        progress.skipped_in_row += 1
        progress.skipped_total += 1
        logger.debug("fp16 overflow at step %d: update skipped (loss scale now %g)", progress.step + 1,
                     run.scaler.get_scale())
        if progress.skipped_in_row >= run.args.max_skipped_steps:
            raise NonFiniteLossError(progress.step + 1, result.grad_norm, result.stats)
        return result, lr, real_seqs
    run.schedule.step()
    progress.step += 1
    progress.skipped_in_row = 0
    return result, lr, real_seqs


def _after_step(run: _Run, progress: _Progress, result, lr: float, meter: Throughput) -> None:
    """Accumulate the step's stats; log, evaluate and save when their step comes."""
    args, info, step = run.args, run.info, progress.step
    for k, v in result.stats.items():
        progress.window[k] = progress.window.get(k, 0.0) + v
    if step % args.log_every == 0 or step == run.end:
        sums = _reduce_stats(progress.window, info.device)
        seq_s, tok_s = meter.read()
        progress.last_train = {**_summarize(sums), "lr": lr, "grad_norm": result.grad_norm,
                               "seq_per_s": seq_s * info.world_size, "tokens_per_s": tok_s * info.world_size}
        if run.precision.name == "fp16":
            progress.last_train["loss_scale"] = run.scaler.get_scale()
            progress.last_train["skipped_steps"] = float(progress.skipped_total)
        run.metrics.log(step, "train", **progress.last_train)
        t = progress.last_train
        nsp = {"nsp_acc": t["nsp_acc"]} if args.nsp else {}
        run.bar.update(0, loss=t["loss"], mlm_acc=t["mlm_acc"], **nsp, lr=lr, seq_s=t["seq_per_s"],
                       tok_s=t["tokens_per_s"])
        progress.window = {}
    run.bar.update(1)
    if run.eval_data is not None and args.eval_every and step % args.eval_every == 0 and step < run.end:
        progress.last_eval = _evaluate(run)
        run.metrics.log(step, "eval", **progress.last_eval)
        shown = {k: v for k, v in progress.last_eval.items() if args.nsp or not k.startswith("nsp_")}
        run.bar.write(f"step {step} eval: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    if step % args.save_checkpoints_steps == 0 and step < run.end:
        run.save(step, progress.drawn)


def _evaluate(run: _Run) -> dict[str, float]:
    eval_bs = max(1, run.args.train_batch_size // run.args.gradient_accumulation_steps)
    return evaluate(run.model, run.eval_data, run.eval_idx, run.info, run.precision, eval_bs,
                    run.args.max_eval_batches, run.args.nsp)


def _finish(run: _Run, progress: _Progress) -> PretrainResult:
    """Final evaluation, model export (when num_train_steps was reached), CSV/plot/summary files."""
    step, info = progress.step, run.info
    finished = step >= run.args.num_train_steps
    if run.eval_data is not None and not progress.stopped:
        progress.last_eval = _evaluate(run)
        run.metrics.log(step, "eval", **progress.last_eval)
    if finished:
        export_model(run.model, run.out_dir, run.args.vocab_file, info)
    if info.is_main:
        _write_summary(run, progress, finished)
    run.metrics.close()
    barrier()
    return PretrainResult(step, finished, progress.stopped, progress.last_train, progress.last_eval, run.baseline,
                          run.out_dir)


def _write_summary(run: _Run, progress: _Progress, finished: bool) -> None:
    baseline, last_train, last_eval = run.baseline, progress.last_train, progress.last_eval
    run.metrics.write_csv()
    run.metrics.plot(run.out_dir / "metrics.png", baselines={"unigram_mlm_acc": baseline["unigram_mlm_acc"],
                                                             "unigram_mlm_loss": baseline["unigram_mlm_loss"]})
    summary = {"step": progress.step, "finished": finished, "stopped_by_signal": progress.stopped,
               "train": last_train, "eval": last_eval, "baseline": baseline, "time": time.time()}
    atomic_write_text(run.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if last_train:
        logger.info(
            "step %d: loss %.4f, MLM acc %.4f (unigram baseline %.4f)%s%s", progress.step,
            last_train["loss"], last_train["mlm_acc"], baseline["unigram_mlm_acc"],
            f", NSP acc {last_train['nsp_acc']:.4f}" if run.args.nsp else "",
            f"; eval loss {last_eval['loss']:.4f}, MLM acc {last_eval['mlm_acc']:.4f}" if last_eval else "",
        )


def export_model(model: WrappedModel, out_dir: Path, vocab_file: str | None, info: DistInfo) -> None:
    """Write the final ``from_pretrained`` folder (config.json, model.safetensors, vocab.txt) into ``out_dir``."""
    msd, _ = _full_state_dicts(model, None)
    if info.is_main:
        from nezha.model.pretrained import save_pretrained

        class _Holder:  # save_pretrained needs .state_dict() and .config
            config = model.module.config

            @staticmethod
            def state_dict():
                return msd

        save_pretrained(_Holder, out_dir, vocab_file)
    barrier()



