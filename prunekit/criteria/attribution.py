"""Captum layer attribution reduced per channel: gradient x activation toward the true class.

captum's ``LayerGradientXActivation`` (Shrikumar et al. 2016, "Not just a black box") on each layer's tap (the
BN output), target = the image's label: attribution = tap output x d logit_y / d tap output, (B, C, H, W). The
score of filter c is its mean over images and positions (N, H, W): positive = the filter supports the correct
class. For ReLU layers the product at the BN output equals feature map x gradient at the ReLU output (both are 0
where the BN output is negative). ``absolute=True`` averages |attribution| instead (magnitude of influence,
whatever its sign). All layers are attributed in one forward and backward per batch: the probe is read once.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from captum.attr import LayerGradientXActivation

from prunekit.criteria.base import Criterion, Param, Scores, register_criterion
from prunekit.criteria.probe import Probe
from prunekit.criteria.streaming import Progress, Ticker, model_device
from prunekit.models.layers import ConvLayer

__all__ = ["GradXActivation"]


@register_criterion
class GradXActivation(Criterion):
    """captum LayerGradientXActivation, mean over (N, H, W) per channel."""

    name = "grad_x_activation"
    unit = "activation x gradient"
    description = (
        "Attribution baseline with captum's LayerGradientXActivation: BN output x gradient of the true class's "
        "logit, averaged over images and positions per channel (absolute=True: of its magnitude). Not a seed "
        "method; a standard attribution for comparison. Needs labels."
    )
    params = (Param("absolute", False, "average |attribution| instead of the signed attribution"),)
    needs_data = True
    needs_labels = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        device = model_device(model)
        tick = Ticker(len(probe), progress)
        method = LayerGradientXActivation(model, [model.get_submodule(layer.tap) for layer in layers])
        sums = {layer.name: torch.zeros(layer.out_channels, dtype=torch.float64, device=device) for layer in layers}
        cells = {layer.name: 0 for layer in layers}
        for batch in probe.batches(device):
            attributions = method.attribute(batch.x, target=batch.y)
            for layer, attr in zip(layers, attributions):
                attr = attr.detach()
                if self.config["absolute"]:
                    attr = attr.abs()
                sums[layer.name] += attr.sum((0, 2, 3)).double()
                cells[layer.name] += attr.shape[0] * attr.shape[2] * attr.shape[3]
            tick()
        return Scores({name: s / cells[name] for name, s in sums.items()})
