"""The report of one pruning: what changed, what it costs, how fast it runs.

>>> pruned, removed = prune_model(model, plan.ratios, scores, (3, 32, 32))
>>> report = prune_report(model, pruned, plan.ratios, removed, (3, 32, 32))
>>> report.channels_frame()        # layer, before, after, group
>>> report.after["flops"], report.after["latency_ms"]["64"], report.after["latency_ms_onnxruntime"]["64"]

Costs are counted twice, as methods.md asks: ``macs`` and ``flops`` (= 2 x MACs) by ``torch.utils.flop_counter``
(conv and linear layers), ``tp_macs`` by Torch-Pruning's counter (BN, activations and pooling included).
Latency is the median of repeated forward passes per batch size, in PyTorch eager on the models' device and in ONNX
Runtime on the CPU (:mod:`prunekit.runs.runtimes`: the exported model is checked equal first; when it is not, or the
export fails, no ONNX Runtime latency is recorded, only the reason).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch.nn as nn

from prunekit.defaults import LATENCY_BATCHES, LATENCY_REPEAT
from prunekit.models.metrics import count_macs, count_ops_tp
from prunekit.models.zoo import count_params
from prunekit.pruning.prune import coupled_groups
from prunekit.runs.runtimes import runtime_latencies

__all__ = ["PruneReport", "prune_report", "measure", "COMBINE"]

COMBINE = ("inside a coupled group, each member conv's scores are min-max normalised to [0, 1] within the layer "
           "and averaged over the members that have scores; the lowest combined scores go")


@dataclass
class PruneReport:
    """channels: {conv: (filters before, after)}; before / after: :func:`measure`'s dict; groups: one dict per
    prunable group (root, members, consumers, coupled, ratio, removed: filter indices); combine: how a group's
    scores are combined."""

    channels: dict[str, tuple[int, int]]
    before: dict[str, Any]
    after: dict[str, Any]
    groups: list[dict[str, Any]]
    combine: str = COMBINE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = {k: list(v) for k, v in self.channels.items()}
        return d

    def channels_frame(self) -> pd.DataFrame:
        """One row per conv: layer, before, after, group (its root)."""
        root = {m: g["root"] for g in self.groups for m in g["members"]}
        return pd.DataFrame([{"layer": k, "before": b, "after": a, "group": root.get(k, "")}
                             for k, (b, a) in self.channels.items()])


def measure(model: nn.Module, input_size: tuple[int, int, int], latency_batches=LATENCY_BATCHES,
            repeat: int = LATENCY_REPEAT, runtimes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """{params, macs, flops, tp_macs, latency_ms: {str(batch): median ms} in PyTorch eager on its device,
    latency_ms_onnxruntime: the same in ONNX Runtime on the CPU, onnxruntime: its session and check (error: why
    there is no ONNX Runtime latency)} of ``model`` (:func:`prunekit.runs.runtimes.runtime_latencies`;
    ``latency_batches=()`` skips the timing and the export)."""
    macs = count_macs(model, input_size)
    tp_macs, _ = count_ops_tp(model, input_size)
    return {"params": count_params(model), "macs": macs, "flops": 2 * macs, "tp_macs": tp_macs,
            **runtime_latencies(model, input_size, latency_batches, repeat, runtimes)}


def prune_report(model: nn.Module, pruned: nn.Module, ratios: dict[str, float], removed: dict[str, list[int]],
                 input_size: tuple[int, int, int], *, latency_batches=LATENCY_BATCHES, repeat: int = LATENCY_REPEAT,
                 runtimes: tuple[str, ...] | None = None) -> PruneReport:
    """Compare ``model`` with ``pruned`` (from :func:`prunekit.pruning.prune.prune_model` with ``ratios``, which
    returned ``removed``); both on the device to time eager on, timed in each of ``runtimes`` (None: every registered
    runtime)."""
    groups, _ = coupled_groups(model, input_size)
    before_convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    after_convs = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    channels = {n: (c, after_convs[n]) for n, c in before_convs.items()}
    table = [{"root": g.root, "members": list(g.members), "consumers": list(g.consumers), "coupled": g.coupled,
              "ratio": ratios.get(g.root, 0.0), "removed": removed.get(g.root, [])} for g in groups]
    return PruneReport(channels, measure(model, input_size, latency_batches, repeat, runtimes),
                       measure(pruned, input_size, latency_batches, repeat, runtimes), table)
