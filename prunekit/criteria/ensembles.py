"""Linear filter ensembles: a linear additive model of the loss on random filter masks (seed 003).

Source: Sandor, Pavel, Csato, arXiv 2001.08142 (seed 003, abstract only): sample many masks that switch filters
on and off, measure the network's loss for each, fit a linear additive model of the loss on the mask bits,
rank the filters by it.
Reconstructed (methods.md): per layer (or jointly over the chosen layers, ``joint=True``) draw ``samples``
masks m in {0, 1}^F, each bit 1 with probability ``keep``; evaluate the mean loss over the whole probe set with
the masks applied as channel gates on the feature maps (:func:`prunekit.criteria.hooks.gate`: a multiplicative mask in a
forward hook, the model is never copied); fit L ~ b0 + sum_j b_j m_j by ridge regression (``alpha``);
importance_j = -b_j (removing an important filter raises the loss). ``samples=0`` means 4 F per fit; sampling
stops early once ``budget_s`` seconds have passed for the whole call (at least 2 samples per fit).
``info`` holds, per fit (keyed by layer name, or "joint"), the in-sample ``r2``, the leave-one-out ``r2_loo``,
the ``samples`` drawn and the ``intercept`` b0 (the loss with every filter off). With fewer samples than
filters the in-sample R^2 is near 1 whatever the data; ``r2_loo`` is the one that says whether enough samples
were drawn (near r2 when they were).

Passes: the probe is read **once per mask sample** (one loss per mask is the method), not once per call.
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.criteria.base import Criterion, Param, Scores, register_criterion
from prunekit.criteria.hooks import gate
from prunekit.criteria.probe import Probe
from prunekit.criteria.streaming import Progress, model_device
from prunekit.models.layers import ConvLayer

__all__ = ["LinearEnsembles", "AdditiveFit", "fit_additive"]

LOSSES = ("cross_entropy", "nll")


class AdditiveFit(NamedTuple):
    """A ridge fit of the loss on the mask bits: intercept ``b0``, coefficients ``b`` float64 (F,), in-sample
    ``r2`` and leave-one-out ``r2_loo`` (NaN where undefined)."""

    b0: float
    b: torch.Tensor
    r2: float
    r2_loo: float


def fit_additive(masks: torch.Tensor, losses: torch.Tensor, alpha: float) -> AdditiveFit:
    """Ridge fit of losses (S,) on masks (S, F) with an unpenalised intercept: b minimises
    ||y - b0 - X b||^2 + alpha ||b||^2 (solved in the smaller of the F x F and S x S forms).

    r2 = 1 - SS_res / SS_tot in sample; with S <= F it is close to 1 whatever the data. r2_loo uses the
    leave-one-out residuals e_i / (1 - h_ii) of the ridge hat matrix instead, which says whether the samples
    were enough: NaN when every loss is equal or when some h_ii = 1 (alpha = 0 and too few samples).
    """
    x, y = masks.double().cpu(), losses.double().cpu()
    xm, ym = x.mean(0), y.mean()
    xc, yc = x - xm, y - ym
    s, f = x.shape
    if s >= f:  # primal: (X'X + alpha I) b = X'y, F x F
        inverse_xt = torch.linalg.lstsq(xc.T @ xc + alpha * torch.eye(f, dtype=torch.float64), xc.T).solution
        b = inverse_xt @ yc
        hat = (xc * inverse_xt.T).sum(1)
    else:  # dual, same solution: b = X' (XX' + alpha I)^-1 y, S x S
        gram = xc @ xc.T
        shifted = gram + alpha * torch.eye(s, dtype=torch.float64)
        b = xc.T @ torch.linalg.lstsq(shifted, yc[:, None]).solution[:, 0]
        hat = torch.linalg.lstsq(shifted, gram).solution.diagonal()
    hat = hat + 1.0 / s  # the intercept's share
    residual = yc - xc @ b
    ss_tot = float((yc**2).sum())
    r2 = 1.0 - float((residual**2).sum()) / ss_tot if ss_tot > 0 else math.nan
    leverage_ok = ss_tot > 0 and float((1 - hat).min()) > 1e-9
    r2_loo = 1.0 - float(((residual / (1 - hat)) ** 2).sum()) / ss_tot if leverage_ok else math.nan
    return AdditiveFit(float(ym - xm @ b), b, r2, r2_loo)


@register_criterion
class LinearEnsembles(Criterion):
    """Linear filter ensembles; see the module docstring."""

    name = "linear_ensembles"
    unit = "-coefficient of the loss"
    seed_doc = 3
    slow = True
    description = (
        "Linear filter ensembles (Sandor, Pavel, Csato, arXiv 2001.08142, seed 003): established, random masks "
        "switch filters off, the loss is fitted by a linear additive model of the mask bits. Reconstructed: "
        "masks with keep probability 'keep' applied as channel gates, mean loss over the probe set, ridge fit "
        "(alpha), importance = -coefficient; samples = 4 x filters by default, capped by budget_s; R^2 reported."
    )
    params = (
        Param("samples", 0, "masks per fit (0: 4 x the fit's filters)", low=0, high=1_000_000),
        Param("keep", 0.8, "probability that a filter stays on", low=0.0, high=1.0, open_low=True, open_high=True),
        Param("alpha", 1e-3, "ridge penalty", low=0.0),
        Param("budget_s", 600.0, "time budget of the whole call, seconds", low=0.0, open_low=True),
        Param("joint", False, "one fit over all chosen layers instead of one per layer"),
        Param("loss", "cross_entropy", "loss of the model's output: cross_entropy (logits) or nll "
              "(the model outputs log-probabilities)", choices=LOSSES),
        Param("seed", 0, "random seed of the masks", low=0, high=2**31 - 1),
    )
    needs_data = True
    needs_labels = True

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        groups = [layers] if self.config["joint"] else [[layer] for layer in layers]
        counts = [self.config["samples"] or 4 * sum(layer.out_channels for layer in g) for g in groups]
        total = sum(counts)
        deadline = time.monotonic() + self.config["budget_s"]
        gen = torch.Generator().manual_seed(self.config["seed"])
        device = model_device(model)
        masks: dict[str, torch.Tensor] = {}
        scores: dict[str, torch.Tensor] = {}
        info: dict[str, dict] = {"r2": {}, "r2_loo": {}, "samples": {}, "intercept": {}}
        done = 0
        with torch.no_grad(), gate(model, layers, masks):
            for group, count in zip(groups, counts):
                width = sum(layer.out_channels for layer in group)
                bits = (torch.rand(count, width, generator=gen) < self.config["keep"]).float()
                losses = []
                for s in range(count):
                    if s >= 2 and time.monotonic() > deadline:
                        break
                    for layer, part in zip(group, bits[s].split([la.out_channels for la in group])):
                        masks[layer.name] = part.to(device)
                    losses.append(self._loss(model, probe, device))
                    done += 1
                    progress(done, total)
                masks.clear()
                fit = fit_additive(bits[: len(losses)], torch.tensor(losses), self.config["alpha"])
                key = "joint" if self.config["joint"] else group[0].name
                info["r2"][key], info["r2_loo"][key] = fit.r2, fit.r2_loo
                info["samples"][key], info["intercept"][key] = len(losses), fit.b0
                for layer, part in zip(group, (-fit.b).split([la.out_channels for la in group])):
                    scores[layer.name] = part
        progress(total, total)
        return Scores(scores, info)

    def _loss(self, model: nn.Module, probe: Probe, device: torch.device) -> float:
        """Mean loss of ``model`` over the probe set (with the current gates)."""
        fn = F.cross_entropy if self.config["loss"] == "cross_entropy" else F.nll_loss
        total = torch.zeros((), dtype=torch.float64, device=device)
        n = 0
        for batch in probe.batches(device):
            total += fn(model(batch.x).float(), batch.y, reduction="sum").double()
            n += len(batch.y)
        return float(total / n)
