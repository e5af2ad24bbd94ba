"""Models beyond the registry, named by one scheme everywhere an architecture is named (checkpoint headers, run
manifests, the command line's --model, the dashboard):

- ``torchvision:<name>``: a torchvision classification model (``torchvision.models.list_models``);
- ``timm:<name>``: a timm model (``timm.list_models()``);
- ``factory:<package.module>:<function>``: your own ``function(num_classes: int) -> nn.Module``. Its code is
  imported only when you name it when starting (:func:`enable_factory`: the command line's ``--factory``, the
  dashboard's ``streamlit run app.py -- --factory``, or ``$PRUNEKIT_FACTORY``), never because a file names it.
  The function may carry an ``input_size`` attribute (C, H, W) and take a ``pretrained`` argument.

A suffix ``@<side>`` or ``@<H>x<W>`` fixes the input size (``torchvision:densenet121@32``); without it:
torchvision 224x224, timm its pretrained config's ``input_size``, a factory its ``input_size`` attribute or
224x224. A registered name takes the suffix too (``resnet18@32``). The size is part of the name, so
:func:`prunekit.models.zoo.model_info` answers it for everything downstream (structure, latency, checkpoints, runs).

>>> parse_spec("torchvision:densenet121@32")    # ModelSpec(source='torchvision', name='densenet121', size=(32, 32))
>>> model_catalog("timm", "regnet")             # ['timm:regnetv_040', ..., 'timm:regnetz_e8']
>>> enable_factory("mypkg.nets:tiny_cnn")       # imports mypkg.nets now; "factory:mypkg.nets:tiny_cnn" builds
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from prunekit.defaults import SOURCE_INPUT_SIDE
from prunekit.errors import UnknownNameError, UserError

__all__ = ["SOURCES", "FACTORY_ENV", "ModelSpec", "parse_spec", "model_catalog", "enable_factory",
           "enable_factories", "enabled_factories", "source_input_size", "source_description", "create_source_model",
           "close_matches", "check_known", "RANDOM_INIT"]

SOURCES = ("torchvision", "timm", "factory")
FACTORY_ENV = "PRUNEKIT_FACTORY"  # comma-separated package.module:function names enabled at start
RANDOM_INIT = "random initialisation"
_SIZE = re.compile(r"^(\d+)(?:x(\d+))?$")
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
_FACTORIES: dict[str, Callable[..., nn.Module]] = {}  # "package.module:function" -> the function


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: ``source`` ("registry", "torchvision", "timm" or "factory"), ``name`` within it (a
    factory's "package.module:function") and ``size`` (H, W) from an ``@`` suffix, else None."""

    source: str
    name: str
    size: tuple[int, int] | None = None

    @property
    def base(self) -> str:
        """The name without its size suffix: "torchvision:densenet121"."""
        return self.name if self.source == "registry" else f"{self.source}:{self.name}"

    def __str__(self) -> str:
        if self.size is None:
            return self.base
        h, w = self.size
        return f"{self.base}@{h}" if h == w else f"{self.base}@{h}x{w}"


def parse_spec(spec: str) -> ModelSpec:
    """``"timm:resnet18@64"`` -> ModelSpec("timm", "resnet18", (64, 64)); a name without a source is the registry's.
    UserError for a malformed size or factory name, UnknownNameError for an unknown source (nothing is imported)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"a model name must be a non-empty string, got {spec!r}")
    base, at, size_text = spec.strip().rpartition("@") if "@" in spec else (spec.strip(), "", "")
    size = None
    if at:
        m = _SIZE.match(size_text)
        if not m or int(m.group(1)) < 1 or int(m.group(2) or m.group(1)) < 1:
            raise UserError(f"model {spec!r}: the input size after '@' must be <side> or <H>x<W> in pixels "
                            f"(e.g. {base}@32 or {base}@224x192), got {size_text!r}")
        size = (int(m.group(1)), int(m.group(2) or m.group(1)))
    source, colon, name = base.partition(":")
    if not colon:
        return ModelSpec("registry", base, size)
    if source not in SOURCES:
        raise UnknownNameError(f"unknown model source {source!r} in {spec!r}; sources: {', '.join(SOURCES)} "
                               "(torchvision:<name>, timm:<name>, factory:<package.module>:<function>)")
    if source == "factory" and not _FACTORY.match(name):
        raise UserError(f"model {spec!r}: a factory is named factory:<package.module>:<function>, e.g. "
                        "factory:mypkg.nets:tiny_cnn")
    if not name:
        raise UserError(f"model {spec!r} names no {source} model; list them with "
                        f"`python -m prunekit models --source {source}`")
    return ModelSpec(source, name, size)


# ---- the catalogues -------------------------------------------------------------------------------------------

def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _timm_names() -> list[str]:
    import timm

    return sorted(timm.list_models())


def model_catalog(source: str = "registry", search: str = "") -> list[str]:
    """The names of one source, as full specs ("torchvision:resnet18"; registered names bare), sorted; those
    containing ``search`` (case-insensitive) when it is given. Sources: registry, torchvision, timm, factory
    (the factories enabled at start)."""
    from prunekit.models.zoo import list_models

    listing = {"registry": lambda: list_models(), "torchvision": lambda: [f"torchvision:{n}" for n in
                                                                          _torchvision_names()],
               "timm": lambda: [f"timm:{n}" for n in _timm_names()],
               "factory": lambda: [f"factory:{n}" for n in sorted(_FACTORIES)]}
    if source not in listing:
        raise UnknownNameError(f"unknown model source {source!r}; sources: registry, {', '.join(SOURCES)}")
    return [n for n in listing[source]() if search.lower() in n.lower()]


def close_matches(name: str, known: list[str], n: int = 5) -> list[str]:
    """Up to ``n`` names of ``known`` that look like ``name`` (difflib), best first."""
    return difflib.get_close_matches(name, known, n=n, cutoff=0.6)


def _unknown(spec: ModelSpec, known: list[str]) -> UnknownNameError:
    near = close_matches(spec.name, known)
    hint = f"; did you mean {', '.join(f'{spec.source}:{n}' for n in near)}?" if near else ""
    return UnknownNameError(f"unknown {spec.source} model {spec.name!r}{hint} List them with `python -m prunekit "
                            f"models --source {spec.source} --search <text>`")


def check_known(spec: ModelSpec) -> None:
    """UnknownNameError (with close matches, or how to enable a factory) when ``spec``'s source has no such model."""
    if spec.source == "torchvision":
        names = _torchvision_names()
    elif spec.source == "timm":
        names = _timm_names()
    else:
        _factory(spec.name)
        return
    if spec.name not in names:
        raise _unknown(spec, names)


# ---- factories ------------------------------------------------------------------------------------------------

def enable_factory(name: str) -> Callable[..., nn.Module]:
    """Import ``package.module:function`` now (the user named it when starting) and allow
    ``factory:package.module:function`` to build it; -> the function. UserError when it cannot be imported or is
    not callable."""
    name = name.strip().removeprefix("factory:")
    if not _FACTORY.match(name):
        raise UserError(f"--factory {name!r}: name a function as package.module:function (importable from the "
                        "current folder or an installed package), e.g. mypkg.nets:tiny_cnn")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--factory {name}: cannot import {module_name} ({exc}). Install it, start from the folder "
                        "that holds it, or add that folder to PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"--factory {name}: {module_name} has no function {attr!r}; the factory is a function "
                        "(num_classes: int) -> nn.Module")
    _FACTORIES[name] = fn
    return fn


def enable_factories(names: list[str] | tuple[str, ...] = (), *, env: bool = True) -> list[str]:
    """Enable every factory in ``names`` and, with ``env``, those ``$PRUNEKIT_FACTORY`` lists (comma-separated).
    The enabled names are written back to ``$PRUNEKIT_FACTORY``, so that the processes this one starts (the jobs'
    workers) enable them too. -> every enabled name."""
    wanted = [*names, *(os.environ.get(FACTORY_ENV, "").split(",") if env else [])]
    for name in wanted:
        if name.strip():
            enable_factory(name)
    if _FACTORIES:
        os.environ[FACTORY_ENV] = ",".join(sorted(_FACTORIES))
    return sorted(_FACTORIES)


def enabled_factories() -> list[str]:
    """The factories enabled in this process ("package.module:function"), sorted."""
    return sorted(_FACTORIES)


def _factory(name: str) -> Callable[..., nn.Module]:
    if name not in _FACTORIES:
        raise UnknownNameError(
            f"the model factory:{name} is your own code, and prunekit imports code only when you name it when "
            f"starting: run the command with --factory {name}, start the dashboard with `streamlit run app.py -- "
            f"--factory {name}`, or set {FACTORY_ENV}={name}")
    return _FACTORIES[name]


# ---- metadata -------------------------------------------------------------------------------------------------

def source_input_size(spec: ModelSpec) -> tuple[int, int, int]:
    """(C, H, W) the model takes: the ``@`` size, else the source's default (see the module docstring)."""
    channels, h, w = 3, SOURCE_INPUT_SIDE, SOURCE_INPUT_SIDE
    if spec.source == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(spec.name)
        if cfg is not None and cfg.input_size:
            channels, h, w = cfg.input_size
    elif spec.source == "factory":
        size = getattr(_factory(spec.name), "input_size", None)
        if size is not None:
            if len(tuple(size)) != 3:
                raise UserError(f"factory:{spec.name}: its input_size attribute must be (C, H, W), got {size!r}")
            channels, h, w = (int(v) for v in size)
    if spec.size is not None:
        h, w = spec.size
    return int(channels), int(h), int(w)


def _first_line(doc: str | None) -> str:
    """The first sentence of a docstring, reStructuredText links reduced to their text."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r"`([^`<]*?)\s*<[^>]*>`_*", r"\1", text)
    return text.split(". ")[0].rstrip(".:")


def source_description(spec: ModelSpec) -> str:
    """A one-line description from the builder's docstring: "torchvision: ResNet-18 from Deep Residual..."."""
    if spec.source == "torchvision":
        from torchvision.models import get_model_builder

        doc = _first_line(get_model_builder(spec.name).__doc__)
    elif spec.source == "timm":
        from timm.models import model_entrypoint

        doc = _first_line(model_entrypoint(spec.name).__doc__)
    else:
        doc = _first_line(_factory(spec.name).__doc__) or f"your model ({spec.name})"
    return f"{spec.source}: {doc or spec.name}"


# ---- building -------------------------------------------------------------------------------------------------

def create_source_model(spec: ModelSpec, num_classes: int, pretrained: bool = False) -> tuple[nn.Module, str]:
    """Build a torchvision, timm or factory model with ``num_classes`` outputs -> (model, how its weights were
    initialised: :data:`RANDOM_INIT`, "pretrained: ...", or why pretrained weights were asked for and not loaded).
    A failed download falls back to random initialisation and says so."""
    check_known(spec)
    if spec.source == "factory":
        return _build_factory(spec, num_classes, pretrained)
    build = _build_torchvision if spec.source == "torchvision" else _build_timm
    if not pretrained:
        return build(spec, num_classes), RANDOM_INIT
    try:
        model = _download_torchvision(spec.name) if spec.source == "torchvision" else build(spec, num_classes, True)
    except Exception as exc:  # noqa: BLE001 - offline, no such weights, a bad download: say so and go on
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return build(spec, num_classes), f"{RANDOM_INIT}: pretrained weights could not be downloaded ({reason})"
    if spec.source == "torchvision" and num_classes != 1000:
        from prunekit.models.fits import replace_head

        replace_head(model, num_classes, source_input_size(spec))
    return model, _pretrained_note(spec, model, num_classes)


def _build_torchvision(spec: ModelSpec, num_classes: int) -> nn.Module:
    """torchvision's model with random weights (``weights=None``); a vision transformer (fixed input size) is built
    for a square @ size."""
    import torchvision

    extra = {}
    if spec.name.startswith("vit_") and spec.size is not None and spec.size[0] == spec.size[1]:
        extra["image_size"] = spec.size[0]
    return torchvision.models.get_model(spec.name, weights=None, num_classes=num_classes, **extra)


def _download_torchvision(name: str) -> nn.Module:
    """torchvision's ``name`` with its DEFAULT (ImageNet) weights, downloaded into torch's hub cache if absent."""
    import torchvision

    return torchvision.models.get_model(name, weights="DEFAULT")


def _build_timm(spec: ModelSpec, num_classes: int, pretrained: bool = False) -> nn.Module:
    """timm's model (its head for ``num_classes``; a model with a fixed input size is built for the @ size)."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.name)
    extra = {}
    if spec.size is not None and cfg is not None and cfg.fixed_input_size:
        extra["img_size"] = spec.size
    return timm.create_model(spec.name, pretrained=pretrained, num_classes=num_classes, **extra)


def _pretrained_note(spec: ModelSpec, model: nn.Module, num_classes: int) -> str:
    if spec.source == "torchvision":
        from torchvision.models import get_model_weights

        weights = get_model_weights(spec.name).DEFAULT
        head = f"; its {num_classes}-class head is new (random)" if num_classes != 1000 else ""
        return f"pretrained: torchvision {weights}{head}"
    cfg = getattr(model, "pretrained_cfg", None) or {}
    tag = cfg.get("tag") if isinstance(cfg, dict) else None
    head = f"; its {num_classes}-class head is new (random)" if num_classes != cfg.get("num_classes", 1000) else ""
    return f"pretrained: timm {spec.name}{'.' + tag if tag else ''}{head}"


def _build_factory(spec: ModelSpec, num_classes: int, pretrained: bool) -> tuple[nn.Module, str]:
    fn = _factory(spec.name)
    takes_pretrained = "pretrained" in inspect.signature(fn).parameters
    model = fn(num_classes=num_classes, **({"pretrained": pretrained} if takes_pretrained else {}))
    if not isinstance(model, nn.Module):
        raise UserError(f"factory:{spec.name} returned {type(model).__name__}, not a torch.nn.Module")
    if not pretrained:
        return model, RANDOM_INIT
    if takes_pretrained:
        return model, "pretrained: as your factory loads them (pretrained=True)"
    return model, f"{RANDOM_INIT}: factory:{spec.name} takes no pretrained argument"
