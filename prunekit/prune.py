"""Physical pruning through Torch-Pruning: the only module that touches its internals.

Torch-Pruning's dependency graph finds the convs whose output channels must go together (a **coupled group**:
the convs of a residual stream joined by adds, a conv and the depthwise conv that follows it, ...). A group
is named after its *root*, its first conv in forward order, and takes one ratio (:mod:`prunekit.ratios`). The
filters that go are chosen by :func:`prunekit.selection.removed_filters` (the lowest combined scores).

>>> groups, frozen = coupled_groups(model, (3, 32, 32))
>>> pruned, removed = prune_model(model, {"layer1.0.conv1": 0.5}, scores, (3, 32, 32))

The input model is never modified: pruning works on a deep copy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp

from .metrics import output_shapes
from .models import PadShortcut
from .ratios import validate_ratios
from .selection import removed_filters

__all__ = ["Group", "coupled_groups", "prune_model"]


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


def prune_model(
    model: nn.Module, ratios: dict[str, float], scores: dict[str, torch.Tensor], input_size: tuple[int, int, int]
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Prune a deep copy of ``model``: ``ratios`` maps group roots to ratios, ``scores`` maps conv names to
    per-filter scores (higher = more important). -> (smaller model, {root: removed filter indices}).
    The removed filters are the lowest combined scores, ties broken by index."""
    model = copy.deepcopy(model).eval()
    graph = _graph(model, input_size)
    groups, _ = _groups(model, graph, _forward_order(model, input_size))
    validate_ratios(ratios, groups)
    removed_per_conv = removed_filters(groups, ratios, scores)
    removed = {g.root: removed_per_conv[g.root] for g in groups if g.root in removed_per_conv}
    for root, idxs in removed.items():  # indices refer to the unpruned layer; groups are disjoint
        graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels, idxs=idxs).prune()
    return model, removed
