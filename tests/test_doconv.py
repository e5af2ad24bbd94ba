"""DO-Conv: a fresh layer equals its conv, folding is exact, inference parameters are unchanged, D trains,
and checkpoints hold the folded plain architecture."""
import copy

import pytest
import torch
import torch.nn as nn

from prunekit.models.checkpoints import load_checkpoint, save_checkpoint
from prunekit.models.doconv import DOConv2d, fold, overparameterize
from prunekit.models.zoo import build_model, count_params


def _perturb(model, scale=0.05, seed=1):
    """Random changes to every DO-Conv's D and W (what training does), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DOConv2d):
                m.D.add_(scale * torch.randn(m.D.shape, generator=g))
                m.W.mul_(1 + scale * torch.randn(m.W.shape, generator=g))


@pytest.mark.parametrize("kwargs", [dict(stride=1, padding=1, bias=False), dict(stride=2, padding=0, bias=True),
                                    dict(stride=1, padding=2, dilation=2, bias=True)])
def test_a_fresh_doconv_equals_the_conv_it_came_from(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, **kwargs)
    do = DOConv2d.from_conv(conv)
    assert do.D.abs().max() == 0 and not do.identity.requires_grad
    x = torch.randn(2, 5, 9, 9)
    with torch.no_grad():
        assert torch.equal(do.kernel(), conv.weight)
        assert torch.allclose(do(x), conv(x), atol=1e-6)


def test_the_folded_kernel_is_the_einsum_of_d_plus_identity_and_w():
    torch.manual_seed(0)
    do = DOConv2d(3, 4, (3, 2), d_mul=8)
    with torch.no_grad():
        do.D.normal_()
    d = do.D + torch.eye(6, 8)  # (C_in, M*N, D_mul)
    expected = torch.einsum("ims,ois->oim", d, do.W).reshape(4, 3, 3, 2)
    assert torch.allclose(do.kernel(), expected)
    assert torch.allclose(do.kernel()[0, 1, 2, 1], (d[1, 5] * do.W[0, 1]).sum())  # one entry by hand


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="1x1"):
        DOConv2d(3, 4, 1)
    with pytest.raises(ValueError, match="d_mul"):
        DOConv2d(3, 4, 3, d_mul=4)
    with pytest.raises(ValueError, match="groups"):
        DOConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(ValueError, match="padding"):
        DOConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize("arch", ["resnet20", "vgg16_bn"])
def test_folding_gives_the_doconv_output_and_the_original_parameter_count(arch):
    torch.manual_seed(0)
    plain = build_model(arch).eval()
    model = overparameterize(copy.deepcopy(plain))
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    dos = [m for m in model.modules() if isinstance(m, DOConv2d)]
    assert len(dos) == sum(m.kernel_size == (3, 3) for m in convs) > 0
    assert count_params(model) > count_params(plain)  # D is extra, but only while training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-5)  # fresh: the same network
        _perturb(model)
        out = model(x)
        folded = fold(model)
        assert not any(isinstance(m, DOConv2d) for m in folded.modules())
        diff = (folded(x) - out).abs().max().item()
    assert diff <= 1e-5 * max(1.0, out.abs().max().item()), diff
    assert not torch.allclose(out, plain(x), atol=1e-3)  # the perturbation mattered
    assert count_params(folded) == count_params(plain)
    assert {k: v.shape for k, v in folded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}


def test_one_by_one_grouped_and_depthwise_convs_stay_plain():
    model = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, groups=2),
                          nn.Conv2d(8, 8, 3))
    overparameterize(model)
    assert [type(m).__name__ for m in model] == ["Conv2d", "Conv2d", "Conv2d", "DOConv2d"]
    assert type(overparameterize(nn.Conv2d(2, 2, 3))) is DOConv2d and type(fold(DOConv2d(2, 2, 3))) is nn.Conv2d


def test_training_with_doconv_changes_d_not_the_identity():
    torch.manual_seed(0)
    model = overparameterize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)))
    first = model[0]
    identity = first.identity.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 2
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first.D.abs().max() > 0 and torch.equal(first.identity, identity)
    assert "identity" not in "".join(model.state_dict())  # a constant: never saved


def test_a_folded_model_saves_and_reloads_as_the_plain_architecture(tmp_path):
    torch.manual_seed(0)
    model = overparameterize(build_model("resnet20"))
    _perturb(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    save_checkpoint(fold(model), tmp_path / "m.safetensors", arch="resnet20", num_classes=10)
    reloaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.allclose(reloaded(x), expected, atol=1e-5)
