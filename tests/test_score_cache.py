import threading

import pytest

from prunekit.criteria.cache import ScoreCache
from prunekit.criteria.probe import ProbeSpec


def test_the_same_key_gives_the_same_object_and_computes_once():
    cache, calls = ScoreCache(4), []

    def compute():
        calls.append(1)
        return object()

    key = ScoreCache.key("scores", "abc", "l1", {"p": 2, "a": 1}, ProbeSpec("cifar10", 64), None, fallback=True)
    first = cache.get_or_compute(key, compute)
    # the same request, its parameters and flags given in another order, is the same key
    again = ScoreCache.key("scores", "abc", "l1", {"a": 1, "p": 2}, ProbeSpec("cifar10", 64), None, fallback=True)
    assert cache.get_or_compute(again, compute) is first and len(calls) == 1
    other_probe = ScoreCache.key("scores", "abc", "l1", {"a": 1, "p": 2}, ProbeSpec("cifar10", 128), None,
                                 fallback=True)
    assert other_probe != key and other_probe not in cache


def test_the_least_recently_used_entry_is_evicted_first():
    cache = ScoreCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now newer than "b"
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    cache.put("d", 4)
    assert "a" not in cache and "c" in cache and "d" in cache


def test_threads_share_the_cache_safely():
    cache = ScoreCache(8)
    threads = [threading.Thread(target=lambda i=i: [cache.put((i, j), j) for j in range(200)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 8


def test_a_cache_holds_at_least_one_entry():
    with pytest.raises(ValueError, match="max_entries"):
        ScoreCache(0)
