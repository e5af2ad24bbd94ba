"""A registry of named entries (criteria, presets, model sources, registered models, runtimes): one way to add an
entry, list them and look one up by name."""
from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from prunekit.errors import UserError, unknown_name

__all__ = ["Registry", "close_matches"]

T = TypeVar("T")


def close_matches(name: str, known: list[str], n: int = 5) -> list[str]:
    """Up to ``n`` names of ``known`` that look like ``name`` (difflib), best first."""
    return difflib.get_close_matches(name, known, n=n, cutoff=0.6)


class Registry(Generic[T]):
    """Entries (classes, or objects) registered under their ``name`` attribute. ``kind`` / ``plural`` name the
    entries in messages."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind, self.plural = kind, plural or kind + "s"
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Decorator: add ``entry`` under ``entry.name``; UserError when the name is taken."""
        if entry.name in self._entries:
            raise UserError(f"{self.kind} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for entries defined in a notebook or a test)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, known: list[str] | None = None, *, hint: str = "") -> T:
        """The entry registered as ``name``; UnknownNameError listing ``known`` (default: every name) and ``hint``."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, known or self.names(), plural=self.plural, hint=hint)
        return self._entries[name]
