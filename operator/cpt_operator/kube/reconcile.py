"""One reconcile pass of one resource: observe -> plan -> apply. No kopf here (handlers only schedule passes).

Level-triggered: the pass rebuilds the status from scratch out of what it is given (the resource and its
children as kopf's watches last saw them, see handlers) and what storage holds, so it can run any number of
times, be cut off at any point, or run in a freshly restarted operator. It sends a request only to change
something. The watches lag our own writes by a moment, so the server's replies to this operator's writes are
kept for a short while (`Recent`) and win over an older cached copy: the next pass does not redo a create (a
409 would be harmless: names are deterministic) or decide from a status it already replaced. Passes over the
same resource are serialised by a process-wide lock: an operator restarted in the same process (tests) waits
for the previous instance's in-flight pass instead of racing it.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

from cpt_core.results import run_stats
from cpt_core.storage import scrub
from cpt_operator import metrics, planner
from cpt_operator.kube import ownership
from cpt_operator.kube.admission import AdmissionScanner
from cpt_operator.kube.children import render
from cpt_operator.kube.client import Applied, Kube, apply, observe
from cpt_operator.kube.observe import newer, owned_by, slim_child
from cpt_operator.kube.settings import Settings
from cpt_operator.kube.storage_access import CommittedReader
from cpt_operator.kube.storage_reads import Pending, StorageReads
from cpt_operator.planner.conditions import set_condition
from cpt_operator.planner.events import condition

log = logging.getLogger(__name__)

_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(namespace: str, name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((namespace, name), threading.Lock())


def effective_resource(resource: dict, settings: Settings) -> dict:
    """The resource with the operator's storage defaults filled in where the spec leaves them out.

    Applied before planning, so the operator reads storage where the stage jobs write it (their env and stage
    config come from the same spec). Never written back: the user's object stays as they wrote it.
    """
    storage = (resource.get("spec") or {}).get("storage")
    if not isinstance(storage, dict):
        return resource
    wanted = {"endpoint": settings.storage_endpoint, "region": settings.storage_region,
              "pathStyle": settings.storage_path_style or None}
    missing = {k: v for k, v in wanted.items() if v and not storage.get(k)}
    if not missing:
        return resource
    out = copy.deepcopy(resource)
    out["spec"]["storage"].update(missing)
    return out


@dataclass
class Outcome:
    exists: bool  # False: the resource is gone or being deleted; stop reconciling it
    requeue_after: Optional[float] = None  # the planner's wish (retry backoff); None = only on changes
    phase: Optional[str] = None
    applied: Optional[Applied] = None
    storage_unread: bool = False  # storage did not answer: look again soon, not only at the resync


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


RECENT_TTL = 60.0  # seconds a reply to our own write stands in for a watch event that has not come yet


class Recent:
    """The server's replies to this operator's writes, per run, until the watch-fed cache has caught up."""

    def __init__(self, ttl: float = RECENT_TTL) -> None:
        self.ttl = ttl
        self._children: dict[tuple[str, str], dict[tuple[str, str], tuple[float, dict]]] = {}
        self._status: dict[tuple[str, str], tuple[float, dict]] = {}
        # Deletions the watch delivered, per run: a reply to our create that comes back after the watch already
        # saw that very object deleted (a slow reply on a busy API server) must not stand in for it.
        self._gone: dict[tuple[str, str], dict[tuple[str, str], tuple[float, dict]]] = {}
        self._lock = threading.Lock()

    def remember(self, namespace: str, name: str, applied: Applied) -> None:
        now = time.monotonic()
        until = now + self.ttl
        with self._lock:
            mine = self._children.setdefault((namespace, name), {})
            gone = self._gone.get((namespace, name)) or {}
            for key, (expires, _) in list(gone.items()):
                if expires < now:
                    del gone[key]
            if not gone:
                self._gone.pop((namespace, name), None)
            for reply in applied.replies:
                child = slim_child(reply)
                key = (child["kind"], child["metadata"].get("name", ""))
                deleted = gone.get(key)
                if deleted is not None and not newer(child, deleted[1]):
                    continue  # the watch saw this version (or a later one) deleted already
                mine[key] = (until, child)
            if not mine:
                self._children.pop((namespace, name), None)
            reply = applied.status_reply
            if reply is not None:  # only what stands in for the cached copy: identity, version, status
                meta = reply.get("metadata") or {}
                self._status[(namespace, name)] = (until, {
                    "metadata": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
                    "status": reply.get("status") or {}})

    def resource(self, namespace: str, name: str, resource: dict) -> dict:
        """`resource` with the status of our last status write if the cached copy is older than that write.

        Only the status: a spec changed in between would be newer than our write, so the cache holds it."""
        with self._lock:
            until, reply = self._status.get((namespace, name), (0.0, None))
            if reply is None or until < time.monotonic() or not newer(reply, resource):
                self._status.pop((namespace, name), None)
                return resource
        if reply["metadata"].get("uid") != resource["metadata"].get("uid"):
            return resource
        return dict(resource, status=reply["status"])

    def children(self, namespace: str, name: str, cached: dict[tuple[str, str], dict]) -> dict:
        """The cached children, each replaced by our own reply where that is newer (or not cached yet)."""
        now = time.monotonic()
        with self._lock:
            mine = self._children.get((namespace, name))
            if not mine:
                return cached
            out = dict(cached)
            for key, (until, child) in list(mine.items()):
                seen = cached.get(key)
                if until < now or (seen is not None and not newer(child, seen)):
                    del mine[key]  # the watch has caught up (or the write is too old to matter)
                else:
                    out[key] = child
            if not mine:
                self._children.pop((namespace, name), None)
            return out

    def seen(self, namespace: str, run: str, child: dict, gone: bool = False) -> None:
        """The watch delivered `child` (or its deletion): a reply of ours that is not newer no longer counts."""
        key = (child.get("kind") or "", (child.get("metadata") or {}).get("name", ""))
        with self._lock:
            mine = self._children.get((namespace, run)) or {}
            if key in mine and (gone or not newer(mine[key][1], child)):
                del mine[key]
            if gone:
                self._gone.setdefault((namespace, run), {})[key] = (time.monotonic() + self.ttl, child)

    def listed(self, kind: str, namespace: Optional[str], present: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """A (re-)listing of `kind` in `namespace` (None: all) returned `present`: our replies for objects of that
        kind it does not hold no longer count. Returns the runs that lost one (to be looked at again)."""
        touched = []
        with self._lock:
            for (ns, run), mine in list(self._children.items()):
                if namespace is not None and ns != namespace:
                    continue
                stale = [key for key in mine if key[0] == kind and (ns, key[1]) not in present]
                for key in stale:
                    del mine[key]
                if stale:
                    touched.append((ns, run))
                if not mine:
                    del self._children[(ns, run)]
        return touched

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._children.pop((namespace, name), None)
            self._status.pop((namespace, name), None)
            self._gone.pop((namespace, name), None)


class Reconciler:
    def __init__(self, kube: Kube, settings: Settings, clock: Callable[[], datetime] = _utcnow) -> None:
        self.kube = kube
        self.kube.mark_key = settings.plan_defaults.child_key  # the one key names and marks are derived from
        self.settings = settings
        self.clock = clock
        self.reader = CommittedReader(settings, kube.read_secret, get_resource=kube.get_resource)
        # Storage is read off the pass workers, bounded per endpoint and in time (kube/storage_reads.py);
        # handlers set `reads.wake` so that a read that outlives its pass queues the run's next one.
        self.reads = StorageReads(self.reader, allowed=settings.storage_endpoints)
        self.recent = Recent()
        self.admission = AdmissionScanner(kube.list_warning_events, settings.admission_grace)
        # run -> (what the planner read: uid, resourceVersions; the StorageView object; the outcome) of its last
        # pass that changed nothing and asked for no timer: a resync with the same inputs is skipped.
        self._steady: dict[tuple[str, str], tuple] = {}

    def reconcile(self, namespace: str, name: str, resource: Optional[dict] = None,
                  children: Optional[dict[tuple[str, str], dict]] = None) -> Outcome:
        """One full pass; raises on API errors (the caller backs off and retries: every step is idempotent).

        `resource` and `children`: what kopf's watches last saw (handlers pass both; no request is needed to
        look). Left out, the pass GETs the resource and LISTs its children (tools and tests without kopf)."""
        started = time.monotonic()
        error = True
        try:
            with _lock(namespace, name):
                outcome = self._pass(namespace, name, resource, children)
            error = False
            return outcome
        finally:
            metrics.observe_reconcile(time.monotonic() - started, error)

    def _pass(self, namespace: str, name: str, resource: Optional[dict],
              children: Optional[dict[tuple[str, str], dict]]) -> Outcome:
        if resource is None:
            resource = self.kube.get_resource(namespace, name)
        if resource is None or resource["metadata"].get("deletionTimestamp"):
            metrics.forget(namespace, name)
            self.recent.forget(namespace, name)
            self.admission.forget(namespace, name)
            self._steady.pop((namespace, name), None)
            self.reads.forget(namespace, name)
            return Outcome(exists=False)  # children go with it (ownerReferences); storage is left alone
        now = self.clock()
        resource = effective_resource(self.recent.resource(namespace, name, resource), self.settings)
        if children is not None:
            uid = resource["metadata"].get("uid")
            key_ = self.kube.mark_key  # an object planted with the run's label and uid is not a child
            children = {key: obj for key, obj in self.recent.children(namespace, name, children).items()
                        if owned_by(obj, uid) and ownership.proven(key_, obj, uid)
                        and not (obj.get("metadata") or {}).get("deletionTimestamp")}
        view = self.reads.view(namespace, name, resource)
        if isinstance(view, Pending):  # still reading, off this worker: its end wakes the run, else the deadline
            return Outcome(exists=True, requeue_after=view.retry_in)
        if children is not None:
            inputs = (resource["metadata"].get("uid"), resource["metadata"].get("resourceVersion"),
                      tuple(sorted((key, (obj.get("metadata") or {}).get("resourceVersion"))
                                   for key, obj in children.items())),
                      self.admission.version(namespace, name))
            last = self._steady.get((namespace, name))
            if last is not None and last[0] == inputs and last[1] is view:
                return last[2]  # nothing the planner reads changed, and time does not matter: same outcome
        world = observe(self.kube, resource, now, lambda _: view, children, self.admission)
        plan = planner.plan(resource, world.observed)
        changes = render(plan, resource, world.children, self.settings.plan_defaults)
        applied = apply(self.kube, world, changes, plan, now)
        self.recent.remember(namespace, name, applied)
        if not plan.hold:  # storage unseen: the exporter keeps the last known figures (no flapping alerts)
            metrics.publish(namespace, name, resource.get("spec") or {}, plan.status,
                            run_stats(world.observed.committed))
        self._log_decisions(namespace, name, plan, applied)
        outcome = Outcome(exists=True, requeue_after=plan.requeue_after, phase=plan.status.get("phase"),
                          applied=applied, storage_unread=view.error is not None)
        self._steady.pop((namespace, name), None)
        quiet = not (applied.created or applied.existed or applied.deleted or applied.patched
                     or applied.status_written or plan.events)
        if children is not None and quiet and plan.requeue_after is None and view.error is None:
            self._steady[(namespace, name)] = (inputs, view, Outcome(exists=True, phase=outcome.phase))
        return outcome

    @staticmethod
    def _log_decisions(namespace: str, name: str, plan: planner.Plan, applied: Applied) -> None:
        """One line per decision, with the planner's reason: a person reads these, not a parser."""
        why = plan.status.get("message") or plan.status.get("phase") or ""
        for verb, items in (("created", applied.created), ("deleted", applied.deleted),
                            ("patched", applied.patched)):
            if items:
                log.info("%s/%s: %s %s (%s)", namespace, name, verb, ", ".join(items), why)
        for event in plan.events:
            if event.reason == "StageStarted" and applied.created:
                continue  # the "created ..." line above says it (the stage's ConfigMap and job)
            log.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)

    def report_failure(self, namespace: str, name: str, exc: BaseException, retry_in: float) -> None:
        """Put a failed pass where `kubectl describe` shows it: condition Reconciled=False and, when the reason
        is new, a Warning event. Best effort (the API may be what failed); the next good pass drops the
        condition with the rest of the status it rebuilds."""
        message = scrub(f"{type(exc).__name__}: {exc}")[:1000] + f" (next attempt in {retry_in:.0f}s)"
        try:
            with _lock(namespace, name):
                resource = self.kube.get_resource(namespace, name)
                if resource is None or resource["metadata"].get("deletionTimestamp"):
                    return
                old = resource.get("status") or {}
                before = condition(old, "Reconciled") or {}
                same = before.get("status") == "False" and before.get("reason") == type(exc).__name__
                now = self.clock()
                status = dict(old, conditions=set_condition(
                    old.get("conditions") or [], now, resource["metadata"].get("generation"), "Reconciled",
                    False, type(exc).__name__, message))
                self.kube.patch_status(resource, status)
                if not same:
                    self.kube.post_event(resource, "Warning", "ReconcileFailed", message, now)
        except Exception as again:  # noqa: BLE001 - reporting must never raise
            log.warning("%s/%s: could not report the failed pass: %s", namespace, name, again)

    def forget(self, namespace: str, name: str) -> None:
        """The resource is gone: drop what was kept of it between passes."""
        self.recent.forget(namespace, name)
        self.admission.forget(namespace, name)
        self._steady.pop((namespace, name), None)
        self.reads.forget(namespace, name)

    def close(self) -> None:
        self.reads.close()
        self.reader.close()
        self.kube.close()
