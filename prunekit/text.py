"""Numbers and durations as people read them: what the dashboard and the command line print."""
from __future__ import annotations

__all__ = ["human", "duration", "count"]


def human(n: float) -> str:
    """12345678 -> '12.35M', 269722 -> '0.27M' (as papers print it), 4321 -> '4.32k', 512 -> '512'."""
    for unit, size, floor in (("G", 1e9, 1e9), ("M", 1e6, 1e5), ("k", 1e3, 1e3)):
        if abs(n) >= floor:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float, *, about: bool = False) -> str:
    """A time span. Exact (a measured or counted-down time): 59 -> '59 s', 61 -> '1 min 01 s', 3700 -> '1 h 01 min'.
    ``about`` (an estimate): 48 -> 'about a minute', 432 -> 'about 7 minutes', 12600 -> 'about 3.5 hours'."""
    if about:
        minutes = seconds / 60
        if minutes < 1.5:
            return "about a minute"
        return f"about {minutes:.0f} minutes" if minutes < 90 else f"about {minutes / 60:.1f} hours"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def count(n: int, noun: str) -> str:
    """A count with its noun: (1, 'epoch') -> '1 epoch', (3, 'epoch') -> '3 epochs'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
