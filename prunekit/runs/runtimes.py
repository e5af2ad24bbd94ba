"""Where latency is timed: one :class:`Runtime` per place a model runs (PyTorch eager:
:mod:`prunekit.runs.runtime_eager`; ONNX Runtime on the CPU: :mod:`prunekit.runs.runtime_onnx`), each a registry
entry. A runtime says its name, its label, the report entries it writes (``latency_key``: {str(batch): ms}, and
``record_key``: its check record, whose ``error`` says why it has no figure), the columns of
:func:`prunekit.runs.records.list_runs` that hold its latencies, and how it times a model (:meth:`Runtime.measure`).
Adding one is one file with a :func:`register_runtime` class, imported in :mod:`prunekit.runs`.

>>> runtime_latencies(model, (3, 32, 32), batches=(1, 64))
{'latency_ms': {'1': 1.9, '64': 40.2}, 'latency_ms_onnxruntime': {'1': 0.7, '64': 31.0},
 'onnxruntime': {'device': 'cpu', 'threads': 2, ..., 'error': None}, 'allocator': '...'}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from prunekit.defaults import LATENCY_BATCHES, LATENCY_REPEAT
from prunekit.registry import Registry

__all__ = ["Runtime", "register_runtime", "get_runtime", "runtime_names", "runtime_labels", "runtime_latencies",
           "vector_block"]


class Runtime:
    """One place latency is timed. ``name``: its key (--runtimes, a sweep's runtimes); ``label``: its name in
    words; ``latency_key``: the entry of a report's before / after holding {str(batch): ms}; ``prefix``: the
    :func:`~prunekit.runs.records.list_runs` columns of its latencies (prefix + "b1", prefix + "b64");
    ``record_key``: the entry holding its check record ({..., error: why there is no figure}), or None;
    ``error_column``: the list_runs column of that error, or None."""

    name: str = ""
    label: str = ""
    latency_key: str = ""
    prefix: str = ""
    record_key: str | None = None
    error_column: str | None = None

    def measure(self, model: nn.Module, input_size: tuple[int, int, int], batches, repeat: int) -> dict[str, Any]:
        """The entries it adds to a report's before / after for ``model`` on (batch, *input_size) inputs, each
        batch in ``batches`` timed as the median of ``repeat`` runs: {latency_key: {str(batch): ms}, ...};
        :meth:`empty` when ``batches`` is empty."""
        raise NotImplementedError

    def empty(self) -> dict[str, Any]:
        """Its entries when it is not timed: {latency_key: {}, record_key: None}."""
        return {self.latency_key: {}, **({self.record_key: None} if self.record_key else {})}

    def problem(self, manifest: dict) -> str | None:
        """Why a run has no figure in this runtime (its record's error, after pruning else before), else None."""
        if self.record_key is None:
            return None
        before, after = manifest.get("before") or {}, manifest.get("after") or {}
        return (after.get(self.record_key) or before.get(self.record_key) or {}).get("error")


_RUNTIMES: Registry[type[Runtime]] = Registry("runtime")


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: add a :class:`Runtime` subclass to the registry under ``cls.name``."""
    return _RUNTIMES.register(cls)


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name``; UnknownNameError listing the known ones."""
    return _RUNTIMES.get(name)()


def runtime_names() -> list[str]:
    """Every registered runtime, in registration order (eager, onnxruntime, then any other)."""
    return _RUNTIMES.names()


def runtime_labels() -> dict[str, str]:
    """{name: label} of every registered runtime: {"eager": "PyTorch eager", "onnxruntime": "ONNX Runtime"}."""
    return {name: _RUNTIMES.get(name).label for name in runtime_names()}


def runtime_latencies(model: nn.Module, input_size: tuple[int, int, int], batches=LATENCY_BATCHES,
                      repeat: int = LATENCY_REPEAT, runtimes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every registered runtime's entries (:meth:`Runtime.empty`), those of ``runtimes`` (default: every one)
    measured on ``batches``: {latency_ms: {str(batch): ms}, latency_ms_onnxruntime: {...}, onnxruntime: record or
    None, allocator: ...}. UnknownNameError for a runtime not registered."""
    chosen = [get_runtime(name) for name in (runtime_names() if runtimes is None else runtimes)]
    out: dict[str, Any] = {}
    for name in runtime_names():
        out.update(get_runtime(name).empty())
    for runtime in chosen:
        out.update(runtime.measure(model, input_size, batches, repeat))
    return out


def vector_block() -> int:
    """The channel block of oneDNN's and ONNX Runtime's blocked (NCHWc) conv layouts on this CPU: 16 floats with
    AVX-512, 8 with AVX2, else 4 (SSE / NEON); 8 when the CPU's flags cannot be read (no /proc/cpuinfo). A conv
    width that is no multiple of it is padded up to one (a plan's ``round_to``: :mod:`prunekit.pruning.ratios`)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
