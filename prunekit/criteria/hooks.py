"""Forward hooks on the layers' taps, always removed, with every statistic kept outside the modules.

>>> sums = {}
>>> with capture(model, layers, lambda layer, fmap: sums.__setitem__(layer.name, fmap.sum((0, 2, 3)))):
...     model(x)
>>> with gate(model, layers, {"layer1.0.conv1": mask}):   # mask (C,) or (B, C): multiplies the feature map
...     loss = model(x)

``capture`` reads each layer's map at its :class:`~prunekit.models.layers.Site` for ``reads`` ("pre_add": the tap, the
BN that follows the conv, else the conv; "post_add": after the residual add, see :mod:`prunekit.models.layers`);
``gate`` always multiplies the tap output. A site on a module called several times per forward (a shared
``self.relu``) is told apart by its call index: a pre-hook on the model itself restarts the counts at every
forward. Every hook is removed in ``finally``, so an exception inside the ``with`` block leaves the model as it
was.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from prunekit.models.layers import ConvLayer, Site, feature_map

__all__ = ["capture", "gate", "eval_mode"]


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[ConvLayer],
    fn: Callable[[ConvLayer, torch.Tensor], None],
    reads: str = "pre_add",
) -> Iterator[None]:
    """While open, every forward of ``model`` calls ``fn(layer, fmap)`` for each layer, with ``fmap`` its
    feature map (B, C, H, W) read at ``layer.site(reads)`` (``reads``: "pre_add" or "post_add"; the two differ
    only for convs that feed a residual add). ``fn`` must not modify ``fmap`` in place (it may be a tensor the
    model goes on using) and its return value is ignored."""
    readers = []
    for layer in layers:
        site = layer.site(reads)

        def read(value: torch.Tensor, layer: ConvLayer = layer, site: Site = site) -> None:
            fn(layer, feature_map(site, value))

        readers.append((site, read))
    with _site_hooks(model, readers):
        yield


@contextmanager
def gate(model: nn.Module, layers: Sequence[ConvLayer], masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """While open, the tap output of each layer named in ``masks`` is multiplied by its channel gate:
    ``masks[name]`` of shape (C,) (one factor per filter) or (B, C) (one per image and filter), read at
    every forward, so the caller may replace the entries of a mutable ``masks`` between forwards. A 0
    switches a filter off for everything downstream (its activation sees 0; ReLU, ReLU6, SiLU, GELU,
    hardswish and tanh map 0 to 0). The gated output is a new tensor, so in-place ops downstream never
    touch the tap's own output. Layers missing from ``masks`` at a forward are left as they are."""

    def hook_for(layer: ConvLayer):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
            mask = masks.get(layer.name)
            if mask is None:
                return None
            shape = (1, -1, 1, 1) if mask.ndim == 1 else (mask.shape[0], -1, 1, 1)
            return output * mask.to(output.dtype).view(shape)

        return hook

    with _tap_hooks(model, layers, hook_for):
        yield


@contextmanager
def _tap_hooks(model: nn.Module, layers: Sequence[ConvLayer], hook_for: Callable) -> Iterator[None]:
    """Register ``hook_for(layer)`` as a forward hook on each layer's tap; every one removed on exit, even
    when registering or the body raises."""
    handles = []
    try:
        for layer in layers:
            handles.append(model.get_submodule(layer.tap).register_forward_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _site_hooks(model: nn.Module, readers: Sequence[tuple[Site, Callable[[torch.Tensor], None]]]) -> Iterator[None]:
    """Call each ``reader(tensor)`` with the tensor at its site at every forward: one hook per (module, read)
    dispatching on the module's call count, which a pre-hook on ``model`` resets at each forward. Every hook
    removed on exit, even when registering or the body raises."""
    by_key: dict[tuple[str, str], list] = defaultdict(list)
    for site, reader in readers:
        by_key[(site.module, site.read)].append((site.call, reader))
    counts: dict[tuple[str, str], int] = {}
    handles = []
    try:
        handles.append(model.register_forward_pre_hook(lambda module, inputs: counts.clear()))
        for (name, read), entries in by_key.items():
            dispatch = _dispatcher((name, read), entries, counts)
            module = model.get_submodule(name)
            if read == "input":
                handles.append(module.register_forward_pre_hook(lambda m, inputs, d=dispatch: d(inputs[0])))
            else:
                handles.append(module.register_forward_hook(lambda m, inputs, output, d=dispatch: d(output)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _dispatcher(key: tuple[str, str], entries: list, counts: dict[tuple[str, str], int]) -> Callable:
    """A function of the tensor seen at one call of a module: counts the call and feeds the readers of that
    call index (returns None, so a hook built on it changes nothing)."""

    def dispatch(value: torch.Tensor) -> None:
        call = counts.get(key, 0)
        counts[key] = call + 1
        for wanted, reader in entries:
            if wanted == call:
                reader(value)

    return dispatch


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (BN uses its running statistics: each image is scored independently of
    the others in its batch) and restore its previous mode afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
