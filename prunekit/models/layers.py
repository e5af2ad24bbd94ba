"""Prunable conv discovery: which convs a model has, what follows each, where to read its feature map.

>>> layers = conv_layers(build_model("resnet20"))
>>> layers[1]
ConvLayer(name='layer1.0.conv1', out_channels=16, stride=1, receptive_field=5, bn='layer1.0.bn1',
          activation='relu', residual=False, depthwise=False, post_add=None)
>>> layers[2].post_add          # layer1.0.conv2 feeds the block's residual add
Site(module='layer1.0.relu', call=1, read='output', activation=None)

The model is traced once with ``torch.fx`` (symbolic tracing: no data, no forward pass) to find the
conv -> BN -> activation chains, the residual adds, and the total stride and receptive field of every conv.

**The feature-map rule** (methods.md): the feature map of filter c is the layer's output after the BN and the
activation that directly follow the conv. For a conv whose BN output goes straight into a residual add there
are two maps, and each criterion says which it reads (:data:`READS`, the criterion's ``reads``):

- ``"pre_add"``: the BN output itself (the conv's own contribution, before the add);
- ``"post_add"``: the output of the activation that follows the add (``relu2`` in the HRank/CHIP CIFAR
  ResNets), or the add's output when no activation follows it (MobileNetV2's linear bottlenecks). This is
  what HRank's and CHIP's published code reads. For every other conv the two maps are the same.

Where each map is read is a :class:`Site`: the output (or the first input) of one *call* of one module.
Activation modules are often *reused* (one ``self.relu`` called twice per block, in prunekit's CIFAR ResNet and
in torchvision's ResNets, three times in a torchvision Bottleneck), so a site names the call by its index in
execution order, counted from the start of each forward (:mod:`prunekit.criteria.hooks`). The pre-add map is read at the
**tap** (the BN, or the conv itself when no BN follows: always a module called once) with the activation applied
functionally (:func:`feature_map`). The post-add map is read at the output of the activation module that follows
the add; when that activation is functional (``F.relu``) or absent, at the input of the first module call that
consumes the value (the next block's conv). A residual conv whose post-add value reaches no module (e.g. only
functions up to the model's output) has ``post_add=None`` and is read at its tap under both rules.
"""
from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import UnknownNameError, UserError

__all__ = ["ConvLayer", "Site", "ACTIVATIONS", "READS", "conv_layers", "select_layers", "feature_map"]

READS = ("pre_add", "post_add")
"""Which map of a conv feeding a residual add a criterion reads (see the module docstring)."""

class TraceGate:
    """Keeps torch.fx's traces apart from forward passes in other threads (the dashboard serves several visitors).

    fx's tracer replaces ``nn.Module.__call__`` for the whole process while it traces: a forward pass in another
    thread meanwhile is recorded into the trace or breaks it (a visitor got "Unexpected key layer2.0@1", another
    "cannot trace"). ``with gate:`` marks forward passes: any number run together, re-entrant in a thread; ``with
    gate.tracing():`` waits for the forwards running, holds new ones off (a waiting trace goes first) and traces
    alone (a thread inside a forward region steps out of it while it waits and traces)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._forwards = 0  # threads inside a forward region
        self._tracing = False
        self._traces_waiting = 0
        self._local = threading.local()

    def __enter__(self) -> TraceGate:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                self._cond.wait_for(lambda: not self._tracing and not self._traces_waiting)
                self._forwards += 1
        self._local.depth = depth + 1
        return self

    def __exit__(self, *exc) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            with self._cond:
                self._forwards -= 1
                self._cond.notify_all()

    @contextmanager
    def tracing(self) -> Iterator[None]:
        """Trace alone: no forward pass of another thread runs meanwhile."""
        inside = 1 if getattr(self._local, "depth", 0) else 0  # this thread is in a forward region: step out
        with self._cond:
            self._forwards -= inside
            self._traces_waiting += 1
            self._cond.wait_for(lambda: not self._tracing and self._forwards == 0)
            self._traces_waiting -= 1
            self._tracing = True
        try:
            yield
        finally:
            with self._cond:
                self._tracing = False
                self._forwards += inside
                self._cond.notify_all()


TRACE_LOCK = TraceGate()
"""The process's :class:`TraceGate`: ``with TRACE_LOCK:`` around forward passes that may run beside a trace (the
evaluations, recalibrations, scoring passes and pruning checks take it themselves), ``TRACE_LOCK.tracing()`` around
an fx trace."""

# Element-wise activations prunekit applies functionally (never in place) on the tap output.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "gelu": F.gelu,
    "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}

_ACTIVATION_MODULES: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.ReLU6, "relu6"),  # before ReLU-like bases: ReLU6 subclasses Hardtanh
    (nn.ReLU, "relu"),
    (nn.SiLU, "silu"),
    (nn.Hardswish, "hardswish"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
)
_ACTIVATION_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu", F.hardswish: "hardswish",
    torch.sigmoid: "sigmoid", torch.tanh: "tanh",
}
_ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d}
_ADD_METHODS = {"add", "add_", "index_add", "index_add_"}


@dataclass(frozen=True)
class Site:
    """Where a feature map (B, C, H, W) is read during a forward: the output (``read="output"``) or the first
    input (``read="input"``) of call number ``call`` (0-based, in execution order within one forward) of the
    module at path ``module``; then ``activation`` (a key of :data:`ACTIVATIONS`, or None) applied
    functionally."""

    module: str
    call: int = 0
    read: str = "output"
    activation: str | None = None


@dataclass(frozen=True)
class ConvLayer:
    """One prunable conv of a model.

    name: module path of the ``nn.Conv2d``; out_channels: its filters (the scores' length);
    stride: total stride from the input (product of the strides on the way, an int);
    receptive_field: side of its receptive field on the input, in pixels;
    bn: module path of the ``BatchNorm2d`` that directly follows, or None;
    activation: key of :data:`ACTIVATIONS` applied right after (after the BN if any), or None;
    residual: the BN output (conv output if no BN) goes straight into a residual add;
    depthwise: a depthwise conv (groups == in_channels == out_channels > 1): its filters cannot be removed
    alone, they go with the channels of the layer that feeds it;
    post_add: for a residual conv, the :class:`Site` of its post-add map (after the add and the activation
    that follows it); None for the others, and for a residual conv whose post-add value reaches no module.
    """

    name: str
    module: nn.Conv2d = field(repr=False, compare=False)
    out_channels: int
    stride: int
    receptive_field: int
    bn: str | None
    activation: str | None
    residual: bool
    depthwise: bool
    post_add: Site | None = None

    @property
    def tap(self) -> str:
        """Module path whose output the hooks read: the BN if one follows, else the conv."""
        return self.bn or self.name

    def site(self, reads: str = "pre_add") -> Site:
        """Where this layer's feature map is read under ``reads`` (one of :data:`READS`): the tap with the
        activation applied, or for ``"post_add"`` the post-add site when the layer has one."""
        if reads not in READS:
            raise UserError(f"reads must be one of {', '.join(map(repr, READS))}, got {reads!r}")
        if reads == "post_add" and self.post_add is not None:
            return self.post_add
        return Site(self.tap, 0, "output", self.activation)


def feature_map(site: Site, value: torch.Tensor) -> torch.Tensor:
    """The feature map (B, C, H, W) from the tensor (B, C, H, W) read at ``site``: the site's activation
    applied functionally (a new tensor; ``value`` is left untouched), or ``value`` itself when the site has
    none (a conv without BN or activation, a BN that feeds a residual add, a post-add site)."""
    if site.activation is None:
        return value
    return ACTIVATIONS[site.activation](value)


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """Every ``nn.Conv2d`` of ``model`` called once in its forward, in execution order.

    Raises ``ValueError`` when the model cannot be traced symbolically by ``torch.fx`` (data-dependent
    control flow in its forward). Convs called more than once (shared weights) are left out: their filters
    cannot be scored or removed one call at a time.
    """
    graph = _trace(model)
    modules = dict(model.named_modules())
    call_of: dict[fx.Node, int] = {}  # each call_module node -> its call index among the calls of its module
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            call_of[node] = calls.get(node.target, 0)
            calls[node.target] = call_of[node] + 1
    geometry = _geometry(graph, modules)
    return [
        _conv_layer(node, modules, calls, call_of, geometry[node])
        for node in graph.nodes
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d) and calls[node.target] == 1
    ]


def _trace(model: nn.Module) -> fx.Graph:
    try:
        with TRACE_LOCK.tracing():  # fx's patcher is process-global: nothing else may run a forward meanwhile
            return fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError... depending on the cause
        raise UserError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); prunekit needs "
            "a model whose forward has no data-dependent control flow"
        ) from None


def _conv_layer(
    node: fx.Node, modules: dict[str, nn.Module], calls: dict[str, int], call_of: dict[fx.Node, int],
    geometry: tuple[int, int],
) -> ConvLayer:
    """The :class:`ConvLayer` of one conv call node: its BN, activation, residual add and post-add site."""
    conv: nn.Conv2d = modules[node.target]
    tap, bn = node, None
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], nn.BatchNorm2d):
        if calls[users[0].target] == 1:
            tap, bn = users[0], users[0].target
    tap_users = list(tap.users)
    activation = _activation(tap_users[0], modules) if len(tap_users) == 1 else None
    add = next((u for u in tap_users if _is_add(u)), None) if activation is None else None
    return ConvLayer(
        name=node.target,
        module=conv,
        out_channels=conv.out_channels,
        stride=geometry[0],
        receptive_field=geometry[1],
        bn=bn,
        activation=activation,
        residual=add is not None,
        depthwise=conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels,
        post_add=None if add is None else _post_add_site(add, modules, call_of),
    )


def _post_add_site(add: fx.Node, modules: dict[str, nn.Module], call_of: dict[fx.Node, int]) -> Site | None:
    """Where the value after a residual ``add`` is read: the add's only user when that is an activation, else
    the add itself; read at its output when it is a module call, else at the first input of the first module
    call that takes it as its first argument; None when no module call does."""
    users = list(add.users)
    value = users[0] if len(users) == 1 and _activation(users[0], modules) is not None else add
    if value.op == "call_module":
        return Site(value.target, call_of[value], "output")
    for user in value.users:  # in graph (execution) order
        if user.op == "call_module" and user.args and user.args[0] is value:
            return Site(user.target, call_of[user], "input")
    return None


def select_layers(model: nn.Module, layers: Iterable[ConvLayer | str] | None = None) -> list[ConvLayer]:
    """Resolve ``layers`` (None = every conv; else ConvLayers or conv names) against ``model``.
    An unknown name raises ``KeyError`` listing the model's conv names."""
    every = conv_layers(model)
    if layers is None:
        return every
    by_name = {layer.name: layer for layer in every}
    out = []
    for item in layers:
        name = item.name if isinstance(item, ConvLayer) else item
        if name not in by_name:
            raise UnknownNameError(f"{name!r} is not a prunable conv of this model; its convs: {', '.join(by_name)}")
        out.append(by_name[name])
    if not out:
        raise UserError("layers is empty: pass None for every conv, or at least one conv name")
    return out


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.GELU):
            return "gelu" if module.approximate == "none" else None
        for cls, key in _ACTIVATION_MODULES:
            if isinstance(module, cls):
                return key
    if node.op == "call_function":
        return _ACTIVATION_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _ACTIVATION_METHODS.get(node.target)
    return None


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )


def _geometry(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[fx.Node, tuple[int, int]]:
    """(total stride, receptive field) of every tensor node, propagated from the input (1, 1).

    A conv or pool (module or functional) with kernel k, stride s, dilation d maps (j, r) to
    (j * s, r + d * (k - 1) * j); a slice
    with step t on the spatial dims multiplies j by t; any other op (add, index_add, activation...) takes
    the largest (j, r) of its tensor inputs.
    """
    geo: dict[fx.Node, tuple[int, int]] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            geo[node] = (1, 1)
            continue
        inputs = [geo[a] for a in node.all_input_nodes if a in geo]
        if not inputs:
            continue
        jump, rf = max(j for j, _ in inputs), max(r for _, r in inputs)
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, d = (_first(getattr(module, a, 1)) for a in ("kernel_size", "stride", "dilation"))
            rf, jump = rf + d * (k - 1) * jump, jump * s
        elif node.op == "call_function" and node.target in _POOL_FUNCTIONS:
            k, s, d = _pool_args(node)
            rf, jump = rf + d * (k - 1) * jump, jump * s
        elif node.op == "call_function" and node.target is operator.getitem:
            jump *= _slice_step(node.args[1])
        geo[node] = (jump, rf)
    return geo


def _pool_args(node: fx.Node) -> tuple[int, int, int]:
    """(kernel, stride, dilation) of an ``F.max_pool2d`` / ``F.avg_pool2d`` call (stride defaults to kernel)."""
    names = ("input", "kernel_size", "stride", "padding", "dilation")
    args = {**dict(zip(names, node.args)), **node.kwargs}
    k = _first(args["kernel_size"])
    stride = args.get("stride")
    s = _first(stride) if stride else k  # None (or an empty list) means the kernel size
    d = _first(args.get("dilation", 1)) if node.target is F.max_pool2d else 1
    return k, s, d


def _first(value) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def _slice_step(index) -> int:
    """Step of a spatial slice ``x[:, :, ::t, ::t]`` (1 for anything else)."""
    if not isinstance(index, tuple) or len(index) < 3:
        return 1
    last = index[-1]
    return int(last.step) if isinstance(last, slice) and isinstance(last.step, int) else 1
