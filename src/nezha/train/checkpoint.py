"""Training checkpoints: atomic step folders with everything needed to continue exactly, keeping the last k.

Layout of ``<dir>/step-00001000/``::

    model.safetensors      # full (unsharded) weights, tied MLM decoder omitted as in from_pretrained folders
    trainer_state.pt       # optimizer, schedule, grad scaler and other stateful objects, plus meta
    rng/rank-00000.pt      # torch CPU/CUDA and Python RNG states of each rank
    meta.json              # step, world size, batch layout, time; written last

Each checkpoint is built in ``.tmp-step-...`` and renamed when complete (rename is atomic on one file system), so a
kill at any moment leaves either the previous checkpoints or the new one, never a partial folder that looks
valid. Re-saving a step that exists (the final save right after a periodic one) first renames the old folder aside
to ``.old-step-...``, renames the new one into place, then deletes the old one; if a kill lands between the two
renames, the next listing renames the aside folder back. In multi-node runs ``<dir>`` must be on a file system that
all nodes share.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from nezha.io.atomic import atomic_write, atomic_write_text
from nezha.model.pretrained import TIED_KEYS, load_state_dict_strict
from nezha.train.distributed import DistInfo, WrappedModel, barrier

logger = logging.getLogger("nezha")

_STEP_DIR = re.compile(r"^step-(\d+)$")
_ASIDE_PREFIX = ".old-"  # an existing step folder while a re-save of that step swaps in the new one


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _full_state_dicts(model: WrappedModel, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full model and optimizer state dicts (a collective under FSDP; every rank must call)."""
    if model.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model.module, options=opts)
        osd = get_optimizer_state_dict(model.module, optimizer, options=opts) if optimizer is not None else None
        return msd, osd
    return model.module.state_dict(), optimizer.state_dict() if optimizer is not None else None


class CheckpointManager:
    """Save/find/load training checkpoints under ``directory``; see the module docstring.

    ``stateful`` objects (schedule, grad scaler, ...) need ``state_dict()``/``load_state_dict()``; ``meta`` is a
    JSON-able dict stored in ``meta.json`` (use it for what must match on resume: world size, batch layout).
    """

    def __init__(self, directory: str | os.PathLike, info: DistInfo, keep: int = 3):
        if keep < 1:
            raise ValueError(f"--keep_checkpoints must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.info = info
        self.keep = keep

    # ------------------------------------------------------------------ finding
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (after finishing any re-save a kill interrupted)."""
        if not self.directory.is_dir():
            return []
        _restore_interrupted_swaps(self.directory)
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found) if (p / "meta.json").is_file()]

    def latest(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1] if cps else None

    def resolve(self, resume: str | None) -> Path | None:
        """The checkpoint a ``--resume`` value names: "auto" the latest one (None when there is none yet),
        "never" (or empty) None, anything else that folder."""
        if resume == "auto":
            return self.latest()
        if not resume or resume == "never":
            return None
        return Path(resume)

    # ------------------------------------------------------------------ saving
    def save(
        self,
        step: int,
        model: WrappedModel,
        optimizer: torch.optim.Optimizer,
        stateful: dict[str, Any] | None = None,
        meta: dict | None = None,
    ) -> Path:
        """Write checkpoint ``step`` atomically (all ranks call; only rank 0 writes shared files)."""
        msd, osd = _full_state_dicts(model, optimizer)
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f".tmp-step-{step:08d}"
        if self.info.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / "rng").mkdir(parents=True)
        barrier()
        atomic_write(tmp / "rng" / f"rank-{self.info.rank:05d}.pt",
                     lambda p: torch.save(rng_state(self.info.device), p))
        barrier()
        if self.info.is_main:
            from safetensors.torch import save_file

            weights = {k: v.detach().contiguous().cpu() for k, v in msd.items() if k not in TIED_KEYS}
            atomic_write(tmp / "model.safetensors", lambda p: save_file(weights, str(p), metadata={"format": "pt"}))
            trainer_state = {"optimizer": osd, **{k: obj.state_dict() for k, obj in (stateful or {}).items()}}
            atomic_write(tmp / "trainer_state.pt", lambda p: torch.save(trainer_state, p))
            full_meta = {"step": step, "world_size": self.info.world_size, "time": time.time(), **(meta or {})}
            atomic_write_text(tmp / "meta.json", json.dumps(full_meta, indent=2) + "\n")
            _swap_into_place(tmp, final)
            for old in self.checkpoints()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return final

    # ------------------------------------------------------------------ loading
    def read_meta(self, path: str | os.PathLike) -> dict:
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a training checkpoint (no meta.json)")
        try:
            return json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: corrupt ({e})") from None

    def load(
        self,
        path: str | os.PathLike,
        model: WrappedModel,
        optimizer: torch.optim.Optimizer,
        stateful: dict[str, Any] | None = None,
        expect: dict | None = None,
    ) -> dict:
        """Restore everything saved by :meth:`save`; returns the meta dict.

        ``expect``: meta values that must be equal (e.g. ``world_size``, ``global_batch``); a difference raises a
        ValueError naming them, before any weights are touched. A checkpoint of another model size fails the same
        way, listing the mismatched tensors.
        """
        path = Path(path)
        meta = self.read_meta(path)
        expect = {"world_size": self.info.world_size, **(expect or {})}
        diffs = [f"{k}: checkpoint {meta.get(k)!r} vs this run {v!r}" for k, v in expect.items() if meta.get(k) != v]
        if diffs:
            raise ValueError(
                f"{path}: cannot resume exactly, the run layout changed ({'; '.join(diffs)}). Use the same number of "
                "processes and batch settings, or start a new run from the exported model (pretrain --init_checkpoint, "
                "finetune --model)."
            )
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path / "model.safetensors"))
        except Exception as e:
            raise ValueError(f"{path / 'model.safetensors'}: cannot read ({e})") from None
        if model.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            _check_shapes(model.module, sd, str(path))
            full = dict(sd)
            own = model.module.state_dict()
            for k in TIED_KEYS:
                if k in own and k not in full:
                    full[k] = full["nezha.embeddings.word_embeddings.weight"]
            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(model.module, full, options=opts)
            state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
            set_optimizer_state_dict(model.module, optimizer, state["optimizer"], options=opts)
        else:
            load_state_dict_strict(model.module, sd, str(path / "model.safetensors"))
            state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
        for k, obj in (stateful or {}).items():
            if k not in state:
                raise ValueError(f"{path}: trainer_state.pt lacks {k!r}")
            obj.load_state_dict(state[k])
        rng_path = path / "rng" / f"rank-{self.info.rank:05d}.pt"
        set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=True), self.info.device)
        return meta


def _check_shapes(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    own = {k: tuple(v.shape) for k, v in module.state_dict().items() if k not in TIED_KEYS}
    errors = [f"missing: {k}" for k in own if k not in sd]
    errors += [f"unexpected: {k}" for k in sd if k not in own]
    errors += [f"shape of {k}: checkpoint {tuple(sd[k].shape)} vs model {s}" for k, s in own.items()
               if k in sd and tuple(sd[k].shape) != s]
    if errors:
        raise ValueError(f"{source}: checkpoint does not fit the model config:\n  " + "\n  ".join(errors[:30]))


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (a re-save of its step) stays whole until ``tmp`` is in."""
    aside = final.with_name(_ASIDE_PREFIX + final.name)
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        os.replace(final, aside)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if aside.exists():
        shutil.rmtree(aside)


def _restore_interrupted_swaps(directory: Path) -> None:
    """Finish re-saves that a kill interrupted: restore the old folder if the new one never made it into place.

    Safe when several ranks list at once: the rename succeeds for one of them, the others find the folder gone.
    """
    for aside in directory.glob(_ASIDE_PREFIX + "step-*"):
        final = aside.with_name(aside.name[len(_ASIDE_PREFIX):])
        if (final / "meta.json").is_file():
            shutil.rmtree(aside, ignore_errors=True)  # the new folder is in place; only the delete was missed
            continue
        try:
            os.replace(aside, final)
        except FileNotFoundError:  # another rank restored it first
            continue
        logger.warning("%s: restored after a re-save of this step was interrupted", final)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
