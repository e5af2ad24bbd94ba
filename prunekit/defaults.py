"""The defaults that define a result, in one place. The command line, the background jobs and the dashboard all
read them from here, so the same model, criterion and parameters give the same numbers (and the same cache
entries) whichever front end asked.

Everything here is recorded with the result it shapes (a score table's cache key holds the probe's content, a
run's manifest its held-out set and recipe), so changing a default never makes an old result look like a new one.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROBE", "HELD_OUT", "PREDICTION", "RECALIBRATION", "SENSITIVITY", "FINETUNE_RECIPE", "FINETUNE_EPOCHS",
           "QUICK_FINETUNE_EPOCHS", "DISTILL_ALPHA", "DISTILL_TEMPERATURE", "FALLBACK_CRITERION", "DEFAULT_CRITERION",
           "BOTTOM_FRACTION", "LATENCY_BATCHES", "LATENCY_REPEAT", "SOURCE_INPUT_SIDE", "ROUND_TO", "MAX_RATIO",
           "EVAL_BATCH", "FOLDER_IMAGE_SIDE", "TARGET_BY", "SWEEP",
           "TRAIN_BATCH", "SEARCH", "LATENCY_MODEL"]


@dataclass(frozen=True)
class ProbeDefaults:
    """The probe set data-driven criteria stream (methods.md): ``n`` images of the ``split`` split drawn by
    ``seed``, in batches of ``batch_size`` (5 x 128, as HRank and CHIP). Map-EX's box probe pastes ``n`` objects
    of the same split onto canvases."""

    n: int = 640
    batch_size: int = 128
    seed: int = 0
    split: str = "train"


@dataclass(frozen=True)
class HeldOutDefaults:
    """The test images an accuracy right after pruning is measured on: ``n`` of the ``split`` split by ``seed``."""

    n: int = 2000
    seed: int = 0
    split: str = "test"


@dataclass(frozen=True)
class SensitivityDefaults:
    """Sensitivity curves: each group pruned alone at ``ratios``, evaluated on ``n`` held-out images (seed 0)."""

    n: int = 500
    ratios: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class RecalibrationDefaults:
    """BatchNorm recalibration (adaptive BN, EagleEye): ``n`` training images drawn by ``seed``, in batches of
    ``batch_size``, re-estimate the running statistics of a pruned model before it is evaluated or fine-tuned."""

    n: int = 1024
    seed: int = 0
    batch_size: int = 256


@dataclass(frozen=True)
class PredictionDefaults:
    """The Plan page's live predicted accuracy: the plan pruned, recalibrated (:data:`RECALIBRATION`) and evaluated
    on ``n`` held-out images (the held-out seed)."""

    n: int = 1000


@dataclass(frozen=True)
class SweepDefaults:
    """A sweep (prunekit.runs.sweeps.SweepSpec, ``prunekit sweep``, the Compare page's sweep form, which opens on the
    Saliency page's criterion and l1): ``targets`` fractions of FLOPs to remove, each solved by the ``preset`` allocation;
    ``finetune_epochs`` of brief fine-tuning of every point (0: none) on ``finetune_subset`` images (0: all);
    ``plain``: also measure each point's accuracy right after pruning, before recalibration (off: one evaluation
    fewer per point)."""

    targets: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    preset: str = "uniform"
    finetune_epochs: int = 0
    finetune_subset: int = 0
    plain: bool = False


@dataclass(frozen=True)
class SearchDefaults:
    """The search preset (prunekit.pruning.search): it stops after ``candidates`` judged plans (the rule that makes
    a seed reproducible) or ``seconds`` (the outer limit: about a minute for ResNet-20 on the 2-core CPU, where a
    candidate takes about a second), whichever comes first. Candidates are judged on ``n`` training images drawn by
    ``seed`` among those the BatchNorm recalibration does not use (the test images never choose a plan).
    ``method``: how it explores around the best plan so far (``methods``; the search's docstring says why this
    one); ``sigma``: the spread of a mutation (log of a group's share of the budget); ``population``: the plans
    evolution breeds from."""

    seconds: float = 60.0
    candidates: int = 48
    n: int = 1000
    seed: int = 0
    method: str = "greedy"
    methods: tuple[str, ...] = ("greedy", "evolution", "random")
    sigma: float = 0.35
    population: int = 6


@dataclass(frozen=True)
class LatencyModelDefaults:
    """The latency model (prunekit.pruning.latency): each conv's and linear's latency measured alone at kept widths
    every ``step`` channels (and every ``round_to`` of a plan that rounds), each point the median of ``repeat``
    timed runs (a layer takes tens of microseconds: many runs cost little beside an ONNX export, and steady the
    median on a busy machine), for the ``runtime`` and ``batch`` a latency budget names unless told otherwise. The whole network is
    timed ``rounds`` times and the least kept (a loaded machine only adds time)."""

    step: int = 8
    repeat: int = 50
    rounds: int = 3
    runtime: str = "onnxruntime"
    batch: int = 1


PROBE = ProbeDefaults()
SEARCH = SearchDefaults()
LATENCY_MODEL = LatencyModelDefaults()
PREDICTION = PredictionDefaults()
# How the candidate evaluator (prunekit.pruning.evaluator) runs a pruned model (in channels_last either way): "fp32",
# or "bf16" autocast. benchmarks/lecture_loop.py measures both on the bundled ResNet-20: bf16 about 1.9x faster but
# 0.2-0.3 points off fp32 on 1,000 test images, over the 0.1 points a default may differ by, so fp32 stays.
EVAL_PRECISIONS = ("fp32", "bf16")
EVAL_PRECISION = "fp32"
RECALIBRATION = RecalibrationDefaults()
HELD_OUT = HeldOutDefaults()
SENSITIVITY = SensitivityDefaults()
SWEEP = SweepDefaults()

# Distillation from the unpruned model while fine-tuning (prunekit.training.distill; Hinton et al. 2015): the weight of the
# teacher's softened outputs (0: off) and the temperature that softens them.
# Measured (experiments/distillation.py, RESULTS.md): E1's -50% FLOPs ResNet-20 runs (l1, fpgm, random) fine-tuned
# 2 x 5,000 images gain +1.76 / +2.58 / +2.97 points at alpha 0.9 and +1.82 / +2.09 / +2.58 at 0.5, T 4.
DISTILL_ALPHA = 0.9
DISTILL_TEMPERATURE = 4.0  # a common CIFAR choice (Hinton et al. use 1-20)

TRAIN_BATCH = 128  # images per training step: TrainConfig's, FINETUNE_RECIPE's and the data loaders' default

# The usual CIFAR fine-tuning after pruning (e.g. Torch-Pruning's CIFAR benchmarks: SGD lr 0.01, momentum 0.9,
# weight decay 5e-4, batch 128), without Nesterov or warm-up, with a cosine schedule: TrainConfig overrides.
FINETUNE_RECIPE = {"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "batch_size": TRAIN_BATCH,
                   "schedule": "cosine", "warmup_epochs": 0.0, "distill_alpha": DISTILL_ALPHA,
                   "distill_temperature": DISTILL_TEMPERATURE}
FINETUNE_EPOCHS = 30  # a full fine-tuning (the command line's default)
QUICK_FINETUNE_EPOCHS = 3  # the dashboard form's first value: a demo that ends within minutes on a CPU

DEFAULT_CRITERION = "sfm_entropy"  # the criterion the dashboard opens on
FALLBACK_CRITERION = "l1"  # weight-only: what the dashboard falls back to (and says so) when a criterion cannot run
BOTTOM_FRACTION = 0.3  # rank agreement counts the overlap of each layer's bottom 30%
LATENCY_BATCHES = (1, 64)  # batch sizes a run's latency is measured at
LATENCY_REPEAT = 10  # timed runs per latency measurement
SOURCE_INPUT_SIDE = 224  # the input side of a torchvision model, or a factory without input_size, without an @ size
ROUND_TO = 1  # a plan's kept channels rounded to a multiple of this (prunekit.pruning.ratios.kept_channels); 1: no rounding
# The largest pruning ratio (share of a group's filters removed): the rule of prunekit.pruning.ratios, AFIE's cap and
# target bound, the Plan page's target input and the sensitivity chart's ratio axis.
MAX_RATIO = 0.95
# Images per batch of every evaluation pass (held-out accuracy of a run, sensitivity curves, the Plan page's
# prediction, the test loader of training on arrays): evaluation runs in eval mode, so it never changes a result.
EVAL_BATCH = 256
FOLDER_IMAGE_SIDE = 224  # side of the square crops of an image-folder data set (--folder, --image-size)
# What a preset's or a sweep's target counts ("flops" or "params"): Preset.make, SweepSpec, `plan --by`, `sweep --by`.
TARGET_BY = "flops"
