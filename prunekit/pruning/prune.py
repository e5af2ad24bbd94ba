"""Physical pruning through Torch-Pruning: the only module that touches its internals.

Torch-Pruning's dependency graph finds the convs whose output channels must go together (a **coupled group**:
the convs of a residual stream joined by adds, a conv and the depthwise conv that follows it, ...). A group
is named after its *root*, its first conv in forward order (the narrowest one when a member's filters carry its
channels several times), and takes one ratio (:mod:`prunekit.pruning.ratios`). The filters that go are chosen by
:func:`prunekit.pruning.selection.removed_filters` (the lowest combined scores).

>>> groups, frozen = coupled_groups(model, (3, 32, 32))
>>> pruned, removed = prune_model(model, {"layer1.0.conv1": 0.5}, scores, (3, 32, 32))
>>> pruned, removed = prune_model(model, {"layer1.0.conv1": 0.3}, scores, (3, 32, 32), round_to=8)  # 16 -> 8 kept

The input model is never modified: pruning works on a deep copy.

What a group's channels go through, and how it is pruned:

- BatchNorm, InstanceNorm, PReLU, LayerNorm over the channels (ConvNeXt's LayerNorm2d, or a permute to channels-last
  and ``nn.LayerNorm``), GroupNorm and a per-channel ``nn.Parameter`` (ConvNeXt's layer scale) shrink with it; linear
  layers reading it (channels-last or after a flatten) lose inputs, and a linear layer whose outputs are the group's
  channels (ConvNeXt's second MLP layer) loses outputs with the convs.
- A grouped conv that is not depthwise (``groups=g``: RegNet, ResNeXt), a GroupNorm of ``g`` groups or a
  ``chunk(g)`` of the channels splits them into ``g`` equal **blocks**: the group is pruned as Torch-Pruning's own
  pruner prunes grouped convs, the same positions removed from every block, so every block keeps its width
  (:attr:`Group.blocks`; its ratio is the share of each block's positions to remove).
- A member whose filters carry the root's channels several times (GhostNet's ``cat([x, cheap(x)])`` feeding a
  wider conv, a residual stream of such concatenations) is a **spread** member: removing a root channel removes all
  of its copies (:attr:`Group.spread`).

Some groups are **frozen** (``coupled_groups``'s second result names each of their convs with the reason), because
pruning them would give a wrong or broken model: channels that are the model's outputs; channels split or sliced by
sizes written in the forward code (``torch.split(x, 8)``, ``x[:, :8]``: the code keeps splitting at the old sizes);
a reshape other than a flatten before a linear layer or one that only adds or drops dims of size 1 (a channel
shuffle); blocks that a concatenation mixes with other channels, or of a single channel; a layer prunekit does not
count.

Every pruning checks itself (:func:`prunekit.pruning.verify.check_pruned`): the pruned model must compute, on a fixed probe
input, what the original computes with the removed channels zeroed where they are read (and left out of the
statistics of the LayerNorms and GroupNorms that read them); Torch-Pruning failing or a pruned model that differs is
a :class:`prunekit.errors.PruneError` naming the group or layer.
"""
from __future__ import annotations

import copy
import math
import threading
import traceback
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import index_mapping
from torch_pruning.ops import OPTYPE

from prunekit.defaults import ROUND_TO
from prunekit.errors import PruneError
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


class _LayerNormPruner(tp.pruner.function.LayernormPruner):
    """Torch-Pruning's LayerNorm handler with the kept weights in order (its own keeps them in a set's iteration
    order, ``keep_idxs.sort()`` sorting a copy: 4 of 16 channels kept as 0, 10, 3, 15 swap the weights)."""

    def prune_out_channels(self, layer: nn.LayerNorm, idxs: list[int]) -> nn.LayerNorm:
        keep = sorted(set(range(layer.normalized_shape[-1])) - {int(i) for i in idxs})
        if layer.elementwise_affine:
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, -1)
            if layer.bias is not None:
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, -1)
        layer.normalized_shape = (*layer.normalized_shape[:-1], len(keep))
        return layer

    prune_in_channels = prune_out_channels


def _new_graph() -> tp.DependencyGraph:
    """An empty Torch-Pruning graph whose LayerNorm handler is :class:`_LayerNormPruner`."""
    graph = tp.DependencyGraph()
    old, new = graph.REGISTERED_PRUNERS[OPTYPE.LN], _LayerNormPruner()
    graph.REGISTERED_PRUNERS[OPTYPE.LN] = new
    graph._out_channel_pruning_fn = (graph._out_channel_pruning_fn - {old.prune_out_channels}) | \
        {new.prune_out_channels}
    graph._in_channel_pruning_fn = (graph._in_channel_pruning_fn - {old.prune_in_channels}) | {new.prune_in_channels}
    return graph


@dataclass(frozen=True)
class Group:
    """Convs whose output channels are removed together.

    root: the member named for the group (the first in forward order, the narrowest one when members differ in
    width); members: conv (or linear) names whose filters go, filter i of each carrying the root's channel i;
    consumers: conv/linear/shortcut names whose *input* channels shrink with them; norms: the BNs, LayerNorms,
    GroupNorms, PReLUs and per-channel parameters that shrink with them; channels: the positions a ratio prunes:
    the root's filters, or with ``blocks`` > 1 the filters of one block; reads: (consumer or norm, positions per
    channel) for every consumer and norm: how many of its input positions each channel a ratio prunes fills (1, a
    flatten's spatial size before a linear layer, 2 for a GhostNet concatenation of a channel and its cheap copy,
    ``blocks`` for a layer reading every block of a grouped group); a layer fed by a concatenation reads several
    groups.

    blocks: the root's filters form ``blocks`` equal blocks of ``channels`` filters and pruning removes the same
    positions from every block (a grouped conv, a GroupNorm or a ``chunk`` of these channels; 1: none);
    grouped_by: what imposes the blocks ("s1.b1.conv2.conv (groups=3)", ...). spread: (member, the root filter each
    of its filters carries) for the members whose filters carry the root's channels several times (GhostNet).
    """

    root: str
    members: tuple[str, ...]
    consumers: tuple[str, ...]
    norms: tuple[str, ...]
    channels: int
    reads: tuple[tuple[str, int], ...] = ()
    blocks: int = 1
    grouped_by: tuple[str, ...] = ()
    spread: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def coupled(self) -> bool:
        return len(self.members) + len(self.spread) > 1

    @property
    def filters(self) -> int:
        """The root's filters: ``channels`` x ``blocks``."""
        return self.channels * self.blocks

    @property
    def grouping(self) -> str:
        """One line saying how the group is pruned when it is not filter by filter ('' when it is)."""
        parts = []
        if self.blocks > 1:
            parts.append(f"grouped: {self.blocks} blocks of {self.channels} filters, the same positions removed from "
                         f"each ({', '.join(self.grouped_by)})")
        if self.spread:
            parts.append(f"{', '.join(m for m, _ in self.spread)} carr{'ies' if len(self.spread) == 1 else 'y'} "
                         "each channel several times (a concatenation): all copies go")
        return "; ".join(parts)

    def filters_of(self, units: list[int]) -> list[int]:
        """The root's filters that block positions ``units`` (in [0, channels)) stand for, sorted."""
        return sorted(b * self.channels + u for b in range(self.blocks) for u in units)

    def member_filters(self, idxs: list[int]) -> dict[str, list[int]]:
        """{member: its filters that carry the root's filters ``idxs``}: ``idxs`` for a member, the copies of those
        channels for a spread member."""
        gone = set(idxs)
        out = {m: sorted(gone) for m in self.members}
        out.update((m, [f for f, r in enumerate(roots) if r in gone]) for m, roots in self.spread)
        return out


# Where a group's channels go, for the self-check's reference: {consumer or LayerNorm / GroupNorm: (its input
# positions, the root channel each one carries)}, both in the unpruned model's numbering.
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
_NORMS = (OPTYPE.BN, OPTYPE.LN, OPTYPE.GN, OPTYPE.IN, OPTYPE.PRELU, OPTYPE.PARAMETER)  # shrink with the channels
_FOLLOWED = (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV, OPTYPE.LINEAR, OPTYPE.CONCAT, OPTYPE.ELEMENTWISE, OPTYPE.CUSTOMIZED,
             OPTYPE.RESHAPE, OPTYPE.SPLIT, OPTYPE.SLICE, *_NORMS)


class _OpRecorder(TorchFunctionMode):
    """While Torch-Pruning traces the model: what the forward's code called for each autograd node it makes a graph
    node of, {grad_fn: (function name, its int second argument (a concatenation: the channels of each part) or None,
    the first output's shape)}: ``chunk(2)`` and ``torch.split(x, 8)`` leave the same autograd node, a view's node
    does not keep its output shape, and Torch-Pruning works the sizes of a concatenation's parts out wrongly after
    a split."""

    def __init__(self):
        super().__init__()
        self.calls: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        second = args[1] if len(args) > 1 and type(args[1]) is int else None
        if getattr(func, "__name__", "") in ("cat", "concat", "concatenate") and args and \
                isinstance(args[0], (tuple, list)):  # the concatenated tensors' channels
            second = tuple(t.shape[1] if t.dim() > 1 else None for t in args[0])
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.grad_fn is not None and t.grad_fn not in self.calls:
                self.calls[t.grad_fn] = (getattr(func, "__name__", ""), second, tuple(t.shape))
        return out


@dataclass
class _Ops:
    """The graph's channel-mapping ops prunekit handles itself: ``opaque`` {node: op type}, where every group whose
    channels reach it is frozen; ``chunks`` {split node: k}, a ``chunk(k)`` (or ``tensor_split(x, k)``) of the
    channels into k equal parts, which their group's blocks keep equal."""

    opaque: dict = field(default_factory=dict)
    chunks: dict = field(default_factory=dict)


def _graph(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[tp.DependencyGraph, _Ops]:
    """Torch-Pruning's dependency graph of ``model`` traced on a zero (1, *input_size) image, and the ops
    (:class:`_Ops`): the **opaque** ones are the reshapes other than a flatten into a linear layer or a view that
    only adds or drops dims of size 1, the splits and slices of the channels at sizes written in the code, the
    unbinds and expands, and any op whose channel mapping Torch-Pruning fails to work out. Every group whose
    channels reach one is frozen; Torch-Pruning's groups stop there (it would map them again for every group,
    slowly, wrongly or failing). PruneError when Torch-Pruning cannot trace the model at all."""
    device = next(model.parameters()).device
    graph, recorder = _new_graph(), _OpRecorder()
    try:
        with recorder:
            graph.build_dependency(model, example_inputs=torch.zeros(1, *input_size, device=device),
                                   customized_pruners=CUSTOM_PRUNERS, verbose=False)
    except Exception as exc:  # Torch-Pruning raises anything from its tracing code
        if not any(f.name == "update_index_mapping" for f in traceback.extract_tb(exc.__traceback__)):
            raise PruneError(f"Torch-Pruning cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); "
                             "prunekit cannot prune this model: pick another one") from exc
    ops = _Ops()
    nodes = list(graph.module2node.values())
    for node in [n for n in nodes if n.type in _INDEX_MAPPINGS and n.type != OPTYPE.CONCAT]:
        k = _chunked(node, recorder.calls)
        if k and _follow_chunk(node, k):
            ops.chunks[node] = k
        elif k:
            _make_opaque(node, ops.opaque, _CHUNK)
        elif not _keeps_channels(node, recorder.calls):
            _make_opaque(node, ops.opaque)
    for node in nodes:
        sizes = recorder.calls.get(node.grad_fn, (None, None))[1]
        if node.type == OPTYPE.CONCAT and isinstance(sizes, tuple) and len(sizes) == len(node.inputs):
            node.module.concat_sizes = list(sizes)  # Torch-Pruning works them out wrongly after a split
    for node in nodes:  # what Torch-Pruning does again for every group; an op it fails on becomes opaque
        if node.type in _INDEX_MAPPINGS:
            try:
                _INDEX_MAPPINGS[node.type](graph, node)
            except Exception:  # noqa: BLE001 - Torch-Pruning cannot follow the channels through this op
                ops.chunks.pop(node, None)
                _make_opaque(node, ops.opaque)
    return graph, ops


def _keeps_channels(node, calls: dict) -> bool:
    """Whether Torch-Pruning follows channels through a reshape / split / slice / unbind / expand node correctly: a
    reshape that flattens into a linear layer or only adds or drops dims of size 1 (``gamma.reshape(1, -1, 1, 1)``,
    ``x.view(n, c)`` of a pooled (n, c, 1, 1)), a split or slice of another dimension than the channels', a slice
    that keeps every channel (``out[:, :n]`` of n channels: it keeps them all after pruning too)."""
    size = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    if node.type == OPTYPE.RESHAPE:
        out = calls.get(node.grad_fn, (None, None, None))[2]
        return _flattens(node) or (size is not None and out is not None and
                                   [s for s in size if s != 1] == [s for s in out if s != 1])
    if node.type in (OPTYPE.SPLIT, OPTYPE.SLICE):
        dim = node.module.dim if node.type == OPTYPE.SLICE else getattr(node.grad_fn, "_saved_dim", 1)
        if dim != 1:
            return True
        m = node.module
        return node.type == OPTYPE.SLICE and size is not None and m.start == 0 and m.step == 1 and m.end >= size[1]
    return False


def _chunked(node, calls: dict) -> int | None:
    """k when ``node`` is a ``chunk(k)`` (or ``tensor_split(x, k)``) of the channels into k equal parts, else None."""
    if node.type != OPTYPE.SPLIT or getattr(node.grad_fn, "_saved_dim", None) != 1:
        return None
    name, k, _ = calls.get(node.grad_fn, ("", None, None))
    size = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    if name in ("chunk", "tensor_split") and k and k > 1 and size is not None and size[1] % k == 0:
        return k
    return None


def _follow_chunk(node, k: int) -> bool:
    """Set Torch-Pruning's split sizes of a ``chunk(k)`` node (its own reading of them fails on torch 2) and order
    the node's successors as the parts they read, which its index mapping assumes; False, untouched, unless each
    part goes to one successor that reads only it (``a, b = x.chunk(2)`` then ``cat([a, m(b)])``)."""
    parts = []
    for succ in node.outputs:
        used = [nr for fn, nr in getattr(succ.grad_fn, "next_functions", ()) if fn is node.grad_fn]
        if len(used) != 1:
            return False
        parts.append(used[0])
    if sorted(parts) != list(range(k)):
        return False
    node.outputs = [succ for _, succ in sorted(zip(parts, node.outputs), key=lambda t: t[0])]
    size = node.grad_fn._saved_self_sym_sizes[1]
    node.module.split_sizes = [size // k] * k
    node.module.offsets = [i * size // k for i in range(k + 1)]
    return True


_CHUNK = "chunk"  # the opaque kind of a chunk whose parts Torch-Pruning cannot follow


def _make_opaque(node, opaque: dict, kind=None) -> None:
    """Record ``node`` as opaque; Torch-Pruning's groups then reach it (and are frozen) but go no further."""
    opaque[node] = kind or node.type
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
    graph, ops = _graph(model, input_size)
    groups, frozen, _ = _groups(model, graph, _forward_order(model, input_size), ops)
    return groups, frozen


def _names(model: nn.Module) -> dict:
    """{module or parameter: its name} (Torch-Pruning's graph holds per-channel parameters as nodes)."""
    names: dict = {m: n for n, m in model.named_modules()}
    names.update((p, n) for n, p in model.named_parameters())
    return names


def _groups(model: nn.Module, graph: tp.DependencyGraph, order: list[str], ops: _Ops):
    """-> (groups in forward order, {frozen conv: reason}, {root: the group's :data:`Wiring`})."""
    names = _names(model)
    position = {n: i for i, n in enumerate(order)}  # convs in forward order, then the other layers (linear members)
    position.update((n, len(order) + i) for i, (n, _) in enumerate(model.named_modules()) if n not in position)
    groups, frozen, wiring, seen = [], {}, {}, set()
    for name in order:
        if name in seen:
            continue
        try:
            root, reading = _rooted_reading(model, graph, name, names, ops)
        except Exception as exc:  # Torch-Pruning cannot follow this conv's channels: freeze it alone
            seen.add(name)
            frozen[name] = f"Torch-Pruning cannot follow its channels ({type(exc).__name__}: {exc})"
            continue
        convs = sorted(set(reading.members) | set(reading.spread) | {name, root},
                       key=lambda n: position.get(n, 1 << 30))
        seen.update(convs)
        group, reason = _group_from(reading, root, model.get_submodule(root).out_channels, position)
        reason = reason or next((frozen[m] for m in convs if m in frozen), None)  # coupled with a frozen conv
        if reason is not None:
            frozen.update((m, reason) for m in convs if isinstance(model.get_submodule(m), nn.Conv2d))
            continue
        groups.append(group)
        wiring[root] = reading.wires
    groups.sort(key=lambda g: position[g.root])
    return groups, frozen, wiring


@dataclass
class _Reading:
    """What one Torch-Pruning group (built on every filter of its root) touches: members whose filters are the
    root's one for one; spread members {name: {(filter, root filter)}}; reads {consumer or norm: {input position:
    the root filter it carries}};
    wires {consumer or LayerNorm / GroupNorm: :data:`Wiring` entry}; norms; blocks [(what, k, {(position, root
    filter)}, width)]: the layers that split the channels into k equal blocks; reasons [(not the outputs, why
    frozen)]."""

    members: list = field(default_factory=list)
    spread: dict = field(default_factory=dict)
    reads: dict = field(default_factory=dict)
    wires: dict = field(default_factory=dict)
    norms: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    reasons: list = field(default_factory=list)


def _rooted_reading(model: nn.Module, graph: tp.DependencyGraph, name: str, names: dict, ops: _Ops):
    """-> (root, its :class:`_Reading`): the group of conv ``name``, read again from its narrowest member when some
    member's filters carry the channels several times (Torch-Pruning's group is only complete from there)."""
    reading = _read_group(_tp_group(graph, model.get_submodule(name)), graph, names, ops)
    if not reading.spread:
        return name, reading
    convs = [n for n in (*reading.members, *reading.spread) if isinstance(model.get_submodule(n), nn.Conv2d)]
    narrow = min(convs, key=lambda n: model.get_submodule(n).out_channels)
    if model.get_submodule(narrow).out_channels >= model.get_submodule(name).out_channels:
        return name, reading
    return narrow, _read_group(_tp_group(graph, model.get_submodule(narrow)), graph, names, ops)


def _tp_group(graph: tp.DependencyGraph, conv: nn.Conv2d):
    return graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))


def _read_group(group, graph: tp.DependencyGraph, names: dict, ops: _Ops) -> _Reading:
    """Sort what one Torch-Pruning group touches into a :class:`_Reading` (each module's index pairs merged)."""
    reading, touched = _Reading(), {}
    for item in group.items:
        node, out = item.dep.target, graph.is_out_channel_pruning_fn(item.dep.handler)
        reason = _refusal(node, out, names, ops.opaque)
        if reason is not None:
            reading.reasons.append((node.type != OPTYPE.OUTPUT, reason))  # the model's outputs say it first
        pairs = touched.setdefault((node, out), set())
        pairs.update(zip((int(i) for i in item.idxs), (int(r) for r in item.root_idxs)))
    for (node, out), pairs in touched.items():
        _sort_item(reading, node, out, pairs, names, ops)
    return reading


def _sort_item(reading: _Reading, node, out: bool, pairs: set, names: dict, ops: _Ops) -> None:
    """File one touched node (``pairs``: its {(position, root filter)}) into ``reading``."""
    module, name = node.module, names.get(node.module)
    positions, roots = [p for p, _ in sorted(pairs)], [r for _, r in sorted(pairs)]
    grouped = isinstance(module, nn.Conv2d) and module.groups > 1 and node.type != OPTYPE.DEPTHWISE_CONV
    if isinstance(module, (nn.Conv2d, nn.Linear)) and out:
        if positions == roots:
            reading.members.append(name)
        else:
            reading.spread[name] = pairs
        if grouped:
            reading.blocks.append((f"{name} (groups={module.groups})", module.groups, pairs, module.out_channels))
    elif isinstance(module, (nn.Conv2d, nn.Linear, PadShortcut)) and not out:
        reading.wires[name] = (positions, roots)
        reading.reads[name] = dict(sorted(pairs))
        if grouped:
            reading.blocks.append((f"{name} (groups={module.groups})", module.groups, pairs, module.in_channels))
    elif node.type in _NORMS and name is not None and _per_channel(module):
        reading.norms.append(name)
        reading.reads[name] = dict(sorted(pairs))
        if node.type in (OPTYPE.LN, OPTYPE.GN):  # statistics over the channels: the reference leaves removed ones out
            reading.wires[name] = (positions, roots)
        if node.type == OPTYPE.GN and module.num_groups > 1:
            what = f"{name} (GroupNorm, {module.num_groups} groups)"
            reading.blocks.append((what, module.num_groups, pairs, module.num_channels))
    elif node in ops.chunks:
        size = node.grad_fn._saved_self_sym_sizes[1]
        reading.blocks.append((f"chunk({ops.chunks[node]}) after {_upstream(node, names)}", ops.chunks[node], pairs,
                               size))


def _per_channel(module) -> bool:
    """Whether a norm / PReLU / parameter node holds something per channel (a PReLU of one slope does not)."""
    return not (isinstance(module, nn.PReLU) and module.num_parameters == 1)


def _group_from(reading: _Reading, root: str, width: int, position: dict) -> tuple[Group | None, str | None]:
    """The :class:`Group` rooted at ``root`` (``width`` filters) from its reading, or (None, why it is frozen)."""
    if reading.reasons:
        return None, sorted(reading.reasons, key=lambda r: r[0])[0][1]
    spread = {}
    for name, pairs in reading.spread.items():
        roots = _spread_roots(pairs, width)
        if roots is None:
            return None, (f"its filters are concatenated with others into {name} ({len(pairs)} positions): prunekit "
                          "removes every copy of a channel and cannot match these")
        spread[name] = roots
    blocks, grouped_by, reason = _blocks(reading.blocks, width)
    if reason is not None:
        return None, reason
    reads = _per_channel_reads(reading.reads, width // blocks)
    if isinstance(reads, str):
        return None, reads
    members = sorted(set(reading.members) | {root}, key=lambda n: (n != root, position.get(n, 1 << 30)))
    consumers = sorted(set(reading.wires) - set(reading.norms) - set(members) - set(spread))
    return Group(root, tuple(members), tuple(consumers), tuple(sorted(reading.norms)), width // blocks, reads, blocks,
                 grouped_by, tuple(sorted(spread.items()))), None


def _per_channel_reads(reads: dict, channels: int) -> tuple[tuple[str, int], ...] | str:
    """(layer, input positions per channel of a block) for every consumer and norm, or why the group is frozen: a
    layer must read each position of a block equally often (all of a group's channels, whole parts of a chunk)."""
    out = []
    for name, roots in reads.items():
        count = [0] * channels
        for r in roots.values():
            count[r % channels] += 1
        if len(set(count)) != 1:
            return (f"{name} reads part of its channels, not whole blocks of the same positions: prunekit cannot "
                    "count what it loses")
        out.append((name, count[0]))
    return tuple(out)


def _spread_roots(pairs: set, width: int) -> tuple[int, ...] | None:
    """The root filter of each filter of a spread member, or None unless each of its filters carries one root
    filter and each root filter the same number of them."""
    roots: dict[int, int] = {}
    for p, r in pairs:
        if roots.setdefault(p, r) != r:
            return None
    n = len(roots)
    if sorted(roots) != list(range(n)) or n % width or sorted(roots.values()) != sorted(list(range(width)) * (n // width)):
        return None
    return tuple(roots[p] for p in range(n))


def _blocks(found: list, width: int) -> tuple[int, tuple[str, ...], str | None]:
    """-> (blocks, what imposes them, None) for the layers of ``found`` that split a group of ``width`` filters
    into equal blocks (:attr:`_Reading.blocks`), or (1, (), why the group is frozen)."""
    k = 1
    for what, g, pairs, size in found:
        if size != width or any(p != r for p, r in pairs) or len(pairs) != width:
            return 1, (), (f"{what} reads these channels together with others (a concatenation) or several times: "
                           "pruning cannot keep its groups equal")
        k = math.lcm(k, g)
    if k > 1 and (width % k or width // k < 2):
        whats = list(dict.fromkeys(w for w, *_ in found))
        return 1, (), (f"{', '.join(whats)} split{'s' if len(whats) == 1 else ''} its {width} "
                       f"channels into groups of {width // k if width % k == 0 else 'unequal'} channel(s): pruning "
                       "one position of each would empty them")
    return k, tuple(dict.fromkeys(w for w, *_ in found)), None


def _refusal(node, out: bool, names: dict, opaque: dict) -> str | None:
    """Why a group whose channels reach Torch-Pruning's graph ``node`` (``out``: through its output channels)
    cannot be pruned correctly, or None when it can."""
    kind, module = node.type, node.module
    if node in opaque and opaque[node] == _CHUNK:
        return (f"its channels go through a chunk after {_upstream(node, names)} whose parts are read more than once "
                "or not at all: Torch-Pruning cannot follow them")
    if node in opaque:
        cut = opaque[node] in (OPTYPE.SPLIT, OPTYPE.SLICE, OPTYPE.UNBIND)
        return (f"its channels go through {_OPS[opaque[node]]} after {_upstream(node, names)}" +
                (", whose sizes are written in the model's code: pruning cannot change them" if cut else
                 ", which Torch-Pruning cannot follow"))
    if kind == OPTYPE.OUTPUT:
        return "its channels are the model's outputs"
    if kind in (OPTYPE.CONV, OPTYPE.DEPTHWISE_CONV) and not isinstance(module, nn.Conv2d):
        return f"it feeds {names[module]}, a {type(module).__name__}: prunekit prunes through Conv2d layers only"
    if kind == OPTYPE.DEPTHWISE_CONV and module.in_channels != module.out_channels:
        return (f"{names[module]} has as many groups as filters ({module.groups}) but {module.in_channels} inputs: "
                "Torch-Pruning would remove its inputs as its filters")
    if kind == OPTYPE.LN and len(module.normalized_shape) != 1:
        return (f"its channels go through {names[module]}, a LayerNorm over {tuple(module.normalized_shape)}: "
                "prunekit prunes LayerNorms over the channels only")
    if kind == OPTYPE.PARAMETER and sum(s > 1 for s in module.shape) != 1:
        return (f"its channels scale the parameter {names.get(module)} of shape {tuple(module.shape)}: prunekit "
                "prunes parameters with one dimension of channels only")
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
    convs and their wiring, the self-check's ``probe`` ((PROBE_BATCH, C, H, W)) and the ``conv_bn`` pairs a fold may
    join. Each :meth:`prune` deep-copies the model and its graph
    together (about 4x cheaper than tracing again) and prunes the copy; the pristine copy never changes. One pruning
    at a time (a lock): safe to share between threads.

    >>> pruner = Pruner(model, (3, 32, 32))
    >>> pruned, removed = pruner.prune({"layer1.0.conv1": 0.5}, scores)
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int]):
        self.model = copy.deepcopy(model).eval()
        self.input_size = tuple(input_size)
        self._graph, ops = _graph(self.model, self.input_size)
        self.groups, self.frozen, self._wiring = _groups(self.model, self._graph,
                                                         _forward_order(self.model, self.input_size), ops)
        self.probe = probe_input(self.model, self.input_size)  # the self-check's input (and the fold's)
        self.conv_bn = _conv_bn_pairs(self.model, self._graph)
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
            expected = reference_output(self.model, dropped, self.probe)
            pruned, graph = self._copy()
        for g in self.groups:  # indices refer to the unpruned layer; groups are disjoint
            if g.root in removed:
                _prune_group(graph, pruned, g, removed[g.root])
        check_pruned(self.model, pruned, self.probe, expected, dropped, self.groups, removed)
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


def _conv_bn_pairs(model: nn.Module, graph: tp.DependencyGraph) -> list[tuple[str, str]]:
    """[(conv, BatchNorm2d)] names, in the graph's order, where the BN's only input is the conv's output and the
    conv's output goes to that BN only (each called once): the pairs :func:`prunekit.pruning.fold.fold_bn` may fold."""
    names = {m: n for n, m in model.named_modules()}
    pairs = []
    for node in graph.module2node.values():
        if isinstance(node.module, nn.BatchNorm2d) and len(node.inputs) == 1:
            conv = node.inputs[0]
            if isinstance(conv.module, nn.Conv2d) and [n.module for n in conv.outputs] == [node.module] and \
                    conv.module in names and node.module in names:
                pairs.append((names[conv.module], names[node.module]))
    return pairs


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
