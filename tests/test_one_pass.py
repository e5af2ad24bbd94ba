"""One pass over the probe for every data-driven criterion: the gap histograms exactly as the former
two passes counted them, the pooled ones within their stated bound, and each probe read once, reliability too."""
import numpy as np
import pytest
import torch
from saliency_testkit import SmallNet, identity_tap, probe_batches, single_thread  # noqa: F401  (autouse fixture)

from prunekit.criteria import criterion_class, get_criterion, histograms, list_criteria
from prunekit.criteria.entropy import value_histograms
from prunekit.criteria.histograms import LANES, MAX_COUNTERS, MAX_LANE_COUNTERS, SUB, PooledCounts, count_indices
from prunekit.criteria.stats import bin_counts
from prunekit.criteria.streaming import stream
from prunekit.models.layers import conv_layers
from prunekit.criteria.probe import as_probe
from prunekit.analysis.reliability import reliability

DATA_CRITERIA = [n for n in list_criteria() if criterion_class(n).needs_data]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def batches(sizes, seed=0, boxes=False):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)
    if not boxes:
        return probe_batches(x, y, sizes)
    corners = torch.randint(0, 8, (n, 2), generator=g).float()
    b = [torch.cat([c, c + 8])[None] for c in corners]
    starts = np.cumsum([0] + sizes)
    return [(x[s:e], y[s:e], b[s:e]) for s, e in zip(starts[:-1], starts[1:])]


def two_pass_gap(model, layers, probe, bins, reads):
    """The former design: every filter's range of the per-image means in a first pass, counts in a second."""
    lo, hi, counts = {}, {}, {}

    def ranges(layer, fmap, batch):
        v = fmap.mean((2, 3))
        lo[layer.name] = torch.minimum(lo[layer.name], v.amin(0)) if layer.name in lo else v.amin(0)
        hi[layer.name] = torch.maximum(hi[layer.name], v.amax(0)) if layer.name in hi else v.amax(0)

    def count(layer, fmap, batch):
        c = bin_counts(fmap.mean((2, 3)), lo[layer.name], hi[layer.name], bins)
        counts[layer.name] = counts[layer.name] + c if layer.name in counts else c

    with torch.no_grad():
        for fn in (ranges, count):
            stream(model.eval(), layers, probe, fn, lambda: None, reads)
    return counts, lo, hi


@pytest.mark.parametrize("reads", ["pre_add", "post_add"])
def test_gap_in_one_pass_counts_exactly_what_two_passes_counted(reads):
    model = SmallNet(seed=3)
    layers = conv_layers(model)
    probe = as_probe(batches([7, 9, 4]))
    counts, lo, hi = two_pass_gap(model, layers, probe, 8, reads)
    one = value_histograms(model, layers, probe, estimator="gap", bins=8, reads=reads)
    for layer in layers:
        h = one[layer.name]
        assert torch.equal(h.counts, counts[layer.name]) and h.counts.dtype == torch.int64
        assert torch.equal(h.lo, lo[layer.name]) and torch.equal(h.hi, hi[layer.name])


def maps(values):
    """One batch of 1x1 maps of one channel: the values themselves."""
    x = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)
    return x, torch.zeros(len(values), dtype=torch.long)


def pooled(model, batch_list, bins):
    """The pooled histogram of the single layer of ``model`` over the probe ``batch_list``."""
    return value_histograms(model, conv_layers(model), as_probe(batch_list), bins=bins)["0"]


def test_pooled_counts_by_hand():
    # 4 bins over [0, 4]: edges 0, 1, 2, 3, 4; exactly 0, 0.99, 0 in bin 0, 3 and 4 in bin 3
    tap = identity_tap(1)
    # the batch spans the probe's range: exact
    assert pooled(tap, [maps([0, 0.99, 3, 0, 4])], 4).counts.tolist() == [[3, 0, 0, 2]]
    # two batches: the first over [0, 3] in 64 cells of 3/64; 0.99 lies in the cell [63/64, 66/64) whose
    # midpoint (1.0078) is in bin 1: counted there, 0.0100 from the edge at 1 (less than half a cell, 0.0234)
    split = pooled(tap, [maps([0, 0.99, 3]), maps([0, 4])], 4)
    assert SUB == 16 and split.counts.tolist() == [[2, 1, 0, 2]]
    assert split.lo.tolist() == [0.0] and split.hi.tolist() == [4.0]
    assert pooled(tap, [maps([2, 2]), maps([2])], 4).counts.tolist() == [[3, 0, 0, 0]]  # constant: all in bin 0


def test_pooled_counts_are_within_half_a_cell_of_the_exact_ones():
    g = torch.Generator().manual_seed(5)
    scales = [0.5, 2.0, 1.0, 3.0]  # batches with different ranges
    parts = [torch.randn(6, 3, 5, 5, generator=g) * s + torch.tensor([0.0, 1.0, -2.0]).view(1, 3, 1, 1)
             for s in scales]
    model = identity_tap(3)
    bins = 8
    h = pooled(model, [(p, torch.zeros(6, dtype=torch.long)) for p in parts], bins)
    every = torch.cat(parts)
    for c in range(3):
        v = every[:, c].double().numpy().ravel()
        lo, hi = v.min(), v.max()
        exact, edges = np.histogram(v, bins=bins, range=(lo, hi))
        assert (h.lo[c].item(), h.hi[c].item()) == pytest.approx((lo, hi))
        moved = np.abs(h.counts[c].numpy() - exact).sum() / 2
        half_cells = [(p[:, c].max() - p[:, c].min()).item() / (2 * SUB * bins) for p in parts]
        near = sum(int((np.abs(p[:, c].double().numpy().ravel()[:, None] - edges[None, 1:-1]) < w).any(1).sum())
                   for p, w in zip(parts, half_cells))
        assert h.counts[c].sum() == v.size and moved <= near  # only values that close to an edge moved


@pytest.fixture
def threads(monkeypatch):
    """Four torch threads and no least chunk, so that the CPU counting splits even a tiny map."""
    monkeypatch.setattr(histograms, "MIN_CHUNK", 1)
    torch.set_num_threads(4)  # the autouse single_thread fixture restores the former count afterwards


def test_threaded_counting_is_one_bincount(threads, monkeypatch):
    lengths = []
    bincount = torch.bincount
    monkeypatch.setattr(torch, "bincount", lambda x, minlength:
                        lengths.append(len(x)) or bincount(x, minlength=minlength))
    # 7 values, 3 counters: 2 chunks of at least 3 values, fewer than the 4 threads
    assert count_indices(torch.tensor([2, 0, 2, 1, 2, 0, 2], dtype=torch.int32), 3).tolist() == [2, 1, 4]
    assert sorted(lengths) == [3, 4]
    lengths.clear()
    assert count_indices(torch.tensor([1], dtype=torch.int32), 4).tolist() == [0, 1, 0, 0] and lengths == [1]
    idx = torch.randint(0, 1000, (100_003,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    lengths.clear()
    counts = count_indices(idx, 1000)
    assert sorted(lengths) == [25_000, 25_001, 25_001, 25_001] and counts.dtype == torch.int64
    assert torch.equal(counts, bincount(idx, minlength=1000))


def one_bincount(fmap, bins):
    """A batch's cell counts int32 (C, cells + 1) as one torch.bincount of every value counts them (the known
    answer for the threads and the counter copies)."""
    c = fmap.shape[1]
    cells = max(1, min(SUB, MAX_COUNTERS // (c * bins))) * bins
    lo, hi = fmap.amin((0, 2, 3)).view(1, c, 1, 1), fmap.amax((0, 2, 3)).view(1, c, 1, 1)
    scale = torch.where(hi > lo, cells / (hi - lo), torch.zeros_like(lo))
    idx = ((fmap - lo) * scale).to(torch.int32) + torch.arange(c, dtype=torch.int32).view(1, c, 1, 1) * (cells + 1)
    return torch.bincount(idx.reshape(-1), minlength=c * (cells + 1)).view(c, cells + 1).to(torch.int32)


@pytest.mark.parametrize("shape,bins", [((8, 3, 16, 16), 8), ((2, 1, 1, 1), 4), ((3, 2, 7, 3), 32),
                                        ((2, 128, 2, 2), 32)])
def test_pooled_batches_are_counted_as_one_bincount_counts_them(threads, shape, bins):
    g = torch.Generator().manual_seed(7)
    fmap = torch.randn(shape, generator=g).relu()  # runs of zeros: equal cells side by side
    fmap[:, 0] = 1.5 if shape[1] > 1 else fmap[:, 0]  # a constant channel where there are two
    kept = PooledCounts(bins)
    kept.add(fmap)
    c = shape[1]
    lanes = LANES * c * (max(1, min(SUB, MAX_COUNTERS // (c * bins))) * bins + 1) <= MAX_LANE_COUNTERS
    assert lanes == (c < 128)  # both with and without counter copies
    counts, lo, hi = kept.parts[0]
    assert torch.equal(counts, one_bincount(fmap, bins)) and counts.dtype == torch.int32
    assert torch.equal(lo, fmap.amin((0, 2, 3))) and torch.equal(hi, fmap.amax((0, 2, 3)))


def count_forwards(model):
    calls = []
    return calls, model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))


ONE_PASS = [(n, {}) for n in DATA_CRITERIA if n != "linear_ensembles"] + [
    ("sfm_entropy", {"estimator": "gap"}), ("sfm_entropy", {"estimator": "spatial"}),
    ("taylor", {"form": "iclr2017"})]


@pytest.mark.parametrize("name,params", ONE_PASS)
def test_each_probe_is_read_once_for_the_scores_and_for_the_reliability(name, params):
    model = SmallNet(seed=3)
    boxes = criterion_class(name).needs_boxes
    a, b = batches([5, 6, 5], seed=0, boxes=boxes), batches([8, 8], seed=1, boxes=boxes)
    calls, hook = count_forwards(model)
    get_criterion(name, **params).score(model, probe=a)
    assert calls == [5, 6, 5]  # one forward per batch: the probe read once
    calls.clear()
    reliability(model, name, a, b, cache=False, **params)
    assert calls == [5, 6, 5, 8, 8]  # probe A once, probe B once
    hook.remove()


def test_linear_ensembles_reads_the_probe_once_per_mask():
    model = SmallNet(seed=3)
    calls, hook = count_forwards(model)
    get_criterion("linear_ensembles", samples=3, joint=True).score(model, probe=batches([5, 6]))
    assert calls == [5, 6] * 3
    hook.remove()
