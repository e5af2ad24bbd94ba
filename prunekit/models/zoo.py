"""Build a network by name, from any model source (:mod:`prunekit.models.sources`), and the registered networks.

>>> model = build_model("resnet20", num_classes=10)   # CIFAR ResNet-20, input (N, 3, 32, 32)
>>> list_models()                                       # every registered name
>>> model_info("vgg16_bn").input_size                   # (3, 32, 32)

An unknown name raises ``KeyError`` listing the known ones (and the close matches). Each entry carries metadata
(:class:`ModelInfo`): the input size it expects, its family and a one-line description.

Beyond the registered names (:mod:`prunekit.models.source_registered`; add one with :func:`register_model`), the
other sources: ``torchvision:<name>``, ``timm:<name>`` and
``factory:<package.module>:<function>``, any of them (a registered name too) with an input-size suffix
``@<side>`` or ``@<H>x<W>``; :func:`model_info` and :func:`build_model` take these names everywhere a registered
one goes. ``build_model(..., pretrained=True)`` asks for downloaded weights; :func:`create_model` also says what
the weights are (a download that fails falls back to random initialisation, and the note says why).

CIFAR ResNets follow He et al. (2016), section 4.2: a 3x3 stem with 16 channels, three stages of
``n`` basic blocks with 16/32/64 channels (depth = 6n + 2), global average pooling and a linear
classifier. Their down-sampling shortcut is option A (parameter-free: subsample, then add into the
first channels of the wider branch), which gives the published parameter counts (ResNet-20 0.27M,
ResNet-56 0.85M); ``shortcut="B"`` swaps in a 1x1 conv + BN projection.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from prunekit.errors import UserError
# the model sources register themselves on import, in this order (the order of lists and "did you mean" hints)
from prunekit.models.source_registered import list_models, register_model  # isort: skip
from prunekit.models import source_torchvision  # noqa: F401  # isort: skip
from prunekit.models import source_timm  # noqa: F401  # isort: skip
from prunekit.models import source_factory  # noqa: F401  # isort: skip
from prunekit.models.sources import BuiltModel, ModelInfo, get_source, parse_spec  # isort: skip

__all__ = ["build_model", "create_model", "model_info", "count_params", "ModelInfo", "BuiltModel", "register_model",
           "list_models"]


def model_info(name: str) -> ModelInfo:
    """The metadata of ``name`` (a registered name or a source spec, with or without an ``@`` size); UnknownNameError
    (a ``KeyError``) naming the known models and the close matches when it is unknown."""
    spec = parse_spec(name)
    source = get_source(spec.source)
    source.check_known(spec)

    def builder(num_classes: int = 10, **kwargs) -> nn.Module:
        return source.build(spec, num_classes, **kwargs)[0]

    return ModelInfo(str(spec), builder, source.input_size(spec), source.family(spec), source.description(spec),
                     spec.source)


def create_model(name: str, *, num_classes: int = 10, pretrained: bool = False, **kwargs) -> BuiltModel:
    """Build ``name`` (registered or a source spec) with ``num_classes`` outputs -> :class:`BuiltModel` (the model
    and how its weights were initialised): the step below :func:`build_model`, the entry point, for a caller that
    shows the user where the weights came from. ``pretrained``: download the source's weights (torchvision DEFAULT, a
    new head for other than 1000 classes; timm's own); offline, random weights and a note saying why. Registered
    models have no pretrained weights (the note says so). ``kwargs`` go to a registered model's builder."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    spec = parse_spec(name)
    source = get_source(spec.source)
    source.check_known(spec)
    return BuiltModel(*source.build(spec, num_classes, pretrained, **kwargs))


def build_model(name: str, *, num_classes: int = 10, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``name`` with ``num_classes`` outputs: the entry point for a model (weights freshly initialised, or with
    ``pretrained`` downloaded: see :func:`create_model`, which also returns what the weights are; here a failed
    download is a warning).

    Args:
        name: a name of :func:`list_models`, or ``torchvision:<name>``, ``timm:<name>``,
            ``factory:<package.module>:<function>``, each with an optional ``@<side>`` input size.
        num_classes: the outputs (logits) of the classifier.
        pretrained: download the source's weights (registered models have none).
        kwargs: the registered builder's options (``shortcut="B"`` for the CIFAR ResNets).

    Returns: an ``nn.Module`` taking (N, C, H, W) images, (C, H, W) being :func:`model_info`'s ``input_size``,
    and returning logits (N, num_classes).

    >>> model = build_model("resnet20", num_classes=10)
    >>> model(torch.zeros(2, *model_info("resnet20").input_size)).shape
    torch.Size([2, 10])
    """
    built = create_model(name, num_classes=num_classes, pretrained=pretrained, **kwargs)
    if pretrained and not built.weights.startswith("pretrained"):
        warnings.warn(built.weights, stacklevel=2)
    return built.model


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al., 2016)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and copy the input channels into output channels; the other
    output channels are zero (the zero padding of option A).

    ``route`` (a bool buffer (C_out, C_in), saved in the state dict) has route[o, i] = True when input channel i
    goes to output channel o; a fresh model routes channel i to channel i. Pruning deletes its rows (output
    channels) and columns (input channels), so a pruned file rebuilds both sizes from the buffer's shape.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if out_planes < in_planes:
            raise UserError(f"option-A shortcut needs out_planes >= in_planes, got {in_planes} -> {out_planes}")
        self.stride = stride
        self.register_buffer("route", torch.eye(out_planes, in_planes, dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        x = F.avg_pool2d(x, 1, self.stride) if self.stride > 1 else x
        dst, src = self.route.nonzero().unbind(1)
        out = x.new_zeros(x.shape[0], self.route.shape[0], x.shape[2], x.shape[3])
        return out.index_copy(1, dst, x.index_select(1, src))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; ReLU after the add."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: (N, 3, 32, 32) -> logits (N, num_classes)."""

    def __init__(self, depth: int, num_classes: int = 10, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise UserError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth}")
        if shortcut not in ("A", "B"):
            raise UserError(f"shortcut must be 'A' (parameter-free) or 'B' (1x1 conv), got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register_cifar_resnet(depth: int) -> None:
    @register_model(
        f"resnet{depth}",
        input_size=(3, 32, 32),
        family="cifar-resnet",
        description=f"CIFAR ResNet-{depth} (He et al. 2016; 3 stages of 16/32/64 channels, option-A shortcuts)",
    )
    def _build(num_classes: int = 10, shortcut: str = "A") -> nn.Module:
        return CifarResNet(depth, num_classes, shortcut)


for _depth in (20, 32, 56, 110):
    _register_cifar_resnet(_depth)


# ----------------------------------------------------------------------------------------------
# VGG-16-BN for CIFAR (the HRank family's; methods.md)

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class CifarVGG(nn.Module):
    """VGG with BN for 32x32 inputs: 3x3 convs without bias, each followed by BN and ReLU; 'M' is a 2x2 max
    pool; then AvgPool2d(2) and the head Linear(512, 512), BatchNorm1d, ReLU, Linear(512, num_classes).
    (N, 3, 32, 32) -> (N, num_classes)."""

    def __init__(self, cfg: list = VGG16_CFG, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_ch = v
        layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model(
    "vgg16_bn",
    input_size=(3, 32, 32),
    family="cifar-vgg",
    description="VGG-16-BN for CIFAR as in HRank/SFM (13 convs, AvgPool2d(2), 512-512 head with BN1d)",
)
def _vgg16_bn(num_classes: int = 10) -> nn.Module:
    return CifarVGG(VGG16_CFG, num_classes)


# ----------------------------------------------------------------------------------------------
# torchvision models, and their 32x32-input variants


def _resnet_for_32(model: nn.Module) -> nn.Module:
    """A torchvision ResNet adapted to 32x32 inputs: 3x3 stride-1 stem, no max pool."""
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _mobilenet_v2_for_32(model: nn.Module) -> nn.Module:
    """torchvision MobileNetV2 adapted to 32x32 inputs: stride 1 in the stem and in the second stage
    (as in the common CIFAR ports), so the last feature map is 4x4 instead of 1x1."""
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)
    return model


@register_model("resnet18", input_size=(3, 224, 224), family="torchvision", description="torchvision ResNet-18")
def _resnet18(num_classes: int = 10) -> nn.Module:
    return torchvision.models.resnet18(num_classes=num_classes)


@register_model("resnet50", input_size=(3, 224, 224), family="torchvision", description="torchvision ResNet-50")
def _resnet50(num_classes: int = 10) -> nn.Module:
    return torchvision.models.resnet50(num_classes=num_classes)


@register_model(
    "mobilenet_v2", input_size=(3, 224, 224), family="torchvision", description="torchvision MobileNetV2"
)
def _mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return torchvision.models.mobilenet_v2(num_classes=num_classes)


@register_model(
    "resnet18_cifar",
    input_size=(3, 32, 32),
    family="torchvision",
    description="torchvision ResNet-18 for 32x32 inputs (3x3 stride-1 stem, no max pool)",
)
def _resnet18_cifar(num_classes: int = 10) -> nn.Module:
    return _resnet_for_32(torchvision.models.resnet18(num_classes=num_classes))


@register_model(
    "resnet50_cifar",
    input_size=(3, 32, 32),
    family="torchvision",
    description="torchvision ResNet-50 for 32x32 inputs (3x3 stride-1 stem, no max pool)",
)
def _resnet50_cifar(num_classes: int = 10) -> nn.Module:
    return _resnet_for_32(torchvision.models.resnet50(num_classes=num_classes))


@register_model(
    "mobilenet_v2_cifar",
    input_size=(3, 32, 32),
    family="torchvision",
    description="torchvision MobileNetV2 for 32x32 inputs (stride 1 in the stem and the second stage)",
)
def _mobilenet_v2_cifar(num_classes: int = 10) -> nn.Module:
    return _mobilenet_v2_for_32(torchvision.models.mobilenet_v2(num_classes=num_classes))
