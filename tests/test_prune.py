"""Physical pruning: the smaller model computes exactly what the original computes with the removed channels
switched off (their maps zeroed where every consumer reads them)."""
import math

import pytest
import torch

from prunekit.errors import UserError
from prunekit.models.zoo import build_model, model_info
from prunekit.pruning.prune import coupled_groups, prune_model
from prunekit.pruning.ratios import kept_channels, validate_ratios


def _reference(model, groups, removed):
    """The original model with forward pre-hooks zeroing the removed channels at every consumer's input."""
    hooks = []
    for g in groups:
        if g.root not in removed:
            continue
        idx = torch.tensor(removed[g.root])
        for name in g.consumers:
            def zero(module, args, idx=idx):
                x = args[0].clone()
                x[:, idx] = 0
                return (x,)
            hooks.append(model.get_submodule(name).register_forward_pre_hook(zero))
    return hooks


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "vgg16_bn", "resnet18_cifar", "mobilenet_v2_cifar"])
def test_pruned_outputs_equal_the_original_with_those_channels_zeroed(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    for m in model.modules():  # non-trivial BN statistics so that a wrong channel shows
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    size = model_info(name).input_size
    groups, _ = coupled_groups(model, size)
    g = torch.Generator().manual_seed(1)
    ratios = {grp.root: float(torch.rand(1, generator=g)) * 0.7 for grp in groups}
    scores = {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, removed = prune_model(model, ratios, scores, size)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    for grp in groups:
        for member in grp.members:
            assert pruned.get_submodule(member).out_channels == kept_channels(grp.channels, ratios[grp.root])
    x = torch.randn(4, *size)
    hooks = _reference(model, groups, removed)
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        got = pruned(x)
    assert (got - expected).abs().max().item() < 1e-5 * max(1.0, expected.abs().max().item())


def test_resnet_groups_are_the_residual_stages():
    groups, frozen = coupled_groups(build_model("resnet20"), (3, 32, 32))
    streams = [g for g in groups if g.coupled]
    assert [len(g.members) for g in streams] == [4, 3, 3]  # stem + 3 conv2 in stage 1; 3 conv2 in stages 2, 3
    assert streams[0].root == "conv1" and "layer1.2.conv2" in streams[0].members
    assert "layer2.0.shortcut" in streams[0].consumers
    assert len(groups) == 1 + 9 + 2  # stem stream, 9 inner convs, two more streams
    assert frozen == {}


def test_bad_plans_are_refused_with_a_reason():
    groups, _ = coupled_groups(build_model("resnet20"), (3, 32, 32))
    with pytest.raises(ValueError, match="unknown layer 'layer9.conv'"):
        validate_ratios({"layer9.conv": 0.5}, groups)
    with pytest.raises(ValueError, match="coupled with 'conv1'"):
        validate_ratios({"layer1.0.conv2": 0.5}, groups)
    for bad in (-0.1, 1.0, 1.2, math.nan):
        with pytest.raises(ValueError, match=r"in \[0, 0.95\]"):
            validate_ratios({"layer1.0.conv1": bad}, groups)
    with pytest.raises(ValueError, match="removes every one of the 16 filters"):
        validate_ratios({"layer1.0.conv1": 0.95}, groups)


@pytest.mark.parametrize("name, round_to", [("resnet20", 1), ("resnet56", 1), ("vgg16_bn", 1), ("resnet18_cifar", 1),
                                            ("mobilenet_v2_cifar", 1), ("resnet20", 8), ("vgg16_bn", 8)])
def test_the_instant_estimate_equals_what_pruning_produces(name, round_to):
    """Also with every kept width rounded to a multiple of 8 (the plan's round_to): each pruned conv's width is
    then a multiple of 8, or its group keeps every filter."""
    from prunekit.models.metrics import count_macs
    from prunekit.models.zoo import count_params
    from prunekit.pruning.structure import estimate, structure

    torch.manual_seed(0)
    model = build_model(name).eval()
    size = model_info(name).input_size
    struct = structure(model, size)
    g = torch.Generator().manual_seed(2)
    ratios = {grp.root: round(float(torch.rand(1, generator=g)) * 0.8, 2) for grp in struct.groups}
    scores = {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    est = estimate(struct, ratios, round_to)
    assert est.params_before == count_params(model) and est.macs_before == count_macs(model, size)
    pruned, _ = prune_model(model, ratios, scores, size, round_to=round_to)
    assert est.params == count_params(pruned)
    assert est.macs == count_macs(pruned, size)
    for layer, (_, after) in est.channels.items():
        assert pruned.get_submodule(layer).out_channels == after
    for grp in struct.groups:
        for member in grp.members:
            width = pruned.get_submodule(member).out_channels
            assert width == kept_channels(grp.channels, ratios[grp.root], round_to)
            assert width % round_to == 0 or width == grp.channels
    if round_to > 1:
        assert est.macs != estimate(struct, ratios).macs  # the rounding changed something


def test_non_finite_or_wrong_length_scores_never_reach_the_choice_of_filters():
    """A criterion that gives NaN on a dead layer, or scores of another width, are refused naming the layer; before,
    NaN sorted as the lowest score or argsort put it last, and a short tensor picked filters by the wrong index."""
    from prunekit.pruning.selection import group_scores, removed_filters

    model = build_model("resnet20").eval()
    groups, _ = coupled_groups(model, (3, 32, 32))
    scores = {n: m.weight.detach().abs().sum((1, 2, 3)) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    dead = dict(scores, **{"layer2.1.conv1": torch.full((32,), math.nan)})
    for call in (lambda: prune_model(model, {"layer2.1.conv1": 0.5}, dead, (3, 32, 32)),
                 lambda: removed_filters(groups, {"layer2.1.conv1": 0.5}, dead),
                 lambda: group_scores(groups, dead)):
        with pytest.raises(UserError, match=r"scores of 'layer2.1.conv1' are not finite at filters 0, 1, 2, .* "
                                            r"\(32 in all\)"):
            call()
    inf = scores["layer3.1.conv2"].clone().index_fill_(0, torch.tensor([7]), math.inf)
    with pytest.raises(UserError, match=r"scores of 'layer3.1.conv2' are not finite at filter 7 \(inf\)"):
        removed_filters(groups, {"layer3.0.conv2": 0.5}, dict(scores, **{"layer3.1.conv2": inf}))  # a member
    short = dict(scores, **{"layer1.1.conv1": scores["layer1.1.conv1"][:10]})
    with pytest.raises(UserError, match=r"'layer1.1.conv1' has 10 scores for its 16 filters"):
        prune_model(model, {"layer1.1.conv1": 0.5}, short, (3, 32, 32))
    assert prune_model(model, {"layer1.0.conv1": 0.5}, dead, (3, 32, 32))[1]  # a group without the dead layer: fine
