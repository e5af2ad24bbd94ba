"""SFM: the information entropy of each filter's feature map (seed 000), with three streamed estimators.

Source: "saliency of the feature map" (SFM, seed 000, abstract only): the entropy of a filter's feature map is
its importance; low-entropy filters are pruned early in training.
Reconstructed (methods.md): the estimator, and the map of a conv that feeds a residual add; both defaults are
the measured most reproducible ranking (``experiments/sfm_reliability.py``: median per-layer Spearman between
two disjoint 640-image probes of the CIFAR-10 train split, seeds 0 and 1, on the bundled ResNet-20).

- ``"pooled"`` (default; 0.97 with ``reads="post_add"``, 0.93 with ``"pre_add"``): one histogram of every value
  of the channel over images and positions, in ``bins`` equal bins over the channel's range on the probe set,
  H = -sum p ln p (nats; a constant channel scores 0).
- ``"gap"`` (0.54 / 0.50): the estimator of Luo and Wu (2017), which SFM builds on: per probe image the spatial
  mean of the channel's map (global average pooling), the N values histogrammed over their own [min, max].
  N values spread over 32 bins make a noisy histogram: its ranking barely reproduces from one probe to another.
- ``"spatial"`` (1.00 / 1.00): per image, softmax over the H*W positions, its entropy, averaged over images.
  **Opposite sense**: a flat (uninformative) map has the *maximum* spatial entropy, ln(H*W); reproducible, but
  not the entropy SFM means, so not the default.

``reads`` (default ``"post_add"``): for a conv whose BN output goes straight into a residual add, the map after
the add and its ReLU (pooled: median Spearman 0.97 over those 9 convs of ResNet-20, against 0.70 on their BN
outputs, ``"pre_add"``); every other conv is read after its BN and activation either way.

Streaming: every estimator reads the probe **once** (all layers share the pass). gap keeps the per-image,
per-filter spatial means (O(N x C) memory per layer) and counts them at the end: the same counts as the former
second pass over the probe, exactly. pooled cannot keep every value; it counts each batch in fine cells over the
batch's own range and regroups them into the final bins at the end: within 1/32 of a bin of the exact counts
(:mod:`prunekit.criteria.histograms`, with the measured difference). spatial keeps a running sum per filter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from prunekit.criteria.base import Criterion, Param, Scores, register_criterion
from prunekit.criteria.histograms import GapCounts, PooledCounts
from prunekit.criteria.hooks import eval_mode
from prunekit.criteria.probe import Batch, Probe
from prunekit.criteria.stats import entropy
from prunekit.criteria.streaming import Progress, Ticker, per_image_mean, stream
from prunekit.errors import UserError
from prunekit.models.layers import READS, ConvLayer

__all__ = ["SFMEntropy", "Histogram", "value_histograms"]

ESTIMATORS = ("gap", "pooled", "spatial")


@dataclass
class Histogram:
    """Per-filter histograms of one layer: counts int64 (C, bins) over equal bins from lo[c] to hi[c]
    (float (C,)); estimator: 'gap' (one spatial mean per image) or 'pooled' (every value)."""

    counts: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    estimator: str

    def entropy(self) -> torch.Tensor:
        """H = -sum p ln p per filter, float64 (C,)."""
        return entropy(self.counts)


def value_histograms(
    model: nn.Module,
    layers: list[ConvLayer],
    probe: Probe,
    *,
    estimator: str = "pooled",
    bins: int = 32,
    reads: str = "post_add",
    progress: Progress | None = None,
) -> dict[str, Histogram]:
    """The histograms behind the gap / pooled entropies, for every layer, in one streamed pass of the feature
    maps read under ``reads`` (:mod:`prunekit.models.layers`; :mod:`prunekit.criteria.histograms` for what is kept
    meanwhile: O(N x C) per layer for gap, O(batches x C x 16 bins) for pooled); ``progress(done, len(probe))``
    after each batch. The model is in eval mode meanwhile."""
    if estimator not in ("gap", "pooled"):
        raise UserError(f"histograms exist for estimator 'gap' or 'pooled', got {estimator!r}")
    kind = GapCounts if estimator == "gap" else PooledCounts
    kept = {layer.name: kind(bins) for layer in layers}

    def add(layer: ConvLayer, fmap: torch.Tensor, batch: Batch) -> None:
        kept[layer.name].add(fmap)

    with eval_mode(model):
        stream(model, layers, probe, add, Ticker(len(probe), progress), reads)
    return {name: Histogram(*k.result(), estimator) for name, k in kept.items() if k.parts}


def spatial_entropy(fmap: torch.Tensor) -> torch.Tensor:
    """fmap (B, C, H, W) -> float64 (B, C): entropy (nats) of the softmax over the H*W positions,
    H = ln Z - sum e t / Z with t = x - max x, e = exp t, Z = sum e; two float32 temporaries (B, C, H*W)."""
    x = fmap.flatten(2).float()
    t = x - x.amax(-1, keepdim=True)
    e = t.exp()
    z = e.sum(-1).double()
    return z.log() - torch.linalg.vecdot(e, t).double() / z


@register_criterion
class SFMEntropy(Criterion):
    """SFM entropy; see the module docstring for the estimators and the streaming."""

    name = "sfm_entropy"
    unit = "entropy (nats)"
    seed_doc = 0
    revision = 2  # pooled in one pass (fine cells per batch, regrouped; within 1/32 of a bin); spatial in float32
    description = (
        "SFM (seed 000): entropy of each filter's feature map over the probe set; low entropy = prunable. "
        "Established: entropy as importance, pruning early in training. Reconstructed: the estimator and the map "
        "read, defaults chosen as the most reproducible ranking (median per-layer Spearman between two disjoint "
        "640-image probes, ResNet-20): 'pooled' (default, 0.97): histogram of every value of the map; 'gap' "
        "(Luo & Wu 2017, 0.54): histogram of the per-image spatial means; 'spatial' (1.00, but opposite sense: a "
        "flat map has the maximum): per-image softmax entropy over positions, averaged. reads='post_add' "
        "(default): a conv feeding a residual add is read after the add and its ReLU (0.97 on those convs, 0.70 "
        "on their BN outputs). One streamed pass for every estimator."
    )
    params = (
        Param("estimator", "pooled", "how the entropy is estimated; ranking reproducibility (median per-layer "
              "Spearman, two disjoint 640-image probes, ResNet-20): pooled 0.97, gap 0.54, spatial 1.00 (opposite "
              "sense)", choices=ESTIMATORS),
        Param("bins", 32, "histogram bins (gap and pooled)", low=2, high=4096),
        Param("reads", "post_add", "map of a conv that feeds a residual add: after the add and its activation "
              "(post_add; pooled Spearman 0.97 on those convs) or its BN output (pre_add; 0.70)", choices=READS),
    )
    needs_data = True

    @property
    def reads(self) -> str:
        """The map read for a conv that feeds a residual add: this criterion's ``reads`` parameter."""
        return self.config["reads"]

    @property
    def caveat(self) -> str:
        if self.config["estimator"] == "spatial":
            return ("spatial entropy has the opposite sense: a flat, uninformative map has the maximum entropy "
                    "ln(H*W), so a high score is not evidence of importance here")
        if self.config["estimator"] == "gap":
            return ("the gap estimator's ranking is poorly reproducible: median per-layer Spearman 0.54 between two "
                    "disjoint 640-image probes on ResNet-20 (pooled: 0.97)")
        return ""

    def _score(self, model: nn.Module, layers: list[ConvLayer], probe: Probe, progress: Progress) -> Scores:
        estimator = self.config["estimator"]
        if estimator != "spatial":
            hists = value_histograms(model, layers, probe, estimator=estimator, bins=self.config["bins"],
                                     reads=self.reads, progress=progress)
            return Scores({name: h.entropy() for name, h in hists.items()})
        return Scores(per_image_mean(model, layers, probe, spatial_entropy, progress, self.reads))
