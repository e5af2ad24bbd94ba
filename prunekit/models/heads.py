"""A classifier's head: how many logits a model makes, and replacing the layer that makes them.

>>> outputs_of(model, (3, 32, 32))        # 1000
>>> replace_head(model, 10, (3, 32, 32))  # 'fc': the replaced layer, now with 10 outputs
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.errors import UserError

__all__ = ["outputs_of", "replace_head"]


def outputs_of(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """The number of outputs (logits) of ``model`` for one (C, H, W) ``input_size`` image, from an eval-mode forward
    of zeros on the model's device (train mode restored); UserError when it does not run on such inputs."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_size, device=device))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise UserError(f"the model does not run on {'x'.join(map(str, input_size))} inputs ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}): name the input size it takes with an @ suffix") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise UserError(f"the model returns {type(out).__name__} {tuple(getattr(out, 'shape', ()))}, not logits "
                        "(batch, classes): prunekit scores and prunes classifiers")
    return int(out.shape[1])


def replace_head(model: nn.Module, num_classes: int, input_size: tuple[int, int, int]) -> str:
    """Replace, in place, the layer that makes ``model``'s logits by a fresh one with ``num_classes`` outputs: timm's
    ``reset_classifier``, else the last Linear (or 1x1 conv, as SqueezeNet's) whose outputs are the logits.
    -> the replaced layer's name. UserError when there is none."""
    before = outputs_of(model, input_size)
    name = _head_name(model, before)
    if hasattr(model, "reset_classifier") and callable(model.reset_classifier):
        model.reset_classifier(num_classes)
    elif name is None:
        raise UserError(f"found no linear or 1x1 conv layer making the model's {before} outputs: replace its head in "
                        "your own code (a factory) instead")
    else:
        old = model.get_submodule(name)
        param = next(old.parameters())
        new = (nn.Linear(old.in_features, num_classes, bias=old.bias is not None) if isinstance(old, nn.Linear) else
               nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                         bias=old.bias is not None))
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr,
                new.to(device=param.device, dtype=param.dtype))
    after = outputs_of(model, input_size)
    if after != num_classes:
        raise UserError(f"replacing the head {name} left {after} outputs, not {num_classes}")
    return name or "classifier"


def _head_name(model: nn.Module, outputs: int) -> str | None:
    """The last Linear with ``outputs`` outputs, or 1x1 conv with ``outputs`` channels, in module order."""
    for name, m in reversed(list(model.named_modules())):
        if isinstance(m, nn.Linear) and m.out_features == outputs:
            return name
        if isinstance(m, nn.Conv2d) and m.out_channels == outputs and m.kernel_size == (1, 1):
            return name
    return None
