"""Inference on raw strings: ``pipeline(model_dir)`` reads a model folder and answers its task.

    from nezha.inference import pipeline

    clf = pipeline("out/clf/model")            # a `nezha finetune` folder: its task comes from config.json
    clf("这家酒店很干净")                        # {"label": "1", "score": 0.93, "probabilities": {...}}
    ner = pipeline("out/ner/model", backend="onnx")   # model.onnx from `nezha export-onnx` beside the weights
    ner(["张三在北京工作"])      # [{"entities": [{"text": "张三", "label": "PER", "start": 0, "end": 2}]}]
    mrc = pipeline("out/mrc/model")
    mrc({"question": "...", "context": "..."})  # {"text": ..., "start": ..., "end": ..., "score": ...}
    mlm = pipeline("pretrained/")              # no fine-tuning settings: fill-mask
    mlm("今天天气很[MASK]。")                   # {"masks": [{"start": 5, "end": 11, "candidates": [...]}]}

A fine-tuned folder (``config.json`` with ``extra["finetune"]`` settings and ``id2label``, ``vocab.txt``, weights)
gives the classification, NER or MRC pipeline with the sequence length, windows and lower-casing it was trained with;
a pretrained folder gives fill-mask. Results equal ``nezha predict`` on the same inputs.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from nezha.inference.pipelines import (
    PIPELINES,
    ClassificationPipeline,
    FillMaskPipeline,
    InputError,
    MrcPipeline,
    NerPipeline,
    Pipeline,
)
from nezha.inference.runtime import BACKENDS, TASK_OUTPUTS

__all__ = ["ClassificationPipeline", "FillMaskPipeline", "InputError", "MrcPipeline", "NerPipeline", "Pipeline",
           "pipeline"]


def pipeline(
    model_dir: str | os.PathLike,
    *,
    device: str = "auto",
    backend: str = "torch",
    onnx_file: str | os.PathLike | None = None,
    int8: bool = False,
    batch_size: int | None = None,
    top_k: int = 5,
) -> Pipeline:
    """The pipeline for the folder's task.

    Args:
        model_dir: a ``nezha finetune`` ``model/`` folder, or a pretrained folder (fill-mask).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        backend: ``torch``, or ``onnx`` for ONNX Runtime over ``onnx_file`` (default ``model_dir/model.onnx``).
        int8: with ``onnx``, quantize the graph's weights to int8 when loading (dynamic quantization).
        batch_size: rows per forward pass (default: the fine-tuning evaluation batch size, else 32).
        top_k: fill-mask candidates per ``[MASK]``.
    """
    from nezha.inference.runtime import OnnxRunner, TorchRunner, resolve_device
    from nezha.model.config import NezhaConfig
    from nezha.tasks.finetuned import folder_tokenizer, load_task

    model_dir = Path(model_dir)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if int8 and backend != "onnx":
        raise ValueError("int8 applies to backend onnx only")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a model folder)")
    config = NezhaConfig.from_json(model_dir / "config.json")
    task = (config.extra.get("finetune") or {}).get("task", "fill-mask")
    if task not in PIPELINES:
        raise ValueError(f"{model_dir}/config.json: unknown task {task!r} in extra.finetune")
    if task == "fill-mask":
        from nezha.model.modeling import NezhaForMaskedLM

        settings = {"task": task, "max_seq_length": config.max_position_embeddings, "do_lower_case": True}
        tokenizer, labels, model_class = folder_tokenizer(model_dir, True), None, NezhaForMaskedLM
    else:  # the task's own settings, tokenizer, labels and head class, as `nezha predict` loads them
        finetuned = load_task(model_dir, config)
        if finetuned.labels is None and task != "mrc":
            raise ValueError(f"{model_dir}/config.json: no id2label for the {task} labels")
        settings, tokenizer, labels = asdict(finetuned.s), finetuned.tok, finetuned.labels
        model_class = finetuned.model_class(config)
    dev = resolve_device(device)
    outputs = TASK_OUTPUTS[task][1]
    crf = None
    if backend == "torch":
        model = model_class.from_pretrained(model_dir)
        runner = TorchRunner(model, outputs, dev)
        crf = getattr(model, "crf", None)
    else:
        if config.extra.get("use_crf"):
            raise ValueError(f"{model_dir}: a CRF model's Viterbi decoding is not in the ONNX graph; use backend torch")
        path = Path(onnx_file) if onnx_file else model_dir / "model.onnx"
        runner = OnnxRunner(path, outputs, dev, int8=int8)
    cls = PIPELINES[task]
    size = batch_size or settings.get("eval_batch_size") or 32
    extra = {"crf": crf} if task == "ner" else {"top_k": top_k} if task == "fill-mask" else {}
    return cls(runner, tokenizer, settings, labels, size, **extra)

