import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.models.zoo import build_model, count_params, list_models, model_info

EXPECTED = {"resnet20", "resnet32", "resnet56", "resnet110", "vgg16_bn", "resnet18", "resnet50", "mobilenet_v2",
            "resnet18_cifar", "resnet50_cifar", "mobilenet_v2_cifar"}


def test_registry_lists_every_model():
    assert set(list_models()) == EXPECTED


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError) as err:
        build_model("resnet21")
    assert "resnet21" in str(err.value) and "resnet20" in str(err.value) and "vgg16_bn" in str(err.value)


def test_bad_num_classes_is_refused():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet20", num_classes=0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_output_shape_and_num_classes(name):
    model = build_model(name, num_classes=7).eval()
    c, h, w = model_info(name).input_size
    with torch.no_grad():
        out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, millions", [("resnet20", 0.27), ("resnet32", 0.46), ("resnet56", 0.85),
                                            ("resnet110", 1.73), ("vgg16_bn", 14.99)])
def test_parameter_counts_equal_the_published_ones(name, millions):
    assert round(count_params(build_model(name)) / 1e6, 2) == millions


def test_cifar_resnet_has_three_stages_of_16_32_64():
    model = build_model("resnet56")
    assert [b.conv2.out_channels for b in (model.layer1[0], model.layer2[0], model.layer3[0])] == [16, 32, 64]
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 9


def test_option_a_shortcut_is_subsample_and_zero_pad():
    """The down-sampling block must equal relu(branch + zero-padded subsampled input), computed by hand."""
    torch.manual_seed(0)
    block = build_model("resnet20").layer2[0].eval()
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))
        assert torch.allclose(block(x), F.relu(branch + shortcut), atol=1e-6)


def test_option_b_shortcut_uses_a_projection():
    a, b = build_model("resnet20"), build_model("resnet20", shortcut="B")
    assert count_params(b) - count_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet20", shortcut="C")


def test_vgg16_matches_the_hrank_layout():
    model = build_model("vgg16_bn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert isinstance(model.classifier[1], torch.nn.BatchNorm1d) and model.classifier[0].in_features == 512


def test_32x32_variants_keep_spatial_resolution():
    for name, last in (("resnet18_cifar", 4), ("mobilenet_v2_cifar", 4)):
        model = build_model(name).eval()
        trunk = nn.Sequential(*list(model.children())[:-2]) if name.startswith("resnet") else model.features
        with torch.no_grad():
            assert trunk(torch.zeros(1, 3, 32, 32)).shape[-1] == last


def test_pad_shortcut_routes_inputs_to_their_channels():
    from prunekit.models.zoo import PadShortcut

    pad = PadShortcut(3, 4, stride=2)
    assert torch.equal(pad.route, torch.eye(4, 3, dtype=torch.bool))
    pad.route = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool)  # as after pruning
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).view(1, 3, 4, 4)
    out = pad(x)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[0, 0], x[0, 0, ::2, ::2]) and torch.equal(out[0, 3], x[0, 2, ::2, ::2])
    assert not out[0, 1:3].any()  # input channel 1 is dropped, outputs 1 and 2 get nothing
    with pytest.raises(ValueError, match="out_planes >= in_planes"):
        PadShortcut(8, 4, 1)
