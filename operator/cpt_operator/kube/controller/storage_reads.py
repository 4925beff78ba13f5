"""Runs' storage reads, off the pass workers: a bounded pool, a per-endpoint in-flight limit, a wall-clock deadline.

One tenant's endpoint must not stall the operator for the others (issue 26). So a pass never reads storage itself:
it hands the read to this scheduler and waits a moment at most (a healthy endpoint answers in milliseconds). A
read still going then leaves the pass with `Pending` (plan nothing, look again at the deadline); when it ends,
`wake` queues the run's next pass, which takes the result. A read that passes its `deadline` gives the pass a
StorageView.error saying that the endpoint did not answer in N s (never "nothing there": the planner holds
everything), while the read itself goes on in the background until its socket timeouts end it (no second read
of that run is started meanwhile). Each read runs under `s3client.deadline`, so no request is sent after it.

A pass waits while its read makes progress, `pass_wait` (2 s) without progress at most, or `pass_wait_trouble`
(0.1 s) on an endpoint in trouble: one with a read stalled longer than `pass_wait`, or whose last read failed
unanswered or over the limits (for TROUBLE_FOR s).

Threads: `workers` daemon threads for all runs; at most `per_endpoint` of them on one endpoint, the other reads
for it wait their turn outside the pool. A few endpoints that never answer hold a few threads, never all: the
other runs' reads go on. With no `wake` (tools and tests without the controller) a pass waits for its read
up to the deadline.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from cpt_core.storage import s3client
from cpt_operator.kube.controller import storage_problems as problems
from cpt_operator.kube.controller.state import RunState, Runs
from cpt_operator.kube.controller.storage_access import READ_DEADLINE, CommittedReader, StorageView

log = logging.getLogger(__name__)

# A pass waits for its read while the read makes progress (a request answered at least every PASS_WAIT seconds;
# a healthy endpoint on a busy machine), so that a pass ends with its read, also within a shutdown; it lets the
# worker go after PASS_WAIT without progress, or PASS_WAIT_TROUBLE on an endpoint in trouble (a read on it
# stalled, or its last read failed unanswered or over the limits). The read then wakes the run when it ends.
PASS_WAIT = 2.0
PASS_WAIT_TROUBLE = 0.1
SLICE = 0.05  # seconds between looks at a read's progress
TROUBLE_FOR = 60.0  # seconds an endpoint stays in trouble after a read on it failed so
WORKERS = 32  # reader threads for all runs
PER_ENDPOINT = 2  # reads in flight on one endpoint at once
MAX_AGE = 30.0  # seconds a finished read stays usable by the run's next pass
# Seconds a failed read's error stands for the run's passes before its storage is read again: an endpoint that
# does not answer or misbehaves is not hit (and its answers not parsed) on every pass of the run.
ERROR_HOLD = 5.0

RunKey = tuple[str, str]


@dataclass(frozen=True)
class Pending:
    """The read is still going: plan nothing now, look again in `retry_in` seconds (or when woken)."""

    retry_in: float


@dataclass(eq=False)
class _Read:
    key: RunKey
    identity: tuple
    endpoint: str
    resource: dict
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    started: Optional[float] = None
    finished: Optional[float] = None
    view: Optional[StorageView] = None
    abandoned: bool = False  # the run was forgotten or its storage changed: the result goes nowhere
    outlived: bool = False  # a pass stopped waiting for it: its end wakes the run (else the pass took it)
    progressed: Optional[float] = None  # when it last sent a request (the one before was answered)


class StorageReads:
    """Each run's read in flight (or last finished) is kept in its state (RunState.read), under this lock;
    `reader.runs` is the registry, and a forgotten run's read finishes into nothing."""

    def __init__(self, reader: CommittedReader, *, allowed: tuple[str, ...] = (),
                 wake: Optional[Callable[[str, str], None]] = None, deadline: float = READ_DEADLINE,
                 pass_wait: float = PASS_WAIT, workers: int = WORKERS, per_endpoint: int = PER_ENDPOINT,
                 pass_wait_trouble: float = PASS_WAIT_TROUBLE) -> None:
        self.reader = reader
        self.runs: Runs = reader.runs
        self.runs.on_forget(self._abandon)
        self.allowed = allowed  # CPT_STORAGE_ENDPOINTS globs; empty: any endpoint
        self.wake = wake
        self.deadline = deadline
        self.pass_wait = pass_wait
        self.pass_wait_trouble = pass_wait_trouble
        self._trouble: dict[str, float] = {}  # endpoint -> until when its reads get the short wait
        self._started: dict[str, set[_Read]] = collections.defaultdict(set)  # endpoint -> reads running on it
        self.per_endpoint = per_endpoint
        self._lock = threading.Lock()
        self._running: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, collections.deque[_Read]] = collections.defaultdict(collections.deque)
        self._ready: queue.SimpleQueue[Optional[_Read]] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"cpt-storage-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def view(self, namespace: str, name: str, resource: dict) -> Union[StorageView, Pending]:
        storage = (resource.get("spec") or {}).get("storage")
        if not isinstance(storage, dict):
            return StorageView()  # an invalid spec: the planner says so, there is nothing to read
        where = problems.endpoint_name(_str(storage.get("endpoint")), _str(storage.get("region")))
        if self.allowed and str(storage.get("uri", "")).startswith("s3://") and not any(
                fnmatch.fnmatchcase(where, pattern) for pattern in self.allowed):
            return StorageView(reason=problems.NOT_ALLOWED, error=(
                f"storage endpoint {where} is not one this operator may use (CPT_STORAGE_ENDPOINTS: "
                f"{', '.join(self.allowed)}): set spec.storage.endpoint to one of them, or ask the cluster's admin"))
        key = (namespace, name)
        state = self.runs.of(key)
        identity = ((resource.get("metadata") or {}).get("uid"), repr(sorted(storage.items())))
        now = time.monotonic()
        with self._lock:
            read = state.read
            if read is not None and read.identity != identity:
                read.abandoned = True
                state.read = read = None
            elif read is not None and read.finished is not None:
                age, failed = now - read.finished, read.view is None or read.view.error is not None
                if failed and read.view is not None and age < ERROR_HOLD:
                    return read.view
                if failed or age > MAX_AGE:
                    state.read = read = None
            if read is None:
                read = _Read(key, identity, where.lower(), resource, now + self.deadline)
                state.read = read
                self._submit(read)
            trouble = self._in_trouble(read.endpoint, now)
        if self.wake is None:
            read.done.wait(max(0.0, read.deadline - now))
        elif trouble:
            read.done.wait(max(0.0, min(self.pass_wait_trouble, read.deadline - now)))
        else:
            self._wait_while_progressing(read, now)
        with self._lock:
            if read.view is not None:
                if state.read is read and read.view.error is None:
                    state.read = None  # taken: the next pass reads again (an error stands ERROR_HOLD)
                return read.view
            now = time.monotonic()
            read.outlived = True
            if now < read.deadline:
                return Pending(read.deadline - now + 0.05)
            started = read.started is not None
        return self._overdue(where, started)

    def _abandon(self, state: RunState) -> None:
        """The run is forgotten (Runs.forget): a read in flight for it finishes into nothing."""
        with self._lock:
            if state.read is not None:
                state.read.abandoned = True

    def in_flight(self) -> dict[str, int]:
        """Reads running per endpoint (tests, figures)."""
        with self._lock:
            return {k: v for k, v in self._running.items() if v}

    def close(self) -> None:
        for _ in self._threads:
            self._ready.put(None)

    # ------------------------------------------------------------------ inside
    def _wait_while_progressing(self, read: _Read, since: float) -> None:
        while not read.done.wait(SLICE):
            now = time.monotonic()
            last = max(since, read.started or 0.0, read.progressed or 0.0)
            if now >= read.deadline or now - last > self.pass_wait:
                return

    def _in_trouble(self, endpoint: str, now: float) -> bool:
        if self._trouble.get(endpoint, 0.0) > now:
            return True
        return any(now - max(r.started or now, r.progressed or 0.0) > self.pass_wait
                   for r in self._started.get(endpoint, ()))

    def _submit(self, read: _Read) -> None:
        if self._running[read.endpoint] < self.per_endpoint:
            self._running[read.endpoint] += 1
            self._ready.put(read)
        else:
            self._waiting[read.endpoint].append(read)

    def _work(self) -> None:
        while True:
            read = self._ready.get()
            if read is None:
                return
            view: Optional[StorageView] = None
            try:
                left = read.deadline - time.monotonic()
                if not read.abandoned and left > 0:
                    with self._lock:
                        read.started = time.monotonic()
                        self._started[read.endpoint].add(read)
                    with s3client.deadline(left, read.endpoint, lambda: setattr(read, "progressed", time.monotonic()),
                                           total=self.deadline):
                        view = self.reader(read.resource)
                elif not read.abandoned:
                    view = self._overdue(read.endpoint, False)
            except Exception as exc:  # noqa: BLE001 - the reader reports its own errors; a bug must not kill a thread
                log.exception("%s/%s: storage read failed", *read.key)
                view = StorageView(error=f"storage read failed: {type(exc).__name__}", reason=problems.OTHER)
            finally:
                self._finish(read, view)

    def _finish(self, read: _Read, view: Optional[StorageView]) -> None:
        with self._lock:
            read.view, read.finished = view, time.monotonic()
            wake = read.outlived and not read.abandoned and view is not None
            self._started[read.endpoint].discard(read)
            if not self._started[read.endpoint]:
                del self._started[read.endpoint]
            if view is not None and view.reason in (problems.UNREACHABLE, problems.LIMIT_EXCEEDED):
                self._trouble[read.endpoint] = read.finished + TROUBLE_FOR
            elif view is not None and view.error is None:
                self._trouble.pop(read.endpoint, None)
            self._running[read.endpoint] -= 1
            waiting = self._waiting.get(read.endpoint)
            while waiting:
                nxt = waiting.popleft()
                if not nxt.abandoned:
                    self._running[read.endpoint] += 1
                    self._ready.put(nxt)
                    break
                nxt.done.set()
            if waiting is not None and not waiting:
                del self._waiting[read.endpoint]
            if not self._running[read.endpoint]:
                del self._running[read.endpoint]
        read.done.set()
        if self.wake is not None and wake:
            try:
                self.wake(*read.key)
            except Exception:  # noqa: BLE001 - the loop is closing; the run's timer looks again anyway
                pass

    def _overdue(self, where: str, started: bool) -> StorageView:
        if started:
            message = problems.not_answering(where, self.deadline)
        else:  # it never got a reader: say so rather than blame this endpoint
            busy = self.in_flight()
            message = problems.not_answering(where, self.deadline, (
                f"the read had not started: {sum(busy.values())} reads in flight, {busy.get(where.lower(), 0)} "
                f"of them on this endpoint (at most {self.per_endpoint} per endpoint)"))
        return StorageView(error=message, reason=problems.UNREACHABLE)


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None
