"""The probe set that data-driven criteria stream: a fixed, re-iterable sequence of batches.

One way in: every criterion takes ``probe=``, anything :func:`as_probe` accepts:

- an :class:`~prunekit.data.ArraySet`: :data:`prunekit.defaults.PROBE` ``.n`` images (640: 5 batches x 128, as
  HRank and CHIP do) drawn by its seed, normalised with the set's statistics;
- a :class:`~prunekit.data.BoxProbeSet` (for Map-EX): every image, with its boxes;
- a re-iterable of ``(x, y)`` or ``(x, y, boxes)`` batches (a list, a ``DeviceLoader(train=False)``...);
- a :class:`Probe` (returned as is).

Build a :class:`Probe` with :meth:`Probe.from_arrays` / :meth:`Probe.from_boxes` to choose n, batch size and
seed. Its :attr:`Probe.key` names its content (a hash of the images, labels and boxes, and the batch size),
for the score cache.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from prunekit.data import ArraySet, BoxProbeSet, load_arrays, make_box_probe, normalization
from prunekit.defaults import PROBE
from prunekit.errors import UserError

__all__ = ["Batch", "Probe", "ProbeSpec", "as_probe", "box_set", "make_probe"]


@dataclass(frozen=True)
class Batch:
    """x: float (B, C, H, W) normalised, y: int64 (B,), boxes: None or B tensors (k_i, 4) of pixel corners
    [x0, y0, x1, y1) in x's coordinates; all on one device."""

    x: torch.Tensor
    y: torch.Tensor
    boxes: list[torch.Tensor] | None = None


class Probe:
    """A re-iterable sequence of batches, moved to the model's device as they are read.

    ``source``: a re-iterable (a list, a loader; not a generator) of ``(x, y)`` or ``(x, y, boxes)``;
    ``key``: its identity for the cache (default: a hash of every batch, computed once on first use).
    """

    def __init__(self, source: Iterable, *, key: str | None = None):
        if iter(source) is source:
            raise UserError("a probe must be re-iterable (a list or a loader), not an iterator or generator: "
                             "its content is hashed for the score cache, then read, and linear_ensembles "
                             "reads it once per mask")
        self._source = source
        self._key = key

    def __len__(self) -> int:
        """Number of batches."""
        return len(self._source)

    def batches(self, device: torch.device | str) -> Iterator[Batch]:
        """The batches, in order, on ``device``."""
        for item in self._source:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise UserError(f"a probe batch must be (x, y) or (x, y, boxes), got {type(item).__name__}")
            x, y = item[0].to(device), item[1].to(device)
            boxes = [b.to(device) for b in item[2]] if len(item) == 3 else None
            yield Batch(x.float(), y, boxes)

    @property
    def has_boxes(self) -> bool:
        """Whether the batches carry boxes (needed by Map-EX)."""
        first = next(iter(self._source), None)
        return first is not None and len(first) == 3

    @property
    def key(self) -> str:
        """A hex digest of the content (images, labels, boxes, batch boundaries)."""
        if self._key is None:
            h = hashlib.sha256()
            for item in self._source:
                for t in (item[0], item[1], *(item[2] if len(item) == 3 else ())):
                    h.update(str(tuple(t.shape)).encode())
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._key = h.hexdigest()[:20]
        return self._key

    @classmethod
    def from_arrays(
        cls, data: ArraySet, n: int = PROBE.n, *, batch_size: int = PROBE.batch_size, seed: int = PROBE.seed
    ) -> Probe:
        """``n`` images of ``data`` drawn without replacement by ``seed`` (all if n >= len(data)), normalised
        with the set's mean and std, in batches of ``batch_size``."""
        if n < 1 or batch_size < 1:
            raise UserError(f"n and batch_size must be at least 1, got n={n}, batch_size={batch_size}")
        sub = data.subset(n, seed=seed)
        batches = _Normalised(sub.images, sub.labels, None, sub.normalize, batch_size)
        h = hashlib.sha256(sub.images.numpy().tobytes())
        h.update(sub.labels.numpy().tobytes())
        h.update(repr((sub.mean, sub.std, batch_size)).encode())
        return cls(batches, key=f"{data.name}-{len(sub)}-{h.hexdigest()[:16]}")

    @classmethod
    def from_boxes(
        cls,
        data: BoxProbeSet,
        *,
        batch_size: int = PROBE.batch_size,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> Probe:
        """Every image of ``data`` with its boxes, normalised by ``mean``/``std`` (default: CIFAR-10's, the
        statistics of the objects :func:`prunekit.data.make_box_probe` pastes)."""
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        cifar_mean, cifar_std = normalization("cifar10")
        mean, std = mean or cifar_mean, std or cifar_std
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        batches = _Normalised(data.images, data.labels, data.boxes, lambda u8: (u8.float() / 255.0 - m) / s, batch_size)
        h = hashlib.sha256(data.images.numpy().tobytes())
        h.update(data.labels.numpy().tobytes())
        h.update(repr([len(b) for b in data.boxes]).encode())
        h.update(torch.cat(data.boxes).numpy().tobytes())
        h.update(repr((mean, std, batch_size)).encode())
        return cls(batches, key=f"boxes-{len(data)}-{h.hexdigest()[:16]}")


class _Normalised:
    """uint8 images (N, C, H, W) served as normalised float batches, built one batch at a time (memory of one
    batch, not N); re-iterable, ``len`` = number of batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, boxes: list[torch.Tensor] | None,
                 normalize: Callable[[torch.Tensor], torch.Tensor], batch_size: int):
        self.images, self.labels, self.boxes = images, labels, boxes
        self.normalize, self.batch_size = normalize, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple]:
        for i in range(0, len(self.images), self.batch_size):
            j = i + self.batch_size
            x, y = self.normalize(self.images[i:j]), self.labels[i:j]
            yield (x, y) if self.boxes is None else (x, y, self.boxes[i:j])


def as_probe(probe: Probe | ArraySet | BoxProbeSet | Iterable) -> Probe:
    """Any accepted probe (see the module docstring) as a :class:`Probe`, with the default sizes."""
    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, ArraySet):
        return Probe.from_arrays(probe)
    if isinstance(probe, BoxProbeSet):
        return Probe.from_boxes(probe)
    if probe is None:
        raise UserError("this criterion needs a probe set: pass probe= an ArraySet, a BoxProbeSet, a Probe or "
                         "a list of (x, y) batches")
    return Probe(probe)


@dataclass(frozen=True)
class ProbeSpec:
    """Which probe set to build (:func:`make_probe`): ``n`` images of ``dataset`` drawn by ``seed``, from
    ``data_root`` (default: the data root). What the command line, the jobs and the dashboard pass around."""

    dataset: str
    n: int = PROBE.n
    seed: int = PROBE.seed
    batch_size: int = PROBE.batch_size
    data_root: str | os.PathLike | None = None

    def images(self) -> ArraySet:
        """The split the probe draws from (the training split of ``dataset``); DataNotFoundError without it."""
        return load_arrays(self.dataset, PROBE.split, self.data_root)

    def build(self, boxes: bool = False) -> Probe:
        """The probe (plain, or with ``boxes`` for Map-EX); DataNotFoundError without the data."""
        return make_probe(self.dataset, self.n, seed=self.seed, batch_size=self.batch_size, boxes=boxes,
                          data_root=self.data_root)


def make_probe(dataset: str, n: int = PROBE.n, *, seed: int = PROBE.seed, batch_size: int = PROBE.batch_size,
               boxes: bool = False, data_root=None) -> Probe:
    """The probe set of methods.md, built the same way for the command line, the jobs and the dashboard (so that they
    share the score cache): ``n`` images of ``dataset``'s training split drawn by ``seed``, in batches of
    ``batch_size``; with ``boxes``, ``n`` objects of the same split pasted onto
    64x64 canvases with their boxes (:func:`prunekit.data.make_box_probe`, ``seed``) for Map-EX.
    DataNotFoundError (saying how to get it)
    without the data."""
    if boxes:
        mean, std = normalization(dataset)
        return Probe.from_boxes(box_set(dataset, n, seed=seed, data_root=data_root), batch_size=batch_size,
                                mean=mean, std=std)
    return Probe.from_arrays(load_arrays(dataset, PROBE.split, data_root), n, batch_size=batch_size, seed=seed)


def box_set(dataset: str, n: int = PROBE.n, *, seed: int = PROBE.seed, data_root=None) -> BoxProbeSet:
    """The box-labelled images (uint8, with their boxes) that :func:`make_probe` with ``boxes`` streams: ``n``
    objects of ``dataset``'s training split pasted onto 64x64 canvases by ``seed``."""
    return make_box_probe(load_arrays(dataset, PROBE.split, data_root), n, seed=seed)
