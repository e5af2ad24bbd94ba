"""Data: where it lives, the data sets, a device-resident pipeline for 32x32 sets, box-labelled probe sets.

Data root, in order: an explicit path, else ``$PRUNEKIT_DATA``, else ``~/.cache/prunekit/data``.
Decoded arrays are cached under :func:`cache_dir` (``$PRUNEKIT_CACHE`` or ``~/.cache/prunekit``), so a
read-only data root works.

32x32 sets (``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``) load as one uint8 tensor
(:class:`ArraySet`, images (N, 3, 32, 32)); MNIST-style 28x28 grey images are padded to 32x32 and
repeated over three channels so that every CIFAR model takes them. ``cifar10`` is found, in order, as
torchvision's ``cifar-10-batches-py``, as the JPEG copy ``cifar10-jpeg.tar.gz`` (or that archive unpacked
to ``cifar10-jpeg/``), else downloaded by torchvision. Large images go through :func:`folder_dataset`
(any ImageFolder tree) and :class:`FolderLoader` (a standard DataLoader with workers).

:class:`DeviceLoader` and :class:`FolderLoader` both follow :class:`TrainLoader`, the interface that
:func:`prunekit.train.fit` needs of its training data; any iterable of (x, y) batches serves for testing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DataNotFoundError",
    "ArraySet",
    "BoxProbeSet",
    "DeviceLoader",
    "FolderLoader",
    "TrainLoader",
    "data_root",
    "cache_dir",
    "list_datasets",
    "normalization",
    "locate",
    "how_to_get",
    "load_arrays",
    "folder_dataset",
    "folder_splits",
    "subset",
    "make_loaders",
    "batch_crop",
    "make_box_probe",
    "save_box_probe",
    "load_box_probe",
]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk and could not be downloaded; the message says how to get it."""


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$PRUNEKIT_DATA``, else ``~/.cache/prunekit/data``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PRUNEKIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "prunekit" / "data"


def cache_dir() -> Path:
    """Where decoded arrays and other derived files go: ``$PRUNEKIT_CACHE`` or ``~/.cache/prunekit``."""
    env = os.environ.get("PRUNEKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunekit"


@dataclass
class ArraySet:
    """A whole 32x32 data split in memory.

    images: uint8 (N, 3, 32, 32); labels: int64 (N,); mean/std: per-channel statistics on the [0, 1] scale.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return len(self.labels)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 normalised (B, 3, H, W), on the images' device."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def subset(self, n: int, seed: int = 0) -> ArraySet:
        """``n`` images drawn without replacement by ``seed`` (all of them if n >= N)."""
        return self if n >= len(self) else self.split(n, seed)[0]

    def split(self, n: int, seed: int = 0) -> tuple[ArraySet, ArraySet]:
        """(the ``n`` images :meth:`subset` draws with ``seed``, in its order; the other N - n, in index order):
        two disjoint sets."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self._take(order[:n]), self._take(order[n:].sort().values)

    def _take(self, idx: torch.Tensor) -> ArraySet:
        return ArraySet(self.name, self.images[idx], self.labels[idx], self.classes, self.mean, self.std)


@dataclass(frozen=True)
class _Spec:
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str
    folder: str  # torchvision's folder name inside the root
    how_to_get: str


_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec(
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "CIFAR10",
        "cifar-10-batches-py",
        "put torchvision's cifar-10-batches-py, or the JPEG copy cifar10-jpeg.tar.gz, in the data root, "
        "or go online so that torchvision can download it",
    ),
    "cifar100": _Spec(
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        "CIFAR100",
        "cifar-100-python",
        "put torchvision's cifar-100-python in the data root, or go online so that torchvision can download it",
    ),
    "mnist": _Spec(
        10, (0.1307,) * 3, (0.3081,) * 3, "MNIST", "MNIST",
        "put torchvision's MNIST/raw folder in the data root, or go online so that torchvision can download it",
    ),
    "fashion-mnist": _Spec(
        10, (0.2860,) * 3, (0.3530,) * 3, "FashionMNIST", "FashionMNIST",
        "put torchvision's FashionMNIST/raw folder in the data root, or go online so that torchvision can "
        "download it",
    ),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_arrays`."""
    return list(_SPECS)


def num_classes(name: str) -> int:
    """Number of classes of a named 32x32 data set."""
    return _spec(name).num_classes


def normalization(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per channel, on the [0, 1] scale, of a named 32x32 data set."""
    spec = _spec(name)
    return spec.mean, spec.std


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(_SPECS)} (or an ImageFolder path)")
    return _SPECS[name]


def locate(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """Where ``name`` is on disk under the data root (without loading it), or None."""
    spec, root = _spec(name), data_root(root)
    if (root / spec.folder).is_dir():
        return root / spec.folder
    return _find_jpeg_copy(root) if name == "cifar10" else None


def how_to_get(name: str, root: str | os.PathLike | None = None) -> str:
    """A sentence saying where ``name`` was looked for and how to get it."""
    return f"{name} is not in the data root {data_root(root)}. To get it: {_spec(name).how_to_get}; " \
           "or set PRUNEKIT_DATA to a folder that has it."


def load_arrays(
    name: str, split: str = "train", root: str | os.PathLike | None = None, *, download: bool = True
) -> ArraySet:
    """Load a 32x32 data set split as an :class:`ArraySet` (decoded once, then served from the cache).

    Raises :class:`DataNotFoundError` (saying where it looked and how to get the data) when the set is
    neither on disk nor downloadable.
    """
    spec = _spec(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(root)
    images, labels, classes = None, None, None
    if name == "cifar10" and not (root / spec.folder).is_dir():
        jpeg = _find_jpeg_copy(root)
        if jpeg is not None:
            images, labels = _cached_jpeg_arrays(jpeg, split)
            classes = CIFAR10_CLASSES
    if images is None:
        images, labels, classes = _torchvision_arrays(name, spec, root, split, download)
    if images.ndim == 3:  # (N, 28, 28) grey -> (N, 3, 32, 32)
        images = F.pad(images, (2, 2, 2, 2)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return ArraySet(name, images, labels, list(classes), spec.mean, spec.std)


def _find_jpeg_copy(root: Path) -> Path | None:
    for candidate in (root / JPEG_ARCHIVE, root / "cifar10-jpeg"):
        if candidate.exists():
            return candidate
    return None


def _cached_jpeg_arrays(source: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the JPEG copy (archive or unpacked tree) once into ``cache_dir()/arrays/*.npz``."""
    if source.is_file():
        key = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    else:
        key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    cached = cache_dir() / "arrays" / f"cifar10-jpeg-{key}-{split}.npz"
    if not cached.exists():
        images, labels = _decode_jpeg_copy(source, split)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")  # per process: several may decode at once
        np.savez(tmp, images=images, labels=labels)
        tmp.replace(cached)
    with np.load(cached) as z:
        return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])


def _decode_jpeg_copy(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """-> images uint8 (N, 3, 32, 32), labels int64 (N,), files sorted by class then name."""
    from PIL import Image

    entries: list[tuple[str, str, bytes]] = []  # (class, file name, bytes)
    if source.is_file():
        with tarfile.open(source) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 3 and parts[-3] == split:
                    entries.append((parts[-2], parts[-1], tar.extractfile(member).read()))
    else:
        for path in (source / split).glob("*/*"):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((path.parent.name, path.name, path.read_bytes()))
    if not entries:
        raise DataNotFoundError(f"{source} holds no '{split}/<class>/*.jpg' images; is it the CIFAR-10 JPEG copy?")
    entries.sort()
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    unknown = sorted({c for c, _, _ in entries} - set(index))
    if unknown:
        raise ValueError(f"{source}: unexpected class folders {unknown}; expected {CIFAR10_CLASSES}")
    images = np.empty((len(entries), 32, 32, 3), dtype=np.uint8)
    for i, (_, name, blob) in enumerate(entries):
        img = Image.open(io.BytesIO(blob)).convert("RGB")
        if img.size != (32, 32):
            raise ValueError(f"{source}: {split}/{name} is {img.size[0]}x{img.size[1]}, expected 32x32")
        images[i] = np.asarray(img)
    labels = np.array([index[c] for c, _, _ in entries], dtype=np.int64)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels


def _torchvision_arrays(name: str, spec: _Spec, root: Path, split: str, download: bool):
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        ds = cls(str(root), train=(split == "train"), download=False)
    except RuntimeError:
        if not download:
            raise DataNotFoundError(how_to_get(name, root)) from None
        try:
            root.mkdir(parents=True, exist_ok=True)
            ds = cls(str(root), train=(split == "train"), download=True)
        except Exception as exc:  # offline, DNS failure, read-only root...
            raise DataNotFoundError(
                f"{name} is not in the data root {root} and could not be downloaded ({type(exc).__name__}: "
                f"{exc}). To fix: {spec.how_to_get}; or set PRUNEKIT_DATA to a folder that has it."
            ) from None
    data = ds.data
    images = torch.as_tensor(np.asarray(data))
    if images.ndim == 4:  # CIFAR: (N, 32, 32, 3)
        images = images.permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels, ds.classes


def folder_dataset(path: str | os.PathLike, *, train: bool, image_size: int = 224):
    """Any ImageFolder tree (``path/<class>/*.jpg``, e.g. ImageNet-100's train/ or val/) as a torchvision
    dataset with the standard ImageNet transforms: items (float (3, S, S), int label)."""
    import torchvision
    from torchvision.transforms import v2

    path = Path(path)
    if not path.is_dir():
        raise DataNotFoundError(f"image folder {path} does not exist; point to a folder of <class>/<image> files")
    norm = v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if train:
        steps = [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(int(image_size * 8 / 7)), v2.CenterCrop(image_size)]
    tf = v2.Compose([v2.PILToTensor(), *steps, v2.ToDtype(torch.float32, scale=True), norm])
    try:
        return torchvision.datasets.ImageFolder(str(path), transform=tf)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{path}: {exc}") from None


def folder_splits(folder: str | os.PathLike, *, image_size: int = 224):
    """(train, val) :func:`folder_dataset` of ``folder/train`` and ``folder/val`` (ImageFolder trees with the same
    class folders), at ``image_size`` x ``image_size``."""
    folder = Path(folder)
    train = folder_dataset(folder / "train", train=True, image_size=image_size)
    val = folder_dataset(folder / "val", train=False, image_size=image_size)
    if train.classes != val.classes:
        raise ValueError(f"{folder}: train/ and val/ hold different class folders ({len(train.classes)} and "
                         f"{len(val.classes)}; first difference: "
                         f"{sorted(set(train.classes) ^ set(val.classes))[:3]})")
    return train, val


def subset(data, n: int, seed: int = 0):
    """``n`` items of an :class:`ArraySet` or a map-style dataset drawn without replacement by ``seed`` (all of
    them if n >= N); a dataset's subset is a :class:`torch.utils.data.Subset`."""
    if isinstance(data, ArraySet):
        return data.subset(n, seed)
    if n >= len(data):
        return data
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.utils.data.Subset(data, idx.tolist())


def make_loaders(train, test, batch_size: int, *, device: str | torch.device, seed: int = 0,
                 num_workers: int | None = None) -> tuple[TrainLoader, TrainLoader]:
    """(training, test) loaders of two :class:`ArraySet` (:class:`DeviceLoader`, test batches of 500) or two
    map-style datasets (:class:`FolderLoader` with ``num_workers``, test batches of ``batch_size``)."""
    if isinstance(train, ArraySet):
        return (DeviceLoader(train, batch_size, train=True, device=device, seed=seed),
                DeviceLoader(test, 500, train=False, device=device))
    return (FolderLoader(train, batch_size, train=True, device=device, seed=seed, num_workers=num_workers),
            FolderLoader(test, batch_size, train=False, device=device, num_workers=num_workers))


class TrainLoader(Protocol):
    """What :func:`prunekit.train.fit` needs of its training data (:class:`DeviceLoader`, :class:`FolderLoader`).

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
        from torch.utils.data import DistributedSampler

        if not self.train:
            raise ValueError("only a training loader is sharded")
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
    :func:`prunekit.train.fit` saves too. :meth:`shard` and :meth:`set_epoch` work as :class:`DeviceLoader`'s.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int = 128,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        num_workers: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.train = dataset, batch_size, train
        self.device = torch.device(device)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = None

    def _count(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        from torch.utils.data import DataLoader

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
        batch_size: int = 128,
        *,
        train: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        crop_padding: int = 4,
        flip: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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


# ----------------------------------------------------------------------------------------------
# Box-labelled probe sets (for Map-EX)


@dataclass
class BoxProbeSet:
    """Images with object boxes.

    images: uint8 (N, 3, S, S); boxes: N tensors of shape (k_i, 4), pixel corners [x0, y0, x1, y1)
    (x1, y1 exclusive); labels: int64 (N,) class of each image's object (-1 when unknown).
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def masks(self) -> torch.Tensor:
        """bool (N, S, S): True inside the union of each image's boxes."""
        n, _, h, w = self.images.shape
        out = torch.zeros(n, h, w, dtype=torch.bool)
        for i, bx in enumerate(self.boxes):
            for x0, y0, x1, y1 in bx.round().long().tolist():
                out[i, max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        return out


def make_box_probe(
    source: ArraySet,
    n: int = 256,
    *,
    canvas: int = 64,
    scale: tuple[float, float] = (0.75, 1.5),
    background: str = "texture",
    seed: int = 0,
) -> BoxProbeSet:
    """Paste ``n`` objects from ``source`` at random positions and scales onto ``canvas`` x ``canvas`` images.

    Each object (a 32x32 image) is resized to s = round(32 * u) pixels, u ~ U(scale), and pasted at a random
    (x0, y0); its box is exactly [x0, y0, x0 + s, y0 + s). The background is another image of ``source``
    upscaled to the canvas (``"texture"``) or uniform noise (``"noise"``).
    """
    if background not in ("texture", "noise"):
        raise ValueError(f"background must be 'texture' or 'noise', got {background!r}")
    if canvas < 32:
        raise ValueError(f"canvas must be at least 32 pixels, got {canvas}")
    lo, hi = scale
    if not (0 < lo <= hi) or round(32 * hi) > canvas:
        raise ValueError(f"scale must satisfy 0 < low <= high and 32 * high <= canvas ({canvas}), got {scale}")
    g = torch.Generator().manual_seed(seed)
    objects = torch.randint(0, len(source), (n,), generator=g)
    images = torch.empty(n, 3, canvas, canvas, dtype=torch.uint8)
    boxes = []
    for i, k in enumerate(objects.tolist()):
        if background == "texture":
            j = (k + 1 + int(torch.randint(0, len(source) - 1, (1,), generator=g))) % len(source)
            bg = F.interpolate(source.images[j : j + 1].float(), size=(canvas, canvas), mode="bilinear")
            images[i] = bg[0].round().clamp(0, 255).to(torch.uint8)
        else:
            images[i] = torch.randint(0, 256, (3, canvas, canvas), generator=g, dtype=torch.uint8)
        s = round(32 * (lo + (hi - lo) * float(torch.rand(1, generator=g))))
        obj = F.interpolate(source.images[k : k + 1].float(), size=(s, s), mode="bilinear", antialias=True)
        x0 = int(torch.randint(0, canvas - s + 1, (1,), generator=g))
        y0 = int(torch.randint(0, canvas - s + 1, (1,), generator=g))
        images[i, :, y0 : y0 + s, x0 : x0 + s] = obj[0].round().clamp(0, 255).to(torch.uint8)
        boxes.append(torch.tensor([[x0, y0, x0 + s, y0 + s]], dtype=torch.float32))
    return BoxProbeSet(images, boxes, source.labels[objects].clone(), list(source.classes))


def save_box_probe(probe: BoxProbeSet, folder: str | os.PathLike) -> Path:
    """Write the box-labelled format: PNG images plus ``boxes.csv`` (file,x0,y0,x1,y1,label; one row per box)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "boxes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "x0", "y0", "x1", "y1", "label"])
        for i, (img, bx) in enumerate(zip(probe.images, probe.boxes)):
            name = f"{i:05d}.png"
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / name)
            for x0, y0, x1, y1 in bx.tolist():
                writer.writerow([name, x0, y0, x1, y1, int(probe.labels[i])])
    return folder


def load_box_probe(folder: str | os.PathLike, *, size: int | None = None) -> BoxProbeSet:
    """Read a folder of images with ``boxes.csv`` (columns file,x0,y0,x1,y1[,label]; pixel corners, x1/y1
    exclusive). Images are resized to ``size`` x ``size`` (boxes scaled alike); without ``size`` they must
    all be square and of one size. Errors name the file and the row at fault."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    table = folder / "boxes.csv"
    if not table.is_file():
        raise DataNotFoundError(
            f"{table} not found: a box-labelled probe set is a folder of images with a boxes.csv "
            "(columns file,x0,y0,x1,y1[,label], one row per box)"
        )
    rows: dict[str, list[tuple[list[float], int]]] = {}
    with open(table, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "x0", "y0", "x1", "y1"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{table}: missing columns {sorted(missing)}; expected file,x0,y0,x1,y1[,label]")
        for line, row in enumerate(reader, start=2):
            try:
                box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
                label = int(row["label"]) if row.get("label") not in (None, "") else -1
            except ValueError:
                raise ValueError(f"{table} line {line}: box corners must be numbers, got {row}") from None
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"{table} line {line}: need x0 < x1 and y0 < y1, got {box}")
            rows.setdefault(row["file"], []).append((box, label))
    if not rows:
        raise ValueError(f"{table} lists no boxes")
    images, boxes, labels = [], [], []
    for name, entries in rows.items():
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents:
            raise ValueError(f"{table}: {name!r} points outside {folder}")
        try:
            img = Image.open(path).convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{table}: cannot read image {name!r} ({type(exc).__name__}: {exc})") from None
        w, h = img.size
        bx = torch.tensor([b for b, _ in entries], dtype=torch.float32)
        if (bx[:, 0] < 0).any() or (bx[:, 1] < 0).any() or (bx[:, 2] > w).any() or (bx[:, 3] > h).any():
            raise ValueError(f"{table}: a box of {name!r} lies outside its {w}x{h} image")
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
            bx = bx * torch.tensor([size / w, size / h, size / w, size / h])
        elif w != h or (images and images[0].shape[-1] != w):
            raise ValueError(f"{table}: images differ in size or are not square ({name!r} is {w}x{h}); pass size=")
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        boxes.append(bx)
        labels.append(entries[0][1])
    return BoxProbeSet(torch.stack(images), boxes, torch.tensor(labels, dtype=torch.int64))
