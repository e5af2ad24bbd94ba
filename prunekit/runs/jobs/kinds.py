"""The built-in kinds of job, each a :class:`~prunekit.runs.jobs.queue.JobKind` registered in
:data:`~prunekit.runs.jobs.queue.KINDS`: it checks its own arguments at submit time and does its work in the worker.

finetune: a run's pruned model fine-tuned (:func:`prunekit.runs.finetune.finetune_run`); train: a registered
architecture trained from scratch; score: every filter of the handed model scored by a criterion (it fills the
score cache); sensitivity: the handed model's sensitivity curves; sweep: criteria x targets, one run per point
(:func:`prunekit.runs.sweeps.run_sweep`); search: the handed model's allocation searched under a budget (the search
preset, :mod:`prunekit.pruning.search`), its plan and candidates written into the job.
"""
from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch.nn as nn

from prunekit.criteria import criterion_class, get_criterion
from prunekit.criteria.probe import ProbeSpec
from prunekit.criteria.scores import read_scores, score_model
from prunekit.data import DataNotFoundError, DataRequest, held_out_set, load_arrays, resolve_splits
from prunekit.defaults import (
    FALLBACK_CRITERION,
    FINETUNE_RECIPE,
    HELD_OUT,
    LATENCY_MODEL,
    PROBE,
    ROUND_TO,
    SENSITIVITY,
    TARGET_BY,
)
from prunekit.errors import UserError
from prunekit.models.checkpoints import load_checkpoint
from prunekit.models.fits import check_model_data
from prunekit.models.zoo import model_info
from prunekit.pruning.presets import BUDGETS, LATENCY, get_preset
from prunekit.pruning.ratios import check_ratio, check_round_to
from prunekit.pruning.search import candidates_frame
from prunekit.pruning.sensitivity import read_sensitivity, sensitivity
from prunekit.pruning.structure import structure
from prunekit.runs.finetune import FINETUNE_DIR, finetune_config, finetune_run
from prunekit.runs.jobs.queue import CANCEL_FILE, KINDS, MODEL_FILE, Job, JobKind
from prunekit.runs.jobs.worker import Cancelled, Context
from prunekit.runs.latency_model import latency_model
from prunekit.runs.runtimes import get_runtime
from prunekit.runs.sweeps import SweepSpec, run_sweep
from prunekit.training.train import TrainConfig, train_new
from prunekit.text import count

__all__ = ["Finetune", "Train", "Score", "Sensitivity", "Sweep", "Search"]

# The training recipe's fields a training job may set (TrainConfig checks every value).
RECIPE_FIELDS = ("lr", "batch_size", "weight_decay", "seed", "doconv", "label_smoothing", "schedule", "distill_alpha",
                 "distill_temperature", "precision")


def _check_whole(args: dict[str, Any], key: str, what: str, low: int) -> None:
    """UserError naming ``key`` and its value when it is given (not None) and not a whole number >= ``low``."""
    value = args.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())) \
            or value < low:
        raise UserError(f"{key} ({what}) must be a whole number >= {low}, got {value!r}")


def _handed_model(job: Job, ctx: Context, *, labels: bool | None = None) -> nn.Module:
    """The model handed to the job, on its device; with ``labels`` not None first checked against the job's data
    set (:func:`prunekit.models.fits.check_model_data`: its input size, with ``labels`` its outputs against the
    classes)."""
    model, header = load_checkpoint(job.path / MODEL_FILE)
    if labels is not None:
        check_model_data(model, header["arch"], job.args["data"], labels=labels)
    return model.to(ctx.device).eval()


def _run_name(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


class _Training(JobKind):
    """A job that trains: its recipe (:meth:`config`) built from the arguments and checked at submit time."""

    def recipe(self, epochs: Any, **overrides: Any) -> TrainConfig:
        raise NotImplementedError

    def config(self, args: dict[str, Any]) -> TrainConfig:
        """The training recipe of ``args`` (TrainConfig checks every value: UserError naming a bad one)."""
        return self.recipe(args["epochs"], **{k: args[k] for k in RECIPE_FIELDS if k in args})

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        self.config(args)


@KINDS.register
class Finetune(_Training):
    """run (a run directory), epochs; the fine-tuning recipe's fields, data or folder, teacher."""

    name, requires = "finetune", ("run", "epochs")

    def recipe(self, epochs: Any, **overrides: Any) -> TrainConfig:
        return finetune_config(epochs, **overrides)

    def describe(self, args: dict[str, Any]) -> str:
        return (f"Fine-tune run `{_run_name(args['run'])}` for {count(args['epochs'], 'epoch')} "
                f"(lr {args.get('lr', FINETUNE_RECIPE['lr'])}{_distilled(args)})")

    def run(self, job: Job, ctx: Context) -> dict[str, Any]:
        a = job.args
        job.save(metrics_file=str(Path(a["run"]) / FINETUNE_DIR / "metrics.jsonl"))
        run = finetune_run(a["run"], self.config(a), data=DataRequest.from_args(a), device=ctx.device,
                           progress=False, on_batch=ctx.batch, teacher=a.get("teacher"))
        entry = run.manifest["finetune"]
        return {"run": str(run.path), "accuracy": entry["accuracy"], "epochs": len(entry["epochs"])}


def _distilled(a: dict[str, Any]) -> str:
    """", distilled from <teacher>: alpha A, T T" for a fine-tuning job that distils, else ""."""
    alpha = a.get("distill_alpha", FINETUNE_RECIPE["distill_alpha"])
    if not alpha:
        return ""
    teacher = f"`{_run_name(a['teacher'])}`" if a.get("teacher") else "the unpruned model"
    temperature = a.get("distill_temperature", FINETUNE_RECIPE["distill_temperature"])
    return f", distilled from {teacher}: alpha {alpha}, T {temperature}"


@KINDS.register
class Train(_Training):
    """model (a registered architecture), epochs, and data (a data set) or folder; the recipe's fields."""

    name, requires = "train", ("model", "epochs")

    def recipe(self, epochs: Any, **overrides: Any) -> TrainConfig:
        return TrainConfig(epochs=epochs, **overrides)

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        if not (args.get("data") or args.get("folder")):
            raise UserError("a train job needs data (a data set's name) or folder (holding train/ and val/ image "
                            "folders)")
        super().check(args, model)

    def describe(self, args: dict[str, Any]) -> str:
        return f"Train {args['model']} on {args.get('data') or args.get('folder')} for {count(args['epochs'], 'epoch')}"

    def run(self, job: Job, ctx: Context) -> dict[str, Any]:
        a = job.args
        config = self.config(a)
        splits = resolve_splits(DataRequest.from_args(a), seed=config.seed)
        out = job.path / "train"
        job.save(metrics_file=str(out / "metrics.jsonl"))
        rows = train_new(a["model"], splits, config, out, device=ctx.device,
                         meta={"job": job.id, "device": job.device}, on_batch=ctx.batch, progress=False,
                         pretrained=bool(a.get("pretrained")))
        return {"checkpoint": str(out / "model.safetensors"), "test_accuracy": rows[-1]["test_accuracy"]}


@KINDS.register
class Score(JobKind):
    """criterion (a registered name), data; optional params (the criterion's), n (probe images)."""

    name, requires, needs_model = "score", ("criterion", "data"), True

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        _check_whole(args, "n", "the probe images", 1)
        params = args.get("params") or {}
        if not isinstance(params, dict):
            raise UserError(f"params (the criterion's parameters) must be an object of names and values, got "
                            f"{params!r}")
        get_criterion(args["criterion"], **params)  # UnknownNameError, or the parameter it refuses

    def describe(self, args: dict[str, Any]) -> str:
        return f"Score every filter with {args['criterion']} ({args.get('n') or PROBE.n} probe images)"

    def run(self, job: Job, ctx: Context) -> dict[str, Any]:
        a = job.args
        probe = ProbeSpec(a["data"], int(a.get("n") or PROBE.n), data_root=a.get("data_root"))
        crit = criterion_class(a["criterion"])
        model = _handed_model(job, ctx, labels=crit.needs_labels if crit.needs_data else None)
        df = score_model(model, a["criterion"], a.get("params"), probe=probe, progress=ctx.steps)
        df.to_csv(job.path / "scores.csv", index=False)
        return {"scores": str(job.path / "scores.csv"), "filters": len(df), "key": df.attrs["key"]}


@KINDS.register
class Sensitivity(JobKind):
    """scores (a CSV of the handed model's filters), data; optional n (test images), ratios, round_to,
    recalibrate."""

    name, requires, needs_model = "sensitivity", ("scores", "data"), True

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        _check_whole(args, "n", "the test images", 1)
        ratios = args.get("ratios")
        if ratios is not None and not isinstance(ratios, list):
            raise UserError(f"ratios must be a list of pruning ratios, got {ratios!r}")
        for r in ratios or ():
            check_ratio("sensitivity", r)
        if args.get("round_to") is not None:
            check_round_to(args["round_to"])
        if model is not None:
            read_scores(args["scores"], model)  # an unreadable file, or one of another model

    def describe(self, args: dict[str, Any]) -> str:
        return f"Sensitivity analysis on {args.get('n') or SENSITIVITY.n} test images"

    def run(self, job: Job, ctx: Context) -> dict[str, Any]:
        a = job.args
        model = _handed_model(job, ctx, labels=True)
        scores = read_scores(a["scores"], model)  # before the data: a bad file fails at once
        data = held_out_set(a["data"], int(a.get("n") or SENSITIVITY.n), a.get("data_root"))
        recal = None if a.get("recalibrate") is False else load_arrays(a["data"], "train", a.get("data_root"))
        table = sensitivity(model, scores, data, ratios=a.get("ratios") or SENSITIVITY.ratios, recalibrate=recal,
                            round_to=a.get("round_to", ROUND_TO), progress=ctx.steps)
        table.to_csv(job.path / "sensitivity.csv", index=False)
        return {"sensitivity": str(job.path / "sensitivity.csv"), "rows": len(table)}


# The sweep's own fields are SweepSpec's, with its defaults; those without one are required.
_SPEC_REQUIRED = tuple(f.name for f in fields(SweepSpec) if f.default is MISSING and f.default_factory is MISSING)


def _spec_defaults() -> dict[str, Any]:
    """SweepSpec's default of every field that has one."""
    return {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(SweepSpec)
            if f.name not in _SPEC_REQUIRED}


@KINDS.register
class Sweep(JobKind):
    """data, arch, num_classes, input_size and the fields of :class:`prunekit.runs.sweeps.SweepSpec` (its
    defaults for the rest); optional n (held-out images; 0: none), probe_n, recalibrate, weights_hash (the handed
    model's, only read by :func:`prunekit.runs.jobs.queue.stopped_twin`: the same sweep of the same weights resumes
    rather than starts over). The job's id is the sweep's id: resumed, it keeps the points it finished."""

    name, requires, needs_model = "sweep", ("data", "arch", "num_classes", "input_size", *_SPEC_REQUIRED), True

    @staticmethod
    def spec(args: dict[str, Any]) -> SweepSpec:
        """The sweep of ``args`` (SweepSpec checks every field: UserError naming a bad value)."""
        return SweepSpec(**{f.name: args[f.name] for f in fields(SweepSpec) if f.name in args})

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        _check_whole(args, "n", "the held-out images; 0: none", 0)
        _check_whole(args, "probe_n", "the probe images", 1)
        _check_whole(args, "num_classes", "the model's classes", 1)
        self.spec(args)

    def describe(self, args: dict[str, Any]) -> str:
        a = {**_spec_defaults(), **args}
        return f"Sweep {', '.join(a['criteria'])} at {len(a['targets'])} targets ({a['preset']})"

    def run(self, job: Job, ctx: Context) -> dict[str, Any]:
        a = job.args
        n = int(a.get("n", HELD_OUT.n))
        try:
            train = load_arrays(a["data"], "train", a.get("data_root")) if a.get("recalibrate", True) else None
        except DataNotFoundError:
            train = None
        held_out = held_out_set(a["data"], n, a.get("data_root")) if n else None
        runs = run_sweep(_handed_model(job, ctx), a["arch"], self.spec(a), num_classes=int(a["num_classes"]),
                         input_size=tuple(a["input_size"]), held_out=held_out, train=train,
                         probe=ProbeSpec(a["data"], int(a.get("probe_n") or PROBE.n), data_root=a.get("data_root")),
                         progress=ctx.points, sweep_id=job.id)  # resumed: the points done stay, the rest are made
        return {"runs": [str(r.path) for r in runs], "sweep": runs[0].manifest["sweep"]["id"] if runs else None}


@KINDS.register
class Search(JobKind):
    """data, target, scores (a CSV of the handed model's filters); optional criterion (default: the CSV's), by
    (flops, params or latency), runtime and batch (a latency budget's), round_to, exclude, sensitivity (a CSV: one
    more start), and the search preset's parameters (seed, candidates, seconds, method). Writes plan.json and
    candidates.csv into the job; cancelled, it writes the best plan found so far before it ends."""

    name, requires, needs_model = "search", ("data", "target", "scores"), True

    def check(self, args: dict[str, Any], model: nn.Module | None) -> None:
        target, by = args["target"], args.get("by", TARGET_BY)
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
            raise UserError(f"target must be a fraction of {by} to remove, in (0, 1), got {target!r}")
        if by not in BUDGETS:
            raise UserError(f"by must be one of {BUDGETS}, got {by!r}")
        get_runtime(args.get("runtime", LATENCY_MODEL.runtime))
        _check_whole(args, "batch", "the batch size latency counts at", 1)
        if args.get("round_to") is not None:
            check_round_to(args["round_to"])
        for p in get_preset(self.name).params:
            if p.name in args:
                p.validate(args[p.name])
        if model is not None:
            read_scores(args["scores"], model)

    def describe(self, args: dict[str, Any]) -> str:
        return f"Search the allocation removing {args['target']:.0%} of the {args.get('by', TARGET_BY)}"

    def run(self, job: Job, ctx: Context) -> dict[str, Any]:
        a = job.args
        model, header = load_checkpoint(job.path / MODEL_FILE)
        model, arch = model.to(ctx.device).eval(), header["arch"]
        struct = structure(model, model_info(arch).input_size)
        inputs = {"scores": read_scores(a["scores"], model), "train": load_arrays(a["data"], "train",
                                                                                 a.get("data_root"))}
        if a.get("sensitivity"):
            inputs["sensitivity"] = read_sensitivity(a["sensitivity"])
        if a.get("by") == LATENCY:
            inputs["latency"] = latency_model(model, model_info(arch).input_size, struct=struct,
                                              runtime=a.get("runtime", LATENCY_MODEL.runtime),
                                              batch=int(a.get("batch", LATENCY_MODEL.batch)),
                                              round_to=a.get("round_to", ROUND_TO), progress=ctx.steps)
        preset = get_preset(self.name)
        plan = preset.make(struct, arch, target=a["target"], by=a.get("by", TARGET_BY), exclude=a.get("exclude", ()),
                           criterion=a.get("criterion") or _criterion_of(a["scores"]), model=model,
                           round_to=a.get("round_to", ROUND_TO), cancel=(job.path / CANCEL_FILE).exists,
                           progress=_reporting(ctx), **inputs,
                           **{p.name: a[p.name] for p in preset.params if p.name in a})
        plan.save(job.path / "plan.json")
        found = plan.preset["search"]
        candidates_frame(found).to_csv(job.path / "candidates.csv", index=False)
        result = {"plan": str(job.path / "plan.json"), "candidates": str(job.path / "candidates.csv"),
                  "accuracy": found["accuracy"], "judged": found["judged"], "stopped": found["stopped"]}
        if found["stopped"] == "cancelled":
            job.save(result=result)
            raise Cancelled("cancelled by the user: plan.json holds the best plan found before")
        return result


def _reporting(ctx: Context):
    """ctx.steps, quiet once the job is cancelled (the search sees the flag itself and stops with its best)."""
    def progress(done: int, total: int) -> None:
        try:
            ctx.steps(done, total)
        except Cancelled:
            pass
    return progress


def _criterion_of(scores: str) -> str:
    """The criterion a scores CSV names (its criterion column), else the fallback."""
    column = pd.read_csv(scores, usecols=lambda c: c == "criterion", nrows=1)
    return str(column["criterion"].iloc[0]) if "criterion" in column and len(column) else FALLBACK_CRITERION
