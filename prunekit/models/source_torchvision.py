"""``torchvision:<name>``: a torchvision classification model (``torchvision.models.list_models``), 224x224 without
an ``@`` size; pretrained: torchvision's DEFAULT (ImageNet) weights with a new head for other than 1000 classes."""
from __future__ import annotations

import functools

import torch.nn as nn
import torchvision

from prunekit.models.heads import replace_head
from prunekit.models.sources import RANDOM_INIT, ModelSource, ModelSpec, first_line, register_source, try_download

__all__ = ["TorchvisionSource"]


@functools.lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def _download_torchvision(name: str) -> nn.Module:
    """torchvision's ``name`` with its DEFAULT (ImageNet) weights, downloaded into torch's hub cache if absent."""
    return torchvision.models.get_model(name, weights="DEFAULT")


@register_source
class TorchvisionSource(ModelSource):
    """torchvision's classification models."""

    name = "torchvision"
    form = "torchvision:<name>"
    label = "A torchvision model"
    first = "resnet18"

    def catalogue(self) -> list[str]:
        return list(_names())

    def description(self, spec: ModelSpec) -> str:
        doc = first_line(torchvision.models.get_model_builder(spec.name).__doc__)
        return f"{self.name}: {doc or spec.name}"

    def build(self, spec: ModelSpec, num_classes: int, pretrained: bool = False) -> tuple[nn.Module, str]:
        """Random weights, or the DEFAULT weights with a fresh head for ``num_classes`` (a failed download falls
        back to random weights and says why)."""
        self.check_known(spec)
        model, failure = try_download(lambda: _download_torchvision(spec.name)) if pretrained else (None, RANDOM_INIT)
        if model is None:
            return self._random(spec, num_classes), failure
        if num_classes != 1000:
            replace_head(model, num_classes, self.input_size(spec))
        weights = torchvision.models.get_model_weights(spec.name).DEFAULT
        head = f"; its {num_classes}-class head is new (random)" if num_classes != 1000 else ""
        return model, f"pretrained: torchvision {weights}{head}"

    @staticmethod
    def _random(spec: ModelSpec, num_classes: int) -> nn.Module:
        """torchvision's model with random weights; a vision transformer (fixed input size) is built for a square
        @ size."""
        extra = {}
        if spec.name.startswith("vit_") and spec.size is not None and spec.size[0] == spec.size[1]:
            extra["image_size"] = spec.size[0]
        return torchvision.models.get_model(spec.name, weights=None, num_classes=num_classes, **extra)
