"""The per-filter value histograms behind SFM's gap and pooled entropies, counted while the probe is read once.

Each accumulator takes a layer's feature maps (B, C, H, W) batch by batch (:meth:`add`) and gives, at the end,
int64 counts (C, bins) over ``bins`` equal bins from lo[c] to hi[c], the filter's range on the whole probe
(:meth:`result`). The range is only known at the end, so neither counts into the final bins while it reads:

- :class:`GapCounts` keeps the per-image, per-filter spatial means, float (N, C) per layer: O(N x C) memory
  (640 images x 64 filters: 160 KiB), then counts them with :func:`prunekit.criteria.stats.bin_counts` over
  their own [min, max]: the counts of a second pass over the probe, exactly (the same means, the same bins).
- :class:`PooledCounts` counts every value of the map, too many to keep (640 x 64 x 32 x 32 for one layer).
  Per batch and filter it counts them in ``sub * bins`` equal *cells* over the batch's own range [lo_b, hi_b]
  (``sub`` = 16 cells per final bin; fewer, at least 1, when a layer has so many filters that a batch would
  need over 2^22 counters), plus one cell for the values equal to hi_b; it keeps those int32 counts:
  O(batches x C x sub x bins) memory (5 batches x 64 filters x 513 cells: 640 KiB). At the end each cell's
  count goes to the final bin of its midpoint (of hi_b for the last cell). **Approximate**: a value is binned
  as if it were its cell's midpoint, less than half a cell, (hi_b - lo_b) / (2 sub bins) <= 1/32 of a final
  bin, away: it lands in its exact bin, or in the neighbouring one when it lies that close to the edge
  between them. A batch whose range is the probe's (it holds the filter's minimum and maximum) is counted
  exactly: its cell edges include every bin edge. Measured against the exact two-pass counts on the bundled
  ResNet-20 (``experiments/pooled_one_pass.py``, 640 CIFAR-10 train images, seed 0, 32 bins): per-layer
  Spearman between the one-pass and the exact entropies >= 0.9993 with reads post_add (>= 0.9971 pre_add),
  max |delta H| 0.0044 nats, at most 0.34% (0.45%) of a layer's values counted in a neighbouring bin.

  While it counts a batch it holds one temporary of the batch's size (float32, overwritten in place by its int32
  cell indices) and its counters. ``torch.bincount`` counts on one thread on the CPU, and a run of equal values
  (a ReLU's zeros) makes it wait on one counter: on the CPU the indices go to ``LANES`` = 4 copies of the
  counters by position (while those stay within 2^18, 2 MiB of int64) and are counted in up to
  ``torch.get_num_threads()`` chunks by worker threads (:func:`count_indices`), then summed: integer counts,
  exactly those of one bincount. Over every conv, as a ratio to a plain forward pass (640 images, torch's 2
  threads, ``benchmarks/entropy_speed.py`` on a 2-core AMD EPYC under load 3.7-4.1): ResNet-56 1.65x, VGG-16-BN
  1.26x (2.10x / 1.33x before, at load 1.0-1.7); interleaved in one run, former / this code: 1.68x / 1.61x and
  1.48x / 1.30x, in another 1.72x / 1.74x and 1.55x / 1.47x. On the quiet machine (load 0.9-1.8): 2.02x / 1.38x,
  against a floor of 1.25x / 1.15x for exact counting at torch.bincount's speed on both threads (README).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch

from prunekit.criteria.stats import bin_counts, bin_index

__all__ = ["GapCounts", "PooledCounts", "SUB", "MAX_COUNTERS", "LANES", "MAX_LANE_COUNTERS", "MIN_CHUNK",
           "count_indices", "cell_indices"]

SUB = 16  # cells per final bin (pooled)
MAX_COUNTERS = 1 << 22  # most counters of one layer's batch histogram (pooled)
LANES = 4  # copies of each counter on the CPU, so that a run of equal values is not counted into one counter
MAX_LANE_COUNTERS = 1 << 18  # no copies beyond this many counters in all (2 MiB of int64, cache-resident)
MIN_CHUNK = 1 << 16  # fewest values one CPU thread counts


@cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """The worker threads that count the chunks (one pool per thread count, kept for the process)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="prunekit-bincount")


def count_indices(idx: torch.Tensor, n: int) -> torch.Tensor:
    """int64 (n,): ``torch.bincount(idx, minlength=n)`` of the int indices ``idx`` (M,) in [0, n), exactly. On the
    CPU (where bincount uses one thread) ``idx`` is split into up to ``torch.get_num_threads()`` chunks of at least
    ``max(MIN_CHUNK, n)`` values each, counted in parallel by worker threads (torch releases the GIL) and summed:
    integer counts, so the sum is exact; other devices count in one call."""
    chunks = 1 if idx.device.type != "cpu" else min(torch.get_num_threads(), len(idx) // max(MIN_CHUNK, n))
    if chunks <= 1:
        return torch.bincount(idx, minlength=n)
    parts = list(_pool(chunks).map(lambda part: torch.bincount(part, minlength=n), idx.chunk(chunks)))
    for part in parts[1:]:
        parts[0] += part
    return parts[0]


def _offsets(c: int, h: int, w: int, cells: int, lanes: int, device: torch.device) -> torch.Tensor:
    """int32 (1, c, h, w): where each position's cell index starts among the ``lanes x c x (cells + 1)`` counters:
    channel k at k (cells + 1), in copy (h_i w + w_i) mod lanes, so that neighbouring values use different copies."""
    channel = torch.arange(c, dtype=torch.int32, device=device) * (cells + 1)
    lane = torch.arange(h * w, dtype=torch.int32, device=device) % lanes * (c * (cells + 1))
    return (channel.view(c, 1, 1) + lane.view(1, h, w)).unsqueeze(0)


def cell_indices(fmap: torch.Tensor, bins: int) -> tuple[torch.Tensor, int, int, torch.Tensor, torch.Tensor]:
    """The pooled estimator's view of one batch ``fmap`` (B, C, H, W): (idx int32 (B*C*H*W,), counters n, lanes,
    lo, hi (C,)): each value's cell among ``cells + 1`` per filter over the batch's own range [lo, hi] (cells =
    ``sub * bins``, see the module docstring), offset into its filter's counters in its position's copy of them
    (``lanes`` copies of ``n = C (cells + 1)`` counters on the CPU while they stay within ``MAX_LANE_COUNTERS``, else
    1). One temporary of the batch's size: float32, then its cell indices in place as int32."""
    c, h, w = fmap.shape[1:]
    cells = max(1, min(SUB, MAX_COUNTERS // (c * bins))) * bins
    n = c * (cells + 1)
    lanes = LANES if fmap.device.type == "cpu" and LANES * n <= MAX_LANE_COUNTERS else 1
    shape = (1, c, 1, 1)
    lo = fmap.amin((2, 3)).amin(0)  # per image first: a contiguous reduction, much faster than over (0, 2, 3)
    hi = fmap.amax((2, 3)).amax(0)
    span = (hi - lo).float()
    scale = torch.where(span > 0, cells / span, torch.zeros_like(span))
    t = fmap.float() - lo.float().view(shape)  # >= 0; no copy of a float32 fmap before it
    t *= scale.view(shape)  # in [0, cells]: cells only for the values equal to hi
    idx = t.view(torch.int32).copy_(t)  # in place (no second temporary); truncation: the floor of a value >= 0
    idx += _offsets(c, h, w, cells, lanes, fmap.device)
    return idx.reshape(-1), n, lanes, lo, hi


class GapCounts:
    """The gap estimator's histograms: the N per-image spatial means of each filter, counted at the end."""

    def __init__(self, bins: int):
        self.bins = bins
        self.parts: list[torch.Tensor] = []  # the means (B, C) of each batch

    def add(self, fmap: torch.Tensor) -> None:
        """Keep the spatial means (B, C) of ``fmap`` (B, C, H, W)."""
        self.parts.append(fmap.mean((2, 3)))

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """counts int64 (C, bins), lo, hi (C,): the means' own range."""
        v = torch.cat(self.parts)  # (N, C)
        lo, hi = v.amin(0), v.amax(0)
        return bin_counts(v, lo, hi, self.bins), lo, hi


class PooledCounts:
    """The pooled estimator's histograms: per batch, every value in fine cells over the batch's range; the
    cells regrouped into the final bins at the end (see the module docstring for the bound)."""

    def __init__(self, bins: int):
        self.bins = bins
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (counts, lo_b, hi_b) per batch

    def add(self, fmap: torch.Tensor) -> None:
        """Count ``fmap`` (B, C, H, W) in int32 (C, cells + 1) over its own per-filter range: its
        :func:`cell_indices` counted by :func:`count_indices`, the copies of the counters summed."""
        idx, n, lanes, lo, hi = cell_indices(fmap, self.bins)
        counts = count_indices(idx, lanes * n).view(lanes, n).sum(0)
        self.parts.append((counts.view(fmap.shape[1], -1).to(torch.int32), lo, hi))

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """counts int64 (C, bins), lo, hi (C,): the range over every batch."""
        lo = torch.stack([p[1] for p in self.parts]).amin(0)
        hi = torch.stack([p[2] for p in self.parts]).amax(0)
        out = torch.zeros(len(lo), self.bins, dtype=torch.int64, device=lo.device)
        for counts, lo_b, hi_b in self.parts:
            cells = counts.shape[1] - 1
            steps = (torch.arange(cells + 1, dtype=torch.float64, device=lo.device) + 0.5) / cells
            mid = lo_b.double()[:, None] + steps[None, :] * (hi_b - lo_b).double()[:, None]  # (C, cells + 1)
            mid[:, cells] = hi_b.double()
            idx = bin_index(mid.T, lo.double(), hi.double(), self.bins).T  # (C, cells + 1)
            out.scatter_add_(1, idx, counts.long())
        return out, lo, hi
