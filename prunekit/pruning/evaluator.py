"""One evaluator of candidate plans: what a plan would cost in accuracy, the engine of the predicted accuracy,
the sensitivity curves and sweeps.

Everything that does not depend on the plan is prepared once per model and data: the traced groups (to check a plan
and name the filters it removes), the held-out and recalibration images on the model's device, and the unpruned
model's accuracy (cached by the weights' and the images' hashes, so a sweep evaluates it once). A candidate
(``ratios`` + ``scores``) is then pruned physically (:class:`prunekit.pruning.prune.Pruner`, which traces the model
once and prunes a copy per candidate, checked as every pruning is; the smaller model evaluates faster than the masked
original would),
its BatchNorm statistics re-estimated (:func:`prunekit.pruning.recalibrate.reestimate_bn`, the recipe of
:func:`~prunekit.pruning.recalibrate.recalibrate_bn`), each BN that follows a conv folded into it
(:func:`prunekit.pruning.fold.fold_bn`: the same accuracy up to float rounding, checked on a probe; a third less time)
and evaluated on the held-out images. A candidate that removes
the same filters as one already judged (two targets whose kept widths round alike) is not evaluated again.

>>> ev = CandidateEvaluator(model, (3, 32, 32), held_out=test.subset(1000), train=train)
>>> ev.baseline()["accuracy"]                          # the unpruned model, evaluated once per weights and images
>>> ev.evaluate({"layer1.0.conv1": 0.5}, scores)       # {'accuracy': 81.3, 'loss': 0.61, 'n': 1000, ...}
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time

import torch
import torch.nn as nn

from prunekit.criteria.scores import weights_hash
from prunekit.data import ArraySet, DeviceLoader
from prunekit.defaults import EVAL_BATCH, EVAL_PRECISION, EVAL_PRECISIONS, RECALIBRATION, ROUND_TO
from prunekit.errors import UserError
from prunekit.lru import LRU
from prunekit.models.metrics import evaluate
from prunekit.pruning.fold import fold_bn
from prunekit.pruning.prune import Pruner
from prunekit.pruning.recalibrate import NO_BN, reestimate_bn

__all__ = ["CandidateEvaluator"]

_BASELINES = LRU(max_entries=32)  # (weights, images, batch) -> the unpruned model's accuracy


class CandidateEvaluator:
    """Judges candidate plans of one model on one held-out set (and one recalibration set).

    model: on the device to evaluate on; copied, never modified. input_size: (C, H, W). held_out: uint8
    (N, C, H, W) images with labels. train: the images BatchNorm is recalibrated on (``RECALIBRATION.n`` of them
    drawn with ``RECALIBRATION.seed``, as :func:`prunekit.pruning.recalibrate.recalibrate_bn` draws them); None:
    candidates are evaluated as pruned. batch_size: the held-out batches. precision: "fp32", or "bf16" (the
    recalibration and evaluation under bf16 autocast: about 1.9x faster on a CPU with bf16 units, but 0.2-0.3 points
    off fp32's accuracy on the bundled ResNet-20, so not the default; benchmarks/lecture_loop.py measures both). The
    pruned model runs in channels_last either way (exactly fp32's accuracy, faster convolutions). Safe to share between threads: one candidate is judged at
    a time.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], *, held_out: ArraySet,
                 train: ArraySet | None, batch_size: int = EVAL_BATCH, precision: str = EVAL_PRECISION):
        if precision not in EVAL_PRECISIONS:
            raise UserError(f"precision must be one of {EVAL_PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.input_size = tuple(input_size)
        self._pruner = Pruner(model, self.input_size)  # traced once; each candidate prunes a copy of its model
        self.model, self.groups, self.frozen = self._pruner.model, self._pruner.groups, self._pruner.frozen
        device = next(self.model.parameters()).device
        self._held = DeviceLoader(held_out, batch_size, train=False, device=device)  # uint8 kept, normalised per batch
        self._norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.running_mean is not None]
        self._recal = None if train is None or not self._norms else DeviceLoader(
            train.subset(RECALIBRATION.n, seed=RECALIBRATION.seed), RECALIBRATION.batch_size, train=False,
            device=device)
        self._key = (weights_hash(model), held_out.content_hash(), batch_size)
        self._results = LRU(max_entries=256)  # (removed filters, recalibrated) -> the candidate's result
        self._lock = threading.Lock()

    @property
    def recalibrates(self) -> bool:
        """Whether candidates are recalibrated (training images given and the model has BatchNorm)."""
        return self._recal is not None

    def baseline(self) -> dict[str, float]:
        """The unpruned model's accuracy (%), loss and n on the held-out images; computed once per weights, images
        and batch size in this process."""
        return dict(_BASELINES.get_or_compute(self._key, self._evaluate_unpruned))

    def _evaluate_unpruned(self) -> dict[str, float]:
        with self._lock:
            return evaluate(self.model, self._held)

    def removed(self, ratios: dict[str, float], scores: dict[str, torch.Tensor], *,
                round_to: int = ROUND_TO) -> dict[str, list[int]]:
        """{group root: the filter indices ``ratios`` ({root: ratio}) removes with ``scores`` ({conv: (filters,)})};
        UserError for a ratio outside the rule or a frozen group (as :func:`prunekit.pruning.prune.prune_model`)."""
        return self._pruner.removed(ratios, scores, round_to=round_to)

    def evaluate(self, ratios: dict[str, float], scores: dict[str, torch.Tensor], *, round_to: int = ROUND_TO,
                 recalibrate: bool = True) -> dict:
        """Judge one candidate -> accuracy (%), loss, n (held-out images), recalibrated (bool), note (why not
        recalibrated, or None), kept ({root: filters kept}), cached (judged before), seconds."""
        t0 = time.perf_counter()
        removed = self.removed(ratios, scores, round_to=round_to)
        recal = recalibrate and self.recalibrates
        key = (tuple(sorted((root, tuple(idx)) for root, idx in removed.items() if idx)), recal)
        kept = {g.root: g.channels - len(removed.get(g.root, ())) for g in self.groups}
        with self._lock:
            if (known := self._results.get(key)) is not None:
                return {**known, "kept": kept, "cached": True, "seconds": time.perf_counter() - t0}
            pruned = self._pruner.prune(ratios, scores, round_to=round_to)[0] if key[0] else \
                copy.deepcopy(self.model)  # nothing removed: the unpruned model (recalibrated on a copy)
            with self._precision(pruned):
                if recal:
                    reestimate_bn(pruned, self._recal)
                fold_bn(pruned, self._pruner.conv_bn, self._pruner.probe)
                result = evaluate(pruned.to(memory_format=torch.channels_last), self._held)
            stored = self._results.put(key, {**result, "recalibrated": recal,
                                             "note": None if recal else self._why_not(recalibrate)})
        return {**stored, "kept": kept, "cached": False, "seconds": time.perf_counter() - t0}

    def _precision(self, model: nn.Module):
        """The pruned ``model`` in channels_last (the same accuracy as contiguous, measured: faster convolutions)
        and the context it runs in: nothing for fp32, bf16 autocast for bf16."""
        model.to(memory_format=torch.channels_last)
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)

    def _why_not(self, asked: bool) -> str:
        if not asked:
            return "not asked"
        return NO_BN if not self._norms else "no training images"
