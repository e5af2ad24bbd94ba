"""What a plan would cost in accuracy, before pruning for real: the plan judged by a
:class:`~prunekit.pruning.evaluator.CandidateEvaluator` (its removed channels switched off where they are read, the
BatchNorm statistics recalibrated, the result evaluated on held-out images: what the physically pruned model gives).
The Plan page shows it live beside the instant cost estimate; the evaluator is prepared once per model and data and
kept for the next plan.

>>> predict_accuracy(model, {"layer1.0.conv1": 0.5}, scores, (3, 32, 32), train=train, held_out=test.subset(1000))
{'accuracy': 81.3, 'loss': 0.61, 'n': 1000, 'recalibrated': True, 'seconds': 0.4}
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from prunekit.criteria.scores import weights_hash
from prunekit.data import ArraySet
from prunekit.defaults import RECALIBRATION, ROUND_TO
from prunekit.models.layers import TRACE_LOCK
from prunekit.lru import LRU
from prunekit.pruning.evaluator import CandidateEvaluator

__all__ = ["predict_accuracy", "evaluator_for"]

_EVALUATORS = LRU(max_entries=4)  # one per model, input size, held-out and recalibration images


def evaluator_for(model: nn.Module, input_size: tuple[int, int, int], *, held_out: ArraySet,
                  train: ArraySet | None) -> CandidateEvaluator:
    """The :class:`CandidateEvaluator` of ``model`` on these images, prepared once and kept (the last few, keyed
    by the weights' hash, the input size and the images' hashes). Traces the model when it is new: call it from
    the thread that may trace, or hold :data:`prunekit.models.layers.TRACE_LOCK`."""
    recal = None if train is None else train.subset(RECALIBRATION.n, RECALIBRATION.seed)
    key = (weights_hash(model), tuple(input_size), held_out.content_hash(),
           None if recal is None else recal.content_hash(), str(next(model.parameters()).device))
    return _EVALUATORS.get_or_compute(key, lambda: CandidateEvaluator(model, input_size, held_out=held_out,
                                                                      train=train))


def predict_accuracy(model: nn.Module, ratios: dict[str, float], scores: dict[str, torch.Tensor],
                     input_size: tuple[int, int, int], *, train: ArraySet | None, held_out: ArraySet,
                     round_to: int = ROUND_TO) -> dict[str, float | int | bool]:
    """The accuracy ``model`` would keep pruned by ``ratios`` ({group root: ratio}; kept filters rounded to a
    multiple of ``round_to``) with ``scores`` ({conv: (filters,)}), its BatchNorm statistics recalibrated on
    ``train`` (None: not recalibrated), on ``held_out`` (uint8 (N, 3, H, W)).
    -> accuracy (%), loss, n (images), recalibrated, before (the unpruned model's accuracy (%) on the same images,
    evaluated once per weights and images), seconds. ``model`` is not modified.
    Safe in a background thread: it holds :data:`prunekit.models.layers.TRACE_LOCK` while it runs."""
    t0 = time.perf_counter()
    with TRACE_LOCK:
        ev = evaluator_for(model, input_size, held_out=held_out, train=train)
        r = ev.evaluate(ratios, scores, round_to=round_to)
        before = ev.baseline()["accuracy"]
    return {"accuracy": r["accuracy"], "loss": r["loss"], "n": r["n"], "recalibrated": r["recalibrated"],
            "before": before, "seconds": time.perf_counter() - t0}
