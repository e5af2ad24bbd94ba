"""A registry of named classes (criteria, presets): one way to add an entry, list them and build one by name."""
from __future__ import annotations

from typing import Generic, TypeVar

from prunekit.errors import UserError, unknown_name

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes registered under their ``name`` attribute. ``kind`` / ``plural`` name the entries in messages."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind, self.plural = kind, plural or kind + "s"
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name``; UserError when the name is taken."""
        if cls.name in self._classes:
            raise UserError(f"{self.kind} {cls.name!r} is already registered")
        self._classes[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for entries defined in a notebook or a test)."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._classes)

    def cls(self, name: str, known: list[str] | None = None) -> type[T]:
        """The class registered as ``name``; UnknownNameError listing ``known`` (default: every name)."""
        if name not in self._classes:
            raise unknown_name(self.kind, name, known or self.names(), plural=self.plural)
        return self._classes[name]
