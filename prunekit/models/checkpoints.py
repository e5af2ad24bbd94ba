"""Safe checkpoints: state dicts in ``.pt``/``.pth`` (read with ``weights_only=True``) and ``.safetensors``.

A prunekit file carries a small header next to the weights (architecture name, number of classes, and
free-form JSON metadata such as the data set and the accuracy): inside the ``.pt`` dict under ``"prunekit"``,
or in the safetensors metadata. A plain state dict (any ``torch.save(model.state_dict())``) loads too when
the architecture is named. Pruned models need nothing else: :func:`conform_to_state_dict` rebuilds the
layers whose stored shapes are smaller, so the model's class is never edited.

Every failure raises :class:`CheckpointError`, whose message names the file, the problem and what to do.
"""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from prunekit.errors import UserError
from prunekit.models.zoo import build_model, model_info

__all__ = ["DEFAULT_CHECKPOINT", "EARLY_CHECKPOINT", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "read_checkpoint", "conform_to_state_dict"]

FORMAT = "prunekit-checkpoint/1"
ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_CHECKPOINT = ASSETS / "resnet20_cifar10.safetensors"  # the embedded default (assets/README.md)
EARLY_CHECKPOINT = ASSETS / "resnet20_cifar10_epoch001.safetensors"  # its epoch-1 weights
SUFFIXES = (".pt", ".pth", ".safetensors")


class CheckpointError(UserError):
    """A checkpoint cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str = ""):
        self.path, self.problem = str(path), problem
        super().__init__(f"{Path(path).name}: {problem}" + (f" {hint}" if hint else ""))


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, arch: str, num_classes: int, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s state dict and a header to ``path`` (.pt, .pth or .safetensors), atomically."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise UserError(f"checkpoint file must end in one of {SUFFIXES}, got {path.name!r}")
    header = {"format": FORMAT, "arch": arch, "num_classes": int(num_classes), "meta": meta or {}}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":

        save_file(state, str(tmp), metadata={"prunekit": json.dumps(header)})
    else:
        torch.save({"prunekit": header, "state_dict": state}, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (state dict, header); the header is ``{}`` for a plain state dict. Never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found.", "Check the path.")
    if path.suffix not in SUFFIXES:
        raise CheckpointError(path, f"unsupported file type {path.suffix!r}.", f"Use one of {', '.join(SUFFIXES)}.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    _check_head(path, head)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, head, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError) as exc:
        raise CheckpointError(path, f"{_damage(path, head)} ({type(exc).__name__}).", _BROKEN_HINT) from None
    header: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("prunekit"), dict):
        header = obj["prunekit"]
    if isinstance(obj, dict):  # unwrap common containers
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            path, "holds no state dict (a mapping of parameter names to tensors).", "Save model.state_dict()."
        )
    state = {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel / DDP prefixes
    return state, header


_BROKEN_HINT = "The file is truncated or corrupted, or not a checkpoint at all: save it again."
_ZIP = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_STATE_DICT_HINT = "Save the model's weights with torch.save(model.state_dict(), path) or as .safetensors."


def _is_pickle(head: bytes) -> bool:
    """Whether ``head`` starts a pickle of protocol 2 to 5 (torch.save's format before 1.6, and pickle.dump's)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _check_head(path: Path, head: bytes) -> None:
    """CheckpointError for a .pt/.pth file that is empty, or neither a zip archive nor a pickle (saying what it
    looks like), before torch reads it."""
    if not head:
        raise CheckpointError(path, "is empty (0 bytes).", "It was not written completely: save it again.")
    if head.startswith(_ZIP) or _is_pickle(head):
        return
    size = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    looks = ("it looks like a safetensors file: rename it to .safetensors" if head[8:9] == b"{" and 0 < size <
             path.stat().st_size else "it looks like JSON text" if head[:1] in (b"{", b"[") else
             "it looks like an HDF5 file (Keras?)" if head.startswith(b"\x89HDF") else
             "it looks like an image" if head.startswith((b"\x89PNG", b"\xff\xd8\xff")) else "")
    raise CheckpointError(path, f"is not a PyTorch checkpoint: it starts with bytes {head[:8].hex(' ')} "
                          f"({head[:8]!r}), not a zip archive or pickle{'; ' + looks if looks else ''}.",
                          "Choose the file torch.save wrote (.pt/.pth) or a .safetensors file.")


def _damage(path: Path, head: bytes) -> str:
    """What is wrong with a zip or pickle file torch could not read: a zip archive of other files, or a file cut
    short or damaged."""
    if head.startswith(_ZIP) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if not any(n.endswith("/data.pkl") for n in names):
            return f"is a zip archive, but not one torch.save wrote (it holds {', '.join(names[:3])})"
    return "is truncated or corrupted"


def _unpickling_error(path: Path, head: bytes, exc: pickle.UnpicklingError) -> CheckpointError:
    """The error for a file torch's weights-only unpickler refused: code (a class or function it would have to
    import, named), a plain pickle that torch.save did not write, or a damaged file."""
    match = re.search(r"GLOBAL (\S+)", str(exc))
    names = [match.group(1)] if match else (_pickle_globals(path) if _is_pickle(head) else None)
    if names:
        return CheckpointError(path, f"contains pickled Python objects (code: {', '.join(names[:3])}), not only "
                               "tensors; prunekit refuses to unpickle it.", _STATE_DICT_HINT)
    if names is not None:  # a whole pickle of plain values
        return CheckpointError(path, "is a plain Python pickle (pickle.dump), not a checkpoint torch.save wrote.",
                               _STATE_DICT_HINT)
    return CheckpointError(path, "is truncated or corrupted (its pickle cannot be read).", _BROKEN_HINT)


def _pickle_globals(path: Path) -> list[str] | None:
    """The classes and functions a pickle would import (read with :mod:`pickletools`, nothing is run), or None
    when it is not a whole pickle."""

    names, strings = [], []
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except (ValueError, EOFError, pickle.UnpicklingError):
        return None
    return list(dict.fromkeys(names))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        with open(path, "rb") as fh:
            head = fh.read(16)
        torch_file = head.startswith(_ZIP) or _is_pickle(head)
        raise CheckpointError(path, f"is not a readable safetensors file ({exc}).", "It is a file torch.save wrote: "
                              "rename it to .pt." if torch_file else _BROKEN_HINT) from None
    try:
        header = json.loads(meta["prunekit"]) if "prunekit" in meta else {}
    except json.JSONDecodeError:
        raise CheckpointError(path, "has a corrupted prunekit header.", _BROKEN_HINT) from None
    if not state:
        raise CheckpointError(path, "holds no tensors.", "Save model.state_dict().")
    return state, header


def load_checkpoint(
    path: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint holds and load its weights -> (model in eval mode, header).

    ``arch`` and ``num_classes`` come from the file's header; pass them for a plain state dict (they
    override the header when given). ``arch`` is any model name (:mod:`prunekit.models.sources`: a ``factory:`` one
    must have been enabled at start, never because a file names it). Layers whose stored shapes are smaller (a
    pruned model) are rebuilt.
    """
    state, header = read_checkpoint(path)
    arch = arch or header.get("arch")
    if not arch:
        raise CheckpointError(path, "is a plain state dict without a prunekit header.", "Name its architecture.")
    if num_classes is None:
        num_classes = header.get("num_classes") or _guess_num_classes(state)
    try:
        model = build_model(arch, num_classes=int(num_classes))
    except (KeyError, UserError) as exc:  # an unknown name, a factory not enabled at start, a malformed name
        raise CheckpointError(path, str(exc.args[0]) if exc.args else str(exc)) from None
    try:
        conform_to_state_dict(model, state)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(
            path, f"its weights do not fit the architecture {arch!r}: {_first_lines(exc)}",
            "Pick the architecture these weights were trained for.",
        ) from None
    model.eval()
    c, h, w = _input_size(arch)
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, h, w))
    except RuntimeError as exc:
        raise CheckpointError(
            path, f"its layer shapes are inconsistent with {arch!r}: {_first_lines(exc)}", "Re-export the model."
        ) from None
    return model, header


def _input_size(arch: str) -> tuple[int, int, int]:

    return model_info(arch).input_size


def _first_lines(exc: Exception, n: int = 3) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:n])[:400]


def _guess_num_classes(state: dict[str, torch.Tensor]) -> int:
    """Rows of the last 2-D weight (the classifier) in a state dict."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else 10


def conform_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize ``model``'s convs, BNs, linears and buffers in place to the shapes stored in ``state``.

    Only channel counts may differ (a pruned model): a different kernel size, a missing or extra key
    raises ``ValueError``. A depthwise conv (groups == in == out) stays depthwise.
    """
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Conv2d):
            w = state[prefix + "weight"]
            if tuple(w.shape) != tuple(module.weight.shape):
                _set(model, name, _resized_conv(module, w, name))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            key = "running_mean" if module.track_running_stats else "weight"
            n = state[prefix + key].shape[0]
            if n != module.num_features:
                new = type(module)(n, module.eps, module.momentum, module.affine, module.track_running_stats)
                _set(model, name, new)
        elif isinstance(module, nn.Linear):
            w = state[prefix + "weight"]
            if tuple(w.shape) != tuple(module.weight.shape):
                _set(model, name, nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None))
        for bname, buf in list(module.named_buffers(recurse=False)):
            stored = state.get(prefix + bname)
            if stored is not None and buf is not None and stored.shape != buf.shape:
                module.register_buffer(bname, torch.zeros_like(stored))
    return model


def _resized_conv(conv: nn.Conv2d, w: torch.Tensor, name: str) -> nn.Conv2d:
    if tuple(w.shape[2:]) != tuple(conv.kernel_size):
        raise UserError(f"{name}: kernel {tuple(w.shape[2:])} stored, {tuple(conv.kernel_size)} expected")
    out_ch = w.shape[0]
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    groups = out_ch if depthwise else conv.groups
    in_ch = out_ch if depthwise else w.shape[1] * groups
    return nn.Conv2d(
        in_ch, out_ch, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
