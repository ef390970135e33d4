"""Everything about running on several processes: torchrun environment, process group, DDP/FSDP2 wrapping, sharding.

Launch with ``torchrun --nproc_per_node=N [--nnodes=M --node_rank=R --master_addr=HOST] -m nezha.cli pretrain ...``
(or the ``nezha`` script). Without torchrun's variables everything runs as one process with no process group.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` processes and the device it drives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", backend: str | None = None, timeout_s: float = 1800) -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun), pick the device, start the process group.

    ``device``: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu" or "cuda". The backend is nccl on
    GPU and gloo on CPU unless given.
    """
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU is available")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``t`` over ranks in place with ``op`` ("sum", "max" or "min"); a no-op in one process. Returns ``t``."""
    if op not in _REDUCE_OPS:
        raise ValueError(f"all_reduce: op must be one of {sorted(_REDUCE_OPS)}, got {op!r}")
    if dist.is_initialized():
        dist.all_reduce(t, op=_REDUCE_OPS[op])
    return t


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from ``src`` to every rank (identity in one process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------------- wrapping
STRATEGIES = ("ddp", "fsdp")


class WrappedModel:
    """A model prepared for training: ``engine`` is what you call; ``module`` is the plain ``nn.Module``.

    Keeps DDP/FSDP/compile details in one place: :meth:`sync_gradients` is the context for gradient accumulation
    (no all-reduce on the micro-batches before the last), :meth:`unwrap` gives the module to save.
    """

    def __init__(self, module: nn.Module, engine: nn.Module, strategy: str | None):
        self.module = module
        self.engine = engine
        self.strategy = strategy  # None (one process), "ddp" or "fsdp"
        self._ddp = engine if isinstance(engine, nn.parallel.DistributedDataParallel) else None

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def parameters(self):
        return self.engine.parameters()

    def train(self, mode: bool = True):
        self.engine.train(mode)
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def sync_gradients(self, sync: bool):
        """Inside, backward all-reduces gradients only when ``sync`` (the last micro-batch of a step)."""
        if self._ddp is not None and not sync:
            with self._ddp.no_sync():
                yield
        elif self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(sync)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)
        else:
            yield


def wrap_model(
    model: nn.Module, info: DistInfo, strategy: str = "ddp", compile: bool = False, fsdp_blocks: tuple = ()
) -> WrappedModel:
    """Move to the device and wrap: DDP, or FSDP2 ``fully_shard`` on each block in ``fsdp_blocks`` then the root.

    With one process no wrapper is used. ``compile`` applies ``torch.compile`` on top.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"--distributed must be one of {STRATEGIES}, got {strategy!r}")
    model.to(info.device)
    engine: nn.Module = model
    used = None
    if info.distributed:
        if strategy == "ddp":
            ids = [info.device.index] if info.device.type == "cuda" else None
            engine = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            from torch.distributed.fsdp import fully_shard

            for block in fsdp_blocks:
                fully_shard(block)
            fully_shard(model)
            engine = model
        used = strategy
    if compile:
        engine = torch.compile(engine)
    return WrappedModel(model, engine, used)


# ---------------------------------------------------------------------------------------------------- sharding
class EpochSampler:
    """Which instances each rank reads at each step: a seeded permutation per epoch, split by step and rank.

    Step ``s`` of an epoch takes the slice ``perm[s*G:(s+1)*G]`` (``G`` = global batch = world × per-rank batch);
    the slice is cut into ``world × accum`` contiguous micro-batches, rank ``r`` taking pieces ``r*accum ..``.
    So 2 ranks × batch b read exactly the instances that 1 rank × batch 2b reads, and every instance is read exactly
    once per epoch: the last step of an epoch is smaller and is divided as evenly as possible (a rank whose piece is
    empty gets one instance with weight 0, so collective ops still line up). The position is a pure function of the
    global step, which is what makes resume exact.
    """

    def __init__(self, pool: np.ndarray | int, *, batch_size: int, accum: int, rank: int, world_size: int, seed: int):
        self.pool = np.arange(pool) if isinstance(pool, (int, np.integer)) else np.asarray(pool, dtype=np.int64)
        if batch_size % accum:
            raise ValueError(
                f"train_batch_size ({batch_size}) must be a multiple of gradient_accumulation_steps ({accum})"
            )
        if len(self.pool) == 0:
            raise ValueError("no training instances")
        self.batch_size, self.accum, self.rank, self.world, self.seed = batch_size, accum, rank, world_size, seed
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = -(-len(self.pool) // self.global_batch)

    def permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return self.pool[rng.permutation(len(self.pool))]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within epoch) of global step ``step`` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def micro_batches(self, step: int) -> list[tuple[np.ndarray, bool]]:
        """This rank's micro-batches for global step ``step``: ``[(indices, is_real), ...]`` (``accum`` of them)."""
        epoch, s = self.position(step)
        perm = self._cached_perm(epoch)
        chunk = perm[s * self.global_batch:(s + 1) * self.global_batch]
        pieces = np.array_split(chunk, self.world * self.accum)  # equal pieces except in an epoch's last step
        mine = pieces[self.rank * self.accum:(self.rank + 1) * self.accum]
        return [(p, True) if len(p) else (perm[:1], False) for p in mine]

    def _cached_perm(self, epoch: int) -> np.ndarray:
        if getattr(self, "_perm_epoch", None) != epoch:
            self._perm, self._perm_epoch = self.permutation(epoch), epoch
        return self._perm
