"""Training and test loaders: :class:`DeviceLoader` (a whole 32x32 :class:`~prunekit.data.ArraySet` on the device,
after airbench) and :class:`FolderLoader` (a DataLoader over a map-style dataset). Both follow :class:`TrainLoader`,
the interface that :func:`prunekit.training.train.fit` needs of its training data; any iterable of (x, y) batches serves
for testing.
"""
from __future__ import annotations

import os
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from prunekit.data.sets import ArraySet
from prunekit.defaults import EVAL_BATCH, TRAIN_BATCH
from prunekit.errors import UserError

__all__ = ["DeviceLoader", "FolderLoader", "TrainLoader", "batch_crop", "make_loaders"]

def make_loaders(train, test, batch_size: int, *, device: str | torch.device, seed: int = 0,
                 num_workers: int | None = None) -> tuple[TrainLoader, TrainLoader]:
    """(training, test) loaders of two :class:`ArraySet` (:class:`DeviceLoader`, test batches of
    :data:`prunekit.defaults.EVAL_BATCH`) or two map-style datasets (:class:`FolderLoader` with ``num_workers``,
    test batches of ``batch_size``)."""
    if isinstance(train, ArraySet):
        return (DeviceLoader(train, batch_size, train=True, device=device, seed=seed),
                DeviceLoader(test, EVAL_BATCH, train=False, device=device))
    return (FolderLoader(train, batch_size, train=True, device=device, seed=seed, num_workers=num_workers),
            FolderLoader(test, batch_size, train=False, device=device, num_workers=num_workers))


class TrainLoader(Protocol):
    """What :func:`prunekit.training.train.fit` needs of its training data (:class:`DeviceLoader`, :class:`FolderLoader`).

    Iterating yields (x float (B, C, H, W), y int64 (B,)) already on ``device``, ``len()`` batches of
    ``batch_size``. ``generator`` drives every random draw of the data order (and augmentation) that
    ``torch``'s global RNG does not; fit saves and restores its state, so that a resumed run sees the same
    batches. ``sampler`` is None until :meth:`shard` gives this process (rank ``rank`` of ``num_replicas``) its
    share of each epoch, reshuffled by :meth:`set_epoch`.
    """

    device: torch.device
    batch_size: int
    generator: torch.Generator
    sampler: object | None

    def shard(self, num_replicas: int, rank: int) -> TrainLoader: ...

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self): ...


class _Epochs:
    """What :class:`FolderLoader` and :class:`DeviceLoader` share: the batches of an epoch, optionally only one
    DDP rank's share. Subclasses set ``train``, ``batch_size``, ``seed``, ``generator`` and ``sampler`` (None
    until :meth:`shard`) and define :meth:`_count` (images in the split)."""

    def _count(self) -> int:
        raise NotImplementedError

    def shard(self, num_replicas: int, rank: int):
        """Iterate only rank ``rank``'s share (1/num_replicas, the same size on every rank) of each epoch's
        shuffled images, by a :class:`~torch.utils.data.DistributedSampler` seeded with ``seed``; the augmentation
        draws from ``generator`` reseeded with ``seed + rank``. Returns the loader itself."""

        if not self.train:
            raise UserError("only a training loader is sharded")
        self.sampler = DistributedSampler(range(self._count()), num_replicas=num_replicas, rank=rank,
                                          shuffle=True, seed=self.seed, drop_last=True)
        self.generator.manual_seed(self.seed + rank)
        return self

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle a sharded loader for ``epoch`` (every rank must pass the same); nothing when unsharded."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches per epoch: a partial last batch is dropped when training, kept when testing."""
        n = self._count() if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.train else -(-n // self.batch_size)


class FolderLoader(_Epochs):
    """Batches of a map-style dataset (e.g. :func:`folder_dataset`, items (float (C, H, W), int label)) read by a
    :class:`torch.utils.data.DataLoader` with ``num_workers`` processes and moved to ``device``.

    Yields (x float (B, C, H, W), y int64 (B,)) on ``device`` (pinned memory and non-blocking copies on CUDA).
    With ``train=True``: shuffled each epoch by ``generator`` (a CPU generator seeded by ``seed``) and the last
    incomplete batch dropped; with ``train=False``: in order, all images. The augmentation is the dataset's own
    transform: with workers, each epoch's worker processes are seeded from ``generator`` (no persistent workers,
    so a resumed run repeats them); with ``num_workers=0`` it draws from ``torch``'s global RNG, which
    :func:`prunekit.training.train.fit` saves too. :meth:`shard` and :meth:`set_epoch` work as :class:`DeviceLoader`'s.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int = TRAIN_BATCH,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        num_workers: int | None = None,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.train = dataset, batch_size, train
        self.device = torch.device(device)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = None

    def _count(self) -> int:
        return len(self.dataset)

    def __iter__(self):

        cuda = self.device.type == "cuda"
        loader = DataLoader(self.dataset, self.batch_size, shuffle=self.train and self.sampler is None,
                            sampler=self.sampler, num_workers=self.num_workers, pin_memory=cuda,
                            drop_last=self.train, generator=self.generator)
        for x, y in loader:
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)


# ----------------------------------------------------------------------------------------------
# The device-resident pipeline (after airbench): the whole split as one tensor on the device,
# batches by a device-side permutation, crops and flips as batched tensor ops.


def batch_crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image at its own offset: padded (B, C, H, W), dy/dx int (B,) -> (B, C, size, size) with
    out[b] = padded[b, :, dy[b]:dy[b]+size, dx[b]:dx[b]+size]."""
    ar = torch.arange(size, device=padded.device)
    rows = (dy[:, None] + ar)[:, None, :, None]  # (B, 1, size, 1)
    cols = (dx[:, None] + ar)[:, None, None, :]  # (B, 1, 1, size)
    b = torch.arange(padded.shape[0], device=padded.device)[:, None, None, None]
    c = torch.arange(padded.shape[1], device=padded.device)[None, :, None, None]
    return padded[b, c, rows, cols]


class DeviceLoader(_Epochs):
    """Batches of a whole :class:`ArraySet` kept on ``device``.

    Yields (x float (B, 3, 32, 32) normalised, y int64 (B,)). With ``train=True``: a fresh device-side
    permutation each epoch, random crops with ``crop_padding`` (reflect-padded) and random horizontal
    flips; the last incomplete batch is dropped. With ``train=False``: in order, no augmentation.

    For several processes, :meth:`shard` makes a training loader iterate only this rank's share of each
    epoch (a :class:`torch.utils.data.DistributedSampler`, reshuffled by :meth:`set_epoch`); the crops and
    flips stay batched tensor ops on the device.
    """

    def __init__(
        self,
        data: ArraySet,
        batch_size: int = TRAIN_BATCH,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        crop_padding: int = 4,
        flip: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.train = data, batch_size, train
        self.device, self.dtype = torch.device(device), dtype
        self.crop_padding, self.flip = crop_padding, flip
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        if train and crop_padding > 0:
            p = crop_padding
            self.padded = F.pad(self.images.float(), (p, p, p, p), mode="reflect").to(torch.uint8)
        else:
            self.padded = None
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.sampler = None

    def _count(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n, bs = len(self.labels), self.batch_size
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.int64, device=self.device)
        elif self.train:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.device)
        size = self.images.shape[-1]
        for i in range(len(self)):
            idx = order[i * bs : (i + 1) * bs]
            if self.padded is not None:
                offsets = torch.randint(
                    0, 2 * self.crop_padding + 1, (2, len(idx)), device=self.device, generator=self.generator
                )
                x = batch_crop(self.padded[idx], offsets[0], offsets[1], size)
            else:
                x = self.images[idx]
            if self.train and self.flip:
                mask = torch.rand(len(idx), device=self.device, generator=self.generator) < 0.5
                x = torch.where(mask[:, None, None, None], x.flip(-1), x)
            yield self.data.normalize(x).to(self.dtype), self.labels[idx]
