"""The one interface of every saliency criterion, its parameters, and the registry.

>>> crit = get_criterion("sfm_entropy", estimator="pooled")
>>> scores = crit.score(model, probe=train_set)     # {conv name: float32 (out_channels,)}, higher = more important
>>> scores.info                                     # per-criterion diagnostics (e.g. the ensembles' R^2)
>>> list_criteria()                                 # every registered name

A criterion (as captum's attribution classes share ``attribute``) has a single verb, :meth:`Criterion.score`,
and carries its name, a description (source, and which parts prunekit reconstructed), its parameters with
defaults and valid ranges, and whether it needs probe data, labels or boxes. Parameters are validated when the
criterion is built: a bad value raises ``ValueError`` saying what is allowed.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn as nn

from prunekit.criteria.hooks import eval_mode
from prunekit.criteria.probe import Probe, as_probe
from prunekit.criteria.streaming import Progress, no_progress
from prunekit.errors import UserError
from prunekit.models.layers import ConvLayer, select_layers
from prunekit.params import Param
from prunekit.registry import Registry

__all__ = [
    "Param", "Criterion", "LayerwiseCriterion", "Scores", "register_criterion", "list_criteria", "get_criterion",
    "criterion_class",
]

class Scores(dict):
    """``{conv name: float32 CPU tensor (out_channels,)}``, higher = more important, plus ``info``: a
    JSON-serialisable dict of diagnostics (e.g. ``{"r2": {layer: float}}`` for linear ensembles)."""

    def __init__(self, scores: dict[str, torch.Tensor], info: dict[str, Any] | None = None):
        super().__init__({k: v.detach().float().cpu() for k, v in scores.items()})
        self.info = info or {}


class Criterion:
    """Base class of every criterion. Subclasses set the class attributes and implement :meth:`_score`.

    Class attributes: ``name`` (registry key), ``description`` (source; which parts are reconstructed),
    ``params`` (tuple of :class:`Param`), ``needs_data`` / ``needs_labels`` / ``needs_boxes``, ``seed_doc``:
    the number of the seed document (0-4) a criterion reconstructs, None for a baseline, ``unit`` (what a score
    measures, in words), ``slow`` (minutes on a CPU), ``reads``: which
    feature map of a conv that feeds a residual add a data-driven criterion reads, "pre_add" (its BN output) or
    "post_add" (after the add and its activation; :mod:`prunekit.models.layers`), and ``revision``: raised whenever
    the criterion's scores change for the same parameters (the score cache keys on it).
    Instances hold validated parameter values in ``self.config``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    needs_data: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    needs_boxes: ClassVar[bool] = False
    seed_doc: ClassVar[int | None] = None
    unit: ClassVar[str] = "score"  # what a score measures, for axis titles
    slow: ClassVar[bool] = False  # minutes on a CPU: the dashboard asks before it starts one
    reads: ClassVar[str] = "pre_add"
    revision: ClassVar[int] = 1

    def __init__(self, **params: Any):
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            listed = ", ".join(known) or "none"
            raise UserError(f"{self.name} has no parameter {', '.join(unknown)}; its parameters: {listed}")
        self.config: dict[str, Any] = {p.name: p.validate(params.get(p.name, p.default)) for p in self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    @property
    def caveat(self) -> str:
        """A warning the user must see with these parameters ('' if none), e.g. an inverted sense."""
        return ""

    def score(
        self,
        model: nn.Module,
        layers: Iterable[ConvLayer | str] | None = None,
        probe: Any = None,
        *,
        progress: Progress | None = None,
    ) -> Scores:
        """Score every output filter of ``layers`` (default: every conv of ``model``).

        model: on its device; put in eval mode while scoring (BN uses running statistics), then restored.
        probe: needed when ``needs_data``; anything :func:`prunekit.criteria.probe.as_probe` accepts.
        progress: optional ``progress(done, total)`` callback.
        Returns :class:`Scores`: one float32 tensor (out_channels,) per layer, higher = more important.
        """
        chosen = select_layers(model, layers)
        if self.needs_data:
            probe = as_probe(probe)
            if len(probe) == 0:
                raise UserError(f"{self.name} got an empty probe set: it needs at least one batch of images")
            if self.needs_boxes and not probe.has_boxes:
                raise UserError(f"{self.name} needs a box-labelled probe set (a BoxProbeSet, or (x, y, boxes) "
                                 "batches); got batches without boxes")
        else:
            probe = None
        with eval_mode(model):
            result = self._score(model, chosen, probe, progress or no_progress)
        for layer in chosen:
            got = result.get(layer.name)
            if got is None or tuple(got.shape) != (layer.out_channels,):
                shape = None if got is None else tuple(got.shape)
                raise RuntimeError(f"{self.name} returned {shape} for {layer.name}, expected ({layer.out_channels},)")
        return result

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe | None, progress: Progress) -> Scores:
        raise NotImplementedError


class LayerwiseCriterion(Criterion):
    """A data-free criterion computed one layer at a time by :meth:`layer_scores`."""

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe | None, progress: Progress) -> Scores:
        out = {}
        with torch.no_grad():
            for i, layer in enumerate(layers):
                out[layer.name] = self.layer_scores(model, layer)
                progress(i + 1, len(layers))
        return Scores(out)

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        """The scores (out_channels,) of one layer."""
        raise NotImplementedError


_REGISTRY: Registry[type[Criterion]] = Registry("criterion", "criteria")


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: add a :class:`Criterion` subclass to the registry under ``cls.name``."""
    return _REGISTRY.register(cls)


def list_criteria() -> list[str]:
    """Every registered criterion name: the seed criteria by seed number, then the baselines in registration
    order."""
    names = _REGISTRY.names()
    order = {name: i for i, name in enumerate(names)}

    def key(n: str) -> tuple:
        seed = _REGISTRY.get(n).seed_doc
        return seed is None, seed or 0, order[n]
    return sorted(names, key=key)


def criterion_class(name: str) -> type[Criterion]:
    """The class registered as ``name``; :class:`~prunekit.errors.UnknownNameError` listing the known names."""
    return _REGISTRY.get(name, list_criteria())


def get_criterion(name: str, **params: Any) -> Criterion:
    """Build the criterion ``name`` with ``params`` (validated; defaults for the rest)."""
    return criterion_class(name)(**params)


def as_criterion(criterion: str | Criterion, params: dict[str, Any], verb: str) -> Criterion:
    """``criterion`` built with ``params`` when it is a name, or as given when built (then ``params`` must be
    empty: UserError naming ``verb``, the function that got both)."""
    if isinstance(criterion, Criterion):
        if params:
            raise UserError(f"pass parameters either to get_criterion() or to {verb}() with a criterion name, not "
                            "with a built criterion")
        return criterion
    return get_criterion(criterion, **params)
