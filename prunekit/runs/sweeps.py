"""Sweeps: criteria x targets under one allocation preset, each point pruned, recalibrated and evaluated (optionally
fine-tuned briefly), so that the Compare page can draw accuracy against FLOPs as one curve per criterion, the chart
pruning papers compare methods by.

>>> spec = SweepSpec(criteria=("l1", "fpgm"), targets=(0.1, 0.3, 0.5, 0.7))
>>> runs = run_sweep(model, "resnet20", spec, num_classes=10, input_size=(3, 32, 32), held_out=test, train=train,
...                  probe=ProbeSpec("cifar10"))
>>> curves(list_runs(), "flops", "recalibrated")    # sweep, criterion, target, x, accuracy, stage

Every point is an ordinary run (:func:`prunekit.runs.records.prune_run`) whose manifest's ``sweep`` entry names the sweep
(its id, the criterion, the target, the preset, ``by``), so sweeps are stored, listed, opened and exported like any
run; a sweep stopped part-way keeps the points it finished. Targets whose kept widths round alike (with ``round_to``)
remove the same filters: the later point records the earlier one's accuracies (``sweep.same_filters_as``) instead
of evaluating the same model again.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
import torch.nn as nn

from prunekit.criteria import criterion_class
from prunekit.criteria.probe import ProbeSpec
from prunekit.criteria.scores import score_model, to_tensors
from prunekit.criteria.streaming import Progress, no_progress
from prunekit.data import ArraySet, DataRequest
from prunekit.defaults import LATENCY_BATCHES, ROUND_TO, SWEEP, TARGET_BY
from prunekit.errors import UserError
from prunekit.models.fits import check_model_data
from prunekit.models.metrics import held_out_accuracy
from prunekit.models.heads import outputs_of
from prunekit.models.zoo import model_info
from prunekit.pruning.presets import BY, get_preset
from prunekit.pruning.ratios import check_round_to
from prunekit.pruning.prune import Pruner
from prunekit.pruning.selection import removed_filters
from prunekit.pruning.structure import structure
from prunekit.runs.finetune import finetune_config, finetune_run
from prunekit.runs.records import Run, list_runs, prune_run
from prunekit.runs.runtimes import runtime_names

__all__ = ["SweepSpec", "run_sweep", "sweep"]


@dataclass(frozen=True)
class SweepSpec:
    """criteria: registry names; targets: fractions of ``by`` ("flops" or "params") to remove, each in (0, 1);
    preset: an allocation preset that solves for a target and reads at most the model and the scores (uniform,
    threshold, afie); finetune_epochs: a brief fine-tuning of every point (0: none) on ``finetune_subset``
    training images (0: all); round_to: every point's kept filters rounded to a multiple of it
    (:func:`prunekit.pruning.ratios.kept_channels`; the target is solved on the rounded estimate); runtimes: where every
    point's latency is timed (names of :func:`prunekit.runs.runtimes.runtime_names`, default every one; empty: no latency, which saves the
    export and the timing of every point).; plain: also measure every point's accuracy right after pruning,
    before BatchNorm recalibration (off: one evaluation fewer per point; the recalibrated accuracy is the one that
    ranks plans like fine-tuning does)"""

    criteria: tuple[str, ...]
    targets: tuple[float, ...]
    preset: str = SWEEP.preset
    by: str = TARGET_BY
    finetune_epochs: int = SWEEP.finetune_epochs
    finetune_subset: int = SWEEP.finetune_subset
    round_to: int = ROUND_TO
    runtimes: tuple[str, ...] = field(default_factory=lambda: tuple(runtime_names()))
    plain: bool = SWEEP.plain

    @staticmethod
    def allows(preset: str) -> bool:
        """Whether a sweep can use ``preset``: it solves for a target from the model and the scores alone."""
        p = get_preset(preset)
        return p.targets and not set(p.needs) - {"model", "scores"}

    def __post_init__(self):
        object.__setattr__(self, "criteria", tuple(self.criteria))
        object.__setattr__(self, "targets", tuple(sorted({float(t) for t in self.targets})))
        object.__setattr__(self, "round_to", check_round_to(self.round_to))
        object.__setattr__(self, "runtimes", tuple(dict.fromkeys(self.runtimes)))
        if not self.criteria or not self.targets:
            raise UserError("a sweep needs at least one criterion and one target")
        for name in self.criteria:
            criterion_class(name)  # UnknownNameError listing the known ones
        bad = [t for t in self.targets if not 0 < t < 1]
        if bad:
            raise UserError(f"targets are fractions of {self.by} to remove, each in (0, 1); got {bad}")
        if not self.allows(self.preset):
            raise UserError(f"a sweep solves a preset for each target from the model and the scores; {self.preset} "
                            "cannot (pick uniform, threshold or afie)")
        if self.by not in BY:
            raise UserError(f"by must be one of {BY}, got {self.by!r}")
        if self.finetune_epochs < 0 or self.finetune_subset < 0:
            raise UserError("finetune_epochs and finetune_subset must be >= 0")
        unknown = [r for r in self.runtimes if r not in runtime_names()]
        if unknown:
            raise UserError(f"unknown runtime {', '.join(map(repr, unknown))}: latency is timed in "
                            f"{', '.join(runtime_names())} (none: no latency)")


def run_sweep(model: nn.Module, arch: str, spec: SweepSpec, *, num_classes: int, input_size: tuple[int, int, int],
              held_out: ArraySet | None, train: ArraySet | None, probe: ProbeSpec | None = None,
              finetune_data: DataRequest | None = None, root: str | os.PathLike | None = None,
              checkpoint: str | os.PathLike | None = None, progress: Progress | None = None,
              sweep_id: str | None = None) -> list[Run]:
    """Every point of ``spec`` as a run under ``root``, criterion by criterion, targets in increasing order. The
    path the command line and the jobs sweep through; from Python, :func:`sweep` is the entry point.

    held_out: test images each point is evaluated on (before, pruned, recalibrated); train: the images BatchNorm
    is recalibrated on (None: not recalibrated); probe: what data-driven criteria read (scored once each, with
    the cache); finetune_data: the data of the brief fine-tunings (default: the run's data set). progress:
    ``progress(done, total)`` after each point (an exception there stops the sweep; finished points stay).
    sweep_id: the sweep's name in the runs' manifests (default: a new one); a sweep resumed under its id keeps the
    points it finished and makes only the others. The unpruned model is evaluated once for the whole sweep.
    Returns the runs, in the order made. UserError before any work when the model does not take the images
    (:func:`prunekit.models.fits.check_model_data`)."""
    progress = progress or no_progress
    _check_data(model, arch, input_size, spec, held_out, train, probe)
    struct, pruner = structure(model, input_size), Pruner(model, input_size)  # traced once for every point
    sweep_id = sweep_id or f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    finished = _finished_points(sweep_id, root)
    before = None if held_out is None else held_out_accuracy(model, held_out)  # once for every point
    preset, runs, total = get_preset(spec.preset), [], len(spec.criteria) * len(spec.targets)
    for criterion in spec.criteria:
        scores, judged = None, {}  # {the filters a point removes: its run}
        for target in spec.targets:
            if (criterion, target) in finished:
                runs.append(finished[(criterion, target)])
                progress(len(runs), total)
                continue
            scores = scores if scores is not None else to_tensors(score_model(model, criterion, probe=probe))
            plan = preset.make(struct, arch, target=target, by=spec.by, criterion=criterion, model=model,
                               scores=scores, round_to=spec.round_to)
            removes = _removes(struct, plan, scores)
            same = judged.get(removes)  # an earlier target whose widths round alike: the same model, not evaluated again
            run = prune_run(model, plan, scores, arch=arch, num_classes=num_classes, input_size=input_size,
                            root=root, checkpoint=checkpoint, data=held_out, recalibrate=train, struct=struct,
                            latency_batches=LATENCY_BATCHES if spec.runtimes else (), runtimes=spec.runtimes,
                            before=before, plain=spec.plain, pruner=pruner,
                            measured=same and same.manifest["accuracy"],
                            sweep={"id": sweep_id, "criterion": criterion, "target": target, "by": spec.by,
                                   "preset": spec.preset, "spec": asdict(spec),
                                   "same_filters_as": same and same.path.name})
            judged.setdefault(removes, run)
            if spec.finetune_epochs:
                _finetune(run, spec, finetune_data)
            runs.append(run)
            progress(len(runs), total)
    return runs


def _removes(struct, plan, scores: dict) -> tuple:
    """The filters ``plan`` removes with ``scores``, as a hashable key: ((conv, (indices...)), ...)."""
    per_conv = removed_filters(struct.groups, plan.ratios, scores, round_to=plan.round_to)
    return tuple(sorted((conv, tuple(idx)) for conv, idx in per_conv.items() if idx))


def _finished_points(sweep_id: str, root: str | os.PathLike | None) -> dict[tuple[str, float], Run]:
    """{(criterion, target): its run} of the points of sweep ``sweep_id`` already done under ``root``."""
    table = list_runs(root)
    if table.empty:
        return {}
    done = table[(table["sweep"] == sweep_id) & (table["status"] == "done")]
    points = {}
    for path in done["path"]:
        run = Run.open(path)
        point = run.manifest["sweep"]
        points[(point["criterion"], float(point["target"]))] = run
    return points


def _check_data(model: nn.Module, arch: str, input_size, spec: SweepSpec, held_out: ArraySet | None,
                train: ArraySet | None, probe: ProbeSpec | None) -> None:
    """Every set of images the sweep will feed the model, checked first: the held-out images (labels), the
    recalibration images and the probe's data set (labels when a criterion reads them)."""
    labelled = any(criterion_class(c).needs_labels for c in spec.criteria)
    reads_probe = any(criterion_class(c).needs_data for c in spec.criteria)
    for data, labels in ((held_out, True), (train, False), (probe.dataset if probe and reads_probe else None,
                                                               labelled)):
        if data is not None:
            check_model_data(model, arch, data, labels=labels, input_size=input_size)


def _finetune(run: Run, spec: SweepSpec, data: DataRequest | None) -> None:


    request = replace(data or DataRequest(), subset=spec.finetune_subset)
    finetune_run(run.path, finetune_config(spec.finetune_epochs), data=request, progress=False)


def sweep(model: nn.Module, arch: str, spec: SweepSpec, *, held_out: ArraySet | None = None,
          train: ArraySet | None = None, probe: ProbeSpec | None = None, root: str | os.PathLike | None = None,
          **options: object) -> pd.DataFrame:
    """Prune ``model`` at every point of ``spec`` (criteria x targets), each point a run on disk: the entry point.
    :func:`run_sweep` is the same with the classes and input size spelt out, returning the :class:`Run` objects.

    Args:
        model: the unpruned model (never modified), on the device to measure on.
        arch: its architecture's name; the input size (C, H, W) is the architecture's
            (:func:`prunekit.models.zoo.model_info`), the classes the model's outputs there.
        spec: a :class:`SweepSpec`: criteria, targets (fractions of FLOPs or params to remove), the preset.
        held_out: test images, uint8 (N, C, H, W) with labels (N,), every point is evaluated on (None: none).
        train: images BatchNorm is recalibrated on after pruning (None: not recalibrated).
        probe: what data-driven criteria read (a :class:`~prunekit.criteria.probe.ProbeSpec`).
        root: the runs folder (default ``$PRUNEKIT_RUNS``, else ``./runs``).
        options: the rest of :func:`run_sweep`'s keywords (``finetune_data``, ``checkpoint``, ``progress``).

    Returns: the sweep's rows of :func:`prunekit.list_runs` (one per point, in the order made: criterion by
    criterion, targets increasing), what :func:`prunekit.compare` takes.

    >>> runs = sweep(model, "resnet20", SweepSpec(criteria=("l1", "fpgm"), targets=(0.3, 0.5)), held_out=test)
    >>> len(runs)
    4
    >>> compare(runs, x="flops", stage="recalibrated")    # one curve per criterion
    """
    input_size = model_info(arch).input_size
    made = run_sweep(model, arch, spec, num_classes=outputs_of(model, input_size), input_size=input_size,
                     held_out=held_out, train=train, probe=probe, root=root, **options)
    order = {str(run.path): i for i, run in enumerate(made)}
    table = list_runs(root)
    table = table[table["path"].isin(order)]
    return table.sort_values("path", key=lambda paths: paths.map(order)).reset_index(drop=True)
