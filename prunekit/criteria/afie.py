"""AFIE: average filter information entropy, a layer score that allocates per-layer pruning ratios (seed 004).

Source: Lu et al., arXiv 2208.06660, AAAI 2024 (seed 004, abstract only): a low-rank decomposition of each
conv layer's "input-output" matrix, normalisation of its eigenvalues, their entropy; stable after one epoch.
Reconstructed (methods.md): M_l = W_l averaged over the k x k kernel (C_out x C_in/g); s = singular values of
M_l, min-max scaled to [0, 1]; q = softmax(s); K_l = -sum q ln q; AFIE_l = K_l / C_out(l). Singular values
whose spread max(s) - min(s) is within round-off, at most max(C_out, C_in/g) * eps(weight dtype) * max(s) (the
tolerance under which ``torch.linalg.matrix_rank`` calls singular values equal to zero), are all equal: q is
uniform and K_l = ln(n) for n singular values (an orthogonal layer), instead of min-max scaling blowing the
round-off up to the full [0, 1] range. For a global
target lambda*, ratios lambda_l = lambda_min * AFIE_max / AFIE_l (capped at ``cap``; a layer with AFIE 0 gets
the cap), lambda_min solved by bisection so that the pruned fraction of filters (``by="filters"``) or of conv
multiply-adds (``by="flops"``, each layer's own MACs at ``image_size``) is lambda*. Inside a layer the filters
are ranked by a second, data-free criterion (``within``, default L1): those are the per-filter scores.
``info`` holds per layer ``afie``, ``entropy`` (K_l), ``ln_min_dim`` (ln min(C_in/g, C_out)) and ``ratio``.

Note for teaching: with min-max scaling, K_l lies within about 0.12 of ln(min(C_in, C_out)), so AFIE depends
mostly on the layer's shape, not on what it learnt; ``info`` shows K_l beside ln min(C_in, C_out) to make this
visible.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from prunekit.criteria.base import Criterion, Param, Scores, get_criterion, register_criterion
from prunekit.criteria.hooks import capture
from prunekit.criteria.probe import Probe
from prunekit.criteria.stats import minmax
from prunekit.criteria.streaming import Progress, model_device
from prunekit.defaults import MAX_RATIO
from prunekit.errors import UserError
from prunekit.models.layers import ConvLayer

__all__ = ["AFIE", "afie_entropy", "allocate_ratios", "conv_macs"]

WITHIN = ("l1", "l2", "fpgm", "bn_scale", "capacity", "independence", "information", "random")


def afie_entropy(weight: torch.Tensor) -> float:
    """K_l of a conv weight (C_out, C_in/g, kh, kw): entropy (nats) of softmax(minmax(singular values of the
    kernel-averaged C_out x C_in/g matrix)), ln(n) when the n singular values are equal within round-off
    (see the module docstring). AFIE_l = K_l / C_out."""
    m = weight.detach().double().mean((2, 3))
    s = torch.linalg.svdvals(m)
    tolerance = max(m.shape) * torch.finfo(weight.dtype).eps * s.max()
    scaled = torch.zeros_like(s) if s.max() - s.min() <= tolerance else minmax(s)
    logq = torch.log_softmax(scaled, dim=0)
    return float(-(logq.exp() * logq).sum())


def allocate_ratios(
    afie: dict[str, float], target: float, weights: dict[str, float], cap: float = MAX_RATIO
) -> dict[str, float]:
    """Per-layer pruning ratios lambda_l = min(cap, lambda_min * AFIE_max / AFIE_l) (cap where AFIE_l = 0),
    with lambda_min such that sum_l lambda_l w_l / sum_l w_l = target; ``weights`` w_l are the layers' filter
    counts (or MACs). ``target`` must be in (0, cap]."""
    if not 0 < target <= cap:
        raise UserError(f"target must be in (0, cap={cap:g}], got {target!r}")
    top = max(afie.values())
    if top <= 0:
        raise UserError("AFIE is 0 in every layer (each kernel matrix has a single distinct singular value): "
                         "ratios cannot be allocated from it")
    total = sum(weights.values())

    def ratios(lam: float) -> dict[str, float]:
        return {k: cap if a <= 0 else min(cap, lam * top / a) for k, a in afie.items()}

    lo, hi = 0.0, cap  # pruned fraction is nondecreasing in lambda_min: 0 at 0, cap at cap
    for _ in range(100):
        mid = (lo + hi) / 2
        frac = sum(r * weights[k] for k, r in ratios(mid).items()) / total
        lo, hi = (mid, hi) if frac < target else (lo, mid)
    return ratios(hi)


def conv_macs(model: nn.Module, layers: list[ConvLayer], image_size: int) -> dict[str, float]:
    """Multiply-adds of each layer's own conv for one image_size x image_size input (a zeros forward)."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    x = torch.zeros(1, first.in_channels, image_size, image_size, device=model_device(model))
    out: dict[str, float] = {}

    def record(layer: ConvLayer, fmap: torch.Tensor) -> None:
        conv = layer.module
        kh, kw = conv.kernel_size
        out[layer.name] = float(conv.out_channels * conv.in_channels // conv.groups * kh * kw * fmap[0, 0].numel())

    with torch.no_grad(), capture(model, layers, record):
        model(x)
    return out


@register_criterion
class AFIE(Criterion):
    """AFIE layer scores and ratio allocation; per-filter scores from the ``within`` criterion."""

    name = "afie"
    unit = "within-layer score"
    seed_doc = 4
    revision = 2  # singular values equal within round-off: uniform q (K = ln n), no longer min-max scaled noise
    description = (
        "AFIE (Lu et al., arXiv 2208.06660, AAAI 2024, seed 004): a layer score. Established: entropy of the "
        "normalised spectrum of each layer's input-output matrix. Reconstructed: kernel-averaged weight matrix, "
        "min-max scaled singular values (all equal within round-off: uniform, K = ln n), softmax, entropy / C_out; "
        f"ratios lambda_l = lambda_min * AFIE_max / AFIE_l (cap {MAX_RATIO}) meeting the target by filters or FLOPs; "
        "filters inside a layer ranked by 'within' (default L1). Data-free. AFIE depends mostly on layer shape "
        "(K_l ~ ln min(C_in, C_out))."
    )
    params = (
        Param("target", 0.5, "global fraction to prune (of filters, or of conv FLOPs)", low=0.0, open_low=True,
              high=MAX_RATIO),
        Param("by", "filters", "what the target counts", choices=("filters", "flops")),
        Param("within", "l1", "data-free criterion ranking the filters inside a layer", choices=WITHIN),
        Param("cap", MAX_RATIO, "largest ratio of one layer", low=0.0, high=1.0, open_low=True, open_high=True),
        Param("image_size", 32, "input side for the FLOPs of by='flops'", low=8, high=4096),
    )

    def __init__(self, **params):
        super().__init__(**params)
        if self.config["target"] > self.config["cap"]:
            raise UserError(f"target must be at most cap ({self.config['cap']:g}), got {self.config['target']:g}")

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe | None, progress: Progress) -> Scores:
        within = get_criterion(self.config["within"]).score(model, layers, progress=progress)
        entropy = {layer.name: afie_entropy(layer.module.weight) for layer in layers}
        afie = {layer.name: entropy[layer.name] / layer.out_channels for layer in layers}
        if self.config["by"] == "filters":
            weights = {layer.name: float(layer.out_channels) for layer in layers}
        else:
            weights = conv_macs(model, layers, self.config["image_size"])
        ratios = allocate_ratios(afie, self.config["target"], weights, self.config["cap"])
        ln_min = {
            layer.name: math.log(min(layer.out_channels, layer.module.in_channels // layer.module.groups))
            for layer in layers
        }
        info = {"afie": afie, "entropy": entropy, "ln_min_dim": ln_min, "ratio": ratios}
        return Scores(dict(within), info)
