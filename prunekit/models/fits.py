"""Does a model take a data set? The one check, made wherever a model first meets images (scoring with a probe,
evaluation, pruning with evaluation or recalibration, fine-tuning, training, sweeps), before any work:

- input size: the model's (``model_info(arch).input_size``, set by an ``@`` suffix) must equal the images'. The
  32x32 data sets are arrays that are never resized, and an image folder is read at ``--image-size``; a model
  meant for other inputs is refused, with the name of the same model for these images (``...@32``);
- head: when labels are used (accuracy, fine-tuning, label-driven criteria), the model's outputs must equal the
  data set's classes; otherwise it is refused with both numbers and the fix (``--replace-head``, or the data set
  it was trained on). :func:`replace_head` swaps the last classifier layer for a fresh one with the right classes.

>>> check_model_data(model, "torchvision:densenet121", "cifar10", (32, 32), classes=10)
UserError: torchvision:densenet121 expects 224x224 inputs; cifar10 images are 32x32: use torchvision:densenet121@32 ...
"""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.errors import UserError

__all__ = ["image_size_of", "check_input_size", "outputs_of", "check_head", "check_model_data", "replace_head",
           "with_size"]


def image_size_of(data) -> tuple[int, int]:
    """(H, W) of the images of ``data``: an :class:`~prunekit.data.ArraySet` (images (N, C, H, W)),
    :class:`~prunekit.data.Splits` (its ``image_size``) or a named data set (32x32)."""
    from prunekit.data import ArraySet, Splits, image_size

    if isinstance(data, ArraySet):
        return int(data.images.shape[-2]), int(data.images.shape[-1])
    if isinstance(data, Splits):
        return tuple(data.image_size)
    return image_size(data)


def with_size(arch: str, hw: tuple[int, int]) -> str:
    """``arch`` renamed for ``hw`` inputs: ("torchvision:densenet121", (32, 32)) -> "torchvision:densenet121@32"."""
    from dataclasses import replace

    from prunekit.models.sources import parse_spec

    return str(replace(parse_spec(arch), size=tuple(hw)))


def check_input_size(arch: str, data_name: str, image_hw: tuple[int, int], *, folder: bool = False,
                     input_size: tuple[int, int, int] | None = None) -> None:
    """UserError when ``arch``'s input size (``input_size`` (C, H, W) when given, else ``model_info(arch)``'s)
    differs from the (H, W) of ``data_name``'s images, naming the model built for them (and, for an image
    ``folder``, --image-size)."""
    from prunekit.models.zoo import model_info

    _, h, w = input_size or model_info(arch).input_size
    ih, iw = (int(v) for v in image_hw)
    if (h, w) == (ih, iw):
        return
    other = f", or read the folder at --image-size {h}" if folder and h == w else ""
    raise UserError(f"{arch} expects {h}x{w} inputs; {data_name} images are {ih}x{iw}: use {with_size(arch, (ih, iw))} "
                    f"(the same architecture for {ih}x{iw} inputs; a checkpoint's weights load into it: pass it as "
                    f"--model with --checkpoint){other}")


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


def check_head(arch: str, outputs: int, data_name: str, classes: int) -> None:
    """UserError when the model's ``outputs`` differ from the data set's ``classes``, with both numbers and the fix."""
    if outputs == classes:
        return
    raise UserError(f"{arch} has {outputs} outputs and {data_name} has {classes} classes: its predictions cannot be "
                    f"scored against these labels (the accuracy would be meaningless). Use the data set it was trained "
                    f"on, a checkpoint trained on {data_name}, or replace its head with a fresh {classes}-class layer "
                    "(--replace-head, replace_head=True; then fine-tune it)")


def check_model_data(model: nn.Module | None, arch: str, data, *, labels: bool = True,
                     input_size: tuple[int, int, int] | None = None) -> None:
    """The input size of ``arch`` (``input_size`` (C, H, W) when given, else ``model_info(arch)``'s) against
    ``data``'s images and, with ``labels``, ``model``'s outputs against its classes (``model`` may be None
    without ``labels``). data: an
    :class:`~prunekit.data.ArraySet`, :class:`~prunekit.data.Splits` or a named data set. UserError (see the
    module docstring) before any work."""
    from prunekit.data import ArraySet, Splits, num_classes
    from prunekit.models.zoo import model_info

    size = tuple(input_size) if input_size is not None else model_info(arch).input_size
    data_name = data if isinstance(data, str) else data.name
    folder = isinstance(data, Splits) and not isinstance(data.train, ArraySet)
    check_input_size(arch, data_name, image_size_of(data), folder=folder, input_size=size)
    if labels:
        classes = num_classes(data) if isinstance(data, str) else len(data.classes)
        check_head(arch, outputs_of(model, size), data_name, classes)


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
