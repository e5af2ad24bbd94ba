"""Data sets: where they live, the named 32x32 sets as uint8 arrays, image folders, subsets.

Data root, in order: an explicit path, else ``$PRUNEKIT_DATA``, else ``~/.cache/prunekit/data``.
Decoded arrays are cached under :func:`cache_dir` (``$PRUNEKIT_CACHE`` or ``~/.cache/prunekit``), so a
read-only data root works.

32x32 sets (``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``) load as one uint8 tensor
(:class:`ArraySet`, images (N, 3, 32, 32)); MNIST-style 28x28 grey images are padded to 32x32 and
repeated over three channels so that every CIFAR model takes them. ``cifar10`` is found, in order, as
torchvision's ``cifar-10-batches-py``, as the JPEG copy ``cifar10-jpeg.tar.gz`` (or that archive unpacked
to ``cifar10-jpeg/``), else downloaded by torchvision. Large images go through :func:`folder_dataset`
(any ImageFolder tree).
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from prunekit.defaults import FOLDER_IMAGE_SIDE
from prunekit.errors import DataNotFoundError, UnknownNameError, UserError

__all__ = ["ArraySet", "CIFAR10_CLASSES", "ImageFileError", "JPEG_ARCHIVE", "cache_dir", "check_images", "data_root",
           "folder_dataset", "folder_splits", "how_to_get", "image_size", "list_datasets", "load_arrays", "load_image",
           "locate", "normalization", "num_classes", "subset"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
ARRAY_SIDE = 32  # every named data set's images are ARRAY_SIDE x ARRAY_SIDE
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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

    def content_hash(self) -> str:
        """SHA-256 (16 hex digits) of the images' bytes, then the labels': what a run records of a set of images and
        what an accuracy on them is cached by."""
        h = hashlib.sha256(self.images.cpu().numpy().tobytes())
        h.update(self.labels.cpu().numpy().tobytes())
        return h.hexdigest()[:16]

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


def image_size(name: str) -> tuple[int, int]:
    """(H, W) of a named data set's images: (32, 32) for every one (MNIST's 28x28 are padded), never resized."""
    _spec(name)
    return ARRAY_SIDE, ARRAY_SIDE


def normalization(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per channel, on the [0, 1] scale, of a named 32x32 data set."""
    spec = _spec(name)
    return spec.mean, spec.std


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise UnknownNameError(f"unknown data set {name!r}; known: {', '.join(_SPECS)} (or an ImageFolder path)")
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
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
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
        raise UserError(f"{source}: unexpected class folders {unknown}; expected {CIFAR10_CLASSES}")
    images = np.empty((len(entries), 32, 32, 3), dtype=np.uint8)
    for i, (cls, name, blob) in enumerate(entries):
        try:
            img = Image.open(io.BytesIO(blob)).convert("RGB")
        except _DAMAGED as exc:
            raise ImageFileError(f"{source}: {split}/{cls}/{name} cannot be decoded as an image ({_why(exc)}); the "
                                 f"copy is damaged: replace {source.name} with a whole copy") from None
        if img.size != (32, 32):
            raise UserError(f"{source}: {split}/{name} is {img.size[0]}x{img.size[1]}, expected 32x32")
        images[i] = np.asarray(img)
    labels = np.array([index[c] for c, _, _ in entries], dtype=np.int64)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels


def _torchvision_arrays(name: str, spec: _Spec, root: Path, split: str, download: bool):

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


class ImageFileError(UserError):
    """An image file that cannot be decoded; the message names it and says what to do. Raised inside a DataLoader
    worker, it reaches the training process as this type with the same message (not the worker's traceback)."""

    def __init__(self, message: str):
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:  # torch's ExceptionWrapper.reraise from a worker
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


_DAMAGED = (OSError, SyntaxError, ValueError)  # PIL's UnidentifiedImageError and DecompressionBombError included


def _why(exc: Exception) -> str:
    """What PIL says about a file it cannot read, without the file's name (the message says it already)."""

    return "not an image format PIL knows" if isinstance(exc, UnidentifiedImageError) else \
        f"{str(exc).strip() or type(exc).__name__}"


def load_image(path: str):
    """An image file as RGB (the ImageFolder loader); ImageFileError naming the file when it cannot be decoded."""

    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except _DAMAGED as exc:
        raise ImageFileError(f"{path}: cannot be decoded as an image ({_why(exc)}); the file is damaged or not an "
                             "image: remove it from the folder or replace it, then start again (a training resumes "
                             "after its last finished epoch)") from None


def check_images(files: list[str], folder: str | os.PathLike) -> None:
    """Open every file and check its header (PIL's ``verify``: cheap, no decoding); ImageFileError naming the ones
    that are not readable images, before any work starts."""

    bad = []
    for file in files:
        try:
            with Image.open(file) as img:
                img.verify()
        except _DAMAGED as exc:
            bad.append(f"{file} ({'an empty file' if os.path.getsize(file) == 0 else _why(exc)})")
    if bad:
        raise ImageFileError(f"{folder}: {len(bad)} of {len(files)} images cannot be read: {'; '.join(bad[:5])}"
                             f"{'; ...' if len(bad) > 5 else ''}. The files are damaged or not images: remove or "
                             "replace them, then start again")


def folder_dataset(path: str | os.PathLike, *, train: bool, image_size: int = FOLDER_IMAGE_SIDE):
    """Any ImageFolder tree (``path/<class>/*.jpg``, e.g. ImageNet-100's train/ or val/) as a torchvision
    dataset with the standard ImageNet transforms: items (float (3, S, S), int label). Every image's header is
    checked first (:func:`check_images`); an image that fails to decode later raises :class:`ImageFileError`
    naming it."""

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
        dataset = torchvision.datasets.ImageFolder(str(path), transform=tf, loader=load_image)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{path}: {exc}") from None
    check_images([file for file, _ in dataset.samples], path)
    return dataset


def folder_splits(folder: str | os.PathLike, *, image_size: int = FOLDER_IMAGE_SIDE):
    """(train, val) :func:`folder_dataset` of ``folder/train`` and ``folder/val`` (ImageFolder trees with the same
    class folders), at ``image_size`` x ``image_size``."""
    folder = Path(folder)
    train = folder_dataset(folder / "train", train=True, image_size=image_size)
    val = folder_dataset(folder / "val", train=False, image_size=image_size)
    if train.classes != val.classes:
        raise UserError(f"{folder}: train/ and val/ hold different class folders ({len(train.classes)} and "
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
