"""Streaming a probe set through a model: one forward pass serving every hooked layer, and progress counts."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from prunekit.criteria.hooks import capture
from prunekit.criteria.probe import Batch, Probe
from prunekit.models.layers import TRACE_LOCK, ConvLayer

__all__ = ["Progress", "no_progress", "Ticker", "model_device", "stream", "per_image_mean"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each unit of work (a probe batch, a mask sample...)."""


def no_progress(done: int, total: int) -> None:
    """The :data:`Progress` callback that reports nothing."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def stream(
    model: nn.Module,
    layers: list[ConvLayer],
    probe: Probe,
    fn: Callable[[ConvLayer, torch.Tensor, Batch], None],
    tick: Callable[[], None],
    reads: str = "pre_add",
) -> None:
    """One pass of ``probe`` through ``model`` without gradients: ``fn(layer, fmap, batch)`` for every layer
    and batch, ``fmap`` the feature map (B, C, H, W) on the model's device, read under ``reads`` ("pre_add" or
    "post_add", :mod:`prunekit.models.layers`); ``tick()`` after each batch. Every layer is served by the same forward
    pass."""
    device = model_device(model)
    current: list[Batch] = []

    def on_fmap(layer: ConvLayer, fmap: torch.Tensor) -> None:
        fn(layer, fmap, current[0])

    with torch.no_grad(), TRACE_LOCK, capture(model, layers, on_fmap, reads):
        for batch in probe.batches(device):
            current[:] = [batch]
            model(batch.x)
            tick()


class Ticker:
    """Counts units of work toward a known total and reports them to a :data:`Progress` callback."""

    def __init__(self, total: int, progress: Progress | None = None):
        self.done, self.total, self.progress = 0, total, progress or no_progress

    def __call__(self) -> None:
        self.done += 1
        self.progress(self.done, self.total)


def per_image_mean(
    model: nn.Module,
    layers: list[ConvLayer],
    probe: Probe,
    statistic: Callable[[torch.Tensor], torch.Tensor],
    progress: Progress,
    reads: str = "pre_add",
) -> dict[str, torch.Tensor]:
    """{layer name: (C,)} the mean over the probe images of ``statistic(fmap)`` (fmap (B, C, H, W) -> (B, C),
    read under ``reads``), streamed in one pass: only a running sum per layer is kept."""
    sums: dict[str, torch.Tensor] = {}
    images: dict[str, int] = {}

    def accumulate(layer: ConvLayer, fmap: torch.Tensor, batch: Batch) -> None:
        s = statistic(fmap).sum(0)
        sums[layer.name] = sums[layer.name] + s if layer.name in sums else s
        images[layer.name] = images.get(layer.name, 0) + len(fmap)

    stream(model, layers, probe, accumulate, Ticker(len(probe), progress), reads)
    return {name: s / images[name] for name, s in sums.items()}
