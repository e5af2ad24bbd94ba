"""Data-driven baselines with published code: Taylor, HRank, CHIP. Each streams the probe set once.

- Taylor, default ``form="cvpr2019"`` (Molchanov et al., CVPR 2019; NVlabs/Taylor_pruning, method 22 "gate after
  BN"): a channel gate (all ones) multiplies the layer's tap (the BN output); per probe batch the gate's gradient
  of the batch's mean cross-entropy (``nn.CrossEntropyLoss()``, as the authors' ``main.py``), i.e. the sum over
  the batch's images and positions of activation x gradient, is squared; the score is the **average over the
  probe batches** of that square (the authors' ``add_criteria`` sums it per batch and ``compute_saliency``
  divides by the number of batches). The batch sum makes the score depend on how the probe is batched (batch
  size and which images share a batch): deterministic for a fixed probe, but not invariant to rebatching.
- Taylor, ``form="iclr2017"`` (Molchanov et al., ICLR 2017): per image |mean over positions of activation x
  gradient| of that image's own cross-entropy (the batch loss is a sum, so an image's gradient does not depend
  on its batch), averaged over the probe images; independent of batching. The paper's layer-wise L2
  normalisation is not applied (it does not change a ranking within a layer).
  In both forms activation x gradient at the gate is exact for ReLU and for residual taps; for ReLU6 the
  saturated positions (> 6), where the gradient at the tap is 0, contribute 0.
- HRank (Lin et al., CVPR 2020): mean over the probe set of the matrix rank of the filter's H x W feature map
  (``torch.linalg.matrix_rank`` with its default tolerance, as HRank's code uses torch's rank).
- CHIP (Sui et al., NeurIPS 2021): per image A (C x HW), CI_j = ||A||_* - ||A with row j zeroed||_*, averaged.
  The nuclear norms are computed in float64 from the smaller Gram matrix: A A^T with row and column j zeroed
  (C <= HW), or A^T A - a_j a_j^T (HW < C); ||.||_* = sum of the square roots of its eigenvalues.

HRank and CHIP read, for a conv whose BN output goes straight into a residual add, the map **after the add and
the activation that follows it** (``reads = "post_add"``), as their published code does: lmbxmu/HRank
``rank_generation.py`` and Eclipsess/CHIP_NeurIPS2021 ``calculate_feature_maps.py`` hook the block's ``relu2``.
Every other conv is read after its BN and activation.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.criteria.base import Criterion, Param, Scores, register_criterion
from prunekit.criteria.hooks import capture, gate
from prunekit.criteria.probe import Batch, Probe
from prunekit.criteria.streaming import Progress, Ticker, model_device, per_image_mean
from prunekit.models.layers import ConvLayer

__all__ = ["Taylor", "HRank", "CHIP", "chip_scores"]

CHIP_BLOCK = 1 << 24  # float64 elements per batched eigen-decomposition (128 MiB)
POST_ADD_RULE = ("For a conv whose BN output goes straight into a residual add it reads the map after the add: the "
                 "output of the activation that follows it (ReLU in a ResNet; the add's output where none follows), "
                 "as the published code does ({}); every other conv after its BN and activation.")


@register_criterion
class Taylor(Criterion):
    """First-order Taylor importance of each filter's gate (CVPR 2019) or feature map (ICLR 2017)."""

    name = "taylor"
    unit = "(batch sum of activation x gradient)^2"
    revision = 2
    description = (
        "Taylor (Molchanov et al.). form='cvpr2019' (default; CVPR 2019, NVlabs/Taylor_pruning 'gate after BN'): "
        "a gate after the BN; per probe batch (sum over the batch and positions of activation x gradient of "
        "the batch's mean cross-entropy)^2, averaged over the batches as the authors' code does. This batch sum "
        "depends on the batch size and on which images share a batch: deterministic for a fixed probe, not "
        "invariant to rebatching. form='iclr2017' (ICLR 2017): per image |mean over positions of activation x "
        "gradient|, averaged over images (independent of batching; no layer-wise L2 normalisation). Needs labels."
    )
    params = (
        Param("form", "cvpr2019", "cvpr2019: squared batch sum at a gate after BN (NVlabs code); iclr2017: "
              "per-image |spatial mean of activation x gradient|, averaged", choices=("cvpr2019", "iclr2017")),
    )
    needs_data = True
    needs_labels = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        per_image = self.config["form"] == "iclr2017"
        device = model_device(model)
        tick = Ticker(len(probe), progress)
        sums = {layer.name: torch.zeros(layer.out_channels, dtype=torch.float64, device=device) for layer in layers}
        cells: dict[str, int] = {}  # H * W of each layer's map
        masks: dict[str, torch.Tensor] = {}
        count = 0  # images (iclr2017) or batches (cvpr2019)
        def record(layer: ConvLayer, fmap: torch.Tensor) -> None:
            cells[layer.name] = fmap[0, 0].numel()

        with gate(model, layers, masks), capture(model, layers, record):
            for batch in probe.batches(device):
                for layer, g in zip(layers, _gate_gradients(model, layers, masks, batch, per_image)):
                    if g is not None:  # a layer that does not reach the output (never in a classifier)
                        sums[layer.name] += g.abs().sum(0) / cells[layer.name] if per_image else g.square()
                count += len(batch.x) if per_image else 1
                tick()
        return Scores({name: s / count for name, s in sums.items()})


def _gate_gradients(
    model: nn.Module, layers: list[ConvLayer], masks: dict[str, torch.Tensor], batch: Batch, per_image: bool
) -> tuple[torch.Tensor | None, ...]:
    """Gradients, float64, of the cross-entropy with respect to fresh all-ones gates in ``masks``: per image
    (B, C) of the summed loss when ``per_image``, else (C,) of the batch's mean loss; None for a layer the
    loss does not reach. Each entry is the sum over positions (and, for (C,), images) of gate input x gradient."""
    device = batch.x.device
    for layer in layers:
        shape = (len(batch.x), layer.out_channels) if per_image else (layer.out_channels,)
        masks[layer.name] = torch.ones(shape, device=device, requires_grad=True)
    loss = F.cross_entropy(model(batch.x).float(), batch.y, reduction="sum" if per_image else "mean")
    grads = torch.autograd.grad(loss, [masks[layer.name] for layer in layers], allow_unused=True)
    return tuple(None if g is None else g.double() for g in grads)


@register_criterion
class HRank(Criterion):
    """Average rank of each filter's feature map."""

    name = "hrank"
    unit = "mean feature-map rank"
    revision = 2
    reads = "post_add"
    description = (
        "HRank (Lin et al., CVPR 2020): mean over the probe set of the matrix rank of the filter's H x W "
        "feature map. Matches the published definition. " + POST_ADD_RULE.format("lmbxmu/HRank rank_generation.py")
    )
    needs_data = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        def rank(fmap: torch.Tensor) -> torch.Tensor:
            return torch.linalg.matrix_rank(fmap.float()).double()

        return Scores(per_image_mean(model, layers, probe, rank, progress, self.reads))


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
    revision = 2
    reads = "post_add"
    description = (
        "CHIP (Sui et al., NeurIPS 2021): channel independence, per image A (C x HW) of the layer's feature "
        "maps, CI_j = ||A||_* - ||A with row j zeroed||_*, averaged over the probe set. Matches the published "
        "definition (nuclear norms computed in float64 through the smaller Gram matrix). "
        + POST_ADD_RULE.format("Eclipsess/CHIP_NeurIPS2021 calculate_feature_maps.py")
    )
    needs_data = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        return Scores(per_image_mean(model, layers, probe, chip_scores, progress, self.reads))
