"""What a plan would cost in accuracy, before pruning for real: the plan applied to a copy of the model, its
BatchNorm statistics recalibrated, the result evaluated on held-out images. The Plan page shows it live beside
the instant cost estimate.

>>> predict_accuracy(model, {"layer1.0.conv1": 0.5}, scores, (3, 32, 32), train=train, held_out=test.subset(1000))
{'accuracy': 81.3, 'loss': 0.61, 'n': 1000, 'recalibrated': True, 'seconds': 1.7}
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from prunekit.data import ArraySet
from prunekit.defaults import ROUND_TO
from prunekit.models.layers import TRACE_LOCK
from prunekit.models.metrics import held_out_accuracy
from prunekit.pruning.prune import prune_model
from prunekit.pruning.recalibrate import recalibrate_bn

__all__ = ["predict_accuracy"]


def predict_accuracy(model: nn.Module, ratios: dict[str, float], scores: dict[str, torch.Tensor],
                     input_size: tuple[int, int, int], *, train: ArraySet | None, held_out: ArraySet,
                     round_to: int = ROUND_TO) -> dict[str, float | int | bool]:
    """Prune a copy of ``model`` by ``ratios`` ({group root: ratio}; kept filters rounded to a multiple of
    ``round_to``) with ``scores`` ({conv: (filters,)}),
    recalibrate its BatchNorm statistics on ``train`` (None: not recalibrated) and evaluate it on ``held_out``
    (uint8 (N, 3, H, W)). -> accuracy (%), loss, n (images), recalibrated, seconds. ``model`` is not modified.
    Safe in a background thread: it holds :data:`prunekit.models.layers.TRACE_LOCK` while it runs, and traces nothing."""
    t0 = time.perf_counter()
    with TRACE_LOCK:
        pruned, _ = prune_model(model, ratios, scores, input_size, round_to=round_to)
        note = "no training images"
        if train is not None:
            pruned, note = recalibrate_bn(pruned, train)
        result = held_out_accuracy(pruned, held_out)
    return {**result, "recalibrated": note is None, "seconds": time.perf_counter() - t0}
