"""Sensitivity: each group pruned alone, evaluated, cached; hand-known where the removed filters are dead."""
import pytest
import torch

from prunekit.models import build_model
from prunekit.sensitivity import COLUMNS, sensitivity
from prunekit.structure import estimate, structure
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
    from prunekit.metrics import evaluate
    from prunekit.prune import prune_model
    from prunekit.recalibrate import recalibrate_bn

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
