"""kopf wiring: the only module that imports kopf (with kube/informer.py). Thin: it keeps the caches and feeds the
work queue, nothing else.

Children are read from a watch-fed cache (`informer.Informer`: one list-then-watch stream per child kind the
operator creates, ConfigMap, Service, Deployment, NetworkPolicy and the stage-job kind in use, filtered by the
API server on the run label), keyed by (namespace, run label): a pass never LISTs. No pass starts before every
stream has listed once, so a restarted operator never plans from an empty cache. The resource itself is the
last copy kopf's watch delivered, so a pass that changes nothing sends no request at all.

Passes come from a work queue (`workqueue.WorkQueue`), not from a daemon per resource: the resource's kopf
event handler and the children's cache add the run's key when something the planner reads changed (the
resource's spec or cpt.dev annotations, first sight, one of its stage jobs' phase or suspension, one of its
other children deleted), and a small fixed pool of workers (`WORKERS`) runs one pass per key, each in a thread
(the API client blocks). Storage is read in a pool of its own (kube/storage_reads.py): a pass waits for its run's
read a moment at most, and a read that ends later wakes the run. A key is queued at most once and never passed by two workers at once. Timers
only where time itself matters: the planner's requeue_after (retry backoff, commit grace), the error backoff,
and the slow storage resync (CPT_RECONCILE_INTERVAL: storage has no events; it catches commits and damage made
out of band) are delayed re-queues. A missed wake-up only delays work until the resync; a restart loses nothing
(every run is passed once when kopf's watch lists it).

No daemon, no change handler: kopf keeps no per-resource progress and adds no finalizer (it removes the one
older versions of this operator added); children go with their run through ownerReferences. kopf's posting of
log lines as Events is off, and its per-handler "succeeded" lines are filtered out: the operator logs one line
per decision (`reconcile`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import kopf

from cpt_core import api
from cpt_operator import metrics
from cpt_operator.kube import jobs, manifests
from cpt_operator.kube.admission import PendingJob, rejected_deployments, sweep_forever
from cpt_operator.kube.client import Kube
from cpt_operator.kube.event_sender import EventSender
from cpt_operator.kube.informer import Informer, watch_selectors
from cpt_operator.kube.observe import parse_time
from cpt_operator.kube.reconcile import Reconciler
from cpt_operator.kube.settings import Settings, job_backend
from cpt_operator.kube.workqueue import WorkQueue, error_delay

log = logging.getLogger(__name__)
PREFIX = api.GROUP
# Not added any more (no daemon, no deletion handler); named so that kopf removes it from resources that an
# older version of this operator left it on.
FINALIZER = f"{PREFIX}/kopf-finalizer"
# The kind stage jobs run as (CPT_JOB_BACKEND, see settings).
JOB_BACKEND = jobs.BACKENDS[job_backend()]
# The other kind is watched too, never created: after CPT_JOB_BACKEND changed, a stage job of the old kind that
# runs or finished is what the planner sees, so that stage is waited for (or its outcome kept), not run twice.
# Its CRD may not be served (nothing to see) or its rights not granted (custom RBAC): neither holds passes back.
# The backend's unit kinds (PyTorchJob: AppWrappers under a queue, kube/wrapped) are watched the same way.
OTHER_JOB_KINDS = tuple(b.kind for b in jobs.BACKENDS.values() if b is not JOB_BACKEND) + \
    jobs.unit_kinds(JOB_BACKEND.kind)
# Child kinds read from the watch-fed cache. The run's rollout-key Secret is only ever created (with a 409
# owner check): watching Secrets would need rights on every Secret of the namespace.
CHILD_KINDS = ("ConfigMap", "Service", "Deployment", "NetworkPolicy", JOB_BACKEND.kind, *OTHER_JOB_KINDS)
# Passes in flight at once. A pass mostly waits on the API server and S3 (a few ms of CPU each), so a few
# more than the CPUs; more only queue at the server.
WORKERS = 8


class QuietKopf(logging.Filter):
    """Drop kopf's "Handler ... succeeded." lines: one per watch event of every index and event handler, most of
    the log at scale."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage().endswith(" succeeded."))


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No essence, no diff: kopf builds both (two deep copies of the object) on every watch event of every
    kind, only for change handlers, and this operator has none. About a tenth of its CPU at 1,000 new runs."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None


ERROR_BACKOFF_CAP = 60.0  # seconds: failing passes are retried at least this often, whatever the resync interval
_QUIET = QuietKopf()
logging.getLogger("kopf.objects").addFilter(_QUIET)

Key = tuple[str, str]  # (namespace, name) of a ContinualPostTraining


@dataclass
class Runtime:
    """Per-operator state, kept in kopf's memo (a restarted operator in the same process starts fresh).
    Touched only from the event loop's thread, except what `reconciler` guards itself."""

    settings: Settings
    reconciler: Reconciler
    queue: WorkQueue = field(default_factory=WorkQueue)
    resources: dict[Key, dict] = field(default_factory=dict)  # the last copy kopf's watch delivered, per run
    informer: Optional[Informer] = None  # the children's watch-fed cache (kube/informer.py)
    seen: dict[Key, Any] = field(default_factory=dict)  # what of the resource wakes a pass, last seen
    jobs_seen: dict[Key, tuple] = field(default_factory=dict)  # (namespace, job) -> jobs.job_fingerprint
    failures: dict[Key, int] = field(default_factory=dict)  # failed passes in a row
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(WORKERS, "cpt-pass"))
    workers: list = field(default_factory=list)
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, Deployment) -> ReplicaFailure
    metrics_server: Optional[metrics.Server] = None
    sweeps: Optional[asyncio.Task] = None
    events: Optional[EventSender] = None  # posts the passes' events behind them (kube/event_sender.py)
    sender: Optional[asyncio.Task] = None
    closed: bool = False

    def busy(self) -> bool:
        """Every worker has a pass and runs wait for one: events wait too (a steady trickle of passes, e.g.
        resyncs, that leaves a worker free is not busy)."""
        return len(self.queue) > 0 and self.queue.active >= WORKERS

    def wake(self, namespace: str, name: str) -> None:
        if (namespace, name) in self.resources:
            self.queue.add((namespace, name))

    def forget(self, key: Key) -> None:
        self.resources.pop(key, None)
        self.seen.pop(key, None)
        self.failures.pop(key, None)
        self.queue.forget(key)
        self.reconciler.forget(*key)
        metrics.forget(*key)


@kopf.on.login()
def login(**kwargs: Any) -> Optional[kopf.ConnectionInfo]:
    """In a pod: the service account. Elsewhere: KUBECONFIG (read now, not when the client library was imported)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings, then the work queue's workers (in this loop: they await passes run in `pool`)."""
    cfg = Settings.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase(prefix=PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False
    # One watch request per kind per CPT_WATCH_TIMEOUT while idle; a stream that went silent (no event and no
    # bookmark, which API servers send about every minute) is re-opened after kopf's inactivity timeout.
    settings.watching.server_timeout = cfg.watch_timeout
    settings.watching.client_timeout = cfg.watch_timeout + 30
    settings.watching.connect_timeout = 10
    first = min(cfg.error_backoff, 1.0)
    settings.networking.error_backoffs = tuple(min(first * 2 ** i, 30.0) for i in range(6))
    settings.execution.default_backoff = cfg.error_backoff
    settings.queueing.idle_timeout = min(5.0, cfg.reconcile_interval)
    server = None
    if cfg.metrics_port:
        server = metrics.serve(cfg.metrics_port, cfg.metrics_addr)
    kube = Kube.connect(job_kind=JOB_BACKEND.kind)
    runtime = Runtime(settings=cfg, reconciler=Reconciler(kube, cfg), metrics_server=server)
    runtime.events = EventSender(kube.post_event_body, runtime.busy)
    loop = asyncio.get_running_loop()

    def woken_by_storage(namespace: str, name: str) -> None:  # a storage read ended, in a reader thread
        if not runtime.closed:
            loop.call_soon_threadsafe(runtime.wake, namespace, name)

    runtime.reconciler.reads.wake = woken_by_storage
    kube.event_sink = runtime.events.put
    watch_selectors(settings, CHILD_KINDS)
    runtime.informer = Informer(settings, CHILD_KINDS, cfg.namespaces,
                                lambda kind, old, new: child_changed(runtime, kind, old, new), optional=OTHER_JOB_KINDS,
                                on_listed=lambda kind, namespace, present: children_listed(runtime, kind, namespace,
                                                                                           present))
    runtime.informer.start()
    runtime.workers = [asyncio.create_task(worker(runtime), name=f"cpt-worker-{i}") for i in range(WORKERS)]
    runtime.sender = asyncio.create_task(runtime.events.run(runtime.pool), name="cpt-events")
    memo.cpt = runtime


@kopf.on.startup()
async def start_admission_sweeps(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.cpt
    runtime.sweeps = asyncio.create_task(sweep_forever(
        runtime.reconciler.admission, runtime.reconciler.clock, runtime.wake, lambda: runtime.closed,
        lambda failures: error_delay(runtime.settings.error_backoff, failures, ERROR_BACKOFF_CAP)))


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    """Stop the workers; passes already in their threads finish (at most ~10 s waited for), their events are
    posted (at most 5 s), then the clients close. Nothing to release on the resources: the operator holds no finalizer."""
    runtime: Optional[Runtime] = getattr(memo, "cpt", None)
    if runtime is None:
        return
    runtime.closed = True
    runtime.queue.close()
    for task in runtime.workers:
        task.cancel()
    extra = [task for task in (runtime.sweeps, runtime.sender) if task is not None]
    for task in extra:
        task.cancel()
    await asyncio.gather(*runtime.workers, *extra, return_exceptions=True)
    if runtime.informer is not None:
        await runtime.informer.stop()
    if runtime.metrics_server is not None:
        runtime.metrics_server.shutdown()
    try:
        await asyncio.wait_for(asyncio.to_thread(runtime.pool.shutdown, True), 10.0)
    except asyncio.TimeoutError:
        log.warning("a pass still runs at shutdown; not waiting for it")
    if runtime.events is not None:  # what the passes decided last, posted for at most 5 s
        await runtime.events.flush()
    runtime.reconciler.close()


async def worker(runtime: Runtime) -> None:
    """Take a run's key, pass it, mark it done; forever (until cleanup cancels it). Not before the children's
    cache has listed every kind once: a pass must never mistake an unfilled cache for missing children."""
    if runtime.informer is not None:
        await runtime.informer.synced.wait()
    while True:
        key = await runtime.queue.get()
        try:
            await pass_once(runtime, key)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug here must not stop the worker (the run retries at its resync)
            log.exception("%s/%s: the pass could not be scheduled", *key)
            runtime.queue.add_after(key, runtime.settings.reconcile_interval)
        finally:
            runtime.queue.done(key)


async def pass_once(runtime: Runtime, key: Key) -> None:
    """One pass of one run, then its next timer: the planner's requeue_after, the error backoff or the resync."""
    cfg = runtime.settings
    namespace, name = key
    body = runtime.resources.get(key)
    if body is None:
        return  # deleted since it was queued
    # Snapshots taken here, in the event loop that updates the caches; the pass runs in a worker thread.
    resource = copy.deepcopy(body)
    children = runtime.informer.cache.children(namespace, name, (resource.get("metadata") or {}).get("uid")) \
        if runtime.informer is not None else {}
    loop = asyncio.get_running_loop()
    try:
        outcome = await loop.run_in_executor(runtime.pool, runtime.reconciler.reconcile, namespace, name,
                                             resource, children)
    except Exception as exc:  # noqa: BLE001 - any failure: say so on the resource, back off, go again
        failures = runtime.failures[key] = runtime.failures.get(key, 0) + 1
        delay = error_delay(cfg.error_backoff, failures,
                            max(min(cfg.reconcile_interval, ERROR_BACKOFF_CAP), cfg.error_backoff))
        log.warning("%s/%s: reconcile failed (%d in a row), retrying in %.1fs: %s: %s", namespace, name,
                    failures, delay, type(exc).__name__, exc)
        await loop.run_in_executor(runtime.pool, runtime.reconciler.report_failure, namespace, name, exc, delay)
        if key in runtime.resources:
            runtime.queue.add_after(key, delay)
        return
    runtime.failures.pop(key, None)
    if not outcome.exists or key not in runtime.resources:
        return  # being deleted: its children go with it; the DELETED event forgets the rest
    # The storage resync, spread over +-10% so a thousand runs created at once do not re-read storage in the
    # same second forever after.
    delay = cfg.reconcile_interval * random.uniform(0.9, 1.1)
    if outcome.requeue_after is not None:
        delay = min(delay, max(outcome.requeue_after, 0.05))
    if outcome.storage_unread:  # an outage ends without an event: notice it within a minute
        delay = min(delay, max(ERROR_BACKOFF_CAP * random.uniform(0.9, 1.1), cfg.error_backoff))
    runtime.queue.add_after(key, delay)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def resource_event(event: dict, namespace: str, name: str, meta: kopf.Meta, memo: kopf.Memo,
                         **kwargs: Any) -> None:
    """Keep the run's latest copy; queue a pass on what a user changes (first sight, spec -> generation, our
    annotations, deletion), not on status (ours).

    async (in the loop that owns the queue and the caches): a sync handler would cost a hop to kopf's executor
    for every event of every run.
    """
    runtime: Optional[Runtime] = getattr(memo, "cpt", None)
    if runtime is None:
        return
    key = (namespace, name)
    if event.get("type") == "DELETED":
        runtime.forget(key)
        return
    runtime.resources[key] = event["object"]
    ours = {k: v for k, v in (meta.get("annotations") or {}).items()
            if k.startswith(f"{PREFIX}/") and k not in (f"{PREFIX}/last-handled-configuration",)}
    fingerprint = (meta.get("uid"), meta.get("generation"), tuple(sorted(ours.items())),
                   meta.get("deletionTimestamp"))
    if runtime.seen.get(key) != fingerprint:
        runtime.seen[key] = fingerprint
        runtime.queue.add(key)


def child_changed(runtime: Runtime, kind: str, old: Optional[dict], new: Optional[dict]) -> None:
    """The children's cache saw a change (new None: the child is gone); in the event loop. Wake the run when the
    planner reads what changed: a stage job's phase or suspension (not its first sight while Pending: the pass
    that created it knows it; at scale that self-inflicted wake-up was a second full pass per run), a Deployment
    whose pods are refused (or no longer), any other child deleted (re-created now, not at the resync)."""
    child = new if new is not None else old
    meta = child["metadata"]
    namespace, name, run = meta.get("namespace", ""), meta.get("name", ""), meta["labels"][manifests.LABEL_RUN]
    runtime.reconciler.recent.seen(namespace, run, child, gone=new is None)
    if old is not None and new is not None and old["metadata"]["labels"][manifests.LABEL_RUN] != run:
        runtime.wake(namespace, old["metadata"]["labels"][manifests.LABEL_RUN])  # relabelled: gone from that run
    if kind in jobs.BY_KIND:
        job_changed(runtime, namespace, name, run, new)
    elif new is None:
        runtime.refused.pop((namespace, name), None)
        runtime.wake(namespace, run)
    elif kind == "Deployment":
        refused = rejected_deployments([new]).get(name, "")
        if refused != runtime.refused.get((namespace, name), ""):  # pods refused, or no longer: the run says so
            runtime.refused[(namespace, name)] = refused
            runtime.wake(namespace, run)


def children_listed(runtime: Runtime, kind: str, namespace: Optional[str], present: set[tuple[str, str]]) -> None:
    """A stream (re-)listed its kind: a reply of ours that the listing does not hold (the object was created and
    deleted while the stream was down, its events never delivered) stops standing in for it, and its run looks
    again. At worst (a listing older than our write) the next pass's create gets a 409, which it takes as there."""
    for namespace_run in runtime.reconciler.recent.listed(kind, namespace, present):
        runtime.wake(*namespace_run)


def job_changed(runtime: Runtime, namespace: str, name: str, run: str, job: Optional[dict]) -> None:
    key = (namespace, name)
    if job is None:
        runtime.jobs_seen.pop(key, None)
        runtime.wake(namespace, run)
        return
    fingerprint = jobs.job_fingerprint(job, JOB_BACKEND)
    previous = runtime.jobs_seen.get(key)
    runtime.jobs_seen[key] = fingerprint
    if previous is None:
        if fingerprint[0] != "Pending" or fingerprint[-1]:
            runtime.wake(namespace, run)
        elif not fingerprint[1]:  # Pending and not suspended: due for refused-pod looks (kube.admission)
            meta = job["metadata"]
            runtime.reconciler.admission.add(namespace, run, PendingJob(
                name, meta.get("uid") or name, parse_time(meta.get("creationTimestamp")) or datetime.now(timezone.utc)))
    elif previous != fingerprint:
        runtime.wake(namespace, run)


def run_operator(cfg: Settings, liveness_endpoint: Optional[str] = None) -> None:
    """Run kopf with this module's handlers (what `python -m cpt_operator` calls)."""
    kopf.run(
        clusterwide=not cfg.namespaces,
        namespaces=list(cfg.namespaces),
        standalone=True,  # one replica: the work queue and informer do not pause with kopf's peering
        liveness_endpoint=liveness_endpoint,
    )
