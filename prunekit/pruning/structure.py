"""A model's prunable structure, traced once, and the instant estimate of what a plan costs.

>>> struct = structure(model, (3, 32, 32))          # coupled groups, layer shapes, BNs (one trace, about a second)
>>> estimate(struct, {"layer1.0.conv1": 0.5})        # params, MACs and filters per conv after pruning: arithmetic
>>> estimate(struct, {"layer1.0.conv1": 0.3}, round_to=8)   # kept filters rounded to a multiple of 8

:func:`estimate` computes params, MACs and channels per layer after pruning from layer shapes alone, without
touching the model, exactly equal to what :func:`prunekit.pruning.prune.prune_model` produces (MACs as
``torch.utils.flop_counter`` counts them: convs and linear layers, whose widths pruning changes, each call of a
layer applied more than once (shared weights) counted, plus the other matrix products, attention's, which no
pruning changes). A layer fed by a concatenation (DenseNet) reads several
groups; its other input channels (the image, frozen groups) stay. :func:`signature` names a structure: a plan
made for one structure refuses another.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from prunekit.defaults import ROUND_TO
from prunekit.models.metrics import count_macs, output_shapes
from prunekit.pruning.prune import Group, coupled_groups
from prunekit.pruning.ratios import check_round_to, kept_channels, validate_ratios

__all__ = ["Structure", "Estimate", "structure", "estimate", "filters_lost", "signature"]


@dataclass(frozen=True)
class _Layer:
    """A conv or linear: weight (out, in / groups, kh, kw) or (out, in); ``hw`` output positions per image."""

    name: str
    in_ch: int
    out_ch: int
    kernel: int  # kh * kw (1 for linear)
    groups: int
    hw: int
    bias: bool
    conv: bool


@dataclass(frozen=True)
class Structure:
    """What :func:`estimate` needs of a model: its prunable groups, conv/linear shapes and the BNs."""

    groups: tuple[Group, ...]
    frozen: dict[str, str]
    layers: tuple[_Layer, ...]
    norms: dict[str, tuple[int, int]]  # BN / LayerNorm / GroupNorm / PReLU / per-channel parameter -> (channels,
    # params per channel)
    other_params: int  # parameters outside convs, linears and BNs (never pruned)
    other_macs: int  # MACs outside convs and linears (attention's matrix products; never pruned)
    out_group: dict[str, str] = field(default_factory=dict)  # member conv (or linear) -> group root
    # consumer (conv / linear input) or BN -> ((group root, input positions per channel of that group), ...): every
    # group whose channels it reads (several for a concatenation); its other channels (the image, frozen groups)
    # are never pruned
    reads: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    head: str | None = None  # the linear layer making the logits (the classifier head), when one does


@dataclass(frozen=True)
class Estimate:
    """params / MACs before and after; channels: layer -> (filters before, after) for every conv."""

    params_before: int
    params: int
    macs_before: int
    macs: int
    channels: dict[str, tuple[int, int]]

    @property
    def params_reduction(self) -> float:
        return 1 - self.params / self.params_before

    @property
    def macs_reduction(self) -> float:
        return 1 - self.macs / self.macs_before


def structure(model: nn.Module, input_size: tuple[int, int, int]) -> Structure:
    """Trace ``model`` once (forward passes on a zero image and Torch-Pruning's dependency graph)."""
    groups, frozen = coupled_groups(model, input_size)
    positions, head = _calls(model, input_size)
    layers, norms, counted = [], {}, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name in positions:
            layers.append(_Layer(name, m.in_channels, m.out_channels, m.kernel_size[0] * m.kernel_size[1],
                                 m.groups, positions[name], m.bias is not None, True))
        elif isinstance(m, nn.Linear) and name in positions:
            layers.append(_Layer(name, m.in_features, m.out_features, 1, 1, positions[name], m.bias is not None,
                                 False))
        elif _held(m) is not None:
            norms[name] = _held(m)
        else:
            continue
        counted += sum(p.numel() for p in m.parameters(recurse=False))
    scales = _scales(model, groups)  # per-channel parameters pruned with a group: ConvNeXt's layer scale
    norms.update(scales)
    counted += sum(c * per for c, per in scales.values())
    other = sum(p.numel() for p in model.parameters()) - counted
    layer_macs = sum(x.out_ch * (x.in_ch // x.groups) * x.kernel * x.hw for x in layers)
    out_group = {n: g.root for g in groups for n in (*g.members, *dict(g.spread))}
    reads: dict[str, list[tuple[str, int]]] = {}
    for g in groups:
        for name, per_channel in g.reads:
            reads.setdefault(name, []).append((g.root, per_channel))
    return Structure(tuple(groups), frozen, tuple(layers), norms, other, count_macs(model, input_size) - layer_macs,
                     out_group, {k: tuple(v) for k, v in reads.items()}, head)


def _calls(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[dict[str, int], str | None]:
    """({conv / linear that runs: its output positions per image (conv H * W, linear tokens), summed over every
    call}, the classifier head: the last linear called whose outputs are the model's logits, or None). A layer
    applied twice in one forward (its weights shared) costs its MACs twice, as flop_counter counts them."""
    positions: dict[str, int] = {}
    linears: list[tuple[str, int]] = []  # (name, outputs) of each linear call, in order
    logits: list[int] = []

    def record(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:  # returns None: output unchanged
            per_image = output.shape[2:] if isinstance(module, nn.Conv2d) else output.shape[1:-1]
            positions[name] = positions.get(name, 0) + math.prod(per_image)
            if isinstance(module, nn.Linear):
                linears.append((name, module.out_features))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles.append(model.register_forward_hook(
        lambda module, inputs, output: logits.append(output.shape[-1]) if isinstance(output, torch.Tensor) else None))
    try:
        output_shapes(model, input_size)  # its forward of a (1, *input_size) zero image calls the hooks too
    finally:
        for h in handles:
            h.remove()
    head = next((name for name, outputs in reversed(linears) if logits and outputs == logits[0]), None)
    return positions, head


def _held(m: nn.Module) -> tuple[int, int] | None:
    """(channels, parameters per channel) of a norm or PReLU holding parameters per channel (BatchNorm,
    InstanceNorm, LayerNorm over one dim, GroupNorm, PReLU of one slope per channel), else None."""
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        channels = m.num_features
    elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
        channels = m.normalized_shape[0]
    elif isinstance(m, nn.GroupNorm):
        channels = m.num_channels
    elif isinstance(m, nn.PReLU) and m.num_parameters > 1:
        channels = m.num_parameters
    else:
        return None
    per = sum(p.numel() for p in m.parameters(recurse=False)) // channels
    return (channels, per) if per else None


def _scales(model: nn.Module, groups: list[Group]) -> dict[str, tuple[int, int]]:
    """{parameter a group prunes along its one dim of channels (ConvNeXt's layer scale): (channels, 1)}."""
    params = dict(model.named_parameters())
    return {n: (params[n].numel(), 1) for g in groups for n in g.norms if n in params}


def filters_lost(struct: Structure) -> dict[str, int]:
    """{member conv or linear: the filters it loses per channel its group's ratio removes}: one per block of a
    grouped group (:attr:`prunekit.pruning.prune.Group.blocks`), each copy of a spread member's (GhostNet)."""
    out = {m: g.blocks for g in struct.groups for m in g.members}
    out.update((m, len(roots) // g.channels) for g in struct.groups for m, roots in g.spread)
    return out


def estimate(struct: Structure, ratios: dict[str, float], round_to: int = ROUND_TO) -> Estimate:
    """Params, MACs and filters per conv after pruning ``ratios`` ({group root: ratio}), kept counts rounded to a
    multiple of ``round_to`` (:func:`prunekit.pruning.ratios.kept_channels`); ValueError for a ratio that
    :func:`prunekit.pruning.ratios.validate_ratios` refuses or a bad round_to."""
    validate_ratios(ratios, list(struct.groups), struct.frozen)
    round_to = check_round_to(round_to)
    gone = {g.root: g.channels - kept_channels(g.channels, ratios.get(g.root, 0.0), round_to) for g in struct.groups}
    per_gone = filters_lost(struct)
    params0 = params = macs0 = macs = 0
    channels = {}
    for layer in struct.layers:
        out_ch = layer.out_ch - per_gone[layer.name] * gone[struct.out_group[layer.name]] \
            if layer.name in struct.out_group else layer.out_ch
        if layer.groups > 1 and layer.groups == layer.in_ch == layer.out_ch:  # depthwise: follows its filters
            in_ch, groups = out_ch, out_ch
        else:
            in_ch = layer.in_ch - sum(per * gone[root] for root, per in struct.reads.get(layer.name, ()))
            groups = layer.groups
        for (i, o, g), acc in (((layer.in_ch, layer.out_ch, layer.groups), 0), ((in_ch, out_ch, groups), 1)):
            w = o * (i // g) * layer.kernel
            p, mac = w + (o if layer.bias else 0), w * layer.hw
            if acc:
                params, macs = params + p, macs + mac
            else:
                params0, macs0 = params0 + p, macs0 + mac
        if layer.conv:
            channels[layer.name] = (layer.out_ch, out_ch)
    for name, (c, per_channel) in struct.norms.items():
        params0 += per_channel * c
        params += per_channel * (c - sum(per * gone[root] for root, per in struct.reads.get(name, ())))
    return Estimate(params0 + struct.other_params, params + struct.other_params, macs0 + struct.other_macs,
                    macs + struct.other_macs, channels)


def signature(struct: Structure) -> str:
    """A short hex digest of a model's prunable structure (groups, their members and widths, layer shapes):
    two models share it exactly when a plan of one fits the other."""
    desc = [[g.root, list(g.members), g.channels] + ([g.blocks] if g.blocks > 1 else []) for g in struct.groups]
    desc += [[x.name, x.in_ch, x.out_ch, x.kernel, x.groups] for x in struct.layers]
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]
