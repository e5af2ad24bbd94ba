"""One way to get training and test images for a model: a :class:`DataRequest` (a named 32x32 set or an image folder,
and how many images) resolved by :func:`resolve_splits`. Training from scratch and fine-tuning, from the command
line, a background job or the dashboard, all resolve their data here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunekit import distributed as dist_util
from prunekit.data.sets import ArraySet, folder_splits, image_size, load_arrays, subset
from prunekit.defaults import FOLDER_IMAGE_SIDE, HELD_OUT
from prunekit.errors import UserError

__all__ = ["DataRequest", "Splits", "classes_of", "held_out_set", "resolve_splits"]


@dataclass(frozen=True)
class DataRequest:
    """Where the images come from: ``name``, a data set of :func:`~prunekit.data.list_datasets` (read from ``root``,
    default the data root), or ``folder``, an image folder holding ``train/`` and ``val/`` ImageFolder trees read
    at ``image_size`` by ``workers`` DataLoader processes (default min(8, CPU count)). ``subset``: train on this many
    images (0: all), drawn by the training seed; ``test_subset``: test on this many (0: all), drawn by
    :data:`prunekit.defaults.HELD_OUT`'s seed."""

    name: str | None = None
    root: str | os.PathLike | None = None
    folder: str | os.PathLike | None = None
    image_size: int = FOLDER_IMAGE_SIDE
    workers: int | None = None
    subset: int = 0
    test_subset: int = 0

    def __post_init__(self):
        if self.name and self.folder:
            raise UserError(f"give a data set ({self.name!r}) or an image folder ({self.folder}), not both")
        for field_name in ("subset", "test_subset"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"{field_name} must be a whole number of images >= 0 (0: all), got {value!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise UserError(f"image_size must be a whole number of pixels >= 8, got {self.image_size!r}")

    @classmethod
    def from_args(cls, args: dict[str, Any], default_name: str | None = None) -> DataRequest:
        """A request from JSON-like arguments (a job's, the command line's): data, data_root, folder, image_size,
        workers, subset, test_subset; ``data`` defaults to ``default_name`` unless a folder is given."""
        folder = args.get("folder") or None
        return cls(name=None if folder else (args.get("data") or default_name), root=args.get("data_root"),
                   folder=folder, image_size=int(args.get("image_size") or FOLDER_IMAGE_SIDE), workers=args.get("workers"),
                   subset=int(args.get("subset") or 0), test_subset=int(args.get("test_subset") or 0))


@dataclass
class Splits:
    """train / test: two :class:`ArraySet` or two map-style datasets (a folder's, items (float (3, S, S), label));
    name: the data set's name or the folder's absolute path (what a checkpoint or a run records); classes: the
    class names, in label order; image_size: (H, W) of the images the model sees (a folder's crops: (S, S))."""

    train: Any
    test: Any
    name: str
    classes: list[str]
    image_size: tuple[int, int] = (32, 32)

    def record(self) -> dict[str, Any]:
        """What a checkpoint or a run records of the data: the name and the image counts."""
        return {"name": self.name, "train": len(self.train), "test": len(self.test)}


def classes_of(dataset: Any) -> list[str]:
    """The class names of an :class:`ArraySet`, an ImageFolder dataset or a ``Subset`` of one."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return list(dataset.classes)


def resolve_splits(request: DataRequest, *, seed: int = 0) -> Splits:
    """The (train, test) images ``request`` names, subsets drawn (train by ``seed``, test by the held-out seed).
    Under torchrun rank 0 decodes a data set into the cache first and the other ranks read it.
    UserError when the request names no data; DataNotFoundError (saying how to get it) when it is missing."""
    if request.folder:
        train, test = folder_splits(request.folder, image_size=request.image_size)
        name = str(Path(request.folder).resolve())
    elif request.name:
        with dist_util.main_first():
            train = load_arrays(request.name, "train", request.root)
            test = load_arrays(request.name, "test", request.root)
        name = request.name
    else:
        raise UserError("no data named: give a data set's name (--data) or an image folder (--folder)")
    classes = classes_of(train)
    if request.subset:
        train = subset(train, request.subset, seed=seed)
    if request.test_subset:
        test = subset(test, request.test_subset, seed=HELD_OUT.seed)
    size = (request.image_size, request.image_size) if request.folder else image_size(request.name)
    return Splits(train, test, name, classes, size)


def held_out_set(dataset: str, n: int = HELD_OUT.n, data_root: str | os.PathLike | None = None) -> ArraySet:
    """``n`` images of ``dataset``'s held-out split drawn by the held-out seed (:data:`prunekit.defaults.HELD_OUT`):
    what accuracy right after pruning and sensitivity curves are measured on. DataNotFoundError without the data."""
    return load_arrays(dataset, HELD_OUT.split, data_root).subset(n, seed=HELD_OUT.seed)
