"""DO-Conv (Cao et al., 2020): a depthwise over-parameterized convolution, trained in place of a plain conv
and folded back into one before scoring, pruning or saving, so inference parameters are unchanged.

>>> model = overparameterize(build_model("resnet20"))   # every k x k conv (k > 1, groups == 1) -> DOConv2d
>>> ...                                                  # train
>>> model = fold(model)                                  # every DOConv2d -> nn.Conv2d with the folded kernel

A :class:`DOConv2d` holds W (C_out, C_in, D_mul) (methods.md's (C_out, C_in/g, D_mul) with g = 1) and a
depthwise kernel D (C_in, M*N, D_mul), initialised to zero and added to a frozen identity I (a buffer, not
saved), so a fresh layer equals the plain conv it came from. Its kernel is ``einsum('ims,ois->oim', D + I, W)``
reshaped to (C_out, C_in, M, N); that is the only place D and W meet, so folding is exact up to float rounding.

What :func:`overparameterize` converts: every ``nn.Conv2d`` with a kernel larger than 1x1 and ``groups == 1``
(3x3 in every CIFAR model; also the 7x7 stem of the ImageNet ResNets). 1x1 convs stay plain (methods.md: for
M*N = 1, D + I is a per-channel scale that W absorbs). Grouped and depthwise convs (MobileNetV2's 3x3 depthwise
convs) stay plain too, and DOConv2d takes ``groups == 1`` only: the spec covers ordinary convs, and
over-parameterizing a depthwise conv is a different operator (the paper's DO-DConv), not implemented here.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit.errors import UserError

__all__ = ["DOConv2d", "overparameterize", "fold"]


class DOConv2d(nn.Module):
    """A conv whose (C_out, C_in, M, N) kernel is composed from W (C_out, C_in, D_mul) and
    D + I (C_in, M*N, D_mul); input (B, C_in, H, W) -> output as the plain conv with the same settings.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``
            (``padding_mode`` is always zeros, ``groups`` always 1).
        d_mul: the depth multiplier D_mul, at least M*N (default M*N, as in the paper).

    W is initialised like ``nn.Conv2d``'s weight, D to zero; :meth:`from_conv` starts from a conv's weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        d_mul: int | None = None,
    ):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        mn = kh * kw
        d_mul = mn if d_mul is None else d_mul
        if mn < 2:
            raise UserError(f"DO-Conv needs a kernel larger than 1x1, got {kh}x{kw} (1x1 convs stay plain)")
        if d_mul < mn:
            raise UserError(f"d_mul must be at least M*N = {mn}, got {d_mul}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.d_mul = stride, padding, dilation, d_mul
        self.W = nn.Parameter(torch.empty(out_channels, in_channels, d_mul))
        self.D = nn.Parameter(torch.zeros(in_channels, mn, d_mul))
        identity = torch.eye(mn, d_mul).expand(in_channels, mn, d_mul).contiguous()
        self.register_buffer("identity", identity, persistent=False)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))  # nn.Conv2d's default, fan_in = C_in * D_mul
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * mn)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, d_mul: int | None = None) -> DOConv2d:
        """A DOConv2d computing exactly what ``conv`` computes (W = its kernel, zero-padded to D_mul; D = 0),
        on its device and dtype."""
        if conv.groups != 1:
            raise UserError(f"DO-Conv replaces convs with groups == 1, got groups={conv.groups}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise UserError(f"DO-Conv takes numeric zero padding, got padding={conv.padding!r} "
                             f"padding_mode={conv.padding_mode!r}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  bias=conv.bias is not None, d_mul=d_mul)
        new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            mn = new.identity.shape[1]
            new.W.zero_()
            new.W[:, :, :mn] = conv.weight.reshape(conv.out_channels, conv.in_channels, mn)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def kernel(self) -> torch.Tensor:
        """The folded kernel (C_out, C_in, M, N) = einsum('ims,ois->oim', D + I, W), reshaped."""
        k = torch.einsum("ims,ois->oim", self.D + self.identity, self.W)
        return k.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation)

    def to_conv(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` with the folded kernel (same output, C_out*C_in*M*N weights)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, bias=self.bias is not None)
        conv.to(device=self.W.device, dtype=self.W.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, d_mul={self.d_mul}, bias={self.bias is not None}")


def overparameterize(model: nn.Module, d_mul: int | None = None) -> nn.Module:
    """Replace, in place, every ``nn.Conv2d`` with a kernel larger than 1x1 and ``groups == 1`` by a
    :class:`DOConv2d` starting from its weights (same outputs); returns ``model`` (a new module when
    ``model`` itself is such a conv)."""
    return _replace(model, lambda m: isinstance(m, nn.Conv2d) and m.groups == 1
                    and m.kernel_size[0] * m.kernel_size[1] > 1, lambda m: DOConv2d.from_conv(m, d_mul))


def fold(model: nn.Module) -> nn.Module:
    """Replace, in place, every :class:`DOConv2d` by the plain ``nn.Conv2d`` with its folded kernel;
    returns ``model`` (a new module when ``model`` itself is a DOConv2d). A model without one is unchanged."""
    return _replace(model, lambda m: isinstance(m, DOConv2d), DOConv2d.to_conv)


def _replace(model: nn.Module, match, make) -> nn.Module:
    if match(model):
        return make(model)
    for name, module in list(model.named_modules()):
        if name and match(module):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = make(module)
            new.train(module.training)
            setattr(parent, attr, new)
    return model
