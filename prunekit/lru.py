"""A thread-safe least-recently-used map: the process's memory of results that are costly to compute again (score
tables, prepared evaluators, accuracies), bounded so that it never grows without end.

>>> memo = LRU(max_entries=4)
>>> memo.get_or_compute(("resnet20", "l1"), lambda: expensive())   # computed once, then served
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["LRU"]


class LRU:
    """At most ``max_entries`` results by key; the least recently used one goes first. Safe to share between
    threads (each call holds the map's lock; a computation runs outside it)."""

    def __init__(self, max_entries: int = 64):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The result stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value: Any) -> Any:
        """Store ``value`` under ``key``, dropping the least recently used entries beyond ``max_entries``; -> value."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The stored result, else ``compute()`` stored (computed outside the lock: two threads may both compute
        a missing entry; the later one is kept)."""
        found = self.get(key)
        return found if found is not None else self.put(key, compute())
