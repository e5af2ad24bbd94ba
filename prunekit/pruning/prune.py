"""Physical pruning through Torch-Pruning: the only module that touches its internals.

Torch-Pruning's dependency graph finds the convs whose output channels must go together (a **coupled group**:
the convs of a residual stream joined by adds, a conv and the depthwise conv that follows it, ...). A group
is named after its *root*, its first conv in forward order, and takes one ratio (:mod:`prunekit.pruning.ratios`). The
filters that go are chosen by :func:`prunekit.pruning.selection.removed_filters` (the lowest combined scores).

>>> groups, frozen = coupled_groups(model, (3, 32, 32))
>>> pruned, removed = prune_model(model, {"layer1.0.conv1": 0.5}, scores, (3, 32, 32))
>>> pruned, removed = prune_model(model, {"layer1.0.conv1": 0.3}, scores, (3, 32, 32), round_to=8)  # 16 -> 8 kept

The input model is never modified: pruning works on a deep copy.

Some groups are **frozen** (``coupled_groups``'s second result names each of their convs with the reason), because
pruning them would give a wrong or broken model: channels that are the model's outputs, or a linear layer's; a
grouped conv that is not depthwise (Torch-Pruning removes its channels one by one, which breaks its groups);
channels split or sliced by sizes written in the forward code (``torch.split``, ``chunk``, ``x[:, :8]``: the code
keeps splitting at the old sizes); a reshape other than the flatten before a linear layer (a channel shuffle); a
layer prunekit does not count (LayerNorm, GroupNorm, ...).

Every pruning checks itself (:func:`prunekit.pruning.verify.check_pruned`): the pruned model must compute, on a fixed probe
input, what the original computes with the removed channels zeroed where they are read; Torch-Pruning failing or a
pruned model that differs is a :class:`prunekit.errors.PruneError` naming the group or layer.
"""
from __future__ import annotations

import copy
import threading
import traceback
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.dependency import index_mapping
from torch_pruning.ops import OPTYPE

from prunekit.defaults import ROUND_TO
from prunekit.errors import PruneError
from prunekit.models.layers import TRACE_LOCK
from prunekit.models.metrics import output_shapes
from prunekit.models.zoo import PadShortcut
from prunekit.pruning.ratios import check_round_to, validate_ratios
from prunekit.pruning.selection import removed_filters
from prunekit.pruning.verify import check_pruned, probe_input, reference_output

__all__ = ["Group", "Pruner", "coupled_groups", "prune_model"]


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
    with them; channels: filters per member; reads: (consumer or BN, positions per channel) for every consumer
    and BN: how many of its input positions each of the group's channels fills (1, or a flatten's spatial size
    before a linear layer); a layer fed by a concatenation reads several groups.
    """

    root: str
    members: tuple[str, ...]
    consumers: tuple[str, ...]
    norms: tuple[str, ...]
    channels: int
    reads: tuple[tuple[str, int], ...] = ()

    @property
    def coupled(self) -> bool:
        return len(self.members) > 1


# Where a group's channels go, for the self-check's reference: {consumer: (its input positions, the root channel
# each one carries)}, both in the unpruned model's numbering.
Wiring = dict[str, tuple[list[int], list[int]]]

_INDEX_MAPPINGS = {  # what Torch-Pruning's update_index_mapping calls, per op type
    OPTYPE.CONCAT: index_mapping.update_concat_index_mapping, OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
    OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping, OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
    OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}
_OPS = {OPTYPE.SPLIT: "a split (torch.split / chunk)", OPTYPE.SLICE: "a channel slice (x[:, a:b])",
        OPTYPE.UNBIND: "an unbind", OPTYPE.EXPAND: "an expand", OPTYPE.RESHAPE: "a reshape (a channel shuffle or view)",
        OPTYPE.CONCAT: "a concatenation"}
_FOLLOWED = (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV, OPTYPE.BN, OPTYPE.CONCAT, OPTYPE.ELEMENTWISE, OPTYPE.CUSTOMIZED,
             OPTYPE.RESHAPE, OPTYPE.SPLIT, OPTYPE.SLICE)


def _graph(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[tp.DependencyGraph, dict]:
    """Torch-Pruning's dependency graph of ``model`` traced on a zero (1, *input_size) image, and the **opaque**
    ops, {graph node: op type}: the reshapes other than a flatten into a linear layer, the splits, slices, unbinds
    and expands of the channels, and any op whose channel mapping Torch-Pruning fails to work out. Every group
    whose channels reach one is frozen; Torch-Pruning's groups stop there (it would map them again for every
    group, slowly, wrongly or failing). PruneError when Torch-Pruning cannot trace the model at all."""
    device = next(model.parameters()).device
    graph = tp.DependencyGraph()
    try:
        with TRACE_LOCK:  # its trace is a forward pass: no fx trace of another thread meanwhile
            graph.build_dependency(model, example_inputs=torch.zeros(1, *input_size, device=device),
                                   customized_pruners=CUSTOM_PRUNERS)
    except Exception as exc:  # Torch-Pruning raises anything from its tracing code
        if not any(f.name == "update_index_mapping" for f in traceback.extract_tb(exc.__traceback__)):
            raise PruneError(f"Torch-Pruning cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); "
                             "prunekit cannot prune this model: pick another one") from exc
    opaque: dict = {}
    nodes = list(graph.module2node.values())
    for node in [n for n in nodes if n.type in _INDEX_MAPPINGS and n.type != OPTYPE.CONCAT and not _keeps_channels(n)]:
        _make_opaque(node, opaque)
    for node in nodes:  # what Torch-Pruning does again for every group; an op it fails on becomes opaque
        if node.type in _INDEX_MAPPINGS:
            try:
                _INDEX_MAPPINGS[node.type](graph, node)
            except Exception:  # noqa: BLE001 - Torch-Pruning cannot follow the channels through this op
                _make_opaque(node, opaque)
    return graph, opaque


def _keeps_channels(node) -> bool:
    """Whether Torch-Pruning follows channels through a reshape / split / slice / unbind / expand node correctly: a
    reshape that flattens into a linear layer, a split or slice of another dimension than the channels'."""
    if node.type == OPTYPE.RESHAPE:
        return _flattens(node)
    if node.type in (OPTYPE.SPLIT, OPTYPE.SLICE):
        dim = node.module.dim if node.type == OPTYPE.SLICE else getattr(node.grad_fn, "_saved_dim", 1)
        return dim != 1
    return False


def _make_opaque(node, opaque: dict) -> None:
    """Record ``node`` as opaque; Torch-Pruning's groups then reach it (and are frozen) but go no further."""
    opaque[node] = node.type
    node.type = OPTYPE.ELEMENTWISE  # no index mapping of its own, which Torch-Pruning redoes for every group
    for other in (*node.inputs, *node.outputs):
        for dep in other.dependencies:
            if dep.target is node:
                dep.index_mapping = [None, None]
    for dep in node.dependencies:
        dep.index_mapping = [_nowhere, None]


def _nowhere(idxs: list) -> list:
    return []


def _forward_order(model: nn.Module, input_size: tuple[int, int, int]) -> list[str]:
    return list(output_shapes(model, input_size, (nn.Conv2d,)))


def coupled_groups(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[list[Group], dict[str, str]]:
    """-> (prunable groups in forward order, {conv name: why it cannot be pruned})."""
    graph, opaque = _graph(model, input_size)
    groups, frozen, _ = _groups(model, graph, _forward_order(model, input_size), opaque)
    return groups, frozen


def _groups(model: nn.Module, graph: tp.DependencyGraph, order: list[str], opaque: dict):
    """-> (groups in forward order, {frozen conv: reason}, {root: the group's :data:`Wiring`})."""
    names = {m: n for n, m in model.named_modules()}
    position = {n: i for i, n in enumerate(order)}
    groups, frozen, wiring, seen = [], {}, {}, set()
    for name in order:
        if name in seen:
            continue
        conv = model.get_submodule(name)
        try:
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        except Exception as exc:  # Torch-Pruning cannot follow this conv's channels: freeze it alone
            seen.add(name)
            frozen[name] = f"Torch-Pruning cannot follow its channels ({type(exc).__name__}: {exc})"
            continue
        members, reads, wires, reason = _read_group(group, graph, names, opaque)
        members = sorted(set(members) | {name}, key=lambda n: position.get(n, 1 << 30))
        seen.update(members)
        reason = reason or next((frozen[m] for m in members if m in frozen), None)  # coupled with a frozen conv
        if reason is not None:
            frozen.update((m, reason) for m in members)
            continue
        norms = [n for n in reads if n not in wires]
        per_channel = tuple((n, k // conv.out_channels) for n, k in reads.items())
        groups.append(Group(members[0], tuple(members), tuple(sorted(set(wires) - set(members))),
                            tuple(sorted(norms)), conv.out_channels, per_channel))
        wiring[members[0]] = wires
    return groups, frozen, wiring


def _read_group(group, graph: tp.DependencyGraph, names: dict, opaque: dict):
    """What one Torch-Pruning group (built on every channel of its root) touches -> (member convs, {consumer or
    BN: input positions the channels fill}, {consumer: :data:`Wiring` entry}, why it is frozen or None)."""
    members, reads, wires, reasons = [], {}, {}, []
    for item in group.items:
        node, out = item.dep.target, graph.is_out_channel_pruning_fn(item.dep.handler)
        reason = _refusal(node, out, names, opaque)
        if reason is not None:
            reasons.append((node.type != OPTYPE.OUTPUT, reason))  # the model's outputs say it first
        module, name = node.module, names.get(node.module)
        if isinstance(module, nn.Conv2d) and out:
            members.append(name)
            if list(item.idxs) != list(item.root_idxs):  # not filter i for filter i of the root: a concatenation
                reasons.append((True, f"its filters are concatenated with others into {name} ({module.out_channels}"
                                      " filters): prunekit removes the same filters from every conv of a group"))
        elif isinstance(module, (nn.Conv2d, nn.Linear, PadShortcut)) and not out:
            wires[name] = (list(item.idxs), list(item.root_idxs))
            reads[name] = len(set(item.idxs))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            reads[name] = len(set(item.idxs))
    return members, reads, wires, sorted(reasons, key=lambda r: r[0])[0][1] if reasons else None


def _refusal(node, out: bool, names: dict, opaque: dict) -> str | None:
    """Why a group whose channels reach Torch-Pruning's graph ``node`` (``out``: through its output channels)
    cannot be pruned correctly, or None when it can."""
    kind, module = node.type, node.module
    if node in opaque:
        cut = opaque[node] in (OPTYPE.SPLIT, OPTYPE.SLICE, OPTYPE.UNBIND)
        return (f"its channels go through {_OPS[opaque[node]]} after {_upstream(node, names)}" +
                (", whose sizes are written in the model's code: pruning cannot change them" if cut else
                 ", which Torch-Pruning cannot follow"))
    if kind == OPTYPE.OUTPUT:
        return "its channels are the model's outputs"
    if kind == OPTYPE.LINEAR:
        return f"its channels are the outputs of the linear layer {names[module]}" if out else None
    if kind == OPTYPE.CONV and not isinstance(module, nn.Conv2d):
        return f"it feeds {names[module]}, a {type(module).__name__}: prunekit prunes through Conv2d layers only"
    if kind == OPTYPE.CONV and module.groups > 1:
        return (f"{names[module]} is a grouped conv (groups={module.groups}) that is not depthwise: Torch-Pruning "
                "removes its channels one by one, which breaks its groups")
    if kind in _FOLLOWED:
        return None
    return f"its channels go through {names.get(module, _upstream(node, names))} ({type(module).__name__}), " \
           "which prunekit does not prune"


def _flattens(node) -> bool:
    """Whether a reshape node flattens a (N, C, H, W) or (N, C) tensor into a linear layer (through element-wise
    ops such as dropout only): Torch-Pruning maps each channel to its H * W inputs of the linear layer."""
    size = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    if size is None or len(size) not in (2, 4):
        return False
    stack, seen = list(node.outputs), set()
    while stack:
        n = stack.pop()
        if n in seen or n.type == OPTYPE.LINEAR:
            continue
        seen.add(n)
        if n.type != OPTYPE.ELEMENTWISE:
            return False
        stack.extend(n.outputs)
    return True


def _upstream(node, names: dict) -> str:
    """The nearest named module before ``node`` in the graph ("the input" when none)."""
    stack, seen = list(node.inputs), set()
    while stack:
        n = stack.pop(0)
        if n in seen:
            continue
        seen.add(n)
        if n.module in names:
            return names[n.module]
        stack.extend(n.inputs)
    return "the input"


class Pruner:
    """One model traced once for many prunings (the candidate evaluator judges hundreds of plans of one model).

    Holds a pristine deep copy of ``model`` (eval mode) with Torch-Pruning's dependency graph, the groups, the frozen
    convs and their wiring, and the self-check's probe. Each :meth:`prune` deep-copies the model and its graph
    together (about 4x cheaper than tracing again) and prunes the copy; the pristine copy never changes. One pruning
    at a time (a lock): safe to share between threads.

    >>> pruner = Pruner(model, (3, 32, 32))
    >>> pruned, removed = pruner.prune({"layer1.0.conv1": 0.5}, scores)
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int]):
        self.model = copy.deepcopy(model).eval()
        self.input_size = tuple(input_size)
        self._graph, opaque = _graph(self.model, self.input_size)
        self.groups, self.frozen, self._wiring = _groups(self.model, self._graph,
                                                         _forward_order(self.model, self.input_size), opaque)
        self._probe = probe_input(self.model, self.input_size)
        self._lock = threading.Lock()

    def removed(self, ratios: dict[str, float], scores: dict[str, torch.Tensor], *,
                round_to: int = ROUND_TO) -> dict[str, list[int]]:
        """{group root: the filter indices ``ratios`` ({root: ratio}) removes with ``scores`` ({conv: (filters,)})},
        the lowest combined scores, ties broken by index; UserError for a ratio outside the rule or a frozen group."""
        validate_ratios(ratios, self.groups, self.frozen)
        per_conv = removed_filters(self.groups, ratios, scores, round_to=check_round_to(round_to))
        return {g.root: per_conv[g.root] for g in self.groups if g.root in per_conv}

    def prune(self, ratios: dict[str, float], scores: dict[str, torch.Tensor], *,
              round_to: int = ROUND_TO) -> tuple[nn.Module, dict[str, list[int]]]:
        """A pruned copy of the model and {root: removed filter indices}, as :func:`prune_model`."""
        removed = self.removed(ratios, scores, round_to=round_to)
        dropped = _dropped_inputs(self._wiring, removed)
        with self._lock:
            expected = reference_output(self.model, dropped, self._probe)
            pruned, graph = self._copy()
        for g in self.groups:  # indices refer to the unpruned layer; groups are disjoint
            if g.root in removed:
                _prune_group(graph, pruned, g, removed[g.root])
        check_pruned(self.model, pruned, self._probe, expected, dropped, self.groups, removed)
        return pruned, removed

    def _copy(self) -> tuple[nn.Module, tp.DependencyGraph]:
        """The model and its graph deep-copied together (the graph then points at the copy's layers). Shared, not
        copied: Torch-Pruning's pruner objects (it matches a dependency's trigger to the pruning function by the
        pruner it is bound to), the traced autograd nodes and the graph's ops module (nothing reads them again)."""
        graph = self._graph
        shared = {id(graph.ops): graph.ops}
        shared.update((id(node.grad_fn), node.grad_fn) for node in graph.module2node.values())
        shared.update((id(p), p) for p in (*graph.REGISTERED_PRUNERS.values(), *graph.CUSTOMIZED_PRUNERS.values()))
        model = copy.deepcopy(self.model, shared)
        nodes = list(graph.module2node.values())  # copied node by node: following their links recurses too deep
        shared.update((id(node), copy.copy(node)) for node in nodes)
        for node in nodes:
            vars(shared[id(node)]).update(copy.deepcopy(vars(node), shared))
        return model, copy.deepcopy(graph, shared)


def prune_model(
    model: nn.Module, ratios: dict[str, float], scores: dict[str, torch.Tensor], input_size: tuple[int, int, int],
    *, round_to: int = ROUND_TO,
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Prune a deep copy of ``model``: ``ratios`` maps group roots to ratios, ``scores`` maps conv names to
    per-filter scores (higher = more important); each group's kept count rounded to a multiple of ``round_to``
    (:func:`prunekit.pruning.ratios.kept_channels`). -> (smaller model, {root: removed filter indices}).
    The removed filters are the lowest combined scores, ties broken by index. The pruned model is checked against
    the original on a probe input (:func:`prunekit.pruning.verify.check_pruned`); PruneError when Torch-Pruning fails or
    the check does. The step below :func:`prunekit.prune`, which also measures the pruned model and records it as a
    run; :class:`Pruner` prunes one model many times."""
    return Pruner(model, input_size).prune(ratios, scores, round_to=round_to)


def _dropped_inputs(wiring: dict[str, Wiring], removed: dict[str, list[int]]) -> dict[str, list[int]]:
    """{consumer: its input positions that carry removed channels} (unpruned numbering)."""
    dropped: dict[str, set[int]] = {}
    for root, idxs in removed.items():
        gone = set(idxs)
        for consumer, (positions, channels) in wiring[root].items():
            dropped.setdefault(consumer, set()).update(p for p, c in zip(positions, channels) if c in gone)
    return {k: sorted(v) for k, v in dropped.items() if v}


def _prune_group(graph: tp.DependencyGraph, model: nn.Module, group: Group, idxs: list[int]) -> None:
    """Remove filters ``idxs`` of ``group`` through Torch-Pruning; PruneError naming the group when it fails."""
    try:
        graph.get_pruning_group(model.get_submodule(group.root), tp.prune_conv_out_channels, idxs=idxs).prune()
    except Exception as exc:  # Torch-Pruning raises anything from its handlers
        raise PruneError(f"Torch-Pruning failed to prune the group rooted at {group.root!r} (convs "
                         f"{', '.join(group.members)}; read by {', '.join(group.consumers) or 'nothing'}): "
                         f"{type(exc).__name__}: {exc}. Give this group ratio 0 (exclude {group.root}) or pick "
                         "another model") from exc
