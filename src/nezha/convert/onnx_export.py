"""Export NEZHA models to ONNX with dynamic batch and sequence axes, and check them against PyTorch.

The eager attention path loops over query chunks sized by Python ints and writes in place, and the model checks
token ids with data-dependent reads; neither survives export with symbolic shapes. While exporting
(``torch.compiler.is_exporting()``) the attention therefore runs its whole-sequence form and the input checks are
skipped (an ONNX graph cannot raise). :func:`export_onnx` then runs ONNX Runtime at two sequence lengths other than
the example's and refuses to keep a graph that disagrees with PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import nezha.model.modeling as modeling

# task -> (model class, output names in order)
TASKS: dict[str, tuple[type[modeling.NezhaPreTrainedModel], tuple[str, ...]]] = {
    "base": (modeling.NezhaModel, ("last_hidden_state", "pooler_output")),
    "sequence_classification": (modeling.NezhaForSequenceClassification, ("logits",)),
    "token_classification": (modeling.NezhaForTokenClassification, ("logits",)),
    "question_answering": (modeling.NezhaForQuestionAnswering, ("start_logits", "end_logits")),
    "masked_lm": (modeling.NezhaForMaskedLM, ("logits",)),
}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Output axes that follow the input's sequence length (everything has a dynamic batch axis 0).
_SEQ_OUTPUTS = {"last_hidden_state", "start_logits", "end_logits"}


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter and its graph optimizer log every rewrite and each missing optional torchvision op."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


class _Exportable(nn.Module):
    """Positional tensors in, a tuple of the task's output tensors out (what ONNX graphs look like)."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, name) for name in self.outputs)


@dataclass
class ExportReport:
    path: str
    task: str
    opset: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # "B x T" -> max |onnxruntime - torch|

    def __str__(self) -> str:
        checks = ", ".join(f"{k}: {v:.2e}" for k, v in self.max_abs_diff.items()) or "not checked"
        return f"wrote {self.path} (task {self.task}, opset {self.opset}); max |ORT - PyTorch| {checks}"


def example_inputs(vocab_size: int, batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random ids with some padding and a second segment, shaped ``(batch, length)``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, max(1, length - length // 3):] = 0
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, length // 2:] = 1
    return ids, mask, types


def export_onnx(
    model: modeling.NezhaPreTrainedModel,
    path: str | os.PathLike,
    task: str,
    *,
    opset: int = 18,
    check_lengths: tuple[int, ...] = (7, 45),
    atol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` (an instance of the class for ``task``) to ``path`` and check it with ONNX Runtime.

    The graph takes ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, ``(batch, seq)``, both axes
    dynamic). When onnxruntime is installed the exported file is run at ``check_lengths`` and compared with
    PyTorch; a difference above ``atol`` is an error and the file is not kept.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    cls, outputs = TASKS[task]
    if not isinstance(model, cls):
        raise ValueError(f"task {task!r} needs a {cls.__name__}, got {type(model).__name__}")
    path = Path(path)
    model = model.eval()
    wrapper = _Exportable(model, outputs).eval()
    example = example_inputs(model.config.vocab_size, batch=2, length=16)
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
    dynamic_shapes = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_logs():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, example, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                output_names=list(outputs), dynamic_shapes=dynamic_shapes, verbose=False,
            )
        with _quiet_exporter_logs():
            program.save(str(tmp))
        report = ExportReport(str(path), task, opset)
        report.max_abs_diff = check_onnx(tmp, model, outputs, check_lengths, atol)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return report


def check_onnx(
    onnx_path: str | os.PathLike,
    model: nn.Module,
    outputs: tuple[str, ...],
    lengths: tuple[int, ...],
    atol: float,
) -> dict[str, float]:
    """Run the ONNX file and the PyTorch model on the same inputs; raise when they differ by more than ``atol``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diffs = {}
    for n, length in enumerate(lengths):
        batch = 1 + n % 3
        ids, mask, types = example_inputs(model.config.vocab_size, batch, length, seed=n + 1)
        with torch.no_grad():
            out = model(ids, attention_mask=mask, token_type_ids=types)
        ref = [getattr(out, name).numpy() for name in outputs]
        got = session.run(list(outputs), {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                          "token_type_ids": types.numpy()})
        diff = max(float(abs(a - b).max()) for a, b in zip(got, ref))
        diffs[f"{batch}x{length}"] = diff
        if not diff <= atol:
            raise ValueError(f"exported graph disagrees with PyTorch at batch {batch}, length {length}: "
                             f"max |diff| {diff:.3g} > {atol}")
    return diffs


def export_from_pretrained(
    model_dir: str | os.PathLike, task: str, output: str | os.PathLike, **kwargs
) -> ExportReport:
    """Load ``model_dir`` as the model class of ``task`` and export it (see :func:`export_onnx`)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    model = TASKS[task][0].from_pretrained(model_dir)
    report = export_onnx(model, output, task, **kwargs)
    report.loading_report = getattr(model, "loading_report", None)  # type: ignore[attr-defined]
    return report
