"""Several processes training one model (``torchrun``, DistributedDataParallel): set-up and the few collectives
the trainer needs.

>>> with distributed(torch.device("cuda")) as world:   # under `torchrun --nproc_per_node=4 -m prunekit train ...`
...     world.rank, world.world_size, world.device      # 0..3, 4, cuda:<LOCAL_RANK>

A process started by ``torchrun`` finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment;
:func:`distributed` then joins the process group (backend ``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``;
``gloo`` on the CPU) and leaves it at the end. One process started by torchrun (``--nproc_per_node=1``) joins a
group of one, so a single GPU runs the same DistributedDataParallel and NCCL path as several. Without torchrun
it does nothing and every helper here behaves as for a single process of rank 0, so the same code runs both
ways.

Convention: rank 0 alone writes files and prints results (:func:`is_main`); the others compute and keep quiet.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["World", "launched", "distributed", "world", "rank_device", "is_main", "barrier", "main_first",
           "all_gather_object", "broadcast_object", "all_reduce_sum", "average_buffers"]


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` in 0..world_size-1, ``local_rank`` on its machine, the ``backend``
    (None outside a process group) and the ``device`` it trains on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True inside a torchrun process group (DistributedDataParallel), a group of one process included."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes."""
        return self.rank == 0


def launched() -> bool:
    """True when this process was started by torchrun (``TORCHELASTIC_RUN_ID`` set, one process too) or by
    another launcher as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world(device: torch.device | str | None = None) -> World:
    """The current :class:`World` (a single process of rank 0 when no process group is active)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if not _active():
        return World(device=dev)
    return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(),
                 dist.get_backend(), dev)


def rank_device(device: torch.device | str) -> torch.device:
    """The device this rank uses for ``device``: ``cuda:LOCAL_RANK`` for any CUDA device when launched by
    torchrun, else ``device`` itself."""
    device = torch.device(device)
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def is_main() -> bool:
    """True unless this is a process of rank > 0 in an active process group."""
    return not _active() or dist.get_rank() == 0


@contextmanager
def distributed(device: torch.device | str) -> Iterator[World]:
    """Join the torchrun process group for the body and leave it afterwards; yields the :class:`World`.

    ``device``: the device asked for; on CUDA each rank takes ``cuda:LOCAL_RANK`` (and the ``nccl`` backend),
    elsewhere the device stays and the backend is ``gloo``; torchrun's one process joins a group of one. Not
    launched by torchrun: yields a single-process World on ``device`` (backend None) and does nothing else.
    Already inside a process group: joins nothing, leaves nothing.
    """
    device = torch.device(device)
    if not launched() or not dist.is_available():
        yield World(device=device)
        return
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        yield world(device)
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield world(device)
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing for a single process)."""
    if _active():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Run the body on rank 0 first and on the other ranks once it is done (e.g. decoding a data set into the
    cache, which rank 0 writes and the others then read)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for a single process); picklable objects."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (the others' ``obj`` is ignored); ``obj`` itself for a single process."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over the ranks of a few numbers (float64 on ``device``; ``values`` for one process)."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Replace every floating-point buffer (BatchNorm's running mean and variance) by its mean over the ranks,
    so that all ranks hold the same model; integer buffers (``num_batches_tracked``) are equal already."""
    if not _active():
        return
    n = dist.get_world_size()
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(n)
