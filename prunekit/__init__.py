"""prunekit: see inside a CNN's filters, score them by information, prune them for real.

The public API, re-exported from the modules that hold it.
"""
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .data import ArraySet, BoxProbeSet, DataNotFoundError, DeviceLoader, data_root, load_arrays, make_box_probe
from .metrics import best_device, evaluate
from .models import build_model, count_params, list_models, model_info

__version__ = "0.1.0"

__all__ = [
    "ArraySet", "BoxProbeSet", "CheckpointError", "DataNotFoundError", "DeviceLoader", "best_device",
    "build_model", "count_params", "data_root", "evaluate", "list_models", "load_arrays", "load_checkpoint",
    "make_box_probe", "model_info", "save_checkpoint",
]
