"""prunekit's exceptions: what a user got wrong (a name, a value, a file, missing data) is a :class:`UserError`;
anything else that escapes prunekit is a bug.

The command line prints a :class:`PrunekitError`'s message and exits 2; any other exception shows its traceback
(exit 1). The dashboard shows a :class:`UserError` as a message beside the control that caused it.

:class:`UserError` subclasses ``ValueError`` (and :class:`UnknownNameError` ``KeyError``, :class:`DataNotFoundError`
``FileNotFoundError``), so code written against the built-in exceptions keeps working.
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PrunekitError", "UserError", "UnknownNameError", "DataNotFoundError", "PruneError", "unknown_name"]


class PrunekitError(Exception):
    """The base of every exception prunekit raises on purpose."""


class UserError(PrunekitError, ValueError):
    """A value, name or file the user gave is wrong; the message says which, what is wrong and what to do."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry (model, criterion, preset, data set, layer...); the message lists the known
    names. ``str()`` is the message itself (not KeyError's quoted repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(UserError, FileNotFoundError):
    """A data set is not on disk and could not be downloaded; the message says where it looked and how to get it."""


class PruneError(UserError):
    """A model (or a plan for it) that prunekit cannot prune correctly: Torch-Pruning failed on it, or the pruned
    model does not compute what the original computes with the same channels removed. The message names the layer
    and the operation, and says what to do (give that group ratio 0, or pick another model)."""


def unknown_name(kind: str, name: object, known: Iterable[str], *, plural: str | None = None,
                 hint: str = "") -> UnknownNameError:
    """The error for ``name`` missing from the registry of ``kind``: "unknown model 'x'; known models: a, b"."""
    return UnknownNameError(f"unknown {kind} {name!r}; known {plural or kind + 's'}: {', '.join(known)}{hint}")
