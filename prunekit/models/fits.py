"""Does a model take a data set? The one check, made wherever a model first meets images (scoring with a probe,
evaluation, pruning with evaluation or recalibration, fine-tuning, training, sweeps), before any work:

- input size: the model's (``model_info(arch).input_size``, set by an ``@`` suffix) must equal the images'. The
  32x32 data sets are arrays that are never resized, and an image folder is read at ``--image-size``; a model
  meant for other inputs is refused, with the name of the same model for these images (``...@32``);
- head: when labels are used (accuracy, fine-tuning, label-driven criteria), the model's outputs must equal the
  data set's classes; otherwise it is refused with both numbers and the fix (``--replace-head``, or the data set
  it was trained on). :func:`prunekit.models.heads.replace_head` swaps the last classifier layer for a fresh one with the right classes.

>>> check_model_data(model, "torchvision:densenet121", "cifar10", (32, 32), classes=10)
UserError: torchvision:densenet121 expects 224x224 inputs; cifar10 images are 32x32: use torchvision:densenet121@32 ...
"""
from __future__ import annotations

from dataclasses import replace

import torch.nn as nn

from prunekit.data import ArraySet, Splits, image_size, num_classes
from prunekit.errors import UserError
from prunekit.models.heads import outputs_of
from prunekit.models.sources import parse_spec
from prunekit.models.zoo import model_info

__all__ = ["image_size_of", "check_input_size", "check_head", "check_model_data", "with_size"]


def image_size_of(data) -> tuple[int, int]:
    """(H, W) of the images of ``data``: an :class:`~prunekit.data.ArraySet` (images (N, C, H, W)),
    :class:`~prunekit.data.Splits` (its ``image_size``) or a named data set (32x32)."""
    if isinstance(data, ArraySet):
        return int(data.images.shape[-2]), int(data.images.shape[-1])
    if isinstance(data, Splits):
        return tuple(data.image_size)
    return image_size(data)


def with_size(arch: str, hw: tuple[int, int]) -> str:
    """``arch`` renamed for ``hw`` inputs: ("torchvision:densenet121", (32, 32)) -> "torchvision:densenet121@32"."""
    return str(replace(parse_spec(arch), size=tuple(hw)))


def check_input_size(arch: str, data_name: str, image_hw: tuple[int, int], *, folder: bool = False,
                     input_size: tuple[int, int, int] | None = None) -> None:
    """UserError when ``arch``'s input size (``input_size`` (C, H, W) when given, else ``model_info(arch)``'s)
    differs from the (H, W) of ``data_name``'s images, naming the model built for them (and, for an image
    ``folder``, --image-size)."""
    _, h, w = input_size or model_info(arch).input_size
    ih, iw = (int(v) for v in image_hw)
    if (h, w) == (ih, iw):
        return
    other = f", or read the folder at --image-size {h}" if folder and h == w else ""
    raise UserError(f"{arch} expects {h}x{w} inputs; {data_name} images are {ih}x{iw}: use {with_size(arch, (ih, iw))} "
                    f"(the same architecture for {ih}x{iw} inputs; a checkpoint's weights load into it: pass it as "
                    f"--model with --checkpoint){other}")


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
    size = tuple(input_size) if input_size is not None else model_info(arch).input_size
    data_name = data if isinstance(data, str) else data.name
    folder = isinstance(data, Splits) and not isinstance(data.train, ArraySet)
    check_input_size(arch, data_name, image_size_of(data), folder=folder, input_size=size)
    if labels:
        classes = num_classes(data) if isinstance(data, str) else len(data.classes)
        check_head(arch, outputs_of(model, size), data_name, classes)
