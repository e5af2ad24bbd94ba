"""Ranking reliability (prunekit.analysis.reliability): disjoint seeded probes, and agreement figures in cases known by hand."""
import math

import pandas as pd
import pytest
import torch
from saliency_testkit import SmallNet, identity_tap, random_arrays, single_thread  # noqa: F401  (autouse fixture)

from prunekit.criteria import Criterion, Scores
from prunekit.criteria.streaming import per_image_mean
from prunekit.criteria.probe import Probe
from prunekit.analysis.reliability import reliability, split_probes, summarize


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


class ChannelMean(Criterion):
    """Test criterion (not registered): a filter's score is the mean of its feature map over the probe."""

    name = "channel_mean"
    description = "mean of each filter's feature map over the probe set (a test criterion, not registered)"
    needs_data = True

    def _score(self, model, layers, probe, progress):
        return Scores(per_image_mean(model, layers, probe, lambda fmap: fmap.mean((2, 3)), progress))


def constant_maps(values):
    """One batch of 2 images whose 4 channels are constant 3x3 maps equal to ``values``."""
    x = torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).expand(2, -1, 3, 3).contiguous()
    return [(x, torch.zeros(2, dtype=torch.long))]


def test_split_probes_are_disjoint_and_the_first_is_the_seeded_probe():
    data = random_arrays(40)
    a, b = split_probes(data, 12, batch_size=5)
    assert (len(a), len(b)) == (3, 3)  # 12 images in batches of 5
    assert a.key == Probe.from_arrays(data, 12, batch_size=5, seed=0).key
    xa = torch.cat([batch.x for batch in a.batches("cpu")])
    xb = torch.cat([batch.x for batch in b.batches("cpu")])
    assert len(xa) == len(xb) == 12
    shared = (xa.flatten(1)[:, None] == xb.flatten(1)[None]).all(-1)  # (12, 12): image i of A is image j of B
    assert not shared.any()
    other = split_probes(data, 12, seeds=(0, 2), batch_size=5)
    assert other[0].key == a.key and other[1].key != b.key  # the second seed draws B
    for bad in (0, 21):
        with pytest.raises(ValueError, match=rf"n must be an integer in \[1, 20\].*got {bad}"):
            split_probes(data, bad)


def test_identical_probes_agree_perfectly():
    model = SmallNet()
    probe = Probe.from_arrays(random_arrays(8, size=16), 8, batch_size=4)
    table = reliability(model, "chip", probe, probe)
    assert list(table["layer"]) == ["conv1", "conv2", "conv3"] and list(table["filters"]) == [6, 8, 8]
    assert (table["spearman"] == 1.0).all() and (table["overlap"] == 1.0).all()
    assert list(table["k"]) == [2, 3, 3]  # what pruning 30% removes: ceil(0.3 C)


def test_reversed_scores_disagree_completely():
    # probe A gives channel means 1, 2, 3, 4 and probe B 4, 3, 2, 1: reversed rankings, Spearman -1, and the
    # bottom k = 2 (4 - int(4 * 0.7)) are {0, 1} under A and {2, 3} under B: overlap 0
    table = reliability(identity_tap(4), ChannelMean(), constant_maps([1, 2, 3, 4]), constant_maps([4, 3, 2, 1]))
    row = table.iloc[0]
    assert (row.spearman, row.kendall, row.k, row.overlap) == (-1.0, -1.0, 2, 0.0)
    partial = reliability(identity_tap(4), ChannelMean(), constant_maps([1, 2, 3, 4]), constant_maps([1, 3, 2, 4]))
    assert partial.iloc[0].spearman == pytest.approx(0.8) and partial.iloc[0].overlap == 0.5  # {0,1} vs {0,2}


def test_reliability_refuses_data_free_criteria_and_mixed_parameters():
    probe = constant_maps([1, 2, 3, 4])
    with pytest.raises(ValueError, match="l1 needs no probe data"):
        reliability(identity_tap(4), "l1", probe, probe)
    with pytest.raises(ValueError, match="pass parameters either"):
        reliability(identity_tap(4), ChannelMean(), probe, probe, bins=4)


def test_summarize_by_hand():
    table = pd.DataFrame({"layer": list("abcd"), "spearman": [0.5, 0.9, math.nan, 0.7],
                          "overlap": [0.25, 1.0, 0.5, 0.75]})
    assert summarize(table) == {"median_spearman": 0.7, "min_spearman": 0.5, "median_overlap": 0.625, "layers": 4}


def test_the_command_line_prints_and_writes_the_reliability_of_a_data_driven_ranking(tmp_path, monkeypatch, capsys):
    import json

    import prunekit.criteria.probe
    from prunekit.models.checkpoints import save_checkpoint
    from prunekit.cli import main
    from prunekit.models.zoo import build_model

    data = random_arrays(64)
    monkeypatch.setattr(prunekit.criteria.probe, "load_arrays", lambda *a, **k: data)
    model = build_model("resnet20").eval()
    ckpt = save_checkpoint(model, tmp_path / "r20.safetensors", arch="resnet20", num_classes=10)
    out = tmp_path / "hrank.csv"
    assert main(["score", "--model", "resnet20", "--checkpoint", str(ckpt), "--criterion", "hrank", "--n", "16",
                 "--batch-size", "8", "--device", "cpu", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])["reliability"]
    assert summary["n"] == 16 and summary["seeds"] == [0, 1] and summary["layers"] == 19
    assert "two disjoint probes of 16 images (seeds 0 and 1)" in captured.err
    printed = pd.read_csv(summary["table"])
    expected = reliability(model, "hrank", *split_probes(data, 16, batch_size=8))  # the same, computed directly
    pd.testing.assert_series_equal(printed["spearman"], expected["spearman"], check_names=False)
    assert summary["median_spearman"] == pytest.approx(summarize(expected)["median_spearman"], abs=1e-4)
    assert main(["score", "--model", "resnet20", "--checkpoint", str(ckpt), "--criterion", "l1", "--device", "cpu",
                 "--out", str(tmp_path / "l1.csv")]) == 0
    assert "reliability" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # weights only
