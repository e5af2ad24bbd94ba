"""The self-check of every pruning (:func:`prunekit.pruning.prune.prune_model`): the pruned model must compute what the
original computes with the removed channels switched off, or the pruning is refused (:class:`PruneError`).

The **reference** is the original model in eval mode with a forward pre-hook on every conv, linear layer or
shortcut that reads removed channels, zeroing those input positions (:func:`reference_output`; a linear layer's
inputs are its last dim, channels-last). BatchNorm, activations and pooling act channel by channel, so a channel
zeroed where it is read is a channel removed: this holds across residual adds, concatenations (DenseNet) and a BN
placed before the conv that reads it. A LayerNorm or GroupNorm computes statistics over the channels, so there a
forward hook replaces its output by what it computes on the kept channels alone (the removed ones output as zeros,
which no consumer reads). Both models run on :func:`probe_input`, a seeded random (2, C, H, W) batch.

**The tolerance**: max|pruned - reference| <= :data:`TOLERANCE` x max(1, max|reference|). Both sides add the same
products, except exact zeros, in float32 but possibly in other orders (other channel counts pick other kernels),
so they differ by rounding alone: a few units of float32's 1.2e-7 per layer, relative to the activations, about
1e-5 after a hundred layers. A wrong channel (a filter paired with another filter's input, a shifted
concatenation) changes the outputs by a weight times an activation, 1e-2 to 1 relative. 1e-4 stands two orders
of magnitude from both. TF32 is switched off on CUDA while the check runs (its 10-bit mantissa gives 1e-3).
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.nn as nn

from prunekit.errors import PruneError
from prunekit.models.layers import TRACE_LOCK

__all__ = ["PROBE_BATCH", "PROBE_SEED", "TOLERANCE", "probe_input", "reference_output", "check_pruned"]

PROBE_BATCH = 2
PROBE_SEED = 0
TOLERANCE = 1e-4


class _Group(Protocol):
    root: str
    members: Sequence[str]
    consumers: Sequence[str]

    def member_filters(self, idxs: list[int]) -> dict[str, list[int]]: ...


def probe_input(model: nn.Module, input_size: tuple[int, int, int]) -> torch.Tensor:
    """(PROBE_BATCH, *input_size) standard normal values drawn with seed PROBE_SEED, on the model's device."""
    p = next(model.parameters())
    x = torch.randn(PROBE_BATCH, *input_size, generator=torch.Generator().manual_seed(PROBE_SEED))
    return x.to(p.device, p.dtype)


@torch.no_grad()
def reference_output(model: nn.Module, dropped: dict[str, list[int]], probe: torch.Tensor) -> list[torch.Tensor]:
    """The output tensors of ``model`` (eval mode) on ``probe`` with, at the input of each layer of ``dropped``
    ({conv / linear / shortcut / LayerNorm / GroupNorm: input positions (its channels) to leave out}), those
    positions zeroed (left out of the statistics of a LayerNorm or GroupNorm)."""
    hooks = _reference_hooks(model, dropped)
    try:
        with _no_tf32(), TRACE_LOCK:
            return _leaves(model(probe))
    finally:
        for h in hooks:
            h.remove()


def check_pruned(original: nn.Module, pruned: nn.Module, probe: torch.Tensor, expected: list[torch.Tensor],
                 dropped: dict[str, list[int]], groups: Sequence[_Group], removed: dict[str, list[int]]) -> None:
    """PruneError unless ``pruned`` runs on ``probe`` and its outputs equal ``expected`` (the
    :func:`reference_output` of ``original`` with ``dropped``) within the tolerance. The error names the first
    conv or linear layer, in forward order, whose output differs (or the layer where the pruned model fails), and
    the groups (``removed``: {root: filter indices}) it reads or belongs to."""
    model = type(original).__name__
    try:
        with torch.no_grad(), _no_tf32(), TRACE_LOCK:
            got = _leaves(pruned(probe))
    except Exception as exc:  # any failure of the pruned forward (a shape, a split size...) is the pruning's
        where = _failing_module(pruned, probe)
        raise PruneError(f"the pruned {model} fails to run at {where} ({type(exc).__name__}: {exc}); "
                         f"{_advice(where, groups, removed)}") from exc
    if _mismatch(got, expected) is None:
        return
    layer, kind, what = _first_difference(original, pruned, probe, dropped, groups, removed)
    raise PruneError(f"pruning {model} went wrong at {layer} ({kind}): {what}, where it must equal the original's "
                     f"with the removed channels zeroed; {_advice(layer, groups, removed)}")


def _reference_hooks(model: nn.Module, dropped: dict[str, list[int]]) -> list:
    """The hooks of :func:`reference_output` on ``model`` (remove them after use)."""
    hooks = []
    for name, idx in dropped.items():
        module = model.get_submodule(name)
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            hooks.append(module.register_forward_hook(_masked_norm(idx)))
        else:
            hooks.append(module.register_forward_pre_hook(_zeroing(idx, last=isinstance(module, nn.Linear))))
    return hooks


def _zeroing(idx: list[int], last: bool = False):
    """A pre-hook zeroing input positions ``idx`` of dim 1 (``last``: of the last dim, a linear layer's)."""
    positions = torch.tensor(idx)

    def hook(module: nn.Module, args: tuple):
        x = args[0].clone()
        if last:
            x[..., positions.to(x.device)] = 0
        else:
            x[:, positions.to(x.device)] = 0
        return (x, *args[1:])

    return hook


def _masked_norm(idx: list[int]):
    """A forward hook making a LayerNorm (over the channels) or GroupNorm output what it computes on its input
    without channels ``idx`` (its weights too), zeros at ``idx``: what the pruned norm computes, in place."""
    gone = set(idx)

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        dim = _norm_dim(module, x)
        keep = torch.tensor([i for i in range(x.shape[dim]) if i not in gone], device=x.device)
        kept = _pruned_norm(module, keep).forward(x.index_select(dim, keep))  # forward: no hooks
        return torch.zeros_like(out).index_copy_(dim, keep, kept)

    return hook


def _pruned_norm(module: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A shallow copy of a LayerNorm / GroupNorm over the channels ``keep`` only (``module`` untouched)."""
    clone = copy.copy(module)
    clone._parameters = {k: None if p is None else p.detach().index_select(0, keep)
                         for k, p in module._parameters.items()}
    if isinstance(module, nn.LayerNorm):
        clone.normalized_shape = (len(keep),)
    else:
        clone.num_channels = len(keep)
    return clone


def _norm_dim(module: nn.Module, x: torch.Tensor) -> int:
    """The dim of ``x`` holding the channels a LayerNorm (over one dim) or GroupNorm normalises: 1 for a GroupNorm;
    the last for ``nn.LayerNorm`` itself; for a subclass (timm's and torchvision's channels-first LayerNorm2d) the one
    of dims 1 and -1 of its width, or, when both are, the one along which adding a constant leaves the output alone
    (a LayerNorm removes the mean over its dim)."""
    if isinstance(module, nn.GroupNorm):
        return 1
    last = x.dim() - 1
    if type(module).forward is nn.LayerNorm.forward:
        return last
    width = module.normalized_shape[0]
    fits = [d for d in (1, last) if x.shape[d] == width]
    if len(fits) == 1:
        return fits[0]
    shift = torch.randn(*x.shape[:last], 1, generator=torch.Generator().manual_seed(PROBE_SEED)).to(x)
    return last if torch.allclose(module.forward(x + shift), module.forward(x), atol=1e-4) else 1


_TF32_LOCK = threading.Lock()
_tf32_users = [0, None]  # checks running now, the flags they saved


@contextmanager
def _no_tf32() -> Iterator[None]:
    """TF32 off for CUDA convs and matmuls while the check runs, restored after (counted, so that checks in
    several threads restore the flags once): the check compares float32 results."""
    with _TF32_LOCK:
        if _tf32_users[0] == 0:
            _tf32_users[1] = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        _tf32_users[0] += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_users[0] -= 1
            if _tf32_users[0] == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _tf32_users[1]


def _leaves(out) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or tuples, lists and dicts of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _leaves(o)] if isinstance(out, (list, tuple)) else []


def _mismatch(got: list[torch.Tensor], expected: list[torch.Tensor]) -> str | None:
    """How ``got`` differs from ``expected`` beyond the tolerance, or None when it does not."""
    if [tuple(t.shape) for t in got] != [tuple(t.shape) for t in expected]:
        return f"shape {[tuple(t.shape) for t in got]} instead of {[tuple(t.shape) for t in expected]}"
    for g, e in zip(got, expected):
        diff, tol = (g - e).abs().max().item(), TOLERANCE * max(1.0, e.abs().max().item())
        if not diff <= tol:  # NaN too
            return f"max |difference| {diff:.3g} > tolerance {tol:.3g}"
    return None


def _first_difference(original, pruned, probe, dropped, groups, removed) -> tuple[str, str, str]:
    """(layer, kind, how it differs) for the first conv / linear layer in forward order whose output in ``pruned``
    differs from the reference's (members' removed filters left out), else the model's output."""
    reference = copy.deepcopy(original).eval()
    want = _layer_outputs(reference, probe, dropped)
    got = _layer_outputs(pruned, probe, {})
    gone = {m: idx for g in groups if g.root in removed for m, idx in g.member_filters(removed[g.root]).items()}
    for name, ref in want.items():
        if name in gone:
            dim = ref.dim() - 1 if isinstance(original.get_submodule(name), nn.Linear) else 1
            keep = [i for i in range(ref.shape[dim]) if i not in set(gone[name])]
            ref = ref.index_select(dim, torch.tensor(keep, device=ref.device))
        how = _mismatch([got[name]], [ref]) if name in got else "it did not run"
        if how is not None:
            return name, _kind(original.get_submodule(name)), f"its output has {how}"
    return "the model's output", "after the last conv or linear layer", "it differs"


@torch.no_grad()
def _layer_outputs(model: nn.Module, probe: torch.Tensor, dropped: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """{conv / linear name: its first output on ``probe``}, in forward order (``dropped`` zeroed as the reference)."""
    outputs: dict[str, torch.Tensor] = {}

    def record(name):
        return lambda module, args, out: outputs.setdefault(name, out.detach())

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d,
                                                                                                   nn.Linear))]
    hooks += _reference_hooks(model, dropped)
    try:
        with _no_tf32():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def _failing_module(model: nn.Module, probe: torch.Tensor) -> str:
    """The last module (by name) that started running before the forward of ``model`` on ``probe`` failed."""
    entered: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda module, args, n=n: entered.append(n))
             for n, m in model.named_modules() if n]
    try:
        with torch.no_grad(), _no_tf32():
            model(probe)
    except Exception:  # noqa: BLE001 - the failure check_pruned reports; here only where it happened
        pass
    finally:
        for h in hooks:
            h.remove()
    return f"{entered[-1]} (or right after it)" if entered else "its first layer"


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups == 1:
        return "conv"
    if module.groups == module.in_channels == module.out_channels:
        return "depthwise conv"
    return f"grouped conv, groups={module.groups}"


def _advice(layer: str, groups: Sequence[_Group], removed: dict[str, list[int]]) -> str:
    """What to do: give ratio 0 to the pruned groups ``layer`` belongs to or reads (all pruned groups if none)."""
    name = layer.split(" ")[0]
    near = [g.root for g in groups if g.root in removed and (name in g.members or name in g.consumers)]
    roots = near or [g.root for g in groups if g.root in removed]
    return (f"give ratio 0 to the group{'s' if len(roots) > 1 else ''} rooted at {', '.join(roots[:8])}"
            f"{' ...' if len(roots) > 8 else ''} (the model's forward does something Torch-Pruning cannot follow "
            "there), or pick another model")
