"""A model's latency model on one of the runtimes (:mod:`prunekit.runs.runtimes`: PyTorch eager, ONNX Runtime),
measured once with the runtime's own timing and cached on disk; and what a run pruned by a latency-budgeted plan
records of the latency it reached.

>>> lm = latency_model(model, (3, 32, 32), runtime="onnxruntime", batch=1)   # measured once (a minute), then cached
>>> plan(model, "resnet20", target=0.4, by="latency", latency=lm)            # -40% of ONNX Runtime's batch-1 latency

The tables themselves and the prediction are :mod:`prunekit.pruning.latency`'s (the layer that plans may not import
the runtimes, so the timing is handed to it as a callable).
"""
from __future__ import annotations

import importlib.metadata
from typing import Any

import torch
import torch.nn as nn

from prunekit.criteria.streaming import Progress
from prunekit.data import cache_dir
from prunekit.defaults import LATENCY_MODEL, ROUND_TO
from prunekit.errors import UserError
from prunekit.pruning.latency import LatencyModel, Timer, measure_latency_model, model_key
from prunekit.pruning.plan import Plan
from prunekit.pruning.ratios import check_round_to
from prunekit.models.metrics import latency_ms
from prunekit.pruning.structure import Structure, structure
from prunekit.runs.runtime_onnx import checked_session, ort_latency_ms
from prunekit.runs.runtimes import get_runtime

__all__ = ["latency_model", "runtime_timer", "budget_timing", "latency_budget"]


def runtime_timer(runtime: str, batch: int, device: torch.device | str = "cpu", repeat: int = LATENCY_MODEL.repeat,
                  rounds: int = LATENCY_MODEL.rounds) -> Timer:
    """timer(module, input shape) -> ms of ``module`` at ``batch`` in ``runtime``: the least of ``rounds`` medians of
    ``repeat`` runs (a loaded machine only adds time). Eager runs on ``device``; ONNX Runtime exports the module once
    (checked equal to it, as runs are) and times that session; another registered runtime is timed by its
    :meth:`~prunekit.runs.runtimes.Runtime.measure`, one median. UserError when the runtime cannot time it (an ONNX
    export that fails or disagrees with the module)."""
    rt = get_runtime(runtime)

    def refuse(module: nn.Module, shape: tuple[int, ...], why: str):
        return UserError(f"{rt.label} cannot time {type(module).__name__} on inputs {shape}: {why}; plan by FLOPs or "
                         "pick another runtime")

    def timer(module: nn.Module, shape: tuple[int, ...]) -> float:
        if rt.name == "eager":
            module = module.to(device)
            return min(latency_ms(module, shape, batch, repeat=repeat) for _ in range(rounds))
        if rt.name == "onnxruntime":
            session, record = checked_session(module, shape)
            if session is None:
                raise refuse(module, shape, record["error"])
            return min(ort_latency_ms(session, shape, batch, repeat=repeat) for _ in range(rounds))
        ms = (rt.measure(module.to(device), shape, (batch,), repeat).get(rt.latency_key) or {}).get(str(batch))
        if ms is None:
            raise refuse(module, shape, "no figure")
        return float(ms)
    return timer


def _versions(runtime: str) -> dict[str, str]:
    out = {}
    for package in ("onnxruntime", "onnx") if runtime == "onnxruntime" else ():
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


def latency_model(model: nn.Module, input_size: tuple[int, int, int], *, runtime: str = LATENCY_MODEL.runtime,
                  batch: int = LATENCY_MODEL.batch, round_to: int = ROUND_TO, struct: Structure | None = None,
                  repeat: int = LATENCY_MODEL.repeat, rounds: int = LATENCY_MODEL.rounds, cache: bool = True,
                  progress: Progress | None = None) -> LatencyModel:
    """The :class:`~prunekit.pruning.latency.LatencyModel` of ``model`` (input (C, H, W) ``input_size``) in
    ``runtime`` at ``batch``, for plans rounding kept filters to ``round_to`` (each table point and the whole network
    the least of ``rounds`` medians of ``repeat`` runs, :func:`runtime_timer`): read from ``cache_dir()/latency``
    when measured before with the same key (:func:`prunekit.pruning.latency.model_key`), else measured (eager on
    the model's device; ONNX Runtime on the CPU) and written there. UserError for an unknown runtime or a batch
    below 1."""
    rt = get_runtime(runtime)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch (the batch size latency is predicted at) must be a whole number >= 1, got {batch!r}")
    round_to = check_round_to(round_to)
    struct = struct or structure(model, input_size)
    device = next(model.parameters()).device if rt.name == "eager" else torch.device("cpu")
    extra = {"repeat": repeat, "rounds": rounds, "device": str(device), **_versions(rt.name)}
    key = model_key(struct, input_size, rt.name, batch, round_to, LATENCY_MODEL.step, extra)
    path = cache_dir() / "latency" / f"{key}.json"
    if cache and path.is_file():
        found = LatencyModel.load(path)
        found.meta["cached"] = True
        return found
    made = measure_latency_model(model, struct, input_size, runtime_timer(rt.name, batch, device, repeat, rounds),
                                 runtime=rt.name, batch=batch, round_to=round_to, meta={"key": key, **extra},
                                 progress=progress)
    if cache:
        made.save(path)
    made.meta["cached"] = False
    return made


def budget_timing(plan: Plan, batches, runtimes) -> tuple[tuple[int, ...], tuple[str, ...] | None]:
    """The batches and runtimes a run of ``plan`` is timed at: ``batches`` and ``runtimes`` (None: every one), plus
    the batch and runtime of a latency budget, so that the run records the latency it reached (unless timing is
    off: ``batches`` empty)."""
    budget = plan.preset.get("latency") if plan.preset.get("by") == "latency" else None
    batches = tuple(batches)
    if not budget or not batches:
        return batches, runtimes
    batches = batches if budget["batch"] in batches else (*batches, budget["batch"])
    if runtimes is not None and budget["runtime"] not in runtimes:
        runtimes = (*runtimes, budget["runtime"])
    return batches, runtimes


def latency_budget(plan: Plan, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """What a run of a latency-budgeted ``plan`` reached: runtime, batch, target (the fraction to remove),
    predicted_ms (the plan's), before_ms and measured_ms (the run's own timings, None when not timed), reached
    (the fraction measured removed, None when not timed). None for a plan without a latency budget."""
    budget = plan.preset.get("latency") if plan.preset.get("by") == "latency" else None
    if not budget:
        return None
    key, batch = get_runtime(budget["runtime"]).latency_key, str(budget["batch"])
    was, now = (before.get(key) or {}).get(batch), (after.get(key) or {}).get(batch)
    return {"runtime": budget["runtime"], "batch": budget["batch"], "target": plan.preset.get("target"),
            "predicted_ms": budget.get("predicted_ms"), "before_ms": was, "measured_ms": now,
            "reached": None if not was or now is None else round(1 - now / was, 4)}
