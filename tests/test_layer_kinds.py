"""Linear layers are named by what they are: only the one that makes the logits is the "classifier head"; one
inside a block (an MLP, an attention) is named by that block."""
import torch
import torch.nn as nn

from prunekit.pruning.plan import Plan
from prunekit.pruning.structure import structure


class Mlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConvThenMlp(nn.Module):
    """conv -> BN -> ReLU -> pool -> an MLP block (two linears) -> a linear head of 10 logits."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.block = Mlp(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 1), 1)
        return self.head(self.block(x))


def test_a_linear_inside_a_block_is_named_by_its_block_and_only_the_last_is_the_head():
    struct = structure(ConvThenMlp().eval(), (3, 8, 8))
    assert struct.head == "head" and [g.root for g in struct.groups] == ["conv"]  # block.fc1 reads its channels
    why = Plan("conv_then_mlp", {}).unprunable(struct)
    assert why["block.fc1"] == "linear layer (inside block): only conv filters are pruned; its inputs shrink with " \
                               "the convs before it"
    assert why["block.fc2"] == "linear layer (inside block): only conv filters are pruned"
    assert why["head"].startswith("linear layer (classifier head): only conv filters are pruned")
    assert [k for k, v in why.items() if "classifier head" in v] == ["head"]


def test_a_model_without_a_linear_head_has_none():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert structure(model.eval(), (3, 8, 8)).head is None
