"""What the dashboard draws, computed here (pages only draw): score distributions, the value histograms
behind an entropy, filter correlation matrices with a clustering order, feature-map grids, rank agreement
between two criteria and rank stability between two checkpoints.

Every function takes a model, a layer (a conv name or a :class:`~prunekit.models.layers.ConvLayer`) and, where data
is needed, a probe (anything :func:`prunekit.criteria.probe.as_probe` accepts), and returns numpy arrays, tensors or
tidy DataFrames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from scipy.stats import kendalltau, spearmanr

from prunekit.criteria import Criterion
from prunekit.criteria.entropy import value_histograms as _value_histograms
from prunekit.criteria.hooks import capture, eval_mode
from prunekit.criteria.information import abs_pearson
from prunekit.criteria.probe import Batch, as_probe
from prunekit.criteria.scores import score
from prunekit.criteria.streaming import Progress, Ticker, model_device, stream
from prunekit.defaults import BOTTOM_FRACTION
from prunekit.errors import UserError
from prunekit.models.layers import ConvLayer, select_layers
from prunekit.pruning.ratios import kept_channels

__all__ = [
    "Correlation", "score_histogram", "value_histograms", "weight_correlation", "feature_correlation",
    "cluster_order", "feature_maps", "feature_map_grid", "rank_agreement", "rank_stability", "correlated_pairs",
    "filter_kernels",
]


@dataclass
class Correlation:
    """|Pearson| between the filters of one layer: matrix float64 (C, C); order: the filters in the
    leaves order of an average-linkage clustering on 1 - |r| (correlated filters side by side)."""

    layer: str
    matrix: np.ndarray
    order: list[int]

    def ordered(self) -> np.ndarray:
        """The matrix with rows and columns in clustering order."""
        return self.matrix[np.ix_(self.order, self.order)]

    def cells(self) -> pd.DataFrame:
        """The ordered matrix as one row per cell, row-major (C * C rows): row, col (positions in clustering
        order), i, j (the filters there), r (their |Pearson|)."""
        c = len(self.order)
        rows, cols = np.repeat(np.arange(c), c), np.tile(np.arange(c), c)
        order = np.asarray(self.order, dtype=np.int64)
        i, j = order[rows], order[cols]
        return pd.DataFrame({"row": rows, "col": cols, "i": i, "j": j, "r": self.matrix[i, j]})


def _layer(model: nn.Module, layer: ConvLayer | str) -> ConvLayer:
    return select_layers(model, [layer])[0]


def score_histogram(scores: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """Per-layer distribution of the filter scores of a :func:`prunekit.criteria.scores.score` table.

    Returns columns layer, left, right, count: ``bins`` equal bins over each layer's own score range
    (a layer of equal scores has one bin holding every filter); non-finite scores are left out.
    """
    if bins < 1:
        raise UserError(f"bins must be a positive integer, got {bins!r}")
    rows = []
    for layer, group in scores.groupby("layer", sort=False):
        values = group["score"].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        lo, hi = values.min(), values.max()
        counts, edges = (np.array([len(values)]), np.array([lo, hi])) if lo == hi else np.histogram(values, bins)
        rows += [(layer, edges[i], edges[i + 1], int(c)) for i, c in enumerate(counts)]
    return pd.DataFrame(rows, columns=["layer", "left", "right", "count"])


def value_histograms(
    model: nn.Module, layer: ConvLayer | str, probe: Any, *, estimator: str = "pooled", bins: int = 32,
    reads: str = "post_add",
) -> pd.DataFrame:
    """The per-filter histograms behind the SFM entropy (estimator 'pooled' or 'gap'; ``reads``: the map of a
    conv that feeds a residual add; defaults: sfm_entropy's) of one layer.

    Returns columns filter, bin, left, right, count, entropy (the filter's entropy in nats, repeated on each
    of its rows): C * bins rows.
    """
    conv = _layer(model, layer)
    hists = _value_histograms(model, [conv], as_probe(probe), estimator=estimator, bins=bins, reads=reads)
    hist = hists[conv.name]
    counts = hist.counts.cpu().numpy()
    lo, hi = hist.lo.double().cpu().numpy(), hist.hi.double().cpu().numpy()
    ent = hist.entropy().cpu().numpy()
    c = len(counts)
    steps = np.arange(bins + 1) / bins
    edges = lo[:, None] + (hi - lo)[:, None] * steps[None, :]  # (C, bins + 1)
    return pd.DataFrame({
        "filter": np.repeat(np.arange(c), bins),
        "bin": np.tile(np.arange(bins), c),
        "left": edges[:, :-1].ravel(),
        "right": edges[:, 1:].ravel(),
        "count": counts.ravel(),
        "entropy": np.repeat(ent, bins),
    })


def cluster_order(matrix: np.ndarray) -> list[int]:
    """Leaves order of an average-linkage hierarchical clustering of a |correlation| matrix (C, C), on the
    distance 1 - |r|."""
    c = len(matrix)
    if c < 3:
        return list(range(c))
    dist = np.clip(1.0 - np.abs(matrix), 0.0, None)
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(dist, checks=False), method="average"))]


def weight_correlation(model: nn.Module, layer: ConvLayer | str) -> Correlation:
    """|Pearson| between the layer's flattened filters (C_in*k*k weights each), with a clustering order."""
    conv = _layer(model, layer)
    matrix = abs_pearson(conv.module.weight.detach().flatten(1)).cpu().numpy()
    return Correlation(conv.name, matrix, cluster_order(matrix))


def feature_correlation(
    model: nn.Module, layer: ConvLayer | str, probe: Any, *, progress: Progress | None = None
) -> Correlation:
    """|Pearson| between the layer's feature maps over the probe set (each filter's values at every image and
    position), streamed: sums, and sums of products (C, C), in float64; memory O(C^2)."""
    conv = _layer(model, layer)
    probe = as_probe(probe)
    acc: dict[str, Any] = {}

    def accumulate(layer_: ConvLayer, fmap: torch.Tensor, batch: Batch) -> None:
        x = fmap.transpose(0, 1).reshape(fmap.shape[1], -1).double()  # (C, B*H*W)
        s, p, n = x.sum(1), x @ x.T, x.shape[1]
        if acc:
            acc["s"] += s
            acc["p"] += p
            acc["n"] += n
        else:
            acc.update(s=s, p=p, n=n)

    with eval_mode(model):
        stream(model, [conv], probe, accumulate, Ticker(len(probe), progress))
    mean = acc["s"] / acc["n"]
    cov = acc["p"] / acc["n"] - mean[:, None] * mean[None, :]
    sd = cov.diagonal().clamp_min(0).sqrt()
    denom = sd[:, None] * sd[None, :]
    r = torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov)).abs().clamp(max=1.0)
    matrix = r.cpu().numpy()
    return Correlation(conv.name, matrix, cluster_order(matrix))


def feature_maps(
    model: nn.Module, layer: ConvLayer | str, image: torch.Tensor, *, reads: str = "pre_add"
) -> torch.Tensor:
    """The feature maps of one image at one layer: image float (C_in, H, W) or (1, C_in, H, W), normalised
    as the model expects -> float32 CPU (C, h, w) (after BN and activation; for a conv that feeds a residual
    add, its BN output or with ``reads="post_add"`` the map after the add, as a criterion's ``reads``; see
    :mod:`prunekit.models.layers`)."""
    conv = _layer(model, layer)
    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or len(x) != 1:
        raise UserError(f"image must be (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    out: list[torch.Tensor] = []
    device = model_device(model)

    def keep(_: ConvLayer, fmap: torch.Tensor) -> None:
        out.append(fmap[0].clone())

    with eval_mode(model), torch.no_grad(), capture(model, [conv], keep, reads):
        model(x.to(device).float())
    return out[0].float().cpu()


def feature_map_grid(
    maps: torch.Tensor, *, ncols: int | None = None, pad: int = 1, order: list[int] | None = None
) -> torch.Tensor:
    """Tile maps (C, h, w) into one image (rows * (h + pad) - pad, ncols * (w + pad) - pad), row-major in
    ``order`` (default 0..C-1), ``ncols`` default ceil(sqrt(C)). Each map is min-max scaled to [0, 1] on its
    own (a constant map is 0); the gaps and unused cells are NaN (drawn blank by a heatmap)."""
    c, h, w = maps.shape
    ncols = ncols or math.ceil(math.sqrt(c))
    if ncols < 1 or pad < 0:
        raise UserError(f"ncols must be >= 1 and pad >= 0, got ncols={ncols}, pad={pad}")
    order = list(range(c)) if order is None else order
    nrows = math.ceil(len(order) / ncols)
    grid = torch.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), float("nan"))
    flat = maps.float().flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    scaled = torch.where((hi > lo)[:, None], (flat - lo[:, None]) / (hi - lo).clamp_min(1e-30)[:, None], 0.0)
    scaled = scaled.view(c, h, w)
    for k, i in enumerate(order):
        r, q = divmod(k, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = scaled[i]
    return grid


def rank_agreement(a: pd.DataFrame, b: pd.DataFrame, *, bottom: float = BOTTOM_FRACTION) -> pd.DataFrame:
    """Per layer, how two score tables (from :func:`prunekit.criteria.scores.score`) agree.

    Returns columns layer, filters, spearman, kendall (tau-b), k, overlap: |bottom-k of a and of b shared| / k
    with k the number of filters that pruning a fraction ``bottom`` of the layer removes (filters -
    :func:`prunekit.pruning.prune.kept_channels`, i.e. ceil(bottom * filters) up to float rounding; at least 1), the
    bottom k being the lowest scores (the first pruned; ties broken by filter index). Correlations are NaN where
    a layer's scores are constant. Only layers present in both tables are compared; their filter counts must
    match.
    """
    if not 0 < bottom <= 1:
        raise UserError(f"bottom must be a fraction in (0, 1], got {bottom!r}")
    rows = []
    b_layers = dict(tuple(b.groupby("layer", sort=False)))
    for layer, ga in a.groupby("layer", sort=False):
        if layer not in b_layers:
            continue
        gb = b_layers[layer]
        if len(ga) != len(gb):
            raise UserError(f"{layer}: {len(ga)} filters in one table and {len(gb)} in the other")
        sa = ga.sort_values("filter")["score"].to_numpy(dtype=np.float64)
        sb = gb.sort_values("filter")["score"].to_numpy(dtype=np.float64)
        n = len(sa)
        k = max(1, n - kept_channels(n, bottom))
        low_a = set(np.lexsort((np.arange(n), sa))[:k].tolist())
        low_b = set(np.lexsort((np.arange(n), sb))[:k].tolist())
        constant = n < 2 or np.ptp(sa) == 0 or np.ptp(sb) == 0
        rho = math.nan if constant else float(spearmanr(sa, sb).statistic)
        tau = math.nan if constant else float(kendalltau(sa, sb).statistic)
        rows.append((layer, n, rho, tau, k, len(low_a & low_b) / k))
    return pd.DataFrame(rows, columns=["layer", "filters", "spearman", "kendall", "k", "overlap"])


def rank_stability(
    early: nn.Module,
    final: nn.Module,
    criterion: str | Criterion,
    probe: Any = None,
    *,
    layers: list[str] | None = None,
    bottom: float = BOTTOM_FRACTION,
    **params: Any,
) -> pd.DataFrame:
    """Rank agreement (:func:`rank_agreement`) of one criterion between two checkpoints of one architecture
    (e.g. epoch 1 and the final weights), scored on the same probe set (scores cached as by
    :func:`prunekit.criteria.scores.score`)."""
    a = score(early, criterion, layers, probe, **params)
    b = score(final, criterion, layers, probe, **params)
    return rank_agreement(a, b, bottom=bottom)


def correlated_pairs(corr: Correlation, k: int = 10) -> pd.DataFrame:
    """The ``k`` most correlated pairs of distinct filters of a :class:`Correlation` (each pair once, i < j):
    columns i, j, r (|Pearson|), highest first (ties by i, then j)."""
    if k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}")
    i, j = np.triu_indices(len(corr.matrix), 1)
    pairs = pd.DataFrame({"i": i, "j": j, "r": corr.matrix[i, j]})
    return pairs.sort_values(["r", "i", "j"], ascending=[False, True, True], kind="stable").head(k).reset_index(
        drop=True)


def filter_kernels(model: nn.Module, layer: ConvLayer | str, index: int, channels: int = 3) -> np.ndarray:
    """What one filter looks like: float64 (1 + m, kh, kw), its kernel averaged over the input channels, then
    its kernels on the first m = min(``channels``, C_in / groups) input channels. Reads the module by name
    (no trace of the model)."""
    conv = model.get_submodule(layer) if isinstance(layer, str) else layer.module
    if not isinstance(conv, nn.Conv2d):
        raise UserError(f"{layer!r} is not a Conv2d of the model")
    weight = conv.weight.detach()
    if not 0 <= index < len(weight):
        raise UserError(f"filter index must be in [0, {len(weight) - 1}], got {index!r}")
    w = weight[index].double().cpu()  # (C_in / groups, kh, kw)
    return torch.cat([w.mean(0, keepdim=True), w[:channels]]).numpy()
