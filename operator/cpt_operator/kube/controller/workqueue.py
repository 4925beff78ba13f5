"""A de-duplicating work queue of run keys with delayed re-queues (asyncio; no kopf, no I/O).

What controller-runtime's workqueue does for Go controllers, in a few lines: the wake rules `add` the key of a run
that should be looked at; a small fixed pool of workers `get` keys and run one pass each. A key is in the queue
at most once (a run woken ten times before a worker takes it is passed once), and never handed to two workers at
once: a key added while its pass runs is marked dirty and queued again when that pass is `done`, so the change
that woke it is never missed. `add_after` is the timer where time itself matters (retry backoff, commit grace,
the storage resync): one pending timer per key, the earliest wins. Everything runs in the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Hashable, Optional, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._order: deque[K] = deque()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}  # key -> (when, handle)
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._order)

    @property
    def active(self) -> int:
        return len(self._active)

    def add(self, key: K) -> None:
        """Queue `key` now (once, however often it is added before a worker takes it)."""
        if self._closed or key in self._queued:
            return
        if key in self._active:
            self._dirty.add(key)  # queued again when its running pass is done
            return
        self._queued.add(key)
        self._order.append(key)
        self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` in `delay` seconds, unless it already has a timer that fires sooner."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        """The next key (oldest first); it stays this worker's until `done(key)`."""
        while not self._order:
            self._ready.clear()
            await self._ready.wait()
        key = self._order.popleft()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: K) -> None:
        """The run is gone: drop its timer and its place in the queue (a running pass finishes on its own)."""
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        self._dirty.discard(key)
        if key in self._queued:
            self._queued.discard(key)
            try:
                self._order.remove(key)
            except ValueError:
                pass

    def timer(self, key: K) -> Optional[float]:
        """When `key`'s timer fires (the loop's clock), or None."""
        pending = self._timers.get(key)
        return pending[0] if pending else None

    def close(self) -> None:
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._order.clear()
        self._queued.clear()
        self._dirty.clear()


def error_delay(base: float, failures: int, cap: float) -> float:
    """Backoff after failed passes in a row: base, 2 base, 4 base, ... at most `cap` (the resync interval, at
    most a minute: a run whose passes keep failing is retried often enough, never in a tight loop)."""
    return min(cap, base * 2 ** min(failures - 1, 16))
