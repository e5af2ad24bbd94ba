"""``timm:<name>``: a timm model (``timm.list_models()``), at its pretrained config's input size without an ``@``
size; pretrained: timm's own weights (timm builds the head for the classes). timm is imported when a timm model is
first named."""
from __future__ import annotations

import functools

import torch.nn as nn

from prunekit.models.sources import RANDOM_INIT, ModelSource, ModelSpec, first_line, register_source, try_download

__all__ = ["TimmSource"]


@functools.lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    # optional dependency: timm (and seconds to import it)
    import timm

    return tuple(sorted(timm.list_models()))


def _config(name: str):
    """timm's pretrained config of ``name`` (input size, fixed input size), or None."""
    # optional dependency: timm (and seconds to import it)
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name)


@register_source
class TimmSource(ModelSource):
    """timm's models."""

    name = "timm"
    form = "timm:<name>"
    label = "A timm model"
    first = "resnet18"

    def catalogue(self) -> list[str]:
        return list(_names())

    def default_size(self, spec: ModelSpec) -> tuple[int, int, int]:
        cfg = _config(spec.name)
        return tuple(cfg.input_size) if cfg is not None and cfg.input_size else super().default_size(spec)

    def description(self, spec: ModelSpec) -> str:
        # optional dependency: timm (and seconds to import it)
        from timm.models import model_entrypoint

        return f"{self.name}: {first_line(model_entrypoint(spec.name).__doc__) or spec.name}"

    def build(self, spec: ModelSpec, num_classes: int, pretrained: bool = False) -> tuple[nn.Module, str]:
        """timm's model with its head for ``num_classes`` (a failed download falls back to random weights and says
        why)."""
        self.check_known(spec)
        model, failure = try_download(lambda: _create(spec, num_classes, True)) if pretrained else (None, RANDOM_INIT)
        if model is None:
            return _create(spec, num_classes), failure
        cfg = getattr(model, "pretrained_cfg", None) or {}
        tag = cfg.get("tag") if isinstance(cfg, dict) else None
        head = f"; its {num_classes}-class head is new (random)" if num_classes != cfg.get("num_classes", 1000) else ""
        return model, f"pretrained: timm {spec.name}{'.' + tag if tag else ''}{head}"


def _create(spec: ModelSpec, num_classes: int, pretrained: bool = False) -> nn.Module:
    """timm's model (its head for ``num_classes``; a model with a fixed input size is built for the @ size)."""
    # optional dependency: timm (and seconds to import it)
    import timm

    cfg = _config(spec.name)
    extra = {}
    if spec.size is not None and cfg is not None and cfg.fixed_input_size:
        extra["img_size"] = spec.size
    return timm.create_model(spec.name, pretrained=pretrained, num_classes=num_classes, **extra)
