"""Training metrics: JSONL (durable, appended per record), CSV per split, TensorBoard when installed, PNG plot.

Only the main rank writes. On resume the log is cut back to the checkpoint's step, so the records of steps that
were run before a crash and will be run again are not duplicated.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

from nezha.io.atomic import atomic_write, atomic_write_text

logger = logging.getLogger("nezha")


class MetricsLogger:
    """``log(step, split, **values)`` appends ``{"step", "split", ...}`` to ``metrics.jsonl``.

    ``write_csv()`` writes ``metrics_<split>.csv``; ``plot(path)`` draws loss and accuracy curves.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ):
        self.directory = Path(directory)
        self.enabled = enabled
        self.path = self.directory / "metrics.jsonl"
        self.records: list[dict] = []
        self._tb = None
        if not enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            if resume_step is None:
                self.path.unlink()  # a fresh run in a reused folder
            else:
                self.records = [r for r in _read_jsonl(self.path) if r.get("step", 0) <= resume_step]
                atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.directory / "tensorboard"), purge_step=resume_step)
            except ImportError:
                logger.info("tensorboard is not installed (pip install 'nezha-pytorch[tensorboard]'); "
                            "logging to JSONL/CSV")
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def log(self, step: int, split: str = "train", **values: float) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: _plain(v) for k, v in values.items()}}
        self.records.append(record)
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def write_csv(self) -> list[Path]:
        """One CSV per split with the union of keys as columns (missing values empty)."""
        if not self.enabled:
            return []
        paths = []
        for split in dict.fromkeys(r["split"] for r in self.records):
            rows = [r for r in self.records if r["split"] == split]
            keys = list(dict.fromkeys(k for r in rows for k in r if k != "split"))
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            path = self.directory / f"metrics_{split}.csv"
            atomic_write_text(path, buf.getvalue())
            paths.append(path)
        return paths

    def plot(
        self,
        path: str | os.PathLike | None = None,
        *,
        keys: tuple[str, ...] = ("loss", "mlm_loss", "nsp_loss"),
        acc_keys: tuple[str, ...] = ("mlm_acc", "nsp_acc"),
        baselines: dict[str, float] | None = None,
    ) -> Path | None:
        """Loss (left) and accuracy (right) against step for every split, as a PNG (matplotlib, Agg backend)."""
        if not self.enabled or not self.records:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.directory / "metrics.png"
        fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(12, 4.5))
        for split in dict.fromkeys(r["split"] for r in self.records):
            rows = [r for r in self.records if r["split"] == split]
            style = "-" if split == "train" else "o--"
            for ax, names in ((ax_l, keys), (ax_a, acc_keys)):
                for k in names:
                    pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
                    if pts:
                        ax.plot(*zip(*pts), style, label=f"{split} {k}", markersize=3)
        for k, v in (baselines or {}).items():
            (ax_a if "acc" in k else ax_l).axhline(v, color="gray", linestyle=":", label=k)
        ax_l.set(xlabel="step", ylabel="loss", title="loss")
        ax_a.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
        for ax in (ax_l, ax_a):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
        plt.close(fig)
        return path

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: everything after it is unreliable
    return out


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` (stops at a line cut short by a crash)."""
    return _read_jsonl(Path(path))
