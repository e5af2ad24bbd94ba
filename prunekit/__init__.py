"""prunekit: see inside a CNN's filters, score them by information, prune them for real.

The public API, re-exported from the modules that hold it.
"""
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .criteria import get_criterion, list_criteria
from .data import (
    ArraySet,
    BoxProbeSet,
    DataNotFoundError,
    DeviceLoader,
    FolderLoader,
    data_root,
    folder_dataset,
    load_arrays,
    make_box_probe,
)
from .errors import PrunekitError, UserError
from .finetune import finetune_config, finetune_run
from .fits import check_model_data, replace_head
from .layers import conv_layers
from .metrics import best_device, evaluate
from .models import build_model, count_params, create_model, list_models, model_info
from .plan import Plan
from .presets import get_preset, list_presets
from .prune import coupled_groups, prune_model
from .report import prune_report
from .runs import list_runs, prune_run
from .scores import score, score_model
from .sensitivity import sensitivity
from .sources import enable_factory, model_catalog
from .structure import estimate, structure
from .train import TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "ArraySet", "BoxProbeSet", "CheckpointError", "DataNotFoundError", "DeviceLoader", "FolderLoader", "Plan",
    "PrunekitError", "TrainConfig", "UserError", "best_device", "build_model", "check_model_data", "conv_layers",
    "count_params", "coupled_groups", "create_model", "data_root", "enable_factory", "estimate", "evaluate",
    "finetune_config", "finetune_run", "fit", "folder_dataset", "get_criterion", "get_preset", "list_criteria",
    "list_models", "list_presets", "list_runs", "load_arrays", "load_checkpoint", "make_box_probe", "model_catalog",
    "model_info", "prune_model", "prune_report", "prune_run", "replace_head", "save_checkpoint", "score",
    "score_model", "sensitivity", "structure",
]
