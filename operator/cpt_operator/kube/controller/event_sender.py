"""Events posted after the passes that decided them, off the path to a run's children (asyncio; no kopf).

An Event is what `kubectl describe` lists: best effort (a lost one beats a repeated one) and never read back by
the operator. Posted inside the pass, it put one more request on every run's way to its children: at 1,000 runs
created at once, 1,000 Event POSTs competed with the creates (bench/operator_scale). So a pass only hands its
events here (`put`, from any thread); the sender posts them in order once no run has waited for a busy worker for a
second; while runs wait, those that waited `max_defer` seconds trickle out (a few per second), so that a
busy operator still posts them without taking the workers' turn. What client-go's
EventBroadcaster does for Go controllers: events go out on their own, behind the work.

Bounded: past `limit` waiting events the oldest are dropped (counted and logged); a held event is its JSON
(~0.6 kB), not a dict. A stopping operator posts
what it still holds for a few seconds (`flush`); what a killed one held is lost, as with client-go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

log = logging.getLogger(__name__)
MAX_DEFER = 60.0  # seconds an event may wait for an idle queue; then it trickles out while the queue is busy
TRICKLE = 5.0  # events per second posted while runs wait for workers (only those that waited MAX_DEFER)
IDLE_FOR = 1.0  # seconds without a backlog: between two bursts of watch events the queue empties briefly
LIMIT = 10_000  # events held at most (about 1 kB each)
BATCH = 50  # events posted per hop to a worker thread; the queue's state is looked at again between batches


class EventSender:
    """`put(namespace, body)` from pass threads; `run()` in the event loop posts them through `post`."""

    def __init__(self, post: Callable[[str, dict], None], busy: Callable[[], bool], *,
                 max_defer: float = MAX_DEFER, idle_for: float = IDLE_FOR, trickle: float = TRICKLE,
                 limit: int = LIMIT, clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._busy = busy
        self._max_defer = max_defer
        self._idle_for = idle_for
        self._trickle = trickle
        self._idle_since: Optional[float] = None
        self._limit = limit
        self._clock = clock
        self._pending: deque[tuple[float, str, str]] = deque()  # (when put, namespace, the event as JSON)
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self.posted = 0
        self.dropped = 0
        self.failed = 0

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, namespace: str, body: dict) -> None:
        """Hold an event for posting (thread-safe; never blocks, never raises)."""
        with self._lock:
            self._pending.append((self._clock(), namespace, json.dumps(body, separators=(",", ":"))))
            while len(self._pending) > self._limit:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("%d events dropped: more than %d waited to be posted", self.dropped, self._limit)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closed: the operator is stopping
                pass

    def _due(self) -> int:
        """How many events to post now: a batch when no run waits for a worker (for `idle_for` s), one when
        the oldest waited `max_defer` s while runs wait, else none."""
        with self._lock:
            if not self._pending:
                return 0
            oldest = self._pending[0][0]
        now = self._clock()
        if self._busy():
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if self._idle_since is not None and now - self._idle_since >= self._idle_for:
            return BATCH
        return 1 if now - oldest >= self._max_defer else 0

    def _take(self, n: int) -> list[tuple[float, str, str]]:
        with self._lock:
            return [self._pending.popleft() for _ in range(min(n, len(self._pending)))]

    def _post_batch(self, batch: list[tuple[float, str, str]]) -> None:
        for _, namespace, text in batch:
            body = json.loads(text)
            try:
                self._post(namespace, body)
                self.posted += 1
            except Exception as exc:  # noqa: BLE001 - best effort, like every Event
                self.failed += 1
                log.warning("could not post event %s on %s/%s: %s", body.get("reason"), namespace,
                            (body.get("involvedObject") or {}).get("name"), exc)

    async def run(self, executor=None, poll: float = 0.25) -> None:
        """Post held events whenever they are due; forever (cancel to stop)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            n = self._due()
            if not n:
                self._wake.clear()
                try:  # woken by a new event; re-checked every `poll` s while events wait for the queue
                    await asyncio.wait_for(self._wake.wait(), poll if self._pending else None)
                except asyncio.TimeoutError:
                    pass
                continue
            await self._loop.run_in_executor(executor, self._post_batch, self._take(n))
            if n == 1:  # trickling while runs wait
                await asyncio.sleep(1.0 / self._trickle)

    async def flush(self, executor=None, timeout: float = 5.0) -> None:
        """Post what is still held, for at most `timeout` seconds (at shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending and loop.time() < deadline:
            batch = self._take(BATCH)
            try:
                await asyncio.wait_for(loop.run_in_executor(executor, self._post_batch, batch),
                                       max(deadline - loop.time(), 0.1))
            except asyncio.TimeoutError:
                break
        if self._pending:
            log.warning("%d events not posted at shutdown", len(self._pending))
