"""PyTorch eager: the module run on its own device (:func:`prunekit.models.metrics.latency_ms`), under the steady
malloc thresholds of :func:`prunekit.models.metrics.steady_allocator`.

>>> EagerRuntime().measure(model, (3, 32, 32), (1, 64), repeat=10)
{'allocator': 'glibc mmap threshold 64 MiB, trim threshold 128 MiB', 'latency_ms': {'1': 1.9, '64': 40.2}}
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from prunekit.models.metrics import latency_ms, steady_allocator
from prunekit.runs.runtimes import Runtime, register_runtime

__all__ = ["EagerRuntime"]


@register_runtime
class EagerRuntime(Runtime):
    """The module itself, on its device."""

    name = "eager"
    label = "PyTorch eager"
    latency_key = "latency_ms"
    prefix = "latency_"

    def measure(self, model: nn.Module, input_size: tuple[int, int, int], batches, repeat: int) -> dict[str, Any]:
        """{allocator: the malloc thresholds eager ran under, latency_ms: {str(batch): ms}}."""
        if not batches:
            return self.empty()
        allocator = steady_allocator()
        return {"allocator": allocator,
                self.latency_key: {str(b): round(latency_ms(model, input_size, b, repeat=repeat), 4) for b in batches}}
