"""A process's memory of score tables (and of what is computed from them, such as a ranking's reliability), in front
of the disk cache of :mod:`prunekit.criteria.scores`: a rerun that asks for the same scores again gets the same
table object at once, without hashing the weights or reading the disk.

>>> cache = ScoreCache(max_entries=64)
>>> key = ScoreCache.key("scores", weights, "l1", {}, probe_spec, data_path, fallback=True, allow_slow=True)
>>> cache.get_or_compute(key, lambda: score_model(model, "l1"))
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from prunekit.lru import LRU

__all__ = ["ScoreCache"]


class ScoreCache(LRU):
    """A :class:`~prunekit.lru.LRU` of score tables and what is computed from them.

    A key (:meth:`key`) holds everything that determines the scores: what was computed ("scores", "reliability"),
    the weights' hash, the criterion's name and its parameters, the probe (:class:`prunekit.criteria.probe.ProbeSpec`),
    where the data set's files are (a data set that appears or goes changes what can be scored), and the flags of
    the request (fallback, allow_slow)."""

    @staticmethod
    def key(kind: str, weights: str, criterion: str, params: dict | None, probe: Hashable, data_path: Any,
            **flags: bool) -> tuple:
        """The key of one request: (kind, weights, criterion, sorted params, probe, data path, sorted flags)."""
        return (kind, weights, criterion, tuple(sorted((params or {}).items())), probe, str(data_path),
                tuple(sorted(flags.items())))
