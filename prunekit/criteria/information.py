"""Information capacity and independence of filters, computed from the weights (seed 002).

Source: Tang et al., arXiv 2303.03645 (seed 002, abstract only): capacity = entropy, with a "feature-guided
approximation" computed from the filter's weights (so the score is data-free); independence = correlation
among the filters of a layer; the two combined.
Reconstructed (methods.md), with W_j the C_in*k*k weights of filter j flattened:
- capacity IC_j: entropy (nats) of the histogram of W_j in ``bins`` equal bins over the *layer's* weight range;
- independence II_j = mean over k != j of (1 - |pearson(W_j, W_k)|) (0 for a layer of one filter; a filter
  with constant weights has correlation 0 with every other);
- combination: score_j = minmax(IC)_j + sigma * minmax(II)_j, min-max within the layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.criteria.base import LayerwiseCriterion, Param, register_criterion
from prunekit.criteria.stats import bin_counts, entropy, minmax
from prunekit.models.layers import ConvLayer

__all__ = ["Capacity", "Independence", "Information", "abs_pearson", "capacity", "independence"]

SOURCE = "Tang et al., arXiv 2303.03645 (seed 002)"


def abs_pearson(rows: torch.Tensor) -> torch.Tensor:
    """|Pearson correlation| between the rows of ``rows`` (C, D) -> float64 (C, C); a constant row has
    correlation 0 with every row, itself included."""
    x = rows.double()
    x = x - x.mean(1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    z = torch.where(norm > 0, x / norm.clamp_min(1e-300), torch.zeros_like(x))
    return (z @ z.T).abs().clamp_(max=1.0)


def capacity(weight: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """weight (C_out, C_in/g, k, k) -> float64 (C_out,): entropy of each filter's weight histogram, bins
    over the layer's [min, max]."""
    w = weight.detach().flatten(1)
    c = w.shape[0]
    lo, hi = w.min().expand(c), w.max().expand(c)
    return entropy(bin_counts(w[None], lo, hi, bins))


def independence(weight: torch.Tensor) -> torch.Tensor:
    """weight (C_out, C_in/g, k, k) -> float64 (C_out,): mean over the other filters of 1 - |pearson|."""
    c = weight.shape[0]
    if c == 1:
        return torch.zeros(1, dtype=torch.float64, device=weight.device)
    r = abs_pearson(weight.detach().flatten(1))
    off = ~torch.eye(c, dtype=torch.bool, device=weight.device)
    return ((1 - r) * off).sum(1) / (c - 1)


@register_criterion
class Capacity(LayerwiseCriterion):
    """Information capacity: entropy of each filter's weight histogram."""

    name = "capacity"
    unit = "weight entropy (nats)"
    seed_doc = 2
    description = (
        f"Information capacity ({SOURCE}): established, capacity = entropy approximated from the weights "
        "(data-free). Reconstructed: entropy of the histogram of the filter's C_in*k*k weights, bins over the "
        "layer's weight range."
    )
    params = (Param("bins", 32, "histogram bins", low=2, high=4096),)

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        return capacity(layer.module.weight, self.config["bins"])


@register_criterion
class Independence(LayerwiseCriterion):
    """Information independence: how little a filter correlates with the others of its layer."""

    name = "independence"
    unit = "mean 1 - |r|"
    seed_doc = 2
    description = (
        f"Information independence ({SOURCE}): established, independence from the correlation among a "
        "layer's filters. Reconstructed: mean over the other filters of 1 - |pearson| of the flattened weights."
    )

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        return independence(layer.module.weight)


@register_criterion
class Information(LayerwiseCriterion):
    """Capacity and independence combined: minmax(IC) + sigma * minmax(II) within each layer."""

    name = "information"
    unit = "capacity + sigma x independence"
    seed_doc = 2
    description = (
        f"Information capacity + independence ({SOURCE}): established, the two combined. Reconstructed: "
        "minmax(capacity) + sigma * minmax(independence), min-max within the layer."
    )
    params = (
        Param("bins", 32, "histogram bins of the capacity", low=2, high=4096),
        Param("sigma", 1.0, "weight of independence", low=0.0),
    )

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        weight = layer.module.weight
        return minmax(capacity(weight, self.config["bins"])) + self.config["sigma"] * minmax(independence(weight))
