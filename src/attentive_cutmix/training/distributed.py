"""torchrun / DistributedDataParallel set-up.

``torchrun --nproc_per_node=N -m attentive_cutmix train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` (multi-node too); without them training runs
in one process. NCCL is used on CUDA, gloo on CPU.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun prepared (no-op in a single process); returns this process's rank info."""
    if not launched_by_torchrun():
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":  # resolve_device chose this rank's GPU (cuda:LOCAL_RANK unless one per node)
            torch.cuda.set_device(device.index if device.index is not None else local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


class PeerLostError(RuntimeError):
    """Another process of a DDP job stopped (killed, crashed, out of memory): a collective on this rank failed."""


# What gloo/NCCL/the store say when the other side of a collective is gone (gloo raises a bare RuntimeError);
# other collective errors (a timeout, a mismatch) keep their own message and traceback.
_PEER_GONE = ("closed by peer", "reset by peer", "remote worker", "broken pipe", "connection refused")


def lost_peer(err: BaseException, info: DistInfo) -> bool:
    """``err`` is a collective failing because another rank is gone (not a bug of this rank)."""
    if not info.enabled:
        return False
    text = str(err).lower()
    return isinstance(err, dist.DistNetworkError) or any(marker in text for marker in _PEER_GONE)


def peer_lost_error(err: BaseException, info: DistInfo, *, output_dir: str, resume: str) -> PeerLostError:
    first = (str(err).splitlines() or [type(err).__name__])[0][:300]
    return PeerLostError(f"rank {info.rank}: another process of this {info.world_size}-process job stopped, so a "
                         f"collective failed ({first}). The last checkpoint in {output_dir} (if any) is kept; the "
                         f"failed rank's own log says why it stopped. Then continue with: {resume}")


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(requested: str | None, info: DistInfo | None = None) -> torch.device:
    """``requested`` or cuda (this rank's GPU under torchrun) when available, else cpu."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"unknown device {requested!r}: use cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested} was asked for but CUDA is not available here; use --device cpu")
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if launched_by_torchrun() else 1
        if device.index is not None and local_procs > 1:
            # One index for every process of the node would put all its ranks on one GPU.
            raise ValueError(f"--device {requested} under torchrun with {local_procs} processes per node would put "
                             f"every rank on GPU {device.index}; pass --device cuda (each rank takes "
                             f"cuda:LOCAL_RANK) and choose the GPUs with CUDA_VISIBLE_DEVICES")
        if device.index is None:
            local = int(os.environ.get("LOCAL_RANK", 0)) if launched_by_torchrun() else torch.cuda.current_device()
            device = torch.device("cuda", local)
    return device


def all_reduce_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few numbers over ranks (float64, so counts stay exact)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flags: list[bool], device: torch.device, info: DistInfo) -> list[bool]:
    """Element-wise OR of boolean flags over ranks, so every rank takes the same branch."""
    if not info.enabled:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank, so all ranks evaluate the checkpointed model."""
    if info.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# Preparing the data (rank 0 building an attention cache of ImageNet) can take hours; the process group's own
# timeout (30 min by default) would end the ranks that wait for it.
PREPARE_TIMEOUT = datetime.timedelta(days=7)


def patient_group(info: DistInfo) -> object | None:
    """A gloo group whose barrier waits ``PREPARE_TIMEOUT`` (collective: every rank calls it, before the wait)."""
    if not info.enabled:
        return None
    return dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)


def patient_barrier(info: DistInfo, group: object | None) -> None:
    if info.enabled:
        dist.barrier(group=group)


def eval_shard(dataset: Dataset, info: DistInfo) -> Dataset:
    """Rank ``r`` evaluates items ``r, r + W, r + 2W, ...``: every item exactly once, no padding duplicates."""
    if not info.enabled:
        return dataset
    return Subset(dataset, range(info.rank, len(dataset), info.world_size))


__all__ = ["DistInfo", "setup", "cleanup", "resolve_device", "all_reduce_sum", "any_rank", "broadcast_buffers",
           "barrier", "eval_shard", "launched_by_torchrun", "patient_group", "patient_barrier", "PREPARE_TIMEOUT",
           "PeerLostError", "lost_peer", "peer_lost_error"]
