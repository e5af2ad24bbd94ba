"""Data-driven baselines with published code: Taylor, HRank, CHIP. Each streams the probe set once.

- Taylor (Molchanov et al., CVPR 2019): per image |sum over positions of activation * gradient| of the
  loss (cross-entropy, summed over the batch so that the per-image gradient does not depend on the batch size),
  averaged over the probe set. The gradient is that of a channel gate on the layer's tap (the BN output), so
  activation * gradient is exact for ReLU and for residual taps; for ReLU6 the saturated positions (> 6), where
  the gradient at the tap is 0, contribute 0.
- HRank (Lin et al., CVPR 2020): mean over the probe set of the matrix rank of the filter's H x W feature map
  (``torch.linalg.matrix_rank`` with its default tolerance, as HRank's code uses torch's rank).
- CHIP (Sui et al., NeurIPS 2021): per image A (C x HW), CI_j = ||A||_* - ||A with row j zeroed||_*, averaged.
  The nuclear norms are computed in float64 from the smaller Gram matrix: A A^T with row and column j zeroed
  (C <= HW), or A^T A - a_j a_j^T (HW < C); ||.||_* = sum of the square roots of its eigenvalues.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hooks import gate
from ..layers import ConvLayer
from ..probe import Probe
from .base import Criterion, Scores, register_criterion
from .streaming import Progress, Ticker, model_device, per_image_mean

__all__ = ["Taylor", "HRank", "CHIP", "chip_scores"]

CHIP_BLOCK = 1 << 24  # float64 elements per batched eigen-decomposition (128 MiB)


@register_criterion
class Taylor(Criterion):
    """First-order Taylor importance of each filter's feature map."""

    name = "taylor"
    unit = "|activation x gradient|"
    description = (
        "Taylor (Molchanov et al., CVPR 2019): per image |sum over positions of feature map x gradient of the "
        "cross-entropy loss|, averaged over the probe set; the gradient is that of a channel gate on the BN "
        "output (exact activation x gradient for ReLU). Needs labels."
    )
    needs_data = True
    needs_labels = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        device = model_device(model)
        tick = Ticker(len(probe), progress)
        sums = {layer.name: torch.zeros(layer.out_channels, dtype=torch.float64, device=device) for layer in layers}
        masks: dict[str, torch.Tensor] = {}
        n = 0
        with gate(model, layers, masks):
            for batch in probe.batches(device):
                for layer in layers:
                    masks[layer.name] = torch.ones(len(batch.x), layer.out_channels, device=device,
                                                   requires_grad=True)
                loss = F.cross_entropy(model(batch.x).float(), batch.y, reduction="sum")
                grads = torch.autograd.grad(loss, [masks[layer.name] for layer in layers], allow_unused=True)
                for layer, g in zip(layers, grads):
                    if g is not None:  # a layer that does not reach the output (never in a classifier)
                        sums[layer.name] += g.abs().sum(0).double()
                n += len(batch.x)
                tick()
        return Scores({name: s / n for name, s in sums.items()})


@register_criterion
class HRank(Criterion):
    """Average rank of each filter's feature map."""

    name = "hrank"
    unit = "mean feature-map rank"
    description = (
        "HRank (Lin et al., CVPR 2020): mean over the probe set of the matrix rank of the filter's H x W "
        "feature map (after BN and ReLU). Matches the published definition."
    )
    needs_data = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        def rank(fmap: torch.Tensor) -> torch.Tensor:
            return torch.linalg.matrix_rank(fmap.float()).double()

        return Scores(per_image_mean(model, layers, probe, rank, progress))


def chip_scores(fmap: torch.Tensor) -> torch.Tensor:
    """fmap (B, C, H, W) -> float64 (B, C): CI_j = ||A||_* - ||A with row j zeroed||_* per image, A (C, H*W)."""
    a = fmap.flatten(2).double()  # (B, C, HW)
    b, c, hw = a.shape
    if c <= hw:
        gram = a @ a.transpose(1, 2)  # (B, C, C)
    else:
        gram = a.transpose(1, 2) @ a  # (B, HW, HW)
    m = gram.shape[-1]
    full = _nuclear(gram)  # (B,)
    out = torch.empty(b, c, dtype=torch.float64, device=fmap.device)
    step = max(1, CHIP_BLOCK // (m * m * b))
    for j0 in range(0, c, step):
        j = torch.arange(j0, min(c, j0 + step), device=fmap.device)
        if c <= hw:  # zero row and column j
            reduced = gram[:, None].repeat(1, len(j), 1, 1)  # (B, J, C, C)
            slot = torch.arange(len(j), device=fmap.device)
            reduced[:, slot, j, :] = 0
            reduced[:, slot, :, j] = 0
        else:  # remove row j's contribution a_j a_j^T
            rows = a[:, j]  # (B, J, HW)
            reduced = gram[:, None] - rows[..., :, None] * rows[..., None, :]
        out[:, j0 : j0 + len(j)] = full[:, None] - _nuclear(reduced)
    return out


def _nuclear(gram: torch.Tensor) -> torch.Tensor:
    """Nuclear norm of A from its Gram matrix (..., m, m) -> (...): sum of sqrt of the eigenvalues."""
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum(-1)


@register_criterion
class CHIP(Criterion):
    """Channel independence: how much a channel adds to the nuclear norm of the layer's maps."""

    name = "chip"
    unit = "nuclear-norm drop"
    description = (
        "CHIP (Sui et al., NeurIPS 2021): channel independence, per image A (C x HW) of the layer's feature "
        "maps, CI_j = ||A||_* - ||A with row j zeroed||_*, averaged over the probe set. Matches the published "
        "definition (nuclear norms computed in float64 through the smaller Gram matrix)."
    )
    needs_data = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        return Scores(per_image_mean(model, layers, probe, chip_scores, progress))
