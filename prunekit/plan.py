"""Pruning plans, their presets and their instant estimate.

>>> struct = structure(model, (3, 32, 32))
>>> plan = global_threshold(struct, "resnet20", scores_df, target=0.5, by="flops")   # half the FLOPs
>>> estimate(struct, plan.ratios).macs_reduction                                      # >= 0.5
>>> Plan.load("plan.json").check(struct)                                              # ValueError if it does not fit

Presets (each returns a :class:`Plan`): :func:`uniform`, :func:`global_threshold`, :func:`afie_plan`,
:func:`sensitivity_plan`, :func:`vgg16_published`. A target is the fraction of FLOPs or of parameters to remove;
it is met by bisection on the preset's one free number, each step one :func:`estimate`.

A plan maps coupled groups (named by their root conv, see :mod:`prunekit.prune`) to ratios in [0, 0.95].
:func:`estimate` computes params, MACs and channels per layer after pruning from layer shapes alone, without
touching the model: one :class:`Structure` is traced per model (about a second), then each estimate is pure
arithmetic, exactly equal to what :func:`prunekit.prune.prune_model` produces (conv and linear MACs, as
``torch.utils.flop_counter`` counts them).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .criteria.afie import afie_entropy, allocate_ratios
from .metrics import output_shapes
from .models import VGG16_CFG
from .prune import Group, coupled_groups, kept_channels, validate_ratios
from .scores import to_tensors

__all__ = ["Structure", "Estimate", "structure", "estimate", "Plan", "signature", "group_scores", "uniform",
           "global_threshold", "removed_filters", "afie_plan", "sensitivity_plan", "vgg16_published", "MAX_RATIO",
           "PRESETS", "max_ratio"]

PRESETS = ("uniform", "threshold", "afie", "sensitivity", "vgg16_published")


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
    norms: dict[str, int]  # BN name -> channels (affine: 2 params each)
    other_params: int  # parameters outside convs, linears and BNs (never pruned)
    out_group: dict[str, str] = field(default_factory=dict)  # member conv / BN -> group root
    in_group: dict[str, str] = field(default_factory=dict)  # consumer -> group root


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
    """Trace ``model`` once (a forward pass on a zero image and Torch-Pruning's dependency graph)."""
    groups, frozen = coupled_groups(model, input_size)
    hw = {n: shape[1] * shape[2] if len(shape) == 3 else 1 for n, shape in output_shapes(model, input_size).items()}
    layers, norms, counted = [], {}, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name in hw:
            layers.append(_Layer(name, m.in_channels, m.out_channels, m.kernel_size[0] * m.kernel_size[1],
                                 m.groups, hw[name], m.bias is not None, True))
        elif isinstance(m, nn.Linear) and name in hw:
            layers.append(_Layer(name, m.in_features, m.out_features, 1, 1, 1, m.bias is not None, False))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            norms[name] = m.num_features
        else:
            continue
        counted += sum(p.numel() for p in m.parameters(recurse=False))
    other = sum(p.numel() for p in model.parameters()) - counted
    out_group = {n: g.root for g in groups for n in (*g.members, *g.norms)}
    in_group = {n: g.root for g in groups for n in g.consumers}
    return Structure(tuple(groups), frozen, tuple(layers), norms, other, out_group, in_group)


def estimate(struct: Structure, ratios: dict[str, float]) -> Estimate:
    """Params, MACs and filters per conv after pruning ``ratios`` ({group root: ratio}); ValueError for a
    ratio that :func:`prunekit.prune.validate_ratios` refuses."""
    validate_ratios(ratios, list(struct.groups))
    size = {g.root: g.channels for g in struct.groups}
    kept = {g.root: kept_channels(g.channels, ratios.get(g.root, 0.0)) for g in struct.groups}
    params0 = params = macs0 = macs = 0
    channels = {}
    for layer in struct.layers:
        out_ch = kept[struct.out_group[layer.name]] if layer.name in struct.out_group else layer.out_ch
        if layer.groups > 1 and layer.groups == layer.in_ch == layer.out_ch:  # depthwise: follows its filters
            in_ch, groups = out_ch, out_ch
        else:
            root = struct.in_group.get(layer.name)
            in_ch = layer.in_ch if root is None else kept[root] * (layer.in_ch // size[root])
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
    for name, c in struct.norms.items():
        params0 += 2 * c
        params += 2 * (kept[struct.out_group[name]] if name in struct.out_group else c)
    return Estimate(params0 + struct.other_params, params + struct.other_params, macs0, macs, channels)


# ----------------------------------------------------------------------------------------------
# Plans: per-group ratios, the criterion that picks the filters, exclusions; JSON; presets.

MAX_RATIO = 0.95
BY = ("flops", "params")
PLAN_FORMAT = "prunekit-plan/1"


def signature(struct: Structure) -> str:
    """A short hex digest of a model's prunable structure (groups, their members and widths, layer shapes):
    two models share it exactly when a plan of one fits the other."""
    desc = [[g.root, list(g.members), g.channels] for g in struct.groups]
    desc += [[x.name, x.in_ch, x.out_ch, x.kernel, x.groups] for x in struct.layers]
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """What to prune: ``ratios`` {group root: ratio in [0, 0.95]} (see :func:`prunekit.prune.coupled_groups`;
    groups not named keep every filter), the criterion (registered name and parameters) whose scores pick the
    filters inside each group, the convs the user ``excluded`` (their whole group keeps its filters), the
    model's ``arch`` and structure ``signature`` (a plan refuses another model), and how it was made
    (``preset``: its name and arguments)."""

    arch: str
    ratios: dict[str, float]
    criterion: str = "l1"
    criterion_params: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    signature: str = ""
    preset: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"a plan needs the model's architecture name, got {self.arch!r}")
        for layer, r in self.ratios.items():
            if isinstance(r, bool) or not isinstance(r, (int, float)) or math.isnan(r) or not 0 <= r <= MAX_RATIO:
                raise ValueError(f"ratio of {layer!r} must be a number in [0, {MAX_RATIO}], got {r!r}")
        self.ratios = {k: float(v) for k, v in self.ratios.items()}
        self.excluded = list(self.excluded)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a prunekit plan: expected a JSON object with format {PLAN_FORMAT!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"a plan must be JSON: {exc}") from None

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"plan file {path} not found")
        return cls.from_json(path.read_text())

    def check(self, struct: Structure) -> None:
        """ValueError when the plan does not fit the model of ``struct``: another structure (another model or
        an already pruned one), an unknown or non-root layer, a ratio that removes a whole group, an excluded
        layer that is not a conv or whose group has a ratio."""
        if self.signature and self.signature != signature(struct):
            roots = ", ".join(f"{g.root}({g.channels})" for g in struct.groups[:4])
            raise ValueError(f"this plan was made for another model ({self.arch}, structure {self.signature}); "
                             f"the model given has structure {signature(struct)} (groups {roots}, ...): make a "
                             "plan for this model")
        validate_ratios(self.ratios, list(struct.groups))
        for root in _excluded_roots(struct, self.excluded):
            if self.ratios.get(root, 0.0) > 0:
                raise ValueError(f"group {root!r} holds an excluded layer but has ratio {self.ratios[root]}")

    def unprunable(self, struct: Structure) -> dict[str, str]:
        """{layer: why its filters stay}: convs whose channels are the model's outputs, the user's exclusions
        and the layers coupled with them, and the linear layers (prunekit removes conv filters only)."""
        out = dict(struct.frozen)
        by_root = {g.root: g for g in struct.groups}
        excluded = set(self.excluded)
        for root in _excluded_roots(struct, self.excluded):
            for m in by_root[root].members:
                out[m] = "excluded by the user" if m in excluded else \
                    f"coupled with the excluded {sorted(excluded & set(by_root[root].members))[0]!r}"
        for x in struct.layers:
            if not x.conv:
                out[x.name] = "linear layer (classifier head): only conv filters are pruned; its inputs shrink " \
                              "with the convs before it"
        return out


def _excluded_roots(struct: Structure, exclude) -> set[str]:
    member_of = {m: g.root for g in struct.groups for m in g.members}
    convs = {x.name for x in struct.layers if x.conv}
    roots = set()
    for name in exclude:
        if name not in convs:
            raise ValueError(f"cannot exclude {name!r}: not a conv of this model")
        if name in member_of:
            roots.add(member_of[name])
    return roots


def _max_remove(channels: int) -> int:
    """The most filters a plan may remove from a group of ``channels``: ratio <= 0.95, at least one kept."""
    return channels - max(1, kept_channels(channels, MAX_RATIO))


def _ratio_removing(channels: int, n: int) -> float:
    """The ratio (<= 0.95) that removes exactly ``n`` of ``channels`` filters, n/c where floats allow."""
    r = n / channels
    if channels - kept_channels(channels, r) != n:
        r = (n - 0.5) / channels  # inside the interval ((n-1)/c, n/c] that kept_channels maps to c - n
    return min(r, MAX_RATIO)


def _cap(channels: int) -> float:
    return _ratio_removing(channels, _max_remove(channels))


def max_ratio(channels: int) -> float:
    """The largest ratio a plan may give a group of ``channels`` filters (at most 0.95, one filter kept):
    16 -> 0.9375 (15 removed), 64 -> 0.95 (61 removed)."""
    return _cap(channels)


def _reduction(struct: Structure, ratios: dict[str, float], by: str) -> float:
    est = estimate(struct, ratios)
    return est.macs_reduction if by == "flops" else est.params_reduction


def _solve(struct: Structure, shape: Callable[[float], dict[str, float]], target: float, by: str,
           hi: float = 1.0) -> dict[str, float]:
    """Ratios ``shape(t)`` for the smallest t in (0, hi] whose estimated reduction of ``by`` (FLOPs or params)
    reaches ``target``, by bisection (``shape`` must prune more as t grows)."""
    if by not in BY:
        raise ValueError(f"by must be one of {BY}, got {by!r}")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ValueError(f"target must be a fraction of {by} to remove, in (0, 1), got {target!r}")
    best = _reduction(struct, shape(hi), by)
    if best < target:
        raise ValueError(f"this preset removes at most {best:.1%} of the {by} (ratios capped at {MAX_RATIO}, "
                         f"exclusions kept); the target {target:.1%} is out of reach")
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _reduction(struct, shape(mid), by) < target else (lo, mid)
    return shape(hi)


def _make(struct: Structure, arch: str, ratios: dict[str, float], exclude, criterion: str,
          criterion_params: dict | None, preset: dict[str, Any]) -> Plan:
    plan = Plan(arch, {k: v for k, v in ratios.items() if v > 0}, criterion, dict(criterion_params or {}),
                list(exclude), signature(struct), preset)
    plan.check(struct)
    return plan


def _one_of(ratio, target) -> None:
    if (ratio is None) == (target is None):
        raise ValueError("give either a ratio (threshold) or a target (fraction of FLOPs or params), not both")


def uniform(struct: Structure, arch: str, ratio: float | None = None, *, target: float | None = None,
            by: str = "flops", exclude=(), criterion: str = "l1", criterion_params: dict | None = None) -> Plan:
    """One ratio for every group (capped so that each keeps a filter), given or solved for ``target``, the
    fraction of ``by`` ("flops" or "params") to remove."""
    _one_of(ratio, target)
    skip = _excluded_roots(struct, exclude)
    groups = [g for g in struct.groups if g.root not in skip]

    def shape(t: float) -> dict[str, float]:
        return {g.root: min(t, _cap(g.channels)) for g in groups}

    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= MAX_RATIO:
            raise ValueError(f"ratio must be a number in [0, {MAX_RATIO}], got {ratio!r}")
        ratios = shape(ratio)
    else:
        ratios = _solve(struct, shape, target, by, MAX_RATIO)
    return _make(struct, arch, ratios, exclude, criterion, criterion_params,
                 {"name": "uniform", "ratio": ratio, "target": target, "by": by})


def group_scores(struct: Structure, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{group root: (channels,)} each member's scores min-max normalised to [0, 1] within the layer and
    averaged over the members that have scores (the combination :func:`prunekit.prune.prune_model` ranks by;
    a constant layer counts as zeros). Groups without any scored member are left out."""
    out = {}
    for g in struct.groups:
        parts = []
        for m in g.members:
            if m in scores:
                s = torch.as_tensor(scores[m]).detach().double().cpu()
                parts.append((s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else torch.zeros_like(s))
        if parts:
            out[g.root] = torch.stack(parts).mean(0)
    return out


def removed_filters(struct: Structure, ratios: dict[str, float],
                    scores: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """{conv: filter indices that pruning by ``ratios`` removes} for every member of every group with a ratio:
    the lowest :func:`group_scores` of the group (ties to the lower index), exactly the filters
    :func:`prunekit.prune.prune_model` removes, without pruning (for previews)."""
    combined = group_scores(struct, scores)
    out: dict[str, list[int]] = {}
    for g in struct.groups:
        n = g.channels - kept_channels(g.channels, ratios.get(g.root, 0.0))
        if n <= 0 or g.root not in combined:
            continue
        idxs = sorted(torch.argsort(combined[g.root].float(), stable=True)[:n].tolist())
        out.update({m: idxs for m in g.members})
    return out


def global_threshold(struct: Structure, arch: str, scores, threshold: float | None = None, *,
                     target: float | None = None, by: str = "flops", exclude=(), criterion: str | None = None,
                     criterion_params: dict | None = None) -> Plan:
    """Remove, in every group, the filters whose normalised score (:func:`group_scores`) is below one global
    ``threshold`` in [0, 1], or the threshold solved for ``target`` (fraction of ``by`` to remove). Each
    group keeps at least one filter and 5%. ``scores``: {conv: (out_channels,)} or a
    :func:`prunekit.score` DataFrame (its criterion and parameters go into the plan)."""
    _one_of(threshold, target)
    if isinstance(scores, pd.DataFrame):
        criterion = criterion or scores.attrs.get("criterion") or scores["criterion"].iloc[0]
        criterion_params = criterion_params or scores.attrs.get("params", {})
        scores = to_tensors(scores)
    if criterion is None:
        raise ValueError("name the criterion the scores come from (criterion=...)")
    skip = _excluded_roots(struct, exclude)
    combined = {r: s for r, s in group_scores(struct, scores).items() if r not in skip}
    if not combined:
        raise ValueError("the scores name none of the model's prunable convs")
    channels = {g.root: g.channels for g in struct.groups}

    def shape(t: float) -> dict[str, float]:
        return {r: _ratio_removing(channels[r], min(int((s < t).sum()), _max_remove(channels[r])))
                for r, s in combined.items()}

    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1] (scores are min-max normalised), got {threshold!r}")
        ratios = shape(threshold)
    else:
        ratios = _solve(struct, shape, target, by, 1.0 + 1e-9)
    return _make(struct, arch, ratios, exclude, criterion, criterion_params,
                 {"name": "threshold", "threshold": threshold, "target": target, "by": by})


def afie_plan(model: nn.Module, struct: Structure, arch: str, *, target: float, by: str = "flops", exclude=(),
              criterion: str = "l1", criterion_params: dict | None = None) -> Plan:
    """AFIE allocation (:func:`prunekit.criteria.afie.allocate_ratios`; methods.md): ratio_g proportional to
    AFIE_max / AFIE_g, capped at 0.95, scaled so that the estimate removes ``target`` of ``by``. A coupled
    group's AFIE is the mean of its members' (K_l / C_out of each conv's weight). Filters inside a group are
    picked by ``criterion`` (AFIE's default: L1)."""
    skip = _excluded_roots(struct, exclude)
    groups = [g for g in struct.groups if g.root not in skip]
    score = {g.root: sum(afie_entropy(model.get_submodule(m).weight) / g.channels for m in g.members)
             / len(g.members) for g in groups}
    filters = {g.root: float(g.channels * len(g.members)) for g in groups}
    channels = {g.root: g.channels for g in groups}

    def shape(t: float) -> dict[str, float]:
        alloc = allocate_ratios(score, t, filters, MAX_RATIO)
        return {r: min(v, _cap(channels[r])) for r, v in alloc.items()}

    ratios = _solve(struct, shape, target, by, MAX_RATIO)
    return _make(struct, arch, ratios, exclude, criterion, criterion_params,
                 {"name": "afie", "target": target, "by": by, "afie": score})


def sensitivity_plan(struct: Structure, arch: str, table: pd.DataFrame, *, target: float, by: str = "flops",
                     metric: str = "accuracy", exclude=(), criterion: str = "l1",
                     criterion_params: dict | None = None) -> Plan:
    """Sensitivity-guided: one tolerated damage d for every group (a drop of ``metric`` "accuracy", or a rise
    of "loss", from the unpruned model); each group takes the largest ratio whose piecewise-linear sensitivity
    curve (:func:`prunekit.sensitivity.sensitivity`, rows at ratio 0 = unpruned) stays within d; d is solved
    so that the estimate removes ``target`` of ``by``. The least sensitive groups are pruned most."""
    if metric not in ("accuracy", "loss"):
        raise ValueError(f"metric must be 'accuracy' or 'loss', got {metric!r}")
    skip = _excluded_roots(struct, exclude)
    channels = {g.root: g.channels for g in struct.groups}
    curves = {}
    for root, rows in table.groupby("group", sort=False):
        if root not in channels:
            raise ValueError(f"the sensitivity table names {root!r}, not a prunable group of this model")
        if root in skip:
            continue
        rows = rows.sort_values("ratio")
        if rows["ratio"].iloc[0] != 0:
            raise ValueError(f"the sensitivity table has no unpruned row (ratio 0) for {root!r}")
        v = rows[metric].to_numpy(float)
        damage = (v[0] - v) if metric == "accuracy" else (v - v[0])
        curves[root] = (rows["ratio"].to_numpy(float), damage)
    if not curves:
        raise ValueError("the sensitivity table covers no prunable group of this model")
    worst = max(max(float(d.max()), 0.0) for _, d in curves.values()) or 1.0

    def reach(r: np.ndarray, d: np.ndarray, tol: float) -> float:
        for i in range(1, len(r)):
            if d[i] > tol:
                return r[i - 1] + (tol - d[i - 1]) / (d[i] - d[i - 1]) * (r[i] - r[i - 1]) if d[i - 1] <= tol \
                    else r[i - 1]
        return r[-1]

    def shape(t: float) -> dict[str, float]:
        return {root: min(reach(r, d, t * worst), _cap(channels[root])) for root, (r, d) in curves.items()}

    ratios = _solve(struct, shape, target, by, 1.0)
    return _make(struct, arch, ratios, exclude, criterion, criterion_params,
                 {"name": "sensitivity", "target": target, "by": by, "metric": metric})


VGG16_PUBLISHED = [0.3] * 7 + [0.75] * 5 + [0.0]


def vgg16_published(struct: Structure, arch: str = "vgg16_bn", *, criterion: str = "l1",
                    criterion_params: dict | None = None) -> Plan:
    """SFM's VGG-16 budget (methods.md): ratios [0.3]*7 + [0.75]*5 on convs 1-12, the 13th unpruned: 2.50M
    params and 104.2M MACs from 14.99M and 313.5M (-83.3% params, -66.7% FLOPs)."""
    widths = [g.channels for g in struct.groups]
    expected = [v for v in VGG16_CFG if v != "M"]
    if widths != expected or any(g.coupled for g in struct.groups):
        raise ValueError(f"the published budget is defined for vgg16_bn (13 uncoupled convs of widths {expected}); "
                         f"this model's groups have widths {widths}")
    ratios = {g.root: r for g, r in zip(struct.groups, VGG16_PUBLISHED)}
    return _make(struct, arch, ratios, (), criterion, criterion_params, {"name": "vgg16_published"})
