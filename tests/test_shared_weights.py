"""A conv applied more than once in one forward (its weights shared): the instant estimate counts every
application, so its MACs equal torch.utils.flop_counter's count of the pruned model, as its params do."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.models.metrics import count_macs
from prunekit.models.zoo import count_params
from prunekit.pruning.prune import prune_model
from prunekit.pruning.structure import estimate, structure

SIZE = (3, 16, 16)


class SharedConv(nn.Module):
    """``block`` runs twice: on the 16x16 map, then on the 8x8 one (one weight, two BNs)."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.block, self.bn1, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.BatchNorm2d(16)
        self.expand, self.bn3 = nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        x = F.max_pool2d(F.relu(self.bn1(self.block(x))), 2)
        x = F.relu(self.bn2(self.block(x)))  # the same conv again, on a smaller map
        x = F.relu(self.bn3(self.expand(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("ratios, round_to", [({"stem": 0.5, "expand": 0.25}, 1), ({"stem": 0.3}, 1),
                                              ({"stem": 0.4, "expand": 0.6}, 8)])
def test_the_estimate_of_a_shared_conv_equals_the_pruned_models_count(ratios, round_to):
    torch.manual_seed(0)
    model = SharedConv().eval()
    struct = structure(model, SIZE)
    assert {g.root: g.members for g in struct.groups} == {"stem": ("stem", "block"), "expand": ("expand",)}
    est = estimate(struct, ratios, round_to)
    assert (est.params_before, est.macs_before) == (count_params(model), count_macs(model, SIZE))
    g = torch.Generator().manual_seed(1)
    scores = {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    pruned, _ = prune_model(model, ratios, scores, SIZE, round_to=round_to)
    assert (est.params, est.macs) == (count_params(pruned), count_macs(pruned, SIZE))
    assert est.channels["block"] == (16, pruned.block.out_channels)
