"""BatchNorm recalibration: the statistics computed by hand, weights untouched, the original model untouched,
deterministic, and a deliberately corrupted model restored."""
import pytest
import torch
import torch.nn as nn

from prunekit.data import DeviceLoader, held_out_set, load_arrays
from prunekit.errors import UserError
from prunekit.models.metrics import evaluate
from prunekit.pruning.recalibrate import NO_BN, recalibrate_bn
from tests.conftest import tiny_arrays


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 10)).eval()


def test_the_statistics_are_the_cumulative_average_over_the_batches_by_hand():
    model, data = _net(), tiny_arrays(48)
    with torch.no_grad():
        model[1].running_mean.fill_(7.0)  # corrupted
        model[1].running_var.fill_(0.01)
    params = {k: v.clone() for k, v in model.named_parameters()}
    out, note = recalibrate_bn(model, data, n=48, batch_size=16)
    assert note is None and out is not model and not out.training
    # by hand: the subset's order (seed 0), three batches of 16; per batch the channel mean and the unbiased
    # variance of conv(x) over (N, H, W); the cumulative average of the three
    x = data.normalize(data.subset(48, seed=0).images)
    with torch.no_grad():
        y = model[0](x)
    batches = y.split(16)
    mean = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([b.transpose(0, 1).reshape(4, -1).var(1, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(out[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1].running_var, var, rtol=1e-5, atol=1e-6)
    assert int(out[1].num_batches_tracked) == 3 and out[1].momentum == model[1].momentum == 0.1
    for k, v in out.named_parameters():  # no weight or bias moved
        assert torch.equal(v, params[k]), k
    assert float(model[1].running_mean[0]) == 7.0  # the original is left as it was
    again, _ = recalibrate_bn(model, data, n=48, batch_size=16)
    assert torch.equal(again[1].running_var, out[1].running_var)  # deterministic


def test_a_model_without_batchnorm_is_returned_as_is_with_a_note_and_bad_counts_are_refused():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    out, note = recalibrate_bn(plain, tiny_arrays(8))
    assert out is plain and note == NO_BN
    with pytest.raises(UserError, match="whole number of images >= 1, got 0"):
        recalibrate_bn(_net(), tiny_arrays(8), n=0)


@pytest.mark.data
def test_recalibration_restores_a_model_whose_statistics_were_corrupted(cifar_data_root):
    from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint

    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    held_out = DeviceLoader(held_out_set("cifar10", 1000, cifar_data_root), 250, train=False)
    good = evaluate(model.eval(), held_out)["accuracy"]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 5 + 0.1)
    broken = evaluate(model, held_out)["accuracy"]
    fixed, _ = recalibrate_bn(model, load_arrays("cifar10", "train", cifar_data_root), n=1024)
    restored = evaluate(fixed, held_out)["accuracy"]
    assert good > 80 and broken < 30, (good, broken)
    assert restored > good - 3, (good, broken, restored)  # back to within a few points of the trained statistics
