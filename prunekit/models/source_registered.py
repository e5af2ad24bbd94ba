"""The registered models: names bare ("resnet20"), each added by :func:`register_model` with its builder and
metadata (:class:`~prunekit.models.sources.ModelInfo`); the CIFAR networks and torchvision variants registered
by :mod:`prunekit.models.zoo`, and any model a user registers.

>>> @register_model("tiny", input_size=(3, 32, 32), family="mine", description="a tiny CNN")
... def tiny(num_classes: int = 10) -> nn.Module: ...
"""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from prunekit.errors import UnknownNameError
from prunekit.models.sources import (
    RANDOM_INIT,
    ModelInfo,
    ModelSource,
    ModelSpec,
    get_source,
    register_source,
    source_names,
)
from prunekit.registry import Registry, close_matches

__all__ = ["register_model", "list_models", "RegisteredSource"]

_MODELS: Registry[ModelInfo] = Registry("model")


def register_model(name: str, *, input_size: tuple[int, int, int], family: str, description: str):
    """Decorator: register ``builder(num_classes=..., **kwargs) -> nn.Module`` under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS.register(ModelInfo(name, builder, input_size, family, description))
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS.names())


@register_source
class RegisteredSource(ModelSource):
    """The models registered with :func:`register_model`, named bare; they have no pretrained weights."""

    name = "registry"
    form = "<registered name>"
    prefixed = False

    def catalogue(self) -> list[str]:
        return list_models()

    def check_known(self, spec: ModelSpec) -> None:
        """"unknown model 'x'; known models: ..." with the close matches, registered or other sources' exact
        names, and how to name the other sources' models."""
        if spec.name in _MODELS:
            return
        others = [get_source(s) for s in source_names(prefixed=True)]
        exact = [s.full_name(spec.name) for s in others if spec.name in s.catalogue()]
        near = exact + close_matches(spec.name, list_models())
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        listed = "|".join(s.name for s in others)
        raise UnknownNameError(f"unknown model {spec.name!r}; known models: {', '.join(list_models())}{hint}; or "
                               f"{', '.join(s.form for s in others)} (`python -m prunekit models --source {listed}`)")

    def default_size(self, spec: ModelSpec) -> tuple[int, int, int]:
        return _MODELS.get(spec.name).input_size

    def family(self, spec: ModelSpec) -> str:
        return _MODELS.get(spec.name).family

    def description(self, spec: ModelSpec) -> str:
        return _MODELS.get(spec.name).description

    def build(self, spec: ModelSpec, num_classes: int, pretrained: bool = False, **kwargs) -> tuple[nn.Module, str]:
        note = RANDOM_INIT + (": registered models have no pretrained weights" if pretrained else "")
        return _MODELS.get(spec.name).builder(num_classes=num_classes, **kwargs), note

    def listing(self, search: str = "") -> list[str]:
        """One line per registered name containing ``search``: name, input size, description."""
        lines = []
        for name in self.catalogue():
            info = _MODELS.get(name)
            if search.lower() in name.lower():
                lines.append(f"{name:20s} {'x'.join(map(str, info.input_size)):10s} {info.description}")
        return lines
