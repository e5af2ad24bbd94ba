"""``factory:<package.module>:<function>``: your own ``function(num_classes: int) -> nn.Module``. Its code is
imported only when you name it when starting (:func:`enable_factory`: the command line's ``--factory``, the
dashboard's ``streamlit run app.py -- --factory``, or ``$PRUNEKIT_FACTORY``), never because a file names it.
The function may carry an ``input_size`` attribute (C, H, W) (else 224x224) and take a ``pretrained`` argument.

>>> enable_factory("mypkg.nets:tiny_cnn")       # imports mypkg.nets now; "factory:mypkg.nets:tiny_cnn" builds
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import traceback
from collections.abc import Callable

import torch.nn as nn

from prunekit.errors import UnknownNameError, UserError
from prunekit.models.sources import RANDOM_INIT, ModelSource, ModelSpec, first_line, register_source

__all__ = ["FACTORY_ENV", "FactorySource", "enable_factory", "enable_factories", "enabled_factories"]

FACTORY_ENV = "PRUNEKIT_FACTORY"  # comma-separated package.module:function names enabled at start
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
_FACTORIES: dict[str, Callable[..., nn.Module]] = {}  # "package.module:function" -> the function


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
    except Exception as exc:  # the module's own code failed while it ran: whatever it raised is the user's to fix
        raise UserError(f"--factory {name}: importing {module_name} raised {type(exc).__name__}: {exc}"
                        f"{_raised_at(exc)}. Fix that module (its code runs when it is imported), then start "
                        "again") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"--factory {name}: {module_name} has no function {attr!r}; the factory is a function "
                        "(num_classes: int) -> nn.Module")
    _FACTORIES[name] = fn
    return fn


def _raised_at(exc: Exception) -> str:
    """' (at FILE, line N)', the line of the imported module's own code that raised ``exc`` (the first frame past
    this function's caller and importlib's), or '' when there is none (a SyntaxError's message says where)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen") and f.filename not in (__file__, importlib.__file__)]
    return f" (at {frames[0].filename}, line {frames[0].lineno})" if frames else ""


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


@register_source
class FactorySource(ModelSource):
    """The factories enabled at start."""

    name = "factory"
    form = "factory:<package.module>:<function>"
    label = "Your own model (--factory)"

    def catalogue(self) -> list[str]:
        return enabled_factories()

    def offered(self) -> bool:
        """In the sidebar only when the app was started with a factory."""
        return bool(enabled_factories())

    def check_name(self, spec_text: str, name: str) -> None:
        if not _FACTORY.match(name):
            raise UserError(f"model {spec_text!r}: a factory is named factory:<package.module>:<function>, e.g. "
                            "factory:mypkg.nets:tiny_cnn")

    def check_known(self, spec: ModelSpec) -> None:
        """UnknownNameError saying how to enable the factory when it is not enabled."""
        _factory(spec.name)

    def default_size(self, spec: ModelSpec) -> tuple[int, int, int]:
        size = getattr(_factory(spec.name), "input_size", None)
        if size is None:
            return super().default_size(spec)
        if len(tuple(size)) != 3:
            raise UserError(f"factory:{spec.name}: its input_size attribute must be (C, H, W), got {size!r}")
        return tuple(int(v) for v in size)

    def description(self, spec: ModelSpec) -> str:
        return f"{self.name}: {first_line(_factory(spec.name).__doc__) or f'your model ({spec.name})'}"

    def build(self, spec: ModelSpec, num_classes: int, pretrained: bool = False) -> tuple[nn.Module, str]:
        """The function's model; pretrained weights as the function loads them when it takes ``pretrained``."""
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
