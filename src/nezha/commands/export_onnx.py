"""``nezha export-onnx MODEL_DIR --task TASK --output model.onnx``: ONNX with dynamic batch and sequence axes.

The exported file is run with ONNX Runtime at two sequence lengths and compared with PyTorch before it is kept.
Needs the ``onnx`` extra (``pip install 'nezha-pytorch[onnx]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import argparse

TASK_NAMES = ("base", "sequence_classification", "token_classification", "question_answering", "masked_lm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a from_pretrained folder (config.json + model.safetensors)")
    parser.add_argument("--task", required=True, choices=TASK_NAMES, help="which head to export")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest |ONNX Runtime - PyTorch| accepted by the check (default 1e-4)")


def run(args: argparse.Namespace) -> int:
    from nezha.cli import UserError

    try:
        import onnxscript  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise UserError("ONNX export needs the onnx extra: pip install 'nezha-pytorch[onnx]'") from None
    from nezha.convert.onnx_export import export_from_pretrained

    report = export_from_pretrained(args.model_dir, args.task, args.output, opset=args.opset, atol=args.atol)
    loading = getattr(report, "loading_report", None)
    if loading is not None and loading.newly_initialized:
        print(f"warning: {args.model_dir} has no trained {args.task} head; exported with freshly initialised "
              f"{', '.join(loading.newly_initialized)} (fine-tune first for useful outputs)")
    if not report.max_abs_diff:
        print("note: onnxruntime is not installed, so the exported graph was not checked")
    print(report)
    return 0
