"""BatchNorm recalibration (adaptive BN; Li et al., EagleEye, ECCV 2020): after pruning, the BN running statistics
describe channels that no longer add up the same way, which is most of why accuracy right after pruning sits near
chance. Re-estimating them on a few hundred to a few thousand training images, without gradients and without
touching a weight, recovers most of it in seconds, and EagleEye shows the recalibrated accuracy tracks the accuracy
reached after fine-tuning.

>>> model, note = recalibrate_bn(pruned, train_set)       # a new model; ``pruned`` is left as it was
>>> evaluate(model, DeviceLoader(held_out, EVAL_BATCH, train=False))
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn as nn

from prunekit.data import ArraySet, DeviceLoader
from prunekit.defaults import RECALIBRATION
from prunekit.errors import UserError
from prunekit.models.layers import TRACE_LOCK

__all__ = ["recalibrate_bn", "reestimate_bn", "NO_BN"]

NO_BN = "the model has no BatchNorm layer: there are no statistics to recalibrate, so it is returned as it is"


def recalibrate_bn(model: nn.Module, images: ArraySet, *, n: int = RECALIBRATION.n, seed: int = RECALIBRATION.seed,
                   batch_size: int = RECALIBRATION.batch_size) -> tuple[nn.Module, str | None]:
    """A copy of ``model`` (on its device, in eval mode) whose BatchNorm running statistics are re-estimated on
    ``n`` images of ``images`` (uint8 (N, 3, H, W), normally the training split) drawn by ``seed``, in their
    order, without augmentation, in batches of ``batch_size``: every BN's running mean and variance are reset and
    recomputed as the cumulative average over the batches (``momentum=None``) in training mode, under
    ``torch.no_grad()``; every other module stays in eval mode, and no weight or bias changes. Deterministic.
    -> (the recalibrated model, None), or (``model`` itself, :data:`NO_BN`) for a model without BatchNorm."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model, NO_BN
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"recalibration needs a whole number of images >= 1, got {n!r}")
    device = next(model.parameters()).device
    out = copy.deepcopy(model).eval()
    reestimate_bn(out, DeviceLoader(images.subset(n, seed=seed), batch_size, train=False, device=device))
    return out, None


def reestimate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """:func:`recalibrate_bn`'s recipe, in place on ``model`` (a copy the caller owns): every BN's running statistics
    reset and recomputed as the cumulative average over ``batches`` of (x (B, C, H, W), y) in training mode, under
    ``torch.no_grad()``; every other module in eval mode; the BNs' momentum restored and the model left in eval
    mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    model.eval()
    for bn in norms:
        if bn.running_mean is None:  # track_running_stats=False: it always uses the batch, nothing to estimate
            continue
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches
        bn.train()
    with torch.no_grad(), TRACE_LOCK:  # no fx trace of another thread meanwhile
        for x, _ in batches:
            model(x)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()
