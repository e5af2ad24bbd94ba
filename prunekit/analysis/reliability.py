"""How reproducible a data-driven criterion's ranking is: one criterion, one model, two probe sets.

>>> a, b = split_probes(load_arrays("cifar10", "train"), 640)       # disjoint: seed 0's images, then seed 1's
>>> table = reliability(model, "sfm_entropy", a, b, estimator="pooled")
>>> table.columns    # layer, filters, spearman, kendall, k, overlap
>>> summarize(table) # {"median_spearman", "min_spearman", "median_overlap", "layers"}

methods.md: "A ranking is only as good as it is reproducible: for data-driven criteria, report how well each
layer's ranking agrees between two halves (or two seeds) of the probe set." Per layer, :func:`reliability`
scores the layer's filters on probe A and on probe B and compares the two rankings with
:func:`prunekit.analysis.views.rank_agreement`: Spearman's rho, Kendall's tau, and the overlap of the bottom k filters
(k = what pruning 30% of the layer removes, ceil(0.3 C)) as |bottom_A & bottom_B| / k. A criterion whose
scores do not depend on the probe (weights only) is refused: its agreement is 1 by construction.

The two probes of :func:`split_probes` are **disjoint** (no image in both), drawn by two seeds: A is the ``n``
images seed ``seeds[0]`` draws (the very probe ``Probe.from_arrays(data, n, seed=seeds[0])``, so with seed 0 it
is the dashboard's default probe and shares its score cache), B is ``n`` images drawn by ``seeds[1]`` from the
images A left. Disjoint rather than merely independently seeded: two seeded draws may share images (all of
them when n is close to the size of the set), which would overstate the agreement.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch.nn as nn

from prunekit.analysis.views import rank_agreement
from prunekit.criteria import Criterion, as_criterion, get_criterion
from prunekit.criteria.probe import Probe, ProbeSpec, make_probe
from prunekit.criteria.scores import score
from prunekit.criteria.streaming import Progress
from prunekit.data import ArraySet
from prunekit.defaults import BOTTOM_FRACTION, PROBE
from prunekit.errors import UserError
from prunekit.models.layers import ConvLayer

__all__ = ["reliability", "probe_reliability", "split_probes", "summarize"]


def split_probes(
    data: ArraySet, n: int, seeds: tuple[int, int] = (0, 1), *, batch_size: int = PROBE.batch_size
) -> tuple[Probe, Probe]:
    """Two disjoint probes of ``n`` images of ``data`` each (see the module docstring): A drawn by
    ``seeds[0]``, B drawn by ``seeds[1]`` from the rest; batches of ``batch_size`` (B, 3, 32, 32) normalised
    with the set's statistics. ``ValueError`` unless 1 <= n and 2 n <= len(data)."""
    if not 1 <= n <= len(data) // 2:
        raise UserError(f"n must be an integer in [1, {len(data) // 2}] (two disjoint probes of n images from "
                         f"{len(data)}), got {n!r}")
    first, rest = data.split(n, seeds[0])
    return (Probe.from_arrays(first, n, batch_size=batch_size),
            Probe.from_arrays(rest, n, batch_size=batch_size, seed=seeds[1]))


def reliability(
    model: nn.Module,
    criterion: str | Criterion,
    probe_a: Any,
    probe_b: Any,
    layers: Iterable[ConvLayer | str] | None = None,
    *,
    bottom: float = BOTTOM_FRACTION,
    cache: bool = True,
    progress: Progress | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Per layer, how the rankings of ``criterion`` (a name with ``params``, or a built :class:`Criterion`)
    scored on ``probe_a`` and on ``probe_b`` agree: one row per layer (default: every conv of ``model``) with
    columns layer, filters, spearman, kendall, k, overlap (:func:`prunekit.analysis.views.rank_agreement`; NaN
    correlations where a layer's scores are constant). Scores go through :func:`prunekit.criteria.scores.score`, so
    both are cached; ``progress(done, total)`` is called during each of the two scorings. ``ValueError`` for
    a criterion that needs no data."""
    crit = as_criterion(criterion, params, "reliability")
    if not crit.needs_data:
        raise UserError(f"{crit.name} needs no probe data: its ranking is the same on any probe (reliability "
                         "is for data-driven criteria)")
    a = score(model, crit, layers, probe_a, cache=cache, progress=progress)
    b = score(model, crit, layers, probe_b, cache=cache, progress=progress)
    return rank_agreement(a, b, bottom=bottom)


def summarize(table: pd.DataFrame) -> dict[str, float]:
    """The figures methods.md reports from a :func:`reliability` table: median and minimum of the per-layer
    Spearman, median bottom-k overlap (layers with NaN Spearman left out of the Spearman figures), and the
    number of layers."""
    rho = table["spearman"].dropna()
    return {
        "median_spearman": float(rho.median()),
        "min_spearman": float(rho.min()),
        "median_overlap": float(table["overlap"].median()),
        "layers": int(len(table)),
    }


def probe_reliability(model: nn.Module, criterion: str, params: dict[str, Any] | None, probe: ProbeSpec, *,
                      cache: bool = True, progress: Progress | None = None) -> pd.DataFrame:
    """:func:`reliability` of ``criterion`` between the probe ``probe`` names (A: the images a score with that
    probe reads, so its scores come from the cache) and a disjoint probe of as many images drawn by the next seed
    (B): what the command line prints after ``score`` and the Saliency page shows beside the criterion. The table's
    ``attrs`` say what it was measured on (``n``, ``seeds``, ``dataset``, ``disjoint``). A criterion reading boxes
    (Map-EX) gets two box probes pasted by the two seeds from the same images: independent, not disjoint."""
    crit = get_criterion(criterion, **(params or {}))
    seeds = (probe.seed, probe.seed + 1)
    if crit.needs_boxes:
        n = probe.n
        a, b = (make_probe(probe.dataset, n, seed=s, batch_size=probe.batch_size, boxes=True,
                           data_root=probe.data_root) for s in seeds)
    else:
        data = probe.images()
        n = min(probe.n, len(data) // 2)
        a, b = split_probes(data, n, seeds, batch_size=probe.batch_size)
    table = reliability(model, crit, a, b, cache=cache, progress=progress)
    table.attrs = {"n": n, "seeds": list(seeds), "dataset": probe.dataset, "criterion": criterion,
                   "disjoint": not crit.needs_boxes}
    return table
