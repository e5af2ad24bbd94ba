"""What the dashboard draws (prunekit.analysis.views), checked against hand-made cases and plain numpy."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from saliency_testkit import SmallNet, identity_tap, probe_batches, single_thread  # noqa: F401

from prunekit.criteria import get_criterion
from prunekit.criteria.scores import score
from prunekit.analysis.views import (
    cluster_order,
    feature_correlation,
    feature_map_grid,
    feature_maps,
    rank_agreement,
    rank_stability,
    score_histogram,
    value_histograms,
    weight_correlation,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def table(layer_scores):
    rows = [(layer, f, "x", s) for layer, values in layer_scores.items() for f, s in enumerate(values)]
    df = pd.DataFrame(rows, columns=["layer", "filter", "criterion", "score"])
    df["rank"] = df.groupby("layer")["score"].rank(method="first", ascending=False).astype(int)
    return df


def test_score_histogram_per_layer():
    h = score_histogram(table({"a": [0.0, 0.1, 0.9, 1.0], "b": [2.0, 2.0]}), bins=2)
    a = h[h.layer == "a"]
    assert a["count"].tolist() == [2, 2] and a["left"].tolist() == [0.0, 0.5] and a["right"].tolist()[-1] == 1.0
    assert h[h.layer == "b"]["count"].tolist() == [2]  # equal scores: one bin holding every filter
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        score_histogram(table({"a": [1.0]}), bins=0)


def test_value_histograms_are_the_counts_behind_the_entropy():
    means = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]]).T
    x = means[:, :, None, None].expand(4, 2, 2, 2).contiguous()
    probe = probe_batches(x, torch.zeros(4, dtype=torch.long), [2, 2])
    h = value_histograms(identity_tap(2), "0", probe, bins=4, estimator="gap")
    assert len(h) == 2 * 4
    assert h[h["filter"] == 0]["count"].tolist() == [2, 0, 0, 2]
    assert h[h["filter"] == 1]["count"].tolist() == [1, 1, 1, 1]
    assert h[h["filter"] == 1]["left"].tolist() == [0.0, 0.75, 1.5, 2.25]
    entropy = get_criterion("sfm_entropy", bins=4, estimator="gap").score(identity_tap(2), probe=probe)["0"]
    assert h.groupby("filter")["entropy"].first().tolist() == pytest.approx(entropy.tolist())
    assert entropy[1].item() == pytest.approx(math.log(4))
    pooled = value_histograms(identity_tap(2), "0", probe, bins=4)  # the default, as sfm_entropy's: every value
    assert pooled[pooled["filter"] == 0]["count"].tolist() == [8, 0, 0, 8]
    default = get_criterion("sfm_entropy", bins=4).score(identity_tap(2), probe=probe)["0"]
    assert pooled.groupby("filter")["entropy"].first().tolist() == pytest.approx(default.tolist())


def test_weight_correlation_clusters_scaled_copies_together():
    g = torch.Generator().manual_seed(0)
    w, v, u = (torch.randn(2, 3, 3, generator=g) for _ in range(3))
    conv = nn.Conv2d(2, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([w, v, 2 * w, u, -w, 3 * v]))
    corr = weight_correlation(nn.Sequential(conv), "0")
    assert corr.matrix.shape == (6, 6) and np.allclose(np.diag(corr.matrix), 1)
    assert corr.matrix[0, 2] == pytest.approx(1) and corr.matrix[0, 4] == pytest.approx(1)
    assert corr.matrix[1, 5] == pytest.approx(1)
    pos = {f: corr.order.index(f) for f in range(6)}
    assert sorted(pos[f] for f in (0, 2, 4)) in ([0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5])  # side by side
    assert abs(pos[1] - pos[5]) == 1
    assert sorted(corr.order) == list(range(6))
    assert np.allclose(corr.ordered(), corr.matrix[np.ix_(corr.order, corr.order)])
    assert cluster_order(np.eye(2)) == [0, 1]


def test_feature_correlation_equals_numpy_over_the_probe_set():
    model = SmallNet(seed=1)
    x = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    corr = feature_correlation(model, "conv2", probe_batches(x, torch.zeros(10, dtype=torch.long), [3, 7]))
    with torch.no_grad():
        f = F.relu(model.bn2(model.conv2(F.relu(model.bn1(model.conv1(x))))))
    ref = np.abs(np.corrcoef(f.transpose(0, 1).reshape(8, -1).double().numpy()))
    assert np.allclose(corr.matrix, ref, atol=1e-8)
    assert sorted(corr.order) == list(range(8))


def test_feature_maps_and_their_grid():
    model = SmallNet(seed=2)
    image = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = feature_maps(model, "conv1", image)
    with torch.no_grad():
        expected = F.relu(model.bn1(model.conv1(image[None])))[0]
    assert maps.shape == (6, 16, 16) and torch.allclose(maps, expected)
    grid = feature_map_grid(maps, ncols=4, pad=1)
    assert grid.shape == (2 * 17 - 1, 4 * 17 - 1)
    assert torch.isnan(grid[16]).all() and torch.isnan(grid[17:, 2 * 17 :]).all()  # a gap, two unused cells
    first = grid[:16, :16]
    assert first.min() == 0 and first.max() == 1
    assert torch.allclose(first, (maps[0] - maps[0].min()) / (maps[0].max() - maps[0].min()))
    reordered = feature_map_grid(maps, ncols=4, order=[5, 4, 3, 2, 1, 0])
    assert torch.equal(reordered[:16, :16], grid[17:, 17:33])
    with pytest.raises(ValueError, match=r"image must be \(C, H, W\)"):
        feature_maps(model, "conv1", torch.zeros(2, 3, 16, 16))
    with torch.no_grad():  # the residual conv3: its BN output, or the ReLU after the add
        pooled = model.pool(F.relu(model.bn2(model.conv2(expected[None]))))
        bn3 = model.bn3(model.conv3(pooled))[0]
    assert torch.allclose(feature_maps(model, "conv3", image), bn3)
    assert torch.allclose(feature_maps(model, "conv3", image, reads="post_add"), F.relu(bn3 + pooled[0]))


def test_rank_agreement_by_hand():
    a = table({"l": [1.0, 2.0, 3.0, 4.0]})
    same = rank_agreement(a, table({"l": [10.0, 20.0, 30.0, 40.0]}), bottom=0.5).iloc[0]
    assert (same.spearman, same.kendall, same.k, same.overlap) == (1.0, 1.0, 2, 1.0)
    flipped = rank_agreement(a, table({"l": [4.0, 3.0, 2.0, 1.0]}), bottom=0.5).iloc[0]
    assert (flipped.spearman, flipped.kendall, flipped.overlap) == (-1.0, -1.0, 0.0)
    partial = rank_agreement(a, table({"l": [1.0, 3.0, 2.0, 4.0]}), bottom=0.5).iloc[0]  # bottom sets {0,1}, {0,2}
    assert partial.overlap == 0.5 and partial.spearman == pytest.approx(0.8)
    wide = table({"l": list(range(64))})  # k = what pruning 30% of 64 filters removes: 64 - int(44.8) = 20
    assert rank_agreement(wide, wide).iloc[0].k == 20 and rank_agreement(a, a).iloc[0].k == 2  # 4 - int(2.8)
    flat = rank_agreement(a, table({"l": [1.0, 1.0, 1.0, 1.0]})).iloc[0]
    assert math.isnan(flat.spearman) and math.isnan(flat.kendall)
    with pytest.raises(ValueError, match=r"bottom must be a fraction in \(0, 1\]"):
        rank_agreement(a, a, bottom=0)


def test_rank_stability_between_two_checkpoints():
    early, final = SmallNet(seed=0), SmallNet(seed=0)
    same = rank_stability(early, final, "l1")
    assert (same["spearman"] == 1).all() and (same["overlap"] == 1).all()
    other = SmallNet(seed=5)
    moved = rank_stability(early, other, "l1")
    direct = rank_agreement(score(early, "l1"), score(other, "l1"))
    pd.testing.assert_frame_equal(moved, direct)
    assert (moved["spearman"] < 1).any() and list(moved["layer"]) == ["conv1", "conv2", "conv3"]


def test_correlated_pairs_are_the_highest_off_diagonal_entries():
    from prunekit.analysis.views import Correlation, correlated_pairs

    m = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.5], [0.9, 0.5, 1.0]])
    pairs = correlated_pairs(Correlation("conv", m, [0, 1, 2]), k=2)
    assert pairs[["i", "j"]].values.tolist() == [[0, 2], [1, 2]] and pairs["r"].tolist() == [0.9, 0.5]


def test_filter_kernels_are_the_mean_then_the_first_input_channels():
    from prunekit.analysis.views import filter_kernels

    model = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 3))
    kernels = filter_kernels(model, "0", 1, channels=2)
    w = model[0].weight.detach().double()
    assert kernels.shape == (3, 3, 3)
    assert np.allclose(kernels[0], w[1].mean(0).numpy()) and np.allclose(kernels[1:], w[1, :2].numpy())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filter_kernels(model, "0", 2)


def test_correlation_cells_follow_the_clustering_order():
    from prunekit.analysis.views import Correlation

    m = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.5], [0.9, 0.5, 1.0]])
    cells = Correlation("conv", m, [2, 0, 1]).cells()
    assert len(cells) == 9 and cells.loc[1].to_dict() == {"row": 0, "col": 1, "i": 2, "j": 0, "r": 0.9}
    assert np.allclose(cells["r"].to_numpy().reshape(3, 3), m[np.ix_([2, 0, 1], [2, 0, 1])])
