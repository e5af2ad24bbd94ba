"""Presets: the ways to make a plan, as a registry like the criteria's. Each preset carries its name, a label and
help text, its parameters, what it reads, and one verb, :meth:`Preset.make`, that makes a :class:`~prunekit.pruning.plan.Plan`.
The command line's choices and options, the dashboard's menu and its help text all come from here.

>>> get_preset("uniform").make(struct, "resnet20", target=0.5)            # half the FLOPs, one ratio everywhere
>>> get_preset("threshold").make(struct, "resnet20", value=0.3, scores=table)
>>> get_preset("uniform").make(struct, "resnet56", target=0.5, round_to=16)   # widths multiples of 16
>>> list_presets()   # ['uniform', 'threshold', 'afie', 'sensitivity', 'vgg16_published', 'search']
>>> get_preset("uniform").make(struct, "resnet20", target=0.4, by="latency", latency=lm)  # -40% predicted latency

A target is the fraction of FLOPs (``by="flops"``), of parameters (``by="params"``) or of the latency a
:class:`~prunekit.pruning.latency.LatencyModel` predicts (``by="latency"``, ``latency=`` the model) to remove; it
is met by bisection on the preset's one free number, each step one :func:`prunekit.pruning.structure.estimate` (or
one prediction). The search preset (:mod:`prunekit.pruning.search`) starts from the others' plans at the target
and judges candidates by their recalibrated accuracy: seconds to minutes where the others take milliseconds. A
preset with a ``knob`` (the uniform ratio, the threshold) takes that number instead of a target. Adding a preset is
one small subclass with :func:`register_preset`: it defines ``_shape(ctx, t)``, the ratios at free number ``t``
(pruning more as ``t`` grows).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from prunekit.criteria.afie import afie_entropy, allocate_ratios
from prunekit.criteria.scores import to_tensors
from prunekit.defaults import FALLBACK_CRITERION, MAX_RATIO, ROUND_TO, SEARCH, TARGET_BY
from prunekit.errors import UserError
from prunekit.models.zoo import VGG16_CFG, model_info
from prunekit.params import Param
from prunekit.pruning.latency import LatencyModel
from prunekit.pruning.plan import Plan, excluded_roots
from prunekit.pruning.ratios import check_round_to, kept_channels, max_ratio, ratio_removing
from prunekit.pruning.search import METHODS, check_reachable, search_allocation, training_judge
from prunekit.pruning.selection import group_scores
from prunekit.pruning.sensitivity import check_rounding, check_table
from prunekit.pruning.structure import Structure, estimate, signature, structure
from prunekit.registry import Registry

__all__ = ["Preset", "PresetContext", "BY", "BUDGETS", "LATENCY", "register_preset", "list_presets", "get_preset",
           "plan"]

BY = ("flops", "params")  # what the instant estimate counts
LATENCY = "latency"  # what a latency model predicts
BUDGETS = (*BY, LATENCY)  # what a preset's target may count
NEEDS = {  # what a preset may read, and how a user gets it
    "model": "the model itself",
    "scores": "per-filter scores (score the model with a criterion first, or pass a scores CSV)",
    "sensitivity": "sensitivity curves (compute them first: `python -m prunekit sensitivity`, or the button beside "
                   "the sliders)",
    "train": "training images (the search judges its candidates on some, and recalibrates BatchNorm on others)",
}


@dataclass
class PresetContext:
    """What a preset's ``_shape`` reads: the structure, the groups it may prune (exclusions left out), their widths,
    and whatever the preset needs (model, scores {conv: (filters,)}, sensitivity table), plus its parameters and the
    plan's rounding of kept filters."""

    struct: Structure
    groups: list = field(default_factory=list)
    model: nn.Module | None = None
    scores: dict[str, torch.Tensor] | None = None
    sensitivity: pd.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)
    round_to: int = ROUND_TO  # the plan's rounding of kept filters
    record: dict[str, Any] = field(default_factory=dict)  # what the preset adds to the plan's record
    target: float | None = None  # the fraction of ``by`` to remove, when solving for one
    by: str = TARGET_BY
    latency: LatencyModel | None = None  # what predicts latency, for by="latency"
    inputs: dict[str, Any] = field(default_factory=dict)  # the preset's further inputs (its ``takes``)

    @property
    def channels(self) -> dict[str, int]:
        return {g.root: g.channels for g in self.groups}


class Preset:
    """Base class of every preset. Class attributes: ``name`` (registry key), ``label`` (menu text), ``help`` (what it
    does, in a user's words), ``knob`` (the :class:`~prunekit.params.Param` it takes instead of a target, or None),
    ``targets`` (whether it solves for a target), ``params`` (further options), ``needs`` (keys of :data:`NEEDS`),
    ``takes`` (further inputs that are objects, not options: handed to ``make`` by keyword, kept in ``ctx.inputs``),
    ``judges`` (it evaluates candidate plans: seconds to minutes, not an instant)."""

    name: ClassVar[str]
    label: ClassVar[str]
    help: ClassVar[str]
    knob: ClassVar[Param | None] = None
    targets: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()
    takes: ClassVar[tuple[str, ...]] = ()
    judges: ClassVar[bool] = False
    top: ClassVar[float] = MAX_RATIO  # the largest free number a target is solved up to

    def make(self, struct: Structure, arch: str, *, value: float | None = None, target: float | None = None,
             by: str = TARGET_BY, exclude=(), criterion: str | None = None, criterion_params: dict | None = None,
             model: nn.Module | None = None, scores=None, sensitivity: pd.DataFrame | None = None,
             round_to: int = ROUND_TO, latency: LatencyModel | None = None, **params: Any) -> Plan:
        """The plan of this preset for the model of ``struct``: at ``value`` (its knob) or solved for ``target``, the
        fraction of ``by`` ("flops", "params", or "latency": predicted by ``latency``, a
        :class:`~prunekit.pruning.latency.LatencyModel` of this model and rounding) to remove. criterion: what picks
        the filters inside each group (default: the scores' own criterion when ``scores`` is a
        :func:`prunekit.score` table, else l1). exclude: convs whose groups keep every filter. round_to: the plan's
        rounding of kept filters (:func:`prunekit.pruning.ratios.kept_channels`); a target is solved on the rounded
        estimate, which moves in steps, so it may be overshot: the plan's record then says what it ``reached``
        (always, for a latency target, with the latency before and predicted). UserError for anything missing or
        out of range."""
        value, target = self._check_numbers(value, target, by)
        round_to = check_round_to(round_to)
        if by == LATENCY:
            if latency is None:
                raise UserError("a latency target needs a latency model (prunekit.runs.latency_model.latency_model; "
                                "the command line's --by latency --runtime R --batch B measures one)")
            latency.check(struct, round_to)
        taken = {k: params.pop(k, None) for k in self.takes}
        inputs = {"model": model, "scores": scores, "sensitivity": sensitivity, **taken}
        for need in self.needs:
            if inputs[need] is None:
                raise UserError(f"the {self.name} preset needs {NEEDS[need]}")
        if isinstance(scores, pd.DataFrame):
            criterion, criterion_params = _named_by(scores, criterion, criterion_params)
            scores = to_tensors(scores)
        elif "scores" in self.needs and criterion is None:
            raise UserError("name the criterion the scores come from (criterion=...)")
        skip = excluded_roots(struct, exclude)
        ctx = PresetContext(struct, [g for g in struct.groups if g.root not in skip], model, scores, sensitivity,
                            self._check_params(params), round_to=round_to, target=target, by=by, latency=latency,
                            inputs=taken)
        shape = self._prepare(ctx)
        ratios = shape(value) if target is None else _solve(struct, shape, target, by, self.top, round_to, latency)
        record = {"name": self.name, **({self.knob.name: value} if self.knob else {}),
                  **({"target": target, "by": by} if self.targets else {}), **ctx.params, **ctx.record}
        if target is not None and (round_to > 1 or by == LATENCY):
            record["reached"] = round(_reduction(struct, ratios, by, round_to, latency), 4)
        if by == LATENCY:
            record["latency"] = latency.describe(struct, ratios)
        plan = Plan(arch, {k: v for k, v in ratios.items() if v > 0}, criterion or FALLBACK_CRITERION,
                    dict(criterion_params or {}), list(exclude), signature(struct), record, round_to)
        plan.check(struct)
        return plan

    def _check_numbers(self, value, target, by) -> tuple[float | None, float | None]:
        if self.knob is not None and self.targets and (value is None) == (target is None):
            raise UserError(f"the {self.name} preset takes a {self.knob.name} or a target (a fraction of FLOPs or "
                            "params to remove), not both and not neither")
        if self.knob is None and value is not None:
            raise UserError(f"the {self.name} preset takes no value (it has no free number), got {value!r}")
        if not self.targets and target is not None:
            raise UserError(f"the {self.name} preset is a fixed budget: it takes no target")
        if self.targets and self.knob is None and target is None:
            raise UserError(f"the {self.name} preset needs a target (a fraction of FLOPs or params to remove)")
        if by not in BUDGETS:
            raise UserError(f"by must be one of {BUDGETS}, got {by!r}")
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                                   or not 0 < target < 1):
            raise UserError(f"target must be a fraction of {by} to remove, in (0, 1), got {target!r}")
        return (None if value is None else self.knob.validate(value)), target

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise UserError(f"the {self.name} preset has no parameter {', '.join(unknown)}; its parameters: "
                            f"{', '.join(known) or 'none'}")
        return {p.name: p.validate(params.get(p.name, p.default)) for p in self.params}

    def _prepare(self, ctx: PresetContext) -> Callable[[float | None], dict[str, float]]:
        """The preset's shape: free number t -> {root: ratio}, pruning more as t grows."""
        raise NotImplementedError


def _reduction(struct: Structure, ratios: dict[str, float], by: str, round_to: int,
               latency: LatencyModel | None = None) -> float:
    """The fraction of ``by`` that ``ratios`` removes: the instant estimate's FLOPs or params (kept filters rounded
    to ``round_to``), or the latency ``latency`` predicts (it rounds as it was measured)."""
    if by == LATENCY:
        return latency.reduction(struct, ratios)
    est = estimate(struct, ratios, round_to)
    return est.macs_reduction if by == "flops" else est.params_reduction


def _solve(struct: Structure, shape: Callable[[float], dict[str, float]], target: float, by: str,
           hi: float, round_to: int, latency: LatencyModel | None = None) -> dict[str, float]:
    """Ratios ``shape(t)`` for the smallest t in (0, hi] whose estimated reduction of ``by`` (kept filters rounded
    to ``round_to``; latency as ``latency`` predicts it) reaches ``target``."""
    best = _reduction(struct, shape(hi), by, round_to, latency)
    if best < target:
        rounded = f", kept filters rounded to multiples of {round_to}" if round_to > 1 else ""
        raise UserError(f"this preset removes at most {best:.1%} of the {by} (ratios capped at {MAX_RATIO}, "
                        f"exclusions kept{rounded}); the target {target:.1%} is out of reach")
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _reduction(struct, shape(mid), by, round_to, latency) < target else (lo, mid)
    return shape(hi)


_REGISTRY: Registry[type[Preset]] = Registry("preset")


def register_preset(cls: type[Preset]) -> type[Preset]:
    """Class decorator: add a :class:`Preset` subclass to the registry under ``cls.name``."""
    return _REGISTRY.register(cls)


def list_presets() -> list[str]:
    """Every registered preset name, in registration order."""
    return _REGISTRY.names()


def get_preset(name: str) -> Preset:
    """The preset registered as ``name``; UnknownNameError listing the known ones."""
    return _REGISTRY.get(name)()


# ----------------------------------------------------------------------------------------------
# The presets


@register_preset
class Uniform(Preset):
    name, label = "uniform", "Uniform"
    help = ("Every group loses the same share of its filters (capped so that each keeps one). With a target, the "
            "ratio is solved so that the estimate removes that fraction of FLOPs or parameters.")
    knob = Param("ratio", 0.5, "the ratio of every group", low=0.0, high=MAX_RATIO)

    def _prepare(self, ctx):
        return lambda t: {g.root: min(t, max_ratio(g.channels)) for g in ctx.groups}


@register_preset
class Threshold(Preset):
    name, label = "threshold", "Global threshold"
    help = ("Scores are min-max normalised per layer; every filter below one global threshold goes, so layers full "
            "of weak filters lose more. Each group keeps at least one filter. Uses the criterion's scores.")
    knob = Param("threshold", 0.5, "the normalised score cut (scores are min-max normalised per layer)",
                 low=0.0, high=1.0)
    needs = ("scores",)

    top = 1.0 + 1e-9

    def _prepare(self, ctx):
        combined = {r: s for r, s in group_scores(ctx.groups, ctx.scores).items()}
        if not combined:
            raise UserError("the scores name none of the model's prunable convs")
        channels = ctx.channels
        most = {r: channels[r] - max(1, kept_channels(channels[r], MAX_RATIO)) for r in combined}
        return lambda t: {r: ratio_removing(channels[r], min(int((s < t).sum()), most[r]))
                          for r, s in combined.items()}


@register_preset
class Afie(Preset):
    name, label = "afie", "AFIE allocation"
    help = ("AFIE allocation (seed 004, reconstructed): layers whose weights carry less information (low AFIE = "
            f"K_l / C_out) lose more filters, ratio_g proportional to AFIE_max / AFIE_g, capped at {MAX_RATIO}, "
            "scaled to reach the target. Filters inside a group are picked by the criterion (AFIE's default: l1).")
    needs = ("model",)

    def _prepare(self, ctx):
        score = {g.root: sum(afie_entropy(ctx.model.get_submodule(m).weight) / g.channels for m in g.members)
                 / len(g.members) for g in ctx.groups}
        filters = {g.root: float(g.channels * len(g.members)) for g in ctx.groups}
        channels = ctx.channels
        ctx.record["afie"] = score

        def shape(t: float) -> dict[str, float]:
            alloc = allocate_ratios(score, t, filters, MAX_RATIO)
            return {r: min(v, max_ratio(channels[r])) for r, v in alloc.items()}
        return shape


@register_preset
class Sensitivity(Preset):
    name, label = "sensitivity", "Sensitivity"
    help = ("Each group is pruned as far as its own sensitivity curve allows within one shared tolerance of "
            "damage, solved for the target: robust groups lose most. Needs the sensitivity curves.")
    params = (Param("metric", "accuracy", "the damage measure: a drop of accuracy or a rise of loss",
                    choices=("accuracy", "loss")),)
    needs = ("sensitivity",)
    top = 1.0

    def _prepare(self, ctx):
        curves = _damage_curves(ctx, ctx.params["metric"])
        worst = max(max(float(d.max()), 0.0) for _, d in curves.values()) or 1.0
        channels = ctx.channels
        return lambda t: {root: min(_reach(r, d, t * worst), max_ratio(channels[root]))
                          for root, (r, d) in curves.items()}


def _damage_curves(ctx: PresetContext, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{root: (ratios, damage)} from the sensitivity table (rows at ratio 0 = unpruned), damage a drop of accuracy
    or a rise of loss; exclusions left out."""

    check_table(ctx.sensitivity, metric)
    check_rounding(ctx.sensitivity, ctx.struct, ctx.round_to)
    allowed, known = ctx.channels, {g.root for g in ctx.struct.groups}
    curves = {}
    for root, rows in ctx.sensitivity.groupby("group", sort=False):
        if root not in known:
            raise UserError(f"the sensitivity table names {root!r}, not a prunable group of this model")
        if root not in allowed:
            continue
        rows = rows.sort_values("ratio")
        if rows["ratio"].iloc[0] != 0:
            raise UserError(f"the sensitivity table has no unpruned row (ratio 0) for {root!r}")
        v = rows[metric].to_numpy(float)
        curves[root] = (rows["ratio"].to_numpy(float), (v[0] - v) if metric == "accuracy" else (v - v[0]))
    if not curves:
        raise UserError("the sensitivity table covers no prunable group of this model")
    return curves


def _reach(r: np.ndarray, d: np.ndarray, tol: float) -> float:
    """The largest ratio whose piecewise-linear damage curve (r, d) stays within ``tol``."""
    for i in range(1, len(r)):
        if d[i] > tol:
            return r[i - 1] + (tol - d[i - 1]) / (d[i] - d[i - 1]) * (r[i] - r[i - 1]) if d[i - 1] <= tol else r[i - 1]
    return r[-1]


VGG16_PUBLISHED = [0.3] * 7 + [0.75] * 5 + [0.0]


@register_preset
class Vgg16Published(Preset):
    name, label = "vgg16_published", "Published VGG-16 budget"
    help = ("SFM's VGG-16 budget (methods.md): ratios [0.3]*7 + [0.75]*5 on convs 1-12, the 13th unpruned: 2.50M "
            "params and 104.2M MACs from 14.99M and 313.5M (-83.3% params, -66.7% FLOPs). For vgg16_bn only.")
    targets = False

    def _prepare(self, ctx):
        widths = [g.channels for g in ctx.struct.groups]
        expected = [v for v in VGG16_CFG if v != "M"]
        if widths != expected or any(g.coupled for g in ctx.struct.groups):
            raise UserError(f"the published budget is defined for vgg16_bn (13 uncoupled convs of widths "
                            f"{expected}); this model's groups have widths {widths}: pick another preset")
        ratios = {g.root: r for g, r in zip(ctx.struct.groups, VGG16_PUBLISHED)}
        return lambda t: ratios


START_PRESETS = ("uniform", "afie", "sensitivity", "threshold")  # the search's starts, those that apply


@register_preset
class Search(Preset):
    name, label = "search", "Search"
    help = ("Starts from the other presets' plans at the target (uniform, AFIE, threshold, and sensitivity when its "
            "curves are given), then explores around the best: every candidate is scaled onto the budget, pruned, "
            f"its BatchNorm recalibrated and judged on {SEARCH.n} training images that the recalibration does not "
            f"use; the best wins. It stops after {SEARCH.candidates} candidates or {SEARCH.seconds:g} s (about a "
            "minute for ResNet-20 on a 2-core CPU), with the best found so far.")
    params = (Param("seed", SEARCH.seed, "the exploration's seed (the same seed, target and candidates give the "
                    "same plan)", low=0),
              Param("candidates", SEARCH.candidates, "plans judged at most, the starts included", low=1),
              Param("seconds", SEARCH.seconds, "the time limit in seconds", low=0, open_low=True),
              Param("method", SEARCH.method, "how it explores around the best plans", choices=METHODS))
    needs = ("model", "scores", "train")
    takes = ("train", "progress", "cancel", "on_candidate")
    judges = True
    top = 1.0

    def _prepare(self, ctx):
        channels = ctx.channels

        def reduction(ratios: dict[str, float]) -> float:
            return _reduction(ctx.struct, ratios, ctx.by, ctx.round_to, ctx.latency)

        check_reachable(channels, reduction, ctx.target)
        starts, skipped = _starts(ctx)
        judge = training_judge(ctx.model, ctx.scores, ctx.inputs["train"], round_to=ctx.round_to)
        p = ctx.params
        result = search_allocation(channels, starts, reduction, judge, ctx.target, round_to=ctx.round_to,
                                   seed=p["seed"], candidates=p["candidates"], seconds=p["seconds"],
                                   method=p["method"], progress=ctx.inputs.get("progress"),
                                   cancel=ctx.inputs.get("cancel"), on_candidate=ctx.inputs.get("on_candidate"))
        ctx.record["search"] = {**result.record(list(channels)), "skipped": skipped}
        return lambda t: result.best.ratios


def _starts(ctx: PresetContext) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({preset: its ratios at the search's target}, {preset: why it was left out}) for :data:`START_PRESETS`."""
    starts, skipped = {}, {}
    for name in START_PRESETS:
        preset = get_preset(name)
        missing = [need for need in preset.needs if getattr(ctx, need) is None]
        if missing:
            skipped[name] = f"needs {NEEDS[missing[0]]}"
            continue
        sub = PresetContext(ctx.struct, ctx.groups, ctx.model, ctx.scores, ctx.sensitivity, preset._check_params({}),
                            round_to=ctx.round_to, target=ctx.target, by=ctx.by, latency=ctx.latency)
        try:
            ratios = _solve(ctx.struct, preset._prepare(sub), ctx.target, ctx.by, preset.top, ctx.round_to,
                            ctx.latency)
        except UserError as exc:
            skipped[name] = str(exc)
            continue
        starts[name] = {r: v for r, v in ratios.items() if v > 0}
    return starts, skipped


# ----------------------------------------------------------------------------------------------
# The verb


def _named_by(scores: pd.DataFrame, criterion: str | None, params: dict | None) -> tuple[str, dict]:
    """(criterion, its parameters) of a :func:`prunekit.score` table: those given, else the table's own."""
    return (criterion or scores.attrs.get("criterion") or str(scores["criterion"].iloc[0]),
            params or scores.attrs.get("params", {}))


def plan(model: nn.Module, arch: str, *, preset: str = Uniform.name, value: float | None = None,
         target: float | None = None, by: str = TARGET_BY, ratios: dict[str, float] | None = None, scores=None,
         criterion: str | None = None, exclude=(), round_to: int = ROUND_TO, **options: Any) -> Plan:
    """A pruning plan for ``model``: made by a preset, or from ``ratios`` written by hand. The entry point; a preset
    object's :meth:`Preset.make` is the step below it (it takes a traced structure instead of the model).

    Args:
        model: the model to prune (never modified; traced at ``arch``'s input size (C, H, W), see
            :func:`prunekit.models.zoo.model_info`).
        arch: its architecture's name (``"resnet20"``, ``"timm:resnet18@32"``): a plan refuses another model.
        preset: a name of :func:`list_presets` (default: uniform).
        value: the preset's knob (uniform's ratio, threshold's threshold), or
        target: the fraction of ``by`` (``"flops"`` or ``"params"``) to remove, in (0, 1), solved for.
        ratios: instead of a preset, {group root: ratio in [0, 0.95]} (the roots:
            :func:`prunekit.pruning.prune.coupled_groups`).
        scores: per-filter scores, what threshold-like presets read and what names the plan's criterion: the table
            of :func:`prunekit.score` (columns layer, filter, score) or {conv: float (filters,)}.
        criterion: the criterion whose scores pick the filters inside each group (default: the scores' own, else l1).
        exclude: conv names whose groups keep every filter. round_to: kept filters rounded to a multiple of it.
        options: the preset's further inputs (``sensitivity=`` its table, ``criterion_params=``, its parameters).

    Returns: a :class:`~prunekit.pruning.plan.Plan` checked against the model; UserError for anything missing or
    out of range.

    >>> model = build_model("resnet20")
    >>> p = plan(model, "resnet20", value=0.5)                  # every group loses half its filters
    >>> p.ratios["conv1"]
    0.5
    >>> plan(model, "resnet20", target=0.4, by="params")        # 40% of the parameters removed, solved
    >>> plan(model, "resnet20", preset="threshold", value=0.3, scores=score(model, "fpgm"))
    >>> plan(model, "resnet20", ratios={"layer1.0.conv1": 0.25})
    """
    struct = structure(model, model_info(arch).input_size)
    if ratios is None:
        return get_preset(preset).make(struct, arch, value=value, target=target, by=by, exclude=exclude,
                                       criterion=criterion, model=model, scores=scores, round_to=round_to,
                                       **options)
    if value is not None or target is not None or set(options) - {"criterion_params"}:
        raise UserError("ratios written by hand take no preset value, target or preset parameters")
    criterion_params = options.get("criterion_params")
    if isinstance(scores, pd.DataFrame):
        criterion, criterion_params = _named_by(scores, criterion, criterion_params)
    made = Plan(arch, dict(ratios), criterion or FALLBACK_CRITERION, dict(criterion_params or {}), list(exclude),
                signature(struct), {}, round_to)
    made.check(struct)
    return made
