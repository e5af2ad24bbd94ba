"""Data: where it lives and the named data sets (:mod:`.sets`), one resolver of training and test splits
(:mod:`.splits`), the loaders that feed training (:mod:`.loaders`: a device-resident pipeline for 32x32 sets, a
DataLoader for image folders) and box-labelled probe sets for Map-EX (:mod:`.boxes`).

>>> train = load_arrays("cifar10", "train")                 # uint8 (50000, 3, 32, 32) + labels
>>> splits = resolve_splits(DataRequest(name="cifar10", subset=5000), seed=0)
>>> loader = DeviceLoader(splits.train, 128, train=True, device="cuda")
"""
from prunekit.data.boxes import BoxProbeSet, load_box_probe, make_box_probe, save_box_probe
from prunekit.data.loaders import DeviceLoader, FolderLoader, TrainLoader, batch_crop, make_loaders
from prunekit.data.sets import (
    CIFAR10_CLASSES,
    JPEG_ARCHIVE,
    ArraySet,
    ImageFileError,
    cache_dir,
    data_root,
    folder_dataset,
    folder_splits,
    how_to_get,
    image_size,
    list_datasets,
    load_arrays,
    locate,
    normalization,
    num_classes,
    subset,
)
from prunekit.data.splits import DataRequest, Splits, classes_of, held_out_set, resolve_splits
from prunekit.errors import DataNotFoundError

__all__ = [
    "ArraySet", "BoxProbeSet", "CIFAR10_CLASSES", "DataNotFoundError", "DataRequest", "DeviceLoader", "FolderLoader",
    "ImageFileError", "JPEG_ARCHIVE", "Splits", "TrainLoader", "batch_crop", "cache_dir", "classes_of", "data_root",
    "folder_dataset", "folder_splits", "held_out_set", "how_to_get", "image_size", "list_datasets", "load_arrays",
    "load_box_probe",
    "locate", "make_box_probe", "make_loaders", "normalization", "num_classes", "resolve_splits", "save_box_probe",
    "subset",
]
