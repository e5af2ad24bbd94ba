"""Prunable conv discovery: which convs a model has, what follows each, where to read its feature map.

>>> layers = conv_layers(build_model("resnet20"))
>>> layers[1]
ConvLayer(name='layer1.0.conv1', out_channels=16, stride=1, receptive_field=5, bn='layer1.0.bn1',
          activation='relu', residual=False, depthwise=False)

The model is traced once with ``torch.fx`` (symbolic tracing: no data, no forward pass) to find the
conv -> BN -> activation chains, the residual adds, and the total stride and receptive field of every conv.

**The feature-map rule** (methods.md): the feature map of filter c is the layer's output after the BN and the
activation that directly follow the conv; when the BN output goes straight into a residual add, it is the BN
output. Activation modules are often *reused* (one ``self.relu`` called several times per block), so prunekit
never hooks them: it hooks the **tap** (the BN, or the conv itself when no BN follows) and applies the
activation functionally with :func:`feature_map`.
"""
from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import UnknownNameError, UserError

__all__ = ["ConvLayer", "ACTIVATIONS", "conv_layers", "select_layers", "feature_map"]

_TRACE_LOCK = threading.Lock()  # torch.fx's patcher is process-global (the dashboard traces from several sessions)

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
class ConvLayer:
    """One prunable conv of a model.

    name: module path of the ``nn.Conv2d``; out_channels: its filters (the scores' length);
    stride: total stride from the input (product of the strides on the way, an int);
    receptive_field: side of its receptive field on the input, in pixels;
    bn: module path of the ``BatchNorm2d`` that directly follows, or None;
    activation: key of :data:`ACTIVATIONS` applied right after (after the BN if any), or None;
    residual: the BN output (conv output if no BN) goes straight into a residual add;
    depthwise: a depthwise conv (groups == in_channels == out_channels > 1): its filters cannot be removed
    alone, they go with the channels of the layer that feeds it.
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

    @property
    def tap(self) -> str:
        """Module path whose output the hooks read: the BN if one follows, else the conv."""
        return self.bn or self.name


def feature_map(layer: ConvLayer, tap_output: torch.Tensor) -> torch.Tensor:
    """The feature map (B, C, H, W) of ``layer`` from its tap output (B, C, H, W): the activation applied
    functionally (a new tensor; the tap output is left untouched), or the tap output itself when no
    activation follows (the conv without BN, or a BN that feeds a residual add)."""
    if layer.activation is None:
        return tap_output
    return ACTIVATIONS[layer.activation](tap_output)


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """Every ``nn.Conv2d`` of ``model`` called once in its forward, in execution order.

    Raises ``ValueError`` when the model cannot be traced symbolically by ``torch.fx`` (data-dependent
    control flow in its forward). Convs called more than once (shared weights) are left out: their filters
    cannot be scored or removed one call at a time.
    """
    try:
        with _TRACE_LOCK:  # fx's patcher is process-global: two threads tracing at once break each other
            graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError... depending on the cause
        raise UserError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); prunekit needs "
            "a model whose forward has no data-dependent control flow"
        ) from None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    geometry = _geometry(graph, modules)
    found = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d) or calls[node.target] != 1:
            continue
        conv: nn.Conv2d = modules[node.target]
        tap, bn = node, None
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], nn.BatchNorm2d):
            if calls[users[0].target] == 1:
                tap, bn = users[0], users[0].target
        tap_users = list(tap.users)
        activation = _activation(tap_users[0], modules) if len(tap_users) == 1 else None
        residual = activation is None and any(_is_add(u) for u in tap_users)
        jump, rf = geometry[node]
        found.append(
            ConvLayer(
                name=node.target,
                module=conv,
                out_channels=conv.out_channels,
                stride=jump,
                receptive_field=rf,
                bn=bn,
                activation=activation,
                residual=residual,
                depthwise=conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels,
            )
        )
    return found


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
