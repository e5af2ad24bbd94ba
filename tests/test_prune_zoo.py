"""Beyond the bundled models: every torchvision classifier and a timm sample (random init, 10 classes) either prunes
at ratio 0.3 with outputs equal to the original's with the same channels zeroed (prune_model's self-check) and an
exact instant estimate, or is refused with a PrunekitError, never a raw exception; every CNN (all but ViT and Swin)
has a prunable group, as Torch-Pruning's own pruner prunes them all. The whole zoo is slow
(`pytest -m slow`; experiments/zoo_table.py writes the same check as a table); a few representatives run by
default."""
import pytest
import torch
import torchvision

from experiments.zoo_table import RATIO, TIMM, build, check, smallest_input, torchvision_names
from prunekit.models.metrics import count_macs
from prunekit.models.zoo import count_params
from prunekit.pruning.prune import prune_model
from prunekit.pruning.structure import estimate, structure


def _prunes_exactly(row: dict) -> None:
    assert row["result"] == "prunes exactly" and row["groups"] > 0, row["result"]
    assert row["estimate_exact"] and row["params"] < row["params_before"] and row["macs"] < row["macs_before"]


def _estimate_is_exact(model, size, ratios):
    struct = structure(model, size)
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    pruned, _ = prune_model(model, ratios(struct), scores, size)
    est = estimate(struct, ratios(struct))
    assert (est.params, est.macs) == (count_params(pruned), count_macs(pruned, size))
    return struct


def _random_ratios(struct):
    g = torch.Generator().manual_seed(3)
    return {grp.root: round(float(torch.rand(1, generator=g)) * 0.8, 2) for grp in struct.groups}


def test_a_densenet_prunes_exactly_and_its_estimate_sums_the_concatenated_groups():
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(3, 3), num_init_features=16, bn_size=2,
                                        num_classes=10).eval()
    size = (3, 32, 32)
    struct = _estimate_is_exact(model, size, lambda s: {g.root: RATIO for g in s.groups})
    _estimate_is_exact(model, size, _random_ratios)
    # denseblock2's second layer reads the transition's 16 channels and the first layer's 8, from two groups
    reads = dict(struct.reads)["features.denseblock2.denselayer2.conv1"]
    assert sorted(reads) == [("features.denseblock2.denselayer1.conv2", 1), ("features.transition1.conv", 1)]
    assert struct.frozen == {}


@pytest.mark.parametrize("ratios", ["uniform", "random"])
def test_densenet121_estimate_equals_the_pruned_model(ratios):
    model = build("torchvision", "densenet121", 64)
    _estimate_is_exact(model, (3, 64, 64), _random_ratios if ratios == "random" else
                       (lambda s: {g.root: RATIO for g in s.groups}))


def test_mobilenet_v3_small_prunes_exactly():
    _prunes_exactly(check(build("torchvision", "mobilenet_v3_small", 64), (3, 64, 64)))


def test_regnet_prunes_its_grouped_convs_by_blocks_exactly():
    """Each grouped conv's inner width and the conv feeding it: the same positions of every group removed (as
    Torch-Pruning's own pruner does); nothing is frozen (44 convs were, when grouped convs froze)."""
    row = check(build("torchvision", "regnet_x_400mf", 64), (3, 64, 64))
    _prunes_exactly(row)
    assert (row["frozen"], row["groups"]) == (0, 49) and row["grouped"] == 44


def test_shufflenet_freezes_what_its_channel_shuffles_mix_and_prunes_the_rest_exactly():
    """Its chunk(2) is followed now; the channel shuffle (a reshape that interleaves the halves) is not."""
    row = check(build("torchvision", "shufflenet_v2_x0_5", 64), (3, 64, 64))
    _prunes_exactly(row)
    assert set(row["why_frozen"]) == {"reshape / channel shuffle"} and row["groups"] >= 10


def test_a_timm_model_prunes_exactly():
    _prunes_exactly(check(build("timm", "mobilenetv3_small_050", 64), (3, 64, 64)))


@pytest.mark.slow
@pytest.mark.parametrize("source, name, grouped, spread", [
    ("torchvision", "convnext_tiny", 0, 0),  # LayerNorm2d streams, channels-last LayerNorms, linear layers, layer scale
    ("timm", "convnext_atto", 0, 0),  # LayerNorm2d, a layer scale reshaped to (1, C, 1, 1)
    ("timm", "regnetx_002", 26, 0), ("torchvision", "resnext50_32x4d", 32, 0),  # grouped convs
    ("timm", "ghostnet_050", 0, 15),  # a conv and its cheap copy concatenated into wider convs
])
def test_what_torch_prunings_own_pruner_prunes_is_prunable_and_exact(source, name, grouped, spread):
    """ConvNeXt, RegNet, ResNeXt and GhostNet, which Torch-Pruning's BasePruner prunes at 0.3, have no conv left
    frozen and prune every group exactly (15 models once had no prunable group, others kept their grouped convs)."""
    row = check(build(source, name, 64), (3, 64, 64))
    _prunes_exactly(row)
    assert (row["frozen"], row["grouped"], row["spread"]) == (0, grouped, spread), row


def _zoo_row(source, name):
    model, size = smallest_input(source, name)
    row = check(model, size)
    assert row["result"] == "prunes exactly" or row["result"].startswith(("nothing prunable", "refused")), row
    if not row["result"].startswith("refused"):
        assert row["estimate_exact"], row
    if not name.startswith(("vit_", "swin_")):  # the transformers' reshapes stop every group; every CNN prunes
        assert row["result"] == "prunes exactly", row
    return row


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_names())
def test_every_torchvision_classifier_prunes_exactly_or_is_refused_clearly(name):
    _zoo_row("torchvision", name)


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM)
def test_a_timm_sample_prunes_exactly_or_is_refused_clearly(name):
    _zoo_row("timm", name)
