"""Prunable conv discovery (prunekit.models.layers) and the hooks (prunekit.criteria.hooks)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from saliency_testkit import SmallNet, single_thread  # noqa: F401  (autouse fixture)

from prunekit.criteria.hooks import capture, eval_mode, gate
from prunekit.models.layers import Site, conv_layers, feature_map, select_layers
from prunekit.models.zoo import build_model


def by_name(model):
    return {layer.name: layer for layer in conv_layers(model)}


def test_resnet20_chains_strides_and_receptive_fields():
    layers = by_name(build_model("resnet20"))
    assert len(layers) == 19
    stem = layers["conv1"]
    assert (stem.bn, stem.activation, stem.residual, stem.stride, stem.receptive_field) == ("bn1", "relu", False, 1, 3)
    first = layers["layer1.0.conv1"]  # the block's self.relu is called twice; the chain still reads relu
    assert (first.bn, first.activation, first.residual, first.receptive_field) == ("layer1.0.bn1", "relu", False, 5)
    second = layers["layer1.0.conv2"]  # BN output goes straight into the residual add
    assert (second.activation, second.residual, second.receptive_field) == (None, True, 7)
    down = layers["layer2.0.conv2"]  # BN output goes into the add with the option-A shortcut
    assert down.residual and down.stride == 2
    assert layers["layer3.2.conv2"].stride == 4
    # 3x3 convs add 2 * (stride before them): stem 3, stage 1 + 6*2, stage 2 + 2 + 5*4, stage 3 + 4 + 5*8 = 81
    assert layers["layer3.2.conv2"].receptive_field == 81


def test_published_receptive_fields():
    vgg = by_name(build_model("vgg16_bn"))
    assert vgg["features.40"].stride == 16 and vgg["features.40"].receptive_field == 196  # VGG-16 conv5_3
    resnet18 = by_name(build_model("resnet18"))
    assert resnet18["layer4.1.conv2"].stride == 32 and resnet18["layer4.1.conv2"].receptive_field == 435
    ds = resnet18["layer2.0.downsample.0"]
    assert ds.bn == "layer2.0.downsample.1" and ds.residual and ds.activation is None


def test_mobilenet_depthwise_flags_and_linear_bottlenecks():
    layers = by_name(build_model("mobilenet_v2"))
    assert layers["features.1.conv.0.0"].depthwise and layers["features.1.conv.0.0"].activation == "relu6"
    assert not layers["features.0.0"].depthwise
    assert sum(layer.depthwise for layer in layers.values()) == 17
    proj = layers["features.1.conv.1"]  # linear bottleneck: BN, no activation, no add
    assert (proj.activation, proj.residual) == (None, False)
    assert layers["features.3.conv.2"].residual


def test_functional_activations_and_conv_without_bn():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, stride=2), nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            x = F.relu(self.a(x))
            x = torch.sigmoid(self.bn(self.b(x)))
            x = F.max_pool2d(x, 2)
            return self.c(x) + F.avg_pool2d(x, 1, stride=1)

    layers = by_name(Net())
    assert (layers["a"].bn, layers["a"].activation, layers["a"].tap) == (None, "relu", "a")
    assert (layers["b"].bn, layers["b"].activation, layers["b"].tap) == ("bn", "sigmoid", "bn")
    # c: a (3) -> b (3 + 2) -> max pool 2 at stride 2 (5 + 2) -> 1x1 conv at stride 4
    assert (layers["c"].activation, layers["c"].residual, layers["c"].stride, layers["c"].receptive_field) == (
        None, True, 4, 7)


def test_untraceable_model_and_unknown_layer_raise():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="torch.fx"):
        conv_layers(Branchy())
    with pytest.raises(KeyError, match="layer1.0.conv1"):
        select_layers(build_model("resnet20"), ["nope"])


def test_capture_reads_the_feature_map_rule():
    model = SmallNet()
    layers = by_name(model)
    x = torch.randn(2, 3, 16, 16)
    seen = {}
    def keep(layer, fmap):
        seen[layer.name] = fmap.clone()

    with torch.no_grad(), capture(model, layers.values(), keep):
        model(x)
    with torch.no_grad():
        a1 = F.relu(model.bn1(model.conv1(x)))
        a2 = F.relu(model.bn2(model.conv2(a1)))
        t3 = model.bn3(model.conv3(model.pool(a2)))
    assert torch.allclose(seen["conv1"], a1) and torch.allclose(seen["conv2"], a2)
    assert layers["conv3"].residual and torch.allclose(seen["conv3"], t3)  # pre-add BN output, no ReLU


def test_reused_inplace_relu_does_not_corrupt_the_capture():
    model = build_model("resnet20").eval()
    layer = by_name(model)["layer1.0.conv1"]
    x = torch.randn(2, 3, 32, 32)
    seen = []
    with torch.no_grad():
        ref = model(x)
        with capture(model, [layer], lambda _, fmap: seen.append(fmap.clone())):
            out = model(x)
        block = model.layer1[0]
        expected = F.relu(block.bn1(block.conv1(F.relu(model.bn1(model.conv1(x))))))
    assert torch.equal(out, ref)
    assert torch.allclose(seen[0], expected)


def test_hooks_are_removed_even_on_error():
    model = build_model("resnet20")
    layers = conv_layers(model)

    def count():
        return sum(len(m._forward_hooks) for m in model.modules())

    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, layers, lambda layer, fmap: None):
            assert count() == len(layers)
            raise RuntimeError("boom")
    assert count() == 0

    def explode(layer, fmap):
        raise RuntimeError("inside the hook")

    with pytest.raises(RuntimeError, match="inside the hook"):
        with capture(model, layers, explode):
            model(torch.randn(1, 3, 32, 32))
    assert count() == 0
    with pytest.raises(RuntimeError, match="boom"):
        with gate(model, layers, {}):
            raise RuntimeError("boom")
    assert count() == 0


def test_gate_switches_filters_off_per_filter_and_per_image():
    model = SmallNet()
    layers = by_name(model)
    x = torch.randn(3, 3, 16, 16)
    mask = torch.ones(6)
    mask[2] = 0
    seen = {}
    with torch.no_grad(), gate(model, [layers["conv1"]], {"conv1": mask}):
        with capture(model, [layers["conv2"]], lambda layer, fmap: seen.__setitem__("conv2", fmap)):
            out = model(x)
    with torch.no_grad():
        a1 = F.relu(model.bn1(model.conv1(x))) * mask.view(1, -1, 1, 1)
        a2 = F.relu(model.bn2(model.conv2(a1)))
    assert torch.allclose(seen["conv2"], a2)
    assert not torch.allclose(out, model(x))
    per_image = torch.ones(3, 6)
    per_image[1] = 0  # image 1 loses every filter of conv1, the others keep theirs
    with torch.no_grad():
        with gate(model, [layers["conv1"]], {"conv1": per_image}):
            gated = model(x)
        with gate(model, [layers["conv1"]], {"conv1": torch.zeros(6)}):
            all_off = model(x[1:2])
    assert torch.allclose(gated[1], all_off[0], atol=1e-6) and not torch.allclose(gated[1], model(x)[1])
    assert torch.allclose(gated[0], model(x)[0])


def test_feature_map_applies_the_activation_without_touching_the_input():
    layer = conv_layers(SmallNet())[0]
    t = torch.randn(2, 6, 4, 4)
    before = t.clone()
    assert torch.equal(feature_map(layer.site(), t), F.relu(before)) and torch.equal(t, before)
    assert feature_map(layer.site("post_add"), t) is not t  # not residual: the same site under both rules


def test_eval_mode_restores_training_even_on_error():
    model = SmallNet().train()
    with pytest.raises(ValueError):
        with eval_mode(model):
            assert not model.training
            raise ValueError
    assert model.training


def test_post_add_sites_of_resnets_name_the_call_of_the_shared_relu():
    resnet20 = by_name(build_model("resnet20"))
    assert resnet20["layer1.0.conv2"].post_add == Site("layer1.0.relu", 1, "output")  # relu: after bn1, after add
    assert resnet20["layer1.0.conv1"].post_add is None and resnet20["conv1"].post_add is None
    resnet18 = by_name(build_model("resnet18_cifar"))
    assert resnet18["layer2.0.conv2"].post_add == resnet18["layer2.0.downsample.0"].post_add == Site(
        "layer2.0.relu", 1, "output")  # both BN outputs feed the one add
    assert by_name(build_model("resnet50"))["layer1.0.conv3"].post_add == Site("layer1.0.relu", 2, "output")


def read(model, layers, x, reads):
    seen = {}
    with torch.no_grad(), capture(model, layers, lambda layer, fmap: seen.__setitem__(layer.name, fmap.clone()), reads):
        model(x)
    return seen


def test_capture_post_add_reads_the_second_call_of_torchvisions_shared_relu():
    torch.manual_seed(0)
    model = build_model("resnet18_cifar").eval()
    layers = by_name(model)
    x = torch.randn(1, 3, 32, 32)
    calls = []  # every output of layer1.0's one ReLU module: after bn1, then after the add
    handle = model.layer1[0].relu.register_forward_hook(lambda m, i, o: calls.append(o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    chosen = [layers["layer1.0.conv1"], layers["layer1.0.conv2"]]
    post, pre = read(model, chosen, x, "post_add"), read(model, chosen, x, "pre_add")
    assert len(calls) == 2 and torch.equal(post["layer1.0.conv2"], calls[1])
    assert torch.equal(post["layer1.0.conv1"], calls[0]) and torch.equal(pre["layer1.0.conv1"], calls[0])
    assert not torch.equal(pre["layer1.0.conv2"], calls[1])  # the BN output before the add
    twice = []  # two forwards in one capture: the call count restarts at every forward
    with torch.no_grad(), capture(model, chosen[1:], lambda layer, fmap: twice.append(fmap.clone()), "post_add"):
        model(x)
        model(x)
    assert len(twice) == 2 and all(torch.equal(t, calls[1]) for t in twice)


def test_post_add_without_an_activation_module_is_read_where_a_module_takes_it():
    torch.manual_seed(0)
    mobilenet = build_model("mobilenet_v2_cifar").eval()
    proj = by_name(mobilenet)["features.3.conv.2"]  # linear bottleneck: x + conv(x), no activation after
    assert proj.post_add == Site("features.4.conv.0.0", 0, "input")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = mobilenet.features[:4](x)
    assert torch.equal(read(mobilenet, [proj], x, "post_add")["features.3.conv.2"], expected)

    class Functional(nn.Module):
        def __init__(self, head: bool):
            super().__init__()
            self.a, self.bn, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1)
            self.head = head

        def forward(self, x):
            y = F.relu(self.bn(self.a(x)) + x)
            return self.b(y) if self.head else y.mean((2, 3))

    net = Functional(head=True).eval()
    assert by_name(net)["a"].post_add == Site("b", 0, "input")
    x = torch.randn(2, 2, 5, 5)
    with torch.no_grad():
        assert torch.equal(read(net, [by_name(net)["a"]], x, "post_add")["a"], F.relu(net.bn(net.a(x)) + x))
    headless = Functional(head=False).eval()
    alone = by_name(headless)["a"]
    assert alone.residual and alone.post_add is None and alone.site("post_add") == alone.site("pre_add")
    with pytest.raises(ValueError, match="reads must be one of 'pre_add', 'post_add', got 'after'"):
        alone.site("after")
