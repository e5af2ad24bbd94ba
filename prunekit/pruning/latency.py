"""A latency model: what a plan would cost in time on one runtime at one batch size, predicted in microseconds of
arithmetic from lookup tables measured once (NetAdapt's tables, Yang et al., ECCV 2018).

Every conv (with the BatchNorm after it, and a ReLU) and every linear layer of the model is timed alone, built at
kept widths (in, out) on a grid: every ``step`` channels (:data:`prunekit.defaults.LATENCY_MODEL`) and, for a plan
that rounds kept filters to ``round_to``, at the widths that rounding keeps; layers of one shape share one table. A
plan's latency is then the sum of its layers' table entries plus one constant, the whole unpruned network's measured
latency minus its layers' entries at full width (what no pruning changes: pooling, additions, the runtime's own
overhead). A width between two grid points costs what the wider one costs: CPUs run convs on blocks of 8 or 16
channels and ONNX Runtime's blocked layouts pad a width up to the next block (measured on the 2-core AVX-512 build
machine: a 64-to-w conv costs the same for w = 25..32 and w = 41..48). The tables are made monotone (a wider layer
never costs less than a narrower one: each entry is the least of those at least as wide), which removes the upward
spikes a loaded machine adds and keeps a target solved by bisection well behaved. benchmarks/latency_model.py checks
the predictions against measured latency on random plans.

The timing itself is the caller's ``timer`` (this layer may not import the runtimes):
:func:`prunekit.runs.latency_model.latency_model` hands PyTorch eager's or ONNX Runtime's and caches the model on
disk under ``cache_dir()/latency``, keyed by what the tables depend on (:func:`model_key`): the structure (layer
shapes, not the weights: two checkpoints of one architecture run equally fast), the input size, the runtime, the
batch, the rounding, the grid, the threads and the machine.

>>> lm = measure_latency_model(model, struct, (3, 32, 32), timer, runtime="onnxruntime", batch=1)
>>> lm.predict(struct, {"layer1.0.conv1": 0.5})      # ms at batch 1
>>> lm.reduction(struct, ratios)                      # the fraction of the unpruned latency a plan removes
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prunekit.criteria.streaming import Progress, no_progress
from prunekit.defaults import LATENCY_MODEL, ROUND_TO
from prunekit.errors import UserError
from prunekit.files import write_text_atomic
from prunekit.pruning.ratios import check_round_to, kept_channels, validate_ratios
from prunekit.pruning.structure import Structure, filters_lost, signature

__all__ = ["LatencyModel", "Timer", "LATENCY_FORMAT", "measure_latency_model", "layer_widths", "model_key",
           "grid", "machine"]

LATENCY_FORMAT = "prunekit-latency/1"
Timer = Callable[[nn.Module, tuple[int, ...]], float]
"""timer(module, input shape without the batch) -> its latency in ms at the model's batch size and runtime."""


@dataclass
class LatencyModel:
    """Lookup tables of one model's layers on one runtime at one batch size.

    before_ms: the unpruned network, measured whole. offset_ms: before_ms minus its layers' entries at full width.
    layers: {layer: its table's key}. tables: {key: {"in": in widths, "out": out widths, "ms": len(in) x len(out)
    latencies}}. meta: what it was measured on (machine, threads, versions, key, seconds)."""

    runtime: str
    batch: int
    round_to: int
    signature: str
    before_ms: float
    offset_ms: float
    layers: dict[str, str]
    tables: dict[str, dict[str, list]]
    meta: dict[str, Any] = field(default_factory=dict)

    def check(self, struct: Structure, round_to: int) -> None:
        """UserError when the tables were measured for another model or another rounding of kept filters."""
        if self.signature != signature(struct):
            raise UserError(f"this latency model was measured for another model (structure {self.signature}, this "
                            f"one is {signature(struct)}): measure one for this model")
        if self.round_to != round_to:
            raise UserError(f"this latency model was measured for kept filters rounded to multiples of "
                            f"{self.round_to}, the plan rounds to {round_to}: measure one with round_to {round_to}")

    def predict(self, struct: Structure, ratios: dict[str, float]) -> float:
        """The predicted latency in ms of the model pruned by ``ratios`` ({group root: ratio}), kept filters
        rounded as the tables were measured (``round_to``)."""
        total = self.offset_ms
        for name, (w_in, w_out) in layer_widths(struct, ratios, self.round_to).items():
            table = self.tables[self.layers[name]]
            total += table["ms"][_at(table["in"], w_in)][_at(table["out"], w_out)]
        return total

    def reduction(self, struct: Structure, ratios: dict[str, float]) -> float:
        """The predicted fraction of the unpruned latency that ``ratios`` removes."""
        return 1 - self.predict(struct, ratios) / self.before_ms

    def describe(self, struct: Structure, ratios: dict[str, float]) -> dict[str, Any]:
        """What a plan's record keeps of a latency budget: runtime, batch, before_ms, predicted_ms."""
        return {"runtime": self.runtime, "batch": self.batch, "before_ms": round(self.before_ms, 4),
                "predicted_ms": round(self.predict(struct, ratios), 4)}

    def to_dict(self) -> dict[str, Any]:
        return {"format": LATENCY_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyModel:
        if not isinstance(d, dict) or d.get("format") != LATENCY_FORMAT:
            raise UserError(f"not a prunekit latency model (format {LATENCY_FORMAT!r} expected)")
        return cls(**{k: v for k, v in d.items() if k != "format"})

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyModel:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"{path}: not a readable latency model ({type(exc).__name__}: {exc})") from None


def _at(widths: list[int], w: int) -> int:
    """The index of the narrowest grid width at least ``w`` (the last one beyond the grid)."""
    return min(bisect.bisect_left(widths, w), len(widths) - 1)


def layer_widths(struct: Structure, ratios: dict[str, float], round_to: int = ROUND_TO) -> dict[str, tuple[int, int]]:
    """{conv or linear: (input channels, output channels)} after pruning ``ratios``, as
    :func:`prunekit.pruning.structure.estimate` counts them (a depthwise conv follows its filters)."""
    validate_ratios(ratios, list(struct.groups), struct.frozen)
    gone = {g.root: g.channels - kept_channels(g.channels, ratios.get(g.root, 0.0), round_to) for g in struct.groups}
    lost, out = filters_lost(struct), {}
    for layer in struct.layers:
        w_out = layer.out_ch - lost[layer.name] * gone[struct.out_group[layer.name]] if layer.name in struct.out_group \
            else layer.out_ch
        if _depthwise(layer):
            out[layer.name] = (w_out, w_out)
        else:
            out[layer.name] = (layer.in_ch - sum(per * gone[r] for r, per in struct.reads.get(layer.name, ())), w_out)
    return out


def _depthwise(layer) -> bool:
    return layer.groups > 1 and layer.groups == layer.in_ch == layer.out_ch


def grid(channels: int, round_to: int, step: int = LATENCY_MODEL.step) -> list[int]:
    """The kept widths a table measures for ``channels`` channels: the multiples of ``round_to`` a rounding plan
    keeps (when it rounds this width), else every ``step`` channels; the full width always.
    grid(64, 1, 8) -> [8, 16, ..., 64]; grid(24, 16) -> [16, 24]; grid(6, 1, 8) -> [6]."""
    every = round_to if 1 < round_to <= channels else step
    return sorted({*range(every, channels, every), channels})


def _axes(layer, struct: Structure, round_to: int, step: int) -> tuple[list[int], list[int]]:
    """The (in, out) widths a layer's table measures: an axis no pruning changes is its full width alone; a grouped
    (not depthwise) conv is measured at full width only."""
    prunable_out = layer.name in struct.out_group
    prunable_in = bool(struct.reads.get(layer.name))
    if layer.groups > 1 and not _depthwise(layer):
        return [layer.in_ch], [layer.out_ch]
    outs = grid(layer.out_ch, round_to, step) if prunable_out else [layer.out_ch]
    if _depthwise(layer):
        return [layer.in_ch], outs
    return (grid(layer.in_ch, round_to, step) if prunable_in else [layer.in_ch]), outs


def _input_shapes(model: nn.Module, input_size: tuple[int, ...], names: set[str]) -> dict[str, tuple[int, ...]]:
    """{layer: its input's shape without the batch} in one forward of a zero batch of one."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, args) -> None:  # returns None: the inputs unchanged
            shapes.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if n in names]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def _block(module: nn.Module, norm: bool, w_in: int, w_out: int) -> tuple[nn.Module, int]:
    """(a fresh copy of ``module``'s layer at widths (w_in, w_out), with BatchNorm (``norm``) and ReLU after a conv,
    in eval mode; the channels of its input: w_in, or w_out for a depthwise conv, which follows its filters)."""
    if isinstance(module, nn.Linear):
        return nn.Linear(w_in, w_out, bias=module.bias is not None).eval(), w_in
    w_in, groups = (w_out, w_out) if _depthwise_module(module) else (w_in, module.groups)
    conv = nn.Conv2d(w_in, w_out, module.kernel_size, module.stride, module.padding, module.dilation, groups,
                     module.bias is not None, module.padding_mode)
    return nn.Sequential(conv, *([nn.BatchNorm2d(w_out)] if norm else []), nn.ReLU()).eval(), w_in


def _depthwise_module(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _followed_by_norm(model: nn.Module) -> set[str]:
    """Convs whose next module (in definition order) is a BatchNorm of their width."""
    mods = list(model.named_modules())
    return {n for (n, m), (_, nxt) in zip(mods, mods[1:])
            if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.out_channels}


def _table_key(module: nn.Module, norm: bool, shape: tuple[int, ...], axes: tuple[list[int], list[int]]) -> str:
    if isinstance(module, nn.Linear):
        desc = ["linear", module.in_features, module.out_features, module.bias is not None]
    else:
        desc = ["conv", module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups, module.bias is not None, norm]
    return hashlib.sha256(json.dumps([desc, shape[1:], axes]).encode()).hexdigest()[:12]


def measure_latency_model(model: nn.Module, struct: Structure, input_size: tuple[int, int, int], timer: Timer, *,
                          runtime: str, batch: int, round_to: int = ROUND_TO, step: int = LATENCY_MODEL.step,
                          meta: dict | None = None, progress: Progress | None = None) -> LatencyModel:
    """Time every layer of ``model`` (traced as ``struct``, input (C, H, W) ``input_size``) alone on its grid of
    kept widths with ``timer`` (the runtime's, at ``batch``), and the whole model before and after them (the least
    kept: the offset must not carry a moment of load) -> a :class:`LatencyModel`. progress: ``progress(done,
    total)`` over the measurements."""
    round_to = check_round_to(round_to)
    names = {x.name for x in struct.layers}
    shapes, norms = _input_shapes(model, input_size, names), _followed_by_norm(model)
    layers, work = {}, {}
    for layer in struct.layers:
        module, axes = model.get_submodule(layer.name), _axes(layer, struct, round_to, step)
        key = _table_key(module, layer.name in norms, shapes[layer.name], axes)
        layers[layer.name] = key
        work.setdefault(key, (module, layer.name in norms, shapes[layer.name], axes))
    total, done, t0 = sum(len(a[0]) * len(a[1]) for *_, a in work.values()) + 2, 1, time.perf_counter()
    progress = progress or no_progress
    first = timer(model, tuple(input_size))
    tables = {}
    for key, (module, norm, shape, (ins, outs)) in work.items():
        ms = []
        for w_in in ins:
            row = []
            for w_out in outs:
                block, channels = _block(module, norm, w_in, w_out)
                row.append(timer(block, (channels, *shape[1:])))
                done += 1
                progress(done, total)
            ms.append(row)
        tables[key] = {"in": ins, "out": outs, "ms": _monotone(ms)}
    before = min(first, timer(model, tuple(input_size)))  # a loaded machine only adds time
    progress(total, total)
    full = sum(tables[layers[x.name]]["ms"][-1][-1] for x in struct.layers)
    return LatencyModel(runtime, int(batch), round_to, signature(struct), before, before - full, layers, tables,
                        {**(meta or {}), "machine": machine(), "threads": torch.get_num_threads(), "step": step,
                         "measurements": total, "seconds": round(time.perf_counter() - t0, 1)})


def _monotone(ms: list[list[float]]) -> list[list[float]]:
    """Each entry replaced by the least entry at least as wide on both axes: latency never falls as a layer
    widens (a loaded machine only adds time, so the least is the steadier figure)."""
    out = [row[:] for row in ms]
    for i in range(len(out) - 1, -1, -1):
        for j in range(len(out[i]) - 1, -1, -1):
            wider = [out[i][j + 1]] if j + 1 < len(out[i]) else []
            wider += [out[i + 1][j]] if i + 1 < len(out) else []
            out[i][j] = min([out[i][j], *wider])
    return out


def model_key(struct: Structure, input_size: tuple[int, ...], runtime: str, batch: int, round_to: int, step: int,
              extra: dict | None = None) -> str:
    """The cache key of a latency model: everything its tables depend on (structure, input size, runtime, batch,
    rounding, grid step, torch's threads, the machine, and ``extra``: the timer's settings and versions)."""
    desc = [signature(struct), list(input_size), runtime, int(batch), int(round_to), int(step),
            torch.get_num_threads(), machine(), torch.__version__, extra or {}]
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def machine() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
