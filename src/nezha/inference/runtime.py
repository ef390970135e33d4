"""Where the forward pass runs: a PyTorch model or an ONNX Runtime session, behind one small interface.

Both take the three int64 ``(B, T)`` arrays of an exported graph (``input_ids``, ``attention_mask``,
``token_type_ids``) and return the task's outputs by name as numpy arrays, so the task code above them (windows,
decoding, spans) is the same for every backend.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from nezha.tasks.common import mask, pad

# task -> (the export-onnx task name, output names in order)
TASK_OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "classification": ("sequence_classification", ("logits",)),
    "ner": ("token_classification", ("logits",)),
    "mrc": ("question_answering", ("start_logits", "end_logits")),
    "fill-mask": ("masked_lm", ("logits",)),
}
BACKENDS = ("torch", "onnx")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error rather than a silent CPU run."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA device is available")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


class TorchRunner:
    """A task model in eval mode; outputs come back on the CPU as float32."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...], device: torch.device):
        self.model = model.to(device).eval()
        self.outputs = outputs
        self.device = device

    @torch.inference_mode()
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        out = self.model(**tensors)
        return {name: getattr(out, name).float().cpu().numpy() for name in self.outputs}


class OnnxRunner:
    """An ONNX Runtime session over a file written by ``nezha export-onnx`` (optionally quantized to int8)."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, outputs: tuple[str, ...], device: torch.device, int8: bool = False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("backend onnx needs onnxruntime: pip install 'nezha-pytorch[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX file; write one with `nezha export-onnx MODEL_DIR --task TASK "
                                    f"--output {path}`")
        self._tmp = None
        if int8:
            path = self._quantized(path)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        names = {o.name for o in self.session.get_outputs()}
        if not set(outputs) <= names:
            raise ValueError(f"{path}: graph outputs {sorted(names)} lack {sorted(set(outputs) - names)}; was it "
                             "exported for this model's task?")
        self.outputs = outputs
        self.path = path

    def _quantized(self, path: Path) -> Path:
        """Dynamic int8 weights (MatMul/Gemm), written to a private temporary folder removed with the runner."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        self._tmp = tempfile.TemporaryDirectory(prefix="nezha-int8-")
        out = Path(self._tmp.name) / f"{path.stem}.int8.onnx"
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
        return out

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = self.session.run(list(self.outputs), inputs)
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.outputs, got)}


def pad_batch(rows: list[list[int]], pad_id: int, types: list[list[int]] | None = None) -> dict[str, np.ndarray]:
    """Right-padded ``input_ids``/``attention_mask``/``token_type_ids`` arrays, ``(B, T)`` int64, padded as
    fine-tuning's batches are."""
    ids = pad(rows, pad_id).numpy()
    tt = pad(types, 0).numpy() if types is not None else np.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": mask(rows).numpy(), "token_type_ids": tt}
