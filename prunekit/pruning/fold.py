"""BatchNorm folded into the conv before it, for evaluation: an eval-mode BN after a conv is an affine map per
channel, so ``bn(conv(x))`` equals one conv with scaled filters and a bias (the inference engines' standard rewrite).
The candidate evaluator judges each pruned candidate folded: the same accuracy up to float rounding, a third less
time per evaluation on the CPU (benchmarks/lecture_loop.py measures both on the same plans). A run's model is never
folded: what a run records and exports is the plain pruned model.

>>> pairs = pruner.conv_bn          # [(conv name, bn name)], from Torch-Pruning's graph: the BN reads only the conv
>>> fold_bn(pruned, pairs, probe)   # in place; False (nothing changed) when the folded model differs on the probe
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.pruning.verify import TOLERANCE

__all__ = ["fold_bn"]


@torch.no_grad()
def fold_bn(model: nn.Module, pairs: list[tuple[str, str]], probe: torch.Tensor) -> bool:
    """Fold each eval-mode BatchNorm of ``pairs`` ([(conv, bn) names]: the conv's output is read by the BN only) into
    its conv, in place on ``model`` (a copy the caller owns, in eval mode): conv.weight (out, in/groups, kh, kw)
    scaled per filter by gamma / sqrt(var + eps), conv.bias = (bias - mean) * gamma / sqrt(var + eps) + beta, the BN
    replaced by ``nn.Identity``. Checked: the model's output on ``probe`` (B, C, H, W) must equal the unfolded one's
    within :data:`prunekit.pruning.verify.TOLERANCE` x max(1, max|output|); otherwise every layer is put back and
    False returned. -> whether it folded."""
    pairs = [(c, b) for c, b in pairs if _foldable(model, c, b)]
    if not pairs:
        return False
    before = model(probe)
    saved = {}
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        saved[conv_name], saved[bn_name] = (conv.weight, conv.bias), bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
            1 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(scale)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
        model.set_submodule(bn_name, nn.Identity())
    after = model(probe)
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.shape == after.shape and \
            (after - before).abs().max().item() <= TOLERANCE * max(1.0, before.abs().max().item()):
        return True
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        conv.weight, conv.bias = saved[conv_name]
        model.set_submodule(bn_name, saved[bn_name])
    return False


def _foldable(model: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    return isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training and \
        bn.running_mean is not None and conv.out_channels == bn.num_features
