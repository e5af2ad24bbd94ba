"""Latest-wins background work: a dashboard control changes faster than a model evaluates, so only the newest
request of each visitor is worth computing. :class:`LatestWins` runs one request at a time in one daemon thread
shared by every visitor (client): each client has at most one request waiting (a newer one replaces it, so work per
visitor never piles up), waiting clients are served in the order they asked (none waits behind another's stream of
slider moves, none is lost), a key done or running is never computed again (two visitors on the same plan share the
work), and each finished result is kept under its key so that a stale result is never taken for the current one.

>>> worker = LatestWins()
>>> worker.ask(("plan", 1), lambda: slow(1), client="tab-a"); worker.ask(("plan", 2), lambda: slow(2), client="tab-a")
>>> worker.result(("plan", 2))        # None while pending; then the value (or the exception it raised)
"""
from __future__ import annotations

import atexit
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["LatestWins", "Outcome"]


class Outcome:
    """A finished request: ``value``, or the ``error`` (an exception) it raised."""

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self.value, self.error = value, error


class LatestWins:
    """One daemon thread that computes each client's newest request; results of the last ``keep`` keys are kept."""

    def __init__(self, keep: int = 64):
        self._lock = threading.Condition()
        self._pending: OrderedDict[Hashable, tuple[Hashable, Callable[[], Any]]] = OrderedDict()  # client -> request
        self._running: Hashable | None = None
        self._done: OrderedDict[Hashable, Outcome] = OrderedDict()
        self._keep = keep
        threading.Thread(target=self._loop, daemon=True, name="prunekit-latest-wins").start()
        atexit.register(self._drain)

    def _drain(self, timeout: float = 120.0) -> None:
        """At interpreter exit: drop what waits and let the running request end (a daemon thread killed inside
        a torch operation aborts the process)."""
        with self._lock:
            self._pending.clear()
            self._lock.wait_for(lambda: self._running is None, timeout)

    def ask(self, key: Hashable, work: Callable[[], Any], *, client: Hashable = None) -> None:
        """Request ``work()`` under ``key`` for ``client`` (nothing when the key is done or running already); it
        replaces the client's request still waiting, and keeps the client's place in the queue."""
        with self._lock:
            if key in self._done or key == self._running:
                self._pending.pop(client, None)  # what it waited for is no longer its newest request
                return
            self._pending[client] = (key, work)
            self._lock.notify_all()

    def result(self, key: Hashable) -> Outcome | None:
        """The outcome of ``key``, None while it is pending (or was dropped for a newer request)."""
        with self._lock:
            return self._done.get(key)

    def busy(self) -> bool:
        """Whether a request is running or waiting."""
        with self._lock:
            return self._running is not None or bool(self._pending)

    def waiting(self) -> int:
        """How many clients have a request waiting."""
        with self._lock:
            return len(self._pending)

    def ahead(self, key: Hashable) -> int | None:
        """How many requests will run before ``key``'s starts: 0 when it is running or next with nothing running,
        None when nobody waits for it (done, or dropped for a newer request)."""
        with self._lock:
            if key == self._running:
                return 0
            keys = [k for k, _ in self._pending.values()]
            if key not in keys:
                return None
            return keys.index(key) + (self._running is not None)

    def forget(self, client: Hashable) -> None:
        """Drop ``client``'s waiting request (it left)."""
        with self._lock:
            self._pending.pop(client, None)

    def wait(self, key: Hashable, timeout: float) -> Outcome | None:
        """Block until ``key`` is done or ``timeout`` seconds passed (for tests and scripts, never for a page)."""
        with self._lock:
            self._lock.wait_for(lambda: key in self._done, timeout)
            return self._done.get(key)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._pending))
                _, (key, work) = self._pending.popitem(last=False)  # the client that has waited longest
                if key in self._done:
                    continue
                self._running = key
            try:
                outcome = Outcome(work())
            except Exception as exc:  # noqa: BLE001 - the page shows it; the worker goes on with the next request
                outcome = Outcome(error=exc)
            with self._lock:
                self._done[key] = outcome
                while len(self._done) > self._keep:
                    self._done.popitem(last=False)
                self._running = None
                for client in [c for c, (k, _) in self._pending.items() if k == key]:
                    del self._pending[client]  # another client's same request: done by this one
                self._lock.notify_all()
