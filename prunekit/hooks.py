"""Forward hooks on the layers' taps, always removed, with every statistic kept outside the modules.

>>> sums = {}
>>> with capture(model, layers, lambda layer, fmap: sums.__setitem__(layer.name, fmap.sum((0, 2, 3)))):
...     model(x)
>>> with gate(model, layers, {"layer1.0.conv1": mask}):   # mask (C,) or (B, C): multiplies the feature map
...     loss = model(x)

The hooks sit on each layer's tap (the BN that follows the conv, else the conv; see :mod:`prunekit.layers`)
and are removed in ``finally``, so an exception inside the ``with`` block leaves the model as it was.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from .layers import ConvLayer, feature_map

__all__ = ["capture", "gate", "eval_mode"]


@contextmanager
def capture(
    model: nn.Module, layers: Sequence[ConvLayer], fn: Callable[[ConvLayer, torch.Tensor], None]
) -> Iterator[None]:
    """While open, every forward of ``model`` calls ``fn(layer, fmap)`` for each layer, with ``fmap`` its
    feature map (B, C, H, W) (:func:`prunekit.layers.feature_map` of the tap output). ``fn`` must not
    modify ``fmap`` in place (it may be the tap output itself) and its return value is ignored."""

    def hook_for(layer: ConvLayer):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            fn(layer, feature_map(layer, output))

        return hook

    with _tap_hooks(model, layers, hook_for):
        yield


@contextmanager
def gate(model: nn.Module, layers: Sequence[ConvLayer], masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """While open, the tap output of each layer named in ``masks`` is multiplied by its channel gate:
    ``masks[name]`` of shape (C,) (one factor per filter) or (B, C) (one per image and filter), read at
    every forward, so the caller may replace the entries of a mutable ``masks`` between forwards. A 0
    switches a filter off for everything downstream (its activation sees 0; ReLU, ReLU6, SiLU, GELU,
    hardswish and tanh map 0 to 0). The gated output is a new tensor, so in-place ops downstream never
    touch the tap's own output. Layers missing from ``masks`` at a forward are left as they are."""

    def hook_for(layer: ConvLayer):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
            mask = masks.get(layer.name)
            if mask is None:
                return None
            shape = (1, -1, 1, 1) if mask.ndim == 1 else (mask.shape[0], -1, 1, 1)
            return output * mask.to(output.dtype).view(shape)

        return hook

    with _tap_hooks(model, layers, hook_for):
        yield


@contextmanager
def _tap_hooks(model: nn.Module, layers: Sequence[ConvLayer], hook_for: Callable) -> Iterator[None]:
    """Register ``hook_for(layer)`` as a forward hook on each layer's tap; every one removed on exit, even
    when registering or the body raises."""
    handles = []
    try:
        for layer in layers:
            handles.append(model.get_submodule(layer.tap).register_forward_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (BN uses its running statistics: each image is scored independently of
    the others in its batch) and restore its previous mode afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
