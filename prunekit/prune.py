"""Physical pruning through Torch-Pruning: the only module that touches its internals.

Torch-Pruning's dependency graph finds the convs whose output channels must go together (a **coupled group**:
the convs of a residual stream joined by adds, a conv and the depthwise conv that follows it, ...). A group
is named after its *root*, its first conv in forward order, and takes one ratio. Inside a group, each
member conv's scores are min-max normalised within the layer and averaged over the members that have scores;
the filters with the lowest combined score go.

>>> groups, frozen = coupled_groups(model, (3, 32, 32))
>>> pruned, removed = prune_model(model, {"layer1.0.conv1": 0.5}, scores, (3, 32, 32))

The input model is never modified: pruning works on a deep copy.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp

from .metrics import output_shapes
from .models import PadShortcut

__all__ = ["Group", "coupled_groups", "prune_model", "kept_channels", "validate_ratios"]


class _PadShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning handler of the option-A shortcut: its input and output channels are not coupled, so
    pruning deletes rows (outputs) or columns (inputs) of its routing matrix."""

    def prune_out_channels(self, layer: PadShortcut, idxs: list[int]) -> PadShortcut:
        layer.route = layer.route[self._keep(layer.route.shape[0], idxs)]
        return layer

    def prune_in_channels(self, layer: PadShortcut, idxs: list[int]) -> PadShortcut:
        layer.route = layer.route[:, self._keep(layer.route.shape[1], idxs)]
        return layer

    @staticmethod
    def _keep(n: int, idxs: list[int]) -> list[int]:
        drop = {int(i) for i in idxs}
        return [i for i in range(n) if i not in drop]

    def get_out_channels(self, layer: PadShortcut) -> int:
        return layer.route.shape[0]

    def get_in_channels(self, layer: PadShortcut) -> int:
        return layer.route.shape[1]


CUSTOM_PRUNERS = {PadShortcut: _PadShortcutPruner()}


@dataclass(frozen=True)
class Group:
    """Convs whose output channels are removed together.

    root: the first member in forward order (the group's name); members: conv names whose filters go;
    consumers: conv/linear/shortcut names whose *input* channels shrink with them; norms: the BNs that shrink
    with them; channels: filters per member.
    """

    root: str
    members: tuple[str, ...]
    consumers: tuple[str, ...]
    norms: tuple[str, ...]
    channels: int

    @property
    def coupled(self) -> bool:
        return len(self.members) > 1


def kept_channels(channels: int, ratio: float) -> int:
    """Filters left after pruning ``ratio`` of ``channels``: int(channels * (1 - ratio)), as Torch-Pruning."""
    return int(channels * (1 - ratio))


def _graph(model: nn.Module, input_size: tuple[int, int, int]) -> tp.DependencyGraph:
    device = next(model.parameters()).device
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, *input_size, device=device), customized_pruners=CUSTOM_PRUNERS
    )


def _forward_order(model: nn.Module, input_size: tuple[int, int, int]) -> list[str]:
    return list(output_shapes(model, input_size, (nn.Conv2d,)))


def coupled_groups(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[list[Group], dict[str, str]]:
    """-> (prunable groups in forward order, {conv name: why it cannot be pruned})."""
    graph = _graph(model, input_size)
    return _groups(model, graph, _forward_order(model, input_size))


def _groups(model: nn.Module, graph: tp.DependencyGraph, order: list[str]):
    names = {m: n for n, m in model.named_modules()}
    position = {n: i for i, n in enumerate(order)}
    groups, frozen, seen = [], {}, set()
    for name in order:
        if name in seen:
            continue
        conv = model.get_submodule(name)
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        members, consumers, norms, outputs_model = [], [], [], False
        for dep, _ in group:
            target, handler = dep.target.module, dep.handler
            tname = names.get(target)
            if isinstance(target, nn.Conv2d) and graph.is_out_channel_pruning_fn(handler):
                members.append(tname)
            elif isinstance(target, (nn.Conv2d, nn.Linear, PadShortcut)) and not graph.is_out_channel_pruning_fn(
                    handler):
                consumers.append(tname)
            elif isinstance(target, nn.Linear):
                outputs_model = True
            elif isinstance(target, nn.modules.batchnorm._BatchNorm):
                norms.append(tname)
        members = sorted(set(members), key=lambda n: position.get(n, 1 << 30))
        seen.update(members)
        if outputs_model:
            for m in members:
                frozen[m] = "its channels are the model's outputs"
            continue
        groups.append(Group(members[0], tuple(members), tuple(sorted(set(consumers) - set(members))),
                            tuple(sorted(set(norms))), conv.out_channels))
    return groups, frozen


def validate_ratios(ratios: dict[str, float], groups: list[Group]) -> None:
    """ValueError naming the first bad entry: unknown or non-root layer, ratio not in [0, 1), or a ratio that
    removes every filter of its group."""
    by_root = {g.root: g for g in groups}
    member_of = {m: g.root for g in groups for m in g.members}
    for layer, ratio in ratios.items():
        if layer not in by_root:
            if layer in member_of:
                raise ValueError(f"{layer!r} is coupled with {member_of[layer]!r}: give the ratio to the group's "
                                 f"root {member_of[layer]!r}")
            raise ValueError(f"unknown layer {layer!r}; prunable groups: {', '.join(by_root)}")
        if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 <= ratio < 1:
            raise ValueError(f"ratio of {layer!r} must be a number in [0, 1), got {ratio!r}")
        if kept_channels(by_root[layer].channels, ratio) < 1:
            raise ValueError(f"ratio {ratio} removes every one of the {by_root[layer].channels} filters of "
                             f"{layer!r}; lower it below {1 - 1 / by_root[layer].channels:.3f}")


class _ScoreImportance(tp.importance.Importance):
    """Feeds a criterion's per-filter scores to Torch-Pruning: the group's members' scores, min-max
    normalised per layer and averaged."""

    def __init__(self, model: nn.Module, scores: dict[str, torch.Tensor], graph: tp.DependencyGraph):
        self.graph = graph
        self.names = {m: n for n, m in model.named_modules()}
        self.scores = scores

    def __call__(self, group) -> torch.Tensor:
        parts = []
        for dep, _ in group:
            name = self.names.get(dep.target.module)
            is_filter = isinstance(dep.target.module, nn.Conv2d) and self.graph.is_out_channel_pruning_fn(dep.handler)
            if name in self.scores and is_filter:
                s = self.scores[name].detach().float().cpu()
                parts.append((s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else torch.zeros_like(s))
        if not parts:
            root = self.names[group[0].dep.target.module]
            raise ValueError(f"no scores for any layer of the group rooted at {root!r}")
        return torch.stack(parts).mean(0)


def prune_model(
    model: nn.Module, ratios: dict[str, float], scores: dict[str, torch.Tensor], input_size: tuple[int, int, int]
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Prune a deep copy of ``model``: ``ratios`` maps group roots to ratios, ``scores`` maps conv names to
    per-filter scores (higher = more important). -> (smaller model, {root: removed filter indices}).
    The removed filters are the lowest combined scores, ties broken by index."""
    model = copy.deepcopy(model).eval()
    order = _forward_order(model, input_size)
    graph = _graph(model, input_size)
    groups, _ = _groups(model, graph, order)
    validate_ratios(ratios, groups)
    importance = _ScoreImportance(model, scores, graph)
    removed: dict[str, list[int]] = {}
    for group in groups:
        ratio = ratios.get(group.root, 0.0)
        n = group.channels - kept_channels(group.channels, ratio)
        if n <= 0:
            continue
        conv = model.get_submodule(group.root)
        full = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(group.channels)))
        imp = importance(full)
        idxs = sorted(torch.argsort(imp, stable=True)[:n].tolist())
        removed[group.root] = idxs
    for root, idxs in removed.items():  # indices refer to the unpruned layer; groups are disjoint
        graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels, idxs=idxs).prune()
    return model, removed
