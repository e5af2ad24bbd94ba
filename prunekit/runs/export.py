"""Export a (pruned) model: state dict as safetensors, TorchScript, ONNX (for Netron); each file is checked.

>>> paths = export_model(pruned, "out/", arch="resnet20", num_classes=10, input_size=(3, 32, 32))
>>> paths["onnx"]         # out/model.onnx, whose outputs were checked against the module's

After writing, every file is loaded back and run on a seeded random batch (N, *input_size); an output that
differs from the module's by more than ``atol`` raises ``RuntimeError``. The safetensors file reloads through
:func:`prunekit.models.checkpoints.load_checkpoint`; TorchScript through ``torch.jit.load``; ONNX is run by ONNX Runtime on
the CPU (:mod:`prunekit.runs.runtime_onnx`, which also times it, with the same check). The ONNX graph takes any batch size.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, UserError
from prunekit.models.checkpoints import load_checkpoint, save_checkpoint
from prunekit.runs.runtime_onnx import ATOL, example_batch, mismatch, onnx_bytes, ort_session, session_outputs

__all__ = ["FORMATS", "ExportError", "export_model", "exported_outputs"]

FORMATS = ("safetensors", "torchscript", "onnx")


class ExportError(PrunekitError, RuntimeError):
    """An exported file does not compute what the module computes."""


SUFFIX = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}


def exported_outputs(path: str | os.PathLike, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Run the exported file ``path`` of format ``fmt`` on the CPU on x (N, C, H, W) -> logits (N, classes)."""
    if fmt == "safetensors":
        model, _ = load_checkpoint(path)
        with torch.no_grad():
            return model(x)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10, but asked for by users
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(x)
    if fmt == "onnx":
        return session_outputs(ort_session(path), x)
    raise UserError(f"format must be one of {FORMATS}, got {fmt!r}")


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    arch: str,
    num_classes: int,
    input_size: tuple[int, int, int],
    formats=FORMATS,
    name: str = "model",
    atol: float = ATOL,
) -> dict[str, Path]:
    """Write ``model`` to the folder ``out`` as ``<name>.safetensors`` / ``.pt`` (TorchScript) / ``.onnx``
    (``formats``), check each against the module on the CPU, -> {format: path}."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"formats must be among {FORMATS}, got {list(formats)}")
    model = copy.deepcopy(model).cpu().eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = example_batch(input_size)
    with torch.no_grad():
        expected = model(x)
    paths = {}
    for fmt in formats:
        path = out / f"{name}{SUFFIX[fmt]}"
        if fmt == "safetensors":
            save_checkpoint(model, path, arch=arch, num_classes=num_classes)
        elif fmt == "torchscript":
            with torch.no_grad(), warnings.catch_warnings():  # deprecated in torch >= 2.10, still asked for
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.save(torch.jit.trace(model, x), str(path))
        else:
            path.write_bytes(onnx_bytes(model, x))
        diff = mismatch(exported_outputs(path, fmt, x), expected, atol)
        if diff is not None:
            raise ExportError(f"the {fmt} export {path} differs from the module by {diff:.2e} (tolerance {atol})")
        paths[fmt] = path
    return paths

