"""Model sources: every way to name a model, one registry entry each, named by one scheme everywhere an
architecture is named (checkpoint headers, run manifests, the command line's --model, the dashboard):

- a bare name: a model registered with :func:`prunekit.models.source_registered.register_model` (``resnet20``);
- ``torchvision:<name>``: a torchvision classification model (:mod:`prunekit.models.source_torchvision`);
- ``timm:<name>``: a timm model (:mod:`prunekit.models.source_timm`);
- ``factory:<package.module>:<function>``: your own ``function(num_classes: int) -> nn.Module``, imported only
  when you name it when starting (:mod:`prunekit.models.source_factory`).

A suffix ``@<side>`` or ``@<H>x<W>`` fixes the input size (``torchvision:densenet121@32``); without it each source
says (torchvision 224x224, timm its pretrained config's ``input_size``, a factory its ``input_size`` attribute or
224x224). The size is part of the name, so :func:`prunekit.models.zoo.model_info` answers it for everything
downstream (structure, latency, checkpoints, runs).

A source is a :class:`ModelSource` subclass registered with :func:`register_source`; it answers its catalogue,
whether a name is known, a model's input size and description, and builds one (-> (module, weights note)).

>>> parse_spec("torchvision:densenet121@32")    # ModelSpec(source='torchvision', name='densenet121', size=(32, 32))
>>> model_catalog("timm", "regnet")             # ['timm:regnetv_040', ..., 'timm:regnetz_e8']
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from prunekit.defaults import SOURCE_INPUT_SIDE
from prunekit.errors import UnknownNameError, UserError
from prunekit.registry import Registry, close_matches

__all__ = ["ModelSource", "ModelSpec", "ModelInfo", "BuiltModel", "register_source", "get_source", "source_names",
           "parse_spec", "model_catalog", "try_download", "first_line", "RANDOM_INIT"]

RANDOM_INIT = "random initialisation"
_SIZE = re.compile(r"^(\d+)(?:x(\d+))?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: ``source`` (a registered source's name: "registry", "torchvision", ...), ``name``
    within it (a factory's "package.module:function") and ``size`` (H, W) from an ``@`` suffix, else None."""

    source: str
    name: str
    size: tuple[int, int] | None = None

    @property
    def base(self) -> str:
        """The name without its size suffix: "torchvision:densenet121" (a registered name: bare)."""
        return get_source(self.source).full_name(self.name)

    def __str__(self) -> str:
        if self.size is None:
            return self.base
        h, w = self.size
        return f"{self.base}@{h}" if h == w else f"{self.base}@{h}x{w}"


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a model name: ``builder(num_classes=..., **kwargs) -> nn.Module`` (random weights),
    ``input_size`` (C, H, W) it is meant for, ``family`` ("cifar-resnet", ..., "torchvision", "timm", "factory"),
    a one-line ``description`` and its ``source`` (the name of its :class:`ModelSource`)."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # (C, H, W) the model is meant for
    family: str
    description: str
    source: str = "registry"


@dataclass
class BuiltModel:
    """A freshly built model and ``weights``: how its weights were initialised, in words ("random
    initialisation", "pretrained: ...", or why pretrained weights were asked for and not loaded)."""

    model: nn.Module
    weights: str


class ModelSource:
    """One way to name models. ``name``: the source's name (its models are "<name>:<model>", unless ``prefixed``
    is False: the registered names are bare); ``form``: how its models are named, for messages; ``label``: the
    dashboard sidebar's choice for it ("" keeps it out of the sidebar's list); ``first``: the model its list opens
    on (default: the first of the catalogue)."""

    name: str = ""
    form: str = ""
    prefixed: bool = True
    label: str = ""
    first: str = ""

    def offered(self) -> bool:
        """Whether the dashboard's sidebar offers this source now (it has a label)."""
        return bool(self.label)

    def catalogue(self) -> list[str]:
        """The names of its models (without the source's prefix), sorted."""
        raise NotImplementedError

    def build(self, spec: ModelSpec, num_classes: int, pretrained: bool = False, **kwargs) -> tuple[nn.Module, str]:
        """``spec``'s model with ``num_classes`` outputs -> (module, how its weights were initialised:
        :data:`RANDOM_INIT`, "pretrained: ...", or why pretrained weights were asked for and not loaded)."""
        raise NotImplementedError

    def description(self, spec: ModelSpec) -> str:
        """A one-line description of ``spec``'s model: "torchvision: ResNet-18 from Deep Residual..."."""
        return f"{self.name}: {spec.name}"

    def default_size(self, spec: ModelSpec) -> tuple[int, int, int]:
        """(C, H, W) the model takes without an ``@`` size."""
        return 3, SOURCE_INPUT_SIDE, SOURCE_INPUT_SIDE

    def family(self, spec: ModelSpec) -> str:
        return self.name

    def check_name(self, spec_text: str, name: str) -> None:
        """UserError when ``name`` (the part after the prefix of ``spec_text``) is malformed."""
        if not name:
            raise UserError(f"model {spec_text!r} names no {self.name} model; list them with "
                            f"`python -m prunekit models --source {self.name}`")

    def check_known(self, spec: ModelSpec) -> None:
        """UnknownNameError, with the close matches, when the source has no model ``spec.name``."""
        known = self.catalogue()
        if spec.name in known:
            return
        near = close_matches(spec.name, known)
        hint = f"; did you mean {', '.join(self.full_name(n) for n in near)}?" if near else ""
        raise UnknownNameError(f"unknown {self.name} model {spec.name!r}{hint} List them with `python -m prunekit "
                               f"models --source {self.name} --search <text>`")

    def input_size(self, spec: ModelSpec) -> tuple[int, int, int]:
        """(C, H, W): the ``@`` size, else :meth:`default_size`'s."""
        channels, h, w = self.default_size(spec)
        if spec.size is not None:
            h, w = spec.size
        return int(channels), int(h), int(w)

    def full_name(self, name: str) -> str:
        """"densenet121" -> "torchvision:densenet121" (bare when the source is not ``prefixed``)."""
        return f"{self.name}:{name}" if self.prefixed else name

    def listing(self, search: str = "") -> list[str]:
        """The lines ``python -m prunekit models --source <name>`` prints: the full names containing ``search``."""
        return model_catalog(self.name, search)


_SOURCES: Registry[type[ModelSource]] = Registry("model source")


def register_source(cls: type[ModelSource]) -> type[ModelSource]:
    """Class decorator: add a :class:`ModelSource` subclass to the registry under ``cls.name``."""
    return _SOURCES.register(cls)


def get_source(name: str) -> ModelSource:
    """The source registered as ``name``; UnknownNameError listing the known ones."""
    return _SOURCES.get(name)()


def source_names(*, prefixed: bool | None = None) -> list[str]:
    """Every registered source's name, in registration order (``prefixed``: only those whose models are named
    with a prefix, or only those without)."""
    return [n for n in _SOURCES.names() if prefixed is None or _SOURCES.get(n).prefixed == prefixed]


def parse_spec(spec: str) -> ModelSpec:
    """``"timm:resnet18@64"`` -> ModelSpec("timm", "resnet18", (64, 64)); a name without a prefix is the bare
    source's (the registered names). UserError for a malformed size or name, UnknownNameError for an unknown
    source (nothing is imported)."""
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
        return ModelSpec(source_names(prefixed=False)[0], base, size)
    prefixed = source_names(prefixed=True)
    if source not in prefixed:
        forms = ", ".join(_SOURCES.get(n).form for n in prefixed)
        raise UnknownNameError(f"unknown model source {source!r} in {spec!r}; sources: {', '.join(prefixed)} "
                               f"({forms})")
    get_source(source).check_name(spec, name)
    return ModelSpec(source, name, size)


def model_catalog(source: str = "registry", search: str = "") -> list[str]:
    """The names of one source (:func:`source_names`), as full specs ("torchvision:resnet18"; registered names
    bare), sorted; those containing ``search`` (case-insensitive) when it is given."""
    entry = get_source(source)
    return [n for n in map(entry.full_name, entry.catalogue()) if search.lower() in n.lower()]


def try_download(download: Callable[[], nn.Module]) -> tuple[nn.Module | None, str]:
    """(``download()``, "") or, when it fails (offline, no such weights, a bad download), (None, a note saying
    why the model starts from random weights)."""
    try:
        return download(), ""
    except Exception as exc:  # noqa: BLE001 - offline, no such weights, a bad download: say so and go on
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return None, f"{RANDOM_INIT}: pretrained weights could not be downloaded ({reason})"


def first_line(doc: str | None) -> str:
    """The first sentence of a docstring, reStructuredText links reduced to their text."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r"`([^`<]*?)\s*<[^>]*>`_*", r"\1", text)
    return text.split(". ")[0].rstrip(".:")
