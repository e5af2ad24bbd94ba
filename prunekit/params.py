"""A typed parameter with a default, a one-line doc and what is allowed: what criteria and presets declare, what
the command line and the dashboard build their inputs from, and what validates a value from either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prunekit.errors import UserError

__all__ = ["Param"]


@dataclass(frozen=True)
class Param:
    """A criterion parameter: its default, a one-line doc, and what is allowed: ``choices``, or a range
    ``low``..``high`` (either may be None = unbounded; ``open_low``/``open_high`` exclude the bound).
    The type is the default's (bool, int, float or str); ints are accepted where floats are."""

    name: str
    default: Any
    doc: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allowed(self) -> str:
        """What is allowed, in words (used in error messages and help)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(self.default)]
        if self.low is None and self.high is None:
            return kind
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in {'(' if self.open_low or self.low is None else '['}{lo}, {hi}" + (
            ")" if self.open_high or self.high is None else "]"
        )

    def validate(self, value: Any) -> Any:
        """``value`` converted to the parameter's type (strings too, as from the command line), or
        ``ValueError`` naming the parameter and what is allowed."""
        kind = type(self.default)
        try:
            value = self._convert(value, kind)
        except (TypeError, ValueError):
            raise UserError(f"{self.name} must be {self.allowed()}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{self.name} must be {self.allowed()}, got {value!r}")
        if kind in (int, float):
            bad = (
                (isinstance(value, float) and not math.isfinite(value))
                or (self.low is not None and (value < self.low or (self.open_low and value == self.low)))
                or (self.high is not None and (value > self.high or (self.open_high and value == self.high)))
            )
            if bad:
                raise UserError(f"{self.name} must be {self.allowed()}, got {value!r}")
        return value

    @staticmethod
    def _convert(value: Any, kind: type) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
