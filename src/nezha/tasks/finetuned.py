"""The task registry, and evaluation/prediction with a fine-tuned folder (``nezha evaluate`` / ``nezha predict``).

A folder written by ``nezha finetune`` holds the task settings in ``config.json`` (``extra["finetune"]``), so data is
read, windowed and lower-cased exactly as in training. Data is read and checked before ``output_dir`` is touched:
bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from nezha.data.tokenization import NezhaTokenizer
from nezha.io.atomic import atomic_write_text
from nezha.model.config import NezhaConfig
from nezha.settings import arg
from nezha.tasks.classification.task import ClassificationTask
from nezha.tasks.common import Task, TaskSettings
from nezha.tasks.mrc.task import MrcTask
from nezha.tasks.ner.task import NerTask

TASK_CLASSES: dict[str, type] = {"classification": ClassificationTask, "ner": NerTask, "mrc": MrcTask}


def make_task(settings: TaskSettings, tokenizer: NezhaTokenizer, labels: list[str] | None = None) -> Task:
    return TASK_CLASSES[settings.task](settings, tokenizer, labels)


@dataclass(kw_only=True)
class ModelFolderArgs:
    """Settings shared by ``nezha evaluate`` and ``nezha predict``."""

    model_dir: str = arg(help="the model/ folder written by nezha finetune")
    output_dir: str = arg(help="where metrics.json and the predictions go")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "auto|cpu|cuda")


def folder_tokenizer(model_dir: Path, do_lower_case: bool) -> NezhaTokenizer:
    """The tokenizer over a model folder's ``vocab.txt``."""
    vocab = model_dir / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{model_dir}: no vocab.txt")
    return NezhaTokenizer.from_file(vocab, do_lower_case=do_lower_case)


def load_task(model_dir: Path, config: NezhaConfig) -> Task:
    """A fine-tuned folder's task object: the settings stored in ``config.json``, its vocab and its labels."""
    raw = config.extra.get("finetune")
    if not raw:
        raise ValueError(f"{model_dir}: not a fine-tuned folder (config.json has no extra.finetune settings); "
                         "run `nezha finetune` first")
    settings = TaskSettings.from_stored(raw, source=f"{model_dir / 'config.json'} extra.finetune")
    tokenizer = folder_tokenizer(model_dir, settings.do_lower_case)
    labels = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else None
    return make_task(settings, tokenizer, labels)


def load_for_eval(model_dir: str | os.PathLike, device: str = "auto") -> tuple[Task, torch.nn.Module]:
    """A fine-tuned folder -> (task object, model in eval mode). The task settings come from ``config.json``."""
    model_dir = Path(model_dir)
    config = NezhaConfig.from_json(model_dir / "config.json")
    task = load_task(model_dir, config)
    model = task.model_class(config).from_pretrained(model_dir)
    dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    return task, model.to(dev).eval()


def evaluate_folder(model_dir: str, data_file: str, output_dir: str, device: str = "auto", limit: int = 0) -> dict:
    """Score a fine-tuned folder on labelled data; writes predictions and ``metrics.json`` to ``output_dir``."""
    task, model = load_for_eval(model_dir, device)
    data = task.read(data_file, limit=limit)
    task.check_labels(data)
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
