"""BatchNorm folded into its conv for the candidate evaluator: a hand-worked conv + BN, the pairs Torch-Pruning's
graph allows (a BN that reads a concatenation or a conv read twice is not folded), and a fold whose probe check
fails is undone."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.models.zoo import build_model
from prunekit.pruning.fold import fold_bn
from prunekit.pruning.prune import Pruner
from prunekit.pruning.verify import probe_input
from tests.test_evaluator import Dense


class OneByOne(nn.Module):
    """A 1x1 conv (weight 2, no bias) and a BN (mean 1, var 3, eps 1, gamma 4, beta 5), on one channel."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1, eps=1.0)
        with torch.no_grad():
            self.conv.weight.fill_(2.0)
            self.bn.running_mean.fill_(1.0), self.bn.running_var.fill_(3.0)
            self.bn.weight.fill_(4.0), self.bn.bias.fill_(5.0)

    def forward(self, x):
        return self.bn(self.conv(x))


class ReadTwice(nn.Module):
    """c0's output goes to its BN and, as a skip, to the sum: folding b0 into c0 would change the skip."""

    def __init__(self):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.c0(x)
        return self.b1(self.c1(F.relu(self.b0(y)))) + y


def _randomise_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def test_a_hand_worked_conv_and_bn_fold_to_the_known_filter_and_bias():
    model = OneByOne().eval()
    x = torch.ones(1, 1, 1, 1)
    assert model(x).item() == 7.0  # (2 * 1 - 1) / sqrt(3 + 1) * 4 + 5
    assert fold_bn(model, [("conv", "bn")], x)
    assert isinstance(model.bn, nn.Identity)
    assert model.conv.weight.item() == 4.0 and model.conv.bias.item() == 3.0  # 2 * 4 / 2, (0 - 1) * 2 + 5
    assert model(x).item() == 7.0


def test_the_pairs_are_each_conv_and_the_bn_that_alone_reads_it():
    resnet = build_model("resnet20").eval()
    pairs = Pruner(resnet, (3, 32, 32)).conv_bn
    assert len(pairs) == 19 and ("conv1", "bn1") in pairs and ("layer3.2.conv2", "layer3.2.bn2") in pairs
    assert ("c0", "b0") not in Pruner(ReadTwice().eval(), (3, 32, 32)).conv_bn
    assert Pruner(ReadTwice().eval(), (3, 32, 32)).conv_bn == [("c1", "b1")]
    dense = Pruner(Dense().eval(), (3, 32, 32)).conv_bn
    assert sorted(dense) == [("c0", "b0"), ("c1", "b1"), ("c2", "b2")]  # bcat reads a concatenation


def test_folding_a_network_keeps_its_outputs():
    model = _randomise_bn(build_model("resnet20"))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pairs = Pruner(model, (3, 32, 32)).conv_bn  # Torch-Pruning traces with autograd
    with torch.no_grad():
        want = model(x)
        assert fold_bn(model, pairs, probe_input(model, (3, 32, 32)))
        got = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_fold_that_changes_the_output_is_undone():
    model = _randomise_bn(ReadTwice())
    x = probe_input(model, (3, 32, 32))
    with torch.no_grad():
        want = model(x)
        assert not fold_bn(model, [("c0", "b0"), ("c1", "b1")], x)  # b0 does not alone read c0
        got = model(x)
    assert isinstance(model.b0, nn.BatchNorm2d) and isinstance(model.b1, nn.BatchNorm2d)
    assert model.c1.bias.requires_grad and torch.equal(got, want)
