"""The structures Torch-Pruning's own pruner prunes and prunekit once froze, on tiny hand-built models: a grouped
conv (pruned by the same positions of every group), LayerNorm2d and GroupNorm, the channels-last LayerNorm of a
permute (torchvision's ConvNeXt block, with its layer scale), a chunk of the channels (a CSP / C2f block) and
GhostNet's concatenation of a conv and its cheap copy. Each prunes exactly (prune_model's self-check: outputs equal
to the original's with the same channels removed) and the instant estimate equals the pruned model's real counts;
what the code fixes (torch.split at a written size) stays frozen with the reason."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.models.metrics import count_macs
from prunekit.models.zoo import count_params
from prunekit.pruning.prune import Pruner, coupled_groups, prune_model
from prunekit.pruning.ratios import max_ratio
from prunekit.pruning.selection import removed_filters
from prunekit.pruning.structure import estimate, structure

SIZE = (3, 16, 16)


class Grouped(nn.Module):
    """ResNeXt's bottleneck: c1 (16) -> grouped conv g (groups 4, 16 -> 16) -> c3, with BNs; a residual add around
    the grouped conv couples its input and output channels (both in blocks of 4)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.g, self.bg = nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16)
        self.c3, self.fc = nn.Conv2d(16, 12, 1, groups=2), nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = x + F.relu(self.bg(self.g(x)))
        return self.fc(F.relu(self.c3(x)).mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """timm's and torchvision's channels-first LayerNorm: (N, C, H, W) normalised over C."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class NormBlock(nn.Module):
    """timm's ConvNeXt with conv MLP: stem conv + LayerNorm2d, a block (depthwise conv, LayerNorm2d, 1x1 convs, a
    layer scale reshaped to (1, C, 1, 1)) added to the stream, then a GroupNorm of 4 groups."""

    def __init__(self):
        super().__init__()
        self.stem, self.ln0 = nn.Conv2d(3, 16, 2, stride=2), LayerNorm2d(16)
        self.dw, self.ln1 = nn.Conv2d(16, 16, 3, padding=1, groups=16), LayerNorm2d(16)
        self.fc1, self.fc2 = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 16, 1)
        self.gamma = nn.Parameter(torch.rand(16) + 0.5)
        self.c, self.gn = nn.Conv2d(16, 8, 3, padding=1), nn.GroupNorm(4, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.ln0(self.stem(x))
        y = self.fc2(F.gelu(self.fc1(self.ln1(self.dw(x)))))
        x = x + y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.head(self.gn(self.c(x)).mean((2, 3)))


class ChannelsLast(nn.Module):
    """torchvision's ConvNeXt block: depthwise conv, permute to (N, H, W, C), LayerNorm and two linear layers,
    permute back, a (C, 1, 1) layer scale, added to the stream (stem conv + LayerNorm2d); the head's LayerNorm2d."""

    def __init__(self):
        super().__init__()
        self.stem, self.ln0 = nn.Conv2d(3, 16, 2, stride=2), LayerNorm2d(16)
        self.dw, self.ln = nn.Conv2d(16, 16, 7, padding=3, groups=16), nn.LayerNorm(16)
        self.l1, self.l2 = nn.Linear(16, 64), nn.Linear(64, 16)
        self.layer_scale = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.norm, self.head = LayerNorm2d(16), nn.Linear(16, 10)

    def forward(self, x):
        x = self.ln0(self.stem(x))
        y = self.l2(F.gelu(self.l1(self.ln(self.dw(x).permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)
        x = x + self.layer_scale * y
        return self.head(self.norm(x).mean((2, 3)))


class Chunked(nn.Module):
    """A CSP block: c1 (16) chunked in two halves, a conv on the second, the first and the conv's concatenated
    into c2. ``how="split"`` splits at a size written in the code instead (torch.split(x, 8)); ``how="c2f"``
    concatenates the second half too (YOLOv8's C2f), which Torch-Pruning's split mapping cannot follow."""

    def __init__(self, how: str = "chunk"):
        super().__init__()
        self.how = how
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.m = nn.Conv2d(8, 8, 3, padding=1)
        self.c2, self.fc = nn.Conv2d(24 if how == "c2f" else 16, 12, 1), nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        a, b = torch.split(x, 8, dim=1) if self.how == "split" else x.chunk(2, 1)
        parts = [a, b, F.relu(self.m(b))] if self.how == "c2f" else [a, F.relu(self.m(b))]
        return self.fc(self.c2(torch.cat(parts, 1)).mean((2, 3)))


class GhostStream(nn.Module):
    """GhostNet: a stem of 8 channels, then a ghost module (primary conv of 4 filters, a depthwise 'cheap' copy of
    them, concatenated to 8) added to the stream, a depthwise conv over the sum, and a pointwise conv."""

    def __init__(self):
        super().__init__()
        self.stem, self.b0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.primary, self.cheap = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.dw, self.pw, self.fc = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 6, 1), nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.b0(self.stem(x)))
        p = self.primary(x)
        x = x + torch.cat([p, self.cheap(p)], 1)[:, :8]
        return self.fc(self.pw(self.dw(x)).mean((2, 3)))


def _randomised(model: nn.Module) -> nn.Module:
    """Non-trivial norm statistics and affine parameters, so that a wrong channel shows; eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _scores(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _prunes_exactly(model: nn.Module, ratios: dict[str, float]):
    """prune_model (which checks itself) and the estimate equal to the pruned model's real counts."""
    struct = structure(model, SIZE)
    pruned, removed = prune_model(model, ratios, _scores(model), SIZE)
    est = estimate(struct, ratios)
    assert (est.params_before, est.macs_before) == (count_params(model), count_macs(model, SIZE))
    assert (est.params, est.macs) == (count_params(pruned), count_macs(pruned, SIZE))
    assert est.params < est.params_before
    for layer, (_, after) in est.channels.items():
        assert pruned.get_submodule(layer).out_channels == after
    return struct, pruned, removed


def test_a_grouped_conv_prunes_the_same_positions_of_every_group():
    model = _randomised(Grouped())
    struct, pruned, removed = _prunes_exactly(model, {"c1": 0.5, "c3": 0.5})
    stream, c3 = struct.groups
    assert (stream.root, stream.members, stream.blocks, stream.channels) == ("c1", ("c1", "g"), 4, 4)
    assert set(stream.grouped_by) == {"g (groups=4)", "c3 (groups=2)"} and "grouped: 4 blocks of 4" in stream.grouping
    assert (c3.blocks, c3.channels) == (2, 6) and struct.frozen == {}
    gone = removed["c1"]  # 2 of each block of 4
    assert len(gone) == 8 and {i % 4 for i in gone} == {i % 4 for i in gone[:2]} and len({i % 4 for i in gone}) == 2
    assert (pruned.g.in_channels, pruned.g.out_channels, pruned.g.groups, pruned.c3.out_channels) == (8, 8, 4, 6)


def test_the_removed_positions_are_the_lowest_mean_over_the_blocks():
    model = _randomised(Grouped())
    group = next(g for g in coupled_groups(model, SIZE)[0] if g.root == "c1")
    scores = {"c1": torch.tensor([0., 9, 9, 9, 0, 9, 9, 9, 9, 9, 9, 0, 9, 9, 1, 9]), "g": torch.zeros(16)}
    # per position of a block of 4, the mean over the 4 blocks: [2.25, 6.75, 6.75, 4.75] (scores min-max normalised)
    assert removed_filters([group], {"c1": 0.25}, scores) == {"c1": [0, 4, 8, 12], "g": [0, 4, 8, 12]}


def test_layernorm2d_groupnorm_and_a_layer_scale_prune_with_their_channels():
    model = _randomised(NormBlock())
    struct, pruned, _ = _prunes_exactly(model, {"stem": 0.5, "fc1": 0.25, "c": 0.5})
    stream = next(g for g in struct.groups if g.root == "stem")
    assert stream.members == ("stem", "dw", "fc2") and set(stream.norms) == {"ln0", "ln1", "gamma"}
    c = next(g for g in struct.groups if g.root == "c")
    assert (c.blocks, c.channels, c.norms) == (4, 2, ("gn",))
    assert pruned.ln1.normalized_shape == (8,) and pruned.gamma.shape == (8,)
    assert (pruned.gn.num_channels, pruned.gn.num_groups) == (4, 4) and struct.frozen == {}


def test_the_channels_last_layernorm_of_a_permute_prunes_with_the_linear_layers():
    model = _randomised(ChannelsLast())
    struct, pruned, _ = _prunes_exactly(model, {"stem": 0.25})
    (stream,) = struct.groups
    assert stream.members == ("stem", "dw", "l2")  # l2's outputs are the stream's channels
    assert set(stream.norms) == {"ln0", "ln", "norm", "layer_scale"} and set(stream.consumers) == {"l1", "head"}
    assert (pruned.l1.in_features, pruned.l2.out_features, pruned.ln.normalized_shape) == (12, 12, (12,))
    assert pruned.layer_scale.shape == (12, 1, 1)


def test_a_chunk_of_the_channels_is_followed_and_a_written_split_size_is_not():
    model = _randomised(Chunked())
    struct, pruned, removed = _prunes_exactly(model, {"c1": 0.25, "m": 0.5})
    c1 = next(g for g in struct.groups if g.root == "c1")
    assert (c1.blocks, c1.channels, c1.grouped_by) == (2, 8, ("chunk(2) after b1",))
    assert [i % 8 for i in removed["c1"][:2]] == [i % 8 for i in removed["c1"][2:]]  # the same in both halves
    assert (pruned.m.in_channels, pruned.c2.in_channels) == (6, 6 + 4)
    groups, frozen = coupled_groups(Chunked("split").eval(), SIZE)
    assert [g.root for g in groups] == ["m", "c2"]
    assert frozen == {"c1": "its channels go through a split (torch.split / chunk) after b1, whose sizes are written "
                            "in the model's code: pruning cannot change them"}
    groups, frozen = coupled_groups(Chunked("c2f").eval(), SIZE)
    assert [g.root for g in groups] == ["m", "c2"]
    assert frozen == {"c1": "its channels go through a chunk after b1 whose parts are read more than once or not at "
                            "all: Torch-Pruning cannot follow them"}


def test_a_ghost_concatenation_removes_every_copy_of_a_channel():
    model = _randomised(GhostStream())
    struct, pruned, removed = _prunes_exactly(model, {"primary": 0.5, "pw": 0.5})
    ghost = next(g for g in struct.groups if g.root == "primary")
    assert ghost.members == ("primary", "cheap") and ghost.channels == 4
    assert dict(ghost.spread) == {"stem": (0, 1, 2, 3, 0, 1, 2, 3), "dw": (0, 1, 2, 3, 0, 1, 2, 3)}
    assert dict(ghost.reads)["pw"] == 2  # each primary filter fills two of pw's inputs
    gone = removed["primary"]
    assert ghost.member_filters(gone)["stem"] == gone + [4 + i for i in gone]
    assert (pruned.stem.out_channels, pruned.primary.out_channels, pruned.dw.out_channels) == (4, 2, 4)


@pytest.mark.parametrize("model", [Grouped, NormBlock, ChannelsLast, Chunked, GhostStream])
def test_random_ratios_prune_exactly_and_the_estimate_follows(model):
    model = _randomised(model())
    pruner = Pruner(model, SIZE)
    struct = structure(model, SIZE)
    assert struct.groups and not struct.frozen  # every conv prunable (a chunk's c1 too)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        ratios = {grp.root: min(round(float(torch.rand(1, generator=g)) * 0.8, 2), max_ratio(grp.channels))
                  for grp in struct.groups}
        pruned, _ = pruner.prune(ratios, _scores(model))
        est = estimate(struct, ratios)
        assert (est.params, est.macs) == (count_params(pruned), count_macs(pruned, SIZE)), ratios
