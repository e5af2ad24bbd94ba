"""Small numerical helpers shared by the criteria: min-max scaling, histogram entropy, per-channel bins and counts."""
from __future__ import annotations

import torch

__all__ = ["minmax", "entropy", "bin_index", "bin_counts"]


def minmax(v: torch.Tensor) -> torch.Tensor:
    """``v`` (n,) scaled to [0, 1] by its min and max; all zeros when it is constant."""
    lo, hi = v.min(), v.max()
    return torch.zeros_like(v) if hi == lo else (v - lo) / (hi - lo)


def entropy(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of histograms ``counts`` (..., bins) -> (...); 0 for an empty or one-bin
    histogram. ``counts`` may be integer or float (unnormalised)."""
    counts = counts.double()
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1e-300)
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


def bin_index(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin of each value: ``values`` (B, C, ...) with ranges ``lo``/``hi`` (C,) -> int64, same shape, in
    [0, bins). ``bins`` equal bins over [lo_c, hi_c]; a value equal to hi_c falls in the last bin, values outside
    the range are clamped into the end bins, and a constant channel (hi_c == lo_c) puts everything in bin 0."""
    shape = (1, values.shape[1]) + (1,) * (values.ndim - 2)
    span = (hi - lo).view(shape)
    scale = torch.where(span > 0, bins / span, torch.zeros_like(span))
    return ((values - lo.view(shape)) * scale).floor().long().clamp_(0, bins - 1)


def bin_counts(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-channel histograms: ``values`` (B, C, ...) with ranges ``lo``/``hi`` (C,) -> int64 (C, bins), the
    bins of :func:`bin_index`."""
    c = values.shape[1]
    idx = bin_index(values, lo, hi, bins)
    idx += (torch.arange(c, device=values.device) * bins).view((1, c) + (1,) * (values.ndim - 2))
    return torch.bincount(idx.flatten(), minlength=c * bins).view(c, bins)
