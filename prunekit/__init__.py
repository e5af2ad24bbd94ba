"""prunekit: see inside a CNN's filters, score them by information, prune them for real.

The public API, re-exported from the modules that hold it.
"""
from prunekit.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from prunekit.criteria import get_criterion, list_criteria
from prunekit.data import (
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
from prunekit.errors import PrunekitError, UserError
from prunekit.runs.finetune import finetune_config, finetune_run
from prunekit.models.fits import check_model_data, replace_head
from prunekit.models.layers import conv_layers
from prunekit.models.metrics import best_device, evaluate
from prunekit.models.zoo import build_model, count_params, create_model, list_models, model_info
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset, list_presets
from prunekit.pruning.prune import coupled_groups, prune_model
from prunekit.runs.report import prune_report
from prunekit.runs.records import list_runs, prune_run
from prunekit.criteria.scores import score, score_model
from prunekit.pruning.sensitivity import sensitivity
from prunekit.models.sources import enable_factory, model_catalog
from prunekit.pruning.structure import estimate, structure
from prunekit.training.train import TrainConfig, fit

from prunekit.version import __version__

__all__ = [
    "ArraySet", "BoxProbeSet", "CheckpointError", "DataNotFoundError", "DeviceLoader", "FolderLoader", "Plan",
    "PrunekitError", "TrainConfig", "UserError", "best_device", "build_model", "check_model_data", "conv_layers",
    "count_params", "coupled_groups", "create_model", "data_root", "enable_factory", "estimate", "evaluate",
    "finetune_config", "finetune_run", "fit", "folder_dataset", "get_criterion", "get_preset", "list_criteria",
    "list_models", "list_presets", "list_runs", "load_arrays", "load_checkpoint", "make_box_probe", "model_catalog",
    "model_info", "prune_model", "prune_report", "prune_run", "replace_head", "save_checkpoint", "score",
    "score_model", "sensitivity", "structure",
]
