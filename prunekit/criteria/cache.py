"""A process's memory of score tables (and of what is computed from them, such as a ranking's reliability), in front
of the disk cache of :mod:`prunekit.criteria.scores`: a rerun that asks for the same scores again gets the same
table object at once, without hashing the weights or reading the disk.

>>> cache = ScoreCache(max_entries=64)
>>> key = ScoreCache.key("scores", weights, "l1", {}, probe_spec, data_path, fallback=True, allow_slow=True)
>>> cache.get_or_compute(key, lambda: score_model(model, "l1"))
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["ScoreCache"]


class ScoreCache:
    """A thread-safe least-recently-used map of at most ``max_entries`` results; the oldest unused one goes first.

    A key (:meth:`key`) holds everything that determines the scores: what was computed ("scores", "reliability"),
    the weights' hash, the criterion's name and its parameters, the probe (:class:`prunekit.criteria.probe.ProbeSpec`),
    where the data set's files are (a data set that appears or goes changes what can be scored), and the flags of
    the request (fallback, allow_slow)."""

    def __init__(self, max_entries: int = 64):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(kind: str, weights: str, criterion: str, params: dict | None, probe: Hashable, data_path: Any,
            **flags: bool) -> tuple:
        """The key of one request: (kind, weights, criterion, sorted params, probe, data path, sorted flags)."""
        return (kind, weights, criterion, tuple(sorted((params or {}).items())), probe, str(data_path),
                tuple(sorted(flags.items())))

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
