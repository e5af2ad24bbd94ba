"""Data-free baselines from the weights: L1 and L2 norms, FPGM, BN scale, and the seeded random control.

Each matches its published definition (methods.md, "Baselines"); W_j is filter j's (C_in/g, k, k) weights.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn as nn

from prunekit.criteria.base import LayerwiseCriterion, Param, register_criterion
from prunekit.errors import UserError
from prunekit.models.layers import ConvLayer

__all__ = ["L1Norm", "L2Norm", "FPGM", "BNScale", "RandomScores", "fpgm"]


def fpgm(weight: torch.Tensor) -> torch.Tensor:
    """weight (C_out, ...) -> float64 (C_out,): s_j = sum_k ||W_j - W_k||_2, the total distance to the layer's
    other filters (small = near the geometric median = redundant)."""
    w = weight.detach().flatten(1).double()
    sq = (w * w).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * (w @ w.T)).clamp_min_(0)
    d2.fill_diagonal_(0)
    return d2.sqrt().sum(1)


@register_criterion
class L1Norm(LayerwiseCriterion):
    """sum |W_j| (Li et al., 2017)."""

    name = "l1"
    unit = "L1 norm of the weights"
    description = "L1 norm of each filter's weights, sum |W_j| over (C_in, k, k) (Li et al., ICLR 2017). Data-free."

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        return layer.module.weight.detach().abs().flatten(1).sum(1)


@register_criterion
class L2Norm(LayerwiseCriterion):
    """||W_j||_2."""

    name = "l2"
    unit = "L2 norm of the weights"
    description = "L2 norm of each filter's weights, ||W_j||_2 over (C_in, k, k) (Li et al., ICLR 2017). Data-free."

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        return layer.module.weight.detach().flatten(1).norm(dim=1)


@register_criterion
class FPGM(LayerwiseCriterion):
    """Filter pruning via geometric median (He et al., 2019)."""

    name = "fpgm"
    unit = "summed distance to the other filters"
    description = (
        "FPGM (He et al., CVPR 2019): s_j = sum_k ||W_j - W_k||_2 over the layer's filters; a filter near the "
        "geometric median (small s_j) is redundant. Data-free."
    )

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        return fpgm(layer.module.weight)


@register_criterion
class BNScale(LayerwiseCriterion):
    """|gamma_j| of the BN that follows the conv (network slimming)."""

    name = "bn_scale"
    unit = "|BN gamma|"
    description = (
        "BN scale (network slimming, Liu et al., ICCV 2017): |gamma_j| of the BatchNorm that directly follows "
        "the conv. Data-free; a conv without a following BN is an error."
    )

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        if layer.bn is None:
            raise UserError(f"bn_scale needs a BatchNorm after each conv; {layer.name} has none: "
                             "leave it out of layers= or pick another criterion")
        bn = model.get_submodule(layer.bn)
        if bn.weight is None:
            raise UserError(f"bn_scale needs an affine BatchNorm; {layer.bn} has affine=False")
        return bn.weight.detach().abs()


@register_criterion
class RandomScores(LayerwiseCriterion):
    """Uniform random scores, seeded per layer: the control every comparison needs."""

    name = "random"
    unit = "uniform in [0, 1)"
    description = (
        "Random control: uniform scores in [0, 1), drawn from a generator seeded by (seed, layer name), so a "
        "layer's scores do not depend on which other layers are scored."
    )
    params = (Param("seed", 0, "random seed", low=0, high=2**31 - 1),)

    def layer_scores(self, model: nn.Module, layer: ConvLayer) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.config["seed"] * 1_000_003 + zlib.crc32(layer.name.encode()))
        return torch.rand(layer.out_channels, generator=g)
