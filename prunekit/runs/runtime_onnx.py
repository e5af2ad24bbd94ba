"""ONNX Runtime on the CPU: the module exported in memory by ``torch.onnx``'s exporter (``torch.export`` based,
dynamic batch dimension), run with :data:`SESSION`: as many intra-op threads as torch uses (the same cores eager
gets), one inter-op thread, sequential execution, and every graph optimisation (constant folding, Conv+BN(+ReLU)
fusion, the NCHWc blocked layout on AVX2 / AVX-512 CPUs). Before any timing the session's outputs on a seeded random
batch (2, C, H, W) are checked against the module's (:func:`mismatch`, the tolerance :mod:`prunekit.runs.export`
uses): an export that fails or disagrees records no ONNX Runtime latency, only the reason (its record's ``error``);
it never raises and never records a wrong number.

>>> OnnxRuntime().measure(model, (3, 32, 32), (1, 64), repeat=10)
{'latency_ms_onnxruntime': {'1': 0.7, '64': 31.0},
 'onnxruntime': {'device': 'cpu', 'threads': 2, 'optimization': 'ORT_ENABLE_ALL', ..., 'error': None}}
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from prunekit.runs.runtimes import Runtime, register_runtime

__all__ = ["OnnxRuntime", "SESSION", "ATOL", "example_batch", "onnx_bytes", "ort_session", "session_outputs",
           "mismatch", "checked_session", "ort_latency_ms"]

SESSION = {"optimization": "ORT_ENABLE_ALL", "inter_op_threads": 1, "execution": "ORT_SEQUENTIAL",
           "provider": "CPUExecutionProvider"}
"""ONNX Runtime's session options (intra-op threads: ``torch.get_num_threads()``)."""
ATOL = 1e-4
"""An exported model's outputs may differ from the module's by ``ATOL`` x max(1, max |output|)."""


def example_batch(input_size: tuple[int, int, int], batch: int = 2) -> torch.Tensor:
    """The seeded random batch (batch, *input_size) exported models are checked on."""
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))


def onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    """``model`` (on the CPU, eval mode) as a serialised ONNX model traced on x (N, C, H, W), input ``input``
    (any batch size), output ``logits``; needs the ``onnx`` and ``onnxscript`` packages."""
    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    return program.model_proto.SerializeToString()


def ort_session(model: bytes | str | os.PathLike, threads: int | None = None, profile: str | None = None):
    """An ONNX Runtime CPU session of ``model`` (serialised bytes or a file) with :data:`SESSION`'s options and
    ``threads`` intra-op threads (default: ``torch.get_num_threads()``); ``profile``: a file prefix to write ONNX
    Runtime's per-node profile to (``session.end_profiling()`` names the file)."""
    # optional dependency: onnxruntime
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = SESSION["inter_op_threads"]
    options.execution_mode = getattr(ort.ExecutionMode, SESSION["execution"])
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, SESSION["optimization"])
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=[SESSION["provider"]])


def session_outputs(session, x: torch.Tensor) -> torch.Tensor:
    """The session's first output on x (N, C, H, W) (a CPU float tensor) -> tensor (N, ...)."""
    feed = {session.get_inputs()[0].name: x.detach().cpu().numpy()}
    return torch.from_numpy(np.asarray(session.run(None, feed)[0]))


def mismatch(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> float | None:
    """The largest absolute difference of two outputs of one shape when it passes ``atol`` x max(1, max
    |expected|) (or the shapes differ: inf), else None."""
    if actual.shape != expected.shape:
        return float("inf")
    diff = (actual.float() - expected.float()).abs().max().item()
    return diff if not diff <= atol * max(1.0, expected.abs().max().item()) else None


def checked_session(model: nn.Module, input_size: tuple[int, int, int], atol: float = ATOL):
    """(session or None, record): ``model`` exported in memory and opened in ONNX Runtime, its outputs checked
    against the module's. record: device, threads, optimization, ..., max_abs_diff, error (None, or why there is
    no session: the export failed, or its outputs differ)."""
    record: dict[str, Any] = {"device": "cpu", "threads": torch.get_num_threads(), **SESSION, "max_abs_diff": None,
                              "error": None}
    model = copy.deepcopy(model).cpu().eval()
    x = example_batch(input_size)
    try:
        with torch.no_grad():
            expected = model(x)
            session = ort_session(onnx_bytes(model, x), record["threads"])
        actual = session_outputs(session, x)
    except Exception as exc:  # any exporter or runtime failure: recorded, the run goes on without ORT timing
        record["error"] = f"export to ONNX Runtime failed: {type(exc).__name__}: {str(exc)[:300]}"
        return None, record
    diff = mismatch(actual, expected, atol)
    found = float((actual - expected).abs().max()) if diff is None else diff
    record["max_abs_diff"] = found if math.isfinite(found) else None  # JSON has no NaN or inf
    if diff is not None:
        record["error"] = (f"ONNX Runtime's outputs differ from the module's by {diff:.3g} (tolerance {atol} x "
                           "max |output|): not timed")
        return None, record
    return session, record


def ort_latency_ms(session, input_size: tuple[int, int, int], batch_size: int = 1, *, repeat: int = 20,
                   warmup: int = 3) -> float:
    """Median wall time in milliseconds of one ``session.run`` on a (batch_size, *input_size) input, over
    ``repeat`` timed runs after ``warmup`` untimed ones (the same input as :func:`prunekit.models.metrics.latency_ms`)."""
    x = example_batch(input_size, batch_size).numpy()
    feed = {session.get_inputs()[0].name: x}
    times = []
    for i in range(warmup + repeat):
        t0 = time.perf_counter()
        session.run(None, feed)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


@register_runtime
class OnnxRuntime(Runtime):
    """ONNX Runtime on the CPU, timed only once its outputs are checked equal to the module's."""

    name = "onnxruntime"
    label = "ONNX Runtime"
    latency_key = "latency_ms_onnxruntime"
    prefix = "latency_ort_"
    record_key = "onnxruntime"
    error_column = "ort_error"

    def measure(self, model: nn.Module, input_size: tuple[int, int, int], batches, repeat: int) -> dict[str, Any]:
        """{latency_ms_onnxruntime: {str(batch): ms} ({} when not checked equal), onnxruntime:
        :func:`checked_session`'s record}."""
        if not batches:
            return self.empty()
        session, record = checked_session(model, input_size)
        if session is None:
            return {self.latency_key: {}, self.record_key: record}
        return {self.latency_key: {str(b): round(ort_latency_ms(session, input_size, b, repeat=repeat), 4)
                                   for b in batches}, self.record_key: record}
