"""kopf wiring: the only module that imports kopf. Thin: it keeps the caches and schedules passes, nothing else.

Children are read from kopf indexes, one per child kind the operator creates (ConfigMap, Service, Deployment,
NetworkPolicy and the stage-job kind in use), keyed by (namespace, run label) and fed by kopf's watches: a pass never LISTs. kopf
starts no handler before every index has its initial listing, so a restarted operator never plans from an empty
cache. The resource itself comes from kopf's live body of the daemon, so a pass that changes nothing sends no
request at all.

One daemon per ContinualPostTraining runs a loop: pass, then sleep until woken or until time itself matters (the
planner's requeue_after: retry backoff, commit grace) or the slow storage resync (CPT_RECONCILE_INTERVAL: storage
has no events; it catches commits and damage made out of band). Wake-ups: the resource's spec or cpt.dev
annotations changed; one of its stage jobs changed what the planner reads (phase, suspension, deletion); one of
its other children was deleted. A missed wake-up only delays work until the resync; a restart loses nothing.

kopf's own bookkeeping (progress, diff base, finalizer) lives in metadata with the `cpt.dev` prefix: the strict
status schema of the CRD would drop kopf's status fields. kopf's posting of log lines as Events is off, and its
per-handler "succeeded" lines are filtered out: the operator logs one line per decision (`reconcile`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any, Optional

import kopf

from cpt_core import api
from cpt_operator.kube import manifests
from cpt_operator import metrics
from cpt_operator.kube.admission import rejected_deployments
from cpt_operator.kube.client import Kube
from cpt_operator.kube import jobs
from cpt_operator.kube.observe import KINDS, owned_by, slim_child
from cpt_operator.kube.reconcile import Reconciler
from cpt_operator.kube.settings import Settings, job_backend

log = logging.getLogger(__name__)
PREFIX = api.GROUP
FINALIZER = f"{PREFIX}/kopf-finalizer"
# The kind stage jobs run as (CPT_JOB_BACKEND, see settings): only that kind is watched, since the other's CRD
# may not exist on the cluster and the chart grants rights on the kind in use only.
JOB_BACKEND = jobs.BACKENDS[job_backend()]
# Child kinds read from watch-fed indexes: index id -> kind. The run's rollout-key Secret is only ever created
# (with a 409 owner check): watching Secrets would need rights on every Secret of the namespace.
CHILD_INDEXES = {f"cpt_children_{KINDS[kind][1]}": kind
                 for kind in ("ConfigMap", "Service", "Deployment", "NetworkPolicy", JOB_BACKEND.kind)}


class QuietKopf(logging.Filter):
    """Drop kopf's "Handler ... succeeded." lines (one per watch event of every index and event handler: most
    of the log at scale) and the cancellation warning of a daemon stopped while a pass was in flight."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno <= logging.INFO and message.endswith(" succeeded."):
            return False
        return not ("'reconcile'" in message and message.endswith("is cancelled. Will escalate."))


ERROR_BACKOFF_CAP = 60.0  # seconds: failing passes are retried at least this often, whatever the resync interval
_QUIET = QuietKopf()
logging.getLogger("kopf.objects").addFilter(_QUIET)


@dataclass
class Runtime:
    """Per-operator state, kept in kopf's memo (a restarted operator in the same process starts fresh)."""

    settings: Settings
    reconciler: Reconciler
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    seen: dict[tuple[str, str], Any] = field(default_factory=dict)
    jobs_seen: dict[tuple[str, str], tuple] = field(default_factory=dict)  # (namespace, job) -> job_fingerprint
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, Deployment) -> ReplicaFailure
    metrics_server: Optional[metrics.Server] = None
    sweeps: Optional[asyncio.Task] = None
    closed: bool = False

    def wake(self, namespace: str, name: str) -> None:
        event = self.wakeups.get((namespace, name))
        if event is not None:
            event.set()


@kopf.on.login()
def login(**kwargs: Any) -> Optional[kopf.ConnectionInfo]:
    """In a pod: the service account. Elsewhere: KUBECONFIG (read now, not when the client library was imported)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = Settings.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False
    settings.watching.server_timeout = cfg.watch_timeout
    settings.watching.client_timeout = cfg.watch_timeout + 30
    settings.watching.connect_timeout = 10
    first = min(cfg.error_backoff, 1.0)
    settings.networking.error_backoffs = tuple(min(first * 2 ** i, 30.0) for i in range(6))
    settings.execution.default_backoff = cfg.error_backoff
    settings.queueing.idle_timeout = min(5.0, cfg.reconcile_interval)
    if cfg.peering:
        settings.peering.name = cfg.peering
        settings.peering.standalone = False
    server = None
    if cfg.metrics_port:
        server = metrics.serve(cfg.metrics_port, cfg.metrics_addr)
    memo.cpt = Runtime(settings=cfg, reconciler=Reconciler(Kube.connect(job_kind=JOB_BACKEND.kind), cfg), metrics_server=server)


@kopf.on.startup()
async def start_admission_sweeps(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.cpt
    runtime.sweeps = asyncio.create_task(admission_sweeps(runtime))


async def admission_sweeps(runtime: Runtime) -> None:
    """Look for refused pods of stage jobs that stay Pending (kube.admission: Warning events, listed only when a
    job is due) and wake the runs whose findings changed. Sleeps until the next job is due, at most `grace`."""
    scanner = runtime.reconciler.admission
    failures = 0
    while not runtime.closed:
        due = scanner.next_look()
        wait = scanner.grace if due is None else (due - runtime.reconciler.clock()).total_seconds()
        await asyncio.sleep(min(max(wait, 0.05), scanner.grace))
        if runtime.closed:
            return
        try:
            changed = await asyncio.to_thread(scanner.sweep, runtime.reconciler.clock())
        except Exception as exc:  # noqa: BLE001 - the due jobs stay due; the next sweep tries again
            failures += 1
            delay = error_delay(runtime.settings.error_backoff, failures, ERROR_BACKOFF_CAP)
            log.warning("listing Warning events for refused pods failed, retrying in %.1fs: %s: %s", delay,
                        type(exc).__name__, exc)
            await asyncio.sleep(delay)
            continue
        failures = 0
        for namespace, run in changed:
            runtime.wake(namespace, run)


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime: Optional[Runtime] = getattr(memo, "cpt", None)
    if runtime is None:
        return
    runtime.closed = True
    if runtime.metrics_server is not None:
        runtime.metrics_server.shutdown()
    # kopf's finalizer only lets it stop a daemon cleanly while this operator runs. Left behind, it would block
    # every deletion (and `kubectl delete crd` after `helm uninstall`) until an operator came back; children
    # go with their owner through ownerReferences anyway. A restarted operator puts it back before its daemons.
    try:
        released = runtime.reconciler.kube.release_finalizer(FINALIZER, runtime.settings.namespaces)
        log.info("released the finalizer of %d resource(s)", released)
    except Exception as exc:  # noqa: BLE001 - the API may be gone already (uninstall): nothing else to do
        log.warning("could not release finalizers: %s", exc)
    runtime.reconciler.close()


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, id="reconcile", cancellation_backoff=10.0,
             cancellation_timeout=10.0)
async def reconcile_loop(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped,
                         **kwargs: Any) -> None:
    runtime: Runtime = memo.cpt
    cfg = runtime.settings
    key = (namespace, name)
    wake = runtime.wakeups.setdefault(key, asyncio.Event())
    failures = 0
    try:
        while not stopped:
            wake.clear()
            # Snapshots taken here, in the event loop that updates them; the pass runs in a worker thread.
            resource = copy.deepcopy(dict(body))
            children = cached_children(kwargs, namespace, name, (resource.get("metadata") or {}).get("uid"))
            try:
                outcome = await asyncio.to_thread(runtime.reconciler.reconcile, namespace, name, resource, children)
            except Exception as exc:  # noqa: BLE001 - any failure: say so on the resource, back off, go again
                failures += 1
                delay = error_delay(cfg.error_backoff, failures,
                                    max(min(cfg.reconcile_interval, ERROR_BACKOFF_CAP), cfg.error_backoff))
                log.warning("%s/%s: reconcile failed (%d in a row), retrying in %.1fs: %s: %s", namespace, name,
                            failures, delay, type(exc).__name__, exc)
                await asyncio.to_thread(runtime.reconciler.report_failure, namespace, name, exc, delay)
            else:
                failures = 0
                if not outcome.exists:
                    return
                # The storage resync, spread over +-10% so a thousand runs created at once do not re-read
                # storage in the same second forever after.
                delay = cfg.reconcile_interval * random.uniform(0.9, 1.1)
                if outcome.requeue_after is not None:
                    delay = min(delay, max(outcome.requeue_after, 0.05))
            await sleep_until(wake, stopped, delay)
    finally:
        runtime.wakeups.pop(key, None)


def cached_children(indices: dict[str, Any], namespace: str, run: str, uid: Optional[str]
                    ) -> dict[tuple[str, str], dict]:
    """The run's children as the watch-fed indexes hold them, by (kind, name), owned by this resource's uid."""
    out: dict[tuple[str, str], dict] = {}
    for index_id, kind in CHILD_INDEXES.items():
        index = indices.get(index_id)
        if index is None:
            continue
        for child in index.get((namespace, run), ()):
            if owned_by(child, uid):
                out[(kind, child["metadata"]["name"])] = child
    return out


async def sleep_until(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float) -> None:
    """Sleep `delay` seconds, or less if woken or told to stop (then the daemon exits without being cancelled)."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def error_delay(base: float, failures: int, cap: float) -> float:
    """Backoff after failed passes in a row: base, 2 base, 4 base, ... at most `cap` (the resync interval, at
    most a minute: a run whose passes keep failing is retried often enough, never in a tight loop)."""
    return min(cap, base * 2 ** min(failures - 1, 16))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def resource_event(event: dict, namespace: str, name: str, meta: kopf.Meta, memo: kopf.Memo,
                         **_: Any) -> None:
    """Wake the run on what a user changes (spec -> generation, our annotations, deletion); not on status.

    async (in the loop, like the daemons' asyncio.Events it sets: Event.set is not thread-safe): a sync handler
    would cost a hop to kopf's executor for every event of every run.
    """
    runtime: Optional[Runtime] = getattr(memo, "cpt", None)
    if runtime is None:
        return
    key = (namespace, name)
    if event.get("type") == "DELETED":
        runtime.seen.pop(key, None)
        metrics.forget(namespace, name)
        return
    ours = {k: v for k, v in (meta.get("annotations") or {}).items()
            if k.startswith(f"{PREFIX}/") and k not in (f"{PREFIX}/last-handled-configuration",)}
    fingerprint = (meta.get("generation"), tuple(sorted(ours.items())), meta.get("deletionTimestamp"))
    if runtime.seen.get(key) != fingerprint:
        runtime.seen[key] = fingerprint
        runtime.wake(namespace, name)


def job_fingerprint(body: Any) -> tuple:
    """What the planner reads of a job (observe.observed_job): its phase, suspension (and by whom), deletion."""
    backend = jobs.BY_KIND.get(body.get("kind") or "", JOB_BACKEND)
    phase, _ = backend.phase(body)
    return (phase, jobs.is_suspended(backend, body), jobs.suspended_by_operator(body),
            bool((body.get("metadata") or {}).get("deletionTimestamp")))


@kopf.on.event(*JOB_BACKEND.api_version.split("/"), JOB_BACKEND.plural, labels={manifests.LABEL_RUN: kopf.PRESENT})
async def job_event(event: dict, body: kopf.Body, namespace: str, name: str, labels: kopf.Labels,
                    memo: kopf.Memo, **_: Any) -> None:
    """A stage job changed (started, succeeded, failed, deleted): its run should look now, not at the resync.

    Not on a job's first sight while it is still Pending: the pass that created it already knows it (at scale,
    that self-inflicted wake-up was a second full pass per run; bench/operator_scale). Not on status changes the
    planner does not read (replica counts). A restarted operator loses nothing: every daemon starts with a pass.
    """
    runtime: Optional[Runtime] = getattr(memo, "cpt", None)
    if runtime is None:
        return
    key = (namespace, name)
    if event.get("type") == "DELETED":
        runtime.jobs_seen.pop(key, None)
        runtime.reconciler.recent.seen(namespace, labels[manifests.LABEL_RUN], slim_child(body), gone=True)
        runtime.wake(namespace, labels[manifests.LABEL_RUN])
        return
    fingerprint = job_fingerprint(body)
    previous = runtime.jobs_seen.get(key)
    runtime.jobs_seen[key] = fingerprint
    if previous is None:
        if fingerprint[0] != "Pending" or fingerprint[-1]:
            runtime.wake(namespace, labels[manifests.LABEL_RUN])
    elif previous != fingerprint:
        runtime.wake(namespace, labels[manifests.LABEL_RUN])


def _register_child_indexes() -> None:
    """One kopf index per child kind: (namespace, run label) -> the children's slim copies (observe.slim_child).

    async, so an event costs no hop to kopf's executor threads. A deleted child also wakes its run (a user
    removed what the run needs: it is re-created now, not at the resync); stage jobs wake their run in
    `job_event`, on the changes the planner reads."""
    for index_id, kind in CHILD_INDEXES.items():
        api_version, plural = KINDS[kind]

        async def index_child(body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo,
                              _kind: str = kind, **_: Any) -> dict:
            child = slim_child(body, _kind)
            runtime: Optional[Runtime] = getattr(memo, "cpt", None)
            if runtime is not None:
                run = labels[manifests.LABEL_RUN]
                runtime.reconciler.recent.seen(namespace, run, child)
                if _kind == "Deployment":
                    refused = rejected_deployments([child]).get(child["metadata"]["name"], "")
                    key = (namespace, child["metadata"]["name"])
                    if refused != runtime.refused.get(key, ""):  # pods refused, or no longer: the run says so
                        runtime.refused[key] = refused
                        runtime.wake(namespace, run)
            return {(namespace, labels[manifests.LABEL_RUN]): child}

        kopf.index(*api_version.split("/"), plural, id=index_id,
                   labels={manifests.LABEL_RUN: kopf.PRESENT})(index_child)
        if kind in jobs.BY_KIND:
            continue

        async def child_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo,
                                _kind: str = kind, **_: Any) -> None:
            runtime: Optional[Runtime] = getattr(memo, "cpt", None)
            if runtime is not None:
                run = labels[manifests.LABEL_RUN]
                runtime.reconciler.recent.seen(namespace, run, slim_child(body, _kind), gone=True)
                runtime.refused.pop((namespace, body["metadata"]["name"]), None)
                runtime.wake(namespace, run)

        kopf.on.event(*api_version.split("/"), plural, id=f"deleted_{plural}", when=_is_deletion,
                      labels={manifests.LABEL_RUN: kopf.PRESENT})(child_deleted)


def _is_deletion(event: dict, **_: Any) -> bool:
    """Filter: only a deletion of a child other than a job interests its run (kopf skips the handler otherwise)."""
    return event.get("type") == "DELETED"


_register_child_indexes()


def run_operator(cfg: Settings, liveness_endpoint: Optional[str] = None) -> None:
    """Run kopf with this module's handlers (what `python -m cpt_operator` calls)."""
    kopf.run(
        clusterwide=not cfg.namespaces,
        namespaces=list(cfg.namespaces),
        standalone=cfg.peering is None,
        peering_name=cfg.peering,
        liveness_endpoint=liveness_endpoint,
    )
