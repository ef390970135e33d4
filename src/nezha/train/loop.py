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

    def grad_scaler(self, init_scale: float = 2.0**32, growth_interval: int = 1000,
                    backoff_after: int = 2) -> DynamicLossScaler:
        """The original's dynamic loss scaler, enabled only for fp16 (see :class:`DynamicLossScaler`)."""
        return DynamicLossScaler(init_scale, growth_interval=growth_interval, backoff_after=backoff_after,
                                 enabled=self.name == "fp16")


class DynamicLossScaler:
    """fp16 loss scaling as the original NEZHA run (TF ``ExponentialUpdateLossScaleManager(init_loss_scale=2**32,
    incr_every_n_steps=1000, decr_every_n_nan_or_inf=2, decr_ratio=0.5)``).

    After ``growth_interval`` finite steps in a row the scale doubles; an overflow resets that count, and the
    ``backoff_after``-th overflow since the last change of scale halves it (never below 1). torch's ``GradScaler``
    halves on every overflow, which is why this is our own. Disabled (fp32/bf16), every method is a no-op.
    """

    def __init__(self, init_scale: float = 2.0**32, *, growth_interval: int = 1000, backoff_after: int = 2,
                 enabled: bool = True):
        if init_scale <= 0 or growth_interval < 1 or backoff_after < 1:
            raise ValueError(f"loss scaler: init_scale ({init_scale}) must be > 0, growth_interval "
                             f"({growth_interval}) and backoff_after ({backoff_after}) >= 1")
        self.scale_value = float(init_scale)
        self.growth_interval, self.backoff_after, self.enabled = growth_interval, backoff_after, enabled
        self.good_steps = self.bad_steps = 0

    def is_enabled(self) -> bool:
        return self.enabled

    def get_scale(self) -> float:
        return self.scale_value if self.enabled else 1.0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value if self.enabled else loss

    def unscale_(self, params: Sequence[torch.Tensor]) -> None:
        """Divide the gradients of ``params`` by the scale, in place."""
        grads = [p.grad for p in params if p.grad is not None]
        if self.enabled and grads:
            torch._foreach_mul_(grads, 1.0 / self.scale_value)

    def update(self, finite: bool) -> None:
        """Count the step and change the scale as the original does."""
        if not self.enabled:
            return
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                if math.isfinite(self.scale_value * 2.0):
                    self.scale_value *= 2.0
                self.good_steps = self.bad_steps = 0
        else:
            self.bad_steps += 1
            self.good_steps = 0
            if self.bad_steps >= self.backoff_after:
                self.scale_value = max(1.0, self.scale_value * 0.5)
                self.bad_steps = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "good_steps": self.good_steps, "bad_steps": self.bad_steps}

    def load_state_dict(self, state: dict) -> None:
        if state:  # an fp32/bf16 checkpoint written with torch's GradScaler holds {}
            self.scale_value = float(state["scale"])
            self.good_steps = int(state.get("good_steps", state.get("_growth_tracker", 0)))
            self.bad_steps = int(state.get("bad_steps", 0))


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
    skipped: bool  # fp16: overflow, the update was skipped (the loss scale may have been lowered)
    stats: dict[str, float] = field(default_factory=dict)  # loss_fn stats summed over micro-batches (this rank)


def train_step(
    model: WrappedModel,
    micro_batches: Sequence[Any],
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    scaler: DynamicLossScaler,
    precision: Precision,
    *,
    max_grad_norm: float = 1.0,
    step: int = 0,
) -> StepOutput:
    """One optimizer step over ``micro_batches`` (gradient accumulation), with global-norm clipping.

    Gradients are all-reduced only on the last micro-batch. A non-finite gradient norm raises
    :class:`NonFiniteLossError` (fp32/bf16) before ``optimizer.step``; with fp16 the update is skipped instead (the
    optimizer's step count does not move either) and ``StepOutput.skipped`` is True. ``max_grad_norm <= 0``
    disables clipping (the norm is still measured).
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
    params = [p for p in model.parameters() if p.grad is not None]
    scaler.unscale_(params)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP2 DTensor
        norm = norm.full_tensor()
    grad_norm = float(norm)
    stats_f = {k: float(v) for k, v in sums.items()}
    finite = math.isfinite(grad_norm)
    if not finite and not scaler.is_enabled():
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, grad_norm, stats_f)
    if finite:
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    scaler.update(finite)
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
