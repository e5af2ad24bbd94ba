"""prunekit: see inside a CNN's filters, score them by information, prune them for real.

One verb per step of the pipeline, each defined in the module that holds its concept:

>>> import prunekit as pk
>>> path = "assets/resnet20_cifar10.safetensors"
>>> model, header = pk.load_checkpoint(path)                    # or pk.build_model("resnet20", num_classes=10)
>>> test = pk.load_arrays("cifar10", "test").subset(1000)       # uint8 (1000, 3, 32, 32) images + (1000,) labels
>>> scores = pk.score(model, "l1")                              # one row per filter: layer, filter, score, rank
>>> plan = pk.plan(model, "resnet20", target=0.5, scores=scores)  # uniform ratios that remove half the FLOPs
>>> plan = pk.plan(model, "resnet20", preset="search", target=0.5, scores=scores, train=pk.load_arrays("cifar10", "train"))
>>> run = pk.prune(model, plan, scores, data=test, checkpoint=path)  # the smaller model, measured, kept in ./runs
>>> run = pk.finetune(run, epochs=3)                            # distilled from `path`, recorded in the same run
>>> points = pk.sweep(model, "resnet20", pk.SweepSpec(criteria=("l1", "fpgm"), targets=(0.3, 0.5)), held_out=test)
>>> pk.compare()                                                # every run: accuracy against FLOPs, Pareto front

The nouns around them: ``list_models``, ``list_criteria``, ``list_presets``, ``list_runs`` name what exists;
``Plan``, ``Run``, ``SweepSpec`` are what the verbs pass along. Each verb's docstring names the lower-level
function below it (``score_model``, ``prune_model``, ``prune_run``, ``finetune_run``, ``create_model``), kept for
the command line, the jobs and the dashboard.
"""
from prunekit.criteria import get_criterion, list_criteria
from prunekit.criteria.probe import ProbeSpec
from prunekit.criteria.scores import score, score_model
from prunekit.data import (
    ArraySet,
    BoxProbeSet,
    DataNotFoundError,
    DataRequest,
    DeviceLoader,
    FolderLoader,
    data_root,
    folder_dataset,
    load_arrays,
    make_box_probe,
)
from prunekit.errors import PrunekitError, UserError
from prunekit.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from prunekit.models.fits import check_model_data
from prunekit.models.heads import replace_head
from prunekit.models.layers import conv_layers
from prunekit.models.metrics import best_device, evaluate
from prunekit.models.source_factory import enable_factory
from prunekit.models.sources import model_catalog
from prunekit.models.zoo import build_model, count_params, create_model, list_models, model_info
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset, list_presets, plan
from prunekit.pruning.prune import coupled_groups, prune_model
from prunekit.pruning.sensitivity import sensitivity
from prunekit.pruning.structure import estimate, structure
from prunekit.runs.compare import compare
from prunekit.runs.finetune import finetune, finetune_config, finetune_run
from prunekit.runs.latency_model import latency_model
from prunekit.runs.records import Run, list_runs, prune, prune_run
from prunekit.runs.report import prune_report
from prunekit.runs.sweeps import SweepSpec, sweep
from prunekit.training.train import TrainConfig, fit
from prunekit.version import __version__  # noqa: F401  (prunekit.__version__)

__all__ = [
    # the pipeline's verbs
    "score", "plan", "prune", "finetune", "sweep", "compare",
    # models
    "build_model", "list_models", "model_info", "load_checkpoint", "save_checkpoint", "CheckpointError",
    "count_params", "conv_layers", "check_model_data", "replace_head", "enable_factory", "model_catalog",
    "create_model",
    # data
    "load_arrays", "folder_dataset", "data_root", "ArraySet", "DataRequest", "DeviceLoader", "FolderLoader",
    "BoxProbeSet", "make_box_probe", "DataNotFoundError",
    # scoring
    "list_criteria", "get_criterion", "ProbeSpec", "score_model",
    # planning
    "Plan", "list_presets", "get_preset", "structure", "estimate", "coupled_groups", "sensitivity", "latency_model",
    # pruning
    "Run", "list_runs", "prune_report", "prune_model", "prune_run",
    # training and fine-tuning
    "evaluate", "best_device", "fit", "TrainConfig", "finetune_config", "finetune_run",
    # sweeps
    "SweepSpec",
    # errors
    "PrunekitError", "UserError",
]
