"""The report of one pruning: what changed, what it costs, how fast it runs.

>>> pruned, removed = prune_model(model, plan.ratios, scores, (3, 32, 32))
>>> report = prune_report(model, pruned, plan.ratios, removed, (3, 32, 32))
>>> report.channels_frame()        # layer, before, after, group
>>> report.after["flops"], report.after["latency_ms"]["64"]

Costs are counted twice, as methods.md asks: ``macs`` and ``flops`` (= 2 x MACs) by ``torch.utils.flop_counter``
(conv and linear layers), ``tp_macs`` by Torch-Pruning's counter (BN, activations and pooling included).
Latency is the median of repeated forward passes on the models' device, per batch size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch.nn as nn

from .metrics import count_macs, count_ops_tp, latency_ms
from .models import count_params
from .prune import coupled_groups

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


def measure(model: nn.Module, input_size: tuple[int, int, int], latency_batches=(1, 64),
            repeat: int = 10) -> dict[str, Any]:
    """{params, macs, flops, tp_macs, latency_ms: {str(batch): median ms}} of ``model`` on its device
    (``latency_batches=()`` skips the timing)."""
    macs = count_macs(model, input_size)
    tp_macs, _ = count_ops_tp(model, input_size)
    return {"params": count_params(model), "macs": macs, "flops": 2 * macs, "tp_macs": tp_macs,
            "latency_ms": {str(b): round(latency_ms(model, input_size, b, repeat=repeat), 4)
                           for b in latency_batches}}


def prune_report(model: nn.Module, pruned: nn.Module, ratios: dict[str, float], removed: dict[str, list[int]],
                 input_size: tuple[int, int, int], *, latency_batches=(1, 64), repeat: int = 10) -> PruneReport:
    """Compare ``model`` with ``pruned`` (from :func:`prunekit.prune.prune_model` with ``ratios``, which
    returned ``removed``); both on the device to time on."""
    groups, _ = coupled_groups(model, input_size)
    before_convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    after_convs = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    channels = {n: (c, after_convs[n]) for n, c in before_convs.items()}
    table = [{"root": g.root, "members": list(g.members), "consumers": list(g.consumers), "coupled": g.coupled,
              "ratio": ratios.get(g.root, 0.0), "removed": removed.get(g.root, [])} for g in groups]
    return PruneReport(channels, measure(model, input_size, latency_batches, repeat),
                       measure(pruned, input_size, latency_batches, repeat), table)
