"""Pruning checks itself: what Torch-Pruning cannot follow is frozen with the reason before any work, a pruned
model that differs from the original with the same channels zeroed is refused naming the layer, and an exception
inside Torch-Pruning becomes a PruneError naming the group."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

import prunekit.pruning.prune as prune_module
from prunekit.errors import PruneError, UserError
from prunekit.models.zoo import build_model
from prunekit.pruning.prune import coupled_groups, prune_model
from prunekit.pruning.structure import estimate, structure

SIZE = (3, 16, 16)


class SplitConcat(nn.Module):
    """c1 (16 channels) split in two halves (torch.split, chunk or slicing), a conv on each, concatenated into c2:
    pruning c1 leaves the forward splitting at 8 channels."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.ca, self.cb = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        self.c2, self.fc = nn.Conv2d(14, 12, 3, padding=1), nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        if self.how == "split":
            a, b = torch.split(x, 8, dim=1)
        elif self.how == "chunk":
            a, b = x.chunk(2, dim=1)
        else:
            a, b = x[:, :8], x[:, 8:]
        x = self.c2(torch.cat([self.ca(a), self.cb(b)], 1))
        return self.fc(x.mean((2, 3)))


class GroupedAdd(nn.Module):
    """conv -> grouped conv (groups 4, not depthwise) -> add: pruned by the same positions of every group of 4,
    else Torch-Pruning breaks the grouped conv."""

    def __init__(self):
        super().__init__()
        self.c1, self.g, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=4), \
            nn.Linear(16, 10)

    def forward(self, x):
        x = self.c1(x)
        return self.fc((x + self.g(x)).mean((2, 3)))


class GroupedCat(nn.Module):
    """Two convs of 8 filters concatenated into a grouped conv (groups 4): each of its groups would have to lose
    as many channels as the others, across two groups that prune apart."""

    def __init__(self):
        super().__init__()
        self.ca, self.cb = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.g, self.fc = nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.g(torch.cat([self.ca(x), self.cb(x)], 1)).mean((2, 3)))


class Ghost(nn.Module):
    """GhostNet's module: c1's 4 filters and a depthwise conv of them, concatenated into a depthwise conv of 8."""

    def __init__(self):
        super().__init__()
        self.c1, self.cheap = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.dw, self.c2, self.fc = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 6, 1), nn.Linear(6, 10)

    def forward(self, x):
        x = self.c1(x)
        x = self.c2(self.dw(torch.cat([x, self.cheap(x)], 1)))
        return self.fc(x.mean((2, 3)))


def _scores(model):
    g = torch.Generator().manual_seed(0)
    return {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _split_reference(model, removed, x):
    """The split model with each removed channel zeroed where it is read, by hand: c2 reads ca's 8 channels then
    cb's 6, fc reads c2's 12."""
    drop = {"c2": removed.get("ca", []) + [8 + i for i in removed.get("cb", [])], "fc": removed.get("c2", [])}
    hooks = []
    for name, idx in drop.items():
        def zero(module, args, idx=idx):
            y = args[0].clone()
            y[:, torch.tensor(idx, dtype=torch.long)] = 0
            return (y,)
        hooks.append(model.get_submodule(name).register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("how, op", [("split", "a split (torch.split / chunk)"),
                                     ("slice", "a channel slice (x[:, a:b])")])
def test_channels_split_in_the_forward_are_frozen_and_the_rest_prunes_exactly(how, op):
    torch.manual_seed(0)
    model = SplitConcat(how).eval()
    groups, frozen = coupled_groups(model, SIZE)
    assert [g.root for g in groups] == ["ca", "cb", "c2"]
    assert frozen == {"c1": f"its channels go through {op} after bn1, whose sizes are written in the model's code: "
                            "pruning cannot change them"}
    assert dict(groups[2].reads) == {"fc": 1} and ("c2", 1) in groups[0].reads
    ratios = {"ca": 0.5, "cb": 0.5, "c2": 0.25}
    pruned, removed = prune_model(model, ratios, _scores(model), SIZE)
    assert [len(removed[r]) for r in ("ca", "cb", "c2")] == [4, 3, 3] and pruned.c2.in_channels == 7
    x = torch.randn(3, *SIZE)
    with torch.no_grad():
        got = pruned(x)
    torch.testing.assert_close(got, _split_reference(model, removed, x), rtol=0, atol=1e-5)
    est = estimate(structure(model, SIZE), ratios)
    assert est.params == sum(p.numel() for p in pruned.parameters())
    with pytest.raises(PruneError, match="'c1' cannot be pruned: its channels go through a"):
        prune_model(model, {"c1": 0.3}, _scores(model), SIZE)


def test_a_grouped_conv_prunes_by_blocks_unless_a_concatenation_mixes_its_groups():
    groups, frozen = coupled_groups(GroupedAdd(), SIZE)
    assert [(g.root, g.members, g.blocks, g.channels) for g in groups] == [("c1", ("c1", "g"), 4, 4)] and not frozen
    groups, frozen = coupled_groups(GroupedCat(), SIZE)
    reason = "g (groups=4) reads these channels together with others (a concatenation) or several times: pruning " \
             "cannot keep its groups equal"
    assert [g.root for g in groups] == ["g"] and frozen == {"ca": reason, "cb": reason}


def test_filters_concatenated_into_a_wider_conv_go_with_every_copy():
    model = Ghost().eval()
    groups, frozen = coupled_groups(model, SIZE)
    assert [(g.root, g.members, dict(g.spread)) for g in groups] == [
        ("c1", ("c1", "cheap"), {"dw": (0, 1, 2, 3, 0, 1, 2, 3)}), ("c2", ("c2",), {})] and not frozen
    pruned, removed = prune_model(model, {"c1": 0.5}, _scores(model), SIZE)
    assert pruned.dw.out_channels == 4 and len(removed["c1"]) == 2


def test_without_the_freezing_the_self_check_refuses_the_broken_models_naming_the_layer(monkeypatch):
    monkeypatch.setattr(prune_module, "_refusal", lambda *args: None)  # what pruning did before it froze them
    model = SplitConcat("split").eval()
    with pytest.raises(PruneError, match=r"the pruned SplitConcat fails to run at cb \(or right after it\) "
                                         r"\(RuntimeError: .*give ratio 0 to the group rooted at c1"):
        prune_model(model, {"c1": 0.3}, _scores(model), SIZE)
    monkeypatch.setattr(prune_module, "_blocks", lambda *args: (1, (), None))  # filter by filter in a grouped conv
    model = GroupedAdd().eval()
    with pytest.raises(PruneError, match=r"fails to run at g \(or right after it\).*divisible by 4"):
        prune_model(model, {"c1": 0.3}, _scores(model), SIZE)


def test_the_self_check_catches_torch_prunings_layernorm_handler(monkeypatch):
    """Torch-Pruning's own LayerNorm handler keeps the weights in a set's order: keeping 4 of 16 channels it
    swaps them, and the pruned model differs where the LayerNorm's output is read; prunekit's handler keeps them in
    order."""
    from tests.test_structures import ChannelsLast, _randomised
    from tests.test_structures import _scores as scores

    model = _randomised(ChannelsLast())
    monkeypatch.setattr(prune_module, "_LayerNormPruner", tp.pruner.function.LayernormPruner)
    with pytest.raises(PruneError, match=r"pruning ChannelsLast went wrong at dw \(depthwise conv\)"):
        prune_model(model, {"stem": 0.7}, scores(model), (3, 16, 16))  # keeps channels 0, 3, 10 and 15
    monkeypatch.undo()
    prune_model(model, {"stem": 0.7}, scores(model), (3, 16, 16))


def _r20():
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    return model, {"conv1": 0.5, "layer1.0.conv1": 0.5}, _scores(model)


def test_a_corrupted_weight_is_caught_at_its_layer(monkeypatch):
    model, ratios, scores = _r20()
    prune_model(model, ratios, scores, (3, 32, 32))  # exact: passes
    honest = prune_module._prune_group

    def corrupt(graph, pruned, group, idxs):
        honest(graph, pruned, group, idxs)
        if group.root == "layer1.0.conv1":
            pruned.get_submodule("layer1.0.conv1").weight.data[0] += 0.5

    monkeypatch.setattr(prune_module, "_prune_group", corrupt)
    with pytest.raises(PruneError, match=r"pruning CifarResNet went wrong at layer1\.0\.conv1 \(conv\): its output "
                                         r"has max \|difference\| .* > tolerance .*rooted at conv1, layer1\.0\.conv1 "):
        prune_model(model, ratios, scores, (3, 32, 32))


def test_a_wrong_handler_is_caught_at_the_first_conv_that_reads_the_wrong_channels(monkeypatch):
    model, ratios, scores = _r20()
    honest = tp.pruner.function.ConvPruner.prune_in_channels

    def shifted(self, layer, idxs):  # removes the input channels next to the right ones
        return honest(self, layer, [(i + 1) % layer.in_channels for i in idxs])

    monkeypatch.setattr(tp.pruner.function.ConvPruner, "prune_in_channels", shifted)
    with pytest.raises(PruneError, match=r"went wrong at layer1\.0\.conv1 \(conv\).*rooted at conv1"):
        prune_model(model, ratios, scores, (3, 32, 32))


def test_an_exception_inside_torch_pruning_becomes_a_prune_error_naming_the_group(monkeypatch):
    model, ratios, scores = _r20()

    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tp.dependency.group.Group, "prune", boom)
    with pytest.raises(PruneError, match=r"Torch-Pruning failed to prune the group rooted at 'conv1' \(convs conv1, "
                                         r"layer1\.0\.conv2, .*RuntimeError: boom\. Give this group ratio 0"):
        prune_model(model, ratios, scores, (3, 32, 32))
    monkeypatch.undo()

    def no_trace(*args, **kwargs):
        raise TypeError("unsupported op")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", no_trace)
    for call in (lambda: coupled_groups(model, (3, 32, 32)), lambda: prune_model(model, ratios, scores, (3, 32, 32))):
        with pytest.raises(PruneError, match=r"Torch-Pruning cannot trace CifarResNet \(TypeError: unsupported op\)"):
            call()
    assert issubclass(PruneError, UserError)
