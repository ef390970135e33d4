"""The reusable pieces of a training loop: precision, one optimizer step with accumulation, stop signals, progress.

Pretraining (``nezha.train.pretrain``) and fine-tuning both build on these::

    precision = Precision.resolve("auto", info.device)
    scaler = precision.grad_scaler()
    model = wrap_model(model, info, "ddp")                    # nezha.train.distributed
    optimizer = build_optimizer(model.module, "adamw", lr=3e-5)  # nezha.train.optim
    schedule = LRSchedule(optimizer, warmup=100, total=1000, peak=3e-5)
    for step in range(start, total):
        schedule.apply()
        out = train_step(model, micro_batches, loss_fn, optimizer, scaler, precision, max_grad_norm=1.0, step=step)
        schedule.step()

``loss_fn(engine, micro_batch) -> (loss, stats)`` returns the micro-batch's share of the step loss (already divided
by the number of micro-batches, or normalised by a global token count) and a dict of detached tensors to sum.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nezha.train.distributed import WrappedModel

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """Mixed-precision policy: autocast dtype and whether a dynamic loss scaler is needed (fp16 only)."""

    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> Precision:
        """"auto" means bf16 on a GPU that supports it, fp32 otherwise. fp16 needs a GPU."""
        if name not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {name!r}")
        if name == "auto":
            name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if name == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA GPU (dynamic loss scaling); on CPU use bf16 or fp32")
        return cls(name, device.type)

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self):
        """Context for forward passes; parameters and optimizer state stay fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self, init_scale: float = 2.0**16, growth_interval: int = 1000) -> torch.amp.GradScaler:
        """A dynamic loss scaler, enabled only for fp16 (×2 after ``growth_interval`` good steps, ×0.5 on overflow)."""
        return torch.amp.GradScaler(
            self.device_type, init_scale=init_scale, growth_interval=growth_interval, enabled=self.name == "fp16"
        )


class NonFiniteLossError(RuntimeError):
    """The loss or gradients became NaN/inf at ``step``; raised before the optimizer touches the weights."""

    def __init__(self, step: int, grad_norm: float, stats: dict[str, float] | None = None):
        self.step, self.grad_norm, self.stats = step, grad_norm, stats or {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.stats.items())
        super().__init__(
            f"non-finite loss/gradients at step {step} (grad norm {grad_norm}; {shown}); stopped without updating "
            "the weights or writing a checkpoint. Lower the learning rate, use bf16/fp32, or resume from the last "
            "checkpoint."
        )


def check_finite_weights(model: WrappedModel, step: int) -> None:
    """Raise :class:`NonFiniteLossError` when any weight is NaN/inf (e.g. an update overflowed them).

    Called before writing a checkpoint, so no checkpoint ever resumes into garbage. Works on DDP and FSDP2 models
    (every rank must call under FSDP: the per-shard norms are gathered).
    """
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    total = torch.stack([n.full_tensor() if hasattr(n, "full_tensor") else n for n in norms]).sum()
    if not torch.isfinite(total):
        raise NonFiniteLossError(step, float("nan"), {"weights": float(total)})


@dataclass
class StepOutput:
    grad_norm: float  # global norm before clipping (after unscaling)
    skipped: bool  # fp16: overflow, the optimizer step was skipped and the loss scale lowered
    stats: dict[str, float] = field(default_factory=dict)  # loss_fn stats summed over micro-batches (this rank)


def train_step(
    model: WrappedModel,
    micro_batches: Sequence[Any],
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    *,
    max_grad_norm: float = 1.0,
    step: int = 0,
) -> StepOutput:
    """One optimizer step over ``micro_batches`` (gradient accumulation), with global-norm clipping.

    Gradients are all-reduced only on the last micro-batch. A non-finite gradient norm raises
    :class:`NonFiniteLossError` (fp32/bf16) before ``optimizer.step``; with fp16 the scaler skips the step instead and
    ``StepOutput.skipped`` is True. ``max_grad_norm <= 0`` disables clipping (the norm is still measured).
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, torch.Tensor] = {}
    n = len(micro_batches)
    for i, mb in enumerate(micro_batches):
        with model.sync_gradients(i == n - 1):
            with precision.autocast():
                loss, stats = loss_fn(model.engine, mb)
            scaler.scale(loss).backward()
        for k, v in stats.items():
            v = v.detach().float()
            sums[k] = sums[k] + v if k in sums else v
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP2 DTensor
        norm = norm.full_tensor()
    grad_norm = float(norm)
    stats_f = {k: float(v) for k, v in sums.items()}
    finite = math.isfinite(grad_norm)
    if not finite and not scaler.is_enabled():
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, grad_norm, stats_f)
    scaler.step(optimizer)
    scaler.update()
    return StepOutput(grad_norm=grad_norm, skipped=not finite, stats=stats_f)


# ---------------------------------------------------------------------------------------------------- signals
class StopSignal:
    """Turns SIGTERM (and optionally SIGINT) into a flag the loop checks between steps, so it can save and exit.

    Use as a context manager; previous handlers are restored on exit. ``requested`` is local to this process: in a
    multi-process run, combine it over ranks (e.g. in an all-reduce you already do) so every rank stops together.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __enter__(self) -> StopSignal:
        for s in self.signals:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: cannot install handlers, so never requested
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


# ---------------------------------------------------------------------------------------------------- progress
class Throughput:
    """Sequences and tokens per second since the last ``read()``."""

    def __init__(self):
        self._t = time.perf_counter()
        self._seqs = self._tokens = 0

    def add(self, seqs: int, tokens: int) -> None:
        self._seqs += seqs
        self._tokens += tokens

    def read(self) -> tuple[float, float]:
        now = time.perf_counter()
        dt = max(now - self._t, 1e-9)
        out = (self._seqs / dt, self._tokens / dt)
        self._t, self._seqs, self._tokens = now, 0, 0
        return out


class ProgressBar:
    """tqdm over optimizer steps (disabled on non-main ranks), with a compact metrics postfix."""

    def __init__(self, total: int, *, initial: int = 0, enabled: bool = True, desc: str = "train"):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step",
                         dynamic_ncols=True, mininterval=1.0)

    def update(self, n: int = 1, **metrics: float) -> None:
        if metrics:
            self._bar.set_postfix({k: _fmt(v) for k, v in metrics.items()}, refresh=False)
        self._bar.update(n)

    def write(self, text: str) -> None:
        self._bar.write(text)

    def close(self) -> None:
        self._bar.close()


def _fmt(v: float) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(v)
