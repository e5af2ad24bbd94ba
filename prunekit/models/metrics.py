"""Measurements of a model: the device to use, accuracy and loss on a data set, MACs by two counters
(``torch.utils.flop_counter``: conv and linear only; Torch-Pruning's: BN, activations and pooling too),
latency, and a per-layer table.

Eager latency on the CPU depends on glibc malloc: by default a freed block above its mmap threshold (128 KiB at
first) raises the threshold, so a process that once held big tensors (a VGG-16 forward at batch 64) serves later
activations from the heap, while a fresh one maps and unmaps them on every forward and pays the page faults:
ResNet-56's pruned speedup at batch 64 read 1.51x in a fresh process and 1.17x after a VGG forward.
:func:`latency_ms` therefore fixes the thresholds first (:func:`steady_allocator`), once per process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
import statistics
import time
from collections.abc import Iterable

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from torch.utils.flop_counter import FlopCounterMode

from prunekit.data import ArraySet, DeviceLoader
from prunekit.defaults import EVAL_BATCH
from prunekit.errors import UserError
from prunekit.models.layers import TRACE_LOCK

__all__ = ["best_device", "evaluate", "held_out_accuracy", "count_macs", "count_ops_tp", "latency_ms", "layer_table",
           "output_shapes", "steady_allocator", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 64 << 20  # bytes: blocks below it come from the heap, above it from mmap; fixed, not dynamic
TRIM_THRESHOLD = 128 << 20  # bytes of free heap top kept rather than returned to the system (2 x, as glibc's rule)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_allocator: str | None = None  # what steady_allocator set in this process


def steady_allocator(libc=None) -> str:
    """Fix glibc malloc's mmap threshold at :data:`MMAP_THRESHOLD` and its trim threshold at
    :data:`TRIM_THRESHOLD` (``mallopt``), so that eager latency no longer depends on what the process allocated
    before; once per process (later calls return the first call's answer). A no-op off glibc Linux. ``libc``: the
    C library to call (default: the process's own). -> what was set, e.g. "glibc mmap threshold 64 MiB, trim
    threshold 128 MiB", recorded with every latency."""
    global _allocator
    if _allocator is None:
        _allocator = _set_thresholds(libc)
    return _allocator


def _set_thresholds(libc) -> str:
    if libc is None:
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return f"system default (not glibc: {platform.system()} {platform.libc_ver()[0] or 'unknown libc'})"
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        return "glibc default (mallopt refused the thresholds)"
    return f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"


def best_device() -> torch.device:
    """CUDA if available, then Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Top-1 accuracy (in %) and mean cross-entropy of ``model`` (already on the batches' device) over
    ``batches`` of (x (B, C, H, W), y (B,)). The model is put in eval mode and restored afterwards."""
    was_training = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    try:
        with TRACE_LOCK:  # no fx trace of another thread meanwhile
            for x, y in batches:
                logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise UserError("evaluate() got no batches")
    return {"accuracy": 100.0 * correct / n, "loss": loss_sum / n, "n": n}


def held_out_accuracy(model: nn.Module, images: ArraySet, *, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """:func:`evaluate` of ``model`` on held-out ``images`` (uint8 (N, C, H, W) with labels (N,)), in order and
    without augmentation, in batches of ``batch_size`` on the model's device. -> accuracy (%), loss, n (= N)."""
    return evaluate(model, DeviceLoader(images, batch_size, train=False, device=next(model.parameters()).device))


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a (1, *input_size) input, counted by
    ``torch.utils.flop_counter`` (conv and linear layers; FLOPs = 2 x MACs)."""
    return int(_flop_counts(model, input_size)["Global"] // 2)


def count_ops_tp(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(MACs, params) of one (1, *input_size) forward pass by Torch-Pruning's counter
    (``tp.utils.count_ops_and_params``), which also counts BN, activations and pooling."""

    device = next(model.parameters()).device
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *input_size, device=device))
    return int(macs), int(params)


@torch.no_grad()
def latency_ms(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1, *, repeat: int = 20,
               warmup: int = 3) -> float:
    """Median wall time in milliseconds of one eval-mode forward pass of a (batch_size, *input_size) input on
    the model's device, over ``repeat`` timed runs after ``warmup`` untimed ones (CUDA synchronised); glibc's
    malloc thresholds fixed first (:func:`steady_allocator`), so the figure does not depend on what the process
    ran before."""
    if repeat < 1 or batch_size < 1:
        raise UserError(f"repeat and batch_size must be at least 1, got {repeat}, {batch_size}")
    steady_allocator()
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    try:
        for i in range(warmup + repeat):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return 1000 * statistics.median(times)


def layer_table(model: nn.Module, input_size: tuple[int, int, int]):
    """One row per conv / linear layer: name, type, in/out channels, kernel, stride, groups, output size,
    params and MACs (from ``torch.utils.flop_counter``) -> pandas DataFrame in forward order."""

    flops = _flop_counts(model, input_size)
    shapes = output_shapes(model, input_size)
    root = type(model).__name__
    rows = []
    for name in shapes:  # dict order = forward order
        m = model.get_submodule(name)
        conv = isinstance(m, nn.Conv2d)
        rows.append({
            "layer": name,
            "type": "conv" if conv and m.groups == 1 else ("depthwise conv" if conv and m.groups == m.in_channels
                                                            else "grouped conv" if conv else "linear"),
            "in": m.in_channels if conv else m.in_features,
            "out": m.out_channels if conv else m.out_features,
            "kernel": "x".join(map(str, m.kernel_size)) if conv else "",
            "stride": m.stride[0] if conv else 1,
            "output": "x".join(map(str, shapes[name])),
            "params": sum(p.numel() for p in m.parameters()),
            "macs": int(flops.get(f"{root}.{name}", 0) // 2),
        })
    return pd.DataFrame(rows)


def output_shapes(
    model: nn.Module, input_size: tuple[int, int, int], types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
) -> dict[str, tuple[int, ...]]:
    """{module name: output shape without the batch dimension} of every module of ``types`` that runs in one
    eval-mode forward of a (1, *input_size) zero image, in the order of their first call."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:  # returns None: output unchanged
            shapes.setdefault(name, tuple(output.shape[1:]))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, types)]
    try:
        _forward_zeros(model, input_size)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _forward_zeros(model: nn.Module, input_size: tuple[int, int, int]) -> None:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), TRACE_LOCK:
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)


def _flop_counts(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:

    with FlopCounterMode(display=False, depth=None) as counter:
        _forward_zeros(model, input_size)
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
