"""The controller: runs' state, the work queue and its workers, the children's informer, the event sender and
the refused-pod sweeps, wired together and run in one asyncio loop. No kopf: the adapter (kube/kopf_adapter.py)
only starts and stops it and hands it the resource watch's events (`wakes.resource`).

Passes come from a work queue (`workqueue.WorkQueue`), not from a daemon per resource: the wake rules
(controller/wake.py) add a run's key when something the planner reads changed, and a fixed pool of `WORKERS`
runs one pass per key, each in a thread (the API and S3 clients block). Storage is read in a pool of its own
(storage_reads): a pass waits for its run's read a moment at most, and a read that ends later wakes the run. A key
is queued at most once and never passed by two workers at once. Timers only where time itself matters: the
planner's requeue_after (retry backoff, commit grace), the error backoff, and the slow storage resync
(CPT_RECONCILE_INTERVAL: storage has no events) are delayed re-queues. A missed wake-up only delays work until the
resync; a restart loses nothing (every run is passed once when the resource watch lists it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from cpt_operator import metrics
from cpt_operator.kube import jobs
from cpt_operator.kube.controller.admission import sweep_forever
from cpt_operator.kube.controller.event_sender import EventSender
from cpt_operator.kube.controller.informer import Informer
from cpt_operator.kube.controller.passes import Outcome, Reconciler
from cpt_operator.kube.controller.state import RunKey, Runs, RunState
from cpt_operator.kube.controller.wake import Wakes
from cpt_operator.kube.controller.workqueue import WorkQueue, error_delay
from cpt_operator.kube.rest.client import Kube, configuration
from cpt_operator.kube.rest.watch import Watcher
from cpt_operator.kube.settings import Settings

log = logging.getLogger(__name__)
# Passes in flight at once. A pass mostly waits on the API server and S3 (a few ms of CPU each), so a few more
# than the CPUs; more only queue at the server.
WORKERS = 8
ERROR_BACKOFF_CAP = 60.0  # seconds: failing passes are retried at least this often, whatever the resync interval


def child_kinds(backend: jobs.Backend) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every child kind read from the watch-fed cache, those of them whose stream may fail for good).

    The other job kind is watched too, never created: after CPT_JOB_BACKEND changed, a stage job of the old kind
    that runs or finished is what the planner sees, so that stage is waited for (or its outcome kept), not run
    twice. Its CRD may not be served or its rights not granted (custom RBAC): neither holds passes back. The
    backend's unit kinds (PyTorchJob: AppWrappers under a queue, kube/wrapped) are watched the same way. The
    run's rollout-key Secret is only ever created (a 409 owner check): watching Secrets would need rights on
    every Secret of the namespace."""
    other = tuple(b.kind for b in jobs.BACKENDS.values() if b is not backend) + jobs.unit_kinds(backend.kind)
    return ("ConfigMap", "Service", "Deployment", "NetworkPolicy", backend.kind, *other), other


def retry_backoffs(settings: Settings) -> tuple[float, ...]:
    """Waits between the attempts of a failed watch request (and kopf's own): from the error backoff, at most
    1 s at first, doubling, at most 30 s."""
    first = min(settings.error_backoff, 1.0)
    return tuple(min(first * 2 ** i, 30.0) for i in range(6))


class Controller:
    def __init__(self, settings: Settings, backend: jobs.Backend, kube: Kube, watcher: Watcher) -> None:
        self.settings = settings
        self.watcher = watcher
        self.runs = Runs(create_on_use=False)
        self.queue: WorkQueue[RunKey] = WorkQueue()
        self.runs.on_forget(lambda state: self.queue.forget(state.key))
        self.runs.on_forget(lambda state: metrics.forget(*state.key))
        self.reconciler = Reconciler(kube, settings, runs=self.runs)
        self.events = EventSender(kube.post_event, self.busy)
        self.reconciler.post_event = self.events.put
        self.wakes = Wakes(self.runs, self.queue.add, self.reconciler.recent, self.reconciler.admission, backend)
        kinds, optional = child_kinds(backend)
        self.informer = Informer(watcher.stream, kinds, settings.namespaces, self.wakes.child, optional=optional,
                                 on_listed=self.wakes.listed)
        self.pool = ThreadPoolExecutor(WORKERS, "cpt-pass")
        self.metrics_server: Optional[metrics.Server] = None
        self._tasks: list[asyncio.Task] = []
        self.closed = False

    @classmethod
    def connect(cls, settings: Settings, backend: jobs.Backend) -> "Controller":
        """With the operator's credentials (rest.client.configuration): one client for passes, one for watches."""
        kube = Kube.connect()
        watcher = Watcher.connect(configuration(), settings.watch_timeout, retry_backoffs(settings))
        return cls(settings, backend, kube, watcher)

    def busy(self) -> bool:
        """Every worker has a pass and runs wait for one: events wait too (a steady trickle of passes, e.g.
        resyncs, that leaves a worker free is not busy)."""
        return len(self.queue) > 0 and self.queue.active >= WORKERS

    def start(self) -> None:
        """In the running loop: the exporter, the informer's streams, the workers, the event sender, the sweeps."""
        if self.settings.metrics_port:
            self.metrics_server = metrics.serve(self.settings.metrics_port, self.settings.metrics_addr)
        loop = asyncio.get_running_loop()

        def woken_by_storage(namespace: str, name: str) -> None:  # a storage read ended, in a reader thread
            if not self.closed:
                loop.call_soon_threadsafe(self.wakes.wake, namespace, name)

        self.reconciler.reads.wake = woken_by_storage
        self.informer.start()
        self._tasks = [asyncio.create_task(self._worker(), name=f"cpt-worker-{i}") for i in range(WORKERS)]
        self._tasks.append(asyncio.create_task(self.events.run(self.pool), name="cpt-events"))
        self._tasks.append(asyncio.create_task(sweep_forever(
            self.reconciler.admission, self.reconciler.clock, self.wakes.wake, lambda: self.closed,
            lambda failures: error_delay(self.settings.error_backoff, failures, ERROR_BACKOFF_CAP)),
            name="cpt-admission"))

    async def stop(self) -> None:
        """Stop the workers; passes already in their threads finish (at most ~10 s waited for), their events are
        posted (at most 5 s), then the clients close. Nothing to release on the resources: no finalizer."""
        self.closed = True
        self.queue.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.informer.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.pool.shutdown, True), 10.0)
        except asyncio.TimeoutError:
            log.warning("a pass still runs at shutdown; not waiting for it")
        await self.events.flush()  # what the passes decided last, posted for at most 5 s
        self.reconciler.close()
        self.watcher.close()

    async def _worker(self) -> None:
        """Take a run's key, pass it, mark it done; forever (until stop cancels it). Not before the children's
        cache has listed every kind once: a pass must never mistake an unfilled cache for missing children."""
        await self.informer.synced.wait()
        while True:
            key = await self.queue.get()
            try:
                await self._pass_once(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug here must not stop the worker (the run retries at its resync)
                log.exception("%s/%s: the pass could not be scheduled", *key)
                self.queue.add_after(key, self.settings.reconcile_interval)
            finally:
                self.queue.done(key)

    async def _pass_once(self, key: RunKey) -> None:
        """One pass of one run, then its next timer: the planner's requeue_after, the error backoff or the resync."""
        state = self.runs.get(key)
        if state is None or state.resource is None:
            return  # deleted since it was queued
        # Snapshots taken here, in the event loop that updates the caches; the pass runs in a worker thread.
        resource = copy.deepcopy(state.resource)
        children = self.informer.cache.children(*key, (resource.get("metadata") or {}).get("uid"))
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self.pool, self.reconciler.reconcile, *key, resource, children)
        except Exception as exc:  # noqa: BLE001 - any failure: say so on the resource, back off, go again
            await self._failed(state, exc)
            return
        state.failures = 0
        if self.runs.get(key) is not state:
            return  # forgotten meanwhile (deleted; perhaps created again: that one has its own pass queued)
        if not outcome.exists:
            self.runs.forget(key)  # being deleted: its children go with it
        else:
            self.queue.add_after(key, self._next(outcome))

    async def _failed(self, state: RunState, exc: Exception) -> None:
        cfg, key = self.settings, state.key
        state.failures += 1
        delay = error_delay(cfg.error_backoff, state.failures,
                            max(min(cfg.reconcile_interval, ERROR_BACKOFF_CAP), cfg.error_backoff))
        log.warning("%s/%s: reconcile failed (%d in a row), retrying in %.1fs: %s: %s", *key, state.failures,
                    delay, type(exc).__name__, exc)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self.reconciler.report_failure, *key, exc, delay)
        if self.runs.get(key) is state:
            self.queue.add_after(key, delay)

    def _next(self, outcome: Outcome) -> float:
        """The storage resync, spread over +-10% so a thousand runs created at once do not re-read storage in the
        same second forever after; sooner when the planner asks, or when storage did not answer."""
        cfg = self.settings
        delay = cfg.reconcile_interval * random.uniform(0.9, 1.1)
        if outcome.requeue_after is not None:
            delay = min(delay, max(outcome.requeue_after, 0.05))
        if outcome.storage_unread:  # an outage ends without an event: notice it within a minute
            delay = min(delay, max(ERROR_BACKOFF_CAP * random.uniform(0.9, 1.1), cfg.error_backoff))
        return delay
