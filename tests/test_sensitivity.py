"""Sensitivity: each group pruned alone, evaluated, cached; hand-known where the removed filters are dead."""
import pytest
import torch

from prunekit.models.zoo import build_model
from prunekit.pruning.sensitivity import COLUMNS, sensitivity
from prunekit.pruning.structure import estimate, structure
from tests.conftest import tiny_arrays


@pytest.fixture(autouse=True)
def one_thread_and_cache(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))


def _model_with_dead_filters():
    """ResNet-20 whose layer1.0.conv1 filters 0-7 are dead (zero weights, BN output 0 -> ReLU 0): removing
    them changes nothing, so the loss at ratio 0.5 equals the unpruned loss."""
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    with torch.no_grad():
        model.layer1[0].conv1.weight[:8] = 0
        model.layer1[0].bn1.weight[:8] = 0
        model.layer1[0].bn1.bias[:8] = 0
    scores = {n: m.weight.detach().abs().sum((1, 2, 3)) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}  # L1: the dead filters score lowest
    return model, scores


def test_each_group_alone_with_hand_known_losses_and_the_cache():
    model, scores = _model_with_dead_filters()
    data = tiny_arrays(24)
    groups = ["layer1.0.conv1", "layer3.0.conv1"]
    df = sensitivity(model, scores, data, ratios=(0.5, 0.95), groups=groups)
    assert list(df.columns) == COLUMNS and not df.attrs["cached"]
    assert df[["group", "ratio"]].values.tolist() == [  # 0.95 would remove all 16 filters of layer1.0.conv1
        ["layer1.0.conv1", 0.0], ["layer1.0.conv1", 0.5], ["layer3.0.conv1", 0.0], ["layer3.0.conv1", 0.5],
        ["layer3.0.conv1", 0.95]]
    base, dead = df.iloc[0], df.iloc[1]
    assert dead["loss"] == pytest.approx(base["loss"], abs=1e-5) and dead["accuracy"] == base["accuracy"]
    assert df.iloc[3]["loss"] != pytest.approx(base["loss"], abs=1e-5)  # live filters removed: it changes
    struct = structure(model, (3, 32, 32))
    assert df.iloc[4]["macs"] == estimate(struct, {"layer3.0.conv1": 0.95}).macs
    again = sensitivity(model, scores, data, ratios=(0.95, 0.5), groups=groups)
    assert again.attrs["cached"] and again.equals(df)
    with pytest.raises(ValueError, match="unknown groups"):
        sensitivity(model, scores, data, groups=["layer1.0.conv2"])


def test_with_recalibration_every_point_is_evaluated_after_re_estimating_the_batchnorm():
    from prunekit.data import DeviceLoader
    from prunekit.models.metrics import evaluate
    from prunekit.pruning.prune import prune_model
    from prunekit.pruning.recalibrate import recalibrate_bn

    model, scores = _model_with_dead_filters()
    data, train = tiny_arrays(24), tiny_arrays(32, seed=5)
    df = sensitivity(model, scores, data, ratios=(0.5,), groups=["layer3.0.conv1"], recalibrate=train, cache=False)
    loader = DeviceLoader(data, 256, train=False)
    base = evaluate(recalibrate_bn(model, train)[0], loader)
    pruned = evaluate(recalibrate_bn(prune_model(model, {"layer3.0.conv1": 0.5}, scores, (3, 32, 32))[0], train)[0],
                      loader)
    assert df.iloc[0]["loss"] == pytest.approx(base["loss"]) and df.iloc[1]["loss"] == pytest.approx(pruned["loss"])
    plain = sensitivity(model, scores, data, ratios=(0.5,), groups=["layer3.0.conv1"], cache=False)
    assert plain.iloc[1]["loss"] != pytest.approx(df.iloc[1]["loss"])  # recalibration changed what was measured


def test_with_round_to_each_ratio_keeps_what_the_plan_keeps_and_one_width_is_pruned_once(monkeypatch):
    """64 filters, round_to 16: ratios 0.1 / 0.2 / 0.3 / 0.5 keep 57 -> 64 (unpruned), 51 -> 48, 44 -> 48, 32; 16
    filters with round_to 16 are never pruned. Two pruned models in all, each the plan's own."""
    from prunekit.data import DeviceLoader
    from prunekit.models.metrics import evaluate
    from prunekit.pruning.prune import Pruner, prune_model

    model, scores = _model_with_dead_filters()
    data = tiny_arrays(24)
    pruned_calls, prune = [], Pruner.prune
    monkeypatch.setattr(Pruner, "prune", lambda self, *a, **k: pruned_calls.append(k) or prune(self, *a, **k))
    df = sensitivity(model, scores, data, ratios=(0.1, 0.2, 0.3, 0.5), groups=["layer3.0.conv1", "layer1.0.conv1"],
                     round_to=16, cache=False)
    wide, narrow = df[df["group"] == "layer3.0.conv1"], df[df["group"] == "layer1.0.conv1"]
    assert wide["kept"].tolist() == [64, 64, 48, 48, 32] and narrow["kept"].tolist() == [16] * 5
    assert len(pruned_calls) == 2 and all(k["round_to"] == 16 for k in pruned_calls)
    base = wide.iloc[0]
    assert (narrow["loss"] == base["loss"]).all() and wide.iloc[1]["loss"] == base["loss"]  # nothing removed
    assert wide.iloc[2]["loss"] == wide.iloc[3]["loss"] != base["loss"]  # the one 48-filter model, twice
    expected = evaluate(prune_model(model, {"layer3.0.conv1": 0.3}, scores, (3, 32, 32), round_to=16)[0],
                        DeviceLoader(data, 256, train=False))
    assert wide.iloc[3]["loss"] == pytest.approx(expected["loss"])
    struct = structure(model, (3, 32, 32))
    assert wide.iloc[4]["macs"] == estimate(struct, {"layer3.0.conv1": 0.5}, 16).macs
    exact = sensitivity(model, scores, data, ratios=(0.2,), groups=["layer3.0.conv1"])
    rounded = sensitivity(model, scores, data, ratios=(0.2,), groups=["layer3.0.conv1"], round_to=16)
    assert exact.attrs["key"] != rounded.attrs["key"] and exact["kept"].tolist() == [64, 51]  # cached apart


def test_from_the_shell_the_curves_follow_round_to(cifar_data_root, tmp_path, capsys):
    import json

    import pandas as pd

    from prunekit.cli import main

    assert main(["sensitivity", "--model", "resnet20", "--data", "cifar10", "--data-root", str(cifar_data_root),
                 "--n", "16", "--no-recalibrate", "--groups", "layer3.0.conv1", "--ratios", "0.3", "0.5",
                 "--round-to", "16", "--out", str(tmp_path / "s.csv")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == 3
    assert pd.read_csv(tmp_path / "s.csv")["kept"].tolist() == [64, 48, 32]  # 44 -> 48; 32


def test_the_expected_time_scales_resnet20s_measured_minute_by_the_work():
    from prunekit.pruning.sensitivity import expected_minutes
    from prunekit.text import duration

    assert expected_minutes(60, 40_551_040) == pytest.approx(1.0)  # the reference itself
    assert expected_minutes(120, 4 * 40_551_040) == pytest.approx(8.0)  # twice the models, 4x the MACs each
    assert [duration(60 * m, about=True) for m in (0.6, 8.0, 210.0)] == ["about a minute", "about 8 minutes",
                                                                          "about 3.5 hours"]
