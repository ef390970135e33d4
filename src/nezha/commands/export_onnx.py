"""``nezha export-onnx MODEL_DIR --task TASK --output model.onnx``: ONNX with dynamic batch and sequence axes.

The exported file is run with ONNX Runtime at two sequence lengths and compared with PyTorch before it is kept.
Needs the ``onnx`` extra (``pip install 'nezha-pytorch[onnx]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace

# The heads of nezha.convert.onnx_export, listed here so that --help does not import torch.
Task = Literal["base", "sequence_classification", "token_classification", "question_answering", "masked_lm"]


@dataclass(kw_only=True)
class ExportOnnxSettings:
    """Which model and head to export, and how closely ONNX Runtime must agree with PyTorch."""

    model_dir: str = arg(help="a from_pretrained folder (config.json + model.safetensors)", positional=True)
    task: Task = arg(help="which head to export")
    output: str = arg(help="the .onnx file to write")
    opset: int = arg(18, "ONNX opset")
    atol: float = arg(1e-4, "largest |ONNX Runtime - PyTorch| accepted by the check")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, ExportOnnxSettings)


def run(args: argparse.Namespace) -> int:
    from nezha.errors import UserError

    s = dataclass_from_namespace(ExportOnnxSettings, args)
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise UserError("ONNX export needs the onnx extra: pip install 'nezha-pytorch[onnx]'") from None
    from nezha.convert.onnx_export import export_from_pretrained

    report = export_from_pretrained(s.model_dir, s.task, s.output, opset=s.opset, atol=s.atol)
    loading = getattr(report, "loading_report", None)
    if loading is not None and loading.newly_initialized:
        print(f"warning: {s.model_dir} has no trained {s.task} head; exported with freshly initialised "
              f"{', '.join(loading.newly_initialized)} (fine-tune first for useful outputs)")
    if not report.max_abs_diff:
        print("note: onnxruntime is not installed, so the exported graph was not checked")
    print(report)
    return 0
