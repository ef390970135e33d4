"""Learning-rate schedule of the original NEZHA ``optimization.py``: linear warmup from 0, then linear decay to 0.

The original computes ``polynomial_decay(adjusted_init_lr, global_step, num_train_steps)`` with
``adjusted_init_lr = init_lr / (1 - warmup / total)`` (so the decay meets the warmup line at ``init_lr`` with no jump)
and replaces it by ``init_lr * global_step / warmup`` while ``global_step < warmup``. After warmup that is
``init_lr * (total - step) / (total - warmup)``: the decay below, with ``power = 1`` and ``floor = 0``.

A pure function of the step, so resuming needs no scheduler object state beyond the step counter, and
``lr_at`` can be unit-tested and plotted on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def lr_at(step: int, *, warmup: int, total: int, peak: float, floor: float = 0.0, power: float = 1.0) -> float:
    """Learning rate of the update made at global step ``step`` (0-based: the step count before that update).

    Warmup: ``peak * step / warmup`` while ``step < warmup`` (the first update has lr 0, as in the original); then
    ``floor + (peak - floor) * (1 - progress) ** power`` with ``progress`` going from 0 at the end of warmup to 1 at
    ``total``; ``floor`` afterwards. ``power = 1, floor = 0`` (the defaults) is the original's schedule exactly.
    """
    if warmup < 0 or total < 0:
        raise ValueError(f"warmup ({warmup}) and total ({total}) must be >= 0")
    if step < warmup:
        return peak * step / warmup
    if step >= total:
        return floor
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * (1.0 - progress) ** power


@dataclass
class LRSchedule:
    """Writes ``lr_at(step)`` into every param group (scaled by the group's ``lr_scale``, default 1).

    Its state is only the step counter, saved in checkpoints so a resumed run continues the same curve.
    """

    optimizer: torch.optim.Optimizer
    warmup: int
    total: int
    peak: float
    floor: float = 0.0
    power: float = 1.0
    step_count: int = 0

    def lr(self, step: int | None = None) -> float:
        s = self.step_count if step is None else step
        return lr_at(s, warmup=self.warmup, total=self.total, peak=self.peak, floor=self.floor, power=self.power)

    def apply(self) -> float:
        """Set the lr for the coming optimizer step; returns it."""
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "warmup": self.warmup, "total": self.total, "peak": self.peak,
                "floor": self.floor, "power": self.power}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
